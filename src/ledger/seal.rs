//! Sealing: the event hash (§1.2) and Ed25519 signatures (§1.3).
//!
//! Verification follows ed25519-dalek's `verify_strict` exactly (S below the
//! group order, no small-order R or public key, R compared as encoded), but
//! is written on curve25519-dalek's group operations so that it can be split
//! in two: [`SignatureCheck::begin`] does the per-signature work (SHA-512 and
//! the double scalar multiplication), and [`finish_checks`] compresses a
//! whole chunk of recomputed R points with one shared field inversion, where
//! `verify_strict` pays one inversion and one square root per signature. The
//! equivalence is argued beside `finish_checks` and tested against
//! `verify_strict` itself. `verify_batch` (a random linear combination)
//! accepts signatures `verify_strict` refuses, so it is not used.
//! Trusted keys are refused at load time when they have small order, which
//! makes a bad configuration an error instead of a quiet weakness.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::Scalar;
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest, Sha256, Sha512};

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

/// A trusted Ed25519 public key, ready for checks: its bytes as configured
/// (they are hashed into every challenge) and the negated point.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    encoded: [u8; 32],
    minus_point: EdwardsPoint,
}

impl TrustedKey {
    fn from_bytes(encoded: [u8; 32]) -> Result<TrustedKey, KeyFault> {
        let point = CompressedEdwardsY(encoded)
            .decompress()
            .ok_or(KeyFault::NotAPoint)?;
        if point.is_small_order() {
            return Err(KeyFault::SmallOrder);
        }
        Ok(TrustedKey {
            encoded,
            minus_point: -point,
        })
    }

    /// The public key's 32 bytes, as configured.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.encoded
    }
}

#[derive(Debug)]
enum KeyFault {
    NotAPoint,
    SmallOrder,
}

/// k = SHA-512(R ‖ A ‖ M) mod ℓ, with R and A as encoded (RFC 8032 §5.1.7).
fn challenge(r: &[u8], public: &[u8; 32], hash: &Hash) -> Scalar {
    let mut digest = Sha512::new();
    digest.update(r);
    digest.update(public);
    digest.update(hash.0);
    Scalar::from_bytes_mod_order_wide(&digest.finalize().into())
}

/// A strict signature check under way: R as the signature encodes it, and
/// [s]B − [k]A as recomputed. It passes when the recomputed point encodes
/// to exactly those bytes and has no small order.
#[derive(Debug, Clone)]
pub struct SignatureCheck {
    claimed_r: [u8; 32],
    recomputed_r: EdwardsPoint,
}

impl SignatureCheck {
    /// The per-signature work of a strict check of `sig` by `key` over an
    /// event hash. `None`: refused already (S is not below the group order).
    pub fn begin(key: &TrustedKey, hash: &Hash, sig: &[u8; 64]) -> Option<SignatureCheck> {
        let (claimed_r, s) = sig.split_at(32);
        let s: [u8; 32] = s.try_into().ok()?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s))?;
        let k = challenge(claimed_r, &key.encoded, hash);
        Some(SignatureCheck {
            claimed_r: claimed_r.try_into().ok()?,
            recomputed_r: EdwardsPoint::vartime_double_scalar_mul_basepoint(
                &k,
                &key.minus_point,
                &s,
            ),
        })
    }

    /// Finishes this check on its own.
    pub fn passes(&self) -> bool {
        self.passes_with(&self.recomputed_r.compress())
    }

    fn passes_with(&self, recomputed: &CompressedEdwardsY) -> bool {
        recomputed.0 == self.claimed_r && !self.recomputed_r.is_small_order()
    }
}

/// Finishes many checks: `true` for each that passes, in order.
///
/// The same answers as `verify_strict`, which decompresses R (refusing an
/// encoding that is not a point), refuses a small-order R, and then compares
/// the compressed recomputed point with R's bytes. Here only the comparison
/// and the order test are made, on the recomputed point: if the bytes are
/// equal, R is the canonical encoding of that very point (so it decompresses,
/// and to a point of small order exactly when the recomputed one is); if they
/// differ, both refuse. Compressing all points at once costs one field
/// inversion in all instead of one each.
pub fn finish_checks(checks: &[SignatureCheck]) -> Vec<bool> {
    let points: Vec<EdwardsPoint> = checks.iter().map(|c| c.recomputed_r).collect();
    EdwardsPoint::compress_batch_alloc(&points)
        .iter()
        .zip(checks)
        .map(|(compressed, check)| check.passes_with(compressed))
        .collect()
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
    #[error("key_id {key_id:?} must be 1 to 128 bytes with no control character")]
    BadId { key_id: String },
}

/// A key id that configuration, key files and `keygen` accept: 1 to 128
/// bytes and no control character (ids are printed in logs and in the
/// `[keys]` line `keygen` writes, which must stay one valid TOML line).
pub fn is_valid_key_id(key_id: &str) -> bool {
    !key_id.is_empty() && key_id.len() <= 128 && !key_id.chars().any(char::is_control)
}

/// The trusted public keys, by `key_id`. Cheap to clone (shared), so a
/// reload can swap one in while batches keep the one they started with.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Arc<HashMap<String, TrustedKey>>,
}

impl KeyRing {
    /// Builds a key ring from `(key_id, base64 public key)` pairs.
    pub fn from_base64<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<KeyRing, KeyError> {
        let mut keys = HashMap::new();
        for (key_id, b64) in pairs {
            if !is_valid_key_id(key_id) {
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
            let key = TrustedKey::from_bytes(bytes).map_err(|fault| match fault {
                KeyFault::NotAPoint => KeyError::NotAPoint {
                    key_id: key_id.into(),
                },
                KeyFault::SmallOrder => KeyError::Weak {
                    key_id: key_id.into(),
                },
            })?;
            keys.insert(key_id.to_owned(), key);
        }
        Ok(KeyRing {
            keys: Arc::new(keys),
        })
    }

    pub fn get(&self, key_id: &str) -> Option<&TrustedKey> {
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

    /// The keys named by `ids` only (a ledger's `keys = [...]`); `Err` names
    /// an id that is not in this ring.
    pub fn only<'i>(&self, ids: impl IntoIterator<Item = &'i str>) -> Result<KeyRing, String> {
        let mut keys = HashMap::new();
        for id in ids {
            let key = self.keys.get(id).ok_or_else(|| id.to_owned())?;
            keys.insert(id.to_owned(), key.clone());
        }
        Ok(KeyRing {
            keys: Arc::new(keys),
        })
    }

    /// The ring with `other`'s keys added (same id: `other` wins).
    pub fn with(&self, other: &KeyRing) -> KeyRing {
        let mut keys = (*self.keys).clone();
        keys.extend(other.keys.iter().map(|(k, v)| (k.clone(), v.clone())));
        KeyRing {
            keys: Arc::new(keys),
        }
    }
}

/// Same ids with the same public keys.
impl PartialEq for KeyRing {
    fn eq(&self, other: &KeyRing) -> bool {
        self.keys.len() == other.keys.len()
            && self.keys.iter().all(|(id, k)| {
                other
                    .keys
                    .get(id)
                    .is_some_and(|o| o.as_bytes() == k.as_bytes())
            })
    }
}

impl Eq for KeyRing {}

/// Base64 of a signing key's public half, as written under `[keys]`.
pub fn public_key_base64(key: &SigningKey) -> String {
    STANDARD.encode(key.verifying_key().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
    use proptest::prelude::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// One strict check, begun and finished alone.
    fn verify(key: &TrustedKey, hash: &Hash, sig: &[u8; 64]) -> bool {
        SignatureCheck::begin(key, hash, sig).is_some_and(|check| check.passes())
    }

    fn trusted(key: &SigningKey) -> TrustedKey {
        TrustedKey::from_bytes(key.verifying_key().to_bytes()).unwrap()
    }

    /// The oracle: ed25519-dalek's own strict verification.
    fn dalek_strict(public: &[u8; 32], hash: &Hash, sig: &[u8; 64]) -> bool {
        VerifyingKey::from_bytes(public).is_ok_and(|k| {
            k.verify_strict(&hash.0, &Signature::from_bytes(sig))
                .is_ok()
        })
    }

    /// Ours, alone and finished in a batch (with other signatures around it),
    /// against the oracle.
    fn agrees_with_dalek(public: &[u8; 32], hash: &Hash, sig: &[u8; 64]) -> bool {
        let expected = dalek_strict(public, hash, sig);
        let Ok(key) = TrustedKey::from_bytes(*public) else {
            // Keys we refuse at load: verify_strict refuses all their signatures.
            return !expected;
        };
        let alone = verify(&key, hash, sig);
        let batched = match SignatureCheck::begin(&key, hash, sig) {
            None => false,
            Some(check) => {
                let other = key_for_batch();
                let good = decode_sig(&sign(&other, &Hash([9; 32]))).unwrap();
                let neighbour = SignatureCheck::begin(&trusted(&other), &Hash([9; 32]), &good)
                    .expect("canonical S");
                let results = finish_checks(&[neighbour.clone(), check, neighbour]);
                assert_eq!((results[0], results[2]), (true, true));
                results[1]
            }
        };
        alone == expected && batched == expected
    }

    fn key_for_batch() -> SigningKey {
        key(42)
    }

    /// Adds ℓ·multiple to a little-endian 256-bit integer (S malleation).
    fn add_group_order(s: &mut [u8]) {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s[i]) + u16::from(L[i]) + carry;
            s[i] = v as u8;
            carry = v >> 8;
        }
    }

    #[test]
    fn sign_then_verify_strict() {
        let k = key(7);
        let h = event_hash(b"{}");
        let sig = decode_sig(&sign(&k, &h)).unwrap();
        assert!(verify(&trusted(&k), &h, &sig));
        let other = event_hash(b"[]");
        assert!(!verify(&trusted(&k), &other, &sig));
        assert!(!verify(&trusted(&key(8)), &h, &sig));
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
        add_group_order(&mut sig[32..]);
        assert!(!verify(&trusted(&k), &h, &sig));
        assert!(agrees_with_dalek(&k.verifying_key().to_bytes(), &h, &sig));
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

    /// A = [a]B + T with T of order 8: mixed order, which strict
    /// verification accepts as a key (only small order is refused).
    fn mixed_order_key() -> (Scalar, [u8; 32]) {
        let a = Scalar::from_bytes_mod_order([5; 32]);
        let public = (ED25519_BASEPOINT_POINT * a + EIGHT_TORSION[1]).compress();
        (a, public.0)
    }

    #[test]
    fn small_order_r_is_refused_even_when_the_equation_holds() {
        // A mixed-order key A = [a]B + T (T of order 8; not small order, so
        // strict verification accepts the key) and R = −[k]T, a point of
        // small order: with s = k·a the cofactorless equation [s]B − [k]A = R
        // holds, plain verification accepts, strict verification refuses.
        let (a, public) = mixed_order_key();
        let mut found = 0;
        for i in 0u32..2000 {
            let hash = event_hash(&i.to_le_bytes());
            let r = EIGHT_TORSION[(i % 8) as usize].compress().0;
            let k = challenge(&r, &public, &hash);
            if (-(EIGHT_TORSION[1] * k)).compress().0 != r {
                continue;
            }
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&r);
            sig[32..].copy_from_slice((k * a).as_bytes());
            let plain = VerifyingKey::from_bytes(&public)
                .unwrap()
                .verify(&hash.0, &Signature::from_bytes(&sig));
            assert!(plain.is_ok(), "the equation holds");
            assert!(!dalek_strict(&public, &hash, &sig));
            assert!(agrees_with_dalek(&public, &hash, &sig));
            found += 1;
        }
        assert!(found > 10, "only {found} cases");
    }

    #[test]
    fn mixed_order_r_that_satisfies_the_equation_is_accepted_as_dalek_does() {
        // R = [r]B − [k]T with the same mixed-order key: not small order, the
        // equation holds exactly, so verify_strict accepts, and so must we.
        let (a, public) = mixed_order_key();
        let r_scalar = Scalar::from_bytes_mod_order([77; 32]);
        let mut found = 0;
        for i in 0u32..2000 {
            let hash = event_hash(&i.to_le_bytes());
            let guess = EIGHT_TORSION[(i % 8) as usize];
            let r_point = ED25519_BASEPOINT_POINT * r_scalar + guess;
            let r = r_point.compress().0;
            let k = challenge(&r, &public, &hash);
            if -(EIGHT_TORSION[1] * k) != guess {
                continue;
            }
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&r);
            sig[32..].copy_from_slice((r_scalar + k * a).as_bytes());
            assert!(dalek_strict(&public, &hash, &sig), "the oracle accepts");
            assert!(agrees_with_dalek(&public, &hash, &sig));
            found += 1;
        }
        assert!(found > 10, "only {found} cases");
    }

    #[test]
    fn small_order_and_non_canonical_r_encodings_agree_with_dalek() {
        let k = key(11);
        let public = k.verifying_key().to_bytes();
        let h = event_hash(b"r");
        let good = k.sign(&h.0).to_bytes();
        let mut encodings: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|p| p.compress().0).collect();
        // y = p + i for i < 19 (non-canonical), with either sign bit.
        for i in 0u8..19 {
            let mut y = [0xff; 32];
            y[0] = 0xed + i;
            y[31] = 0x7f;
            encodings.push(y);
            y[31] = 0xff;
            encodings.push(y);
        }
        // The true R with its sign bit flipped.
        let mut flipped = [0u8; 32];
        flipped.copy_from_slice(&good[..32]);
        flipped[31] ^= 0x80;
        encodings.push(flipped);
        for r in encodings {
            let mut sig = good;
            sig[..32].copy_from_slice(&r);
            assert!(agrees_with_dalek(&public, &h, &sig), "R = {r:02x?}");
            assert!(!verify(&trusted(&k), &h, &sig));
        }
    }

    #[test]
    fn a_batch_answers_each_signature_as_alone() {
        let keys: Vec<SigningKey> = (1..=4).map(key).collect();
        let mut checks = Vec::new();
        let mut expected = Vec::new();
        for i in 0u32..300 {
            let signer = &keys[i as usize % 4];
            let h = event_hash(&i.to_be_bytes());
            let mut sig = signer.sign(&h.0).to_bytes();
            if i % 7 == 3 {
                sig[i as usize % 64] ^= 1 << (i % 8);
            }
            let key = trusted(&keys[(i as usize + usize::from(i % 11 == 5)) % 4]);
            match SignatureCheck::begin(&key, &h, &sig) {
                Some(check) => {
                    expected.push(check.passes());
                    checks.push(check);
                }
                None => assert!(!dalek_strict(key.as_bytes(), &h, &sig)),
            }
        }
        assert_eq!(finish_checks(&checks), expected);
        assert!(expected.iter().filter(|&&ok| ok).count() > 200);
        assert!(expected.iter().any(|&ok| !ok));
        assert!(finish_checks(&[]).is_empty());
    }

    proptest! {
        #[test]
        fn random_signatures_and_corruptions_agree_with_dalek(
            seed in any::<[u8; 32]>(),
            message in any::<[u8; 32]>(),
            flip in 0usize..512,
            corrupt in any::<bool>(),
            malleate in any::<bool>(),
        ) {
            let k = SigningKey::from_bytes(&seed);
            let public = k.verifying_key().to_bytes();
            let h = Hash(message);
            let mut sig = k.sign(&h.0).to_bytes();
            if corrupt {
                sig[flip / 8] ^= 1 << (flip % 8);
            }
            if malleate {
                add_group_order(&mut sig[32..]);
            }
            prop_assert!(agrees_with_dalek(&public, &h, &sig));
        }

        #[test]
        fn random_bytes_as_key_and_signature_agree_with_dalek(
            public in any::<[u8; 32]>(),
            sig in proptest::collection::vec(any::<u8>(), 64),
            message in any::<[u8; 32]>(),
        ) {
            let sig: [u8; 64] = sig.try_into().unwrap();
            prop_assert!(agrees_with_dalek(&public, &Hash(message), &sig));
        }
    }
}
