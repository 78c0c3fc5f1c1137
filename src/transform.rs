//! The record transform: bytes in, bytes (or a typed rejection) out. No Kafka types here.
//!
//! # Output contract
//! For an input value that is a JSON object, the output is the input bytes with
//! `,"hash":"<md5>"` inserted right after the last member's value (`{"hash":"<md5>"}` for `{}`),
//! where `<md5>` is the lowercase hex md5 of the raw input bytes as consumed. Every other byte is
//! kept: member order, white space, number spellings (no float rounding of big integers), string
//! escapes. If the object already has top-level `hash` members they are removed first, so the
//! output always has exactly one `hash`, last.
//!
//! Values that are not a JSON object (invalid UTF-8, invalid JSON, arrays, scalars) are
//! [`Rejection`]s: the caller dead-letters them unchanged.

use md5::{Digest, Md5};

mod scan;

use scan::{Fail, Scanner};

/// The field the transform adds.
pub const HASH_FIELD: &str = "hash";

/// Why a value cannot be transformed; it goes to the dead-letter topic with this reason. Its
/// name there, and so its `Display`, is the dead-letter module's (`crate::dead_letter::Reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectionKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// The bytes are not UTF-8, so they cannot be JSON.
    InvalidUtf8,
    /// The bytes are UTF-8 but not one JSON value (syntax error, truncated, trailing data).
    InvalidJson,
    /// Valid JSON, but an array, string, number, boolean or null rather than an object.
    NotAnObject,
}

/// Lowercase hex md5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> [u8; 32] {
    let digest = Md5::digest(bytes);
    let mut hex = [0u8; 32];
    hex::encode_to_slice(digest, &mut hex).expect("32 bytes hold a 16-byte digest");
    hex
}

/// Transforms one value into `out` (cleared first), following the output contract above.
///
/// `out` is a caller-owned buffer so the hot path allocates nothing once it has grown.
pub fn transform_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), Rejection> {
    let layout = scan(input)?;
    let hash = md5_hex(input);
    out.clear();
    out.reserve(input.len() + HASH_MEMBER_LEN);
    if layout.hash_members.is_empty() {
        // The common case: one splice after the last member.
        out.extend_from_slice(&input[..layout.insert_at]);
        push_hash_member(out, layout.has_members, &hash);
        out.extend_from_slice(&input[layout.insert_at..]);
    } else {
        layout.write_without_hash_members(input, out);
        let kept = layout.members.len() > layout.hash_members.len();
        push_hash_member(out, kept, &hash);
        out.extend_from_slice(&input[layout.insert_at..]);
    }
    Ok(())
}

/// Allocating convenience around [`transform_into`].
pub fn transform(input: &[u8]) -> Result<Vec<u8>, Rejection> {
    let mut out = Vec::new();
    transform_into(input, &mut out)?;
    Ok(out)
}

/// `,"hash":"` + 32 + `"`.
const HASH_MEMBER_LEN: usize = 10 + 32 + 1;

fn push_hash_member(out: &mut Vec<u8>, after_member: bool, hash: &[u8; 32]) {
    if after_member {
        out.push(b',');
    }
    out.extend_from_slice(b"\"hash\":\"");
    out.extend_from_slice(hash);
    out.push(b'"');
}

/// Where the members of the top-level object are, as byte offsets into the input.
struct Layout {
    /// Just after the opening brace.
    body_start: usize,
    /// Where the hash member goes: after the last member's value, or after `{` when empty.
    insert_at: usize,
    has_members: bool,
    /// End offset of each member's value, in order. Filled only when a `hash` member exists,
    /// since only then do we need to cut members out.
    members: Vec<usize>,
    /// Indexes into `members` of top-level `hash` members.
    hash_members: Vec<usize>,
}

impl Layout {
    /// Copies the input up to `insert_at`, leaving out every `hash` member with its separator.
    fn write_without_hash_members(&self, input: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&input[..self.body_start]);
        let mut wrote_member = false;
        let mut prev_end = self.body_start;
        for (i, &end) in self.members.iter().enumerate() {
            if !self.hash_members.contains(&i) {
                // The segment since the previous value is `[ws] , [ws] "key" [ws] : [ws] value`
                // (no comma for the first member). Drop its comma if nothing precedes it now.
                let mut segment = &input[prev_end..end];
                if !wrote_member && i > 0 {
                    let comma = segment.iter().position(|&b| b == b',').expect("separator");
                    segment = &segment[comma + 1..];
                }
                out.extend_from_slice(segment);
                wrote_member = true;
            }
            prev_end = end;
        }
    }
}

fn scan(input: &[u8]) -> Result<Layout, Rejection> {
    std::str::from_utf8(input).map_err(|e| Rejection {
        kind: RejectionKind::InvalidUtf8,
        message: e.to_string(),
    })?;
    let invalid = |(at, what): Fail| Rejection {
        kind: RejectionKind::InvalidJson,
        message: format!("{what} at byte {at}"),
    };
    let mut scanner = Scanner { s: input, i: 0 };
    scanner.skip_ws();
    if scanner.peek() != Some(b'{') {
        return Err(scanner.not_an_object().unwrap_or_else(invalid));
    }
    let body_start = scanner.i + 1;
    let mut found = scanner.object(false).map_err(invalid)?;
    if found.hash_members > 0 {
        // Rare: walk again, this time noting where every member ends.
        found = Scanner {
            s: input,
            i: body_start - 1,
        }
        .object(true)
        .map_err(invalid)?;
    }
    Ok(Layout {
        body_start,
        insert_at: found.last_end.unwrap_or(body_start),
        has_members: found.last_end.is_some(),
        members: found.members,
        hash_members: found.hash_indexes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(input: &str) -> String {
        String::from_utf8(transform(input.as_bytes()).unwrap()).unwrap()
    }

    fn hex_of(input: &str) -> String {
        String::from_utf8(md5_hex(input.as_bytes()).to_vec()).unwrap()
    }

    fn reject(input: &[u8]) -> RejectionKind {
        transform(input).unwrap_err().kind
    }

    #[test]
    fn md5_of_known_inputs() {
        assert_eq!(&md5_hex(b""), b"d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(&md5_hex(b"abc"), b"900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn literal_md5_values() {
        // Each expected hash is `printf %s '<input>' | md5sum`.
        assert_eq!(
            t(r#"{"first_name":"Bonita","last_name":"Kautzer"}"#),
            r#"{"first_name":"Bonita","last_name":"Kautzer","hash":"b699b9921cc43491297671fc5233a96c"}"#
        );
        assert_eq!(
            t(r#"{"a":1}"#),
            r#"{"a":1,"hash":"bb6cb5c68df4652941caf652a366f2d8"}"#
        );
        assert_eq!(t("{}"), r#"{"hash":"99914b932bd37a50b983c5e7c90ae93b"}"#);
        assert_eq!(
            t(r#"{"name":"Zoë Núñez"}"#),
            r#"{"name":"Zoë Núñez","hash":"7e35a6bbeab4ef319a520f733bb7f44e"}"#
        );
    }

    #[test]
    fn hash_covers_spacing_exactly() {
        let compact = t(r#"{"a":1}"#);
        let spaced = t("{ \"a\" : 1 }\n");
        assert_ne!(compact[compact.len() - 34..], spaced[spaced.len() - 36..]);
        assert!(spaced.starts_with("{ \"a\" : 1,\"hash\":\""));
        assert!(spaced.ends_with("\" }\n"));
    }

    #[test]
    fn keeps_order_numbers_escapes_and_unicode() {
        let input = r#"{"z":12345678901234567890123,"a":1.10,"s":"\u00e9\"\n","ü":"Zoë","n":{"x":[1,{"y":null}]}}"#;
        let out = t(input);
        let body = &input[..input.len() - 1];
        assert!(out.starts_with(body), "{out}");
        assert!(out[body.len()..].starts_with(",\"hash\":\""));
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        let keys: Vec<_> = parsed.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["z", "a", "s", "ü", "n", "hash"]);
    }

    #[test]
    fn empty_object_with_spaces() {
        assert_eq!(
            t(" { } "),
            format!(" {{\"hash\":\"{}\" }} ", hex_of(" { } "))
        );
    }

    #[test]
    fn existing_hash_member_is_replaced_and_moved_last() {
        let h = hex_of;
        let input = r#"{"hash":"old","a":1, "b":2}"#;
        assert_eq!(
            t(input),
            format!(r#"{{"a":1, "b":2,"hash":"{}"}}"#, h(input))
        );
        let input = r#"{"a":1,"hash":"old","b":2}"#;
        assert_eq!(
            t(input),
            format!(r#"{{"a":1,"b":2,"hash":"{}"}}"#, h(input))
        );
        let input = r#"{"a":1,"h\u0061sh":{"x":1}}"#;
        assert_eq!(t(input), format!(r#"{{"a":1,"hash":"{}"}}"#, h(input)));
        let input = r#"{"hash":1}"#;
        assert_eq!(t(input), format!(r#"{{"hash":"{}"}}"#, h(input)));
        let input = r#"{"hash":1,"hash":2}"#;
        assert_eq!(t(input), format!(r#"{{"hash":"{}"}}"#, h(input)));
        // Only top-level members count.
        assert!(t(r#"{"n":{"hash":1}}"#).starts_with(r#"{"n":{"hash":1},"hash":""#));
    }

    #[test]
    fn rejections() {
        assert_eq!(reject(b"\xff\xfe{}"), RejectionKind::InvalidUtf8);
        assert_eq!(reject(b"{\"a\":\"\xc3\x28\"}"), RejectionKind::InvalidUtf8);
        assert_eq!(reject(b"{\"a\":"), RejectionKind::InvalidJson);
        assert_eq!(reject(b"{\"a\":1}}"), RejectionKind::InvalidJson);
        assert_eq!(reject(b"{\"a\":1} {}"), RejectionKind::InvalidJson);
        assert_eq!(reject(b""), RejectionKind::InvalidJson);
        assert_eq!(reject(b"not json"), RejectionKind::InvalidJson);
        assert_eq!(reject(b"[1,2]"), RejectionKind::NotAnObject);
        assert_eq!(reject(b"\"s\""), RejectionKind::NotAnObject);
        assert_eq!(reject(b"42"), RejectionKind::NotAnObject);
        assert_eq!(reject(b"null"), RejectionKind::NotAnObject);
        assert_eq!(reject(b"true"), RejectionKind::NotAnObject);
        let r = transform(b"[1]").unwrap_err();
        assert!(
            r.to_string().starts_with("not_an_object: invalid type"),
            "{r}"
        );
    }

    /// The scanner accepts exactly what serde_json accepts as one JSON object.
    #[test]
    fn scanner_agrees_with_serde_json_on_edge_cases() {
        let cases: &[&str] = &[
            r#"{"a":01}"#,
            r#"{"a":-0}"#,
            r#"{"a":-}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":1e+}"#,
            r#"{"a":1E-7}"#,
            r#"{"a":0.0e0}"#,
            r#"{"a":+1}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\u12g4"}"#,
            r#"{"a":"\uD800"}"#,
            r#"{"\uD800":1}"#,
            r#"{"a":"\/\b\f\n\r\t\"\\"}"#,
            "{\"a\":\"\t\"}",
            r#"{"a":1,}"#,
            r#"{,"a":1}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[,1]}"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":truex}"#,
            r#"{"a":nul}"#,
            r#"{"a":falsy}"#,
            r#"{a:1}"#,
            r#"{"a":{"b":{"c":[[],{},[{}]]}}}"#,
            r#"{"a":{"b":}}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":{"b" "c"}}"#,
            r#"{"a":{"b":1,}}"#,
            r#"{"a":1}x"#,
            "\u{feff}{}",
            "{}\n\t\r ",
            " {\"a\" : [ 1 , { \"b\" : null } ] } ",
            r#"{"a":"é\u00e9😀"}"#,
        ];
        for case in cases {
            let serde = serde_json::from_str::<&serde_json::value::RawValue>(case)
                .is_ok_and(|v| v.get().starts_with('{'));
            assert_eq!(transform(case.as_bytes()).is_ok(), serde, "{case}");
        }
    }

    #[test]
    fn deep_nesting_is_no_stack_overflow() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200_000), "]".repeat(200_000));
        assert!(transform(deep.as_bytes()).is_ok());
        let open = format!("{{\"a\":{}", "[".repeat(200_000));
        assert_eq!(reject(open.as_bytes()), RejectionKind::InvalidJson);
    }

    #[test]
    fn non_objects_are_told_from_invalid_json() {
        assert_eq!(reject(b" [1, {\"a\":2}] "), RejectionKind::NotAnObject);
        assert_eq!(reject(b"-1.5e3"), RejectionKind::NotAnObject);
        assert_eq!(reject(b"[1,"), RejectionKind::InvalidJson);
        assert_eq!(reject(b"1x"), RejectionKind::InvalidJson);
        assert_eq!(reject(b"\"unterminated"), RejectionKind::InvalidJson);
        let r = transform(b"{\"a\" 1}").unwrap_err();
        assert_eq!(r.message, "expected `:` at byte 5");
    }

    #[test]
    fn numbers_beyond_f64_are_kept_verbatim() {
        // Valid JSON grammar even though no f64 holds it: kept as written, never rounded.
        assert!(t(r#"{"e":1e400,"i":-0.000000000000000000001}"#)
            .starts_with(r#"{"e":1e400,"i":-0.000000000000000000001,"hash":"#));
    }

    #[test]
    fn output_is_valid_json_with_right_hash() {
        for input in [
            r#"{"a":"x"}"#,
            "{\n  \"a\": [1, 2],\n  \"b\": {}\n}",
            r#"{"e":1e300}"#,
        ] {
            let out = t(input);
            let v: serde_json::Value =
                serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
            let hash = v["hash"].as_str().unwrap();
            assert_eq!(hash.as_bytes(), md5_hex(input.as_bytes()));
        }
    }
}
