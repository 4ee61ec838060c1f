//! Strict JSON reading for ledger lines (contract §1.1–§1.2).
//!
//! Why not `serde_json::Value`: the contract judges things that its data
//! model throws away. A repeated member name must be refused at any depth
//! (serde keeps the last one); an integer literal beyond ±(2^53−1) is only
//! valid when spelled exactly as RFC 8785 writes its nearest double, and
//! `seq` must be written without fraction or exponent, so the literal text of
//! every number has to survive parsing. This reader keeps that text, refuses
//! non-I-JSON input (infinite numbers, lone surrogates, repeated names), and
//! sorts object members by UTF-16 code units while parsing, so that the
//! canonical writer (`jcs`) is a single walk with no sorting or allocation.
//!
//! Strings without escapes borrow from the line; only escaped strings
//! allocate. The input is `&str`: UTF-8 validity is checked once, up front,
//! by the caller.

use std::borrow::Cow;
use std::cmp::Ordering;

/// Nesting deeper than this is refused. The contract requires 100 levels to
/// be accepted; the margin matches serde_json's default recursion limit.
pub const MAX_DEPTH: usize = 128;

/// The largest integer a double holds exactly: 2^53 − 1.
pub const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A parsed JSON value borrowing from the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(Number<'a>),
    String(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    /// Members sorted by UTF-16 code units of their (unescaped) names, with
    /// no name repeated: the order RFC 8785 writes them in.
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

/// A number: its nearest double, and the literal exactly as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number<'a> {
    pub value: f64,
    pub literal: &'a str,
}

/// The value of an integer literal of at most 15 digits (exact as a
/// double, and its own canonical form), other than `-0`.
fn small_integer(literal: &str) -> Option<f64> {
    let (negative, digits) = match literal.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, literal),
    };
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits == "0" && negative {
        return None;
    }
    let magnitude = digits
        .bytes()
        .fold(0i64, |n, b| n * 10 + i64::from(b - b'0'));
    // Up to 15 digits: below 2^53, so the conversion is exact.
    Some(if negative { -magnitude } else { magnitude } as f64)
}

impl Number<'_> {
    /// Canonical text is the literal itself (a small integer other than
    /// `-0`): RFC 8785 writes such a double as its decimal digits.
    pub fn is_canonical_literal(&self) -> bool {
        small_integer(self.literal).is_some()
    }

    /// True when written with neither fraction nor exponent (`12`, `-0`).
    pub fn is_integer_literal(&self) -> bool {
        !self
            .literal
            .bytes()
            .any(|b| matches!(b, b'.' | b'e' | b'E'))
    }
}

/// Why a line is not acceptable JSON, and where (byte offset in the line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub message: String,
    pub at: usize,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.message, self.at)
    }
}

/// Parses one complete JSON text (surrounding JSON white space allowed).
pub fn parse(text: &str) -> Result<Value<'_>, JsonError> {
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    p.skip_ws();
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.error("trailing characters after the JSON value"));
    }
    Ok(value)
}

/// Orders member names by their UTF-16 code units, as RFC 8785 §3.2.3 asks.
///
/// UTF-8 byte order equals code point order, which differs from UTF-16 order
/// only between a supplementary character (a surrogate pair, 0xD800..) and
/// one in U+E000..=U+FFFF; so compare bytes, and look at the first differing
/// characters as UTF-16 only there.
/// The index of the first byte that ends a plain run of string content:
/// `"`, `\\` or a control character (below 0x20). Eight bytes at a time
/// (SWAR): strings are most of a line's bytes, and both the reader and the
/// canonical writer scan them.
pub fn special_byte(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        let x = u64::from_le_bytes(word);
        // A flag at the lowest flagged byte is exact (borrows only run
        // upwards), which is the one wanted.
        let flags = zero_in(x ^ (ONES * u64::from(b'"')))
            | zero_in(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS);
        if flags != 0 {
            return Some(i + (flags.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|p| i + p)
}

pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let Some(i) = ab.iter().zip(bb).position(|(x, y)| x != y) else {
        return ab.len().cmp(&bb.len());
    };
    // The shared prefix ends on the same char boundary in both strings.
    let mut start = i;
    while !a.is_char_boundary(start) {
        start -= 1;
    }
    match (a[start..].chars().next(), b[start..].chars().next()) {
        (Some(ca), Some(cb)) => {
            let (mut ua, mut ub) = ([0u16; 2], [0u16; 2]);
            ca.encode_utf16(&mut ua).cmp(&cb.encode_utf16(&mut ub))
        }
        _ => ab.cmp(bb),
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, message: impl Into<String>) -> JsonError {
        JsonError {
            message: message.into(),
            at: self.pos,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            Some(_) => Err(self.error("expected a JSON value")),
            None => Err(self.error("unexpected end of line")),
        }
    }

    fn literal(&mut self, word: &str, value: Value<'a>) -> Result<Value<'a>, JsonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a JSON value"))
        }
    }

    fn enter(&self, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")))
        } else {
            Ok(())
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        self.enter(depth)?;
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']' in array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        self.enter(depth)?;
        let start = self.pos;
        self.pos += 1; // '{'
        let mut members: Vec<(Cow<'a, str>, Value<'a>)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a member name"));
            }
            let name = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':' after member name"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((name, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.error("expected ',' or '}' in object")),
            }
        }
        // Sorting here is what lets the canonical writer be a plain walk;
        // equal names end up adjacent, which is how repeats are found.
        members.sort_unstable_by(|a, b| cmp_utf16(&a.0, &b.0));
        if let Some(w) = members.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(JsonError {
                message: format!("repeated member name '{}'", w[0].0),
                at: self.repeat_at(start, depth),
            });
        }
        Ok(Value::Object(members))
    }

    /// Where the second occurrence of a repeated member name of the object
    /// at `start` is. Found again only on that (rare) error path, so a
    /// parse that succeeds keeps no positions.
    fn repeat_at(&self, start: usize, depth: usize) -> usize {
        let mut p = Parser {
            text: self.text,
            bytes: self.bytes,
            pos: start + 1,
        };
        let mut seen = std::collections::HashSet::new();
        loop {
            p.skip_ws();
            let at = p.pos;
            let Ok(name) = p.string() else { return start };
            if !seen.insert(name) {
                return at;
            }
            p.skip_ws();
            p.pos += 1; // ':'
            p.skip_ws();
            if p.value(depth).is_err() {
                return start;
            }
            p.skip_ws();
            if p.peek() != Some(b',') {
                return start;
            }
            p.pos += 1;
        }
    }

    fn number(&mut self) -> Result<Number<'a>, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number: digit expected after '.'"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number: digit expected in exponent"));
            }
            self.digits();
        }
        let literal = &self.text[start..self.pos];
        // Most numbers in events are small integers: exact in a double, and
        // already in canonical form (but `-0`), so no float parsing needed.
        if let Some(value) = small_integer(literal) {
            return Ok(Number { value, literal });
        }
        // Rust's float parser rounds to nearest, ties to even: exactly the
        // double RFC 8785 expects. The grammar above is a subset of its own.
        let value: f64 = literal.parse().map_err(|_| JsonError {
            message: format!("invalid number {literal}"),
            at: start,
        })?;
        let number = Number { value, literal };
        if !value.is_finite() {
            return Err(JsonError {
                message: format!("number {literal} is out of the range of a double (not I-JSON)"),
                at: start,
            });
        }
        if value.abs() > MAX_SAFE_INTEGER
            && number.is_integer_literal()
            && super::number::format_number(value) != literal
        {
            return Err(JsonError {
                message: format!(
                    "integer {literal} is beyond ±(2^53−1) and not spelled as its double {} (write large integers as strings)",
                    super::number::format_number(value)
                ),
                at: start,
            });
        }
        Ok(number)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.pos += 1; // opening quote
        let start = self.pos;
        // Fast path: no escapes, borrow the bytes as they are.
        self.pos += special_byte(&self.bytes[self.pos..]).unwrap_or(self.bytes.len() - self.pos);
        loop {
            match self.peek() {
                Some(b'"') => {
                    let s = &self.text[start..self.pos];
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(0x00..=0x1f) => return Err(self.error("control character in string")),
                Some(_) => self.pos += 1,
                None => return Err(self.error("unterminated string")),
            }
        }
        let mut owned = String::with_capacity(self.pos - start + 16);
        owned.push_str(&self.text[start..self.pos]);
        loop {
            let run_start = self.pos;
            self.pos +=
                special_byte(&self.bytes[self.pos..]).unwrap_or(self.bytes.len() - self.pos);
            owned.push_str(&self.text[run_start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(owned));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut owned)?;
                }
                Some(_) => return Err(self.error("control character in string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), JsonError> {
        let Some(c) = self.peek() else {
            return Err(self.error("unterminated escape"));
        };
        self.pos += 1;
        match c {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let at = self.pos - 2;
                let unit = self.hex4()?;
                let code = match unit {
                    0xD800..=0xDBFF => {
                        if self.bytes[self.pos..].starts_with(b"\\u") {
                            self.pos += 2;
                            let low = self.hex4()?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return Err(JsonError {
                                    message: "lone surrogate escape (not I-JSON)".into(),
                                    at,
                                });
                            }
                            0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                        } else {
                            return Err(JsonError {
                                message: "lone surrogate escape (not I-JSON)".into(),
                                at,
                            });
                        }
                    }
                    0xDC00..=0xDFFF => {
                        return Err(JsonError {
                            message: "lone surrogate escape (not I-JSON)".into(),
                            at,
                        })
                    }
                    other => u32::from(other),
                };
                // Every value reaching here is a scalar value: surrogates were
                // either paired above or refused.
                match char::from_u32(code) {
                    Some(ch) => out.push(ch),
                    None => return Err(self.error("invalid \\u escape")),
                }
            }
            _ => return Err(self.error("invalid escape")),
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let Some(digits) = self.bytes.get(self.pos..self.pos + 4) else {
            return Err(self.error("truncated \\u escape"));
        };
        let mut v: u16 = 0;
        for &d in digits {
            let n = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.error("invalid hex digit in \\u escape")),
            };
            v = (v << 4) | u16::from(n);
        }
        self.pos += 4;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_byte_finds_the_first_quote_backslash_or_control_character() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"plain text without anything".to_vec(),
            "é€😀 \"x".as_bytes().to_vec(),
        ];
        for len in 0..20 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f, 0x0a] {
                    let mut v = vec![b'a'; len];
                    v[at] = special;
                    // Bytes just above the specials must not be flagged.
                    if at + 1 < len {
                        v[at + 1] = 0x21;
                    }
                    cases.push(v);
                }
                let mut v: Vec<u8> = (0..len as u8).map(|k| 0x20 + k).collect();
                v[at] = 0x7f;
                cases.push(v);
                cases.push(vec![0xff; len]);
                cases.push(vec![0x80; len]);
            }
        }
        for c in &cases {
            assert_eq!(special_byte(c), naive(c), "{c:?}");
        }
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().message
    }

    #[test]
    fn parses_and_sorts_members() {
        let v = parse(r#" {"b":1,"a":[true,false,null],"c":{"z":"x","y":-0.5e1}} "#).unwrap();
        let Value::Object(m) = v else { panic!() };
        let names: Vec<&str> = m.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn refuses_repeated_names_at_any_depth_even_with_equal_values() {
        assert!(err(r#"{"a":1,"a":1}"#).contains("repeated member name 'a'"));
        // The byte of the second occurrence, not of the object.
        let at = |text| parse(text).unwrap_err().at;
        assert_eq!(at(r#"{"a":1,"a":1}"#), 7);
        assert_eq!(at(r#"[0, {"b":{"c":1}, "a":1, "b":2}]"#), 25);
        assert!(err(r#"{"x":[{"k":1,"k":2}]}"#).contains("repeated"));
        // Names are compared after unescaping.
        assert!(err(r#"{"a":1,"\u0061":2}"#).contains("repeated"));
    }

    #[test]
    fn refuses_non_i_json() {
        assert!(err("1e400").contains("out of the range"));
        assert!(err("-1e400").contains("out of the range"));
        assert!(err(r#""\ud800""#).contains("lone surrogate"));
        assert!(err(r#""\udc00""#).contains("lone surrogate"));
        assert!(err(r#""\ud800\u0041""#).contains("lone surrogate"));
        assert!(err("9007199254740993").contains("beyond"));
        assert!(err("18446744073709551615").contains("beyond"));
        assert!(err("-9007199254740993").contains("beyond"));
    }

    #[test]
    fn accepts_big_integers_spelled_as_their_double() {
        for ok in [
            "9007199254740991",
            "9007199254740992",
            "18446744073709552000",
            "-9007199254740992",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        // Not integer literals: the rule does not apply.
        assert!(parse("1.8446744073709551615e19").is_ok());
        // Huge exponents underflow to zero or overflow to infinity without panicking.
        assert!(parse("1e-99999999999999999999999").is_ok());
        assert!(parse("1e99999999999999999999999").is_err());
    }

    #[test]
    fn refuses_bad_syntax() {
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "tru",
            "nul",
            "\"a",
            "\"\\x\"",
            "\"\t\"",
            "{\"a\" 1}",
            "{1:2}",
            "[1 2]",
            "{} {}",
            "\u{feff}{}",
            "NaN",
            "Infinity",
            "-",
            "\"\\u12\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn nesting_limit() {
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&ok).is_ok());
        let ok = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(err(&deep).contains("nesting"));
    }

    #[test]
    fn unescapes_strings() {
        let v = parse(r#""a\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE02""#).unwrap();
        assert_eq!(
            v,
            Value::String(Cow::Owned("a\"\\/\u{8}\u{c}\n\r\té😂".into()))
        );
    }

    #[test]
    fn utf16_order() {
        // U+FB33 (BMP, above the surrogates) sorts after U+1F602 in UTF-16,
        // though its code point is lower.
        assert_eq!(cmp_utf16("\u{fb33}", "\u{1f602}"), Ordering::Greater);
        assert_eq!(cmp_utf16("a", "ab"), Ordering::Less);
        assert_eq!(cmp_utf16("\u{80}", "\u{f6}"), Ordering::Less);
        assert_eq!(cmp_utf16("x", "x"), Ordering::Equal);
    }
}
