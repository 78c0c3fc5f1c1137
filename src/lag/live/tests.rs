use std::time::Instant;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::*;
use crate::lag::group::{self, Description, Protocol};
use crate::lag::PartitionOffsets;

fn new_live(extra: &[&str]) -> Live {
    let args: Vec<&str> = ["--group", "g", "--topic", "t"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    Live::new(&crate::lag::tests::config(&args))
}

fn member(id: &str, assignment: &[(&str, i32)]) -> group::Member {
    group::Member {
        member_id: id.into(),
        client_id: format!("client-{id}"),
        host: "/127.0.0.1".into(),
        instance_id: None,
        assignment: assignment
            .iter()
            .map(|(t, p)| (t.to_string(), *p))
            .collect(),
    }
}

/// Two partitions, the group `committed` records behind `end` on each, seconds `at` after
/// `start` on both clocks.
fn observation(start: (Instant, SystemTime), at: u64, committed: i64, end: i64) -> Observation {
    let partitions = (0..2)
        .map(|partition| PartitionOffsets {
            partition,
            committed: Some(committed),
            low: 0,
            end,
        })
        .collect();
    let after = Duration::from_secs(at);
    Observation {
        sample: Sample {
            at: start.0 + after,
            partitions,
            members: 1,
            protocol: Some(Protocol::Consumer),
        },
        wall: start.1 + after,
        group: Ok(Description {
            protocol: Some(Protocol::Consumer),
            state: "Stable".into(),
            members: vec![member("a", &[("t", 1), ("t", 0), ("other", 0)])],
        }),
    }
}

/// What the coordinator says of a group it does not know.
fn unknown_group() -> Description {
    Description {
        protocol: None,
        state: "Dead".into(),
        members: Vec::new(),
    }
}

fn json(live: &Live, now: SystemTime) -> serde_json::Value {
    serde_json::to_value(live.view(now)).unwrap()
}

fn start() -> (Instant, SystemTime) {
    (Instant::now(), SystemTime::now())
}

#[test]
fn a_window_gives_the_report_the_verdict_and_a_point_per_sample() {
    let start = start();
    let mut live = new_live(&["--lag-threshold", "100"]);
    live.observed(observation(start, 0, 0, 1000));
    let v = json(&live, start.1);
    assert_eq!(v["status"], "waiting");
    assert!(v["report"].is_null());
    assert_eq!(v["history"].as_array().unwrap().len(), 1);
    assert!(v["history"][0]["produce_per_sec"].is_null());

    live.observed(observation(start, 10, 500, 3000));
    let v = json(&live, start.1);
    assert_eq!(v["status"], "ok");
    assert!(v["message"].is_null());
    // Lag 2000 -> 5000 in 10 s: falling behind by 300/s; produce 400/s, consume 100/s.
    assert_eq!(v["report"]["verdict"], "falling_behind");
    assert_eq!(v["verdict_text"], "falling behind by 300 records/s");
    assert_eq!(
        v["advice_text"],
        "~4 instance(s) needed at the observed per-instance rate; 2 partitions cap the group at \
         2: add partitions"
    );
    assert_eq!(v["report"]["keda"]["replicas"], 2);
    let last = &v["history"][1];
    assert_eq!(last["lag"], 5000);
    assert_eq!(last["produce_per_sec"], 400.0);
    assert_eq!(last["consume_per_sec"], 100.0);
    assert_eq!(last["partitions"]["1"], 2500);
    assert_eq!(v["partitions"][1]["committed"], 500);
    // The member's partitions of this topic, in order; the other topic's counted apart.
    assert_eq!(v["members"][0]["partitions"], serde_json::json!([0, 1]));
    assert_eq!(v["members"][0]["other_partitions"], 1);
    assert_eq!(v["group_state"], "Stable");
}

#[test]
fn history_is_bounded_in_time_and_count() {
    let start = start();
    let mut live = new_live(&[]);
    for i in 0..(HISTORY.as_secs() + 30) {
        live.observed(observation(start, i, 0, 0));
    }
    let first = live.history.front().unwrap().timestamp_ms;
    let last = live.history.back().unwrap().timestamp_ms;
    assert_eq!(last - first, HISTORY.as_millis() as u64);
    // Samples every 100 ms for as long: the count is the bound.
    let mut live = new_live(&["--interval", "100ms"]);
    for i in 0..(MAX_POINTS as u64 + 10) {
        let mut o = observation(start, 0, 0, 0);
        o.wall = start.1 + Duration::from_millis(100 * i);
        live.observed(o);
    }
    assert_eq!(live.history.len(), MAX_POINTS);
}

#[test]
fn brokers_away_are_reported_since_the_first_failure_until_a_sample_succeeds() {
    let start = start();
    let mut live = new_live(&[]);
    live.observed(observation(start, 0, 0, 100));
    live.observed(observation(start, 1, 100, 200));
    let away = KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut);
    live.failed(&away, None, start.1 + Duration::from_secs(2));
    live.failed(&away, None, start.1 + Duration::from_secs(12));
    let v = json(&live, start.1 + Duration::from_secs(32));
    assert_eq!(v["status"], "unreachable");
    let message = v["message"].as_str().unwrap();
    let since = humantime::format_rfc3339_seconds(start.1 + Duration::from_secs(2));
    assert!(
        message.starts_with(&format!("brokers unreachable since {since} (30 s): ")),
        "{message}"
    );
    // The last data read stays on the page.
    assert_eq!(v["history"].as_array().unwrap().len(), 2);
    assert!(v["report"].is_object());

    live.observed(observation(start, 40, 200, 300));
    let v = json(&live, start.1 + Duration::from_secs(40));
    assert_eq!(v["status"], "ok");
    assert!(v["failing_since_ms"].is_null());
    // No rate across the gap: its first window starts after it.
    assert!(v["history"][2]["produce_per_sec"].is_null());

    let refused = KafkaError::OffsetFetch(RDKafkaErrorCode::GroupAuthorizationFailed);
    live.failed(&refused, None, start.1 + Duration::from_secs(41));
    assert_eq!(json(&live, start.1)["status"], "failing");
}

#[test]
fn a_refused_certificate_is_shown_as_its_cause_not_as_an_outage() {
    let start = start();
    let mut live = new_live(&[]);
    live.observed(observation(start, 0, 0, 100));
    // What a metadata request returns while TLS handshakes fail: it looks like an outage.
    let timed_out = KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut);
    let cause = "broker 127.0.0.1:9093: its certificate is not signed by a CA in ssl.ca.location";
    live.failed(
        &timed_out,
        Some(cause.to_string()),
        start.1 + Duration::from_secs(1),
    );
    let v = json(&live, start.1 + Duration::from_secs(2));
    assert_eq!(v["status"], "failing");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains(cause), "{message}");
    assert!(!message.contains("unreachable"), "{message}");
}

#[test]
fn a_topic_that_does_not_exist_is_said_so() {
    let start = start();
    let mut live = new_live(&[]);
    let mut o = observation(start, 0, 0, 0);
    o.sample.partitions.clear();
    o.group = Ok(unknown_group());
    live.observed(o);
    let v = json(&live, start.1);
    assert_eq!(v["status"], "unknown_topic");
    assert_eq!(
        v["message"],
        "topic `t` does not exist on these brokers: check --topic"
    );
    assert!(v["history"].as_array().unwrap().is_empty());
}

#[test]
fn a_group_nobody_knows_is_said_so() {
    let start = start();
    let mut live = new_live(&[]);
    for at in [0, 1] {
        let mut o = observation(start, at, 0, 10);
        for p in &mut o.sample.partitions {
            p.committed = None;
        }
        o.group = Ok(unknown_group());
        live.observed(o);
    }
    let v = json(&live, start.1);
    assert_eq!(v["status"], "unknown_group");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("group `g` is unknown"));
    // A group with committed offsets and no member is known: it is only empty.
    let mut o = observation(start, 2, 5, 10);
    o.group = Ok(Description {
        protocol: Some(Protocol::Classic),
        state: "Empty".into(),
        members: Vec::new(),
    });
    live.observed(o);
    assert_eq!(json(&live, start.1)["status"], "ok");
}

#[test]
fn the_verdict_spans_the_commit_steps_that_a_point_shows() {
    let start = start();
    let mut live = new_live(&[]);
    // 100 records/s on each partition, committed in steps of 500 every 5 s.
    for t in 0..=42 {
        live.observed(observation(start, t, 500 * (t as i64 / 5), 100 * t as i64));
    }
    let v = json(&live, start.1);
    let last = &v["history"][42];
    // The last second committed nothing, and the lag grew by 100 per partition...
    assert_eq!(last["consume_per_sec"], 0.0);
    assert_eq!(last["lag"], 400);
    // ...but over the verdict's 30 s the group consumed what arrived.
    assert_eq!(v["report"]["window_secs"], VERDICT_WINDOW.as_secs_f64());
    assert_eq!(v["report"]["verdict"], "keeping_up", "{}", v["report"]);
    assert_eq!(v["report"]["consume_per_sec"], 200.0);
}
