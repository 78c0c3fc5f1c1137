//! Two instances in one group. They share the partitions, and when one stops gracefully the other
//! takes its partitions over from the committed offsets: nothing lost, nothing twice. Also when
//! the stop falls in the middle of a rebalance.
//!
//! Size: env `KTRANSFORM_TEST_GROUP_RECORDS` (default 200,000); data: env `KTRANSFORM_TEST_SEED`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::data::{self, Mix};
use common::{
    consume_all, describe_group, group_lag, poll_until, prepare, run_in_process, stop,
    wait_for_records, IdleMember, CAP, IDLE, THROTTLE,
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
