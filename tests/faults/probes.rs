//! Fault: no broker, at start and for longer than `/healthz`'s broker window (30 s), as in a
//! Kafka maintenance window. A liveness probe must not restart the instance for it: `/livez`
//! stays 200 while `/healthz` says `no broker seen up recently`, the process keeps running, and
//! once the broker is back it is healthy again, reads what was produced since and has lost
//! nothing. A broker of this test's own (`scripts/kafka.sh` on free ports), never the shared
//! one. 1 to 3 minutes on 2 shared cores: the outage and two broker starts.

use crate::common::data::{self, Mix};
use crate::common::faults::{self, assert_passed, audit_on, Figures};
use crate::common::http::{args_with_http, free_addr, get};
use crate::common::nodes::{free_port, Brokers};
use crate::common::{poll_until, produce_on, run_in_process_on, stop, Names, CAP, KEYS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_stays_up_while_the_broker_is_away() {
    let scenario = "broker-away/probes";
    let broker = tokio::task::spawn_blocking(|| Brokers::single("probes-broker"))
        .await
        .unwrap();
    let bootstrap = broker.bootstrap.clone();
    let names = Names::new("broker-away");
    names.create_on(&bootstrap, 2, 1).await;
    let records = data::generate(3_000, KEYS, Mix::Clean, data::seed());
    produce_on(&bootstrap, &names.source, &records[..2_000], None).await;

    let addr = free_addr();
    // The outage (past /healthz's 30 s, then a broker start on a loaded machine) can outlast
    // the default 45 s session; the member should ride it out, not be expelled and rejoin.
    let session = ["-X", "consumer.session.timeout.ms=120000"];
    let (mut handle, shutdown) =
        run_in_process_on(&bootstrap, &args_with_http(&names, addr, &session));
    let status = |path: &'static str| async move { get(addr, path).await.map(|(code, _)| code) };
    poll_until("/healthz 200 with the broker up", CAP, || async {
        status("/healthz").await == Some(200)
    })
    .await;

    let broker = std::sync::Arc::new(broker);
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.stop_node(1))
        .await
        .unwrap();
    poll_until("/healthz 503 with the broker away", CAP, || async {
        status("/healthz").await == Some(503)
    })
    .await;
    let (healthz, why) = get(addr, "/healthz").await.expect("/healthz answers");
    let livez = status("/livez").await;
    assert!(
        !handle.is_finished(),
        "{scenario}: ktransform stopped while the broker was away: {:?}",
        (&mut handle).await
    );
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.start_node(1))
        .await
        .unwrap();
    assert_eq!((healthz, why.trim()), (503, "no broker seen up recently"));
    assert_eq!(
        livez,
        Some(200),
        "/livez while the broker is away: a liveness probe would restart a working process"
    );

    poll_until("/healthz 200 with the broker back", CAP, || async {
        status("/healthz").await == Some(200)
    })
    .await;
    // New records after the outage, read and committed: the instance works again, and its
    // stop does not race its reconnection to the group coordinator.
    produce_on(&bootstrap, &names.source, &records[2_000..], None).await;
    faults::wait_caught_up(scenario, &bootstrap, &names, &mut handle).await;
    stop((handle, shutdown))
        .await
        .unwrap_or_else(|e| panic!("{scenario}: ktransform did not stop cleanly: {e}"));
    let report = audit_on(&bootstrap, &names, "at-least-once").await;
    Figures::from_report(scenario, &report, 1)
        .with("livez_while_away", livez.map_or(0, u16::from))
        .print();
    assert_passed(scenario, &report);
    assert_eq!(report.counts.lost, 0, "{scenario}: records lost");
}

/// A pod started during the window: the endpoints listen before the brokers answer, `/livez` 200
/// (no restart), `/healthz` and `/readyz` 503, and a stop while waiting is clean. No broker at
/// all: a port nothing listens on. A few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_answers_while_the_brokers_are_waited_for() {
    let nowhere = format!("127.0.0.1:{}", free_port());
    let names = Names::new("no-broker");
    let addr = free_addr();
    let args = args_with_http(&names, addr, &["--connect-timeout", "5m"]);
    let running = run_in_process_on(&nowhere, &args);
    poll_until(
        "the endpoints while the brokers are waited for",
        CAP,
        || async { get(addr, "/livez").await.is_some() },
    )
    .await;
    let code = |path: &'static str| async move { get(addr, path).await.map(|(code, _)| code) };
    assert_eq!(code("/livez").await, Some(200));
    assert_eq!(code("/healthz").await, Some(503));
    assert_eq!(code("/readyz").await, Some(503));
    stop(running)
        .await
        .expect("a stop while the brokers are waited for is clean");
    poll_until("the endpoints to stop with the run", CAP, || async {
        get(addr, "/livez").await.is_none()
    })
    .await;
}
