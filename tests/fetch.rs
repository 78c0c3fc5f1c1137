//! A partition's fetch queue ([`ktransform::fetch`]) against the broker: a partition revoked and
//! assigned again while the old queue handle is still alive (a worker aborted at a deadline is
//! dropped late) keeps waking its new reader when the old handle goes.
//!
//! `next_batch` has no timer of its own: it returns only when the queue's wake-up callback
//! fires. So a new handle whose callback was switched off by its predecessor never returns,
//! and the test fails at its cap.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::data::{self, Mix};
use common::{brokers, create_topic, produce, unique, CAP};
use ktransform::fetch::{PartitionQueue, Wakeups};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_queue_dropped_late_leaves_its_successor_woken() {
    let topic = unique("kt-fetch");
    create_topic(&topic, 1).await;
    let consumer: Arc<StreamConsumer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", unique("kt-fetch-group"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer"),
    );
    let wakeups = Arc::new(Wakeups::default());
    let mut partition = TopicPartitionList::new();
    partition
        .add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();

    // The topic known to the client first, as it is in a group member (else the first split
    // makes a placeholder partition that the unassignment removes).
    let known = consumer.clone();
    let metadata_topic = topic.clone();
    tokio::task::spawn_blocking(move || {
        known
            .fetch_metadata(Some(&metadata_topic), Duration::from_secs(10))
            .expect("metadata")
    })
    .await
    .unwrap();

    // Assigned, revoked, assigned again; the first handle outlives the second split.
    let stale = PartitionQueue::split(&consumer, &wakeups, &topic, 0).expect("first split");
    consumer.incremental_assign(&partition).expect("assign");
    consumer.incremental_unassign(&partition).expect("unassign");
    let fresh = PartitionQueue::split(&consumer, &wakeups, &topic, 0).expect("second split");
    consumer
        .incremental_assign(&partition)
        .expect("assign again");
    drop(stale);

    // The reader waits on the empty queue on a task of its own before anything is produced,
    // so only the queue's wake-up can bring it the records.
    let reader = tokio::spawn(async move {
        // Biased to the timer: at the cap, the queue is not read once more.
        let batch = tokio::select! {
            biased;
            _ = tokio::time::sleep(CAP) => return None,
            batch = fresh.next_batch(1000) => batch,
        };
        let errors = batch.iter().filter(|r| r.error().is_some()).count();
        Some((batch.len(), batch[0].offset(), errors))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let records = data::generate(100, common::KEYS, Mix::Clean, data::seed());
    produce(&topic, &records).await;
    let (read, first, errors) = reader
        .await
        .expect("the reader task")
        .expect("the fresh queue was never woken: its callback went with the stale handle");
    assert!(read > 0);
    assert_eq!(errors, 0, "consumer errors");
    assert_eq!(first, 0, "the first record of the partition");
}
