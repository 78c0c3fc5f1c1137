//! The audit without Kafka: source records, outputs and dead letters in, a [`Report`] out. See
//! the [module docs](super) for the matching rules.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Range;

use md5::{Digest, Md5};

use super::{Counts, Finding, Kind, Position, Report};
use crate::config::Guarantee;
use crate::dead_letter::{headers, Reason};
use crate::transform;

/// Findings listed per kind, at most; the counts are always complete.
const FINDINGS_PER_KIND: usize = 5;
/// The dead-letter reason of an object whose output was too large for the destination.
const OUTPUT_TOO_LARGE: &[u8] = Reason::OutputTooLarge.as_str().as_bytes();

/// One record as the audit sees it.
pub(super) struct Record<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

impl<'a> Record<'a> {
    fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| *v)
    }

    /// Digest of the headers, in order, without the service's own.
    fn headers_digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for (k, v) in self
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with(headers::PREFIX))
        {
            (k, v).hash(&mut h);
        }
        h.finish()
    }

    fn key_digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.key.hash(&mut h);
        h.finish()
    }
}

/// How many free source records of equal content an output's headers are compared with.
const HEADER_MATCH_SCAN: usize = 64;

/// A 128-bit content fingerprint.
type Fp = [u64; 2];

// Fingerprint domains, so that different kinds of content never compare equal.
const OUTPUT: u8 = b'o';
const DEAD: u8 = b'd';
const BODY: u8 = b'b';
const VALUE: u8 = b'v';

fn fp_of(digest: [u8; 16]) -> Fp {
    let (a, b) = digest.split_at(8);
    [
        u64::from_le_bytes(a.try_into().expect("8 bytes")),
        u64::from_le_bytes(b.try_into().expect("8 bytes")),
    ]
}

/// Fingerprint of (key, value) in domain `tag`.
fn fingerprint(tag: u8, key: Option<&[u8]>, value: Option<&[u8]>) -> Fp {
    fingerprint_parts(tag, key, value.map(|v| [v, &[][..]]))
}

/// Fingerprint of (key, value without the bytes in `cut`) in domain `tag`.
fn fingerprint_without(tag: u8, key: Option<&[u8]>, value: &[u8], cut: Range<usize>) -> Fp {
    fingerprint_parts(tag, key, Some([&value[..cut.start], &value[cut.end..]]))
}

fn fingerprint_parts(tag: u8, key: Option<&[u8]>, value: Option<[&[u8]; 2]>) -> Fp {
    let mut h = Md5::new();
    h.update([tag]);
    match key {
        None => h.update([0]),
        Some(k) => {
            h.update([1]);
            h.update((k.len() as u64).to_le_bytes());
            h.update(k);
        }
    }
    match value {
        None => h.update([0]),
        Some(parts) => {
            h.update([1]);
            parts.iter().for_each(|p| h.update(p));
        }
    }
    fp_of(h.finalize().into())
}

/// If the last member of `value` is `"hash":"<32 hex>"`: the bytes to cut to remove it (with
/// its comma), and the md5 it names. White space around its tokens is allowed.
fn hash_member(value: &[u8]) -> Option<(Range<usize>, [u8; 16])> {
    let back = |mut i: usize| {
        while i > 0 && matches!(value[i - 1], b' ' | b'\t' | b'\n' | b'\r') {
            i -= 1;
        }
        i
    };
    let close = back(value.len()).checked_sub(1)?;
    if value[close] != b'}' {
        return None;
    }
    let end = back(close);
    let start = end.checked_sub(34)?;
    if value[start] != b'"' || value[end - 1] != b'"' {
        return None;
    }
    let mut md5 = [0u8; 16];
    hex::decode_to_slice(&value[start + 1..end - 1], &mut md5).ok()?;
    let colon = back(start).checked_sub(1)?;
    if value[colon] != b':' {
        return None;
    }
    let name = back(colon).checked_sub(6)?;
    if &value[name..name + 6] != b"\"hash\"" {
        return None;
    }
    let before = back(name).checked_sub(1)?;
    match value[before] {
        b',' => Some((before..end, md5)),
        b'{' => Some((before + 1..end, md5)),
        _ => None,
    }
}

/// Fingerprints with a record index each, sorted: equal fingerprints form a run, in index order.
/// A directory on the leading bits of the (uniform) fingerprints takes a lookup straight to its
/// one or two entries: a binary search over millions of entries misses the cache at every step.
#[derive(Default)]
struct Index {
    entries: Vec<(Fp, u32)>,
    shift: u32,
    /// Per value of the leading bits: where its entries start; one more slot for the end.
    directory: Vec<u32>,
}

impl Index {
    fn with_capacity(capacity: usize) -> Self {
        Index {
            entries: Vec::with_capacity(capacity),
            ..Index::default()
        }
    }

    fn push(&mut self, fp: Fp, id: usize) {
        self.entries.push((fp, id as u32));
    }

    /// Sorts and builds the directory; lookups before this find nothing.
    fn seal(&mut self) {
        self.entries.sort_unstable();
        // About one entry per slot: 4 bytes per slot against 24 per entry.
        let bits = (usize::BITS - self.entries.len().leading_zeros()).min(24);
        self.shift = 64 - bits;
        let mut at = 0;
        self.directory = (0..=1usize << bits)
            .map(|slot| {
                while at < self.entries.len() && self.slot(&self.entries[at].0) < slot {
                    at += 1;
                }
                at as u32
            })
            .collect();
    }

    fn slot(&self, fp: &Fp) -> usize {
        fp[0].checked_shr(self.shift).unwrap_or(0) as usize
    }

    fn run(&self, fp: &Fp) -> Range<usize> {
        let slot = self.slot(fp);
        let (Some(&low), Some(&high)) = (self.directory.get(slot), self.directory.get(slot + 1))
        else {
            return 0..0;
        };
        let (low, high) = (low as usize, high as usize);
        let start = low + self.entries[low..high].partition_point(|(f, _)| f < fp);
        start..start + self.entries[start..high].partition_point(|(f, _)| f == fp)
    }

    fn id(&self, at: usize) -> usize {
        self.entries[at].1 as usize
    }

    fn ids(&self, fp: &Fp) -> impl Iterator<Item = usize> + '_ {
        self.run(fp).map(|at| self.id(at))
    }
}

/// A source record; its content lives only as fingerprints in the index.
#[derive(Debug, Clone, Copy)]
struct Source {
    partition: i32,
    offset: i64,
    headers: u64,
    flags: u8,
}

/// Expected in the dead-letter topic.
const DEAD_LETTER: u8 = 1;
/// Has a correct first delivery.
const DELIVERED: u8 = 2;
/// A wrong output or dead letter is tied to it.
const EXPLAINED: u8 = 4;

/// A destination record that matched no expected content, until explained.
struct WrongOutput {
    at: Position,
    kind: Kind,
    source: Option<usize>,
    claimed: Option<Fp>,
}

#[derive(Clone, Copy)]
enum Topic {
    Source = 0,
    Destination = 1,
    DeadLetters = 2,
}

pub(super) struct Auditor {
    topics: [String; 3],
    sources: Vec<Source>,
    expected: Index,
    /// Per run of equal expected content longer than one: how many of its first entries are
    /// all delivered.
    taken: HashMap<usize, usize>,
    /// Per output [`Topic`]: (source partition, output partition, key) to the highest source
    /// offset delivered first.
    order: [HashMap<(i32, i32, u64), i64>; 3],
    wrong: Vec<WrongOutput>,
    by_body: Index,
    by_value: Index,
    by_hash: Index,
    counts: Counts,
    findings: Vec<Finding>,
    buf: Vec<u8>,
}

impl Auditor {
    pub(super) fn new(topics: [String; 3], capacity: usize) -> Self {
        Auditor {
            topics,
            sources: Vec::with_capacity(capacity),
            expected: Index::with_capacity(capacity),
            taken: HashMap::new(),
            order: Default::default(),
            wrong: Vec::new(),
            by_body: Index::default(),
            by_value: Index::default(),
            by_hash: Index::default(),
            counts: Counts::default(),
            findings: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Source records must come in (partition, offset) order.
    pub(super) fn add_source(&mut self, r: &Record<'_>) {
        debug_assert!(self
            .sources
            .last()
            .map_or(true, |s| (s.partition, s.offset) < (r.partition, r.offset)));
        let (fp, flags) = match r.value {
            None => {
                self.counts.tombstones += 1;
                (fingerprint(OUTPUT, r.key, None), 0)
            }
            Some(v) => match transform::transform_into(v, &mut self.buf) {
                Ok(()) => (fingerprint(OUTPUT, r.key, Some(&self.buf)), 0),
                Err(_) => {
                    self.counts.expected_dead_letters += 1;
                    (fingerprint(DEAD, r.key, Some(v)), DEAD_LETTER)
                }
            },
        };
        self.counts.source_records += 1;
        self.expected.push(fp, self.sources.len());
        self.sources.push(Source {
            partition: r.partition,
            offset: r.offset,
            headers: r.headers_digest(),
            flags,
        });
    }

    pub(super) fn seal_sources(&mut self) {
        self.expected.seal();
    }

    pub(super) fn add_output(&mut self, r: &Record<'_>) {
        self.counts.outputs += 1;
        let run = self.expected.run(&fingerprint(OUTPUT, r.key, r.value));
        if run.is_empty() {
            return self.add_wrong_output(r);
        }
        let id = |at: usize| self.expected.id(at);
        if run.len() == 1 {
            let source = id(run.start);
            if self.sources[source].flags & DELIVERED != 0 {
                return self.duplicate(source, r);
            }
            return self.deliver(source, Topic::Destination, r);
        }
        // Equal content from several source records (the generator's names repeat): take the
        // first free one with the output's headers, else the first free one. Free entries start
        // at `taken`, below which every entry is delivered.
        let first_free = self.taken.get(&run.start).copied().unwrap_or(0);
        let headers = r.headers_digest();
        if first_free == run.len() {
            let source = (run.start..run.end)
                .take(HEADER_MATCH_SCAN)
                .find(|at| self.sources[id(*at)].headers == headers)
                .unwrap_or(run.end - 1);
            return self.duplicate(id(source), r);
        }
        let free = |at: &usize| self.sources[id(*at)].flags & DELIVERED == 0;
        let pick = (run.start + first_free..run.end)
            .filter(free)
            .take(HEADER_MATCH_SCAN)
            .find(|at| self.sources[id(*at)].headers == headers)
            .unwrap_or(run.start + first_free);
        let source = id(pick);
        // After `pick` is delivered: the first free entry, the same one unless it was `pick`.
        let next_free = (run.start + first_free..run.end)
            .find(|at| *at != pick && free(at))
            .map_or(run.len(), |at| at - run.start);
        self.deliver(source, Topic::Destination, r);
        self.taken.insert(run.start, next_free);
    }

    fn duplicate(&mut self, source: usize, r: &Record<'_>) {
        self.counts.duplicates += 1;
        self.note(Kind::Duplicate, Topic::Destination, r, Some(source));
        self.check_headers(source, Topic::Destination, r);
    }

    fn add_wrong_output(&mut self, r: &Record<'_>) {
        let i = self.wrong.len();
        let mut claimed = None;
        if let Some(v) = r.value {
            if let Some((cut, md5)) = hash_member(v) {
                let body = fingerprint_without(BODY, r.key, v, cut);
                self.by_body.push(body, i);
                claimed = Some(fp_of(md5));
                self.by_hash.push(fp_of(md5), i);
            }
        }
        self.by_value.push(fingerprint(VALUE, None, r.value), i);
        self.wrong.push(WrongOutput {
            at: Position {
                partition: r.partition,
                offset: r.offset,
            },
            kind: Kind::Forged,
            source: None,
            claimed,
        });
    }

    pub(super) fn add_dead_letter(&mut self, r: &Record<'_>) {
        self.counts.dead_letters += 1;
        let Some(source) = self.dead_letter_source(r) else {
            self.counts.forged += 1;
            return self.note(Kind::Forged, Topic::DeadLetters, r, None);
        };
        let belongs = self.sources[source].flags & DEAD_LETTER != 0;
        let too_large = r.header(headers::ERROR_KIND) == Some(OUTPUT_TOO_LARGE);
        if !belongs && !too_large {
            // An object or tombstone, which belongs in the destination.
            self.sources[source].flags |= EXPLAINED;
            self.counts.forged += 1;
            return self.note(Kind::Forged, Topic::DeadLetters, r, Some(source));
        }
        if r.value.is_none() && r.header(headers::VALUE_DROPPED).is_some() {
            // Sent without its value (too large): its key and value cannot be compared, the
            // audit keeps only fingerprints of the source.
            self.counts.dead_letters_without_value += 1;
        } else {
            let expected = if belongs {
                Some(fingerprint(DEAD, r.key, r.value))
            } else {
                r.value
                    .filter(|v| transform::transform_into(v, &mut self.buf).is_ok())
                    .map(|_| fingerprint(OUTPUT, r.key, Some(&self.buf)))
            };
            if !expected.is_some_and(|fp| self.expected.ids(&fp).any(|i| i == source)) {
                self.sources[source].flags |= EXPLAINED;
                self.counts.changed_fields += 1;
                return self.note(Kind::ChangedFields, Topic::DeadLetters, r, Some(source));
            }
        }
        if self.sources[source].flags & DELIVERED != 0 {
            self.counts.duplicates += 1;
            self.note(Kind::Duplicate, Topic::DeadLetters, r, Some(source));
            self.check_headers(source, Topic::DeadLetters, r);
        } else {
            self.deliver(source, Topic::DeadLetters, r);
        }
    }

    /// The source record a dead letter names in its headers, if it is in the audited source.
    fn dead_letter_source(&self, r: &Record<'_>) -> Option<usize> {
        let number =
            |name: &str| -> Option<i64> { std::str::from_utf8(r.header(name)?).ok()?.parse().ok() };
        if r.header(headers::SOURCE_TOPIC)? != self.topics[0].as_bytes() {
            return None;
        }
        let partition = i32::try_from(number(headers::SOURCE_PARTITION)?).ok()?;
        self.position(partition, number(headers::SOURCE_OFFSET)?)
    }

    fn deliver(&mut self, source: usize, to: Topic, r: &Record<'_>) {
        let s = &mut self.sources[source];
        s.flags |= DELIVERED;
        let (partition, offset) = (s.partition, s.offset);
        self.counts.delivered += 1;
        self.check_headers(source, to, r);
        let highest = self.order[to as usize]
            .entry((partition, r.partition, r.key_digest()))
            .or_insert(offset);
        if offset < *highest {
            self.counts.order_violations += 1;
            self.note(Kind::OrderViolation, to, r, Some(source));
        } else {
            *highest = offset;
        }
    }

    fn check_headers(&mut self, source: usize, to: Topic, r: &Record<'_>) {
        if self.sources[source].headers != r.headers_digest() {
            self.counts.changed_headers += 1;
            self.note(Kind::ChangedHeaders, to, r, Some(source));
        }
    }

    fn position(&self, partition: i32, offset: i64) -> Option<usize> {
        self.sources
            .binary_search_by_key(&(partition, offset), |s| (s.partition, s.offset))
            .ok()
    }

    pub(super) fn has_wrong_outputs(&self) -> bool {
        !self.wrong.is_empty()
    }

    pub(super) fn seal_wrong_outputs(&mut self) {
        for index in [&mut self.by_body, &mut self.by_value, &mut self.by_hash] {
            index.seal();
        }
    }

    /// Second pass over the source: ties wrong outputs to the source records they came from.
    pub(super) fn explain(&mut self, r: &Record<'_>) {
        let Some(source) = self.position(r.partition, r.offset) else {
            return;
        };
        let mut offers = Vec::new();
        match r.value {
            None => offers.extend(
                self.by_value
                    .ids(&fingerprint(VALUE, None, None))
                    .map(|i| (i, Kind::ChangedKey)),
            ),
            Some(v) => {
                if transform::transform_into(v, &mut self.buf).is_err() {
                    return;
                }
                let out = &self.buf;
                let md5 = fp_of(Md5::digest(v).into());
                if let Some((cut, _)) = hash_member(out) {
                    let body = fingerprint_without(BODY, r.key, out, cut);
                    offers.extend(self.by_body.ids(&body).map(|i| {
                        // Only the hash member's spelling differs: not a wrong hash.
                        let right = self.wrong[i].claimed == Some(md5);
                        (
                            i,
                            if right {
                                Kind::ChangedFields
                            } else {
                                Kind::WrongHash
                            },
                        )
                    }));
                }
                let value = fingerprint(VALUE, None, Some(out));
                offers.extend(self.by_value.ids(&value).map(|i| (i, Kind::ChangedKey)));
                offers.extend(self.by_hash.ids(&md5).map(|i| (i, Kind::ChangedFields)));
            }
        }
        let delivered = |s: usize| self.sources[s].flags & DELIVERED != 0;
        for (i, kind) in offers {
            let w = &self.wrong[i];
            // Ties go to a source record that has no correct output, which is then not lost.
            let better = kind < w.kind
                || (kind == w.kind && w.source.is_some_and(delivered) && !delivered(source));
            if better {
                self.wrong[i].kind = kind;
                self.wrong[i].source = Some(source);
            }
        }
    }

    pub(super) fn finish(mut self, guarantee: Guarantee) -> Report {
        for w in std::mem::take(&mut self.wrong) {
            *match w.kind {
                Kind::WrongHash => &mut self.counts.wrong_hash,
                Kind::ChangedKey => &mut self.counts.changed_keys,
                Kind::ChangedFields => &mut self.counts.changed_fields,
                _ => &mut self.counts.forged,
            } += 1;
            if let Some(s) = w.source {
                self.sources[s].flags |= EXPLAINED;
            }
            self.add_finding(w.kind, Topic::Destination, w.at, w.source);
        }
        for i in 0..self.sources.len() {
            let s = self.sources[i];
            if s.flags & (DELIVERED | EXPLAINED) == 0 {
                self.counts.lost += 1;
                let at = Position {
                    partition: s.partition,
                    offset: s.offset,
                };
                self.add_finding(Kind::Lost, Topic::Source, at, None);
            }
        }
        let failed_rules = self.counts.broken_rules(guarantee);
        let [source, destination, dlq] = self.topics;
        Report {
            source,
            destination,
            dlq,
            guarantee,
            counts: self.counts,
            changed: self.counts.changed(),
            passed: failed_rules.is_empty(),
            failed_rules,
            findings: self.findings,
        }
    }

    fn note(&mut self, kind: Kind, topic: Topic, r: &Record<'_>, source: Option<usize>) {
        let at = Position {
            partition: r.partition,
            offset: r.offset,
        };
        self.add_finding(kind, topic, at, source);
    }

    fn add_finding(&mut self, kind: Kind, topic: Topic, at: Position, source: Option<usize>) {
        if self.findings.iter().filter(|f| f.kind == kind).count() >= FINDINGS_PER_KIND {
            return;
        }
        let source = source.map(|s| Position {
            partition: self.sources[s].partition,
            offset: self.sources[s].offset,
        });
        self.findings.push(Finding {
            kind,
            topic: self.topics[topic as usize].clone(),
            partition: at.partition,
            offset: at.offset,
            source,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::render;

    type Header<'a> = (&'a str, Option<&'a [u8]>);

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
        let mut a = Auditor::new(["in".into(), "out".into(), "in.dlq".into()], 0);
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
    fn hash_member_is_found_and_cut() {
        let o = out(r#"{"a":1}"#);
        let (cut, md5) = hash_member(&o).unwrap();
        assert_eq!(&o[..cut.start], br#"{"a":1"#);
        assert_eq!(&o[cut.end..], b"}");
        assert_eq!(hex::encode(md5), hex::encode(Md5::digest(br#"{"a":1}"#)));
        let o = out(" { } \n");
        let (cut, _) = hash_member(&o).unwrap();
        assert_eq!([&o[..cut.start], &o[cut.end..]].concat(), b" { } \n");
        let hex = "0123456789abcdef0123456789ABCDEF";
        let spaced = format!("{{ \"a\":1 ,\n \"hash\" : \"{hex}\" }}");
        let (cut, _) = hash_member(spaced.as_bytes()).unwrap();
        assert_eq!(&spaced[cut], format!(",\n \"hash\" : \"{hex}\""));
        for no in [
            r#"{"a":1}"#.to_string(),
            r#"{"hash":"short"}"#.to_string(),
            format!(r#"{{"a":1,"hash":"{}"}}"#, "z".repeat(32)),
            format!(r#"["hash","{hex}"]"#),
            format!(r#"{{"a":1,"hashed":"{hex}"}}"#),
            format!(r#""hash":"{hex}"}}"#),
            String::new(),
        ] {
            assert_eq!(hash_member(no.as_bytes()), None, "{no}");
        }
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
}
