//! A batch's outputs sent: hashed on the rayon pool (large batches) or inline into a reused
//! buffer, each output or rejected input handed to the [`Router`](crate::dead_letter::Router) with its batch's
//! acknowledgements, in offset order.

use std::sync::Arc;

use rayon::prelude::*;
use rdkafka::Message;

use super::tracker::Batch;
use super::{PartitionWorker, WorkerError};
use crate::ack::Acks;
use crate::dead_letter::Sent;
use crate::fetch::Record;
use crate::transform::{self, Rejection};

impl PartitionWorker {
    /// A large batch: hashed on the pool. block_in_place keeps the borrowed payloads valid
    /// without copying them, and lets tokio move other tasks off this thread meanwhile.
    pub(super) async fn send_hashed_on_pool(
        &self,
        batch: &mut [Record<'_>],
        sent: &mut Batch,
    ) -> Result<(), WorkerError> {
        let results: Vec<Option<Result<Vec<u8>, Rejection>>> = tokio::task::block_in_place(|| {
            self.shared.pool.install(|| {
                batch
                    .par_iter()
                    .map(|m| m.payload().map(transform::transform))
                    .collect()
            })
        });
        for (message, result) in batch.iter_mut().zip(results) {
            let outcome = match result {
                None => self.send_output(message, None, &sent.acks).await?,
                Some(Ok(out)) => self.send_output(message, Some(&out), &sent.acks).await?,
                Some(Err(r)) => self.send_rejected(message, &r, &sent.acks).await?,
            };
            sent.count(outcome, message.offset());
        }
        Ok(())
    }

    /// A small batch: hashed here, one record at a time, into a reused buffer.
    pub(super) async fn send_hashed_inline(
        &self,
        batch: &mut [Record<'_>],
        sent: &mut Batch,
        buf: &mut Vec<u8>,
    ) -> Result<(), WorkerError> {
        for message in batch.iter_mut() {
            let outcome = match message.payload() {
                None => self.send_output(message, None, &sent.acks).await?,
                Some(value) => match transform::transform_into(value, buf) {
                    Ok(()) => {
                        let out = std::mem::take(buf);
                        let outcome = self.send_output(message, Some(&out), &sent.acks).await;
                        *buf = out;
                        outcome?
                    }
                    Err(r) => self.send_rejected(message, &r, &sent.acks).await?,
                },
            };
            sent.count(outcome, message.offset());
        }
        Ok(())
    }

    /// Sends an output, or dead-letters its input when it is too large
    /// ([`Router`](crate::dead_letter::Router)).
    async fn send_output(
        &self,
        message: &mut Record<'_>,
        value: Option<&[u8]>,
        acks: &Arc<Acks>,
    ) -> Result<Sent, WorkerError> {
        let sent = self.shared.router.send_output(message, value, acks).await;
        sent.map_err(|source| WorkerError::Delivery {
            offset: message.offset(),
            source,
        })
    }

    async fn send_rejected(
        &self,
        message: &Record<'_>,
        rejection: &Rejection,
        acks: &Arc<Acks>,
    ) -> Result<Sent, WorkerError> {
        let sent = self
            .shared
            .router
            .send_rejected(message, rejection, acks)
            .await;
        sent.map_err(|source| WorkerError::Delivery {
            offset: message.offset(),
            source,
        })
    }
}

pub(super) fn can_block_in_place() -> bool {
    tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
}
