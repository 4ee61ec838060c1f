//! The pure core: what a ledger line *means* (contract §1–§2).
//!
//! Bytes in, values out. Nothing here touches files, SQLite, clocks, logs or
//! metrics (`tests/it/architecture.rs` enforces it), so every rule of the
//! contract is unit-testable with byte literals.
//!
//! A line's journey through the core:
//! 1. [`frame::Framer`] cuts a byte stream into complete lines with their
//!    offsets (an unfinished last line is never a line; over-long lines are
//!    reported as `too_long` without being buffered).
//! 2. [`event::authenticate`] turns one line into a [`SealedEvent`] or a
//!    refusal: `malformed`, `hash_mismatch`, `unsigned`, `unknown_key` or
//!    `bad_signature`. It parses ([`json`]), canonicalizes ([`jcs`]), hashes
//!    and checks the signature ([`seal`]). It needs no head, so it can run on
//!    any thread.
//! 3. [`judge::place`] decides where an authentic event sits against the
//!    head: `mirrored`, `duplicate`, `fork`, `seq_gap` or `chain_break`.

pub mod adopt;
pub mod columns;
pub mod event;
pub mod frame;
pub mod jcs;
pub mod json;
pub mod judge;
pub mod note;
pub mod number;
pub mod seal;
pub mod tiles;
pub mod timestamp;
pub mod tlog;
pub mod tree;

pub use event::{authenticate, Refusal, SealedEvent};
pub use judge::{
    examine, examine_each, examine_plain, judge_line, place, Chain, ChainRules, Examined,
    LineJudgement, Placement,
};
pub use seal::{KeyRing, SignaturePolicy};

use std::fmt;

/// The verdict on one complete line (contract §2). The strings are the
/// contract's; [`Verdict::as_str`] is the single source for the metric
/// label, the `quarantine.verdict` column and JSON reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Mirrored,
    Malformed,
    TooLong,
    HashMismatch,
    BadSignature,
    UnknownKey,
    Unsigned,
    Duplicate,
    Fork,
    SeqGap,
    ChainBreak,
    Rewritten,
}

impl Verdict {
    /// Every verdict, in the contract's table order.
    pub const ALL: [Verdict; 12] = [
        Verdict::Mirrored,
        Verdict::Malformed,
        Verdict::TooLong,
        Verdict::HashMismatch,
        Verdict::BadSignature,
        Verdict::UnknownKey,
        Verdict::Unsigned,
        Verdict::Duplicate,
        Verdict::Fork,
        Verdict::SeqGap,
        Verdict::ChainBreak,
        Verdict::Rewritten,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Mirrored => "mirrored",
            Verdict::Malformed => "malformed",
            Verdict::TooLong => "too_long",
            Verdict::HashMismatch => "hash_mismatch",
            Verdict::BadSignature => "bad_signature",
            Verdict::UnknownKey => "unknown_key",
            Verdict::Unsigned => "unsigned",
            Verdict::Duplicate => "duplicate",
            Verdict::Fork => "fork",
            Verdict::SeqGap => "seq_gap",
            Verdict::ChainBreak => "chain_break",
            Verdict::Rewritten => "rewritten",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Verdicts after which the ledger mirrors nothing more until an
    /// operator acts (contract §2).
    pub fn halts(self) -> bool {
        matches!(
            self,
            Verdict::Fork | Verdict::SeqGap | Verdict::ChainBreak | Verdict::Rewritten
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SHA-256 event hash. Written as 64 lowercase hex digits everywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Parses exactly 64 lowercase hex digits (the only form the contract
    /// allows in `hash` and `prev_hash`).
    pub fn from_hex(s: &str) -> Option<Hash> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        // A table lookup per digit and one check at the end: every event
        // has one or two of these.
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let (hi, lo) = (
                HEX_VALUE[usize::from(pair[0])],
                HEX_VALUE[usize::from(pair[1])],
            );
            bad |= hi | lo;
            out[i] = (hi << 4) | lo;
        }
        (bad & 0xf0 == 0).then_some(Hash(out))
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        self.write_hex(&mut s);
        s
    }

    /// The 64 hex digits in a stack buffer (no allocation: the mirror
    /// writes two per row).
    pub fn hex_digits(&self) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        out
    }

    fn write_hex(&self, s: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// The value of a lowercase hex digit; 0xff for any other byte.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut c = 0;
    while c < 10 {
        t[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        t[b'a' as usize + c] = 10 + c as u8;
        c += 1;
    }
    t
};

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(64);
        self.write_hex(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

/// The last event a mirror accepted for a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

/// JSON white space only (a CR before the LF included): skipped, not judged.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_round_trip_lowercase_only() {
        let hex = "100b66f8473d73af5dee35ca2b1799117301b1a387291e7d9c00e4de8f3326ea";
        assert_eq!(Hash::from_hex(hex).unwrap().to_hex(), hex);
        assert!(Hash::from_hex(&hex.to_uppercase()).is_none());
        assert!(Hash::from_hex(&hex[1..]).is_none());
        assert!(Hash::from_hex(&format!("{}g", &hex[1..])).is_none());
    }

    #[test]
    fn verdict_strings_round_trip_and_halts() {
        for v in Verdict::ALL {
            assert_eq!(Verdict::parse(v.as_str()), Some(v));
        }
        let halting: Vec<_> = Verdict::ALL.into_iter().filter(|v| v.halts()).collect();
        assert_eq!(
            halting,
            [
                Verdict::Fork,
                Verdict::SeqGap,
                Verdict::ChainBreak,
                Verdict::Rewritten
            ]
        );
    }

    #[test]
    fn blank_lines() {
        assert!(is_blank(b""));
        assert!(is_blank(b" \t\r"));
        assert!(!is_blank(b" x"));
        assert!(!is_blank("\u{feff}".as_bytes()));
    }
}
