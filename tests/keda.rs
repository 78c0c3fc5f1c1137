//! `ktransform lag --lag-threshold`: the replica count KEDA's Kafka scaler would compute, from a
//! real group's offsets: an exactly-once input topic read to its end (a commit marker left per
//! partition), and partitions the group never committed on under either reset policy. The
//! formula itself is unit-tested on worked examples in `src/lag/keda/tests.rs`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use common::data::{self, Mix};
use common::{brokers, committed, config_on, poll_until, produce_to, run_in_process, stop};
use common::{Names, CAP, KEYS};

/// `ktransform lag --json` over one second with `extra` flags: the report.
async fn lag_json(names: &Names, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "lag".to_string(),
        "--group".into(),
        names.group.clone(),
        "--topic".into(),
        names.source.clone(),
        "--interval".into(),
        "1s".into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ktransform"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KTRANSFORM_") {
                command.env_remove(name);
            }
        }
        command
            .args(&args)
            .env("KTRANSFORM_BROKERS", brokers())
            .stdin(Stdio::null())
            .output()
            .expect("run ktransform lag")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "lag; stderr:\n{stderr}");
    println!("lag --json {extra:?}: {stdout}");
    serde_json::from_str(stdout.trim()).expect("lag --json prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_input_read_to_its_end_leaves_keda_a_lag_of_one_per_partition() {
    let (partitions, per_partition) = (3, 100);
    let names = Names::new("keda-markers");
    names.create(partitions).await;
    // One committed transaction per partition: its records, then its commit marker.
    let records = data::generate(partitions as usize * per_partition, KEYS, Mix::Clean, 7);
    let (bootstrap, source) = (brokers(), names.source.clone());
    tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = config_on(&bootstrap, &[("transactional.id", &source)])
            .create()
            .expect("transactional producer");
        let timeout = Duration::from_secs(30);
        producer.init_transactions(timeout).expect("init");
        for p in 0..partitions {
            producer.begin_transaction().expect("begin");
            for r in records.chunks(per_partition).nth(p as usize).unwrap() {
                let value = r.value.as_deref().unwrap();
                let record = BaseRecord::to(&source)
                    .partition(p)
                    .key(&r.key[..])
                    .payload(value);
                producer.send(record).map_err(|(e, _)| e).expect("send");
            }
            producer.commit_transaction(timeout).expect("commit");
        }
    })
    .await
    .unwrap();

    let running = run_in_process(&names.args(&[]));
    let want = per_partition as i64;
    poll_until("every record committed by the group", CAP, || async {
        let offsets = committed(&names.group, &names.source).await;
        offsets.len() == partitions as usize && offsets.values().all(|o| *o == Some(want))
    })
    .await;
    stop(running).await.expect("run stops cleanly");

    let report = lag_json(&names, &["--lag-threshold", "1000"]).await;
    for p in report["partitions"].as_array().unwrap() {
        // The log ends one past the last record: the marker.
        assert_eq!(p["end"], want + 1, "{p}");
        assert_eq!(p["lag"], 1, "{p}");
    }
    let keda = &report["keda"];
    assert_eq!(keda["total_lag"], partitions, "{keda}");
    assert_eq!(keda["active"], true, "{keda}");
    assert_eq!(
        keda["replicas"], 1,
        "KEDA keeps a replica for the markers: {keda}"
    );
    assert_eq!(keda["ktransform_replicas"], 0, "nothing to do: {keda}");
    assert_eq!(keda["trust"], "ktransform", "{keda}");
    assert!(keda["why"].as_str().unwrap().contains("markers"), "{keda}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_without_a_committed_offset_follow_the_reset_policy() {
    let names = Names::new("keda-uncommitted");
    names.create(3).await;
    let records = data::generate(90, KEYS, Mix::Clean, 11);
    for (p, chunk) in records.chunks(30).enumerate() {
        produce_to(&names.source, p as i32, chunk).await;
    }
    // The group committed on partition 0 only, at 10 of 30.
    let (group, topic) = (names.group.clone(), names.source.clone());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config_on(&brokers(), &[("group.id", &group)])
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(10))
            .unwrap();
        consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    })
    .await
    .unwrap();

    // earliest: 20 + 30 + 30 = 80; 80 / 30 = 2, not above 3 partitions: ceil(80 / 30) = 3.
    let earliest = lag_json(&names, &["--lag-threshold", "30"]).await;
    assert_eq!(earliest["keda"]["total_lag"], 80);
    assert_eq!(earliest["keda"]["capped"], false);
    assert_eq!(earliest["keda"]["replicas"], 3);
    // latest: 20 + 1 + 1 = 22: one replica.
    let latest = lag_json(
        &names,
        &["--lag-threshold", "30", "--offset-reset-policy", "latest"],
    )
    .await;
    assert_eq!(latest["keda"]["total_lag"], 22);
    assert_eq!(latest["keda"]["replicas"], 1);
    // Threshold 10: 80 / 10 = 8 > 3 partitions, capped at 30 (3 replicas), unless idle
    // consumers are allowed (8).
    let capped = lag_json(&names, &["--lag-threshold", "10"]).await;
    assert_eq!(capped["keda"]["metric"], 30);
    assert_eq!(capped["keda"]["replicas"], 3);
    let idle = lag_json(&names, &["--lag-threshold", "10", "--allow-idle-consumers"]).await;
    assert_eq!(idle["keda"]["metric"], 80);
    assert_eq!(idle["keda"]["replicas"], 8);
    // Without the flag there is no KEDA part.
    assert!(lag_json(&names, &[]).await["keda"].is_null());
}
