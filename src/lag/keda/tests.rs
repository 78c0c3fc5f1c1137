//! KEDA's formula on worked examples, each computed by hand from `kafka_scaler.go`'s rules.

use std::time::Instant;

use super::*;

fn trigger(lag_threshold: u64) -> Trigger {
    Trigger {
        lag_threshold,
        offset_reset_policy: OffsetResetPolicy::Earliest,
        allow_idle_consumers: false,
    }
}

/// Partitions with these (committed, end) offsets, log start 0.
fn partitions(offsets: &[(Option<i64>, i64)]) -> Vec<PartitionOffsets> {
    offsets
        .iter()
        .enumerate()
        .map(|(i, &(committed, end))| PartitionOffsets {
            partition: i as i32,
            committed,
            low: 0,
            end,
        })
        .collect()
}

/// `n` partitions, each `lag` behind an end of 10,000.
fn behind(n: usize, lag: i64) -> Vec<PartitionOffsets> {
    partitions(&vec![(Some(10_000 - lag), 10_000); n])
}

#[test]
fn desired_is_the_summed_lag_over_the_threshold_rounded_up() {
    // 3 partitions, lags 120 + 80 + 50 = 250; threshold 100: ceil(2.5) = 3.
    let p = partitions(&[(Some(880), 1000), (Some(920), 1000), (Some(950), 1000)]);
    let e = estimate(&trigger(100), &p);
    assert_eq!((e.total_lag, e.metric, e.capped), (250, 250, false));
    assert_eq!(e.replicas, 3);
    assert!(e.active);
    // Threshold 1000: ceil(0.25) = 1.
    assert_eq!(estimate(&trigger(1000), &p).replicas, 1);
}

#[test]
fn capped_at_partitions_times_threshold_unless_idle_consumers_are_allowed() {
    // 12 partitions × 500 = 6000; threshold 100: 6000 / 100 = 60 > 12, metric 12 × 100.
    let p = behind(12, 500);
    let e = estimate(&trigger(100), &p);
    assert_eq!((e.total_lag, e.metric, e.capped), (6000, 1200, true));
    assert_eq!(e.replicas, 12);
    let idle = Trigger {
        allow_idle_consumers: true,
        ..trigger(100)
    };
    let e = estimate(&idle, &p);
    assert_eq!((e.metric, e.capped, e.replicas), (6000, false, 60));
}

#[test]
fn the_cap_uses_integer_division_so_one_more_than_the_partitions_gets_through() {
    // 12 partitions, lag 1299 in all: 1299 / 100 = 12 (truncated), not > 12: uncapped, and
    // ceil(12.99) = 13 replicas for 12 partitions. maxReplicaCount = partitions stops it.
    let mut p = behind(12, 108); // 1296
    p[0].committed = Some(p[0].committed.unwrap() - 3); // 1299
    let e = estimate(&trigger(100), &p);
    assert_eq!((e.total_lag, e.capped, e.replicas), (1299, false, 13));
    // 1300 / 100 = 13 > 12: capped to 1200, 12 replicas.
    p[0].committed = Some(p[0].committed.unwrap() - 1);
    let e = estimate(&trigger(100), &p);
    assert_eq!((e.total_lag, e.metric, e.replicas), (1300, 1200, 12));
}

#[test]
fn transaction_markers_leave_a_lag_of_one_per_partition() {
    // An exactly-once input topic: every partition ends on a commit marker the group is never
    // handed, so it commits one below the log end. 12 partitions: lag 12, active.
    let p = behind(12, 1);
    let e = estimate(&trigger(1000), &p);
    assert_eq!((e.total_lag, e.metric), (12, 12));
    assert!(e.active, "KEDA never sees this group as idle");
    assert_eq!(e.replicas, 1, "so it keeps one replica, never zero");
    // With a threshold below the partition count the markers alone ask for more: ceil(12/5).
    assert_eq!(estimate(&trigger(5), &p).replicas, 3);
}

#[test]
fn a_partition_without_a_committed_offset_follows_the_reset_policy() {
    // Partition 0 committed at 900 of 1000; partition 1 never committed, log 200..1000
    // (retention deleted the first 200).
    let mut p = partitions(&[(Some(900), 1000), (None, 1000)]);
    p[1].low = 200;
    assert_eq!(partition_lag(&p[1], OffsetResetPolicy::Earliest), 800);
    assert_eq!(partition_lag(&p[1], OffsetResetPolicy::Latest), 1);
    let e = estimate(&trigger(100), &p);
    assert_eq!((e.total_lag, e.replicas), (900, 2)); // capped at 2 partitions × 100
    assert!(e.capped);
    let latest = Trigger {
        offset_reset_policy: OffsetResetPolicy::Latest,
        ..trigger(100)
    };
    let e = estimate(&latest, &p);
    assert_eq!((e.total_lag, e.capped, e.replicas), (101, false, 2));
    // Never committed anywhere, nothing retained: no lag under `earliest`, inactive.
    let empty = partitions(&[(None, 0), (None, 0)]);
    let e = estimate(&trigger(100), &empty);
    assert_eq!((e.total_lag, e.active, e.replicas), (0, false, 0));
    // ...but 1 per partition under `latest`: active, one replica.
    let e = estimate(&latest, &empty);
    assert_eq!((e.total_lag, e.active, e.replicas), (2, true, 1));
}

#[test]
fn no_lag_is_inactive_and_a_committed_offset_past_the_end_is_not_clamped() {
    let e = estimate(&trigger(10), &behind(4, 0));
    assert_eq!((e.total_lag, e.active, e.replicas), (0, false, 0));
    // A committed offset past the log end (the topic was recreated) counts negative, as in
    // KEDA, and pulls the sum down.
    let p = partitions(&[(Some(150), 100), (Some(0), 70)]);
    let e = estimate(&trigger(10), &p);
    assert_eq!((e.total_lag, e.replicas), (20, 2));
}

fn sample(partitions: Vec<PartitionOffsets>, members: usize) -> Sample {
    Sample {
        at: Instant::now(),
        partitions,
        members,
        protocol: None,
    }
}

fn report(verdict: Verdict, produce_rate: f64, instances_needed: Option<usize>) -> Report {
    Report {
        produce_rate,
        consume_rate: 0.0,
        verdict,
        instances_needed,
    }
}

#[test]
fn trust_ktransform_when_the_lag_is_only_markers() {
    let s = sample(behind(12, 1), 2);
    let c = compare(&trigger(1000), &s, &report(Verdict::KeepingUp, 0.0, None));
    assert_eq!(c.keda.replicas, 1);
    assert_eq!(c.ktransform, Some(0), "nothing arrives, nothing to read");
    assert_eq!(c.trust, Trust::Ktransform);
    assert!(c.why.contains("commit markers"), "{}", c.why);
}

#[test]
fn trust_ktransform_when_falling_behind_below_the_threshold() {
    // 4 partitions, lag 400 growing; threshold 1000: KEDA says 1, the rates say 3.
    let s = sample(behind(4, 100), 1);
    let falling = Verdict::FallingBehind { per_sec: 500.0 };
    let c = compare(
        &trigger(1000),
        &s,
        &report(falling.clone(), 1500.0, Some(3)),
    );
    assert_eq!((c.keda.replicas, c.ktransform), (1, Some(3)));
    assert_eq!(c.trust, Trust::Ktransform);
    assert!(c.why.contains("KEDA asks for 1 only"), "{}", c.why);
    // More than the partitions: say so.
    let c = compare(&trigger(1000), &s, &report(falling, 1500.0, Some(6)));
    assert!(c.why.contains("add partitions"), "{}", c.why);
}

#[test]
fn keda_sizes_for_the_backlog_ktransform_for_the_rate() {
    // A backlog of 12 × 5000 draining: KEDA asks for all 12 partitions' worth, 2 keep up.
    let s = sample(behind(12, 5000), 2);
    let eta = std::time::Duration::from_secs(60);
    let c = compare(
        &trigger(1000),
        &s,
        &report(Verdict::CatchingUp { eta }, 1000.0, Some(2)),
    );
    assert_eq!((c.keda.replicas, c.ktransform), (12, Some(2)));
    assert_eq!(c.trust, Trust::Ktransform);
    assert!(c.why.contains("backlog"), "{}", c.why);
}

#[test]
fn they_agree_or_only_keda_can_tell() {
    let s = sample(behind(4, 500), 2);
    let falling = Verdict::FallingBehind { per_sec: 100.0 };
    let c = compare(&trigger(1000), &s, &report(falling.clone(), 900.0, Some(2)));
    assert_eq!((c.keda.replicas, c.trust), (2, Trust::Either));
    // Nothing arrives, nothing to read: both say zero.
    let s = sample(behind(4, 0), 1);
    let c = compare(&trigger(1000), &s, &report(Verdict::CaughtUp, 0.0, None));
    assert_eq!(
        (c.keda.replicas, c.ktransform, c.trust),
        (0, Some(0), Trust::Either)
    );
    // Caught up while records arrive: the members keep up; KEDA sees nothing to do.
    let s = sample(behind(4, 0), 3);
    let c = compare(&trigger(1000), &s, &report(Verdict::CaughtUp, 900.0, None));
    assert_eq!((c.keda.replicas, c.ktransform), (0, Some(3)));
    assert_eq!(c.trust, Trust::Ktransform);
    assert!(c.why.contains("minReplicaCount"), "{}", c.why);
    // No member: no measured rate.
    let s = sample(behind(4, 500), 0);
    let c = compare(&trigger(1000), &s, &report(falling, 900.0, None));
    assert_eq!((c.ktransform, c.trust), (None, Trust::Keda));
}
