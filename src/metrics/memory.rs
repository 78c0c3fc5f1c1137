//! `--memory-budget`'s division (`crate::memory`): each assigned partition's share of the
//! in-flight half, set again on every rebalance.

use super::Stats;
use prometheus_client::registry::Registry;

impl Stats {
    pub(super) fn register_memory(&self, r: &mut Registry) {
        r.register(
            "memory_budget_partition_bytes",
            "Each assigned partition's share of the in-flight half of --memory-budget, divided again on every rebalance",
            self.budget_share.clone(),
        );
    }

    /// The in-flight budget was divided among `partitions`: `share` bytes each.
    pub fn budget_divided(&self, partitions: usize, share: usize) {
        tracing::debug!(partitions, share, "memory budget divided");
        self.budget_share.set(share as i64);
    }
}
