//! Fault: the only broker goes down mid-stream and comes back on its data. ktransform is not
//! restarted: it must ride out the outage (still running afterwards), catch up to lag 0, stop
//! cleanly, and have lost nothing (at-least-once; duplicates are reported). Under both group
//! protocols, each with a broker of its own.
//!
//! The broker is a single node of this test's own (free ports, scratch state directory,
//! `scripts/kafka.sh`), never the shared one.
//!
//! Short (default): 60,000 records, one clean restart (SIGTERM) with a 5 s outage: about
//! 1 min per protocol in a debug build, most of it broker start-ups. `KTRANSFORM_CHAOS=1`: 300,000 records,
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
    broker_restart("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_consumer_protocol() {
    broker_restart("consumer").await;
}

async fn broker_restart(protocol: &'static str) {
    let scenario = format!("broker-restart/at-least-once/{protocol}");
    let n = faults::scaled("KTRANSFORM_FAULT_BROKER_RECORDS", 60_000, 300_000);
    let restarts = faults::scaled("KTRANSFORM_FAULT_BROKER_RESTARTS", 1, 4);
    // The session timeout of both protocols at its default, 45 s: under `classic` the client's,
    // under `consumer` the broker's (scripts/kafka.sh shortens it for the kill tests). A
    // shorter one than librdkafka's reconnect backoff (up to 10 s) fences the member while the
    // broker restarts, and the records since its last commit are consumed again.
    let broker = tokio::task::spawn_blocking(|| {
        Brokers::single_with("fault-broker", &[("KAFKA_CONSUMER_SESSION_MS", "45000")])
    })
    .await
    .unwrap();
    let bootstrap = broker.bootstrap.clone();
    let names = Names::new(&format!("broker-restart-{protocol}"));
    names.create_on(&bootstrap, 6, 1).await;
    let seed = data::seed();
    let records = data::generate(n, KEYS, Mix::Clean, seed);
    produce_on(&bootstrap, &names.source, &records, None).await;

    let group = faults::group_flags(protocol, false);
    let (mut handle, shutdown) =
        run_in_process_on(&bootstrap, &names.args(&[THROTTLE, &group].concat()));
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
    faults::wait_caught_up(&scenario, &bootstrap, &names, &mut handle).await;
    let summary = stop((handle, shutdown))
        .await
        .unwrap_or_else(|e| panic!("{scenario}: ktransform did not stop cleanly: {e}"));

    let report = audit_on(&bootstrap, &names, "at-least-once").await;
    Figures::from_report(&scenario, &report, restarts)
        .with("outages", outages.join(","))
        .with("consumed", summary.stats.consumed)
        .with("seed", seed)
        .print();
    assert_passed(&scenario, &report);
    assert_eq!(report.counts.lost, 0, "{scenario}: records lost");
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
