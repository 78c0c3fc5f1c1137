//! The live view's state (`ktransform lag --serve`): the samples of the last minutes, the last
//! window's report, the group's members, and what is wrong (brokers unreachable since when, a
//! topic or group that does not exist), as the page and `/lag.json` show them. No I/O: the
//! server (`lag/serve.rs`) hands it each observation or failure.
//!
//! Bounded: points older than [`HISTORY`] are dropped, and there are never more than
//! [`MAX_POINTS`], whatever `--interval`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Serialize;

use super::{advice_text, assess, keda, verdict_text, JsonPartition, JsonReport, LagConfig};
use super::{Observation, Sample};

/// How far back the charts go.
pub const HISTORY: Duration = Duration::from_secs(600);
/// The most points kept, for an `--interval` short enough to exceed it within [`HISTORY`].
pub const MAX_POINTS: usize = 1_200;
/// The shortest window the verdict, the advice and the report's rates are computed over
/// (`--interval` when longer); each point's rates are over its own interval.
pub const VERDICT_WINDOW: Duration = Duration::from_secs(30);

/// One sample on the charts.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// When it was taken, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The total lag.
    pub lag: i64,
    /// The rates over the window that ends here; null for the first point after a gap.
    pub produce_per_sec: Option<f64>,
    pub consume_per_sec: Option<f64>,
    /// Each partition's lag, by partition number.
    pub partitions: BTreeMap<i32, i64>,
}

/// A member of the group, as the page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    /// Its `group.instance.id` (static membership), null without one.
    pub instance_id: Option<String>,
    /// The partitions of the viewed topic assigned to it.
    pub partitions: Vec<i32>,
    /// How many partitions of other topics it holds too.
    pub other_partitions: usize,
}

/// Sampling fails: since when, and why.
#[derive(Debug, Clone)]
struct Failing {
    since: SystemTime,
    error: String,
    /// The brokers did not answer (as opposed to answering with an error).
    unreachable: bool,
}

/// Everything the page shows.
#[derive(Debug)]
pub struct Live {
    group: String,
    topic: String,
    interval: Duration,
    trigger: Option<keda::Trigger>,
    history: VecDeque<Point>,
    /// The samples of the last [`VERDICT_WINDOW`] since the last gap, oldest first: the last
    /// one gives the next point's rates, the first the verdict's window.
    recent: VecDeque<Sample>,
    /// The last sample's partitions.
    partitions: Vec<JsonPartition>,
    report: Option<serde_json::Value>,
    verdict: Option<String>,
    advice: Option<String>,
    members: Vec<Member>,
    group_state: Option<String>,
    group_error: Option<String>,
    updated: Option<SystemTime>,
    failing: Option<Failing>,
    no_topic: bool,
    unknown_group: bool,
}

/// `/lag.json`: the page's data. Every field is always present (null when it does not apply).
#[derive(Debug, Serialize)]
pub struct View<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub interval_secs: f64,
    pub history_secs: u64,
    /// `ok`, `waiting` (fewer than two samples yet), `unreachable`, `failing` (the brokers
    /// answer with an error), `unknown_topic` or `unknown_group`.
    pub status: &'static str,
    /// What a person should read about the status; null when `ok`.
    pub message: Option<String>,
    /// With `unreachable` or `failing`: since when, milliseconds since the Unix epoch.
    pub failing_since_ms: Option<u64>,
    /// The last successful sample, milliseconds since the Unix epoch.
    pub updated_ms: Option<u64>,
    /// The last sample's offsets and lag per partition.
    pub partitions: &'a [JsonPartition],
    /// The report over the last [`VERDICT_WINDOW`] (or `--interval` if longer; its
    /// `window_secs` says which), as `ktransform lag --json` prints it.
    pub report: Option<&'a serde_json::Value>,
    pub verdict_text: Option<&'a str>,
    pub advice_text: Option<&'a str>,
    /// The coordinator's state of the group (`Stable`, `Empty`, `Dead`...).
    pub group_state: Option<&'a str>,
    /// Why the group could not be described (the offsets are read all the same).
    pub group_error: Option<&'a str>,
    pub members: &'a [Member],
    pub history: &'a VecDeque<Point>,
}

impl Live {
    pub fn new(config: &LagConfig) -> Self {
        Live {
            group: config.group.clone(),
            topic: config.topic.clone(),
            interval: config.interval,
            trigger: config.keda_trigger(),
            history: VecDeque::new(),
            recent: VecDeque::new(),
            partitions: Vec::new(),
            report: None,
            verdict: None,
            advice: None,
            members: Vec::new(),
            group_state: None,
            group_error: None,
            updated: None,
            failing: None,
            no_topic: false,
            unknown_group: false,
        }
    }

    /// Whether sampling fails now.
    pub fn failing(&self) -> bool {
        self.failing.is_some()
    }

    /// A sample could not be taken at `at`.
    /// A sample failed with `error`; `refusal` is why, when the brokers refuse this client's
    /// certificates or credentials (not an outage: no retry cures it).
    pub fn failed(&mut self, error: &KafkaError, refusal: Option<String>, at: SystemTime) {
        let since = self.failing.as_ref().map_or(at, |f| f.since);
        self.failing = Some(Failing {
            since,
            unreachable: refusal.is_none() && unreachable(error),
            error: refusal.unwrap_or_else(|| error.to_string()),
        });
        // The next window starts after the gap: no rate across it.
        self.recent.clear();
    }

    pub fn observed(&mut self, observation: Observation) {
        let Observation {
            sample,
            wall,
            group,
        } = observation;
        self.failing = None;
        self.updated = Some(wall);
        match group {
            Ok(description) => {
                self.unknown_group = description.protocol.is_none()
                    && description.members.is_empty()
                    && sample.partitions.iter().all(|p| p.committed.is_none());
                self.group_state = Some(description.state);
                self.members = description
                    .members
                    .into_iter()
                    .map(|m| {
                        let (mut mine, other): (Vec<_>, Vec<_>) = m
                            .assignment
                            .into_iter()
                            .partition(|(t, _)| *t == self.topic);
                        mine.sort_unstable();
                        Member {
                            member_id: m.member_id,
                            client_id: m.client_id,
                            host: m.host,
                            instance_id: m.instance_id,
                            partitions: mine.into_iter().map(|(_, p)| p).collect(),
                            other_partitions: other.len(),
                        }
                    })
                    .collect();
                self.group_error = None;
            }
            Err(e) => {
                self.unknown_group = false;
                self.group_error = Some(e.to_string());
            }
        }
        self.no_topic = sample.partitions.is_empty();
        self.partitions = sample.partitions.iter().map(JsonPartition::from).collect();
        if self.no_topic {
            self.recent.clear();
            return;
        }
        // A window of at least VERDICT_WINDOW: a group commits in steps (auto-commit every
        // second or five, a transaction at a time), which a window of one short interval reads
        // as alternately falling behind and catching up.
        while self.recent.len() > 1
            && sample.at.duration_since(self.recent[1].at) >= self.interval.max(VERDICT_WINDOW)
        {
            self.recent.pop_front();
        }
        let rates = self.recent.back().map(|before| assess(before, &sample));
        let report = self.recent.front().map(|before| {
            let report = assess(before, &sample);
            let keda = self.trigger.map(|t| keda::compare(&t, &sample, &report));
            let json = JsonReport::new(
                &self.group,
                &self.topic,
                before,
                &sample,
                &report,
                keda.as_ref(),
            );
            (report, serde_json::to_value(json).ok())
        });
        if let Some((report, json)) = report {
            self.verdict = Some(verdict_text(&sample, &report));
            self.advice = advice_text(&sample, &report);
            self.report = json;
        }
        self.history.push_back(Point {
            timestamp_ms: millis(wall),
            lag: sample.lag(),
            produce_per_sec: rates.as_ref().map(|r| r.produce_rate),
            consume_per_sec: rates.as_ref().map(|r| r.consume_rate),
            partitions: sample
                .partitions
                .iter()
                .map(|p| (p.partition, p.lag()))
                .collect(),
        });
        let oldest = millis(wall).saturating_sub(HISTORY.as_millis() as u64);
        while self.history.len() > MAX_POINTS
            || self
                .history
                .front()
                .is_some_and(|p| p.timestamp_ms < oldest)
        {
            self.history.pop_front();
        }
        self.recent.push_back(sample);
    }

    /// The page's data at `now`.
    pub fn view(&self, now: SystemTime) -> View<'_> {
        let (status, message) = self.status(now);
        View {
            group: &self.group,
            topic: &self.topic,
            interval_secs: self.interval.as_secs_f64(),
            history_secs: HISTORY.as_secs(),
            status,
            message,
            failing_since_ms: self.failing.as_ref().map(|f| millis(f.since)),
            updated_ms: self.updated.map(millis),
            partitions: &self.partitions,
            report: self.report.as_ref(),
            verdict_text: self.verdict.as_deref(),
            advice_text: self.advice.as_deref(),
            group_state: self.group_state.as_deref(),
            group_error: self.group_error.as_deref(),
            members: &self.members,
            history: &self.history,
        }
    }

    fn status(&self, now: SystemTime) -> (&'static str, Option<String>) {
        if let Some(f) = &self.failing {
            let since = humantime::format_rfc3339_seconds(f.since);
            let secs = now.duration_since(f.since).unwrap_or_default().as_secs();
            return if f.unreachable {
                (
                    "unreachable",
                    Some(format!(
                        "brokers unreachable since {since} ({secs} s): {}; showing the last \
                         data read",
                        f.error
                    )),
                )
            } else {
                (
                    "failing",
                    Some(format!(
                        "cannot read the group's offsets since {since} ({secs} s): {}",
                        f.error
                    )),
                )
            };
        }
        if self.updated.is_none() {
            return ("waiting", Some("reading the first sample".into()));
        }
        if self.no_topic {
            return (
                "unknown_topic",
                Some(format!(
                    "topic `{}` does not exist on these brokers: check --topic",
                    self.topic
                )),
            );
        }
        if self.unknown_group {
            return (
                "unknown_group",
                Some(format!(
                    "group `{}` is unknown: no member and no committed offset on `{}`; check \
                     --group (its lag counts every retained record)",
                    self.group, self.topic
                )),
            );
        }
        if self.report.is_none() {
            return (
                "waiting",
                Some(format!(
                    "one sample read; the rates and the verdict come with the next, in {}",
                    humantime::format_duration(self.interval)
                )),
            );
        }
        ("ok", None)
    }
}

/// Whether `error` means the brokers did not answer, rather than answered with an error.
fn unreachable(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(
            AllBrokersDown
                | BrokerTransportFailure
                | OperationTimedOut
                | RequestTimedOut
                | Resolve
                | NetworkException
                | BrokerNotAvailable
                | CoordinatorNotAvailable
                | NotCoordinator
                | LeaderNotAvailable
                | NotLeaderForPartition
        )
    )
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
