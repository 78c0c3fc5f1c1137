//! The producing side: transformed records to the destination, rejected ones to the dead-letter
//! topic, both through one idempotent producer.
//!
//! Sends never block and never drop: a full local queue is waited out here. Every record sent
//! counts into its batch's [`Acks`], which the partition worker awaits batch by batch.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::Message;

use crate::ack::{Acks, SinkContext};
use crate::config::{ConfigError, RunConfig};
use crate::fetch::Record;
use crate::logging::FatalErrors;

/// Dead-letter headers. The original key, value and headers are kept as they were.
pub mod headers {
    pub const ERROR_KIND: &str = "ktransform.error.kind";
    pub const ERROR_MESSAGE: &str = "ktransform.error.message";
    pub const SOURCE_TOPIC: &str = "ktransform.source.topic";
    pub const SOURCE_PARTITION: &str = "ktransform.source.partition";
    pub const SOURCE_OFFSET: &str = "ktransform.source.offset";
}

/// librdkafka's default `batch.size`.
const LIBRDKAFKA_BATCH_SIZE: usize = 1_000_000;

/// Bytes of a v2 record batch's header (baseOffset .. recordCount), counted by the broker
/// against the topic's `max.message.bytes` with the records.
const BATCH_HEADER_BYTES: usize = 61;

/// How long to wait before retrying a send refused because librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
    destination: String,
    dlq: String,
    /// The destination's `max.message.bytes`, when known.
    destination_max_bytes: Option<usize>,
    /// The destination's partition count at start, when known: where keyless outputs go.
    destination_partitions: Option<i32>,
}

impl Sink {
    /// `destination_max_bytes`: the destination topic's `max.message.bytes`, when known.
    ///
    /// The broker refuses a whole batch larger than that limit, after the input is gone, so the
    /// limit is enforced here instead: batches are capped below it (`batch.size`), and an output
    /// that would not fit even alone is refused before it is sent ([`Sink::output_too_large`]),
    /// to be dead-lettered with its input. The dead-letter topic keeps librdkafka's limits.
    ///
    /// `destination_partitions`: the destination's partition count at start, when known. A
    /// record without a key then goes to the partition of its input's number (modulo that
    /// count): per-partition order holds end to end, no partitioner runs, and each worker
    /// produces into its own partition instead of all of them contending for the sticky
    /// partitioner's current one (bench/ab.py: 0.90x raw copy against 0.72x, and no more runs
    /// at 2.4 CPU-s per million records). Keyed records keep the partitioner (murmur2_random,
    /// the Java client's), so equal keys land together as Java producers would put them.
    pub fn new(
        config: &RunConfig,
        destination_max_bytes: Option<usize>,
        destination_partitions: Option<i32>,
        fatal: Arc<FatalErrors>,
    ) -> Result<Self, ConfigError> {
        let mut client = config.producer_config()?;
        let batch_size = client
            .get("batch.size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(LIBRDKAFKA_BATCH_SIZE);
        if let Some(limit) = destination_max_bytes {
            // A batch's size as librdkafka counts it includes the batch header and the request's
            // own prefix before it, so this keeps every multi-record batch under the limit.
            let cap = limit.saturating_sub(BATCH_HEADER_BYTES).max(1);
            if cap < batch_size {
                client.set("batch.size", cap.to_string());
            }
        }
        let producer = client
            .create_with_context(SinkContext::raising(fatal))
            .map_err(|e| ConfigError {
                flag: "-X".into(),
                message: format!("producer: {e}"),
            })?;
        Ok(Sink {
            producer,
            destination: config.destination.clone(),
            dlq: config.dlq_topic(),
            destination_max_bytes,
            destination_partitions,
        })
    }

    /// Why `value`, sent with `input`'s key and headers, cannot go to the destination: a batch of
    /// that one record would be over the destination's `max.message.bytes`.
    pub fn output_too_large(&self, input: &Record<'_>, value: &[u8]) -> Option<String> {
        let limit = self.destination_max_bytes?;
        let key = input.key().map(<[u8]>::len);
        // Quick answer for the usual case: far below the limit even with every header at most
        // 5 + 5 bytes of lengths.
        let headers_upper: usize = input.headers().map_or(0, |h| {
            h.iter()
                .map(|h| 10 + h.key.len() + h.value.map_or(0, <[u8]>::len))
                .sum()
        });
        let upper = BATCH_HEADER_BYTES + 40 + key.unwrap_or(0) + value.len() + headers_upper;
        if upper <= limit {
            return None;
        }
        let headers: Vec<(usize, Option<usize>)> = input.headers().map_or(Vec::new(), |h| {
            h.iter()
                .map(|h| (h.key.len(), h.value.map(<[u8]>::len)))
                .collect()
        });
        let size = single_record_batch_size(key, Some(value.len()), &headers);
        (size > limit).then(|| {
            format!(
                "output of {} bytes makes a {size}-byte record batch, over the destination's \
                 max.message.bytes of {limit}",
                value.len()
            )
        })
    }

    pub fn producer(&self) -> &ThreadedProducer<SinkContext> {
        &self.producer
    }

    /// Sends `value` (None for a tombstone) with the input's key and headers to the destination.
    pub async fn send_output(
        &self,
        input: &Record<'_>,
        value: Option<&[u8]>,
        acks: &Arc<Acks>,
    ) -> Result<(), KafkaError> {
        let headers = input.headers().map(|h| h.detach());
        let partition = match (input.key(), self.destination_partitions) {
            (None, Some(n)) => Some(input.partition() % n),
            _ => None,
        };
        self.send(
            &self.destination,
            partition,
            input.key(),
            value,
            headers,
            acks,
        )
        .await
    }

    /// Sends the input unchanged to the dead-letter topic, with the reason and origin in headers.
    pub async fn send_dead_letter(
        &self,
        input: &Record<'_>,
        kind: &str,
        message: &str,
        acks: &Arc<Acks>,
    ) -> Result<(), KafkaError> {
        let base = input.headers().map(|h| h.detach()).unwrap_or_default();
        let partition = input.partition().to_string();
        let offset = input.offset().to_string();
        let headers = [
            (headers::ERROR_KIND, kind),
            (headers::ERROR_MESSAGE, message),
            (headers::SOURCE_TOPIC, input.topic()),
            (headers::SOURCE_PARTITION, partition.as_str()),
            (headers::SOURCE_OFFSET, offset.as_str()),
        ]
        .into_iter()
        .fold(base, |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        });
        self.send(
            &self.dlq,
            None,
            input.key(),
            input.payload(),
            Some(headers),
            acks,
        )
        .await
    }

    /// `partition`: None lets the partitioner choose.
    async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        acks: &Arc<Acks>,
    ) -> Result<(), KafkaError> {
        let mut record: BaseRecord<'_, [u8], [u8], Arc<Acks>> =
            BaseRecord::with_opaque_to(topic, acks.expect_one());
        record.partition = partition;
        record.key = key;
        record.payload = value;
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
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Records still queued or in flight in the producer.
    pub fn queued(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

/// Bytes of a v2 record batch holding one record with these key, value and header lengths
/// (`None`: null), as the broker measures it against `max.message.bytes`.
pub fn single_record_batch_size(
    key: Option<usize>,
    value: Option<usize>,
    headers: &[(usize, Option<usize>)],
) -> usize {
    let field = |len: Option<usize>| match len {
        Some(n) => varint_len(n as i64) + n,
        None => varint_len(-1),
    };
    let headers_bytes: usize = headers
        .iter()
        .map(|(k, v)| varint_len(*k as i64) + k + field(*v))
        .sum();
    // attributes, timestampDelta 0, offsetDelta 0, key, value, header count, headers.
    let body =
        1 + 1 + 1 + field(key) + field(value) + varint_len(headers.len() as i64) + headers_bytes;
    BATCH_HEADER_BYTES + varint_len(body as i64) + body
}

/// Length of the zig-zag varint encoding of `n`, as Kafka's record format uses.
fn varint_len(n: i64) -> usize {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut len = 1;
    while z >= 0x80 {
        z >>= 7;
        len += 1;
    }
    len
}

/// Whether a local send error means this record can never be produced (it goes to the DLQ)
/// rather than that the producer is unusable.
pub fn is_record_error(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(-1), 1);
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(64), 2);
        assert_eq!(varint_len(8191), 2);
        assert_eq!(varint_len(8192), 3);
    }

    #[test]
    fn batch_of_one_record() {
        // Key "k", 10-byte value, no headers: body 1+1+1+(1+1)+(1+10)+1 = 17, length 1, header 61.
        assert_eq!(single_record_batch_size(Some(1), Some(10), &[]), 79);
        // A null key costs one byte; a header "h" = "vv" costs 1+1+1+2.
        assert_eq!(single_record_batch_size(None, Some(10), &[]), 78);
        assert_eq!(
            single_record_batch_size(Some(1), Some(10), &[(1, Some(2))]),
            84
        );
    }
}
