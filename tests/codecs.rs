//! Every Kafka compression codec, both ways, with Kafka's own Java client on the other side:
//! a source written by the Java producer with each codec is transformed and audited, and the
//! output, written with the same codec (`-X producer.compression.type`), is read back by the
//! Java consumer and checked record by record. The broker's segment files confirm that both
//! topics are stored with the codec. And a record batch that cannot be decoded (damaged on the
//! broker's disk) stops the run with exit 1, named, with nothing committed past it.
//!
//! Size: env `KTRANSFORM_TEST_CODEC_RECORDS` (default 3,000); data: `KTRANSFORM_TEST_SEED`.

mod common;

use std::collections::HashMap;

use common::data::{self, Expect, Mix};
use common::faults::{assert_passed, audit_on};
use common::segments::{self, HEADER};
use common::{brokers, consume_all, finish, java, produce_to, run_in_process, Names, IDLE, KEYS};
use ktransform::fetch::UndecodableCause;
use ktransform::partition::WorkerError;
use ktransform::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_none_both_ways() {
    both_ways("none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_gzip_both_ways() {
    both_ways("gzip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_snappy_both_ways() {
    both_ways("snappy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_lz4_both_ways() {
    both_ways("lz4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_zstd_both_ways() {
    both_ways("zstd").await;
}

async fn both_ways(codec: &str) {
    let n = common::size("KTRANSFORM_TEST_CODEC_RECORDS", 3_000);
    let names = Names::new(&format!("codec-{codec}"));
    names.create(3).await;
    let seed = data::seed();
    let records = data::generate(n, KEYS, Mix::Poisoned, seed);
    java::produce(&names.source, codec, &records, None).await;
    assert_stored_with(&names.source, codec).await;

    let compression = format!("producer.compression.type={codec}");
    let (handle, _stop) = run_in_process(&names.args(&["--until-end", "-X", &compression]));
    let summary = finish(handle)
        .await
        .unwrap_or_else(|e| panic!("{codec}: the --until-end run failed: {e}"));
    assert_eq!(summary.stats.consumer_errors, 0, "{codec}: consumer errors");

    let report = audit_on(&brokers(), &names, "at-least-once").await;
    assert_passed(codec, &report);
    assert_eq!(report.counts.source_records as usize, n);
    assert_eq!(report.counts.lost, 0, "{codec}: records lost");
    assert_eq!(report.counts.duplicates, 0, "{codec}: duplicates");

    // Read back by the Java consumer and checked by content.
    let by_id: HashMap<u64, &data::TestRecord> = records.iter().map(|r| (r.id, r)).collect();
    let expected = records
        .iter()
        .filter(|r| !matches!(r.expect, Expect::DeadLetter(_)))
        .count();
    let outputs = java::consume(&names.destination, expected).await;
    assert_eq!(outputs.len(), expected, "{codec}: outputs read by Java");
    for output in &outputs {
        let input = by_id[&data::id_of(output)];
        assert_eq!(output.key.as_deref(), Some(&input.key[..]), "{codec}: key");
        match (input.expect, &input.value, &output.value) {
            (Expect::Transformed, Some(value), Some(out)) => data::check_json(value, out)
                .unwrap_or_else(|e| panic!("{codec}: record {}: {e}", input.id)),
            (Expect::Tombstone, None, None) => {}
            other => panic!("{codec}: record {} came out as {other:?}", input.id),
        }
    }
    assert_stored_with(&names.destination, codec).await;
    println!(
        "codec {codec} seed={seed} records={n} outputs={} dead_letters={}",
        outputs.len(),
        report.counts.dead_letters
    );
}

/// Every data batch of the topic is stored with `codec`, or uncompressed where compressing did
/// not make it smaller (librdkafka then sends it as it is), and each partition has at least
/// one batch with `codec`.
async fn assert_stored_with(topic: &str, codec: &str) {
    for partition in 0..3 {
        let batches = segments::batches(topic, partition).await;
        let data: Vec<_> = batches.iter().filter(|b| !b.is_control()).collect();
        assert!(
            data.iter().any(|b| b.codec() == codec),
            "{topic}/{partition}: no batch stored with {codec}: {data:?}"
        );
        assert!(
            data.iter()
                .all(|b| b.codec() == codec || b.codec() == "none"),
            "{topic}/{partition}: batches with another codec than {codec}: {data:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_batch_stops_the_run_at_least_once() {
    corrupt_batch("at-least-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_batch_stops_the_run_exactly_once() {
    corrupt_batch("exactly-once").await;
}

/// Offsets 0-99 are plain, 100-199 one gzip batch (written by the Java producer) whose deflate
/// stream is then damaged on the broker's disk, 200-299 plain again. ktransform must produce
/// 0-99, stop with exit 1 naming offset 100, and commit nothing past it.
async fn corrupt_batch(guarantee: &str) {
    let names = Names::new(&format!("corrupt-{guarantee}"));
    names.create(1).await;
    let records = data::generate(300, KEYS, Mix::Clean, data::seed());
    produce_to(&names.source, 0, &records[..100]).await;
    java::produce(&names.source, "gzip", &records[100..200], None).await;
    produce_to(&names.source, 0, &records[200..]).await;
    let gzip = *segments::batches(&names.source, 0)
        .await
        .iter()
        .find(|b| b.codec() == "gzip")
        .expect("the gzip batch");
    assert_eq!(
        gzip.base_offset, 100,
        "the gzip batch holds offsets 100-199"
    );
    // After gzip's 10-byte header: a deflate block of the reserved type 11.
    segments::overwrite(&names.source, 0, gzip.position + HEADER + 10, &[0xff; 16]).await;

    let (handle, _stop) = run_in_process(&names.args(&["--until-end", "--guarantee", guarantee]));
    let error = finish(handle)
        .await
        .expect_err("a run over a corrupt batch must not end with Ok");
    assert_eq!(error.exit_code(), 1, "{guarantee}: exit code of {error}");
    let message = error.to_string();
    let Error::Worker {
        partition: 0,
        error: WorkerError::Undecodable(undecodable),
    } = error
    else {
        panic!("{guarantee}: expected the undecodable batch to stop the run, got: {message}");
    };
    assert_eq!(undecodable.offset, 100, "{message}");
    assert_eq!(undecodable.cause, UndecodableCause::Corrupt, "{message}");
    assert!(message.contains("offset 100"), "{message}");
    assert!(
        message.contains("kafka-consumer-groups"),
        "the way out: {message}"
    );

    let committed = common::committed(&names.group, &names.source).await[&0];
    let outputs = consume_all(&names.destination, 0, IDLE).await;
    let ids: Vec<u64> = outputs.iter().map(data::id_of).collect();
    println!(
        "corrupt {guarantee}: committed={committed:?} outputs={}",
        ids.len()
    );
    assert!(
        ids.iter().all(|&id| id < 100),
        "{guarantee}: records from or after the corrupt batch were produced"
    );
    match guarantee {
        // Everything before the batch is acknowledged and committed at the stop.
        "at-least-once" => {
            assert_eq!(committed, Some(100), "committed offset");
            assert_eq!(ids.len(), 100, "outputs of offsets 0-99");
        }
        // The open transaction is aborted: what is committed is what is visible, at most 0-99.
        _ => {
            let committed = committed.unwrap_or(0);
            assert!(
                committed <= 100,
                "committed past the corrupt batch: {committed}"
            );
            assert_eq!(
                ids.len() as i64,
                committed,
                "visible outputs = committed offsets"
            );
        }
    }
}
