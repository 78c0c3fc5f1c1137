//! `--memory-budget`'s division (`crate::memory`): each assigned partition's share of the
//! in-flight half, set again on every rebalance, and the fetch turns of the prefetch half.

use super::Stats;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering::Relaxed;

impl Stats {
    pub(super) fn register_memory(&self, r: &mut Registry) {
        r.register(
            "memory_budget_partition_bytes",
            "Each assigned partition's share of the in-flight half of --memory-budget, divided again on every rebalance",
            self.budget_share.clone(),
        );
        r.register(
            "fetch_turns",
            "How many partitions may fetch at once (the prefetch half of --memory-budget); the others are paused until a turn comes to them",
            self.fetch_turns.clone(),
        );
        r.register(
            "fetch_turns_waiting_partitions",
            "Assigned partitions paused, waiting for a fetch turn",
            self.turns_waiting.clone(),
        );
        r.register(
            "fetch_turns_handed_on",
            "Fetch turns handed from a partition to a waiting one",
            self.turns_handed_on.clone(),
        );
    }

    /// `turns` partitions may fetch at once.
    pub fn fetch_turns(&self, turns: usize) {
        self.fetch_turns.set(turns as i64);
    }

    /// Partitions waiting for a fetch turn now, and turns given to waiting partitions so far
    /// (`handed_on`, a running total), after a turn was taken, handed on or let go.
    pub fn turns_changed(&self, waiting: usize, handed_on: u64) {
        self.turns_waiting.set(waiting as i64);
        let before = self.turns_seen.fetch_max(handed_on, Relaxed);
        if handed_on > before {
            self.turns_handed_on.inc_by(handed_on - before);
        }
    }

    /// The in-flight budget was divided among `partitions`: `share` bytes each.
    pub fn budget_divided(&self, partitions: usize, share: usize) {
        tracing::debug!(partitions, share, "memory budget divided");
        self.budget_share.set(share as i64);
    }
}
