//! Kafka clients of the tests: topics, producing, reading whole topics, group offsets and state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::data::TestRecord;
use super::{blocking, brokers, poll_until, unique, CAP};

/// Timeout of one broker request made by a helper.
const REQUEST: Duration = Duration::from_secs(10);

fn client_config(extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers());
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config
}

/// Creates `name` and waits until the metadata shows all its partitions.
pub async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        client_config(&[]).create().expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(REQUEST));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .expect("create_topics");
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("cannot create topic {topic}: {code}"),
        }
    }
    let name = name.to_string();
    poll_until(&format!("topic {name} in the metadata"), CAP, || {
        let name = name.clone();
        blocking(move || partitions_of(&reader(), &name).len() == partitions as usize)
    })
    .await;
}

/// Produces `records` in order (idempotent, so order holds per partition) and waits for every
/// delivery; returns each record's (partition, offset).
pub async fn produce(topic: &str, records: &[TestRecord]) -> Vec<(i32, i64)> {
    super::faults::produce_on(&brokers(), topic, records, None).await
}

/// [`produce`] into one partition.
pub async fn produce_to(topic: &str, partition: i32, records: &[TestRecord]) -> Vec<(i32, i64)> {
    super::faults::produce_to_on(&brokers(), topic, Some(partition), records, None).await
}

/// A record read back, owned.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Received {
    /// The value of the first header named `key`.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn header_str(&self, key: &str) -> Option<&str> {
        self.header(key)
            .map(|v| std::str::from_utf8(v).expect("UTF-8 header"))
    }
}

/// Reads `topic` from the beginning (all partitions assigned, read_committed) until at
/// least `expected_min` records are in and then nothing new arrives for `idle`; gives up at
/// [`CAP`] and returns what it has (the caller's assertions then say what is missing).
pub async fn consume_all(topic: &str, expected_min: usize, idle: Duration) -> Vec<Received> {
    let topic = topic.to_string();
    blocking(move || {
        // librdkafka wants a group.id even for assign(); this one never joins or commits.
        let group = unique("kt-reader");
        let consumer: BaseConsumer = client_config(&[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
        ])
        .create()
        .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in partitions_of(&consumer, &topic) {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let started = Instant::now();
        let mut last_new = Instant::now();
        let mut out = Vec::new();
        loop {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last_new = Instant::now();
                    let headers = m.headers().map_or_else(Vec::new, |h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    });
                    out.push(Received {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                    });
                }
                Some(Err(e)) => eprintln!("consume_all {topic}: {e}"),
                None => {}
            }
            if out.len() >= expected_min && last_new.elapsed() >= idle {
                break;
            }
            if started.elapsed() >= CAP {
                eprintln!(
                    "consume_all {topic}: gave up after {CAP:?} with {} of {expected_min} records",
                    out.len()
                );
                break;
            }
        }
        out
    })
    .await
}

/// Records in `topic` now: the sum over partitions of high - low watermark.
pub async fn topic_count(topic: &str) -> i64 {
    let topic = topic.to_string();
    blocking(move || {
        let consumer = reader();
        watermarks(&consumer, &topic)
            .values()
            .map(|(low, high)| high - low)
            .sum()
    })
    .await
}

/// Waits (up to [`CAP`]) until `topic` holds at least `min` records; returns how many it held.
pub async fn wait_for_records(topic: &str, min: i64) -> i64 {
    let started = Instant::now();
    loop {
        let count = topic_count(topic).await;
        if count >= min {
            return count;
        }
        assert!(
            started.elapsed() < CAP,
            "gave up after {CAP:?} waiting for {min} records in {topic} (has {count})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records of `topic` not yet committed by `group`: the sum over partitions of the high
/// watermark minus the committed offset (minus the low watermark when nothing is committed).
pub async fn group_lag(group: &str, topic: &str) -> i64 {
    let (marks, committed) = tokio::join!(
        {
            let topic = topic.to_string();
            blocking(move || watermarks(&reader(), &topic))
        },
        committed(group, topic)
    );
    marks
        .iter()
        .map(|(p, (low, high))| high - committed.get(p).copied().flatten().unwrap_or(*low))
        .sum()
}

/// The offsets `group` has committed for each partition of `topic` (None: nothing committed).
pub async fn committed(group: &str, topic: &str) -> HashMap<i32, Option<i64>> {
    let (group, topic) = (group.to_string(), topic.to_string());
    blocking(move || {
        // Only reads the group's offsets: it never subscribes, so it never joins the group.
        let consumer: BaseConsumer =
            client_config(&[("group.id", &group), ("enable.auto.commit", "false")])
                .create()
                .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in partitions_of(&consumer, &topic) {
            tpl.add_partition(&topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, REQUEST)
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), Some(o)),
                _ => (e.partition(), None),
            })
            .collect()
    })
    .await
}

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
        let consumer: BaseConsumer = client_config(&[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("heartbeat.interval.ms", &heartbeat),
        ])
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

/// A consumer group as its coordinator describes it.
#[derive(Debug, Clone, Default)]
pub struct GroupState {
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`, ...
    pub state: String,
    /// Partitions assigned to each member (the coordinator reports them only when `Stable`).
    pub assigned: Vec<usize>,
}

pub async fn describe_group(group: &str) -> GroupState {
    let group = group.to_string();
    blocking(move || {
        let list = reader()
            .fetch_group_list(Some(&group), REQUEST)
            .expect("describe group");
        let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
            return GroupState::default();
        };
        GroupState {
            state: info.state().to_string(),
            assigned: info
                .members()
                .iter()
                .map(|m| partition_count(m.assignment().unwrap_or_default()))
                .collect(),
        }
    })
    .await
}

/// Partitions in a consumer-protocol assignment: version (i16), then per topic a name (i16
/// length + bytes) and partitions (i32 count + i32s). 0 if empty or malformed.
fn partition_count(assignment: &[u8]) -> usize {
    let int = |at: usize, width: usize| -> Option<i64> {
        let b = assignment.get(at..at + width)?;
        Some(b.iter().fold(0i64, |n, &x| n << 8 | i64::from(x)))
    };
    let count = || -> Option<usize> {
        let mut at = 2;
        let topics = int(at, 4)?;
        at += 4;
        let mut total = 0;
        for _ in 0..topics {
            at += 2 + int(at, 2)? as usize;
            let n = int(at, 4)? as usize;
            at += 4 + 4 * n;
            total += n;
        }
        Some(total)
    };
    count().unwrap_or(0)
}

/// A consumer for metadata and watermarks only.
fn reader() -> BaseConsumer {
    client_config(&[]).create().expect("consumer")
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> Vec<i32> {
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), REQUEST) else {
        return Vec::new();
    };
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

fn watermarks(consumer: &BaseConsumer, topic: &str) -> HashMap<i32, (i64, i64)> {
    partitions_of(consumer, topic)
        .into_iter()
        .map(|p| {
            (
                p,
                consumer
                    .fetch_watermarks(topic, p, REQUEST)
                    .expect("watermarks"),
            )
        })
        .collect()
}
