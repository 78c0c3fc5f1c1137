//! N instances on one host, started the same way: the default metrics address
//! (127.0.0.1:9464) goes to the first, the others serve on a free port and say which; all
//! consume in one group and nothing is lost. An address that was asked for and cannot be bound
//! still stops the start (exit 2).

mod common;

use std::net::SocketAddr;

use common::data::{self, Mix};
use common::http::{free_addr, get};
use common::{poll_until, prepare, produce, run_binary, Binary, Exit, Names, CAP, KEYS};

/// The address an instance logged it serves its endpoints on, once it has.
fn serving_addr(binary: &Binary) -> Option<SocketAddr> {
    let stderr = binary.stderr_so_far();
    let line = stderr.lines().find(|l| l.contains("serving /metrics"))?;
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    Some(addr.parse().expect("a socket address in the log line"))
}

async fn wait_serving(binary: &mut Binary, which: &str) -> SocketAddr {
    let mut found = None;
    poll_until(
        &format!("instance {which} to serve its endpoints"),
        CAP,
        || {
            found = serving_addr(binary);
            let exited = found.is_none() && binary.exited();
            assert!(
                !exited,
                "instance {which} exited; stderr:\n{}",
                binary.stderr_so_far()
            );
            std::future::ready(found.is_some())
        },
    )
    .await;
    found.unwrap()
}

async fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    get(addr, path).await.map(|(code, _)| code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_default_flags_share_the_work() {
    // Half the records before the instances start, half once both consume: both have work.
    let n = 20_000;
    let names = &Names::new("instances");
    names.create(4).await;
    let records = data::generate(n, KEYS, Mix::Clean, data::seed());
    produce(&names.source, &records[..n / 2]).await;
    // The default flags: only the brokers (env, as in `Binary`), the topics and the group.
    let args = [
        "run",
        "--source",
        &names.source,
        "--destination",
        &names.destination,
        "--group",
        &names.group,
    ];
    let mut first = Binary::spawn_serving(&args);
    let a = wait_serving(&mut first, "1").await;
    let mut second = Binary::spawn_serving(&args);
    let b = wait_serving(&mut second, "2").await;
    assert_ne!(a, b, "two instances serving on one address");
    // At most one of them has the default address (another process may hold it): the other
    // said it took a free port.
    let fallbacks = [&first, &second]
        .iter()
        .filter(|i| {
            i.stderr_so_far()
                .contains("default metrics address is taken")
        })
        .count();
    assert!(fallbacks >= 1, "neither instance logged its fallback port");

    // Both in the group at once: each has partitions (/readyz) and is alive.
    poll_until(
        "both instances ready (partitions assigned)",
        CAP,
        || async {
            status(a, "/readyz").await == Some(200) && status(b, "/readyz").await == Some(200)
        },
    )
    .await;
    for addr in [a, b] {
        assert_eq!(status(addr, "/livez").await, Some(200));
        let (code, body) = get(addr, "/metrics").await.expect("scrape /metrics");
        assert_eq!(code, 200);
        assert!(body.contains("ktransform_assigned_partitions"), "{body}");
    }
    produce(&names.source, &records[n / 2..]).await;

    poll_until("both halves in the destination", CAP, || async {
        common::topic_count_on(&common::brokers(), &names.destination).await >= n as i64
    })
    .await;
    for (instance, which) in [(first, "1"), (second, "2")] {
        instance.terminate();
        let Exit { code, stderr } = instance.wait(CAP).await;
        assert_eq!(code, Some(0), "instance {which}; stderr:\n{stderr}");
    }
    let output = common::consume_all(&names.destination, n, common::IDLE).await;
    let tally = data::tally(records.iter().map(|r| r.id), &output);
    assert_eq!(
        tally.lost, 0,
        "records lost, first ids {:?}",
        tally.lost_ids
    );
    assert_eq!(tally.unexpected, 0, "records that were never produced");
    let order = data::key_order_violations(&output);
    assert!(
        order.is_empty(),
        "key order broken: {:?}",
        &order[..order.len().min(10)]
    );
    assert_eq!(common::group_lag(&names.group, &names.source).await, 0);
}

/// An address that was asked for is a promise to whoever scrapes it: taken, the start fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_metrics_address_that_is_taken_exits_2() {
    let addr = free_addr();
    let _held = std::net::TcpListener::bind(addr).expect("hold the port");
    let test = prepare("instances-taken", 1, 10, Mix::Clean).await;
    let names = &test.names;
    let exit = run_binary(&[
        "run",
        "--source",
        &names.source,
        "--destination",
        &names.destination,
        "--group",
        &names.group,
        "--metrics-addr",
        &addr.to_string(),
    ])
    .await;
    assert_eq!(exit.code, Some(2), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("--metrics-addr") && exit.stderr.contains(&addr.to_string()),
        "the error names the flag and the address:\n{}",
        exit.stderr
    );
}
