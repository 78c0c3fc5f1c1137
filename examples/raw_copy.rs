//! Raw copy: the practical limit that `make bench` compares ktransform with. Consumes the source
//! and produces the same bytes (key, value, headers) to the destination: no parsing, no hashing,
//! one group member, one thread polling both clients.
//!
//! ```text
//! cargo run --release --example raw_copy -- --source S --destination D --group G
//!     [--brokers 127.0.0.1:9092]
//! ```
//!
//! With `--count N` it follows the topic instead until N records are copied: a live reference
//! for `make bench`'s latency run.
//!
//! Like `ktransform run --until-end`, it captures the source's high watermarks at start, copies
//! every partition up to them, flushes the producer, commits the consumed offsets once, and exits
//! 0. The producer settings are ktransform's (idempotent, `linger.ms=5`, lz4, `murmur2_random`), so
//! the difference between the two is the transform and the bookkeeping, not the producer tuning.
//! One consumer setting differs from librdkafka's default, `fetch.queue.backoff.ms=10` (see
//! below). Exits 1 if any delivery failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

// The same allocator as the `ktransform` binary (feature `jemalloc`, on by default), so that
// the comparison is of the work done, not of malloc.
#[cfg(all(feature = "jemalloc", unix, not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(about = "Copy a topic's records (key, value, headers) up to its end offsets at start")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    source: String,
    #[arg(long)]
    destination: String,
    #[arg(long, default_value = "raw-copy")]
    group: String,
    /// librdkafka property, repeatable: `key=value` for both clients, `consumer.key=value` or
    /// `producer.key=value` for one (as `ktransform run -X`).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Instead of copying up to the end offsets at start, follow the topic until this many
    /// records are copied (for latency runs against a live producer). Prints "partitions
    /// assigned" once the group has assigned them, before anything is copied.
    #[arg(long)]
    count: Option<u64>,
}

/// Applies the `-X` overrides meant for `side` ("consumer" or "producer").
fn overrides(config: &mut ClientConfig, args: &[String], side: &str) -> anyhow::Result<()> {
    for raw in args {
        let (key, value) = raw
            .split_once('=')
            .with_context(|| format!("-X {raw}: expected key=value"))?;
        match key.split_once('.') {
            Some((s, k)) if s == side => config.set(k, value),
            Some(("consumer" | "producer", _)) => continue,
            _ => config.set(key, value),
        };
    }
    Ok(())
}

/// Counts delivery reports; served on the main thread by `poll`.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Relaxed),
            Err((e, _)) => {
                if self.failed.fetch_add(1, Relaxed) == 0 {
                    eprintln!("raw_copy: delivery failed: {e}");
                }
                1
            }
        };
    }
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("raw_copy: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut consumer_config = ClientConfig::new();
    consumer_config
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        // librdkafka's default (1000 ms) pauses fetching for up to a second whenever the
        // prefetch queue is over its threshold: on a 2M-record backlog the copy loop then spent
        // half its time waiting for records (≈390k records/s; with 10 ms, ≈570-720k/s).
        .set("fetch.queue.backoff.ms", "10");
    overrides(&mut consumer_config, &args.config, "consumer")?;
    let consumer: BaseConsumer = consumer_config.create().context("creating consumer")?;
    let mut producer_config = ClientConfig::new();
    producer_config
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random");
    overrides(&mut producer_config, &args.config, "producer")?;
    let producer: BaseProducer<Deliveries> = producer_config
        .create_with_context(Deliveries::default())
        .context("creating producer")?;

    // The end offsets to copy up to, captured before consuming.
    let timeout = Duration::from_secs(30);
    let md = consumer
        .fetch_metadata(Some(&args.source), timeout)
        .with_context(|| format!("metadata of {}", args.source))?;
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    if partitions.is_empty() {
        bail!("topic {} does not exist", args.source);
    }
    let mut end: HashMap<i32, i64> = HashMap::new();
    for &p in &partitions {
        let high = match args.count {
            Some(_) => i64::MAX,
            None => consumer.fetch_watermarks(&args.source, p, timeout)?.1,
        };
        end.insert(p, high);
    }
    // Where each partition will start: the group's committed offset, else the log start.
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition(&args.source, p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut next: HashMap<i32, i64> = HashMap::new();
    for &p in &partitions {
        let start = match committed
            .find_partition(&args.source, p)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => o,
            _ => consumer.fetch_watermarks(&args.source, p, timeout)?.0,
        };
        next.insert(p, start);
    }
    // Partitions not copied to their end yet; with --count, records still to copy.
    let mut remaining = match args.count {
        Some(count) => count as usize,
        None => partitions.iter().filter(|p| next[p] < end[p]).count(),
    };
    if args.count.is_none() {
        let total: i64 = partitions.iter().map(|p| (end[p] - next[p]).max(0)).sum();
        eprintln!(
            "raw_copy: {} → {}: {total} records in {} partitions",
            args.source,
            args.destination,
            partitions.len()
        );
    }

    consumer.subscribe(&[&args.source])?;
    let mut copied: u64 = 0;
    let mut pending: Option<rdkafka::message::BorrowedMessage<'_>> = None;
    if args.count.is_some() {
        // Join the group before saying ready, keeping whatever the joining poll returned.
        while consumer.assignment()?.count() == 0 {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                pending = Some(m);
            }
        }
        eprintln!(
            "raw_copy: partitions assigned; following {} until {remaining} records are copied",
            args.source
        );
    }
    // Where the loop's time goes: waiting for records, or for room in the producer's queue.
    let (mut polling, mut queue_full) = (Duration::ZERO, 0u64);
    while remaining > 0 {
        let poll_started = Instant::now();
        let polled = match pending.take() {
            Some(m) => Some(Ok(m)),
            None => consumer.poll(Duration::from_millis(100)),
        };
        polling += poll_started.elapsed();
        let message = match polled {
            None => {
                producer.poll(Duration::ZERO);
                continue;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(e)) => bail!("consuming: {e}"),
            Some(Ok(m)) => m,
        };
        let p = message.partition();
        let offset = message.offset();
        let (Some(&stop), Some(at)) = (end.get(&p), next.get_mut(&p)) else {
            continue;
        };
        if offset >= stop {
            continue; // Past the end captured at start: not ours to copy.
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(&args.destination);
        record.key = message.key();
        record.payload = message.payload();
        record.headers = message.headers().map(|h| h.detach());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    queue_full += 1;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("producing: {e}"),
            }
        }
        copied += 1;
        *at = offset + 1;
        if args.count.is_some() || *at >= stop {
            remaining -= 1;
        }
        if copied % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }

    producer
        .flush(Duration::from_secs(60))
        .context("flushing the producer")?;
    let deliveries = producer.context();
    let (ok, failed) = (deliveries.ok.load(Relaxed), deliveries.failed.load(Relaxed));
    if failed > 0 || ok != copied {
        bail!("{copied} records sent, {ok} delivered, {failed} failed");
    }
    let mut offsets = TopicPartitionList::new();
    for (&p, &o) in &next {
        offsets.add_partition_offset(&args.source, p, Offset::Offset(o))?;
    }
    consumer.commit(&offsets, CommitMode::Sync)?;
    consumer.unsubscribe();
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "raw_copy: copied {copied} records in {elapsed:.2}s ({:.0} records/s); {:.2}s in \
         consumer polls, {queue_full} full-queue waits",
        copied as f64 / elapsed,
        polling.as_secs_f64(),
    );
    Ok(())
}
