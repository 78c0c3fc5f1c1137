//! Where newly assigned partitions start: concrete offsets, looked up before the assignment, so
//! that librdkafka never looks a logical offset up itself.
//!
//! Why: a partition assigned without an offset starts at its committed offset, and without one
//! at `auto.offset.reset`, which librdkafka resolves with a ListOffsets request. If anything bumps
//! the partition's version while that request is in flight (a pause or resume of the fetch
//! turns, `crate::memory::Turns`, made when its worker takes or hands on a turn), librdkafka
//! 2.12.1 drops the reply as outdated and (re)starts a 500 ms offset-query timer that nothing
//! stops when the next reply sets the partition fetching
//! (`rd_kafka_toppar_handle_Offset` → `rd_kafka_toppar_offset_retry`). The timer then fires
//! while the partition fetches and moves it to `auto.offset.reset` again: back to the start
//! under `earliest` (records read twice; the worker drops them and logs "rewound under its
//! worker"), forward to the end under `latest` (records produced in between skipped). Seen with
//! 128 partitions and 16 turns on a group's first start. With a concrete offset in the
//! assignment there is no lookup, and the window is gone.
//!
//! The lookups are what librdkafka would do right after the assignment anyway (an OffsetFetch,
//! with `require_stable` under `read_committed`, and a ListOffsets for partitions without a
//! committed offset), made a moment earlier in the rebalance callback. If one fails, the
//! partition is left to librdkafka as before.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

/// How long the rebalance callback waits for each lookup.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer's `auto.offset.reset`, for partitions without a committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// `error`, or a value librdkafka would refuse: left to librdkafka.
    Other,
}

impl StartAt {
    /// From the consumer's `auto.offset.reset` (librdkafka's default when unset: latest).
    pub fn from_property(value: Option<&str>) -> Self {
        match value {
            Some("earliest" | "smallest" | "beginning") => StartAt::Earliest,
            None | Some("latest" | "largest" | "end") => StartAt::Latest,
            Some(_) => StartAt::Other,
        }
    }

    /// The ListOffsets "timestamp" that asks for this end of the log.
    fn logical(self) -> Option<Offset> {
        match self {
            StartAt::Earliest => Some(Offset::Beginning),
            StartAt::Latest => Some(Offset::End),
            StartAt::Other => None,
        }
    }
}

/// Sets a concrete start offset on every partition of `assigned` that has none (librdkafka's
/// "use the committed offset"): its committed offset, else the earliest or latest offset as
/// `start_at` says. Returns how many it set; partitions it could not resolve keep their
/// logical offset.
pub fn resolve<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    assigned: &mut TopicPartitionList,
    start_at: StartAt,
    timeout: Duration,
) -> Result<usize, KafkaError> {
    let mut ask = TopicPartitionList::new();
    for e in assigned.elements() {
        if matches!(e.offset(), Offset::Invalid | Offset::Stored) {
            ask.add_partition(e.topic(), e.partition());
        }
    }
    if ask.count() == 0 {
        return Ok(0);
    }
    let committed = consumer.committed_offsets(ask, timeout)?;
    let mut set = 0;
    let mut uncommitted = TopicPartitionList::new();
    for e in committed.elements() {
        match (e.error(), e.offset()) {
            (Ok(()), Offset::Offset(at)) if at >= 0 => {
                assigned.set_partition_offset(e.topic(), e.partition(), Offset::Offset(at))?;
                set += 1;
            }
            (Ok(()), _) => {
                if let Some(logical) = start_at.logical() {
                    uncommitted.add_partition_offset(e.topic(), e.partition(), logical)?;
                }
            }
            (Err(_), _) => {}
        }
    }
    if uncommitted.count() == 0 {
        return Ok(set);
    }
    // ListOffsets with the timestamp -2 (earliest) or -1 (latest), as librdkafka's own lookup
    // and `query_watermark_offsets` send it; under `read_committed` the latest is the last
    // stable offset.
    let found = consumer.offsets_for_times(uncommitted, timeout)?;
    for e in found.elements() {
        if let (Ok(()), Offset::Offset(at)) = (e.error(), e.offset()) {
            if at >= 0 {
                assigned.set_partition_offset(e.topic(), e.partition(), Offset::Offset(at))?;
                set += 1;
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_policy_reads_librdkafkas_spellings() {
        for v in ["earliest", "smallest", "beginning"] {
            assert_eq!(StartAt::from_property(Some(v)), StartAt::Earliest);
        }
        for v in [None, Some("latest"), Some("largest"), Some("end")] {
            assert_eq!(StartAt::from_property(v), StartAt::Latest);
        }
        assert_eq!(StartAt::from_property(Some("error")), StartAt::Other);
    }
}
