//! `--memory-budget`: the memory an instance's records may take, whatever its partition count,
//! and the librdkafka consumer settings it sets.
//!
//! What grows with partitions is what librdkafka holds per partition: with split queues its
//! `queued.min.messages` and `queued.max.messages.kbytes` bound each partition's prefetch queue
//! on its own, so 128 partitions held ten times the records of 12 (442 MB against 81 MB). Every
//! record in such a queue is an `rd_kafka_op_t` of 1,024 bytes (librdkafka 2.12.1) besides its
//! bytes, so for small records the count, not the bytes, is what costs.
//!
//! The budget is split in two halves:
//! - the **prefetch** half is divided into fetch turns of [`FETCH_TURN_SHARE`] each (16 under
//!   the default budget): at most that many of an instance's partitions fetch at once, the
//!   others paused until a turn comes to them ([`crate::memory::Turns`]), so the records
//!   prefetched do not grow with the partitions owned. The half is divided by the turns, or by
//!   the source topic's partition count read at start when that is smaller, and set as the
//!   per-partition limits below; librdkafka fixes them when the consumer is created;
//! - the **in-flight** half (records produced and not yet acknowledged) is divided among the
//!   partitions assigned, again on every rebalance ([`crate::memory::InFlight`]), never below
//!   one batch per partition.
//!
//! Flags and `-X` properties given explicitly win over what the budget derives.

use crate::config::{invalid, ConfigError};

/// The default budget. Draining the 2M-record backlog of 12 partitions the process peaked at
/// 59 to 67 MB with it (median runs under 64 MB, against 96 to 102 MB before): about 40 MB of
/// it is code, threads and allocator (47 MB under a 4 MiB budget), so a smaller default saves
/// little and costs fetches (docs/performance.md#memory).
pub const DEFAULT_MEMORY_BUDGET: &str = "32MiB";
/// Below this, a partition's share of a topic with a few hundred partitions holds no batch.
pub const MIN_MEMORY_BUDGET: u64 = 4 << 20;
/// The prefetch each fetch turn is given: 16 turns under the default budget, more than the 12
/// partitions that drain this machine's broker at full rate, 2 under the minimum.
pub const FETCH_TURN_SHARE: u64 = 1 << 20;
/// What one prefetched record costs besides its bytes: librdkafka's `rd_kafka_op_t` (1,024
/// bytes in 2.12.1) and the parsed headers.
pub const QUEUED_RECORD_OVERHEAD: u64 = 1_088;
/// What one record produced and not yet acknowledged costs, key and value included, for seed-
/// format records (about 100 bytes): librdkafka's `rd_kafka_msg_t` (176 bytes), the copied
/// value, the header list and ktransform's share of the batch's acknowledgements.
pub const IN_FLIGHT_RECORD_BYTES: u64 = 512;
/// How many bytes of queued records (op, headers, decompressed bytes) one fetched byte of a
/// compressed seed-format batch becomes: a response for one partition is bounded by its share
/// divided by this.
const FETCH_EXPANSION: u64 = 32;

/// librdkafka settings ktransform used before the budget, kept as the ceilings: a partition's
/// share never asks for more than they did (at most about 100 MB on 12 partitions).
const MAX_QUEUED_MIN_MESSAGES: u64 = 2_500;
const MAX_QUEUED_MAX_KBYTES: u64 = 4_096;
const MAX_PARTITION_FETCH_BYTES: u64 = 256 << 10;
const MAX_FETCH_BYTES: u64 = 4 << 20;
/// librdkafka refuses a `fetch.max.bytes` below `message.max.bytes` (1,000,000 by default).
const MIN_FETCH_BYTES: u64 = 1 << 20;
/// The broker returns at least one whole record batch per partition however small the limit
/// (fetch v3+), so a small limit slows nothing but the number of batches per response.
const MIN_PARTITION_FETCH_BYTES: u64 = 1 << 10;

/// The instance-wide memory budget for records, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget(pub u64);

/// The consumer's per-partition prefetch limits for one partition count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefetchLimits {
    /// Bytes of the prefetch half that each partition may hold.
    pub share: u64,
    pub queued_min_messages: u64,
    pub queued_max_messages_kbytes: u64,
    pub max_partition_fetch_bytes: u64,
    pub fetch_max_bytes: u64,
}

impl MemoryBudget {
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The half for librdkafka's prefetch queues.
    pub fn prefetch(self) -> u64 {
        self.0 / 2
    }

    /// The half for records produced and not yet acknowledged.
    pub fn in_flight(self) -> u64 {
        self.0 - self.prefetch()
    }

    /// How many partitions may fetch at once ([`crate::memory::Turns`]).
    pub fn fetch_turns(self) -> usize {
        (self.prefetch() / FETCH_TURN_SHARE).max(1) as usize
    }

    /// The prefetch limits when the source has `partitions` partitions (unknown: the topic
    /// does not exist at start): the prefetch half divided by the partitions that fetch at once.
    pub fn prefetch_limits(self, partitions: Option<usize>) -> PrefetchLimits {
        let turns = self.fetch_turns();
        let fetching = partitions
            .filter(|p| *p > 0)
            .map_or(turns, |p| p.min(turns));
        let share = self.prefetch() / fetching as u64;
        // Half the share for the records waiting in the queue, half for the response that
        // arrives when the queue falls below `queued.min.messages`.
        let half = share / 2;
        PrefetchLimits {
            share,
            queued_min_messages: (half / QUEUED_RECORD_OVERHEAD).clamp(1, MAX_QUEUED_MIN_MESSAGES),
            queued_max_messages_kbytes: (half >> 10).clamp(1, MAX_QUEUED_MAX_KBYTES),
            max_partition_fetch_bytes: (half / FETCH_EXPANSION)
                .clamp(MIN_PARTITION_FETCH_BYTES, MAX_PARTITION_FETCH_BYTES),
            fetch_max_bytes: (self.prefetch() / 4).clamp(MIN_FETCH_BYTES, MAX_FETCH_BYTES),
        }
    }

    /// `check` at start: a budget too small to hold a batch fails naming the flag.
    pub fn check(self) -> Result<(), ConfigError> {
        if self.0 < MIN_MEMORY_BUDGET {
            return Err(invalid(
                "--memory-budget",
                format!(
                    "{} is below the minimum of {}",
                    show(self.0),
                    show(MIN_MEMORY_BUDGET)
                ),
            ));
        }
        Ok(())
    }
}

impl PrefetchLimits {
    /// As librdkafka properties, for [`crate::config::RunConfig::consumer_config_for`].
    pub fn properties(&self) -> [(&'static str, String); 4] {
        [
            ("queued.min.messages", self.queued_min_messages.to_string()),
            (
                "queued.max.messages.kbytes",
                self.queued_max_messages_kbytes.to_string(),
            ),
            (
                "max.partition.fetch.bytes",
                self.max_partition_fetch_bytes.to_string(),
            ),
            ("fetch.max.bytes", self.fetch_max_bytes.to_string()),
        ]
    }
}

/// `--memory-budget`'s value: bytes, or a number with a unit (`KiB`, `MiB`, `GiB` and the
/// decimal `KB`, `MB`, `GB`; `K`, `M`, `G` are binary), e.g. `64MiB`.
pub fn parse_memory_budget(s: &str) -> Result<MemoryBudget, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit (bytes, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 32MiB, 64MB, 33554432)"))?;
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{s}` is too large"));
    }
    Ok(MemoryBudget(bytes as u64))
}

/// A byte count as `--print-config` and messages show it: whole MiB when it is one.
pub fn show(bytes: u64) -> String {
    if bytes % (1 << 20) == 0 {
        format!("{}MiB", bytes >> 20)
    } else if bytes % (1 << 10) == 0 {
        format!("{}KiB", bytes >> 10)
    } else {
        bytes.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_memory_budget("32MiB").unwrap().0, 32 * MIB);
        assert_eq!(parse_memory_budget("32M").unwrap().0, 32 * MIB);
        assert_eq!(parse_memory_budget("64MB").unwrap().0, 64_000_000);
        assert_eq!(parse_memory_budget("1GiB").unwrap().0, 1024 * MIB);
        assert_eq!(parse_memory_budget("4194304").unwrap().0, 4 * MIB);
        assert_eq!(parse_memory_budget("0.5GiB").unwrap().0, 512 * MIB);
        assert!(parse_memory_budget("lots").is_err());
        assert!(parse_memory_budget("32 parsecs").is_err());
        assert!(parse_memory_budget("").is_err());
        assert_eq!(show(32 * MIB), "32MiB");
        assert_eq!(
            parse_memory_budget(&show(3 * MIB / 2)).unwrap().0,
            3 * MIB / 2
        );
    }

    #[test]
    fn a_budget_below_the_minimum_is_refused_naming_the_flag() {
        let e = MemoryBudget(MIB).check().unwrap_err();
        assert_eq!(e.flag, "--memory-budget");
        MemoryBudget(MIN_MEMORY_BUDGET).check().unwrap();
    }

    /// Each partition's queue and response stay within its share of the prefetch half, except
    /// at the floors (one record, one small response), whatever the partition count.
    #[test]
    fn the_prefetch_half_is_divided_by_the_partitions_that_fetch_at_once() {
        let budget = MemoryBudget(32 * MIB);
        assert_eq!(budget.fetch_turns(), 16);
        assert_eq!(MemoryBudget(MIN_MEMORY_BUDGET).fetch_turns(), 2);
        for partitions in [1, 12, 128, 512, 4096] {
            let l = budget.prefetch_limits(Some(partitions));
            let fetching = partitions.min(budget.fetch_turns());
            assert_eq!(l.share, budget.prefetch() / fetching as u64);
            let queued = l.queued_min_messages * QUEUED_RECORD_OVERHEAD;
            let fetched = l.max_partition_fetch_bytes * FETCH_EXPANSION;
            assert!(queued <= l.share / 2 || l.queued_min_messages == 1, "{l:?}");
            assert!(
                fetched <= l.share / 2 || l.max_partition_fetch_bytes == MIN_PARTITION_FETCH_BYTES,
                "{l:?}"
            );
            assert!(l.fetch_max_bytes >= MIN_FETCH_BYTES);
        }
        // 12 partitions all fetch at once, as before the turns; past the turns the share stays.
        let twelve = budget.prefetch_limits(Some(12));
        let many = budget.prefetch_limits(Some(512));
        assert_eq!(twelve.share, budget.prefetch() / 12);
        assert!(many.queued_min_messages < twelve.queued_min_messages);
        assert_eq!(many, budget.prefetch_limits(Some(16)));
        assert_eq!(budget.prefetch_limits(None), many);
        assert_eq!(budget.prefetch() + budget.in_flight(), budget.bytes());
    }
}
