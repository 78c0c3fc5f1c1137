//! The group member: rebalance callbacks that start and drain partition workers, and the thread
//! that serves the consumer's main queue.
//!
//! # Contract
//! - Every assigned partition is split into its own queue in `pre_rebalance(Assign)`, before it
//!   fetches anything, and gets one [`PartitionWorker`].
//! - On revocation the callback blocks until the revoked partitions' workers have drained (all
//!   in-flight records acknowledged, offsets stored) and commits those offsets synchronously, so
//!   the next owner starts exactly after the last acknowledged record. Past `drain_timeout` the
//!   worker is abandoned and its unacknowledged records are counted as replayable.
//! - Callbacks run on the main-queue thread, a plain OS thread, so blocking there never stalls the
//!   tokio workers that the draining partition tasks run on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use crate::fetch::{PartitionQueue, Wakeups};
use crate::logging::{ClientLog, FatalErrors};
use crate::member::Member;
use crate::metrics::Stats;
use crate::partition::{PartitionWorker, Shared, WorkerExit};

/// What the consumer side tells the coordinator, besides worker events.
#[derive(Debug)]
pub enum GroupEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
    /// Something that must stop the process (a message on the main queue means a partition was
    /// not split: continuing could commit past it).
    Fatal(String),
}

struct WorkerHandle {
    drain: watch::Sender<bool>,
    exit: std_mpsc::Receiver<WorkerExit>,
    in_flight: Arc<AtomicUsize>,
    at_end: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// The outcome of draining a set of workers.
#[derive(Debug, Default)]
pub struct Drained {
    pub exits: Vec<WorkerExit>,
    /// Unacknowledged records of workers that missed the deadline: they will be consumed again.
    pub abandoned: usize,
}

/// The consumer's context: owns the partition workers.
pub struct Context {
    topic: String,
    consumer: OnceLock<Weak<StreamConsumer<Context>>>,
    runtime: tokio::runtime::Handle,
    shared: Arc<Shared>,
    group_events: mpsc::UnboundedSender<GroupEvent>,
    workers: Mutex<HashMap<i32, WorkerHandle>>,
    wakeups: Arc<Wakeups>,
    closing: AtomicBool,
    drain_timeout: Duration,
    log: ClientLog,
}

impl Context {
    pub fn new(
        topic: String,
        shared: Arc<Shared>,
        group_events: mpsc::UnboundedSender<GroupEvent>,
        drain_timeout: Duration,
        fatal: Arc<FatalErrors>,
    ) -> Self {
        Context {
            topic,
            consumer: OnceLock::new(),
            runtime: tokio::runtime::Handle::current(),
            shared,
            group_events,
            workers: Mutex::new(HashMap::new()),
            wakeups: Arc::default(),
            closing: AtomicBool::new(false),
            drain_timeout,
            log: ClientLog::raising(fatal),
        }
    }

    /// Must be called once, right after the consumer is created and before it subscribes.
    pub fn attach(&self, consumer: &Arc<StreamConsumer<Context>>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }

    /// From now on, assignments start no workers: the process is stopping.
    pub fn close(&self) {
        self.closing.store(true, Relaxed);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Whether every partition that has a worker reached its end offset (`--until-end`), and
    /// which partitions those are. Read from the workers' own flags, so no event order matters.
    pub fn all_at_end(&self) -> (bool, Vec<i32>) {
        let workers = self.workers.lock().unwrap();
        let done = workers.values().all(|h| h.at_end.load(Relaxed));
        let mut partitions: Vec<i32> = workers.keys().copied().collect();
        partitions.sort_unstable();
        (done, partitions)
    }

    /// Takes every worker out of the registry and drains them before `deadline` (blocking).
    pub fn drain_all(&self, deadline: Instant) -> Drained {
        let handles: Vec<_> = self.workers.lock().unwrap().drain().collect();
        self.drain(handles, deadline)
    }

    fn start_worker(&self, consumer: &Arc<StreamConsumer<Context>>, partition: i32) {
        let Some(queue) = PartitionQueue::split(consumer, &self.wakeups, &self.topic, partition)
        else {
            let reason = format!("cannot split a queue for {}/{partition}", self.topic);
            let _ = self.group_events.send(GroupEvent::Fatal(reason));
            return;
        };
        let (drain, drain_rx) = watch::channel(false);
        let (exit_tx, exit) = std_mpsc::sync_channel(1);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let at_end = Arc::new(AtomicBool::new(false));
        let worker = PartitionWorker {
            topic: self.topic.clone(),
            partition,
            queue,
            consumer: consumer.clone() as Arc<dyn Member>,
            stats: self.shared.stats.partition(&self.topic, partition),
            shared: self.shared.clone(),
            drain: drain_rx,
            in_flight: in_flight.clone(),
            at_end: at_end.clone(),
        };
        let task = self.runtime.spawn(async move {
            let _ = exit_tx.send(worker.run().await);
        });
        let handle = WorkerHandle {
            drain,
            exit,
            in_flight,
            at_end,
            task,
        };
        if let Some(old) = self.workers.lock().unwrap().insert(partition, handle) {
            // Not expected: a partition is revoked before it is assigned again.
            old.task.abort();
        }
    }

    fn drain(&self, handles: Vec<(i32, WorkerHandle)>, deadline: Instant) -> Drained {
        for (_, h) in &handles {
            let _ = h.drain.send(true);
        }
        let mut drained = Drained::default();
        for (partition, h) in handles {
            let wait = deadline.saturating_duration_since(Instant::now());
            match h.exit.recv_timeout(wait) {
                Ok(exit) => drained.exits.push(exit),
                Err(_) => {
                    h.task.abort();
                    let n = h.in_flight.swap(0, Relaxed);
                    self.shared.stats.records_abandoned(n);
                    drained.abandoned += n;
                    tracing::warn!(
                        topic = %self.topic,
                        partition,
                        replayable = n,
                        "partition did not drain before the deadline; its unacknowledged records will be consumed again"
                    );
                }
            }
        }
        drained
    }

    fn revoke(&self, tpl: &TopicPartitionList) {
        let partitions = self.partitions_of(tpl);
        let handles: Vec<_> = {
            let mut workers = self.workers.lock().unwrap();
            partitions
                .iter()
                .filter_map(|p| workers.remove(p).map(|h| (*p, h)))
                .collect()
        };
        let deadline = Instant::now() + self.drain_timeout;
        let drained = self.drain(handles, deadline);
        match &self.shared.transactions {
            None => {
                match self.consumer.get().and_then(Weak::upgrade) {
                    Some(consumer) => {
                        commit(&consumer, &self.topic, &drained.exits, deadline);
                    }
                    // Closing: librdkafka commits the stored offsets itself on the way out.
                    None => tracing::debug!("consumer closing; stored offsets left to librdkafka"),
                }
            }
            Some(transactions) => {
                // The revoked partitions' last records and offsets leave in one transaction,
                // before the partitions do. An abandoned worker may have sent part of a batch
                // whose offsets are not recorded: committing would duplicate it, so abort.
                let result = if drained.abandoned > 0 || drained.exits.iter().any(|e| e.failed) {
                    transactions.abort_blocking()
                } else {
                    transactions.commit_blocking()
                };
                if let Err(e) = result {
                    let _ = self.group_events.send(GroupEvent::Fatal(e.to_string()));
                }
            }
        }
        self.shared
            .stats
            .partitions_released(&self.topic, &partitions);
        let _ = self.group_events.send(GroupEvent::Revoked(partitions));
    }

    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }
}

/// Commits the offsets that drained workers stored, synchronously, and says whether they are
/// committed (nothing to commit counts as success).
///
/// A commit refused while the group rebalances (or its coordinator moves) succeeds once that is
/// over, so it is retried. A synchronous commit can also wait behind the member's pending join,
/// so the attempts run on their own thread and the caller waits only until `deadline`.
pub fn commit(
    consumer: &Arc<StreamConsumer<Context>>,
    topic: &str,
    exits: &[WorkerExit],
    deadline: Instant,
) -> bool {
    let mut tpl = TopicPartitionList::new();
    for exit in exits {
        if let Some(next) = exit.next_offset {
            tpl.add_partition_offset(topic, exit.partition, Offset::Offset(next))
                .expect("a valid offset");
        }
    }
    if tpl.count() == 0 {
        return true;
    }
    let (done, result) = std_mpsc::sync_channel(1);
    let committer = consumer.clone();
    let spawned = std::thread::Builder::new()
        .name("ktransform-commit".into())
        .spawn(move || {
            let _ = done.send(commit_until(&committer, &tpl, deadline));
        });
    let committed = spawned.is_ok()
        && result
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or(false);
    let stats = consumer.context().stats();
    stats.committed(committed);
    if !committed {
        tracing::warn!("offsets not committed before the deadline; records after the last committed offset will be consumed again");
    }
    committed
}

fn commit_until(
    consumer: &StreamConsumer<Context>,
    tpl: &TopicPartitionList,
    deadline: Instant,
) -> bool {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match consumer.commit(tpl, CommitMode::Sync) {
            Ok(()) => {
                if attempts > 1 {
                    tracing::info!(attempts, "commit succeeded after retries");
                }
                return true;
            }
            Err(error) if Instant::now() + COMMIT_RETRY_BACKOFF < deadline => {
                tracing::debug!(%error, attempts, "commit refused; retrying");
                std::thread::sleep(COMMIT_RETRY_BACKOFF);
            }
            Err(error) => {
                tracing::warn!(%error, attempts, "commit failed");
                return false;
            }
        }
    }
}

/// librdkafka's line for an offset reset caused by an error (out of range, mostly); resets of
/// partitions that simply have no committed offset are only debug lines.
fn is_offset_reset(level: RDKafkaLogLevel, fac: &str, message: &str) -> bool {
    (level as i32) <= RDKafkaLogLevel::Warning as i32
        && fac == "OFFSET"
        && message.contains("offset reset")
}

/// Pause between attempts of a refused synchronous commit.
const COMMIT_RETRY_BACKOFF: Duration = Duration::from_millis(200);

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        // End-of-partition is an event (`--until-end` asks for it), not an error.
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        self.shared.stats.consumer_error();
        self.log.error(&error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if is_offset_reset(level, fac, message) {
            // An owned partition's fetch was out of range and librdkafka moved it to
            // `auto.offset.reset`: records were skipped or will be read twice. Never quietly.
            self.shared.stats.offset_reset(&self.topic);
            tracing::error!(topic = %self.topic, "librdkafka: {message}");
            return;
        }
        self.log.log(level, fac, message);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.shared.stats.observe_client(&statistics, &self.topic);
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                if self.is_closing() {
                    return;
                }
                let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
                    return;
                };
                let partitions = self.partitions_of(tpl);
                for &p in &partitions {
                    self.start_worker(&consumer, p);
                }
                self.shared.stats.partitions_assigned(partitions.len());
                tracing::info!(topic = %self.topic, ?partitions, "partitions assigned");
                let _ = self.group_events.send(GroupEvent::Assigned(partitions));
            }
            Rebalance::Revoke(tpl) => {
                let partitions = self.partitions_of(tpl);
                if !partitions.is_empty() {
                    tracing::info!(topic = %self.topic, ?partitions, "partitions revoked; draining");
                }
                self.revoke(tpl);
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }

    fn post_rebalance(&self, _base: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        self.shared.stats.rebalanced();
    }
}

/// Serves the main queue (rebalances, errors) on its own OS thread until `stop` turns true.
pub fn serve_main_queue(
    consumer: Arc<StreamConsumer<Context>>,
    mut stop: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<GroupEvent>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ktransform-group".into())
        .spawn(move || {
            // Not a tokio runtime context: the revocation callback may block on a lock here.
            futures::executor::block_on(async {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        received = consumer.recv() => match received {
                            Ok(m) if !consumer.context().is_closing() => {
                                let reason = format!(
                                    "record {}/{}@{} arrived on the main queue: its partition was not split",
                                    m.topic(), m.partition(), m.offset()
                                );
                                let _ = events.send(GroupEvent::Fatal(reason));
                            }
                            Ok(_) => {}
                            Err(error) => consumer.context().error(error, "consumer"),
                        },
                    }
                }
            })
        })
}
