//! `deploy/grafana/ktransform.json`, the Grafana dashboard over ktransform's metrics: every
//! metric it queries is one a running instance serves on `/metrics`, under the name and type
//! the query expects (a counter's `_total`, a histogram's `_bucket`, `_sum`, `_count`), and
//! every label it groups by is one that metric has. Real broker, two instances in-process (a
//! family is on `/metrics` once it has a series: they make each happen).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use common::data::Mix;
use common::http::{args_with_http, free_addr, get};
use common::{poll_until, prepare, run_in_process, stop, CAP};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/grafana/ktransform.json"
);

/// Labels Prometheus adds to every series it scrapes, or that a query makes itself.
const SCRAPE_LABELS: &[&str] = &["instance", "job", "le"];

/// Every PromQL query of the dashboard: panel targets and template variables.
fn queries(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "query" | "definition", Value::String(q)) => out.push(q.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// The `ktransform_…` series names in a query.
fn metrics_in(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find("ktransform_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The labels a query groups by (`by (topic, partition)`).
fn grouped_by(query: &str) -> BTreeSet<String> {
    query
        .split("by (")
        .skip(1)
        .filter_map(|s| s.split(')').next())
        .flat_map(|labels| labels.split(',').map(|l| l.trim().to_string()))
        .filter(|l| !l.is_empty())
        .collect()
}

/// The metric family a series name belongs to, and the type that name requires.
fn family(series: &str) -> (&str, &'static str) {
    for (suffix, kind) in [
        ("_total", "counter"),
        ("_bucket", "histogram"),
        ("_sum", "histogram"),
        ("_count", "histogram"),
    ] {
        if let Some(base) = series.strip_suffix(suffix) {
            return (base, kind);
        }
    }
    (series, "gauge")
}

/// From a Prometheus text body: each family's type, and the label names of each series name.
fn scrape(body: &str) -> (BTreeMap<String, String>, BTreeMap<String, BTreeSet<String>>) {
    let mut types = BTreeMap::new();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                types.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let names = line
                .split_once('{')
                .and_then(|(_, l)| l.split_once('}'))
                .map(|(l, _)| l.split(',').filter_map(|kv| kv.split_once('=')))
                .into_iter()
                .flatten()
                .map(|(k, _)| k.trim().to_string());
            labels.entry(name).or_default().extend(names);
        }
    }
    (types, labels)
}

#[test]
fn the_dashboard_is_grafana_json_with_a_query_per_panel() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).expect("JSON");
    assert_eq!(dashboard["uid"], "ktransform");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "duplicate id");
        assert!(panel["gridPos"]["w"].as_u64().unwrap() <= 24);
        if panel["type"] != "row" {
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{} has no query", panel["title"]);
            for t in targets {
                assert!(!metrics_in(t["expr"].as_str().unwrap()).is_empty());
            }
        }
    }
}

/// Scrapes `/metrics` on `addr` until every one of `needles` is in it; the last body.
async fn scrape_until(addr: std::net::SocketAddr, needles: &[&str]) -> String {
    let scraped = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    poll_until(&format!("{needles:?} on /metrics"), CAP, || {
        let scraped = scraped.clone();
        async move {
            let Some((200, body)) = get(addr, "/metrics").await else {
                return false;
            };
            let ready = needles.iter().all(|n| body.contains(n));
            *scraped.lock().unwrap() = body;
            ready
        }
    })
    .await;
    let body = scraped.lock().unwrap().clone();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_served() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).expect("JSON");
    let queries = queries(&dashboard);
    // A family appears on /metrics with its first series, so the runs make every one happen:
    // at-least-once with poison (dead letters) and a partition that stops reading (the stall
    // watchdog's gauge, heals, checks and error, and the commit of its re-split); exactly-once
    // beside it for the transactions.
    let (plain, eos) = tokio::join!(
        prepare("grafana", 2, 2_000, Mix::Poisoned),
        prepare("grafana-eos", 1, 500, Mix::Clean)
    );
    let deaf = ktransform::stall::testing::deafen(&plain.names.source, 0);
    let (plain_addr, eos_addr) = (free_addr(), free_addr());
    let stall = ["--stall-timeout", "2s", "--batch-size", "100"];
    let plain_run = run_in_process(&args_with_http(&plain.names, plain_addr, &stall));
    let eos_run = run_in_process(&args_with_http(
        &eos.names,
        eos_addr,
        &["--guarantee", "exactly-once"],
    ));
    let stalled = "ktransform_stall_heals_total{topic=";
    let plain_body = scrape_until(
        plain_addr,
        &[
            "ktransform_consumer_lag_records{",
            "ktransform_records_dead_lettered_total{",
            "ktransform_errors_total{",
            "ktransform_commits_total{",
            "ktransform_partition_stalled{",
            "ktransform_stall_checks_total{",
            stalled,
        ],
    )
    .await;
    let eos_body = scrape_until(eos_addr, &["ktransform_transactions_total{"]).await;
    drop(deaf);
    poll_until("the stalled partition healed", CAP, || async move {
        let Some((_, body)) = get(plain_addr, "/metrics").await else {
            return false;
        };
        body.lines()
            .filter(|l| l.starts_with("ktransform_partition_stalled{"))
            .all(|l| l.ends_with(" 0"))
    })
    .await;
    stop(plain_run).await.expect("run stops cleanly");
    stop(eos_run).await.expect("exactly-once run stops cleanly");
    let body = format!("{plain_body}\n{eos_body}");
    let (types, labels) = scrape(&body);

    let mut problems = Vec::new();
    let mut checked = BTreeSet::new();
    for query in &queries {
        for series in metrics_in(query) {
            let (base, kind) = family(&series);
            match types.get(base) {
                None => problems.push(format!(
                    "{series}: no `# TYPE {base}` on /metrics ({query})"
                )),
                Some(t) if t != kind => problems.push(format!(
                    "{series}: /metrics has {base} as a {t}, the query reads it as a {kind}"
                )),
                Some(_) => {}
            }
            if let Some(has) = labels.get(&series) {
                for label in grouped_by(query) {
                    if !has.contains(&label) && !SCRAPE_LABELS.contains(&label.as_str()) {
                        problems.push(format!("{series} has no label `{label}` ({query})"));
                    }
                }
            }
            checked.insert(series);
        }
    }
    println!("checked {} series names: {checked:?}", checked.len());
    assert!(problems.is_empty(), "{problems:#?}\n/metrics:\n{body}");
    // The families the dashboard is about, each queried.
    for family in [
        "ktransform_records_consumed_total",
        "ktransform_records_produced_total",
        "ktransform_consumer_lag_records",
        "ktransform_records_in_flight",
        "ktransform_batch_duration_seconds_bucket",
        "ktransform_rebalances_total",
        "ktransform_commits_total",
        "ktransform_partition_stalled",
    ] {
        assert!(
            checked.contains(family),
            "the dashboard does not query {family}"
        );
    }
}
