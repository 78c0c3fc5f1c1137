//! The stall watchdog's events (`crate::stall`): a partition found stalled, a heal tried, the
//! stall over, a lag check, and the partitions past the health bound that `/healthz` reports.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{PartitionLabels, Stats, StepLabels, TopicResultLabels};

impl Stats {
    pub(super) fn register_stall(&self, r: &mut Registry) {
        r.register(
            "partition_stalled",
            "1 while the stall watchdog finds the partition behind its end and not reading",
            self.stalled.clone(),
        );
        r.register(
            "stall_heals",
            "Heals the stall watchdog tried, by step (rearm, resplit)",
            self.stall_heals.clone(),
        );
        r.register(
            "stall_checks",
            "Partitions without progress whose end offset the stall watchdog asked for, by result (idle, behind, failed)",
            self.stall_checks.clone(),
        );
    }

    /// The stall watchdog found a partition behind its end offset and not reading.
    pub fn partition_stalled(&self, topic: &str, partition: i32) {
        self.totals.stalls.fetch_add(1, Relaxed);
        self.error(topic, "stalled");
        self.stalled_gauge(topic, partition).set(1);
    }

    /// The stall watchdog tried `step` on a stalled partition.
    pub fn stall_heal(&self, topic: &str, partition: i32, step: &str) {
        tracing::debug!(topic, partition, step, "stall heal");
        self.totals.stall_heals.fetch_add(1, Relaxed);
        let labels = StepLabels {
            topic: topic.to_string(),
            step: step.to_string(),
        };
        self.stall_heals.get_or_create(&labels).inc();
    }

    /// A stalled partition is past the watchdog's health bound: `/livez` and `/healthz` fail until
    /// it ends.
    pub fn stall_unhealed(&self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        self.unhealed.lock().unwrap().insert(key);
    }

    /// A stall ended: the partition progresses again, has nothing left to read, or left.
    pub fn stall_ended(&self, topic: &str, partition: i32) {
        self.stalled_gauge(topic, partition).set(0);
        let key = (topic.to_string(), partition);
        self.unhealed.lock().unwrap().remove(&key);
    }

    /// The stall watchdog asked for the end offset of a partition without progress.
    pub fn stall_checked(&self, topic: &str, result: &str) {
        let labels = TopicResultLabels {
            topic: topic.to_string(),
            result: result.to_string(),
        };
        self.stall_checks.get_or_create(&labels).inc();
    }

    /// Partitions stalled past the watchdog's health bound, as `topic/partition`.
    pub fn unhealed_stalls(&self) -> Vec<String> {
        let unhealed = self.unhealed.lock().unwrap();
        unhealed.iter().map(|(t, p)| format!("{t}/{p}")).collect()
    }

    fn stalled_gauge(&self, topic: &str, partition: i32) -> Gauge {
        let labels = PartitionLabels {
            topic: topic.to_string(),
            partition,
        };
        self.stalled.get_or_create(&labels).clone()
    }
}
