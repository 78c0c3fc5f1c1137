//! The librdkafka settings ktransform chooses for its consumer and producer, each with the
//! measurement or reason behind it; `-X`, the config file and the environment override them
//! (see [`crate::config::properties`]), except the ones ktransform owns.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::{ConfigError, GroupProtocol, Guarantee, MetricsAddr, RunConfig, Side};

/// librdkafka's default `batch.size`.
const LIBRDKAFKA_BATCH_SIZE: usize = 1_000_000;

/// How often librdkafka reports its statistics while `/metrics` is served: the consumer lag
/// gauges and `/healthz`'s "broker seen" come from them.
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

impl RunConfig {
    /// The consumer's configuration before the source's partition count is known (validation,
    /// `--print-config`): the prefetch limits are then their ceilings.
    pub fn consumer_config(&self) -> Result<ClientConfig, ConfigError> {
        self.consumer_config_for(None)
    }

    /// The consumer's configuration with the prefetch half of `--memory-budget` divided by the
    /// source's `partitions` (see [`crate::config::budget`]).
    pub fn consumer_config_for(
        &self,
        partitions: Option<usize>,
    ) -> Result<ClientConfig, ConfigError> {
        let limits = self.memory_budget.prefetch_limits(partitions).properties();
        let mut defaults = vec![
            ("client.id", "ktransform"),
            // The offset of a record is stored by us once its output is acknowledged; the
            // background auto-commit then only ever commits acknowledged work.
            ("enable.auto.commit", "true"),
            // librdkafka's default is 5 s; 1 s keeps the group's visible lag (and the replay
            // after a crash) small for the price of one commit request a second.
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", "earliest"),
            // With small queues the fetcher hits them often; librdkafka's default 1 s pause
            // after a full queue would starve a fast worker.
            ("fetch.queue.backoff.ms", "10"),
            // One fetch per broker is in flight at a time, and a fetch for idle partitions
            // waits at the broker up to this long while the others wait with it: at
            // librdkafka's 500 ms default that wait was the p99 end-to-end latency. The
            // price: an idle consumer asks each broker up to 200 times a second.
            ("fetch.wait.max.ms", "5"),
            // Partitions added to a live source topic are seen (and, under the classic
            // protocol, assigned) at the next metadata refresh: librdkafka's 5 min default
            // left them unread that long (measured: assigned 290 s after the change).
            // The price: one metadata request per 30 s.
            ("topic.metadata.refresh.interval.ms", "30000"),
        ];
        // Memory: with split queues librdkafka prefetches per partition, and every record of a
        // fetch response keeps the whole response alive: the queues and responses are sized
        // from --memory-budget (560 MB peak RSS with librdkafka's defaults on 12 partitions).
        defaults.extend(limits.iter().map(|(k, v)| (*k, v.as_str())));
        let mut config = self.kafka.client_config(Side::Consumer, &defaults)?;
        match self.group_protocol {
            // Incremental rebalances: partitions that stay are not stopped when others move.
            GroupProtocol::Classic if config.get("partition.assignment.strategy").is_none() => {
                config.set("partition.assignment.strategy", "cooperative-sticky");
            }
            GroupProtocol::Classic => {}
            // Owned (see `properties::OWNED_PROPERTIES`). The broker assigns, always
            // incrementally; librdkafka refuses an assignment strategy with this protocol, and
            // the other properties of `protocol::BROKER_SIDE`.
            GroupProtocol::Consumer => {
                config.set("group.protocol", GroupProtocol::Consumer.as_str());
            }
        }
        let serving = self.metrics_addr != Some(MetricsAddr::Off);
        if serving && config.get("statistics.interval.ms").is_none() {
            let ms = STATISTICS_INTERVAL.as_millis().to_string();
            config.set("statistics.interval.ms", ms);
        }
        config.set("group.id", &self.group);
        if let Some(id) = self.instance_id()? {
            // Static membership (`config::orchestrator`): the consumer alone is a group member.
            config.set("group.instance.id", id);
        }
        config.set("enable.auto.offset.store", "false");
        // Owned: see `properties::OWNED_PROPERTIES`.
        config.set("enable.partition.eof", "false");
        if self.pipeline.guarantee == Guarantee::ExactlyOnce {
            // Offsets are committed by the producer's transactions, never by the consumer.
            config.set("enable.auto.commit", "false");
            config.set("isolation.level", "read_committed");
        }
        Ok(config)
    }

    /// The producer's configuration with `batch.size` at most `batch_cap` bytes: the sink caps
    /// batches below the destination's and dead-letter topic's `max.message.bytes`, which only
    /// the brokers know (so `--print-config`, which does not connect, shows the uncapped value).
    pub fn producer_config_capped(
        &self,
        batch_cap: Option<usize>,
    ) -> Result<ClientConfig, ConfigError> {
        let mut config = self.producer_config()?;
        let batch_size = config
            .get("batch.size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(LIBRDKAFKA_BATCH_SIZE);
        if let Some(cap) = batch_cap.filter(|cap| *cap < batch_size) {
            config.set("batch.size", cap.to_string());
        }
        Ok(config)
    }

    pub fn producer_config(&self) -> Result<ClientConfig, ConfigError> {
        let mut config = self.kafka.client_config(
            Side::Producer,
            &[
                ("client.id", "ktransform"),
                ("linger.ms", "5"),
                // lz4 halves the bytes on the wire and on the broker's disk for little CPU, and
                // every client since Kafka 0.10 reads it (bench/results/2026-12-06-codecs.md;
                // docs: the record's contract). -X producer.compression.type overrides it.
                ("compression.type", "lz4"),
                // The Java client's default partitioner, so keys land where Java producers put them.
                ("partitioner", "murmur2_random"),
            ],
        )?;
        config.set("enable.idempotence", "true");
        if self.pipeline.guarantee == Guarantee::AtLeastOnce
            && config.get("message.timeout.ms").is_none()
        {
            // Retry a record until the broker takes it, however long an outage lasts: its offset
            // stays unstored meanwhile, and SIGTERM still stops within --shutdown-timeout.
            config.set("message.timeout.ms", "0");
        }
        if self.pipeline.guarantee == Guarantee::ExactlyOnce {
            let id = self.stable_transactional_id()?.unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                format!(
                    "ktransform-{}-{:x}{:x}",
                    self.group,
                    std::process::id(),
                    nanos
                )
            });
            config.set("transactional.id", id);
            if config.get("transaction.timeout.ms").is_none() {
                // An instance that dies with a transaction open blocks read_committed readers of
                // the destination until the coordinator aborts it: keep that short.
                config.set("transaction.timeout.ms", "30000");
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::ClientConfig;

    /// Producers compress with any of these; a consumer without one cannot read their batches.
    #[test]
    fn librdkafka_is_built_with_every_kafka_codec() {
        let native = ClientConfig::new().create_native_config().unwrap();
        let features = native.get("builtin.features").unwrap();
        for codec in ["gzip", "snappy", "lz4", "zstd"] {
            assert!(
                features.split(',').any(|f| f == codec),
                "{codec} missing from {features}"
            );
        }
    }
}
