//! The fault suite's tools (`tests/faults/`): brokers of a test's own that it can kill and
//! restart ([`super::nodes`]), Kafka clients for brokers other than the shared one,
//! SIGKILL-and-restart of the binary at random moments, `ktransform verify` as the judge, and
//! the one line of figures each scenario prints.
//!
//! Short versions run in the default `cargo test`; env `KTRANSFORM_CHAOS=1` (`make chaos`)
//! selects the long soak versions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use ktransform::verify::{self, Report, VerifyConfig};
use ktransform::RunConfig;

use super::data::TestRecord;
use super::{blocking, brokers, Binary, Names, Running, CAP};

/// Timeout of one broker request made by a helper.
const REQUEST: Duration = Duration::from_secs(10);
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
    ];
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

// --- Clients for any brokers -----------------------------------------------------------------

fn config_on(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config
}

fn reader_on(bootstrap: &str) -> BaseConsumer {
    config_on(bootstrap, &[]).create().expect("consumer")
}

/// Creates source and destination with `partitions` partitions and the dead-letter topic
/// with 2, each with `replication` replicas, and waits until the metadata shows them led.
pub async fn create_topics_on(bootstrap: &str, names: &Names, partitions: i32, replication: i32) {
    for (topic, count) in [
        (&names.source, partitions),
        (&names.destination, partitions),
        (&names.dlq, 2),
    ] {
        create_topic_on(bootstrap, topic, count, replication, &[]).await;
    }
}

/// Creates `topic` with `partitions` partitions of `replication` replicas and topic
/// `configs`, and waits until the metadata shows every partition led.
pub async fn create_topic_on(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> =
        config_on(bootstrap, &[]).create().expect("admin client");
    let new = configs.iter().fold(
        NewTopic::new(topic, partitions, TopicReplication::Fixed(replication)),
        |t, (k, v)| t.set(k, v),
    );
    let options = AdminOptions::new().operation_timeout(Some(REQUEST));
    for result in admin
        .create_topics([&new], &options)
        .await
        .expect("create_topics")
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("cannot create topic {topic}: {code}"),
        }
    }
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    super::poll_until(&format!("topic {topic} led in the metadata"), CAP, || {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        blocking(move || {
            let leaders = leaders_on(&bootstrap, &topic);
            leaders.len() == partitions as usize && leaders.values().all(|&l| l >= 0)
        })
    })
    .await;
}

/// Produces `records` in order with one idempotent producer (acks=all), at most `rate`
/// records per second if given, and waits for every delivery; returns each record's
/// (partition, offset).
pub async fn produce_on(
    bootstrap: &str,
    topic: &str,
    records: &[TestRecord],
    rate: Option<f64>,
) -> Vec<(i32, i64)> {
    produce_to_on(bootstrap, topic, None, records, rate).await
}

/// [`produce_on`] into `partition` if given, else where the key hashes.
pub async fn produce_to_on(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
    records: &[TestRecord],
    rate: Option<f64>,
) -> Vec<(i32, i64)> {
    let producer: FutureProducer = config_on(
        bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "20"),
            ("message.timeout.ms", "0"),
        ],
    )
    .create()
    .expect("producer");
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        let headers = r
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key: key.as_str(),
                    value: value.as_deref(),
                })
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .key(&r.key)
            .headers(headers);
        record.payload = r.value.as_deref();
        record.partition = partition;
        loop {
            match producer.send_result(record) {
                Ok(delivery) => break deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
    }
    let mut positions = Vec::with_capacity(records.len());
    for (i, delivery) in deliveries.into_iter().enumerate() {
        match delivery.await {
            Ok(Ok(d)) => positions.push((d.partition, d.offset)),
            Ok(Err((e, _))) => panic!("record {i} to {topic} not delivered: {e}"),
            Err(_) => panic!("record {i} to {topic}: producer dropped"),
        }
    }
    positions
}

/// The leader's node id of each partition of `topic` (-1: none). Blocking.
pub fn leaders_on(bootstrap: &str, topic: &str) -> HashMap<i32, i32> {
    let Ok(metadata) = reader_on(bootstrap).fetch_metadata(Some(topic), REQUEST) else {
        return HashMap::new();
    };
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
        .collect()
}

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

/// Per partition of `topic`: (low, high) watermarks and `group`'s committed offset; `None`
/// if any of it cannot be read now (a leader or the group coordinator down, a broker too busy
/// to answer in time).
async fn offsets_on(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> Option<HashMap<i32, ((i64, i64), Option<i64>)>> {
    let (bootstrap, group, topic) = (bootstrap.to_string(), group.to_string(), topic.to_string());
    blocking(move || {
        let consumer: BaseConsumer = config_on(
            &bootstrap,
            &[
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                // A read_committed consumer (librdkafka's default) asks for stable offsets only
                // (KIP-447), and its request is refused while an exactly-once group has a
                // transaction open, which is most of the time: read the last committed ones.
                ("isolation.level", "read_uncommitted"),
            ],
        )
        .create()
        .expect("consumer");
        let partitions: Vec<i32> = leaders_on(&bootstrap, &topic).into_keys().collect();
        if partitions.is_empty() {
            return None;
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition(&topic, p);
        }
        let committed: HashMap<i32, Option<i64>> = consumer
            .committed_offsets(tpl, REQUEST)
            .ok()?
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), Some(o)),
                _ => (e.partition(), None),
            })
            .collect();
        partitions
            .into_iter()
            .map(|p| {
                let marks = consumer.fetch_watermarks(&topic, p, REQUEST).ok()?;
                Some((p, (marks, committed.get(&p).copied().flatten())))
            })
            .collect()
    })
    .await
}

/// Records of `topic` not yet committed by `group`, per partition; `None` while the offsets
/// cannot be read (see `offsets_on`).
pub async fn partition_lag_on(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> Option<HashMap<i32, i64>> {
    let offsets = offsets_on(bootstrap, group, topic).await?;
    Some(
        offsets
            .into_iter()
            .map(|(p, ((low, high), committed))| (p, high - committed.unwrap_or(low)))
            .collect(),
    )
}

/// Records of `topic` not yet committed by `group`; `None` while that cannot be read.
pub async fn lag_on(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    partition_lag_on(bootstrap, group, topic)
        .await
        .map(|lag| lag.values().sum())
}

/// [`partition_lag_on`], retried until it can be read (up to [`CAP`]).
pub async fn settled_partition_lag(bootstrap: &str, group: &str, topic: &str) -> HashMap<i32, i64> {
    let started = Instant::now();
    loop {
        if let Some(lag) = partition_lag_on(bootstrap, group, topic).await {
            return lag;
        }
        assert!(
            started.elapsed() < CAP,
            "the lag of {group} on {topic} could not be read within {CAP:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// [`lag_on`], retried until it can be read (up to [`CAP`]).
pub async fn settled_lag(bootstrap: &str, group: &str, topic: &str) -> i64 {
    settled_partition_lag(bootstrap, group, topic)
        .await
        .values()
        .sum()
}

/// Records in `topic` now (sum of high - low watermarks over the partitions that answer).
pub async fn topic_count_on(bootstrap: &str, topic: &str) -> i64 {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    blocking(move || {
        let consumer = reader_on(&bootstrap);
        leaders_on(&bootstrap, &topic)
            .into_keys()
            .filter_map(|p| consumer.fetch_watermarks(&topic, p, REQUEST).ok())
            .map(|(low, high)| high - low)
            .sum()
    })
    .await
}

/// Waits (up to [`CAP`]) until `topic` on `bootstrap` holds at least `min` records.
pub async fn wait_for_records_on(bootstrap: &str, topic: &str, min: i64) {
    let started = Instant::now();
    loop {
        let count = topic_count_on(bootstrap, topic).await;
        if count >= min {
            return;
        }
        assert!(
            started.elapsed() < CAP,
            "gave up after {CAP:?} waiting for {min} records in {topic} (has {count})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the internal topics while every node is up: one group join (`__consumer_offsets`)
/// and one transaction (`__transaction_state`), on a throwaway topic.
pub async fn warm_up(bootstrap: &str) {
    let names = Names::new("warm-up");
    create_topics_on(bootstrap, &names, 1, 3).await;
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

/// Starts `ktransform::run` in-process against `bootstrap` (the common `run_in_process`
/// always uses the shared broker).
pub fn run_on(bootstrap: &str, args: &[String]) -> Running {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let argv = ["--brokers", bootstrap]
        .into_iter()
        .chain(args.iter().map(String::as_str));
    let config = RunConfig::from_args(argv).expect("valid run flags");
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(ktransform::run(config, async move {
        let _ = stopped.await;
    }));
    (handle, stop)
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
