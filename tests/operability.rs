//! Operating ktransform: `/metrics` while it works, `/healthz` and `/readyz` around an
//! assignment, `ktransform lag --json` verdicts, `lag` and `verify` on groups of either protocol,
//! config precedence across flag, env, file and default, and secrets kept out of every output.
//!
//! Real broker, unique names; every wait polls a condition with a cap, none asserts a duration.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use common::data::{self, Mix};
use common::group::commit_at_on;
use common::http::{args_with_http, free_addr, get};
use common::{
    brokers, create_topic, describe_group, poll_until, prepare, produce, run_binary,
    run_in_process, stop, Binary, Names, CAP, KEYS, THROTTLE,
};

async fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    get(addr, path).await.map(|(s, _)| s)
}

/// The sum of a metric's series in a Prometheus text body.
fn total(body: &str, metric: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_while_a_backlog_is_processed() {
    let test = prepare("metrics", 3, 20_000, Mix::Clean).await;
    let addr = free_addr();
    let running = run_in_process(&args_with_http(&test.names, addr, THROTTLE));
    poll_until("/readyz 200", CAP, || async move {
        status(addr, "/readyz").await == Some(200)
    })
    .await;
    let (code, first) = get(addr, "/metrics").await.expect("scrape /metrics");
    assert_eq!(code, 200);
    let consumed = total(&first, "ktransform_records_consumed_total");
    let produced = total(&first, "ktransform_records_produced_total");
    // More work after the first scrape, so the counters must move whatever the speed.
    let more = data::generate(2_000, KEYS, Mix::Clean, data::seed());
    produce(&test.names.source, &more).await;
    let scraped = Arc::new(std::sync::Mutex::new(String::new()));
    poll_until("consumed and produced counters to move", CAP, || {
        let scraped = scraped.clone();
        async move {
            let Some((_, body)) = get(addr, "/metrics").await else {
                return false;
            };
            let moved = total(&body, "ktransform_records_consumed_total") > consumed
                && total(&body, "ktransform_records_produced_total") > produced
                // librdkafka statistics come every 5 s: the lag series follows the first.
                && body.contains("ktransform_consumer_lag_records{");
            *scraped.lock().unwrap() = body;
            moved
        }
    })
    .await;
    let last = scraped.lock().unwrap().clone();
    assert!(last.contains("# TYPE ktransform_consumer_lag_records gauge"));
    assert!(last.contains("# TYPE ktransform_records_in_flight gauge"));
    let excerpt: Vec<&str> = last
        .lines()
        .filter(|l| l.contains("records_") || l.contains("lag") || l.contains("assigned"))
        .collect();
    println!(
        "first scrape: consumed={consumed} produced={produced}\n{}",
        excerpt.join("\n")
    );
    stop(running).await.expect("run stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_an_assignment_and_healthz_for_a_broker() {
    let names = Names::new("health");
    // The source does not exist yet: the group has nothing to assign.
    create_topic(&names.destination, 2).await;
    create_topic(&names.dlq, 2).await;
    let addr = free_addr();
    // Re-read the metadata every second so that the new source is noticed soon.
    let extra = ["-X", "consumer.topic.metadata.refresh.interval.ms=1000"];
    let running = run_in_process(&args_with_http(&names, addr, &extra));
    poll_until("/healthz 200", CAP, || async move {
        status(addr, "/healthz").await == Some(200)
    })
    .await;
    assert_eq!(
        get(addr, "/readyz")
            .await
            .map(|(s, b)| (s, b.trim().to_string())),
        Some((503, "no partitions assigned".to_string())),
        "ready without a source topic"
    );
    create_topic(&names.source, 2).await;
    poll_until("/readyz 200 once the source exists", CAP, || async move {
        status(addr, "/readyz").await == Some(200)
    })
    .await;
    assert_eq!(status(addr, "/healthz").await, Some(200));
    assert_eq!(status(addr, "/nope").await, Some(404));
    stop(running).await.expect("run stops cleanly");
}

/// The binary's exit code, stdout and stderr; `env` on top of a clean environment (no caller
/// `KTRANSFORM_*`), the test broker in `KTRANSFORM_BROKERS` unless `env` sets it.
async fn output(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ktransform"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KTRANSFORM_") {
                command.env_remove(name);
            }
        }
        let out = command
            .args(&args)
            .env("KTRANSFORM_BROKERS", brokers())
            .env("KTRANSFORM_METRICS_ADDR", "none")
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .expect("run the ktransform binary");
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        (out.status.code(), text(out.stdout), text(out.stderr))
    })
    .await
    .unwrap()
}

/// `ktransform lag --json` once over `interval`: the report as JSON.
async fn lag_json(names: &Names, interval: &str) -> serde_json::Value {
    let args = [
        "lag",
        "--group",
        &names.group,
        "--topic",
        &names.source,
        "--interval",
        interval,
        "--json",
    ];
    let (code, stdout, stderr) = output(&args, &[]).await;
    assert_eq!(code, Some(0), "lag exit code; stderr:\n{stderr}");
    println!("lag --json: {stdout}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON line per report:\n{stdout}"
    );
    serde_json::from_str(stdout.trim()).expect("lag --json prints JSON")
}

/// Commits `offset` on every partition of `topic` for `group`, as a member that then left would.
async fn commit_at(group: &str, topic: &str, partitions: i32, offset: i64) {
    commit_at_on(&brokers(), group, topic, partitions, offset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_verdict_falling_behind_while_nobody_consumes() {
    let names = Names::new("lag-behind");
    create_topic(&names.source, 3).await;
    commit_at(&names.group, &names.source, 3, 0).await;
    // A steady producer for as long as the lag windows last; nobody consumes.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = tokio::spawn({
        let (topic, producing) = (names.source.clone(), producing.clone());
        async move {
            while producing.load(Relaxed) {
                let batch = data::generate(200, KEYS, Mix::Clean, data::seed());
                produce(&topic, &batch).await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    });
    let report = lag_json(&names, "3s").await;
    let human = output(
        &[
            "lag",
            "--group",
            &names.group,
            "--topic",
            &names.source,
            "--interval",
            "2s",
        ],
        &[],
    )
    .await;
    producing.store(false, Relaxed);
    producer.await.unwrap();
    assert_eq!(report["verdict"], "falling_behind", "{report}");
    assert!(
        report["falling_behind_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(report["eta_secs"].is_null(), "{report}");
    assert!(
        report["instances_needed"].is_null(),
        "no member, no per-instance rate: {report}"
    );
    assert_eq!(report["members"], 0);
    assert_eq!(report["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(report["partitions"][0]["committed"], 0);
    assert!(report["total"]["lag"].as_i64().unwrap() > 0);
    println!("lag (human):\n{}", human.1);
    assert_eq!(human.0, Some(0), "stderr:\n{}", human.2);
    assert!(
        human.1.contains("verdict: falling behind by"),
        "{}",
        human.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_verdict_caught_up_after_until_end() {
    let test = prepare("lag-caught-up", 2, 2_000, Mix::Clean).await;
    let exit = Binary::run(&test.names.args(&["--until-end"]))
        .wait(CAP)
        .await;
    assert_eq!(
        exit.code,
        Some(0),
        "until-end run; stderr:\n{}",
        exit.stderr
    );
    let report = lag_json(&test.names, "1s").await;
    assert_eq!(report["verdict"], "caught_up", "{report}");
    assert_eq!(report["total"]["lag"], 0, "{report}");
    assert_eq!(report["total"]["end"], 2_000, "{report}");
    for p in report["partitions"].as_array().unwrap() {
        assert_eq!(p["lag"], 0, "{report}");
        assert_eq!(p["committed"], p["end"], "{report}");
    }
}

/// `ktransform lag` names a group's protocol and counts its members, also for a group of the
/// consumer protocol, which the classic DescribeGroups reports dead with none; `ktransform
/// verify` audits the output whichever protocol made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_and_verify_with_either_group_protocol() {
    for protocol in ["classic", "consumer"] {
        let test = prepare(&format!("lag-{protocol}"), 4, 40_000, Mix::Clean).await;
        let names = &test.names;
        let args = names.args(&[THROTTLE, &["--group-protocol", protocol]].concat());
        let (a, b) = (run_in_process(&args), run_in_process(&args));
        poll_until(
            &format!("two {protocol} members sharing the partitions"),
            CAP,
            || async {
                let g = describe_group(&names.group).await;
                g.assigned.len() == 2 && g.assigned.iter().all(|&n| n > 0)
            },
        )
        .await;
        let report = lag_json(names, "1s").await;
        poll_until("group lag 0", CAP, || async {
            common::group_lag(&names.group, &names.source).await == 0
        })
        .await;
        stop(a).await.expect("A stops cleanly");
        stop(b).await.expect("B stops cleanly");
        assert_eq!(report["protocol"], protocol, "{report}");
        assert_eq!(report["members"], 2, "{report}");
        let (code, stdout, stderr) = output(
            &[
                "verify",
                "--source",
                &names.source,
                "--destination",
                &names.destination,
            ],
            &[],
        )
        .await;
        assert_eq!(
            code,
            Some(0),
            "verify after a {protocol} group; stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let (code, stdout, stderr) = output(
            &[
                "lag",
                "--group",
                &names.group,
                "--topic",
                &names.source,
                "--interval",
                "1s",
            ],
            &[],
        )
        .await;
        assert_eq!(code, Some(0), "stderr:\n{stderr}");
        assert!(
            stdout.contains(&format!("({protocol} protocol)")) && stdout.contains("caught up"),
            "{stdout}"
        );
    }
}

/// Writes `text` to a uniquely named TOML file.
fn config_file(name: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!("{}.toml", common::unique(name)));
    std::fs::write(&path, text).expect("write config file");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_is_flag_env_file_default() {
    let file = config_file(
        "kt-precedence",
        r#"
        group = "file-group"
        source = "file-source"
        destination = "file-destination"
        batch_size = 7
        [rdkafka.producer]
        linger.ms = 42
        "#,
    );
    let (code, stdout, stderr) = output(
        &[
            "run",
            "--print-config",
            "--group",
            "flag-group",
            "-X",
            "producer.linger.ms=43",
        ],
        &[
            ("KTRANSFORM_CONFIG", &file),
            ("KTRANSFORM_GROUP", "env-group"),
            ("KTRANSFORM_SOURCE", "env-source"),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let shown: toml::Table = stdout.parse().expect("--print-config prints TOML");
    assert_eq!(shown["group"].as_str(), Some("flag-group"), "flag over env");
    assert_eq!(
        shown["source"].as_str(),
        Some("env-source"),
        "env over file"
    );
    assert_eq!(
        shown["destination"].as_str(),
        Some("file-destination"),
        "file over default"
    );
    assert_eq!(
        shown["batch_size"].as_integer(),
        Some(7),
        "file over default"
    );
    assert_eq!(shown["shutdown_timeout"].as_str(), Some("10s"), "default");
    assert_eq!(shown["dlq"].as_str(), Some("env-source.dlq"));
    let producer = &shown["rdkafka"]["producer"];
    assert_eq!(
        producer["linger.ms"].as_str(),
        Some("43"),
        "-X over [rdkafka.producer]"
    );
    assert_eq!(
        shown["rdkafka"]["consumer"]["group.id"].as_str(),
        Some("flag-group")
    );

    // A bad file value exits 2 naming the key and the file, before anything connects.
    let bad = config_file("kt-bad", "shutdown_timeout = \"soon\"\n");
    let exit = run_binary(&["run", "--config", &bad]).await;
    assert_eq!(exit.code, Some(2), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("shutdown_timeout") && exit.stderr.contains(&bad),
        "{}",
        exit.stderr
    );
    let unknown = config_file("kt-unknown", "brokerz = \"x\"\n");
    let exit = run_binary(&["lag", "--config", &unknown]).await;
    assert_eq!(exit.code, Some(2), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("unknown key `brokerz`") && exit.stderr.contains(&unknown),
        "{}",
        exit.stderr
    );
}

/// `--group-protocol` from the environment; under `consumer` the properties the broker owns
/// stop the start (exit 2) naming the property and what replaces it, and `-X group.protocol`
/// names the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_protocol_from_env_refuses_broker_side_properties() {
    let env = [("KTRANSFORM_GROUP_PROTOCOL", "consumer")];
    let (code, stdout, stderr) = output(&["run", "--print-config"], &env).await;
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let shown: toml::Table = stdout.parse().expect("--print-config prints TOML");
    assert_eq!(shown["group_protocol"].as_str(), Some("consumer"));
    let consumer = shown["rdkafka"]["consumer"].as_table().unwrap();
    assert_eq!(consumer["group.protocol"].as_str(), Some("consumer"));
    assert!(!consumer.contains_key("partition.assignment.strategy"));

    let refused = [
        (
            "consumer.partition.assignment.strategy=range",
            "-X partition.assignment.strategy",
            "group.remote.assignor",
        ),
        (
            "consumer.session.timeout.ms=6000",
            "-X session.timeout.ms",
            "group.consumer.session.timeout.ms",
        ),
        (
            "heartbeat.interval.ms=1000",
            "-X heartbeat.interval.ms",
            "group.consumer.heartbeat.interval.ms",
        ),
        (
            "consumer.group.protocol=consumer",
            "-X group.protocol",
            "use --group-protocol",
        ),
    ];
    for (property, names, hint) in refused {
        let (code, _, stderr) = output(&["run", "-X", property], &env).await;
        assert_eq!(code, Some(2), "-X {property}; stderr:\n{stderr}");
        assert!(
            stderr.contains(&format!("invalid {names}")) && stderr.contains(hint),
            "-X {property}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_never_printed() {
    let file = config_file(
        "kt-secret",
        "[rdkafka]\n\"ssl.key.password\" = \"hunter3\"\n",
    );
    let (code, stdout, stderr) = output(
        &[
            "run",
            "--print-config",
            "--config",
            &file,
            "-X",
            "sasl.password=hunter2",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "{text}"
        );
    }
    assert!(stdout.contains("\"sasl.password\" = \"***\""), "{stdout}");
    assert!(
        stdout.contains("\"ssl.key.password\" = \"***\""),
        "{stdout}"
    );

    // A run that cannot reach its broker, with librdkafka's configuration and security debug
    // logs on: the password appears nowhere in what it prints.
    let (code, stdout, stderr) = output(
        &[
            "run",
            "--brokers",
            "127.0.0.1:1",
            "--connect-timeout",
            "2s",
            "-X",
            "security.protocol=sasl_plaintext",
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            "sasl.username=ktransform",
            "-X",
            "sasl.password=hunter2",
            "-X",
            "debug=conf,security,broker",
        ],
        &[("RUST_LOG", "trace")],
    )
    .await;
    assert_eq!(code, Some(4), "stderr:\n{stderr}");
    assert!(!stderr.is_empty());
    for text in [&stdout, &stderr] {
        assert!(!text.contains("hunter2"), "secret printed:\n{text}");
    }
}
