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
//! So a partition fetches only while it holds a turn. A partition without one is paused
//! (`rd_kafka_pause_partitions`) and waits, first come first served. A holder hands its turn on
//! once its queue is empty, so the pause throws nothing away that was fetched for it; the one
//! fetch that may be in flight for it is dropped by librdkafka and fetched again from the same
//! offset at its next turn. While no partition waits, a holder keeps its turn: an instance with
//! no more partitions than turns never pauses anything.
//!
//! How many hold a turn: `limit` at least (the prefetch half of `--memory-budget` over
//! [`crate::config::budget`]'s per-turn share), and more while what the holders have queued fits
//! the half. Each holder reports what its queue held at its last read (its cost; a newcomer
//! counts a per-turn share), and a waiting partition is let in whenever its last known cost fits
//! beside the holders'. A live stream's partitions queue a few records each, so they all fetch
//! at once and wait for nothing: turns that go round cost a fetch's round trip each, which put
//! 128 partitions at 40,000 records/s at a p50 latency of 171 ms instead of 13
//! (bench/results/2026-12-07-latency-128p-turns.md). A backlog's partitions queue a whole
//! record batch each (4.7 MB for `examples/generate`'s), so only `limit` of them fetch at once;
//! and when the holders' costs grow past the half while more than `limit` hold a turn (a live
//! stream that falls behind), a holder whose queue is empty gives its turn up.
//!
//! This module is the bookkeeping only, without I/O: who holds a turn, who waits, and whose bell
//! rings when a turn is handed on. The worker pauses and resumes its own partition
//! (`partition::turn`), so that a pause never races the worker's own reads.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The instance's turns.
#[derive(Debug)]
pub struct Turns {
    limit: usize,
    /// The bytes the holders' queues may hold together (the prefetch half).
    budget: u64,
    state: Mutex<State>,
    /// Partitions waiting now (a gauge), and turns handed on so far (a counter).
    waiting: AtomicUsize,
    handed_on: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    next_ticket: u64,
    /// Each holder's cost: what its queue held at its last read, in bytes.
    holders: HashMap<u64, u64>,
    /// The sum of the holders' costs.
    held: u64,
    queue: VecDeque<u64>,
    /// The last known cost of each waiting place.
    costs: HashMap<u64, u64>,
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
    /// At least `limit` turns (and at least one), more while the holders' costs fit in
    /// `budget` bytes.
    pub fn new(limit: usize, budget: u64) -> Self {
        Turns {
            limit: limit.max(1),
            budget,
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

    /// Turns given to a waiting place so far.
    pub fn handed_on(&self) -> u64 {
        self.handed_on.load(Relaxed)
    }

    /// What a place whose queue was never seen counts: one turn's share of the budget.
    fn newcomer_cost(&self) -> u64 {
        self.budget / self.limit as u64
    }

    /// A worker starts: it holds a turn if one is free, else it waits at the back.
    pub fn enter(&self) -> Place {
        let mut state = self.state.lock().unwrap();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let bell = Arc::new(Notify::new());
        state.bells.insert(ticket, bell.clone());
        let cost = self.newcomer_cost();
        let fetching = state.queue.is_empty() && self.fits(&state, cost);
        if fetching {
            state.holders.insert(ticket, cost);
            state.held += cost;
        } else {
            state.queue.push_back(ticket);
            state.costs.insert(ticket, cost);
        }
        self.waiting.store(state.queue.len(), Relaxed);
        Place {
            ticket,
            fetching,
            bell,
        }
    }

    /// A holder read its queue, which held `cost` bytes: waiting places that now fit are let
    /// in. True when the holders hold more than the budget and more than `limit` of them hold a
    /// turn: the caller should give its turn up ([`Turns::release`]) once its queue is empty.
    pub fn report(&self, ticket: u64, cost: u64) -> bool {
        let mut state = self.state.lock().unwrap();
        let Some(slot) = state.holders.get_mut(&ticket) else {
            return false;
        };
        let old = std::mem::replace(slot, cost);
        state.held = state.held - old + cost;
        self.admit(&mut state);
        state.holders.len() > self.limit && state.held > self.budget
    }

    /// A holder gives its turn up and waits at the back (the holders hold too much): true if it
    /// held one.
    pub fn release(&self, ticket: u64) -> bool {
        let mut state = self.state.lock().unwrap();
        self.to_the_back(&mut state, ticket)
    }

    /// Moves a holder to the back of the queue and lets in whoever fits; false if it held no
    /// turn.
    fn to_the_back(&self, state: &mut State, ticket: u64) -> bool {
        let Some(cost) = state.holders.remove(&ticket) else {
            return false;
        };
        state.held -= cost;
        state.queue.push_back(ticket);
        state.costs.insert(ticket, cost);
        self.admit(state);
        true
    }

    /// A holder offers its turn: kept when every waiting place fits beside the holders (they are
    /// let in) or nobody waits (false); else it goes to the first waiting place, and the holder
    /// waits at the back and must stop fetching (true).
    pub fn offer(&self, ticket: u64) -> bool {
        let mut state = self.state.lock().unwrap();
        if !state.holders.contains_key(&ticket) {
            return false;
        }
        self.admit(&mut state);
        if state.queue.is_empty() {
            return false;
        }
        self.to_the_back(&mut state, ticket);
        // Let in again at once (everything ahead of it fitted): it keeps fetching, and the
        // bell its admission rang is ignored ([`Turns::holds`]).
        !state.holders.contains_key(&ticket)
    }

    /// Whether the place holds a turn: a bell rung for a place that was let in again at once
    /// is stale.
    pub fn holds(&self, ticket: u64) -> bool {
        self.state.lock().unwrap().holders.contains_key(&ticket)
    }

    /// A worker ends: its turn may go to waiting places, or it leaves the queue.
    pub fn leave(&self, ticket: u64) {
        let mut state = self.state.lock().unwrap();
        state.bells.remove(&ticket);
        state.costs.remove(&ticket);
        if let Some(cost) = state.holders.remove(&ticket) {
            state.held -= cost;
        } else {
            state.queue.retain(|t| *t != ticket);
        }
        self.admit(&mut state);
    }

    /// Whether a place that costs `cost` may hold a turn beside the holders.
    fn fits(&self, state: &State, cost: u64) -> bool {
        state.holders.len() < self.limit || state.held + cost <= self.budget
    }

    /// Gives turns to the waiting places, first come first served, while they fit, and rings
    /// their bells.
    fn admit(&self, state: &mut State) {
        while let Some(&next) = state.queue.front() {
            let cost = state.costs.get(&next).copied().unwrap_or(0);
            if !self.fits(state, cost) {
                break;
            }
            state.queue.pop_front();
            state.costs.remove(&next);
            state.holders.insert(next, cost);
            state.held += cost;
            if let Some(bell) = state.bells.get(&next) {
                bell.notify_one();
            }
            self.handed_on.fetch_add(1, Relaxed);
        }
        self.waiting.store(state.queue.len(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

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
        let turns = Turns::new(3, 3 * MIB);
        let places: Vec<Place> = (0..3).map(|_| turns.enter()).collect();
        assert!(places.iter().all(|p| p.fetching));
        // Nobody waits: a holder keeps its turn.
        assert!(!turns.offer(places[0].ticket));
        assert_eq!(turns.waiting(), 0);
        assert_eq!(turns.handed_on(), 0);
    }

    #[test]
    fn turns_go_round_first_come_first_served() {
        let turns = Turns::new(2, 2 * MIB);
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
        let turns = Turns::new(1, MIB);
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

    #[test]
    fn places_that_queue_little_are_let_in_beyond_the_limit_and_give_way_when_they_grow() {
        let turns = Turns::new(2, 2 * MIB);
        let a = turns.enter();
        let b = turns.enter();
        let c = turns.enter();
        let d = turns.enter();
        assert!(a.fetching && b.fetching && !c.fetching && !d.fetching);
        // a and b queue a few records each (a live stream): c fits beside them, at a
        // newcomer's cost of one turn's share, but not d as well.
        assert!(!turns.report(a.ticket, 4_000));
        assert!(!turns.report(b.ticket, 4_000));
        assert!(rung(&c));
        assert!(!rung(&d));
        assert_eq!(turns.waiting(), 1);
        // c queues little too: d is let in; four hold a turn, two more than the limit.
        assert!(!turns.report(c.ticket, 4_000));
        assert!(rung(&d));
        assert_eq!(turns.waiting(), 0);
        // The stream falls behind: their queues grow past the budget, and while more than the
        // limit hold a turn each is told to give it up.
        assert!(turns.report(a.ticket, MIB));
        assert!(turns.release(a.ticket));
        assert!(turns.report(b.ticket, MIB));
        assert!(turns.release(b.ticket));
        // Two hold a turn again: no more give way, and the others wait their turn.
        assert!(!turns.report(c.ticket, MIB));
        assert!(!turns.report(d.ticket, MIB));
        assert_eq!(turns.waiting(), 2);
        assert!(!rung(&a) && !rung(&b));
        assert!(turns.offer(c.ticket));
        assert!(rung(&a));
        assert!(!rung(&b));
    }
}
