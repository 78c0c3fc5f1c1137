//! Helpers shared by the integration tests: a real broker (env `KTRANSFORM_TEST_BROKERS`, default
//! 127.0.0.1:9092, `make up`), unique topic and group names, test data ([`data`]), Kafka clients
//! for setting up and checking, on that broker or any other ([`kafka`], [`group`]), and ktransform run
//! in-process or as the binary ([`run`]). The fault suite's own brokers and tools are in
//! [`nodes`] and [`faults`].
//!
//! Every wait has a hard cap so that a broken run fails with a message instead of hanging; no
//! test asserts on how long anything took.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

pub mod browser;
pub mod data;
pub mod faults;
pub mod group;
pub mod http;
pub mod java;
pub mod kafka;
pub mod nodes;
pub mod proxy;
pub mod run;
pub mod segments;
pub mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use data::{Mix, Tally, TestRecord};
pub use group::*;
pub use kafka::*;
pub use run::*;

/// Slows a run (at most 200 records per partition awaiting acknowledgements that take at least
/// 100 ms: under 2,000 records/s per partition) so that a stop or a signal falls mid-stream
/// however fast the machine is.
pub const THROTTLE: &[&str] = &[
    "--batch-size",
    "100",
    "--max-in-flight",
    "200",
    "-X",
    "producer.linger.ms=100",
];

/// Keys of the test records.
pub const KEYS: usize = 96;

/// No new record for this long means a topic has been read to its end.
pub const IDLE: Duration = Duration::from_secs(3);
/// The longest any single wait may take before the test fails.
pub const CAP: Duration = Duration::from_secs(120);

pub fn brokers() -> String {
    std::env::var("KTRANSFORM_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name no other test (or run) uses: prefix, pid, time, counter.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        "{prefix}-{}-{millis}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Relaxed)
    )
}

/// A test size, overridable with env `var` for soak runs.
pub fn size(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v} is not a number")),
        Err(_) => default,
    }
}

/// The topics and group of one test; the dead-letter topic is ktransform's default name.
pub struct Names {
    pub source: String,
    pub destination: String,
    pub dlq: String,
    pub group: String,
}

impl Names {
    pub fn new(test: &str) -> Self {
        let base = unique(&format!("kt-{test}"));
        Names {
            source: format!("{base}.in"),
            destination: format!("{base}.out"),
            dlq: format!("{base}.in.dlq"),
            group: format!("{base}.group"),
        }
    }

    /// [`Names::create_on`] the shared broker, one replica.
    pub async fn create(&self, partitions: i32) {
        self.create_on(&brokers(), partitions, 1).await;
    }

    /// Creates source and destination with `partitions` partitions and the dead-letter topic
    /// with 2, each with `replication` replicas, and waits until the metadata shows them led.
    pub async fn create_on(&self, bootstrap: &str, partitions: i32, replication: i32) {
        for (topic, count) in [
            (&self.source, partitions),
            (&self.destination, partitions),
            (&self.dlq, 2),
        ] {
            create_topic_on(bootstrap, topic, count, replication, &[]).await;
        }
    }

    /// `run` flags for these names, then `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        // Many instances run at once in tests: none binds the default metrics port.
        let names = [
            "--source",
            &self.source,
            "--destination",
            &self.destination,
            "--group",
            &self.group,
            "--metrics-addr",
            "none",
        ];
        names.iter().chain(extra).map(|s| s.to_string()).collect()
    }
}

/// A test's topics created and its records produced to the source.
pub struct Prepared {
    pub names: Names,
    pub records: Vec<TestRecord>,
    /// (partition, offset) of each record in the source.
    pub positions: Vec<(i32, i64)>,
    pub seed: u64,
}

/// Creates the topics of `test` (source and destination with `partitions`) and produces `n`
/// records keyed with [`KEYS`] keys.
pub async fn prepare(test: &str, partitions: i32, n: usize, mix: Mix) -> Prepared {
    let names = Names::new(test);
    names.create(partitions).await;
    let seed = data::seed();
    let records = data::generate(n, KEYS, mix, seed);
    let positions = produce(&names.source, &records).await;
    Prepared {
        names,
        records,
        positions,
        seed,
    }
}

/// What reached the destination of a run over [`Mix::Clean`] records, once it is over.
pub struct Outcome {
    pub tally: Tally,
    pub lag: i64,
    pub order_violations: Vec<String>,
}

impl Prepared {
    pub async fn outcome(&self) -> Outcome {
        let output = consume_all(&self.names.destination, self.records.len(), IDLE).await;
        Outcome {
            tally: data::tally(self.records.iter().map(|r| r.id), &output),
            lag: group_lag(&self.names.group, &self.names.source).await,
            order_violations: data::key_order_violations(&output),
        }
    }
}

impl Outcome {
    /// At-least-once: every record arrived, per-key order held, everything is committed.
    pub fn assert_nothing_lost(&self) {
        let t = &self.tally;
        assert_eq!(t.lost, 0, "records lost, first ids {:?}", t.lost_ids);
        assert_eq!(t.unexpected, 0, "records that were never produced");
        let v = &self.order_violations;
        assert!(
            v.is_empty(),
            "key order broken: {:?}",
            &v[..v.len().min(10)]
        );
        assert_eq!(self.lag, 0, "group lag after the last run");
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} lag={}", self.tally, self.lag)
    }
}

/// Polls `check` every 250 ms until it is true; panics naming `what` after `cap`.
pub async fn poll_until<F, Fut>(what: &str, cap: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < cap,
            "gave up after {cap:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs blocking client calls off the runtime's workers, which the service under test needs.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking helper panicked")
}
