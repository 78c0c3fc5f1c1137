//! Start-up: the brokers waited for, the topics' limits read, the producer made ready, the
//! guarantee set up; and exactly-once's periodic commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::producer::{BaseProducer, Producer};

use crate::config::{ConfigError, Guarantee, RunConfig, Side, Timestamps};
use crate::error::Error;
use crate::logging::{FatalErrors, QuietContext};
use crate::metrics::Stats;
use crate::offsets::Offsets;
use crate::security::Watched;
use crate::sink::{Sink, TopicLimits};
use crate::transaction::Transactions;

/// How long start-up waits for each of [`Sink::prepare`]'s metadata requests.
const PRODUCER_PREPARE_TIMEOUT: Duration = Duration::from_secs(5);

/// The producer, capped to the destination's and dead-letter topic's size limits and ready to
/// send, once the brokers answer.
pub async fn sink(config: &RunConfig, fatal: &Arc<FatalErrors>) -> Result<Arc<Sink>, Error> {
    let admin: AdminClient<QuietContext> = config
        .kafka
        .client_config(Side::Producer, &[])?
        .create_with_context(QuietContext::default())?;
    let admin = Arc::new(admin);
    let destination_partitions = wait_for_brokers(&admin, config, fatal).await?;
    let limits = TopicLimits {
        destination: topic_max_bytes(&admin, &config.pipeline.destination).await,
        dlq: topic_max_bytes(&admin, &config.pipeline.dlq_topic()).await,
    };
    note_destination_timestamps(&admin, config).await;
    let sink = Arc::new(Sink::new(
        config,
        limits,
        destination_partitions,
        fatal.clone(),
    )?);
    // Blocking, for a few milliseconds.
    let prepared = sink.clone();
    tokio::task::spawn_blocking(move || prepared.prepare(PRODUCER_PREPARE_TIMEOUT))
        .await
        .map_err(|source| Error::Task {
            what: "producer preparation",
            source,
        })?;
    Ok(sink)
}

/// The source topic's partition count, from the producer's metadata (the brokers answered in
/// [`sink`]): `--memory-budget`'s prefetch half is divided by it. None when the topic does not
/// exist yet or the brokers do not say within the time: the prefetch limits are then their
/// ceilings, as before the budget, and a warning says so.
pub async fn source_partitions(config: &RunConfig, sink: &Arc<Sink>) -> Option<usize> {
    let (sink, topic) = (sink.clone(), config.pipeline.source.clone());
    let count = tokio::task::spawn_blocking(move || {
        // Every topic's: a producer's request for one topic would create it on brokers with
        // auto.create.topics.enable, and the source must not be created by its reader.
        let metadata = sink
            .producer()
            .client()
            .fetch_metadata(None, PRODUCER_PREPARE_TIMEOUT)
            .ok()?;
        let t = metadata.topics().iter().find(|t| t.name() == topic)?;
        (t.error().is_none() && !t.partitions().is_empty()).then_some(t.partitions().len())
    })
    .await
    .ok()
    .flatten();
    if count.is_none() {
        tracing::warn!(
            topic = %config.pipeline.source,
            "the source's partition count is unknown: the prefetch queues are not divided from --memory-budget"
        );
    }
    count
}

/// The guarantee: offsets stored by the consumer, or transactions (initialised here).
pub async fn offsets(
    config: &RunConfig,
    sink: &Arc<Sink>,
    stats: &Arc<Stats>,
) -> Result<Arc<Offsets>, Error> {
    let offsets = match config.pipeline.guarantee {
        Guarantee::AtLeastOnce => Offsets::stored()?,
        Guarantee::ExactlyOnce => {
            let t = Arc::new(Transactions::new(
                config.pipeline.source.clone(),
                sink.clone(),
                stats.clone(),
                config.transaction_records,
            )?);
            let init = t.clone();
            tokio::task::spawn_blocking(move || init.init())
                .await
                .map_err(|source| Error::Task {
                    what: "transaction init",
                    source,
                })??;
            Offsets::Transactional(t)
        }
    };
    Ok(Arc::new(offsets))
}

/// Waits for a metadata answer, with backoff, up to `--connect-timeout`; warns about missing
/// topics (the source may be created later; the destination needs broker auto-creation).
/// Returns the destination's partition count, if it exists.
///
/// The metadata comes from a probe client whose errors and log lines are read here (the admin
/// client's are not), so that refused credentials or certificates stop the start at once, named
/// with the property to fix ([`security`]), rather than looking like an unreachable broker.
async fn wait_for_brokers(
    admin: &Arc<AdminClient<QuietContext>>,
    config: &RunConfig,
    fatal: &Arc<FatalErrors>,
) -> Result<Option<i32>, Error> {
    let client_config = config.kafka.client_config(Side::Producer, &[])?;
    let probe: Arc<BaseProducer<Watched>> =
        Arc::new(client_config.create_with_context(Watched::logging_to(
            QuietContext::raising(fatal.clone()),
            client_config.config_map().into_iter().collect(),
        ))?);
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = Duration::from_secs(5).min(config.connect_timeout);
        let request = {
            let probe = probe.clone();
            tokio::task::spawn_blocking(move || {
                let metadata = probe.client().fetch_metadata(None, attempt);
                // One event per call: serve the errors queued meanwhile.
                for _ in 0..64 {
                    probe.poll(Duration::ZERO);
                }
                metadata.map(|m| {
                    let topics = m
                        .topics()
                        .iter()
                        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
                        .collect::<HashMap<_, _>>();
                    (topics, m.brokers().first().map(|b| b.id()))
                })
            })
        };
        // A refusal ends the wait at once; the request finishes on its own thread.
        let watch = probe.context().watch();
        let metadata = tokio::select! {
            metadata = request => metadata.map_err(|source| Error::Task {
                what: "metadata request",
                source,
            })?,
            _ = watch.wait() => return Err(refused(&probe).await),
        };
        if watch.get().is_some() {
            return Err(refused(&probe).await);
        }
        if let Some(message) = fatal.get() {
            return Err(Error::Fatal(message));
        }
        match metadata {
            Ok((topics, broker)) => {
                let missing = !topics.contains_key(config.pipeline.destination.as_str());
                if let (true, Some(id)) = (missing, broker) {
                    if !auto_creates_topics(admin, id).await {
                        // Every output would wait for the topic forever (at-least-once) or time out.
                        return Err(Error::Config(ConfigError {
                            flag: "--destination".into(),
                            message: format!(
                                "topic {} does not exist and the brokers do not create topics \
                             (auto.create.topics.enable=false); create it first",
                                config.pipeline.destination
                            ),
                        }));
                    }
                }
                for (flag, topic) in [
                    ("--source", &config.pipeline.source),
                    ("--destination", &config.pipeline.destination),
                ] {
                    if !topics.contains_key(topic.as_str()) {
                        tracing::warn!(topic = %topic, flag, "topic does not exist yet");
                    }
                }
                let partitions = topics.get(config.pipeline.destination.as_str()).copied();
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

/// The error for the refusal the probe saw, its cause diagnosed ([`Watched::refusal`]).
async fn refused(probe: &Arc<BaseProducer<Watched>>) -> Error {
    let probe = probe.clone();
    match tokio::task::spawn_blocking(move || probe.context().refusal()).await {
        Ok(Some(error)) => {
            tracing::error!("{error}");
            Error::Security(error)
        }
        Ok(None) => Error::Fatal("the brokers refused this client".into()),
        Err(source) => Error::Task {
            what: "TLS diagnosis",
            source,
        },
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
    let bytes = topic_config(admin, topic, "max.message.bytes")
        .await?
        .parse()
        .ok()?;
    tracing::debug!(topic, bytes, "max.message.bytes");
    Some(bytes)
}

/// One setting of a topic, if the topic exists and the brokers say.
async fn topic_config(admin: &AdminClient<QuietContext>, topic: &str, key: &str) -> Option<String> {
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .ok()?;
    let resource = results.into_iter().next()?.ok()?;
    resource.get(key)?.value.clone()
}

/// `--timestamp source` on a destination whose broker stamps every record with its append time
/// (`message.timestamp.type=LogAppendTime`): the input's timestamp cannot survive; say so.
async fn note_destination_timestamps(admin: &AdminClient<QuietContext>, config: &RunConfig) {
    if config.pipeline.timestamp != Timestamps::Source {
        return;
    }
    let topic = &config.pipeline.destination;
    if topic_config(admin, topic, "message.timestamp.type")
        .await
        .as_deref()
        == Some("LogAppendTime")
    {
        tracing::warn!(
            topic = %topic,
            "the destination has message.timestamp.type=LogAppendTime: the broker replaces each \
             output's timestamp (the input's, --timestamp source) with its append time"
        );
    }
}
