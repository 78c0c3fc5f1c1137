//! Fault: the binary SIGKILLed at random moments mid-stream and restarted each time, then
//! drained with `--until-end`. At-least-once loses nothing (duplicates are reported);
//! exactly-once also shows no duplicate to a `read_committed` reader. `ktransform verify` judges.
//! Each guarantee under both group protocols (`--group-protocol classic` and `consumer`).
//!
//! Short (default): 100,000 records in 6 partitions, 5 kills, four runs two at a time: about
//! 1-2 min each in a debug build. `KTRANSFORM_CHAOS=1`: 500,000 records, 20 kills: about 8 min.
//! Sizes: env `KTRANSFORM_FAULT_KILL_RECORDS`, `KTRANSFORM_FAULT_KILLS`; data:
//! `KTRANSFORM_TEST_SEED`.

use crate::common::data::Mix;
use crate::common::faults::{self, assert_passed, audit_on, Figures};
use crate::common::{brokers, prepare, settled_lag, THROTTLE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_at_least_once() {
    kill_restarts("at-least-once", "classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_exactly_once() {
    kill_restarts("exactly-once", "classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_at_least_once_consumer_protocol() {
    kill_restarts("at-least-once", "consumer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_exactly_once_consumer_protocol() {
    kill_restarts("exactly-once", "consumer").await;
}

async fn kill_restarts(guarantee: &str, protocol: &'static str) {
    let scenario = format!("sigkill-restarts/{guarantee}/{protocol}");
    let n = faults::scaled("KTRANSFORM_FAULT_KILL_RECORDS", 100_000, 500_000);
    let kills = faults::scaled("KTRANSFORM_FAULT_KILLS", 5, 20);
    let test = prepare(&format!("kill-{guarantee}-{protocol}"), 6, n, Mix::Clean).await;
    let names = &test.names;
    // A killed member stays in the group until its session times out, and its restart's
    // first rebalance waits for that: a short session (`faults::group_flags`), and a drain
    // timeout below it. A transactional id stable across restarts makes each restart abort
    // the open transaction of the instance it replaces at once.
    let transactional_id = format!("ktr-{}", names.group);
    let flags = [
        "--guarantee",
        guarantee,
        "--transactional-id",
        &transactional_id,
        "--drain-timeout",
        "3s",
    ];
    let group = faults::group_flags(protocol, true);
    let args = names.args(&[THROTTLE, &flags, &group].concat());

    let done = faults::kill_restart_drain(names, &args, kills, n).await;

    let lag = settled_lag(&brokers(), &names.group, &names.source).await;
    let report = audit_on(&brokers(), names, guarantee).await;
    Figures::from_report(&scenario, &report, done.kills)
        .with("kills_mid_stream", done.mid_stream)
        .with("lag", lag)
        .with("seed", test.seed)
        .print();
    assert_passed(&scenario, &report);
    assert_eq!(report.counts.lost, 0, "{scenario}: records lost");
    assert_eq!(lag, 0, "{scenario}: group lag after the --until-end run");
}
