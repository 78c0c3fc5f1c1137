//! `ktransform run --print-config`: the configuration a run would use, as TOML, secrets masked.
//!
//! The settings part uses the config file's keys, so it is itself a valid `--config` file; the
//! `[rdkafka.consumer]` and `[rdkafka.producer]` tables list every property the clients get,
//! ktransform's defaults and owned properties included.

use toml::{Table, Value};

use crate::config::file::RDKAFKA;
use crate::config::{budget, redact};
use crate::config::{ConfigError, MetricsAddr, RunConfig, StallTimeout};

/// `ktransform run --print-config`: the settings (keys as in the file) and every property of both
/// clients, as TOML, secrets masked. Checks the configuration first, as `run` would.
pub fn render(config: &RunConfig) -> Result<String, ConfigError> {
    config.validate()?;
    let duration =
        |d: std::time::Duration| Value::String(humantime::format_duration(d).to_string());
    let string = |s: &str| Value::String(s.to_string());
    let int = |n: usize| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    let c = config;
    let guarantee = clap::ValueEnum::to_possible_value(&c.pipeline.guarantee)
        .map_or_else(String::new, |v| v.get_name().to_string());
    let timestamp = clap::ValueEnum::to_possible_value(&c.pipeline.timestamp)
        .map_or_else(String::new, |v| v.get_name().to_string());
    let mut t = Table::new();
    t.insert("brokers".into(), string(&c.kafka.brokers));
    t.insert("source".into(), string(&c.pipeline.source));
    t.insert("destination".into(), string(&c.pipeline.destination));
    t.insert("group".into(), string(&c.group));
    t.insert("group_protocol".into(), string(c.group_protocol.as_str()));
    t.insert("dlq".into(), string(&c.pipeline.dlq_topic()));
    t.insert("guarantee".into(), string(&guarantee));
    t.insert("timestamp".into(), string(&timestamp));
    t.insert(
        "transaction_interval".into(),
        duration(c.transaction_interval),
    );
    t.insert("transaction_records".into(), int(c.transaction_records));
    if let Some(id) = &c.orchestrator.instance_id {
        t.insert("instance_id".into(), string(id));
    }
    t.insert(
        "log_format".into(),
        string(c.orchestrator.log_format.as_str()),
    );
    if let Some(id) = &c.transactional_id {
        t.insert("transactional_id".into(), string(id));
    }
    t.insert("shutdown_timeout".into(), duration(c.shutdown_timeout));
    t.insert("drain_timeout".into(), duration(c.drain_timeout));
    t.insert("connect_timeout".into(), duration(c.connect_timeout));
    t.insert("until_end".into(), Value::Boolean(c.until_end));
    t.insert("batch_size".into(), int(c.batch_size));
    t.insert("max_in_flight".into(), int(c.max_in_flight));
    t.insert(
        "memory_budget".into(),
        string(&budget::show(c.memory_budget.bytes())),
    );
    t.insert("hash_threads".into(), int(c.hash_threads()));
    t.insert("parallel_min_bytes".into(), int(c.parallel_min_bytes));
    // Not given: left out, so that the printed file, used as one, keeps the fallback to a free
    // port that the default has (a given address must be bound).
    match c.metrics_addr {
        Some(MetricsAddr::Off) => _ = t.insert("metrics_addr".into(), string("none")),
        Some(MetricsAddr::At(addr)) => {
            _ = t.insert("metrics_addr".into(), string(&addr.to_string()))
        }
        None => {}
    }
    t.insert("progress_interval".into(), duration(c.progress_interval));
    let stall_timeout = match c.stall_timeout {
        StallTimeout::Off => string("off"),
        StallTimeout::After(d) => duration(d),
    };
    t.insert("stall_timeout".into(), stall_timeout);
    let properties = |config: rdkafka::ClientConfig| {
        let shown = redact::client_config(&config).into_iter();
        Value::Table(shown.map(|(k, v)| (k, Value::String(v))).collect())
    };
    let mut clients = Table::new();
    clients.insert("consumer".into(), properties(c.consumer_config()?));
    clients.insert("producer".into(), properties(c.producer_config()?));
    t.insert(RDKAFKA.into(), Value::Table(clients));
    let body = toml::to_string(&t).map_err(|e| ConfigError {
        flag: "--print-config".into(),
        message: e.to_string(),
    })?;
    Ok(format!(
        "# ktransform run: effective configuration (flag > env > file > default); secrets are \"{}\".\n\
         # [rdkafka.*] list every property the clients get, including those ktransform owns,\n\
         # which a --config file may not set; batch.size is lowered at start if the destination's\n\
         # or the dead-letter topic's max.message.bytes is smaller.\n{body}",
        redact::MASK
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[rdkafka.*]` tables are the properties the clients are created with, also those
    /// that depend on other settings (statistics for `/metrics`, exactly-once's).
    #[test]
    fn the_client_tables_are_what_the_clients_get() {
        // A stable transactional id: without one, each call draws a new random one.
        let exactly_once = [
            "--guarantee",
            "exactly-once",
            "--transactional-id",
            "t-1",
            "--metrics-addr",
            "none",
        ];
        for flags in [&[][..], &exactly_once] {
            let c = RunConfig::from_args(flags.iter().copied()).unwrap();
            let table: Table = render(&c).unwrap().parse().unwrap();
            let shown = |side: &str| -> Vec<(String, String)> {
                table[RDKAFKA][side]
                    .as_table()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect()
            };
            let given = |config: rdkafka::ClientConfig| -> Vec<(String, String)> {
                redact::client_config(&config).into_iter().collect()
            };
            assert_eq!(shown("consumer"), given(c.consumer_config().unwrap()));
            assert_eq!(
                shown("producer"),
                given(c.producer_config_capped(None).unwrap())
            );
            let statistics = shown("consumer")
                .into_iter()
                .any(|(k, _)| k == "statistics.interval.ms");
            assert_eq!(
                statistics,
                flags.is_empty(),
                "statistics only with /metrics"
            );
        }
    }
}
