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

/// Partitions are assigned at concrete offsets, looked up before the assignment
/// (`consumer/start.rs`), so librdkafka never looks `auto.offset.reset` up itself: when a fetch
/// turn's pause or resume lands while its lookup is in flight, librdkafka 2.12.1 leaves a timer
/// behind that later moves the partition to `auto.offset.reset` again under its worker (back
/// under `earliest`, forward past unread records under `latest`). Against the broker: a
/// partition with a committed offset starts there, the others at the earliest or latest offset
/// as the policy says, and under a policy it cannot resolve (`error`) they are left to
/// librdkafka.
///
/// The defect itself shows only under load, and not in the test harness's runs tried here: with
/// `scripts/repro-start-rewind.sh` (128 partitions, the default 16 turns, a stream produced
/// from the start) the tree before the fix logged "rewound under its worker" in 7 first starts
/// of 14, and librdkafka's debug log showed "timed offset query ... in state active"; with the
/// fix, in none of 9, and librdkafka made no lookup of a logical offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_start_at_offsets_looked_up_before_the_assignment() {
    use ktransform::consumer::start::{resolve, StartAt};
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    use std::time::Duration;

    let names = common::Names::new("start-offsets");
    names.create(4).await;
    let records = data::generate(4_000, common::KEYS, Mix::Clean, data::seed());
    let mut ends = [0i64; 4];
    for (p, offset) in common::produce(&names.source, &records).await {
        ends[p as usize] = ends[p as usize].max(offset + 1);
    }
    assert!(
        ends.iter().all(|e| *e > 7),
        "every partition holds records: {ends:?}"
    );

    let (bootstrap, group, topic) = (common::brokers(), names.group.clone(), names.source.clone());
    let resolved = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = common::config_on(&bootstrap, &[("group.id", &group)])
            .create()
            .expect("consumer");
        // The group committed partition 0 at 7 and nothing else.
        let mut commit = TopicPartitionList::new();
        commit
            .add_partition_offset(&topic, 0, Offset::Offset(7))
            .expect("offset");
        consumer.commit(&commit, CommitMode::Sync).expect("commit");
        [StartAt::Earliest, StartAt::Latest, StartAt::Other].map(|start_at| {
            let mut tpl = TopicPartitionList::new();
            for p in 0..4 {
                tpl.add_partition(&topic, p);
            }
            let set =
                resolve(&consumer, &mut tpl, start_at, Duration::from_secs(10)).expect("looked up");
            let offsets: Vec<Offset> = (0..4)
                .map(|p| tpl.find_partition(&topic, p).expect("listed").offset())
                .collect();
            (set, offsets)
        })
    })
    .await
    .expect("lookup task");

    let at = |o: i64| Offset::Offset(o);
    let [earliest, latest, other] = resolved;
    assert_eq!(earliest, (4, vec![at(7), at(0), at(0), at(0)]), "earliest");
    assert_eq!(
        latest,
        (4, vec![at(7), at(ends[1]), at(ends[2]), at(ends[3])]),
        "latest"
    );
    assert_eq!(
        other,
        (
            1,
            vec![at(7), Offset::Invalid, Offset::Invalid, Offset::Invalid]
        ),
        "error: left to librdkafka"
    );
}

async fn wait_assigned(addr: SocketAddr, which: &str, partitions: u64) {
    poll_until(
        &format!("instance {which}: {partitions} partitions assigned"),
        CAP,
        || async { gauge(addr, "ktransform_assigned_partitions").await == Some(partitions) },
    )
    .await;
}
