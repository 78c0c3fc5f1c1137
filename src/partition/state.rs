//! A partition's life, shared by its owner (the group member) and its worker.
//!
//! ```text
//! Consuming ──owner: drain──▶ Draining ──worker: finished──▶ Done(exit)
//!     │                           └──owner: deadline passed──▶ Abandoned { replayable }
//!     └──worker: stopped on an error──▶ Done(exit with failed = true)
//! ```
//!
//! The owner asks for a drain (revocation, stop) and waits for `Done` up to a deadline, on a
//! plain thread; the worker watches for the drain request asynchronously, reports how many
//! records it has in flight, its [`Progress`] (for the stall watchdog, `crate::stall`) and
//! whether it reached the end (`--until-end`), and says how it ended. One mutex holds it all; a
//! condition variable wakes the owner, a `Notify` the worker.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerExit {
    pub partition: i32,
    /// The offset after the last acknowledged record (next to consume), if any.
    pub next_offset: Option<i64>,
    /// Whether it stopped on an error.
    pub failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Consuming,
    Draining,
    Done(WorkerExit),
    /// The owner gave up waiting: the records still in flight will be consumed again.
    Abandoned {
        replayable: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub phase: Phase,
    /// Records consumed and not yet acknowledged.
    pub in_flight: usize,
    /// Everything up to the end offset at assignment is acknowledged (`--until-end`).
    pub at_end: bool,
    pub progress: Progress,
}

/// What the worker got done, and when: records read from the queue, batches sent, batches
/// acknowledged. Nothing else counts (a rewound or failed batch is not progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// When the worker started.
    pub started: Instant,
    /// When it last read, sent or settled a batch; None before the first.
    pub at: Option<Instant>,
    /// The offset after the last record it read (where a rewind sent it back, after one);
    /// None before the first.
    pub read_to: Option<i64>,
    /// Between reading a batch and having sent it all: waiting on the producer or the
    /// transaction, not on the queue.
    pub sending: bool,
    /// Paused, waiting for a fetch turn ([`crate::memory::Turns`]): waiting on the memory
    /// budget, not on the queue.
    pub waiting_turn: bool,
}

impl Progress {
    /// Since when nothing happened.
    pub fn quiet_since(&self) -> Instant {
        self.at.unwrap_or(self.started)
    }
}

pub struct PartitionState {
    status: Mutex<Status>,
    /// Wakes the owner waiting for `Done`.
    ended: Condvar,
    /// Wakes the worker waiting for a drain request.
    drain: Notify,
    /// Test hook (`crate::stall::testing`): the worker stops reading its queue.
    deaf: AtomicBool,
    /// Test hook: batches the worker may still read before it turns deaf (`usize::MAX`: all).
    deaf_after: AtomicUsize,
}

impl Default for PartitionState {
    fn default() -> Self {
        PartitionState {
            status: Mutex::new(Status {
                phase: Phase::Consuming,
                in_flight: 0,
                at_end: false,
                progress: Progress {
                    started: Instant::now(),
                    at: None,
                    read_to: None,
                    sending: false,
                    waiting_turn: false,
                },
            }),
            ended: Condvar::new(),
            drain: Notify::new(),
            deaf: AtomicBool::new(false),
            deaf_after: AtomicUsize::new(usize::MAX),
        }
    }
}

impl PartitionState {
    pub fn status(&self) -> Status {
        *self.status.lock().unwrap()
    }

    // --- The owner's side ---

    /// Asks the worker to read nothing more and finish what it has in flight.
    pub fn request_drain(&self) {
        let mut status = self.status.lock().unwrap();
        if status.phase == Phase::Consuming {
            status.phase = Phase::Draining;
        }
        drop(status);
        self.drain.notify_waiters();
    }

    /// Waits (blocking) until the worker is done, at most until `deadline`. Past it the
    /// partition is abandoned: `Err` with its records still in flight.
    pub fn wait_done(&self, deadline: Instant) -> Result<WorkerExit, usize> {
        let mut status = self.status.lock().unwrap();
        loop {
            match status.phase {
                Phase::Done(exit) => return Ok(exit),
                Phase::Abandoned { replayable } => return Err(replayable),
                Phase::Consuming | Phase::Draining => {}
            }
            let now = Instant::now();
            if now >= deadline {
                let replayable = status.in_flight;
                status.phase = Phase::Abandoned { replayable };
                return Err(replayable);
            }
            status = self.ended.wait_timeout(status, deadline - now).unwrap().0;
        }
    }

    // --- The worker's side ---

    /// Whether the owner asked for a drain (or gave up on this worker).
    pub fn draining(&self) -> bool {
        self.status.lock().unwrap().phase != Phase::Consuming
    }

    /// Resolves once the owner asks for a drain.
    pub async fn drain_requested(&self) {
        loop {
            let notified = self.drain.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.draining() {
                return;
            }
            notified.await;
        }
    }

    /// The worker read a batch up to `next_offset` (exclusive) and is sending it: progress.
    pub fn read(&self, next_offset: i64) {
        let mut status = self.status.lock().unwrap();
        let progress = &mut status.progress;
        progress.read_to = Some(next_offset);
        progress.at = Some(Instant::now());
        progress.sending = true;
        drop(status);
        // Only the worker reads and writes it.
        let left = self.deaf_after.load(Relaxed);
        if left != usize::MAX {
            self.deaf_after.store(left.saturating_sub(1), Relaxed);
            if left <= 1 {
                self.deaf.store(true, Relaxed);
            }
        }
    }

    /// The worker will read again from `offset` (exactly-once, after an aborted transaction).
    pub fn rewound(&self, offset: i64) {
        self.status.lock().unwrap().progress.read_to = Some(offset);
    }

    /// Records in flight changed: a batch was sent or settled, both progress.
    pub fn set_in_flight(&self, in_flight: usize) {
        let mut status = self.status.lock().unwrap();
        status.in_flight = in_flight;
        status.progress.at = Some(Instant::now());
        status.progress.sending = false;
    }

    /// The worker waits for a fetch turn (true), or got one: a turn taken counts as progress, so
    /// the time spent waiting is not taken for a stall.
    pub fn set_waiting_turn(&self, waiting: bool) {
        let mut status = self.status.lock().unwrap();
        status.progress.waiting_turn = waiting;
        if !waiting {
            status.progress.at = Some(Instant::now());
        }
    }

    /// Whether the worker reads its queue; false only under the test hook.
    pub fn reads_queue(&self) -> bool {
        !self.deaf.load(Relaxed)
    }

    /// Test hook (`crate::stall::testing`): the worker stops reading its queue after `batches`
    /// more batches (at once for 0), as a worker whose wake-ups are all lost would.
    #[doc(hidden)]
    pub fn deafen_after(&self, batches: usize) {
        if batches == 0 {
            self.deaf.store(true, Relaxed);
        } else {
            self.deaf_after.store(batches, Relaxed);
        }
    }

    pub fn reach_end(&self) {
        self.status.lock().unwrap().at_end = true;
    }

    /// The records that reached the end were taken back (an aborted transaction): not at the
    /// end any more.
    pub fn leave_end(&self) {
        self.status.lock().unwrap().at_end = false;
    }

    /// The worker ended (drained, or stopped on an error). Ignored once abandoned: the owner
    /// has already counted its records as replayable.
    pub fn finish(&self, exit: WorkerExit) {
        let mut status = self.status.lock().unwrap();
        if !matches!(status.phase, Phase::Abandoned { .. }) {
            status.phase = Phase::Done(exit);
            status.in_flight = 0;
        }
        drop(status);
        self.ended.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn exit(next: i64) -> WorkerExit {
        WorkerExit {
            partition: 3,
            next_offset: Some(next),
            failed: false,
        }
    }

    #[test]
    fn a_drained_worker_reports_its_exit_to_the_waiting_owner() {
        let state = Arc::new(PartitionState::default());
        assert!(!state.draining());
        state.request_drain();
        assert!(state.draining());
        let worker = state.clone();
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            worker.finish(exit(42));
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        assert_eq!(state.wait_done(deadline), Ok(exit(42)));
        finisher.join().unwrap();
    }

    #[test]
    fn past_the_deadline_the_partition_is_abandoned_with_its_records_in_flight() {
        let state = PartitionState::default();
        state.set_in_flight(7);
        state.request_drain();
        assert_eq!(state.wait_done(Instant::now()), Err(7));
        assert_eq!(state.status().phase, Phase::Abandoned { replayable: 7 });
        // A worker that ends late changes nothing: its records are already counted.
        state.finish(exit(1));
        assert_eq!(state.status().phase, Phase::Abandoned { replayable: 7 });
    }

    #[test]
    fn the_end_is_kept_in_the_status() {
        let state = PartitionState::default();
        assert!(!state.status().at_end);
        state.reach_end();
        assert!(state.status().at_end);
    }

    #[test]
    fn reads_sends_and_settlements_are_progress() {
        let state = PartitionState::default();
        let fresh = state.status().progress;
        assert_eq!(
            (fresh.at, fresh.read_to, fresh.sending),
            (None, None, false)
        );
        assert_eq!(fresh.quiet_since(), fresh.started);
        state.read(100);
        let reading = state.status().progress;
        assert_eq!((reading.read_to, reading.sending), (Some(100), true));
        assert!(reading.at.is_some());
        state.set_in_flight(100);
        let sent = state.status().progress;
        assert_eq!((sent.read_to, sent.sending), (Some(100), false));
        assert!(sent.at >= reading.at);
        // A rewind sends the read position back.
        state.rewound(40);
        assert_eq!(state.status().progress.read_to, Some(40));
    }

    #[test]
    fn a_deafened_worker_stops_reading_after_its_allowance() {
        let state = PartitionState::default();
        assert!(state.reads_queue());
        state.deafen_after(2);
        state.read(10);
        assert!(state.reads_queue());
        state.read(20);
        assert!(!state.reads_queue());
        let at_once = PartitionState::default();
        at_once.deafen_after(0);
        assert!(!at_once.reads_queue());
    }

    #[tokio::test]
    async fn the_worker_hears_a_drain_request() {
        let state = Arc::new(PartitionState::default());
        let owner = state.clone();
        let waiting = tokio::spawn(async move { state.drain_requested().await });
        tokio::task::yield_now().await;
        owner.request_drain();
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("woken by the drain request")
            .unwrap();
    }
}
