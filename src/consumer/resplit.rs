//! The stall watchdog's view of the member ([`Watched`]) and its re-split of a partition: a
//! revocation and an assignment of one partition within the member, under the same lock as
//! revocations.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};

use super::{Context, Drained, GroupEvent};
use crate::error::Error;
use crate::member::Member;
use crate::offsets::{CommitError, Offsets};
use crate::partition::Phase;
use crate::stall::{Resplit, Seen, Watched};

/// How long a re-split's seek, or one reading of a committed offset, may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

impl Context {
    /// The stall watchdog's re-split: drains the partition's worker, commits its offsets as a
    /// revocation would, restarts the partition's fetch where the new worker must start, splits
    /// its queue again and starts that worker. When that cannot be done without losing track
    /// of records, the process stops.
    fn resplit(&self, partition: i32) -> Resplit {
        let _membership = self.membership.lock().unwrap();
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return Resplit::Gone;
        };
        if self.is_closing() {
            return Resplit::Gone;
        }
        let Some(handle) = self.workers.lock().unwrap().remove(&partition) else {
            return Resplit::Gone;
        };
        let drained = self.drain(
            vec![(partition, handle)],
            Instant::now() + self.drain_timeout,
        );
        match self.restart(&consumer, partition, &drained) {
            Ok(from) => {
                self.start_worker(&consumer, partition);
                Resplit::Done { from }
            }
            Err(why) => {
                if let Some(what) = why {
                    let _ = self.group_events.send(GroupEvent::Failed(Error::Stalled {
                        topic: self.topic.clone(),
                        partition,
                        what,
                    }));
                }
                Resplit::Stopping
            }
        }
    }

    /// After a re-split's drain: commits the partition's offsets, then moves its fetch to where
    /// the new worker starts and returns that offset (None: the old worker read nothing, the
    /// fetch goes on where it is). Err with why the process must stop (None: already reported).
    fn restart(
        &self,
        consumer: &Arc<StreamConsumer<Context>>,
        partition: i32,
        drained: &Drained,
    ) -> Result<Option<i64>, Option<String>> {
        if drained.abandoned > 0 {
            return Err(Some(format!(
                "its worker did not finish its {} records in flight within --drain-timeout",
                drained.abandoned
            )));
        }
        // A worker that failed has reported it, and the process stops.
        let exit = drained.exits.first().filter(|e| !e.failed).ok_or(None)?;
        let member = consumer.clone() as Arc<dyn Member>;
        let deadline = Instant::now() + self.drain_timeout;
        let committed = self.shared.offsets.commit_drained(
            Some(&member),
            &self.shared.stats,
            &self.topic,
            &drained.next_offsets(),
            true,
            deadline,
        );
        if let Err(CommitError::Transaction(e)) = committed {
            let _ = self.group_events.send(GroupEvent::Failed(e.into()));
            return Err(None);
        }
        let from = match *self.shared.offsets {
            // Everything before it is acknowledged and stored.
            Offsets::Stored { .. } => exit.next_offset,
            // What was sent after the committed offset may have gone with an aborted
            // transaction (this commit, or one the old worker had not rewound for yet).
            Offsets::Transactional(_) => {
                match committed_offset(&*member, &self.topic, partition, deadline)? {
                    Some(committed) => Some(committed),
                    None if exit.next_offset.is_none() => None,
                    None => return Err(Some("its records were sent in an aborted transaction and the group has no committed offset to go back to".into())),
                }
            }
        };
        let Some(from) = from else {
            return Ok(None);
        };
        // The seek drops what the fetcher queued after `from` and fetches it again, so a
        // fetcher that stopped starts again.
        match member.seek(&self.topic, partition, from, SEEK_TIMEOUT) {
            Ok(()) => Ok(Some(from)),
            // The queue goes on after the old worker's last record: right, unless records had
            // to be taken back.
            Err(error) if exit.next_offset == Some(from) => {
                tracing::warn!(topic = %self.topic, partition, %error, "re-split: seek failed; the new worker reads on from the queue");
                Ok(Some(from))
            }
            Err(error) => Err(Some(format!(
                "its fetch could not be moved back to offset {from}: {error}"
            ))),
        }
    }
}

impl Watched for StreamConsumer<Context> {
    fn partitions(&self) -> Vec<Seen> {
        let context = self.context();
        let workers = context.workers.lock().unwrap();
        workers
            .iter()
            .map(|(&partition, h)| {
                let status = h.state.status();
                Seen {
                    partition,
                    status,
                    alive: !h.task.is_finished() || status.phase != Phase::Consuming,
                }
            })
            .collect()
    }

    fn rearm(&self, partition: i32) -> bool {
        self.context().wakeups.rearm(partition)
    }

    fn resplit(&self, partition: i32) -> Resplit {
        self.context().resplit(partition)
    }
}

/// The group's committed offset of the partition, asked again until `deadline`.
fn committed_offset(
    member: &dyn Member,
    topic: &str,
    partition: i32,
    deadline: Instant,
) -> Result<Option<i64>, String> {
    const BACKOFF: Duration = Duration::from_millis(200);
    loop {
        match member.committed_offset(topic, partition, SEEK_TIMEOUT) {
            Ok(offset) => return Ok(offset),
            Err(error) if Instant::now() + BACKOFF < deadline => {
                tracing::debug!(topic, partition, %error, "committed offset unknown; retrying");
                std::thread::sleep(BACKOFF);
            }
            Err(error) => return Err(format!("its committed offset could not be read: {error}")),
        }
    }
}
