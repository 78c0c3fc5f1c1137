//! Two instances in one group. They share the partitions, and when one stops gracefully the other
//! takes its partitions over from the committed offsets: nothing lost, nothing twice. Also when
//! the stop falls in the middle of a rebalance, and when that rebalance follows the stop of a
//! member that held no partition.
//!
//! Size: env `KTRANSFORM_TEST_GROUP_RECORDS` (default 200,000); data: env `KTRANSFORM_TEST_SEED`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::data::{self, Mix};
use common::{
    consume_all, describe_group, group_lag, poll_until, prepare, produce_to, run_in_process, stop,
    wait_for_records, Binary, IdleMember, CAP, IDLE, THROTTLE,
};
use ktransform::{Error, Summary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_and_hand_over() {
    let n = common::size("KTRANSFORM_TEST_GROUP_RECORDS", 200_000);
    let test = prepare("group", 6, n, Mix::Clean).await;
    let names = &test.names;

    let a = run_in_process(&names.args(THROTTLE));
    let b = run_in_process(&names.args(THROTTLE));
    poll_until("both instances holding partitions", CAP, || async {
        let group = describe_group(&names.group).await;
        group.state == "Stable"
            && group.assigned.len() == 2
            && group.assigned.iter().all(|&n| n > 0)
    })
    .await;
    let at_stop = wait_for_records(&names.destination, (n / 10) as i64).await;
    let a = stop(a).await.expect("instance A stops with Ok");
    poll_until("group lag 0 after A left", CAP, || async {
        group_lag(&names.group, &names.source).await == 0
    })
    .await;
    let b = stop(b).await.expect("instance B stops with Ok");

    let outcome = test.outcome().await;
    let (a, b) = (a.stats, b.stats);
    println!(
        "group seed={} {outcome} destination_at_stop_a={at_stop} a_consumed={} a_rebalances={} \
         a_commit_failures={} b_consumed={} b_rebalances={}",
        test.seed, a.consumed, a.rebalances, a.commit_failures, b.consumed, b.rebalances
    );
    outcome.assert_nothing_lost();
    assert_eq!(
        a.replayable + b.replayable,
        0,
        "records abandoned at a deadline"
    );
    // A graceful stop drains and commits before the partitions move: nothing is replayed.
    assert_eq!(
        outcome.tally.duplicates, 0,
        "duplicates after a graceful handover"
    );
}

/// Under `--group-protocol consumer` (KIP-848) the broker assigns, and every Assign and Revoke
/// names only the partitions that move. Two members split the partitions, a third joins and
/// takes its share from both, the first leaves gracefully: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_protocol_members_join_and_leave() {
    let n = common::size("KTRANSFORM_TEST_GROUP_RECORDS", 200_000);
    let test = prepare("group-consumer-protocol", 6, n, Mix::Clean).await;
    let names = &test.names;
    let args = names.args(&[THROTTLE, &["--group-protocol", "consumer"]].concat());
    let members_hold_all = |members: usize| {
        let group = &names.group;
        move || async move {
            let g = describe_group(group).await;
            g.protocol == "consumer"
                && g.assigned.len() == members
                && g.assigned.iter().all(|&n| n > 0)
                && g.assigned.iter().sum::<usize>() == 6
        }
    };

    let a = run_in_process(&args);
    let b = run_in_process(&args);
    poll_until(
        "two members sharing the partitions",
        CAP,
        members_hold_all(2),
    )
    .await;
    wait_for_records(&names.destination, (n / 10) as i64).await;
    let c = run_in_process(&args);
    poll_until("three members sharing them", CAP, members_hold_all(3)).await;
    let a = stop(a).await.expect("member A stops with Ok");
    poll_until(
        "the two others holding every partition",
        CAP,
        members_hold_all(2),
    )
    .await;
    poll_until("group lag 0", CAP, || async {
        group_lag(&names.group, &names.source).await == 0
    })
    .await;
    let (b, c) = (stop(b).await, stop(c).await);
    let (b, c) = (b.expect("B stops with Ok"), c.expect("C stops with Ok"));

    let outcome = test.outcome().await;
    let stats = [a.stats, b.stats, c.stats];
    println!(
        "group-consumer-protocol seed={} {outcome} consumed={:?} rebalances={:?}",
        test.seed,
        stats.map(|s| s.consumed),
        stats.map(|s| s.rebalances)
    );
    outcome.assert_nothing_lost();
    assert_eq!(
        stats.iter().map(|s| s.replayable).sum::<u64>(),
        0,
        "records abandoned at a deadline"
    );
    assert_eq!(
        outcome.tally.duplicates, 0,
        "duplicates after graceful hand-overs"
    );
    assert_eq!(
        stats.iter().map(|s| s.consumed).sum::<u64>() as usize,
        n,
        "records consumed twice"
    );
}

/// A stops in the middle of a rebalance that ends within its shutdown deadline: the stop must
/// still commit everything A produced, or the next owner replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_rebalance_commits_everything() {
    // The second round ends at most 8 s after the stop, within the default 10 s deadline.
    let (result, uncommitted) =
        stop_in_second_round("rebalance", Duration::from_secs(8), &[]).await;
    let a = result.expect("A stops with Ok");
    assert_eq!(a.stats.commit_failures, 0, "A's final commit failed");
    assert_eq!(
        uncommitted, 0,
        "records produced by A but not committed (they will be replayed)"
    );
}

/// A stops in the middle of a rebalance that outlasts its shutdown deadline: its final commit
/// cannot succeed in time, so the run must not report success (exit 0 means "everything
/// committed"); an error such as the shutdown timeout (exit 3) is the honest outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_overlong_rebalance_does_not_claim_success() {
    let deadline = ["--shutdown-timeout", "4s"];
    let (result, uncommitted) =
        stop_in_second_round("long-rebalance", Duration::from_secs(25), &deadline).await;
    if let Ok(a) = result {
        assert_eq!(
            a.stats.commit_failures, 0,
            "Ok although A's final commit failed"
        );
        assert_eq!(
            uncommitted, 0,
            "Ok although records produced by A are not committed"
        );
    }
}

/// More members than partitions: C holds none and stops gracefully; then a member joins, and A
/// stops (SIGTERM) while the group rebalances for it. C must leave the group when it stops: if
/// it stays a member until its session times out, the rebalance waits for it, A's final commit
/// waits behind A's pending JoinGroup (the broker answers a connection's requests in order), A
/// misses its deadline (exit 3), and B replays everything A did since the rebalance began.
/// A graceful hand-off under cooperative-sticky, at-least-once, replays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_member_leaves_so_a_stop_during_the_next_rebalance_replays_nothing() {
    // Half the size: B alone drains what is left after the stops.
    let n = common::size("KTRANSFORM_TEST_GROUP_RECORDS", 200_000) / 2;
    let test = prepare("group-idle-leaves", 2, n, Mix::Clean).await;
    let names = &test.names;
    let args = names.args(THROTTLE);

    // Processes, not in-process runs: a process that misses its deadline exits, and what it
    // did not commit is replayed.
    let a = Binary::run(&args);
    wait_for_records(&names.destination, 1_000).await;
    let b = Binary::run(&args);
    poll_until("A and B holding a partition each", CAP, || async {
        let group = describe_group(&names.group).await;
        group.state == "Stable" && group.assigned == [1, 1]
    })
    .await;
    let c = Binary::run(&args);
    poll_until("C in the group without a partition", CAP, || async {
        let group = describe_group(&names.group).await;
        group.state == "Stable" && group.assigned.len() == 3
    })
    .await;
    c.terminate();
    let c = c.wait(CAP).await;
    assert_eq!(c.code, Some(0), "C's exit; stderr:\n{}", c.stderr);
    poll_until("the group settled after C's stop", CAP, || async {
        describe_group(&names.group).await.state == "Stable"
    })
    .await;
    let joiner = IdleMember::join(&names.group, &names.source, Duration::from_secs(3));
    poll_until("the joiner's rebalance to start", CAP, || async {
        describe_group(&names.group).await.state == "PreparingRebalance"
    })
    .await;
    // A learns of the rebalance at its next heartbeat (librdkafka's default interval: 3 s) and
    // rejoins: its JoinGroup is pending when it stops.
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.terminate();
    let a = a.wait(CAP).await;
    // The joiner never commits: once it leaves, what it was given goes to B.
    drop(joiner);
    poll_until("group lag 0 after A left", CAP, || async {
        group_lag(&names.group, &names.source).await == 0
    })
    .await;
    b.terminate();
    let b = b.wait(CAP).await;

    let report = common::faults::audit_on(&common::brokers(), names, "at-least-once").await;
    println!(
        "group-idle-leaves seed={} duplicates={} lost={} exits a={:?} b={:?}",
        test.seed, report.counts.duplicates, report.counts.lost, a.code, b.code
    );
    common::faults::assert_passed("group-idle-leaves", &report);
    assert_eq!(report.counts.lost, 0, "records lost");
    assert_eq!(
        report.counts.duplicates, 0,
        "records replayed after a graceful hand-off"
    );
    assert_eq!(a.code, Some(0), "A's exit; stderr:\n{}", a.stderr);
    assert_eq!(b.code, Some(0), "B's exit; stderr:\n{}", b.stderr);
}

/// Runs A alone, lets an idle member join, and stops A in the second round of the cooperative
/// rebalance that follows: A has given up the partitions that move and rejoined, and the group
/// waits for the idle member, which notices at its next heartbeat (`heartbeat` after the first
/// round ended). Returns A's result and how many records A produced whose source offset is not
/// below its partition's committed offset.
async fn stop_in_second_round(
    name: &str,
    heartbeat: Duration,
    extra: &[&str],
) -> (Result<Summary, Error>, usize) {
    let n = common::size("KTRANSFORM_TEST_GROUP_RECORDS", 200_000);
    let test = prepare(&format!("group-{name}"), 6, n, Mix::Clean).await;
    let names = &test.names;

    let a = run_in_process(&names.args(&[THROTTLE, extra].concat()));
    wait_for_records(&names.destination, (n / 20) as i64).await;
    let member = IdleMember::join(&names.group, &names.source, heartbeat);
    poll_until(
        "the idle member's join to start a rebalance",
        CAP,
        || async { describe_group(&names.group).await.state == "PreparingRebalance" },
    )
    .await;
    // The first round ends at A's next heartbeat (librdkafka's default interval: 3 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let state = describe_group(&names.group).await.state;
    assert_eq!(
        state, "PreparingRebalance",
        "the second round of the rebalance should be under way"
    );
    let result = stop(a).await;
    drop(member);

    let produced = result.as_ref().map_or(0, |a| a.stats.produced as usize);
    let output = consume_all(&names.destination, produced, IDLE).await;
    let committed = common::committed(&names.group, &names.source).await;
    let position: HashMap<u64, (i32, i64)> = test
        .records
        .iter()
        .map(|r| r.id)
        .zip(test.positions.iter().copied())
        .collect();
    let uncommitted = output
        .iter()
        .filter(|r| {
            let (partition, offset) = position[&data::id_of(r)];
            !matches!(committed[&partition], Some(c) if offset < c)
        })
        .count();
    let stats = result.as_ref().map(|a| a.stats);
    println!(
        "group-{name} seed={} output={} uncommitted={uncommitted} committed={committed:?} result={:?}",
        test.seed,
        output.len(),
        stats.map(|s| (s.produced, s.commits, s.commit_failures, s.rebalances)).map_err(|e| e.to_string())
    );
    (result, uncommitted)
}

/// `--until-end` while the group changes: partitions 1 and 2 reach their end early, partition 0
/// is still being worked through when a member joins the group (subscribed to another topic, so
/// it takes none of these partitions) and later leaves. Each join and leave pauses and resumes
/// the partitions the instance keeps (librdkafka #4844: a batch read that returned the
/// end-of-partition event used to leave their position one past the end, and the resume then
/// rewound them to offset 0). Nothing may be consumed twice, the audit must pass under the
/// guarantee, and the group's committed offsets must never move backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_end_through_joins_and_leaves_exactly_once() {
    until_end_through_joins_and_leaves("exactly-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_end_through_joins_and_leaves_at_least_once() {
    until_end_through_joins_and_leaves("at-least-once").await;
}

async fn until_end_through_joins_and_leaves(guarantee: &str) {
    let long = common::size("KTRANSFORM_TEST_UNTIL_END_RECORDS", 20_000);
    let short = 50;
    let names = common::Names::new(&format!("until-end-{guarantee}"));
    names.create(3).await;
    let elsewhere = format!("{}.elsewhere", names.source);
    common::create_topic(&elsewhere, 1).await;
    let seed = data::seed();
    let all = data::generate(long + 2 * short, common::KEYS, Mix::Clean, seed);
    // Keys apart per partition, so that per-key order is per-partition order.
    let part = |p: i32, range: std::ops::Range<usize>| -> Vec<data::TestRecord> {
        all[range]
            .iter()
            .cloned()
            .map(|mut r| {
                r.key = format!("p{p}-{}", String::from_utf8_lossy(&r.key)).into_bytes();
                r
            })
            .collect()
    };
    produce_to(&names.source, 1, &part(1, 0..short)).await;
    produce_to(&names.source, 2, &part(2, short..2 * short)).await;
    produce_to(&names.source, 0, &part(0, 2 * short..all.len())).await;

    // Slow enough that partition 0 is far from its end while the group changes twice.
    let flags = [
        "--until-end",
        "--guarantee",
        guarantee,
        "--batch-size",
        "10",
        "--max-in-flight",
        "10",
    ];
    let (handle, _stop) = run_in_process(&names.args(&flags));
    let history = CommittedHistory::watch(&names.group, &names.source);
    poll_until("partitions 1 and 2 committed at their end", CAP, || async {
        let c = common::committed(&names.group, &names.source).await;
        c.get(&1) == Some(&Some(short as i64)) && c.get(&2) == Some(&Some(short as i64))
    })
    .await;
    let joiner = IdleMember::join(&names.group, &elsewhere, Duration::from_millis(500));
    let joined = std::time::Instant::now();
    loop {
        let group = describe_group(&names.group).await;
        if (group.state == "Stable" && group.assigned.len() == 2) || handle.is_finished() {
            break;
        }
        assert!(joined.elapsed() < CAP, "the joiner never joined the group");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(joiner);
    // Under exactly-once, a transaction commit that races a rebalance is refused
    // (ILLEGAL_GENERATION): the transaction is aborted, the partitions rewind to their
    // committed offsets and the run goes on (issue 16). It must not stop.
    let summary = common::finish(handle)
        .await
        .unwrap_or_else(|e| panic!("the --until-end run failed: {e}"));
    let history = history.stop().await;

    let report = common::faults::audit_on(&common::brokers(), &names, guarantee).await;
    println!(
        "until-end {guarantee} seed={seed} consumed={} produced={} rebalances={} aborts={} \
         rewinds={} duplicates={} lost={} committed_samples={}",
        summary.stats.consumed,
        summary.stats.produced,
        summary.stats.rebalances,
        summary.stats.transactions_aborted,
        summary.stats.transaction_rewinds,
        report.counts.duplicates,
        report.counts.lost,
        history.samples
    );
    common::faults::assert_passed(&format!("until-end {guarantee}"), &report);
    assert_eq!(report.counts.lost, 0, "records lost");
    assert_eq!(report.counts.duplicates, 0, "records delivered twice");
    assert!(
        summary.stats.rebalances >= 2,
        "the join and the leave should each have been a rebalance for the instance"
    );
    // An aborted transaction's records are read again after the rewind.
    if summary.stats.transaction_rewinds == 0 {
        assert_eq!(
            summary.stats.consumed as usize,
            all.len(),
            "records consumed more than once (a partition was rewound)"
        );
    }
    assert_eq!(summary.stats.offset_resets, 0, "out-of-range offset resets");
    assert_eq!(summary.stats.rewound, 0, "records handed out twice");
    assert!(
        history.backwards.is_empty(),
        "committed offsets moved backwards: {:?}",
        history.backwards
    );
    let end = common::committed(&names.group, &names.source).await;
    let expected: HashMap<i32, Option<i64>> = [
        (0, Some(long as i64)),
        (1, Some(short as i64)),
        (2, Some(short as i64)),
    ]
    .into();
    // Exactly-once commits the offset after the last record; the transaction markers of the
    // source (none here: it was written without transactions) would not count.
    assert_eq!(end, expected, "committed offsets at the end");
}

/// The group's committed offsets, sampled every 100 ms until stopped; every step back is kept.
struct CommittedHistory {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Watched>,
}

struct Watched {
    samples: usize,
    /// (partition, before, after) for each sample lower than the one before it.
    backwards: Vec<(i32, i64, i64)>,
}

impl CommittedHistory {
    fn watch(group: &str, topic: &str) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let (group, topic) = (group.to_string(), topic.to_string());
        let task = tokio::spawn(async move {
            let mut last: HashMap<i32, i64> = HashMap::new();
            let mut watched = Watched {
                samples: 0,
                backwards: Vec::new(),
            };
            loop {
                for (p, offset) in common::committed(&group, &topic).await {
                    let Some(offset) = offset else { continue };
                    if let Some(&before) = last.get(&p) {
                        if offset < before {
                            watched.backwards.push((p, before, offset));
                        }
                    }
                    last.insert(p, offset);
                }
                watched.samples += 1;
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            watched
        });
        CommittedHistory { stop, task }
    }

    async fn stop(self) -> Watched {
        let _ = self.stop.send(());
        self.task.await.expect("the committed-offsets watcher")
    }
}
