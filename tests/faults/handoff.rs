//! Fault: exactly-once through hand-offs (issue 16), under both group protocols. Three instances
//! (the binary) of one group run with `--guarantee exactly-once` while a producer writes; every 1.5-3 s the oldest is
//! stopped and a new one joins in its place: with SIGTERM (a graceful hand-off: it drains and
//! commits, then leaves) or with SIGKILL (its partitions wait for its session to time out, and
//! its successor, which takes its transactional id, aborts its open transaction).
//!
//! Every hand-off is a rebalance, and a commit that races one is refused by the group
//! (`ILLEGAL_GENERATION`, …): the transaction is aborted, its partitions rewind to their
//! committed offsets, and the instance goes on. So no instance may exit non-zero (except the
//! killed ones), and a `read_committed` reader sees every record exactly once
//! (`ktransform verify --guarantee exactly-once`). The aborts are counted from the instances'
//! logs and reported.
//!
//! The graceful hand-offs run with `--memory-budget 4MiB`: 2 fetch turns for the 2 or 3
//! partitions a member owns, so a member that owns 3 pauses one while it waits for a turn, and
//! partitions are revoked while paused and assigned again (librdkafka keeps a pause across
//! that).
//!
//! Short (default): 20 s of hand-offs at 2,000 records/s: about 1 min each in a debug build.
//! `KTRANSFORM_CHAOS=1`: 90 s. Env `KTRANSFORM_FAULT_HANDOFF_SECONDS`; data:
//! `KTRANSFORM_TEST_SEED`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::common::data::{self, Mix};
use crate::common::faults::{self, assert_passed, audit_on, Figures, EXIT_CAP};
use crate::common::{brokers, describe_group, lag_on, produce_on, Binary, Names, KEYS};

const INSTANCES: usize = 3;
const RATE: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_graceful_handoffs() {
    handoffs(Stop::Term, "classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_killed_members() {
    handoffs(Stop::Kill, "classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_graceful_handoffs_consumer_protocol() {
    handoffs(Stop::Term, "consumer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_killed_members_consumer_protocol() {
    handoffs(Stop::Kill, "consumer").await;
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Term,
    Kill,
}

/// One instance and the transactional id it runs with (its successor takes it over).
struct Member {
    binary: Binary,
    slot: usize,
}

/// The running members; any still running when the test fails are killed.
struct Members(VecDeque<Member>);

impl Drop for Members {
    fn drop(&mut self) {
        for member in &mut self.0 {
            member.binary.kill_quietly();
        }
    }
}

/// What the instances logged about aborted transactions.
#[derive(Default)]
struct Aborts {
    /// Commits refused (mostly by a rebalance) and aborted.
    refused: usize,
    /// Partitions rewound to their committed offsets after an abort.
    rewinds: usize,
}

impl Aborts {
    fn add(&mut self, stderr: &str) {
        self.refused += stderr.matches("transaction commit refused").count();
        self.rewinds += stderr
            .matches("partition rewound to its committed offset")
            .count();
    }
}

async fn handoffs(how: Stop, protocol: &'static str) {
    let scenario = match how {
        Stop::Term => format!("eos-handoffs/sigterm/{protocol}"),
        Stop::Kill => format!("eos-handoffs/sigkill/{protocol}"),
    };
    let scenario = scenario.as_str();
    let seconds = faults::scaled("KTRANSFORM_FAULT_HANDOFF_SECONDS", 20, 90);
    let names = Names::new(&scenario.replace('/', "-"));
    names.create(6).await;
    let seed = data::seed();
    let records = data::generate(seconds * RATE, KEYS, Mix::Clean, seed);
    let producer = {
        let source = names.source.clone();
        tokio::spawn(
            async move { produce_on(&brokers(), &source, &records, Some(RATE as f64)).await },
        )
    };
    // A short session, so that a killed member's partitions move on soon (the drain timeout
    // stays below it). Commits five times as often as by default, so that more of them race
    // a rebalance.
    let group = faults::group_flags(protocol, true);
    let start = |slot: usize| {
        let id = format!("ktr-{}-{slot}", names.group);
        let flags = [
            "--guarantee",
            "exactly-once",
            "--transactional-id",
            &id,
            "--drain-timeout",
            "3s",
            "--transaction-interval",
            "20ms",
        ];
        let turns: &[&str] = match how {
            Stop::Term => &["--memory-budget", "4MiB"],
            Stop::Kill => &[],
        };
        Member {
            binary: Binary::run(&names.args(&[&flags[..], turns, &group].concat())),
            slot,
        }
    };
    let mut members = Members((0..INSTANCES).map(start).collect());
    let mut aborts = Aborts::default();
    let mut handoffs = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds as u64) {
        let pause = Duration::from_millis(rand::thread_rng().gen_range(1_500..3_000));
        tokio::time::sleep(pause).await;
        survivors_alive(scenario, &mut members.0).await;
        let oldest = members.0.pop_front().expect("members");
        let slot = oldest.slot;
        let exit = match how {
            Stop::Term => {
                oldest.binary.terminate();
                let exit = oldest.binary.wait(EXIT_CAP).await;
                assert_eq!(
                    exit.code,
                    Some(0),
                    "{scenario}: a member stopped with SIGTERM did not exit 0; stderr:\n{}",
                    exit.stderr
                );
                exit
            }
            Stop::Kill => {
                let mut binary = oldest.binary;
                binary.kill();
                let exit = binary.wait(EXIT_CAP).await;
                assert_eq!(
                    exit.code, None,
                    "{scenario}: a member exited by itself before its SIGKILL; stderr:\n{}",
                    exit.stderr
                );
                exit
            }
        };
        aborts.add(&exit.stderr);
        members.0.push_back(start(slot));
        handoffs += 1;
    }
    let produced = producer.await.expect("the producer task");

    // The last members join and catch up, then stop gracefully.
    let caught_up = Instant::now();
    while lag_on(&brokers(), &names.group, &names.source).await != Some(0)
        || !joined(&names.group).await
    {
        survivors_alive(scenario, &mut members.0).await;
        assert!(
            caught_up.elapsed() < faults::drain_cap(),
            "{scenario}: group lag not 0 within {:?} of the hand-offs' end",
            faults::drain_cap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for member in &members.0 {
        member.binary.terminate();
    }
    for member in std::mem::take(&mut members.0) {
        let exit = member.binary.wait(EXIT_CAP).await;
        assert_eq!(
            exit.code,
            Some(0),
            "{scenario}: a last member did not exit 0; stderr:\n{}",
            exit.stderr
        );
        aborts.add(&exit.stderr);
    }

    let report = audit_on(&brokers(), &names, "exactly-once").await;
    Figures::from_report(scenario, &report, handoffs)
        .with("aborted_commits", aborts.refused)
        .with("rewinds", aborts.rewinds)
        .with("seed", seed)
        .print();
    assert_eq!(report.counts.source_records as usize, produced.len());
    assert_passed(scenario, &report);
    assert_eq!(report.counts.lost, 0, "{scenario}: records lost");
    assert_eq!(
        report.counts.duplicates, 0,
        "{scenario}: records delivered twice"
    );
}

/// Whether the group is stable with every live member in it (a killed member may linger until
/// its session times out).
async fn joined(group: &str) -> bool {
    let state = describe_group(group).await;
    state.state == "Stable" && state.assigned.len() >= INSTANCES
}

/// Fails the test, with its log, if a member that was not stopped has exited.
async fn survivors_alive(scenario: &str, members: &mut VecDeque<Member>) {
    if let Some(i) = members.iter_mut().position(|m| m.binary.exited()) {
        let member = members.remove(i).expect("the exited member");
        let exit = member.binary.wait(EXIT_CAP).await;
        panic!(
            "{scenario}: the member in slot {} exited by itself ({:?}); stderr:\n{}",
            member.slot, exit.code, exit.stderr
        );
    }
}
