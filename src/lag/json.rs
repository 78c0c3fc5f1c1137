//! `ktransform lag --json`: one JSON object per report, every field always present.

use serde::Serialize;

use super::keda::{self, Comparison};
use super::{group, PartitionOffsets, Report, Sample, Verdict};

/// The machine-readable report of `ktransform lag --json`; every field is always present (null
/// when it does not apply), so a reader can rely on the shape.
#[derive(Debug, Clone, Serialize)]
pub struct JsonReport<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    /// When the second sample was taken, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Seconds between the two samples the rates come from.
    pub window_secs: f64,
    pub members: usize,
    /// `classic` or `consumer`; null when the coordinator does not know the group.
    pub protocol: Option<&'static str>,
    pub partitions: Vec<JsonPartition>,
    /// Sums over the partitions; `committed` counts never-committed partitions as 0.
    pub total: JsonTotal,
    pub produce_per_sec: f64,
    pub consume_per_sec: f64,
    /// `caught_up`, `keeping_up`, `catching_up` or `falling_behind`.
    pub verdict: &'static str,
    /// With `falling_behind`: how fast the lag grows.
    pub falling_behind_per_sec: Option<f64>,
    /// With `catching_up`: seconds until the lag is zero at the observed rates.
    pub eta_secs: Option<f64>,
    /// With a lag: instances the observed produce rate needs at the observed per-instance rate
    /// (at most the members there are, unless falling behind).
    pub instances_needed: Option<usize>,
    /// With `--lag-threshold`: KEDA's count next to ktransform's; null without it.
    pub keda: Option<JsonKeda>,
}

/// KEDA's Kafka scaler on the same offsets ([`keda`]), and which count to trust.
#[derive(Debug, Clone, Serialize)]
pub struct JsonKeda {
    pub lag_threshold: u64,
    /// `earliest` or `latest`.
    pub offset_reset_policy: keda::OffsetResetPolicy,
    pub allow_idle_consumers: bool,
    /// Summed as KEDA sums it (a partition without a committed offset per the policy).
    pub total_lag: i64,
    /// The value KEDA reports: `total_lag`, capped at partitions × threshold unless idle
    /// consumers are allowed.
    pub metric: i64,
    pub capped: bool,
    /// Lag above KEDA's activation threshold (0): KEDA keeps at least one replica.
    pub active: bool,
    /// ceil(metric / lag_threshold), at least 1 while active.
    pub replicas: u64,
    /// ktransform's count: `instances_needed`; 0 when nothing arrives and nothing is left to
    /// read; the members when they are caught up; null when it cannot tell.
    pub ktransform_replicas: Option<u64>,
    /// `either` (they agree), `ktransform` or `keda`.
    pub trust: keda::Trust,
    pub why: String,
}

impl From<&Comparison> for JsonKeda {
    fn from(c: &Comparison) -> Self {
        JsonKeda {
            lag_threshold: c.trigger.lag_threshold,
            offset_reset_policy: c.trigger.offset_reset_policy,
            allow_idle_consumers: c.trigger.allow_idle_consumers,
            total_lag: c.keda.total_lag,
            metric: c.keda.metric,
            capped: c.keda.capped,
            active: c.keda.active,
            replicas: c.keda.replicas,
            ktransform_replicas: c.ktransform,
            trust: c.trust,
            why: c.why.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JsonPartition {
    pub partition: i32,
    /// Null when the group never committed on this partition.
    pub committed: Option<i64>,
    pub end: i64,
    pub lag: i64,
}

impl From<&PartitionOffsets> for JsonPartition {
    fn from(p: &PartitionOffsets) -> Self {
        JsonPartition {
            partition: p.partition,
            committed: p.committed,
            end: p.end,
            lag: p.lag(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JsonTotal {
    pub committed: i64,
    pub end: i64,
    pub lag: i64,
}

impl<'a> JsonReport<'a> {
    pub fn new(
        group: &'a str,
        topic: &'a str,
        before: &Sample,
        after: &Sample,
        report: &Report,
        keda: Option<&Comparison>,
    ) -> Self {
        let (verdict, falling_behind_per_sec, eta_secs) = match &report.verdict {
            Verdict::CaughtUp => ("caught_up", None, None),
            Verdict::KeepingUp => ("keeping_up", None, None),
            Verdict::CatchingUp { eta } => ("catching_up", None, Some(eta.as_secs_f64())),
            Verdict::FallingBehind { per_sec } => ("falling_behind", Some(*per_sec), None),
        };
        let partitions: Vec<JsonPartition> =
            after.partitions.iter().map(JsonPartition::from).collect();
        JsonReport {
            group,
            topic,
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            window_secs: after.at.duration_since(before.at).as_secs_f64(),
            members: after.members,
            protocol: after.protocol.map(group::Protocol::as_str),
            total: JsonTotal {
                committed: partitions.iter().filter_map(|p| p.committed).sum(),
                end: after.end(),
                lag: after.lag(),
            },
            partitions,
            produce_per_sec: report.produce_rate,
            consume_per_sec: report.consume_rate,
            verdict,
            falling_behind_per_sec,
            eta_secs,
            instances_needed: report.instances_needed,
            keda: keda.map(JsonKeda::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::assess;
    use super::super::tests::sample;
    use super::*;

    #[test]
    fn json_report_is_machine_readable() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let (before, after) = (sample(t0, 0, 1000, 1), sample(t1, 1000, 3000, 1));
        let report = assess(&before, &after);
        let json = JsonReport::new("g", "t", &before, &after, &report, None);
        let v = serde_json::to_value(&json).unwrap();
        assert_eq!(v["verdict"], "falling_behind");
        assert_eq!(v["falling_behind_per_sec"], 100.0);
        assert_eq!(v["instances_needed"], 2);
        assert!(v["eta_secs"].is_null());
        assert_eq!(v["partitions"][0]["committed"], 1000);
        assert_eq!(v["partitions"][0]["lag"], 2000);
        assert_eq!(v["total"]["lag"], 2000);
        assert_eq!(v["window_secs"], 10.0);
        assert_eq!(v["protocol"], "consumer");
        assert!(v["keda"].is_null());
        let catching = sample(t1, 1500, 2000, 1);
        let json = JsonReport::new(
            "g",
            "t",
            &before,
            &catching,
            &assess(&before, &catching),
            None,
        );
        let v = serde_json::to_value(&json).unwrap();
        assert_eq!(v["verdict"], "catching_up");
        assert_eq!(v["eta_secs"], 10.0);
    }

    #[test]
    fn keda_next_to_ktransform() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let (before, after) = (sample(t0, 0, 1000, 1), sample(t1, 1000, 3000, 1));
        let report = assess(&before, &after);
        let trigger = keda::Trigger {
            lag_threshold: 500,
            offset_reset_policy: keda::OffsetResetPolicy::Earliest,
            allow_idle_consumers: false,
        };
        let comparison = keda::compare(&trigger, &after, &report);
        let json = JsonReport::new("g", "t", &before, &after, &report, Some(&comparison));
        let v = serde_json::to_value(&json).unwrap();
        // One partition, lag 2000: capped at 1 × 500, one replica; the rates say 2.
        assert_eq!(v["keda"]["total_lag"], 2000);
        assert_eq!(v["keda"]["metric"], 500);
        assert_eq!(v["keda"]["capped"], true);
        assert_eq!(v["keda"]["replicas"], 1);
        assert_eq!(v["keda"]["ktransform_replicas"], 2);
        assert_eq!(v["keda"]["trust"], "ktransform");
        assert_eq!(v["keda"]["offset_reset_policy"], "earliest");
    }
}
