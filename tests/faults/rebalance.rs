//! Fault: a rebalance storm. While records keep arriving, instances of one group (in-process)
//! join and leave (a graceful stop) every 1-4 s, 1 to 4 of them at a time; then the last ones
//! catch up to lag 0 and stop. Nothing is lost and the first deliveries of each key stay in
//! order, under every kind of rebalance: the classic protocol with cooperative-sticky
//! (incremental) and with range (eager, every member gives up everything on every
//! rebalance), and the consumer protocol (KIP-848, incremental, the broker's `uniform`
//! assignor). Duplicates are allowed and reported.
//!
//! Short (default): 30 s of storm at 2,000 records/s, three storms two at a time: about 1 min
//! each in a debug build. `KTRANSFORM_CHAOS=1`: 120 s: about 3 min each. Env
//! `KTRANSFORM_FAULT_STORM_SECONDS`, `KTRANSFORM_FAULT_STORM_RATE` (records/s); data:
//! `KTRANSFORM_TEST_SEED`.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::common::data::{self, Mix};
use crate::common::faults::{self, assert_passed, audit_on, Figures};
use crate::common::{brokers, lag_on, produce_on, run_in_process, stop, Names, Running, KEYS};
use ktransform::error::exit;

const MAX_INSTANCES: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_storm_cooperative_sticky() {
    let assignor = "consumer.partition.assignment.strategy=cooperative-sticky";
    storm("cooperative-sticky", &["-X", assignor]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_storm_range_eager() {
    storm(
        "range",
        &["-X", "consumer.partition.assignment.strategy=range"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_storm_consumer_protocol() {
    let flags = [
        "--group-protocol",
        "consumer",
        "-X",
        "consumer.group.remote.assignor=uniform",
    ];
    storm("consumer-uniform", &flags).await;
}

/// A storm of a group whose instances run with `flags`, named `kind` in the figures.
async fn storm(kind: &str, flags: &[&str]) {
    let scenario = format!("rebalance-storm/{kind}");
    let seconds = faults::scaled("KTRANSFORM_FAULT_STORM_SECONDS", 30, 120);
    let rate = faults::scaled("KTRANSFORM_FAULT_STORM_RATE", 2_000, 2_000);
    let names = Names::new(&format!("storm-{kind}"));
    names.create(6).await;
    let seed = data::seed();
    let records = data::generate(seconds * rate, KEYS, Mix::Clean, seed);
    let producer = {
        let source = names.source.clone();
        tokio::spawn(
            async move { produce_on(&brokers(), &source, &records, Some(rate as f64)).await },
        )
    };

    let args = names.args(flags);
    let mut instances: Vec<Running> = vec![run_in_process(&args)];
    let (mut joins, mut leaves, mut unclean) = (0, 0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds as u64) {
        let (pause, join, victim) = {
            let mut rng = rand::thread_rng();
            let join =
                instances.len() == 1 || (instances.len() < MAX_INSTANCES && rng.gen_bool(0.5));
            (
                Duration::from_millis(rng.gen_range(1_000..4_000)),
                join,
                rng.gen_range(0..instances.len()),
            )
        };
        tokio::time::sleep(pause).await;
        for (handle, _) in &instances {
            assert!(
                !handle.is_finished(),
                "{scenario}: an instance stopped by itself"
            );
        }
        if join {
            instances.push(run_in_process(&args));
            joins += 1;
        } else {
            unclean += leave(&scenario, instances.swap_remove(victim)).await;
            leaves += 1;
        }
    }
    let produced = producer.await.expect("the producer task");

    // The survivors catch up.
    let caught_up = Instant::now();
    while lag_on(&brokers(), &names.group, &names.source).await != Some(0) {
        assert!(
            caught_up.elapsed() < faults::drain_cap(),
            "{scenario}: group lag not 0 within {:?} of the storm's end",
            faults::drain_cap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let survivors = instances.len();
    for instance in instances {
        unclean += leave(&scenario, instance).await;
    }

    let report = audit_on(&brokers(), &names, "at-least-once").await;
    Figures::from_report(&scenario, &report, joins + leaves)
        .with("joins", joins)
        .with("leaves", leaves)
        .with("survivors", survivors)
        .with("stops_not_committed", unclean)
        .with("seed", seed)
        .print();
    assert_eq!(report.counts.source_records as usize, produced.len());
    assert_passed(&scenario, &report);
    assert_eq!(report.counts.lost, 0, "{scenario}: records lost");
    assert_eq!(
        report.counts.order_violations, 0,
        "{scenario}: key order broken"
    );
}

/// Stops an instance gracefully. Returns 1 if it could not commit everything before its
/// deadline (exit 3: allowed, its records are replayed), 0 if it stopped cleanly; any other
/// error fails the test.
async fn leave(scenario: &str, instance: Running) -> usize {
    match stop(instance).await {
        Ok(_) => 0,
        Err(e) if e.exit_code() == exit::SHUTDOWN_TIMEOUT => {
            eprintln!("{scenario}: an instance stopped with exit 3: {e}");
            1
        }
        Err(e) => panic!("{scenario}: an instance failed to stop: {e}"),
    }
}
