//! A worker's fetch turn ([`crate::memory::Turns`]): its partition fetches while it holds one
//! and is paused while it waits. After each read the worker reports what its queue held (its
//! cost, from which [`crate::memory::Turns`] lets waiting partitions in beyond the minimum), and
//! an empty wait reports that it holds nothing.
//!
//! The worker pauses and resumes its own partition, between its reads: librdkafka resumes a
//! partition at the offset after the last record it handed to the application before the pause,
//! and a batch read updates that offset only at its end, so a pause from another thread during a
//! read could resume before records already handed out (read twice; the worker would drop
//! them, see `screen`). The one exception is the first pause of a partition that starts without
//! a turn: it is made when the partition is split, before librdkafka starts fetching it, so that
//! it never fetches a batch it must throw away, and so that librdkafka's start of the fetch (a
//! later version than the pause) is never taken for an outdated operation and dropped.
//!
//! librdkafka's pause and resume are asynchronous, and a resume made while the pause before it
//! is not yet served does nothing (`rd_kafka_toppar_op_pause_resume` finds the partition not
//! paused yet); the pause then leaves the partition paused for good (librdkafka#5591). And a
//! pause outlives an unassignment, so a partition assigned here again may come back paused
//! from an earlier worker. So a worker holding a turn that reads nothing resumes its partition
//! again each time it looks ([`Turn::idle`]), and a worker that ends resumes its partition: a
//! resume of a partition that is not paused is a no-op in librdkafka.
//!
//! When to hand the turn on, if a partition waits for one: once the queue is empty after a read
//! (nothing fetched for this partition is thrown away by the pause) and the partition either
//! caught up (its position reached the high watermark of its last fetch: nothing left to fetch
//! now) or held the turn [`TURN_MIN`]; or, with nothing read, once it caught up or held it that
//! long; and in any case after [`TURN_MAX`], so that a partition whose fetches keep its queue
//! from ever being empty does not keep the others waiting (what is queued for it then is thrown
//! away and fetched again at its next turn). A partition with a backlog so reads for at least
//! [`TURN_MIN`] per turn, whatever the size of its record batches, and a partition with nothing
//! to read gives its turn up quickly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::budget::QUEUED_RECORD_OVERHEAD;
use crate::fetch::Pauser;
use crate::memory::{Place, Turns};
use crate::metrics::Stats;

/// The least time a partition with records to read keeps its turn: turns go round at most
/// `turns / TURN_MIN` times a second (a pause, a resume and the fetch each costs).
pub const TURN_MIN: Duration = Duration::from_millis(100);

/// The most time a partition keeps a turn another partition waits for.
pub const TURN_MAX: Duration = Duration::from_secs(1);

/// How long a worker holding a turn that another partition waits for waits on its queue before
/// it looks again at whether to hand the turn on.
pub const TURN_LOOK: Duration = Duration::from_millis(50);

pub struct Turn {
    turns: Arc<Turns>,
    stats: Arc<Stats>,
    place: Place,
    pauser: Pauser,
    paused: bool,
    /// This worker paused its partition at least once.
    ever_paused: bool,
    held_since: Instant,
    topic: String,
    partition: i32,
}

impl Turn {
    /// Takes a place; without a turn, the partition is paused at once.
    pub fn enter(
        turns: Arc<Turns>,
        stats: Arc<Stats>,
        pauser: Pauser,
        topic: &str,
        partition: i32,
    ) -> Self {
        let place = turns.enter();
        stats.turns_changed(turns.waiting(), turns.handed_on());
        let mut turn = Turn {
            turns,
            stats,
            place,
            pauser,
            paused: false,
            ever_paused: false,
            held_since: Instant::now(),
            topic: topic.to_string(),
            partition,
        };
        if !turn.place.fetching {
            turn.pause();
        }
        turn
    }

    /// Holds a turn: the partition fetches.
    pub fn fetching(&self) -> bool {
        self.place.fetching
    }

    /// Holds a turn that another partition waits for.
    pub fn contested(&self) -> bool {
        self.place.fetching && self.turns.waiting() > 0
    }

    /// Resolves when a turn is handed to this place (only ever, while it waits).
    pub async fn called(&self) {
        self.place.bell.notified().await
    }

    /// The bell rang: if the turn is this place's (a bell may be stale), the partition fetches
    /// again (true).
    pub fn take(&mut self) -> bool {
        if !self.turns.holds(self.place.ticket) {
            return false;
        }
        self.place.fetching = true;
        self.held_since = Instant::now();
        self.stats
            .turns_changed(self.turns.waiting(), self.turns.handed_on());
        if self.paused {
            match self.pauser.resume() {
                Ok(()) => self.paused = false,
                Err(error) => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, %error, "cannot resume the partition for its fetch turn")
                }
            }
        }
        true
    }

    /// The worker waited on its queue and read nothing: if it holds a turn, its partition is
    /// resumed again, in case a pause outran the last resume or outlived an earlier worker of
    /// this partition (see the module's text).
    pub fn idle(&mut self) {
        if !self.place.fetching {
            return;
        }
        // Its queue is empty: it costs nothing now (a newcomer counted a turn's share).
        self.turns.report(self.place.ticket, 0);
        // Whoever paused it last (this worker, or one before it on this client whose pause was
        // served late): a partition left paused under a turn would never be read again.
        if self.pauser.resume().is_ok() {
            self.paused = false;
        }
    }

    /// A read took `read` records, and `left` stayed queued, of values `value_bytes` long on
    /// average: what the queue held is this holder's cost ([`Turns::report`]). When the
    /// holders hold more than the budget and more than the turns' limit hold one, the turn is
    /// given up here once the queue is empty; true when it was.
    pub fn report(&mut self, read: usize, left: usize, value_bytes: usize) -> bool {
        if !self.place.fetching {
            return false;
        }
        let per_record = QUEUED_RECORD_OVERHEAD + value_bytes as u64;
        let over = self
            .turns
            .report(self.place.ticket, (read + left) as u64 * per_record);
        if !over || left > 0 || !self.turns.release(self.place.ticket) {
            return false;
        }
        self.wait();
        true
    }

    /// Hands the turn on if a partition waits for it and this one had its share (see the
    /// module's text): `queue_empty` after a read (true when nothing was read), `caught_up` its
    /// position at the last fetch's high watermark. True when the turn went on.
    pub fn offer(&mut self, queue_empty: bool, caught_up: impl FnOnce() -> bool) -> bool {
        if !self.contested() {
            return false;
        }
        let held = self.held_since.elapsed();
        let done = held >= TURN_MAX || (queue_empty && (held >= TURN_MIN || caught_up()));
        if !done {
            return false;
        }
        if !self.turns.offer(self.place.ticket) {
            return false;
        }
        self.wait();
        true
    }

    /// The turn went on: the partition stops fetching and waits.
    fn wait(&mut self) {
        self.place.fetching = false;
        self.stats
            .turns_changed(self.turns.waiting(), self.turns.handed_on());
        self.pause();
    }

    fn pause(&mut self) {
        match self.pauser.pause() {
            Ok(()) => {
                self.paused = true;
                self.ever_paused = true;
            }
            // It fetches on: more memory, nothing lost.
            Err(error) => {
                tracing::warn!(topic = %self.topic, partition = self.partition, %error, "cannot pause the partition while it waits for a fetch turn")
            }
        }
    }
}

impl Drop for Turn {
    /// The worker ends (drained, failed or aborted): its turn goes on, and a paused partition is
    /// resumed, or it would stay paused if assigned here again.
    fn drop(&mut self) {
        self.turns.leave(self.place.ticket);
        self.stats
            .turns_changed(self.turns.waiting(), self.turns.handed_on());
        if self.ever_paused {
            let _ = self.pauser.resume();
        }
    }
}
