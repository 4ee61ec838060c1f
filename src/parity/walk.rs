//! The mirror audited from its rows alone: the walk that `verify --db`,
//! `run`'s periodic parity check and `verify --postgres` make over a
//! ledger's rows, in seq order, from the recorded anchor to the recorded
//! head. Seqs that no row holds are returned as values
//! ([`ChainWalk::take_gap`], [`ChainWalk::finish`]); the caller counts
//! them.
//!
//! Every row's columns are audited ([`columns::audit`]: each column the
//! canonical text of what it names, the hash recomputed, the signature
//! checked under the ledger's policy), every `prev_hash` must be the hash
//! of the row before, no seq may be missing, and the rows at the anchor
//! and the head must carry the hashes the checkpoint recorded. Archived
//! rows (older than every file on disk) get the same checks: only the
//! columns vouch for them, and a history rewritten in SQLite shows as a
//! link that no longer holds.

use std::ops::Range;

use crate::config::LedgerSettings;
use crate::ledger::columns;
use crate::ledger::{Head, SealedEvent, SignaturePolicy};
use crate::mirror::{LedgerState, StoredEvent};

/// The walk over one ledger's rows.
pub struct ChainWalk<'a> {
    ledger: &'a LedgerSettings,
    anchor: Option<Head>,
    head: Option<Head>,
    /// The next seq the chain needs.
    expected: Option<u64>,
    /// The `hash` column of the row at `expected - 1`, when that row was read.
    previous: Option<String>,
    /// The seqs missing before the row last checked, until taken.
    gap: Option<Range<u64>>,
}

/// What the walk makes of one row.
#[derive(Debug, PartialEq, Eq)]
pub enum RowCheck {
    /// Part of the recorded chain, sound.
    Sound,
    /// Part of the recorded chain, but wrong: why.
    Unsound(String),
    /// Beyond the recorded head: committed after the checkpoint was read.
    Later,
}

impl<'a> ChainWalk<'a> {
    /// A walk against the checkpoint `state` (its anchor and head).
    pub fn new(ledger: &'a LedgerSettings, state: Option<&LedgerState>) -> ChainWalk<'a> {
        let anchor = state.and_then(|s| s.anchor);
        ChainWalk {
            ledger,
            anchor,
            head: state.and_then(|s| s.head),
            expected: anchor.map(|a| a.seq),
            previous: None,
            gap: None,
        }
    }

    /// A walk over part of the chain: the rows from `start` on, the row
    /// before them having the hash `previous` (`None`: not known, the first
    /// link is not checked).
    pub fn starting_at(
        ledger: &'a LedgerSettings,
        state: Option<&LedgerState>,
        start: u64,
        previous: Option<String>,
    ) -> ChainWalk<'a> {
        ChainWalk {
            expected: Some(start),
            previous,
            ..ChainWalk::new(ledger, state)
        }
    }

    /// The recorded head, where the walk ends.
    pub fn head(&self) -> Option<Head> {
        self.head
    }

    /// Checks the next row (rows come in seq order); seqs missing before
    /// it are then [`ChainWalk::take_gap`]'s. `check_signature`: audit its
    /// signature under the ledger's policy (else only its shape), for
    /// rows that no line on disk vouches for.
    pub fn row(&mut self, row: &StoredEvent, check_signature: bool) -> RowCheck {
        let policy = if check_signature {
            self.ledger.signatures
        } else {
            SignaturePolicy::Off
        };
        let keys = &self.ledger.keys;
        self.row_with(row, |cols| columns::audit(cols, policy, keys).map(|_| ()))
    }

    /// As [`ChainWalk::row`], for a row whose line on disk was just
    /// authenticated as `line` (its hash recomputed, its signature the
    /// one mirrored): when every column holds exactly the canonical part
    /// of that event the shipper would have written, the row is what the
    /// line proves, and recomputing its hash from its columns is spared
    /// (half of what a parity check costs per row). Otherwise the columns
    /// are audited as usual.
    pub fn row_vouched(&mut self, row: &StoredEvent, line: &SealedEvent) -> RowCheck {
        let keys = &self.ledger.keys;
        self.row_with(row, |cols| {
            if holds_exactly(cols, line) {
                Ok(())
            } else {
                columns::audit(cols, SignaturePolicy::Off, keys).map(|_| ())
            }
        })
    }

    /// The seqs that no row held just before the row last checked (taken:
    /// asked again, `None`).
    pub fn take_gap(&mut self) -> Option<Range<u64>> {
        self.gap.take()
    }

    fn row_with(
        &mut self,
        row: &StoredEvent,
        audit: impl FnOnce(&columns::Columns<'_>) -> Result<(), String>,
    ) -> RowCheck {
        self.gap = None;
        if let Some(fault) = &row.fault {
            return RowCheck::Unsound(fault.clone());
        }
        let (Some(anchor), Some(head)) = (self.anchor, self.head) else {
            return RowCheck::Unsound("a row of a ledger whose checkpoint records no head".into());
        };
        if row.seq > head.seq {
            return RowCheck::Later;
        }
        if row.seq < anchor.seq {
            return RowCheck::Unsound(format!(
                "a row below the recorded anchor (seq {})",
                anchor.seq
            ));
        }
        let expected = self.expected.unwrap_or(anchor.seq);
        if row.seq > expected {
            self.gap = Some(expected..row.seq);
            self.previous = None;
        }
        self.expected = Some(row.seq + 1);
        let previous = self.previous.replace(row.hash.clone());
        if let Err(why) = audit(&row.columns()) {
            return RowCheck::Unsound(why);
        }
        if row.seq == anchor.seq && row.hash != anchor.hash.to_hex() {
            return RowCheck::Unsound(format!(
                "the anchor row's hash is not the anchor the checkpoint recorded ({})",
                anchor.hash
            ));
        }
        if row.seq == head.seq && row.hash != head.hash.to_hex() {
            return RowCheck::Unsound(format!(
                "the head row's hash is not the head the checkpoint recorded ({})",
                head.hash
            ));
        }
        if let Some(prev) = previous {
            if row.prev_hash.as_deref() != Some(prev.as_str()) {
                return RowCheck::Unsound(format!(
                    "its prev_hash does not link to the row before (seq {}, hash {prev})",
                    row.seq - 1
                ));
            }
        }
        RowCheck::Sound
    }

    /// After the last row: seqs up to the recorded head that no row held.
    pub fn finish(self) -> Option<Range<u64>> {
        let head = self.head?;
        self.finish_at(head.seq)
    }

    /// After the last row of a walk over part of the chain that ends at
    /// `end`: seqs up to it that no row held.
    pub fn finish_at(self, end: u64) -> Option<Range<u64>> {
        let expected = self.expected?;
        (expected <= end).then(|| expected..end + 1)
    }
}

/// Every column is exactly the canonical part of `ev` (as the shipper
/// writes a row from the event it authenticated).
fn holds_exactly(cols: &columns::Columns<'_>, ev: &SealedEvent) -> bool {
    let hex_is = |text: &str, h: &crate::ledger::Hash| text.as_bytes() == h.hex_digits();
    cols.seq == ev.seq
        && cols.ts == ev.ts
        && cols.event_type == ev.event_type
        && cols.payload == ev.payload
        && cols.extra == ev.extra.as_deref()
        && cols.id == ev.id.as_deref()
        && cols.key_id == ev.key_id.as_deref()
        && cols.sig == ev.sig.as_deref()
        && hex_is(cols.hash, &ev.hash)
        && match (cols.prev_hash, &ev.prev_hash) {
            (None, None) => true,
            (Some(text), Some(h)) => hex_is(text, h),
            _ => false,
        }
}
