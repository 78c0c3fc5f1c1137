//! `--memory-budget` against a real broker: the in-flight half is divided among the partitions
//! an instance owns and divided again on every rebalance, as `/metrics` shows
//! (`ktransform_memory_budget_partition_bytes`), and a run under a small budget loses nothing;
//! the prefetch half gives an instance with more partitions than fetch turns turns to take,
//! through rebalances, losing and duplicating nothing. The flag's validation is unit-tested in
//! `config` (`errors_name_the_flag`).

mod common;

use std::net::SocketAddr;

use common::data::{self, Mix};
use common::http::{args_with_http, free_addr, get};
use common::{poll_until, prepare, run_in_process, stop, CAP};

const BUDGET: u64 = 8 << 20;
/// The in-flight half of the budget, divided among the partitions owned.
const IN_FLIGHT: u64 = BUDGET / 2;

/// A gauge's value in `/metrics`, once the endpoint answers.
async fn gauge(addr: SocketAddr, name: &str) -> Option<u64> {
    let (_, body) = get(addr, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn wait_share(addr: SocketAddr, which: &str, partitions: u64) {
    let want = IN_FLIGHT / partitions;
    poll_until(
        &format!("instance {which}: share {want} bytes (of {partitions} partitions)"),
        CAP,
        || async {
            gauge(addr, "ktransform_memory_budget_partition_bytes").await == Some(want)
                && gauge(addr, "ktransform_assigned_partitions").await == Some(partitions)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_budget_is_divided_again_on_every_rebalance_and_nothing_is_lost() {
    let test = prepare("memory-budget", 4, 20_000, Mix::Clean).await;
    let names = &test.names;
    let flags = ["--memory-budget", "8MiB"];
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a = run_in_process(&args_with_http(names, a_addr, &flags));
    wait_share(a_addr, "a", 4).await;

    // A second member: each owns 2 of the 4 partitions, so each partition's share doubles.
    let b = run_in_process(&args_with_http(names, b_addr, &flags));
    wait_share(a_addr, "a", 2).await;
    wait_share(b_addr, "b", 2).await;

    // It leaves: the first owns all 4 again, and the share is divided by 4 again.
    stop(b).await.expect("instance b stops cleanly");
    wait_share(a_addr, "a", 4).await;

    poll_until("every record in the destination", CAP, || async {
        common::topic_count_on(&common::brokers(), &names.destination).await >= 20_000
    })
    .await;
    stop(a).await.expect("instance a stops cleanly");
    test.outcome().await.assert_nothing_lost();
}

/// `--memory-budget 4MiB` gives 2 fetch turns (`ktransform_fetch_turns`) to an instance that owns
/// 12 partitions of a backlog: 10 wait, paused, and the turns go round
/// (`ktransform_fetch_turns_handed_on`). A second member joins while most of them wait, so
/// partitions paused in the first member are revoked from it; once both have drained, the
/// second leaves and they come back to the first, and more records are produced to every
/// partition. Every record arrives, in order per key, and under exactly-once only once.
///
/// Not shown here: a partition that comes back while librdkafka still has it paused from
/// before (a pause outlives an unassignment). With the resume at a worker's end removed, this
/// test still passed (2026-12-07): the partitions that came back were resumed on another path.
/// That resume, and the one a holder that reads nothing makes each time it looks, are kept on
/// librdkafka's source (`RD_KAFKA_TOPPAR_F_APP_PAUSE` is never cleared by an assignment).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_take_turns_to_fetch_through_rebalances_at_least_once() {
    take_turns("at-least-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_take_turns_to_fetch_through_rebalances_exactly_once() {
    take_turns("exactly-once").await;
}

async fn take_turns(guarantee: &str) {
    let n = common::size("KTRANSFORM_TEST_TURNS_RECORDS", 120_000);
    let names = common::Names::new(&format!("turns-{guarantee}"));
    names.create(12).await;
    let records = data::generate(n, common::KEYS, Mix::Clean, data::seed());
    let (first, later) = records.split_at(n * 3 / 4);
    common::produce(&names.source, first).await;
    let lag_is_zero = || async { common::group_lag(&names.group, &names.source).await == 0 };

    // A small in-flight share keeps each turn's reading slow enough for the group to change
    // while most partitions still wait for a turn.
    let flags = [
        "--memory-budget",
        "4MiB",
        "--guarantee",
        guarantee,
        "--batch-size",
        "200",
        "--max-in-flight",
        "400",
    ];
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let a = run_in_process(&args_with_http(&names, a_addr, &flags));
    poll_until(
        "instance a: 2 fetch turns, partitions waiting for one",
        CAP,
        || async {
            gauge(a_addr, "ktransform_fetch_turns").await == Some(2)
                && gauge(a_addr, "ktransform_fetch_turns_waiting_partitions")
                    .await
                    .is_some_and(|w| w > 0)
        },
    )
    .await;

    let b = run_in_process(&args_with_http(&names, b_addr, &flags));
    wait_assigned(b_addr, "b", 6).await;
    poll_until("the first records committed", CAP, lag_is_zero).await;
    stop(b).await.expect("instance b stops cleanly");
    wait_assigned(a_addr, "a", 12).await;

    common::produce(&names.source, later).await;
    poll_until("the later records committed", CAP, lag_is_zero).await;
    let handed_on = gauge(a_addr, "ktransform_fetch_turns_handed_on_total").await;
    stop(a).await.expect("instance a stops cleanly");
    let output = common::consume_all(&names.destination, n, common::IDLE).await;
    let outcome = common::Outcome {
        tally: data::tally(records.iter().map(|r| r.id), &output),
        lag: common::group_lag(&names.group, &names.source).await,
        order_violations: data::key_order_violations(&output),
    };
    println!("turns-{guarantee}: {outcome}, turns handed on by a: {handed_on:?}");
    // With 2 turns for 12 partitions of a backlog, most partitions got their first records
    // through a turn handed to them.
    assert!(
        handed_on.is_some_and(|h| h >= 10),
        "turns handed on: {handed_on:?}"
    );
    outcome.assert_nothing_lost();
    if guarantee == "exactly-once" {
        assert_eq!(outcome.tally.duplicates, 0, "duplicates under exactly-once");
    }
}

async fn wait_assigned(addr: SocketAddr, which: &str, partitions: u64) {
    poll_until(
        &format!("instance {which}: {partitions} partitions assigned"),
        CAP,
        || async { gauge(addr, "ktransform_assigned_partitions").await == Some(partitions) },
    )
    .await;
}
