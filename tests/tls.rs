//! TLS against real TLS listeners: one broker of this file's own (scripts/kafka.sh with its TLS
//! listeners, certificates made at its start) serves every case.
//!
//! - Records through each listener, checked by content (`verify`): SSL at-least-once, mutual TLS
//!   exactly-once (with an encrypted client key), SASL_SSL with SCRAM-SHA-512 under both
//!   guarantees from one `--config` file, which `lag` and `verify` then read too.
//! - The usual mistakes, each a refusal no retry cures: a CA that did not sign the broker's
//!   certificate, a certificate for another host (hostname verification left at librdkafka's
//!   default, on), an expired broker certificate, no client certificate and an untrusted one
//!   under mutual TLS, a wrong SCRAM password. Each stops `run`, `lag` and `verify` with exit 1
//!   and a message naming the cause and the property to fix, not the "unreachable" of a connect
//!   timeout waited out.
//!
//! No output of any run shows a password. The cases run concurrently: most of the file's time is
//! the broker's start.

mod common;

use std::time::Instant;

use common::data::{self, Mix};
use common::faults::{assert_passed, audit_on};
use common::tls::{self, ktransform, Output, TlsBroker};
use common::{produce_on, Names, CAP, KEYS};
use futures::future::join_all;

/// Records per end-to-end run.
const RECORDS: usize = 300;
/// The connect timeout of the refused runs: they must stop long before it.
const CONNECT_TIMEOUT: &str = "60s";
/// A wrong SCRAM password, a secret too.
const WRONG_PASSWORD: &str = "wrong-scram-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listeners_carry_records_and_refusals_name_their_fix() {
    let started = Instant::now();
    let broker = tokio::task::spawn_blocking(TlsBroker::start).await.unwrap();
    eprintln!("broker started after {:?}", started.elapsed());
    // Both at once: the refused runs are short and light.
    let refused = async {
        refusals(&broker).await;
        eprintln!("refusals checked after {:?}", started.elapsed());
    };
    let carried = async {
        records(&broker).await;
        eprintln!("records checked after {:?}", started.elapsed());
    };
    tokio::join!(refused, carried);
}

/// Flags of a `run` against `brokers` for `names`, then `extra`.
fn run_args(brokers: &str, names: &Names, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "--brokers", brokers]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(names.args(&["--until-end", "--connect-timeout", CONNECT_TIMEOUT]));
    args.extend(extra.iter().cloned());
    args
}

/// Flags of `command` (`run`, `lag` or `verify`) against `brokers` for `names`.
fn command_args(command: &str, brokers: &str, names: &Names) -> Vec<String> {
    let flags = match command {
        "run" => return run_args(brokers, names, &[]),
        "lag" => ["--group", &names.group, "--topic", &names.source],
        _ => [
            "--source",
            &names.source,
            "--destination",
            &names.destination,
        ],
    };
    [command, "--brokers", brokers]
        .into_iter()
        .chain(flags)
        .map(String::from)
        .collect()
}

/// `-X key=value` flags.
fn properties(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| ["-X".to_string(), format!("{k}={v}")])
        .collect()
}

/// Fails unless no output shows a secret.
fn assert_no_secret(case: &str, output: &Output) {
    for secret in [
        tls::SCRAM_PASSWORD,
        tls::CLIENT_KEY_PASSWORD,
        tls::STORE_PASSWORD,
        WRONG_PASSWORD,
    ] {
        assert!(
            !output.stdout.contains(secret) && !output.stderr.contains(secret),
            "{case}: the output shows the secret {secret:?}: {output:?}"
        );
    }
}

/// The message of a run's failure: its last `error:` line.
fn error_line(output: &Output) -> &str {
    output
        .stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or("")
}

/// A run the brokers refuse: its case, listener, properties, and what its message must name.
type Refused<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>);

async fn refusals(broker: &TlsBroker) {
    let ca = broker.file("ca.pem");
    let other_ca = broker.file("other-ca.pem");
    let other_client = broker.file("other-client.pem");
    let other_key = broker.file("other-client.key");
    fn ssl(ca: &str) -> Vec<(&'static str, &str)> {
        vec![("security.protocol", "SSL"), ("ssl.ca.location", ca)]
    }
    let mut untrusted = ssl(&ca);
    untrusted.extend([
        ("ssl.certificate.location", other_client.as_str()),
        ("ssl.key.location", other_key.as_str()),
    ]);
    let wrong_password = format!("sasl.password={WRONG_PASSWORD}");
    let scram = vec![
        ("security.protocol", "SASL_SSL"),
        ("ssl.ca.location", ca.as_str()),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", tls::SCRAM_USER),
    ];
    let cases: Vec<Refused> = vec![
        (
            "wrong CA",
            &broker.ssl,
            ssl(&other_ca),
            vec!["not signed by a CA in", "ssl.ca.location", &other_ca],
        ),
        (
            "hostname mismatch",
            &broker.wrong_host,
            ssl(&ca),
            vec![
                "not issued for `127.0.0.1`",
                "wrong-host.example",
                "ssl.endpoint.identification.algorithm",
            ],
        ),
        (
            "expired broker certificate",
            &broker.expired,
            ssl(&ca),
            vec!["expired on", "ssl.keystore.location"],
        ),
        (
            "no client certificate",
            &broker.mtls,
            ssl(&ca),
            vec![
                "requires a client certificate",
                "ssl.certificate.location",
                "ssl.key.location",
            ],
        ),
        (
            "untrusted client certificate",
            &broker.mtls,
            untrusted,
            vec![
                "refused the client certificate",
                &other_client,
                "ssl.certificate.location",
            ],
        ),
        (
            "wrong SCRAM password",
            &broker.sasl_ssl,
            scram,
            vec!["authentication failed", "sasl.password", tls::SCRAM_USER],
        ),
    ];
    // Each case through `run`, `lag` and `verify`: the three meet the brokers the same way.
    let commands = ["run", "lag", "verify"];
    let runs = cases.iter().flat_map(|(case, listener, props, _)| {
        let mut extra = properties(props);
        if *case == "wrong SCRAM password" {
            extra.extend(["-X".to_string(), wrong_password.clone()]);
        }
        commands.map(|command| {
            let mut args = command_args(command, listener, &Names::new("tls-refused"));
            args.extend(extra.iter().cloned());
            ktransform(args, CAP)
        })
    });
    let outputs = join_all(runs).await;
    let cases = cases.iter().flat_map(|(case, _, _, named)| {
        commands.map(|command| (format!("{command}, {case}"), named))
    });
    for ((case, named), output) in cases.zip(&outputs) {
        let case = case.as_str();
        let message = error_line(output);
        eprintln!("{case}: exit {:?}, {message}", output.code);
        assert_eq!(output.code, Some(1), "{case}: {output:?}");
        for name in named {
            assert!(message.contains(name), "{case}: no {name:?} in {message:?}");
        }
        assert!(
            !message.contains("unreachable"),
            "{case}: reported as an outage: {message}"
        );
        assert_no_secret(case, output);
    }
}

/// A test's topics (2 partitions) on the plain listener, with [`RECORDS`] records in the source.
async fn prepared(broker: &TlsBroker, test: &str) -> Names {
    let names = Names::new(test);
    names.create_on(&broker.plain, 2, 1).await;
    let records = data::generate(RECORDS, KEYS, Mix::Clean, data::seed());
    produce_on(&broker.plain, &names.source, &records, None).await;
    names
}

async fn records(broker: &TlsBroker) {
    let ca = broker.file("ca.pem");
    let (client, key) = (broker.file("client.pem"), broker.file("client.key"));
    let ssl = prepared(broker, "tls-ssl").await;
    let mtls = prepared(broker, "tls-mtls").await;
    let sasl_eos = prepared(broker, "tls-sasl-eos").await;
    let sasl_alo = prepared(broker, "tls-sasl-alo").await;

    // SASL_SSL: one file for run, lag and verify, as the service would have it.
    let dir = std::env::temp_dir().join(common::unique("ktransform-tls-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ktransform.toml");
    tls::write_config(
        &file,
        &[
            ("brokers", &broker.sasl_ssl),
            ("source", &sasl_eos.source),
            ("destination", &sasl_eos.destination),
            ("group", &sasl_eos.group),
            ("guarantee", "exactly-once"),
            ("metrics_addr", "none"),
        ],
        &[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", tls::SCRAM_USER),
            ("sasl.password", tls::SCRAM_PASSWORD),
            ("ssl.ca.location", &ca),
        ],
    );
    let config = file.display().to_string();
    let with_file = |extra: &[&str]| -> Vec<String> {
        ["run", "--config", &config, "--until-end"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };

    let runs = [
        (
            "SSL at-least-once",
            &ssl,
            "at-least-once",
            run_args(
                &broker.ssl,
                &ssl,
                &properties(&[("security.protocol", "SSL"), ("ssl.ca.location", &ca)]),
            ),
        ),
        (
            "mutual TLS exactly-once",
            &mtls,
            "exactly-once",
            run_args(
                &broker.mtls,
                &mtls,
                &[
                    vec!["--guarantee".to_string(), "exactly-once".to_string()],
                    properties(&[
                        ("security.protocol", "SSL"),
                        ("ssl.ca.location", &ca),
                        ("ssl.certificate.location", &client),
                        ("ssl.key.location", &key),
                        ("ssl.key.password", tls::CLIENT_KEY_PASSWORD),
                    ]),
                ]
                .concat(),
            ),
        ),
        (
            "SASL_SSL exactly-once (the file)",
            &sasl_eos,
            "exactly-once",
            with_file(&[]),
        ),
        (
            "SASL_SSL at-least-once (the file, other topics)",
            &sasl_alo,
            "at-least-once",
            with_file(&[
                "--guarantee",
                "at-least-once",
                "--source",
                &sasl_alo.source,
                "--destination",
                &sasl_alo.destination,
                "--group",
                &sasl_alo.group,
            ]),
        ),
    ];
    let outputs = join_all(
        runs.iter()
            .map(|(_, _, _, args)| ktransform(args.clone(), CAP)),
    )
    .await;
    for ((case, _, _, _), output) in runs.iter().zip(&outputs) {
        assert_eq!(output.code, Some(0), "{case}: {output:?}");
        assert_no_secret(case, output);
    }
    let audits = runs
        .iter()
        .map(|(_, names, guarantee, _)| audit_on(&broker.plain, names, guarantee));
    let reports = join_all(audits).await;
    for ((case, _, _, _), report) in runs.iter().zip(&reports) {
        assert_passed(case, report);
        assert_eq!(report.counts.lost, 0, "{case}");
        assert_eq!(report.counts.source_records, RECORDS as u64, "{case}");
    }

    // lag and verify over SASL_SSL, with the service's file.
    let lag = ktransform(
        ["lag", "--config", &config, "--interval", "1s", "--json"]
            .map(String::from)
            .to_vec(),
        CAP,
    )
    .await;
    assert_eq!(lag.code, Some(0), "lag: {lag:?}");
    assert_no_secret("lag", &lag);
    let json: serde_json::Value = serde_json::from_str(lag.stdout.trim()).expect("lag --json");
    assert_eq!(json["group"], sasl_eos.group.as_str(), "{json}");
    assert_eq!(json["total"]["lag"], 0, "{json}");
    assert_eq!(json["total"]["end"], RECORDS as u64, "{json}");
    assert_eq!(json["verdict"], "caught_up", "{json}");

    let verify = ktransform(
        ["verify", "--config", &config, "--json"]
            .map(String::from)
            .to_vec(),
        CAP,
    )
    .await;
    assert_eq!(verify.code, Some(0), "verify: {verify:?}");
    assert_no_secret("verify", &verify);
    let json: serde_json::Value =
        serde_json::from_str(verify.stdout.trim()).expect("verify --json");
    assert_eq!(json["passed"], true, "{json}");
    assert_eq!(json["guarantee"], "exactly-once", "{json}");
    assert_eq!(json["source_records"], RECORDS as u64, "{json}");
    assert_eq!(json["duplicates"], 0, "{json}");
    let _ = std::fs::remove_dir_all(&dir);
}
