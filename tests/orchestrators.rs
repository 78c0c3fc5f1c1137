//! Running as N replicas under an orchestrator: `--log-format json` (every line of a run's log is
//! a JSON object, librdkafka's lines included, secrets masked), `--instance-id` (conflicting
//! flags refused at start naming the flag; two live instances with one id: the group fences
//! one, which exits 1 saying so, under both group protocols).

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::data::Mix;
use common::{poll_until, prepare, run_binary, Names, CAP};
use serde_json::Value;

/// A value librdkafka may echo with `debug=conf`; it must never reach the log.
const SECRET: &str = "hunter2-never-logged";

/// Every stderr line of a run, parsed as JSON; fails naming the first line that is not an
/// object with the fields a log pipeline reads.
fn json_lines(stderr: &str) -> Vec<serde_json::Map<String, Value>> {
    stderr
        .lines()
        .map(|line| {
            let Ok(Value::Object(o)) = serde_json::from_str::<Value>(line) else {
                panic!("not a JSON object: {line}\nwhole log:\n{stderr}");
            };
            for field in ["timestamp", "level", "target", "message"] {
                assert!(o.contains_key(field), "no {field} in {line}");
            }
            o
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_a_json_log_is_a_json_object() {
    let test = prepare("json-log", 2, 2_000, Mix::Poisoned).await;
    let mut stderr = String::new();
    for format in ["json", "text"] {
        let names = &test.names;
        let group = format!("{}-{format}", names.group);
        let args = [
            "run",
            "--source",
            &names.source,
            "--destination",
            &names.destination,
            "--group",
            &group,
            "--until-end",
            "--log-format",
            format,
            // librdkafka's own lines, its configuration dump among them.
            "-X",
            "consumer.debug=cgrp,conf",
            "-X",
            &format!("consumer.sasl.password={SECRET}"),
        ];
        let exit = run_binary(&args).await;
        assert_eq!(exit.code, Some(0), "{format}; stderr:\n{}", exit.stderr);
        assert!(
            !exit.stderr.contains(SECRET),
            "{format}: the secret reached the log:\n{}",
            exit.stderr
        );
        if format == "json" {
            stderr = exit.stderr;
        }
    }
    let lines = json_lines(&stderr);
    let librdkafka = lines
        .iter()
        .filter(|o| o["message"].as_str().unwrap().starts_with("librdkafka: "))
        .collect::<Vec<_>>();
    assert!(!librdkafka.is_empty(), "no librdkafka line:\n{stderr}");
    assert!(librdkafka.iter().all(|o| o["fac"].is_string()), "{stderr}");
    // The fields of an event are members of its object, with their types.
    let stopped = lines
        .iter()
        .find(|o| o["message"] == "stopped")
        .unwrap_or_else(|| panic!("no stopped line:\n{stderr}"));
    assert_eq!(stopped["consumed"].as_u64(), Some(2_000), "{stopped:?}");
    assert!(lines.iter().any(|o| o["level"] == "INFO"));
    // RFC 3339 in UTC, as the text lines have it.
    assert!(
        lines
            .iter()
            .all(|o| o["timestamp"].as_str().unwrap().ends_with('Z')),
        "{stderr}"
    );
}

/// A run that stops at start prints its error as a JSON line too.
#[tokio::test]
async fn a_refused_start_is_a_json_line_naming_the_flag() {
    let exit = run_binary(&["run", "--log-format", "json", "--instance-id", "pod 1"]).await;
    assert_eq!(exit.code, Some(2), "{}", exit.stderr);
    let lines = json_lines(&exit.stderr);
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid --instance-id: `pod 1`"),
        "{last:?}"
    );
    assert_eq!(last["exit_code"], 2);
}

#[tokio::test]
async fn conflicting_identities_are_refused_at_start() {
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--instance-id",
                "pod-1",
                "-X",
                "consumer.group.instance.id=pod-2",
            ],
            "invalid -X group.instance.id: `pod-2` conflicts with --instance-id `pod-1`",
        ),
        (
            &[
                "--instance-id",
                "pod-1",
                "--guarantee",
                "exactly-once",
                "--transactional-id",
                "shared",
            ],
            "invalid --transactional-id: `shared` conflicts with the instance id",
        ),
        (
            &["--instance-id", "pod/1"],
            "invalid --instance-id: `pod/1` is not a group instance id",
        ),
    ];
    for (flags, expected) in cases {
        let args: Vec<&str> = std::iter::once("run")
            .chain(flags.iter().copied())
            .collect();
        let exit = run_binary(&args).await;
        assert_eq!(exit.code, Some(2), "{flags:?}: {}", exit.stderr);
        assert!(
            exit.stderr.contains(expected),
            "{flags:?}: expected {expected:?} in:\n{}",
            exit.stderr
        );
    }
}

/// The binary with its stderr in a file, readable while it runs.
struct Instance {
    child: Child,
    log: PathBuf,
}

impl Instance {
    fn start(names: &Names, extra: &[&str], log: &str) -> Self {
        let log = std::env::temp_dir().join(format!("{}-{log}.log", names.group));
        let mut command = Command::new(env!("CARGO_BIN_EXE_ktransform"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KTRANSFORM_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("run")
            .args(names.args(extra))
            .args(["--brokers", &common::brokers()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start the ktransform binary");
        Instance { child, log }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_for(&self, what: &str) {
        poll_until(&format!("`{what}` in the log"), CAP, || async {
            self.stderr().contains(what)
        })
        .await;
    }

    /// The exit code, waiting at most `cap`; None if it still runs then.
    fn exit_within(&mut self, cap: Duration) -> Option<Option<i32>> {
        let started = Instant::now();
        while started.elapsed() < cap {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn terminate(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Two live instances with one `--instance-id`: the group fences one of them fatally, and
/// that one exits 1 by itself, naming the id, while the other goes on. Classic: the newer
/// member takes the id and the older is fenced. KIP-848: the member holding the id keeps it
/// and the newcomer is refused.
async fn two_live_instances_with_one_id(protocol: &str) {
    let names = Names::new(&format!("twins-{protocol}"));
    names.create(2).await;
    let flags = ["--group-protocol", protocol, "--instance-id", "twin"];
    let first = Instance::start(&names, &flags, "first");
    first.wait_for("partitions assigned").await;
    let second = Instance::start(&names, &flags, "second");
    let (mut fenced, mut survivor) = match protocol {
        "classic" => (first, second),
        _ => (second, first),
    };
    let code = tokio::task::block_in_place(|| fenced.exit_within(CAP));
    let log = fenced.stderr();
    assert_eq!(
        code,
        Some(Some(1)),
        "the fenced instance's exit; log:\n{log}"
    );
    let expected = if protocol == "classic" {
        format!(
            "another instance joined group {} with --instance-id twin and took this one's place",
            names.group
        )
    } else {
        format!(
            "group {} still has a member with --instance-id twin",
            names.group
        )
    };
    assert!(log.contains(&expected), "expected {expected:?} in:\n{log}");
    // The other one still runs, and stops cleanly.
    assert_eq!(
        survivor.child.try_wait().unwrap(),
        None,
        "{}",
        survivor.stderr()
    );
    survivor.terminate();
    let code = tokio::task::block_in_place(|| survivor.exit_within(CAP));
    assert_eq!(code, Some(Some(0)), "{}", survivor.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_instances_with_one_id_classic() {
    two_live_instances_with_one_id("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_instances_with_one_id_consumer_protocol() {
    two_live_instances_with_one_id("consumer").await;
}

/// The partitions a JSON log says the instance holds: its assignments less its revocations.
fn held(log: &str) -> BTreeSet<i64> {
    let mut held = BTreeSet::new();
    for o in log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let Some(parts) = o["partitions"].as_str() else {
            continue;
        };
        let parts = parts
            .trim_matches(['[', ']'])
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.trim().parse::<i64>().unwrap());
        match o["message"].as_str() {
            Some("partitions assigned") => held.extend(parts),
            Some("partitions revoked; draining") => parts.for_each(|p| {
                held.remove(&p);
            }),
            _ => {}
        }
    }
    held
}

/// The lines of a rebalance callback in a JSON log: an assignment (even an empty one) or a
/// revocation.
fn rebalance_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|o| {
                o["message"] == "partitions assigned"
                    || o["message"] == "partitions revoked; draining"
            })
        })
        .collect()
}

/// A static member stopped with SIGTERM (or, under classic, SIGKILLed: `crash`) and started
/// again under its name takes its partitions back, and the other member goes through no
/// rebalance: no assignment, no revocation.
async fn a_restarted_static_member_moves_nothing(protocol: &str, crash: bool) {
    let names = Names::new(&format!("static-{protocol}"));
    names.create(4).await;
    let flags = |id: &'static str| {
        [
            "--group-protocol",
            protocol,
            "--instance-id",
            id,
            "--log-format",
            "json",
        ]
    };
    let mut first = Instance::start(&names, &flags("a"), "a");
    first.wait_for("partitions assigned").await;
    let second = Instance::start(&names, &flags("b"), "b");
    poll_until(
        "the two members to split the four partitions",
        CAP,
        || async {
            let (a, b) = (held(&first.stderr()), held(&second.stderr()));
            !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.len() + b.len() == 4
        },
    )
    .await;
    let before = held(&first.stderr());
    let seen = rebalance_lines(&second.stderr()).len();
    if crash {
        first.child.kill().unwrap();
    } else {
        first.terminate();
    }
    let code = tokio::task::block_in_place(|| first.exit_within(CAP));
    let expected = if crash { None } else { Some(0) };
    assert_eq!(code, Some(expected), "{}", first.stderr());
    // Back after more than a heartbeat of the other member (KIP-848 groups on scripts/kafka.sh's
    // broker: 1 s) and well within the session (6 s there, 45 s classic): without an id the
    // other member would be handed the stopped one's partitions meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = Instance::start(&names, &flags("a"), "a-again");
    poll_until(
        "the restarted member to hold its partitions again",
        CAP,
        || async { held(&again.stderr()) == before },
    )
    .await;
    let log = second.stderr();
    let since = &rebalance_lines(&log)[seen..];
    assert!(since.is_empty(), "the other member rebalanced: {since:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_static_member_moves_nothing_classic() {
    a_restarted_static_member_moves_nothing("classic", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_static_member_moves_nothing_consumer_protocol() {
    a_restarted_static_member_moves_nothing("consumer", false).await;
}

/// Under classic the replacement of a crashed static member takes its place at once, where
/// without an id its partitions would wait out the session (45 s). (Under KIP-848 the
/// replacement is refused until the session expires, as a live twin is in
/// `two_live_instances_with_one_id`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_static_member_is_replaced_without_a_rebalance_classic() {
    a_restarted_static_member_moves_nothing("classic", true).await;
}
