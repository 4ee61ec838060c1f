//! Signed notes (C2SP `signed-note`) and witness cosignatures (C2SP
//! `tlog-cosignature`, Ed25519 `cosignature/v1`): the envelope of every
//! checkpoint ledgertail signs. Pure: text and keys in, values out.
//!
//! A note is a text ending in a newline, a blank line, and signature lines
//! `— <key name> base64(key id ‖ signature)`. A verifier key is
//! `<name>+<key id, 8 hex digits>+base64(type ‖ public key)`, the key id
//! being the first four bytes of SHA-256(name ‖ LF ‖ type ‖ public key).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type of plain Ed25519 note signatures (`signed-note`).
pub const ED25519: u8 = 0x01;
/// Signature type of timestamped Ed25519 cosignatures (`tlog-cosignature`).
pub const COSIGNATURE_V1: u8 = 0x04;

/// Notes with more signatures than this are refused (the format asks
/// verifiers to accept at least 16).
const MAX_SIGNATURES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("malformed verifier key: {0}")]
    BadKey(String),
    #[error("no signature by {0} on the note")]
    NotSigned(String),
    #[error("the signature by {0} does not verify")]
    BadSignature(String),
}

/// Key names: non-empty, no Unicode space, no `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// The key id of a key: SHA-256(name ‖ LF ‖ type ‖ key)[:4], big-endian.
pub fn key_id(name: &str, kind: u8, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', kind]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A verifier key: who signs (name and key id), how (type) and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub id: u32,
    pub kind: u8,
    pub key: VerifyingKey,
}

impl VerifierKey {
    /// The verifier key of `signer` under `name` for signatures of `kind`.
    pub fn of(name: &str, kind: u8, signer: &SigningKey) -> VerifierKey {
        let key = signer.verifying_key();
        VerifierKey {
            name: name.to_owned(),
            id: key_id(name, kind, key.as_bytes()),
            kind,
            key,
        }
    }

    /// Parses `name+hash+base64`; the hash must be the one the key gives.
    pub fn parse(text: &str) -> Result<VerifierKey, NoteError> {
        let bad = |why: &str| NoteError::BadKey(why.to_owned());
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("want <name>+<8 hex digits>+<base64 key>"));
        };
        if !is_valid_key_name(name) {
            return Err(bad("the name is empty or holds a space or a +"));
        }
        if hash.len() != 8 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the key id is not 8 hex digits"));
        }
        let id = u32::from_str_radix(hash, 16).map_err(|_| bad("the key id is not hex"))?;
        let raw = STANDARD
            .decode(key)
            .map_err(|_| bad("the key is not base64"))?;
        let (&kind, public) = raw.split_first().ok_or_else(|| bad("the key is empty"))?;
        if kind != ED25519 && kind != COSIGNATURE_V1 {
            return Err(bad(&format!(
                "signature type {kind:#04x} is not Ed25519 (0x01) or cosignature/v1 (0x04)"
            )));
        }
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| bad("not an Ed25519 point"))?;
        if key_id(name, kind, &public) != id {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            id,
            kind,
            key,
        })
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(self.kind);
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, STANDARD.encode(raw))
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub id: u32,
    /// The signature after the key id.
    pub sig: Vec<u8>,
    /// The line as it was, with its newline.
    pub line: String,
}

/// A parsed note: its text (the signed part, final newline included) and
/// its signature lines in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

/// Parses one signature line (`— name base64\n`, newline optional).
pub fn parse_signature_line(line: &str) -> Result<NoteSignature, NoteError> {
    let bad = |why: String| NoteError::Malformed(why);
    let body = line.strip_suffix('\n').unwrap_or(line);
    let rest = body
        .strip_prefix("\u{2014} ")
        .ok_or_else(|| bad(format!("signature line {body:?} does not start with `— `")))?;
    let (name, sig) = rest
        .split_once(' ')
        .ok_or_else(|| bad(format!("signature line {body:?} has no signature")))?;
    if !is_valid_key_name(name) {
        return Err(bad(format!("signature line {body:?}: bad key name")));
    }
    let raw = STANDARD
        .decode(sig)
        .map_err(|_| bad(format!("signature line {body:?}: not base64")))?;
    if raw.len() < 5 {
        return Err(bad(format!("signature line {body:?}: too short")));
    }
    Ok(NoteSignature {
        name: name.to_owned(),
        id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
        sig: raw[4..].to_vec(),
        line: format!("{body}\n"),
    })
}

impl Note {
    /// Parses a signed note: UTF-8 without control characters but LF, the
    /// text separated from one or more signature lines by its last blank
    /// line.
    pub fn parse(msg: &str) -> Result<Note, NoteError> {
        let bad = |why: &str| NoteError::Malformed(why.to_owned());
        if msg.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad("it holds a control character"));
        }
        if !msg.ends_with('\n') {
            return Err(bad("it does not end with a newline"));
        }
        let split = msg
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let text = &msg[..split + 1];
        let signatures = msg[split + 2..]
            .split_inclusive('\n')
            .map(parse_signature_line)
            .collect::<Result<Vec<_>, _>>()?;
        if signatures.is_empty() {
            return Err(bad("no signature lines"));
        }
        if signatures.len() > MAX_SIGNATURES {
            return Err(bad("more than 100 signatures"));
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The note as text: its text, a blank line, its signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line);
        }
        out
    }

    /// Checks the signature of `key` on the note. `Ok(Some(t))` for a
    /// cosignature made at POSIX time `t`, `Ok(None)` for a plain one.
    /// Signatures of other keys are ignored, as the format requires.
    pub fn verify(&self, key: &VerifierKey) -> Result<Option<u64>, NoteError> {
        self.verified_by(key).map(|(_, t)| t)
    }

    /// The signature line of `key` that verifies (a note may carry several
    /// lines for one key, some of them not valid: only this one may be
    /// kept or passed on), with its timestamp as [`Note::verify`] gives it.
    pub fn verified_by(
        &self,
        key: &VerifierKey,
    ) -> Result<(&NoteSignature, Option<u64>), NoteError> {
        let who = || format!("{}+{:08x}", key.name, key.id);
        let mut found = false;
        for s in self
            .signatures
            .iter()
            .filter(|s| s.name == key.name && s.id == key.id)
        {
            found = true;
            match verify_signature(&self.text, key, &s.sig) {
                Some(t) => return Ok((s, t)),
                None => continue,
            }
        }
        Err(if found {
            NoteError::BadSignature(who())
        } else {
            NoteError::NotSigned(who())
        })
    }

    /// Adds a signature line, unless the same key already signed.
    pub fn add_signature(&mut self, sig: NoteSignature) {
        if !self
            .signatures
            .iter()
            .any(|s| s.name == sig.name && s.id == sig.id)
        {
            self.signatures.push(sig);
        }
    }
}

/// The message a cosignature signs.
fn cosigned_message(text: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{text}")
}

/// `Some(timestamp)` when `sig` is a valid signature of `key` on `text`.
fn verify_signature(text: &str, key: &VerifierKey, sig: &[u8]) -> Option<Option<u64>> {
    match key.kind {
        ED25519 => {
            let sig = ed25519_dalek::Signature::from_slice(sig).ok()?;
            key.key.verify_strict(text.as_bytes(), &sig).ok()?;
            Some(None)
        }
        COSIGNATURE_V1 => {
            if sig.len() != 72 {
                return None;
            }
            let t = u64::from_be_bytes(sig[..8].try_into().ok()?);
            if t > i64::MAX as u64 {
                return None;
            }
            let sig = ed25519_dalek::Signature::from_slice(&sig[8..]).ok()?;
            key.key
                .verify_strict(cosigned_message(text, t).as_bytes(), &sig)
                .ok()?;
            Some(Some(t))
        }
        _ => None,
    }
}

fn signature_line(name: &str, id: u32, sig: &[u8]) -> NoteSignature {
    let mut raw = Vec::with_capacity(4 + sig.len());
    raw.extend_from_slice(&id.to_be_bytes());
    raw.extend_from_slice(sig);
    NoteSignature {
        name: name.to_owned(),
        id,
        sig: sig.to_vec(),
        line: format!("\u{2014} {name} {}\n", STANDARD.encode(raw)),
    }
}

/// Signs `text` as `name` with a plain Ed25519 note signature.
pub fn sign(text: &str, name: &str, key: &SigningKey) -> NoteSignature {
    let id = key_id(name, ED25519, key.verifying_key().as_bytes());
    signature_line(name, id, &key.sign(text.as_bytes()).to_bytes())
}

/// Cosigns `text` (a checkpoint) as witness `name` at POSIX time `timestamp`.
pub fn cosign(text: &str, name: &str, key: &SigningKey, timestamp: u64) -> NoteSignature {
    let id = key_id(name, COSIGNATURE_V1, key.verifying_key().as_bytes());
    let sig = key.sign(cosigned_message(text, timestamp).as_bytes());
    let mut raw = Vec::with_capacity(72);
    raw.extend_from_slice(&timestamp.to_be_bytes());
    raw.extend_from_slice(&sig.to_bytes());
    signature_line(name, id, &raw)
}

/// A signed-note signer key, `PRIVATE+KEY+name+hash+base64(type ‖ seed)`,
/// as Go's `note.NewSigner` reads it (used by the tests' witness).
pub fn parse_signer_key(text: &str) -> Result<(String, SigningKey), NoteError> {
    let bad = |why: &str| NoteError::BadKey(why.to_owned());
    let rest = text
        .trim()
        .strip_prefix("PRIVATE+KEY+")
        .ok_or_else(|| bad("a signer key starts with PRIVATE+KEY+"))?;
    let mut parts = rest.splitn(3, '+');
    let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("want PRIVATE+KEY+<name>+<hash>+<base64>"));
    };
    let raw = STANDARD.decode(key).map_err(|_| bad("not base64"))?;
    if raw.len() != 33 || raw[0] != ED25519 {
        return Err(bad("not an Ed25519 signer key"));
    }
    let seed: [u8; 32] = raw[1..].try_into().map_err(|_| bad("seed"))?;
    let signer = SigningKey::from_bytes(&seed);
    if u32::from_str_radix(hash, 16).ok()
        != Some(key_id(name, ED25519, signer.verifying_key().as_bytes()))
    {
        return Err(bad("the key id does not match"));
    }
    Ok((name.to_owned(), signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> serde_json::Value {
        serde_json::from_str(include_str!(
            "../../tests/data/tlog/signed-note-example.json"
        ))
        .unwrap()
    }

    #[test]
    fn the_signed_note_example_signs_and_verifies_as_published() {
        let ex = example();
        let (name, signer) = parse_signer_key(ex["skey"].as_str().unwrap()).unwrap();
        let vkey = VerifierKey::parse(ex["vkey"].as_str().unwrap()).unwrap();
        assert_eq!(VerifierKey::of(&name, ED25519, &signer), vkey);
        assert_eq!(vkey.to_string(), ex["vkey"].as_str().unwrap());
        let text = ex["text"].as_str().unwrap();
        let note = Note {
            text: text.to_owned(),
            signatures: vec![sign(text, &name, &signer)],
        };
        assert_eq!(note.to_text(), ex["signed"].as_str().unwrap());
        let parsed = Note::parse(ex["signed"].as_str().unwrap()).unwrap();
        assert_eq!(parsed.verify(&vkey), Ok(None));
        // Another key's signature is ignored; its own key verifies it.
        let mut both = parsed.clone();
        both.add_signature(parse_signature_line(ex["other_sig"].as_str().unwrap()).unwrap());
        let other = VerifierKey::parse(ex["other_vkey"].as_str().unwrap()).unwrap();
        assert_eq!(both.verify(&vkey), Ok(None));
        assert_eq!(both.verify(&other), Ok(None));
        assert_eq!(Note::parse(&both.to_text()).unwrap(), both);
    }

    #[test]
    fn tampered_notes_and_keys_are_refused() {
        let ex = example();
        let vkey = VerifierKey::parse(ex["vkey"].as_str().unwrap()).unwrap();
        let signed = ex["signed"].as_str().unwrap();
        let changed = signed.replace("problem,", "problem;");
        assert!(matches!(
            Note::parse(&changed).unwrap().verify(&vkey),
            Err(NoteError::BadSignature(_))
        ));
        let other = VerifierKey::parse(ex["other_vkey"].as_str().unwrap()).unwrap();
        assert!(matches!(
            Note::parse(signed).unwrap().verify(&other),
            Err(NoteError::NotSigned(_))
        ));
        for bad in [
            "no blank line\n— a AAAAAAAA\n",
            "text\n\n",
            "text\n\n— a AAAAAAAA",
            "te\u{7}xt\n\n— a AAAAAAAAAA==\n",
            "text\n\n- a AAAAAAAAAA==\n",
        ] {
            assert!(Note::parse(bad).is_err(), "{bad:?}");
        }
        let v = ex["vkey"].as_str().unwrap();
        for bad in [
            v.replace("c74f20a3", "c74f20a4"),
            v.replace("PeterNeumann", "Peter+Neumann"),
            v.replace("+ARpc", "+BRpc"),
            "PeterNeumann+c74f20a3".to_owned(),
        ] {
            assert!(VerifierKey::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cosignatures_round_trip_and_commit_to_time_and_text() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let text = "example.com/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let sig = cosign(text, "witness.example/w1", &key, 1_679_315_147);
        let vkey = VerifierKey::of("witness.example/w1", COSIGNATURE_V1, &key);
        let note = Note {
            text: text.into(),
            signatures: vec![sig.clone()],
        };
        assert_eq!(note.verify(&vkey), Ok(Some(1_679_315_147)));
        // The same key as a plain signer is another key id: not confused.
        let plain = VerifierKey::of("witness.example/w1", ED25519, &key);
        assert!(matches!(note.verify(&plain), Err(NoteError::NotSigned(_))));
        let mut raw = STANDARD
            .decode(sig.line.rsplit(' ').next().unwrap().trim())
            .unwrap();
        raw[11] ^= 1; // the timestamp
        let forged = signature_line("witness.example/w1", vkey.id, &raw[4..]);
        let note = Note {
            text: text.into(),
            signatures: vec![forged],
        };
        assert!(matches!(
            note.verify(&vkey),
            Err(NoteError::BadSignature(_))
        ));
    }
}
