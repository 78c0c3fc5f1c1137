//! The fault suite's tools (`tests/faults/`): brokers of a test's own that it can kill and
//! restart ([`super::nodes`]) and waits on their nodes (leaders, coordinators, replicas in
//! sync), SIGKILL-and-restart of the binary at random moments, `ktransform verify` as the
//! judge, and the one line of figures each scenario prints. The Kafka clients for any brokers
//! (the `_on(bootstrap, …)` helpers) are in [`super::kafka`], ktransform in-process on any
//! brokers in [`super::run`].
//!
//! Short versions run in the default `cargo test`; env `KTRANSFORM_CHAOS=1` (`make chaos`)
//! selects the long soak versions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};

use ktransform::verify::{self, Report, VerifyConfig};

use super::data::TestRecord;
use super::group::{lag_on, partition_lag_on};
use super::kafka::{config_on, leaders_on, reader_on, topic_count_on, REQUEST};
use super::{blocking, brokers, Binary, Names, CAP};

/// How long a killed or signalled binary may take to be gone.
pub const EXIT_CAP: Duration = Duration::from_secs(60);

/// The longest a final drain (`--until-end`, or waiting for lag 0) may take: longer for the
/// larger soak runs.
pub fn drain_cap() -> Duration {
    if chaos() {
        CAP * 5
    } else {
        CAP
    }
}

/// Whether the long soak versions run: env `KTRANSFORM_CHAOS` set, and not `0`.
pub fn chaos() -> bool {
    std::env::var("KTRANSFORM_CHAOS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `short`, or `long` under [`chaos`]; env `var` overrides both.
pub fn scaled(var: &str, short: usize, long: usize) -> usize {
    super::size(var, if chaos() { long } else { short })
}

/// The consumer group protocols the fault suite runs each scenario under (`--group-protocol`).
pub const PROTOCOLS: [&str; 2] = ["classic", "consumer"];

/// `run` flags for group `protocol` (`classic` or `consumer`), and with `short_session` a
/// killed member's partitions released after about 6 s instead of 45: under `classic` that is
/// the client's `session.timeout.ms`; under `consumer` the broker owns the session and
/// ktransform refuses the property, and `scripts/kafka.sh` brokers set
/// `group.consumer.session.timeout.ms` to 6 s.
pub fn group_flags(protocol: &'static str, short_session: bool) -> Vec<&'static str> {
    let mut flags = vec!["--group-protocol", protocol];
    if short_session && protocol == "classic" {
        flags.extend(["-X", "consumer.session.timeout.ms=6000"]);
    }
    flags
}

/// The one line of figures a scenario prints:
/// `scenario=… records=… faults=… lost=… duplicated=…`, then scenario-specific `key=value`s.
pub struct Figures {
    pub scenario: String,
    pub records: u64,
    pub faults: usize,
    pub lost: u64,
    pub duplicated: u64,
    pub extra: Vec<(&'static str, String)>,
}

impl Figures {
    /// Figures from a verify report (lost and duplicated as verify counts them).
    pub fn from_report(scenario: &str, report: &Report, faults: usize) -> Self {
        let c = &report.counts;
        Figures {
            scenario: scenario.to_string(),
            records: c.source_records,
            faults,
            lost: c.lost,
            duplicated: c.duplicates,
            extra: vec![
                ("order_violations", c.order_violations.to_string()),
                ("changed", report.changed.to_string()),
                ("forged", c.forged.to_string()),
                ("wrong_hash", c.wrong_hash.to_string()),
            ],
        }
    }

    pub fn with(mut self, key: &'static str, value: impl std::fmt::Display) -> Self {
        self.extra.push((key, value.to_string()));
        self
    }

    pub fn print(&self) {
        let mut line = format!(
            "scenario={} records={} faults={} lost={} duplicated={}",
            self.scenario, self.records, self.faults, self.lost, self.duplicated
        );
        for (k, v) in &self.extra {
            line.push_str(&format!(" {k}={v}"));
        }
        println!("{line}");
        // Also kept for after the run (`cargo test` hides a passing test's output):
        // `make test` and `make chaos` print this file at the end.
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fault-figures.txt");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            use std::io::Write;
            let _ = writeln!(file, "{line}");
        }
    }
}

// --- The judge ---------------------------------------------------------------------------

/// `ktransform verify` in-process on `bootstrap` for `names` under `guarantee`
/// (`at-least-once` or `exactly-once`).
pub async fn audit_on(bootstrap: &str, names: &Names, guarantee: &str) -> Report {
    audit_with_on(bootstrap, names, guarantee, &[]).await
}

/// [`audit_on`] with `extra` verify flags.
pub async fn audit_with_on(
    bootstrap: &str,
    names: &Names,
    guarantee: &str,
    extra: &[&str],
) -> Report {
    let args = [
        "--brokers",
        bootstrap,
        "--source",
        &names.source,
        "--destination",
        &names.destination,
        "--dlq",
        &names.dlq,
        "--guarantee",
        guarantee,
    ]
    .into_iter()
    .chain(extra.iter().copied());
    let config = VerifyConfig::from_args(args).expect("valid verify flags");
    blocking(move || verify::audit(&config))
        .await
        .expect("the audit runs")
}

/// Fails the test with the report's broken rules and first findings unless it passed.
pub fn assert_passed(scenario: &str, report: &Report) {
    assert!(
        report.passed,
        "{scenario}: verify --guarantee {:?} failed: {:?}\n{}",
        report.guarantee,
        report.failed_rules,
        verify::render(report)
    );
}

// --- A cluster's nodes ------------------------------------------------------------------------

/// Waits (up to [`CAP`]) until `topic` has `partitions` partitions with a leader each, and
/// returns the leaders' node ids.
pub async fn settled_leaders(bootstrap: &str, topic: &str, partitions: usize) -> HashMap<i32, i32> {
    let started = Instant::now();
    loop {
        let leaders = {
            let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
            blocking(move || leaders_on(&bootstrap, &topic)).await
        };
        if leaders.len() == partitions && leaders.values().all(|&l| l >= 0) {
            return leaders;
        }
        assert!(
            started.elapsed() < CAP,
            "{topic}: not every partition has a leader after {CAP:?}: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The node that coordinates `key`'s transactions (`__transaction_state`) or group
/// (`__consumer_offsets`): the leader of partition `abs(hashCode(key)) % partitions` of that
/// topic, as the broker computes it (Java `String.hashCode`). Blocking.
pub fn coordinator_on(bootstrap: &str, internal_topic: &str, key: &str) -> Option<i32> {
    let hash = key
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let leaders = leaders_on(bootstrap, internal_topic);
    // Kafka's Utils.abs: Math.abs, except that i32::MIN maps to 0.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    let partition = abs % i32::try_from(leaders.len()).ok().filter(|&n| n > 0)?;
    leaders.get(&partition).copied()
}

/// Waits (up to [`CAP`]) until every partition of every topic on `bootstrap`, internal ones
/// included, has all its replicas in sync: a restarted node has caught up.
pub async fn wait_fully_replicated(bootstrap: &str) {
    let started = Instant::now();
    loop {
        let lagging = {
            let bootstrap = bootstrap.to_string();
            blocking(move || {
                let metadata = reader_on(&bootstrap).fetch_metadata(None, REQUEST).ok()?;
                Some(
                    metadata
                        .topics()
                        .iter()
                        .flat_map(|t| t.partitions())
                        .filter(|p| p.isr().len() < p.replicas().len())
                        .count(),
                )
            })
            .await
        };
        if lagging == Some(0) {
            return;
        }
        assert!(
            started.elapsed() < CAP,
            "partitions still under-replicated after {CAP:?}: {lagging:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `group` has committed everything in `names.source` (up to [`drain_cap`]),
/// failing the test if the in-process run `handle` stops meanwhile: the service must recover
/// by itself.
pub async fn wait_caught_up(
    scenario: &str,
    bootstrap: &str,
    names: &Names,
    handle: &mut tokio::task::JoinHandle<Result<ktransform::Summary, ktransform::Error>>,
) {
    let started = Instant::now();
    loop {
        if handle.is_finished() {
            panic!(
                "{scenario}: ktransform stopped by itself: {:?}",
                handle.await
            );
        }
        let lag = partition_lag_on(bootstrap, &names.group, &names.source).await;
        if lag.as_ref().is_some_and(|l| l.values().all(|&v| v == 0)) {
            return;
        }
        assert!(
            started.elapsed() < drain_cap(),
            "{scenario}: group lag not 0 within {:?}: {lag:?}",
            drain_cap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Creates the internal topics while every node is up: one group join (`__consumer_offsets`)
/// and one transaction (`__transaction_state`), on a throwaway topic.
pub async fn warm_up(bootstrap: &str) {
    let names = Names::new("warm-up");
    names.create_on(bootstrap, 1, 3).await;
    let bootstrap = bootstrap.to_string();
    blocking(move || {
        let consumer: BaseConsumer = config_on(&bootstrap, &[("group.id", &names.group)])
            .create()
            .expect("consumer");
        consumer.subscribe(&[&names.source]).expect("subscribe");
        let started = Instant::now();
        while consumer.assignment().map_or(0, |a| a.count()) == 0 {
            assert!(
                started.elapsed() < CAP,
                "warm-up group join took over {CAP:?}"
            );
            let _ = consumer.poll(Duration::from_millis(100));
        }
        drop(consumer);
        let producer: BaseProducer = config_on(&bootstrap, &[("transactional.id", &names.group)])
            .create()
            .expect("producer");
        producer.init_transactions(CAP).expect("init_transactions");
        producer.begin_transaction().expect("begin_transaction");
        producer
            .commit_transaction(CAP)
            .expect("commit_transaction");
    })
    .await;
}

// --- Killing the binary ------------------------------------------------------------------------

/// What [`kill_restart_drain`] did.
pub struct Kills {
    /// SIGKILLs delivered to a running binary.
    pub kills: usize,
    /// Of those, how many found the group's lag above 0 (work under way); a lag that could
    /// not be read counts as not.
    pub mid_stream: usize,
}

/// Runs the binary (`ktransform run` with `args`, shared broker) and SIGKILLs it `kills` times
/// at random moments, restarting it each time: once an incarnation has written a random
/// number of records (between `n/(8 kills)` and `n/(2 kills)`, so the kills fall mid-stream)
/// to the destination, or the group has no lag left, and a further random 0-250 ms. Then runs
/// it with `--until-end`, which must exit 0.
pub async fn kill_restart_drain(names: &Names, args: &[String], kills: usize, n: usize) -> Kills {
    let mut done = Kills {
        kills: 0,
        mid_stream: 0,
    };
    for round in 0..kills {
        let (progress, pause) = {
            let mut rng = rand::thread_rng();
            let progress = rng.gen_range(n / (8 * kills)..=n / (2 * kills)) as i64;
            (progress, Duration::from_millis(rng.gen_range(0..250)))
        };
        let bootstrap = brokers();
        let base = topic_count_on(&bootstrap, &names.destination).await;
        let mut binary = Binary::run(args);
        let started = Instant::now();
        // The destination's size every 100 ms; the group's lag (to stop waiting once
        // everything is done) every second: both are broker requests, and the broker is busy.
        for i in 0.. {
            if topic_count_on(&bootstrap, &names.destination).await >= base + progress {
                break;
            }
            if i % 10 == 9 && lag_on(&bootstrap, &names.group, &names.source).await == Some(0) {
                break;
            }
            assert!(
                started.elapsed() < CAP,
                "round {round}: no progress within {CAP:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(pause).await;
        let lag = lag_on(&bootstrap, &names.group, &names.source).await;
        binary.kill();
        let exit = binary.wait(EXIT_CAP).await;
        assert_eq!(
            exit.code, None,
            "round {round}: the binary exited by itself before the SIGKILL; stderr:\n{}",
            exit.stderr
        );
        done.kills += 1;
        if lag.is_some_and(|l| l > 0) {
            done.mid_stream += 1;
        }
    }
    let args: Vec<String> = args
        .iter()
        .cloned()
        .chain(["--until-end".to_string()])
        .collect();
    let exit = Binary::run(&args).wait(drain_cap()).await;
    assert_eq!(
        exit.code,
        Some(0),
        "the --until-end run after {kills} kills; stderr:\n{}",
        exit.stderr
    );
    done
}

// --- Dead letters ---------------------------------------------------------------------------

/// How the dead-letter topic matches the records that belong there.
#[derive(Debug, Default)]
pub struct DeadLetters {
    /// Records expected in the dead-letter topic.
    pub expected: usize,
    /// Expected ones missing.
    pub lost: usize,
    /// Copies beyond the first.
    pub duplicated: usize,
    /// Dead letters whose `ktransform.error.kind` is not the expected one, or without a
    /// `ktransform.error.message`.
    pub wrong_reason: usize,
    /// Dead letters of records that belong in the destination.
    pub unexpected: usize,
    /// Expected dead letters per kind.
    pub kinds: std::collections::BTreeMap<&'static str, usize>,
}

/// Matches the dead letters read back (`dead`) with the records that must be there, by
/// `test.id`, and checks each one's reason.
pub fn check_dead_letters(records: &[TestRecord], dead: &[super::Received]) -> DeadLetters {
    use super::data::{self, Expect};
    let got = data::by_id(dead);
    let mut out = DeadLetters::default();
    for r in records {
        let Expect::DeadLetter(kind) = r.expect else {
            out.unexpected += got.get(&r.id).map_or(0, Vec::len);
            continue;
        };
        out.expected += 1;
        *out.kinds.entry(kind).or_default() += 1;
        let copies = got.get(&r.id).map_or(&[][..], Vec::as_slice);
        match copies.len() {
            0 => out.lost += 1,
            n => out.duplicated += n - 1,
        }
        out.wrong_reason += copies
            .iter()
            .filter(|d| {
                d.header_str("ktransform.error.kind") != Some(kind)
                    || !d
                        .header_str("ktransform.error.message")
                        .is_some_and(|m| !m.is_empty())
            })
            .count();
    }
    out
}
