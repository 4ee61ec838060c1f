//! Opening the tailer at the checkpoint: discovery, the check that the
//! bytes behind the checkpoint are unchanged (`rewritten` otherwise),
//! relocation when the checkpoint's file is not found by its identity
//! (after the mirrored lines were checked against the files: a copy, an
//! edit, a copy and truncate), and the fresh start after a `seq_gap` halt
//! from just after the head's line.

use std::path::PathBuf;

use super::{Report, ShipError, Shipper};
use crate::ledger::{authenticate, Head, SignaturePolicy, Verdict};
use crate::mirror::{Batch, Durability, Halt};
use crate::parity::{RecheckError, Rewrite};
use crate::tail::{self, LedgerFile, Opened, Position, Standing, Tailer};

/// How a `rewritten` halt is lifted when the files hold again what was
/// mirrored (the operator put the original bytes back).
const LIFTED_UNCHANGED: &str =
    "checked again after a restart: every mirrored line is on disk as it was mirrored";

impl Shipper {
    /// Discovers the files and opens a tailer at the checkpoint, trying
    /// again when a rotation renamed a file between the two.
    pub(super) fn discover_and_open(
        &mut self,
        report: &mut Report,
        durability: Durability<'_>,
    ) -> Result<Option<Tailer>, ShipError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let files = self.tail_config()?.discover().map_err(|e| self.io_err(e))?;
            match self.open_tailer(files, report, durability) {
                Err(ShipError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::Interrupted && attempt < 5 => {}
                other => return other,
            }
        }
    }

    /// A tailer kept from the last call: is the committed position still
    /// what the file holds? If not, the ledger halts as `rewritten`.
    pub(super) fn check_behind(
        &mut self,
        tailer: Tailer,
        report: &mut Report,
        durability: Durability<'_>,
    ) -> Result<Option<Tailer>, ShipError> {
        let Some(position) = self.state.position.clone() else {
            return Ok(Some(tailer));
        };
        match tailer
            .changed_behind(&position)
            .map_err(|e| self.io_err(e))?
        {
            None => Ok(Some(tailer)),
            // The file shrank or changed behind the checkpoint: the files
            // are looked at afresh, by identity and then by content (a copy
            // and truncate leaves what was read in the copy); anything else
            // halts there as `rewritten`.
            Some(_) => {
                drop(tailer);
                self.discover_and_open(report, durability)
            }
        }
    }

    /// Opens the tailer at the checkpoint. `None` when there is nothing to
    /// read (no files yet) or the checkpoint no longer matches the files
    /// (then the ledger is halted as `rewritten`, and committed so).
    pub(super) fn open_tailer(
        &mut self,
        files: Vec<LedgerFile>,
        report: &mut Report,
        durability: Durability<'_>,
    ) -> Result<Option<Tailer>, ShipError> {
        if files.is_empty() {
            return Ok(None);
        }
        let max = self.ledger.max_line_bytes;
        let all_files = files.clone();
        let files = match &self.state.position {
            Some(pos) => tail::resume_order(files, pos.file, self.state.head.map(|h| h.seq)),
            None => files,
        };
        let opened = Tailer::open(files.clone(), self.state.position.as_ref(), max)
            .map_err(|e| self.io_err(e))?;
        let opened = match opened {
            Opened::FileMissing => self.relocate(all_files, report, durability)?,
            // The bytes behind the checkpoint are as they were: after a
            // seq_gap, read again from the head instead (see below).
            Opened::Ready(t) if self.halted_by(Verdict::SeqGap) => {
                self.after_head(all_files)?.unwrap_or(Opened::Ready(t))
            }
            // Halted on a changed line the checkpoint does not show (found
            // by parity, or on relocating): lifted only when every
            // mirrored line is on disk again as it was mirrored.
            Opened::Ready(t) if self.halted_by(Verdict::Rewritten) => {
                let mut pace = |_| true;
                let found = crate::parity::recheck(&self.ledger, &self.mirror, &mut pace)
                    .map_err(|e| self.recheck_err(e))?
                    .and_then(|p| p.rewrite);
                match found {
                    Some(rewrite) => {
                        self.halt_on(&rewrite, report, durability)?;
                        return Ok(None);
                    }
                    None => {
                        self.lift_how = Some(LIFTED_UNCHANGED.into());
                        Opened::Ready(t)
                    }
                }
            }
            other => other,
        };
        match opened {
            Opened::Ready(t) => Ok(Some(*t)),
            Opened::FileMissing => Ok(None),
            Opened::Rewritten {
                path,
                offset,
                detail,
            } => {
                self.halt_rewritten(path, offset, None, detail, report, durability)?;
                Ok(None)
            }
        }
    }

    fn halted_by(&self, verdict: Verdict) -> bool {
        self.state
            .halt
            .as_ref()
            .is_some_and(|h| h.verdict == verdict)
    }

    /// A `seq_gap` halt means events are missing between the head and the
    /// halting line. When the operator brings them back (a rotated file
    /// uncompressed or restored beside the ledger, or lines a producer
    /// wrote late into a file already renamed), they may sit before the
    /// checkpoint's file in chain order, or at the end of the head's own
    /// file: so reading starts again just after the head's line, in the
    /// head's file, and takes every file that can hold later events (or,
    /// with no head yet, from the oldest file). Lines between the head and
    /// the halt were refused before and are judged again (their quarantine
    /// rows are kept once); if the gap is still there, the ledger halts
    /// again at the same line. `None`: the head's line is not where the
    /// mirror says it is, so the checkpoint is used as it is.
    fn after_head(&mut self, files: Vec<LedgerFile>) -> Result<Option<Opened>, ShipError> {
        let max = self.ledger.max_line_bytes;
        let Some(head) = self.state.head else {
            self.resolving = true;
            return Tailer::open(files, None, max)
                .map(Some)
                .map_err(|e| self.io_err(e));
        };
        let Some((file_id, offset)) = self.mirror.event_location(&self.ledger.name, head.seq)?
        else {
            return Ok(None);
        };
        // Found as itself, or in a copy (a copy and truncate since).
        let recorded_path = self.mirror.file_path(&file_id.to_string())?;
        let Some((file, standing)) = tail::stand_in(
            &files,
            &file_id,
            recorded_path.as_deref().map(std::path::Path::new),
            head.seq,
            &|id| self.read_as_itself(id),
        )
        .map(|(f, s)| (f.clone(), s)) else {
            return Ok(None);
        };
        let Some((line, position)) =
            tail::line_at(&file, offset, max).map_err(|e| self.io_err(e))?
        else {
            return Ok(None);
        };
        let keys = crate::ledger::KeyRing::default();
        let is_head = authenticate(&line, SignaturePolicy::Off, &keys, &mut Vec::new())
            .is_ok_and(|ev| ev.seq == head.seq && ev.hash == head.hash);
        if !is_head {
            return Ok(None);
        }
        tracing::info!(
            ledger = %self.ledger.name,
            file = %position.path.display(),
            offset = position.offset,
            head = head.seq,
            "halted by a seq_gap: looking for the missing events again from just after the head's line"
        );
        self.resolving = true;
        if standing == Standing::Copy {
            self.copied = Some(file.id);
        }
        let order = tail::resume_order(files, file.id, Some(head.seq));
        Tailer::open(order, Some(&position), max)
            .map(Some)
            .map_err(|e| self.io_err(e))
    }

    /// Halts the ledger as `rewritten` on a mirrored event whose line
    /// changed, and writes the halt as `durability` says.
    pub fn halt_on(
        &mut self,
        rewrite: &Rewrite,
        report: &mut Report,
        durability: Durability<'_>,
    ) -> Result<(), ShipError> {
        let detail = format!("mirrored, then changed: {}", rewrite.detail);
        let path = PathBuf::from(&rewrite.file);
        let seq = Some(rewrite.seq);
        self.halt_rewritten(path, rewrite.offset, seq, detail, report, durability)
    }

    /// Halts the ledger as `rewritten` and writes the halt.
    pub(super) fn halt_rewritten(
        &mut self,
        path: PathBuf,
        offset: u64,
        seq: Option<u64>,
        detail: String,
        report: &mut Report,
        durability: Durability<'_>,
    ) -> Result<(), ShipError> {
        let halt = Halt {
            verdict: Verdict::Rewritten,
            detail,
            file: Some(path.display().to_string()),
            offset: Some(offset),
            seq,
        };
        self.tailer = None;
        tracing::error!(
            ledger = %self.ledger.name,
            file = %path.display(),
            offset,
            seq,
            verdict = "rewritten",
            detail = %halt.detail,
            "ledger halted: bytes already mirrored were changed (see the runbook for `rewritten`)"
        );
        *report.verdicts.entry(Verdict::Rewritten).or_default() += 1;
        if self.state.halt.as_ref() != Some(&halt) {
            let mut next = self.state.clone();
            next.halt = Some(halt);
            self.mirror
                .write(durability, &self.ledger.name, &Batch::default(), &mut next)?;
            self.state = next;
        }
        report.halt = self.state.halt.clone();
        Ok(())
    }

    /// The checkpoint's file is not found by its identity (deleted after
    /// it was read; copied and truncated; replaced by an edited copy; its
    /// first line edited; restored from a backup with new inodes). What
    /// was mirrored from the files that lost their identity is checked
    /// against what they hold now (halting as `rewritten` on the first
    /// difference); then reading resumes in the file that holds the bytes
    /// behind the checkpoint, or just after the head's line, or in the
    /// files after the head.
    pub(super) fn relocate(
        &mut self,
        files: Vec<LedgerFile>,
        report: &mut Report,
        durability: Durability<'_>,
    ) -> Result<Opened, ShipError> {
        let max = self.ledger.max_line_bytes;
        let Some(head) = self.state.head else {
            tracing::warn!(ledger = %self.ledger.name, "checkpoint file not found and no head yet: reading the ledger from its oldest file");
            return Tailer::open(files, None, max).map_err(|e| self.io_err(e));
        };
        let changed = crate::parity::reconcile(&self.ledger, &self.mirror)
            .map_err(|e| self.recheck_err(e))?;
        if let Some(rewrite) = changed {
            self.halt_on(&rewrite, report, durability)?;
            return Ok(Opened::FileMissing);
        }
        if let Some(pos) = self.state.position.clone() {
            if let Some(opened) = self.resume_in_stand_in(&files, &pos, head)? {
                return Ok(opened);
            }
            if let Some((path, detail)) = self.truncated_in_place(&files, &pos)? {
                self.halt_rewritten(path, pos.offset, None, detail, report, durability)?;
                return Ok(Opened::FileMissing);
            }
        }
        if self.ledger.plain.is_some() {
            return self.relocate_plain(files);
        }
        let found = tail::locate_after_head(
            &files,
            &head,
            self.ledger.signatures,
            &self.ledger.keys,
            max,
        )
        .map_err(|e| self.io_err(e))?;
        if let Some(pos) = found {
            tracing::warn!(ledger = %self.ledger.name, file = %pos.path.display(), offset = pos.offset, "checkpoint file not found: its mirrored lines were checked and are unchanged; resuming after the head's line");
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

    /// [`Shipper::relocate`] for a plain ledger, whose lines say nothing of
    /// where they belong. A file that may be the checkpoint's, changed
    /// (its inode, or a file this mirror never read at its path), must
    /// hold the bytes read from it: reading resumes there, or the ledger
    /// halts as `rewritten`. Taking it for a new file would adopt its
    /// lines a second time. Otherwise only the files never read are read.
    fn relocate_plain(&self, files: Vec<LedgerFile>) -> Result<Opened, ShipError> {
        let max = self.ledger.max_line_bytes;
        let read_unread = |files: Vec<LedgerFile>| {
            let unread = files
                .into_iter()
                .filter(|f| f.first_seq.is_none())
                .collect();
            Tailer::open(unread, None, max).map_err(|e| self.io_err(e))
        };
        let Some(pos) = self.state.position.clone() else {
            return read_unread(files);
        };
        let stands_for = files
            .iter()
            .find(|f| f.id.same_inode(&pos.file))
            .or_else(|| {
                files
                    .iter()
                    .find(|f| f.path == pos.path && f.first_seq.is_none())
            })
            .map(|f| f.id);
        if let Some(id) = stands_for {
            tracing::warn!(ledger = %self.ledger.name, file = %pos.path.display(), offset = pos.offset,
                "the file being read was changed or replaced: resuming only if it still holds the bytes read from it");
            let at = tail::Position { file: id, ..pos };
            return Tailer::open(files, Some(&at), max).map_err(|e| self.io_err(e));
        }
        tracing::warn!(ledger = %self.ledger.name, file = %pos.path.display(), offset = pos.offset,
            "the file being read is gone (rotated away and deleted?): its lines after the checkpoint were never read; going on with the files never read");
        read_unread(files)
    }

    /// Resumes in the file that stands for the checkpoint's (see
    /// [`tail::stand_in`]) when it holds the bytes behind the checkpoint:
    /// a copy (copytruncate's, a restore's), or the file itself edited
    /// where nothing mirrored changed.
    fn resume_in_stand_in(
        &mut self,
        files: &[LedgerFile],
        pos: &Position,
        head: Head,
    ) -> Result<Option<Opened>, ShipError> {
        let stands = tail::stand_in(files, &pos.file, Some(&pos.path), head.seq, &|id| {
            self.read_as_itself(id)
        });
        let Some((file, standing)) = stands else {
            return Ok(None);
        };
        let moved = tail::position_in(files, file.id, pos.offset).map_err(|e| self.io_err(e))?;
        let Some(moved) = moved.filter(|m| m.tail == pos.tail) else {
            return Ok(None);
        };
        // The checkpoint's own inode is still the live file, with other
        // content (none yet, or new lines): it was truncated after being
        // copied.
        let truncated = files.iter().any(|f| {
            f.is_live && f.id.same_inode(&pos.file) && f.id.fingerprint != pos.file.fingerprint
        });
        if standing == Standing::Copy && truncated {
            tracing::info!(
                ledger = %self.ledger.name,
                copy = %file.path.display(),
                live = %self.ledger.path.display(),
                "the live file was rotated by copy and truncate (copytruncate): the copy holds every byte read; reading on from it, then the live file"
            );
            self.copied = Some(file.id);
            self.lift_how = Some(format!(
                "the live file was rotated by copy and truncate: {} holds every byte read",
                file.path.display()
            ));
        } else {
            tracing::warn!(
                ledger = %self.ledger.name,
                file = %file.path.display(),
                standing = ?standing,
                "checkpoint file not found by its identity: {} holds the bytes read, and its mirrored lines are unchanged; resuming there",
                file.path.display()
            );
        }
        let order = tail::resume_order(files.to_vec(), file.id, Some(head.seq));
        let opened = Tailer::open(order, Some(&moved), self.ledger.max_line_bytes)
            .map_err(|e| self.io_err(e))?;
        // The same bytes under another identity: the position names the
        // file that holds them now (committed with the next batch).
        self.state.position = Some(moved);
        Ok(Some(opened))
    }

    /// The checkpoint's file cut short in place, with no copy of what was
    /// read (not a copy and truncate): the same inode at the same path,
    /// shorter than the checkpoint, holding no event, and made before the
    /// last commit (a file made since is a new file that was given the old
    /// one's inode number). The path and what changed, when so.
    fn truncated_in_place(
        &self,
        files: &[LedgerFile],
        pos: &Position,
    ) -> Result<Option<(PathBuf, String)>, ShipError> {
        let Some(f) = files.iter().find(|f| {
            f.path == pos.path
                && f.id.same_inode(&pos.file)
                && f.first_seq.is_none()
                && f.len < pos.offset
        }) else {
            return Ok(None);
        };
        let last_commit = self
            .mirror
            .checkpoint_times(&self.ledger.name)?
            .and_then(|(at, _)| humantime::parse_rfc3339(&at).ok());
        let born = std::fs::metadata(&f.path).and_then(|m| m.created()).ok();
        match (born, last_commit) {
            (Some(born), Some(commit)) if born < commit => Ok(Some((
                f.path.clone(),
                format!(
                    "{}; no rotated file holds the bytes read",
                    tail::shrank(f.len, pos.offset)
                ),
            ))),
            _ => Ok(None),
        }
    }

    /// The mirror read the file under this identity (an error counts as
    /// yes: a file is then never taken for another one edited).
    fn read_as_itself(&self, id: &tail::FileId) -> bool {
        self.mirror.knows_file(&id.to_string()).unwrap_or(true)
    }

    pub(super) fn recheck_err(&self, e: RecheckError) -> ShipError {
        match e {
            RecheckError::Mirror(m) => ShipError::Mirror(m),
            RecheckError::Io { path, source } => ShipError::Io {
                ledger: self.ledger.name.clone(),
                path,
                source,
            },
        }
    }
}
