//! One worker per assigned partition: read its split queue in batches, transform, produce, and
//! store offsets as acknowledgements arrive, in partition order.
//!
//! # Contract
//! - Records of a partition are produced in offset order (one task, sends in order, idempotent
//!   producer), so per-partition and per-key order hold in the output.
//! - The offset stored is always `last + 1` where every record up to `last` has been acknowledged
//!   by the destination or the dead-letter topic: acknowledgements are counted per batch
//!   ([`Acks`]) and batches are settled oldest first.
//! - At most `max_in_flight` records are unacknowledged; past that the worker stops reading.
//! - On drain (revocation or shutdown) the worker reads nothing more, waits for what it has in
//!   flight, stores the last offset and reports it in [`WorkerExit`].
//! - A delivery failure that is not the record's own fault stops the worker without storing its
//!   offset or any later one: the record will be consumed again by whoever owns the partition.
//! - A record batch the consumer cannot decode (a corrupt batch, a codec librdkafka lacks)
//!   stops the worker once what was read before it is acknowledged and stored: nothing past
//!   it is produced or stored, and the process stops with [`Undecodable`], which names the
//!   offset, librdkafka's reason and the way out. librdkafka would otherwise fetch it again and
//!   again, and it cannot be skipped without losing its records.
//! - A record the queue hands out again below the offset this worker has already read (the
//!   partition was rewound under it, e.g. by an `auto.offset.reset` after an out-of-range
//!   fetch) is not produced twice: it is dropped, counted and logged as an error. So the offsets
//!   a worker stores only ever move forward.
//! - `--until-end`: the end is the high watermark when the worker starts (the last stable
//!   offset under `read_committed`), not librdkafka's end-of-partition event (see
//!   [`crate::fetch`]); it is reached once everything read is acknowledged and either the
//!   acknowledged offsets or the position (which moves past transaction markers) got there.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rayon::prelude::*;
use rdkafka::error::KafkaError;
use rdkafka::Message;
use tokio::sync::{mpsc, watch};

use crate::ack::Acks;
use crate::fetch::{PartitionQueue, Record, Undecodable};
use crate::member::Member;
use crate::metrics::{PartitionStats, Stats};
use crate::sink::{self, Sink};
use crate::transaction::Transactions;
use crate::transform::{self, Rejection};

/// A safety net for the queue's wake-up ([`crate::fetch`]): never wait on it longer than this
/// without reading it again.
const RECV_WAKE: Duration = Duration::from_millis(250);

/// What every worker of one run shares.
pub struct Shared {
    pub sink: Arc<Sink>,
    pub stats: Arc<Stats>,
    pub pool: Arc<rayon::ThreadPool>,
    pub events: mpsc::UnboundedSender<WorkerEvent>,
    pub batch_size: usize,
    pub max_in_flight: usize,
    pub parallel_min_bytes: usize,
    /// Report [`WorkerEvent::ReachedEnd`] (for `--until-end`).
    pub until_end: bool,
    /// Exactly-once: offsets go into the open transaction instead of the consumer's store.
    pub transactions: Option<Arc<Transactions>>,
}

/// What a worker tells the coordinator while it runs.
#[derive(Debug)]
pub enum WorkerEvent {
    /// Everything up to the partition's end offset at assignment is acknowledged and stored.
    ReachedEnd { partition: i32 },
    /// The worker stopped on an error that must stop the process.
    Failed { partition: i32, error: WorkerError },
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("delivery of offset {offset} failed: {source}")]
    Delivery { offset: i64, source: KafkaError },
    #[error("storing offset {offset} failed: {source}")]
    Store { offset: i64, source: KafkaError },
    #[error(transparent)]
    Undecodable(Undecodable),
}

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerExit {
    pub partition: i32,
    /// The offset stored for commit (next to consume), if any record was acknowledged.
    pub next_offset: Option<i64>,
    /// Whether it stopped on an error (see [`WorkerEvent::Failed`]).
    pub failed: bool,
}

/// One sent batch awaiting its acknowledgements.
struct Batch {
    acks: Arc<Acks>,
    /// Offset of its first record.
    first: i64,
    /// Offset after its last record.
    next: i64,
    /// Records sent to the destination.
    produced: usize,
    /// Records sent to the dead-letter topic, with their reason.
    dead: Vec<(&'static str, i64)>,
}

impl Batch {
    fn len(&self) -> usize {
        self.produced + self.dead.len()
    }

    fn count(&mut self, sent: Sent, offset: i64) {
        match sent {
            Sent::Output => self.produced += 1,
            Sent::DeadLetter(kind) => self.dead.push((kind, offset)),
        }
    }
}

/// Where one record went.
enum Sent {
    Output,
    DeadLetter(&'static str),
}

pub struct PartitionWorker {
    pub topic: String,
    pub partition: i32,
    pub queue: PartitionQueue,
    pub consumer: Arc<dyn Member>,
    pub stats: PartitionStats,
    pub shared: Arc<Shared>,
    pub drain: watch::Receiver<bool>,
    /// Unacknowledged records, readable by whoever gives up on this worker at a deadline.
    pub in_flight: Arc<AtomicUsize>,
    /// Set once everything up to the end offset at assignment is acknowledged (`--until-end`).
    pub at_end: Arc<AtomicBool>,
}

impl PartitionWorker {
    pub async fn run(self) -> WorkerExit {
        let mut state = State {
            pending: VecDeque::new(),
            in_flight: 0,
            next_offset: None,
            failed: None,
            read_next: None,
            end_target: None,
            at_end: false,
            buf: Vec::new(),
        };
        if self.shared.until_end {
            state.end_target = self.end_target().await;
        }
        let failed = match self.consume(&mut state).await {
            Ok(()) => false,
            Err(error) => {
                tracing::error!(topic = %self.topic, partition = self.partition, %error, "partition worker stopped");
                let _ = self.shared.events.send(WorkerEvent::Failed {
                    partition: self.partition,
                    error,
                });
                // The failed record and what was sent after it stay unstored: they will be replayed.
                self.shared
                    .stats
                    .records_abandoned(self.in_flight.swap(0, Relaxed));
                true
            }
        };
        WorkerExit {
            partition: self.partition,
            next_offset: state.next_offset,
            failed,
        }
    }

    async fn consume(&self, state: &mut State) -> Result<(), WorkerError> {
        let mut drain = self.drain.clone();
        loop {
            self.settle(state, None)?;
            self.check_end(state);
            if *drain.borrow() || state.failed.is_some() {
                break;
            }
            let room = state.in_flight + self.shared.batch_size <= self.shared.max_in_flight;
            tokio::select! {
                biased;
                _ = drain.changed() => {}
                ack = front(&state.pending), if !state.pending.is_empty() => {
                    self.settle(state, Some(ack))?;
                }
                received = tokio::time::timeout(RECV_WAKE, self.queue.next_batch(self.shared.batch_size)), if room => {
                    if let Ok(batch) = received {
                        self.process_batch(batch, state).await?;
                    }
                }
            }
        }
        // Drain: nothing more is read; wait for what is in flight, oldest first.
        while !state.pending.is_empty() {
            let ack = front(&state.pending).await;
            self.settle(state, Some(ack))?;
        }
        state.failed.take().map_or(Ok(()), Err)
    }

    /// Transforms and sends a batch read from the queue (up to `batch_size` records that were
    /// already there); consumer errors and the end-of-partition signal in it are taken out first.
    async fn process_batch(
        &self,
        mut batch: Vec<Record<'_>>,
        state: &mut State,
    ) -> Result<(), WorkerError> {
        let started = std::time::Instant::now();
        let mut bytes = 0;
        let mut rewound = 0;
        batch.retain(|m| match m.error() {
            // Nothing after a batch that cannot be decoded may be produced: its offsets would
            // be stored past the records lost in it.
            _ if state.failed.is_some() => false,
            None if state.read_next.is_some_and(|next| m.offset() < next) => {
                rewound += 1;
                false
            }
            None => {
                bytes += m.payload_len();
                true
            }
            Some(code) => {
                self.shared.stats.consumer_error();
                if let Some(undecodable) = m.undecodable() {
                    self.stats.batch_undecodable();
                    state.failed = Some(WorkerError::Undecodable(undecodable));
                } else {
                    let error = KafkaError::MessageConsumption(code);
                    tracing::warn!(partition = self.partition, %error, "consumer error");
                }
                false
            }
        });
        if rewound > 0 {
            self.stats.records_rewound(rewound);
            tracing::error!(
                topic = %self.topic,
                partition = self.partition,
                records = rewound,
                next = state.read_next,
                "the partition was rewound under its worker; records already read were dropped, not produced again"
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.stats.records_consumed(batch.len());
        self.in_flight.fetch_add(batch.len(), Relaxed);
        let last = batch.last().expect("a batch has a first record").offset();
        state.read_next = Some(last + 1);
        // Exactly-once: no commit may cut a batch in two.
        let transaction = match &self.shared.transactions {
            Some(t) => Some((t, t.enter().await)),
            None => None,
        };

        let mut sent = Batch {
            acks: Acks::open(),
            first: batch[0].offset(),
            next: last + 1,
            produced: 0,
            dead: Vec::new(),
        };
        if bytes >= self.shared.parallel_min_bytes && batch.len() > 1 && can_block_in_place() {
            // Large batch: hash on the pool. block_in_place keeps the borrowed payloads valid
            // without copying them, and lets tokio move other tasks off this thread meanwhile.
            let results: Vec<Option<Result<Vec<u8>, Rejection>>> =
                tokio::task::block_in_place(|| {
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
                    Some(Err(r)) => {
                        self.send_dead_letter(message, r.kind.as_str(), &r.message, &sent.acks)
                            .await?
                    }
                };
                sent.count(outcome, message.offset());
            }
        } else {
            for message in batch.iter_mut() {
                let outcome = match message.payload() {
                    None => self.send_output(message, None, &sent.acks).await?,
                    Some(value) => match transform::transform_into(value, &mut state.buf) {
                        Ok(()) => {
                            let out = std::mem::take(&mut state.buf);
                            let outcome = self.send_output(message, Some(&out), &sent.acks).await;
                            state.buf = out;
                            outcome?
                        }
                        Err(r) => {
                            self.send_dead_letter(message, r.kind.as_str(), &r.message, &sent.acks)
                                .await?
                        }
                    },
                };
                sent.count(outcome, message.offset());
            }
        }
        sent.acks.sealed();
        state.in_flight += sent.len();
        state.pending.push_back(sent);
        if let Some((t, _guard)) = transaction {
            t.sent(self.partition, last + 1, batch.len());
        }
        self.stats.batch_done(started.elapsed());
        // A batch of sends that are all accepted at once never yields; let the signal handler
        // and the other partitions run between batches.
        tokio::task::yield_now().await;
        Ok(())
    }

    async fn send_output(
        &self,
        message: &mut Record<'_>,
        value: Option<&[u8]>,
        acks: &Arc<Acks>,
    ) -> Result<Sent, WorkerError> {
        if let Some(reason) = value.and_then(|v| self.shared.sink.output_too_large(message, v)) {
            return self
                .send_dead_letter(message, "output_too_large", &reason, acks)
                .await;
        }
        match self.shared.sink.send_output(message, value, acks).await {
            Ok(()) => Ok(Sent::Output),
            // Too large for the producer (`message.max.bytes`) once the hash is added.
            Err(e) if sink::is_record_error(&e) => {
                self.send_dead_letter(message, "output_too_large", &e.to_string(), acks)
                    .await
            }
            Err(source) => Err(WorkerError::Delivery {
                offset: message.offset(),
                source,
            }),
        }
    }

    async fn send_dead_letter(
        &self,
        message: &Record<'_>,
        kind: &'static str,
        reason: &str,
        acks: &Arc<Acks>,
    ) -> Result<Sent, WorkerError> {
        match self
            .shared
            .sink
            .send_dead_letter(message, kind, reason, acks)
            .await
        {
            Ok(()) => Ok(Sent::DeadLetter(kind)),
            Err(source) => Err(WorkerError::Delivery {
                offset: message.offset(),
                source,
            }),
        }
    }

    /// Settles `first` (the front batch's outcome) and every later batch already complete, then
    /// stores the offset once. What was acknowledged before an error is stored too.
    fn settle(&self, state: &mut State, first: Option<Ack>) -> Result<(), WorkerError> {
        let before = state.next_offset;
        let mut result = first.map_or(Ok(()), |ack| self.acknowledge(state, ack));
        while result.is_ok() {
            let Some(ack) = state.pending.front().and_then(|b| b.acks.outcome()) else {
                break;
            };
            result = self.acknowledge(state, ack);
        }
        if state.next_offset != before {
            self.store(state)?;
        }
        result
    }

    /// Pops the front batch with its outcome; an error leaves `next_offset` before the batch.
    fn acknowledge(&self, state: &mut State, ack: Ack) -> Result<(), WorkerError> {
        let done = state
            .pending
            .pop_front()
            .expect("an outcome comes from the front");
        if let Err(source) = ack {
            self.stats.delivery_failed();
            return Err(WorkerError::Delivery {
                offset: done.first,
                source,
            });
        }
        self.stats.records_produced(done.produced);
        for (kind, offset) in &done.dead {
            self.stats.record_dead_lettered(kind, *offset);
        }
        state.in_flight -= done.len();
        self.in_flight.fetch_sub(done.len(), Relaxed);
        state.next_offset = Some(done.next);
        Ok(())
    }

    fn store(&self, state: &State) -> Result<(), WorkerError> {
        let Some(next) = state.next_offset else {
            return Ok(());
        };
        self.consumer
            .store_offset(&self.topic, self.partition, next - 1)
            .map_err(|source| WorkerError::Store {
                offset: next - 1,
                source,
            })
    }

    /// Reports once when everything up to the end offset at assignment is acknowledged.
    fn check_end(&self, state: &mut State) {
        if state.at_end || !self.shared.until_end || !state.pending.is_empty() {
            return;
        }
        let Some(target) = state.end_target else {
            return;
        };
        // Nothing is pending, so everything read is acknowledged; a position at the target
        // with fewer acknowledged means the rest were transaction markers.
        let reached = target == 0
            || state.next_offset.is_some_and(|next| next >= target)
            || self
                .queue
                .position()
                .is_some_and(|position| position >= target);
        if reached {
            state.at_end = true;
            tracing::debug!(partition = self.partition, "reached end");
            self.at_end.store(true, Relaxed);
            let _ = self.shared.events.send(WorkerEvent::ReachedEnd {
                partition: self.partition,
            });
        }
    }

    /// The partition's end offset now (the last stable offset under `read_committed`), or 0
    /// when nothing is left to do (committed at the end). Asked again until the broker answers;
    /// None if the worker is told to drain meanwhile.
    async fn end_target(&self) -> Option<i64> {
        let mut backoff = Duration::from_millis(100);
        let mut drain = self.drain.clone();
        loop {
            let consumer = self.consumer.clone();
            let (topic, partition) = (self.topic.clone(), self.partition);
            let target = tokio::task::spawn_blocking(move || {
                let timeout = Duration::from_secs(10);
                let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
                let committed = consumer.committed_offset(&topic, partition, timeout)?;
                let start = committed.unwrap_or(low);
                Ok::<_, KafkaError>(if start >= high { 0 } else { high })
            })
            .await;
            match target {
                Ok(Ok(target)) => return Some(target),
                Ok(Err(error)) => {
                    tracing::warn!(partition = self.partition, %error, "cannot read the partition's end offset yet; retrying");
                }
                Err(error) => {
                    tracing::warn!(partition = self.partition, %error, "end offset task failed; retrying");
                }
            }
            tokio::select! {
                _ = drain.wait_for(|draining| *draining) => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

type Ack = Result<(), KafkaError>;

struct State {
    pending: VecDeque<Batch>,
    /// Records in `pending`.
    in_flight: usize,
    next_offset: Option<i64>,
    /// Set when the queue handed out a batch that cannot be decoded: read nothing more, finish
    /// what is in flight, then stop the worker with it.
    failed: Option<WorkerError>,
    /// The offset after the last record read from the queue.
    read_next: Option<i64>,
    end_target: Option<i64>,
    at_end: bool,
    /// Reused output buffer for the inline path.
    buf: Vec<u8>,
}

async fn front(pending: &VecDeque<Batch>) -> Ack {
    pending
        .front()
        .expect("guarded by is_empty")
        .acks
        .done()
        .await
}

fn can_block_in_place() -> bool {
    tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
}
