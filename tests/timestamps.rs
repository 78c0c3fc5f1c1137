//! Event time kept (issue 22): outputs and dead letters carry their input record's timestamp;
//! `--timestamp now` lets the producer stamp them. Inputs come from the Java producer with an
//! explicit timestamp far in the past and from librdkafka stamping them itself; outputs are read
//! back by the Java consumer (a reader ktransform did not write) and judged by `verify`.

mod common;

use std::collections::HashMap;

use common::data::{self, Expect, Mix};
use common::faults::{assert_passed, audit_with_on};
use common::{brokers, consume_all, create_topic_on, finish, java, produce, run_in_process};
use common::{Names, Received, KEYS};

/// 2001-09-09T01:46:40Z: far in the past, still accepted by the broker.
const PAST: i64 = 1_000_000_000_000;
const RECORDS: usize = 400;

/// Source records by `test.id`: their timestamps as the source's consumers see them.
async fn source_timestamps(names: &Names) -> HashMap<u64, i64> {
    java::consume(&names.source, RECORDS)
        .await
        .iter()
        .map(|r| (data::id_of(r), r.timestamp.expect("a source timestamp")))
        .collect()
}

/// Half the records from the Java producer stamped [`PAST`], half from librdkafka stamped now;
/// poison and tombstones among them. Returns how many belong in the dead-letter topic.
async fn prepare(names: &Names) -> usize {
    let records = data::generate(RECORDS, KEYS, Mix::Poisoned, data::seed());
    java::produce(&names.source, "lz4", &records[..RECORDS / 2], Some(PAST)).await;
    produce(&names.source, &records[RECORDS / 2..]).await;
    records
        .iter()
        .filter(|r| matches!(r.expect, Expect::DeadLetter(_)))
        .count()
}

async fn run(names: &Names, extra: &[&str]) {
    let flags = [&["--until-end"][..], extra].concat();
    let (handle, _stop) = run_in_process(&names.args(&flags));
    finish(handle)
        .await
        .unwrap_or_else(|e| panic!("the --until-end run failed: {e}"));
}

/// Outputs and dead letters, read back by the Java consumer and by librdkafka.
async fn read_back(names: &Names, dead: usize) -> (Vec<Received>, Vec<Received>) {
    let outputs = java::consume(&names.destination, RECORDS - dead).await;
    assert_eq!(outputs.len(), RECORDS - dead, "outputs read by Java");
    let dead_letters = consume_all(&names.dlq, dead, std::time::Duration::from_secs(2)).await;
    assert_eq!(dead_letters.len(), dead, "dead letters");
    (outputs, dead_letters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_and_dead_letters_keep_the_source_timestamps() {
    let names = Names::new("ts-source");
    names.create(3).await;
    let dead = prepare(&names).await;
    run(&names, &[]).await;

    let sources = source_timestamps(&names).await;
    let (outputs, dead_letters) = read_back(&names, dead).await;
    let mut past = 0;
    for r in outputs.iter().chain(&dead_letters) {
        let id = data::id_of(r);
        assert_eq!(
            r.timestamp,
            Some(sources[&id]),
            "record {id}: its input's timestamp"
        );
        past += usize::from(r.timestamp == Some(PAST));
    }
    assert!(
        past > 0 && past < RECORDS,
        "both kinds of input timestamps are covered ({past} in the past)"
    );
    assert!(
        dead_letters.iter().any(|r| r.timestamp == Some(PAST)),
        "a dead letter stamped in the past"
    );

    let report = audit_with_on(&brokers(), &names, "at-least-once", &[]).await;
    assert_passed("timestamps kept", &report);
    assert_eq!(report.counts.changed_timestamps, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_now_outputs_are_stamped_when_sent() {
    let names = Names::new("ts-now");
    names.create(3).await;
    let dead = prepare(&names).await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    run(&names, &["--timestamp", "now"]).await;

    let (outputs, dead_letters) = read_back(&names, dead).await;
    for r in outputs.iter().chain(&dead_letters) {
        let stamped = r.timestamp.expect("a timestamp");
        // The clock of the machine that ran it, not the input's (half of them in 2001).
        assert!(
            stamped >= started,
            "record {}: stamped {stamped}, before the run started at {started}",
            data::id_of(r)
        );
    }

    // Judged under `source`, the changed timestamps break the rule; under `now` they are counted.
    let strict = audit_with_on(&brokers(), &names, "at-least-once", &[]).await;
    assert!(!strict.passed, "verify --timestamp source must fail");
    assert!(
        strict
            .failed_rules
            .iter()
            .any(|r| r.starts_with("changed_timestamps")),
        "{:?}",
        strict.failed_rules
    );
    let lenient = audit_with_on(&brokers(), &names, "at-least-once", &["--timestamp", "now"]).await;
    assert_passed("verify --timestamp now", &lenient);
    assert!(lenient.counts.changed_timestamps >= (RECORDS / 2) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_append_time_source_gives_its_append_time() {
    let names = Names::new("ts-append");
    create_topic_on(
        &brokers(),
        &names.source,
        3,
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    for (topic, partitions) in [(&names.destination, 3), (&names.dlq, 2)] {
        create_topic_on(&brokers(), topic, partitions, 1, &[]).await;
    }
    let dead = prepare(&names).await;
    run(&names, &[]).await;

    let sources = source_timestamps(&names).await;
    assert!(
        sources.values().all(|t| *t != PAST),
        "the source broker replaced the producers' timestamps"
    );
    let (outputs, dead_letters) = read_back(&names, dead).await;
    for r in outputs.iter().chain(&dead_letters) {
        let id = data::id_of(r);
        assert_eq!(
            r.timestamp,
            Some(sources[&id]),
            "record {id}: the append time"
        );
    }
    let report = audit_with_on(&brokers(), &names, "at-least-once", &[]).await;
    assert_passed("append time kept", &report);
}
