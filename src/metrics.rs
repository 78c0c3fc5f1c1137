//! What happens, counted: one function per event, so the hot path calls a name, not a counter.
//!
//! Every event updates two views: run totals (plain atomics: the progress line and the
//! [`Summary`](crate::Summary)) and the Prometheus registry served on `/metrics` (families
//! labelled by topic and partition). Per-partition handles are resolved once per worker
//! ([`Stats::partition`]) so the per-record cost is two relaxed atomic adds. Nothing here logs
//! per record above DEBUG.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

mod memory;
mod stall;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub topic: String,
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub topic: String,
    pub step: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicResultLabels {
    pub topic: String,
    pub result: String,
}

/// Counters of one `run`, and its Prometheus registry.
pub struct Stats {
    totals: Totals,
    registry: Registry,
    consumed: Family<PartitionLabels, Counter>,
    produced: Family<PartitionLabels, Counter>,
    dead_lettered: Family<KindLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    lag: Family<PartitionLabels, Gauge>,
    in_flight: Gauge,
    assigned: Gauge,
    budget_share: Gauge,
    fetch_turns: Gauge,
    turns_waiting: Gauge,
    turns_handed_on: Counter,
    /// The running total `turns_handed_on` was last brought up to.
    turns_seen: AtomicU64,
    rebalances: Counter,
    commits: Family<ResultLabels, Counter>,
    transactions: Family<ResultLabels, Counter>,
    replayed: Counter,
    rewinds: Counter,
    batch_seconds: Histogram,
    stalled: Family<PartitionLabels, Gauge>,
    stall_heals: Family<StepLabels, Counter>,
    stall_checks: Family<TopicResultLabels, Counter>,
    /// Partitions stalled past the stall watchdog's health bound, for `/healthz`.
    unhealed: Mutex<BTreeSet<(String, i32)>>,
    /// When a broker was last seen up (ms since `started`), for `/healthz`.
    broker_seen_ms: AtomicU64,
    started: Instant,
}

#[derive(Debug, Default)]
struct Totals {
    consumed: AtomicU64,
    produced: AtomicU64,
    dead_lettered: AtomicU64,
    in_flight: AtomicI64,
    rebalances: AtomicU64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    replayable: AtomicU64,
    consumer_errors: AtomicU64,
    offset_resets: AtomicU64,
    rewound: AtomicU64,
    assigned: AtomicI64,
    txn_commits: AtomicU64,
    txn_aborts: AtomicU64,
    txn_abort_retries: AtomicU64,
    txn_rewinds: AtomicU64,
    stalls: AtomicU64,
    stall_heals: AtomicU64,
}

/// A copy of the run totals at one moment.
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
    /// Out-of-range fetches that librdkafka answered with `auto.offset.reset`.
    pub offset_resets: u64,
    /// Records handed out again below what their worker had already read, and dropped.
    pub rewound: u64,
    pub assigned_partitions: i64,
    pub transactions_committed: u64,
    pub transactions_aborted: u64,
    /// Calls of librdkafka's abort made again because the one before had not finished it.
    pub transaction_abort_retries: u64,
    /// Partitions rewound to their committed offset after an aborted transaction.
    pub transaction_rewinds: u64,
    /// Partitions found stalled by the watchdog (each stall once, however long it lasted).
    pub stalls: u64,
    /// Heals the watchdog tried on stalled partitions (re-arms and re-splits).
    pub stall_heals: u64,
}

/// Handles of one partition's series, resolved once when its worker starts.
#[derive(Clone)]
pub struct PartitionStats {
    stats: Arc<Stats>,
    topic: String,
    partition: i32,
    consumed: Counter,
    produced: Counter,
}

impl Stats {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("ktransform");
        let stats = Stats {
            totals: Totals::default(),
            consumed: Family::default(),
            produced: Family::default(),
            dead_lettered: Family::default(),
            errors: Family::default(),
            lag: Family::default(),
            in_flight: Gauge::default(),
            assigned: Gauge::default(),
            budget_share: Gauge::default(),
            fetch_turns: Gauge::default(),
            turns_waiting: Gauge::default(),
            turns_handed_on: Counter::default(),
            turns_seen: AtomicU64::new(0),
            rebalances: Counter::default(),
            commits: Family::default(),
            transactions: Family::default(),
            replayed: Counter::default(),
            rewinds: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            stalled: Family::default(),
            stall_heals: Family::default(),
            stall_checks: Family::default(),
            unhealed: Mutex::new(BTreeSet::new()),
            broker_seen_ms: AtomicU64::new(0),
            started: Instant::now(),
            registry: Registry::default(),
        };
        stats.register(&mut registry);
        Arc::new(Stats { registry, ..stats })
    }

    /// Registers every family and metric under the `ktransform` prefix.
    fn register(&self, r: &mut Registry) {
        r.register(
            "records_consumed",
            "Records read from the source",
            self.consumed.clone(),
        );
        r.register(
            "records_produced",
            "Records acknowledged by the destination",
            self.produced.clone(),
        );
        r.register(
            "records_dead_lettered",
            "Records acknowledged by the dead-letter topic, by reason",
            self.dead_lettered.clone(),
        );
        r.register(
            "errors",
            "Errors by kind (consumer, undecodable, delivery, commit, transaction, offset_reset, stalled, cut_off; rewound counts records)",
            self.errors.clone(),
        );
        r.register(
            "consumer_lag_records",
            "Records behind the log end, per partition (librdkafka statistics)",
            self.lag.clone(),
        );
        r.register(
            "records_in_flight",
            "Records consumed and not yet acknowledged",
            self.in_flight.clone(),
        );
        r.register(
            "assigned_partitions",
            "Partitions assigned to this instance",
            self.assigned.clone(),
        );
        r.register(
            "rebalances",
            "Rebalances this instance took part in",
            self.rebalances.clone(),
        );
        r.register(
            "commits",
            "Synchronous offset commits, by result",
            self.commits.clone(),
        );
        r.register(
            "transactions",
            "Exactly-once transactions, by result",
            self.transactions.clone(),
        );
        r.register(
            "records_replayed",
            "Records left uncommitted by a drain deadline: consumed again",
            self.replayed.clone(),
        );
        r.register(
            "partition_rewinds",
            "Exactly-once: partitions rewound to their committed offset after an aborted transaction",
            self.rewinds.clone(),
        );
        r.register(
            "batch_duration_seconds",
            "Time to transform and enqueue one batch",
            self.batch_seconds.clone(),
        );
        self.register_stall(r);
        self.register_memory(r);
    }

    /// The registry, for `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Per-partition handles for a worker.
    pub fn partition(self: &Arc<Self>, topic: &str, partition: i32) -> PartitionStats {
        let labels = PartitionLabels {
            topic: topic.to_string(),
            partition,
        };
        PartitionStats {
            stats: self.clone(),
            topic: topic.to_string(),
            partition,
            consumed: self.consumed.get_or_create(&labels).clone(),
            produced: self.produced.get_or_create(&labels).clone(),
        }
    }

    /// In-flight records given up (deadline passed): no longer in flight, to be replayed.
    pub fn records_abandoned(&self, n: usize) {
        self.totals.in_flight.fetch_sub(n as i64, Relaxed);
        self.in_flight.dec_by(n as i64);
        self.totals.replayable.fetch_add(n as u64, Relaxed);
        self.replayed.inc_by(n as u64);
    }

    pub fn rebalanced(&self) {
        self.totals.rebalances.fetch_add(1, Relaxed);
        self.rebalances.inc();
    }

    pub fn partitions_assigned(&self, n: usize) {
        self.totals.assigned.fetch_add(n as i64, Relaxed);
        self.assigned.inc_by(n as i64);
    }

    pub fn partitions_released(&self, topic: &str, partitions: &[i32]) {
        self.totals
            .assigned
            .fetch_sub(partitions.len() as i64, Relaxed);
        self.assigned.dec_by(partitions.len() as i64);
        for &partition in partitions {
            self.lag.remove(&PartitionLabels {
                topic: topic.to_string(),
                partition,
            });
        }
    }

    pub fn committed(&self, ok: bool) {
        let counter = if ok {
            &self.totals.commits
        } else {
            &self.totals.commit_failures
        };
        counter.fetch_add(1, Relaxed);
        self.commits.get_or_create(&result(ok)).inc();
        if !ok {
            self.error("", "commit");
        }
    }

    pub fn transaction_committed(&self, records: usize) {
        tracing::debug!(records, "transaction committed");
        self.totals.txn_commits.fetch_add(1, Relaxed);
        self.transactions.get_or_create(&result(true)).inc();
    }

    pub fn transaction_aborted(&self) {
        self.totals.txn_aborts.fetch_add(1, Relaxed);
        self.transactions.get_or_create(&result(false)).inc();
    }

    /// An abort that librdkafka had not finished within one call, made again (exactly-once).
    pub fn transaction_abort_retried(&self) {
        self.totals.txn_abort_retries.fetch_add(1, Relaxed);
        self.error("", "abort_retried");
    }

    pub fn consumer_error(&self) {
        self.totals.consumer_errors.fetch_add(1, Relaxed);
        self.error("", "consumer");
    }

    /// librdkafka reset a partition's fetch position after an out-of-range fetch (to
    /// `auto.offset.reset`): records were skipped (retention deleted them) or will be read again.
    pub fn offset_reset(&self, topic: &str) {
        self.totals.offset_resets.fetch_add(1, Relaxed);
        self.error(topic, "offset_reset");
    }

    pub fn error(&self, topic: &str, kind: &str) {
        let labels = KindLabels {
            topic: topic.to_string(),
            kind: kind.to_string(),
        };
        self.errors.get_or_create(&labels).inc();
    }

    /// From librdkafka's statistics: per-partition lag, and whether any broker is up.
    pub fn observe_client(&self, statistics: &rdkafka::Statistics, source: &str) {
        if statistics.brokers.values().any(|b| b.state == "UP") {
            let ms = self.started.elapsed().as_millis() as u64;
            self.broker_seen_ms.store(ms.max(1), Relaxed);
        }
        let Some(topic) = statistics.topics.get(source) else {
            return;
        };
        for (&partition, p) in &topic.partitions {
            // -1 is the internal "unassigned" partition; -1 lag means "not known yet".
            // Lag from the stored offset is current; from the committed one (exactly-once, where
            // nothing is stored) it trails by up to a commit interval.
            let lag = if p.consumer_lag_stored >= 0 {
                p.consumer_lag_stored
            } else {
                p.consumer_lag
            };
            if partition >= 0 && lag >= 0 {
                let labels = PartitionLabels {
                    topic: source.to_string(),
                    partition,
                };
                self.lag.get_or_create(&labels).set(lag);
            }
        }
    }

    /// Whether a broker was seen up within `window` (never seen yet counts as not).
    pub fn broker_seen_within(&self, window: Duration) -> bool {
        let seen = self.broker_seen_ms.load(Relaxed);
        seen > 0 && self.started.elapsed().as_millis() as u64 - seen <= window.as_millis() as u64
    }

    pub fn snapshot(&self) -> Snapshot {
        let t = &self.totals;
        Snapshot {
            consumed: t.consumed.load(Relaxed),
            produced: t.produced.load(Relaxed),
            dead_lettered: t.dead_lettered.load(Relaxed),
            in_flight: t.in_flight.load(Relaxed),
            rebalances: t.rebalances.load(Relaxed),
            commits: t.commits.load(Relaxed),
            commit_failures: t.commit_failures.load(Relaxed),
            replayable: t.replayable.load(Relaxed),
            consumer_errors: t.consumer_errors.load(Relaxed),
            offset_resets: t.offset_resets.load(Relaxed),
            rewound: t.rewound.load(Relaxed),
            assigned_partitions: t.assigned.load(Relaxed),
            transactions_committed: t.txn_commits.load(Relaxed),
            transactions_aborted: t.txn_aborts.load(Relaxed),
            transaction_abort_retries: t.txn_abort_retries.load(Relaxed),
            transaction_rewinds: t.txn_rewinds.load(Relaxed),
            stalls: t.stalls.load(Relaxed),
            stall_heals: t.stall_heals.load(Relaxed),
        }
    }
}

impl PartitionStats {
    pub fn records_consumed(&self, n: usize) {
        let t = &self.stats.totals;
        t.consumed.fetch_add(n as u64, Relaxed);
        t.in_flight.fetch_add(n as i64, Relaxed);
        self.consumed.inc_by(n as u64);
        self.stats.in_flight.inc_by(n as i64);
    }

    pub fn records_produced(&self, n: usize) {
        let t = &self.stats.totals;
        t.produced.fetch_add(n as u64, Relaxed);
        t.in_flight.fetch_sub(n as i64, Relaxed);
        self.produced.inc_by(n as u64);
        self.stats.in_flight.dec_by(n as i64);
    }

    pub fn record_dead_lettered(&self, kind: &str, offset: i64) {
        tracing::debug!(
            kind,
            partition = self.partition,
            offset,
            "record dead-lettered"
        );
        let t = &self.stats.totals;
        t.dead_lettered.fetch_add(1, Relaxed);
        t.in_flight.fetch_sub(1, Relaxed);
        self.stats.in_flight.dec();
        let labels = KindLabels {
            topic: self.topic.clone(),
            kind: kind.to_string(),
        };
        self.stats.dead_lettered.get_or_create(&labels).inc();
    }

    pub fn batch_done(&self, took: Duration) {
        self.stats.batch_seconds.observe(took.as_secs_f64());
    }

    pub fn delivery_failed(&self) {
        self.stats.error(&self.topic, "delivery");
    }

    /// A record batch that cannot be decoded stops the partition.
    pub fn batch_undecodable(&self) {
        self.stats.error(&self.topic, "undecodable");
    }

    /// Exactly-once: the partition went back to its committed offset after an abort.
    pub fn rewound_after_abort(&self) {
        self.stats.totals.txn_rewinds.fetch_add(1, Relaxed);
        self.stats.rewinds.inc();
    }

    /// Records handed out again below what the worker had read: dropped, not produced twice.
    pub fn records_rewound(&self, n: usize) {
        self.stats.totals.rewound.fetch_add(n as u64, Relaxed);
        let labels = KindLabels {
            topic: self.topic.clone(),
            kind: "rewound".to_string(),
        };
        self.stats.errors.get_or_create(&labels).inc_by(n as u64);
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn result(ok: bool) -> ResultLabels {
    ResultLabels {
        result: if ok { "ok" } else { "failed" }.to_string(),
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
