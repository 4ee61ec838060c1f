//! `run`'s periodic parity check: every mirrored row against the line at
//! its file and offset, paced, in short read transactions, across
//! rotations that happen while it runs.

use std::collections::{BTreeMap, HashMap};

use super::walk::{ChainWalk, RowCheck};
use super::Parity;
use crate::config::LedgerSettings;
use crate::ledger::{authenticate, Head, SealedEvent};
use crate::mirror::{LedgerState, Mirror, MirrorError, StoredEvent};
use crate::tail::{self, FileId, LedgerFile, Standing};

/// Why a live parity check could not finish.
#[derive(Debug, thiserror::Error)]
pub enum RecheckError {
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a row's line is now.
pub(super) enum Found {
    /// The complete line at the row's offset (without its LF), in the file
    /// with this path and (discovered) id.
    Line(std::path::PathBuf, String),
    /// The file that stands for the row's holds no complete line at that
    /// offset any more (cut short).
    NoLine(std::path::PathBuf),
    /// No file of the ledger is, or stands for, the row's file.
    FileGone,
}

/// The ledger's files for a check that may last long (it is paced): a
/// row's file is found by its recorded identity, or else by what stands
/// for it now ([`tail::stand_in`]: a copy, the same inode edited, an
/// edited file at its path), and opened by its name, with the identity
/// checked on the handle; when a rotation renamed it meanwhile, the files
/// are discovered again and it is found under its new name. Lines are read
/// forward through one buffered handle at a time.
pub(super) struct LineSource<'a> {
    ledger: &'a LedgerSettings,
    mirror: &'a Mirror,
    /// The recorded head: what stands for a file must hold events at or
    /// below it.
    head_seq: u64,
    files: Vec<LedgerFile>,
    /// Recorded file ids already looked for after a new discovery.
    rediscovered: std::collections::HashSet<String>,
    /// The path each recorded file id was last read under.
    paths: HashMap<String, Option<std::path::PathBuf>>,
    /// The file found for each recorded file id since the last discovery:
    /// rows come a file at a time, and finding one costs queries and, for
    /// a plain ledger, reads.
    found: HashMap<String, Option<(LedgerFile, Standing)>>,
    reader: Option<LineReader>,
}

impl<'a> LineSource<'a> {
    pub(super) fn new(
        ledger: &'a LedgerSettings,
        mirror: &'a Mirror,
        head_seq: u64,
    ) -> LineSource<'a> {
        LineSource {
            ledger,
            mirror,
            head_seq,
            files: Vec::new(),
            rediscovered: std::collections::HashSet::new(),
            paths: HashMap::new(),
            found: HashMap::new(),
            reader: None,
        }
    }

    pub(super) fn discover(&mut self) -> Result<(), RecheckError> {
        let mut config = self.ledger.tail_config();
        if self.ledger.plain.is_some() {
            config.plain_first_seqs = Some(std::sync::Arc::new(
                self.mirror.plain_first_seqs(&self.ledger.name)?,
            ));
        }
        self.files = config.discover().map_err(|e| RecheckError::Io {
            path: self.ledger.path.display().to_string(),
            source: e,
        })?;
        self.found.clear();
        Ok(())
    }

    /// The seq of the oldest authentic event on disk.
    pub(super) fn oldest_on_disk(&self) -> Option<u64> {
        self.files.iter().filter_map(|f| f.first_seq).min()
    }

    /// The file that holds (or stands for) the recorded file now, found
    /// once per discovery.
    fn file_for(
        &mut self,
        recorded: &FileId,
        file_id: &str,
    ) -> Result<Option<(LedgerFile, Standing)>, RecheckError> {
        if let Some(found) = self.found.get(file_id) {
            return Ok(found.clone());
        }
        let found = self.find_file_for(recorded, file_id)?;
        self.found.insert(file_id.to_owned(), found.clone());
        Ok(found)
    }

    fn find_file_for(
        &mut self,
        recorded: &FileId,
        file_id: &str,
    ) -> Result<Option<(LedgerFile, Standing)>, RecheckError> {
        if !self.paths.contains_key(file_id) {
            let path = self
                .mirror
                .file_path(file_id)?
                .map(std::path::PathBuf::from);
            self.paths.insert(file_id.to_owned(), path);
        }
        let path = self.paths.get(file_id).and_then(|p| p.as_deref());
        let mirror = self.mirror;
        let read_as_itself = |id: &FileId| mirror.knows_file(&id.to_string()).unwrap_or(true);
        // A file that stands for the recorded one holds one of its events:
        // a copy of a later file (a second copytruncate onto a deleted
        // rotated file's name, maybe its inode) starts after them.
        let last_seq = mirror
            .last_seq_of_file(&self.ledger.name, file_id)?
            .map_or(self.head_seq, |s| s.min(self.head_seq));
        let found = tail::stand_in(&self.files, recorded, path, last_seq, &read_as_itself)
            .map(|(f, s)| (f.clone(), s));
        if found.is_some() || self.ledger.plain.is_none() {
            return Ok(found);
        }
        self.plain_stand_in(recorded, file_id)
    }

    /// A plain ledger's file that stands for a recorded one (the lines say
    /// nothing of where they belong, so `tail::stand_in` cannot tell): a
    /// file never read (or not read for holding such lines: see
    /// `tail::Authenticity::plain_recorded_lines`) that still holds one of
    /// the recorded file's first lines, wherever it is now (an edit may
    /// have moved it). A new log file holds
    /// none of them: the recorded file is gone. A file on the recorded
    /// inode was edited in place; any other was put in its place (`sed -i`
    /// writes an edited copy and renames it over the file).
    fn plain_stand_in(
        &mut self,
        recorded: &FileId,
        file_id: &str,
    ) -> Result<Option<(LedgerFile, Standing)>, RecheckError> {
        let rows = self.mirror.first_rows_of_file(
            &self.ledger.name,
            file_id,
            tail::PLAIN_RECORDED_LINES,
        )?;
        let recorded_lines: std::collections::HashSet<&str> = rows
            .iter()
            .filter_map(|r| r.line_sha256.as_deref())
            .collect();
        if recorded_lines.is_empty() {
            return Ok(None);
        }
        // Files never read, and those not read because they hold lines
        // already sealed: neither has a first seq.
        for f in self.files.iter().filter(|f| f.first_seq.is_none()) {
            let lines = tail::first_lines(f, tail::PLAIN_PROBE_LINES, self.ledger.max_line_bytes)
                .map_err(|e| RecheckError::Io {
                path: f.path.display().to_string(),
                source: e,
            })?;
            if lines
                .iter()
                .any(|l| recorded_lines.contains(sha256_hex(l).as_str()))
            {
                let standing = if f.id.same_inode(recorded) {
                    Standing::EditedInPlace
                } else {
                    Standing::Replaced
                };
                return Ok(Some((f.clone(), standing)));
            }
        }
        Ok(None)
    }

    /// As [`LineSource::line_of`], but a line that is missing or differs
    /// from its row is looked for once more after a fresh discovery: a
    /// rotation during the check (a rename, a copy and truncate) moves
    /// lines to other files; it does not change them.
    pub(super) fn settled_line_of(
        &mut self,
        row: &StoredEvent,
        buf: &mut Vec<u8>,
    ) -> Result<(Found, Option<Standing>), RecheckError> {
        let first = self.line_of(row, buf)?;
        let differs = match &first.0 {
            Found::NoLine(_) => true,
            Found::Line(path, _) => compare_line(buf, path, row, self.ledger, &mut Vec::new())
                .0
                .is_some(),
            Found::FileGone => false,
        };
        if !differs || !self.rediscovered.insert(row.file_id.clone()) {
            return Ok(first);
        }
        self.reader = None;
        self.discover()?;
        self.line_of(row, buf)
    }

    /// Reads the line of `row` into `buf`; also says how the file it was
    /// read from stands for the row's.
    fn line_of(
        &mut self,
        row: &StoredEvent,
        buf: &mut Vec<u8>,
    ) -> Result<(Found, Option<Standing>), RecheckError> {
        let Ok(recorded) = row.file_id.parse::<FileId>() else {
            return Ok((Found::FileGone, None));
        };
        loop {
            let file = self.file_for(&recorded, &row.file_id)?;
            let reader = match &file {
                Some((f, _)) if self.reader.as_ref().is_some_and(|r| r.id == f.id) => {
                    self.reader.as_mut()
                }
                Some((f, _)) => {
                    self.reader = tail::identity::reopen(&f.path, &f.id)
                        .map_err(|e| RecheckError::Io {
                            path: f.path.display().to_string(),
                            source: e,
                        })?
                        .map(|handle| LineReader {
                            id: f.id,
                            path: f.path.clone(),
                            reader: std::io::BufReader::with_capacity(256 * 1024, handle),
                            pos: 0,
                        });
                    self.reader.as_mut()
                }
                None => None,
            };
            let Some(r) = reader else {
                // Renamed by a rotation since discovery, or gone: look once
                // more under the names the files have now.
                if self.rediscovered.insert(row.file_id.clone()) {
                    self.reader = None;
                    self.discover()?;
                    continue;
                }
                return Ok((Found::FileGone, None));
            };
            let complete = r
                .line_at(row.file_offset, self.ledger.max_line_bytes, buf)
                .map_err(|e| RecheckError::Io {
                    path: r.path.display().to_string(),
                    source: e,
                })?;
            let path = r.path.clone();
            let found = if complete {
                Found::Line(path, r.id.to_string())
            } else {
                Found::NoLine(path)
            };
            return Ok((found, file.map(|(_, s)| s)));
        }
    }
}

/// The line at a byte offset of one ledger file, read forward.
struct LineReader {
    id: FileId,
    path: std::path::PathBuf,
    reader: std::io::BufReader<std::fs::File>,
    pos: u64,
}

impl LineReader {
    /// The bytes of the complete line at `offset` (without its LF), or
    /// `None` when the file holds no complete line there any more.
    fn line_at(&mut self, offset: u64, max: u64, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        use std::io::{BufRead, Read};
        if offset != self.pos {
            let delta = i64::try_from(offset).unwrap_or(i64::MAX)
                - i64::try_from(self.pos).unwrap_or(i64::MAX);
            self.reader.seek_relative(delta)?;
            self.pos = offset;
        }
        buf.clear();
        let n = (&mut self.reader).take(max + 1).read_until(b'\n', buf)?;
        self.pos += n as u64;
        if buf.last() != Some(&b'\n') {
            return Ok(false);
        }
        buf.pop();
        Ok(true)
    }
}

/// Bytes a row takes in the database, roughly (for the pace).
fn row_bytes(row: &StoredEvent) -> u64 {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    (row.payload.len()
        + row.ts.len()
        + row.event_type.len()
        + row.hash.len()
        + row.file_id.len()
        + opt(&row.extra)
        + opt(&row.prev_hash)
        + opt(&row.id)
        + opt(&row.key_id)
        + opt(&row.sig)
        + 16) as u64
}

/// The rolling pass reads every row again within this many checks (at the
/// default interval, within an hour), a slice per check: this bounds how
/// long a row altered in the database itself, or a line edited in a file
/// that also grew, can go unseen, and spreads the cost of a full pass
/// over the period instead of paying it at once.
pub const FULL_EVERY: u32 = 60;

/// What a file looked like when its rows were compared with its lines:
/// identity, size, modification and change times (the change time moves
/// with any write, an in-place edit included, and no user can set it back).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn stamp_of(file: &LedgerFile) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(&file.path).ok()?;
    (m.dev() == file.id.dev && m.ino() == file.id.ino).then(|| Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

impl Stamp {
    /// Changed other than by growing: a write that did not only append
    /// (an edit in place moves the change time and leaves the size). An
    /// append may hide an edit too; the rolling pass reads such a file's
    /// rows again within [`FULL_EVERY`] checks.
    fn edited_since(&self, before: &Stamp) -> bool {
        self.dev != before.dev
            || self.ino != before.ino
            || (self.len <= before.len && self != before)
    }
}

/// A file whose rows a clean check compared with its lines: its stamp at
/// the time (taken before its lines were read) and the seqs of its rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Mark {
    stamp: Stamp,
    first: u64,
    last: u64,
}

/// What a clean check leaves to the next one, so that it reads only what
/// can have changed or is due: the rows committed since, the rows of any
/// file edited other than by growing, and the next slice of the rolling
/// pass. Kept in the mirror between runs ([`Checked::to_text`]), so that a
/// restart goes on where the last check was instead of reading the whole
/// ledger again.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checked {
    anchor_seq: u64,
    anchor_hash: String,
    /// Every row up to this seq was checked, and found sound.
    through: u64,
    /// The rolling pass reads again from here (rows up to `through`): a
    /// slice per check, so that every row is read again within
    /// [`FULL_EVERY`] checks however the files change.
    cursor: u64,
    /// By file id (as discovered), the files compared.
    files: BTreeMap<String, Mark>,
    /// Every file of the ledger as it was at that check.
    stamps: BTreeMap<String, Stamp>,
    /// Read back from the mirror after a restart (not made by a check of
    /// this process).
    #[serde(skip)]
    resumed: bool,
}

impl Checked {
    /// As kept in the mirror.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `None` for a text this build cannot read (the next check is full).
    pub fn from_text(text: &str) -> Option<Checked> {
        let mut c: Checked = serde_json::from_str(text).ok()?;
        c.resumed = true;
        Some(c)
    }

    fn anchored_at(&self, anchor: Head) -> bool {
        self.anchor_seq == anchor.seq && self.anchor_hash == anchor.hash.to_hex()
    }

    /// The rows an incremental check reads, as seq ranges, and where the
    /// rolling pass goes on after it.
    fn plan(&self, stamps: &BTreeMap<String, Stamp>, head: u64) -> (Vec<(u64, u64)>, u64) {
        let mut ranges: Vec<(u64, u64)> = self
            .files
            .iter()
            .filter(|(id, mark)| {
                stamps
                    .get(*id)
                    .is_none_or(|now| now.edited_since(&mark.stamp))
            })
            .map(|(_, mark)| (mark.first, mark.last))
            .collect();
        if self.through < head {
            ranges.push((self.through + 1, head));
        }
        let rows = self.through.saturating_sub(self.anchor_seq) + 1;
        let slice = rows.div_ceil(u64::from(FULL_EVERY)).max(1);
        let from = if self.cursor > self.through || self.cursor < self.anchor_seq {
            self.anchor_seq
        } else {
            self.cursor
        };
        let to = from.saturating_add(slice - 1).min(self.through);
        ranges.push((from, to));
        (ranges, to + 1)
    }
}

/// The periodic parity check of `run` (contract §5), in full: every
/// mirrored row up to the head recorded at the start is set against the
/// line it came from. See [`recheck_since`].
pub fn recheck(
    ledger: &LedgerSettings,
    mirror: &Mirror,
    pace: &mut dyn FnMut(u64) -> bool,
) -> Result<Option<Parity>, RecheckError> {
    Ok(recheck_since(ledger, mirror, None, pace)?.map(|(p, _)| p))
}

/// The periodic parity check of `run` (contract §5): mirrored rows up to
/// the head recorded at the start are set against the lines they came
/// from (their file and offset), so a line altered after it was mirrored
/// is `mismatched`, a row whose file is gone is `missing_in_jsonl` (or
/// archived, when older than every file on disk), a gap in the rows is
/// `missing_in_sqlite`, and a row that fails the audit from its columns
/// (shape, hash, link; its signature too when no line on disk vouches for
/// it) is `mismatched`.
///
/// After a clean check (`previous`), only what can have changed or is due
/// is read: the rows committed since; the rows of every file changed other
/// than by growing (an edit in place moves its change time, not its size;
/// a file that grew, the live one, is not read again for that); and the
/// next slice of the rolling pass, which reads every row again within
/// [`FULL_EVERY`] checks. Whenever the last check found a difference, the
/// mirror was rebuilt, or neither the head nor any file moved (so only the
/// database can have changed), the check is full. Returns the result and,
/// when it is clean, what the next check may build on.
///
/// Memory is bounded (rows are read in short read transactions of a few
/// thousand, so the shipper's writes and WAL checkpoints go on), and
/// `pace(bytes)` is called after every row with the bytes read for it (its
/// line and its row): it sleeps to bound the rate and returns `false` to
/// abandon the check (`Ok(None)`).
pub fn recheck_since(
    ledger: &LedgerSettings,
    mirror: &Mirror,
    previous: Option<&Checked>,
    pace: &mut dyn FnMut(u64) -> bool,
) -> Result<Option<(Parity, Option<Checked>)>, RecheckError> {
    let state = mirror.state(&ledger.name)?;
    let (Some(anchor), Some(head)) = (
        state.as_ref().and_then(|s| s.anchor),
        state.as_ref().and_then(|s| s.head),
    ) else {
        let mut p = Parity::default();
        // Rows with no recorded chain are wrong whatever they hold.
        if let Some(gap) = ChainWalk::new(ledger, state.as_ref()).finish() {
            p.missing(gap);
        }
        return Ok(Some((p, None)));
    };
    let mut source = LineSource::new(ledger, mirror, head.seq);
    source.discover()?;
    // Stamped before any line is read: a change while the check reads
    // shows at the next one.
    let stamps: BTreeMap<String, Stamp> = source
        .files
        .iter()
        .filter_map(|f| Some((f.id.to_string(), stamp_of(f)?)))
        .collect();
    // Full again: after a rebuilt mirror; and when neither the head nor
    // any ledger file moved since the last check, so that only the
    // database itself can have changed (an edit of old rows in SQLite; or
    // just a WAL checkpoint after the last commits: one full check when a
    // ledger falls quiet). Not after a restart: the state kept in the
    // mirror is built on, and the rolling pass reads every row again
    // within its period.
    let previous = previous.filter(|c| {
        c.anchored_at(anchor)
            && c.through <= head.seq
            && (c.resumed || !(c.through == head.seq && c.stamps == stamps))
    });
    // The seq ranges to read, and where the rolling pass goes on next
    // time (a full check is a whole pass).
    let (ranges, cursor) = match previous {
        None => (vec![(anchor.seq, head.seq)], anchor.seq),
        Some(c) => c.plan(&stamps, head.seq),
    };
    let mut pass = Pass {
        ledger,
        mirror,
        state: state.as_ref(),
        source,
        stamps: &stamps,
        pace,
        p: Parity::default(),
        marks: previous.map(|c| c.files.clone()).unwrap_or_default(),
        unmarked: false,
        line: Vec::new(),
        scratch: Vec::new(),
    };
    for (start, end) in merged(ranges, head.seq) {
        if !pass.range(anchor.seq, start, end)? {
            return Ok(None);
        }
    }
    let Pass {
        p,
        mut marks,
        unmarked,
        source,
        ..
    } = pass;
    // Files gone since: their rows were just read once more (archived or
    // missing); from now on the full checks see to them.
    marks.retain(|id, _| stamps.contains_key(id));
    let next = (p.holds() && !unmarked && source.rediscovered.is_empty()).then(|| Checked {
        anchor_seq: anchor.seq,
        anchor_hash: anchor.hash.to_hex(),
        through: head.seq,
        cursor,
        files: marks,
        stamps,
        resumed: false,
    });
    Ok(Some((p, next)))
}

/// `ranges` sorted and merged where they touch, none past `head`.
fn merged(mut ranges: Vec<(u64, u64)>, head: u64) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some((_, end)) if a <= end.saturating_add(1) => *end = (*end).max(b),
            _ => merged.push((a, b.min(head))),
        }
    }
    merged
}

/// One check's reading: the rows of its ranges against their lines.
struct Pass<'a, 'p> {
    ledger: &'a LedgerSettings,
    mirror: &'a Mirror,
    state: Option<&'a LedgerState>,
    source: LineSource<'a>,
    stamps: &'a BTreeMap<String, Stamp>,
    pace: &'p mut dyn FnMut(u64) -> bool,
    p: Parity,
    /// Per file: the rows compared, with the stamp they were compared at.
    marks: BTreeMap<String, Mark>,
    /// A file whose rows were compared but that could not be marked (its
    /// name moved during the check): the next check must be full.
    unmarked: bool,
    line: Vec<u8>,
    scratch: Vec<u8>,
}

impl Pass<'_, '_> {
    /// Reads the rows `start..=end`. False: the pace said stop.
    fn range(&mut self, anchor: u64, start: u64, end: u64) -> Result<bool, RecheckError> {
        let before = if start > anchor {
            let at = self.mirror.hash_at(&self.ledger.name, start - 1)?;
            at.map(|h| h.to_hex())
        } else {
            None
        };
        let mut walk = ChainWalk::starting_at(self.ledger, self.state, start, before);
        let mut from = start;
        while from <= end {
            let rows = self.mirror.events_from(&self.ledger.name, from, 2048)?;
            let Some(last) = rows.last() else { break };
            from = last.seq.saturating_add(1);
            for row in rows {
                if row.fault.is_none() && row.seq > end {
                    continue; // beyond this range (or committed since the start)
                }
                if !self.row(&row, &mut walk)? {
                    return Ok(false);
                }
            }
        }
        if let Some(gap) = walk.finish_at(end) {
            self.p.missing(gap);
        }
        Ok(true)
    }

    /// One row against its line and the chain. False: the pace said stop.
    fn row(&mut self, row: &StoredEvent, walk: &mut ChainWalk<'_>) -> Result<bool, RecheckError> {
        let found = if row.fault.is_some() {
            Found::FileGone
        } else {
            self.source.settled_line_of(row, &mut self.line)?.0
        };
        let read = match &found {
            Found::Line(..) => self.line.len() as u64 + 1,
            _ => 0,
        };
        if !(self.pace)(read + row_bytes(row)) {
            return Ok(false);
        }
        let at = match &found {
            Found::Line(path, _) | Found::NoLine(path) => Some(path.clone()),
            Found::FileGone => None,
        };
        let (line_problem, vouched) = self.judge_line(found, row);
        // A row its line vouches for was judged authentic when it was
        // mirrored: its shape, hash and links are audited here, its
        // signature is the line's. Any other row has only its columns.
        let checked = match &vouched {
            Some(line) => walk.row_vouched(row, line),
            None => walk.row(row, true),
        };
        if let Some(gap) = walk.take_gap() {
            self.p.missing(gap);
        }
        let problem = match checked {
            RowCheck::Later => return Ok(true),
            RowCheck::Unsound(why) => Some(why),
            RowCheck::Sound => None,
        };
        // A sound row whose line changed: the ledger's bytes were
        // rewritten (an unsound row is the mirror's own fault).
        if let (None, Some(why), Some(path)) = (&problem, &line_problem, at) {
            self.p.rewritten(row.seq, &path, row.file_offset, why);
        }
        if let Some(why) = problem.or(line_problem) {
            self.p.mismatch(row.seq, why);
        }
        Ok(true)
    }

    /// What the line found says of `row`: (what is wrong with the line,
    /// the sealed event the line vouches for).
    fn judge_line(
        &mut self,
        found: Found,
        row: &StoredEvent,
    ) -> (Option<String>, Option<SealedEvent>) {
        match found {
            Found::Line(path, id) => {
                self.mark(id, row.seq);
                compare_line(&self.line, &path, row, self.ledger, &mut self.scratch)
            }
            // Its file is there, cut short: bytes already read were
            // changed.
            Found::NoLine(path) => (Some(cut_short(&path, row.file_offset)), None),
            Found::FileGone => {
                if row.fault.is_none() && self.source.oldest_on_disk().is_none_or(|o| row.seq < o) {
                    self.p.archived += 1;
                } else if row.fault.is_none() {
                    let why = format!(
                        "its file {} is no longer among the ledger's files",
                        row.file_id
                    );
                    self.p.gone(row.seq, why);
                }
                (None, None)
            }
        }
    }

    /// Notes that a row of the file `id` was compared at its stamp.
    fn mark(&mut self, id: String, seq: u64) {
        let Some(stamp) = self.stamps.get(&id) else {
            self.unmarked = true;
            return;
        };
        let m = self.marks.entry(id).or_insert(Mark {
            stamp: stamp.clone(),
            first: seq,
            last: seq,
        });
        m.stamp = stamp.clone();
        m.first = m.first.min(seq);
        m.last = m.last.max(seq);
    }
}

/// The check made when the checkpoint's file is no longer found by its
/// identity (an edited copy renamed over it, an edit of its first line, a
/// copy and truncate, a restore from a backup): resuming on the strength
/// of the head's line alone would let any edit of what was mirrored
/// through. The rows are read from the head down and each is set against
/// the line now at its offset in the file that stands for its file
/// ([`tail::stand_in`]); reading down stops at the first row whose file is
/// found as itself, or is gone (older rows are the periodic parity
/// check's). Returns the lowest changed seq, or `None` when every line
/// read is what was mirrored.
pub fn reconcile(
    ledger: &LedgerSettings,
    mirror: &Mirror,
) -> Result<Option<super::Rewrite>, RecheckError> {
    let Some(head) = mirror.state(&ledger.name)?.and_then(|s| s.head) else {
        return Ok(None);
    };
    let mut source = LineSource::new(ledger, mirror, head.seq);
    source.discover()?;
    // Going down: the last difference found is the lowest.
    let mut lowest = None;
    let (mut line, mut scratch) = (Vec::new(), Vec::new());
    let mut to = Some(head.seq);
    while let Some(at) = to {
        let rows = mirror.events_down_from(&ledger.name, at, 2048)?;
        let Some(last) = rows.last() else { break };
        to = last.seq.checked_sub(1);
        for row in rows {
            let (found, standing) = source.settled_line_of(&row, &mut line)?;
            let problem = match (found, standing) {
                (_, None | Some(Standing::Same)) => return Ok(lowest),
                (Found::Line(path, _), _) => {
                    let (why, _) = compare_line(&line, &path, &row, ledger, &mut scratch);
                    why.map(|w| (path, w))
                }
                (Found::NoLine(path), _) => Some((path.clone(), cut_short(&path, row.file_offset))),
                (Found::FileGone, _) => None,
            };
            if let Some((path, detail)) = problem {
                lowest = Some(super::Rewrite {
                    seq: row.seq,
                    file: path.display().to_string(),
                    offset: row.file_offset,
                    detail,
                });
            }
        }
    }
    Ok(lowest)
}

/// What a row whose file was cut short before its line says.
pub(super) fn cut_short(path: &std::path::Path, offset: u64) -> String {
    format!(
        "{} holds no complete line at offset {offset} any more (cut short)",
        path.display()
    )
}

/// What the line on disk says of its row: a difference, if any, or the
/// event the line holds when it vouches for the row (same event, same
/// signature).
pub(super) fn compare_line(
    line: &[u8],
    path: &std::path::Path,
    row: &StoredEvent,
    ledger: &LedgerSettings,
    scratch: &mut Vec<u8>,
) -> (Option<String>, Option<SealedEvent>) {
    if ledger.plain.is_some() {
        return (plain_line_differs(line, path, row), None);
    }
    match authenticate(
        line,
        crate::ledger::SignaturePolicy::Off,
        &ledger.keys,
        scratch,
    ) {
        Err(refusal) => (
            Some(format!(
                "the line at {}:{} is now {}: {}",
                path.display(),
                row.file_offset,
                refusal.verdict,
                refusal.detail
            )),
            None,
        ),
        Ok(ev)
            if ev.seq != row.seq
                || ev.hash.hex_digits() != row.hash.as_bytes()
                || ev.sig != row.sig =>
        {
            (
                Some(format!(
                    "the line at {}:{} now holds seq {} hash {}, the mirror seq {} hash {}",
                    path.display(),
                    row.file_offset,
                    ev.seq,
                    ev.hash,
                    row.seq,
                    row.hash
                )),
                None,
            )
        }
        Ok(ev) => (None, Some(ev)),
    }
}

/// A plain ledger's line against its row: the SHA-256 of the bytes now
/// at the row's offset against the one recorded when it was sealed.
fn plain_line_differs(line: &[u8], path: &std::path::Path, row: &StoredEvent) -> Option<String> {
    let now = sha256_hex(line);
    let at = format!("{}:{}", path.display(), row.file_offset);
    match row.line_sha256.as_deref() {
        Some(recorded) if recorded == now => None,
        Some(recorded) => Some(format!(
            "the line at {at} changed since it was sealed: its SHA-256 is now {now}, {recorded} when read"
        )),
        None => Some(format!(
            "the mirror holds no digest of the plain line at {at} (a row of a sealed ledger, or one with its digest removed)"
        )),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::ledger::adopt::line_digest(bytes).to_hex()
}
