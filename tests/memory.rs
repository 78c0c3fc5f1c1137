//! `--memory-budget` against a real broker: the in-flight half is divided among the partitions
//! an instance owns and divided again on every rebalance, as `/metrics` shows
//! (`ktransform_memory_budget_partition_bytes`), and a run under a small budget loses nothing.
//! The flag's validation is unit-tested in `config` (`errors_name_the_flag`).

mod common;

use std::net::SocketAddr;

use common::data::Mix;
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
