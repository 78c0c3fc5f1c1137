//! The librdkafka settings ktransform chooses for its consumer and producer, each with the
//! measurement or reason behind it; `-X`, the config file and the environment override them
//! (see [`crate::config::properties`]), except the ones ktransform owns.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::{ConfigError, Guarantee, MetricsAddr, RunConfig, Side};

/// How often librdkafka reports its statistics while `/metrics` is served: the consumer lag
/// gauges and `/healthz`'s "broker seen" come from them.
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

impl RunConfig {
    pub fn consumer_config(&self) -> Result<ClientConfig, ConfigError> {
        let mut config = self.kafka.client_config(
            Side::Consumer,
            &[
                ("client.id", "ktransform"),
                // The offset of a record is stored by us once its output is acknowledged; the
                // background auto-commit then only ever commits acknowledged work.
                ("enable.auto.commit", "true"),
                // librdkafka's default is 5 s; 1 s keeps the group's visible lag (and the replay
                // after a crash) small for the price of one commit request a second.
                ("auto.commit.interval.ms", "1000"),
                ("auto.offset.reset", "earliest"),
                // Incremental rebalances: partitions that stay are not stopped when others move.
                ("partition.assignment.strategy", "cooperative-sticky"),
                // Memory (bench/ab.py, 2M-record drains of 12 partitions; peak RSS). Prefetch
                // is per partition with split queues: librdkafka's defaults (100k records,
                // 64 MiB) times 12 partitions peaked at 560 MB. And every record of a fetch
                // response keeps the whole response alive (up to 50 MiB, 1 MiB per partition),
                // so smaller responses bound memory: 4 MiB / 256 KiB (with --max-in-flight
                // 5000) took the peak from 235 MB to 112 MB at the same drain rate within the
                // machine's noise. Queues of 2500 records / 4 MiB per partition then took it
                // to 87-90 MB (from 105-122 MB in the same A/B, throughput within noise), and
                // the p99 at 390k records/s was no worse (58 vs 69 ms). 1000 records did not
                // go lower (90-92 MB).
                ("fetch.max.bytes", "4194304"),
                ("max.partition.fetch.bytes", "262144"),
                ("queued.min.messages", "2500"),
                ("queued.max.messages.kbytes", "4096"),
                // With small queues the fetcher hits them often; librdkafka's default 1 s pause
                // after a full queue would starve a fast worker.
                ("fetch.queue.backoff.ms", "10"),
                // One fetch per broker is in flight at a time. A fetch for partitions with no
                // new data waits at the broker up to this long, and a partition that became
                // fetchable meanwhile waits with it: at librdkafka's 500 ms default that was the
                // p99 end-to-end latency (275-549 ms at 247k records/s; 20 ms with 5 ms,
                // 44 ms with 100 ms). The price: an idle consumer asks each broker up to 200
                // times a second.
                ("fetch.wait.max.ms", "5"),
            ],
        )?;
        if self.metrics_addr != MetricsAddr::Off && config.get("statistics.interval.ms").is_none() {
            let ms = STATISTICS_INTERVAL.as_millis().to_string();
            config.set("statistics.interval.ms", ms);
        }
        config.set("group.id", &self.group);
        config.set("enable.auto.offset.store", "false");
        // Owned: see `properties::OWNED_PROPERTIES`.
        config.set("enable.partition.eof", "false");
        if self.guarantee == Guarantee::ExactlyOnce {
            // Offsets are committed by the producer's transactions, never by the consumer.
            config.set("enable.auto.commit", "false");
            config.set("isolation.level", "read_committed");
        }
        Ok(config)
    }

    pub fn producer_config(&self) -> Result<ClientConfig, ConfigError> {
        let mut config = self.kafka.client_config(
            Side::Producer,
            &[
                ("client.id", "ktransform"),
                ("linger.ms", "5"),
                // lz4 halves the bytes on the wire and on the broker's disk (53.8 vs 111.2 bytes
                // per seed record) for 0.46 CPU s per million records (1.29x none), and every
                // client since Kafka 0.10 reads it. zstd saves more (32.6 bytes) for more CPU
                // (1.38x) and needs readers of Kafka 2.1+; gzip costs 2.6x. make bench,
                // bench/results/2026-12-06-codecs.md; -X producer.compression.type overrides.
                ("compression.type", "lz4"),
                // The Java client's default partitioner, so keys land where Java producers put them.
                ("partitioner", "murmur2_random"),
            ],
        )?;
        config.set("enable.idempotence", "true");
        if self.guarantee == Guarantee::AtLeastOnce && config.get("message.timeout.ms").is_none() {
            // Retry a record until the broker takes it, however long an outage lasts: its offset
            // stays unstored meanwhile, and SIGTERM still stops within --shutdown-timeout.
            config.set("message.timeout.ms", "0");
        }
        if self.guarantee == Guarantee::ExactlyOnce {
            let id = self.transactional_id.clone().unwrap_or_else(|| {
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
