//! Test records and the checks on what comes out.
//!
//! Every record carries headers `seq` (per-key sequence number) and `test.id` (unique id), so
//! each output maps back to its input, and most have a third, null-valued header. Valid values
//! are JSON objects in varied spellings (compact, spaced, pretty, nested, escapes, unicode, a big
//! integer, surrounding white space) whose bytes must survive exactly.

use std::collections::{HashMap, HashSet};

use md5::{Digest, Md5};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Received;

pub const SEQ: &str = "seq";
pub const ID: &str = "test.id";

/// Where a record must end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// In the destination, with `hash` added.
    Transformed,
    /// In the destination, value null.
    Tombstone,
    /// In the dead-letter topic, unchanged, with this `ktransform.error.kind`.
    DeadLetter(&'static str),
}

#[derive(Debug, Clone)]
pub struct TestRecord {
    pub id: u64,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub expect: Expect,
    /// Its create time in ms, if the test sets one (else the producer stamps it).
    pub timestamp: Option<i64>,
}

/// What to mix in besides valid objects.
#[derive(Debug, Clone, Copy)]
pub enum Mix {
    /// Only valid objects.
    Clean,
    /// 1% poison of every kind and one tombstone per 5,000 records.
    Poisoned,
}

const FIRST: &[&str] = &[
    "Bonita",
    "Zoë",
    "José",
    "Łukasz",
    "Søren",
    "Ayşe",
    "Kiến",
    "D'Andre",
    "李",
    "Мария",
    "😀",
];
const LAST: &[&str] = &[
    "Kautzer",
    "Núñez",
    "Müller",
    "O'Brien",
    "Nguyễn",
    "Øster",
    "王",
    "Иванова",
    "Smith",
];

/// The seed of [`generate`]: env `KTRANSFORM_TEST_SEED`, else random (print it to reproduce).
pub fn seed() -> u64 {
    std::env::var("KTRANSFORM_TEST_SEED")
        .map_or_else(|_| rand::random(), |s| s.parse().expect("a u64 seed"))
}

/// `n` records with ids 0..n, keyed with one of `keys` keys.
pub fn generate(n: usize, keys: usize, mix: Mix, seed: u64) -> Vec<TestRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seqs = vec![0u64; keys];
    (0..n as u64)
        .map(|id| {
            let k = rng.gen_range(0..keys);
            let seq = seqs[k];
            seqs[k] += 1;
            let mut headers = vec![
                (SEQ.to_string(), Some(seq.to_string().into_bytes())),
                (ID.to_string(), Some(id.to_string().into_bytes())),
            ];
            if id % 3 != 0 {
                headers.push(("trace".to_string(), None));
            }
            let (value, expect) = match mix {
                Mix::Poisoned if id % 100 == 50 => {
                    let (value, kind) = poison(id);
                    (Some(value), Expect::DeadLetter(kind))
                }
                Mix::Poisoned if id % 5000 == 17 => (None, Expect::Tombstone),
                _ => (Some(valid(id, &mut rng)), Expect::Transformed),
            };
            TestRecord {
                id,
                key: format!("key-{k}").into_bytes(),
                value,
                headers,
                expect,
                timestamp: None,
            }
        })
        .collect()
}

fn valid(id: u64, rng: &mut StdRng) -> Vec<u8> {
    let first = FIRST[rng.gen_range(0..FIRST.len())];
    let last = LAST[rng.gen_range(0..LAST.len())];
    let text = match rng.gen_range(0..7) {
        0 => format!(r#"{{"id":{id},"first_name":"{first}","last_name":"{last}"}}"#),
        1 => format!(r#"{{ "id" : {id} , "first_name" : "{first}" , "last_name" : "{last}" }}"#),
        2 => format!("{{\n  \"id\": {id},\n  \"first_name\": \"{first}\",\n  \"last_name\": \"{last}\"\n}}\n"),
        3 => format!(
            r#"{{"id":{id},"first_name":"{first}","last_name":"{last}","address":{{"city":"Zürich","geo":[1.5,-2e-3,{{"x":null}}]}},"tags":[]}}"#
        ),
        4 => format!(
            r#"{{"id":{id},"first_name":"{first}","last_name":"{last}","big":12345678901234567890123,"neg":-0.0,"ratio":1.10}}"#
        ),
        5 => format!(
            r#"{{"id":{id},"first_name":"{first}","last_name":"{last}","note":"tab\t \"q\" \\ \u00e9 \ud83d\ude00 \/"}}"#
        ),
        _ => format!(" \t{{\"id\":{id},\"first_name\":\"{first}\",\"last_name\":\"{last}\"}} \r\n"),
    };
    text.into_bytes()
}

/// A value that is not a JSON object, and the error kind it must be dead-lettered with.
fn poison(id: u64) -> (Vec<u8>, &'static str) {
    match (id / 100) % 7 {
        0 => (
            format!(r#"{{"id":{id},"first_name":"Trunc"#).into_bytes(),
            "invalid_json",
        ),
        1 => (
            format!(r#"{{"id":{id}}} trailing"#).into_bytes(),
            "invalid_json",
        ),
        2 => {
            let mut v = format!(r#"{{"id":{id},"first_name":""#).into_bytes();
            v.extend_from_slice(b"\xff\xfe\xc3\x28\"}");
            (v, "invalid_utf8")
        }
        3 => (
            format!(r#"[{id},"Bonita","Kautzer"]"#).into_bytes(),
            "not_an_object",
        ),
        4 => (id.to_string().into_bytes(), "not_an_object"),
        5 => (format!(r#""record {id}""#).into_bytes(), "not_an_object"),
        _ => (b"null".to_vec(), "not_an_object"),
    }
}

/// Lowercase hex md5, computed here independently of ktransform.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// The exact output for a non-empty object without a `hash` member: the input with
/// `,"hash":"<md5>"` spliced in right after the last member's value (before any white space
/// that precedes the closing brace).
pub fn expected_output(input: &[u8]) -> Vec<u8> {
    let brace = input.iter().rposition(|&b| b == b'}').expect("an object");
    let at = input[..brace]
        .iter()
        .rposition(|b| !b" \t\r\n".contains(b))
        .expect("a member")
        + 1;
    let member = format!(r#","hash":"{}""#, md5_hex(input));
    [&input[..at], member.as_bytes(), &input[at..]].concat()
}

/// Checks `output` as JSON: the input's members in order with equal values, then `hash`, right.
pub fn check_json(input: &[u8], output: &[u8]) -> Result<(), String> {
    type Object = serde_json::Map<String, serde_json::Value>;
    let parse = |b: &[u8]| {
        serde_json::from_slice::<Object>(b)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(b)))
    };
    let (input_object, output_object) = (parse(input)?, parse(output)?);
    let mut members: Vec<&str> = input_object.keys().map(String::as_str).collect();
    members.push("hash");
    if !output_object
        .keys()
        .map(String::as_str)
        .eq(members.iter().copied())
    {
        return Err(format!(
            "members {:?}, not {members:?}",
            output_object.keys().collect::<Vec<_>>()
        ));
    }
    if let Some((k, _)) = input_object
        .iter()
        .find(|(k, v)| output_object[k.as_str()] != **v)
    {
        return Err(format!("member {k} changed"));
    }
    if output_object["hash"] != md5_hex(input) {
        return Err(format!(
            "hash {}, not {}",
            output_object["hash"],
            md5_hex(input)
        ));
    }
    Ok(())
}

/// The `test.id` header of a record read back.
pub fn id_of(r: &Received) -> u64 {
    r.header_str(ID)
        .and_then(|s| s.parse().ok())
        .expect("a test.id header")
}

/// Records read back, by `test.id`.
pub fn by_id(records: &[Received]) -> HashMap<u64, Vec<&Received>> {
    let mut map: HashMap<u64, Vec<&Received>> = HashMap::new();
    for r in records {
        map.entry(id_of(r)).or_default().push(r);
    }
    map
}

/// Per-key order under at-least-once: within each partition, in offset order, every `seq` seen
/// for the first time is above all earlier ones of its key (a replay may repeat a run of
/// records, never reorder them). Also a key must stay in one partition. Returns the violations.
pub fn key_order_violations(records: &[Received]) -> Vec<String> {
    let mut sorted: Vec<&Received> = records.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut partition_of: HashMap<&[u8], i32> = HashMap::new();
    let mut seen: HashMap<&[u8], (u64, HashSet<u64>)> = HashMap::new();
    let mut violations = Vec::new();
    for r in sorted {
        let key = r.key.as_deref().expect("a key");
        let seq: u64 = r
            .header_str(SEQ)
            .and_then(|s| s.parse().ok())
            .expect("a seq header");
        if *partition_of.entry(key).or_insert(r.partition) != r.partition {
            violations.push(format!(
                "key {} in partitions {} and {}",
                show(key),
                partition_of[key],
                r.partition
            ));
        }
        let (max, set) = seen.entry(key).or_insert((0, HashSet::new()));
        if set.insert(seq) {
            if seq < *max {
                violations.push(format!(
                    "key {} seq {seq} after {max} at {}@{}",
                    show(key),
                    r.partition,
                    r.offset
                ));
            }
            *max = (*max).max(seq);
        }
    }
    violations
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Which expected ids arrived how often.
#[derive(Debug)]
pub struct Tally {
    pub expected: usize,
    pub received: usize,
    /// Expected ids that did not arrive (the first few are in `lost_ids`).
    pub lost: usize,
    pub lost_ids: Vec<u64>,
    /// Arrivals beyond the first of an id.
    pub duplicates: usize,
    /// Arrivals of ids that were not expected here.
    pub unexpected: usize,
}

pub fn tally(expected: impl IntoIterator<Item = u64>, received: &[Received]) -> Tally {
    let expected: HashSet<u64> = expected.into_iter().collect();
    let got = by_id(received);
    let mut lost_ids: Vec<u64> = expected
        .iter()
        .filter(|id| !got.contains_key(id))
        .copied()
        .collect();
    lost_ids.sort_unstable();
    let lost = lost_ids.len();
    lost_ids.truncate(10);
    Tally {
        expected: expected.len(),
        received: received.len(),
        lost,
        lost_ids,
        duplicates: got.values().map(|v| v.len() - 1).sum(),
        unexpected: got
            .keys()
            .filter(|id| !expected.contains(id))
            .map(|id| got[id].len())
            .sum(),
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "records={} received={} lost={} duplicates={} unexpected={}",
            self.expected, self.received, self.lost, self.duplicates, self.unexpected
        )
    }
}
