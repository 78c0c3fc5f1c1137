//! One worker per assigned partition: read its split queue in batches, transform, produce, and
//! store offsets as acknowledgements arrive, in partition order.
//!
//! # Contract
//! - Records of a partition are produced in offset order (one task, sends in order, idempotent
//!   producer), so per-partition and per-key order hold in the output.
//! - The offset handed to the guarantee ([`Offsets::acknowledged`]: stored under at-least-once)
//!   is always `last + 1` where every record up to `last` has been acknowledged by the
//!   destination or the dead-letter topic: acknowledgements are counted per batch ([`Acks`])
//!   and batches are settled oldest first (`tracker`).
//! - At most the partition's share of the in-flight budget ([`InFlight`]: `--memory-budget`
//!   and `--max-in-flight`, divided again on every rebalance) is unacknowledged; past that the
//!   worker stops reading.
//! - The partition fetches only while its worker holds a fetch turn ([`Turns`], the prefetch
//!   half of the budget): without one it is paused, and the worker resumes it when a turn is
//!   handed to it (`turn.rs`). Pausing and resuming only ever happen between the worker's own
//!   reads, and a worker that ends hands its turn on and leaves its partition resumed.
//! - On drain (revocation or shutdown, asked through its [`PartitionState`]) the worker reads
//!   nothing more, waits for what it has in flight, and reports its last offset in
//!   [`WorkerExit`].
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
//! - Exactly-once: when a transaction is aborted (a commit the group refused during a
//!   rebalance, mostly), what the worker sent into it is discarded: it forgets its batches in
//!   flight, seeks its partition back to the group's committed offset and sends those records
//!   again in the next transaction. Deliveries that the abort purged (`PurgeQueue`,
//!   `PurgeInflight`, or a send refused in the aborting transaction's `State`) are the abort's
//!   casualties, not failures: the worker waits for the abort and rewinds.
//! - `--until-end`: the end is the high watermark when the worker starts (the last stable
//!   offset under `read_committed`), not librdkafka's end-of-partition event (see
//!   [`crate::fetch`]); it is reached once everything read is acknowledged and either the
//!   acknowledged offsets or the position (which moves past transaction markers) got there.

mod rewind;
mod send;
mod state;
mod tracker;
mod turn;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::Message;
use rewind::aborted;
use send::can_block_in_place;
use tokio::sync::{mpsc, watch};

use crate::dead_letter::Router;
use crate::fetch::{PartitionQueue, Record, Undecodable};
use crate::member::Member;
use crate::memory::{InFlight, Turns};
use crate::metrics::{PartitionStats, Stats};
use crate::offsets::Offsets;

pub use state::{PartitionState, Phase, Progress, Status, WorkerExit};
use tracker::{Ack, Batch, Settled, Tracker};
pub use turn::Turn;
use turn::TURN_LOOK;

/// A safety net for the queue's wake-up ([`crate::fetch`]): never wait on it longer than this
/// without reading it again.
const RECV_WAKE: Duration = Duration::from_millis(250);

/// What every worker of one run shares.
pub struct Shared {
    /// Sends each record to the destination or the dead-letter topic.
    pub router: Router,
    pub stats: Arc<Stats>,
    pub pool: Arc<rayon::ThreadPool>,
    pub events: mpsc::UnboundedSender<WorkerEvent>,
    /// Records per batch and in flight, per partition: the in-flight budget's division.
    pub in_flight: Arc<InFlight>,
    /// Which partitions fetch now: the prefetch half of the budget, instance-wide.
    pub turns: Arc<Turns>,
    pub parallel_min_bytes: usize,
    /// Report [`WorkerEvent::ReachedEnd`] (for `--until-end`).
    pub until_end: bool,
    /// What happens to offsets: the guarantee.
    pub offsets: Arc<Offsets>,
}

/// What a worker tells the coordinator while it runs (its [`PartitionState`] holds the rest).
#[derive(Debug)]
pub enum WorkerEvent {
    /// Everything up to the partition's end offset at assignment is acknowledged: a wake-up
    /// for the coordinator, which reads the states of all partitions.
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

pub struct PartitionWorker {
    pub topic: String,
    pub partition: i32,
    pub queue: PartitionQueue,
    pub consumer: Arc<dyn Member>,
    pub stats: PartitionStats,
    pub shared: Arc<Shared>,
    /// Shared with the owner: the drain request, records in flight, the end, the exit.
    pub state: Arc<PartitionState>,
}

impl PartitionWorker {
    /// The partition's place in the fetch turns ([`Turns`]), taken before the partition fetches
    /// anything (when it is split, before librdkafka starts its fetch): without a turn it is
    /// paused at once, and a pause made before the fetch starts never races it.
    pub fn take_place(&self) -> Turn {
        Turn::enter(
            self.shared.turns.clone(),
            self.shared.stats.clone(),
            self.queue.pauser(),
            &self.topic,
            self.partition,
        )
    }

    /// Runs until drained or stopped by an error; the exit goes to the [`PartitionState`].
    pub async fn run(self, mut turn: Turn) {
        let mut work = Work::default();
        if !turn.fetching() {
            self.state.set_waiting_turn(true);
        }
        if self.shared.until_end {
            work.end_target = self.end_target().await;
        }
        let failed = match self.consume(&mut work, &mut turn).await {
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
                    .records_abandoned(work.tracker.in_flight());
                true
            }
        };
        self.state.finish(WorkerExit {
            partition: self.partition,
            next_offset: work.tracker.next_offset(),
            failed,
        });
    }

    async fn consume(&self, work: &mut Work, turn: &mut Turn) -> Result<(), WorkerError> {
        let mut aborts = self.shared.offsets.aborts();
        if let Some(aborts) = &mut aborts {
            work.aborts_seen = *aborts.borrow_and_update();
        }
        loop {
            if let Some(count) = aborts.as_mut().map(|a| *a.borrow_and_update()) {
                if count != work.aborts_seen && !self.rewind(work, count).await {
                    break;
                }
            }
            self.settle(work, None)?;
            self.check_end(work);
            if self.state.draining() || work.failed.is_some() {
                break;
            }
            let (batch, max_in_flight) = self.shared.in_flight.limits(work.value_bytes);
            let room = !work.abort_pending
                && work.tracker.in_flight() + batch <= max_in_flight
                && self.state.reads_queue();
            // Another partition waits for this one's fetch turn: look again soon.
            let wake = if turn.contested() {
                TURN_LOOK
            } else {
                RECV_WAKE
            };
            tokio::select! {
                biased;
                _ = self.state.drain_requested() => {}
                _ = aborted(&mut aborts) => {}
                _ = turn.called(), if !turn.fetching() => {
                    if turn.take() {
                        self.state.set_waiting_turn(false);
                    }
                }
                ack = work.tracker.front(), if !work.tracker.is_idle() => {
                    self.settle(work, Some(ack))?;
                }
                received = tokio::time::timeout(wake, self.queue.next_batch(batch)), if room => {
                    let mut left = 0;
                    let mut gave_up = false;
                    if let Ok(batch) = received {
                        let read = batch.len();
                        self.process_batch(batch, work, aborts.as_ref()).await?;
                        left = self.queue.len();
                        gave_up = turn.report(read, left, work.value_bytes);
                    } else {
                        turn.idle();
                    }
                    if gave_up
                        || (turn.contested() && turn.offer(left == 0, || self.queue.caught_up()))
                    {
                        self.state.set_waiting_turn(true);
                    }
                }
            }
        }
        // Drain: nothing more is read; wait for what is in flight, oldest first.
        while !work.tracker.is_idle() {
            let ack = work.tracker.front().await;
            self.settle(work, Some(ack))?;
        }
        work.failed.take().map_or(Ok(()), Err)
    }

    /// Transforms and sends a batch read from the queue (up to `batch_size` records that were
    /// already there), after [`PartitionWorker::screen`] took out what must not be sent.
    async fn process_batch(
        &self,
        mut batch: Vec<Record<'_>>,
        work: &mut Work,
        aborts: Option<&watch::Receiver<u64>>,
    ) -> Result<(), WorkerError> {
        let started = std::time::Instant::now();
        let bytes = self.screen(&mut batch, work);
        if batch.is_empty() {
            return Ok(());
        }
        work.value_bytes = bytes / batch.len();
        self.stats.records_consumed(batch.len());
        let last = batch.last().expect("a batch has a first record").offset();
        work.tracker.read(batch[0].offset(), last + 1);
        self.state.read(last + 1);
        let guard = self.shared.offsets.enter().await;
        if aborts.is_some_and(|a| *a.borrow() != work.aborts_seen) {
            // Read under the aborted transaction: dropped; the rewind reads it again.
            return Ok(());
        }
        let mut sent = Batch::open(batch[0].offset(), last + 1);
        let result =
            if bytes >= self.shared.parallel_min_bytes && batch.len() > 1 && can_block_in_place() {
                self.send_hashed_on_pool(&mut batch, &mut sent).await
            } else {
                self.send_hashed_inline(&mut batch, &mut sent, &mut work.buf)
                    .await
            };
        match result {
            Err(WorkerError::Delivery { source, .. }) if self.abort_casualty(&source) => {
                // The transaction is failing: nothing more is sent until it is aborted.
                work.abort_pending = true;
                work.tracker.abandon_in_flight();
                return Ok(());
            }
            result => result?,
        }
        sent.acks.sealed();
        work.tracker.sent(sent);
        self.state.set_in_flight(work.tracker.in_flight());
        self.shared
            .offsets
            .sent(self.partition, last + 1, batch.len());
        drop(guard);
        self.stats.batch_done(started.elapsed());
        // A batch of sends that are all accepted at once never yields; let the signal handler
        // and the other partitions run between batches.
        tokio::task::yield_now().await;
        Ok(())
    }

    /// Takes out of a batch what must not be sent: consumer errors (a batch that cannot be
    /// decoded stops the worker, and nothing after it is sent: its offsets would be stored past
    /// the records lost in it) and records read before (a rewind). Returns the value bytes left.
    fn screen(&self, batch: &mut Vec<Record<'_>>, work: &mut Work) -> usize {
        let mut bytes = 0;
        let mut rewound = 0;
        batch.retain(|m| match m.error() {
            _ if work.failed.is_some() => false,
            None if work.tracker.already_read(m.offset()) => {
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
                    work.failed = Some(WorkerError::Undecodable(undecodable));
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
                "the partition was rewound under its worker; records already read were dropped, not produced again"
            );
        }
        bytes
    }

    /// Settles `first` (the front batch's outcome) and every later batch already complete,
    /// counts them, and hands the partition's new next offset to the guarantee once. What was
    /// acknowledged before a failure is handed over too.
    fn settle(&self, work: &mut Work, first: Option<Ack>) -> Result<(), WorkerError> {
        let Settled { batches, failed } = work.tracker.settle(first);
        for batch in &batches {
            self.stats.records_produced(batch.produced);
            for (reason, offset) in &batch.dead {
                self.stats.record_dead_lettered(reason.as_str(), *offset);
            }
        }
        if let (false, Some(next)) = (batches.is_empty(), work.tracker.next_offset()) {
            self.state.set_in_flight(work.tracker.in_flight());
            self.shared
                .offsets
                .acknowledged(&*self.consumer, &self.topic, self.partition, next)
                .map_err(|source| WorkerError::Store {
                    offset: next - 1,
                    source,
                })?;
        }
        match failed {
            None => Ok(()),
            Some((_, source)) if self.abort_casualty(&source) => {
                // Purged by a failing transaction: wait for its abort, then rewind.
                work.abort_pending = true;
                work.tracker.abandon_in_flight();
                self.state.set_in_flight(0);
                Ok(())
            }
            Some((offset, source)) => {
                self.stats.delivery_failed();
                Err(WorkerError::Delivery { offset, source })
            }
        }
    }

    /// Reports once when everything up to the end offset at assignment is acknowledged.
    fn check_end(&self, work: &mut Work) {
        let Some(target) = work.end_target.filter(|_| !work.at_end) else {
            return;
        };
        if work.tracker.reached(target, || self.queue.position()) {
            work.at_end = true;
            tracing::debug!(partition = self.partition, "reached end");
            self.state.reach_end();
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
                _ = self.state.drain_requested() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// The worker's own bookkeeping.
#[derive(Default)]
struct Work {
    tracker: Tracker,
    /// Set when the queue handed out a batch that cannot be decoded: read nothing more, finish
    /// what is in flight, then stop the worker with it.
    failed: Option<WorkerError>,
    /// `--until-end`: the end offset at assignment (0: nothing to do).
    end_target: Option<i64>,
    /// Exactly-once: the count of aborted transactions this worker has rewound for.
    aborts_seen: u64,
    /// Exactly-once: a delivery was purged by a failing transaction; read nothing until it is
    /// aborted.
    abort_pending: bool,
    at_end: bool,
    /// Reused output buffer for the inline path.
    buf: Vec<u8>,
    /// The mean value size of the last batch read: what a record in flight costs follows it
    /// ([`crate::memory::InFlight::limits`]).
    value_bytes: usize,
}
