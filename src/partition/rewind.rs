//! Exactly-once: a worker's rewind after an aborted transaction (see the module's contract):
//! what it sent into the transaction is forgotten and its partition sought back to the group's
//! committed offset.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::watch;

use super::{PartitionWorker, Work};

impl PartitionWorker {
    /// Exactly-once, after an abort (the `count`th): forgets what was sent into the aborted
    /// transaction and seeks the partition back to the group's committed offset, so those
    /// records go into the next transaction. False if told to drain before it could.
    pub(super) async fn rewind(&self, work: &mut Work, count: u64) -> bool {
        // The abort has returned, so every delivery report of its transaction is in.
        let discarded = work.tracker.in_flight();
        work.tracker.abandon_in_flight();
        work.abort_pending = false;
        work.aborts_seen = count;
        self.state.set_in_flight(0);
        if work.at_end {
            work.at_end = false;
            self.state.leave_end();
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let consumer = self.consumer.clone();
            let (topic, partition) = (self.topic.clone(), self.partition);
            let (first_read, read_next) = (work.tracker.first_read(), work.tracker.read_next());
            let rewound = tokio::task::spawn_blocking(move || {
                let timeout = Duration::from_secs(10);
                let committed = consumer.committed_offset(&topic, partition, timeout)?;
                match committed.or(first_read) {
                    Some(to) if read_next.is_some_and(|next| next > to) => {
                        consumer.seek(&topic, partition, to, timeout)?;
                        Ok::<_, KafkaError>(Some(to))
                    }
                    _ => Ok(None),
                }
            })
            .await;
            match rewound {
                Ok(Ok(to)) => {
                    if let Some(to) = to {
                        work.tracker.rewind(to);
                        self.state.rewound(to);
                    }
                    self.stats.rewound_after_abort();
                    tracing::info!(
                        topic = %self.topic,
                        partition = self.partition,
                        to,
                        discarded,
                        "transaction aborted; partition rewound to its committed offset"
                    );
                    return true;
                }
                Ok(Err(error)) => {
                    tracing::warn!(partition = self.partition, %error, "cannot rewind the partition yet; retrying");
                }
                Err(error) => {
                    tracing::warn!(partition = self.partition, %error, "rewind task failed; retrying");
                }
            }
            tokio::select! {
                _ = self.state.drain_requested() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Whether a delivery error is a casualty of an abort under way (exactly-once): librdkafka
    /// purges what is queued when the transaction fails, and refuses sends until it is aborted.
    pub(super) fn abort_casualty(&self, error: &KafkaError) -> bool {
        self.shared.offsets.aborts().is_some()
            && matches!(
                error.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::PurgeQueue
                        | RDKafkaErrorCode::PurgeInflight
                        | RDKafkaErrorCode::State
                )
            )
    }
}

/// Resolves when another transaction was aborted (exactly-once); never under at-least-once.
pub(super) async fn aborted(aborts: &mut Option<watch::Receiver<u64>>) {
    if let Some(aborts) = aborts {
        if aborts.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}
