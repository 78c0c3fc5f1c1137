//! Record contents as the audit compares them: 128-bit fingerprints, never the bytes, so that
//! millions of source records fit in memory; a sorted index over fingerprints; and an output's
//! hash member, cut out to compare the rest.

use std::ops::Range;

use md5::{Digest, Md5};

/// A 128-bit content fingerprint.
pub(super) type Fp = [u64; 2];

// Fingerprint domains, so that different kinds of content never compare equal.
pub(super) const OUTPUT: u8 = b'o';
pub(super) const DEAD: u8 = b'd';
pub(super) const BODY: u8 = b'b';
pub(super) const VALUE: u8 = b'v';

pub(super) fn fp_of(digest: [u8; 16]) -> Fp {
    let (a, b) = digest.split_at(8);
    [
        u64::from_le_bytes(a.try_into().expect("8 bytes")),
        u64::from_le_bytes(b.try_into().expect("8 bytes")),
    ]
}

/// Fingerprint of (key, value) in domain `tag`.
pub(super) fn fingerprint(tag: u8, key: Option<&[u8]>, value: Option<&[u8]>) -> Fp {
    fingerprint_parts(tag, key, value.map(|v| [v, &[][..]]))
}

/// Fingerprint of (key, value without the bytes in `cut`) in domain `tag`.
pub(super) fn fingerprint_without(
    tag: u8,
    key: Option<&[u8]>,
    value: &[u8],
    cut: Range<usize>,
) -> Fp {
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
pub(super) fn hash_member(value: &[u8]) -> Option<(Range<usize>, [u8; 16])> {
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
pub(super) struct Index {
    entries: Vec<(Fp, u32)>,
    shift: u32,
    /// Per value of the leading bits: where its entries start; one more slot for the end.
    directory: Vec<u32>,
}

impl Index {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Index {
            entries: Vec::with_capacity(capacity),
            ..Index::default()
        }
    }

    pub(super) fn push(&mut self, fp: Fp, id: usize) {
        self.entries.push((fp, id as u32));
    }

    /// Sorts and builds the directory; lookups before this find nothing.
    pub(super) fn seal(&mut self) {
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

    pub(super) fn run(&self, fp: &Fp) -> Range<usize> {
        let slot = self.slot(fp);
        let (Some(&low), Some(&high)) = (self.directory.get(slot), self.directory.get(slot + 1))
        else {
            return 0..0;
        };
        let (low, high) = (low as usize, high as usize);
        let start = low + self.entries[low..high].partition_point(|(f, _)| f < fp);
        start..start + self.entries[start..high].partition_point(|(f, _)| f == fp)
    }

    pub(super) fn id(&self, at: usize) -> usize {
        self.entries[at].1 as usize
    }

    pub(super) fn ids(&self, fp: &Fp) -> impl Iterator<Item = usize> + '_ {
        self.run(fp).map(|at| self.id(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(input: &str) -> Vec<u8> {
        crate::transform::transform(input.as_bytes()).unwrap()
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
}
