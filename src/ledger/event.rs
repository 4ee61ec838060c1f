//! From one line to an authentic event (contract §1.1–§1.3, §2.1 steps
//! `malformed` → `hash_mismatch` → signature).
//!
//! [`authenticate`] needs no head and no database, so it can run on any
//! thread; what it returns is owned and ready to be written to the mirror.
//! [`seal_line`] is the producer's side of the same rules.

use std::borrow::Cow;

use ed25519_dalek::SigningKey;

use super::jcs;
use super::json::{self, Number, Value, MAX_SAFE_INTEGER};
use super::seal::{self, KeyRing, SignatureCheck, SignaturePolicy};
use super::{timestamp, Hash, Verdict};

/// An event that passed every check that does not need the head: its
/// members as the mirror stores them. `payload` and `extra` are RFC 8785
/// canonical text, so the row is verifiable without the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEvent {
    pub seq: u64,
    pub ts: String,
    pub event_type: String,
    pub id: Option<String>,
    pub payload: String,
    /// The canonical object of extension members, `None` when there are none.
    pub extra: Option<String>,
    pub prev_hash: Option<Hash>,
    pub hash: Hash,
    pub key_id: Option<String>,
    pub sig: Option<String>,
    /// For an adopted plain line (`adopt`): the SHA-256 of its bytes as
    /// read, which the mirror keeps to see a later change to the line.
    pub line_sha256: Option<Hash>,
}

/// Why a line is not authentic. `seq` and `hash` are filled in where the
/// line parsed far enough to have them (for reports and quarantine rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub verdict: Verdict,
    pub detail: String,
    pub seq: Option<u64>,
    pub hash: Option<Hash>,
}

impl Refusal {
    fn malformed(detail: impl Into<String>) -> Refusal {
        Refusal {
            verdict: Verdict::Malformed,
            detail: detail.into(),
            seq: None,
            hash: None,
        }
    }
}

/// The members the contract names; anything else is an extension.
pub(crate) const KNOWN: [&str; 9] = [
    "hash",
    "id",
    "key_id",
    "payload",
    "prev_hash",
    "seq",
    "sig",
    "ts",
    "type",
];

/// Borrowed view of a parsed event object, members type-checked.
struct Members<'v> {
    seq: u64,
    ts: &'v str,
    event_type: &'v str,
    prev_hash: Option<Hash>,
    hash: Hash,
    id: Option<&'v str>,
    key_id: Option<&'v str>,
    sig: Option<(&'v str, [u8; 64])>,
    has_extensions: bool,
}

/// Canonical bytes as text (always valid UTF-8; checked, not assumed).
fn utf8_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Judges one complete line (without its LF) up to authenticity.
///
/// `scratch` is a reusable buffer for the canonical form, so that a caller
/// judging many lines does not allocate one per line.
pub fn authenticate(
    line: &[u8],
    policy: SignaturePolicy,
    keys: &KeyRing,
    scratch: &mut Vec<u8>,
) -> Result<SealedEvent, Refusal> {
    let (event, check) = authenticate_deferring(line, policy, keys, scratch)?;
    match check {
        Some(check) if !check.passes() => Err(bad_signature(&event)),
        _ => Ok(event),
    }
}

/// The detail of every `bad_signature` refusal.
const BAD_SIGNATURE: &str = "signature does not verify";

/// The refusal of an event whose signature does not verify.
pub fn bad_signature(event: &SealedEvent) -> Refusal {
    Refusal {
        verdict: Verdict::BadSignature,
        detail: BAD_SIGNATURE.into(),
        seq: Some(event.seq),
        hash: Some(event.hash),
    }
}

/// [`authenticate`] with the end of the strict signature check left to the
/// caller: the event is authentic when the returned check (if any) passes,
/// and `bad_signature` otherwise. The signature is the last of the checks
/// that make an event authentic (§2.1), so nothing else waits on it; this
/// lets a caller finish many checks together ([`seal::finish_checks`]).
pub fn authenticate_deferring(
    line: &[u8],
    policy: SignaturePolicy,
    keys: &KeyRing,
    scratch: &mut Vec<u8>,
) -> Result<(SealedEvent, Option<SignatureCheck>), Refusal> {
    let text = std::str::from_utf8(line)
        .map_err(|e| Refusal::malformed(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let value = json::parse(text).map_err(|e| Refusal::malformed(format!("not JSON: {e}")))?;
    let Value::Object(members) = &value else {
        return Err(Refusal::malformed("not a JSON object"));
    };
    let m = read_members(members).map_err(Refusal::malformed)?;

    // E′ is the object without `hash` and `sig`. Members are sorted, so
    // writing them in order is the canonical form; the payload's canonical
    // text is the slice written for it.
    scratch.clear();
    scratch.push(b'{');
    let mut payload_range = 0..0;
    let mut first = true;
    for (name, value) in members {
        if name == "hash" || name == "sig" {
            continue;
        }
        if !first {
            scratch.push(b',');
        }
        first = false;
        jcs::write_string(scratch, name);
        scratch.push(b':');
        let start = scratch.len();
        jcs::write_value(scratch, value);
        if name == "payload" {
            payload_range = start..scratch.len();
        }
    }
    scratch.push(b'}');
    let computed = seal::event_hash(scratch);
    let refuse = |verdict, detail: String| Refusal {
        verdict,
        detail,
        seq: Some(m.seq),
        hash: Some(m.hash),
    };
    if computed != m.hash {
        return Err(refuse(
            Verdict::HashMismatch,
            format!("content hashes to {computed}"),
        ));
    }

    let mut check = None;
    match (policy, m.key_id, &m.sig) {
        (SignaturePolicy::Off, _, _) => {}
        (SignaturePolicy::Required, _, None) => {
            return Err(refuse(
                Verdict::Unsigned,
                "no sig while signatures are required".into(),
            ))
        }
        (_, _, None) => {}
        (_, Some(key_id), Some((_, sig))) => match keys.get(key_id) {
            None => {
                return Err(refuse(
                    Verdict::UnknownKey,
                    format!("key_id '{key_id}' is not trusted"),
                ))
            }
            Some(key) => match SignatureCheck::begin(key, &m.hash, sig) {
                Some(begun) => check = Some(begun),
                None => return Err(refuse(Verdict::BadSignature, BAD_SIGNATURE.into())),
            },
        },
        // read_members refuses `sig` without `key_id`.
        (_, None, Some(_)) => return Err(Refusal::malformed("sig without key_id")),
    }

    // The canonical writer copies UTF-8 and appends ASCII: valid UTF-8,
    // which the (vectorised) strict check confirms quickly.
    let payload = utf8_text(scratch[payload_range].to_vec());
    let extra = m.has_extensions.then(|| {
        let mut out = Vec::new();
        jcs::write_members(
            &mut out,
            members
                .iter()
                .filter(|(k, _)| !KNOWN.contains(&k.as_ref()))
                .map(|(k, v)| (k.as_ref(), v)),
        );
        utf8_text(out)
    });
    let event = SealedEvent {
        seq: m.seq,
        ts: m.ts.to_owned(),
        event_type: m.event_type.to_owned(),
        id: m.id.map(str::to_owned),
        payload,
        extra,
        prev_hash: m.prev_hash,
        hash: m.hash,
        key_id: m.key_id.map(str::to_owned),
        sig: m.sig.map(|(s, _)| s.to_owned()),
        line_sha256: None,
    };
    Ok((event, check))
}

/// Checks presence and type of every contract member (§1.1).
fn read_members<'v, 'a>(members: &'v [(Cow<'a, str>, Value<'a>)]) -> Result<Members<'v>, String> {
    let mut seq = None;
    let mut ts = None;
    let mut event_type = None;
    let mut payload = None;
    let mut prev_hash = None;
    let mut hash = None;
    let mut id = None;
    let mut key_id = None;
    let mut sig = None;
    let mut has_extensions = false;
    for (name, value) in members {
        match name.as_ref() {
            "seq" => seq = Some(value),
            "ts" => ts = Some(value),
            "type" => event_type = Some(value),
            "payload" => payload = Some(value),
            "prev_hash" => prev_hash = Some(value),
            "hash" => hash = Some(value),
            "id" => id = Some(value),
            "key_id" => key_id = Some(value),
            "sig" => sig = Some(value),
            _ => has_extensions = true,
        }
    }
    let missing = |name: &str| format!("missing member {name}");
    let seq = match seq.ok_or_else(|| missing("seq"))? {
        Value::Number(n) => seq_number(n)?,
        _ => return Err("seq is not written as a non-negative integer".into()),
    };
    let ts = match ts.ok_or_else(|| missing("ts"))? {
        Value::String(s) if timestamp::is_rfc3339(s) => s.as_ref(),
        _ => return Err("ts is not an RFC 3339 date-time string".into()),
    };
    let event_type = bounded_string(event_type.ok_or_else(|| missing("type"))?, 256)
        .ok_or("type is not a string of 1 to 256 bytes")?;
    if payload.is_none() {
        return Err(missing("payload"));
    }
    let prev_hash = match prev_hash.ok_or_else(|| missing("prev_hash"))? {
        Value::Null => None,
        Value::String(s) => {
            Some(Hash::from_hex(s).ok_or("prev_hash is not 64 lowercase hex digits or null")?)
        }
        _ => return Err("prev_hash is not 64 lowercase hex digits or null".into()),
    };
    if (seq == 0) != prev_hash.is_none() {
        return Err("prev_hash must be null exactly when seq is 0".into());
    }
    let hash = match hash.ok_or_else(|| missing("hash"))? {
        Value::String(s) => Hash::from_hex(s).ok_or("hash is not 64 lowercase hex digits")?,
        _ => return Err("hash is not 64 lowercase hex digits".into()),
    };
    let id = id
        .map(|v| bounded_string(v, 256).ok_or("id is not a string of 1 to 256 bytes"))
        .transpose()?;
    let key_id = key_id
        .map(|v| bounded_string(v, 128).ok_or("key_id is not a string of 1 to 128 bytes"))
        .transpose()?;
    let sig = match sig {
        None => None,
        Some(Value::String(s)) => {
            let bytes =
                seal::decode_sig(s).ok_or("sig is not canonical padded base64 of 64 bytes")?;
            Some((s.as_ref(), bytes))
        }
        Some(_) => return Err("sig is not canonical padded base64 of 64 bytes".into()),
    };
    if sig.is_some() && key_id.is_none() {
        return Err("sig without key_id".into());
    }
    Ok(Members {
        seq,
        ts,
        event_type,
        prev_hash,
        hash,
        id,
        key_id,
        sig,
        has_extensions,
    })
}

fn seq_number(n: &Number<'_>) -> Result<u64, String> {
    if !n.is_integer_literal() || n.literal.starts_with('-') {
        return Err("seq is not written as a non-negative integer".into());
    }
    if n.value > MAX_SAFE_INTEGER {
        return Err("seq is beyond 2^53−1".into());
    }
    // An integer literal within 2^53−1 converts exactly.
    Ok(n.value as u64)
}

fn bounded_string<'v>(value: &'v Value<'_>, max: usize) -> Option<&'v str> {
    match value {
        Value::String(s) if !s.is_empty() && s.len() <= max => Some(s.as_ref()),
        _ => None,
    }
}

/// What a producer supplies for one event; [`seal_line`] adds the hash and
/// the signature.
#[derive(Debug, Clone)]
pub struct Draft<'a> {
    pub seq: u64,
    pub prev_hash: Option<Hash>,
    pub ts: &'a str,
    pub event_type: &'a str,
    pub id: Option<&'a str>,
    /// The payload, already parsed (so it is known to be I-JSON).
    pub payload: &'a Value<'a>,
}

/// Why a draft cannot become an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DraftError {
    #[error("type must be 1 to 256 bytes")]
    BadType,
    #[error("id must be 1 to 256 bytes")]
    BadId,
    #[error("key_id must be 1 to 128 bytes")]
    BadKeyId,
    #[error("ts `{0}` is not an RFC 3339 date-time")]
    BadTs(String),
    #[error("seq {0} is beyond 2^53−1")]
    SeqTooLarge(u64),
    #[error("prev_hash must be null exactly when seq is 0")]
    PrevHash,
}

/// Seals a draft into a complete ledger line (without the LF): the
/// canonical form of the whole event, `hash` and `sig` included, which is
/// also the most compact form any reader accepts. Returns the line and its
/// hash.
pub fn seal_line(
    draft: &Draft<'_>,
    signer: Option<(&str, &SigningKey)>,
) -> Result<(String, Hash), DraftError> {
    if draft.event_type.is_empty() || draft.event_type.len() > 256 {
        return Err(DraftError::BadType);
    }
    if draft.id.is_some_and(|id| id.is_empty() || id.len() > 256) {
        return Err(DraftError::BadId);
    }
    if signer.is_some_and(|(id, _)| id.is_empty() || id.len() > 128) {
        return Err(DraftError::BadKeyId);
    }
    if !timestamp::is_rfc3339(draft.ts) {
        return Err(DraftError::BadTs(draft.ts.to_owned()));
    }
    if draft.seq as f64 > MAX_SAFE_INTEGER {
        return Err(DraftError::SeqTooLarge(draft.seq));
    }
    if (draft.seq == 0) != draft.prev_hash.is_none() {
        return Err(DraftError::PrevHash);
    }
    let seq_text = draft.seq.to_string();
    let prev_hex = draft.prev_hash.map(|h| h.to_hex());
    let seq_value = Value::Number(Number {
        value: draft.seq as f64,
        literal: &seq_text,
    });
    let prev_value = match &prev_hex {
        Some(h) => Value::String(Cow::Borrowed(h)),
        None => Value::Null,
    };
    let ts_value = Value::String(Cow::Borrowed(draft.ts));
    let type_value = Value::String(Cow::Borrowed(draft.event_type));
    let id_value = draft.id.map(|s| Value::String(Cow::Borrowed(s)));
    let key_value = signer.map(|(id, _)| Value::String(Cow::Borrowed(id)));

    // E′ in canonical (UTF-16) member order.
    let mut members: Vec<(&str, &Value<'_>)> = Vec::with_capacity(9);
    if let Some(v) = &id_value {
        members.push(("id", v));
    }
    if let Some(v) = &key_value {
        members.push(("key_id", v));
    }
    members.push(("payload", draft.payload));
    members.push(("prev_hash", &prev_value));
    members.push(("seq", &seq_value));
    members.push(("ts", &ts_value));
    members.push(("type", &type_value));
    let mut canonical = Vec::with_capacity(256);
    jcs::write_members(&mut canonical, members.iter().copied());
    let hash = seal::event_hash(&canonical);

    let hash_hex = hash.to_hex();
    let hash_value = Value::String(Cow::Borrowed(&hash_hex));
    let sig_text = signer.map(|(_, key)| seal::sign(key, &hash));
    let sig_value = sig_text.as_deref().map(|s| Value::String(Cow::Borrowed(s)));
    members.insert(0, ("hash", &hash_value));
    if let Some(v) = &sig_value {
        let at = members
            .iter()
            .position(|(k, _)| json::cmp_utf16(k, "sig").is_gt())
            .unwrap_or(members.len());
        members.insert(at, ("sig", v));
    }
    let mut line = Vec::with_capacity(canonical.len() + 180);
    jcs::write_members(&mut line, members.into_iter());
    Ok((String::from_utf8_lossy(&line).into_owned(), hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(key: &SigningKey) -> KeyRing {
        let b64 = seal::public_key_base64(key);
        KeyRing::from_base64([("k1", b64.as_str())]).unwrap()
    }

    fn draft_line(
        seq: u64,
        prev: Option<Hash>,
        payload: &str,
        signer: Option<(&str, &SigningKey)>,
    ) -> (String, Hash) {
        let value = json::parse(payload).unwrap();
        seal_line(
            &Draft {
                seq,
                prev_hash: prev,
                ts: "2026-11-21T00:00:00Z",
                event_type: "test",
                id: None,
                payload: &value,
            },
            signer,
        )
        .unwrap()
    }

    fn auth(line: &str, policy: SignaturePolicy, keys: &KeyRing) -> Result<SealedEvent, Refusal> {
        authenticate(line.as_bytes(), policy, keys, &mut Vec::new())
    }

    #[test]
    fn sealed_lines_authenticate() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let ring = keyring(&key);
        let (line, hash) = draft_line(0, None, r#"{"b":[1,2.50],"a":"x"}"#, Some(("k1", &key)));
        let ev = auth(&line, SignaturePolicy::Required, &ring).unwrap();
        assert_eq!(ev.hash, hash);
        assert_eq!(ev.payload, r#"{"a":"x","b":[1,2.5]}"#);
        assert_eq!(ev.key_id.as_deref(), Some("k1"));
        assert!(ev.extra.is_none());
        // The sealed line is itself canonical: hash and sig in sorted place.
        assert!(line.starts_with(r#"{"hash":""#));
        assert!(line.contains(r#","sig":""#));
        assert_eq!(jcs::canonicalize(&line).unwrap(), line);
    }

    #[test]
    fn policies() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let ring = keyring(&key);
        let (unsigned, _) = draft_line(0, None, "null", None);
        assert_eq!(
            auth(&unsigned, SignaturePolicy::Required, &ring)
                .unwrap_err()
                .verdict,
            Verdict::Unsigned
        );
        assert!(auth(&unsigned, SignaturePolicy::VerifyIfPresent, &ring).is_ok());
        let stranger = SigningKey::from_bytes(&[2; 32]);
        let (by_k3, _) = draft_line(0, None, "null", Some(("k3", &stranger)));
        assert_eq!(
            auth(&by_k3, SignaturePolicy::VerifyIfPresent, &ring)
                .unwrap_err()
                .verdict,
            Verdict::UnknownKey
        );
        assert!(auth(&by_k3, SignaturePolicy::Off, &ring).is_ok());
        let (forged, _) = draft_line(0, None, "null", Some(("k1", &stranger)));
        assert_eq!(
            auth(&forged, SignaturePolicy::Required, &ring)
                .unwrap_err()
                .verdict,
            Verdict::BadSignature
        );
    }

    #[test]
    fn hash_mismatch_when_content_changes() {
        let (line, _) = draft_line(0, None, r#"{"n":1}"#, None);
        let tampered = line.replace(r#""n":1"#, r#""n":2"#);
        let r = auth(&tampered, SignaturePolicy::Off, &KeyRing::default()).unwrap_err();
        assert_eq!(r.verdict, Verdict::HashMismatch);
        assert_eq!(r.seq, Some(0));
    }

    #[test]
    fn extensions_are_hashed_and_kept() {
        // Build a line with an extension by hand: hash over E′ with it.
        let e = r#"{"payload":1,"prev_hash":null,"seq":0,"ts":"2026-11-21T00:00:00Z","type":"t","zz":{"b":1,"a":2},"Seq":3}"#;
        let canon = jcs::canonicalize(e).unwrap();
        let h = seal::event_hash(canon.as_bytes());
        let line = format!("{}, \"hash\":\"{h}\"}}", &e[..e.len() - 1]);
        let ev = auth(&line, SignaturePolicy::Off, &KeyRing::default()).unwrap();
        assert_eq!(ev.extra.as_deref(), Some(r#"{"Seq":3,"zz":{"a":2,"b":1}}"#));
    }

    #[test]
    fn malformed_members() {
        let ok = draft_line(1, Some(Hash([7; 32])), "1", None).0;
        let cases: Vec<(String, &str)> = vec![
            (ok.replace(r#""seq":1"#, r#""seq":1.0"#), "seq"),
            (ok.replace(r#""seq":1"#, r#""seq":1e0"#), "seq"),
            (ok.replace(r#""seq":1"#, r#""seq":"1""#), "seq"),
            (
                ok.replace(r#""seq":1"#, r#""seq":9007199254740992"#),
                "2^53",
            ),
            (ok.replace(r#""type":"test""#, r#""type":"""#), "type"),
            (
                ok.replace(r#""ts":"2026-11-21T00:00:00Z""#, r#""ts":"yesterday""#),
                "ts",
            ),
            (
                ok.replace(r#""prev_hash":"#, r#""prev_hash":null,"x":"#),
                "prev_hash",
            ),
            (
                ok.replace(r#""payload":1,"#, r#""id":null,"payload":1,"#),
                "id",
            ),
            (
                ok.replace(r#""payload":1,"#, r#""sig":"x","payload":1,"#),
                "sig",
            ),
            (ok.replace(r#""payload":1,"#, ""), "missing member payload"),
            (format!("\u{feff}{ok}"), "not JSON"),
            ("[]".to_string(), "not a JSON object"),
        ];
        for (line, needle) in cases {
            let r = auth(&line, SignaturePolicy::VerifyIfPresent, &KeyRing::default()).unwrap_err();
            assert_eq!(r.verdict, Verdict::Malformed, "{line}");
            assert!(r.detail.contains(needle), "{line}: {}", r.detail);
        }
        let r = authenticate(
            b"{\"a\":\"\xff\"}",
            SignaturePolicy::Off,
            &KeyRing::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(r.detail, "invalid UTF-8 at byte 6");
    }

    #[test]
    fn sig_without_key_id_is_malformed_even_when_off() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let (line, _) = draft_line(0, None, "1", Some(("k1", &key)));
        let no_key = line.replace(r#""key_id":"k1","#, "");
        let r = auth(&no_key, SignaturePolicy::Off, &KeyRing::default()).unwrap_err();
        assert_eq!(r.verdict, Verdict::Malformed);
    }

    #[test]
    fn cr_before_lf_is_white_space() {
        let (line, _) = draft_line(0, None, "1", None);
        assert!(auth(
            &format!("{line}\r"),
            SignaturePolicy::Off,
            &KeyRing::default()
        )
        .is_ok());
    }
}
