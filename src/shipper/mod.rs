//! The shipper: THE loop for one ledger, tail → judge → batch → commit.
//!
//! `replay` calls [`Shipper::catch_up`] once; `run` calls it on every
//! wake-up. One code path is the guarantee that a replayed mirror is the
//! mirror `run` would have built.
//!
//! Exactly-once rests on one rule: the in-memory head and position only
//! move when [`Mirror::write`] has written the rows *and* the checkpoint
//! covering them. If a write fails, the shipper's state is reloaded from
//! the database and the same lines are read again. The caller says how
//! durable a write is ([`Durability`]): alone, it is durable when it
//! returns; staged in `run`'s group, it is durable when the group
//! commits, and when a group fails the runner has every ledger in it
//! reload its state.
//!
//! Between calls the shipper keeps its [`Tailer`] open, so that following a
//! live ledger costs a read and a stat per wake-up, and a rotation is
//! finished through the old file's handle. The committed position is
//! checked against the file at every call (`rewritten`).
//!
//! Re-judging (§2.1): after the trusted keys or the signature policy
//! change, [`Shipper::reconfigure`] moves the read position back to the
//! first line after the head's that was quarantined as `unknown_key` or
//! `unsigned`, lifts the halt in memory, and lets the next catch-up judge
//! those lines again; rows that now mirror resolve their quarantine rows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::LedgerSettings;
use crate::ledger::frame::QUARANTINE_PREFIX;
use crate::ledger::{Chain, Examined, Hash, Head, LineJudgement, Verdict};
use crate::mirror::{
    Batch, Durability, EventRow, Halt, LedgerState, Mirror, MirrorError, QuarantineRow,
};
use crate::tail::{self, TailConfig, Tailer};
use crate::verifier::{Chunk, PoolBroken, Rules, Verifiers};

mod open;
mod parity;
mod read_ahead;
mod refusals;
mod rejudge;

/// A chunk for the verifier pool: this many lines or bytes, whichever
/// first (large enough that handing it over costs nothing next to
/// examining it, small enough to keep every thread busy).
const CHUNK_LINES: usize = 256;
const CHUNK_BYTES: usize = 256 * 1024;

/// While a batch fills, its clock is read at least this often in bytes.
const CLOCK_EVERY_BYTES: u64 = 1 << 20;

/// How reading ahead stands within one catch-up.
#[derive(Debug)]
struct Reading {
    /// Every complete line on disk was read.
    done: bool,
    /// The tailer may be reused (its file was not lost).
    keep: bool,
    refreshes: u32,
}

impl Default for Reading {
    fn default() -> Self {
        Reading {
            done: false,
            keep: true,
            refreshes: 0,
        }
    }
}

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
    /// Stopped after a batch because `yield_now` asked (more may be on
    /// disk: call again).
    pub yielded: bool,
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

/// What one batch did, reported after it is committed: for progress bars,
/// metrics and the status board.
#[derive(Debug)]
pub struct BatchStats<'a> {
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// When each committed event's line was first seen on disk.
    pub mirrored_seen_at: &'a [Instant],
    pub quarantined: &'a [Verdict],
    /// How long the transaction took; `None` when there was nothing to write.
    pub commit: Option<Duration>,
    pub head: Option<Head>,
    pub anchor: Option<Head>,
    /// The highest seq read in the ledger (authentic or not).
    pub last_seq_seen: Option<u64>,
    pub halt: Option<&'a Halt>,
}

/// How batches are cut: at `max_events` lines, `max_bytes` bytes of lines
/// or `max_wait` after the batch's first line, whichever first (and always
/// at the end of the data on disk, so a quiet ledger never waits). A batch
/// always takes at least one line, however long.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_events: usize,
    pub max_bytes: u64,
    pub max_wait: Duration,
}

impl Batching {
    /// At most `max_events` lines, and the default byte cap.
    pub fn events(max_events: usize) -> Batching {
        Batching {
            max_events,
            max_bytes: crate::config::DEFAULT_BATCH_MAX_BYTES,
            max_wait: Duration::from_secs(3600),
        }
    }

    /// As the configuration says (`batch_max_events`, `batch_max_bytes`,
    /// `batch_max_millis`): the same for `run` and `replay`.
    pub fn from_settings(settings: &crate::config::Settings) -> Batching {
        Batching {
            max_events: settings.batch_max_events,
            max_bytes: settings.batch_max_bytes,
            max_wait: settings.run.batch_max_wait,
        }
    }
}

/// One ledger being mirrored.
pub struct Shipper {
    /// The ledger's settings; its keys and signature policy change with a
    /// reload ([`Shipper::reconfigure`]).
    ledger: LedgerSettings,
    mirror: Mirror,
    state: LedgerState,
    batching: Batching,
    /// Open between calls while following; `None` forces a new discovery.
    tailer: Option<Tailer>,
    /// Set by a re-judging: mirrored lines resolve their quarantine rows.
    resolving: bool,
    /// The highest seq of an authentic event read (refused lines do not
    /// count: anyone can write a line claiming any seq).
    last_seq_seen: Option<u64>,
    /// Examines lines on every core.
    verifiers: Verifiers,
    /// What was said in the log of refused lines (rate-limited).
    refusals: refusals::RefusalLog,
    /// How the halt in force is being lifted, when something other than
    /// judging its line again lifts it (for the `halts` history).
    lift_how: Option<String>,
    /// Reading resumed in the copy a copy and truncate left, and no event
    /// was mirrored from the live file since: a `seq_gap` there most
    /// likely is copytruncate's race.
    copied: Option<tail::FileId>,
}

impl Shipper {
    /// Loads the ledger's checkpoint (if any) from the mirror; lines are
    /// examined by a verifier pool of its own, a thread per core.
    pub fn new(
        ledger: LedgerSettings,
        mirror: Mirror,
        batching: Batching,
    ) -> Result<Shipper, ShipError> {
        let verifiers = Verifiers::per_core().map_err(|source| ShipError::Io {
            ledger: ledger.name.clone(),
            path: "verifier threads".into(),
            source,
        })?;
        Shipper::with_verifiers(ledger, mirror, batching, verifiers)
    }

    /// As [`Shipper::new`], on a verifier pool shared with other ledgers.
    pub fn with_verifiers(
        ledger: LedgerSettings,
        mirror: Mirror,
        batching: Batching,
        verifiers: Verifiers,
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
        let last_seq_seen = state.head.map(|h| h.seq);
        Ok(Shipper {
            ledger,
            mirror,
            state,
            batching: Batching {
                max_events: batching.max_events.max(1),
                ..batching
            },
            tailer: None,
            resolving: false,
            refusals: refusals::RefusalLog::default(),
            last_seq_seen,
            verifiers,
            lift_how: None,
            copied: None,
        })
    }

    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    pub fn settings(&self) -> &LedgerSettings {
        &self.ledger
    }

    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// Logs what the rate limit held back of refused lines, now (at the
    /// end of a `replay`; `run` does it once a minute).
    pub fn flush_refusal_log(&mut self) {
        self.refusals.summarize(&self.ledger.name, true);
    }

    /// True while a tailer is open on the ledger's files (false before the
    /// first file exists, after a halt, or when a file went away).
    pub fn following(&self) -> bool {
        self.tailer.is_some()
    }

    /// The highest seq of an authentic event read so far.
    pub fn last_seq_seen(&self) -> Option<u64> {
        self.last_seq_seen
    }

    /// Bytes on disk beyond what was read: through the open tailer while
    /// following; from the checkpoint and a fresh look at the files when
    /// there is none (halted, or not started), so that a halted ledger
    /// still says how much waits behind the halt.
    pub fn lag_bytes(&self) -> Result<u64, ShipError> {
        if let Some(t) = &self.tailer {
            return Ok(t.lag_bytes());
        }
        let files = self.tail_config().discover().map_err(|e| self.io_err(e))?;
        let files = match &self.state.position {
            Some(pos) => tail::resume_order(files, pos.file, self.state.head.map(|h| h.seq)),
            None => files,
        };
        Ok(tail::bytes_after(
            &files,
            self.state.position.as_ref(),
            self.state.head.map(|h| h.seq),
        ))
    }

    /// The last authentic event of the live file (read back from its end,
    /// judged with the ledger's keys and policy): an estimate of the
    /// ledger's head before, or without, reading up to it.
    pub fn head_in_live_file(&self) -> Option<u64> {
        self.tail_config().live_head()
    }

    fn tail_config(&self) -> TailConfig {
        self.ledger.tail_config()
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
    /// otherwise it halts again at the same place. `observe` is called
    /// after every batch.
    pub fn catch_up(
        &mut self,
        stop: &AtomicBool,
        observe: &mut dyn FnMut(&BatchStats<'_>),
    ) -> Result<Report, ShipError> {
        self.catch_up_until(stop, &|| false, observe, Durability::Alone)
    }

    /// As [`Shipper::catch_up`], but also stops after any committed batch
    /// when `yield_now` says so (`run` lets other ledgers have a turn),
    /// with [`Report::yielded`] set. `durability` says where each batch's
    /// write ends: [`Durability::Alone`], durable batch by batch, as
    /// [`Shipper::catch_up`] does; or staged in the runner's group, where
    /// nothing is durable before the group commits, and the runner has
    /// every ledger of a group that failed read its checkpoint again.
    pub fn catch_up_until(
        &mut self,
        stop: &AtomicBool,
        yield_now: &dyn Fn() -> bool,
        observe: &mut dyn FnMut(&BatchStats<'_>),
        durability: Durability<'_>,
    ) -> Result<Report, ShipError> {
        let mut report = Report::default();
        let tailer = match self.tailer.take() {
            Some(t) => self.check_behind(t, &mut report, durability)?,
            None => self.discover_and_open(&mut report, durability)?,
        };
        let Some(mut tailer) = tailer else {
            return Ok(report);
        };
        tailer.hold_finished_files();
        let result = self.drain(
            &mut tailer,
            stop,
            yield_now,
            observe,
            &mut report,
            durability,
        );
        match &result {
            // Followed again next time, unless halted (a restart or reload
            // judges again from the checkpoint) or the file went away.
            Ok(keep) if *keep && self.state.halt.is_none() => self.tailer = Some(tailer),
            _ => self.tailer = None,
        }
        if self.state.halt.is_none() {
            self.resolving = false;
        }
        self.refusals.summarize(&self.ledger.name, false);
        result.map(|_| report)
    }

    /// The body of [`Shipper::catch_up`]. `Ok(false)` when the tailer must
    /// not be reused: its file is gone, or it read ahead of the checkpoint
    /// (a halt or a stop left examined lines uncommitted).
    ///
    /// Lines flow in three steps: [`Shipper::read_ahead`] cuts them into
    /// chunks for the verifier pool (parse, canonicalize, hash, signature:
    /// the costly part, in parallel); here each examined line is placed
    /// against the head in file order and batched; the batch is committed.
    /// The checkpoint is always just after the last line *placed*, never
    /// where reading ahead got to.
    fn drain(
        &mut self,
        tailer: &mut Tailer,
        stop: &AtomicBool,
        yield_now: &dyn Fn() -> bool,
        observe: &mut dyn FnMut(&BatchStats<'_>),
        report: &mut Report,
        durability: Durability<'_>,
    ) -> Result<bool, ShipError> {
        let tail_config = self.tail_config();
        let total_bytes = tailer.remaining_bytes();
        let rules = Arc::new(Rules {
            policy: self.ledger.signatures,
            keys: self.ledger.keys.clone(),
            max_line_bytes: self.ledger.max_line_bytes,
        });
        let mut chain = Chain::new(
            self.state.head,
            self.state.anchor,
            self.ledger.signatures,
            self.ledger.keys.clone(),
            self.ledger.rules,
            self.ledger.max_line_bytes,
        );
        let max_events = self.batching.max_events;
        // Grown as needed: a live ledger's catch-up takes a line or two.
        let mut events: Vec<EventRow> = Vec::new();
        let mut seen_at: Vec<Instant> = Vec::new();
        let mut quarantine: Vec<QuarantineRow> = Vec::new();
        let mut verdicts: Vec<Verdict> = Vec::new();
        let mut reading = Reading::default();
        // The chunk whose lines are being placed, and the next line in it.
        let mut placing: Option<(Chunk, usize)> = None;
        loop {
            events.clear();
            seen_at.clear();
            quarantine.clear();
            verdicts.clear();
            let mut halt: Option<(Halt, tail::FileId)> = None;
            let mut at_end = false;
            let mut lines = 0usize;
            // Bytes of the lines taken: what the batch holds in memory.
            let mut bytes = 0u64;
            let mut clock_at_bytes = CLOCK_EVERY_BYTES;
            let mut last_line: Option<(tail::FileId, u64)> = None;
            let started = Instant::now();
            while lines < max_events && bytes < self.batching.max_bytes {
                // The clock is read every 64 lines or 1 MiB: cheap, and
                // fine-grained enough for a wait counted in milliseconds.
                if lines % 64 == 63 || bytes >= clock_at_bytes {
                    clock_at_bytes = bytes + CLOCK_EVERY_BYTES;
                    if started.elapsed() >= self.batching.max_wait {
                        break;
                    }
                }
                let Some((chunk, next)) = placing.as_mut().filter(|(c, i)| *i < c.len()) else {
                    if let Some((done, _)) = placing.take() {
                        self.verifiers.recycle(done);
                    }
                    let head = chain.head.map(|h| h.seq);
                    self.read_ahead(tailer, &tail_config, &rules, head, &mut reading)?;
                    match self.verifiers.recv().map_err(|e| self.pool_err(e))? {
                        Some(chunk) => placing = Some((chunk, 0)),
                        // Reading paused with nothing in flight: every
                        // line read was placed and the files before the
                        // last one released, so reading goes on.
                        None if tailer.paused() => {}
                        None => {
                            at_end = true;
                            break;
                        }
                    }
                    continue;
                };
                let i = *next;
                *next += 1;
                lines += 1;
                let line = chunk.lines[i];
                bytes += line.length + 1;
                if last_line.is_none_or(|(f, _)| !f.same_inode(&line.file)) {
                    // No checkpoint can fall in a file before this one any
                    // more: close them (a rotated file may be deleted).
                    tailer.release_before(line.file);
                }
                last_line = Some((line.file, line.end_offset()));
                let examined = std::mem::replace(&mut chunk.results[i], Examined::Blank);
                let mut lookup_error = None;
                let judgement = chain.place_examined(examined, |seq| {
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
                let refusal = match judgement {
                    LineJudgement::Blank => {
                        report.blank += 1;
                        continue;
                    }
                    LineJudgement::Mirrored(event) => {
                        self.note_seq(event.seq);
                        events.push(EventRow {
                            event,
                            file: line.file,
                            offset: line.offset,
                        });
                        seen_at.push(line.read_at);
                        *report.verdicts.entry(Verdict::Mirrored).or_default() += 1;
                        continue;
                    }
                    LineJudgement::Refused { refusal, event } => {
                        // Only an authentic event (refused for its place
                        // in the chain) tells where the ledger's head is.
                        if let Some(ev) = event {
                            self.note_seq(ev.seq);
                        }
                        refusal
                    }
                };
                let verdict = refusal.verdict;
                *report.verdicts.entry(verdict).or_default() += 1;
                verdicts.push(verdict);
                let bytes = chunk.line(i);
                let mut row = QuarantineRow {
                    file: line.file,
                    path: tailer
                        .path_of(line.file)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    offset: line.offset,
                    length: line.length,
                    seq: refusal.seq,
                    hash: refusal.hash,
                    verdict,
                    detail: refusal.detail,
                    line: bytes[..bytes.len().min(QUARANTINE_PREFIX)].to_vec(),
                };
                if verdict == Verdict::SeqGap {
                    let missing = chain.head.map_or(0, |h| h.seq + 1);
                    self.name_quarantined_cause(&mut row.detail, missing, &quarantine)?;
                    self.name_copytruncate_race(&mut row.detail, line.file);
                }
                self.refusals.log(&self.ledger.name, &row);
                if verdict.halts() {
                    let h = Halt {
                        verdict,
                        detail: row.detail.clone(),
                        file: Some(row.path.clone()),
                        offset: Some(line.offset),
                        seq: row.seq,
                    };
                    halt = Some((h, line.file));
                }
                quarantine.push(row);
                if halt.is_some() {
                    break;
                }
            }

            let mut next_state = self.state.clone();
            next_state.head = chain.head;
            next_state.anchor = chain.anchor;
            // The checkpoint stays *before* a halting line, so a restart
            // judges it again (and goes on once it is fixed); otherwise it
            // is just after the last line placed.
            let at = match &halt {
                Some((h, file)) => h.offset.map(|off| (*file, off)),
                None => last_line,
            };
            if let Some((file, offset)) = at {
                next_state.position = Some(
                    tailer
                        .position_for(file, offset)
                        .map_err(|e| self.io_err(e))?
                        .ok_or_else(|| {
                            self.io_err(std::io::Error::other(
                                "lost track of a file read ahead (rotated many times over)",
                            ))
                        })?,
                );
            }
            next_state.halt = halt.map(|(h, _)| h);

            let unchanged = events.is_empty()
                && quarantine.is_empty()
                && next_state.position == self.state.position
                && next_state.halt == self.state.halt;
            let mut commit = None;
            if !unchanged {
                let began = Instant::now();
                // The files the rows came from (consecutive rows share one).
                let mut files: Vec<(tail::FileId, String)> = Vec::new();
                for row in &events {
                    if files.last().is_none_or(|(f, _)| *f != row.file) {
                        let path = tailer
                            .path_of(row.file)
                            .map(|p| p.display().to_string())
                            .unwrap_or_default();
                        files.push((row.file, path));
                    }
                }
                let lifted = (next_state.halt.is_none()
                    && (self.state.halt.is_some() || self.lift_how.is_some()))
                .then(|| {
                    self.lift_how
                        .clone()
                        .unwrap_or_else(|| lifted_by_judging(&self.state))
                });
                let batch = Batch {
                    events: &events,
                    quarantine: &quarantine,
                    resolve: self.resolving,
                    files: &files,
                    lifted: lifted.as_deref(),
                };
                if let Err(e) =
                    self.mirror
                        .write(durability, &self.ledger.name, &batch, &mut next_state)
                {
                    // Nothing of this batch is in the database: forget it
                    // (the caller builds a new chain from the reloaded state).
                    self.abandon(placing);
                    self.reload()?;
                    return Err(e.into());
                }
                commit = Some(began.elapsed());
                if lifted.is_some() || next_state.halt.is_some() {
                    self.lift_how = None;
                }
                if events.last().is_some_and(|r| Some(r.file) != self.copied) {
                    self.copied = None;
                }
                self.state = next_state;
                report.commits += 1;
            }
            observe(&BatchStats {
                done_bytes: total_bytes.saturating_sub(tailer.remaining_bytes()),
                total_bytes,
                mirrored_seen_at: &seen_at,
                quarantined: &verdicts,
                commit,
                head: self.state.head,
                anchor: self.state.anchor,
                last_seq_seen: self.last_seq_seen,
                halt: self.state.halt.as_ref(),
            });
            if self.state.halt.is_some() {
                report.halt = self.state.halt.clone();
                self.abandon(placing);
                return Ok(false);
            }
            if at_end {
                // Everything read was placed and committed: the tailer can
                // go on later, holding only the file it reads.
                tailer.release_finished();
                return Ok(reading.keep);
            }
            if stop.load(Ordering::Relaxed) {
                self.abandon(placing);
                return Ok(false);
            }
            if yield_now() {
                // Read ahead of the checkpoint: the next call opens the
                // files again at the checkpoint.
                report.yielded = true;
                self.abandon(placing);
                return Ok(false);
            }
        }
    }

    /// Drops lines read ahead and not placed (their checkpoint was not
    /// written: they are read again).
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
                crate::hint::lift_quarantine(verdict)
            ));
        }
        Ok(())
    }

    /// A `seq_gap` on the first events read after a copy and truncate:
    /// lines written between the copy and the truncation are in neither
    /// file, and the halt says so.
    fn name_copytruncate_race(&self, detail: &mut String, file: tail::FileId) {
        if self.copied.is_some_and(|copy| !copy.same_inode(&file)) {
            detail.push_str(
                "; most likely lost in copytruncate's race: lines written between the copy and the truncation of the live file are in neither file",
            );
        }
    }

    fn note_seq(&mut self, seq: u64) {
        self.last_seq_seen = Some(self.last_seq_seen.map_or(seq, |s| s.max(seq)));
    }

    fn pool_err(&self, e: PoolBroken) -> ShipError {
        self.io_err(std::io::Error::other(e))
    }

    /// Rereads the checkpoint (after a failed commit).
    fn reload(&mut self) -> Result<(), ShipError> {
        self.state = self
            .mirror
            .state(&self.ledger.name)?
            .unwrap_or_else(|| LedgerState::new(&self.ledger.path));
        Ok(())
    }
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
