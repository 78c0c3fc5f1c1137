//! Fetch turns: how many of an instance's partitions fetch at once, whatever how many it owns.
//!
//! librdkafka fetches every assigned partition into its own queue and returns at least one whole
//! record batch per partition per fetch, however small the limits; each record of it costs an
//! `rd_kafka_op_t` of 1,024 bytes once decoded. So the prefetched records grow with the
//! partition count: 128 partitions peaked at 295 MB and 512 at 543 MB under a 32 MiB budget
//! that holds 12 partitions to 59 MB (bench/results/2026-12-07-memory-budget-sweep.md).
//! librdkafka has no limit across partitions, and its one run-time lever, pausing a partition,
//! throws the partition's queue away.
//!
//! So a partition fetches only while it holds a turn, and there are `limit` turns per instance
//! (the prefetch half of `--memory-budget` over [`crate::config::budget`]'s per-turn share). A
//! partition without one is paused (`rd_kafka_pause_partitions`) and waits, first come first
//! served. A holder hands its turn on once its queue is empty, so the pause throws nothing away
//! that was fetched for it; the one fetch that may be in flight for it is dropped by librdkafka
//! and fetched again from the same offset at its next turn. While no partition waits, a holder
//! keeps its turn: an instance with no more partitions than turns never pauses anything.
//!
//! This module is the bookkeeping only, without I/O: who holds a turn, who waits, and whose bell
//! rings when a turn is handed on. The worker pauses and resumes its own partition
//! (`partition::turn`), so that a pause never races the worker's own reads.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The instance's turns.
#[derive(Debug)]
pub struct Turns {
    limit: usize,
    state: Mutex<State>,
    /// Partitions waiting now (a gauge), and turns handed on so far (a counter).
    waiting: AtomicUsize,
    handed_on: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    next_ticket: u64,
    holders: HashSet<u64>,
    queue: VecDeque<u64>,
    bells: HashMap<u64, Arc<Notify>>,
}

/// One worker's place: identified by a ticket, so that a worker that ends late (aborted at a
/// deadline) never takes the turn of its partition's next worker.
#[derive(Debug)]
pub struct Place {
    pub ticket: u64,
    /// Holds a turn now.
    pub fetching: bool,
    /// Rings (a stored permit, if nobody waits on it yet) when a turn is handed to this place.
    pub bell: Arc<Notify>,
}

impl Turns {
    /// `limit` turns (at least one).
    pub fn new(limit: usize) -> Self {
        Turns {
            limit: limit.max(1),
            state: Mutex::default(),
            waiting: AtomicUsize::new(0),
            handed_on: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Places waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Relaxed)
    }

    /// Turns handed from one place to another so far.
    pub fn handed_on(&self) -> u64 {
        self.handed_on.load(Relaxed)
    }

    /// A worker starts: it holds a turn if one is free, else it waits at the back.
    pub fn enter(&self) -> Place {
        let mut state = self.state.lock().unwrap();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let bell = Arc::new(Notify::new());
        state.bells.insert(ticket, bell.clone());
        let fetching = state.holders.len() < self.limit;
        if fetching {
            state.holders.insert(ticket);
        } else {
            state.queue.push_back(ticket);
        }
        self.waiting.store(state.queue.len(), Relaxed);
        Place {
            ticket,
            fetching,
            bell,
        }
    }

    /// A holder offers its turn: handed to the first waiting place (true: the holder now waits
    /// at the back, and must stop fetching), or kept when nobody waits (false).
    pub fn offer(&self, ticket: u64) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.queue.is_empty() || !state.holders.contains(&ticket) {
            return false;
        }
        state.holders.remove(&ticket);
        self.hand_on(&mut state);
        state.queue.push_back(ticket);
        self.waiting.store(state.queue.len(), Relaxed);
        true
    }

    /// A worker ends: its turn goes to the first waiting place, or it leaves the queue.
    pub fn leave(&self, ticket: u64) {
        let mut state = self.state.lock().unwrap();
        state.bells.remove(&ticket);
        if state.holders.remove(&ticket) {
            self.hand_on(&mut state);
        } else {
            state.queue.retain(|t| *t != ticket);
        }
        self.waiting.store(state.queue.len(), Relaxed);
    }

    /// Gives a free turn to the first waiting place and rings its bell.
    fn hand_on(&self, state: &mut State) {
        if let Some(next) = state.queue.pop_front() {
            state.holders.insert(next);
            if let Some(bell) = state.bells.get(&next) {
                bell.notify_one();
            }
            self.handed_on.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rung(place: &Place) -> bool {
        let bell = place.bell.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async move {
            tokio::time::timeout(Duration::from_millis(10), bell.notified())
                .await
                .is_ok()
        })
    }

    #[test]
    fn no_more_places_than_turns_never_wait() {
        let turns = Turns::new(3);
        let places: Vec<Place> = (0..3).map(|_| turns.enter()).collect();
        assert!(places.iter().all(|p| p.fetching));
        // Nobody waits: a holder keeps its turn.
        assert!(!turns.offer(places[0].ticket));
        assert_eq!(turns.waiting(), 0);
        assert_eq!(turns.handed_on(), 0);
    }

    #[test]
    fn turns_go_round_first_come_first_served() {
        let turns = Turns::new(2);
        let a = turns.enter();
        let b = turns.enter();
        let c = turns.enter();
        let d = turns.enter();
        assert!(a.fetching && b.fetching && !c.fetching && !d.fetching);
        assert_eq!(turns.waiting(), 2);
        // a hands its turn to c, the first waiting, and waits behind d.
        assert!(turns.offer(a.ticket));
        assert!(rung(&c));
        assert!(!rung(&d));
        // b's goes to d, then a's turn comes again.
        assert!(turns.offer(b.ticket));
        assert!(rung(&d));
        assert!(turns.offer(c.ticket));
        assert!(rung(&a));
        assert_eq!(turns.waiting(), 2);
        assert_eq!(turns.handed_on(), 3);
        // A waiting place cannot offer what it does not hold.
        assert!(!turns.offer(b.ticket));
    }

    #[test]
    fn a_leaving_holder_hands_on_and_a_leaving_waiter_just_leaves() {
        let turns = Turns::new(1);
        let a = turns.enter();
        let b = turns.enter();
        let c = turns.enter();
        turns.leave(b.ticket);
        assert_eq!(turns.waiting(), 1);
        turns.leave(a.ticket);
        assert!(rung(&c));
        assert_eq!(turns.waiting(), 0);
        // c holds the only turn: a newcomer waits; c leaving hands it on.
        let d = turns.enter();
        assert!(!d.fetching);
        turns.leave(c.ticket);
        assert!(rung(&d));
        // Leaving twice (a late drop) changes nothing.
        turns.leave(c.ticket);
        let e = turns.enter();
        assert!(!e.fetching);
    }
}
