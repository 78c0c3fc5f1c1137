//! The audit without Kafka: source records, outputs and dead letters in, a [`Report`] out. See
//! the [module docs](super) for the matching rules.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use md5::{Digest, Md5};

use super::{Counts, Finding, Kind, Position, Report};
use crate::config::{Guarantee, Timestamps};
use crate::dead_letter::{headers, Reason};
use crate::transform;

mod content;
#[cfg(test)]
mod tests;

use content::{
    fingerprint, fingerprint_without, fp_of, hash_member, Fp, Index, BODY, DEAD, OUTPUT, VALUE,
};

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
    /// ms since the epoch (create or append time), if it has one.
    pub timestamp: Option<i64>,
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

/// A source record; its content lives only as fingerprints in the index.
#[derive(Debug, Clone, Copy)]
struct Source {
    partition: i32,
    offset: i64,
    headers: u64,
    timestamp: Option<i64>,
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
    /// Whether outputs must carry their input's timestamp (`--timestamp source`).
    timestamps: Timestamps,
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
    pub(super) fn new(topics: [String; 3], capacity: usize, timestamps: Timestamps) -> Self {
        Auditor {
            topics,
            timestamps,
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
            timestamp: r.timestamp,
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
        let matched = (run.start + first_free..run.end)
            .filter(free)
            .take(HEADER_MATCH_SCAN)
            .find(|at| self.sources[id(*at)].headers == headers);
        if matched.is_none() {
            // A replay of a delivered record whose content another record still waiting for
            // its output shares: a duplicate, not that record's delivery with changed headers.
            let delivered = (run.start..run.end)
                .filter(|at| !free(at))
                .take(HEADER_MATCH_SCAN)
                .find(|at| self.sources[id(*at)].headers == headers);
            if let Some(at) = delivered {
                return self.duplicate(id(at), r);
            }
        }
        let pick = matched.unwrap_or(run.start + first_free);
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
        self.check_timestamp(source, to, r);
    }

    /// An output or dead letter whose timestamp is not its input's: a broken rule under
    /// `--timestamp source`, expected (and only counted) under `now`.
    fn check_timestamp(&mut self, source: usize, to: Topic, r: &Record<'_>) {
        if self.sources[source].timestamp != r.timestamp {
            self.counts.changed_timestamps += 1;
            if self.timestamps == Timestamps::Source {
                self.note(Kind::ChangedTimestamp, to, r, Some(source));
            }
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
        let failed_rules = self.counts.broken_rules(guarantee, self.timestamps);
        let [source, destination, dlq] = self.topics;
        Report {
            source,
            destination,
            dlq,
            guarantee,
            timestamps: self.timestamps,
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
