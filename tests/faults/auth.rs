//! Fatal: credentials the broker refuses, and a principal the cluster's ACLs deny. Retrying
//! cannot cure either, so the run must stop at once (not wait out `--connect-timeout` as if
//! the broker were down), name the cause, exit 1 and commit nothing; the records are all
//! there for a run with the right credentials.
//!
//! The broker is this test's own (`KAFKA_SASL_PORT`, see scripts/kafka.sh): a SASL_PLAINTEXT
//! listener where user alice (password alice-secret) may do nothing, next to the PLAINTEXT
//! one the set-up and the final, successful run use. About 40 s, most of it the broker's start.

use ktransform::error::exit;

use crate::common::data::{self, Mix};
use crate::common::faults::{self, assert_passed, audit_on, Figures};
use crate::common::nodes::{self, Brokers};
use crate::common::{create_topic_on, produce_on, run_in_process_on, Names, KEYS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_and_denied_operations_are_fatal() {
    let sasl_port = nodes::free_port();
    let broker = tokio::task::spawn_blocking(move || {
        Brokers::single_with("auth", &[("KAFKA_SASL_PORT", &sasl_port.to_string())])
    })
    .await
    .unwrap();
    let plain = broker.bootstrap.clone();
    let secured = format!("127.0.0.1:{sasl_port}");
    let names = Names::new("auth");
    let n = 200;
    create_topic_on(&plain, &names.source, 2, 1, &[]).await;
    create_topic_on(&plain, &names.destination, 2, 1, &[]).await;
    let records = data::generate(n, KEYS, Mix::Clean, data::seed());
    produce_on(&plain, &names.source, &records, None).await;

    for (case, password, cause) in [
        ("authentication", "wrong", "authentication failed"),
        ("authorization", "alice-secret", "not authorized"),
    ] {
        let scenario = format!("fatal/{case}");
        let password = format!("sasl.password={password}");
        let flags = [
            "--until-end",
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            "sasl.username=alice",
            "-X",
            &password,
        ];
        let (handle, _shutdown) = run_in_process_on(&secured, &names.args(&flags));
        let result = tokio::time::timeout(faults::EXIT_CAP, handle)
            .await
            .unwrap_or_else(|_| panic!("{scenario}: the run must stop by itself"))
            .unwrap();
        let code = result.as_ref().err().map(|e| e.exit_code());
        Figures {
            scenario: scenario.clone(),
            records: n as u64,
            faults: 1,
            lost: 0,
            duplicated: 0,
            extra: vec![("exit_code", format!("{code:?}"))],
        }
        .print();
        let error = result.expect_err(&scenario);
        assert_eq!(error.exit_code(), exit::FATAL, "{scenario}: {error}");
        let message = error.to_string();
        assert!(message.contains(cause), "{scenario}: {message}");
        assert!(
            !message.contains("unreachable"),
            "{scenario}: reported as an outage: {message}"
        );
    }

    // Nothing was committed or produced: the right credentials process every record once.
    let (handle, _shutdown) = run_in_process_on(&plain, &names.args(&["--until-end"]));
    tokio::time::timeout(faults::EXIT_CAP, handle)
        .await
        .expect("the plain run must reach the end")
        .unwrap()
        .expect("the plain run must succeed");
    let report = audit_on(&plain, &names, "at-least-once").await;
    assert_passed("fatal/after", &report);
    assert_eq!(report.counts.lost, 0);
    assert_eq!(report.counts.duplicates, 0, "a failed run produced outputs");
}
