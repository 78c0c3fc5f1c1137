//! `ktransform lag --serve`, the live view, in a real browser (headless Chromium): what a person
//! sees of a working group (the verdict, a row per partition, charts holding points), of a topic
//! and a group that do not exist, of a group not run by ktransform, and of brokers that go away
//! and come back (a broker of this test's own, never the shared one).
//!
//! Under `CI=true` a missing Chromium fails the tests; elsewhere they check `/lag.json` and say
//! why they skip the browser. `KTRANSFORM_SCREENSHOT=docs/img/live-view.png` also writes the
//! picture of the working group that the docs show.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use common::browser::{self, element, text};
use common::data::{self, Mix};
use common::group::commit_at_on;
use common::http::{free_addr, get};
use common::nodes::Brokers;
use common::{
    brokers, create_topic_on, poll_until, produce_on, run_in_process, stop, Binary, IdleMember,
    Names, CAP, KEYS, THROTTLE,
};

/// How long the page's scripts run before its DOM is read: the page reads `/lag.json` at once.
const BUDGET: Duration = Duration::from_secs(3);

/// `ktransform lag --serve` on a free port, killed when dropped.
struct View {
    addr: SocketAddr,
    binary: std::sync::Mutex<Binary>,
}

impl View {
    fn start(bootstrap: &str, group: &str, topic: &str, extra: &[&str]) -> Self {
        let addr = free_addr();
        let serve = addr.to_string();
        let mut args = vec![
            "lag",
            "--brokers",
            bootstrap,
            "--group",
            group,
            "--topic",
            topic,
            "--serve",
            &serve,
            "--interval",
            "1s",
        ];
        args.extend(extra);
        View {
            addr,
            binary: std::sync::Mutex::new(Binary::spawn(&args)),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    async fn json(&self) -> Option<Value> {
        let (status, body) = get(self.addr, "/lag.json").await?;
        assert_eq!(status, 200, "/lag.json: {body}");
        Some(serde_json::from_str(&body).expect("/lag.json is JSON"))
    }

    /// Polls `/lag.json` until `check` holds; its last answer.
    async fn until(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let last = Arc::new(std::sync::Mutex::new(Value::Null));
        poll_until(what, CAP, || {
            let last = last.clone();
            let check = &check;
            async move {
                {
                    let mut binary = self.binary.lock().unwrap();
                    assert!(
                        !binary.exited(),
                        "lag --serve exited: {}",
                        binary.stderr_so_far()
                    );
                }
                let Some(v) = self.json().await else {
                    return false;
                };
                let ok = check(&v);
                *last.lock().unwrap() = v;
                ok
            }
        })
        .await;
        let v = last.lock().unwrap().clone();
        v
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.binary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kill_quietly();
    }
}

/// The page's DOM as the browser has it, if there is a browser.
async fn dom(chromium: &Option<PathBuf>, url: String) -> Option<String> {
    let chromium = chromium.clone()?;
    Some(
        tokio::task::spawn_blocking(move || browser::dom(&chromium, &url, BUDGET))
            .await
            .unwrap(),
    )
}

fn banner(dom: &str) -> Option<String> {
    let banner = element(dom, "banner", "</div>");
    let tag = &banner[..banner.find('>').unwrap()];
    (!tag.contains(" hidden")).then(|| text(banner).trim().to_string())
}

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("")
}

/// Produces at `rate` records/s until stopped (the task ends within 5 s of the stop).
fn producing(
    bootstrap: &str,
    topic: &str,
    rate: f64,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (stopping, bootstrap, topic) = (stop.clone(), bootstrap.to_string(), topic.to_string());
    let task = tokio::spawn(async move {
        while !stopping.load(Relaxed) {
            let records = data::generate(5 * rate as usize, KEYS, Mix::Clean, data::seed());
            produce_on(&bootstrap, &topic, &records, Some(rate)).await;
        }
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_group_in_the_browser() {
    let chromium = browser::chromium();
    let partitions = 3;
    let names = Names::new("live-view");
    names.create(partitions).await;
    let (producer_stop, producer) = producing(&brokers(), &names.source, 500.0);
    let running = run_in_process(&names.args(THROTTLE));
    let view = View::start(
        &brokers(),
        &names.group,
        &names.source,
        &["--lag-threshold", "1000"],
    );
    let v = view
        .until("5 samples of a group holding every partition", |v| {
            let held: usize = v["members"].as_array().map_or(0, |m| {
                m.iter()
                    .map(|m| m["partitions"].as_array().unwrap().len())
                    .sum()
            });
            status(v) == "ok"
                && v["history"].as_array().unwrap().len() >= 5
                && held == partitions as usize
        })
        .await;
    assert_eq!(v["members"][0]["client_id"], "ktransform");

    if let Some(dom) = dom(&chromium, view.url()).await {
        let verdict = element(&dom, "verdict", "</p>");
        let said = text(verdict);
        assert!(
            ["caught up", "keeping up", "catching up", "falling behind"]
                .iter()
                .any(|v| said.starts_with(v)),
            "the verdict on the page: {said}"
        );
        let class = verdict.split("class=\"").nth(1).unwrap_or("");
        assert!(
            ["caught_up", "keeping_up", "catching_up", "falling_behind"]
                .iter()
                .any(|v| class.starts_with(&format!("verdict {v}"))),
            "the verdict's class: {verdict}"
        );
        assert_eq!(banner(&dom), None, "no banner for a working group");
        let rows = element(&dom, "partitions", "</table>");
        assert_eq!(
            rows.matches("data-partition=").count(),
            partitions as usize,
            "one row per partition: {rows}"
        );
        assert_eq!(
            rows.matches(">ktransform-").count(),
            partitions as usize,
            "{rows}"
        );
        let total = element(&dom, "chart-lag", "</figure>");
        let points: usize = total
            .split("data-points=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the total lag chart has no points: {total}"));
        assert!(points >= 5, "{points} points on the total lag chart");
        assert!(total.contains("<polyline"), "{total}");
        let per_partition = element(&dom, "chart-partitions", "</figure>");
        assert_eq!(
            per_partition.matches("<polyline").count(),
            partitions as usize,
            "a line per partition"
        );
        assert!(element(&dom, "replicas", "</p>").contains("KEDA: "));
        println!("the page says: {said}; {points} points");
        if let Some(to) = std::env::var_os("KTRANSFORM_SCREENSHOT") {
            let to = Path::new(env!("CARGO_MANIFEST_DIR")).join(to);
            let (chromium, url) = (chromium.clone().unwrap(), view.url());
            tokio::task::spawn_blocking(move || {
                browser::screenshot(&chromium, &url, &to, (1280, 1120), BUDGET)
            })
            .await
            .unwrap();
        }
    }
    producer_stop.store(true, Relaxed);
    let _ = producer.await;
    drop(view);
    stop(running).await.expect("ktransform stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_or_group_that_does_not_exist_is_said_and_any_group_is_shown() {
    let chromium = browser::chromium();
    let names = Names::new("live-view-unknown");

    let view = View::start(&brokers(), &names.group, &names.source, &[]);
    let v = view
        .until("the view of a missing topic", |v| status(v) != "waiting")
        .await;
    assert_eq!(status(&v), "unknown_topic", "{v}");
    if let Some(dom) = dom(&chromium, view.url()).await {
        let said = banner(&dom).expect("a banner");
        assert!(said.contains("does not exist"), "{said}");
        let chart = element(&dom, "chart-lag", "</figure>");
        assert!(!chart.contains("<svg"), "an empty chart: {chart}");
        assert!(text(chart).contains("does not exist"), "{chart}");
    }
    drop(view);

    // The topic exists, the group has never been seen.
    create_topic_on(&brokers(), &names.source, 2, 1, &[]).await;
    let records = data::generate(200, KEYS, Mix::Clean, data::seed());
    produce_on(&brokers(), &names.source, &records, None).await;
    let view = View::start(&brokers(), &names.group, &names.source, &[]);
    let v = view
        .until("the view of an unknown group", |v| {
            v["history"].as_array().unwrap().len() >= 2
        })
        .await;
    assert_eq!(status(&v), "unknown_group", "{v}");
    if let Some(dom) = dom(&chromium, view.url()).await {
        let said = banner(&dom).expect("a banner");
        assert!(
            said.contains(&format!("group `{}` is unknown", names.group)),
            "{said}"
        );
    }

    // A group of a plain client (rdkafka's default `client.id`), not ktransform.
    let member = tokio::task::spawn_blocking({
        let (group, topic) = (names.group.clone(), names.source.clone());
        move || IdleMember::join(&group, &topic, Duration::from_secs(1))
    })
    .await
    .unwrap();
    let v = view
        .until("the plain member holding both partitions", |v| {
            v["members"]
                .as_array()
                .is_some_and(|m| m.len() == 1 && m[0]["partitions"].as_array().unwrap().len() == 2)
        })
        .await;
    assert_ne!(status(&v), "unknown_group", "{v}");
    assert_eq!(v["members"][0]["client_id"], "rdkafka");
    if let Some(dom) = dom(&chromium, view.url()).await {
        let members = element(&dom, "members", "</table>");
        assert_eq!(members.matches("data-member=").count(), 1, "{members}");
        assert!(members.contains(">rdkafka<"), "{members}");
        let rows = element(&dom, "partitions", "</table>");
        assert_eq!(rows.matches(">rdkafka-").count(), 2, "{rows}");
        // Never committed: the committed column says so.
        assert_eq!(rows.matches(">none<").count(), 2, "{rows}");
    }
    drop(member);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_that_go_away_are_said_until_they_are_back() {
    let chromium = browser::chromium();
    let broker = Arc::new(
        tokio::task::spawn_blocking(|| Brokers::single("live-view-broker"))
            .await
            .unwrap(),
    );
    let bootstrap = broker.bootstrap.clone();
    let names = Names::new("live-view-away");
    create_topic_on(&bootstrap, &names.source, 2, 1, &[]).await;
    let records = data::generate(300, KEYS, Mix::Clean, data::seed());
    produce_on(&bootstrap, &names.source, &records, None).await;
    commit_at_on(&bootstrap, &names.group, &names.source, 2, 10).await;
    let view = View::start(&bootstrap, &names.group, &names.source, &[]);
    view.until("the view reading the group", |v| status(v) == "ok")
        .await;

    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.stop_node(1))
        .await
        .unwrap();
    let v = view
        .until("the view to see the broker gone", |v| {
            status(v) == "unreachable"
        })
        .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("brokers unreachable since "),
        "{v}"
    );
    let away = dom(&chromium, view.url()).await;
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.start_node(1))
        .await
        .unwrap();
    if let Some(dom) = away {
        let said = banner(&dom).expect("a banner while the broker is away");
        assert!(said.starts_with("brokers unreachable since "), "{said}");
        // The last data read stays on the page.
        assert_eq!(
            element(&dom, "partitions", "</table>")
                .matches("data-partition=")
                .count(),
            2
        );
        assert!(element(&dom, "chart-lag", "</figure>").contains("<polyline"));
    }

    let v = view
        .until("the view to recover with the broker", |v| status(v) == "ok")
        .await;
    assert!(v["failing_since_ms"].is_null());
    if let Some(dom) = dom(&chromium, view.url()).await {
        assert_eq!(
            banner(&dom),
            None,
            "the banner is gone once the broker is back"
        );
        // Nothing produced or consumed: the committed lag stays as it was.
        let said = text(element(&dom, "verdict", "</p>"));
        assert!(said.starts_with("keeping up"), "{said}");
    }
}
