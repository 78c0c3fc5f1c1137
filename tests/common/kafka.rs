//! Kafka clients of the tests: topics, producing, reading whole topics (a group's offsets, lag
//! and state are in [`super::group`]). A helper for any brokers takes them first, `…_on(bootstrap, …)` (the fault suite runs
//! brokers of its own, [`super::nodes`]); a helper without `_on` works on the shared test
//! broker ([`brokers`]), either as a one-line call of its `_on` form or for that broker only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::data::TestRecord;
use super::{blocking, brokers, poll_until, unique, CAP};

/// Timeout of one broker request made by a helper.
pub const REQUEST: Duration = Duration::from_secs(10);

/// A client configuration for `bootstrap` with `extra` settings.
pub fn config_on(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config
}

/// A consumer for metadata and watermarks only.
pub fn reader_on(bootstrap: &str) -> BaseConsumer {
    config_on(bootstrap, &[]).create().expect("consumer")
}

// --- Topics ----------------------------------------------------------------------------------

/// [`create_topic_on`] the shared broker, one replica, no topic configs.
pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_on(&brokers(), name, partitions, 1, &[]).await;
}

/// Creates `topic` with `partitions` partitions of `replication` replicas and topic
/// `configs`, and waits until the metadata shows every partition led.
pub async fn create_topic_on(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> =
        config_on(bootstrap, &[]).create().expect("admin client");
    let new = configs.iter().fold(
        NewTopic::new(topic, partitions, TopicReplication::Fixed(replication)),
        |t, (k, v)| t.set(k, v),
    );
    let options = AdminOptions::new().operation_timeout(Some(REQUEST));
    for result in admin
        .create_topics([&new], &options)
        .await
        .expect("create_topics")
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("cannot create topic {topic}: {code}"),
        }
    }
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    poll_until(&format!("topic {topic} led in the metadata"), CAP, || {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        blocking(move || {
            let leaders = leaders_on(&bootstrap, &topic);
            leaders.len() == partitions as usize && leaders.values().all(|&l| l >= 0)
        })
    })
    .await;
}

/// The leader's node id of each partition of `topic` (-1: none); empty while the metadata
/// cannot be read. Blocking.
pub fn leaders_on(bootstrap: &str, topic: &str) -> HashMap<i32, i32> {
    leaders(&reader_on(bootstrap), topic)
}

/// [`leaders_on`] as `client` sees the metadata.
fn leaders(client: &BaseConsumer, topic: &str) -> HashMap<i32, i32> {
    let Ok(metadata) = client.fetch_metadata(Some(topic), REQUEST) else {
        return HashMap::new();
    };
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
        .collect()
}

/// The partitions of `topic` as `client` sees the metadata, in order; empty while it cannot be
/// read.
pub(super) fn partitions_of(client: &BaseConsumer, topic: &str) -> Vec<i32> {
    let mut partitions: Vec<i32> = leaders(client, topic).into_keys().collect();
    partitions.sort_unstable();
    partitions
}

// --- Producing -------------------------------------------------------------------------------

/// [`produce_on`] the shared broker, as fast as it goes.
pub async fn produce(topic: &str, records: &[TestRecord]) -> Vec<(i32, i64)> {
    produce_on(&brokers(), topic, records, None).await
}

/// [`produce`] into one partition.
pub async fn produce_to(topic: &str, partition: i32, records: &[TestRecord]) -> Vec<(i32, i64)> {
    produce_to_on(&brokers(), topic, Some(partition), records, None).await
}

/// Produces `records` in order with one idempotent producer (acks=all, so order holds per
/// partition), at most `rate` records per second if given, and waits for every delivery;
/// returns each record's (partition, offset).
pub async fn produce_on(
    bootstrap: &str,
    topic: &str,
    records: &[TestRecord],
    rate: Option<f64>,
) -> Vec<(i32, i64)> {
    produce_to_on(bootstrap, topic, None, records, rate).await
}

/// [`produce_on`] into `partition` if given, else where the key hashes.
pub async fn produce_to_on(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
    records: &[TestRecord],
    rate: Option<f64>,
) -> Vec<(i32, i64)> {
    let producer: FutureProducer = config_on(
        bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "20"),
            ("message.timeout.ms", "0"),
        ],
    )
    .create()
    .expect("producer");
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        let headers = r
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key: key.as_str(),
                    value: value.as_deref(),
                })
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .key(&r.key)
            .headers(headers);
        record.payload = r.value.as_deref();
        record.partition = partition;
        record.timestamp = r.timestamp;
        loop {
            match producer.send_result(record) {
                Ok(delivery) => break deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
    }
    let mut positions = Vec::with_capacity(records.len());
    for (i, delivery) in deliveries.into_iter().enumerate() {
        match delivery.await {
            Ok(Ok(d)) => positions.push((d.partition, d.offset)),
            Ok(Err((e, _))) => panic!("record {i} to {topic} not delivered: {e}"),
            Err(_) => panic!("record {i} to {topic}: producer dropped"),
        }
    }
    positions
}

// --- Reading ---------------------------------------------------------------------------------

/// A record read back, owned.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// ms since the epoch (create or append time), if it has one.
    pub timestamp: Option<i64>,
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
        let consumer: BaseConsumer = config_on(
            &brokers(),
            &[
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
            ],
        )
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
                        timestamp: m.timestamp().to_millis(),
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

// --- Counting --------------------------------------------------------------------------------

/// Records in `topic` on `bootstrap` now: the sum of high - low watermarks over the partitions
/// that answer.
pub async fn topic_count_on(bootstrap: &str, topic: &str) -> i64 {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    blocking(move || {
        let consumer = reader_on(&bootstrap);
        partitions_of(&consumer, &topic)
            .into_iter()
            .filter_map(|p| consumer.fetch_watermarks(&topic, p, REQUEST).ok())
            .map(|(low, high)| high - low)
            .sum()
    })
    .await
}

/// [`wait_for_records_on`] the shared broker.
pub async fn wait_for_records(topic: &str, min: i64) -> i64 {
    wait_for_records_on(&brokers(), topic, min).await
}

/// Waits (up to [`CAP`]) until `topic` on `bootstrap` holds at least `min` records; returns
/// how many it held.
pub async fn wait_for_records_on(bootstrap: &str, topic: &str, min: i64) -> i64 {
    let started = Instant::now();
    loop {
        let count = topic_count_on(bootstrap, topic).await;
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
