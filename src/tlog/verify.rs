//! `verify-proof`: an offline proof checked with nothing but keys (contract
//! §7). An inclusion proof: the event's hash recomputed from the event in
//! `extra`, its leaf, the inclusion in the checkpoint's tree, the log's
//! signature and the cosignatures the policy asks for. A consistency proof
//! (an `add-checkpoint` body): from the checkpoint the state folder holds
//! to the new one. With a state folder the latest checkpoint per origin is
//! kept, and two signed checkpoints of one size with different roots (a
//! split view: the log showed two histories) are a security error with
//! both notes as the evidence.

use std::path::PathBuf;

use crate::ledger::note::{VerifierKey, COSIGNATURE_V1};
use crate::ledger::tlog::{hash_base64, AddCheckpoint, InclusionProof, SignedCheckpoint};
use crate::ledger::tree::{leaf_hash, verify_consistency, verify_inclusion};
use crate::ledger::{authenticate, KeyRing, SignaturePolicy};

/// What a proof must satisfy.
pub struct Policy {
    pub log: VerifierKey,
    pub witnesses: Vec<VerifierKey>,
    /// How many of `witnesses` must have cosigned.
    pub min_witnesses: usize,
    pub state: Option<PathBuf>,
}

/// Why a proof is not accepted.
#[derive(Debug)]
pub enum Rejected {
    /// The proof does not prove what it claims.
    Invalid(String),
    /// The log contradicted itself: the evidence.
    Security(String),
    /// The check could not be made.
    CannotRun(String),
}

/// Checks the signed checkpoint against the policy; returns it and a
/// summary of the cosignatures.
fn checked_checkpoint(policy: &Policy, text: &str) -> Result<(SignedCheckpoint, String), Rejected> {
    let signed = SignedCheckpoint::parse(text)
        .map_err(|e| Rejected::Invalid(format!("the checkpoint: {e}")))?;
    if signed.checkpoint.origin != policy.log.name {
        return Err(Rejected::Invalid(format!(
            "the checkpoint is of the log `{}`, the key given is for `{}`",
            signed.checkpoint.origin, policy.log.name
        )));
    }
    signed
        .note
        .verify(&policy.log)
        .map_err(|e| Rejected::Invalid(format!("the checkpoint's signature: {e}")))?;
    let mut cosigned = Vec::new();
    for w in &policy.witnesses {
        if w.kind != COSIGNATURE_V1 {
            return Err(Rejected::CannotRun(format!(
                "--witness {w}: not a cosignature/v1 key"
            )));
        }
        match signed.note.verify(w) {
            Ok(_) => cosigned.push(w.name.clone()),
            Err(crate::ledger::note::NoteError::NotSigned(_)) => {}
            Err(e) => return Err(Rejected::Invalid(format!("witness {}: {e}", w.name))),
        }
    }
    if cosigned.len() < policy.min_witnesses {
        return Err(Rejected::Invalid(format!(
            "{} of the {} witnesses given cosigned the checkpoint ({}), the policy needs {}",
            cosigned.len(),
            policy.witnesses.len(),
            if cosigned.is_empty() {
                "none".into()
            } else {
                cosigned.join(", ")
            },
            policy.min_witnesses
        )));
    }
    let summary = if cosigned.is_empty() {
        String::new()
    } else {
        format!(", cosigned by {}", cosigned.join(", "))
    };
    Ok((signed, summary))
}

fn read_state(dir: &std::path::Path, origin: &str) -> Result<Option<SignedCheckpoint>, Rejected> {
    let path = super::state_file(dir, origin);
    match std::fs::read_to_string(&path) {
        Ok(t) => SignedCheckpoint::parse(&t)
            .map(Some)
            .map_err(|e| Rejected::CannotRun(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Rejected::CannotRun(format!("{}: {e}", path.display()))),
    }
}

fn write_state(dir: &std::path::Path, signed: &SignedCheckpoint) -> Result<(), Rejected> {
    super::write_durably(
        dir,
        &super::state_file(dir, &signed.checkpoint.origin),
        &signed.note.to_text(),
    )
    .map_err(|e| Rejected::CannotRun(format!("{}: {e}", dir.display())))
}

/// Two signed checkpoints of one size with different roots.
fn split_view(old: &SignedCheckpoint, new: &SignedCheckpoint) -> Option<Rejected> {
    (old.checkpoint.size == new.checkpoint.size && old.checkpoint.root != new.checkpoint.root).then(|| {
        Rejected::Security(format!(
            "the log signed two different trees of size {}: this checkpoint (root {}) and the one in the state folder (root {}). Keep both as the evidence:\n--- in the state folder\n{}--- in the proof\n{}",
            new.checkpoint.size,
            hash_base64(&new.checkpoint.root),
            hash_base64(&old.checkpoint.root),
            old.note.to_text(),
            new.note.to_text()
        ))
    })
}

/// Checks a proof file's text; `Ok` with a one-line report.
pub fn check(policy: &Policy, text: &str) -> Result<String, Rejected> {
    if text.starts_with("old ") {
        return check_consistency(policy, text);
    }
    let proof = InclusionProof::parse(text)
        .map_err(|e| Rejected::Invalid(format!("not a tlog-proof: {e}")))?;
    let (signed, cosigned) = checked_checkpoint(policy, &proof.checkpoint)?;
    let Some(extra) = &proof.extra else {
        return Err(Rejected::Invalid(
            "the proof carries no event (its extra line)".into(),
        ));
    };
    let event = authenticate(
        extra,
        SignaturePolicy::Off,
        &KeyRing::default(),
        &mut Vec::new(),
    )
    .map_err(|r| {
        Rejected::Invalid(format!(
            "the event in the proof is {}: {}",
            r.verdict, r.detail
        ))
    })?;
    // The event must be spelt exactly as its canonical line: another
    // spelling (escapes, number forms, member order, spacing) hashes the
    // same, but the proof shows the event, and what it shows must be the
    // one text a verifier can compare byte for byte.
    if !is_canonical_line(extra) {
        return Err(Rejected::Invalid(format!(
            "the event in the proof (seq {}) is not written as its canonical line (RFC 8785: no spaces, members sorted, numbers and strings in their one form); a proof written by `ledgertail prove` always is",
            event.seq
        )));
    }
    let c = &signed.checkpoint;
    verify_inclusion(
        &leaf_hash(&event.hash.0),
        proof.index,
        c.size,
        &proof.hashes,
        &c.root,
    )
    .map_err(|e| {
        Rejected::Invalid(format!(
            "the event is not at index {} of the tree of size {}: {e}",
            proof.index, c.size
        ))
    })?;
    let mut state_note = String::new();
    if let Some(dir) = &policy.state {
        match read_state(dir, &c.origin)? {
            None => {
                write_state(dir, &signed)?;
                state_note = "; the state folder now holds this checkpoint".into();
            }
            Some(old) => {
                if let Some(split) = split_view(&old, &signed) {
                    return Err(split);
                }
                if old.checkpoint.size < c.size {
                    state_note = format!(
                        "; the state folder holds size {}: check a consistency proof from it (`ledgertail prove --consistency --from {}`) to move it on",
                        old.checkpoint.size, old.checkpoint.size
                    );
                }
            }
        }
    }
    Ok(format!(
        "OK: event seq {} (hash {}) is leaf {} of {} of size {}{cosigned}{state_note}",
        event.seq, event.hash, proof.index, c.origin, c.size
    ))
}

fn check_consistency(policy: &Policy, text: &str) -> Result<String, Rejected> {
    let body = AddCheckpoint::parse(text)
        .map_err(|e| Rejected::Invalid(format!("not a consistency proof: {e}")))?;
    let (signed, cosigned) = checked_checkpoint(policy, &body.checkpoint)?;
    let Some(dir) = &policy.state else {
        return Err(Rejected::CannotRun(
            "a consistency proof is checked against a checkpoint already trusted: give --state DIR"
                .into(),
        ));
    };
    let c = &signed.checkpoint;
    let old = read_state(dir, &c.origin)?;
    let (old_size, old_root) = match &old {
        Some(o) => (o.checkpoint.size, o.checkpoint.root),
        None if body.old == 0 => (0, crate::ledger::tree::empty_root()),
        None => {
            return Err(Rejected::CannotRun(format!(
                "the state folder holds no checkpoint of {}; a proof from size 0 (or an inclusion proof) starts it",
                c.origin
            )))
        }
    };
    if let Some(o) = &old {
        if let Some(split) = split_view(o, &signed) {
            return Err(split);
        }
    }
    if body.old != old_size {
        return Err(Rejected::CannotRun(format!(
            "the proof is from size {}, the state folder holds size {old_size}; make one with `ledgertail prove --consistency --from {old_size}`",
            body.old
        )));
    }
    verify_consistency(old_size, c.size, &old_root, &c.root, &body.hashes).map_err(|e| {
        Rejected::Invalid(format!(
            "the proof does not show that the tree of size {} extends the one of size {old_size} in the state folder: {e}",
            c.size
        ))
    })?;
    if c.size > old_size || old.is_none() {
        write_state(dir, &signed)?;
    }
    Ok(format!(
        "OK: {} of size {} extends the checkpoint of size {old_size}{cosigned}; the state folder now holds size {}",
        c.origin,
        c.size,
        c.size.max(old_size)
    ))
}

/// Whether `line` is byte for byte the RFC 8785 form of the JSON it holds.
fn is_canonical_line(line: &[u8]) -> bool {
    let Some(value) = std::str::from_utf8(line)
        .ok()
        .and_then(|t| crate::ledger::json::parse(t).ok())
    else {
        return false;
    };
    let mut canonical = Vec::with_capacity(line.len());
    crate::ledger::jcs::write_value(&mut canonical, &value);
    canonical == line
}
