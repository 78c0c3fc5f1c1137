//! `run`: starts the pipeline (`startup`), runs it until something says stop, and stops it
//! (`shutdown`).
//!
//! What stops a run: the shutdown future (SIGINT/SIGTERM in the binary), `--until-end` reaching
//! the end, a worker's fatal error, a failed transaction, a partition that was not split, or an
//! unrecoverable client error.

mod probe;
mod shutdown;
mod startup;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::budget::IN_FLIGHT_RECORD_BYTES;
use crate::config::{ConfigError, MetricsAddr, RunConfig, StallTimeout};
use crate::consumer::start::StartAt;
use crate::consumer::{self, Context, GroupEvent};
use crate::cutoff;
use crate::dead_letter::Router;
use crate::error::{Error, InstanceIdLoss};
use crate::http::{self, Health};
use crate::logging::FatalErrors;
use crate::member::Member;
use crate::memory::{InFlight, Turns};
use crate::metrics::{self, Snapshot, Stats};
use crate::offsets::Offsets;
use crate::partition::{Shared, WorkerEvent};
use crate::sink::Sink;
use crate::stall::{self, Watched};
use crate::transaction::TxnError;

/// `--until-end`: how long an empty assignment must last before this member counts as done.
const EMPTY_ASSIGNMENT_GRACE: Duration = Duration::from_secs(10);

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
    tokio::pin!(shutdown);
    let mut pipeline = tokio::select! {
        pipeline = Pipeline::start(&config) => pipeline?,
        // Nothing consumed yet: nothing to drain or commit.
        _ = &mut shutdown => {
            tracing::info!("shutdown requested during start-up");
            return Ok(Summary { stats: Snapshot::default(), elapsed: started.elapsed() });
        }
    };
    let outcome = pipeline.run_until_stopped(&config, &mut shutdown).await;
    shutdown::stop(pipeline, &config, outcome, started).await
}

/// A started instance: its clients, its tasks and threads, and what they report.
struct Pipeline {
    stats: Arc<Stats>,
    fatal: Arc<FatalErrors>,
    sink: Arc<Sink>,
    offsets: Arc<Offsets>,
    consumer: Arc<StreamConsumer<Context>>,
    health: Arc<Health>,
    server: Option<http::Server>,
    progress: JoinHandle<()>,
    /// Exactly-once: the periodic commits.
    committer: Option<JoinHandle<()>>,
    /// The stall watchdog, unless `--stall-timeout off`.
    watchdog: Option<JoinHandle<()>>,
    /// Whether a client is cut off from the brokers, unless `--stall-timeout off`.
    cutoff: Option<JoinHandle<cutoff::CutOff>>,
    /// The thread serving the consumer's main queue, and its stop signal.
    main_queue: std::thread::JoinHandle<()>,
    stop_main_queue: watch::Sender<bool>,
    worker_events: mpsc::UnboundedReceiver<WorkerEvent>,
    group_events: mpsc::UnboundedReceiver<GroupEvent>,
    txn_failed: mpsc::UnboundedReceiver<TxnError>,
}

impl Pipeline {
    async fn start(config: &RunConfig) -> Result<Self, Error> {
        let stats = Stats::new();
        // Listening first: a port that cannot be had stops the start at once, and `/livez`
        // answers (and `/readyz` says not ready) while the brokers are waited for.
        let health = Arc::new(Health {
            stats: stats.clone(),
            stopping: AtomicBool::new(false),
        });
        let server = match config.metrics_addr {
            Some(MetricsAddr::Off) => None,
            given => {
                let given = match given {
                    Some(MetricsAddr::At(addr)) => Some(addr),
                    _ => None,
                };
                let listener = http::bind(given).await.map_err(|(addr, e)| ConfigError {
                    flag: "--metrics-addr".into(),
                    message: format!("cannot listen on {addr}: {e}"),
                })?;
                if let Ok(addr) = listener.local_addr() {
                    tracing::info!(%addr, "serving /metrics, /livez, /healthz, /readyz");
                }
                Some(http::Server::spawn(listener, health.clone()))
            }
        };
        let fatal = Arc::new(FatalErrors::default());
        let sink = startup::sink(config, &fatal).await?;
        let offsets = startup::offsets(config, &sink, &stats).await?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.hash_threads())
            .thread_name(|i| format!("ktransform-hash-{i}"))
            .build()?;
        let partitions = startup::source_partitions(config, &sink).await;
        let budget = config.memory_budget;
        let in_flight = Arc::new(InFlight::new(
            budget.in_flight() as usize,
            IN_FLIGHT_RECORD_BYTES as usize,
            config.max_in_flight,
            config.batch_size,
        ));
        let turns = Arc::new(Turns::new(budget.fetch_turns(), budget.prefetch()));
        stats.fetch_turns(turns.limit());
        let (worker_tx, worker_events) = mpsc::unbounded_channel();
        let (group_tx, group_events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            router: Router::new(sink.clone(), config.pipeline.dlq_topic()),
            stats: stats.clone(),
            pool: Arc::new(pool),
            events: worker_tx,
            in_flight,
            turns,
            parallel_min_bytes: config.parallel_min_bytes,
            until_end: config.until_end,
            offsets: offsets.clone(),
        });
        // The consumer's `auto.offset.reset`: where unassigned partitions start, and what the
        // stall watchdog makes of a worker that has read nothing.
        let start_at = StartAt::from_property(config.consumer_config()?.get("auto.offset.reset"));
        let context = Context::new(
            config.pipeline.source.clone(),
            shared,
            group_tx.clone(),
            config.drain_timeout,
            start_at,
            fatal.clone(),
        );
        let consumer: Arc<StreamConsumer<Context>> = Arc::new(
            config
                .consumer_config_for(partitions)?
                .create_with_context(context)?,
        );
        consumer.context().attach(&consumer);
        offsets.attach(Arc::downgrade(&consumer) as Weak<dyn Member>);
        consumer.subscribe(&[&config.pipeline.source])?;
        let (stop_main_queue, stop_rx) = watch::channel(false);
        let main_queue = consumer::serve_main_queue(consumer.clone(), stop_rx, group_tx)?;
        let progress = tokio::spawn(metrics::progress(stats.clone(), config.progress_interval));
        let (txn_failed_tx, txn_failed) = mpsc::unbounded_channel();
        let committer = offsets.commit_periodically(config.transaction_interval, txn_failed_tx);
        let (watchdog, cutoff) = match config.stall_timeout {
            StallTimeout::Off => (None, None),
            StallTimeout::After(timeout) => {
                let settings = stall::Settings {
                    topic: config.pipeline.source.clone(),
                    timeout,
                    reset: match start_at {
                        StartAt::Earliest => stall::Reset::Earliest,
                        StartAt::Latest | StartAt::Other => stall::Reset::Other,
                    },
                };
                let watched = Arc::downgrade(&consumer) as Weak<dyn Watched>;
                let probe = probe::Clients::new(&consumer, &sink, config);
                (
                    Some(tokio::spawn(stall::watch(watched, stats.clone(), settings))),
                    Some(tokio::spawn(async move {
                        let settings = cutoff::Settings::from_stall_timeout(timeout);
                        cutoff::watch(Arc::new(probe), settings).await
                    })),
                )
            }
        };
        tracing::info!(
            source = %config.pipeline.source,
            destination = %config.pipeline.destination,
            dlq = %config.pipeline.dlq_topic(),
            group = %config.group,
            "started"
        );
        Ok(Pipeline {
            stats,
            fatal,
            sink,
            offsets,
            consumer,
            health,
            server,
            progress,
            committer,
            watchdog,
            cutoff,
            main_queue,
            stop_main_queue,
            worker_events,
            group_events,
            txn_failed,
        })
    }

    /// A raised client error as the run's error: a consumer fenced for its instance id says so.
    fn fatal_error(&self, config: &RunConfig, message: String) -> Error {
        use rdkafka::error::RDKafkaErrorCode::{FencedInstanceId, UnreleasedInstanceId};
        let loss = match self.consumer.client().fatal_error() {
            Some((FencedInstanceId, _)) => InstanceIdLoss::Fenced,
            Some((UnreleasedInstanceId, _)) => InstanceIdLoss::Refused,
            _ => return Error::Fatal(message),
        };
        Error::InstanceIdTaken {
            group: config.group.clone(),
            instance_id: config.instance_id().ok().flatten().unwrap_or_default(),
            loss,
            cause: message,
        }
    }

    /// Until `shutdown`, the end (`--until-end`) or an error that stops the run.
    async fn run_until_stopped(
        &mut self,
        config: &RunConfig,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        tokio::pin!(shutdown);
        // `--until-end`: when the group last changed this member's assignment.
        let mut last_rebalance: Option<Instant> = None;
        let mut recheck = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = recheck.tick(), if config.until_end => {}
                _ = &mut shutdown => {
                    tracing::info!("shutdown requested; draining in-flight records");
                    return Ok(());
                }
                Some(event) = self.worker_events.recv() => match event {
                    WorkerEvent::ReachedEnd { .. } => {}
                    WorkerEvent::Failed { partition, error } => return Err(Error::Worker { partition, error }),
                },
                Some(event) = self.group_events.recv() => match event {
                    GroupEvent::Assigned(_) | GroupEvent::Revoked(_) => last_rebalance = Some(Instant::now()),
                    GroupEvent::Failed(error) => return Err(error),
                },
                Some(error) = self.txn_failed.recv() => return Err(error.into()),
                Some(cut) = cut_off(&mut self.cutoff) => {
                    self.stats.error("", "cut_off");
                    return Err(Error::CutOff {
                        group: config.group.clone(),
                        client: cut.client,
                        lasted: cut.lasted,
                        checks: cut.checks,
                    });
                }
                message = self.fatal.wait() => return Err(self.fatal_error(config, message)),
            }
            if let (true, Some(rebalanced)) = (config.until_end, last_rebalance) {
                let (done, assigned) = self.consumer.context().all_at_end();
                // Under cooperative rebalancing a joining member's first assignment is often
                // empty, with its partitions following in a second round: an empty assignment
                // only means "nothing to do" once it has been stable for a while.
                let settled =
                    !assigned.is_empty() || rebalanced.elapsed() >= EMPTY_ASSIGNMENT_GRACE;
                if done && settled {
                    tracing::info!(partitions = ?assigned, "every assigned partition processed to its end offset");
                    return Ok(());
                }
            }
        }
    }
}

/// Resolves when the member is found cut off from its group; never without the watch.
async fn cut_off(watch: &mut Option<JoinHandle<cutoff::CutOff>>) -> Option<cutoff::CutOff> {
    match watch {
        Some(handle) => {
            let cut = handle.await.ok();
            // A finished task must not be polled again.
            *watch = None;
            cut
        }
        None => std::future::pending().await,
    }
}
