//! Sealing: the event hash (§1.2) and Ed25519 signatures (§1.3).
//!
//! Verification is always `verify_strict` (S below the group order, no
//! small-order R or public key). `verify_batch` is faster but accepts
//! signatures `verify_strict` refuses, so it never decides a verdict here.
//! Trusted keys are refused at load time when they have small order, which
//! makes a bad configuration an error instead of a quiet weakness.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::Hash;

/// SHA-256 of the canonical bytes of E′.
pub fn event_hash(canonical: &[u8]) -> Hash {
    Hash(Sha256::digest(canonical).into())
}

/// The `sig` member for an event hash: canonical padded base64 of the
/// 64-byte Ed25519 signature over the hash's 32 raw bytes.
pub fn sign(key: &SigningKey, hash: &Hash) -> String {
    STANDARD.encode(key.sign(&hash.0).to_bytes())
}

/// Decodes a `sig` member: canonical padded base64 (RFC 4648 §4) of exactly
/// 64 bytes. `None` means the member is malformed.
pub fn decode_sig(sig: &str) -> Option<[u8; 64]> {
    // 64 bytes are 88 base64 characters ending in "=="; the engine refuses
    // non-zero trailing bits, which makes the encoding canonical.
    if sig.len() != 88 {
        return None;
    }
    let mut out = [0u8; 66];
    match STANDARD.decode_slice(sig, &mut out) {
        Ok(64) => {
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&out[..64]);
            Some(sig)
        }
        _ => None,
    }
}

/// Strict verification of a decoded signature over an event hash.
pub fn verify(key: &VerifyingKey, hash: &Hash, sig: &[u8; 64]) -> bool {
    key.verify_strict(&hash.0, &Signature::from_bytes(sig))
        .is_ok()
}

/// How a ledger treats signatures (contract §2.1, config `signatures`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignaturePolicy {
    /// No signature or key is checked (member types still are).
    Off,
    /// A present `sig` must verify with a trusted key.
    #[default]
    VerifyIfPresent,
    /// Every event must carry a valid signature by a trusted key.
    Required,
}

impl SignaturePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SignaturePolicy::Off => "off",
            SignaturePolicy::VerifyIfPresent => "verify-if-present",
            SignaturePolicy::Required => "required",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(SignaturePolicy::Off),
            "verify-if-present" => Some(SignaturePolicy::VerifyIfPresent),
            "required" => Some(SignaturePolicy::Required),
            _ => None,
        }
    }
}

/// Why a public key cannot be trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key `{key_id}` is not base64 of 32 bytes")]
    NotBase64 { key_id: String },
    #[error("key `{key_id}` is not a valid Ed25519 public key")]
    NotAPoint { key_id: String },
    #[error("key `{key_id}` has small order: any signature would verify against it")]
    Weak { key_id: String },
    #[error("key_id `{key_id}` must be 1 to 128 bytes")]
    BadId { key_id: String },
}

/// The trusted public keys, by `key_id`. Cheap to clone (shared), so a
/// reload can swap one in while batches keep the one they started with.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Arc<HashMap<String, VerifyingKey>>,
}

impl KeyRing {
    /// Builds a key ring from `(key_id, base64 public key)` pairs.
    pub fn from_base64<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<KeyRing, KeyError> {
        let mut keys = HashMap::new();
        for (key_id, b64) in pairs {
            if key_id.is_empty() || key_id.len() > 128 {
                return Err(KeyError::BadId {
                    key_id: key_id.into(),
                });
            }
            let bytes: [u8; 32] = STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| KeyError::NotBase64 {
                    key_id: key_id.into(),
                })?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAPoint {
                key_id: key_id.into(),
            })?;
            if key.is_weak() {
                return Err(KeyError::Weak {
                    key_id: key_id.into(),
                });
            }
            keys.insert(key_id.to_owned(), key);
        }
        Ok(KeyRing {
            keys: Arc::new(keys),
        })
    }

    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.get(key_id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Key ids, sorted (for logs and status).
    pub fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}

/// Base64 of a signing key's public half, as written under `[keys]`.
pub fn public_key_base64(key: &SigningKey) -> String {
    STANDARD.encode(key.verifying_key().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn sign_then_verify_strict() {
        let k = key(7);
        let h = event_hash(b"{}");
        let sig = decode_sig(&sign(&k, &h)).unwrap();
        assert!(verify(&k.verifying_key(), &h, &sig));
        let other = event_hash(b"[]");
        assert!(!verify(&k.verifying_key(), &other, &sig));
        assert!(!verify(&key(8).verifying_key(), &h, &sig));
    }

    #[test]
    fn sig_must_be_canonical_base64_of_64_bytes() {
        let s = sign(&key(1), &event_hash(b"x"));
        assert!(decode_sig(&s).is_some());
        assert!(decode_sig(&s[..86]).is_none(), "unpadded");
        assert!(
            decode_sig(&format!("{}AA", &s[..86])).is_none(),
            "no padding"
        );
        // Non-zero trailing bits: the character before "==" must encode 4 zero bits.
        let mut chars: Vec<char> = s.chars().collect();
        let last = chars[85];
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let idx = alphabet.find(last).unwrap();
        chars[85] = alphabet.chars().nth(idx | 1).unwrap();
        let tweaked: String = chars.into_iter().collect();
        assert!(
            decode_sig(&tweaked).is_none(),
            "non-canonical trailing bits"
        );
        assert!(decode_sig(&STANDARD.encode([0u8; 63])).is_none());
        assert!(decode_sig(&STANDARD.encode([0u8; 65])).is_none());
    }

    #[test]
    fn verify_strict_refuses_non_canonical_s() {
        // S + L (the group order) verifies with plain verification rules in
        // some libraries; strict verification must refuse it.
        let k = key(3);
        let h = event_hash(b"e");
        let mut sig = k.sign(&h.0).to_bytes();
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
            sig[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert!(!verify(&k.verifying_key(), &h, &sig));
    }

    #[test]
    fn small_order_keys_are_refused_at_load() {
        // The identity point (y = 1) has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let b64 = STANDARD.encode(identity);
        assert_eq!(
            KeyRing::from_base64([("weak", b64.as_str())]).unwrap_err(),
            KeyError::Weak {
                key_id: "weak".into()
            }
        );
        assert!(matches!(
            KeyRing::from_base64([("k", "nope")]),
            Err(KeyError::NotBase64 { .. })
        ));
        let good = public_key_base64(&key(9));
        let ring = KeyRing::from_base64([("k9", good.as_str())]).unwrap();
        assert!(ring.get("k9").is_some());
        assert_eq!(ring.ids(), ["k9"]);
    }
}
