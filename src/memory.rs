//! The in-flight half of `--memory-budget` (see `config/budget.rs`), divided among the
//! partitions assigned and divided again on every rebalance: how many records each partition's
//! worker may have produced and not yet acknowledged.
//!
//! The count is the partition's share over an estimate of what a record in flight costs
//! (`IN_FLIGHT_RECORD_BYTES`), at most `--max-in-flight` and at least one batch
//! (`--batch-size`): with less, the producer's batches shrink with the share, and at 512
//! partitions (64 records each) the drain rate halved and the broker's CPU per record more than
//! doubled (bench/results/2026-12-07-memory-budget-sweep-v1.md). Past that floor the records in
//! flight are bounded instance-wide by the producer's own queue (librdkafka's
//! `queue.buffering.max.messages`, 100,000 records), whatever the partition count.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The in-flight budget and its current division.
#[derive(Debug)]
pub struct InFlight {
    budget: usize,
    record_bytes: usize,
    max_in_flight: usize,
    batch_size: usize,
    /// Records each partition may have in flight under the current division.
    per_partition: AtomicUsize,
}

impl InFlight {
    /// `budget` bytes, each record in flight counted as `record_bytes`, at most `max_in_flight`
    /// records per partition read `batch_size` at a time (the flags). Undivided until the
    /// first assignment: as if the instance owned one partition.
    pub fn new(
        budget: usize,
        record_bytes: usize,
        max_in_flight: usize,
        batch_size: usize,
    ) -> Self {
        let this = InFlight {
            budget,
            record_bytes: record_bytes.max(1),
            max_in_flight,
            batch_size,
            per_partition: AtomicUsize::new(0),
        };
        this.divide(1);
        this
    }

    /// Divides the budget among `partitions` (the partitions now assigned); returns each one's
    /// share in bytes (the whole budget when none is assigned).
    pub fn divide(&self, partitions: usize) -> usize {
        let share = self.budget / partitions.max(1);
        let floor = self.batch_size.min(self.max_in_flight).max(1);
        let records = (share / self.record_bytes).clamp(floor, self.max_in_flight.max(floor));
        self.per_partition.store(records, Relaxed);
        share
    }

    /// For a worker: (records to read per batch, records it may have in flight).
    pub fn limits(&self) -> (usize, usize) {
        let max = self.per_partition.load(Relaxed);
        (self.batch_size.min(max), max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_follows_the_assignment() {
        let in_flight = InFlight::new(16 << 20, 512, 5_000, 1_000);
        assert_eq!(in_flight.limits(), (1_000, 5_000));
        assert_eq!(in_flight.divide(12), (16 << 20) / 12);
        assert_eq!(in_flight.limits(), (1_000, 2_730));
        // Never less than one batch in flight.
        in_flight.divide(512);
        assert_eq!(in_flight.limits(), (1_000, 1_000));
        let small = InFlight::new(16 << 20, 512, 5_000, 50);
        small.divide(512);
        assert_eq!(small.limits(), (50, 64));
        // A revocation leaves fewer partitions: each gets more again.
        in_flight.divide(2);
        assert_eq!(in_flight.limits(), (1_000, 5_000));
        assert_eq!(in_flight.divide(0), 16 << 20);
    }
}
