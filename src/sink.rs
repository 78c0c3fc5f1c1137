//! The producing side: one idempotent producer, sending the records it is handed: outputs to
//! the destination, and records to a named topic (the dead letters of [`crate::dead_letter`],
//! which decides what goes there).
//!
//! Sends never block and never drop: a full local queue is waited out here. Every record sent
//! counts into its batch's [`Acks`], which the partition worker awaits batch by batch.

use std::ffi::{c_void, CString};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::util::IntoOpaque;
use rdkafka::Message;

use crate::ack::{Acks, SinkContext};
use crate::config::{ConfigError, RunConfig, Timestamps};
use crate::fetch::{NativeHeaders, Record};
use crate::logging::FatalErrors;

pub mod size;

use size::BATCH_HEADER_BYTES;

/// librdkafka's `RD_KAFKA_PARTITION_UA` (a C macro, absent from the bindings): the partitioner
/// chooses.
const PARTITION_UNASSIGNED: i32 = -1;

/// The `max.message.bytes` of the topics the sink writes to, when known (read at start).
#[derive(Debug, Clone, Copy, Default)]
pub struct TopicLimits {
    pub destination: Option<usize>,
    pub dlq: Option<usize>,
}

/// How long to wait before retrying a send refused because librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

pub struct Sink {
    /// Declared before the producer: a topic handle is released before its client.
    output_topic: TopicHandle,
    producer: ThreadedProducer<SinkContext>,
    /// The limits its batches are capped for.
    limits: TopicLimits,
    /// The destination's partition count at start, when known: where keyless outputs go.
    destination_partitions: Option<i32>,
    /// Outputs and dead letters keep their input's timestamp (`--timestamp source`).
    keep_timestamps: bool,
}

impl Sink {
    /// `limits`: the destination's and the dead-letter topic's `max.message.bytes`, when known.
    ///
    /// The broker refuses a whole batch larger than its topic's limit, after the input is gone,
    /// so batches are capped below the lower one here (`batch.size` is the producer's, for both
    /// topics); a record that would not fit even alone is [`crate::dead_letter`]'s to catch.
    ///
    /// `destination_partitions`: the destination's partition count at start, when known. A
    /// record without a key then goes to the partition of its input's number (modulo that
    /// count): per-partition order holds end to end, no partitioner runs, and each worker
    /// produces into its own partition instead of all of them contending for the sticky
    /// partitioner's current one, which cost a fifth of the drain rate. Keyed records keep the
    /// partitioner (murmur2_random, the Java client's), so equal keys land together as Java
    /// producers would put them.
    pub fn new(
        config: &RunConfig,
        limits: TopicLimits,
        destination_partitions: Option<i32>,
        fatal: Arc<FatalErrors>,
    ) -> Result<Self, ConfigError> {
        let lowest = match (limits.destination, limits.dlq) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A batch's size as librdkafka counts it includes the batch header and the request's
        // own prefix before it, so this keeps every multi-record batch under the limit.
        let cap = lowest.map(|limit| limit.saturating_sub(BATCH_HEADER_BYTES).max(1));
        let client = config.producer_config_capped(cap)?;
        let producer = client
            .create_with_context(SinkContext::raising(fatal))
            .map_err(|e| ConfigError {
                flag: "-X".into(),
                message: format!("producer: {e}"),
            })?;
        let output_topic =
            TopicHandle::new(&producer, &config.pipeline.destination).map_err(|message| {
                ConfigError {
                    flag: "--destination".into(),
                    message,
                }
            })?;
        Ok(Sink {
            output_topic,
            producer,
            limits,
            destination_partitions,
            keep_timestamps: config.pipeline.timestamp == Timestamps::Source,
        })
    }

    /// Gets the producer ready before the first record: it knows the destination's partitions
    /// and has its producer id. Best effort: on failure the first records only wait longer.
    ///
    /// An idempotent producer asks for its id when a metadata response arrives, from a broker
    /// that is up, and otherwise 500 ms after it was created. The first metadata request goes
    /// out on the bootstrap connection before any broker of the cluster is connected; a second
    /// one is answered by a cluster broker, which is then up. Without this the first
    /// acknowledgement came about 330 ms after the first batch was sent (the id's 500 ms timer
    /// from start-up), and with it 12-18 ms after; a 2M-record drain took 2.5-3.0 s from spawn to
    /// exit instead of 2.1-2.3 s. (A send naming its topic by string used to force a metadata
    /// request at the first record; the topic handle does not.)
    pub fn prepare(&self, timeout: Duration) {
        let topic = self.output_topic.name.as_str();
        for _ in 0..2 {
            if let Err(error) = self.producer.client().fetch_metadata(Some(topic), timeout) {
                tracing::debug!(%error, topic, "destination metadata not fetched at start");
                return;
            }
        }
    }

    /// The timestamp to send a record derived from `input` with, in ms since the epoch: the
    /// input's (its create time, or its append time on a `LogAppendTime` topic: what its
    /// consumers saw) under `--timestamp source`, else 0, which lets librdkafka stamp it.
    pub fn timestamp_of(&self, input: &Record<'_>) -> i64 {
        if !self.keep_timestamps {
            return 0;
        }
        input
            .timestamp()
            .to_millis()
            .filter(|ms| *ms > 0)
            .unwrap_or(0)
    }

    /// The destination's and dead-letter topic's `max.message.bytes` it was built for.
    pub fn limits(&self) -> TopicLimits {
        self.limits
    }

    pub fn producer(&self) -> &ThreadedProducer<SinkContext> {
        &self.producer
    }

    /// Sends `value` (None for a tombstone) to the destination with the input's key and headers
    /// (taken out of `input`, see [`Record::take_headers`]).
    ///
    /// Straight through `rd_kafka_producev` rather than rust-rdkafka's `BaseRecord`, which for
    /// every record copies the topic name into a new C string, copies the header list, and names
    /// the topic by that string, which librdkafka then looks up under its client-wide write lock:
    /// a lock every worker took once per record. Here the topic is a handle held for the run,
    /// and the header list parsed from the input is handed over as it is. The delivery opaque is
    /// the same `Arc<Acks>` that [`SinkContext`] receives.
    pub async fn send_output(
        &self,
        input: &mut Record<'_>,
        value: Option<&[u8]>,
        acks: &Arc<Acks>,
    ) -> Result<(), KafkaError> {
        let partition = match (input.key(), self.destination_partitions) {
            (None, Some(n)) => input.partition() % n,
            _ => PARTITION_UNASSIGNED,
        };
        let timestamp = self.timestamp_of(input);
        let mut headers = input.take_headers();
        let mut acks = acks.expect_one();
        loop {
            match self.produce_output(partition, input.key(), value, timestamp, &mut headers, acks)
            {
                Ok(()) => return Ok(()),
                Err((RDKafkaErrorCode::QueueFull, back)) => {
                    acks = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((code, back)) => {
                    back.withdraw();
                    return Err(KafkaError::MessageProduction(code));
                }
            }
        }
    }

    /// One `rd_kafka_producev` call. On success the producer owns `headers` and `acks` (it
    /// returns `acks` in the delivery report); on failure both are still ours.
    fn produce_output(
        &self,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &mut Option<NativeHeaders>,
        acks: Arc<Acks>,
    ) -> Result<(), (RDKafkaErrorCode, Arc<Acks>)> {
        fn raw(bytes: Option<&[u8]>) -> (*mut c_void, usize) {
            bytes.map_or((ptr::null_mut(), 0), |b| {
                (b.as_ptr() as *mut c_void, b.len())
            })
        }
        use rdsys::rd_kafka_vtype_t::*;
        let (value_ptr, value_len) = raw(value);
        let (key_ptr, key_len) = raw(key);
        let headers_ptr = headers
            .as_ref()
            .map_or(ptr::null_mut(), NativeHeaders::as_ptr);
        let opaque = acks.into_ptr();
        let err = unsafe {
            rdsys::rd_kafka_producev(
                self.producer.client().native_ptr(),
                RD_KAFKA_VTYPE_RKT,
                self.output_topic.ptr.as_ptr(),
                RD_KAFKA_VTYPE_PARTITION,
                partition,
                RD_KAFKA_VTYPE_MSGFLAGS,
                rdsys::RD_KAFKA_MSG_F_COPY,
                RD_KAFKA_VTYPE_VALUE,
                value_ptr,
                value_len,
                RD_KAFKA_VTYPE_KEY,
                key_ptr,
                key_len,
                RD_KAFKA_VTYPE_OPAQUE,
                opaque,
                RD_KAFKA_VTYPE_TIMESTAMP,
                timestamp,
                RD_KAFKA_VTYPE_HEADERS,
                headers_ptr,
                RD_KAFKA_VTYPE_END,
            )
        };
        if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            if let Some(h) = headers.take() {
                h.handed_over();
            }
            Ok(())
        } else {
            // Not queued: the opaque was not kept.
            Err((err.into(), unsafe {
                <Arc<Acks> as IntoOpaque>::from_ptr(opaque)
            }))
        }
    }

    /// Sends a record to `topic` through rust-rdkafka's `BaseRecord`, the partitioner choosing
    /// the partition: for records off the hot path (dead letters), rare enough that its
    /// per-record costs do not matter.
    /// `timestamp`: ms since the epoch, 0 to let librdkafka stamp it.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: Option<OwnedHeaders>,
        acks: &Arc<Acks>,
    ) -> Result<(), KafkaError> {
        let mut record: BaseRecord<'_, [u8], [u8], Arc<Acks>> =
            BaseRecord::with_opaque_to(topic, acks.expect_one());
        record.key = key;
        record.payload = value;
        record.timestamp = (timestamp > 0).then_some(timestamp);
        record.headers = headers;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((e, back)) => {
                    back.delivery_opaque.withdraw();
                    return Err(e);
                }
            }
        }
    }

    /// Waits for every queued record to be acknowledged, up to `timeout`.
    ///
    /// Calls librdkafka's flush directly: with delivery reports as events (served by the
    /// producer's own thread) it waits on a condition variable and returns as soon as the last
    /// report is handled. rust-rdkafka's `flush` polls in 100 ms steps instead, so every flush
    /// with a record in flight took at least 100 ms, and so did every exactly-once commit.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let err = unsafe { rdsys::rd_kafka_flush(self.producer.client().native_ptr(), ms) };
        if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            Err(KafkaError::Flush(err.into()))
        }
    }

    /// Records still queued or in flight in the producer.
    pub fn queued(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

/// The producer's handle on a topic (`rd_kafka_topic_new`), released when dropped.
struct TopicHandle {
    ptr: NonNull<rdsys::rd_kafka_topic_t>,
    name: String,
}

// librdkafka's topic handles are thread safe.
unsafe impl Send for TopicHandle {}
unsafe impl Sync for TopicHandle {}

impl TopicHandle {
    /// With the client's default topic configuration, as a send naming the topic would use.
    fn new(producer: &ThreadedProducer<SinkContext>, topic: &str) -> Result<Self, String> {
        let name = CString::new(topic).map_err(|_| format!("topic {topic:?} contains NUL"))?;
        let handle = unsafe {
            rdsys::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                ptr::null_mut(),
            )
        };
        NonNull::new(handle)
            .map(|ptr| TopicHandle {
                ptr,
                name: topic.to_string(),
            })
            .ok_or_else(|| format!("cannot create a producer handle for topic {topic:?}"))
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        unsafe { rdsys::rd_kafka_topic_destroy(self.ptr.as_ptr()) }
    }
}
