//! `--memory-budget` at run time (its flag and librdkafka settings are `config/budget.rs`'s):
//! - the prefetch half's **fetch turns** ([`Turns`], `memory/turns.rs`): how many partitions
//!   fetch at once, instance-wide;
//! - the **in-flight** half (below), divided among the partitions assigned (or the turns, when
//!   fewer) and divided again on every rebalance: how many records each partition's worker may
//!   have produced and not yet acknowledged.
//!
//! The count is the partition's share over what a record in flight costs, at most
//! `--max-in-flight` and at least one batch: with less, the producer's batches shrink with the
//! share, and at 512 partitions (64 records each) the drain rate halved and the broker's CPU per
//! record more than doubled (bench/results/2026-12-07-memory-budget-sweep-v1.md). Past that
//! floor the records in flight are bounded instance-wide by the producer's own queue
//! (librdkafka's `queue.buffering.max.messages`, 100,000 records), whatever the partition count.
//!
//! A record's cost follows the size of the partition's records ([`record_cost`]): its value is
//! held twice while in flight (the input, until acknowledged, and the producer's copy of the
//! output). Counting every record as a seed-format one (`IN_FLIGHT_RECORD_BYTES`) let 10 KB
//! records take 150-230 MB against a 32 MiB budget (bench/results/2026-12-07-sizes-10240.md).
//! The floor is one batch of seed-format records in bytes (`--batch-size` × 512), so larger
//! records also read smaller batches.

mod turns;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub use turns::{Place, Turns};

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

    /// For a worker whose records' values are `value_bytes` long on average (0 before its first
    /// batch): (records to read per batch, records it may have in flight).
    pub fn limits(&self, value_bytes: usize) -> (usize, usize) {
        let max = self.per_partition.load(Relaxed);
        let cost = record_cost(self.record_bytes, value_bytes);
        if cost == self.record_bytes {
            return (self.batch_size.min(max), max);
        }
        // The division made for seed-format records, in bytes, over this partition's cost.
        let share = max * self.record_bytes;
        let floor = (self.batch_size.min(self.max_in_flight) * self.record_bytes / cost).max(1);
        let max = (share / cost).max(floor);
        (self.batch_size.min(max), max)
    }
}

/// Bytes one record in flight costs: librdkafka's and ktransform's bookkeeping
/// (`IN_FLIGHT_OVERHEAD`) and its value twice (the input held until acknowledged, and the
/// producer's copy), never less than `seed` (the measured cost of a seed-format record).
pub fn record_cost(seed: usize, value_bytes: usize) -> usize {
    seed.max(IN_FLIGHT_OVERHEAD + 2 * value_bytes)
}

/// What a record in flight costs besides its value: `rd_kafka_msg_t` (176 bytes), the header
/// list and the acknowledgement's share; with a seed-format value twice, about
/// `IN_FLIGHT_RECORD_BYTES`.
const IN_FLIGHT_OVERHEAD: usize = 400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_follows_the_assignment() {
        let in_flight = InFlight::new(16 << 20, 512, 5_000, 1_000);
        assert_eq!(in_flight.limits(0), (1_000, 5_000));
        assert_eq!(in_flight.divide(12), (16 << 20) / 12);
        assert_eq!(in_flight.limits(0), (1_000, 2_730));
        // Never less than one batch in flight.
        in_flight.divide(512);
        assert_eq!(in_flight.limits(0), (1_000, 1_000));
        let small = InFlight::new(16 << 20, 512, 5_000, 50);
        small.divide(512);
        assert_eq!(small.limits(0), (50, 64));
        // A revocation leaves fewer partitions: each gets more again.
        in_flight.divide(2);
        assert_eq!(in_flight.limits(0), (1_000, 5_000));
        assert_eq!(in_flight.divide(0), 16 << 20);
    }

    #[test]
    fn larger_records_get_fewer_in_flight_for_the_same_bytes() {
        let in_flight = InFlight::new(16 << 20, 512, 5_000, 1_000);
        in_flight.divide(12);
        // Seed-format values (about 50 bytes) cost the seed estimate: as before.
        assert_eq!(in_flight.limits(50), (1_000, 2_730));
        // 10 KB values: 2,730 × 512 bytes over 400 + 2 × 10,240 per record.
        let (batch, max) = in_flight.limits(10_240);
        assert_eq!(max, 2_730 * 512 / (400 + 20_480));
        assert_eq!(batch, max);
        assert!(max * record_cost(512, 10_240) <= (16 << 20) / 12);
        // The floor is one seed-format batch in bytes, and at least one record.
        in_flight.divide(512);
        assert_eq!(in_flight.limits(10_240).1, 1_000 * 512 / 20_880);
        assert_eq!(in_flight.limits(4 << 20), (1, 1));
    }
}
