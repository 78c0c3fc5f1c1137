//! The stop sequence: stop fetching, let every worker finish what it has in flight, commit
//! (store-and-commit under at-least-once, the transaction under exactly-once), flush the
//! producer, leave the group (a static member, `--instance-id`, stays in it for its successor);
//! all of it within `--shutdown-timeout`. Past the deadline the
//! unacknowledged records are counted and reported as [`Error::ShutdownTimeout`]
//! (uncommitted, so consumed again by the next owner, never lost).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};

use super::{Pipeline, Summary};
use crate::config::RunConfig;
use crate::consumer::{Context, Drained};
use crate::error::Error;
use crate::member::Member;
use crate::metrics::Stats;
use crate::offsets::{CommitError, Offsets};

/// The least time closing the consumer gets, even when the shutdown deadline has passed: a
/// close with a reachable coordinator takes well under a second (a LeaveGroup round trip and
/// a last revocation with nothing left to drain).
const CLOSE_AT_LEAST: Duration = Duration::from_secs(10);

pub(super) async fn stop(
    pipeline: Pipeline,
    config: &RunConfig,
    outcome: Result<(), Error>,
    started: Instant,
) -> Result<Summary, Error> {
    let deadline = Instant::now() + config.shutdown_timeout;
    let Pipeline {
        stats,
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
        ..
    } = pipeline;
    health.stopping.store(true, Ordering::Relaxed);
    consumer.context().close();
    for task in [committer, watchdog].into_iter().flatten() {
        task.abort();
    }
    if let Some(task) = cutoff {
        task.abort();
    }
    let drained = {
        let consumer = consumer.clone();
        blocking("drain", move || consumer.context().drain_all(deadline)).await?
    };
    // After a failure, committing could commit outputs whose offsets were not recorded.
    let clean = outcome.is_ok() && drained.clean();
    let committed = commit(
        &offsets, &stats, &consumer, config, &drained, clean, deadline,
    )
    .await?;
    if !config.instance_id().is_ok_and(|id| id.is_some()) {
        leave_if_idle(&consumer);
    }
    let _ = stop_main_queue.send(true);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let flushing = sink.clone();
    if let Ok(Err(error)) = tokio::task::spawn_blocking(move || flushing.flush(remaining)).await {
        tracing::warn!(%error, queued = sink.queued(), "producer flush incomplete");
    }
    close(consumer, main_queue, deadline).await?;
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

/// Commits what the drained partitions acknowledged (or, after a failure, aborts the
/// transaction), as the run's result: `Err` only for the commit's own failure.
async fn commit(
    offsets: &Arc<Offsets>,
    stats: &Arc<Stats>,
    consumer: &Arc<StreamConsumer<Context>>,
    config: &RunConfig,
    drained: &Drained,
    clean: bool,
    deadline: Instant,
) -> Result<Result<(), Error>, Error> {
    let (offsets, stats) = (offsets.clone(), stats.clone());
    let member = consumer.clone() as Arc<dyn Member>;
    let topic = config.pipeline.source.clone();
    let next_offsets = drained.next_offsets();
    let committed = blocking("commit", move || {
        offsets.commit_drained(
            Some(&member),
            &stats,
            &topic,
            &next_offsets,
            clean,
            deadline,
        )
    })
    .await?;
    Ok(match committed {
        Ok(()) => Ok(()),
        Err(CommitError::NotCommitted) => Err(Error::NotCommitted {
            timeout: config.shutdown_timeout,
        }),
        Err(CommitError::Transaction(e)) => Err(e.into()),
    })
}

/// Makes a member that holds no partition leave the group now. librdkafka's close sends no
/// LeaveGroup for a cooperative member (classic protocol) with an empty assignment: there is
/// nothing to revoke, and the leave only follows a revocation. The group then keeps the member
/// until its session times out (45 s by default), and a rebalance meanwhile waits for it; the
/// members waiting in that rebalance cannot commit (the broker answers a connection's requests
/// in order, and their commits queue behind their pending JoinGroup), so one stopped then
/// misses its deadline and leaves everything since the rebalance began to be replayed.
/// Unsubscribing sends the LeaveGroup; a member that holds partitions leaves on close.
///
/// Not for a static member (`--instance-id`): it must not leave, so that its successor under
/// the same id takes its place without a rebalance, and an unsubscribe would send the
/// LeaveGroup that librdkafka's close leaves out for it (classic; under KIP-848 a static member
/// leaves with epoch -2, "back soon", either way).
fn leave_if_idle(consumer: &StreamConsumer<Context>) {
    if consumer.assignment().is_ok_and(|a| a.count() == 0) {
        tracing::debug!("no partition assigned; leaving the group before closing");
        consumer.unsubscribe();
    }
}

/// Closes the consumer: leaving the group blocks (it serves a last revocation), so not on a
/// runtime worker. It can block for good: the soak saw a consumer whose group coordinator
/// connection never came back after a broker outage wait in librdkafka's close indefinitely.
/// So it is bounded; past the bound the process stops without a clean leave (the group
/// notices at its session timeout), having committed what it drained.
async fn close(
    consumer: Arc<StreamConsumer<Context>>,
    main_queue: std::thread::JoinHandle<()>,
    deadline: Instant,
) -> Result<(), Error> {
    let closing = blocking("closing the consumer", move || {
        let _ = main_queue.join();
        drop(consumer);
    });
    let bound = deadline
        .saturating_duration_since(Instant::now())
        .max(CLOSE_AT_LEAST);
    match tokio::time::timeout(bound, closing).await {
        Ok(closed) => closed,
        Err(_) => {
            tracing::warn!(
                waited = ?bound,
                "the consumer did not close in time (its group coordinator unreachable?); \
                 stopping without leaving the group: it notices at its session timeout"
            );
            Ok(())
        }
    }
}

/// Runs `f` on tokio's blocking pool; a panic in it is reported as the task `what`.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Task { what, source })
}
