//! The audit's rules, on records built here: no broker.

use super::*;
use crate::verify::render;

type Header<'a> = (&'a str, Option<&'a [u8]>);

/// Every record built here has this timestamp unless a test changes it.
const TIMESTAMP: i64 = 1_700_000_000_000;

fn record<'a>(
    partition: i32,
    offset: i64,
    key: &'a str,
    value: Option<&'a [u8]>,
    headers: &[Header<'a>],
) -> Record<'a> {
    Record {
        partition,
        offset,
        key: Some(key.as_bytes()),
        value,
        headers: headers.to_vec(),
        timestamp: Some(TIMESTAMP),
    }
}

fn out(input: &str) -> Vec<u8> {
    transform::transform(input.as_bytes()).unwrap()
}

/// The source of most tests: partition 0 holds key `a` twice and a tombstone of `b`,
/// partition 1 an array (dead letter) and key `c`.
fn source() -> Vec<Record<'static>> {
    let h: &[Header<'static>] = &[("h", Some(b"1")), ("n", None)];
    vec![
        record(0, 0, "a", Some(br#"{"n":1}"#), h),
        record(0, 1, "a", Some(br#"{"n":2}"#), h),
        record(0, 2, "b", None, h),
        record(1, 0, "d", Some(b"[1]"), h),
        record(1, 1, "c", Some(br#"{"n":3}"#), h),
    ]
}

/// A dead letter as the service writes it; `numbers` is its source position.
fn dead_letter<'a>(key: &'a str, value: &'a [u8], numbers: &'a [String; 2]) -> Record<'a> {
    record(
        0,
        0,
        key,
        Some(value),
        &[
            ("h", Some(b"1")),
            ("n", None),
            (headers::ERROR_KIND, Some(b"not_an_object")),
            (headers::SOURCE_TOPIC, Some(b"in")),
            (headers::SOURCE_PARTITION, Some(numbers[0].as_bytes())),
            (headers::SOURCE_OFFSET, Some(numbers[1].as_bytes())),
        ],
    )
}

fn numbers(partition: i32, offset: i64) -> [String; 2] {
    [partition.to_string(), offset.to_string()]
}

fn run(
    sources: &[Record<'_>],
    outputs: &[Record<'_>],
    dead: &[Record<'_>],
    guarantee: Guarantee,
) -> Report {
    run_with(sources, outputs, dead, guarantee, Timestamps::Source)
}

fn run_with(
    sources: &[Record<'_>],
    outputs: &[Record<'_>],
    dead: &[Record<'_>],
    guarantee: Guarantee,
    timestamps: Timestamps,
) -> Report {
    let mut a = Auditor::new(["in".into(), "out".into(), "in.dlq".into()], 0, timestamps);
    sources.iter().for_each(|r| a.add_source(r));
    a.seal_sources();
    outputs.iter().for_each(|r| a.add_output(r));
    dead.iter().for_each(|r| a.add_dead_letter(r));
    if a.has_wrong_outputs() {
        a.seal_wrong_outputs();
        sources.iter().for_each(|r| a.explain(r));
    }
    a.finish(guarantee)
}

/// Outputs exactly as the service writes them, in source order, on partition `0`.
fn outputs(values: &[Vec<u8>]) -> Vec<Record<'_>> {
    let h: &[Header<'static>] = &[("h", Some(b"1")), ("n", None)];
    let keys = ["a", "a", "c"];
    let mut records: Vec<Record<'_>> = values
        .iter()
        .zip(keys)
        .enumerate()
        .map(|(i, (v, k))| record(0, i as i64, k, Some(v), h))
        .collect();
    records.insert(2, record(0, 9, "b", None, h));
    records
}

fn expected_values() -> Vec<Vec<u8>> {
    vec![out(r#"{"n":1}"#), out(r#"{"n":2}"#), out(r#"{"n":3}"#)]
}

fn only(report: &Report, expected: Counts) {
    let base = Counts {
        source_records: 5,
        tombstones: 1,
        expected_dead_letters: 1,
        ..expected
    };
    assert_eq!(report.counts, base, "{}", render(report));
}

#[test]
fn a_correct_run_passes() {
    let values = expected_values();
    let n = numbers(1, 0);
    let dead = [dead_letter("d", b"[1]", &n)];
    let report = run(&source(), &outputs(&values), &dead, Guarantee::ExactlyOnce);
    only(
        &report,
        Counts {
            outputs: 4,
            dead_letters: 1,
            delivered: 5,
            ..Counts::default()
        },
    );
    assert!(report.passed && report.failed_rules.is_empty() && report.findings.is_empty());
}

#[test]
fn nothing_delivered_is_all_lost() {
    let report = run(&source(), &[], &[], Guarantee::AtLeastOnce);
    only(
        &report,
        Counts {
            lost: 5,
            ..Counts::default()
        },
    );
    assert_eq!(report.failed_rules, ["lost = 5"]);
    assert_eq!(report.findings.len(), FINDINGS_PER_KIND);
    assert_eq!(report.findings[0].topic, "in");
}

#[test]
fn replays_are_duplicates_and_identical_inputs_are_not() {
    let values = expected_values();
    let mut outs = outputs(&values);
    // A replay of the first two: first deliveries stay in order.
    outs.push(record(
        0,
        10,
        "a",
        Some(&values[0]),
        &outs[0].headers.clone(),
    ));
    outs.push(record(
        0,
        11,
        "a",
        Some(&values[1]),
        &outs[0].headers.clone(),
    ));
    let n = numbers(1, 0);
    let dead = [dead_letter("d", b"[1]", &n), dead_letter("d", b"[1]", &n)];
    let report = run(&source(), &outs, &dead, Guarantee::AtLeastOnce);
    only(
        &report,
        Counts {
            outputs: 6,
            dead_letters: 2,
            delivered: 5,
            duplicates: 3,
            ..Counts::default()
        },
    );
    assert!(report.passed);
    let exactly = run(&source(), &outs, &dead, Guarantee::ExactlyOnce);
    assert_eq!(exactly.failed_rules, ["duplicates = 3"]);

    // The same content twice in the source needs two outputs; a third is the duplicate.
    let h: &[Header<'static>] = &[];
    let same = [
        record(0, 0, "a", Some(b"{}"), h),
        record(0, 1, "a", Some(b"{}"), h),
    ];
    let o = out("{}");
    let one = [record(0, 0, "a", Some(&o), h)];
    let report = run(&same, &one, &[], Guarantee::ExactlyOnce);
    assert_eq!((report.counts.delivered, report.counts.lost), (1, 1));
    let three = [0, 1, 2].map(|i| record(0, i, "a", Some(&o), h));
    let report = run(&same, &three, &[], Guarantee::AtLeastOnce);
    assert_eq!((report.counts.delivered, report.counts.duplicates), (2, 1));
}

#[test]
fn equal_content_is_matched_by_its_headers() {
    // The generator's names repeat: the same unkeyed value in two partitions, told apart only
    // by a sequence header. Partition 1's copy is delivered first, to the same output
    // partition: neither a changed header nor an order violation.
    let seq = |n: &'static [u8]| -> Vec<Header<'static>> { vec![("gen.seq", Some(n))] };
    let v: &[u8] = br#"{"first_name":"Samuel"}"#;
    let (s0, s1, s2) = (seq(b"0"), seq(b"1"), seq(b"2"));
    let sources = [
        record(0, 0, "k", Some(v), &s0),
        record(0, 1, "k", Some(v), &s2),
        record(1, 0, "k", Some(v), &s1),
    ];
    let o = out(r#"{"first_name":"Samuel"}"#);
    let outs = [
        record(0, 0, "k", Some(&o), &s1),
        record(0, 1, "k", Some(&o), &s0),
        record(0, 2, "k", Some(&o), &s2),
        // A replay of partition 1's record.
        record(0, 3, "k", Some(&o), &s1),
    ];
    let report = run(&sources, &outs, &[], Guarantee::AtLeastOnce);
    let c = &report.counts;
    assert_eq!((c.delivered, c.duplicates, c.lost), (3, 1, 0));
    assert_eq!((c.changed_headers, c.order_violations), (0, 0));
    assert!(report.passed, "{}", render(&report));
}

#[test]
fn a_replay_is_a_duplicate_while_equal_content_waits() {
    // Two records of equal content; the first one's output comes twice before the second's.
    let seq = |n: &'static [u8]| -> Vec<Header<'static>> { vec![("gen.seq", Some(n))] };
    let v: &[u8] = br#"{"first_name":"Samuel"}"#;
    let (s0, s1) = (seq(b"0"), seq(b"1"));
    let sources = [
        record(0, 0, "k", Some(v), &s0),
        record(0, 1, "k", Some(v), &s1),
    ];
    let o = out(r#"{"first_name":"Samuel"}"#);
    let outs = [
        record(0, 0, "k", Some(&o), &s0),
        record(0, 1, "k", Some(&o), &s0),
        record(0, 2, "k", Some(&o), &s1),
    ];
    let report = run(&sources, &outs, &[], Guarantee::AtLeastOnce);
    let c = &report.counts;
    assert_eq!((c.delivered, c.duplicates, c.lost), (2, 1, 0));
    assert_eq!((c.changed_headers, c.order_violations), (0, 0));
    assert!(report.passed, "{}", render(&report));
}

#[test]
fn first_deliveries_out_of_order_are_violations() {
    let values = expected_values();
    let mut outs = outputs(&values);
    outs.swap(0, 1);
    let n = numbers(1, 0);
    let dead = [dead_letter("d", b"[1]", &n)];
    let report = run(&source(), &outs, &dead, Guarantee::AtLeastOnce);
    assert_eq!(report.counts.order_violations, 1);
    assert_eq!(report.counts.delivered, 5);
    assert_eq!(report.failed_rules, ["order_violations = 1"]);
    let f = &report.findings[0];
    assert_eq!(f.kind, Kind::OrderViolation);
    assert_eq!(
        f.source,
        Some(Position {
            partition: 0,
            offset: 0
        })
    );
    // Different output partitions are not ordered against each other.
    outs[1].partition = 1;
    let report = run(&source(), &outs, &dead, Guarantee::AtLeastOnce);
    assert_eq!(report.counts.order_violations, 0);
}

#[test]
fn wrong_outputs_are_explained_and_tied_to_their_source() {
    let values = expected_values();
    let mut outs = outputs(&values);
    // Right body, wrong hash.
    let (cut, _) = hash_member(&values[0]).unwrap();
    let wrong_hash = [
        &values[0][..cut.start],
        format!(r#","hash":"{}""#, "0".repeat(32)).as_bytes(),
        &values[0][cut.end..],
    ]
    .concat();
    outs[0].value = Some(&wrong_hash);
    // Right value, other key.
    outs[1].key = Some(b"x");
    // Right hash, a field changed.
    let changed = String::from_utf8(values[2].clone())
        .unwrap()
        .replace(r#""n":3"#, r#""n":4"#);
    outs[3].value = Some(changed.as_bytes());
    let forged = br#"{"forged":true}"#;
    outs.push(record(2, 0, "a", Some(forged), &[]));
    let n = numbers(1, 0);
    let dead = [dead_letter("d", b"[1]", &n)];
    let report = run(&source(), &outs, &dead, Guarantee::AtLeastOnce);
    only(
        &report,
        Counts {
            outputs: 5,
            dead_letters: 1,
            delivered: 2,
            wrong_hash: 1,
            changed_keys: 1,
            changed_fields: 1,
            forged: 1,
            ..Counts::default()
        },
    );
    assert_eq!(report.changed, 2);
    let kinds: Vec<(Kind, Option<i64>)> = report
        .findings
        .iter()
        .map(|f| (f.kind, f.source.map(|s| s.offset)))
        .collect();
    assert_eq!(
        kinds,
        [
            (Kind::WrongHash, Some(0)),
            (Kind::ChangedKey, Some(1)),
            (Kind::ChangedFields, Some(1)),
            (Kind::Forged, None)
        ]
    );
}

#[test]
fn changed_headers_count() {
    let values = expected_values();
    let mut outs = outputs(&values);
    outs[0].headers = vec![("n", None), ("h", Some(b"1"))];
    outs[1].headers.push(("extra", None));
    // The service's own headers are ignored.
    outs[3].headers.push((headers::SOURCE_TOPIC, Some(b"x")));
    let n = numbers(1, 0);
    let mut dead = dead_letter("d", b"[1]", &n);
    dead.headers[0].1 = Some(b"2");
    let report = run(&source(), &outs, &[dead], Guarantee::AtLeastOnce);
    assert_eq!(report.counts.changed_headers, 3);
    assert_eq!(report.counts.delivered, 5);
    assert_eq!(report.failed_rules, ["changed = 3"]);
}

#[test]
fn changed_timestamps_break_the_rule_unless_now() {
    let values = expected_values();
    let mut outs = outputs(&values);
    outs[0].timestamp = Some(TIMESTAMP + 1);
    outs[1].timestamp = None;
    let n = numbers(1, 0);
    let mut dead = dead_letter("d", b"[1]", &n);
    dead.timestamp = Some(0);
    let dead = [dead];
    let report = run(&source(), &outs, &dead, Guarantee::AtLeastOnce);
    assert_eq!(report.counts.changed_timestamps, 3, "{}", render(&report));
    assert_eq!(report.counts.changed(), 0, "content is not changed");
    assert_eq!(report.failed_rules, ["changed_timestamps = 3"]);
    assert_eq!(
        report
            .findings
            .iter()
            .filter(|f| f.kind == Kind::ChangedTimestamp)
            .count(),
        3
    );
    let report = run_with(
        &source(),
        &outs,
        &dead,
        Guarantee::AtLeastOnce,
        Timestamps::Now,
    );
    assert_eq!(report.counts.changed_timestamps, 3);
    assert!(report.passed, "{}", render(&report));
    assert!(report.findings.is_empty(), "no findings under now");
}

#[test]
fn dead_letters_are_checked_against_their_position() {
    let values = expected_values();
    let outs = outputs(&values);
    let (n10, n00, n99) = (numbers(1, 0), numbers(0, 0), numbers(9, 9));
    let mut too_large = dead_letter("a", br#"{"n":1}"#, &n00);
    too_large.headers[2].1 = Some(OUTPUT_TOO_LARGE);
    let mut other_topic = dead_letter("d", b"[1]", &n10);
    other_topic.headers[3].1 = Some(b"elsewhere");
    let dead = [
        dead_letter("d", b"[2]", &n10),
        dead_letter("d", b"[1]", &n99),
        other_topic,
        dead_letter("a", br#"{"n":1}"#, &n00),
        too_large,
    ];
    // Without the first output, the too-large dead letter is its delivery.
    let report = run(&source(), &outs[1..], &dead, Guarantee::AtLeastOnce);
    only(
        &report,
        Counts {
            outputs: 3,
            dead_letters: 5,
            delivered: 4,
            changed_fields: 1,
            forged: 3,
            ..Counts::default()
        },
    );
}

#[test]
fn dead_letters_without_their_value_are_checked_by_position_and_reason() {
    let values = expected_values();
    let outs = outputs(&values);
    let (n10, n00, n11) = (numbers(1, 0), numbers(0, 0), numbers(1, 1));
    let dropped = |key, n| {
        let mut d = dead_letter(key, b"", n);
        d.value = None;
        d.headers.push((headers::VALUE_DROPPED, Some(b"3")));
        d
    };
    // The array's dead letter, and the first object's as output_too_large: both right.
    let array = dropped("d", &n10);
    let mut too_large = dropped("a", &n00);
    too_large.headers[2].1 = Some(OUTPUT_TOO_LARGE);
    // An object dead-lettered for another reason: forged, as with its value.
    let object = dropped("c", &n11);
    let report = run(
        &source(),
        &outs[1..],
        &[array, too_large, object],
        Guarantee::AtLeastOnce,
    );
    only(
        &report,
        Counts {
            outputs: 3,
            dead_letters: 3,
            dead_letters_without_value: 2,
            delivered: 5,
            forged: 1,
            ..Counts::default()
        },
    );
}
