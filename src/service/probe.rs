//! The running instance as the cut-off watch sees it ([`crate::cutoff::Probe`]): its consumer,
//! asked whether it owns partitions and whether it gets an answer from the brokers, and its
//! producer, asked whether the brokers answer another client.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::Producer;

use crate::config::RunConfig;
use crate::consumer::Context;
use crate::cutoff::Probe;
use crate::sink::Sink;

pub struct Clients {
    consumer: Weak<StreamConsumer<Context>>,
    sink: Arc<Sink>,
    source: String,
    destination: String,
}

impl Clients {
    pub fn new(
        consumer: &Arc<StreamConsumer<Context>>,
        sink: &Arc<Sink>,
        config: &RunConfig,
    ) -> Self {
        Clients {
            consumer: Arc::downgrade(consumer),
            sink: sink.clone(),
            source: config.pipeline.source.clone(),
            destination: config.pipeline.destination.clone(),
        }
    }
}

impl Probe for Clients {
    fn owns_partitions(&self) -> bool {
        // A consumer gone means a stop under way: nothing to judge.
        self.consumer
            .upgrade()
            .map_or(true, |c| !c.context().all_at_end().1.is_empty())
    }

    fn consumer_answers(&self, timeout: Duration) -> bool {
        self.consumer.upgrade().map_or(true, |c| {
            c.client()
                .fetch_metadata(Some(&self.source), timeout)
                .is_ok()
        })
    }

    fn producer_answers(&self, timeout: Duration) -> bool {
        self.sink
            .producer()
            .client()
            .fetch_metadata(Some(&self.destination), timeout)
            .is_ok()
    }
}
