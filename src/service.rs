//! `run`: wires the consumer, the partition workers and the sink together, and stops them.
//!
//! # Stopping
//! On the shutdown future (SIGINT/SIGTERM in the binary), a fatal worker error, or `--until-end`
//! reaching the end: stop fetching, let every worker finish what it has in flight, commit the
//! stored offsets synchronously, flush the producer, leave the group. All of it within
//! `--shutdown-timeout`; past it, the unacknowledged records are counted and reported as
//! [`Error::ShutdownTimeout`] (uncommitted, so consumed again by the next owner, never lost).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{BaseProducer, Producer};
use tokio::sync::{mpsc, watch};

use crate::config::{ConfigError, Guarantee, MetricsAddr, RunConfig, Side};
use crate::consumer::{self, Context, GroupEvent};
use crate::error::Error;
use crate::http::{self, Health};
use crate::logging::{FatalErrors, QuietContext};
use crate::member::Member;
use crate::metrics::{self, Snapshot, Stats};
use crate::partition::{Shared, WorkerEvent};
use crate::sink::{Sink, TopicLimits};
use crate::transaction::{Transactions, TxnError};

/// `--until-end`: how long an empty assignment must last before this member counts as done.
const EMPTY_ASSIGNMENT_GRACE: Duration = Duration::from_secs(10);
/// How long start-up waits for each of [`Sink::prepare`]'s metadata requests.
const PRODUCER_PREPARE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub stats: Snapshot,
    pub elapsed: Duration,
}

/// Runs the transformer until `shutdown` resolves (or `--until-end` is reached).
///
/// Needs a multi-thread tokio runtime: rebalance callbacks block their own thread while the
/// partition tasks drain on the runtime's workers.
pub async fn run(config: RunConfig, shutdown: impl Future<Output = ()>) -> Result<Summary, Error> {
    config.validate()?;
    let started = Instant::now();
    let stats = Stats::new();
    let fatal = Arc::new(FatalErrors::default());
    let admin: AdminClient<QuietContext> = config
        .kafka
        .client_config(Side::Producer, &[])?
        .create_with_context(QuietContext::default())?;
    let admin = Arc::new(admin);
    let destination_partitions = wait_for_brokers(&admin, &config, &fatal).await?;
    let limits = TopicLimits {
        destination: topic_max_bytes(&admin, &config.destination).await,
        dlq: topic_max_bytes(&admin, &config.dlq_topic()).await,
    };
    let sink = Arc::new(Sink::new(
        &config,
        limits,
        destination_partitions,
        fatal.clone(),
    )?);
    {
        // Blocking, for a few milliseconds.
        let sink = sink.clone();
        let _ = tokio::task::spawn_blocking(move || sink.prepare(PRODUCER_PREPARE_TIMEOUT)).await;
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.hash_threads())
        .thread_name(|i| format!("ktransform-hash-{i}"))
        .build()
        .map_err(|e| Error::Fatal(format!("cannot start the hashing pool: {e}")))?;
    let transactions = match config.guarantee {
        Guarantee::AtLeastOnce => None,
        Guarantee::ExactlyOnce => {
            let t = Arc::new(Transactions::new(
                config.source.clone(),
                sink.clone(),
                stats.clone(),
                config.transaction_records,
            ));
            let init = t.clone();
            tokio::task::spawn_blocking(move || init.init())
                .await
                .map_err(|e| Error::Fatal(format!("transaction init task: {e}")))??;
            Some(t)
        }
    };
    let (worker_tx, mut worker_events) = mpsc::unbounded_channel();
    let (group_tx, mut group_events) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        sink: sink.clone(),
        stats: stats.clone(),
        pool: Arc::new(pool),
        events: worker_tx,
        batch_size: config.batch_size,
        max_in_flight: config.max_in_flight,
        parallel_min_bytes: config.parallel_min_bytes,
        until_end: config.until_end,
        transactions: transactions.clone(),
    });
    let context = Context::new(
        config.source.clone(),
        shared,
        group_tx.clone(),
        config.drain_timeout,
        fatal.clone(),
    );
    let mut consumer_config = config.consumer_config()?;
    let health = Arc::new(Health {
        stats: stats.clone(),
        stopping: AtomicBool::new(false),
    });
    let server = match config.metrics_addr {
        MetricsAddr::Off => None,
        MetricsAddr::At(addr) => {
            let listener = http::bind(addr).await.map_err(|e| ConfigError {
                flag: "--metrics-addr".into(),
                message: format!("cannot listen on {addr}: {e}"),
            })?;
            if consumer_config.get("statistics.interval.ms").is_none() {
                let ms = http::STATISTICS_INTERVAL.as_millis().to_string();
                consumer_config.set("statistics.interval.ms", ms);
            }
            let addr = listener.local_addr().unwrap_or(addr);
            tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
            Some(tokio::spawn(http::serve(listener, health.clone())))
        }
    };
    let consumer: Arc<StreamConsumer<Context>> =
        Arc::new(consumer_config.create_with_context(context)?);
    consumer.context().attach(&consumer);
    if let Some(t) = &transactions {
        t.attach(Arc::downgrade(&consumer) as Weak<dyn Member>);
    }
    consumer.subscribe(&[&config.source])?;
    let (stop_main_queue, stop_rx) = watch::channel(false);
    let main_queue = consumer::serve_main_queue(consumer.clone(), stop_rx, group_tx)?;
    let progress = tokio::spawn(metrics::progress(stats.clone(), config.progress_interval));
    let (txn_failed_tx, mut txn_failed) = mpsc::unbounded_channel();
    let committer = transactions.clone().map(|t| {
        tokio::spawn(commit_periodically(
            t,
            config.transaction_interval,
            txn_failed_tx,
        ))
    });
    tracing::info!(
        source = %config.source,
        destination = %config.destination,
        dlq = %config.dlq_topic(),
        group = %config.group,
        "started"
    );

    // Run until something says stop.
    tokio::pin!(shutdown);
    // `--until-end`: when the group last changed this member's assignment.
    let mut last_rebalance: Option<Instant> = None;
    let mut recheck = tokio::time::interval(Duration::from_secs(1));
    let outcome: Result<(), Error> = loop {
        tokio::select! {
            _ = recheck.tick(), if config.until_end => {}
            _ = &mut shutdown => {
                tracing::info!("shutdown requested; draining in-flight records");
                break Ok(());
            }
            Some(event) = worker_events.recv() => match event {
                WorkerEvent::ReachedEnd { .. } => {}
                WorkerEvent::Failed { partition, error } => break Err(Error::Worker { partition, error }),
            },
            Some(event) = group_events.recv() => match event {
                GroupEvent::Assigned(_) | GroupEvent::Revoked(_) => last_rebalance = Some(Instant::now()),
                GroupEvent::Fatal(reason) => break Err(Error::Fatal(reason)),
            },
            Some(error) = txn_failed.recv() => break Err(error.into()),
            message = fatal.wait() => break Err(Error::Fatal(message)),
        }
        if let (true, Some(rebalanced)) = (config.until_end, last_rebalance) {
            let (done, assigned) = consumer.context().all_at_end();
            // Under cooperative rebalancing a joining member's first assignment is often empty,
            // with its partitions following in a second round: an empty assignment only means
            // "nothing to do" once it has been stable for a while.
            let settled = !assigned.is_empty() || rebalanced.elapsed() >= EMPTY_ASSIGNMENT_GRACE;
            if done && settled {
                tracing::info!(partitions = ?assigned, "every assigned partition processed to its end offset");
                break Ok(());
            }
        }
    };

    // Stop: drain, commit, flush, leave the group, all before the deadline.
    let deadline = Instant::now() + config.shutdown_timeout;
    health.stopping.store(true, Ordering::Relaxed);
    consumer.context().close();
    if let Some(committer) = committer {
        committer.abort();
    }
    let drained = {
        let consumer = consumer.clone();
        tokio::task::spawn_blocking(move || consumer.context().drain_all(deadline))
            .await
            .map_err(|e| Error::Fatal(format!("drain task: {e}")))?
    };
    let clean =
        outcome.is_ok() && drained.abandoned == 0 && drained.exits.iter().all(|e| !e.failed);
    let committed: Result<(), Error> = match &transactions {
        None => {
            let consumer = consumer.clone();
            let topic = config.source.clone();
            let exits = drained.exits.clone();
            let committed = tokio::task::spawn_blocking(move || {
                consumer::commit(&consumer, &topic, &exits, deadline)
            })
            .await
            .map_err(|e| Error::Fatal(format!("commit task: {e}")))?;
            if committed {
                Ok(())
            } else {
                Err(Error::NotCommitted {
                    timeout: config.shutdown_timeout,
                })
            }
        }
        Some(t) if clean => t.commit().await.map_err(Error::from),
        // Committing after a failure could commit outputs whose offsets were not recorded.
        Some(t) => match t.abort().await {
            Err(TxnError::Abandoned) => Ok(()),
            other => other.map_err(Error::from),
        },
    };
    let _ = stop_main_queue.send(true);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let flushed = {
        let sink = sink.clone();
        tokio::task::spawn_blocking(move || sink.flush(remaining)).await
    };
    if let Ok(Err(error)) = flushed {
        tracing::warn!(%error, queued = sink.queued(), "producer flush incomplete");
    }
    // Leaving the group blocks (it serves a last revocation), so not on a runtime worker.
    tokio::task::spawn_blocking(move || {
        let _ = main_queue.join();
        drop(consumer);
    })
    .await
    .map_err(|e| Error::Fatal(format!("closing the consumer: {e}")))?;
    progress.abort();
    if let Some(server) = server {
        server.abort();
    }

    let summary = Summary {
        stats: stats.snapshot(),
        elapsed: started.elapsed(),
    };
    let s = summary.stats;
    tracing::info!(
        consumed = s.consumed,
        produced = s.produced,
        dead_lettered = s.dead_lettered,
        replayable = s.replayable,
        elapsed = ?summary.elapsed,
        "stopped"
    );
    outcome?;
    committed?;
    if drained.abandoned > 0 {
        return Err(Error::ShutdownTimeout {
            timeout: config.shutdown_timeout,
            uncommitted: drained.abandoned,
        });
    }
    Ok(summary)
}

/// Waits for a metadata answer, with backoff, up to `--connect-timeout`; warns about missing
/// topics (the source may be created later; the destination needs broker auto-creation).
/// Returns the destination's partition count, if it exists.
///
/// The metadata comes from a probe client whose errors are served here (the admin client's are
/// not), so that refused credentials stop the start at once, named, rather than looking like
/// an unreachable broker.
async fn wait_for_brokers(
    admin: &Arc<AdminClient<QuietContext>>,
    config: &RunConfig,
    fatal: &Arc<FatalErrors>,
) -> Result<Option<i32>, Error> {
    let probe: Arc<BaseProducer<QuietContext>> = Arc::new(
        config
            .kafka
            .client_config(Side::Producer, &[])?
            .create_with_context(QuietContext::raising(fatal.clone()))?,
    );
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = Duration::from_secs(5).min(config.connect_timeout);
        let metadata = {
            let probe = probe.clone();
            tokio::task::spawn_blocking(move || {
                let metadata = probe.client().fetch_metadata(None, attempt);
                probe.poll(Duration::ZERO);
                metadata.map(|m| {
                    let topics = m
                        .topics()
                        .iter()
                        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
                        .collect::<HashMap<_, _>>();
                    (topics, m.brokers().first().map(|b| b.id()))
                })
            })
            .await
            .map_err(|e| Error::Fatal(format!("metadata task: {e}")))?
        };
        if let Some(message) = fatal.get() {
            return Err(Error::Fatal(message));
        }
        match metadata {
            Ok((topics, broker)) => {
                let missing = !topics.contains_key(config.destination.as_str());
                if let (true, Some(id)) = (missing, broker) {
                    if !auto_creates_topics(admin, id).await {
                        // Every output would wait for the topic forever (at-least-once) or time out.
                        return Err(Error::Config(crate::config::ConfigError {
                            flag: "--destination".into(),
                            message: format!(
                                "topic {} does not exist and the brokers do not create topics \
                             (auto.create.topics.enable=false); create it first",
                                config.destination
                            ),
                        }));
                    }
                }
                for (flag, topic) in [
                    ("--source", &config.source),
                    ("--destination", &config.destination),
                ] {
                    if !topics.contains_key(topic.as_str()) {
                        tracing::warn!(topic = %topic, flag, "topic does not exist yet");
                    }
                }
                let partitions = topics.get(config.destination.as_str()).copied();
                return Ok(partitions.filter(|n| *n > 0));
            }
            Err(source) if started.elapsed() + backoff >= config.connect_timeout => {
                return Err(Error::Unreachable {
                    brokers: config.kafka.brokers.clone(),
                    waited: started.elapsed(),
                    source,
                });
            }
            Err(error) => {
                tracing::warn!(brokers = %config.kafka.brokers, %error, "waiting for the brokers");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Whether broker `id` creates topics on first use (`auto.create.topics.enable`); true when
/// it cannot tell, so that only a definite "no" stops the start.
async fn auto_creates_topics(admin: &AdminClient<QuietContext>, id: i32) -> bool {
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let Ok(results) = admin
        .describe_configs([&ResourceSpecifier::Broker(id)], &options)
        .await
    else {
        return true;
    };
    let value = results
        .into_iter()
        .next()
        .and_then(Result::ok)
        .and_then(|r| {
            r.get("auto.create.topics.enable")
                .and_then(|e| e.value.clone())
        });
    value.as_deref() != Some("false")
}

/// A topic's `max.message.bytes`, if it exists and says so. The producer is capped to the
/// destination's and the dead-letter topic's, so that a record too large for its topic is
/// refused locally (and dead-lettered, or sent without its value) rather than by the broker
/// after the input is gone.
async fn topic_max_bytes(admin: &AdminClient<QuietContext>, topic: &str) -> Option<usize> {
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .ok()?;
    let resource = results.into_iter().next()?.ok()?;
    let bytes = resource
        .get("max.message.bytes")?
        .value
        .as_deref()?
        .parse()
        .ok()?;
    tracing::debug!(topic, bytes, "max.message.bytes");
    Some(bytes)
}

/// Exactly-once: commits when the transaction has been open for `interval`, or sooner when it is
/// full. A failure is sent to the coordinator, which stops the process.
async fn commit_periodically(
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
