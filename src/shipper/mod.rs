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
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::config::LedgerSettings;
use crate::ledger::{Head, SignaturePolicy, Verdict};
use crate::mirror::{Durability, Halt, LedgerState, Mirror, MirrorError};
use crate::tail::{self, TailConfig, Tailer};
use crate::verifier::{PoolBroken, Verifiers};

mod batch;
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
    /// The mirror holds the ledger's rows as the other format: a sealed
    /// ledger's rows carry no line digests, and a plain one's lines no
    /// chain, so neither can go on as the other.
    #[error("ledger `{ledger}` is configured as {configured}, but the mirror holds it as a {recorded} ledger")]
    FormatChanged {
        ledger: String,
        recorded: String,
        configured: &'static str,
    },
    /// A plain ledger signs what it adopts, and its key file cannot be
    /// read by this process: nothing is adopted unsigned.
    #[error("ledger `{ledger}` cannot sign what it adopts: {reason}")]
    SignKey { ledger: String, reason: String },
}

impl ShipError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ShipError::Mirror(e) => e.hint(),
            ShipError::FormatChanged { recorded, .. } => Some(format!(
                "set format = \"{recorded}\" back for this [[ledger]], or give the new format a new ledger name (or a new db) so that its chain starts afresh"
            )),
            ShipError::SignKey { .. } => Some(
                "make a key with `ledgertail keygen --out FILE`, set sign_key = \"FILE\" in the [[ledger]], and let the sidecar's user read it (chmod 600, owned by that user); or use signatures = \"off\" or \"verify-if-present\" for an unsigned plain ledger".into(),
            ),
            ShipError::Io { .. } => None,
        }
    }
}

/// The `meta` key under which a mirror keeps a ledger's format.
fn format_key(ledger: &str) -> String {
    format!("format:{ledger}")
}

/// Records the ledger's format in a mirror that holds none of its rows,
/// and refuses one that holds them as the other format (a mirror made
/// before plain ledgers existed holds sealed ones).
fn check_format(
    mirror: &Mirror,
    ledger: &LedgerSettings,
    state: &LedgerState,
) -> Result<(), ShipError> {
    let configured = if ledger.plain.is_some() {
        "plain"
    } else {
        "sealed"
    };
    let key = format_key(&ledger.name);
    let recorded = match mirror.meta(&key)? {
        Some(f) => f,
        None if state.head.is_none() => {
            mirror.set_meta(&key, configured)?;
            return Ok(());
        }
        None => "sealed".to_owned(),
    };
    if recorded == configured {
        return Ok(());
    }
    Err(ShipError::FormatChanged {
        ledger: ledger.name.clone(),
        recorded,
        configured,
    })
}

/// A plain ledger with a `sign_key` has its key (the settings leave it
/// out when this process could not read the file), and one that requires
/// signatures has a `sign_key`: the sidecar never adopts a line without
/// the signature its own `verify` would ask for. (An auditor's `verify`
/// may require signatures of a plain ledger with the public key alone.)
fn check_signer(ledger: &LedgerSettings) -> Result<(), ShipError> {
    let Some(fields) = &ledger.plain else {
        return Ok(());
    };
    let reason = match (&ledger.sign_key, &fields.signer) {
        (_, Some(_)) => return Ok(()),
        (Some(path), None) => match crate::keyfile::KeyFile::load(path) {
            Err(e) => e.to_string(),
            Ok(_) => format!(
                "{} became readable after the configuration was read: start again",
                path.display()
            ),
        },
        (None, None) if ledger.signatures == SignaturePolicy::Required => {
            "signatures = \"required\", and no sign_key signs the events it seals".to_owned()
        }
        (None, None) => return Ok(()),
    };
    Err(ShipError::SignKey {
        ledger: ledger.name.clone(),
        reason,
    })
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
    /// A plain ledger's record of the files it read (see
    /// [`Shipper::tail_config`]).
    plain_record: std::cell::RefCell<Option<PlainRecord>>,
}

/// What a plain ledger's mirror recorded of its files, read once and again
/// only when it may have changed: after rows of a file other than the last
/// one commit, or while the last one's first rows are still coming (every
/// drain starts from it, and a follower drains for every few lines).
#[derive(Debug, Default)]
struct PlainRecord {
    first_seqs: Option<std::sync::Arc<std::collections::HashMap<tail::Fingerprint, u64>>>,
    lines: Option<std::sync::Arc<std::collections::HashSet<String>>>,
    /// The file of the last row committed, and its rows committed since
    /// the record was read (for when it is stale).
    last_file: Option<tail::FileId>,
    rows_in_last_file: usize,
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
        check_format(&mirror, &ledger, &state)?;
        check_signer(&ledger)?;
        let last_seq_seen = state.head.map(|h| h.seq);
        let refusals = refusals::RefusalLog::new(ledger.plain.is_some());
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
            refusals,
            last_seq_seen,
            verifiers,
            lift_how: None,
            copied: None,
            plain_record: Default::default(),
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
        let files = self.tail_config()?.discover().map_err(|e| self.io_err(e))?;
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
        self.tail_config().ok()?.live_head()
    }

    /// How the tailer reads this ledger's files: a plain ledger's with
    /// what the mirror recorded of each file (see [`TailConfig`]; a file
    /// taken for unread would be adopted again).
    fn tail_config(&self) -> Result<TailConfig, ShipError> {
        let mut config = self.ledger.tail_config();
        if self.ledger.plain.is_none() {
            return Ok(config);
        }
        let mut record = self.plain_record.borrow_mut();
        let record = record.get_or_insert_with(PlainRecord::default);
        if record.first_seqs.is_none() {
            let name = &self.ledger.name;
            let known = self.mirror.plain_first_seqs(name)?;
            let lines = self.mirror.plain_recorded_lines(
                name,
                tail::PLAIN_RECORDED_FILES,
                tail::PLAIN_RECORDED_LINES,
            )?;
            record.first_seqs = Some(std::sync::Arc::new(known));
            record.lines = Some(std::sync::Arc::new(lines));
        }
        config.plain_first_seqs = record.first_seqs.clone();
        config.plain_recorded_lines = record.lines.clone();
        Ok(config)
    }

    /// After a commit: the plain record is read again at the next drain if
    /// the rows just committed may have changed it (see [`PlainRecord`]).
    fn note_committed_rows(&self, rows: &[crate::mirror::EventRow]) {
        let mut record = self.plain_record.borrow_mut();
        let (Some(record), Some(first), Some(last)) = (record.as_mut(), rows.first(), rows.last())
        else {
            return;
        };
        let same_file = record.last_file == Some(first.file) && first.file == last.file;
        record.rows_in_last_file = if same_file {
            record.rows_in_last_file + rows.len()
        } else {
            rows.iter()
                .rev()
                .take_while(|r| r.file == last.file)
                .count()
        };
        if !same_file || record.rows_in_last_file <= tail::PLAIN_RECORDED_LINES {
            record.first_seqs = None;
            record.lines = None;
        }
        record.last_file = Some(last.file);
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
        self.plain_record.replace(None);
        Ok(())
    }
}
