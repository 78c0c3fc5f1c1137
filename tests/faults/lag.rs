//! Fault: an exactly-once group with transactional offsets pending. Every commit of a running
//! exactly-once instance has them for a moment, and an instance that dies between sending its
//! offsets and committing leaves them for up to `transaction.timeout.ms` (30 s). `ktransform
//! lag` "only reads offsets, so it works on any group" (docs/operations.md): it must read such a
//! group's last committed offsets, not wait for the transaction and time out.
//!
//! The open transaction is held here, deterministically: a transactional producer sends offsets
//! for the group and neither commits nor aborts until `lag` has answered. About 15 s.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::data::Mix;
use crate::common::{brokers, config_on, prepare, run_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_reads_a_group_with_a_transaction_open() {
    let test = prepare("lag-open-txn", 2, 100, Mix::Clean).await;
    let names = &test.names;
    let (group, source) = (names.group.clone(), names.source.clone());
    let producer = tokio::task::spawn_blocking(move || {
        let bootstrap = brokers();
        // The group's metadata without joining it (generation -1: no generation check).
        let member: BaseConsumer = config_on(&bootstrap, &[("group.id", &group)])
            .create()
            .unwrap();
        let metadata = member.group_metadata().expect("group metadata");
        let producer: BaseProducer = config_on(&bootstrap, &[("transactional.id", &group)])
            .create()
            .unwrap();
        let timeout = Duration::from_secs(30);
        producer
            .init_transactions(timeout)
            .expect("init_transactions");
        producer.begin_transaction().expect("begin_transaction");
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&source, 0, Offset::Offset(10))
            .unwrap();
        producer
            .send_offsets_to_transaction(&offsets, &metadata, timeout)
            .expect("send_offsets_to_transaction");
        producer
    })
    .await
    .unwrap();

    let exit = run_binary(&[
        "lag",
        "--group",
        &names.group,
        "--topic",
        &names.source,
        "--interval",
        "1s",
    ])
    .await;
    tokio::task::spawn_blocking(move || producer.abort_transaction(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("abort_transaction");
    println!(
        "scenario=lag-open-transaction records={} faults=1 lag_exit={:?}",
        test.records.len(),
        exit.code
    );
    assert_eq!(
        exit.code,
        Some(0),
        "`ktransform lag` on a group with a transaction open; stderr:\n{}",
        exit.stderr
    );
}
