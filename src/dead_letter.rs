//! The dead-letter path: which records go to the dead-letter topic, why, and in what form.
//!
//! # Contract
//! A record goes to the dead-letter topic, never to the destination, when:
//! - the transform rejects its value ([`Reason::InvalidUtf8`], [`Reason::InvalidJson`],
//!   [`Reason::NotAnObject`]);
//! - its output is too large ([`Reason::OutputTooLarge`]): a batch of that one record would be
//!   over the destination's `max.message.bytes` (checked here before it is sent: the broker
//!   would refuse it after the input is gone), or the producer refuses it as over its
//!   `message.max.bytes`.
//!
//! A dead letter is its input unchanged (key, value, headers) with the [`headers`] below added.
//! If even that is too large (over the dead-letter topic's `max.message.bytes`, or the
//! producer's `message.max.bytes`) it is sent without its value, carrying the value's length
//! and md5 instead: the partition goes on, and the record stays findable in the source.
//!
//! The reason names are the `ktransform.error.kind` header's values and the
//! `records_dead_lettered` metric's `kind` label; `ktransform verify` reads the same names and
//! headers from here.

use std::fmt;
use std::sync::Arc;

use md5::{Digest, Md5};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::Message;

use crate::ack::Acks;
use crate::fetch::Record;
use crate::sink::size::{header_lengths, single_record_batch_size, BATCH_HEADER_BYTES};
use crate::sink::{Sink, TopicLimits};
use crate::transform::{Rejection, RejectionKind};

/// The headers a dead letter carries after its input's own.
pub mod headers {
    /// Every header the service adds starts with this; verify leaves them out when it compares
    /// an output's headers with its input's.
    pub const PREFIX: &str = "ktransform.";
    /// The [`Reason`](super::Reason), by name.
    pub const ERROR_KIND: &str = "ktransform.error.kind";
    /// What exactly was wrong, for a person.
    pub const ERROR_MESSAGE: &str = "ktransform.error.message";
    pub const SOURCE_TOPIC: &str = "ktransform.source.topic";
    pub const SOURCE_PARTITION: &str = "ktransform.source.partition";
    pub const SOURCE_OFFSET: &str = "ktransform.source.offset";
    /// On a dead letter sent without its value (too large for the producer's
    /// `message.max.bytes` or the dead-letter topic's `max.message.bytes`): the value's length
    /// in bytes.
    pub const VALUE_DROPPED: &str = "ktransform.value.dropped";
    /// With [`VALUE_DROPPED`]: the lowercase hex md5 of the dropped value.
    pub const VALUE_MD5: &str = "ktransform.value.md5";
}

/// Why a record is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The value is not UTF-8, so it cannot be JSON.
    InvalidUtf8,
    /// The value is UTF-8 but not one JSON value.
    InvalidJson,
    /// The value is JSON, but not an object.
    NotAnObject,
    /// The output (the input with the hash added) is too large for the destination's
    /// `max.message.bytes` or the producer's `message.max.bytes`.
    OutputTooLarge,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::NotAnObject,
        Reason::OutputTooLarge,
    ];

    /// The stable name: the [`headers::ERROR_KIND`] value and the metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::NotAnObject => "not_an_object",
            Reason::OutputTooLarge => "output_too_large",
        }
    }
}

impl From<RejectionKind> for Reason {
    fn from(kind: RejectionKind) -> Self {
        match kind {
            RejectionKind::InvalidUtf8 => Reason::InvalidUtf8,
            RejectionKind::InvalidJson => Reason::InvalidJson,
            RejectionKind::NotAnObject => Reason::NotAnObject,
        }
    }
}

/// A rejection reads as the dead letter it becomes: its reason's name, then its message.
impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", Reason::from(self.kind).as_str(), self.message)
    }
}

impl std::error::Error for Rejection {}

/// Where one record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Output,
    DeadLetter(Reason),
}

/// Sends each record where it belongs, the destination or the dead-letter topic, through the
/// one producer; the one place that decides.
pub struct Router {
    sink: Arc<Sink>,
    /// The dead-letter topic.
    topic: String,
    /// The destination's and dead-letter topic's `max.message.bytes`, when known.
    limits: TopicLimits,
}

impl Router {
    /// Dead letters go to `topic`; the limits are those the sink was built for.
    pub fn new(sink: Arc<Sink>, topic: String) -> Self {
        let limits = sink.limits();
        Router {
            sink,
            topic,
            limits,
        }
    }

    /// Sends `value` (None for a tombstone) to the destination with the input's key and
    /// headers, or, when it is too large for the destination or the producer, the input to the
    /// dead-letter topic as [`Reason::OutputTooLarge`].
    pub async fn send_output(
        &self,
        input: &mut Record<'_>,
        value: Option<&[u8]>,
        acks: &Arc<Acks>,
    ) -> Result<Sent, KafkaError> {
        if let Some(why) = value.and_then(|v| self.output_too_large(input, v)) {
            return self
                .send_dead_letter(input, Reason::OutputTooLarge, &why, acks)
                .await;
        }
        match self.sink.send_output(input, value, acks).await {
            Ok(()) => Ok(Sent::Output),
            // Over the producer's `message.max.bytes` once the hash is added.
            Err(e) if too_large_for_producer(&e) => {
                self.send_dead_letter(input, Reason::OutputTooLarge, &e.to_string(), acks)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    /// Sends an input whose value the transform rejected to the dead-letter topic.
    pub async fn send_rejected(
        &self,
        input: &Record<'_>,
        rejection: &Rejection,
        acks: &Arc<Acks>,
    ) -> Result<Sent, KafkaError> {
        self.send_dead_letter(input, rejection.kind.into(), &rejection.message, acks)
            .await
    }

    /// Why `value`, sent with `input`'s key and headers, cannot go to the destination: a batch of
    /// that one record would be over the destination's `max.message.bytes`.
    fn output_too_large(&self, input: &Record<'_>, value: &[u8]) -> Option<String> {
        let limit = self.limits.destination?;
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
        let headers = input.headers().map_or(Vec::new(), header_lengths);
        let size = single_record_batch_size(key, Some(value.len()), &headers);
        (size > limit).then(|| {
            format!(
                "output of {} bytes makes a {size}-byte record batch, over the destination's \
                 max.message.bytes of {limit}",
                value.len()
            )
        })
    }

    /// Sends the input unchanged to the dead-letter topic, with the reason and origin in headers;
    /// without its value when too large even so (see the module's contract).
    async fn send_dead_letter(
        &self,
        input: &Record<'_>,
        reason: Reason,
        message: &str,
        acks: &Arc<Acks>,
    ) -> Result<Sent, KafkaError> {
        let kind = reason.as_str();
        let timestamp = self.sink.timestamp_of(input);
        let headers = dead_letter_headers(input, kind, message, &[]);
        let sent = if self.dead_letter_too_large(input, &headers) {
            // What the producer answers over its own limit: the same fallback below.
            Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge,
            ))
        } else {
            self.sink
                .send(
                    &self.topic,
                    input.key(),
                    input.payload(),
                    timestamp,
                    Some(headers),
                    acks,
                )
                .await
        };
        let sent = match sent {
            Err(e) if too_large_for_producer(&e) && input.payload().is_some() => {
                let value = input.payload().unwrap_or_default();
                let (len, md5) = (value.len().to_string(), hex::encode(Md5::digest(value)));
                tracing::warn!(
                    topic = input.topic(),
                    partition = input.partition(),
                    offset = input.offset(),
                    bytes = value.len(),
                    "dead letter too large: sent without its value"
                );
                let dropped = [
                    (headers::VALUE_DROPPED, len.as_str()),
                    (headers::VALUE_MD5, md5.as_str()),
                ];
                let headers = dead_letter_headers(input, kind, message, &dropped);
                self.sink
                    .send(
                        &self.topic,
                        input.key(),
                        None,
                        timestamp,
                        Some(headers),
                        acks,
                    )
                    .await
            }
            sent => sent,
        };
        sent.map(|()| Sent::DeadLetter(reason))
    }

    /// Whether a batch of this one dead letter would be over the dead-letter topic's limit.
    fn dead_letter_too_large(&self, input: &Record<'_>, headers: &OwnedHeaders) -> bool {
        let Some(limit) = self.limits.dlq else {
            return false;
        };
        let key = input.key().map(<[u8]>::len);
        single_record_batch_size(key, Some(input.payload_len()), &header_lengths(headers)) > limit
    }
}

/// The input's headers, then the dead-letter headers, then `extra`.
fn dead_letter_headers(
    input: &Record<'_>,
    kind: &str,
    message: &str,
    extra: &[(&str, &str)],
) -> OwnedHeaders {
    let base = input.headers().map(|h| h.detach()).unwrap_or_default();
    let partition = input.partition().to_string();
    let offset = input.offset().to_string();
    [
        (headers::ERROR_KIND, kind),
        (headers::ERROR_MESSAGE, message),
        (headers::SOURCE_TOPIC, input.topic()),
        (headers::SOURCE_PARTITION, partition.as_str()),
        (headers::SOURCE_OFFSET, offset.as_str()),
    ]
    .iter()
    .chain(extra)
    .fold(base, |h, &(key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

/// Whether a local send error means this record can never be produced (it is dead-lettered,
/// or sent without its value) rather than that the producer is unusable.
fn too_large_for_producer(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_the_wire_format() {
        let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "invalid_utf8",
                "invalid_json",
                "not_an_object",
                "output_too_large"
            ]
        );
    }

    #[test]
    fn every_rejection_has_its_reason() {
        for (kind, reason) in [
            (RejectionKind::InvalidUtf8, Reason::InvalidUtf8),
            (RejectionKind::InvalidJson, Reason::InvalidJson),
            (RejectionKind::NotAnObject, Reason::NotAnObject),
        ] {
            assert_eq!(Reason::from(kind), reason);
        }
        let r = crate::transform::transform(b"42").unwrap_err();
        assert!(r.to_string().starts_with("not_an_object: "), "{r}");
    }

    #[test]
    fn every_header_has_the_prefix() {
        use headers::*;
        for name in [
            ERROR_KIND,
            ERROR_MESSAGE,
            SOURCE_TOPIC,
            SOURCE_PARTITION,
            SOURCE_OFFSET,
            VALUE_DROPPED,
            VALUE_MD5,
        ] {
            assert!(name.starts_with(PREFIX), "{name}");
        }
    }

    #[test]
    fn only_size_refusals_dead_letter() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(too_large_for_producer(&too_large));
        let queue_full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert!(!too_large_for_producer(&queue_full));
    }
}
