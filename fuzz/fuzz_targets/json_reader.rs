//! The strict JSON reader against serde_json, an independent parser.
//!
//! What one accepts the other accepts too, with the same value, except
//! where the contract refuses on purpose what plain JSON allows: a member
//! name repeated in an object, nesting deeper than the reader's limit, a
//! lone surrogate escape and a number beyond the range of a double (not
//! I-JSON), and an integer literal beyond ±(2^53−1) not spelled as its
//! double. Each exception is recognised here
//! from serde_json's reading of the text, not from the reader's message.
//! Objects must also come out sorted by UTF-16 code units (RFC 8785).
#![no_main]

use std::fmt;

use ledgertail::ledger::json::{self, Value, MAX_DEPTH};
use libfuzzer_sys::fuzz_target;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// serde_json's reading, keeping what its own `Value` throws away: member
/// order and repeats, and (with `arbitrary_precision`) each number's text.
#[derive(Debug)]
enum Tree {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Tree>),
    Object(Vec<(String, Tree)>),
}

/// The key under which serde_json's `arbitrary_precision` hands a number's
/// text to a visitor.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Tree, E> {
                Ok(Tree::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Tree, E> {
                Ok(Tree::Number(n.to_string()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Tree, E> {
                Ok(Tree::Number(n.to_string()))
            }
            fn visit_str<E>(self, s: &str) -> Result<Tree, E> {
                Ok(Tree::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Tree, E> {
                Ok(Tree::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Tree::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
                let mut members = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if members.is_empty() && name == NUMBER_TOKEN {
                        let text: String = map.next_value()?;
                        if map.next_key::<String>()?.is_some() {
                            return Err(de::Error::custom("number with more"));
                        }
                        return Ok(Tree::Number(text));
                    }
                    members.push((name, map.next_value()?));
                }
                Ok(Tree::Object(members))
            }
        }
        d.deserialize_any(V)
    }
}

/// What serde_json allows and the contract refuses, found in its tree.
#[derive(Default, Debug)]
struct Refusable {
    repeated_name: bool,
    depth: usize,
    big_integer_respelled: bool,
    /// Beyond the range of a double (serde_json refuses it too, unless it
    /// keeps the text, as here).
    infinite_number: bool,
}

fn survey(tree: &Tree, depth: usize, found: &mut Refusable) {
    match tree {
        Tree::Array(items) => {
            found.depth = found.depth.max(depth + 1);
            for item in items {
                survey(item, depth + 1, found);
            }
        }
        Tree::Object(members) => {
            found.depth = found.depth.max(depth + 1);
            let mut names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            if names.windows(2).any(|w| w[0] == w[1]) {
                found.repeated_name = true;
            }
            for (_, value) in members {
                survey(value, depth + 1, found);
            }
        }
        Tree::Number(text) => {
            let value: f64 = text.parse().unwrap();
            found.infinite_number |= !value.is_finite();
            let integer = !text.contains(['.', 'e', 'E']);
            if integer
                && value.abs() > json::MAX_SAFE_INTEGER
                && ledgertail::ledger::number::format_number(value) != *text
            {
                found.big_integer_respelled = true;
            }
        }
        _ => {}
    }
}

fn utf16_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

fn same(ours: &Value, theirs: &Tree) -> bool {
    match (ours, theirs) {
        (Value::Null, Tree::Null) => true,
        (Value::Bool(a), Tree::Bool(b)) => a == b,
        (Value::Number(n), Tree::Number(text)) => {
            // serde_json keeps the digits but respells the exponent
            // (`1E30` as `1e+30`), so the values are compared.
            n.value.to_bits() == text.parse::<f64>().unwrap().to_bits()
        }
        (Value::String(a), Tree::String(b)) => a == b,
        (Value::Array(a), Tree::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), Tree::Object(b)) => {
            let mut sorted: Vec<&(String, Tree)> = b.iter().collect();
            sorted.sort_by(|x, y| utf16_order(&x.0, &y.0));
            a.len() == sorted.len()
                && a.iter()
                    .zip(sorted)
                    .all(|((an, av), (bn, bv))| an == bn && same(av, bv))
        }
        _ => false,
    }
}

/// A `\uXXXX` escape of a surrogate not paired with its other half.
fn has_lone_surrogate_escape(text: &str) -> bool {
    let b = text.as_bytes();
    let hex = |at: usize| -> Option<u16> {
        let digits = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'u') {
            if let Some(unit) = hex(i + 2) {
                if (0xD800..0xDC00).contains(&unit) {
                    let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                        .then(|| hex(i + 8))
                        .flatten();
                    if low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                        i += 12;
                        continue;
                    }
                    return true;
                }
                if (0xDC00..0xE000).contains(&unit) {
                    return true;
                }
            }
            i += 6;
        } else if b[i] == b'\\' {
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ours = json::parse(text);
    let mut reader = serde_json::Deserializer::from_str(text);
    reader.disable_recursion_limit();
    let theirs = Tree::deserialize(&mut reader).and_then(|t| reader.end().map(|()| t));

    match (&ours, &theirs) {
        (Ok(v), Ok(t)) => assert!(same(v, t), "values differ: ours {v:?}, serde_json {t:?}"),
        (Ok(v), Err(e)) => panic!("accepted what serde_json refuses ({e}): {v:?}"),
        (Err(_), Err(_)) => {}
        (Err(why), Ok(t)) => {
            let mut found = Refusable::default();
            survey(t, 0, &mut found);
            let on_purpose = found.repeated_name
                || found.depth > MAX_DEPTH
                || found.big_integer_respelled
                || found.infinite_number
                || has_lone_surrogate_escape(text);
            assert!(on_purpose, "refused valid JSON ({why}): {t:?}");
        }
    }
});
