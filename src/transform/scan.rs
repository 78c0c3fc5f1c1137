//! The validating JSON scanner behind [`super::transform_into`]: where the top-level object's
//! members end, and whether any of them is `hash`, in one pass over the bytes.

use super::{Rejection, RejectionKind, HASH_FIELD};

/// Where a scan failed (byte offset) and what it expected.
pub(super) type Fail = (usize, &'static str);

pub(super) struct Found {
    pub(super) last_end: Option<usize>,
    /// Number of top-level `hash` members.
    pub(super) hash_members: usize,
    /// With `collect`: end offset of each member's value, and which of them are `hash`.
    pub(super) members: Vec<usize>,
    pub(super) hash_indexes: Vec<usize>,
}

/// A validating JSON scanner over bytes already known to be UTF-8: RFC 8259's grammar, as
/// serde_json accepts it (no trailing commas, no control characters in strings, no leading zeros,
/// `\u` escapes not checked for surrogate pairs). Iterative, so nesting depth costs heap, not
/// stack: a hostile record cannot overflow the worker's stack.
pub(super) struct Scanner<'a> {
    pub(super) s: &'a [u8],
    pub(super) i: usize,
}

impl Scanner<'_> {
    pub(super) fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn fail<T>(&self, what: &'static str) -> Result<T, Fail> {
        Err((self.i, what))
    }

    pub(super) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// The top-level object, at its `{`, through the end of the input.
    pub(super) fn object(&mut self, collect: bool) -> Result<Found, Fail> {
        let mut found = Found {
            last_end: None,
            hash_members: 0,
            members: Vec::new(),
            hash_indexes: Vec::new(),
        };
        self.i += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
        } else {
            loop {
                self.skip_ws();
                let key_start = self.i + 1;
                let escaped = self.key()?;
                let key = &self.s[key_start..self.i - 1];
                let is_hash = if escaped {
                    unescape_is(key, HASH_FIELD)
                } else {
                    key == HASH_FIELD.as_bytes()
                };
                self.skip_ws();
                if self.peek() != Some(b':') {
                    return self.fail("expected `:`");
                }
                self.i += 1;
                self.value()?;
                if is_hash {
                    found.hash_members += 1;
                    if collect {
                        found.hash_indexes.push(found.members.len());
                    }
                }
                if collect {
                    found.members.push(self.i);
                }
                found.last_end = Some(self.i);
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    Some(_) => return self.fail("expected `,` or `}`"),
                    None => return self.fail("EOF while parsing an object"),
                }
            }
        }
        self.skip_ws();
        if self.i != self.s.len() {
            return self.fail("trailing characters");
        }
        Ok(found)
    }

    /// Why a value that does not start with `{` is rejected: not an object if it is otherwise
    /// one valid JSON value, else where it is invalid.
    pub(super) fn not_an_object(&mut self) -> Result<Rejection, Fail> {
        let kind = match self.peek() {
            Some(b'[') => "array",
            Some(b'"') => "string",
            Some(b'-' | b'0'..=b'9') => "number",
            Some(b't' | b'f') => "boolean",
            Some(b'n') => "null",
            _ => return self.fail("expected value"),
        };
        self.value()?;
        self.skip_ws();
        if self.i != self.s.len() {
            return self.fail("trailing characters");
        }
        Ok(Rejection {
            kind: RejectionKind::NotAnObject,
            message: format!("invalid type: {kind}, expected a JSON object"),
        })
    }

    /// A member's key (white space skipped): a string. Whether it holds escapes.
    fn key(&mut self) -> Result<bool, Fail> {
        if self.peek() != Some(b'"') {
            return self.fail("expected a string key");
        }
        self.string()
    }

    /// One JSON value (leading white space skipped), nested containers included.
    fn value(&mut self) -> Result<(), Fail> {
        // Open containers, innermost last: `[` or `{`.
        let mut open: Vec<u8> = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    self.i += 1;
                    self.skip_ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                    } else {
                        open.push(c);
                        if c == b'{' {
                            self.key_and_colon()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(_) => return self.fail("expected value"),
                None => return self.fail("EOF while parsing a value"),
            }
            // A value is complete: close what it completes, up to the next member or element.
            loop {
                let Some(&container) = open.last() else {
                    return Ok(());
                };
                self.skip_ws();
                match (self.peek(), container) {
                    (Some(b','), _) => {
                        self.i += 1;
                        if container == b'{' {
                            self.skip_ws();
                            self.key_and_colon()?;
                        }
                        break;
                    }
                    (Some(b']'), b'[') | (Some(b'}'), b'{') => {
                        self.i += 1;
                        open.pop();
                    }
                    (Some(_), b'[') => return self.fail("expected `,` or `]`"),
                    (Some(_), _) => return self.fail("expected `,` or `}`"),
                    (None, _) => return self.fail("EOF while parsing a list or object"),
                }
            }
        }
    }

    fn key_and_colon(&mut self) -> Result<(), Fail> {
        self.key()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return self.fail("expected `:`");
        }
        self.i += 1;
        Ok(())
    }

    /// A string, at its opening quote. Whether it holds escapes.
    fn string(&mut self) -> Result<bool, Fail> {
        self.i += 1;
        let mut escaped = false;
        loop {
            self.skip_plain_8();
            while let Some(&b) = self.s.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            for _ in 0..4 {
                                match self.peek() {
                                    Some(c) if c.is_ascii_hexdigit() => self.i += 1,
                                    Some(_) => return self.fail("invalid escape"),
                                    None => return self.fail("EOF while parsing a string"),
                                }
                            }
                        }
                        Some(_) => return self.fail("invalid escape"),
                        None => return self.fail("EOF while parsing a string"),
                    }
                }
                Some(_) => {
                    return self
                        .fail("control character (\\u0000-\\u001F) found while parsing a string")
                }
                None => return self.fail("EOF while parsing a string"),
            }
        }
    }

    /// Skips 8 bytes at a time while none of them is `"`, `\\` or a control character (SWAR: the
    /// long text members of real records are mostly plain).
    fn skip_plain_8(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        while let Some(chunk) = self.s.get(self.i..self.i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            let quote = has_zero(w ^ (ONES * u64::from(b'"')));
            let backslash = has_zero(w ^ (ONES * u64::from(b'\\')));
            let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
            if quote | backslash | control != 0 {
                return;
            }
            self.i += 8;
        }
    }

    fn number(&mut self) -> Result<(), Fail> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return self.fail("invalid number");
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.fail("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), Fail> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return self.fail("invalid number");
        }
        self.digits();
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Fail> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            self.fail("expected value")
        }
    }
}

/// Whether a string's raw contents (between the quotes, escapes valid) decode to `text`.
fn unescape_is(raw: &[u8], text: &str) -> bool {
    let mut units: Vec<u16> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' {
            // UTF-8 was validated; decode the char that starts here.
            let len = utf8_len(raw[i]);
            let ch = std::str::from_utf8(&raw[i..i + len])
                .ok()
                .and_then(|s| s.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            let mut buf = [0u16; 2];
            units.extend_from_slice(ch.encode_utf16(&mut buf));
            i += len;
            continue;
        }
        let unit = match raw[i + 1] {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => 0x0a,
            b'r' => 0x0d,
            b't' => 0x09,
            b'u' => {
                let hex = std::str::from_utf8(&raw[i + 2..i + 6]).unwrap_or("0");
                i += 4;
                u16::from_str_radix(hex, 16).unwrap_or(0xfffd)
            }
            other => u16::from(other),
        };
        units.push(unit);
        i += 2;
    }
    text.encode_utf16().eq(units)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}
