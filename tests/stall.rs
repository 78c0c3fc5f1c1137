//! The stall watchdog (`ktransform::stall`) against the broker, with a short `--stall-timeout`:
//! a partition whose worker stops reading its queue (the test-only hook
//! `ktransform::stall::testing::deafen`) is reported (gauge, error count, WARN line, then
//! `/healthz` and `/livez`) and healed with nothing lost; an idle partition and one held back by a slow
//! destination raise no alarm.
//!
//! Real broker, unique names; every wait polls a condition with a cap, none asserts a duration.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use common::data::{self, Mix};
use common::{poll_until, prepare, produce_to, run_in_process, stop, Names, CAP, KEYS};

use common::http::{args_with_http, free_addr, get};

async fn metrics(addr: SocketAddr) -> String {
    get(addr, "/metrics")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default()
}

/// The sum of a metric's series whose labels contain each of `labels`.
fn series(body: &str, metric: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

fn partition(p: i32) -> String {
    format!("partition=\"{p}\"")
}

/// The service's WARN and INFO lines of this test binary, captured (tests of one binary share
/// the process: look for your own topic).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,ktransform::stall=info")
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured lines that name `topic`.
fn lines_about(logs: &Mutex<Vec<u8>>, topic: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(topic))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_partition_is_reported_and_healed_and_nothing_is_lost() {
    stalled_partition("at-least-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_partition_is_healed_under_exactly_once_and_nothing_is_twice() {
    stalled_partition("exactly-once").await;
}

async fn stalled_partition(guarantee: &str) {
    let logs = captured_logs();
    let n = 4_000;
    let test = prepare("stall", 2, n, Mix::Clean).await;
    let source = test.names.source.clone();
    // Partition 0's first worker reads one batch and then nothing; the workers the re-splits
    // start read nothing while the hook is on: the heals fail until it is off.
    let deaf = ktransform::stall::testing::deafen(&source, 0);
    let addr = free_addr();
    // 2 s rather than the minimum: a loaded machine must not make the healthy partition's
    // first fetch look like a stall.
    let extra = [
        "--stall-timeout",
        "2s",
        "--batch-size",
        "100",
        "--guarantee",
        guarantee,
    ];
    let running = run_in_process(&args_with_http(&test.names, addr, &extra));

    let unhealed = format!("{source}/0");
    poll_until("/healthz failing on the stalled partition", CAP, || {
        let unhealed = unhealed.clone();
        async move {
            matches!(get(addr, "/healthz").await, Some((503, body)) if body.contains(&unhealed))
        }
    })
    .await;
    // The watchdog gave up healing in place: the liveness probe asks for a fresh process.
    let live = get(addr, "/livez").await;
    assert!(
        matches!(&live, Some((503, body)) if body.contains(&unhealed)),
        "/livez while the partition is stalled past the health bound: {live:?}"
    );
    let body = metrics(addr).await;
    let stalled = |p: i32| {
        series(
            &body,
            "ktransform_partition_stalled",
            &[&source, &partition(p)],
        )
    };
    assert_eq!(stalled(0), 1.0, "{body}");
    assert_eq!(stalled(1), 0.0, "{body}");
    let stall_errors = series(
        &body,
        "ktransform_errors_total",
        &[&source, "kind=\"stalled\""],
    );
    assert_eq!(stall_errors, 1.0, "one stall, however long: {body}");
    let heals = |step: &str| {
        let step = format!("step=\"{step}\"");
        series(&body, "ktransform_stall_heals_total", &[&source, &step])
    };
    let (rearms, resplits) = (heals("rearm"), heals("resplit"));
    assert_eq!(rearms, 1.0, "the wake-up re-armed once, when found: {body}");
    assert!(resplits >= 2.0, "re-split before /healthz fails: {body}");
    let warned = lines_about(&logs, &source);
    assert!(
        warned.iter().any(|l| l.contains("WARN")
            && l.contains("partition stalled")
            && l.contains("partition=0")),
        "a WARN line naming the partition: {warned:#?}"
    );

    drop(deaf);
    poll_until(
        "partition 0 healed and every record read",
        CAP,
        || async move {
            let body = metrics(addr).await;
            let consumed = series(&body, "ktransform_records_consumed_total", &[]);
            let stalled = series(&body, "ktransform_partition_stalled", &[&partition(0)]);
            consumed >= n as f64
                && stalled == 0.0
                && get(addr, "/healthz").await.map(|r| r.0) == Some(200)
                && get(addr, "/livez").await.map(|r| r.0) == Some(200)
        },
    )
    .await;
    let summary = stop(running).await.expect("run stops cleanly");
    let outcome = test.outcome().await;
    println!(
        "stall {guarantee} seed={} {outcome} stalls={} heals={} rearms={rearms} \
         resplits_when_unhealthy={resplits}",
        test.seed, summary.stats.stalls, summary.stats.stall_heals
    );
    outcome.assert_nothing_lost();
    assert_eq!(
        outcome.tally.duplicates, 0,
        "a re-split restarts at the next unacknowledged offset: nothing read twice"
    );
    assert_eq!(summary.stats.stalls, 1);
    let ended = lines_about(&logs, &source);
    assert!(
        ended
            .iter()
            .any(|l| l.contains("no longer stalled") && l.contains("partition=0")),
        "{ended:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_raises_no_alarm() {
    let names = Names::new("stall-idle");
    names.create(2).await;
    let addr = free_addr();
    let extra = ["--stall-timeout", "1s"];
    let running = run_in_process(&args_with_http(&names, addr, &extra));
    let source = names.source.clone();
    let idle_checks = |body: &str| {
        series(
            body,
            "ktransform_stall_checks_total",
            &[&source, "result=\"idle\""],
        )
    };

    // Nothing to read yet: both partitions are asked about (no position, nothing committed:
    // their start), each twice, and found idle.
    poll_until("two idle checks of each partition", CAP, || async {
        idle_checks(&metrics(addr).await) >= 4.0
    })
    .await;
    // Partition 0 gets records and reads them; then both are idle again, 0 with a position.
    let records = data::generate(500, KEYS, Mix::Clean, data::seed());
    produce_to(&names.source, 0, &records).await;
    poll_until("the records read", CAP, || async {
        let body = metrics(addr).await;
        series(&body, "ktransform_records_produced_total", &[]) >= records.len() as f64
    })
    .await;
    let before = idle_checks(&metrics(addr).await);
    poll_until("two more idle checks of each partition", CAP, || async {
        idle_checks(&metrics(addr).await) >= before + 4.0
    })
    .await;

    let body = metrics(addr).await;
    let (health, _) = get(addr, "/healthz").await.expect("/healthz answers");
    let summary = stop(running).await.expect("run stops cleanly");
    println!(
        "stall-idle checks idle={} behind={} failed={}",
        idle_checks(&body),
        series(
            &body,
            "ktransform_stall_checks_total",
            &["result=\"behind\""]
        ),
        series(
            &body,
            "ktransform_stall_checks_total",
            &["result=\"failed\""]
        ),
    );
    assert_eq!(summary.stats.stalls, 0, "{body}");
    assert_eq!(summary.stats.stall_heals, 0, "{body}");
    assert_eq!(
        series(&body, "ktransform_errors_total", &["kind=\"stalled\""]),
        0.0
    );
    assert_eq!(health, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_held_back_by_a_slow_destination_raises_no_alarm() {
    let n = 300;
    let test = prepare("stall-slow", 1, n, Mix::Clean).await;
    let addr = free_addr();
    // One batch in flight at a time, each acknowledged only after the producer lingered for
    // longer than the stall timeout: the worker waits on acknowledgements, never on its queue.
    let extra = [
        "--stall-timeout",
        "2s",
        "--batch-size",
        "100",
        "--max-in-flight",
        "100",
        "-X",
        "producer.linger.ms=5000",
    ];
    let running = run_in_process(&args_with_http(&test.names, addr, &extra));
    poll_until("every record produced", CAP, || async move {
        series(
            &metrics(addr).await,
            "ktransform_records_produced_total",
            &[],
        ) >= n as f64
    })
    .await;
    let body = metrics(addr).await;
    let summary = stop(running).await.expect("run stops cleanly");
    let outcome = test.outcome().await;
    println!(
        "stall-slow {outcome} stalls={} lag_checks_behind={}",
        summary.stats.stalls,
        series(
            &body,
            "ktransform_stall_checks_total",
            &["result=\"behind\""]
        )
    );
    outcome.assert_nothing_lost();
    assert_eq!(summary.stats.stalls, 0, "{body}");
    assert_eq!(summary.stats.stall_heals, 0, "{body}");
    // Never even asked about: it was waiting on its destination the whole time.
    assert_eq!(
        series(
            &body,
            "ktransform_stall_checks_total",
            &["result=\"behind\""]
        ),
        0.0,
        "{body}"
    );
}
