//! One catch-up, batch by batch: [`Shipper::drain`] fills a batch with
//! examined lines placed against the head ([`Shipper::fill_batch`]),
//! works out the state it commits ([`Shipper::next_state`]), writes both
//! ([`Shipper::commit_batch`]) and decides whether to go on
//! ([`Shipper::after_batch`]).
//!
//! The checkpoint committed with a batch is always just after the last
//! line *placed*, never where reading ahead got to, and before a halting
//! line, so that a restart judges that line again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{BatchStats, Reading, Report, ShipError, Shipper, CLOCK_EVERY_BYTES};
use crate::ledger::frame::QUARANTINE_PREFIX;
use crate::ledger::{adopt, Chain, Examined, Hash, LineJudgement, Verdict};
use crate::mirror::{Batch, Durability, EventRow, Halt, LedgerState, QuarantineRow};
use crate::tail::{FileId, TailConfig, Tailer};
use crate::verifier::{Chunk, Rules};

/// The rows of the batch being filled; its buffers are reused batch
/// after batch (a live ledger's catch-up takes a line or two).
#[derive(Default)]
pub(super) struct BatchBuf {
    pub(super) events: Vec<EventRow>,
    /// When each event's line was read (for the latency histogram).
    pub(super) seen_at: Vec<Instant>,
    pub(super) quarantine: Vec<QuarantineRow>,
    pub(super) verdicts: Vec<Verdict>,
    /// The halt a line of this batch caused, and that line's file.
    pub(super) halt: Option<(Halt, FileId)>,
    /// The file and end offset of the last line placed.
    pub(super) last_line: Option<(FileId, u64)>,
    /// Lines placed, and their bytes: what the batch holds in memory.
    lines: usize,
    bytes: u64,
}

impl BatchBuf {
    fn clear(&mut self) {
        self.events.clear();
        self.seen_at.clear();
        self.quarantine.clear();
        self.verdicts.clear();
        self.halt = None;
        self.last_line = None;
        self.lines = 0;
        self.bytes = 0;
    }
}

/// Why a batch stopped filling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// Full (its events or bytes), or its time was up: commit, go on.
    Full,
    /// Every complete line on disk was placed.
    AtEnd,
    /// A line halted the ledger.
    Halt,
}

/// What one drain carries from batch to batch.
pub(super) struct Flow<'t> {
    tailer: &'t mut Tailer,
    tail_config: TailConfig,
    rules: Arc<Rules>,
    chain: Chain,
    reading: Reading,
    /// The chunk whose lines are being placed, and the next line in it.
    placing: Option<(Chunk, usize)>,
    /// The bytes waiting when the drain began (for its progress).
    total_bytes: u64,
}

impl Shipper {
    /// The body of [`Shipper::catch_up`]. `Ok(false)` when the tailer must
    /// not be reused: its file is gone, or it read ahead of the checkpoint
    /// (a halt or a stop left examined lines uncommitted).
    ///
    /// Lines flow in three steps: [`Shipper::read_ahead`] cuts them into
    /// chunks for the verifier pool (parse, canonicalize, hash, signature:
    /// the costly part, in parallel); each examined line is placed against
    /// the head in file order and batched; the batch is committed.
    pub(super) fn drain(
        &mut self,
        tailer: &mut Tailer,
        stop: &AtomicBool,
        yield_now: &dyn Fn() -> bool,
        observe: &mut dyn FnMut(&BatchStats<'_>),
        report: &mut Report,
        durability: Durability<'_>,
    ) -> Result<bool, ShipError> {
        let mut flow = self.flow(tailer)?;
        let mut buf = BatchBuf::default();
        loop {
            buf.clear();
            let cut = self.fill_batch(&mut flow, &mut buf, report)?;
            self.sign_batch(&mut buf.events);
            let next = self.next_state(&flow, &buf)?;
            let commit = self.commit_batch(&mut flow, &buf, next, durability, report)?;
            observe(&BatchStats {
                done_bytes: flow
                    .total_bytes
                    .saturating_sub(flow.tailer.remaining_bytes()),
                total_bytes: flow.total_bytes,
                mirrored_seen_at: &buf.seen_at,
                quarantined: &buf.verdicts,
                commit,
                head: self.state.head,
                anchor: self.state.anchor,
                last_seq_seen: self.last_seq_seen,
                halt: self.state.halt.as_ref(),
            });
            if let Some(keep) = self.after_batch(&mut flow, cut, stop, yield_now, report) {
                return Ok(keep);
            }
        }
    }

    /// Signs the events of a plain ledger with a `sign_key` (placing
    /// left their signatures to be made here): on every core when there are
    /// many, since a signature costs some ten times a line's hash.
    fn sign_batch(&self, events: &mut [EventRow]) {
        let Some(signer) = self.ledger.plain.as_ref().and_then(|p| p.signer.as_ref()) else {
            return;
        };
        let sign_all = |part: &mut [EventRow]| {
            for row in part {
                adopt::sign(&mut row.event, signer);
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        if cores == 1 || events.len() < 64 {
            return sign_all(events);
        }
        std::thread::scope(|scope| {
            let mut parts = events.chunks_mut(events.len().div_ceil(cores));
            let mine = parts.next();
            for part in parts {
                scope.spawn(move || sign_all(part));
            }
            if let Some(part) = mine {
                sign_all(part);
            }
        });
    }

    /// A drain's state at its start: the chain from the committed head.
    fn flow<'t>(&self, tailer: &'t mut Tailer) -> Result<Flow<'t>, ShipError> {
        let l = &self.ledger;
        Ok(Flow {
            total_bytes: tailer.remaining_bytes(),
            tailer,
            tail_config: self.tail_config()?,
            rules: Arc::new(Rules {
                policy: l.signatures,
                keys: l.keys.clone(),
                max_line_bytes: l.max_line_bytes,
                plain: l.plain.clone(),
            }),
            chain: Chain::new(
                self.state.head,
                self.state.anchor,
                l.signatures,
                l.keys.clone(),
                l.rules,
                l.max_line_bytes,
            )
            .signing(l.plain.as_ref().and_then(|p| p.signer.clone())),
            reading: Reading::default(),
            placing: None,
        })
    }

    /// Places examined lines into `buf` until it is full, its time is up,
    /// a line halts the ledger, or no complete line is left on disk.
    pub(super) fn fill_batch(
        &mut self,
        flow: &mut Flow<'_>,
        buf: &mut BatchBuf,
        report: &mut Report,
    ) -> Result<Cut, ShipError> {
        let started = Instant::now();
        let mut clock_at_bytes = CLOCK_EVERY_BYTES;
        while buf.lines < self.batching.max_events && buf.bytes < self.batching.max_bytes {
            // The clock is read every 64 lines or 1 MiB: cheap, and
            // fine-grained enough for a wait counted in milliseconds.
            if buf.lines % 64 == 63 || buf.bytes >= clock_at_bytes {
                clock_at_bytes = buf.bytes + CLOCK_EVERY_BYTES;
                if started.elapsed() >= self.batching.max_wait {
                    return Ok(Cut::Full);
                }
            }
            if flow.placing.as_ref().is_none_or(|(c, i)| *i >= c.len()) {
                if !self.next_chunk(flow)? {
                    return Ok(Cut::AtEnd);
                }
                continue;
            }
            if self.place_next(flow, buf, report)? {
                return Ok(Cut::Halt);
            }
        }
        Ok(Cut::Full)
    }

    /// Takes the next examined chunk, reading ahead as needed. `false`
    /// when every complete line on disk was placed.
    fn next_chunk(&mut self, flow: &mut Flow<'_>) -> Result<bool, ShipError> {
        if let Some((done, _)) = flow.placing.take() {
            self.verifiers.recycle(done);
        }
        let head = flow.chain.head.map(|h| h.seq);
        self.read_ahead(
            flow.tailer,
            &flow.tail_config,
            &flow.rules,
            head,
            &mut flow.reading,
        )?;
        match self.verifiers.recv().map_err(|e| self.pool_err(e))? {
            Some(chunk) => {
                flow.placing = Some((chunk, 0));
                Ok(true)
            }
            // Reading paused with nothing in flight: every line read was
            // placed and the files before the last one released, so
            // reading goes on.
            None => Ok(flow.tailer.paused()),
        }
    }

    /// Places the next line of the chunk in hand: a mirrored event, a
    /// blank line, or a quarantined one. `true` when it halts the ledger.
    fn place_next(
        &mut self,
        flow: &mut Flow<'_>,
        buf: &mut BatchBuf,
        report: &mut Report,
    ) -> Result<bool, ShipError> {
        let Some((chunk, next)) = flow.placing.as_mut() else {
            return Ok(false);
        };
        let i = *next;
        *next += 1;
        let line = chunk.lines[i];
        buf.lines += 1;
        buf.bytes += line.length + 1;
        if buf.last_line.is_none_or(|(f, _)| !f.same_inode(&line.file)) {
            // No checkpoint can fall in a file before this one any more:
            // close them (a rotated file may be deleted).
            flow.tailer.release_before(line.file);
        }
        buf.last_line = Some((line.file, line.end_offset()));
        let examined = std::mem::replace(&mut chunk.results[i], Examined::Blank);
        let refusal = match self.place(&mut flow.chain, examined, &buf.events)? {
            LineJudgement::Blank => {
                report.blank += 1;
                return Ok(false);
            }
            LineJudgement::Mirrored(event) => {
                self.note_seq(event.seq);
                buf.events.push(EventRow {
                    event,
                    file: line.file,
                    offset: line.offset,
                });
                buf.seen_at.push(line.read_at);
                *report.verdicts.entry(Verdict::Mirrored).or_default() += 1;
                return Ok(false);
            }
            LineJudgement::Refused { refusal, event } => {
                // Only an authentic event (refused for its place in the
                // chain) tells where the ledger's head is.
                if let Some(ev) = event {
                    self.note_seq(ev.seq);
                }
                refusal
            }
        };
        let row = QuarantineRow {
            file: line.file,
            path: flow
                .tailer
                .path_of(line.file)
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            offset: line.offset,
            length: line.length,
            seq: refusal.seq,
            hash: refusal.hash,
            verdict: refusal.verdict,
            detail: refusal.detail,
            line: chunk.line(i)[..chunk.line(i).len().min(QUARANTINE_PREFIX)].to_vec(),
        };
        let missing = flow.chain.head.map_or(0, |h| h.seq + 1);
        self.quarantine_line(row, missing, buf, report)
    }

    /// Judges an examined line against the chain; a seq at or below the
    /// head is looked up in this batch, then in the mirror.
    fn place(
        &self,
        chain: &mut Chain,
        examined: Examined,
        events: &[EventRow],
    ) -> Result<LineJudgement, ShipError> {
        let mut lookup_error = None;
        let judgement = chain.place_examined(examined, |seq| {
            hash_in_batch(events, seq).or_else(|| {
                self.mirror
                    .hash_at(&self.ledger.name, seq)
                    .unwrap_or_else(|e| {
                        lookup_error = Some(e);
                        None
                    })
            })
        });
        match lookup_error {
            Some(e) => Err(e.into()),
            None => Ok(judgement),
        }
    }

    /// A refused line: counted, logged (rate-limited) and kept for the
    /// quarantine table; a `seq_gap` names its likely cause (`missing`
    /// is the first seq not in the chain). `true` when its verdict halts.
    fn quarantine_line(
        &mut self,
        mut row: QuarantineRow,
        missing: u64,
        buf: &mut BatchBuf,
        report: &mut Report,
    ) -> Result<bool, ShipError> {
        let verdict = row.verdict;
        *report.verdicts.entry(verdict).or_default() += 1;
        buf.verdicts.push(verdict);
        if verdict == Verdict::SeqGap {
            self.name_quarantined_cause(&mut row.detail, missing, &buf.quarantine)?;
            self.name_copytruncate_race(&mut row.detail, row.file);
        }
        self.refusals.log(&self.ledger.name, &row);
        let halts = verdict.halts();
        if halts {
            let halt = Halt {
                verdict,
                detail: row.detail.clone(),
                file: Some(row.path.clone()),
                offset: Some(row.offset),
                seq: row.seq,
            };
            buf.halt = Some((halt, row.file));
        }
        buf.quarantine.push(row);
        Ok(halts)
    }

    /// The state the batch commits: the head the chain reached, the halt
    /// if a line caused one, and the checkpoint: just after the last line
    /// placed, or *before* a halting line, so that a restart judges it
    /// again (and goes on once it is fixed).
    pub(super) fn next_state(
        &self,
        flow: &Flow<'_>,
        buf: &BatchBuf,
    ) -> Result<LedgerState, ShipError> {
        let mut next = self.state.clone();
        next.head = flow.chain.head;
        next.anchor = flow.chain.anchor;
        let at = match &buf.halt {
            Some((h, file)) => h.offset.map(|off| (*file, off)),
            None => buf.last_line,
        };
        if let Some((file, offset)) = at {
            let position = flow
                .tailer
                .position_for(file, offset)
                .map_err(|e| self.io_err(e))?
                .ok_or_else(|| {
                    self.io_err(std::io::Error::other(
                        "lost track of a file read ahead (rotated many times over)",
                    ))
                })?;
            next.position = Some(position);
        }
        next.halt = buf.halt.as_ref().map(|(h, _)| h.clone());
        Ok(next)
    }

    /// Writes the batch with `next`, its checkpoint, as `durability` says
    /// (nothing when nothing changed); then the shipper's state is `next`.
    /// On a failed write nothing of the batch is in the database: what
    /// was read ahead is dropped and the state is read again. Returns how
    /// long the write took, when there was one.
    pub(super) fn commit_batch(
        &mut self,
        flow: &mut Flow<'_>,
        buf: &BatchBuf,
        mut next: LedgerState,
        durability: Durability<'_>,
        report: &mut Report,
    ) -> Result<Option<Duration>, ShipError> {
        let unchanged = buf.events.is_empty()
            && buf.quarantine.is_empty()
            && next.position == self.state.position
            && next.halt == self.state.halt;
        if unchanged {
            return Ok(None);
        }
        let began = Instant::now();
        let files = files_of(flow.tailer, &buf.events);
        let lifted = (next.halt.is_none()
            && (self.state.halt.is_some() || self.lift_how.is_some()))
        .then(|| {
            self.lift_how
                .clone()
                .unwrap_or_else(|| lifted_by_judging(&self.state))
        });
        let batch = Batch {
            events: &buf.events,
            quarantine: &buf.quarantine,
            resolve: self.resolving,
            files: &files,
            lifted: lifted.as_deref(),
        };
        if let Err(e) = self
            .mirror
            .write(durability, &self.ledger.name, &batch, &mut next)
        {
            // The caller builds a new chain from the reloaded state.
            self.abandon(flow.placing.take());
            self.reload()?;
            return Err(e.into());
        }
        if lifted.is_some() || next.halt.is_some() {
            self.lift_how = None;
        }
        if buf
            .events
            .last()
            .is_some_and(|r| Some(r.file) != self.copied)
        {
            self.copied = None;
        }
        self.note_committed_rows(&buf.events);
        self.state = next;
        report.commits += 1;
        Ok(Some(began.elapsed()))
    }

    /// After a committed batch: `Some(keep)` when the drain ends here
    /// (halted, at the end of the files, stopped, or yielding its turn),
    /// `None` to fill the next batch.
    pub(super) fn after_batch(
        &mut self,
        flow: &mut Flow<'_>,
        cut: Cut,
        stop: &AtomicBool,
        yield_now: &dyn Fn() -> bool,
        report: &mut Report,
    ) -> Option<bool> {
        if self.state.halt.is_some() {
            report.halt = self.state.halt.clone();
            self.abandon(flow.placing.take());
            return Some(false);
        }
        if cut == Cut::AtEnd {
            // Everything read was placed and committed: the tailer can go
            // on later, holding only the file it reads.
            flow.tailer.release_finished();
            return Some(flow.reading.keep);
        }
        if stop.load(Ordering::Relaxed) {
            self.abandon(flow.placing.take());
            return Some(false);
        }
        if yield_now() {
            // Read ahead of the checkpoint: the next call opens the files
            // again at the checkpoint.
            report.yielded = true;
            self.abandon(flow.placing.take());
            return Some(false);
        }
        None
    }

    /// Drops what was read ahead and not committed.
    fn abandon(&mut self, placing: Option<(Chunk, usize)>) {
        if let Some((chunk, _)) = placing {
            self.verifiers.recycle(chunk);
        }
        // A broken pool is replaced at the next start; nothing to save here.
        let _ = self.verifiers.discard();
    }

    /// A `seq_gap` whose first missing seq is on a quarantined line (an
    /// untrusted key, an altered line) has that line as its cause, not a
    /// lost file: the halt names it and what lifts it.
    fn name_quarantined_cause(
        &self,
        detail: &mut String,
        missing: u64,
        batch: &[QuarantineRow],
    ) -> Result<(), ShipError> {
        let in_batch = batch
            .iter()
            .rev()
            .find(|q| q.seq == Some(missing) && !q.verdict.halts())
            .map(|q| (q.verdict, q.detail.clone()));
        let cause = match in_batch {
            Some(c) => Some(c),
            None => self.mirror.quarantined_seq(&self.ledger.name, missing)?,
        };
        if let Some((verdict, why)) = cause {
            detail.push_str(&format!(
                "; seq {missing} was quarantined as {verdict} ({why}): {}",
                super::refusals::lift_quarantine(verdict)
            ));
        }
        Ok(())
    }

    /// A `seq_gap` on the first events read after a copy and truncate:
    /// lines written between the copy and the truncation are in neither
    /// file, and the halt says so.
    fn name_copytruncate_race(&self, detail: &mut String, file: FileId) {
        if self.copied.is_some_and(|copy| !copy.same_inode(&file)) {
            detail.push_str(
                "; most likely lost in copytruncate's race: lines written between the copy and the truncation of the live file are in neither file",
            );
        }
    }
}

/// The files the rows came from, each with the path it was read under
/// and the seq of its first row here (consecutive rows share one).
fn files_of(tailer: &Tailer, events: &[EventRow]) -> Vec<(FileId, String, u64)> {
    let mut files: Vec<(FileId, String, u64)> = Vec::new();
    for row in events {
        if files.last().is_none_or(|(f, _, _)| *f != row.file) {
            let path = tailer
                .path_of(row.file)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            files.push((row.file, path, row.event.seq));
        }
    }
    files
}

/// How a halt is lifted when its line, judged again, no longer halts.
fn lifted_by_judging(before: &LedgerState) -> String {
    match &before.halt {
        Some(h) => format!(
            "its line was judged again and no longer halts ({} gone)",
            h.verdict
        ),
        // Lifted in memory by a reload (see `rejudge`).
        None => "judged again after the trusted keys or the signature policy changed".into(),
    }
}

/// The hash at `seq` among the events of the batch being built (they are
/// consecutive, so the index is arithmetic).
fn hash_in_batch(events: &[EventRow], seq: u64) -> Option<Hash> {
    let first = events.first()?.event.seq;
    let i = usize::try_from(seq.checked_sub(first)?).ok()?;
    events.get(i).map(|row| row.event.hash)
}

#[cfg(test)]
mod tests {
    //! The drain on a temporary folder and a real SQLite file: where each
    //! kind of cut leaves the checkpoint, and what a failed write undoes.

    use std::io::Write as _;
    use std::path::Path;

    use super::*;
    use crate::config::{FileConfig, LedgerSettings, Overrides, Settings};
    use crate::mirror::{Access, Mirror};
    use crate::producer::chain_lines as lines;
    use crate::shipper::Batching;

    fn ledger(dir: &Path) -> LedgerSettings {
        let over = Overrides {
            ledger: Some(dir.join("app.jsonl")),
            db: Some(dir.join("m.db")),
            ..Overrides::default()
        };
        let settings = Settings::resolve(&FileConfig::default(), &over, dir).unwrap();
        settings.ledgers[0].clone()
    }

    fn write(path: &Path, parts: &[&[u8]]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for p in parts {
            f.write_all(p).unwrap();
        }
    }

    fn shipper(l: &LedgerSettings, db: &Path, max_events: usize) -> Shipper {
        let mirror = Mirror::open(db, Access::ReadWrite).unwrap();
        Shipper::new(l.clone(), mirror, Batching::events(max_events)).unwrap()
    }

    fn rows(db: &Path) -> Vec<u64> {
        let mirror = Mirror::open(db, Access::ReadOnly).unwrap();
        mirror
            .events_from("app", 0, 1000)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect()
    }

    fn catch_up(s: &mut Shipper, yield_now: &dyn Fn() -> bool) -> Result<Report, ShipError> {
        let stop = AtomicBool::new(false);
        s.catch_up_until(&stop, yield_now, &mut |_| {}, Durability::Alone)
    }

    #[test]
    fn a_partial_last_line_waits_for_its_end_and_the_checkpoint_stops_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        let db = dir.path().join("m.db");
        let chain = lines(4);
        let (head, tail) = chain[3].split_at(chain[3].len() / 2);
        write(&l.path, &[&chain[0], &chain[1], &chain[2], head]);
        let mut s = shipper(&l, &db, 100);
        assert_eq!(catch_up(&mut s, &|| false).unwrap().mirrored(), 3);
        let whole: usize = chain[..3].iter().map(Vec::len).sum();
        assert_eq!(s.state().position.as_ref().unwrap().offset, whole as u64);
        write(&l.path, &[tail]);
        assert_eq!(catch_up(&mut s, &|| false).unwrap().mirrored(), 1);
        assert_eq!(rows(&db), [0, 1, 2, 3]);
    }

    #[test]
    fn a_halt_inside_a_batch_commits_the_lines_before_it_and_keeps_the_checkpoint_before_the_halting_line(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        let db = dir.path().join("m.db");
        let chain = lines(7);
        write(
            &l.path,
            &[&chain[0], &chain[1], &chain[2], &chain[5], &chain[6]],
        );
        let mut s = shipper(&l, &db, 100);
        let report = catch_up(&mut s, &|| false).unwrap();
        assert_eq!(report.mirrored(), 3);
        assert_eq!(
            report.halt.as_ref().map(|h| h.verdict),
            Some(Verdict::SeqGap)
        );
        let before: usize = chain[..3].iter().map(Vec::len).sum();
        assert_eq!(s.state().position.as_ref().unwrap().offset, before as u64);
        assert_eq!(rows(&db), [0, 1, 2]);
        // The line after the halting one was read ahead, never committed.
        let reopened = shipper(&l, &db, 100);
        assert_eq!(reopened.state().halt.as_ref().map(|h| h.seq), Some(Some(5)));
    }

    #[test]
    fn a_yield_ends_the_call_after_a_committed_batch_and_the_next_call_goes_on_from_its_checkpoint()
    {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        let db = dir.path().join("m.db");
        let chain = lines(5);
        let parts: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
        write(&l.path, &parts);
        let mut s = shipper(&l, &db, 2);
        let report = catch_up(&mut s, &|| true).unwrap();
        assert!(report.yielded);
        assert_eq!(report.mirrored(), 2);
        assert_eq!(rows(&db), [0, 1]);
        let report = catch_up(&mut s, &|| false).unwrap();
        assert!(!report.yielded);
        assert_eq!(report.mirrored(), 3);
        assert_eq!(rows(&db), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_failed_write_reloads_the_checkpoint_and_nothing_is_mirrored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        let db = dir.path().join("m.db");
        let chain = lines(5);
        write(&l.path, &[&chain[0], &chain[1], &chain[2]]);
        // Two shippers read the same checkpoint; the first one commits.
        let mut first = shipper(&l, &db, 100);
        let mut stale = shipper(&l, &db, 100);
        assert_eq!(catch_up(&mut first, &|| false).unwrap().mirrored(), 3);
        // The second one's write is refused: its checkpoint moved.
        assert!(catch_up(&mut stale, &|| false).is_err());
        assert_eq!(stale.state().head.map(|h| h.seq), Some(2), "reloaded");
        write(&l.path, &[&chain[3], &chain[4]]);
        assert_eq!(catch_up(&mut stale, &|| false).unwrap().mirrored(), 2);
        assert_eq!(rows(&db), [0, 1, 2, 3, 4]);
    }
}
