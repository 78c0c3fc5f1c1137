//! Partitions added to the source topic while ktransform runs. Kafka places a keyed record by
//! `hash(key) % partitions`, so after the change most keys write to another partition than
//! before: a key's records from before and after the change sit in two partitions, and Kafka
//! orders only within a partition, so their relative order across the change is not guaranteed
//! to any consumer (ktransform included) while the old partition still has lag. What ktransform
//! guarantees holds: it picks up the new partitions without a restart (at its consumer's next
//! metadata refresh under the classic protocol; the broker assigns them under KIP-848), reads
//! them from their first record (`auto.offset.reset=earliest`), loses nothing, and keeps the
//! order of every source partition.
//!
//! Size: env `KTRANSFORM_TEST_PARTITIONS_RECORDS` (default 20,000); data: env
//! `KTRANSFORM_TEST_SEED`.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::data::{self, Mix};
use common::{
    brokers, config_on, consume_all, create_topic, group_lag, poll_until, produce, run_in_process,
    stop, wait_for_records, Names, Received, CAP, IDLE, KEYS, THROTTLE,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;

const BEFORE: i32 = 2;
const AFTER: i32 = 6;

/// Classic protocol (cooperative-sticky): the group leader sees the new partitions at its next
/// metadata refresh (`topic.metadata.refresh.interval.ms`, librdkafka's default 5 min; 1 s here
/// so that the test does not wait) and the group rebalances to assign them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_while_running_classic() {
    added_partitions(
        "partitions-classic",
        &["-X", "consumer.topic.metadata.refresh.interval.ms=1000"],
    )
    .await;
}

/// KIP-848: the broker's coordinator sees the new partitions and assigns them itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_while_running_consumer_protocol() {
    added_partitions("partitions-kip848", &["--group-protocol", "consumer"]).await;
}

async fn added_partitions(test: &str, extra: &[&str]) {
    let n = common::size("KTRANSFORM_TEST_PARTITIONS_RECORDS", 20_000);
    let names = Names::new(test);
    create_topic(&names.source, BEFORE).await;
    create_topic(&names.destination, BEFORE).await;
    create_topic(&names.dlq, 2).await;
    let seed = data::seed();
    let records = data::generate(n, KEYS, Mix::Clean, seed);
    let (before, after) = records.split_at(n / 2);
    let mut positions = produce(&names.source, before).await;

    // Throttled, so that the old partitions still have lag when the new ones appear.
    let run = run_in_process(&names.args(&[THROTTLE, extra].concat()));
    wait_for_records(&names.destination, (n / 20) as i64).await;
    add_partitions(&names.source, AFTER).await;
    // A new producer: its first metadata already has the new partition count.
    positions.extend(produce(&names.source, after).await);
    let new_partitions: HashSet<i32> = positions.iter().map(|&(p, _)| p).collect();
    assert!(
        new_partitions.iter().any(|&p| p >= BEFORE),
        "no record was written to an added partition"
    );

    poll_until(
        "every partition, old and new, committed to its end",
        CAP,
        || async {
            group_lag(&names.group, &names.source).await == 0
                && common::committed(&names.group, &names.source).await.len() == AFTER as usize
        },
    )
    .await;
    let summary = stop(run).await.expect("ktransform stops with Ok");
    let output = consume_all(&names.destination, n, IDLE).await;

    let tally = data::tally(records.iter().map(|r| r.id), &output);
    let by_id: HashMap<u64, usize> = records.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let wrong: Vec<String> = output
        .iter()
        .filter_map(|o| {
            let input = records[by_id[&data::id_of(o)]].value.as_deref().unwrap();
            data::check_json(input, o.value.as_deref().unwrap()).err()
        })
        .collect();
    let source_of = |o: &Received| positions[by_id[&data::id_of(o)]];
    let order = source_order_violations(&output, &source_of);
    let moved = keys_in_several_partitions(&output, &source_of);
    let across = inversions_across_the_change(&output, &source_of);
    println!(
        "{test} seed={seed} {tally} rebalances={} keys_moved={moved} \
         key_order_inversions_across_the_change={across}",
        summary.stats.rebalances
    );
    assert_eq!(
        tally.lost, 0,
        "records lost, first ids {:?}",
        tally.lost_ids
    );
    assert_eq!(tally.unexpected, 0, "records that were never produced");
    assert_eq!(tally.duplicates, 0, "records replayed without a fault");
    assert!(
        wrong.is_empty(),
        "wrong outputs: {:?}",
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        order.is_empty(),
        "source partition order broken: {:?}",
        &order[..order.len().min(5)]
    );
    // What Kafka does to keys (not ktransform): most keys now hash to another partition.
    assert!(
        moved > 0,
        "no key changed partition when the partition count changed"
    );
}

async fn add_partitions(topic: &str, total: i32) {
    let admin: AdminClient<DefaultClientContext> =
        config_on(&brokers(), &[]).create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_partitions(&[NewPartitions::new(topic, total as usize)], &options)
        .await
        .expect("create partitions")
    {
        result.unwrap_or_else(|(t, e)| panic!("partitions of {t} not added: {e}"));
    }
}

/// Per (source partition, key): the outputs, in the order the destination holds them (all of a
/// key's outputs are in one destination partition), come in increasing source offset.
fn source_order_violations(
    output: &[Received],
    source_of: &dyn Fn(&Received) -> (i32, i64),
) -> Vec<String> {
    let mut sorted: Vec<&Received> = output.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut last: HashMap<(i32, &[u8]), i64> = HashMap::new();
    let mut out = Vec::new();
    for o in sorted {
        let (partition, offset) = source_of(o);
        let key = o.key.as_deref().expect("a key");
        if let Some(&prev) = last.get(&(partition, key)) {
            if offset < prev {
                out.push(format!("source {partition}@{offset} after @{prev}"));
            }
        }
        last.insert((partition, key), offset);
    }
    out
}

/// Keys whose records were written to more than one source partition.
fn keys_in_several_partitions(
    output: &[Received],
    source_of: &dyn Fn(&Received) -> (i32, i64),
) -> usize {
    let mut partitions: HashMap<&[u8], HashSet<i32>> = HashMap::new();
    for o in output {
        partitions
            .entry(o.key.as_deref().unwrap())
            .or_default()
            .insert(source_of(o).0);
    }
    partitions.values().filter(|p| p.len() > 1).count()
}

/// Outputs of an added partition written before an output of the same key from an old
/// partition: the key's order across the change, as this run happened to interleave it.
fn inversions_across_the_change(
    output: &[Received],
    source_of: &dyn Fn(&Received) -> (i32, i64),
) -> usize {
    let mut sorted: Vec<&Received> = output.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut seen_new: HashSet<&[u8]> = HashSet::new();
    let mut count = 0;
    for o in sorted {
        let key = o.key.as_deref().unwrap();
        if source_of(o).0 >= BEFORE {
            seen_new.insert(key);
        } else if seen_new.contains(key) {
            count += 1;
        }
    }
    count
}
