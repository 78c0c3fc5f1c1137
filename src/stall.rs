//! The stall watchdog: a partition that has records to read and reads none is reported and
//! healed, step by step.
//!
//! Peers broke exactly here: Vector's Kafka source silently stopped consuming partitions after
//! a rebalance (vectordotdev/vector#22006: a stale split queue's drop switched off its
//! successor's wake-up callback), and Confluent's Parallel Consumer had partitions stop after
//! rebalances (#857). [`crate::fetch`] guards against the known race and the worker re-reads
//! its queue every 250 ms whatever the callback does; this watchdog is for what nobody foresaw.
//!
//! # What a stall is
//! A partition is stalled when, all at once:
//! - its worker is consuming (not draining or done) and waiting on its queue alone: not between
//!   reading a batch and having sent it (then it waits on the producer or the transaction),
//!   and with every record it read acknowledged (else it waits on its destination, slow or
//!   unreachable: `--max-in-flight` reached, or a broker restarting);
//! - it made no progress ([`crate::partition::Progress`]: a batch read, sent or acknowledged)
//!   for `--stall-timeout`;
//! - it is behind: its end offset is past its position.
//!
//! A queue that stops being read shows as a worker with nothing in flight once its last
//! acknowledgements are in, so waiting for them loses nothing. A worker whose task ended while
//! consuming (it panicked) counts as waiting on its queue, whatever it was doing: nothing will
//! ever move it. An idle partition (nothing to read) is not stalled, nor is one held back by
//! its destination.
//!
//! # "Behind": where the numbers come from, and their cost
//! Only a partition already quiet for the timeout is asked about, and at most once per timeout:
//! its end is asked of its leader (ListOffsets, `Offset::End`: the high watermark, or the last
//! stable offset under `read_committed`, so a transaction left open upstream is not lag), all
//! such partitions in one request per leader. Nothing per record, nothing for a partition that
//! progresses, one ListOffsets entry per idle partition per timeout
//! (`ktransform_stall_checks_total` counts them). librdkafka's cached watermarks and its
//! statistics cost nothing, but they are only as fresh as the partition's last fetch response,
//! so they freeze when the fetcher stops (one kind of stall), and the cached watermark is the
//! high one even under `read_committed`.
//!
//! The position is the later of the worker's read offset and librdkafka's (which moves past
//! transaction markers); for a worker that has read nothing yet, the group's committed offset,
//! and without one the partition's start under `auto.offset.reset=earliest` (under `latest`
//! such a partition is not judged). A check its leader does not answer judges nothing: a broker
//! that is down is `/healthz`'s business, not a stall.
//!
//! # What is done about it
//! 1. When found: a WARN line naming the partition, `ktransform_partition_stalled` 1 and
//!    `ktransform_errors_total{kind="stalled"}`; the wake-up is re-armed
//!    ([`crate::fetch::Wakeups::rearm`]): the queue's callback set again for the worker and the
//!    worker woken to read its queue. It costs nothing and disturbs nothing, and it is exactly
//!    what Vector lost.
//! 2. Each further timeout without progress: the queue is re-split, as if the partition were
//!    revoked and assigned again within the member. The worker is drained (`--drain-timeout`)
//!    and its offsets committed (exactly-once: the open transaction); the partition's fetch is
//!    restarted with a seek, so that a fetcher that stopped starts again, at the record after
//!    the last acknowledged one (exactly-once: at the committed offset, since an abort may
//!    have taken back what was sent after it); then the queue is split again and a new worker
//!    started. Nothing is skipped, and nothing is produced twice beyond what the guarantee
//!    allows. When that cannot be done without losing track of records (the worker does not
//!    drain in time; exactly-once, the committed offset cannot be read or the seek back
//!    fails), the process stops (exit 1) and a restart resumes from the committed offsets.
//! 3. Two timeouts after it was found (three without progress), `/healthz` fails naming the
//!    partition, while re-splits go on every timeout. Leaving and rejoining the group in-process
//!    was not chosen: under cooperative-sticky the member gets the same partitions back, with
//!    the same librdkafka client that may be at fault. A restart gets a fresh client; it is left
//!    to whatever restarts on `/healthz`, since stopping by ourselves would also stop every
//!    healthy partition, and would loop without an orchestrator.
//!
//! A stall ends (INFO line, gauge 0, `/healthz` back) when the partition progresses, has
//! nothing left to read, or is no longer assigned here.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::Offset;

use crate::member::Member;
use crate::metrics::Stats;
use crate::partition::Status;

mod judge;

pub use judge::{Ended, Judge, Verdict};

/// How long one check's requests (end offsets, committed offsets) may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the watchdog watches: the group member with its partitions' workers.
pub trait Watched: Member {
    /// Every partition with a worker, as it is now.
    fn partitions(&self) -> Vec<Seen>;

    /// Sets the partition's queue wake-up again and wakes its worker; false if it has none.
    fn rearm(&self, partition: i32) -> bool;

    /// Replaces the partition's worker and restarts its fetch (blocking, up to the drain
    /// timeout).
    fn resplit(&self, partition: i32) -> Resplit;
}

/// One partition in a round.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub partition: i32,
    pub status: Status,
    /// The worker's task is still running (it never ends while consuming, unless it panicked).
    pub alive: bool,
}

/// How a re-split went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resplit {
    /// A new worker reads the partition, its fetch restarted at this offset (None: the old
    /// worker had acknowledged nothing, so the fetch went on where it was).
    Done { from: Option<i64> },
    /// The partition is no longer assigned here, or the process is stopping.
    Gone,
    /// The old worker did not drain or failed: the process stops.
    Stopping,
}

/// What the consumer does with a partition that has no committed offset (its
/// `auto.offset.reset`, read once at start as `crate::consumer::start::StartAt`): where a worker
/// that has read nothing started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    Earliest,
    /// From the end, or an error: a partition that read nothing cannot be judged.
    Other,
}

/// The watchdog's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub topic: String,
    /// `--stall-timeout`.
    pub timeout: Duration,
    pub reset: Reset,
}

/// How far behind its end offset each of `asked` (partition, its worker's read position) is;
/// None where that cannot be told. Blocking: up to three requests, for all partitions at once.
pub fn behind<M: Member + ?Sized>(
    member: &M,
    topic: &str,
    asked: &[(i32, Option<i64>)],
    reset: Reset,
) -> Vec<(i32, Option<i64>)> {
    let partitions: Vec<i32> = asked.iter().map(|(p, _)| *p).collect();
    let listed = |ps: &[i32], at: Offset| -> HashMap<i32, Option<i64>> {
        match member.list_offsets(topic, ps, at, CHECK_TIMEOUT) {
            Ok(offsets) => offsets.into_iter().collect(),
            Err(error) => {
                tracing::debug!(topic, %error, "stall watchdog: offsets unknown");
                HashMap::new()
            }
        }
    };
    let ends = listed(&partitions, Offset::End);
    let positions: HashMap<i32, Option<i64>> = member
        .positions(topic)
        .map(|p| p.into_iter().collect())
        .unwrap_or_default();
    let mut starts: HashMap<i32, Option<i64>> = asked
        .iter()
        .map(|&(p, read)| (p, read.max(positions.get(&p).copied().flatten())))
        .collect();
    let unknown = |starts: &HashMap<i32, Option<i64>>| -> Vec<i32> {
        let mut ps: Vec<i32> = starts
            .iter()
            .filter(|(_, s)| s.is_none())
            .map(|(p, _)| *p)
            .collect();
        ps.sort_unstable();
        ps
    };
    let fresh = unknown(&starts);
    if !fresh.is_empty() {
        if let Ok(committed) = member.committed_offsets_of(topic, &fresh, CHECK_TIMEOUT) {
            for (p, offset) in committed {
                starts.insert(p, offset);
            }
        }
        let uncommitted = unknown(&starts);
        if reset == Reset::Earliest && !uncommitted.is_empty() {
            for (p, offset) in listed(&uncommitted, Offset::Beginning) {
                starts.insert(p, offset);
            }
        }
    }
    partitions
        .iter()
        .map(|p| {
            let end = ends.get(p).copied().flatten();
            let start = starts.get(p).copied().flatten();
            (*p, end.zip(start).map(|(end, start)| end - start))
        })
        .collect()
}

/// Between rounds: a fraction of the timeout, so a stall is found within 1.25 timeouts (at
/// most 5 s late).
fn round_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// Watches `target`'s partitions every round until it is gone (or the task is dropped).
pub async fn watch(target: Weak<dyn Watched>, stats: Arc<Stats>, settings: Settings) {
    let mut judge = Judge::new(settings.timeout);
    let mut ticker = tokio::time::interval(round_interval(settings.timeout));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(target) = target.upgrade() else {
            return;
        };
        let (ended, asked) = judge.look(&target.partitions(), Instant::now());
        for verdict in ended {
            act(&target, &stats, &settings, verdict).await;
        }
        if asked.is_empty() {
            continue;
        }
        let checked = {
            let (target, topic, reset) = (target.clone(), settings.topic.clone(), settings.reset);
            tokio::task::spawn_blocking(move || behind(&*target, &topic, &asked, reset)).await
        };
        let Ok(checked) = checked else {
            continue;
        };
        for (partition, lag) in checked {
            let result = match lag {
                None => "failed",
                Some(n) if n <= 0 => "idle",
                Some(_) => "behind",
            };
            stats.stall_checked(&settings.topic, result);
            if let Some(verdict) = judge.judge(partition, lag, Instant::now()) {
                act(&target, &stats, &settings, verdict).await;
            }
        }
    }
}

/// Reports a verdict and applies its heal.
async fn act(target: &Arc<dyn Watched>, stats: &Stats, settings: &Settings, verdict: Verdict) {
    let topic = settings.topic.as_str();
    match verdict {
        Verdict::Stalled {
            partition,
            behind,
            quiet,
        } => {
            stats.partition_stalled(topic, partition);
            tracing::warn!(
                topic,
                partition,
                behind,
                quiet = ?quiet,
                "partition stalled: behind its end offset and reading nothing; re-arming its queue's wake-up"
            );
            if target.rearm(partition) {
                stats.stall_heal(topic, partition, "rearm");
            }
        }
        Verdict::StillStalled {
            partition,
            behind,
            stalled_for,
            unhealed,
        } => {
            if unhealed {
                stats.stall_unhealed(topic, partition);
            }
            tracing::warn!(
                topic,
                partition,
                behind,
                stalled_for = ?stalled_for,
                healthz = if unhealed { "failing" } else { "ok" },
                "partition still stalled; re-splitting it: worker drained and replaced, fetch restarted at its next offset"
            );
            stats.stall_heal(topic, partition, "resplit");
            let resplit = {
                let target = target.clone();
                tokio::task::spawn_blocking(move || target.resplit(partition)).await
            };
            match resplit {
                Ok(Resplit::Done { from }) => {
                    tracing::info!(topic, partition, from = ?from, "partition re-split");
                }
                Ok(Resplit::Gone | Resplit::Stopping) | Err(_) => {}
            }
        }
        Verdict::Ended {
            partition,
            stalled_for,
            why,
        } => {
            stats.stall_ended(topic, partition);
            tracing::info!(
                topic,
                partition,
                stalled_for = ?stalled_for,
                "partition no longer stalled: {}",
                why.as_str()
            );
        }
    }
}

/// Test-only hooks, reachable from Rust code linked with the library (the integration tests)
/// and from nothing else: no flag, environment variable or config key arms them, and the
/// binary never calls them.
#[doc(hidden)]
pub mod testing {
    use std::sync::Mutex;

    /// Armed hooks: topic, partition, workers started since.
    static DEAF: Mutex<Vec<(String, i32, usize)>> = Mutex::new(Vec::new());

    /// While the returned guard lives, workers of `topic`/`partition` stop reading their queue
    /// (as one whose wake-ups are all lost would): the first one started after its first
    /// batch, later ones (re-splits) at once. Workers started after the guard is dropped read
    /// normally.
    pub fn deafen(topic: &str, partition: i32) -> Deafened {
        DEAF.lock().unwrap().push((topic.to_string(), partition, 0));
        Deafened {
            topic: topic.to_string(),
            partition,
        }
    }

    pub struct Deafened {
        topic: String,
        partition: i32,
    }

    impl Drop for Deafened {
        fn drop(&mut self) {
            let mut deaf = DEAF.lock().unwrap();
            deaf.retain(|(t, p, _)| !(*t == self.topic && *p == self.partition));
        }
    }

    /// For a worker about to start: how many batches it may read before it stops reading, if
    /// a hook is armed for its partition.
    pub(crate) fn allowance(topic: &str, partition: i32) -> Option<usize> {
        let mut deaf = DEAF.lock().unwrap();
        let entry = deaf
            .iter_mut()
            .find(|(t, p, _)| t == topic && *p == partition)?;
        entry.2 += 1;
        Some(if entry.2 == 1 { 1 } else { 0 })
    }
}

#[cfg(test)]
mod tests;
