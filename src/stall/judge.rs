//! The stall watchdog's decisions, round by round, without I/O: which partitions to ask
//! about, and what their lag means.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Seen;
use crate::partition::{Phase, Progress};

/// What the watchdog concluded about a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Just found stalled, `behind` records behind its end after `quiet` without progress:
    /// report it and re-arm its wake-up.
    Stalled {
        partition: i32,
        behind: i64,
        quiet: Duration,
    },
    /// Still stalled a timeout after the last heal: re-split; `unhealed` once past the health
    /// bound.
    StillStalled {
        partition: i32,
        behind: i64,
        stalled_for: Duration,
        unhealed: bool,
    },
    /// The stall is over.
    Ended {
        partition: i32,
        stalled_for: Duration,
        why: Ended,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The partition made progress.
    Progress,
    /// It has nothing left to read.
    Idle,
    /// It is no longer assigned here.
    Left,
}

impl Ended {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Ended::Progress => "it progresses again",
            Ended::Idle => "it has nothing left to read",
            Ended::Left => "it is no longer assigned here",
        }
    }
}

/// The watchdog's memory of a partition.
#[derive(Debug, Default)]
struct Track {
    /// The latest progress seen, across its workers.
    progress: Option<Instant>,
    /// Since when it has made none, as of the last look.
    quiet_since: Option<Instant>,
    /// A check found nothing to read: not asked again before this.
    idle_until: Option<Instant>,
    stall: Option<Stall>,
}

#[derive(Debug, Clone, Copy)]
struct Stall {
    since: Instant,
    /// The last heal: the next is due a timeout later.
    healed_at: Instant,
}

/// Decides, round by round, which partitions are stalled. No I/O: the caller checks how far
/// behind the partitions it is asked about are.
#[derive(Debug)]
pub struct Judge {
    timeout: Duration,
    tracks: HashMap<i32, Track>,
}

impl Judge {
    pub fn new(timeout: Duration) -> Self {
        Judge {
            timeout,
            tracks: HashMap::new(),
        }
    }

    /// Looks at every partition's status. Returns the stalls that ended, and the partitions
    /// whose lag must be checked now, each with its worker's read position.
    pub fn look(&mut self, seen: &[Seen], now: Instant) -> (Vec<Verdict>, Vec<(i32, Option<i64>)>) {
        let mut verdicts = Vec::new();
        let mut ask = Vec::new();
        self.tracks.retain(|partition, track| {
            let here = seen.iter().any(|s| s.partition == *partition);
            if let (false, Some(stall)) = (here, track.stall) {
                verdicts.push(ended(*partition, stall, Ended::Left, now));
            }
            here
        });
        for s in seen {
            let progress = s.status.progress;
            let track = self.tracks.entry(s.partition).or_insert_with(|| Track {
                progress: progress.at,
                ..Track::default()
            });
            if s.status.phase != Phase::Consuming {
                continue;
            }
            // A new worker (after a re-split) has no progress yet: that is not progress.
            if progress.at > track.progress {
                track.progress = progress.at;
                track.idle_until = None;
                if let Some(stall) = track.stall.take() {
                    verdicts.push(ended(s.partition, stall, Ended::Progress, now));
                }
                continue;
            }
            if s.alive && (progress.sending || progress.waiting_turn || s.status.in_flight > 0) {
                // Waiting on the destination, the transaction or a fetch turn, not on the queue
                // alone.
                continue;
            }
            let quiet_since = quiet_since(&progress, track);
            track.quiet_since = Some(quiet_since);
            let due = match track.stall {
                None => {
                    now.duration_since(quiet_since) >= self.timeout
                        && track.idle_until.map_or(true, |t| now >= t)
                }
                Some(stall) => now.duration_since(stall.healed_at) >= self.timeout,
            };
            if due {
                ask.push((s.partition, progress.read_to));
            }
        }
        (verdicts, ask)
    }

    /// Judges a partition that [`look`](Self::look) asked about, `behind` records behind its
    /// end offset (None: could not be told).
    pub fn judge(&mut self, partition: i32, behind: Option<i64>, now: Instant) -> Option<Verdict> {
        let track = self.tracks.get_mut(&partition)?;
        match (behind, track.stall) {
            // Unknown: asked again after a timeout, as an idle partition would be; a stall
            // waits for its next heal.
            (None, None) => {
                track.idle_until = Some(now + self.timeout);
                None
            }
            (None, Some(_)) => None,
            (Some(behind), stall) if behind <= 0 => {
                track.idle_until = Some(now + self.timeout);
                let stall = stall?;
                track.stall = None;
                Some(ended(partition, stall, Ended::Idle, now))
            }
            (Some(behind), None) => {
                track.stall = Some(Stall {
                    since: now,
                    healed_at: now,
                });
                let quiet = now.duration_since(track.quiet_since.unwrap_or(now));
                Some(Verdict::Stalled {
                    partition,
                    behind,
                    quiet,
                })
            }
            (Some(behind), Some(stall)) => {
                track.stall = Some(Stall {
                    healed_at: now,
                    ..stall
                });
                let stalled_for = now.duration_since(stall.since);
                Some(Verdict::StillStalled {
                    partition,
                    behind,
                    stalled_for,
                    unhealed: stalled_for >= 2 * self.timeout,
                })
            }
        }
    }
}

/// Since when a partition has been quiet: its worker's last progress, or the last progress of
/// the partition's earlier workers, or the worker's start.
fn quiet_since(progress: &Progress, track: &Track) -> Instant {
    match (progress.at, track.progress) {
        (Some(at), _) => at,
        (None, Some(earlier)) => earlier.max(progress.started),
        (None, None) => progress.started,
    }
}

fn ended(partition: i32, stall: Stall, why: Ended, now: Instant) -> Verdict {
    Verdict::Ended {
        partition,
        stalled_for: now.duration_since(stall.since),
        why,
    }
}
