//! What happens, counted: one function per event, so the hot path calls a name, not a counter.
//!
//! Counters are plain atomics shared by every task of one `run`; the progress line reads them at
//! a fixed interval. Nothing here logs per record above DEBUG.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters of one `run`. Cheap to clone through an `Arc`.
#[derive(Debug, Default)]
pub struct Stats {
    consumed: AtomicU64,
    produced: AtomicU64,
    dead_lettered: AtomicU64,
    in_flight: AtomicI64,
    rebalances: AtomicU64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    replayable: AtomicU64,
    consumer_errors: AtomicU64,
    assigned: AtomicI64,
    txn_commits: AtomicU64,
    txn_aborts: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub consumed: u64,
    pub produced: u64,
    pub dead_lettered: u64,
    pub in_flight: i64,
    pub rebalances: u64,
    pub commits: u64,
    pub commit_failures: u64,
    /// Records left unacknowledged by a revocation or shutdown deadline: they will be consumed again.
    pub replayable: u64,
    pub consumer_errors: u64,
    pub assigned_partitions: i64,
    pub transactions_committed: u64,
    pub transactions_aborted: u64,
}

impl Stats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn records_consumed(&self, n: usize) {
        self.consumed.fetch_add(n as u64, Relaxed);
        self.in_flight.fetch_add(n as i64, Relaxed);
    }

    pub fn record_produced(&self) {
        self.produced.fetch_add(1, Relaxed);
        self.in_flight.fetch_sub(1, Relaxed);
    }

    pub fn record_dead_lettered(&self, kind: &str, partition: i32, offset: i64) {
        tracing::debug!(kind, partition, offset, "record dead-lettered");
        self.dead_lettered.fetch_add(1, Relaxed);
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// In-flight records given up (deadline passed): no longer in flight, to be replayed.
    pub fn records_abandoned(&self, n: usize) {
        self.in_flight.fetch_sub(n as i64, Relaxed);
        self.replayable.fetch_add(n as u64, Relaxed);
    }

    pub fn rebalanced(&self) {
        self.rebalances.fetch_add(1, Relaxed);
    }

    pub fn partitions_assigned(&self, n: usize) {
        self.assigned.fetch_add(n as i64, Relaxed);
    }

    pub fn partitions_released(&self, n: usize) {
        self.assigned.fetch_sub(n as i64, Relaxed);
    }

    pub fn committed(&self, ok: bool) {
        if ok {
            self.commits.fetch_add(1, Relaxed);
        } else {
            self.commit_failures.fetch_add(1, Relaxed);
        }
    }

    pub fn transaction_committed(&self, records: usize) {
        tracing::debug!(records, "transaction committed");
        self.txn_commits.fetch_add(1, Relaxed);
    }

    pub fn transaction_aborted(&self) {
        self.txn_aborts.fetch_add(1, Relaxed);
    }

    pub fn consumer_error(&self) {
        self.consumer_errors.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            consumed: self.consumed.load(Relaxed),
            produced: self.produced.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            rebalances: self.rebalances.load(Relaxed),
            commits: self.commits.load(Relaxed),
            commit_failures: self.commit_failures.load(Relaxed),
            replayable: self.replayable.load(Relaxed),
            consumer_errors: self.consumer_errors.load(Relaxed),
            assigned_partitions: self.assigned.load(Relaxed),
            transactions_committed: self.txn_commits.load(Relaxed),
            transactions_aborted: self.txn_aborts.load(Relaxed),
        }
    }
}

/// Logs one INFO line per `interval` with totals and rates, until the task is dropped.
pub async fn progress(stats: Arc<Stats>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last = (Instant::now(), stats.snapshot());
    loop {
        ticker.tick().await;
        let now = (Instant::now(), stats.snapshot());
        let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-9);
        let rate = |a: u64, b: u64| ((a - b) as f64 / secs).round() as u64;
        let (s, p) = (now.1, last.1);
        tracing::info!(
            consumed = s.consumed,
            produced = s.produced,
            dead_lettered = s.dead_lettered,
            in_flight = s.in_flight,
            partitions = s.assigned_partitions,
            in_per_sec = rate(s.consumed, p.consumed),
            out_per_sec = rate(s.produced + s.dead_lettered, p.produced + p.dead_lettered),
            "progress"
        );
        last = now;
    }
}
