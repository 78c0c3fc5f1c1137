//! Fault: the only broker goes down mid-stream and comes back on its data. ktransform is not
//! restarted: it must ride out the outage (still running afterwards), catch up to lag 0, stop
//! cleanly, and have lost nothing (at-least-once; duplicates are reported).
//!
//! The broker is a single node of this test's own (free ports, scratch state directory,
//! `scripts/kafka.sh`), never the shared one.
//!
//! Short (default): 60,000 records, one clean restart (SIGTERM) with a 5 s outage: about
//! 1 min in a debug build, most of it broker start-ups. `KTRANSFORM_CHAOS=1`: 300,000 records,
//! 4 outages of 5-20 s, alternately SIGKILL and SIGTERM: about 4 min. Sizes: env
//! `KTRANSFORM_FAULT_BROKER_RECORDS`, `KTRANSFORM_FAULT_BROKER_RESTARTS`.

use std::time::Duration;

use rand::Rng;

use crate::common::data::{self, Mix};
use crate::common::faults::{self, assert_passed, audit_on, Figures};
use crate::common::nodes::Brokers;
use crate::common::{
    create_topic_on, produce_on, run_in_process_on, stop, wait_for_records_on, Names, KEYS,
    THROTTLE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream() {
    let n = faults::scaled("KTRANSFORM_FAULT_BROKER_RECORDS", 60_000, 300_000);
    let restarts = faults::scaled("KTRANSFORM_FAULT_BROKER_RESTARTS", 1, 4);
    let broker = tokio::task::spawn_blocking(|| Brokers::single("fault-broker"))
        .await
        .unwrap();
    let bootstrap = broker.bootstrap.clone();
    let names = Names::new("broker-restart");
    names.create_on(&bootstrap, 6, 1).await;
    let seed = data::seed();
    let records = data::generate(n, KEYS, Mix::Clean, seed);
    produce_on(&bootstrap, &names.source, &records, None).await;

    let (mut handle, shutdown) = run_in_process_on(&bootstrap, &names.args(THROTTLE));
    let broker = std::sync::Arc::new(broker);
    let mut outages = Vec::new();
    for round in 0..restarts {
        // Spread the outages over the first half of the stream.
        let at = (n * (round + 1) / (2 * restarts + 1)) as i64;
        wait_for_records_on(&bootstrap, &names.destination, at).await;
        let (kill, outage) = if faults::chaos() {
            let secs = rand::thread_rng().gen_range(5..=20);
            (round % 2 == 0, Duration::from_secs(secs))
        } else {
            (false, Duration::from_secs(5))
        };
        let b = broker.clone();
        tokio::task::spawn_blocking(move || if kill { b.kill_node(1) } else { b.stop_node(1) })
            .await
            .unwrap();
        tokio::time::sleep(outage).await;
        assert!(
            !handle.is_finished(),
            "ktransform stopped during broker outage {round}: {:?}",
            handle.await
        );
        let b = broker.clone();
        tokio::task::spawn_blocking(move || b.start_node(1))
            .await
            .unwrap();
        outages.push(format!(
            "{}{}s",
            if kill { "kill+" } else { "term+" },
            outage.as_secs()
        ));
    }

    // Catching up, without a restart of ktransform.
    faults::wait_caught_up("broker-restart", &bootstrap, &names, &mut handle).await;
    let summary = stop((handle, shutdown))
        .await
        .expect("ktransform stops cleanly after the outages");

    let report = audit_on(&bootstrap, &names, "at-least-once").await;
    Figures::from_report("broker-restart/at-least-once", &report, restarts)
        .with("outages", outages.join(","))
        .with("consumed", summary.stats.consumed)
        .with("seed", seed)
        .print();
    assert_passed("broker-restart", &report);
    assert_eq!(report.counts.lost, 0, "records lost");
}

/// Fatal at start: the destination does not exist and the broker does not create topics
/// (`auto.create.topics.enable=false`). Every output would wait for the topic forever; the run
/// must refuse to start instead, naming `--destination` (exit code 2). About 20 s, most of it
/// the broker's start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_destination_without_auto_creation_is_fatal() {
    let broker = tokio::task::spawn_blocking(|| {
        Brokers::single_with("no-auto-create", &[("KAFKA_AUTO_CREATE_TOPICS", "false")])
    })
    .await
    .unwrap();
    let bootstrap = broker.bootstrap.clone();
    let names = Names::new("missing-destination");
    create_topic_on(&bootstrap, &names.source, 2, 1, &[]).await;
    let records = data::generate(100, KEYS, Mix::Clean, data::seed());
    produce_on(&bootstrap, &names.source, &records, None).await;

    let (handle, _shutdown) = run_in_process_on(&bootstrap, &names.args(&["--until-end"]));
    let result = tokio::time::timeout(faults::EXIT_CAP, handle)
        .await
        .expect("the run must stop by itself")
        .unwrap();
    Figures {
        scenario: "missing-destination/no-auto-create".into(),
        records: 100,
        faults: 1,
        lost: 0,
        duplicated: 0,
        extra: vec![(
            "exit_code",
            format!("{:?}", result.as_ref().err().map(|e| e.exit_code())),
        )],
    }
    .print();
    match result {
        Err(ktransform::Error::Config(e)) => {
            assert_eq!(e.flag, "--destination", "{e}");
            assert!(e.message.contains("does not exist"), "{e}");
        }
        other => panic!("expected a --destination configuration error, got {other:?}"),
    }
    assert_eq!(
        ktransform::Error::Config(ktransform::config::ConfigError {
            flag: "--destination".into(),
            message: String::new(),
        })
        .exit_code(),
        2
    );
    drop(broker);
}
