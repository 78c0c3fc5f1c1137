//! The producing side: transformed records to the destination, rejected ones to the dead-letter
//! topic, both through one idempotent producer.
//!
//! Sends never block and never drop: a full local queue is waited out here, and every send
//! returns a [`DeliveryFuture`] that the partition worker awaits in offset order.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::Message;

use crate::config::{ConfigError, RunConfig};
use crate::logging::QuietContext;

/// Dead-letter headers. The original key, value and headers are kept as they were.
pub mod headers {
    pub const ERROR_KIND: &str = "ktransform.error.kind";
    pub const ERROR_MESSAGE: &str = "ktransform.error.message";
    pub const SOURCE_TOPIC: &str = "ktransform.source.topic";
    pub const SOURCE_PARTITION: &str = "ktransform.source.partition";
    pub const SOURCE_OFFSET: &str = "ktransform.source.offset";
}

/// librdkafka's default `message.max.bytes`.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// How long to wait before retrying a send refused because librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

pub struct Sink {
    producer: FutureProducer<QuietContext>,
    destination: String,
    dlq: String,
}

impl Sink {
    /// `destination_max_bytes`: the destination topic's `max.message.bytes`, when known.
    pub fn new(
        config: &RunConfig,
        destination_max_bytes: Option<usize>,
    ) -> Result<Self, ConfigError> {
        let mut client = config.producer_config()?;
        let configured = client
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES);
        if let Some(limit) = destination_max_bytes.filter(|l| *l < configured) {
            // librdkafka's minimum is 1000; a topic limit below it cannot be honoured anyway.
            client.set("message.max.bytes", limit.max(1000).to_string());
        }
        let producer = client
            .create_with_context(QuietContext::default())
            .map_err(|e| ConfigError {
                flag: "-X".into(),
                message: format!("producer: {e}"),
            })?;
        Ok(Sink {
            producer,
            destination: config.destination.clone(),
            dlq: config.dlq_topic(),
        })
    }

    pub fn producer(&self) -> &FutureProducer<QuietContext> {
        &self.producer
    }

    /// Sends `value` (None for a tombstone) with the input's key and headers to the destination.
    pub async fn send_output(
        &self,
        input: &BorrowedMessage<'_>,
        value: Option<&[u8]>,
    ) -> Result<DeliveryFuture, KafkaError> {
        let headers = input.headers().map(|h| h.detach());
        self.send(&self.destination, input.key(), value, headers)
            .await
    }

    /// Sends the input unchanged to the dead-letter topic, with the reason and origin in headers.
    pub async fn send_dead_letter(
        &self,
        input: &BorrowedMessage<'_>,
        kind: &str,
        message: &str,
    ) -> Result<DeliveryFuture, KafkaError> {
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
        self.send(&self.dlq, input.key(), input.payload(), Some(headers))
            .await
    }

    async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<DeliveryFuture, KafkaError> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        record.key = key;
        record.payload = value;
        record.headers = headers;
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((e, _)) => return Err(e),
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

/// Whether a local send error means this record can never be produced (it goes to the DLQ)
/// rather than that the producer is unusable.
pub fn is_record_error(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    )
}
