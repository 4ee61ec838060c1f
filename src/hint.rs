//! The operator's next step for the library's errors: the hint shown
//! beside a message, in the daemon's logs as at the command line (which
//! adds its own for errors of the command line itself).

use crate::config::ConfigError;
use crate::ledger::Verdict;
use crate::mirror::MirrorError;
use crate::postgres::PgError;
use crate::producer::ProduceError;
use crate::shipper::ShipError;

/// `Some(hint)` when `cause` is one of the library's errors (the hint
/// itself may be `None`); `None` when it is not one of ours.
pub fn recognized(cause: &(dyn std::error::Error + 'static)) -> Option<Option<String>> {
    if let Some(e) = cause.downcast_ref::<ConfigError>() {
        return Some(e.hint());
    }
    if let Some(e) = cause.downcast_ref::<MirrorError>() {
        return Some(e.hint());
    }
    if let Some(e) = cause.downcast_ref::<PgError>() {
        return Some(e.hint.clone());
    }
    if let Some(e) = cause.downcast_ref::<ProduceError>() {
        return Some(e.hint());
    }
    if let Some(e) = cause.downcast_ref::<crate::tlog::TlogError>() {
        return Some(e.hint());
    }
    if let Some(ShipError::Mirror(e)) = cause.downcast_ref::<ShipError>() {
        return Some(e.hint());
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::PermissionDenied {
            return Some(Some(
                "check the file's permissions and the user ledgertail runs as".into(),
            ));
        }
    }
    None
}

/// The hint for the first cause in `err`'s chain that is one of ours.
pub fn for_error(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(recognized).flatten()
}

/// What lifts a `seq_gap` halt whose first missing seq is on a line
/// quarantined as `verdict`.
pub fn lift_quarantine(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::UnknownKey => {
            "trust the key (its public key under [keys] in the config), then reload with SIGHUP: the line is judged again and the halt lifts"
        }
        Verdict::Unsigned => {
            "sign the producer's events with a trusted key, or relax signatures in the config, then reload with SIGHUP"
        }
        Verdict::Malformed | Verdict::TooLong => {
            "that line is not a sealed event; only its producer can write it again (ledgertail append or a producer library), see the runbook for seq_gap"
        }
        Verdict::HashMismatch | Verdict::BadSignature => {
            "that line was changed after it was sealed, or forged: put back the line as its producer wrote it, then restart"
        }
        _ => "see the runbook for seq_gap",
    }
}

/// The next step for a line quarantined (not halting) as `verdict` with
/// `detail`, when one is more useful than the detail alone.
pub fn for_refusal(verdict: Verdict, detail: &str) -> Option<&'static str> {
    match verdict {
        Verdict::Malformed
            if detail == "missing member seq"
                || detail == "missing member hash"
                || detail.starts_with("not JSON") =>
        {
            Some(
            "not a sealed event: events are written with `ledgertail append` or a producer library (Python, Node, Rust), which add seq, ts, prev_hash and hash",
        )
        }
        Verdict::UnknownKey => {
            Some("trust the key under [keys] in the config and reload with SIGHUP: quarantined lines are judged again")
        }
        Verdict::Unsigned => Some(
            "signatures are required: sign with a trusted key, or relax signatures in the config and reload with SIGHUP",
        ),
        _ => None,
    }
}
