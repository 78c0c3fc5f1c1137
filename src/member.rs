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
