//! Offline proofs from the mirror: an event's inclusion in the latest
//! signed checkpoint (its `extra` the event's canonical line, which
//! `verify-proof` compares byte for byte), and the consistency of the
//! tree from an older size to that checkpoint's, as a witness's
//! `add-checkpoint` body.

use super::latest_with_cosignatures;
use crate::ledger::columns::event_line;
use crate::ledger::tlog::{AddCheckpoint, InclusionProof};
use crate::ledger::{jcs, json};
use crate::mirror::{Mirror, MirrorError};

/// Why a proof cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("ledger `{ledger}` has no signed checkpoint yet; sign one with `ledgertail checkpoint --ledger {ledger}`")]
    NoCheckpoint { ledger: String },
    #[error("ledger `{ledger}`: seq {seq} is not in the latest signed checkpoint (seqs {first} to {last}); sign a newer one with `ledgertail checkpoint --ledger {ledger}`")]
    NotInCheckpoint {
        ledger: String,
        seq: u64,
        first: u64,
        last: u64,
    },
    #[error("ledger `{ledger}`: no mirrored event at seq {seq}")]
    NoEvent { ledger: String, seq: u64 },
    #[error("ledger `{ledger}`: the row at seq {seq} does not form an event; run `ledgertail verify --db`")]
    NotAnEvent { ledger: String, seq: u64 },
    #[error("ledger `{ledger}`: {reason}")]
    Proof { ledger: String, reason: String },
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Tlog(#[from] super::TlogError),
}

/// The inclusion proof of the event at `seq` in `ledger`'s latest signed
/// checkpoint (with the cosignatures kept for it).
pub fn prove_event(mirror: &Mirror, ledger: &str, seq: u64) -> Result<InclusionProof, ProveError> {
    let (size, checkpoint) = latest(mirror, ledger)?;
    let anchor = mirror
        .state(ledger)?
        .and_then(|s| s.anchor)
        .map_or(0, |a| a.seq);
    let index = match seq.checked_sub(anchor) {
        Some(i) if i < size => i,
        _ => {
            return Err(ProveError::NotInCheckpoint {
                ledger: ledger.to_owned(),
                seq,
                first: anchor,
                last: anchor + size - 1,
            })
        }
    };
    let extra = canonical_line(mirror, ledger, seq)?;
    let hashes = mirror
        .inclusion_proof(ledger, index, size)?
        .map_err(|e| ProveError::Proof {
            ledger: ledger.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(InclusionProof {
        extra: Some(extra),
        index,
        hashes,
        checkpoint,
    })
}

/// The consistency proof from the tree at `from` to `ledger`'s latest
/// signed checkpoint, as a witness's `add-checkpoint` body, and that
/// checkpoint's size.
pub fn prove_consistency(
    mirror: &Mirror,
    ledger: &str,
    from: u64,
) -> Result<(AddCheckpoint, u64), ProveError> {
    let (size, checkpoint) = latest(mirror, ledger)?;
    let hashes = mirror
        .consistency_proof(ledger, from, size)?
        .map_err(|e| ProveError::Proof {
            ledger: ledger.to_owned(),
            reason: format!("{e} (the latest checkpoint has size {size})"),
        })?;
    let body = AddCheckpoint {
        old: from,
        hashes,
        checkpoint,
    };
    Ok((body, size))
}

/// The size and text (with cosignatures) of the latest signed checkpoint.
fn latest(mirror: &Mirror, ledger: &str) -> Result<(u64, String), ProveError> {
    match latest_with_cosignatures(mirror, ledger)? {
        Some((signed, note)) => Ok((signed.checkpoint.size, note)),
        None => Err(ProveError::NoCheckpoint {
            ledger: ledger.to_owned(),
        }),
    }
}

/// The canonical line of the mirrored event at `seq`: the bytes its leaf
/// hashes, and what a proof's `extra` must be.
fn canonical_line(mirror: &Mirror, ledger: &str, seq: u64) -> Result<Vec<u8>, ProveError> {
    let rows = mirror.events_from(ledger, seq, 1)?;
    let Some(row) = rows.into_iter().find(|r| r.seq == seq) else {
        return Err(ProveError::NoEvent {
            ledger: ledger.to_owned(),
            seq,
        });
    };
    let line = event_line(&row.columns());
    let value = std::str::from_utf8(&line)
        .ok()
        .and_then(|t| json::parse(t).ok())
        .ok_or_else(|| ProveError::NotAnEvent {
            ledger: ledger.to_owned(),
            seq,
        })?;
    let mut canonical = Vec::with_capacity(line.len());
    jcs::write_value(&mut canonical, &value);
    Ok(canonical)
}
