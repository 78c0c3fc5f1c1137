//! Consumer groups seen from the tests: the offsets a group committed, its lag (settled once
//! its members stop committing), its state and members, a member that joins and does nothing,
//! and offsets committed on a group's behalf.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use super::kafka::{config_on, partitions_of, reader_on, REQUEST};
use super::{blocking, brokers, CAP};

/// The offsets `group` has committed on the shared broker for each partition of `topic` (None:
/// nothing committed).
pub async fn committed(group: &str, topic: &str) -> HashMap<i32, Option<i64>> {
    let (group, topic) = (group.to_string(), topic.to_string());
    blocking(move || {
        // Only reads the group's offsets: it never subscribes, so it never joins the group.
        let consumer: BaseConsumer = config_on(
            &brokers(),
            &[("group.id", &group), ("enable.auto.commit", "false")],
        )
        .create()
        .expect("consumer");
        let partitions = partitions_of(&consumer, &topic);
        committed_by(&consumer, &topic, &partitions).expect("committed offsets")
    })
    .await
}

/// The offsets committed for `partitions` of `topic` by the group of `consumer` (its
/// `group.id`; None: nothing committed). Blocking.
fn committed_by(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> KafkaResult<HashMap<i32, Option<i64>>> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    Ok(consumer
        .committed_offsets(tpl, REQUEST)?
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), Some(o)),
            _ => (e.partition(), None),
        })
        .collect())
}

/// Per partition of `topic`: (low, high) watermarks and `group`'s committed offset; `None`
/// if any of it cannot be read now (a leader or the group coordinator down, a broker too busy
/// to answer in time).
async fn offsets_on(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> Option<HashMap<i32, ((i64, i64), Option<i64>)>> {
    let (bootstrap, group, topic) = (bootstrap.to_string(), group.to_string(), topic.to_string());
    blocking(move || {
        let consumer: BaseConsumer = config_on(
            &bootstrap,
            &[
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                // A read_committed consumer (librdkafka's default) asks for stable offsets only
                // (KIP-447), and its request is refused while an exactly-once group has a
                // transaction open, which is most of the time: read the last committed ones.
                ("isolation.level", "read_uncommitted"),
            ],
        )
        .create()
        .expect("consumer");
        let partitions = partitions_of(&consumer, &topic);
        if partitions.is_empty() {
            return None;
        }
        let committed = committed_by(&consumer, &topic, &partitions).ok()?;
        partitions
            .into_iter()
            .map(|p| {
                let marks = consumer.fetch_watermarks(&topic, p, REQUEST).ok()?;
                Some((p, (marks, committed.get(&p).copied().flatten())))
            })
            .collect()
    })
    .await
}

/// Records of `topic` not yet committed by `group`, per partition: the high watermark minus
/// the committed offset (minus the low watermark when nothing is committed); `None` while the
/// offsets cannot be read (see `offsets_on`).
pub async fn partition_lag_on(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> Option<HashMap<i32, i64>> {
    let offsets = offsets_on(bootstrap, group, topic).await?;
    Some(
        offsets
            .into_iter()
            .map(|(p, ((low, high), committed))| (p, high - committed.unwrap_or(low)))
            .collect(),
    )
}

/// Records of `topic` not yet committed by `group`; `None` while that cannot be read.
pub async fn lag_on(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    partition_lag_on(bootstrap, group, topic)
        .await
        .map(|lag| lag.values().sum())
}

/// [`partition_lag_on`], retried until it can be read (up to [`CAP`]).
pub async fn settled_partition_lag(bootstrap: &str, group: &str, topic: &str) -> HashMap<i32, i64> {
    let started = Instant::now();
    loop {
        if let Some(lag) = partition_lag_on(bootstrap, group, topic).await {
            return lag;
        }
        assert!(
            started.elapsed() < CAP,
            "the lag of {group} on {topic} could not be read within {CAP:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// [`lag_on`], retried until it can be read (up to [`CAP`]).
pub async fn settled_lag(bootstrap: &str, group: &str, topic: &str) -> i64 {
    settled_partition_lag(bootstrap, group, topic)
        .await
        .values()
        .sum()
}

/// [`settled_lag`] on the shared broker.
pub async fn group_lag(group: &str, topic: &str) -> i64 {
    settled_lag(&brokers(), group, topic).await
}

// --- Group state -----------------------------------------------------------------------------

/// A plain group member that subscribes to `topic` and never commits: it makes the group
/// rebalance when it joins. Its heartbeat interval sets how long it takes to notice the next
/// rebalance. Leaves the group when dropped.
pub struct IdleMember {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IdleMember {
    pub fn join(group: &str, topic: &str, heartbeat: Duration) -> Self {
        let heartbeat = heartbeat.as_millis().to_string();
        let consumer: BaseConsumer = config_on(
            &brokers(),
            &[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("heartbeat.interval.ms", &heartbeat),
            ],
        )
        .create()
        .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Relaxed) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        });
        IdleMember {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for IdleMember {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A consumer group as its coordinator describes it, either protocol (see
/// `ktransform::lag::group`).
#[derive(Debug, Clone, Default)]
pub struct GroupState {
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`, `Dead`, ...
    pub state: String,
    /// Partitions assigned to each member, as last assigned.
    pub assigned: Vec<usize>,
    /// `classic` or `consumer`; empty for a group the coordinator does not know.
    pub protocol: &'static str,
}

pub async fn describe_group(group: &str) -> GroupState {
    let group = group.to_string();
    blocking(move || {
        let reader = reader_on(&brokers());
        // A broker just started may not lead the group's offsets partition yet
        // (`NOT_COORDINATOR`, `COORDINATOR_LOAD_IN_PROGRESS`): asked again until CAP.
        let started = Instant::now();
        let described = loop {
            match ktransform::lag::group::describe(reader.client(), &group, REQUEST) {
                Ok(described) => break described,
                Err(e) if started.elapsed() < CAP => {
                    eprintln!("describe group {group}: {e}; asking again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("describe group: {e}"),
            }
        };
        GroupState {
            assigned: described.assigned(),
            state: described.state,
            protocol: described.protocol.map_or("", |p| p.as_str()),
        }
    })
    .await
}

/// Commits `offset` on every partition of `topic` for `group` on `bootstrap`, as a member that
/// then left would.
pub async fn commit_at_on(bootstrap: &str, group: &str, topic: &str, partitions: i32, offset: i64) {
    let (bootstrap, group, topic) = (bootstrap.to_string(), group.to_string(), topic.to_string());
    blocking(move || {
        let consumer: BaseConsumer = config_on(&bootstrap, &[("group.id", &group)])
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Offset(offset))
                .unwrap();
        }
        consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    })
    .await
}
