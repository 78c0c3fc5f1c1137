//! The transform fuzzed with proptest, against the output contract (docs/records.md, "The
//! output"): arbitrary bytes, and near-JSON bytes, never panic, and whatever is accepted comes
//! out as a JSON object carrying the md5 of the input; every JSON object, nested arbitrarily and
//! serialized compact or pretty, with white space around, comes out byte for byte as the input
//! with `,"hash":"<md5>"` spliced in after the last member; an existing top-level `hash` is
//! replaced by one new `hash`, last.
//!
//! Cases per property: 512 by default, 20,000 under `KTRANSFORM_CHAOS=1` (about 1 min in a
//! debug build); env `KTRANSFORM_PROPTEST_CASES` overrides both. No broker needed.

mod common;

use std::fmt;

use proptest::prelude::*;
use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use common::data::{check_json, expected_output, md5_hex};
use ktransform::transform::{transform, RejectionKind, HASH_FIELD};

fn config() -> ProptestConfig {
    let cases = common::faults::scaled("KTRANSFORM_PROPTEST_CASES", 512, 20_000);
    ProptestConfig::with_cases(cases as u32)
}

/// Member names: short ASCII, arbitrary Unicode (control characters and quotes escaped by
/// the serializer), and `hash` itself (kept when nested; top-level ones are left out by
/// [`object`]).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_]{0,8}",
        4 => any::<String>(),
        1 => Just(HASH_FIELD.to_string()),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A top-level object without a `hash` member.
fn object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((key(), value()), 0..8).prop_map(|members| {
        members
            .into_iter()
            .filter(|(k, _)| k != HASH_FIELD)
            .collect()
    })
}

/// JSON white space, as may surround a value.
fn space() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,3}"
}

/// `object` serialized compact or pretty, with `before` and `after` around it.
fn spelled(object: &Map<String, Value>, pretty: bool, before: &str, after: &str) -> Vec<u8> {
    let body = if pretty {
        serde_json::to_vec_pretty(object)
    } else {
        serde_json::to_vec(object)
    }
    .unwrap();
    [before.as_bytes(), &body, after.as_bytes()].concat()
}

/// The top-level members of a JSON object, duplicates included, in order, values unparsed
/// (JSON allows numbers such as `1e400` that serde_json's `Value` refuses).
fn top_level_members(bytes: &[u8]) -> Result<Vec<(String, Box<RawValue>)>, serde_json::Error> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some(member) = map.next_entry()? {
                members.push(member);
            }
            Ok(members)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let members = (&mut de).deserialize_map(Members)?;
    de.end()?;
    Ok(members)
}

/// Whether `bytes` are one JSON object, white space around allowed: the oracle for what the
/// transform must accept.
fn is_json_object(bytes: &[u8]) -> bool {
    serde_json::from_slice::<&RawValue>(bytes).is_ok_and(|v| v.get().starts_with('{'))
}

/// Checks an accepted input's output: a JSON object whose last member, and only `hash`, is the
/// md5 of the input.
fn check_accepted(input: &[u8], output: &[u8]) -> Result<(), TestCaseError> {
    let members = top_level_members(output).map_err(|e| {
        TestCaseError::fail(format!(
            "output is not a JSON object ({e}): {}",
            String::from_utf8_lossy(output)
        ))
    })?;
    let hashes = members.iter().filter(|(n, _)| n == HASH_FIELD).count();
    prop_assert_eq!(hashes, 1, "one hash member");
    let (name, value) = members.last().unwrap();
    prop_assert_eq!(name.as_str(), HASH_FIELD, "hash is the last member");
    prop_assert_eq!(value.get(), format!("\"{}\"", md5_hex(input)));
    Ok(())
}

/// Mutations of a valid object's bytes: truncated, a byte replaced, a byte inserted.
fn near_json() -> impl Strategy<Value = Vec<u8>> {
    (
        object(),
        any::<bool>(),
        any::<prop::sample::Index>(),
        any::<u8>(),
        0..3u8,
    )
        .prop_map(|(object, pretty, at, byte, how)| {
            let mut bytes = spelled(&object, pretty, "", "");
            let i = at.index(bytes.len() + 1);
            match how {
                0 => bytes.truncate(i),
                1 if i < bytes.len() => bytes[i] = byte,
                _ => bytes.insert(i, byte),
            }
            bytes
        })
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes: no panic; accepted exactly when they are one JSON object (white space
    /// around allowed), and then the output is right; rejected with the right kind otherwise.
    #[test]
    fn any_bytes_never_panic(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        near_json(),
    ]) {
        let is_object = is_json_object(&bytes);
        match transform(&bytes) {
            Ok(output) => {
                prop_assert!(is_object, "accepted a non-object: {:?}", String::from_utf8_lossy(&bytes));
                check_accepted(&bytes, &output)?;
            }
            Err(rejection) => {
                prop_assert!(!is_object, "rejected an object ({rejection}): {:?}", String::from_utf8_lossy(&bytes));
                let utf8 = std::str::from_utf8(&bytes).is_ok();
                prop_assert_eq!(rejection.kind == RejectionKind::InvalidUtf8, !utf8, "{}", rejection);
                prop_assert!(!rejection.message.is_empty());
            }
        }
    }

    /// Every JSON object, compact or pretty, white space around: the input with
    /// `,"hash":"<md5>"` right after the last member's value (`{"hash":"<md5>"}` for `{}`);
    /// as JSON, the input's members in order with equal values, then `hash`.
    #[test]
    fn objects_get_the_hash_spliced_in(
        object in object(),
        pretty in any::<bool>(),
        before in space(),
        after in space(),
    ) {
        let input = spelled(&object, pretty, &before, &after);
        let output = transform(&input)
            .map_err(|r| TestCaseError::fail(format!("rejected ({r}): {}", String::from_utf8_lossy(&input))))?;
        let expected = if object.is_empty() {
            let member = format!(r#"{{"hash":"{}"}}"#, md5_hex(&input));
            [before.as_bytes(), member.as_bytes(), after.as_bytes()].concat()
        } else {
            expected_output(&input)
        };
        prop_assert_eq!(
            String::from_utf8_lossy(&output),
            String::from_utf8_lossy(&expected),
            "input {:?}",
            String::from_utf8_lossy(&input)
        );
        check_json(&input, &output).map_err(TestCaseError::fail)?;
        check_accepted(&input, &output)?;
    }

    /// An object that already has a top-level `hash`, anywhere: one `hash` comes out, last,
    /// the md5 of the input; the other members keep their order and values.
    #[test]
    fn an_existing_hash_is_replaced(
        object in object(),
        old in value(),
        at in any::<prop::sample::Index>(),
        pretty in any::<bool>(),
    ) {
        let mut members: Vec<(String, Value)> = object.into_iter().collect();
        members.insert(at.index(members.len() + 1), (HASH_FIELD.to_string(), old));
        let with_hash: Map<String, Value> = members.into_iter().collect();
        let input = spelled(&with_hash, pretty, "", "\n");
        let output = transform(&input)
            .map_err(|r| TestCaseError::fail(format!("rejected ({r}): {}", String::from_utf8_lossy(&input))))?;
        check_accepted(&input, &output)?;
        // Both sides parsed: serde_json's float parsing may differ from the value serialized.
        let members = |bytes: &[u8]| -> Vec<(String, Value)> {
            let object: Map<String, Value> = serde_json::from_slice(bytes).unwrap();
            object.into_iter().filter(|(k, _)| k != HASH_FIELD).collect()
        };
        prop_assert_eq!(members(&output), members(&input));
        prop_assert!(output.ends_with(b"\n"), "the text after the closing brace is kept");
    }
}
