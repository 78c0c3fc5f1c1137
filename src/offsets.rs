//! The delivery guarantee as one type: what happens to a partition's offsets.
//!
//! - At-least-once ([`Offsets::Stored`]): once every record before it is acknowledged, a
//!   partition's next offset is stored in the consumer; librdkafka's auto-commit commits the
//!   stored offsets every second, and revocation and stop commit the drained partitions'
//!   offsets synchronously, so the next owner starts right after the last acknowledged record.
//! - Exactly-once ([`Offsets::Transactional`]): nothing is stored in the consumer (its
//!   auto-commit is off). A batch is sent inside the open transaction and its next offset goes
//!   into it, committed together with the outputs; revocation and stop commit the transaction,
//!   or abort it when a partition could not finish its batch. After an abort (that one, or a
//!   commit the group refused) every worker that sent into the aborted transaction rewinds its
//!   partition to the committed offset ([`Offsets::aborts`]).
//!
//! The partition worker, the revocation path and the stop sequence call the same methods.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch, RwLockReadGuard};
use tokio::task::JoinHandle;

use crate::committer::Committer;
use crate::member::Member;
use crate::metrics::Stats;
use crate::transaction::{self, Transactions, TxnError};

/// Pause between attempts of a refused synchronous commit.
const COMMIT_RETRY_BACKOFF: Duration = Duration::from_millis(200);

pub enum Offsets {
    Stored { committer: Committer },
    Transactional(Arc<Transactions>),
}

/// Why drained partitions' offsets are not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("offsets not committed before the deadline")]
    NotCommitted,
    #[error(transparent)]
    Transaction(#[from] TxnError),
}

impl Offsets {
    /// At-least-once, with its commit thread.
    pub fn stored() -> std::io::Result<Self> {
        Ok(Offsets::Stored {
            committer: Committer::start()?,
        })
    }

    /// The consumer whose group metadata goes with the offsets into each transaction.
    pub fn attach(&self, member: Weak<dyn Member>) {
        if let Offsets::Transactional(t) = self {
            t.attach(member);
        }
    }

    /// Exactly-once: commits the open transaction every `interval` (or when it is full) until
    /// aborted; a failure goes to `failed`. None under at-least-once (librdkafka's auto-commit).
    pub fn commit_periodically(
        &self,
        interval: Duration,
        failed: mpsc::UnboundedSender<TxnError>,
    ) -> Option<JoinHandle<()>> {
        match self {
            Offsets::Stored { .. } => None,
            Offsets::Transactional(t) => Some(tokio::spawn(transaction::commit_periodically(
                t.clone(),
                interval,
                failed,
            ))),
        }
    }

    /// Held while a batch is sent: under exactly-once no commit may cut a batch in two.
    pub async fn enter(&self) -> Option<RwLockReadGuard<'_, ()>> {
        match self {
            Offsets::Stored { .. } => None,
            Offsets::Transactional(t) => Some(t.enter().await),
        }
    }

    /// Exactly-once: the count of aborted transactions, which changes after each abort. None
    /// under at-least-once, where nothing sent is ever taken back.
    pub fn aborts(&self) -> Option<watch::Receiver<u64>> {
        match self {
            Offsets::Stored { .. } => None,
            Offsets::Transactional(t) => Some(t.aborts()),
        }
    }

    /// A batch of `records` up to before `next` was sent (with the guard of [`Offsets::enter`]).
    pub fn sent(&self, partition: i32, next: i64, records: usize) {
        if let Offsets::Transactional(t) = self {
            t.sent(partition, next, records);
        }
    }

    /// Every record of the partition before `next` is acknowledged.
    pub fn acknowledged(
        &self,
        member: &dyn Member,
        topic: &str,
        partition: i32,
        next: i64,
    ) -> KafkaResult<()> {
        match self {
            Offsets::Stored { .. } => member.store_offset(topic, partition, next - 1),
            // The offset is in the open transaction already.
            Offsets::Transactional(_) => Ok(()),
        }
    }

    /// Commits what drained partitions acknowledged, before `deadline` (blocking): `drained`
    /// holds each partition's next offset, if it acknowledged any record. `clean` is false when
    /// a partition was abandoned or failed: under exactly-once its batch may be half sent with
    /// its offsets unrecorded, so the transaction is aborted instead (and the partitions still
    /// owned rewind). Under
    /// at-least-once, without a consumer (it is closing) librdkafka commits the stored offsets
    /// itself.
    pub fn commit_drained(
        &self,
        member: Option<&Arc<dyn Member>>,
        stats: &Stats,
        topic: &str,
        drained: &[(i32, Option<i64>)],
        clean: bool,
        deadline: Instant,
    ) -> Result<(), CommitError> {
        match self {
            Offsets::Stored { committer } => {
                let Some(member) = member else {
                    tracing::debug!("consumer closing; stored offsets left to librdkafka");
                    return Ok(());
                };
                let mut tpl = TopicPartitionList::new();
                for (partition, next) in drained {
                    if let Some(next) = next {
                        tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                            .expect("a valid offset");
                    }
                }
                if tpl.count() == 0 {
                    return Ok(());
                }
                let member = member.clone();
                let committed = committer
                    .run(deadline, move || commit_until(&*member, &tpl, deadline))
                    .unwrap_or(false);
                stats.committed(committed);
                if committed {
                    Ok(())
                } else {
                    tracing::warn!("offsets not committed before the deadline; records after the last committed offset will be consumed again");
                    Err(CommitError::NotCommitted)
                }
            }
            Offsets::Transactional(t) if clean => Ok(t.commit_blocking()?),
            Offsets::Transactional(t) => Ok(t.abort_blocking()?),
        }
    }
}

/// A commit refused while the group rebalances (or its coordinator moves) succeeds once that
/// is over, so it is retried until `deadline`; one refused because the member is no longer in
/// the group (its session expired, or a static member replaced it) cannot succeed before it
/// rejoins, which it cannot do while its revocation waits here: given up at once.
fn commit_until(member: &dyn Member, tpl: &TopicPartitionList, deadline: Instant) -> bool {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match member.commit_sync(tpl) {
            Ok(()) => {
                if attempts > 1 {
                    tracing::info!(attempts, "commit succeeded after retries");
                }
                return true;
            }
            Err(error) if out_of_the_group(&error) => {
                tracing::warn!(%error, attempts, "commit refused: this member is no longer in the group");
                return false;
            }
            Err(error) if Instant::now() + COMMIT_RETRY_BACKOFF < deadline => {
                tracing::debug!(%error, attempts, "commit refused; retrying");
                std::thread::sleep(COMMIT_RETRY_BACKOFF);
            }
            Err(error) => {
                tracing::warn!(%error, attempts, "commit failed");
                return false;
            }
        }
    }
}

/// The group no longer knows this member (or fenced it): no retry makes its commit succeed.
fn out_of_the_group(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownMemberId | RDKafkaErrorCode::FencedInstanceId)
    )
}
