//! `ktransform verify`: audits a source topic against its destination and dead-letter topics and
//! says whether a delivery guarantee held.
//!
//! # What is read
//! The three topics as they are when verify starts: the end offsets are captured first (source,
//! then destination, then dead-letter topic) and every partition is read from its first retained
//! record up to that end, so the audit ends even while the topics grow. The reader is a fresh
//! `read_committed` consumer with a throwaway `group.id` that never joins a group nor commits.
//! Audit a settled pipeline (after `run --until-end`, or at zero lag with a quiet source): source
//! records not processed yet count as lost, and outputs of source records past the captured end
//! or already deleted by retention count as forged.
//!
//! # How an output is tied to its source
//! Outputs carry no provenance, so they are matched by content. For each source record verify
//! computes what the service must write: a JSON object, `(key, transform(value))` in the
//! destination; a tombstone, `(key, null)` in the destination; anything else, `(key, value)`
//! unchanged in the dead-letter topic. Each destination record, in offset order per partition,
//! takes the earliest source record not taken yet with exactly that content and the same headers
//! (the earliest with that content if none has them): its first delivery.
//! Once every source record with that content is taken, or when its headers are those of one
//! already taken (a replay while equal content still waits), it is a duplicate. Dead letters name
//! their source position in `ktransform.source.*` headers: the source record there must have the
//! same key and value (an object dead-lettered as `output_too_large` is also right); a dead letter
//! sent without its value (`ktransform.value.dropped`: too large for the producer or the topic)
//! is right if the record there belongs in the dead-letter topic or names `output_too_large`,
//! and is counted apart: its content is not checked. Headers must equal the input's, as ordered
//! (name, value) lists that leave out names starting with `ktransform.` on both sides. The
//! timestamp of an output or dead letter must equal its input's under `--timestamp source` (the
//! default), and is only counted (`changed_timestamps`) under `now`.
//!
//! # Wrong outputs
//! A destination record that matches no expected content is explained by a second read of the
//! source, the first that applies of:
//! - wrong hash: key, and value without its last member `"hash":"…"`, equal a source object's
//!   expected output without it;
//! - changed key: the value is exactly a source record's expected output, under another key;
//! - changed fields: its `hash` is the md5 of a source record's value, but the rest differs;
//! - forged: none of these.
//!
//! An explained record is tied to that source record, which is then not lost. A dead letter whose
//! position is outside the audited source, or names another topic, or that holds an object with no
//! `output_too_large` reason, is forged; one whose key or value differs from the source record at
//! its position counts as changed fields.
//!
//! # Rules
//! At-least-once: nothing lost, no wrong hash, nothing changed (keys, fields, headers), no
//! changed timestamp (under `--timestamp source`), nothing forged, and first deliveries in order: per (source partition, output partition, key), the
//! source offsets of first deliveries increase with the output offset. Duplicates are reported.
//! Exactly-once: also no duplicates.
//!
//! # Memory
//! Contents are compared by 128-bit fingerprints (md5 of key and value) and never kept: about 75
//! bytes per source record (with its timestamp) (2M records: some 170 MB resident in all), plus an entry per (source
//! partition, output partition, key) for the order check and some 100 bytes per wrong output.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, ValueEnum};
use rdkafka::consumer::BaseConsumer;
use serde::{Serialize, Serializer};

use crate::config::{ConfigError, Guarantee, KafkaArgs, PipelineArgs, Side, Timestamps};
use crate::error::Error;
use crate::security::Watched;

mod audit;
mod read;

use audit::Auditor;
use read::Reader;

/// librdkafka properties the audit depends on; `-X` may not change them.
const OWNED_PROPERTIES: &[(&str, &str)] = &[
    (
        "isolation.level",
        "verify reads read_committed, as a downstream reader would",
    ),
    ("enable.auto.commit", "verify never commits"),
    (
        "enable.partition.eof",
        "verify needs it to know a partition is read to its end",
    ),
];

#[derive(Debug, Clone, Args)]
pub struct VerifyConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Print one JSON object instead of the table.
    #[arg(long, env = "KTRANSFORM_JSON")]
    pub json: bool,
}

impl VerifyConfig {
    /// Parses the flags of `ktransform verify` (without the program and subcommand names), with
    /// environment fallbacks, as the binary does.
    pub fn from_args<I, T>(args: I) -> Result<VerifyConfig, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Verify {
            #[command(flatten)]
            config: VerifyConfig,
        }
        let argv = std::iter::once(std::ffi::OsString::from("ktransform-verify"))
            .chain(args.into_iter().map(Into::into));
        Verify::try_parse_from(argv).map(|v| v.config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |flag: &str, message: String| ConfigError {
            flag: flag.into(),
            message,
        };
        let dlq = self.pipeline.dlq_topic();
        for (flag, topic) in [
            ("--source", &self.pipeline.source),
            ("--destination", &self.pipeline.destination),
            ("--dlq", &dlq),
        ] {
            if topic.trim().is_empty() {
                return Err(invalid(flag, "is empty".into()));
            }
        }
        if self.pipeline.source == self.pipeline.destination
            || dlq == self.pipeline.source
            || dlq == self.pipeline.destination
        {
            return Err(invalid(
                "--destination",
                "source, destination and dead-letter topic must differ".into(),
            ));
        }
        for o in self.kafka.overrides()? {
            if let Some((_, why)) = OWNED_PROPERTIES.iter().find(|(k, _)| *k == o.key) {
                return Err(invalid(&o.name(), format!("set by verify: {why}")));
            }
        }
        Ok(())
    }

    fn consumer(&self) -> Result<BaseConsumer<Watched>, ConfigError> {
        let mut client = self.kafka.client_config(
            Side::Consumer,
            &[
                ("client.id", "ktransform-verify"),
                // librdkafka 2.x pauses fetching for fetch.queue.backoff.ms (1 s) whenever its
                // queue is full: with a reader as fast as this one, that tripled a 2M-record audit.
                ("fetch.queue.backoff.ms", "10"),
                // Larger fetches than librdkafka's defaults but a smaller prefetch (64 MiB and
                // 100k records per partition): the same speed in a third less memory.
                ("max.partition.fetch.bytes", "2097152"),
                ("fetch.max.bytes", "8388608"),
                ("queued.max.messages.kbytes", "16384"),
                ("queued.min.messages", "20000"),
                // Records deleted by retention while reading: go on with what is left.
                ("auto.offset.reset", "earliest"),
            ],
        )?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // librdkafka wants a group.id even for assign(); this one never joins nor commits.
        client.set(
            "group.id",
            format!("ktransform-verify-{}-{nanos:x}", std::process::id()),
        );
        client.set("enable.auto.commit", "false");
        client.set("isolation.level", "read_committed");
        client.set("enable.partition.eof", "true");
        self.kafka.create_with(
            &client,
            Watched::new(client.config_map().into_iter().collect()),
            "consumer",
        )
    }
}

/// Counts of one audit. Faults count records of the destination or dead-letter topic, except
/// `lost`, which counts source records; one record can show more than one fault (a first
/// delivery with changed headers, out of order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Records read from the source.
    pub source_records: u64,
    /// Source tombstones (expected as tombstones in the destination).
    pub tombstones: u64,
    /// Source values that are not JSON objects (expected in the dead-letter topic).
    pub expected_dead_letters: u64,
    /// Records read from the destination.
    pub outputs: u64,
    /// Records read from the dead-letter topic.
    pub dead_letters: u64,
    /// Dead letters sent without their value (too large for the producer or the dead-letter
    /// topic): their position and reason are checked, their content cannot be.
    pub dead_letters_without_value: u64,
    /// Source records with a correct output or dead letter.
    pub delivered: u64,
    /// Source records with no output at all, correct or wrong.
    pub lost: u64,
    /// Correct outputs or dead letters of source records delivered before.
    pub duplicates: u64,
    pub wrong_hash: u64,
    pub changed_keys: u64,
    pub changed_fields: u64,
    /// Correct outputs whose headers differ from their input's.
    pub changed_headers: u64,
    /// Outputs and dead letters whose timestamp is not their input's (a broken rule under
    /// `--timestamp source`, expected under `now`). Not part of `changed`.
    pub changed_timestamps: u64,
    /// Records that can be tied to no source record, or are in the wrong topic.
    pub forged: u64,
    /// First deliveries that come after a later source record of their key.
    pub order_violations: u64,
}

impl Counts {
    pub fn changed(&self) -> u64 {
        self.changed_keys + self.changed_fields + self.changed_headers
    }

    /// The rules of `guarantee` that do not hold, as `name = count`.
    pub fn broken_rules(&self, guarantee: Guarantee, timestamps: Timestamps) -> Vec<String> {
        let mut rules = vec![
            ("lost", self.lost),
            ("wrong_hash", self.wrong_hash),
            ("changed", self.changed()),
            ("forged", self.forged),
            ("order_violations", self.order_violations),
        ];
        if timestamps == Timestamps::Source {
            rules.push(("changed_timestamps", self.changed_timestamps));
        }
        if guarantee == Guarantee::ExactlyOnce {
            rules.push(("duplicates", self.duplicates));
        }
        rules
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} = {n}"))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Lost,
    Duplicate,
    // WrongHash < ChangedKey < ChangedFields < Forged: the precedence of explanations.
    WrongHash,
    ChangedKey,
    ChangedFields,
    ChangedHeaders,
    ChangedTimestamp,
    Forged,
    OrderViolation,
}

impl Kind {
    /// The name in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lost => "lost",
            Kind::Duplicate => "duplicate",
            Kind::WrongHash => "wrong_hash",
            Kind::ChangedKey => "changed_key",
            Kind::ChangedFields => "changed_fields",
            Kind::ChangedHeaders => "changed_headers",
            Kind::ChangedTimestamp => "changed_timestamp",
            Kind::Forged => "forged",
            Kind::OrderViolation => "order_violation",
        }
    }
}

/// One faulty record: where it is, and the source record it was tied to, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Position>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    pub destination: String,
    pub dlq: String,
    #[serde(serialize_with = "guarantee_name")]
    pub guarantee: Guarantee,
    /// The timestamps outputs were checked against (`--timestamp`).
    #[serde(serialize_with = "timestamps_name")]
    pub timestamps: Timestamps,
    #[serde(flatten)]
    pub counts: Counts,
    /// `changed_keys + changed_fields + changed_headers`.
    pub changed: u64,
    pub passed: bool,
    /// The broken rules, `name = count`; empty when passed.
    pub failed_rules: Vec<String>,
    /// The first few faulty records of each kind.
    pub findings: Vec<Finding>,
}

fn guarantee_name<S: Serializer>(g: &Guarantee, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(g.to_possible_value().as_ref().map_or("?", |v| v.get_name()))
}

fn timestamps_name<S: Serializer>(t: &Timestamps, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.to_possible_value().as_ref().map_or("?", |v| v.get_name()))
}

/// Reads the three topics and audits them. Blocking.
pub fn audit(config: &VerifyConfig) -> Result<Report, Error> {
    config.validate()?;
    let dlq = config.pipeline.dlq_topic();
    let reader = Reader::new(config);
    // Source first: every output the captured source records can have is then in range.
    let missing = |flag: &str, topic: &str| ConfigError {
        flag: flag.into(),
        message: format!("topic `{topic}` does not exist"),
    };
    let source = reader
        .snapshot(&config.pipeline.source)?
        .ok_or_else(|| missing("--source", &config.pipeline.source))?;
    let destination = reader
        .snapshot(&config.pipeline.destination)?
        .ok_or_else(|| missing("--destination", &config.pipeline.destination))?;
    let dead = reader.snapshot(&dlq)?.unwrap_or_default();
    // Records are numbered with u32s.
    for (topic, spans) in [
        (&config.pipeline.source, &source),
        (&config.pipeline.destination, &destination),
    ] {
        let records: i64 = spans.iter().map(|s| s.end - s.low).sum();
        if records > i64::from(u32::MAX) {
            return Err(Error::Fatal(format!(
                "{topic} holds {records} records; verify audits at most {}",
                u32::MAX
            )));
        }
    }
    let mut auditor = Auditor::new(
        [
            config.pipeline.source.clone(),
            config.pipeline.destination.clone(),
            dlq.clone(),
        ],
        source.iter().map(|s| (s.end - s.low) as usize).sum(),
        config.pipeline.timestamp,
    );
    // One partition at a time, so source records are numbered in (partition, offset) order.
    reader.read("source", &config.pipeline.source, &source, true, |r| {
        auditor.add_source(r)
    })?;
    auditor.seal_sources();
    reader.read(
        "destination",
        &config.pipeline.destination,
        &destination,
        false,
        |r| auditor.add_output(r),
    )?;
    reader.read("dead letters", &dlq, &dead, false, |r| {
        auditor.add_dead_letter(r)
    })?;
    if auditor.has_wrong_outputs() {
        auditor.seal_wrong_outputs();
        reader.read(
            "explaining wrong outputs",
            &config.pipeline.source,
            &source,
            true,
            |r| auditor.explain(r),
        )?;
    }
    Ok(auditor.finish(config.pipeline.guarantee))
}

/// Audits and prints the report (`--json`: one JSON object) to stdout. Blocking. An audit that
/// fails its rules is [`Error::AuditFailed`].
pub fn print(config: &VerifyConfig) -> Result<(), Error> {
    use std::io::Write;
    let report = audit(config)?;
    let text = if config.json {
        serde_json::to_string(&report).map_err(|e| Error::Fatal(e.to_string()))? + "\n"
    } else {
        render(&report)
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    if report.passed {
        Ok(())
    } else {
        Err(Error::AuditFailed(report.failed_rules.join(", ")))
    }
}

/// The report as a person reads it.
pub fn render(report: &Report) -> String {
    let c = &report.counts;
    let mut s = String::new();
    let guarantee = report
        .guarantee
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string());
    let _ = writeln!(
        s,
        "{} -> {} (dead letters: {}), {guarantee}",
        report.source, report.destination, report.dlq
    );
    let duplicates = if report.guarantee == Guarantee::ExactlyOnce {
        ""
    } else {
        "  (allowed)"
    };
    let changed = format!(
        "  (keys {}, fields {}, headers {})",
        c.changed_keys, c.changed_fields, c.changed_headers
    );
    let source = format!(
        "  ({} tombstones, {} not objects)",
        c.tombstones, c.expected_dead_letters
    );
    let timestamps = if report.timestamps == Timestamps::Now {
        "  (allowed: --timestamp now)"
    } else {
        ""
    };
    let without_value = if c.dead_letters_without_value > 0 {
        format!("  ({} without their value)", c.dead_letters_without_value)
    } else {
        String::new()
    };
    for (name, n, note) in [
        ("source records", c.source_records, source.as_str()),
        ("outputs", c.outputs, ""),
        ("dead letters", c.dead_letters, without_value.as_str()),
        ("delivered", c.delivered, ""),
        ("lost", c.lost, ""),
        ("duplicates", c.duplicates, duplicates),
        ("wrong hashes", c.wrong_hash, ""),
        ("changed", report.changed, changed.as_str()),
        ("timestamps changed", c.changed_timestamps, timestamps),
        ("forged", c.forged, ""),
        ("order violations", c.order_violations, ""),
    ] {
        let _ = writeln!(s, "  {name:<17}{n:>12}{note}");
    }
    for f in &report.findings {
        let _ = write!(
            s,
            "  {:<17}{} {}@{}",
            f.kind.name(),
            f.topic,
            f.partition,
            f.offset
        );
        if let Some(p) = f.source {
            let _ = write!(s, " (source {}@{})", p.partition, p.offset);
        }
        s.push('\n');
    }
    if report.passed {
        s.push_str("PASSED\n");
    } else {
        let _ = writeln!(s, "FAILED: {}", report.failed_rules.join(", "));
    }
    s
}
