//! Fault: poison in the stream. 1% of the records are bad, of every kind the transform rejects
//! (truncated and trailing-garbage JSON, invalid UTF-8, an array, a number, a string, JSON
//! `null`), interleaved with good ones and tombstones, under exactly-once while the binary is
//! SIGKILLed and restarted: every bad record lands in the dead-letter topic exactly once with
//! its reason, every good one in the destination exactly once, and nothing stalls (the final
//! `--until-end` run ends, lag 0). The clean at-least-once run over the same mix, byte by
//! byte, is `tests/pipeline.rs`.
//!
//! Also the last kind, an object whose output is too large for the destination once the hash
//! is added: it must be dead-lettered as `output_too_large`, not stop the service. And a dead
//! letter too large for the producer or for the dead-letter topic: it must go without its value,
//! not stop the service.
//!
//! Short (default): 30,000 records, 3 kills: under 1 min in a debug build.
//! `KTRANSFORM_CHAOS=1`: 200,000 records, 10 kills: about 3 min. Sizes: env
//! `KTRANSFORM_FAULT_POISON_RECORDS`, `KTRANSFORM_FAULT_POISON_KILLS`.

use md5::Digest;

use crate::common::data::{self, Expect, Mix};
use crate::common::faults::{self, assert_passed, audit_on, Figures};
use crate::common::{
    brokers, consume_all, create_topic_on, finish, prepare, produce, run_in_process, settled_lag,
    Names, IDLE, KEYS, THROTTLE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_mix_exactly_once_with_kills() {
    let scenario = "poison-mix/exactly-once";
    let n = faults::scaled("KTRANSFORM_FAULT_POISON_RECORDS", 30_000, 200_000);
    let kills = faults::scaled("KTRANSFORM_FAULT_POISON_KILLS", 3, 10);
    let test = prepare("poison", 6, n, Mix::Poisoned).await;
    let names = &test.names;
    let transactional_id = format!("ktr-{}", names.group);
    let flags = [
        "--guarantee",
        "exactly-once",
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
    let report = audit_on(&brokers(), names, "exactly-once").await;
    let expected_dead = test
        .records
        .iter()
        .filter(|r| matches!(r.expect, Expect::DeadLetter(_)))
        .count();
    let dead = consume_all(&names.dlq, expected_dead, IDLE).await;
    let dlq = faults::check_dead_letters(&test.records, &dead);
    Figures::from_report(scenario, &report, done.kills)
        .with("dead_letters", dlq.expected)
        .with("dlq_lost", dlq.lost)
        .with("dlq_duplicated", dlq.duplicated)
        .with("wrong_reason", dlq.wrong_reason)
        .with("kinds", format!("{:?}", dlq.kinds))
        .with("lag", lag)
        .with("seed", test.seed)
        .print();
    assert_passed(scenario, &report);
    assert_eq!(
        dlq.lost, 0,
        "bad records missing from the dead-letter topic"
    );
    assert_eq!(dlq.duplicated, 0, "bad records dead-lettered twice");
    assert_eq!(dlq.wrong_reason, 0, "dead letters with the wrong reason");
    assert_eq!(dlq.unexpected, 0, "good records in the dead-letter topic");
    assert_eq!(lag, 0, "group lag after the --until-end run");
}

/// The destination's `max.message.bytes` in the test below.
const LIMIT: usize = 4000;

/// Objects whose output is too large for the destination, among normal ones: each goes to the
/// dead-letter topic as `output_too_large` and the run goes on to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_too_large_is_dead_lettered() {
    let scenario = "poison-output-too-large/at-least-once";
    let names = Names::new("too-large");
    let bootstrap = brokers();
    let limit = LIMIT.to_string();
    create_topic_on(&bootstrap, &names.source, 2, 1, &[]).await;
    create_topic_on(
        &bootstrap,
        &names.destination,
        2,
        1,
        &[("max.message.bytes", &limit)],
    )
    .await;
    create_topic_on(&bootstrap, &names.dlq, 2, 1, &[]).await;
    let seed = data::seed();
    let mut records = data::generate(500, KEYS, Mix::Clean, seed);
    for r in records.iter_mut().filter(|r| r.id % 50 == 25) {
        r.value = Some(just_fitting(r));
        r.expect = Expect::DeadLetter("output_too_large");
    }
    produce(&names.source, &records).await;

    let (handle, _stop) = run_in_process(&names.args(&["--until-end"]));
    let result = finish(handle).await;

    let report = audit_on(&bootstrap, &names, "at-least-once").await;
    let figures = Figures::from_report(scenario, &report, 0).with("seed", seed);
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            figures.with("run", format!("{e:?}")).print();
            panic!(
                "the --until-end run failed ({e}); an output too large for the destination \
                 must be dead-lettered as output_too_large (docs/records.md: \"Where each \
                 record goes\"), not stop the service"
            );
        }
    };
    let expected_dead = records
        .iter()
        .filter(|r| matches!(r.expect, Expect::DeadLetter(_)))
        .count();
    let dead = consume_all(&names.dlq, expected_dead, IDLE).await;
    let dlq = faults::check_dead_letters(&records, &dead);
    figures
        .with("dead_letters", dlq.expected)
        .with("dlq_lost", dlq.lost)
        .with("dlq_duplicated", dlq.duplicated)
        .with("wrong_reason", dlq.wrong_reason)
        .print();
    assert_passed(scenario, &report);
    assert_eq!(
        dlq.lost, 0,
        "too-large records missing from the dead-letter topic"
    );
    assert_eq!(dlq.duplicated, 0, "too-large records dead-lettered twice");
    assert_eq!(dlq.wrong_reason, 0, "dead letters with the wrong reason");
    assert_eq!(summary.stats.dead_lettered as usize, expected_dead);
}

/// A JSON object for `r` (same key and headers) whose record is about 20 bytes under [`LIMIT`]
/// as librdkafka counts it (value, key, headers and at most 36 bytes of record overhead), so
/// the output, 43 bytes longer (`,"hash":"<32 hex>"`), is over it.
fn just_fitting(r: &data::TestRecord) -> Vec<u8> {
    just_fitting_under(r, LIMIT)
}

/// A JSON object for `r` about 20 bytes under `limit` as librdkafka counts it.
fn just_fitting_under(r: &data::TestRecord, limit: usize) -> Vec<u8> {
    let headers: usize = r
        .headers
        .iter()
        .map(|(k, v)| 2 + k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    let size = limit - 20 - 36 - r.key.len() - headers;
    let head = format!(r#"{{"id":{},"blob":""#, r.id);
    let pad = size - head.len() - 2;
    format!("{head}{}\"}}", "x".repeat(pad)).into_bytes()
}

/// The limit dead letters run into in the tests below.
const DLQ_LIMIT: usize = 4000;

/// Where [`DLQ_LIMIT`] is set.
#[derive(Debug, Clone, Copy, PartialEq)]
enum DlqLimit {
    /// The producer's `message.max.bytes`: outputs are refused too.
    Producer,
    /// The dead-letter topic's `max.message.bytes`: outputs still fit the destination.
    Topic,
}

/// Dead letters over the producer's `message.max.bytes` once the dead-letter headers are added
/// (objects whose output is refused too, and values that are not JSON): each goes to the
/// dead-letter topic without its value, with the value's length and md5 in headers, and the run
/// goes on to the end; `verify` passes and counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_too_large_for_the_producer_goes_without_its_value() {
    dead_letters_too_large(DlqLimit::Producer).await;
}

/// The same under the dead-letter topic's own `max.message.bytes`, which the broker would
/// enforce after the input is gone: checked before sending, and batches of small dead letters
/// stay under it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_too_large_for_its_topic_goes_without_its_value() {
    dead_letters_too_large(DlqLimit::Topic).await;
}

async fn dead_letters_too_large(limit: DlqLimit) {
    let scenario = match limit {
        DlqLimit::Producer => "poison-dead-letter-too-large-for-producer/at-least-once",
        DlqLimit::Topic => "poison-dead-letter-too-large-for-topic/at-least-once",
    };
    let names = Names::new("dlq-too-large");
    let bootstrap = brokers();
    let topic_limit = DLQ_LIMIT.to_string();
    for topic in [&names.source, &names.destination, &names.dlq] {
        let config: &[(&str, &str)] = if limit == DlqLimit::Topic && topic == &names.dlq {
            &[("max.message.bytes", &topic_limit)]
        } else {
            &[]
        };
        create_topic_on(&bootstrap, topic, 2, 1, config).await;
    }
    let seed = data::seed();
    let mut records = data::generate(300, KEYS, Mix::Clean, seed);
    let mut without_value = Vec::new();
    for r in records.iter_mut() {
        match r.id % 30 {
            // About 20 bytes under the limit: the output (43 bytes longer) is over the
            // producer's limit, and the dead letter (its headers add about 150) over both.
            15 if r.id % 60 == 15 => {
                r.value = Some(just_fitting_under(r, DLQ_LIMIT));
                if limit == DlqLimit::Producer {
                    r.expect = Expect::DeadLetter("output_too_large");
                    without_value.push(r.id);
                }
            }
            15 => {
                let mut value = just_fitting_under(r, DLQ_LIMIT);
                value.truncate(value.len() - 2); // no closing `"}`
                r.value = Some(value);
                r.expect = Expect::DeadLetter("invalid_json");
                without_value.push(r.id);
            }
            // Small dead letters, many to a batch.
            5 | 10 | 20 | 25 => {
                r.value = Some(b"[1,2]".to_vec());
                r.expect = Expect::DeadLetter("not_an_object");
            }
            _ => {}
        }
    }
    produce(&names.source, &records).await;

    let producer_limit = format!("producer.message.max.bytes={DLQ_LIMIT}");
    let mut flags = vec!["--until-end"];
    if limit == DlqLimit::Producer {
        flags.extend(["-X", &producer_limit]);
    }
    let (handle, _stop) = run_in_process(&names.args(&flags));
    let result = finish(handle).await;

    let report = audit_on(&bootstrap, &names, "at-least-once").await;
    let expected = records
        .iter()
        .filter(|r| matches!(r.expect, Expect::DeadLetter(_)))
        .count();
    let dead = consume_all(&names.dlq, expected, IDLE).await;
    let dlq = faults::check_dead_letters(&records, &dead);
    Figures::from_report(scenario, &report, 0)
        .with("seed", seed)
        .with("dead_letters", dlq.expected)
        .with("without_value", report.counts.dead_letters_without_value)
        .with("run", format!("{:?}", result.as_ref().err()))
        .print();
    let summary = result.expect(
        "a dead letter too large for its limit must go without its value, not stop the run",
    );
    assert_passed(scenario, &report);
    assert_eq!(dlq.lost, 0, "records missing from the dead-letter topic");
    assert_eq!(dlq.duplicated, 0, "records dead-lettered twice");
    assert_eq!(dlq.wrong_reason, 0, "dead letters with the wrong reason");
    assert_eq!(summary.stats.dead_lettered as usize, expected);
    assert_eq!(
        report.counts.dead_letters_without_value as usize,
        without_value.len()
    );
    let by_id = data::by_id(&dead);
    for r in records.iter().filter(|r| without_value.contains(&r.id)) {
        let d = by_id[&r.id][0];
        let value = r.value.as_deref().expect("a value");
        assert_eq!(d.value, None, "record {}: the value is left out", r.id);
        assert_eq!(
            d.key.as_deref(),
            Some(&r.key[..]),
            "record {}: key kept",
            r.id
        );
        assert_eq!(
            d.header_str("ktransform.value.dropped"),
            Some(value.len().to_string().as_str())
        );
        assert_eq!(
            d.header_str("ktransform.value.md5"),
            Some(hex::encode(md5::Md5::digest(value)).as_str())
        );
    }
}
