use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};

use super::*;
use crate::partition::{Phase, Progress, Status};

const T: Duration = Duration::from_secs(30);

fn at(start: Instant, secs: u64) -> Instant {
    start + Duration::from_secs(secs)
}

/// A consuming worker started at `started`, last progress at `progress`, waiting on its queue.
fn seen(partition: i32, started: Instant, progress: Option<Instant>) -> Seen {
    Seen {
        partition,
        status: Status {
            phase: Phase::Consuming,
            in_flight: 0,
            at_end: false,
            progress: Progress {
                started,
                at: progress,
                read_to: progress.map(|_| 100),
                sending: false,
                waiting_turn: false,
            },
        },
        alive: true,
    }
}

fn asked(judge: &mut Judge, seen: &[Seen], now: Instant) -> Vec<i32> {
    let (ended, ask) = judge.look(seen, now);
    assert!(ended.is_empty(), "{ended:?}");
    ask.into_iter().map(|(p, _)| p).collect()
}

#[test]
fn a_partition_that_progresses_is_never_asked_about() {
    let t0 = Instant::now();
    let mut judge = Judge::new(T);
    for s in 0..10 {
        let now = at(t0, s * 20);
        assert!(asked(&mut judge, &[seen(0, t0, Some(now))], now).is_empty());
    }
}

#[test]
fn an_idle_partition_is_asked_about_once_per_timeout_and_never_stalled() {
    let t0 = Instant::now();
    let mut judge = Judge::new(T);
    let idle = [seen(0, t0, Some(t0))];
    assert!(asked(&mut judge, &idle, at(t0, 29)).is_empty());
    assert_eq!(asked(&mut judge, &idle, at(t0, 30)), [0]);
    assert_eq!(judge.judge(0, Some(0), at(t0, 30)), None);
    assert!(asked(&mut judge, &idle, at(t0, 45)).is_empty());
    assert_eq!(asked(&mut judge, &idle, at(t0, 60)), [0]);
    // An unknown lag (the leader did not answer) is no verdict either.
    assert_eq!(judge.judge(0, None, at(t0, 60)), None);
    assert!(asked(&mut judge, &idle, at(t0, 75)).is_empty());
}

#[test]
fn a_partition_waiting_on_its_destination_is_never_asked_about() {
    let t0 = Instant::now();
    let mut judge = Judge::new(T);
    let mut full = seen(0, t0, Some(t0));
    full.status.in_flight = 200;
    let mut sending = seen(1, t0, Some(t0));
    sending.status.progress.sending = true;
    assert!(asked(&mut judge, &[full, sending], at(t0, 600)).is_empty());
    // Unless its worker is gone (it panicked): then nothing will ever move it.
    sending.alive = false;
    assert_eq!(asked(&mut judge, &[full, sending], at(t0, 601)), [1]);
}

#[test]
fn a_draining_partition_is_not_judged() {
    let t0 = Instant::now();
    let mut judge = Judge::new(T);
    let mut draining = seen(0, t0, Some(t0));
    draining.status.phase = Phase::Draining;
    assert!(asked(&mut judge, &[draining], at(t0, 600)).is_empty());
}

#[test]
fn a_stall_is_healed_step_by_step_and_ends_with_progress() {
    let t0 = Instant::now();
    let mut judge = Judge::new(T);
    let stuck = [seen(0, t0, Some(t0))];
    assert_eq!(asked(&mut judge, &stuck, at(t0, 31)), [0]);
    assert_eq!(
        judge.judge(0, Some(500), at(t0, 31)),
        Some(Verdict::Stalled {
            partition: 0,
            behind: 500,
            quiet: Duration::from_secs(31)
        })
    );
    // The next heal is due a timeout after the last.
    assert!(asked(&mut judge, &stuck, at(t0, 60)).is_empty());
    assert_eq!(asked(&mut judge, &stuck, at(t0, 61)), [0]);
    assert_eq!(
        judge.judge(0, Some(500), at(t0, 61)),
        Some(Verdict::StillStalled {
            partition: 0,
            behind: 500,
            stalled_for: T,
            unhealed: false
        })
    );
    // The re-split's new worker has no progress of its own: that is no progress.
    let replaced = [seen(0, at(t0, 62), None)];
    assert!(asked(&mut judge, &replaced, at(t0, 80)).is_empty());
    assert_eq!(asked(&mut judge, &replaced, at(t0, 91)), [0]);
    assert_eq!(
        judge.judge(0, Some(600), at(t0, 91)),
        Some(Verdict::StillStalled {
            partition: 0,
            behind: 600,
            stalled_for: 2 * T,
            unhealed: true
        })
    );
    let (ended, ask) = judge.look(&[seen(0, at(t0, 62), Some(at(t0, 95)))], at(t0, 96));
    assert!(ask.is_empty());
    assert_eq!(
        ended,
        [Verdict::Ended {
            partition: 0,
            stalled_for: Duration::from_secs(65),
            why: Ended::Progress
        }]
    );
}

#[test]
fn a_stall_ends_when_nothing_is_left_or_the_partition_leaves() {
    let t0 = Instant::now();
    let mut judge = Judge::new(T);
    let stuck = [seen(0, t0, None), seen(1, t0, None)];
    assert_eq!(asked(&mut judge, &stuck, at(t0, 30)), [0, 1]);
    assert!(matches!(
        judge.judge(0, Some(1), at(t0, 30)),
        Some(Verdict::Stalled { .. })
    ));
    assert!(matches!(
        judge.judge(1, Some(1), at(t0, 30)),
        Some(Verdict::Stalled { .. })
    ));
    assert_eq!(asked(&mut judge, &stuck, at(t0, 60)), [0, 1]);
    assert_eq!(
        judge.judge(0, Some(0), at(t0, 60)),
        Some(Verdict::Ended {
            partition: 0,
            stalled_for: T,
            why: Ended::Idle
        })
    );
    let (ended, _) = judge.look(&stuck[..1], at(t0, 61));
    assert_eq!(
        ended,
        [Verdict::Ended {
            partition: 1,
            stalled_for: Duration::from_secs(31),
            why: Ended::Left
        }]
    );
}

/// Offsets as a broker and librdkafka would report them.
#[derive(Default)]
struct Offsets {
    ends: Vec<(i32, Option<i64>)>,
    starts: Vec<(i32, Option<i64>)>,
    positions: Vec<(i32, Option<i64>)>,
    committed: Vec<(i32, Option<i64>)>,
    unreachable: bool,
}

impl Member for Offsets {
    fn store_offset(&self, _: &str, _: i32, _: i64) -> KafkaResult<()> {
        unimplemented!()
    }
    fn fetch_watermarks(&self, _: &str, _: i32, _: Duration) -> KafkaResult<(i64, i64)> {
        unimplemented!()
    }
    fn committed_offset(&self, _: &str, _: i32, _: Duration) -> KafkaResult<Option<i64>> {
        unimplemented!()
    }
    fn committed_offsets_of(
        &self,
        _: &str,
        partitions: &[i32],
        _: Duration,
    ) -> KafkaResult<Vec<(i32, Option<i64>)>> {
        Ok(pick(&self.committed, partitions))
    }
    fn list_offsets(
        &self,
        _: &str,
        partitions: &[i32],
        at: Offset,
        _: Duration,
    ) -> KafkaResult<Vec<(i32, Option<i64>)>> {
        if self.unreachable {
            return Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
            ));
        }
        let source = if at == Offset::End {
            &self.ends
        } else {
            &self.starts
        };
        Ok(pick(source, partitions))
    }
    fn positions(&self, _: &str) -> KafkaResult<Vec<(i32, Option<i64>)>> {
        Ok(self.positions.clone())
    }
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        None
    }
    fn commit_sync(&self, _: &TopicPartitionList) -> KafkaResult<()> {
        unimplemented!()
    }
    fn seek(&self, _: &str, _: i32, _: i64, _: Duration) -> KafkaResult<()> {
        unimplemented!()
    }
}

fn pick(offsets: &[(i32, Option<i64>)], partitions: &[i32]) -> Vec<(i32, Option<i64>)> {
    offsets
        .iter()
        .filter(|(p, _)| partitions.contains(p))
        .copied()
        .collect()
}

#[test]
fn behind_is_the_end_minus_the_later_of_the_read_offset_and_the_position() {
    let member = Offsets {
        ends: vec![(0, Some(100)), (1, Some(100)), (2, Some(100))],
        // Partition 1's position moved past a transaction marker the worker never saw.
        positions: vec![(0, Some(40)), (1, Some(100)), (2, None)],
        ..Offsets::default()
    };
    let asked = [(0, Some(50)), (1, Some(99)), (2, Some(70))];
    assert_eq!(
        behind(&member, "t", &asked, Reset::Earliest),
        [(0, Some(50)), (1, Some(0)), (2, Some(30))]
    );
}

#[test]
fn a_worker_that_read_nothing_starts_at_the_committed_offset_or_the_reset() {
    let member = Offsets {
        ends: vec![(0, Some(100)), (1, Some(100))],
        starts: vec![(0, Some(10)), (1, Some(10))],
        committed: vec![(0, Some(80)), (1, None)],
        ..Offsets::default()
    };
    let asked = [(0, None), (1, None)];
    assert_eq!(
        behind(&member, "t", &asked, Reset::Earliest),
        [(0, Some(20)), (1, Some(90))]
    );
    // From the end (or an error) on reset: a worker that read nothing cannot be judged.
    assert_eq!(
        behind(&member, "t", &asked, Reset::Other),
        [(0, Some(20)), (1, None)]
    );
}

#[test]
fn an_unreachable_leader_tells_nothing() {
    let member = Offsets {
        unreachable: true,
        positions: vec![(0, Some(40))],
        ..Offsets::default()
    };
    assert_eq!(
        behind(&member, "t", &[(0, Some(50))], Reset::Earliest),
        [(0, None)]
    );
}

#[test]
fn rounds_are_a_quarter_of_the_timeout_within_bounds() {
    assert_eq!(
        round_interval(Duration::from_secs(1)),
        Duration::from_millis(250)
    );
    assert_eq!(
        round_interval(Duration::from_secs(8)),
        Duration::from_secs(2)
    );
    assert_eq!(
        round_interval(Duration::from_secs(30)),
        Duration::from_secs(5)
    );
}

#[test]
fn a_deafened_partition_lets_its_first_worker_read_one_batch_and_later_ones_none() {
    let topic = "kt-stall-unit-hook";
    assert_eq!(testing::allowance(topic, 3), None);
    let guard = testing::deafen(topic, 3);
    assert_eq!(testing::allowance(topic, 2), None);
    assert_eq!(testing::allowance(topic, 3), Some(1));
    assert_eq!(testing::allowance(topic, 3), Some(0));
    drop(guard);
    assert_eq!(testing::allowance(topic, 3), None);
}
