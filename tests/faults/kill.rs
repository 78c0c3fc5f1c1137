//! Fault: the binary SIGKILLed at random moments mid-stream and restarted each time, then
//! drained with `--until-end`. At-least-once loses nothing (duplicates are reported);
//! exactly-once also shows no duplicate to a `read_committed` reader. `ktransform verify` judges.
//!
//! Short (default): 100,000 records in 6 partitions, 5 kills, both guarantees at once: about
//! 1-2 min in a debug build. `KTRANSFORM_CHAOS=1`: 500,000 records, 20 kills: about 8 min.
//! Sizes: env `KTRANSFORM_FAULT_KILL_RECORDS`, `KTRANSFORM_FAULT_KILLS`; data:
//! `KTRANSFORM_TEST_SEED`.

use crate::common::data::Mix;
use crate::common::faults::{self, assert_passed, audit_on, Figures};
use crate::common::{brokers, prepare, settled_lag, THROTTLE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_at_least_once() {
    kill_restarts("at-least-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_exactly_once() {
    kill_restarts("exactly-once").await;
}

async fn kill_restarts(guarantee: &str) {
    let n = faults::scaled("KTRANSFORM_FAULT_KILL_RECORDS", 100_000, 500_000);
    let kills = faults::scaled("KTRANSFORM_FAULT_KILLS", 5, 20);
    let test = prepare(&format!("kill-{guarantee}"), 6, n, Mix::Clean).await;
    let names = &test.names;
    // A killed member stays in the group until its session times out, and its restart's
    // first rebalance waits for that: a short session (the drain timeout must stay below
    // it). A transactional id stable across restarts makes each restart abort the open
    // transaction of the instance it replaces at once.
    let transactional_id = format!("ktr-{}", names.group);
    let flags = [
        "--guarantee",
        guarantee,
        "--transactional-id",
        &transactional_id,
        "--drain-timeout",
        "3s",
        "-X",
        "consumer.session.timeout.ms=6000",
    ];
    let args = names.args(&[THROTTLE, &flags].concat());

    let done = faults::kill_restart_drain(names, &args, kills, n).await;

    let lag = settled_lag(&brokers(), &names.group, &names.source).await;
    let report = audit_on(&brokers(), names, guarantee).await;
    Figures::from_report(
        &format!("sigkill-restarts/{guarantee}"),
        &report,
        done.kills,
    )
    .with("kills_mid_stream", done.mid_stream)
    .with("lag", lag)
    .with("seed", test.seed)
    .print();
    assert_passed(&format!("sigkill-restarts/{guarantee}"), &report);
    assert_eq!(report.counts.lost, 0, "records lost");
    assert_eq!(lag, 0, "group lag after the --until-end run");
}
