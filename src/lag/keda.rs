//! The replica count KEDA's Kafka scaler would ask for, from the same offsets `ktransform lag`
//! reads, and which to trust when it differs from ktransform's own.
//!
//! KEDA's `kafka` trigger (`pkg/scalers/kafka_scaler.go` of kedacore/keda, v2.21; the repository
//! is the reference, the formula is re-stated here):
//! - a partition's lag is its log end offset minus the group's committed offset
//!   (`getLagForPartition`), not clamped. Without a committed offset it follows
//!   `offsetResetPolicy`: `latest` (KEDA's default) counts 1, `earliest` the retained records
//!   (log end minus log start), and `scaleToZeroOnInvalidOffset` would count 0 (not modelled:
//!   off here and in `deploy/kubernetes/`).
//! - the metric is the sum over the topic's partitions (`getTotalLag`). Unless
//!   `allowIdleConsumers`, it is capped: when `total / lagThreshold` (integer division)
//!   exceeds the partition count, the metric becomes `partitions × lagThreshold`. The integer
//!   division lets a total just under `(partitions + 1) × lagThreshold` through uncapped, so
//!   the count can reach partitions + 1: `maxReplicaCount` = partitions stops that.
//! - the HPA target is that metric as an `AverageValue` of `lagThreshold`: desired replicas =
//!   ceil(metric / lagThreshold), at least 1 while the trigger is active (lag above
//!   `activationLagThreshold`, 0 by default); inactive, KEDA goes to `minReplicaCount`.
//!   (The HPA leaves the count alone within 10% of the target: not modelled.)
//! - `excludePersistentLag`, `limitToPartitionsWithLag`, `partitionLimitation` and
//!   `ensureEvenDistributionOfPartitions` change this; they are off in `deploy/kubernetes/` and
//!   not modelled.
//!
//! A topic written by an exactly-once (transactional) producer ends every transaction with a
//! commit marker, an offset no consumer is handed: a group that read everything still commits
//! one below the log end, a lag of 1 per partition. KEDA sees an active trigger and keeps a
//! replica (kedacore/keda#5675); ktransform's verdict, from the rates, says it keeps up.

use serde::Serialize;

use super::{PartitionOffsets, Report, Sample, Verdict};

/// KEDA's `offsetResetPolicy`: what a partition without a committed offset counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetResetPolicy {
    /// The retained records (log end minus log start): where `ktransform run` starts
    /// (`auto.offset.reset=earliest`).
    Earliest,
    /// 1: KEDA's default.
    Latest,
}

impl OffsetResetPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetResetPolicy::Earliest => "earliest",
            OffsetResetPolicy::Latest => "latest",
        }
    }
}

/// The trigger's settings that change the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    /// `lagThreshold`, at least 1.
    pub lag_threshold: u64,
    pub offset_reset_policy: OffsetResetPolicy,
    pub allow_idle_consumers: bool,
}

/// What KEDA would compute for one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// The summed lag, before the cap.
    pub total_lag: i64,
    /// The value KEDA reports to the HPA: the total lag, capped unless idle consumers are
    /// allowed.
    pub metric: i64,
    pub capped: bool,
    /// The lag is above `activationLagThreshold` (0): KEDA keeps at least one replica.
    pub active: bool,
    /// The replicas the HPA would ask for, before `minReplicaCount`/`maxReplicaCount`.
    pub replicas: u64,
}

/// One partition's lag as KEDA counts it.
pub fn partition_lag(p: &PartitionOffsets, policy: OffsetResetPolicy) -> i64 {
    match (p.committed, policy) {
        (Some(committed), _) => p.end - committed,
        (None, OffsetResetPolicy::Latest) => 1,
        (None, OffsetResetPolicy::Earliest) => (p.end - p.low).max(0),
    }
}

/// KEDA's count for `partitions`, all of the trigger's topic.
pub fn estimate(trigger: &Trigger, partitions: &[PartitionOffsets]) -> Estimate {
    let threshold = trigger.lag_threshold.max(1) as i64;
    let count = partitions.len() as i64;
    let total_lag: i64 = partitions
        .iter()
        .map(|p| partition_lag(p, trigger.offset_reset_policy))
        .sum();
    // Go's `/` on int64, as KEDA writes it: truncates toward zero.
    let capped = !trigger.allow_idle_consumers && total_lag / threshold > count;
    let metric = if capped { count * threshold } else { total_lag };
    let active = total_lag > 0;
    let needed = if metric > 0 {
        (metric as u64).div_ceil(threshold as u64)
    } else {
        0
    };
    Estimate {
        total_lag,
        metric,
        capped,
        active,
        replicas: if active { needed.max(1) } else { needed },
    }
}

/// Which count to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// They give the same count.
    Either,
    Ktransform,
    Keda,
}

/// KEDA's count next to ktransform's, and which to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub trigger: Trigger,
    pub keda: Estimate,
    /// ktransform's count: [`Report::instances_needed`]; 0 when nothing arrives and nothing is
    /// left to read; the members when they are caught up; None when it cannot tell (a lag and
    /// no member consuming in the window).
    pub ktransform: Option<u64>,
    pub trust: Trust,
    pub why: String,
}

/// Whether every partition's lag is at most 1 and nothing is produced: the lag is the commit
/// markers an exactly-once producer leaves, not records.
fn only_markers(sample: &Sample, report: &Report) -> bool {
    report.produce_rate == 0.0
        && sample
            .partitions
            .iter()
            .all(|p| p.committed.is_some() && p.end - p.committed.unwrap_or(p.end) <= 1)
}

pub fn compare(trigger: &Trigger, sample: &Sample, report: &Report) -> Comparison {
    let keda = estimate(trigger, &sample.partitions);
    let members = sample.members as u64;
    let markers = sample.lag() > 0 && only_markers(sample, report);
    let idle = report.produce_rate == 0.0 && (sample.lag() == 0 || markers);
    let ktransform = match (&report.verdict, report.instances_needed) {
        (_, Some(n)) => Some(n as u64),
        (Verdict::FallingBehind { .. }, None) => None,
        // Nothing arrives and nothing is left to read.
        _ if idle => Some(0),
        // Caught up: the members keep up (how many fewer would is not measured).
        _ if sample.lag() == 0 && members > 0 => Some(members),
        _ => None,
    };
    let partitions = sample.partitions.len() as u64;
    let (trust, why) = match ktransform {
        _ if markers => (
            Trust::Ktransform,
            format!(
                "the lag is transaction commit markers (at most 1 per partition, nothing \
                 produced), not records: KEDA stays active and keeps {} replica(s) \
                 (kedacore/keda#5675)",
                keda.replicas
            ),
        ),
        None => (
            Trust::Keda,
            "ktransform has no measured rate (no member consumed in the window): KEDA's count \
             is the only one"
                .to_string(),
        ),
        Some(k) if k == keda.replicas => (Trust::Either, "they agree".to_string()),
        Some(k) if sample.lag() == 0 => (
            Trust::Ktransform,
            format!(
                "{k} member(s) keep up with no lag; KEDA, seeing none, goes down to \
                 minReplicaCount and back up once the lag has grown: set minReplicaCount to \
                 what keeps up at the usual peak"
            ),
        ),
        Some(k) if k > keda.replicas => {
            let mut why = format!(
                "KEDA asks for {} only: the lag ({}) is under {k} × lagThreshold, while the \
                 rates say {k} are needed; with fewer the lag grows until KEDA adds them back \
                 (minReplicaCount {k} avoids the swing at this rate)",
                keda.replicas, keda.metric
            );
            if k > partitions {
                why.push_str(&format!(
                    "; only {partitions} can consume ({partitions} partitions): add partitions"
                ));
            }
            (Trust::Ktransform, why)
        }
        Some(k) => (
            Trust::Ktransform,
            format!(
                "{k} keep up with the produce rate; KEDA sizes for the backlog ({} records): \
                 its extra replicas drain it sooner and leave once it is gone",
                keda.metric
            ),
        ),
    };
    Comparison {
        trigger: *trigger,
        keda,
        ktransform,
        trust,
        why,
    }
}

#[cfg(test)]
mod tests;
