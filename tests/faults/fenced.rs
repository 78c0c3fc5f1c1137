//! Fault: the instance's transactional producer fenced by another producer that takes the same
//! transactional id (a zombie's successor, or a misconfigured twin). The fenced instance must
//! stop on its own with a message naming the cause and a non-zero exit, having committed
//! nothing past its last committed transaction; a new instance then drains, and a
//! `read_committed` reader sees every record exactly once. About 30 s.

use std::time::Duration;

use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

use crate::common::data::Mix;
use crate::common::faults::{self, assert_passed, audit_on, Figures};
use crate::common::{brokers, prepare, wait_for_records_on, Binary, THROTTLE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_producer_stops_cleanly() {
    let scenario = "fenced-producer/exactly-once";
    // Throttled to under 2,000 records/s per partition: about 15 s of work, fenced at 10%.
    let n = 60_000;
    let test = prepare("fenced", 2, n, Mix::Clean).await;
    let names = &test.names;
    let transactional_id = format!("ktr-{}", names.group);
    let flags = [
        "--guarantee",
        "exactly-once",
        "--transactional-id",
        &transactional_id,
    ];
    let args = names.args(&[THROTTLE, &flags].concat());
    let binary = Binary::run(&args);
    // Mid-stream: some transactions committed, more to come.
    wait_for_records_on(&brokers(), &names.destination, (n / 10) as i64).await;

    let id = transactional_id.clone();
    tokio::task::spawn_blocking(move || {
        let twin: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("transactional.id", &id)
            .create()
            .expect("a transactional producer");
        // Bumps the epoch of the id: the running instance's producer is now fenced.
        twin.init_transactions(Duration::from_secs(30))
            .expect("init_transactions");
    })
    .await
    .unwrap();

    let exit = binary.wait(faults::EXIT_CAP).await;
    let fenced_exit = exit.code;
    assert!(
        matches!(exit.code, Some(c) if c != 0),
        "a fenced instance must exit non-zero by itself; got {:?}; stderr:\n{}",
        exit.code,
        exit.stderr
    );
    assert!(
        exit.stderr.to_lowercase().contains("fenced"),
        "the message must name the cause (fenced); stderr:\n{}",
        exit.stderr
    );

    let drain: Vec<String> = args
        .iter()
        .cloned()
        .chain(["--until-end".to_string()])
        .collect();
    let exit = Binary::run(&drain).wait(faults::drain_cap()).await;
    assert_eq!(
        exit.code,
        Some(0),
        "the draining run; stderr:\n{}",
        exit.stderr
    );

    let report = audit_on(&brokers(), names, "exactly-once").await;
    Figures::from_report(scenario, &report, 1)
        .with("fenced_exit", format!("{fenced_exit:?}"))
        .with("seed", test.seed)
        .print();
    assert_passed(scenario, &report);
    assert_eq!(report.counts.lost, 0, "records lost");
    assert_eq!(report.counts.duplicates, 0, "records duplicated");
}
