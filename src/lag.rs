//! `ktransform lag`: a consumer group's lag on a topic, its rates, and whether it keeps up.
//!
//! Two samples of log end offsets and committed offsets, `interval` apart, give the produce rate
//! (growth of the log end) and the consume rate (growth of the committed offsets); the verdict
//! compares them. Works on any group, of either protocol (`classic` or `consumer`): it only
//! reads offsets, it never joins the group. The members come from the group's description
//! (`lag/group.rs`), which rust-rdkafka's group list cannot give for a `consumer` group.
//!
//! `--json` prints one JSON object per report (one per window with `--watch`) instead of the
//! table, for scripts and alerting: see [`JsonReport`] (`lag/json.rs`). With `--lag-threshold`
//! the report adds the replica count KEDA's Kafka scaler would compute from the same offsets,
//! next to ktransform's, and which to trust (`lag/keda.rs`).

use std::time::{Duration, Instant, SystemTime};

use crate::config::{ConfigError, KafkaArgs, Side};
use crate::security::Watched;
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

pub mod group;
pub mod json;
pub mod keda;
pub mod live;
pub mod serve;
pub mod text;

pub use json::{JsonKeda, JsonPartition, JsonReport, JsonTotal};
pub use text::{advice_text, render, verdict_text};

#[derive(Debug, Clone, Args)]
pub struct LagConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Consumer group to inspect.
    #[arg(long, env = "KTRANSFORM_GROUP", default_value = "ktransform")]
    pub group: String,

    /// Topic the group consumes.
    #[arg(long, env = "KTRANSFORM_SOURCE", default_value = "name_stream")]
    pub topic: String,

    /// Keep printing a fresh table every interval until interrupted.
    #[arg(long)]
    pub watch: bool,

    /// Window between the two samples that rates are computed from.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// With --watch or --serve, stop after this long (default: until interrupted).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Print one JSON object per report (per window with --watch) instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Also give the replica count KEDA's Kafka scaler would ask for with this `lagThreshold`,
    /// next to ktransform's own, and which to trust.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub lag_threshold: Option<u64>,

    /// With --lag-threshold, KEDA's `offsetResetPolicy`: a partition without a committed offset
    /// counts its retained records (`earliest`, where `ktransform run` starts) or 1 (`latest`,
    /// KEDA's default).
    #[arg(long, value_enum, default_value = "earliest")]
    pub offset_reset_policy: keda::OffsetResetPolicy,

    /// With --lag-threshold, KEDA's `allowIdleConsumers`: no cap at one replica per partition.
    #[arg(long)]
    pub allow_idle_consumers: bool,

    /// Serve a live view on this address (e.g. 127.0.0.1:8080): a page with the lag and rates
    /// over the last minutes, the members and the verdict, refreshing itself, and its data as
    /// JSON on /lag.json; a sample every --interval until interrupted (or --duration).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["json", "watch"])]
    pub serve: Option<std::net::SocketAddr>,
}

impl LagConfig {
    /// The KEDA trigger to compare with, if `--lag-threshold` asks for one.
    pub fn keda_trigger(&self) -> Option<keda::Trigger> {
        self.lag_threshold.map(|lag_threshold| keda::Trigger {
            lag_threshold,
            offset_reset_policy: self.offset_reset_policy,
            allow_idle_consumers: self.allow_idle_consumers,
        })
    }
}

/// Offsets of one partition at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: i32,
    pub committed: Option<i64>,
    pub low: i64,
    pub end: i64,
}

impl PartitionOffsets {
    /// Records not yet committed by the group (all retained records when it never committed).
    pub fn lag(&self) -> i64 {
        (self.end - self.committed.unwrap_or(self.low).max(self.low)).max(0)
    }
}

/// One sample of a group on a topic.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub partitions: Vec<PartitionOffsets>,
    pub members: usize,
    /// The group's protocol; None when the coordinator does not know the group, or could not
    /// be asked.
    pub protocol: Option<group::Protocol>,
}

impl Sample {
    pub fn lag(&self) -> i64 {
        self.partitions.iter().map(PartitionOffsets::lag).sum()
    }
    fn end(&self) -> i64 {
        self.partitions.iter().map(|p| p.end).sum()
    }
    fn consumed(&self) -> i64 {
        self.partitions.iter().map(|p| p.end - p.lag()).sum()
    }
}

/// A sample, when it was taken by the clock, and the group's description (or why it could not
/// be had).
#[derive(Debug)]
pub struct Observation {
    pub sample: Sample,
    pub wall: SystemTime,
    pub group: Result<group::Description, rdkafka::error::KafkaError>,
}

/// The answer to "can it keep up?".
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// No lag and nothing arriving faster than it is consumed.
    CaughtUp,
    /// Lag is there but does not grow: consumption matches production.
    KeepingUp,
    /// Lag shrinks; zero in about `eta`.
    CatchingUp { eta: Duration },
    /// Lag grows by this many records per second.
    FallingBehind { per_sec: f64 },
}

/// Rates and verdict between two samples.
#[derive(Debug, Clone)]
pub struct Report {
    pub produce_rate: f64,
    pub consume_rate: f64,
    pub verdict: Verdict,
    /// Instances the group would need for the observed produce rate, if it is saturated.
    pub instances_needed: Option<usize>,
}

pub fn assess(before: &Sample, after: &Sample) -> Report {
    let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let produce_rate = (after.end() - before.end()).max(0) as f64 / secs;
    let consume_rate = (after.consumed() - before.consumed()).max(0) as f64 / secs;
    let lag = after.lag();
    let growth = (lag - before.lag()) as f64 / secs;
    // Commits arrive in steps (auto-commit every few seconds): tolerate one step of noise.
    let noise = (produce_rate * 0.05).max(1.0);
    let verdict = if lag == 0 {
        Verdict::CaughtUp
    } else if growth > noise {
        Verdict::FallingBehind { per_sec: growth }
    } else if growth < -noise {
        Verdict::CatchingUp {
            eta: Duration::from_secs_f64(lag as f64 / -growth),
        }
    } else {
        Verdict::KeepingUp
    };
    // Only a group that has work waiting shows its capacity in its consume rate.
    let instances_needed = (lag > 0 && after.members > 0 && consume_rate > 0.0).then(|| {
        let needed = (produce_rate / (consume_rate / after.members as f64))
            .ceil()
            .max(1.0) as usize;
        // A lag that does not grow beyond the noise is kept up with by the members there are:
        // a consume rate a step of commits below the produce rate does not ask for one more.
        if matches!(verdict, Verdict::FallingBehind { .. }) {
            needed
        } else {
            needed.min(after.members)
        }
    });
    Report {
        produce_rate,
        consume_rate,
        verdict,
        instances_needed,
    }
}

/// Reads committed offsets, watermarks and group membership.
pub struct LagReader {
    consumer: BaseConsumer<Watched>,
    group: String,
    topic: String,
}

impl LagReader {
    pub fn new(config: &LagConfig) -> Result<Self, ConfigError> {
        let mut client = config
            .kafka
            .client_config(Side::Consumer, &[("client.id", "ktransform-lag")])?;
        client.set("group.id", &config.group);
        client.set("enable.auto.commit", "false");
        // librdkafka's default `read_committed` makes OffsetFetch ask for stable offsets, which
        // the coordinator refuses while an exactly-once member's transaction holds offsets
        // pending (up to `transaction.timeout.ms` after a crash). Lag wants the last committed
        // offsets as they are now.
        client.set("isolation.level", "read_uncommitted");
        let consumer = config.kafka.create_with(
            &client,
            Watched::new(client.config_map().into_iter().collect()),
            "consumer",
        )?;
        Ok(LagReader {
            consumer,
            group: config.group.clone(),
            topic: config.topic.clone(),
        })
    }

    /// `error` of a request, or the refusal it came from when the brokers refused this
    /// client's certificates or credentials (a handshake of its own tells which: blocking).
    pub fn explain(&self, error: rdkafka::error::KafkaError) -> crate::Error {
        match self.refusal() {
            Some(refusal) => refusal.into(),
            None => error.into(),
        }
    }

    /// Why the brokers refuse this client, if they do. Blocking.
    pub fn refusal(&self) -> Option<crate::security::SecurityError> {
        Watched::refusal_of(&self.consumer)
    }

    /// Blocking; call from a plain thread or `spawn_blocking`.
    pub fn sample(&self) -> Result<Sample, rdkafka::error::KafkaError> {
        self.observe().map(|o| o.sample)
    }

    /// [`LagReader::sample`], with the group's description it was made from. Blocking.
    pub fn observe(&self) -> Result<Observation, rdkafka::error::KafkaError> {
        let timeout = Duration::from_secs(10);
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), timeout)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = self.consumer.committed_offsets(tpl, timeout)?;
        let mut out = Vec::with_capacity(partitions.len());
        for p in partitions {
            let (low, end) = self.consumer.fetch_watermarks(&self.topic, p, timeout)?;
            let committed =
                committed
                    .find_partition(&self.topic, p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            out.push(PartitionOffsets {
                partition: p,
                committed,
                low,
                end,
            });
        }
        out.sort_by_key(|p| p.partition);
        // Offsets are the report; without the members only the advice is missing.
        let group = group::describe(self.consumer.client(), &self.group, timeout);
        let described = group.as_ref().ok();
        Ok(Observation {
            sample: Sample {
                at: Instant::now(),
                partitions: out,
                members: described.map_or(0, |g| g.members.len()),
                protocol: described.and_then(|g| g.protocol),
            },
            wall: SystemTime::now(),
            group,
        })
    }
}

/// Prints the report once (after one window), or every window with `--watch`. Blocking.
pub fn print(config: &LagConfig) -> Result<(), crate::Error> {
    use std::io::{IsTerminal, Write};
    let reader = LagReader::new(config)?;
    let started = Instant::now();
    let mut before = reader.sample().map_err(|e| reader.explain(e))?;
    if before.partitions.is_empty() {
        // Otherwise a typo in the topic name would read as "caught up".
        return Err(ConfigError {
            flag: "--topic".into(),
            message: format!("topic `{}` does not exist", config.topic),
        }
        .into());
    }
    let tty = std::io::stdout().is_terminal();
    let trigger = config.keda_trigger();
    loop {
        std::thread::sleep(config.interval);
        let after = reader.sample().map_err(|e| reader.explain(e))?;
        let report = assess(&before, &after);
        let keda = trigger.map(|t| keda::compare(&t, &after, &report));
        let text = if config.json {
            let json = JsonReport::new(
                &config.group,
                &config.topic,
                &before,
                &after,
                &report,
                keda.as_ref(),
            );
            serde_json::to_string(&json).map_err(|e| crate::Error::Fatal(e.to_string()))?
        } else {
            render(&config.group, &config.topic, &after, &report, keda.as_ref())
        };
        let mut out = std::io::stdout().lock();
        if config.watch && tty && !config.json {
            // Redraw in place, like a console page that refreshes.
            let _ = write!(out, "\x1b[2J\x1b[H");
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
        let expired = config.duration.is_some_and(|d| started.elapsed() >= d);
        if !config.watch || expired {
            return Ok(());
        }
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ktransform lag`'s configuration from its flags (`args`, without the command).
    pub(super) fn config(args: &[&str]) -> LagConfig {
        use clap::Parser;
        #[derive(Parser)]
        struct Lag {
            #[command(flatten)]
            config: LagConfig,
        }
        Lag::try_parse_from(std::iter::once("lag").chain(args.iter().copied()))
            .expect("valid lag flags")
            .config
    }

    pub(super) fn sample(at: Instant, committed: i64, end: i64, members: usize) -> Sample {
        Sample {
            at,
            partitions: vec![PartitionOffsets {
                partition: 0,
                committed: Some(committed),
                low: 0,
                end,
            }],
            members,
            protocol: Some(group::Protocol::Consumer),
        }
    }

    #[test]
    fn verdicts() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            assess(&sample(t0, 100, 100, 1), &sample(t1, 200, 200, 1)).verdict,
            Verdict::CaughtUp
        );
        let behind = assess(&sample(t0, 0, 1000, 1), &sample(t1, 1000, 3000, 1));
        assert_eq!(behind.verdict, Verdict::FallingBehind { per_sec: 100.0 });
        assert_eq!(behind.instances_needed, Some(2));
        let catching = assess(&sample(t0, 0, 1000, 1), &sample(t1, 1500, 2000, 1));
        assert_eq!(
            catching.verdict,
            Verdict::CatchingUp {
                eta: Duration::from_secs(10)
            }
        );
        assert_eq!(
            assess(&sample(t0, 0, 1000, 1), &sample(t1, 1000, 2000, 1)).verdict,
            Verdict::KeepingUp
        );
        // Consumed 2% below produced: within the noise, the one member keeps up.
        let steady = assess(&sample(t0, 0, 1000, 1), &sample(t1, 980, 2000, 1));
        assert_eq!(steady.verdict, Verdict::KeepingUp);
        assert_eq!(steady.instances_needed, Some(1));
    }

    #[test]
    fn never_committed_counts_all_retained() {
        let p = PartitionOffsets {
            partition: 0,
            committed: None,
            low: 5,
            end: 10,
        };
        assert_eq!(p.lag(), 5);
    }
}
