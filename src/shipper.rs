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
use crate::ledger::frame::{Frame, QUARANTINE_PREFIX};
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
            while lines < self.batch_max_events {
                let next = tailer.next_frame().map_err(|e| self.io_err(e))?;
                let Some((file, frame)) = next else {
                    at_end = true;
                    break;
                };
                lines += 1;
                let (offset, length) = (frame.offset(), frame.length());
                // (verdict, detail, seq, hash, first bytes) of a refused line.
                let refused = match frame {
                    Frame::TooLong { prefix, .. } => Some((
                        Verdict::TooLong,
                        format!("{length} bytes > {}", self.ledger.max_line_bytes),
                        None,
                        None,
                        prefix.to_vec(),
                    )),
                    Frame::Line { bytes, .. } => {
                        let mut lookup_error = None;
                        let judgement = chain.judge(bytes, length, |seq| {
                            hash_in_batch(&events, seq).or_else(|| {
                                self.mirror
                                    .hash_at(&self.ledger.name, seq)
                                    .unwrap_or_else(|e| {
                                        lookup_error = Some(e);
                                        None
                                    })
                            })
                        });
                        if let Some(e) = lookup_error {
                            return Err(e.into());
                        }
                        match judgement {
                            LineJudgement::Blank => {
                                report.blank += 1;
                                None
                            }
                            LineJudgement::Mirrored(event) => {
                                events.push(EventRow {
                                    event,
                                    file,
                                    offset,
                                });
                                *report.verdicts.entry(Verdict::Mirrored).or_default() += 1;
                                None
                            }
                            LineJudgement::Refused { refusal, .. } => Some((
                                refusal.verdict,
                                refusal.detail,
                                refusal.seq,
                                refusal.hash,
                                bytes[..bytes.len().min(QUARANTINE_PREFIX)].to_vec(),
                            )),
                        }
                    }
                };
                let Some((verdict, detail, seq, hash, line)) = refused else {
                    continue;
                };
                *report.verdicts.entry(verdict).or_default() += 1;
                let row = QuarantineRow {
                    file,
                    path: path_of(tailer.files(), file),
                    offset,
                    length,
                    seq,
                    hash,
                    verdict,
                    detail,
                    line,
                };
                log_refusal(&self.ledger.name, &row);
                if verdict.halts() {
                    halt = Some(Halt {
                        verdict,
                        detail: row.detail.clone(),
                        file: Some(row.path.clone()),
                        offset: Some(offset),
                        seq,
                    });
                }
                quarantine.push(row);
                if halt.is_some() {
                    break;
                }
            }

            let mut next_state = self.state.clone();
            next_state.head = chain.head;
            next_state.anchor = chain.anchor;
            next_state.position = match &halt {
                // The checkpoint stays *before* the halting line, so a
                // restart judges it again (and goes on once it is fixed).
                Some(h) => h.offset.and_then(|off| tailer.position_at(off)),
                None => tailer.position(),
            };
            next_state.halt = halt;

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
        // No file can hold the head (each starts after it): read them all.
        if files
            .iter()
            .all(|f| f.first_seq.is_none_or(|s| s > head.seq))
        {
            tracing::warn!(ledger = %self.ledger.name, "checkpoint file not found: continuing with the files after the head");
            return Tailer::open(files, None, max).map_err(|e| self.io_err(e));
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

fn log_refusal(ledger: &str, q: &QuarantineRow) {
    let seq = q.seq.map_or(-1, |s| s as i64);
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
    } else {
        tracing::warn!(
            ledger,
            file = %q.path,
            offset = q.offset,
            seq,
            verdict = %q.verdict,
            detail = %q.detail,
            "line quarantined"
        );
    }
}
