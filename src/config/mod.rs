//! Command-line, environment and config-file configuration, checked at start-up.
//!
//! Every flag is also an environment variable `KTRANSFORM_<NAME>` and a key of the `--config`
//! file ([`crate::config::file`]); precedence is flag > env > file > default. Anything librdkafka
//! knows goes through `-X key=value` or the file's `[rdkafka]` tables ([`crate::config::properties`]).
//! `Debug` output of these structs masks secret property values ([`crate::config::redact`]).

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser};

pub mod budget;
pub mod clients;
pub mod file;
pub mod orchestrator;
pub mod print;
pub mod properties;
pub mod protocol;
pub mod redact;

pub use budget::MemoryBudget;
use file::CliError;
pub use orchestrator::{LogFormat, OrchestratorArgs};
pub use properties::{KafkaArgs, Origin, Override, Property, Side, OWNED_PROPERTIES};
pub use protocol::GroupProtocol;

/// The broker of `make up`.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// Records taken from a partition queue per batch, at most.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Records per partition produced but not yet acknowledged, at most: bounds memory and replay.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 5_000;
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "10s";
/// Kafka Streams' default commit interval under exactly-once: `read_committed` readers see the
/// outputs within about this long. Each commit stalls every partition for the flush, the
/// offsets and the EndTxn round trips, a few milliseconds; longer intervals did not drain
/// faster (bench/ab.py).
pub const DEFAULT_TRANSACTION_INTERVAL: &str = "100ms";
pub const DEFAULT_TRANSACTION_RECORDS: usize = 250_000;
pub const DEFAULT_DRAIN_TIMEOUT: &str = "10s";
pub const DEFAULT_CONNECT_TIMEOUT: &str = "30s";
/// librdkafka's default `session.timeout.ms`.
const DEFAULT_SESSION_TIMEOUT_MS: u64 = 45_000;
/// librdkafka's default `max.poll.interval.ms`.
const DEFAULT_MAX_POLL_INTERVAL_MS: u64 = 300_000;
/// The port registered for Prometheus exporters of this kind. Without `--metrics-addr`, an
/// instance that finds it taken (another one on the same host) serves on a free port instead.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
pub const DEFAULT_PROGRESS_INTERVAL: &str = "10s";
/// A batch at least this large (bytes of values) is hashed on the rayon pool; smaller ones inline.
pub const DEFAULT_PARALLEL_MIN_BYTES: usize = 256 * 1024;
/// No healthy pause of a partition that has records to read comes near it (a partition
/// leader's failover: the broker's session timeout, 9 s under KRaft, then a metadata refresh;
/// librdkafka's fetch backoffs are under a second), and a stall is still reported within a
/// minute, with `/healthz` failing after three times as long (`crate::stall`).
pub const DEFAULT_STALL_TIMEOUT: &str = "30s";
/// Below this a stall timeout would mistake ordinary waits (a batch's sends, the worker's own
/// 250 ms re-read of its queue) for stalls.
const MIN_STALL_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,

    #[command(flatten)]
    pub orchestrator: OrchestratorArgs,

    /// Consumer group: instances with the same group share the source's partitions.
    #[arg(long, env = "KTRANSFORM_GROUP", default_value = "ktransform")]
    pub group: String,

    /// Consumer group protocol: `classic` (the members assign, cooperative-sticky) or
    /// `consumer` (KIP-848, Apache Kafka 4.0+: the broker assigns and owns the session and
    /// heartbeat settings, which are then refused from -X).
    #[arg(
        long,
        env = "KTRANSFORM_GROUP_PROTOCOL",
        value_enum,
        default_value = "classic"
    )]
    pub group_protocol: GroupProtocol,

    /// Exactly-once: commit the open transaction at least this often. Shorter: outputs visible
    /// to read_committed readers sooner; longer: fewer commits, more throughput.
    #[arg(long, env = "KTRANSFORM_TRANSACTION_INTERVAL", default_value = DEFAULT_TRANSACTION_INTERVAL, value_parser = humantime::parse_duration)]
    pub transaction_interval: Duration,

    /// Exactly-once: commit as soon as the open transaction holds this many records.
    #[arg(long, env = "KTRANSFORM_TRANSACTION_RECORDS", default_value_t = DEFAULT_TRANSACTION_RECORDS)]
    pub transaction_records: usize,

    /// Exactly-once: a stable transactional id for this instance (unique per instance)
    /// [default: ktransform-<group>-<instance id> with --instance-id, else
    /// ktransform-<group>-<random>].
    #[arg(long, env = "KTRANSFORM_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,

    /// On SIGINT/SIGTERM, time allowed to finish in-flight work, flush and commit (e.g. 10s, 500ms).
    #[arg(long, env = "KTRANSFORM_SHUTDOWN_TIMEOUT", default_value = DEFAULT_SHUTDOWN_TIMEOUT, value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// On revocation, time allowed for the revoked partitions' in-flight records to be acknowledged
    /// and committed; must be below the group session timeout (classic) or
    /// `max.poll.interval.ms` (consumer).
    #[arg(long, env = "KTRANSFORM_DRAIN_TIMEOUT", default_value = DEFAULT_DRAIN_TIMEOUT, value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// How long to wait for the brokers at start before giving up.
    #[arg(long, env = "KTRANSFORM_CONNECT_TIMEOUT", default_value = DEFAULT_CONNECT_TIMEOUT, value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Exit 0 once every assigned partition is processed and committed up to the end offset it had
    /// when it was assigned (for batch runs and benchmarks).
    #[arg(long, env = "KTRANSFORM_UNTIL_END")]
    pub until_end: bool,

    /// Records taken from one partition per batch, at most.
    #[arg(long, env = "KTRANSFORM_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,

    /// Records per partition produced but not yet acknowledged, at most.
    #[arg(long, env = "KTRANSFORM_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// Memory for records, instance-wide (e.g. 32MiB, 64MB): half for librdkafka's prefetch
    /// queues, divided by the source's partition count at start; half for records produced and
    /// not yet acknowledged, divided among the partitions assigned on every rebalance (at least
    /// one batch each). Beyond it: about 40 MB of code, threads and allocator, and at least one
    /// of the source's record batches per partition (docs/configuration.md#memory-budget).
    #[arg(long, env = "KTRANSFORM_MEMORY_BUDGET", default_value = budget::DEFAULT_MEMORY_BUDGET, value_parser = budget::parse_memory_budget)]
    pub memory_budget: MemoryBudget,

    /// Threads of the hashing pool (rayon) [default: number of CPUs].
    #[arg(long, env = "KTRANSFORM_HASH_THREADS")]
    pub hash_threads: Option<usize>,

    /// Batches with at least this many value bytes are hashed on the pool; 0 = always, and a
    /// huge value = never.
    #[arg(long, env = "KTRANSFORM_PARALLEL_MIN_BYTES", default_value_t = DEFAULT_PARALLEL_MIN_BYTES)]
    pub parallel_min_bytes: usize,

    /// Address of `/metrics`, `/livez`, `/healthz` and `/readyz`; `none` turns them off
    /// [default: 127.0.0.1:9464, or a free port when another process holds it]. A given address
    /// that cannot be bound stops the start.
    #[arg(long, env = "KTRANSFORM_METRICS_ADDR", value_parser = parse_metrics_addr)]
    pub metrics_addr: Option<MetricsAddr>,

    /// Interval of the progress line in the log.
    #[arg(long, env = "KTRANSFORM_PROGRESS_INTERVAL", default_value = DEFAULT_PROGRESS_INTERVAL, value_parser = humantime::parse_duration)]
    pub progress_interval: Duration,

    /// A partition behind its end offset that reads nothing for this long while waiting on its
    /// queue is reported as stalled and healed (at least 1s); `off` or 0 turns the watchdog off.
    #[arg(long, env = "KTRANSFORM_STALL_TIMEOUT", default_value = DEFAULT_STALL_TIMEOUT, value_parser = parse_stall_timeout)]
    pub stall_timeout: StallTimeout,

    /// Print the effective configuration (settings, then every consumer and producer property)
    /// as TOML with secrets shown as "***", and exit without connecting.
    #[arg(long)]
    pub print_config: bool,
}

/// The pipeline that `run` makes and `verify` audits: its topics and its guarantee.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Topic to consume JSON objects from.
    #[arg(long, env = "KTRANSFORM_SOURCE", default_value = "name_stream")]
    pub source: String,

    /// Topic the transformed records go to.
    #[arg(
        long,
        env = "KTRANSFORM_DESTINATION",
        default_value = "name_stream_transformed"
    )]
    pub destination: String,

    /// Dead-letter topic for records that are not JSON objects [default: <source>.dlq].
    #[arg(long, env = "KTRANSFORM_DLQ")]
    pub dlq: Option<String>,

    /// Delivery guarantee (for `verify`, the one to check: exactly-once fails on duplicates).
    #[arg(
        long,
        env = "KTRANSFORM_GUARANTEE",
        value_enum,
        default_value = "at-least-once"
    )]
    pub guarantee: Guarantee,

    /// Timestamp of outputs and dead letters: `source` keeps the input record's (its create
    /// time, or its append time on a source topic with `LogAppendTime`), `now` lets the producer
    /// stamp them when sent. For `verify`, `source` makes a changed timestamp a broken rule.
    #[arg(
        long,
        env = "KTRANSFORM_TIMESTAMP",
        value_enum,
        default_value = "source"
    )]
    pub timestamp: Timestamps,
}

/// Which timestamp an output carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Timestamps {
    /// The input record's: event time survives the transform.
    Source,
    /// The moment the producer sends it.
    Now,
}

impl PipelineArgs {
    pub fn dlq_topic(&self) -> String {
        self.dlq
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.source))
    }
}

/// What a consumed record's output is promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Guarantee {
    /// Offsets stored after the output is acknowledged; a crash may produce a record twice.
    AtLeastOnce,
    /// Outputs and offsets committed in one Kafka transaction; `read_committed` readers see
    /// every record once.
    ExactlyOnce,
}

/// A configuration that cannot work; names the flag to change.
#[derive(Debug, thiserror::Error)]
#[error("invalid {flag}: {message}")]
pub struct ConfigError {
    pub flag: String,
    pub message: String,
}

pub(crate) fn invalid(flag: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag: flag.into(),
        message: message.into(),
    }
}

impl RunConfig {
    /// Parses the flags of `ktransform run` (without the program and subcommand names), with
    /// environment and `--config` file fallbacks, as the binary does: for embedding and tests.
    pub fn from_args<I, T>(args: I) -> Result<RunConfig, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        #[derive(Parser)]
        struct Run {
            #[command(flatten)]
            config: RunConfig,
        }
        let argv = std::iter::once(OsString::from("ktransform-run"))
            .chain(args.into_iter().map(Into::into))
            .collect();
        let (matches, file) = file::matches(Run::command(), argv)?;
        let mut config = Run::from_arg_matches(&matches)?.config;
        if let Some(file) = file {
            config.kafka.file_rdkafka = file.rdkafka;
        }
        Ok(config)
    }

    pub fn hash_threads(&self) -> usize {
        self.hash_threads.unwrap_or_else(num_cpus::get)
    }

    /// Cross-field checks that clap cannot express. Run before anything connects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, topic) in [
            ("--source", &self.pipeline.source),
            ("--destination", &self.pipeline.destination),
        ] {
            check_topic_name(flag, topic)?;
        }
        let dlq = self.pipeline.dlq_topic();
        check_topic_name("--dlq", &dlq)?;
        if self.pipeline.source == self.pipeline.destination {
            return Err(invalid(
                "--destination",
                "equals --source: the output would be consumed again",
            ));
        }
        if dlq == self.pipeline.source || dlq == self.pipeline.destination {
            return Err(invalid(
                "--dlq",
                "must differ from --source and --destination",
            ));
        }
        if self.group.trim().is_empty() {
            return Err(invalid("--group", "is empty"));
        }
        if self.batch_size == 0 {
            return Err(invalid("--batch-size", "must be at least 1"));
        }
        if self.max_in_flight < self.batch_size {
            return Err(invalid("--max-in-flight", "must be at least --batch-size"));
        }
        self.memory_budget.check()?;
        if self.hash_threads == Some(0) {
            return Err(invalid("--hash-threads", "must be at least 1"));
        }
        if self.shutdown_timeout.is_zero() {
            return Err(invalid("--shutdown-timeout", "must be more than 0"));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("--connect-timeout", "must be more than 0"));
        }
        self.group_protocol.check(&self.kafka.overrides()?)?;
        self.check_orchestrator()?;
        self.check_drain_timeout()?;
        if self.pipeline.guarantee == Guarantee::ExactlyOnce {
            if self.transaction_interval.is_zero() {
                return Err(invalid("--transaction-interval", "must be more than 0"));
            }
            if self.transaction_records == 0 {
                return Err(invalid("--transaction-records", "must be at least 1"));
            }
        }
        if self.progress_interval.is_zero() {
            return Err(invalid("--progress-interval", "must be more than 0"));
        }
        if let StallTimeout::After(timeout) = self.stall_timeout {
            if timeout < MIN_STALL_TIMEOUT {
                return Err(invalid(
                    "--stall-timeout",
                    format!("{timeout:?} is below {MIN_STALL_TIMEOUT:?}: ordinary waits would look like stalls; `off` turns the watchdog off"),
                ));
            }
        }
        self.kafka.overrides()?;
        // Let librdkafka judge the properties now, so a typo fails at start with its name.
        self.kafka
            .create::<rdkafka::consumer::BaseConsumer>(&self.consumer_config()?, "consumer")?;
        self.kafka
            .create::<rdkafka::producer::BaseProducer>(&self.producer_config()?, "producer")?;
        Ok(())
    }

    /// A revocation blocks the rebalance while the revoked partitions drain: the drain must end
    /// before the group gives up on the member. Under the classic protocol that is the session
    /// timeout. Under `consumer` the heartbeats go on while the callback blocks (librdkafka sends
    /// them from its own thread), and the broker fences a member that has not given up revoked
    /// partitions within its rebalance timeout, which is `max.poll.interval.ms`.
    fn check_drain_timeout(&self) -> Result<(), ConfigError> {
        let (key, default, what) = match self.group_protocol {
            GroupProtocol::Classic => (
                "session.timeout.ms",
                DEFAULT_SESSION_TIMEOUT_MS,
                "the session timeout",
            ),
            GroupProtocol::Consumer => (
                "max.poll.interval.ms",
                DEFAULT_MAX_POLL_INTERVAL_MS,
                "the rebalance timeout (max.poll.interval.ms under --group-protocol consumer)",
            ),
        };
        let limit_ms = self
            .consumer_config()?
            .get(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| invalid(format!("-X {key}"), format!("`{v}` is not a number")))
            })
            .transpose()?
            .unwrap_or(default);
        if self.drain_timeout.is_zero() || self.drain_timeout >= Duration::from_millis(limit_ms) {
            return Err(invalid(
                "--drain-timeout",
                format!(
                    "{:?} must be more than 0 and below {what} ({limit_ms} ms): a member that blocks a rebalance longer is expelled from the group",
                    self.drain_timeout
                ),
            ));
        }
        Ok(())
    }
}

/// `--stall-timeout`: how long a partition may sit behind its end without reading, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallTimeout {
    Off,
    After(Duration),
}

fn parse_stall_timeout(s: &str) -> Result<StallTimeout, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(StallTimeout::Off);
    }
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Ok(StallTimeout::Off),
        Ok(d) => Ok(StallTimeout::After(d)),
        Err(e) => Err(format!("`{s}` is not a duration (e.g. 30s) or `off` ({e})")),
    }
}

/// `--metrics-addr` as given: a socket address, or off (not given: `None`, see
/// [`DEFAULT_METRICS_ADDR`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    Off,
    At(std::net::SocketAddr),
}

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(MetricsAddr::Off);
    }
    s.parse()
        .map(MetricsAddr::At)
        .map_err(|e| format!("`{s}` is not host:port or `none` ({e})"))
}

/// Kafka's rule for topic names, and for group instance ids too: 1-249 of `[a-zA-Z0-9._-]`,
/// not `.` or `..`.
fn is_kafka_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn check_topic_name(flag: &str, topic: &str) -> Result<(), ConfigError> {
    if is_kafka_name(topic) {
        Ok(())
    } else {
        Err(invalid(
            flag,
            format!("`{topic}` is not a Kafka topic name (1-249 of [a-zA-Z0-9._-])"),
        ))
    }
}

#[cfg(test)]
mod tests;
