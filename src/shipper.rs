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
use crate::ledger::frame::{Frame, QUARANTINE_PREFIX};
use crate::ledger::{
    Chain, Examined, Hash, Head, KeyRing, LineJudgement, SignaturePolicy, Verdict,
};
use crate::mirror::{Batch, EventRow, Halt, LedgerState, Mirror, MirrorError, QuarantineRow};
use crate::tail::{self, LedgerFile, Opened, Refreshed, TailConfig, Tailer};
use crate::verifier::{Chunk, PoolBroken, Rules, Verifiers};

/// A chunk for the verifier pool: this many lines or bytes, whichever
/// first (large enough that handing it over costs nothing next to
/// examining it, small enough to keep every thread busy).
const CHUNK_LINES: usize = 256;
const CHUNK_BYTES: usize = 256 * 1024;

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

/// How batches are cut: at `max_events` lines or `max_wait` after the
/// batch's first line, whichever first (and always at the end of the data
/// on disk, so a quiet ledger never waits).
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_events: usize,
    pub max_wait: Duration,
}

impl Batching {
    pub fn events(max_events: usize) -> Batching {
        Batching {
            max_events,
            max_wait: Duration::from_secs(3600),
        }
    }
}

/// One ledger being mirrored.
pub struct Shipper {
    ledger: LedgerSettings,
    keys: KeyRing,
    mirror: Mirror,
    state: LedgerState,
    batching: Batching,
    /// Open between calls while following; `None` forces a new discovery.
    tailer: Option<Tailer>,
    /// Set by a re-judging: mirrored lines resolve their quarantine rows.
    resolving: bool,
    last_seq_seen: Option<u64>,
    /// Examines lines on every core.
    verifiers: Verifiers,
}

impl Shipper {
    /// Loads the ledger's checkpoint (if any) from the mirror.
    pub fn new(
        ledger: LedgerSettings,
        keys: KeyRing,
        mirror: Mirror,
        batching: Batching,
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
        let ledger_name = ledger.name.clone();
        Ok(Shipper {
            ledger,
            keys,
            mirror,
            state,
            batching: Batching {
                max_events: batching.max_events.max(1),
                ..batching
            },
            tailer: None,
            resolving: false,
            last_seq_seen,
            verifiers: Verifiers::per_core().map_err(|source| ShipError::Io {
                ledger: ledger_name.clone(),
                path: "verifier threads".into(),
                source,
            })?,
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

    /// The highest seq read in the ledger so far (authentic or not).
    pub fn last_seq_seen(&self) -> Option<u64> {
        self.last_seq_seen
    }

    /// Complete-line bytes on disk beyond the last line read.
    pub fn lag_bytes(&self) -> u64 {
        self.tailer.as_ref().map_or(0, Tailer::lag_bytes)
    }

    /// At start-up: when the mirror's quarantine was judged with other
    /// keys or another policy, judges those lines again (§2.1: "or a
    /// restart"). A mirror that never recorded them is left alone.
    pub fn rejudge_if_changed(&mut self) -> Result<bool, ShipError> {
        let recorded = self.mirror.meta(&self.judged_with_key())?;
        match recorded {
            Some(r) if r != self.judged_with() => {
                self.reconfigure(self.keys.clone(), self.ledger.signatures)
            }
            _ => Ok(false),
        }
    }

    /// Records the keys and policy the quarantine is now judged with.
    pub fn record_judged_with(&self) -> Result<(), ShipError> {
        let key = self.judged_with_key();
        let now = self.judged_with();
        if self.mirror.meta(&key)?.as_deref() != Some(now.as_str()) {
            self.mirror.set_meta(&key, &now)?;
        }
        Ok(())
    }

    fn judged_with_key(&self) -> String {
        format!("judged_with:{}", self.ledger.name)
    }

    /// A digest of the signature policy and the trusted keys.
    fn judged_with(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.ledger.signatures.as_str());
        let mut ids = self.keys.ids();
        ids.sort_unstable();
        for id in ids {
            h.update([0u8]);
            h.update(id.as_bytes());
            if let Some(key) = self.keys.get(id) {
                h.update(key.as_bytes());
            }
        }
        let digest: [u8; 32] = h.finalize().into();
        format!(
            "{}:{}",
            self.ledger.signatures.as_str(),
            Hash(digest).to_hex()
        )
    }

    /// Takes new trusted keys and signature policy, and moves the read
    /// position back to the first line to judge again (§2.1). Returns
    /// whether anything will be judged again.
    pub fn reconfigure(
        &mut self,
        keys: KeyRing,
        policy: SignaturePolicy,
    ) -> Result<bool, ShipError> {
        self.keys = keys;
        self.ledger.signatures = policy;
        self.tailer = None;
        let files = self.tail_config().discover().map_err(|e| self.io_err(e))?;
        let candidates = self.mirror.rejudge_candidates(&self.ledger.name)?;
        if candidates.is_empty() {
            return Ok(false);
        }
        let order = |file: &tail::FileId, offset: u64| {
            files
                .iter()
                .position(|f| f.id == *file)
                .map(|i| (i, offset))
        };
        // Lines at or before the head's line (and so before the anchor)
        // are not judged again.
        let after = match self.state.head {
            Some(head) => match self.mirror.event_location(&self.ledger.name, head.seq)? {
                Some((file, offset)) => order(&file, offset),
                None => None,
            },
            None => None,
        };
        let first = candidates
            .iter()
            .filter_map(|(file, offset)| Some((order(file, *offset)?, *file, *offset)))
            .filter(|(at, _, _)| after.is_none_or(|h| *at > h))
            .min();
        let Some((_, file, offset)) = first else {
            return Ok(false);
        };
        let Some(position) = tail::position_in(&files, file, offset).map_err(|e| self.io_err(e))?
        else {
            return Ok(false);
        };
        // Never move forward: only lines already read are judged again.
        if let Some(current) = &self.state.position {
            if current.file == position.file && current.offset < position.offset {
                return Ok(false);
            }
        }
        tracing::info!(
            ledger = %self.ledger.name,
            file = %position.path.display(),
            offset = position.offset,
            "keys or signature policy changed: judging quarantined lines again from here"
        );
        self.state.position = Some(position);
        self.state.halt = None;
        self.resolving = true;
        Ok(true)
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
    /// otherwise it halts again at the same place. `observe` is called
    /// after every batch.
    pub fn catch_up(
        &mut self,
        stop: &AtomicBool,
        observe: &mut dyn FnMut(&BatchStats<'_>),
    ) -> Result<Report, ShipError> {
        let mut report = Report::default();
        let tailer = match self.tailer.take() {
            Some(t) => self.check_behind(t, &mut report)?,
            None => self.discover_and_open(&mut report)?,
        };
        let Some(mut tailer) = tailer else {
            return Ok(report);
        };
        let result = self.drain(&mut tailer, stop, observe, &mut report);
        match &result {
            // Followed again next time, unless halted (a restart or reload
            // judges again from the checkpoint) or the file went away.
            Ok(keep) if *keep && self.state.halt.is_none() => self.tailer = Some(tailer),
            _ => self.tailer = None,
        }
        if self.state.halt.is_none() {
            self.resolving = false;
        }
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
        observe: &mut dyn FnMut(&BatchStats<'_>),
        report: &mut Report,
    ) -> Result<bool, ShipError> {
        let tail_config = self.tail_config();
        let total_bytes = tailer.remaining_bytes();
        let rules = Arc::new(Rules {
            policy: self.ledger.signatures,
            keys: self.keys.clone(),
            max_line_bytes: self.ledger.max_line_bytes,
        });
        let mut chain = Chain::new(
            self.state.head,
            self.state.anchor,
            self.ledger.signatures,
            self.keys.clone(),
            self.ledger.rules,
            self.ledger.max_line_bytes,
        );
        let max_events = self.batching.max_events;
        let mut events: Vec<EventRow> = Vec::with_capacity(max_events.min(4096));
        let mut seen_at: Vec<Instant> = Vec::with_capacity(max_events.min(4096));
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
            let mut last_line: Option<(tail::FileId, u64)> = None;
            let started = Instant::now();
            while lines < max_events {
                // The clock is read every 64 lines: cheap, and fine-grained
                // enough for a wait counted in milliseconds.
                if lines % 64 == 63 && started.elapsed() >= self.batching.max_wait {
                    break;
                }
                let Some((chunk, next)) = placing.as_mut().filter(|(c, i)| *i < c.len()) else {
                    if let Some((done, _)) = placing.take() {
                        self.verifiers.recycle(done);
                    }
                    let head = chain.head.map(|h| h.seq);
                    self.read_ahead(tailer, &tail_config, &rules, head, &mut reading)?;
                    match self.verifiers.recv().map_err(|e| self.pool_err(e))? {
                        Some(chunk) => placing = Some((chunk, 0)),
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
                    LineJudgement::Refused { refusal, .. } => refusal,
                };
                if let Some(seq) = refusal.seq {
                    self.note_seq(seq);
                }
                let verdict = refusal.verdict;
                *report.verdicts.entry(verdict).or_default() += 1;
                verdicts.push(verdict);
                let bytes = chunk.line(i);
                let row = QuarantineRow {
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
                log_refusal(&self.ledger.name, &row);
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
                let batch = Batch {
                    events: &events,
                    quarantine: &quarantine,
                    resolve: self.resolving,
                };
                if let Err(e) = self
                    .mirror
                    .commit(&self.ledger.name, &batch, &mut next_state)
                {
                    // Nothing of this batch is in the database: forget it
                    // (the caller builds a new chain from the reloaded state).
                    self.abandon(placing);
                    self.reload()?;
                    return Err(e.into());
                }
                commit = Some(began.elapsed());
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
                // Everything read was placed: the tailer can go on later.
                return Ok(reading.keep);
            }
            if stop.load(Ordering::Relaxed) {
                self.abandon(placing);
                return Ok(false);
            }
        }
    }

    /// Keeps the verifier pool busy: reads complete lines into chunks and
    /// sends them, until enough are in flight or the data on disk is read
    /// (following rotations on the way).
    fn read_ahead(
        &mut self,
        tailer: &mut Tailer,
        tail_config: &TailConfig,
        rules: &Arc<Rules>,
        head_seq: Option<u64>,
        reading: &mut Reading,
    ) -> Result<(), ShipError> {
        let depth = 2 * self.verifiers.threads() + 1;
        while !reading.done && self.verifiers.in_flight() < depth {
            let mut chunk = self.verifiers.chunk();
            while chunk.len() < CHUNK_LINES && chunk.byte_len() < CHUNK_BYTES {
                let next = tailer.next_frame().map_err(|e| self.io_err(e))?;
                match next {
                    Some((file, Frame::Line { offset, bytes })) => {
                        chunk.push(file, offset, bytes.len() as u64, bytes)
                    }
                    Some((
                        file,
                        Frame::TooLong {
                            offset,
                            length,
                            prefix,
                        },
                    )) => chunk.push(file, offset, length, prefix),
                    None => {
                        // The end of the newest file known: has it rotated?
                        // (Bounded, in case the folder changes without end.)
                        reading.refreshes += 1;
                        if reading.refreshes <= 64 {
                            match tailer
                                .refresh(tail_config, head_seq)
                                .map_err(|e| self.io_err(e))?
                            {
                                Refreshed::MoreFiles => continue,
                                Refreshed::Unchanged => {}
                                Refreshed::CurrentGone => reading.keep = false,
                            }
                        }
                        reading.done = true;
                        break;
                    }
                }
                chunk.stamp_last(tailer.read_at().unwrap_or_else(Instant::now));
            }
            if chunk.is_empty() {
                self.verifiers.recycle(chunk);
                break;
            }
            self.verifiers
                .send(chunk, rules)
                .map_err(|e| self.pool_err(e))?;
        }
        Ok(())
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

    fn note_seq(&mut self, seq: u64) {
        self.last_seq_seen = Some(self.last_seq_seen.map_or(seq, |s| s.max(seq)));
    }

    fn pool_err(&self, e: PoolBroken) -> ShipError {
        self.io_err(std::io::Error::other(e))
    }

    /// Discovers the files and opens a tailer at the checkpoint, trying
    /// again when a rotation renamed a file between the two.
    fn discover_and_open(&mut self, report: &mut Report) -> Result<Option<Tailer>, ShipError> {
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
    fn check_behind(
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
        let files = match &self.state.position {
            Some(pos) => tail::resume_order(files, pos.file, self.state.head.map(|h| h.seq)),
            None => files,
        };
        let opened = Tailer::open(files.clone(), self.state.position.as_ref(), max)
            .map_err(|e| self.io_err(e))?;
        let opened = match opened {
            Opened::FileMissing => self.relocate(files)?,
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

    /// Halts the ledger as `rewritten` and commits the halt.
    fn halt_rewritten(
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
