//! The running instance as the cut-off watch sees it ([`crate::cutoff::Probe`]): its consumer
//! and its producer, each asked for its topic's metadata.

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
