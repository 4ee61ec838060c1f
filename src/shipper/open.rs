//! Opening the tailer at the checkpoint: discovery, the check that the
//! bytes behind the checkpoint are unchanged (`rewritten` otherwise),
//! relocation when the checkpoint's file is gone, and the fresh start
//! after a `seq_gap` halt from just after the head's line.

use super::{Report, ShipError, Shipper};
use crate::ledger::{authenticate, SignaturePolicy, Verdict};
use crate::mirror::{Batch, Halt};
use crate::tail::{self, LedgerFile, Opened, Tailer};

impl Shipper {
    /// Discovers the files and opens a tailer at the checkpoint, trying
    /// again when a rotation renamed a file between the two.
    pub(super) fn discover_and_open(
        &mut self,
        report: &mut Report,
    ) -> Result<Option<Tailer>, ShipError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let files = self.tail_config().discover().map_err(|e| self.io_err(e))?;
            match self.open_tailer(files, report) {
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
    ) -> Result<Option<Tailer>, ShipError> {
        let Some(position) = self.state.position.clone() else {
            return Ok(Some(tailer));
        };
        match tailer
            .changed_behind(&position)
            .map_err(|e| self.io_err(e))?
        {
            None => Ok(Some(tailer)),
            Some(detail) => {
                self.halt_rewritten(position.path.clone(), position.offset, detail, report)?;
                Ok(None)
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
            Opened::FileMissing => self.relocate(files)?,
            // The bytes behind the checkpoint are as they were: after a
            // seq_gap, read again from the head instead (see below).
            Opened::Ready(t) if self.halted_by(Verdict::SeqGap) => {
                self.after_head(all_files)?.unwrap_or(Opened::Ready(t))
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
                self.halt_rewritten(path, offset, detail, report)?;
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
        let Some(file) = tail::find_file(&files, &file_id).cloned() else {
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
        let order = tail::resume_order(files, file.id, Some(head.seq));
        Tailer::open(order, Some(&position), max)
            .map(Some)
            .map_err(|e| self.io_err(e))
    }

    /// Halts the ledger as `rewritten` and commits the halt.
    pub(super) fn halt_rewritten(
        &mut self,
        path: std::path::PathBuf,
        offset: u64,
        detail: String,
        report: &mut Report,
    ) -> Result<(), ShipError> {
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
        if self.state.halt.as_ref() != Some(&halt) {
            let mut next = self.state.clone();
            next.halt = Some(halt);
            self.mirror
                .commit(&self.ledger.name, &Batch::default(), &mut next)?;
            self.state = next;
        }
        report.halt = self.state.halt.clone();
        Ok(())
    }

    /// The checkpoint's file is gone (deleted after it was read, or the
    /// ledger was restored from a copy with new inodes): find the head's
    /// line in the files, or else the first file after the head.
    pub(super) fn relocate(&self, files: Vec<LedgerFile>) -> Result<Opened, ShipError> {
        let max = self.ledger.max_line_bytes;
        let Some(head) = self.state.head else {
            tracing::warn!(ledger = %self.ledger.name, "checkpoint file not found and no head yet: reading the ledger from its oldest file");
            return Tailer::open(files, None, max).map_err(|e| self.io_err(e));
        };
        let found = tail::locate_after_head(
            &files,
            &head,
            self.ledger.signatures,
            &self.ledger.keys,
            max,
        )
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
