//! A batch read from the queue and transformed, not yet sent.
//!
//! Transforming is split from sending so that a worker can go on reading and transforming while
//! it may not send: under exactly-once a commit holds the transaction's gate for the offsets'
//! round trips and the flush of what is in flight, and the workers used to wait for it with
//! their next batch untouched. Now they transform into [`Prepared`] batches meanwhile (bounded
//! by `max_in_flight`, like what is sent) and send them, in order, once the gate opens.
//!
//! The outputs of a batch sit back to back in one buffer, recycled from batch to batch: no
//! allocation per record.

use std::ops::Range;
use std::time::Instant;

use rayon::prelude::*;
use rdkafka::Message;

use crate::fetch::Record;
use crate::transform::{self, Rejection};

/// What one record becomes.
enum Output {
    /// The input had no value: a tombstone out.
    Tombstone,
    /// The output value: a range of the batch's buffer.
    Value(Range<usize>),
    /// The input is not a JSON object: it goes to the dead-letter topic.
    Rejected(Rejection),
}

/// [`Output`] with the value's bytes.
pub(super) enum OutputRef<'a> {
    Tombstone,
    Value(&'a [u8]),
    Rejected(&'a Rejection),
}

/// Records read together, each with its output.
pub(super) struct Prepared<'q> {
    pub records: Vec<Record<'q>>,
    outputs: Vec<Output>,
    buffer: Vec<u8>,
    /// When it was read (for the batch duration metric).
    pub started: Instant,
}

impl<'q> Prepared<'q> {
    /// Transforms `records` here, one after the other, into `buffer` (cleared first).
    pub fn inline(records: Vec<Record<'q>>, mut buffer: Vec<u8>, started: Instant) -> Self {
        buffer.clear();
        let outputs = records
            .iter()
            .map(|m| match m.payload() {
                None => Output::Tombstone,
                Some(value) => {
                    let start = buffer.len();
                    match transform::transform_append(value, &mut buffer) {
                        Ok(()) => Output::Value(start..buffer.len()),
                        Err(r) => Output::Rejected(r),
                    }
                }
            })
            .collect();
        Prepared {
            records,
            outputs,
            buffer,
            started,
        }
    }

    /// Transforms `records` on `pool`, in parallel (large batches), then gathers the outputs
    /// into `buffer`. Blocks the calling thread meanwhile.
    pub fn on_pool(
        records: Vec<Record<'q>>,
        mut buffer: Vec<u8>,
        pool: &rayon::ThreadPool,
        started: Instant,
    ) -> Self {
        let results: Vec<Option<Result<Vec<u8>, Rejection>>> = pool.install(|| {
            records
                .par_iter()
                .map(|m| m.payload().map(transform::transform))
                .collect()
        });
        buffer.clear();
        let outputs = results
            .into_iter()
            .map(|result| match result {
                None => Output::Tombstone,
                Some(Ok(out)) => {
                    let start = buffer.len();
                    buffer.extend_from_slice(&out);
                    Output::Value(start..buffer.len())
                }
                Some(Err(r)) => Output::Rejected(r),
            })
            .collect();
        Prepared {
            records,
            outputs,
            buffer,
            started,
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Offset of the first record.
    pub fn first(&self) -> i64 {
        self.records[0].offset()
    }

    /// Offset after the last record.
    pub fn next(&self) -> i64 {
        self.records[self.records.len() - 1].offset() + 1
    }

    /// Each record with its output, in order.
    pub fn each(&mut self) -> impl Iterator<Item = (&mut Record<'q>, OutputRef<'_>)> {
        let buffer = &self.buffer;
        self.records
            .iter_mut()
            .zip(self.outputs.iter().map(move |o| match o {
                Output::Tombstone => OutputRef::Tombstone,
                Output::Value(range) => OutputRef::Value(&buffer[range.clone()]),
                Output::Rejected(r) => OutputRef::Rejected(r),
            }))
    }

    /// The output buffer, for the next batch.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buffer
    }
}
