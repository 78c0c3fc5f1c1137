//! The batches a partition has sent and not yet settled, oldest first.
//!
//! A batch settles when every one of its records is acknowledged by the destination or the
//! dead-letter topic ([`Acks`]). Batches settle strictly in the order they were sent, so the
//! partition's next offset only ever covers records acknowledged without a gap: a batch that
//! completes before an older one waits for it, and a failed delivery stops the settling at
//! that batch (it and everything after it stay unsettled, to be consumed again).

use std::collections::VecDeque;
use std::sync::Arc;

use rdkafka::error::KafkaError;

use crate::ack::Acks;
use crate::dead_letter::{Reason, Sent};

/// One batch's outcome: every record acknowledged, or the first delivery error.
pub type Ack = Result<(), KafkaError>;

/// One sent batch awaiting its acknowledgements.
#[derive(Debug)]
pub struct Batch {
    pub acks: Arc<Acks>,
    /// Offset of its first record.
    pub first: i64,
    /// Offset after its last record.
    pub next: i64,
    /// Records sent to the destination.
    pub produced: usize,
    /// Records sent to the dead-letter topic, with their reason.
    pub dead: Vec<(Reason, i64)>,
}

impl Batch {
    /// A batch of records from `first` to before `next`, about to be sent.
    pub fn open(first: i64, next: i64) -> Self {
        Batch {
            acks: Acks::open(),
            first,
            next,
            produced: 0,
            dead: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.produced + self.dead.len()
    }

    pub fn count(&mut self, sent: Sent, offset: i64) {
        match sent {
            Sent::Output => self.produced += 1,
            Sent::DeadLetter(reason) => self.dead.push((reason, offset)),
        }
    }
}

/// What one call of [`Tracker::settle`] settled.
#[derive(Debug, Default)]
pub struct Settled {
    /// The batches acknowledged, oldest first (for the counters).
    pub batches: Vec<Batch>,
    /// The failed batch's first offset and its error; nothing after it was settled.
    pub failed: Option<(i64, KafkaError)>,
}

/// A partition's sent batches and the offsets they settle.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: VecDeque<Batch>,
    /// Records in `pending`.
    in_flight: usize,
    /// The offset after the last acknowledged record (every record before it is acknowledged).
    next_offset: Option<i64>,
    /// The offset after the last record read from the queue.
    read_next: Option<i64>,
    /// The offset of the first record read from the queue.
    first_read: Option<i64>,
}

impl Tracker {
    /// Whether a record at `offset` was already read: the queue handed it out again (the
    /// partition was rewound under its worker).
    pub fn already_read(&self, offset: i64) -> bool {
        self.read_next.is_some_and(|next| offset < next)
    }

    /// Records from `first` to before `next` were read from the queue.
    pub fn read(&mut self, first: i64, next: i64) {
        self.first_read.get_or_insert(first);
        self.read_next = Some(next);
    }

    /// Where a rewind goes when the group has no committed offset for the partition: the first
    /// record read (the partition started at `auto.offset.reset`). None if nothing was read.
    pub fn first_read(&self) -> Option<i64> {
        self.first_read
    }

    /// The offset after the last record read, if any was.
    pub fn read_next(&self) -> Option<i64> {
        self.read_next
    }

    /// Forgets every batch in flight (exactly-once: an abort discarded them).
    pub fn abandon_in_flight(&mut self) {
        self.pending.clear();
        self.in_flight = 0;
    }

    /// Reads again from `offset`, after [`Tracker::abandon_in_flight`]: everything before it
    /// counts as done (committed).
    pub fn rewind(&mut self, offset: i64) {
        self.abandon_in_flight();
        self.next_offset = Some(offset);
        self.read_next = Some(offset);
    }

    /// A sealed batch was handed to the producer.
    pub fn sent(&mut self, batch: Batch) {
        self.in_flight += batch.len();
        self.pending.push_back(batch);
    }

    /// Records sent and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Nothing is waiting for acknowledgements.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The offset after the last acknowledged record, if any record was acknowledged.
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// Resolves with the oldest batch's outcome. Pending while nothing is in flight.
    pub async fn front(&self) -> Ack {
        match self.pending.front() {
            Some(batch) => batch.acks.done().await,
            None => std::future::pending().await,
        }
    }

    /// Settles the oldest batch with `first` (its outcome, from [`Tracker::front`]) if given,
    /// then every following batch that is already complete, and stops at the first failure.
    pub fn settle(&mut self, first: Option<Ack>) -> Settled {
        let mut settled = Settled::default();
        let mut next = first;
        loop {
            let ack = match next.take() {
                Some(ack) => ack,
                None => match self.pending.front().and_then(|b| b.acks.outcome()) {
                    Some(ack) => ack,
                    None => break,
                },
            };
            let batch = self
                .pending
                .pop_front()
                .expect("an outcome comes from the front");
            if let Err(error) = ack {
                settled.failed = Some((batch.first, error));
                // Left unsettled, as is everything sent after it: all of it is replayed.
                self.pending.push_front(batch);
                break;
            }
            self.in_flight -= batch.len();
            self.next_offset = Some(batch.next);
            settled.batches.push(batch);
        }
        settled
    }

    /// Whether everything up to `target` is settled: nothing is in flight and either the
    /// acknowledged offsets got there, or the partition's `position` did (it moves past
    /// transaction markers, which are never handed out as records).
    pub fn reached(&self, target: i64, position: impl FnOnce() -> Option<i64>) -> bool {
        self.is_idle()
            && (target == 0
                || self.next_offset.is_some_and(|next| next >= target)
                || position().is_some_and(|p| p >= target))
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::RDKafkaErrorCode;

    use super::*;

    /// A batch of `n` records from `first`, sent: its acks are expected and the batch sealed.
    fn sent(tracker: &mut Tracker, first: i64, n: usize) -> Arc<Acks> {
        let mut batch = Batch::open(first, first + n as i64);
        for i in 0..n {
            let _ = batch.acks.expect_one();
            batch.count(Sent::Output, first + i as i64);
        }
        batch.acks.sealed();
        let acks = batch.acks.clone();
        tracker.sent(batch);
        acks
    }

    fn ack_all(acks: &Acks, n: usize) {
        for _ in 0..n {
            acks.report(Ok(()));
        }
    }

    #[test]
    fn batches_settle_oldest_first_whatever_order_they_complete_in() {
        let mut t = Tracker::default();
        let a = sent(&mut t, 0, 3);
        let b = sent(&mut t, 3, 2);
        assert_eq!(t.in_flight(), 5);
        ack_all(&b, 2);
        assert!(
            t.settle(None).batches.is_empty(),
            "b may not settle before a"
        );
        assert_eq!(t.next_offset(), None);
        ack_all(&a, 3);
        let settled = t.settle(None);
        assert_eq!(settled.batches.len(), 2);
        assert_eq!(t.next_offset(), Some(5));
        assert_eq!(t.in_flight(), 0);
        assert!(t.is_idle());
    }

    #[test]
    fn a_failed_delivery_stops_settling_at_its_batch() {
        let mut t = Tracker::default();
        let a = sent(&mut t, 0, 2);
        let b = sent(&mut t, 2, 2);
        let c = sent(&mut t, 4, 2);
        ack_all(&a, 2);
        b.report(Ok(()));
        b.report(Err(&KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut,
        )));
        ack_all(&c, 2);
        let settled = t.settle(None);
        assert_eq!(settled.batches.len(), 1, "only a");
        let (offset, _) = settled.failed.expect("b failed");
        assert_eq!(offset, 2);
        assert_eq!(
            t.next_offset(),
            Some(2),
            "nothing of b or c is acknowledged"
        );
        assert_eq!(t.in_flight(), 4, "b and c stay in flight, to be replayed");
    }

    #[test]
    fn the_front_outcome_given_settles_the_front() {
        let mut t = Tracker::default();
        let a = sent(&mut t, 10, 1);
        ack_all(&a, 1);
        let outcome = a.outcome().unwrap();
        assert_eq!(t.settle(Some(outcome)).batches.len(), 1);
        assert_eq!(t.next_offset(), Some(11));
    }

    #[test]
    fn the_end_is_reached_by_acknowledgements_or_by_the_position() {
        let mut t = Tracker::default();
        assert!(t.reached(0, || None), "nothing to do");
        assert!(!t.reached(5, || None));
        let a = sent(&mut t, 0, 4);
        assert!(!t.reached(4, || Some(4)), "not while records are in flight");
        ack_all(&a, 4);
        t.settle(None);
        assert!(t.reached(4, || None));
        // Records 0-3 and a transaction marker at 4: only the position gets past it.
        assert!(!t.reached(5, || Some(4)));
        assert!(t.reached(5, || Some(5)));
    }

    #[test]
    fn records_read_again_are_recognised() {
        let mut t = Tracker::default();
        assert!(!t.already_read(0));
        t.read(0, 50);
        assert!(t.already_read(0) && t.already_read(49));
        assert!(!t.already_read(50));
    }

    #[test]
    fn a_rewind_forgets_what_is_in_flight_and_reads_again() {
        let mut t = Tracker::default();
        t.read(7, 10);
        let a = sent(&mut t, 7, 3);
        t.read(10, 20);
        let _b = sent(&mut t, 10, 10);
        ack_all(&a, 3);
        t.settle(None);
        assert_eq!(t.next_offset(), Some(10));
        assert_eq!(t.read_next(), Some(20));
        t.abandon_in_flight();
        assert!(t.is_idle() && t.in_flight() == 0);
        assert_eq!(t.next_offset(), Some(10), "what was settled stays settled");
        t.rewind(8);
        assert!(t.is_idle() && t.in_flight() == 0);
        assert_eq!(t.next_offset(), Some(8));
        assert!(
            !t.already_read(8),
            "records from the rewind's offset are read again"
        );
        assert!(t.already_read(7));
        assert_eq!(t.read_next(), Some(8));
        assert_eq!(t.first_read(), Some(7), "the first read stays");
    }
}
