//! What the pipeline asks of the group member, without its rebalance machinery: store a
//! partition's next offset, read a partition's offsets, the group's metadata for a
//! transaction, a synchronous commit, a seek (the rewind after an aborted transaction). Partition workers, the offsets and the transaction hold
//! the consumer as `dyn Member`, so they do not depend on the consumer's context type, and
//! [`crate::consumer`], which starts them, stays above them in the module graph.

use std::time::Duration;

use rdkafka::consumer::{
    CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

pub trait Member: Send + Sync {
    /// Stores `offset + 1` as the partition's next offset to commit.
    fn store_offset(&self, topic: &str, partition: i32, offset: i64) -> KafkaResult<()>;

    /// The partition's (low, high) watermarks; high is the last stable offset under
    /// `read_committed`.
    fn fetch_watermarks(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> KafkaResult<(i64, i64)>;

    /// The group's committed offset of the partition, if any.
    fn committed_offset(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> KafkaResult<Option<i64>>;

    /// The group's committed offsets of `partitions` (None: nothing committed), in one request.
    fn committed_offsets_of(
        &self,
        topic: &str,
        partitions: &[i32],
        timeout: Duration,
    ) -> KafkaResult<Vec<(i32, Option<i64>)>>;

    /// The end (`Offset::End`: the high watermark, the last stable offset under
    /// `read_committed`) or the start (`Offset::Beginning`) of each of `partitions`, asked of
    /// their leaders in one ListOffsets request each; None for a partition that had an error.
    fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        at: Offset,
        timeout: Duration,
    ) -> KafkaResult<Vec<(i32, Option<i64>)>>;

    /// The position of every assigned partition of `topic`: the offset after the last record or
    /// transaction marker handed to the application; None before the first. Local, no request.
    fn positions(&self, topic: &str) -> KafkaResult<Vec<(i32, Option<i64>)>>;

    /// The group's metadata (generation, member id) for `send_offsets_to_transaction`.
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata>;

    /// Commits `offsets` (each the next offset to consume) and waits for the answer.
    fn commit_sync(&self, offsets: &TopicPartitionList) -> KafkaResult<()>;

    /// Moves the partition's fetch position to `offset`; records fetched before are discarded.
    fn seek(&self, topic: &str, partition: i32, offset: i64, timeout: Duration) -> KafkaResult<()>;
}

impl<C: ConsumerContext + 'static> Member for StreamConsumer<C> {
    fn store_offset(&self, topic: &str, partition: i32, offset: i64) -> KafkaResult<()> {
        Consumer::store_offset(self, topic, partition, offset)
    }

    fn fetch_watermarks(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> KafkaResult<(i64, i64)> {
        Consumer::fetch_watermarks(self, topic, partition, timeout)
    }

    fn committed_offset(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> KafkaResult<Option<i64>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let committed = self.committed_offsets(tpl, timeout)?;
        Ok(committed
            .find_partition(topic, partition)
            .and_then(|p| p.offset().to_raw())
            .filter(|o| *o >= 0))
    }

    fn committed_offsets_of(
        &self,
        topic: &str,
        partitions: &[i32],
        timeout: Duration,
    ) -> KafkaResult<Vec<(i32, Option<i64>)>> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(topic, p);
        }
        Ok(offsets_of(&self.committed_offsets(tpl, timeout)?, topic))
    }

    fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        at: Offset,
        timeout: Duration,
    ) -> KafkaResult<Vec<(i32, Option<i64>)>> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            // offsets_for_times reads each offset field as a timestamp; End and Beginning are
            // ListOffsets' own "latest" and "earliest".
            tpl.add_partition_offset(topic, p, at)?;
        }
        Ok(offsets_of(&self.offsets_for_times(tpl, timeout)?, topic))
    }

    fn positions(&self, topic: &str) -> KafkaResult<Vec<(i32, Option<i64>)>> {
        Ok(offsets_of(&self.position()?, topic))
    }

    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        Consumer::group_metadata(self)
    }

    fn commit_sync(&self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        Consumer::commit(self, offsets, CommitMode::Sync)
    }

    fn seek(&self, topic: &str, partition: i32, offset: i64, timeout: Duration) -> KafkaResult<()> {
        Consumer::seek(self, topic, partition, Offset::Offset(offset), timeout)
    }
}

/// The offsets of `topic`'s partitions in `tpl`: None where librdkafka reports an error or no
/// offset (a logical one such as `Invalid`).
fn offsets_of(tpl: &TopicPartitionList, topic: &str) -> Vec<(i32, Option<i64>)> {
    tpl.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| {
            let offset = e.error().ok().and_then(|()| e.offset().to_raw());
            (e.partition(), offset.filter(|o| *o >= 0))
        })
        .collect()
}
