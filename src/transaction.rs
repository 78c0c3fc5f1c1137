//! Exactly-once: outputs, dead letters and consumed offsets committed in one Kafka transaction.
//!
//! # Contract (`--guarantee exactly-once`)
//! - One transactional producer per instance. Partition workers send inside the open transaction
//!   and record, per partition, the next offset after the last record they sent.
//! - A commit takes the gate exclusively, so no batch is half-sent, then sends those offsets to
//!   the transaction with the consumer's group metadata and commits. A `read_committed` reader of
//!   the destination therefore sees each source record's output exactly once: either the output
//!   and its offset are committed together, or neither is and the record is consumed again.
//! - Zombies are fenced by the group generation (KIP-447): offsets sent with a stale generation
//!   are refused, so the transactional id only has to be unique per live instance. Each instance
//!   takes `ktransform-<group>-<random>` unless `--transactional-id` gives a stable one; a stable
//!   id also aborts a crashed predecessor's open transaction at once instead of after
//!   `transaction.timeout.ms`.
//! - Commits happen every `--transaction-interval`, when `--transaction-records` records are in
//!   the open transaction, on revocation (before the partitions are released) and at shutdown.
//! - A commit the brokers refuse aborts the transaction, and the process goes on: the aborted
//!   outputs are invisible to `read_committed` readers, and every partition worker that sent
//!   into it rewinds its partition to the group's committed offset and sends those records
//!   again in the next transaction (see [`Transactions::aborts`]). That is what a rebalance
//!   does to a commit in flight: the offsets are refused because the group moved on
//!   (`ILLEGAL_GENERATION`, `REBALANCE_IN_PROGRESS`, `UNKNOWN_MEMBER_ID`, and under KIP-848
//!   `STALE_MEMBER_EPOCH`; librdkafka makes them all abortable), and the group metadata of the
//!   next commit is read afresh. Only a fatal error stops the process ([`TxnError::Fatal`]): a
//!   producer fenced by another live one with the same transactional id, or an abort that
//!   fails itself. An abort librdkafka has not finished within one call (its flush waits for a
//!   record queued again after its purge) is called again, which purges that record
//!   (`Transactions::abort_transaction`).
//! - Every commit and abort runs on its own thread under a watchdog ([`TXN_WATCHDOG`]).
//!   librdkafka's `send_offsets_to_transaction` can block past its timeout when the group
//!   coordinator's broker disappears (librdkafka issues #5456 and #5511, open in 2.12): rather
//!   than hang, the process then stops with [`TxnError::Stuck`], having committed nothing past
//!   the stuck transaction, which the broker aborts after `transaction.timeout.ms` (at once
//!   when the restart reuses a stable `--transactional-id`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch, Notify, RwLock, RwLockReadGuard};

use crate::committer::Committer;
use crate::member::Member;
use crate::metrics::Stats;
use crate::sink::Sink;

/// Timeout of one transactional call (librdkafka retries inside it).
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one call of librdkafka's abort may wait before it is made again (see
/// `Transactions::abort_transaction`).
const ABORT_ATTEMPT: Duration = Duration::from_secs(5);

/// How long a commit or abort may take before it counts as stuck in librdkafka: a commit makes
/// at most three calls of [`TXN_CALL_TIMEOUT`] (send the offsets, flush, commit) and, when
/// refused, an abort of at most one more, plus the wait for the gate.
pub const TXN_WATCHDOG: Duration = Duration::from_secs(4 * 30 + 15);

#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error("initialising transactions failed: {0}")]
    Init(KafkaError),
    #[error("the transactional producer failed fatally ({0}); the open transaction's outputs are discarded and a restart resumes from the committed offsets")]
    Fatal(KafkaError),
    #[error("an earlier transactional call failed fatally; nothing more can be committed")]
    Broken,
    #[error("the consumer is gone; cannot read its group metadata")]
    NoConsumer,
    #[error("a transaction call panicked")]
    Panicked,
    #[error("a transaction {0} did not return within {TXN_WATCHDOG:?} (librdkafka blocks when the group coordinator's broker disappears); stopping without committing it")]
    Stuck(&'static str),
}

/// The open transaction: who is sending into it and which offsets it will commit.
pub struct Transactions {
    topic: String,
    sink: Arc<Sink>,
    stats: Arc<Stats>,
    consumer: OnceLock<Weak<dyn Member>>,
    /// Held shared by a worker while it sends a batch, exclusively by a commit.
    gate: RwLock<()>,
    /// Next offset per partition, of records sent in the open transaction.
    positions: Mutex<HashMap<i32, i64>>,
    records: AtomicUsize,
    max_records: usize,
    /// Set once a transactional call failed fatally: every later commit fails, so the process
    /// stops.
    broken: AtomicBool,
    /// How many transactions were aborted: partition workers watch it to rewind.
    aborts: watch::Sender<u64>,
    /// Set once a commit or abort outlived [`TXN_WATCHDOG`]: its thread still holds the gate.
    stuck: AtomicBool,
    full: Notify,
    /// The thread every commit and abort runs on.
    committer: Committer,
}

impl Transactions {
    pub fn new(
        topic: String,
        sink: Arc<Sink>,
        stats: Arc<Stats>,
        max_records: usize,
    ) -> std::io::Result<Self> {
        Ok(Transactions {
            topic,
            sink,
            stats,
            consumer: OnceLock::new(),
            gate: RwLock::new(()),
            positions: Mutex::new(HashMap::new()),
            records: AtomicUsize::new(0),
            max_records,
            broken: AtomicBool::new(false),
            aborts: watch::Sender::new(0),
            stuck: AtomicBool::new(false),
            full: Notify::new(),
            committer: Committer::start()?,
        })
    }

    pub fn attach(&self, consumer: Weak<dyn Member>) {
        let _ = self.consumer.set(consumer);
    }

    /// Registers the producer's transactional id with the coordinator (fencing older producers
    /// with the same id) and opens the first transaction. Blocking.
    pub fn init(&self) -> Result<(), TxnError> {
        let producer = self.sink.producer();
        producer
            .init_transactions(TXN_CALL_TIMEOUT)
            .map_err(TxnError::Init)?;
        producer.begin_transaction().map_err(TxnError::Init)
    }

    /// Waits until no commit is running; hold the guard while sending a batch.
    pub async fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Records that `partition` sent everything before `next_offset` in the open transaction.
    /// Call while holding the guard of [`enter`](Self::enter).
    pub fn sent(&self, partition: i32, next_offset: i64, records: usize) {
        self.positions
            .lock()
            .unwrap()
            .insert(partition, next_offset);
        if self.records.fetch_add(records, Relaxed) + records >= self.max_records {
            self.full.notify_one();
        }
    }

    /// Resolves when the open transaction holds `--transaction-records` records.
    ///
    /// Every batch sent past the threshold notifies, and a notification with no waiter is kept,
    /// so a wake-up can be stale (its transaction already committed): check the count again.
    pub async fn filled(&self) {
        loop {
            let notified = self.full.notified();
            if self.records.load(Relaxed) >= self.max_records {
                return;
            }
            notified.await;
        }
    }

    /// Commits from async code, without occupying a runtime thread for longer than the watchdog.
    pub async fn commit(self: &Arc<Self>) -> Result<(), TxnError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.commit_blocking())
            .await
            .unwrap_or(Err(TxnError::Panicked))
    }

    /// Commits from a plain thread (the rebalance callback): not from inside a tokio runtime.
    pub fn commit_blocking(self: &Arc<Self>) -> Result<(), TxnError> {
        self.watched("commit", |this| this.commit_locked())
    }

    /// Aborts the open transaction (its outputs are never visible to read_committed readers) and
    /// opens the next; the workers rewind ([`Transactions::aborts`]). From a plain thread, like
    /// `commit_blocking`.
    pub fn abort_blocking(self: &Arc<Self>) -> Result<(), TxnError> {
        self.watched("abort", |this| this.abort_locked())
    }

    /// Async form of [`abort_blocking`](Self::abort_blocking), for the stop sequence.
    pub async fn abort(self: &Arc<Self>) -> Result<(), TxnError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.abort_blocking())
            .await
            .unwrap_or(Err(TxnError::Panicked))
    }

    /// Runs `call` with the gate held exclusively on the commit thread ([`Committer`]), so a
    /// cancelled caller can never release the gate while librdkafka is still committing, and
    /// waits for it at most [`TXN_WATCHDOG`]. Past that the call is left behind (it keeps the
    /// gate, so nothing more is sent into the transaction) and every later call fails at once.
    fn watched(
        self: &Arc<Self>,
        what: &'static str,
        call: fn(&Self) -> Result<(), TxnError>,
    ) -> Result<(), TxnError> {
        if self.stuck.load(Relaxed) {
            return Err(TxnError::Stuck(what));
        }
        let this = self.clone();
        let deadline = Instant::now() + TXN_WATCHDOG;
        let exclusive = move || {
            let _exclusive = this.gate.blocking_write();
            call(&this)
        };
        self.committer.run(deadline, exclusive).unwrap_or_else(|_| {
            self.stuck.store(true, Relaxed);
            self.broken.store(true, Relaxed);
            tracing::error!(
                call = what,
                watchdog = ?TXN_WATCHDOG,
                "transactional call stuck in librdkafka; stopping"
            );
            Err(TxnError::Stuck(what))
        })
    }

    fn abort_locked(&self) -> Result<(), TxnError> {
        if self.broken.load(Relaxed) {
            return Err(TxnError::Broken);
        }
        self.positions.lock().unwrap().clear();
        let records = self.records.swap(0, Relaxed);
        tracing::warn!(
            records,
            "aborting the open transaction; its partitions are rewound to their committed offsets"
        );
        self.abort_and_reopen()
    }

    /// Aborts the open transaction, opens the next and tells the workers (gate held by caller).
    /// An abort that fails is fatal: the producer's state is unknown.
    fn abort_and_reopen(&self) -> Result<(), TxnError> {
        self.stats.transaction_aborted();
        let producer = self.sink.producer();
        let reopened = self
            .abort_transaction()
            .and_then(|()| producer.begin_transaction());
        if let Err(error) = reopened {
            self.broken.store(true, Relaxed);
            return Err(TxnError::Fatal(error));
        }
        // Under the exclusive gate: no worker sends before it sees the new count.
        self.aborts.send_modify(|n| *n += 1);
        Ok(())
    }

    /// librdkafka's abort, called again while it says the call can be retried, for at most
    /// [`TXN_CALL_TIMEOUT`] in all.
    ///
    /// An abort purges the queued records, waits for those in flight, then ends the transaction.
    /// A record in flight whose request fails after the purge (a request refused for a skipped
    /// sequence number when one before it failed: librdkafka retries it after the epoch bump
    /// that the abort brings) is queued again and never sent before the abort ends, so the
    /// abort's own flush waits for it until the call times out. librdkafka then returns a
    /// retriable error ("the abort operation is in progress in the background and the
    /// application will need to call this API again to resume"), and the next call purges it.
    /// Each call waits at most [`ABORT_ATTEMPT`], so such a record costs seconds rather than
    /// the whole call timeout, and the process goes on instead of stopping.
    fn abort_transaction(&self) -> Result<(), KafkaError> {
        let producer = self.sink.producer();
        let deadline = Instant::now() + TXN_CALL_TIMEOUT;
        let mut attempt = 1;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match producer.abort_transaction(ABORT_ATTEMPT.min(left)) {
                Err(error) if is_retriable(&error) && Instant::now() < deadline => {
                    self.stats.transaction_abort_retried();
                    tracing::warn!(%error, attempt, "transaction abort not finished yet; calling it again");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// How many transactions were aborted so far; changes after each abort. A worker that sent
    /// into the open transaction rewinds when it changes: what it sent is discarded.
    pub fn aborts(&self) -> watch::Receiver<u64> {
        self.aborts.subscribe()
    }

    /// Commits the open transaction with its offsets and opens the next. Gate held by caller.
    fn commit_locked(&self) -> Result<(), TxnError> {
        if self.broken.load(Relaxed) {
            return Err(TxnError::Broken);
        }
        let positions: Vec<(i32, i64)> = {
            let mut positions = self.positions.lock().unwrap();
            let out = positions.iter().map(|(p, o)| (*p, *o)).collect();
            positions.clear();
            out
        };
        let records = self.records.swap(0, Relaxed);
        if positions.is_empty() {
            return Ok(());
        }
        let consumer = self
            .consumer
            .get()
            .and_then(Weak::upgrade)
            .ok_or(TxnError::NoConsumer)?;
        let metadata = consumer.group_metadata().ok_or(TxnError::NoConsumer)?;
        let mut tpl = TopicPartitionList::new();
        for (p, next) in &positions {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*next))
                .expect("a valid offset");
        }
        let producer = self.sink.producer();
        // How long each step holds the gate: the debug line below says (what a commit costs is in
        // bench/results/2026-12-07-eos-levers.md).
        let started = Instant::now();
        let result = producer.send_offsets_to_transaction(&tpl, &metadata, TXN_CALL_TIMEOUT);
        let offsets = started.elapsed();
        // Flush first with our own flush: rust-rdkafka's commit_transaction flushes in 100 ms
        // polling steps (see `Sink::flush`), and then finds nothing left to wait for.
        let result = result.and_then(|()| self.sink.flush(TXN_CALL_TIMEOUT));
        let flush = started.elapsed() - offsets;
        let result = result.and_then(|()| producer.commit_transaction(TXN_CALL_TIMEOUT));
        if let Err(error) = result {
            if is_fatal(&error) {
                self.broken.store(true, Relaxed);
                self.stats.transaction_aborted();
                tracing::error!(%error, records, "transaction commit failed fatally");
                return Err(TxnError::Fatal(error));
            }
            // Mostly a rebalance: the group moved on while the offsets were on their way.
            tracing::warn!(%error, records, "transaction commit refused; aborting it, its partitions are rewound to their committed offsets");
            return self.abort_and_reopen();
        }
        tracing::debug!(
            ?positions,
            records,
            ?offsets,
            ?flush,
            end = ?(started.elapsed() - offsets - flush),
            "transaction committed"
        );
        self.stats.transaction_committed(records);
        producer.begin_transaction().map_err(TxnError::Fatal)
    }
}

/// Whether a transactional call can be made again to resume it (librdkafka's retriable errors).
fn is_retriable(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Transaction(e) if e.is_retriable())
}

/// Whether a transactional call's error leaves the producer unusable: fenced by another producer
/// with the same transactional id, or librdkafka's other fatal errors. Every other error only
/// requires an abort.
fn is_fatal(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => e.is_fatal(),
        _ => matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Fatal | RDKafkaErrorCode::ProducerFenced)
        ),
    }
}

/// Exactly-once: commits when the transaction has been open for `interval`, or sooner when it is
/// full. A failure is sent to the coordinator, which stops the process.
pub async fn commit_periodically(
    t: Arc<Transactions>,
    interval: Duration,
    failed: mpsc::UnboundedSender<TxnError>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = t.filled() => {}
        }
        if let Err(e) = t.commit().await {
            let _ = failed.send(e);
            return;
        }
        // The next transaction opened just now: its interval starts here, so that a full
        // transaction's commit is not followed at once by a nearly empty one.
        ticker.reset();
    }
}

#[cfg(test)]
mod tests {
    //! Against rdkafka's mock cluster: the abort's flush held up by a record in flight.

    use rdkafka::mocking::{MockCluster, MockCoordinator};
    use rdkafka::types::RDKafkaRespErr;

    use super::*;
    use crate::ack::Acks;
    use crate::logging::FatalErrors;
    use crate::sink::TopicLimits;

    /// A record whose produce request fails with a retriable error while an abort waits for it
    /// is queued again, and librdkafka sends nothing during an abort: the abort's flush cannot
    /// end. One call times out with a retriable error; the next purges the record and ends the
    /// transaction. Before, that first timeout (after 30 s) stopped the process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abort_held_up_by_a_record_queued_again_is_called_again_and_ends() {
        let mock = MockCluster::new(2).expect("mock cluster");
        mock.create_topic("out", 1, 1).expect("topic");
        mock.coordinator(MockCoordinator::Transaction("abort-test".into()), 1)
            .expect("coordinator");
        mock.partition_leader("out", 0, Some(2)).expect("leader");
        let config = crate::RunConfig::from_args([
            "--brokers",
            &mock.bootstrap_servers(),
            "--source",
            "in",
            "--destination",
            "out",
            "--guarantee",
            "exactly-once",
            "--transactional-id",
            "abort-test",
        ])
        .expect("flags");
        let fatal = Arc::new(FatalErrors::default());
        let sink = Sink::new(&config, TopicLimits::default(), Some(1), fatal).expect("sink");
        let sink = Arc::new(sink);
        let stats = Stats::new();
        let t =
            Arc::new(Transactions::new("in".into(), sink.clone(), stats.clone(), 1000).unwrap());
        let init = t.clone();
        tokio::task::spawn_blocking(move || init.init())
            .await
            .unwrap()
            .expect("transactions initialised");

        // A first record connects the producer to the partition's leader and registers the
        // partition in the transaction.
        let acks = Acks::open();
        sink.send("out", Some(b"k"), Some(b"{}"), 0, None, &acks)
            .await
            .expect("queued");
        sink.flush(Duration::from_secs(10)).expect("delivered");
        // Then the leader answers the next produce request after 5 s, with a retriable error.
        mock.broker_round_trip_time(2, Duration::from_secs(5))
            .expect("rtt");
        mock.request_errors(
            rdkafka::types::RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS],
        );
        let acks = Acks::open();
        sink.send("out", Some(b"k"), Some(b"{}"), 0, None, &acks)
            .await
            .expect("queued");
        // Sent, not yet answered.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(sink.queued(), 1, "the record is in flight");

        t.abort().await.expect("the abort ends");
        assert!(
            stats.snapshot().transaction_abort_retries >= 1,
            "the first call could not end the abort: {:?}",
            stats.snapshot()
        );
        assert_eq!(sink.queued(), 0, "the record was purged");
        assert_eq!(stats.snapshot().transactions_aborted, 1);
    }
}
