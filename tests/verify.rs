//! `ktransform verify` against a real broker: a clean run passes under both guarantees, and each
//! kind of tampering is caught and counted exactly: a forged output, a lost record, a wrong hash,
//! a duplicate (allowed by at-least-once only), a changed key, changed headers and a reordering.
//! The binary is run too, for `--json` and the exit codes.
//!
//! Size: env `KTRANSFORM_TEST_VERIFY_RECORDS` (default 2,000); data: env `KTRANSFORM_TEST_SEED`.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::data::{self, Mix, TestRecord};
use common::{brokers, finish, produce, run_in_process, Names, CAP};
use ktransform::dead_letter::{headers, Reason};
use ktransform::error::exit;
use ktransform::transform::transform;
use ktransform::verify::{self, Counts, Kind, Position, Report, VerifyConfig};

const KEYS: usize = 24;

fn records() -> (Vec<TestRecord>, u64) {
    let seed = data::seed();
    let n = common::size("KTRANSFORM_TEST_VERIFY_RECORDS", 2_000);
    // Poison every 100th record from id 50, a tombstone at id 17: the tests need both.
    assert!(
        n >= 1_000,
        "KTRANSFORM_TEST_VERIFY_RECORDS must be at least 1000"
    );
    (data::generate(n, KEYS, Mix::Poisoned, seed), seed)
}

/// `verify` flags for `names`, then `extra`.
fn args(names: &Names, extra: &[&str]) -> Vec<String> {
    let brokers = brokers();
    let names = [
        "--brokers",
        &brokers,
        "--source",
        &names.source,
        "--destination",
        &names.destination,
        "--dlq",
        &names.dlq,
    ];
    names.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// Audits in-process under `guarantee`.
async fn audit(names: &Names, guarantee: &str) -> Report {
    let config = VerifyConfig::from_args(args(names, &["--guarantee", guarantee])).unwrap();
    tokio::task::spawn_blocking(move || verify::audit(&config))
        .await
        .expect("audit panicked")
        .expect("the audit runs")
}

/// The counts of a clean audit of `records`, with `changes` applied.
fn clean(records: &[TestRecord], changes: Counts) -> Counts {
    let dead = records
        .iter()
        .filter(|r| r.value.as_deref().is_some_and(|v| transform(v).is_err()))
        .count() as u64;
    let n = records.len() as u64;
    Counts {
        source_records: n,
        tombstones: records.iter().filter(|r| r.value.is_none()).count() as u64,
        expected_dead_letters: dead,
        outputs: n - dead,
        dead_letters: dead,
        delivered: n,
        ..changes
    }
}

/// Runs the binary's `verify` with `extra` flags; returns its exit code and stdout.
async fn verify_binary(names: &Names, extra: &[&str]) -> (Option<i32>, String) {
    let argv: Vec<String> = std::iter::once("verify".to_string())
        .chain(args(names, extra))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ktransform"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KTRANSFORM_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the ktransform binary");
        let mut pipe = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() >= CAP {
                let _ = child.kill();
                panic!("ktransform verify did not exit within {CAP:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        (status.code(), stdout.join().unwrap())
    })
    .await
    .unwrap()
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: not one JSON object: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_run_passes_and_a_forged_output_fails() {
    let (records, seed) = records();
    let names = Names::new("verify-clean");
    names.create(3).await;
    produce(&names.source, &records).await;
    let (handle, _stop) = run_in_process(&names.args(&["--until-end"]));
    finish(handle).await.expect("an --until-end run returns Ok");

    for guarantee in ["at-least-once", "exactly-once"] {
        let report = audit(&names, guarantee).await;
        assert_eq!(
            report.counts,
            clean(&records, Counts::default()),
            "seed={seed}\n{}",
            verify::render(&report)
        );
        assert!(report.passed && report.failed_rules.is_empty() && report.findings.is_empty());
    }
    let (code, stdout) = verify_binary(&names, &["--json"]).await;
    let report = json(&stdout);
    assert_eq!(code, Some(exit::OK), "{stdout}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["guarantee"], "at-least-once");
    assert_eq!(report["source_records"], records.len());
    assert_eq!(report["lost"], 0);
    assert_eq!(report["forged"], 0);

    let forged = TestRecord {
        id: u64::MAX,
        key: b"key-1".to_vec(),
        value: Some(format!(r#"{{"id":-1,"hash":"{}"}}"#, "f".repeat(32)).into_bytes()),
        headers: Vec::new(),
        expect: data::Expect::Transformed,
        timestamp: None,
    };
    let at = produce(&names.destination, &[forged]).await[0];
    let report = audit(&names, "at-least-once").await;
    let mut expected = clean(&records, Counts::default());
    expected.outputs += 1;
    expected.forged = 1;
    assert_eq!(report.counts, expected, "{}", verify::render(&report));
    assert!(!report.passed);
    assert_eq!(report.failed_rules, ["forged = 1"]);
    let f = &report.findings[0];
    assert_eq!((f.kind, &f.topic), (Kind::Forged, &names.destination));
    assert_eq!((f.partition, f.offset, f.source), (at.0, at.1, None));

    let (code, stdout) = verify_binary(&names, &["--json"]).await;
    let report = json(&stdout);
    assert_eq!(code, Some(exit::VERIFY_FAILED), "{stdout}");
    assert_eq!(report["passed"], false);
    assert_eq!(report["forged"], 1);
    assert_eq!(report["findings"][0]["kind"], "forged");
}

/// A pipeline written by hand: the source, then what the service would write for it (also the
/// input's timestamp), changed by `tamper` before it is produced.
struct ByHand {
    names: Names,
    records: Vec<TestRecord>,
    positions: Vec<(i32, i64)>,
}

impl ByHand {
    async fn new(test: &str, tamper: impl FnOnce(&mut Vec<TestRecord>)) -> ByHand {
        let (mut records, _) = records();
        // Stamped by hand, so that the outputs can carry the same timestamps.
        for (i, r) in records.iter_mut().enumerate() {
            r.timestamp = Some(1_700_000_000_000 + i as i64);
        }
        let names = Names::new(test);
        names.create(3).await;
        let positions = produce(&names.source, &records).await;
        let (mut outputs, mut dead) = (Vec::new(), Vec::new());
        for (r, &(partition, offset)) in records.iter().zip(&positions) {
            match r.value.as_deref().map(transform) {
                None => outputs.push(r.clone()),
                Some(Ok(output)) => outputs.push(TestRecord {
                    value: Some(output),
                    ..r.clone()
                }),
                Some(Err(rejection)) => {
                    let mut d = r.clone();
                    for (name, value) in [
                        (
                            headers::ERROR_KIND,
                            Reason::from(rejection.kind).as_str().to_string(),
                        ),
                        (headers::ERROR_MESSAGE, rejection.message),
                        (headers::SOURCE_TOPIC, names.source.clone()),
                        (headers::SOURCE_PARTITION, partition.to_string()),
                        (headers::SOURCE_OFFSET, offset.to_string()),
                    ] {
                        d.headers.push((name.to_string(), Some(value.into_bytes())));
                    }
                    dead.push(d);
                }
            }
        }
        tamper(&mut outputs);
        produce(&names.destination, &outputs).await;
        produce(&names.dlq, &dead).await;
        ByHand {
            names,
            records,
            positions,
        }
    }

    /// The source position of record `id`.
    fn source_of(&self, id: u64) -> Option<Position> {
        let (partition, offset) = self.positions[id as usize];
        Some(Position { partition, offset })
    }
}

/// The first output at or after index `from` that has an object value.
fn object_at(outputs: &[TestRecord], from: usize) -> usize {
    (from..outputs.len())
        .find(|&i| outputs[i].value.is_some())
        .expect("an object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_output_is_lost() {
    let mut lost = None;
    let p = ByHand::new("verify-lost", |outputs| {
        lost = Some(outputs.remove(object_at(outputs, 100)).id);
    })
    .await;
    let report = audit(&p.names, "at-least-once").await;
    let mut expected = clean(&p.records, Counts::default());
    expected.outputs -= 1;
    expected.delivered -= 1;
    expected.lost = 1;
    assert_eq!(report.counts, expected, "{}", verify::render(&report));
    assert_eq!(report.failed_rules, ["lost = 1"]);
    let f = &report.findings[0];
    assert_eq!((f.kind, &f.topic), (Kind::Lost, &p.names.source));
    assert_eq!(
        Some(Position {
            partition: f.partition,
            offset: f.offset
        }),
        p.source_of(lost.unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_hash_is_caught() {
    let mut wrong = None;
    let p = ByHand::new("verify-hash", |outputs| {
        let i = object_at(outputs, 100);
        let value = outputs[i].value.as_mut().unwrap();
        let at = String::from_utf8_lossy(value).rfind(r#""hash":""#).unwrap() + 8;
        value[at..at + 32].copy_from_slice(&[b'0'; 32]);
        wrong = Some(outputs[i].id);
    })
    .await;
    let report = audit(&p.names, "at-least-once").await;
    let mut expected = clean(&p.records, Counts::default());
    expected.delivered -= 1;
    expected.wrong_hash = 1;
    assert_eq!(report.counts, expected, "{}", verify::render(&report));
    assert_eq!(report.failed_rules, ["wrong_hash = 1"]);
    let f = &report.findings[0];
    assert_eq!((f.kind, &f.topic), (Kind::WrongHash, &p.names.destination));
    assert_eq!(f.source, p.source_of(wrong.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_passes_at_least_once_only() {
    let p = ByHand::new("verify-duplicate", |outputs| {
        let i = object_at(outputs, 100);
        outputs.push(outputs[i].clone());
    })
    .await;
    let at_least_once = audit(&p.names, "at-least-once").await;
    let mut expected = clean(&p.records, Counts::default());
    expected.outputs += 1;
    expected.duplicates = 1;
    assert_eq!(
        at_least_once.counts,
        expected,
        "{}",
        verify::render(&at_least_once)
    );
    assert!(at_least_once.passed);
    let exactly_once = audit(&p.names, "exactly-once").await;
    assert_eq!(exactly_once.counts, expected);
    assert!(!exactly_once.passed);
    assert_eq!(exactly_once.failed_rules, ["duplicates = 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_key_headers_and_order_are_caught() {
    let (mut rekeyed, mut reordered) = (None, None);
    let p = ByHand::new("verify-changed", |outputs| {
        let i = object_at(outputs, 100);
        outputs[i].key = b"key-elsewhere".to_vec();
        rekeyed = Some(outputs[i].id);
        let i = object_at(outputs, 200);
        outputs[i].headers.push(("added".to_string(), None));
        // Two consecutive outputs of one key, swapped: the later source record comes first.
        let i = object_at(outputs, 300);
        let j = (i + 1..outputs.len())
            .find(|&j| outputs[j].key == outputs[i].key && outputs[j].value.is_some())
            .unwrap();
        outputs.swap(i, j);
        reordered = Some(outputs[j].id);
    })
    .await;
    let report = audit(&p.names, "at-least-once").await;
    let mut expected = clean(&p.records, Counts::default());
    expected.delivered -= 1;
    expected.changed_keys = 1;
    expected.changed_headers = 1;
    expected.order_violations = 1;
    assert_eq!(report.counts, expected, "{}", verify::render(&report));
    assert_eq!(report.failed_rules, ["changed = 2", "order_violations = 1"]);
    let source_of = |kind: Kind| {
        report
            .findings
            .iter()
            .find(|f| f.kind == kind)
            .and_then(|f| f.source)
    };
    assert_eq!(source_of(Kind::ChangedKey), p.source_of(rekeyed.unwrap()));
    assert_eq!(
        source_of(Kind::OrderViolation),
        p.source_of(reordered.unwrap())
    );
}
