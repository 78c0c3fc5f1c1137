//! One clean `--until-end` run over keyed records with poison and tombstones mixed in: every
//! record ends up exactly once where it belongs, byte-exact, in key order, and all committed.
//! And an exactly-once run that commits by transaction size.
//!
//! Size: env `KTRANSFORM_TEST_RECORDS` (default 100,000); data: env `KTRANSFORM_TEST_SEED`.

mod common;

use common::data::{self, Expect, Mix, TestRecord};
use common::{consume_all, finish, group_lag, prepare, run_in_process, Received, IDLE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_run_100k_keyed_with_poison() {
    let n = common::size("KTRANSFORM_TEST_RECORDS", 100_000);
    let test = prepare("pipeline", 6, n, Mix::Poisoned).await;
    let (names, records, seed) = (&test.names, &test.records, test.seed);

    let (handle, _stop) = run_in_process(&names.args(&["--until-end"]));
    let summary = finish(handle).await.expect("an --until-end run returns Ok");

    let ids =
        |want: fn(Expect) -> bool| records.iter().filter(move |r| want(r.expect)).map(|r| r.id);
    let to_destination = ids(|e| !matches!(e, Expect::DeadLetter(_)));
    let to_dlq = ids(|e| matches!(e, Expect::DeadLetter(_)));
    let tombstones = ids(|e| e == Expect::Tombstone).count();
    let output = consume_all(&names.destination, to_destination.clone().count(), IDLE).await;
    let dead = consume_all(&names.dlq, to_dlq.clone().count(), IDLE).await;
    let out_tally = data::tally(to_destination, &output);
    let dlq_tally = data::tally(to_dlq, &dead);
    let lag = group_lag(&names.group, &names.source).await;
    println!(
        "pipeline seed={seed} destination: {out_tally} tombstones={tombstones} | dlq: {dlq_tally} | lag={lag} \
         elapsed={:?} stats={:?}",
        summary.elapsed, summary.stats
    );

    for (what, tally) in [
        ("destination", &out_tally),
        ("dead-letter topic", &dlq_tally),
    ] {
        assert_eq!(
            tally.lost, 0,
            "{what}: records lost, first ids {:?}",
            tally.lost_ids
        );
        assert_eq!(tally.duplicates, 0, "{what}: duplicates in a clean run");
        assert_eq!(tally.unexpected, 0, "{what}: records that belong elsewhere");
    }
    let (output_by_id, dead_by_id) = (data::by_id(&output), data::by_id(&dead));
    let mismatches: Vec<String> = records
        .iter()
        .zip(&test.positions)
        .filter_map(|(r, &position)| {
            let got = match r.expect {
                Expect::DeadLetter(_) => dead_by_id[&r.id][0],
                _ => output_by_id[&r.id][0],
            };
            check_record(r, got, position, &names.source).err()
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} records differ from what was expected, first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
    for (what, records) in [("destination", &output), ("dead-letter topic", &dead)] {
        let violations = data::key_order_violations(records);
        assert!(
            violations.is_empty(),
            "{what}: key order broken: {:?}",
            &violations[..violations.len().min(10)]
        );
    }
    assert_eq!(lag, 0, "group lag after a run that returned Ok");
    let s = summary.stats;
    assert_eq!(s.consumed, n as u64, "stats: consumed");
    assert_eq!(s.produced as usize, output.len(), "stats: produced");
    assert_eq!(s.dead_lettered as usize, dead.len(), "stats: dead_lettered");
    assert_eq!(s.replayable, 0, "stats: replayable");
}

/// Exactly-once commits by size: with `--transaction-records` 1,000 and an interval that never
/// fires during the run, 20,000 records must take at most 21 commits (every commit but the last
/// holds the threshold; 17-19 were seen) and several (by the interval alone there would be one,
/// at the end). A notification left over from a full transaction once triggered a nearly empty
/// commit after every full one: 28-31 commits here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_commits_when_the_transaction_is_full() {
    const N: usize = 20_000;
    const THRESHOLD: usize = 1_000;
    let test = prepare("txn-full", 6, N, Mix::Clean).await;
    let names = &test.names;
    let threshold = THRESHOLD.to_string();
    let flags = [
        "--until-end",
        "--guarantee",
        "exactly-once",
        "--transaction-records",
        &threshold,
        "--transaction-interval",
        "60s",
        "--batch-size",
        "10",
    ];
    let (handle, _stop) = run_in_process(&names.args(&flags));
    let summary = finish(handle).await.expect("an --until-end run returns Ok");
    let output = consume_all(&names.destination, N, IDLE).await;
    let tally = data::tally(test.records.iter().map(|r| r.id), &output);
    let commits = summary.stats.transactions_committed;
    println!(
        "txn-full seed={} {tally} commits={commits} stats={:?}",
        test.seed, summary.stats
    );
    assert_eq!(tally.lost, 0, "records lost: {:?}", tally.lost_ids);
    assert_eq!(tally.duplicates, 0, "duplicates under exactly-once");
    assert!(
        (5..=21).contains(&commits),
        "{commits} commits for {N} records at {THRESHOLD} per transaction"
    );
}

/// Checks one record read back against its input, which sat at `source` (partition, offset).
fn check_record(
    r: &TestRecord,
    got: &Received,
    source: (i32, i64),
    topic: &str,
) -> Result<(), String> {
    let fail = |what: &str| Err(format!("record {}: {what}", r.id));
    if got.key.as_deref() != Some(&r.key[..]) {
        return fail("key changed");
    }
    match r.expect {
        Expect::Transformed => {
            let (input, output) = (
                r.value.as_deref().unwrap(),
                got.value.as_deref().unwrap_or_default(),
            );
            if output != data::expected_output(input) {
                return fail(&format!(
                    "output is not the input with the hash spliced in\n  input: {}\n output: {}",
                    String::from_utf8_lossy(input),
                    String::from_utf8_lossy(output)
                ));
            }
            data::check_json(input, output).or_else(|e| fail(&e))?;
        }
        Expect::Tombstone if got.value.is_some() => return fail("tombstone has a value"),
        Expect::Tombstone => {}
        Expect::DeadLetter(kind) => {
            if got.value != r.value {
                return fail("dead-lettered value changed");
            }
            let (partition, offset) = (source.0.to_string(), source.1.to_string());
            let expected = [
                ("ktransform.error.kind", kind),
                ("ktransform.source.topic", topic),
                ("ktransform.source.partition", &partition),
                ("ktransform.source.offset", &offset),
            ];
            for (header, want) in expected {
                if got.header_str(header) != Some(want) {
                    return fail(&format!(
                        "header {header} is {:?}, not {want}",
                        got.header_str(header)
                    ));
                }
            }
            if !matches!(got.header_str("ktransform.error.message"), Some(m) if !m.is_empty()) {
                return fail("no ktransform.error.message");
            }
            // The input's headers come first, unchanged.
            if !got.headers.starts_with(&r.headers) {
                return fail(&format!(
                    "headers {:?} do not start with {:?}",
                    got.headers, r.headers
                ));
            }
            return Ok(());
        }
    }
    if got.headers != r.headers {
        return fail(&format!("headers {:?}, not {:?}", got.headers, r.headers));
    }
    Ok(())
}
