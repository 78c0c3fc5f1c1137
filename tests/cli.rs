//! The binary's contract at its edges: exit codes and messages for bad flags and an unreachable
//! broker, a clean `--until-end` batch run, and the compose file.

mod common;

use common::data::Mix;
use common::{prepare, run_binary, Binary, CAP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_exit_2_naming_the_flag() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["run", "--batch-size", "0"], &["--batch-size"]),
        (
            &["run", "--source", "same", "--destination", "same"],
            &["--destination"],
        ),
        (&["run", "-X", "nonsense"], &["-X", "nonsense"]),
        (&["run", "-X", "no.such.prop=1"], &["-X", "no.such.prop"]),
        (&["run", "--no-such-flag"], &["--no-such-flag"]),
    ];
    for (args, needles) in cases {
        let exit = run_binary(args).await;
        assert_eq!(
            exit.code,
            Some(2),
            "exit code of {args:?}; stderr:\n{}",
            exit.stderr
        );
        for needle in *needles {
            assert!(
                exit.stderr.contains(needle),
                "{args:?}: stderr does not name {needle}:\n{}",
                exit.stderr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_exits_4() {
    let exit = run_binary(&["run", "--brokers", "127.0.0.1:1", "--connect-timeout", "2s"]).await;
    assert_eq!(exit.code, Some(4), "exit code; stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("unreachable"),
        "stderr does not say unreachable:\n{}",
        exit.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_end_leaves_zero_lag() {
    let n = common::size("KTRANSFORM_TEST_UNTIL_END_RECORDS", 10_000);
    let test = prepare("until-end", 3, n, Mix::Clean).await;
    let exit = Binary::run(&test.names.args(&["--until-end"]))
        .wait(CAP)
        .await;
    assert_eq!(exit.code, Some(0), "exit code; stderr:\n{}", exit.stderr);
    let outcome = test.outcome().await;
    println!("until-end seed={} {outcome}", test.seed);
    outcome.assert_nothing_lost();
    assert_eq!(outcome.tally.received, n, "output count of one clean run");
}

#[test]
fn compose_file_is_valid() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let status = std::process::Command::new("docker-compose")
        .args(["-f", "docker-compose.yaml", "config", "-q"])
        .current_dir(dir)
        .status();
    match status {
        Ok(status) => assert!(status.success(), "docker-compose config -q: {status}"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("CI").is_none() => {
            println!("skipped: docker-compose is not on PATH");
        }
        Err(e) => panic!("cannot run docker-compose: {e}"),
    }
}
