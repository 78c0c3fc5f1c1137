//! The group member: rebalance callbacks that start and drain partition workers, and the thread
//! that serves the consumer's main queue.
//!
//! # Contract
//! - Every assigned partition is split into its own queue in `pre_rebalance(Assign)`, before it
//!   fetches anything, and gets one [`PartitionWorker`]. It is assigned at a concrete offset,
//!   looked up first (`consumer/start.rs`): librdkafka's own lookup of a logical offset can
//!   move a partition back or forward later when a fetch turn pauses or resumes it meanwhile.
//! - On revocation the callback blocks until the revoked partitions' workers have drained (all
//!   in-flight records acknowledged, offsets stored) and commits those offsets synchronously, so
//!   the next owner starts exactly after the last acknowledged record. Past `drain_timeout` the
//!   worker is abandoned and its unacknowledged records are counted as replayable.
//! - Callbacks run on the main-queue thread, a plain OS thread, so blocking there never stalls the
//!   tokio workers that the draining partition tasks run on.
//! - The stall watchdog ([`crate::stall`]) sees the partitions through
//!   [`crate::stall::Watched`] (`consumer/resplit.rs`); its re-split of a partition, a
//!   revocation and the stop's drain never run at the same time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{bindings as rdsys, ClientContext, Message, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use crate::error::Error;
use crate::fetch::{PartitionQueue, Wakeups};
use crate::logging::{ClientLog, FatalErrors};
use crate::member::Member;
use crate::metrics::Stats;
use crate::offsets::CommitError;
use crate::partition::{PartitionState, PartitionWorker, Shared, WorkerExit};
use crate::stall;

mod resplit;
pub mod start;

use start::StartAt;

/// What the consumer side tells the coordinator, besides worker events.
#[derive(Debug)]
pub enum GroupEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
    /// Something that must stop the process: a partition that was not split, a failed
    /// transaction at revocation.
    Failed(Error),
}

struct WorkerHandle {
    state: Arc<PartitionState>,
    task: tokio::task::JoinHandle<()>,
}

/// The outcome of draining a set of workers.
#[derive(Debug, Default)]
pub struct Drained {
    pub exits: Vec<WorkerExit>,
    /// Unacknowledged records of workers that missed the deadline: they will be consumed again.
    pub abandoned: usize,
}

impl Drained {
    /// Each drained partition's next offset, if it acknowledged any record.
    pub fn next_offsets(&self) -> Vec<(i32, Option<i64>)> {
        self.exits
            .iter()
            .map(|e| (e.partition, e.next_offset))
            .collect()
    }

    /// Every worker finished its batches: none was abandoned or failed.
    pub fn clean(&self) -> bool {
        self.abandoned == 0 && self.exits.iter().all(|e| !e.failed)
    }
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
    /// Held by a revocation, the stop's drain and a re-split, each from start to end: a
    /// partition is never revoked while it is being re-split.
    membership: Mutex<()>,
    closing: AtomicBool,
    drain_timeout: Duration,
    /// The consumer's `auto.offset.reset`, for partitions assigned without a committed offset.
    start_at: StartAt,
    log: ClientLog,
}

impl Context {
    pub fn new(
        topic: String,
        shared: Arc<Shared>,
        group_events: mpsc::UnboundedSender<GroupEvent>,
        drain_timeout: Duration,
        start_at: StartAt,
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
            membership: Mutex::new(()),
            closing: AtomicBool::new(false),
            drain_timeout,
            start_at,
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
        let done = workers.values().all(|h| h.state.status().at_end);
        let mut partitions: Vec<i32> = workers.keys().copied().collect();
        partitions.sort_unstable();
        (done, partitions)
    }

    /// Takes every worker out of the registry and drains them before `deadline` (blocking).
    pub fn drain_all(&self, deadline: Instant) -> Drained {
        let _membership = self.membership.lock().unwrap();
        let handles: Vec<_> = self.workers.lock().unwrap().drain().collect();
        self.drain(handles, deadline)
    }

    fn start_worker(&self, consumer: &Arc<StreamConsumer<Context>>, partition: i32) {
        let Some(queue) = PartitionQueue::split(consumer, &self.wakeups, &self.topic, partition)
        else {
            let _ = self.group_events.send(GroupEvent::Failed(Error::NotSplit {
                topic: self.topic.clone(),
                partition,
                what: "librdkafka has no fetch queue for it".into(),
            }));
            return;
        };
        let state = Arc::new(PartitionState::default());
        if let Some(batches) = stall::testing::allowance(&self.topic, partition) {
            state.deafen_after(batches);
        }
        let worker = PartitionWorker {
            topic: self.topic.clone(),
            partition,
            queue,
            consumer: consumer.clone() as Arc<dyn Member>,
            stats: self.shared.stats.partition(&self.topic, partition),
            shared: self.shared.clone(),
            state: state.clone(),
        };
        let turn = worker.take_place();
        let task = self.runtime.spawn(worker.run(turn));
        let handle = WorkerHandle { state, task };
        if let Some(old) = self.workers.lock().unwrap().insert(partition, handle) {
            // Not expected: a partition is revoked before it is assigned again.
            old.task.abort();
        }
    }

    fn drain(&self, handles: Vec<(i32, WorkerHandle)>, deadline: Instant) -> Drained {
        for (_, h) in &handles {
            h.state.request_drain();
        }
        let mut drained = Drained::default();
        for (partition, h) in handles {
            match h.state.wait_done(deadline) {
                Ok(exit) => drained.exits.push(exit),
                Err(replayable) => {
                    h.task.abort();
                    self.shared.stats.records_abandoned(replayable);
                    drained.abandoned += replayable;
                    tracing::warn!(
                        topic = %self.topic,
                        partition,
                        replayable,
                        "partition did not drain before the deadline; its unacknowledged records will be consumed again"
                    );
                }
            }
        }
        drained
    }

    fn revoke(&self, tpl: &TopicPartitionList) {
        let _membership = self.membership.lock().unwrap();
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
        // Closing: no consumer to commit with; librdkafka commits the stored offsets itself.
        let member = self
            .consumer
            .get()
            .and_then(Weak::upgrade)
            .map(|c| c as Arc<dyn Member>);
        // The revoked partitions' offsets (exactly-once: with their last records, in one
        // transaction) are committed before the partitions leave.
        let committed = self.shared.offsets.commit_drained(
            member.as_ref(),
            &self.shared.stats,
            &self.topic,
            &drained.next_offsets(),
            drained.clean(),
            deadline,
        );
        match committed {
            // Logged; the next owner replays what is not committed.
            Ok(()) | Err(CommitError::NotCommitted) => {}
            // An aborted or failed transaction: the process stops and resumes from the last
            // committed offsets.
            Err(CommitError::Transaction(e)) => {
                let _ = self.group_events.send(GroupEvent::Failed(e.into()));
            }
        }
        self.shared
            .stats
            .partitions_released(&self.topic, &partitions);
        self.divide_budget();
        let _ = self.group_events.send(GroupEvent::Revoked(partitions));
    }

    /// Divides the in-flight half of `--memory-budget` among the partitions that have a worker
    /// now, or the fetch turns when there are fewer (only a partition holding one reads), after
    /// an assignment or a revocation; workers read with the new share from their next batch on.
    fn divide_budget(&self) {
        let partitions = self.workers.lock().unwrap().len();
        let reading = partitions.min(self.shared.turns.limit());
        let share = self.shared.in_flight.divide(reading);
        self.shared.stats.budget_divided(partitions, share);
    }

    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }
}

/// librdkafka's line for an offset reset caused by an error (out of range, mostly); resets of
/// partitions that simply have no committed offset are only debug lines.
fn is_offset_reset(level: RDKafkaLogLevel, fac: &str, message: &str) -> bool {
    (level as i32) <= RDKafkaLogLevel::Warning as i32
        && fac == "OFFSET"
        && message.contains("offset reset")
}

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
        if fac == "FATAL" {
            self.log.consumer_fatal(message);
            return;
        }
        self.log.log(level, fac, message);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.shared.stats.observe_client(&statistics, &self.topic);
    }
}

impl ConsumerContext for Context {
    /// rust-rdkafka's rebalance (pre-rebalance, assign or unassign, post-rebalance), with the
    /// newly assigned partitions' start offsets looked up first ([`start::resolve`]). The
    /// default cannot be called from an override, so its sequence is repeated here.
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if !self.is_closing() {
                    match start::resolve(base, tpl, self.start_at, start::LOOKUP_TIMEOUT) {
                        Ok(n) => {
                            tracing::debug!(topic = %self.topic, resolved = n, "start offsets looked up")
                        }
                        Err(error) => {
                            tracing::warn!(topic = %self.topic, %error, "start offsets not looked up; librdkafka looks them up after the assignment")
                        }
                    }
                }
                Rebalance::Assign(tpl)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            _ => Rebalance::Error(KafkaError::Rebalance(err.into())),
        };
        self.pre_rebalance(base, &rebalance);
        let native = base.client().native_ptr();
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        // Safety: the client and the list are live for the call, as in rust-rdkafka's default.
        unsafe {
            match (err, cooperative) {
                (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, true) => {
                    rdsys::rd_kafka_incremental_assign(native, tpl.ptr());
                }
                (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, false) => {
                    rdsys::rd_kafka_assign(native, tpl.ptr());
                }
                (_, true) => {
                    rdsys::rd_kafka_incremental_unassign(native, tpl.ptr());
                }
                (_, false) => {
                    rdsys::rd_kafka_assign(native, std::ptr::null());
                }
            }
        }
        self.post_rebalance(base, &rebalance);
    }

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
                self.divide_budget();
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
                                let _ = events.send(GroupEvent::Failed(Error::NotSplit {
                                    topic: m.topic().to_string(),
                                    partition: m.partition(),
                                    what: format!("record at offset {} arrived on the main queue", m.offset()),
                                }));
                            }
                            Ok(_) => {}
                            Err(error) => consumer.context().error(error, "consumer"),
                        },
                    }
                }
            })
        })
}
