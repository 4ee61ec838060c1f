//! Adopting a plain JSON line: a log line an application wrote without
//! sealing it (nginx's JSON access log, pino, structlog, `slog`) becomes an
//! event of the ledger's own chain, sealed by the sidecar as it reads it.
//!
//! [`adopt`] needs no head, so it runs on the verifier threads (through
//! `judge::examine_plain`, where a plain line's verdicts are decided, as
//! every other line's): the line must be one I-JSON object (a payload's
//! rules), which becomes the payload in canonical form; `ts` and `type`
//! come from the members the ledger names; and the SHA-256 of the raw
//! bytes is kept, so that a later change to the line shows. [`seal`] is
//! the sequential half: `seq` and `prev_hash` follow the head, and the
//! hash is the one a sealed line with the same members carries, so the
//! mirror, the tree, the fleet store and every audit treat the event as
//! any other.
//!
//! What it cannot say: anything about a line before it was read. The
//! seal starts when the sidecar reads the line.

use sha2::{Digest, Sha256};

use super::event::SealedEvent;
use super::json::{self, Value};
use super::{jcs, seal, timestamp, Hash, Head};

/// Where an adopted line's `ts` and `type` come from (a ledger's
/// `ts_field`, `type_field` and `type`), and the key that signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// A top-level member holding the time: an RFC 3339 string, or a
    /// number of seconds, milliseconds or microseconds since 1970. Absent, or not such a value: the time the line was read.
    pub ts_field: Option<String>,
    /// A top-level member holding the type: a string of 1 to 256 bytes.
    /// Absent, or not such a string: [`Fields::event_type`].
    pub type_field: Option<String>,
    /// The type of every other line (`"log"` unless configured).
    pub event_type: String,
    /// The sidecar's own key (`sign_key`), when it signs what it adopts.
    pub signer: Option<Signer>,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            ts_field: None,
            type_field: None,
            event_type: "log".into(),
            signer: None,
        }
    }
}

/// A key that signs adopted events: each gets `key_id` and a `sig` over
/// its hash, as an event a producer signed, so `verify --db`, proofs and
/// the fleet store check it with the public key alone.
#[derive(Clone)]
pub struct Signer {
    pub key_id: String,
    pub key: ed25519_dalek::SigningKey,
}

/// Never the secret: a signer shows up in settings that are logged.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The same id and public key.
impl PartialEq for Signer {
    fn eq(&self, other: &Signer) -> bool {
        self.key_id == other.key_id && self.key.verifying_key() == other.key.verifying_key()
    }
}

impl Eq for Signer {}

/// A plain line examined: everything its event holds but its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// The line's object, RFC 8785 canonical text.
    pub payload: String,
    pub ts: String,
    pub event_type: String,
    /// SHA-256 of the line's bytes as read (before the LF).
    pub line_sha256: Hash,
}

/// A plain line (complete, not blank, within the limit: `judge::
/// examine_plain` checks those first) as the event it becomes, or why it
/// is `malformed`: it is not one I-JSON object. `read_at_millis` is when
/// it was read (milliseconds since 1970), its `ts` when the line names
/// none.
pub fn adopt(
    line: &[u8],
    fields: &Fields,
    read_at_millis: i64,
    scratch: &mut Vec<u8>,
) -> Result<Adopted, String> {
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let value = json::parse(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(members) = &value else {
        return Err("not a JSON object".into());
    };
    let member = |name: &Option<String>| {
        let name = name.as_deref()?;
        members.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    };
    let ts = member(&fields.ts_field)
        .and_then(time_of)
        .unwrap_or_else(|| millis_text(read_at_millis));
    let event_type = match member(&fields.type_field) {
        Some(Value::String(s)) if (1..=256).contains(&s.len()) => s.to_string(),
        _ => fields.event_type.clone(),
    };
    scratch.clear();
    jcs::write_value(scratch, &value);
    Ok(Adopted {
        payload: String::from_utf8_lossy(scratch).into_owned(),
        ts,
        event_type,
        line_sha256: line_digest(line),
    })
}

/// The SHA-256 of a plain line's bytes as read (without its newline): what
/// the mirror records of it, and what parity and discovery compare with.
pub fn line_digest(line: &[u8]) -> Hash {
    Hash(Sha256::digest(line).into())
}

/// A member's value as an RFC 3339 time, if it is one.
fn time_of(value: &Value<'_>) -> Option<String> {
    match value {
        Value::String(s) if timestamp::is_rfc3339(s) => Some(s.to_string()),
        Value::Number(n) => epoch_millis(n.value).map(millis_text),
        _ => None,
    }
}

/// A number of seconds, milliseconds or microseconds since 1970 (told
/// apart by size: 10^11 seconds is the year 5138, 10^11 milliseconds
/// 1973), as milliseconds; `None` outside the years 1970 to 9999.
/// (Nanoseconds since 1970 are beyond 2^53: I-JSON refuses the line.)
fn epoch_millis(v: f64) -> Option<i64> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let millis = if v < 1e11 {
        v * 1e3
    } else if v < 1e14 {
        v
    } else {
        v / 1e3
    };
    let millis = millis.round();
    (millis <= MAX_MILLIS as f64).then_some(millis as i64)
}

/// 9999-12-31T23:59:59.999Z.
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// Milliseconds since 1970 as `YYYY-MM-DDTHH:MM:SS.mmmZ` (clamped to the
/// years 1970 to 9999).
pub fn millis_text(millis: i64) -> String {
    let millis = millis.clamp(0, MAX_MILLIS);
    let (days, ms) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let secs = ms / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms % 1000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Seals an examined plain line as the event after `head` (seq 0 when
/// there is none): the hash of E′ written canonically, the payload's text
/// spliced in as it is (already canonical). With `signer`, its `key_id`
/// is in E′, and the signature is left to [`sign`]: it is the costly
/// part, and unlike the hash it can be made for many events at once.
pub fn seal(adopted: Adopted, head: Option<&Head>, signer: Option<&Signer>) -> SealedEvent {
    let seq = head.map_or(0, |h| h.seq + 1);
    let prev_hash = head.map(|h| h.hash);
    let key_id = signer.map(|s| s.key_id.as_str());
    let hash = seal::event_hash(&e_prime(&adopted, key_id, seq, prev_hash));
    SealedEvent {
        seq,
        ts: adopted.ts,
        event_type: adopted.event_type,
        id: None,
        payload: adopted.payload,
        extra: None,
        prev_hash,
        hash,
        key_id: key_id.map(str::to_owned),
        sig: None,
        line_sha256: Some(adopted.line_sha256),
    }
}

/// Signs an event [`seal`] made for `signer` (one with its `key_id` and
/// no signature yet); any other event is left as it is.
pub fn sign(event: &mut SealedEvent, signer: &Signer) {
    if event.sig.is_none() && event.key_id.as_deref() == Some(signer.key_id.as_str()) {
        event.sig = Some(seal::sign(&signer.key, &event.hash));
    }
}

/// E′ of an adopted event: its members in canonical (UTF-16) order (all
/// ASCII names, so byte order).
fn e_prime(a: &Adopted, key_id: Option<&str>, seq: u64, prev_hash: Option<Hash>) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.payload.len() + a.ts.len() + a.event_type.len() + 280);
    out.push(b'{');
    if let Some(id) = key_id {
        out.extend_from_slice(b"\"key_id\":");
        jcs::write_string(&mut out, id);
        out.push(b',');
    }
    out.extend_from_slice(b"\"payload\":");
    out.extend_from_slice(a.payload.as_bytes());
    out.extend_from_slice(b",\"prev_hash\":");
    match prev_hash {
        Some(h) => jcs::write_string(&mut out, &h.to_hex()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"ts\":");
    jcs::write_string(&mut out, &a.ts);
    out.extend_from_slice(b",\"type\":");
    jcs::write_string(&mut out, &a.event_type);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::columns::event_line;
    use crate::ledger::judge::{examine_plain as examine, Examined};
    use crate::ledger::{authenticate, KeyRing, SignaturePolicy, Verdict};

    fn fields(ts: Option<&str>, ty: Option<&str>) -> Fields {
        Fields {
            ts_field: ts.map(str::to_owned),
            type_field: ty.map(str::to_owned),
            event_type: "log".into(),
            signer: None,
        }
    }

    fn adopted(line: &str, f: &Fields) -> Adopted {
        match examine(
            line.as_bytes(),
            line.len() as u64,
            1 << 20,
            f,
            1_765_125_000_123,
            &mut Vec::new(),
        ) {
            Examined::Adopted(a) => a,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn verdict(line: &str) -> Option<Verdict> {
        match examine(
            line.as_bytes(),
            line.len() as u64,
            64,
            &Fields::default(),
            0,
            &mut Vec::new(),
        ) {
            Examined::Refused(r) => Some(r.verdict),
            Examined::Blank => None,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn an_object_becomes_the_canonical_payload_with_the_read_time_and_the_fixed_type() {
        let a = adopted(r#"{"status":200, "b":1.50,"a":"x"}"#, &Fields::default());
        assert_eq!(a.payload, r#"{"a":"x","b":1.5,"status":200}"#);
        assert_eq!(a.ts, "2025-12-07T16:30:00.123Z");
        assert_eq!(a.event_type, "log");
        assert_eq!(
            a.line_sha256,
            Hash(Sha256::digest(br#"{"status":200, "b":1.50,"a":"x"}"#).into())
        );
    }

    #[test]
    fn ts_and_type_come_from_the_named_members_when_they_hold_such_values() {
        let f = fields(Some("time"), Some("level"));
        let a = adopted(r#"{"time":"2026-12-07T16:32:17+00:00","level":"info"}"#, &f);
        assert_eq!(
            (a.ts.as_str(), a.event_type.as_str()),
            ("2026-12-07T16:32:17+00:00", "info")
        );
        // pino: epoch milliseconds, a numeric level (not a type).
        let a = adopted(r#"{"time":1765125137123,"level":30}"#, &f);
        assert_eq!(
            (a.ts.as_str(), a.event_type.as_str()),
            ("2025-12-07T16:32:17.123Z", "log")
        );
        // structlog's default: float seconds.
        assert_eq!(
            adopted(r#"{"time":1765125137.5}"#, &f).ts,
            "2025-12-07T16:32:17.500Z"
        );
        assert_eq!(
            adopted(r#"{"time":1765125137123456}"#, &f).ts,
            "2025-12-07T16:32:17.123Z"
        );
        // Not a time, or not there: the read time.
        for line in [
            r#"{"time":"2026-12-07 16:32:17,123"}"#,
            r#"{"time":-5}"#,
            r#"{"time":null}"#,
            r#"{"other":1}"#,
        ] {
            assert_eq!(adopted(line, &f).ts, "2025-12-07T16:30:00.123Z", "{line}");
        }
        assert_eq!(adopted(r#"{"level":""}"#, &f).event_type, "log");
    }

    #[test]
    fn anything_but_one_object_is_malformed_and_blank_lines_are_skipped() {
        for line in [
            "[1]",
            "\"x\"",
            "{\"a\":1",
            "{\"a\":1,\"a\":2}",
            "{} {}",
            "\u{feff}{}",
        ] {
            assert_eq!(verdict(line), Some(Verdict::Malformed), "{line}");
        }
        assert_eq!(verdict("  \r"), None);
        assert_eq!(
            verdict(&format!("{{\"a\":\"{}\"}}", "x".repeat(70))),
            Some(Verdict::TooLong)
        );
    }

    /// Seals two lines with `signer` and reads each back as a sealed
    /// line, authenticated under `policy` with `keys`.
    fn two_sealed_read_back(signer: Option<&Signer>, policy: SignaturePolicy, keys: &KeyRing) {
        let f = fields(Some("time"), None);
        let sealed = |line: &str, head: Option<&Head>| {
            let mut event = seal(adopted(line, &f), head, signer);
            if let Some(s) = signer {
                sign(&mut event, s);
            }
            event
        };
        let first = sealed(r#"{"msg":"a\u0001é","time":"2026-01-01T00:00:00Z"}"#, None);
        assert_eq!((first.seq, first.prev_hash), (0, None));
        let head = Head {
            seq: 0,
            hash: first.hash,
        };
        let second = sealed(r#"{"msg":"b"}"#, Some(&head));
        assert_eq!((second.seq, second.prev_hash), (1, Some(first.hash)));
        for event in [first, second] {
            assert_eq!(event.key_id.is_some(), signer.is_some());
            let row = crate::ledger::columns::StoredEvent {
                seq: event.seq,
                ts: event.ts.clone(),
                event_type: event.event_type.clone(),
                payload: event.payload.clone(),
                prev_hash: event.prev_hash.map(|h| h.to_hex()),
                hash: event.hash.to_hex(),
                key_id: event.key_id.clone(),
                sig: event.sig.clone(),
                ..Default::default()
            };
            let line = event_line(&row.columns());
            let again = authenticate(&line, policy, keys, &mut Vec::new())
                .expect("an adopted event is an authentic event");
            assert_eq!(again.hash, event.hash);
        }
    }

    #[test]
    fn sealed_events_chain_from_seq_0_and_authenticate_as_sealed_lines() {
        two_sealed_read_back(None, SignaturePolicy::Off, &KeyRing::default());
    }

    #[test]
    fn signed_adopted_events_verify_with_the_public_key_alone() {
        use base64::Engine as _;
        let signer = Signer {
            key_id: "sidecar-1".into(),
            key: ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        };
        let public =
            base64::engine::general_purpose::STANDARD.encode(signer.key.verifying_key().to_bytes());
        let keys = KeyRing::from_base64([("sidecar-1", public.as_str())]).unwrap();
        two_sealed_read_back(Some(&signer), SignaturePolicy::Required, &keys);
        assert!(!format!("{signer:?}").contains("key:"), "{signer:?}");
    }

    #[test]
    fn dates_are_the_gregorian_calendars() {
        assert_eq!(millis_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(millis_text(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(millis_text(MAX_MILLIS), "9999-12-31T23:59:59.999Z");
        assert_eq!(millis_text(-1), "1970-01-01T00:00:00.000Z");
        for ms in [0, 951_782_400_000, 1_765_125_137_123, MAX_MILLIS] {
            assert!(timestamp::is_rfc3339(&millis_text(ms)));
        }
    }
}
