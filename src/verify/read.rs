//! Reading topics for the audit: the offsets at start, then every record below them.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::audit::Record;
use super::VerifyConfig;
use crate::error::Error;
use crate::security::Watched;

/// Interval of the progress line while reading.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Timeout of one metadata or watermark request.
const REQUEST: Duration = Duration::from_secs(10);
/// A read that receives nothing for this long while partitions are short of their end fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// The offsets of one partition to read: `low..end` as captured at start.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub partition: i32,
    pub low: i64,
    pub end: i64,
}

pub(super) struct Reader<'a> {
    config: &'a VerifyConfig,
    /// When the progress line was last logged, over all reads.
    last_progress: Cell<Instant>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(config: &'a VerifyConfig) -> Self {
        Reader {
            config,
            last_progress: Cell::new(Instant::now()),
        }
    }

    /// The partitions of `topic` and their offsets now; `None` when the topic does not exist.
    pub(super) fn snapshot(&self, topic: &str) -> Result<Option<Vec<Span>>, Error> {
        let consumer = self.config.consumer()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST)
            .map_err(|source| match Watched::refusal_of(&consumer) {
                // A refused certificate or password fails the same request: name it.
                Some(refusal) => Error::Security(refusal),
                None => Error::Unreachable {
                    brokers: self.config.kafka.brokers.clone(),
                    waited: REQUEST,
                    source,
                },
            })?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        if let Some(e) = t.error() {
            return match RDKafkaErrorCode::from(e) {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                    Ok(None)
                }
                code => Err(Error::Fatal(format!("metadata of {topic}: {code}"))),
            };
        }
        let mut spans = Vec::new();
        for p in t.partitions() {
            // read_committed: the end is the last stable offset, not the high watermark.
            let (low, end) = consumer.fetch_watermarks(topic, p.id(), REQUEST)?;
            spans.push(Span {
                partition: p.id(),
                low,
                end,
            });
        }
        spans.sort_by_key(|s| s.partition);
        Ok(Some(spans))
    }

    /// Calls `on` for every record of `spans`, in offset order per partition; with
    /// `one_at_a_time`, a partition after the other, in the order of `spans`.
    pub(super) fn read(
        &self,
        phase: &str,
        topic: &str,
        spans: &[Span],
        one_at_a_time: bool,
        mut on: impl FnMut(&Record<'_>),
    ) -> Result<(), Error> {
        let mut progress = Progress {
            phase,
            read: 0,
            total: spans.iter().map(|s| s.end - s.low).sum(),
        };
        let started = Instant::now();
        if one_at_a_time {
            for span in spans {
                self.read_spans(topic, std::slice::from_ref(span), &mut progress, &mut on)?;
            }
        } else {
            self.read_spans(topic, spans, &mut progress, &mut on)?;
        }
        let (read, elapsed) = (progress.read, started.elapsed());
        tracing::debug!(phase, %topic, read, ?elapsed, "verify: read");
        Ok(())
    }

    /// Reads `spans` with a fresh consumer, so that no event of an earlier assignment can end a
    /// partition early.
    fn read_spans(
        &self,
        topic: &str,
        spans: &[Span],
        progress: &mut Progress<'_>,
        on: &mut impl FnMut(&Record<'_>),
    ) -> Result<(), Error> {
        let mut open: HashMap<i32, i64> = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for s in spans.iter().filter(|s| s.end > s.low) {
            open.insert(s.partition, s.end);
            tpl.add_partition_offset(topic, s.partition, Offset::Offset(s.low))?;
        }
        if open.is_empty() {
            return Ok(());
        }
        let consumer = self.config.consumer()?;
        consumer.assign(&tpl)?;
        // Clocks are read only while idle and every few thousand records, not per record.
        let mut idle_since: Option<Instant> = None;
        while !open.is_empty() {
            let reached_end = match consumer.poll(POLL) {
                None => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= STALL_TIMEOUT {
                        let mut waiting: Vec<i32> = open.into_keys().collect();
                        waiting.sort_unstable();
                        return Err(Error::Fatal(format!(
                            "reading {topic}: nothing received for {STALL_TIMEOUT:?} while \
                             partitions {waiting:?} are short of their end offsets; is the \
                             broker up?"
                        )));
                    }
                    None
                }
                Some(Ok(m)) if m.topic() == topic => {
                    idle_since = None;
                    let partition = m.partition();
                    open.get(&partition).and_then(|&end| {
                        if m.offset() < end {
                            on(&record(&m));
                            progress.read += 1;
                        }
                        // Offsets need not be dense (control records, compaction).
                        (m.offset() >= end - 1).then_some(partition)
                    })
                }
                Some(Ok(_)) => None,
                // At the partition's end now, which is at or past the captured end: nothing
                // below it is left (aborted records and transaction markers never arrive).
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    idle_since = None;
                    Some(partition)
                }
                Some(Err(e)) => {
                    tracing::warn!(%topic, error = %e, "verify: consumer error");
                    None
                }
            };
            if let Some(partition) = reached_end.filter(|p| open.remove(p).is_some()) {
                let mut done = TopicPartitionList::new();
                done.add_partition(topic, partition);
                let _ = consumer.pause(&done);
            }
            if (progress.read % 4096 == 0 || idle_since.is_some())
                && self.last_progress.get().elapsed() >= PROGRESS_INTERVAL
            {
                let Progress { phase, read, total } = *progress;
                tracing::info!(phase, %topic, read, of = total, "verify: reading");
                self.last_progress.set(Instant::now());
            }
        }
        Ok(())
    }
}

/// Records read in one phase, for the progress line.
#[derive(Clone, Copy)]
struct Progress<'a> {
    phase: &'a str,
    read: u64,
    total: i64,
}

fn record<'a>(m: &'a BorrowedMessage<'_>) -> Record<'a> {
    Record {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        value: m.payload(),
        headers: m
            .headers()
            .map_or_else(Vec::new, |h| h.iter().map(|h| (h.key, h.value)).collect()),
        timestamp: m.timestamp().to_millis(),
    }
}
