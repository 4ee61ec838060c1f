//! A mirrored row read back (contract §3, v1.2): the audit that makes the
//! mirror verifiable without the ledger.
//!
//! Each column must hold exactly the canonical text of what it names (the
//! payload one JSON value in RFC 8785 form, `extra` a canonical object of
//! extension members, `id`/`key_id`/`sig` typed as §1.1 says), and the
//! event the columns form must be authentic under the ledger's policy:
//! its hash recomputes, its signature verifies. The event is rebuilt as a
//! line and judged by [`authenticate`], the same code that judged the
//! line it came from, so the two can never disagree on a rule.
//!
//! Checking the shape matters as much as the hash: a `payload` column
//! holding `{"amt":5},"id":"order-42"` (with `id` NULL) hashes like the
//! original event, yet hides it from `WHERE id = 'order-42'`.

use super::event::{authenticate, SealedEvent};
use super::seal::{KeyRing, SignaturePolicy};
use super::{jcs, json};

/// The members of an event that have columns of their own (the members
/// the contract names); `extra` must not repeat them.
use super::event::KNOWN as RESERVED;

/// The names of an event row's columns, in the order every reader and
/// writer of event rows uses (the mirror's `events` table and the fleet
/// store's hold each of them; a test checks both schemas against it).
pub const EVENT_COLUMNS: [&str; 12] = [
    "seq",
    "id",
    "ts",
    "type",
    "payload",
    "extra",
    "prev_hash",
    "hash",
    "key_id",
    "sig",
    "file_id",
    "file_offset",
];

/// An event row as read back, for parity and audits. A column that does
/// not hold the type the schema gives it (an integer where text belongs,
/// a blob) reads as empty text and is named in `fault`: a tampered row is
/// reported, it does not stop the audit.
#[derive(Debug, Clone, Default)]
pub struct StoredEvent {
    pub fault: Option<String>,
    pub seq: u64,
    pub id: Option<String>,
    pub ts: String,
    pub event_type: String,
    pub payload: String,
    pub extra: Option<String>,
    pub prev_hash: Option<String>,
    pub hash: String,
    pub key_id: Option<String>,
    pub sig: Option<String>,
    pub file_id: String,
    pub file_offset: u64,
    /// A plain ledger's row in the mirror: the SHA-256 (hex) of its line
    /// as read. Not one of [`EVENT_COLUMNS`]: only the mirror keeps it.
    pub line_sha256: Option<String>,
}

/// One cell of an event row as a reader found it (the mirror's SQLite and
/// the fleet store's PostgreSQL each map their own values to these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Text(String),
    Integer(i64),
    Null,
    /// Bytes that are not UTF-8 where text belongs.
    NotUtf8,
    /// Any other type, by name (`Real`, `Blob`).
    Other(&'static str),
}

impl Cell {
    fn kind(&self) -> &'static str {
        match self {
            Cell::Text(_) | Cell::NotUtf8 => "Text",
            Cell::Integer(_) => "Integer",
            Cell::Null => "Null",
            Cell::Other(kind) => kind,
        }
    }
}

/// The columns (by index in [`EVENT_COLUMNS`]) that may be NULL.
const NULLABLE: [usize; 5] = [1, 5, 6, 8, 9];

impl StoredEvent {
    /// The row whose cells `cell(i)` reads, `i` indexing [`EVENT_COLUMNS`].
    /// A cell of the wrong type reads as empty text (or `u64::MAX` for a
    /// number), and the first one is named in `fault`.
    pub fn from_cells<E>(mut cell: impl FnMut(usize) -> Result<Cell, E>) -> Result<StoredEvent, E> {
        let mut fault: Option<String> = None;
        let mut text = |i: usize| -> Result<Option<String>, E> {
            let name = EVENT_COLUMNS[i];
            Ok(match cell(i)? {
                Cell::Text(t) => Some(t),
                Cell::Null if NULLABLE.contains(&i) => None,
                Cell::NotUtf8 => {
                    fault.get_or_insert(format!("the {name} column is not UTF-8 text"));
                    Some(String::new())
                }
                other => {
                    let kind = other.kind();
                    fault.get_or_insert(format!("the {name} column holds {kind}, not text"));
                    Some(String::new())
                }
            })
        };
        let id = text(1)?;
        let ts = text(2)?.unwrap_or_default();
        let event_type = text(3)?.unwrap_or_default();
        let payload = text(4)?.unwrap_or_default();
        let extra = text(5)?;
        let prev_hash = text(6)?;
        let hash = text(7)?.unwrap_or_default();
        let key_id = text(8)?;
        let sig = text(9)?;
        let file_id = text(10)?.unwrap_or_default();
        let mut number = |i: usize| -> Result<u64, E> {
            Ok(match cell(i)? {
                Cell::Integer(n) if n >= 0 => n as u64,
                other => {
                    let (name, kind) = (EVENT_COLUMNS[i], other.kind());
                    fault.get_or_insert(format!(
                        "the {name} column holds {kind}, not a non-negative integer"
                    ));
                    u64::MAX
                }
            })
        };
        let seq = number(0)?;
        let file_offset = number(11)?;
        Ok(StoredEvent {
            fault,
            seq,
            id,
            ts,
            event_type,
            payload,
            extra,
            prev_hash,
            hash,
            key_id,
            sig,
            file_id,
            file_offset,
            line_sha256: None,
        })
    }
}

impl StoredEvent {
    /// The row's columns, for the audit and for rebuilding its line.
    pub fn columns(&self) -> Columns<'_> {
        Columns {
            seq: self.seq,
            ts: &self.ts,
            event_type: &self.event_type,
            payload: &self.payload,
            extra: self.extra.as_deref(),
            prev_hash: self.prev_hash.as_deref(),
            hash: &self.hash,
            id: self.id.as_deref(),
            key_id: self.key_id.as_deref(),
            sig: self.sig.as_deref(),
        }
    }
}

/// The columns of a mirrored event, as an auditor reads them from SQLite.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub event_type: &'a str,
    pub payload: &'a str,
    pub extra: Option<&'a str>,
    pub prev_hash: Option<&'a str>,
    pub hash: &'a str,
    pub id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub sig: Option<&'a str>,
}

/// The canonical text of `text` when it is exactly one JSON value.
fn canonical(text: &str) -> Result<(String, bool), String> {
    let value = json::parse(text).map_err(|e| format!("is not one JSON value: {e}"))?;
    let mut out = Vec::with_capacity(text.len());
    jcs::write_value(&mut out, &value);
    let is_object = matches!(value, json::Value::Object(_));
    Ok((String::from_utf8_lossy(&out).into_owned(), is_object))
}

/// Audits one row: `Ok` with the event the columns form when every column
/// is the canonical text of what it names and the event is authentic under
/// `policy` and `keys`; otherwise what is wrong, naming the column or the
/// verdict.
pub fn audit(
    c: &Columns<'_>,
    policy: SignaturePolicy,
    keys: &KeyRing,
) -> Result<SealedEvent, String> {
    let (payload, _) = canonical(c.payload).map_err(|e| format!("the payload column {e}"))?;
    if payload != c.payload {
        return Err("the payload column is not the RFC 8785 canonical text of its value".into());
    }
    if let Some(extra) = c.extra {
        let (text, is_object) = canonical(extra).map_err(|e| format!("the extra column {e}"))?;
        if !is_object {
            return Err("the extra column is not a JSON object".into());
        }
        if text != extra {
            return Err("the extra column is not the RFC 8785 canonical text of its object".into());
        }
        if text == "{}" {
            return Err(
                "the extra column is an empty object (NULL when there are no extension members)"
                    .into(),
            );
        }
        if let Ok(json::Value::Object(members)) = json::parse(extra) {
            if let Some((name, _)) = members.iter().find(|(k, _)| RESERVED.contains(&k.as_ref())) {
                return Err(format!(
                    "the extra column holds `{name}`, a member that has a column of its own"
                ));
            }
        }
    }
    let line = event_line(c);
    let event = authenticate(&line, policy, keys, &mut Vec::new())
        .map_err(|r| format!("the row's event is {}: {}", r.verdict, r.detail))?;
    // Rebuilt from the columns and checked member by member, the event can
    // only differ from them if a column is not what it names.
    let prev = event.prev_hash.map(|h| h.to_hex());
    let same = event.seq == c.seq
        && event.ts == c.ts
        && event.event_type == c.event_type
        && event.payload == c.payload
        && event.extra.as_deref() == c.extra
        && prev.as_deref() == c.prev_hash
        && event.hash.to_hex() == c.hash
        && event.id.as_deref() == c.id
        && event.key_id.as_deref() == c.key_id
        && event.sig.as_deref() == c.sig;
    if !same {
        return Err("the columns do not read back as the event they form".into());
    }
    Ok(event)
}

/// The event as a line, every member from its column (the `extra`
/// object's members spliced in without its braces). Not checked: [`audit`]
/// checks it, and so does any reader that authenticates it.
pub fn event_line(c: &Columns<'_>) -> Vec<u8> {
    let extra_members = c
        .extra
        .and_then(|e| e.strip_prefix('{')?.strip_suffix('}'))
        .unwrap_or("");
    let mut line = Vec::with_capacity(c.payload.len() + extra_members.len() + 400);
    line.extend_from_slice(b"{\"seq\":");
    line.extend_from_slice(c.seq.to_string().as_bytes());
    let strings = [
        ("ts", Some(c.ts)),
        ("type", Some(c.event_type)),
        ("hash", Some(c.hash)),
        ("id", c.id),
        ("key_id", c.key_id),
        ("sig", c.sig),
    ];
    for (name, value) in strings {
        if let Some(v) = value {
            line.push(b',');
            jcs::write_string(&mut line, name);
            line.push(b':');
            jcs::write_string(&mut line, v);
        }
    }
    line.extend_from_slice(b",\"prev_hash\":");
    match c.prev_hash {
        Some(h) => jcs::write_string(&mut line, h),
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",\"payload\":");
    line.extend_from_slice(c.payload.as_bytes());
    if !extra_members.is_empty() {
        line.push(b',');
        line.extend_from_slice(extra_members.as_bytes());
    }
    line.push(b'}');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::event::{seal_line, Draft};
    use crate::ledger::seal;
    use crate::ledger::Hash;
    use ed25519_dalek::SigningKey;

    fn cells(overrides: &[(usize, Cell)]) -> StoredEvent {
        let read = |i: usize| -> Result<Cell, ()> {
            if let Some((_, c)) = overrides.iter().find(|(at, _)| *at == i) {
                return Ok(c.clone());
            }
            Ok(match i {
                0 | 11 => Cell::Integer(7),
                1 | 5 | 6 | 8 | 9 => Cell::Null,
                _ => Cell::Text(format!("c{i}")),
            })
        };
        StoredEvent::from_cells(read).unwrap()
    }

    #[test]
    fn a_row_is_read_from_its_cells_in_column_order() {
        let row = cells(&[]);
        assert_eq!((row.seq, row.file_offset), (7, 7));
        assert_eq!((row.ts.as_str(), row.payload.as_str()), ("c2", "c4"));
        assert_eq!((row.id, row.extra, row.sig), (None, None, None));
        assert!(row.fault.is_none());
    }

    #[test]
    fn a_cell_of_the_wrong_type_reads_as_empty_and_the_first_is_named() {
        let row = cells(&[(4, Cell::Other("Blob")), (0, Cell::Integer(-1))]);
        assert_eq!(row.payload, "");
        assert_eq!(row.seq, u64::MAX);
        assert_eq!(
            row.fault.as_deref(),
            Some("the payload column holds Blob, not text")
        );
        let row = cells(&[(7, Cell::Null)]);
        assert_eq!(
            row.fault.as_deref(),
            Some("the hash column holds Null, not text")
        );
        let row = cells(&[(11, Cell::Text("9".into()))]);
        assert_eq!(
            row.fault.as_deref(),
            Some("the file_offset column holds Text, not a non-negative integer")
        );
        let row = cells(&[(2, Cell::NotUtf8)]);
        assert_eq!(
            row.fault.as_deref(),
            Some("the ts column is not UTF-8 text")
        );
    }

    /// A row as the mirror holds it.
    type Row = StoredEvent;

    fn row_of(line: &str) -> Row {
        let ev = authenticate(
            line.as_bytes(),
            SignaturePolicy::Off,
            &KeyRing::default(),
            &mut Vec::new(),
        )
        .unwrap();
        Row {
            seq: ev.seq,
            ts: ev.ts,
            event_type: ev.event_type,
            payload: ev.payload,
            extra: ev.extra,
            prev_hash: ev.prev_hash.map(|h| h.to_hex()),
            hash: ev.hash.to_hex(),
            id: ev.id,
            key_id: ev.key_id,
            sig: ev.sig,
            ..Row::default()
        }
    }

    fn signed(key: &SigningKey) -> (Row, KeyRing) {
        let payload = json::parse(r#"{"amt":5,"to":"bob","z":[1,{"b":2,"a":1}]}"#).unwrap();
        let (line, _) = seal_line(
            &Draft {
                seq: 3,
                prev_hash: Some(Hash([9; 32])),
                ts: "2026-11-21T00:00:00Z",
                event_type: "order",
                id: None,
                payload: &payload,
            },
            Some(("k1", key)),
        )
        .unwrap();
        let keys = KeyRing::from_base64([("k1", seal::public_key_base64(key).as_str())]).unwrap();
        (row_of(&line), keys)
    }

    #[test]
    fn a_row_as_mirrored_passes_under_every_policy() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let (row, keys) = signed(&key);
        for policy in [
            SignaturePolicy::Off,
            SignaturePolicy::VerifyIfPresent,
            SignaturePolicy::Required,
        ] {
            let ev = audit(&row.columns(), policy, &keys).unwrap();
            assert_eq!(ev.hash.to_hex(), row.hash);
        }
        // With an extension member, kept in `extra`.
        let e = r#"{"app":{"v":1},"payload":null,"prev_hash":null,"seq":0,"ts":"2026-01-01T00:00:00Z","type":"t"}"#;
        let hash = seal::event_hash(e.as_bytes()).to_hex();
        let line = format!("{},\"hash\":\"{hash}\"}}", &e[..e.len() - 1]);
        let with_extra = row_of(&line);
        assert_eq!(with_extra.extra.as_deref(), Some(r#"{"app":{"v":1}}"#));
        audit(
            &with_extra.columns(),
            SignaturePolicy::Off,
            &KeyRing::default(),
        )
        .unwrap();
        let mut altered = row_clone(&with_extra);
        altered.extra = Some(r#"{"app":{"v":2}}"#.into());
        let err = audit(
            &altered.columns(),
            SignaturePolicy::Off,
            &KeyRing::default(),
        )
        .unwrap_err();
        assert!(err.contains("hash_mismatch"), "{err}");
    }

    #[test]
    fn every_column_must_be_the_canonical_text_of_what_it_names() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let (row, keys) = signed(&key);
        let policy = SignaturePolicy::VerifyIfPresent;
        let check = |change: &dyn Fn(&mut Row), want: &str| {
            let mut r = row_clone(&row);
            change(&mut r);
            let err = audit(&r.columns(), policy, &keys).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        };
        // Whitespace and a long spelling of 1: same value, same hash, but
        // not the canonical text.
        check(
            &|r| r.payload = r#"{"amt" : 5,"to":"bob","z":[1,{"a":1,"b":2}]}"#.into(),
            "canonical",
        );
        check(
            &|r| r.payload = r#"{"n":1.000000000000000001}"#.into(),
            "canonical",
        );
        // A payload that smuggles a member of the event itself.
        check(
            &|r| r.payload = r#"{"amt":5,"to":"bob"},"id":"order-42""#.into(),
            "payload column is not one JSON value",
        );
        // key_id moved into extra.
        check(
            &|r| {
                r.extra = Some(r#"{"key_id":"k1"}"#.into());
                r.key_id = None;
            },
            "a member that has a column of its own",
        );
        check(&|r| r.extra = Some("{}".into()), "empty object");
        check(&|r| r.extra = Some("[1]".into()), "not a JSON object");
        check(&|r| r.sig = Some("AAAA".into()), "malformed");
        check(&|r| r.id = Some(String::new()), "malformed");
        check(&|r| r.key_id = Some("k2".into()), "hash_mismatch");
        check(
            &|r| r.payload = r#"{"amt":6,"to":"bob","z":[1,{"a":1,"b":2}]}"#.into(),
            "hash_mismatch",
        );
        check(&|r| r.prev_hash = Some("ABC".into()), "malformed");
        check(&|r| r.ts = "yesterday".into(), "malformed");
        // Under `required`, an unsigned row is refused like an unsigned line.
        let mut unsigned = row_clone(&row);
        unsigned.sig = None;
        let err = audit(&unsigned.columns(), SignaturePolicy::Required, &keys).unwrap_err();
        assert!(err.contains("unsigned"), "{err}");
        // A signature by a key the ledger does not trust.
        let err = audit(&row.columns(), policy, &KeyRing::default()).unwrap_err();
        assert!(err.contains("unknown_key"), "{err}");
    }

    fn row_clone(r: &Row) -> Row {
        r.clone()
    }
}
