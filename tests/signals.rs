//! The binary under signals. SIGTERM mid-stream: drain, commit, exit 0, and a second run resumes
//! from the committed offsets. SIGKILL mid-stream (a crash): the second run replays what was not
//! committed. Either way nothing is lost.
//!
//! Sizes: env `KTRANSFORM_TEST_SIGNAL_RECORDS` (default 300,000 for SIGTERM, a third of it for
//! SIGKILL); data: env `KTRANSFORM_TEST_SEED`.

mod common;

use std::time::Duration;

use common::data::Mix;
use common::{group_lag, prepare, wait_for_records, Binary, Prepared, CAP, THROTTLE};

/// How long a signalled process may take to exit before the test kills it and fails.
const EXIT_CAP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_then_resume() {
    let n = common::size("KTRANSFORM_TEST_SIGNAL_RECORDS", 300_000);
    let test = prepare("sigterm", 6, n, Mix::Clean).await;

    let first = Binary::run(&test.names.args(THROTTLE));
    let at_signal = wait_for_records(&test.names.destination, (n / 10) as i64).await;
    first.terminate();
    let exit = first.wait(EXIT_CAP).await;
    assert_eq!(
        exit.code,
        Some(0),
        "exit code after SIGTERM; stderr:\n{}",
        exit.stderr
    );
    let summary = exit
        .stderr
        .lines()
        .find(|l| l.contains("stopped") && l.contains("consumed="));
    assert!(
        summary.is_some(),
        "no \"stopped\" summary line in stderr:\n{}",
        exit.stderr
    );
    let lag_after_sigterm = group_lag(&test.names.group, &test.names.source).await;

    resume(&test, &[]).await;
    let outcome = test.outcome().await;
    println!(
        "sigterm seed={} {outcome} destination_at_signal={at_signal} lag_after_sigterm={lag_after_sigterm}",
        test.seed
    );
    outcome.assert_nothing_lost();
    // Exit 0 after SIGTERM means everything produced was committed: the resume replays nothing.
    assert_eq!(
        outcome.tally.duplicates, 0,
        "duplicates after a graceful stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_resume() {
    let n = common::size("KTRANSFORM_TEST_SIGNAL_RECORDS", 300_000) / 3;
    let test = prepare("sigkill", 6, n, Mix::Clean).await;
    // A killed member stays in the group until its session times out, and the next run's first
    // rebalance waits for that: keep the session short (the drain timeout must stay below it).
    let session = [
        "--drain-timeout",
        "2s",
        "-X",
        "consumer.session.timeout.ms=6000",
    ];

    let mut first = Binary::run(&test.names.args(&[THROTTLE, &session].concat()));
    let at_signal = wait_for_records(&test.names.destination, (n / 10) as i64).await;
    first.kill();
    let exit = first.wait(EXIT_CAP).await;
    assert_eq!(
        exit.code, None,
        "killed by a signal; stderr:\n{}",
        exit.stderr
    );

    resume(&test, &session).await;
    let outcome = test.outcome().await;
    println!(
        "sigkill seed={} {outcome} destination_at_signal={at_signal}",
        test.seed
    );
    outcome.assert_nothing_lost();
}

/// Runs the binary `--until-end` over what the group has not committed yet; it must exit 0.
async fn resume(test: &Prepared, extra: &[&str]) {
    let args = test.names.args(&[extra, &["--until-end"]].concat());
    let exit = Binary::run(&args).wait(CAP).await;
    assert_eq!(
        exit.code,
        Some(0),
        "exit code of the --until-end run; stderr:\n{}",
        exit.stderr
    );
}
