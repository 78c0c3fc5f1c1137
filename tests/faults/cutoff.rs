//! Fault: one of an instance's clients cut off from the brokers while the other is answered
//! (`ktransform::cutoff`). Soaks with long broker outages left an instance whose consumer, and
//! another whose producer, never reconnected (librdkafka#5301: a Metadata response without
//! brokers from a broker starting up, and every broker decommissioned for good). Here a proxy
//! in front of the broker stops answering one instance's consumer or producer (by its
//! `client.id`) and nothing else: the instance must stop by itself (exit 1, `Error::CutOff`
//! naming the client) while the other member takes its partitions and nothing is lost. And no
//! false alarm: an idle member (more members than partitions) and a broker outage longer than
//! the session and the bound leave every instance running. A broker of each test's own; `--stall-timeout 5s`
//! (cut off after 20 s) and a 6 s session keep each test within 1-2 minutes.

use std::time::Duration;

use ktransform::cutoff::Client;
use ktransform::Error;
use rdkafka::consumer::Consumer;

use crate::common::data::{self, Mix};
use crate::common::faults::{self, assert_passed, audit_on, Figures};
use crate::common::kafka::reader_on;
use crate::common::nodes::{free_port, Brokers};
use crate::common::proxy::Proxy;
use crate::common::run::finish;
use crate::common::{poll_until, produce_on, run_in_process_on, stop, Names, CAP, KEYS};

const FLAGS: [&str; 6] = [
    "--stall-timeout",
    "5s",
    "-X",
    "consumer.session.timeout.ms=6000",
    "--drain-timeout",
    "3s",
];

/// Partitions per member of `group`, as its coordinator describes it.
async fn assigned(bootstrap: &str, group: &str) -> Vec<usize> {
    let (bootstrap, group) = (bootstrap.to_string(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let reader = reader_on(&bootstrap);
        ktransform::lag::group::describe(reader.client(), &group, Duration::from_secs(10))
            .map(|g| g.assigned())
            .unwrap_or_default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_consumer_is_cut_off_stops_and_nothing_is_lost() {
    cut_off(Client::Consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_producer_is_cut_off_stops_and_nothing_is_lost() {
    cut_off(Client::Producer).await;
}

/// Two instances share two partitions; the proxy stops answering instance a's `client`, which
/// reaches the broker only through it. Instance a must stop with `Error::CutOff` naming that
/// client, b takes over, and nothing is lost.
async fn cut_off(client: Client) {
    let scenario = format!("cut-off/{client}");
    let (proxy_port, proxied_port) = (free_port(), free_port());
    let env = [
        ("KAFKA_PROXIED_PORT", proxied_port.to_string()),
        ("KAFKA_PROXIED_ADVERTISED_PORT", proxy_port.to_string()),
    ];
    let broker = tokio::task::spawn_blocking(move || {
        let env: Vec<_> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Brokers::single_with("cutoff-broker", &env)
    })
    .await
    .unwrap();
    let bootstrap = broker.bootstrap.clone();
    let cut_id = format!("cut-off-{client}");
    let proxy = Proxy::start(proxy_port, proxied_port, &cut_id);
    let names = Names::new("cut-off");
    names.create_on(&bootstrap, 2, 1).await;
    let records = data::generate(3_000, KEYS, Mix::Clean, data::seed());
    produce_on(&bootstrap, &names.source, &records[..1_500], None).await;

    let via_proxy = format!("127.0.0.1:{proxy_port}");
    let id_flag = format!("{client}.client.id={cut_id}");
    let a_flags: Vec<&str> = FLAGS.iter().copied().chain(["-X", &id_flag]).collect();
    let (a, a_stop) = run_in_process_on(&via_proxy, &names.args(&a_flags));
    let (mut b, b_stop) = run_in_process_on(&bootstrap, &names.args(&FLAGS));
    poll_until("both members owning a partition", CAP, || async {
        let members = assigned(&bootstrap, &names.group).await;
        members.len() == 2 && members.iter().all(|&n| n > 0)
    })
    .await;

    proxy.cut();
    produce_on(&bootstrap, &names.source, &records[1_500..], None).await;
    let outcome = finish(a).await;
    drop(a_stop);
    match &outcome {
        Err(e @ Error::CutOff { client: cut, .. }) if *cut == client => {
            assert_eq!(e.exit_code(), 1, "{scenario}: {e}")
        }
        other => {
            panic!("{scenario}: instance a should stop with its {client} cut off, got {other:?}")
        }
    }
    assert!(
        !b.is_finished(),
        "{scenario}: the instance that was not cut off stopped: {:?}",
        (&mut b).await
    );
    faults::wait_caught_up(&scenario, &bootstrap, &names, &mut b).await;
    stop((b, b_stop))
        .await
        .unwrap_or_else(|e| panic!("{scenario}: instance b did not stop cleanly: {e}"));
    let report = audit_on(&bootstrap, &names, "at-least-once").await;
    Figures::from_report(&scenario, &report, 1).print();
    assert_passed(&scenario, &report);
    assert_eq!(report.counts.lost, 0, "{scenario}: records lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cut_off_for_an_idle_member_nor_through_a_broker_outage() {
    let scenario = "cut-off/false-alarms";
    let broker = tokio::task::spawn_blocking(|| Brokers::single("cutoff-outage"))
        .await
        .unwrap();
    let bootstrap = broker.bootstrap.clone();
    let names = Names::new("cut-off-idle");
    // One partition, two members: one of them owns nothing, and is asked every check.
    names.create_on(&bootstrap, 1, 1).await;
    let records = data::generate(2_000, KEYS, Mix::Clean, data::seed());
    produce_on(&bootstrap, &names.source, &records[..1_000], None).await;
    let (mut a, a_stop) = run_in_process_on(&bootstrap, &names.args(&FLAGS));
    let (mut b, b_stop) = run_in_process_on(&bootstrap, &names.args(&FLAGS));
    poll_until("two members, one idle", CAP, || async {
        let mut members = assigned(&bootstrap, &names.group).await;
        members.sort_unstable();
        members == [0, 1]
    })
    .await;
    faults::wait_caught_up(scenario, &bootstrap, &names, &mut a).await;
    // Past the bound (20 s) with the idle member asked every 5 s.
    tokio::time::sleep(Duration::from_secs(25)).await;

    // An outage past the session (6 s) and the bound: both members lose their partitions, and
    // neither client gets an answer.
    let broker = std::sync::Arc::new(broker);
    let node = broker.clone();
    tokio::task::spawn_blocking(move || node.stop_node(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let node = broker.clone();
    tokio::task::spawn_blocking(move || node.start_node(1))
        .await
        .unwrap();
    produce_on(&bootstrap, &names.source, &records[1_000..], None).await;
    faults::wait_caught_up(scenario, &bootstrap, &names, &mut a).await;
    for (name, handle) in [("a", &mut a), ("b", &mut b)] {
        assert!(
            !handle.is_finished(),
            "{scenario}: instance {name} stopped by itself: {:?}",
            handle.await
        );
    }
    for (name, run) in [("a", (a, a_stop)), ("b", (b, b_stop))] {
        stop(run)
            .await
            .unwrap_or_else(|e| panic!("{scenario}: instance {name} did not stop cleanly: {e}"));
    }
    let report = audit_on(&bootstrap, &names, "at-least-once").await;
    Figures::from_report(scenario, &report, 1).print();
    assert_passed(scenario, &report);
    assert_eq!(report.counts.lost, 0, "{scenario}: records lost");
}
