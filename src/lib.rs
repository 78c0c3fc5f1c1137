//! ktransform: consume JSON objects from Kafka, add `"hash"` (the md5 of each record's raw value
//! bytes), produce them to another topic with the same key and headers; at-least-once, order kept
//! per partition, bad records to a dead-letter topic.
//!
//! The contract is documented for users in the repository's `docs/`: what happens to a record
//! (`docs/records.md`), the delivery guarantees, failures and exit codes (`docs/delivery.md`),
//! configuration (`docs/configuration.md`) and operations (`docs/operations.md`). This page is
//! about the code.
//!
//! # Layout
//! The top-level modules import each other without a cycle (`tests/layers.rs` reads every
//! `crate::` path under `src/`, comments aside, and fails on a cycle; it also fails when a
//! module of `run` other than [`config`] sets a librdkafka property), bottom to top:
//!
//! 1. Ground, importing no other module: [`config`], [`transform`], [`fetch`], [`member`],
//!    [`cutoff`], [`metrics`], [`logging`], [`committer`], [`security`], [`memory`].
//! 2. The pipeline: [`ack`] → [`sink`] → [`dead_letter`] → [`transaction`] →
//!    [`offsets`] → [`partition`] → [`stall`] → [`consumer`].
//! 3. The commands: [`service`] (`run`), [`lag`], [`verify`], with [`error`] (what stops a
//!    run) and [`http`] beside them; [`cli`] on top.
//!
//! Modules:
//! - [`config`]: flags and env vars (clap), start-up checks; its submodules are the `--config`
//!   TOML file (`file`), the librdkafka pass-through and owned keys (`properties`), secret
//!   masking (`redact`), `run --print-config` (`print`), the consumer's and producer's
//!   librdkafka settings, each with its reason (`clients`), `--memory-budget` and the
//!   per-partition prefetch limits it sets (`budget`), the consumer group protocol with
//!   the properties it leaves to the brokers (`protocol`), and running as one of N replicas:
//!   the instance id for static membership and the transactional id, and the log format
//!   (`orchestrator`).
//! - [`cli`]: the command line, `run | lag | verify`, parsed with the file's fallbacks.
//! - [`service`]: [`run`]: start (`service/startup.rs`: brokers, topic limits, producer, the
//!   guarantee), run until something says stop, stop (`service/shutdown.rs`: drain, commit,
//!   flush, leave the group within the deadline).
//! - [`offsets`]: the delivery guarantee as one type, [`offsets::Offsets`]: what happens to a
//!   partition's offsets when a batch is sent and acknowledged, and when drained partitions are
//!   committed (stored and committed by the consumer, or in the transaction).
//! - [`committer`]: the one long-lived thread the blocking commit calls run on, with deadlines.
//! - [`consumer`]: the group member; its rebalance callbacks look the assigned partitions' start
//!   offsets up (`consumer/start.rs`), split each into its own queue and start a worker, and on
//!   revocation drain and commit before release; it re-splits a partition for the stall
//!   watchdog (`consumer/resplit.rs`). Serves the main queue on its own thread.
//! - [`memory`]: `--memory-budget` at run time: the fetch turns of the prefetch half (how many
//!   partitions fetch at once, whatever the partitions owned: `memory/turns.rs`, the
//!   bookkeeping; the worker pauses and resumes its partition, `partition/turn.rs`), and the
//!   in-flight half divided among the partitions reading, divided again on every rebalance
//!   (records in flight and per batch of each worker); librdkafka's per-partition queue limits
//!   are the config's (`config/budget.rs`).
//! - [`member`]: what workers, the transaction and the stall watchdog ask of the consumer
//!   (store an offset, read partitions' offsets and positions, the group's metadata), as a
//!   trait, so they sit below [`consumer`].
//! - [`fetch`]: a partition's own fetch queue, read a batch per call
//!   (`rd_kafka_consume_batch_queue`), its position, and its records, whose parsed headers can
//!   be moved out; which queue handle owns a partition's wake-up, and setting it again
//!   ([`fetch::Wakeups`]); a record batch that cannot be decoded ([`fetch::Undecodable`]);
//!   pausing and resuming the partition's fetch (`fetch/pause.rs`, [`fetch::Pauser`]).
//!   Generic over the consumer context.
//! - [`partition`]: the per-partition worker: batches from the split queue, transform, produce,
//!   hand acknowledged offsets to the guarantee (never backwards: records handed out again are
//!   dropped); `--until-end`'s end from the high watermark; stops on a batch that cannot be
//!   decoded. Its submodules: `send` (a batch's outputs hashed on the pool or inline and sent
//!   in offset order), `rewind` (exactly-once: back to the committed offset after an
//!   aborted transaction), `tracker` (sent batches settled oldest first, contiguous offsets,
//!   the end) and `state` (the partition's life shared with its owner: Consuming → Draining →
//!   Done | Abandoned, and the worker's progress), these two unit-tested without a broker.
//! - [`stall`]: the stall watchdog: which partitions are behind their end offset and read
//!   nothing (the decisions without I/O in `stall/judge.rs`, unit-tested without a broker in
//!   `stall/tests.rs`), and the heals in steps (re-arm the wake-up, re-split, `/livez` and
//!   `/healthz` failing); the consumer is its [`stall::Watched`]. Its `testing` hook makes a worker stop
//!   reading, for tests only.
//! - [`cutoff`]: one of the instance's clients cut off from the brokers while the other is
//!   answered (librdkafka#5301 leaves a client without brokers for good): each asked for
//!   metadata every `--stall-timeout`, and after four the run stops so that a restart brings
//!   new clients; the decisions without I/O, unit-tested. The service's two clients are its
//!   probe (`service/probe.rs`).
//! - [`transform`]: the pure function, bytes in, bytes or a typed [`transform::Rejection`] out;
//!   its validating JSON scanner is the submodule `transform/scan.rs`.
//! - [`sink`]: the idempotent producer, sending what it is handed: outputs straight through
//!   `rd_kafka_producev` (a topic handle, the input's headers handed over), other records to a
//!   named topic; batches capped below the destination's and dead-letter topic's size limits;
//!   the producer made ready before the first record; flushes with librdkafka's own flush
//!   (rust-rdkafka's polls in 100 ms steps). Record batch sizes, as the broker counts them
//!   against a topic's limit, are the submodule `sink/size.rs`.
//! - [`dead_letter`]: what goes to the dead-letter topic and in what form: the reasons as one
//!   enum, [`dead_letter::Reason`] (the `ktransform.error.kind` values and metrics labels), the
//!   headers a dead letter carries, the checks for an output too large for the destination or
//!   the producer, and a dead letter too large itself sent without its value.
//!   [`dead_letter::Router`] sends each record to the destination or the dead-letter topic
//!   through the sink.
//! - [`ack`]: delivery reports counted per batch (the producer's delivery callback).
//! - [`transaction`]: exactly-once: the open transaction, its gate, periodic and revocation
//!   commits (outputs and offsets together).
//! - [`metrics`]: counters as named events (run totals and the Prometheus registry; the stall
//!   watchdog's in `metrics/stall.rs`), and the periodic progress line.
//! - [`http`]: `/metrics`, `/livez` (no partition stalled unhealed; never the brokers),
//!   `/healthz` (that, and brokers seen), `/readyz`; the default address's fallback to a free
//!   port.
//! - [`logging`]: librdkafka's errors and log lines, rate-limited; the unrecoverable ones
//!   (credentials, ACLs, fatal, a consumer fenced for its instance id) raised to stop the run.
//!   The subscriber that writes them (text or JSON lines) is the binary's.
//! - [`security`]: why the brokers refuse this client (the broker's certificate, the client's
//!   certificate under mutual TLS, SASL credentials), read from librdkafka's messages and named
//!   with the property to fix; the broker certificate's fault found by a TLS handshake of its own
//!   (`security/handshake.rs`); `Watched`, the context that reads them for `run`'s start-up
//!   probe and the consumers of `lag` and `verify`.
//! - [`lag`]: `ktransform lag`, a group's lag, rates and keep-up verdict (reads offsets only);
//!   the group's members and protocol, either protocol, from its coordinator's description
//!   (`lag/group.rs`, librdkafka's DescribeConsumerGroups, which rust-rdkafka does not wrap);
//!   the replica count KEDA's Kafka scaler would compute from the same offsets and which to
//!   trust (`lag/keda.rs`, unit-tested in `lag/keda/tests.rs`); the report as text
//!   (`lag/text.rs`) and as `--json` (`lag/json.rs`); `--serve`, the live view: its state, the samples of the last minutes and
//!   what is wrong, without I/O (`lag/live.rs`, unit-tested in `lag/live/tests.rs`), and its
//!   HTTP server and sampling thread (`lag/serve.rs`) with the page compiled in
//!   (`lag/page.html`, `page.js`, `page.css`).
//! - [`verify`]: `ktransform verify`, audits source against destination and dead-letter topic
//!   (matched by content) for a guarantee; reads dead letters by [`dead_letter`]'s reasons and
//!   headers. The audit itself, without Kafka, is `verify/audit.rs`, its unit tests
//!   `verify/audit/tests.rs`, and the content fingerprints it compares `verify/audit/content.rs`.
//! - [`error`]: what stops a run, and its exit code.
//!
//! A record flows: split partition queue → [`partition::PartitionWorker`] batch →
//! [`transform::transform_into`] (on the rayon pool for large batches) →
//! [`dead_letter::Router`]: the output to the destination through [`sink::Sink`], or, for a
//! value the transform rejects or an output too large for the destination or the producer, the
//! input unchanged to the dead-letter topic with the reason in its headers (without its value
//! when too large even so) → acknowledgement → [`offsets::Offsets`]: at-least-once stores the
//! offset, committed by librdkafka's auto-commit of stored offsets and synchronously on
//! revocation and shutdown; exactly-once has sent it in the open transaction, committed with the
//! outputs every `--transaction-interval`, on revocation and at shutdown.

pub mod ack;
pub mod cli;
pub mod committer;
pub mod config;
pub mod consumer;
pub mod cutoff;
pub mod dead_letter;
pub mod error;
pub mod fetch;
pub mod http;
pub mod lag;
pub mod logging;
pub mod member;
pub mod memory;
pub mod metrics;
pub mod offsets;
pub mod partition;
pub mod security;
pub mod service;
pub mod sink;
pub mod stall;
pub mod transaction;
pub mod transform;
pub mod verify;

pub use config::RunConfig;
pub use error::Error;
pub use service::{run, Summary};
