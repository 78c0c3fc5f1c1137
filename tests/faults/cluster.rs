//! Fault: in a three-node cluster (replication 3, min.insync.replicas 2, producers acks=all),
//! the leader of the busiest source partition is SIGKILLed mid-stream, the stream goes on
//! with two nodes, then the node is restarted. ktransform is not restarted: it must ride
//! out the failover, catch up to lag 0 and stop cleanly, with nothing lost (at-least-once)
//! and, under exactly-once, nothing twice for a `read_committed` reader. Both guarantees under
//! both group protocols.
//!
//! The cluster is `KAFKA_NODES=3 scripts/kafka.sh` (see `Brokers::cluster` for its ports):
//! reused if it runs, else started here and stopped at the end. The internal topics are
//! created (a group join, a transaction) while all three nodes are up, and after a restart the
//! next kill waits until every partition has all its replicas in sync again.
//!
//! Short (default): 60,000 records per guarantee and protocol, one kill each: about 3-4 min
//! in a debug build, with the cluster's start. `KTRANSFORM_CHAOS=1`: 300,000 records, three kills per guarantee
//! (the then-busiest partition's leader, not the node killed just before): about 6 min. Env
//! `KTRANSFORM_FAULT_CLUSTER_RECORDS`, `KTRANSFORM_FAULT_CLUSTER_KILLS`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::data::{self, Mix};
use crate::common::faults::{self, assert_passed, audit_on, Figures};
use crate::common::nodes::Brokers;
use crate::common::{
    lag_on, produce_on, run_in_process_on, settled_partition_lag, stop, wait_for_records_on, Names,
    CAP, KEYS, THROTTLE,
};

const PARTITIONS: i32 = 6;

/// Both guarantees under both group protocols in turn on one cluster: its start-up is the
/// slow part, and two tests killing nodes of one cluster at once would blur each other's
/// figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_stream() {
    let cluster = Arc::new(tokio::task::spawn_blocking(Brokers::cluster).await.unwrap());
    faults::warm_up(&cluster.bootstrap).await;
    for protocol in faults::PROTOCOLS {
        for guarantee in ["at-least-once", "exactly-once"] {
            leader_kill(&cluster, guarantee, protocol).await;
        }
    }
}

async fn leader_kill(cluster: &Arc<Brokers>, guarantee: &str, protocol: &'static str) {
    let scenario = format!("cluster-leader-kill/{guarantee}/{protocol}");
    let n = faults::scaled("KTRANSFORM_FAULT_CLUSTER_RECORDS", 60_000, 300_000);
    let kills = faults::scaled("KTRANSFORM_FAULT_CLUSTER_KILLS", 1, 3);
    let bootstrap = cluster.bootstrap.as_str();
    let names = Names::new(&format!("cluster-{guarantee}-{protocol}"));
    names.create_on(bootstrap, PARTITIONS, 3).await;
    let seed = data::seed();
    let records = data::generate(n, KEYS, Mix::Clean, seed);
    produce_on(bootstrap, &names.source, &records, None).await;

    let transactional_id = format!("ktr-{}", names.group);
    let flags = [
        "--guarantee",
        guarantee,
        "--transactional-id",
        &transactional_id,
    ];
    let group = faults::group_flags(protocol, false);
    let (mut handle, shutdown) =
        run_in_process_on(bootstrap, &names.args(&[THROTTLE, &flags, &group].concat()));
    let mut victims: Vec<(i32, i32)> = Vec::new();
    for round in 0..kills {
        // Spread the kills over the first half of the stream.
        let at = (n * (round + 1) / (2 * kills + 1)) as i64;
        wait_for_records_on(bootstrap, &names.destination, at).await;
        let lag = settled_partition_lag(bootstrap, &names.group, &names.source).await;
        let leaders = faults::settled_leaders(bootstrap, &names.source, PARTITIONS as usize).await;
        // The busiest partition's leader; over several kills, not the node killed last.
        let mut busiest: Vec<(i32, i64)> = lag.iter().map(|(&p, &l)| (p, l)).collect();
        busiest.sort_by_key(|&(p, l)| (-l, p));
        let last = victims.last().map(|&(node, _)| node);
        // Under exactly-once, not the group coordinator's node: librdkafka 2.12's
        // send_offsets_to_transaction blocks past its timeout when that broker disappears
        // (librdkafka #5456, #5511), and ktransform then stops after its transaction watchdog
        // (TxnError::Stuck) instead of riding the failover out. Every other leader is fair game.
        let spared = if guarantee == "exactly-once" {
            let (b, g) = (bootstrap.to_string(), names.group.clone());
            tokio::task::spawn_blocking(move || {
                faults::coordinator_on(&b, "__consumer_offsets", &g)
            })
            .await
            .unwrap()
        } else {
            None
        };
        let candidates: Vec<(i32, i32)> = busiest
            .iter()
            .map(|&(p, _)| (p, leaders[&p]))
            .filter(|&(_, node)| Some(node) != spared)
            .collect();
        let (partition, victim) = candidates
            .iter()
            .copied()
            .find(|&(_, node)| Some(node) != last)
            .or_else(|| candidates.first().copied())
            .unwrap_or_else(|| {
                panic!("{scenario}: every partition is led by the group coordinator {spared:?}")
            });
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.kill_node(victim))
            .await
            .unwrap();
        victims.push((victim, partition));

        // The stream goes on with two nodes: the group commits further while the node is down.
        let before: i64 = lag.values().sum();
        let started = Instant::now();
        loop {
            if handle.is_finished() {
                panic!(
                    "{scenario}: ktransform stopped after node {victim} was killed: {:?}",
                    handle.await
                );
            }
            let now = lag_on(bootstrap, &names.group, &names.source).await;
            if now.is_some_and(|l| l == 0 || l < before - (n / (4 * kills)) as i64) {
                break;
            }
            assert!(
                started.elapsed() < CAP,
                "{scenario}: no progress within {CAP:?} with node {victim} down (lag {now:?}, was {before})"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.start_node(victim))
            .await
            .unwrap();
        // One node down at a time: the next kill (or scenario) waits for this one to catch up.
        faults::wait_fully_replicated(bootstrap).await;
    }

    faults::wait_caught_up(&scenario, bootstrap, &names, &mut handle).await;
    let summary = stop((handle, shutdown))
        .await
        .unwrap_or_else(|e| panic!("{scenario}: ktransform did not stop cleanly: {e}"));

    let report = audit_on(bootstrap, &names, guarantee).await;
    let killed: Vec<String> = victims
        .iter()
        .map(|(node, partition)| format!("node{node}@p{partition}"))
        .collect();
    Figures::from_report(&scenario, &report, victims.len())
        .with("killed", killed.join(","))
        .with("rebalances", summary.stats.rebalances)
        .with("seed", seed)
        .print();
    assert_passed(&scenario, &report);
    assert_eq!(report.counts.lost, 0, "{scenario}: records lost");
}
