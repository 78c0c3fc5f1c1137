//! Delivery acknowledgements, counted per batch instead of one future per record.
//!
//! Every record a partition worker sends in one batch carries a clone of the batch's [`Acks`]
//! as its delivery opaque (an `Arc`: an atomic increment, no allocation). The producer's
//! delivery callback ([`SinkContext`]) counts each report down and keeps the first error; the
//! worker awaits the batch as a whole, oldest batch first, and stores the offset after its last
//! record only once every record of it is acknowledged.
//!
//! This replaced rdkafka's `FutureProducer`, which allocates a boxed oneshot sender and a
//! channel per record and wakes a task per record.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

use crate::logging::ClientLog;

/// The acknowledgements still due for one batch, and its first delivery error.
#[derive(Debug)]
pub struct Acks {
    /// Records sent and not yet reported, plus one while the batch is still being sent.
    remaining: AtomicUsize,
    error: Mutex<Option<KafkaError>>,
    waker: AtomicWaker,
}

impl Acks {
    /// A batch about to be sent: held open until [`Acks::sealed`].
    pub fn open() -> Arc<Self> {
        Arc::new(Acks {
            remaining: AtomicUsize::new(1),
            error: Mutex::new(None),
            waker: AtomicWaker::new(),
        })
    }

    /// The opaque for one more record of the batch. Call only for a record that is then handed
    /// to the producer; a refused send must [`Acks::report`] it (or drop the batch).
    pub fn expect_one(self: &Arc<Self>) -> Arc<Self> {
        self.remaining.fetch_add(1, Ordering::Relaxed);
        self.clone()
    }

    /// A record counted by [`Acks::expect_one`] that the producer refused: it will not be
    /// reported.
    pub fn withdraw(&self) {
        self.count_down();
    }

    /// Every record of the batch has been sent: the batch completes with its last report.
    pub fn sealed(&self) {
        self.count_down();
    }

    /// One record's delivery report.
    pub fn report(&self, result: Result<(), &KafkaError>) {
        if let Err(e) = result {
            let mut error = self.error.lock().unwrap();
            if error.is_none() {
                *error = Some(e.clone());
            }
        }
        self.count_down();
    }

    fn count_down(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.waker.wake();
        }
    }

    /// The batch's outcome if every record is reported (and the batch sealed).
    pub fn outcome(&self) -> Option<Result<(), KafkaError>> {
        (self.remaining.load(Ordering::Acquire) == 0).then(|| match &*self.error.lock().unwrap() {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        })
    }

    /// Resolves with the batch's outcome once every record is reported.
    pub fn done(self: &Arc<Self>) -> Done<'_> {
        Done(self)
    }
}

/// Future of [`Acks::done`].
pub struct Done<'a>(&'a Arc<Acks>);

impl Future for Done<'_> {
    type Output = Result<(), KafkaError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(outcome) = self.0.outcome() {
            return Poll::Ready(outcome);
        }
        self.0.waker.register(cx.waker());
        match self.0.outcome() {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

/// The producer's context: quiet logging, and delivery reports counted into their batch.
#[derive(Default)]
pub struct SinkContext {
    log: ClientLog,
}

impl SinkContext {
    pub fn raising(fatal: std::sync::Arc<crate::logging::FatalErrors>) -> Self {
        SinkContext {
            log: ClientLog::raising(fatal),
        }
    }
}

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Arc<Acks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<Acks>) {
        acks.report(result.as_ref().map(|_| ()).map_err(|(e, _)| e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn completes_after_seal_and_every_report() {
        let acks = Acks::open();
        let a = acks.expect_one();
        let b = acks.expect_one();
        a.report(Ok(()));
        assert!(
            acks.done().now_or_never().is_none(),
            "one report and the seal due"
        );
        acks.sealed();
        assert!(acks.outcome().is_none(), "one report due");
        b.report(Ok(()));
        assert!(matches!(acks.done().now_or_never(), Some(Ok(()))));
    }

    #[test]
    fn keeps_the_first_error() {
        let acks = Acks::open();
        let a = acks.expect_one();
        let b = acks.expect_one();
        acks.sealed();
        a.report(Err(&KafkaError::Canceled));
        b.report(Err(&KafkaError::NoMessageReceived));
        assert!(matches!(acks.outcome(), Some(Err(KafkaError::Canceled))));
    }

    #[test]
    fn an_empty_sealed_batch_is_done() {
        let acks = Acks::open();
        acks.sealed();
        assert!(matches!(acks.outcome(), Some(Ok(()))));
    }
}
