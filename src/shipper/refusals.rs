//! Refused lines in the log, rate-limited: the first few of each verdict
//! are logged one by one, then a summary a minute ("N more malformed lines
//! since …"), so a flood of garbage cannot flood the log (200,000 garbage
//! lines once gave 200,001 log lines). Every line is still quarantined,
//! and counted in the metrics; a halting verdict is always logged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use crate::ledger::Verdict;
use crate::mirror::QuarantineRow;

/// Refused lines of one verdict logged one by one in a window.
pub const LOGGED_PER_WINDOW: u64 = 5;
/// How long a window lasts: at most one summary per verdict this often.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Window {
    began: Instant,
    logged: u64,
    held_back: u64,
    since: SystemTime,
    last: Option<(String, u64)>,
}

/// Per verdict, what this window logged and held back.
#[derive(Debug, Default)]
pub struct RefusalLog {
    windows: BTreeMap<Verdict, Window>,
    /// The ledger is a plain JSON log (its hints differ).
    plain: bool,
}

impl RefusalLog {
    /// The log of a plain ledger's refusals (`plain`) or a sealed one's.
    pub fn new(plain: bool) -> RefusalLog {
        RefusalLog {
            windows: BTreeMap::new(),
            plain,
        }
    }

    /// Logs a refused line, unless this window has logged enough of its
    /// verdict (then it is counted for the summary).
    pub fn log(&mut self, ledger: &str, q: &QuarantineRow) {
        // A line that did not parse that far has no seq: the field is left
        // out (an Option records nothing) rather than shown as -1.
        let seq = q.seq;
        if q.verdict.halts() {
            tracing::error!(
                ledger,
                file = %q.path,
                offset = q.offset,
                seq,
                verdict = %q.verdict,
                detail = %q.detail,
                "ledger halted: nothing more is mirrored until the cause is fixed (see the runbook)"
            );
            return;
        }
        let w = self.windows.entry(q.verdict).or_insert_with(|| Window {
            began: Instant::now(),
            logged: 0,
            held_back: 0,
            since: SystemTime::now(),
            last: None,
        });
        if w.logged < LOGGED_PER_WINDOW {
            w.logged += 1;
            // An Option field records nothing when `None`.
            let hint = if self.plain {
                for_plain_refusal(q.verdict)
            } else {
                for_refusal(q.verdict, &q.detail)
            };
            tracing::warn!(
                ledger,
                file = %q.path,
                offset = q.offset,
                seq,
                verdict = %q.verdict,
                detail = %q.detail,
                hint,
                "line quarantined"
            );
            if w.logged == LOGGED_PER_WINDOW {
                tracing::warn!(
                    ledger,
                    verdict = %q.verdict,
                    "more {} lines are only counted for now (every one is quarantined); a summary follows within a minute",
                    q.verdict
                );
            }
        } else {
            if w.held_back == 0 {
                w.since = SystemTime::now();
            }
            w.held_back += 1;
            w.last = Some((q.path.clone(), q.offset));
        }
    }

    /// Logs a summary of what was held back, for each verdict whose window
    /// is over (or for all of them, with `now`), and starts new windows.
    pub fn summarize(&mut self, ledger: &str, now: bool) {
        self.windows.retain(|verdict, w| {
            if !now && w.began.elapsed() < WINDOW {
                return true;
            }
            if w.held_back > 0 {
                let (file, offset) = w.last.clone().unwrap_or_default();
                tracing::warn!(
                    ledger,
                    verdict = %verdict,
                    count = w.held_back,
                    since = %humantime::format_rfc3339_seconds(w.since),
                    last_file = %file,
                    last_offset = offset,
                    "{} more {verdict} lines quarantined (not logged one by one; the quarantine table holds them all)",
                    w.held_back
                );
            }
            false
        });
    }
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

/// The next step for a line of a plain JSON log quarantined as `verdict`.
pub fn for_plain_refusal(verdict: Verdict) -> Option<&'static str> {
    match verdict {
        Verdict::Malformed => Some(
            "a plain ledger adopts lines that are one JSON object each (I-JSON: no repeated member, integers within ±(2^53−1)); this one is kept in the quarantine table as evidence and the chain goes on",
        ),
        Verdict::TooLong => Some("raise the ledger's max_line_bytes if such lines are expected"),
        _ => None,
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
