//! RFC 8785 (JSON Canonicalization Scheme) writer.
//!
//! The parser (`json`) already sorted every object's members by UTF-16 code
//! units and refused everything that is not I-JSON, so canonicalization is a
//! single walk that appends bytes to a caller-owned buffer (reused per line,
//! so the hot path does not allocate). Numbers are written as ECMAScript's
//! `Number.prototype.toString` does ([`super::number`]); strings escape only what
//! RFC 8785 §3.2.2.2 says must be escaped.
//!
//! Tested against the published RFC 8785 data and 200k ECMAScript number
//! cases in `tests/it/rfc8785.rs`, and against an independent crate in
//! property tests.

use super::json::Value;
use super::number::write_number;

/// Appends the canonical form of `value` to `out`.
pub fn write_value(out: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) if n.is_canonical_literal() => out.extend_from_slice(n.literal.as_bytes()),
        Value::Number(n) => write_number(out, n.value),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => write_members(out, members.iter().map(|(k, v)| (k.as_ref(), v))),
    }
}

/// Appends a canonical object made of `members`, which must already be in
/// UTF-16 order (any filtered subsequence of a parsed object is).
pub fn write_members<'v, 'a: 'v>(
    out: &mut Vec<u8>,
    members: impl Iterator<Item = (&'v str, &'v Value<'a>)>,
) {
    out.push(b'{');
    for (i, (name, value)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, name);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

/// Writes a JSON string with RFC 8785 escaping: `"` and `\`, and the C0
/// controls (short forms where JSON has them, else `\u00xx` in lowercase).
/// Everything else, `/` and U+007F included, is written as UTF-8.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    let mut i = 0;
    while let Some(found) = super::json::special_byte(&bytes[i..]) {
        i += found;
        let b = bytes[i];
        i += 1;
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => {
                out.extend_from_slice(&bytes[run_start..i - 1]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                run_start = i;
                continue;
            }
        };
        out.extend_from_slice(&bytes[run_start..i - 1]);
        out.extend_from_slice(escape);
        run_start = i;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// Canonical text of a JSON text, or why it is not acceptable.
pub fn canonicalize(text: &str) -> Result<String, super::json::JsonError> {
    let value = super::json::parse(text)?;
    let mut out = Vec::with_capacity(text.len());
    write_value(&mut out, &value);
    // The writer copies UTF-8 strings and appends ASCII: still UTF-8.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn integer_literals_written_as_they_are_only_when_that_is_canonical() {
        for (input, canonical) in [
            ("0", "0"),
            ("-0", "0"),
            ("-5", "-5"),
            ("123456789012345", "123456789012345"),
            ("-123456789012345", "-123456789012345"),
            ("1234567890123456", "1234567890123456"),
            ("100000000000000000000", "100000000000000000000"),
            ("1e21", "1e+21"),
            ("[1, -0, 20]", "[1,0,20]"),
        ] {
            assert_eq!(canonicalize(input).unwrap(), canonical, "{input}");
        }
    }

    use super::*;

    #[test]
    fn numbers_as_ecmascript() {
        for (text, want) in [
            ("0", "0"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("1.0", "1"),
            ("4E+0", "4"),
            ("0.4e1", "4"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("1e-7", "1e-7"),
            ("0.000001", "0.000001"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("0.1", "0.1"),
            ("9007199254740991", "9007199254740991"),
        ] {
            assert_eq!(canonicalize(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn strings_escape_only_what_rfc8785_says() {
        assert_eq!(
            canonicalize(r#""\u0000\u001f\u007f/\u00e9\b\f\n\r\t\"\\""#).unwrap(),
            "\"\\u0000\\u001f\u{7f}/é\\b\\f\\n\\r\\t\\\"\\\\\""
        );
    }

    #[test]
    fn objects_sorted_and_compact() {
        assert_eq!(
            canonicalize(" { \"b\" : [ 1 , {\"d\":1,\"c\":2} ] , \"a\" : null } ").unwrap(),
            r#"{"a":null,"b":[1,{"c":2,"d":1}]}"#
        );
    }
}
