//! `RunConfig`'s parsing and checks.

use super::*;

fn parse(args: &[&str]) -> RunConfig {
    RunConfig::from_args(args).unwrap()
}

fn error(args: &[&str]) -> String {
    parse(args).validate().unwrap_err().to_string()
}

#[test]
fn defaults_are_valid() {
    let c = parse(&[]);
    c.validate().unwrap();
    assert_eq!(c.pipeline.dlq_topic(), "name_stream.dlq");
    assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(
        c.consumer_config().unwrap().get("enable.auto.offset.store"),
        Some("false")
    );
    assert_eq!(
        c.producer_config().unwrap().get("enable.idempotence"),
        Some("true")
    );
}

#[test]
fn errors_name_the_flag() {
    assert!(error(&["--destination", "name_stream"]).starts_with("invalid --destination"));
    assert!(error(&["--dlq", "name_stream"]).starts_with("invalid --dlq"));
    assert!(error(&["--source", "a b"]).starts_with("invalid --source"));
    assert!(error(&["--batch-size", "0"]).starts_with("invalid --batch-size"));
    assert!(error(&["--memory-budget", "1MiB"]).starts_with("invalid --memory-budget"));
    let unparsed = RunConfig::from_args(["--memory-budget", "lots"]).unwrap_err();
    assert!(
        unparsed.to_string().contains("--memory-budget"),
        "{unparsed}"
    );
    assert!(error(&["-X", "linger.ms"]).starts_with("invalid -X"));
    assert!(error(&["-X", "no.such.property=1"]).contains("no.such.property"));
    assert!(error(&["-X", "consumer.enable.auto.offset.store=true"])
        .starts_with("invalid -X enable.auto.offset.store"));
    assert!(error(&["--brokers", ""]).starts_with("invalid --brokers"));
    assert!(error(&["--drain-timeout", "50s"]).starts_with("invalid --drain-timeout"));
    assert!(error(&[
        "--drain-timeout",
        "5s",
        "-X",
        "consumer.session.timeout.ms=3000"
    ])
    .starts_with("invalid --drain-timeout"));
}

#[test]
fn overrides_apply_per_side() {
    let c = parse(&[
        "-X",
        "consumer.fetch.min.bytes=7",
        "-X",
        "producer.linger.ms=9",
        "-X",
        "client.id=x",
    ]);
    let consumer = c.consumer_config().unwrap();
    let producer = c.producer_config().unwrap();
    assert_eq!(consumer.get("fetch.min.bytes"), Some("7"));
    assert_eq!(producer.get("fetch.min.bytes"), None);
    assert_eq!(producer.get("linger.ms"), Some("9"));
    assert_eq!(consumer.get("client.id"), Some("x"));
    assert_eq!(producer.get("client.id"), Some("x"));
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(
        parse(&["--shutdown-timeout", "500ms"]).shutdown_timeout,
        Duration::from_millis(500)
    );
    assert!(RunConfig::from_args(["--shutdown-timeout", "soon"]).is_err());
}

#[test]
fn the_stall_timeout_is_a_duration_or_off() {
    assert_eq!(
        parse(&[]).stall_timeout,
        StallTimeout::After(Duration::from_secs(30))
    );
    assert_eq!(
        parse(&["--stall-timeout", "OFF"]).stall_timeout,
        StallTimeout::Off
    );
    assert_eq!(
        parse(&["--stall-timeout", "2m"]).stall_timeout,
        StallTimeout::After(Duration::from_secs(120))
    );
    assert!(RunConfig::from_args(["--stall-timeout", "later"]).is_err());
    assert!(error(&["--stall-timeout", "500ms"]).starts_with("invalid --stall-timeout"));
    assert_eq!(
        parse(&["--stall-timeout", "0"]).stall_timeout,
        StallTimeout::Off
    );
    parse(&["--stall-timeout", "off"]).validate().unwrap();
}
