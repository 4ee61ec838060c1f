//! The shipper: THE loop for one ledger, tail → judge → batch → commit.
//!
//! `replay` calls [`Shipper::catch_up`] once; `run` calls it on every
//! wake-up. One code path is the guarantee that a replayed mirror is the
//! mirror `run` would have built.
//!
//! Exactly-once rests on one rule: the in-memory head and position only
//! move when [`Mirror::commit`] has written the rows *and* the checkpoint
//! covering them. If a commit fails, the shipper's state is reloaded from
//! the database and the same lines are read again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::LedgerSettings;
use crate::ledger::frame::Frame;
use crate::ledger::{Chain, Hash, KeyRing, LineJudgement, Verdict};
use crate::mirror::{EventRow, Halt, LedgerState, Mirror, MirrorError, QuarantineRow};
use crate::tail::{self, LedgerFile, Opened, TailConfig, Tailer};

/// Why catching up stopped with an error (a refused line is not one).
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("reading ledger `{ledger}` ({path}): {source}")]
    Io {
        ledger: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What one catch-up did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Lines judged, by verdict (blank lines are counted in `blank`).
    pub verdicts: BTreeMap<Verdict, u64>,
    pub blank: u64,
    pub commits: u64,
    /// Bytes of complete lines consumed.
    pub bytes: u64,
    /// Set when the ledger is halted (now or from before).
    pub halt: Option<Halt>,
}

impl Report {
    pub fn mirrored(&self) -> u64 {
        self.verdicts.get(&Verdict::Mirrored).copied().unwrap_or(0)
    }

    pub fn quarantined(&self) -> u64 {
        self.verdicts
            .iter()
            .filter(|(v, _)| **v != Verdict::Mirrored)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Progress of a catch-up, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// One ledger being mirrored.
pub struct Shipper {
    ledger: LedgerSettings,
    keys: KeyRing,
    mirror: Mirror,
    state: LedgerState,
    batch_max_events: usize,
}

impl Shipper {
    /// Loads the ledger's checkpoint (if any) from the mirror.
    pub fn new(
        ledger: LedgerSettings,
        keys: KeyRing,
        mirror: Mirror,
        batch_max_events: usize,
    ) -> Result<Shipper, ShipError> {
        let state = mirror
            .state(&ledger.name)?
            .unwrap_or_else(|| LedgerState::new(&ledger.path));
        if state.live_path != ledger.path {
            tracing::warn!(
                ledger = %ledger.name,
                was = %state.live_path.display(),
                now = %ledger.path.display(),
                "the ledger's live file moved since the last run; following the configured path"
            );
        }
        Ok(Shipper {
            ledger,
            keys,
            mirror,
            state,
            batch_max_events: batch_max_events.max(1),
        })
    }

    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    fn tail_config(&self) -> TailConfig {
        TailConfig {
            live: self.ledger.path.clone(),
            policy: self.ledger.signatures,
            keys: self.keys.clone(),
            max_line_bytes: self.ledger.max_line_bytes,
        }
    }

    fn io_err(&self, source: std::io::Error) -> ShipError {
        ShipError::Io {
            ledger: self.ledger.name.clone(),
            path: self.ledger.path.display().to_string(),
            source,
        }
    }

    /// Mirrors every complete line now on disk, in batches, until the end
    /// of the live file, a halt, or `stop`. A ledger halted before is
    /// judged again from its halting line: if the cause is gone it goes on,
    /// otherwise it halts again at the same place.
    pub fn catch_up(
        &mut self,
        stop: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Report, ShipError> {
        let mut report = Report::default();
        let files = self.tail_config().discover().map_err(|e| self.io_err(e))?;
        let Some(mut tailer) = self.open_tailer(files, &mut report)? else {
            return Ok(report);
        };
        let total_bytes = tailer.remaining_bytes();
        progress(Progress {
            done_bytes: 0,
            total_bytes,
        });

        let mut chain = Chain::new(
            self.state.head,
            self.state.anchor,
            self.ledger.signatures,
            self.keys.clone(),
            self.ledger.rules,
            self.ledger.max_line_bytes,
        );
        let mut events: Vec<EventRow> = Vec::with_capacity(self.batch_max_events);
        let mut quarantine: Vec<QuarantineRow> = Vec::new();
        loop {
            events.clear();
            quarantine.clear();
            let mut halt = None;
            let mut at_end = false;
            let mut lines = 0usize;
            let mut bytes = 0u64;
            while lines < self.batch_max_events {
                let next = tailer.next_frame().map_err(|e| self.io_err(e))?;
                let Some((file, frame)) = next else {
                    at_end = true;
                    break;
                };
                lines += 1;
                bytes += frame.length() + 1;
                match frame {
                    Frame::TooLong {
                        offset,
                        length,
                        prefix,
                    } => {
                        *report.verdicts.entry(Verdict::TooLong).or_default() += 1;
                        quarantine.push(QuarantineRow {
                            file,
                            path: String::new(),
                            offset,
                            length,
                            seq: None,
                            hash: None,
                            verdict: Verdict::TooLong,
                            detail: format!("{length} bytes > {}", self.ledger.max_line_bytes),
                            line: prefix.to_vec(),
                        });
                    }
                    Frame::Line { offset, bytes } => {
                        let mut lookup_error = None;
                        let judgement = chain.judge(bytes, bytes.len() as u64, |seq| {
                            match hash_in_batch(&events, seq) {
                                Some(h) => Some(h),
                                None => self.mirror.hash_at(&self.ledger.name, seq).unwrap_or_else(
                                    |e| {
                                        lookup_error = Some(e);
                                        None
                                    },
                                ),
                            }
                        });
                        if let Some(e) = lookup_error {
                            return Err(e.into());
                        }
                        match judgement {
                            LineJudgement::Blank => report.blank += 1,
                            LineJudgement::Mirrored(event) => {
                                *report.verdicts.entry(Verdict::Mirrored).or_default() += 1;
                                events.push(EventRow {
                                    event,
                                    file,
                                    offset,
                                });
                            }
                            LineJudgement::Refused { refusal, .. } => {
                                *report.verdicts.entry(refusal.verdict).or_default() += 1;
                                let keep = bytes.len().min(crate::ledger::frame::QUARANTINE_PREFIX);
                                if refusal.verdict.halts() {
                                    halt = Some(Halt {
                                        verdict: refusal.verdict,
                                        detail: refusal.detail.clone(),
                                        file: None,
                                        offset: Some(offset),
                                        seq: refusal.seq,
                                    });
                                }
                                quarantine.push(QuarantineRow {
                                    file,
                                    path: String::new(),
                                    offset,
                                    length: bytes.len() as u64,
                                    seq: refusal.seq,
                                    hash: refusal.hash,
                                    verdict: refusal.verdict,
                                    detail: refusal.detail,
                                    line: bytes[..keep].to_vec(),
                                });
                                if halt.is_some() {
                                    break;
                                }
                            }
                        }
                    }
                }
            }

            let current_path = tailer
                .current_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            for q in &mut quarantine {
                q.path = path_of(tailer.files(), q.file);
                log_refusal(&self.ledger.name, q);
            }
            let mut next_state = self.state.clone();
            next_state.head = chain.head;
            next_state.anchor = chain.anchor;
            if let Some(mut h) = halt.take() {
                h.file = Some(current_path.clone());
                // The checkpoint stays *before* the halting line, so a
                // restart judges it again (and goes on once it is fixed).
                next_state.position = tailer.position().map(|mut p| {
                    if let Some(off) = h.offset {
                        p.offset = off;
                        p.tail = Vec::new();
                    }
                    p
                });
                tracing::error!(
                    ledger = %self.ledger.name,
                    file = %current_path,
                    offset = h.offset.unwrap_or(0),
                    seq = h.seq.map(|s| s as i64).unwrap_or(-1),
                    verdict = %h.verdict,
                    detail = %h.detail,
                    "ledger halted: nothing more is mirrored until the cause is fixed (see the runbook)"
                );
                next_state.halt = Some(h);
            } else {
                next_state.position = tailer.position();
                next_state.halt = None;
            }
            if next_state.halt.is_some() {
                // Fix the tail check of a halting position (bytes before the
                // halting line) so the restart can verify them.
                if let Some(p) = next_state.position.as_mut() {
                    p.tail = tail_before(&p.path, p.offset);
                }
            }

            let unchanged = events.is_empty()
                && quarantine.is_empty()
                && next_state.position == self.state.position
                && next_state.halt == self.state.halt;
            if !unchanged {
                if let Err(e) =
                    self.mirror
                        .commit(&self.ledger.name, &events, &quarantine, &mut next_state)
                {
                    // Nothing of this batch is in the database: forget it
                    // (the caller builds a new chain from the reloaded state).
                    self.reload()?;
                    return Err(e.into());
                }
                self.state = next_state;
                report.commits += 1;
            }
            report.bytes += bytes;
            progress(Progress {
                done_bytes: total_bytes.saturating_sub(tailer.remaining_bytes()),
                total_bytes,
            });
            if self.state.halt.is_some() {
                report.halt = self.state.halt.clone();
                return Ok(report);
            }
            if at_end || stop.load(Ordering::Relaxed) {
                return Ok(report);
            }
        }
    }

    /// Rereads the checkpoint (after a failed commit).
    fn reload(&mut self) -> Result<(), ShipError> {
        self.state = self
            .mirror
            .state(&self.ledger.name)?
            .unwrap_or_else(|| LedgerState::new(&self.ledger.path));
        Ok(())
    }

    /// Opens the tailer at the checkpoint. `None` when there is nothing to
    /// read (no files yet) or the checkpoint no longer matches the files
    /// (then the ledger is halted as `rewritten`, and committed so).
    fn open_tailer(
        &mut self,
        files: Vec<LedgerFile>,
        report: &mut Report,
    ) -> Result<Option<Tailer>, ShipError> {
        if files.is_empty() {
            return Ok(None);
        }
        let max = self.ledger.max_line_bytes;
        let opened = Tailer::open(files.clone(), self.state.position.as_ref(), max)
            .map_err(|e| self.io_err(e))?;
        let opened = match opened {
            Opened::FileMissing => self.relocate(files)?,
            other => other,
        };
        match opened {
            Opened::Ready(t) => Ok(Some(t)),
            Opened::FileMissing => Ok(None),
            Opened::Rewritten {
                path,
                offset,
                detail,
            } => {
                let mut next = self.state.clone();
                let halt = Halt {
                    verdict: Verdict::Rewritten,
                    detail,
                    file: Some(path.display().to_string()),
                    offset: Some(offset),
                    seq: None,
                };
                tracing::error!(
                    ledger = %self.ledger.name,
                    file = %path.display(),
                    offset,
                    verdict = "rewritten",
                    detail = %halt.detail,
                    "ledger halted: bytes already mirrored were changed"
                );
                *report.verdicts.entry(Verdict::Rewritten).or_default() += 1;
                if next.halt.as_ref() != Some(&halt) {
                    next.halt = Some(halt);
                    self.mirror.commit(&self.ledger.name, &[], &[], &mut next)?;
                    self.state = next;
                }
                report.halt = self.state.halt.clone();
                Ok(None)
            }
        }
    }

    /// The checkpoint's file is gone (deleted after it was read, or the
    /// ledger was restored from a copy with new inodes): find the head's
    /// line in the files, or else the first file after the head.
    fn relocate(&self, files: Vec<LedgerFile>) -> Result<Opened, ShipError> {
        let max = self.ledger.max_line_bytes;
        let Some(head) = self.state.head else {
            tracing::warn!(ledger = %self.ledger.name, "checkpoint file not found and no head yet: reading the ledger from its oldest file");
            return Tailer::open(files, None, max).map_err(|e| self.io_err(e));
        };
        let found = tail::locate_after_head(&files, &head, self.ledger.signatures, &self.keys, max)
            .map_err(|e| self.io_err(e))?;
        if let Some(pos) = found {
            tracing::warn!(ledger = %self.ledger.name, file = %pos.path.display(), offset = pos.offset, "checkpoint file not found: resuming after the head's line");
            return Tailer::open(files, Some(&pos), max).map_err(|e| self.io_err(e));
        }
        // Files wholly after the head: start at the first of them.
        let later: Vec<LedgerFile> = files
            .iter()
            .filter(|f| {
                f.first_seq.is_some_and(|s| s > head.seq) || (f.is_live && f.first_seq.is_none())
            })
            .cloned()
            .collect();
        if later.len() == files.len()
            || files
                .iter()
                .all(|f| f.first_seq.is_none_or(|s| s > head.seq))
        {
            tracing::warn!(ledger = %self.ledger.name, "checkpoint file not found: continuing with the files after the head");
            return Tailer::open(later, None, max).map_err(|e| self.io_err(e));
        }
        Ok(Opened::Rewritten {
            path: self.ledger.path.clone(),
            offset: 0,
            detail: format!(
                "the checkpoint's file is gone and the head (seq {}) is not in the ledger's files",
                head.seq
            ),
        })
    }
}

/// The hash at `seq` among the events of the batch being built (they are
/// consecutive, so the index is arithmetic).
fn hash_in_batch(events: &[EventRow], seq: u64) -> Option<Hash> {
    let first = events.first()?.event.seq;
    let i = usize::try_from(seq.checked_sub(first)?).ok()?;
    events.get(i).map(|row| row.event.hash)
}

fn path_of(files: &[LedgerFile], id: tail::FileId) -> String {
    files
        .iter()
        .find(|f| f.id == id)
        .map(|f| f.path.display().to_string())
        .unwrap_or_default()
}

fn tail_before(path: &std::path::Path, offset: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let start = offset.saturating_sub(tail::TAIL_CHECK_BYTES);
    let mut buf = vec![0u8; (offset - start) as usize];
    match file.read_exact_at(&mut buf, start) {
        Ok(()) => buf,
        Err(_) => Vec::new(),
    }
}

fn log_refusal(ledger: &str, q: &QuarantineRow) {
    if q.verdict.halts() {
        return; // logged as the halt itself
    }
    tracing::warn!(
        ledger,
        file = %q.path,
        offset = q.offset,
        seq = q.seq.map(|s| s as i64).unwrap_or(-1),
        verdict = %q.verdict,
        detail = %q.detail,
        "line quarantined"
    );
}
