//! The tailer: owns the ledger files (read-only) and their byte offsets.
//!
//! It yields complete lines in chain order across the rotated files of a
//! ledger, from a checkpoint [`Position`], and reports a checkpoint that no
//! longer matches the file (`rewritten`) as a value. It never judges what a
//! line means (except to order rotated files by their first event), never
//! writes SQL and never records metrics.
//!
//! Following (contract §1.4): a tailer lives across wake-ups. At the end of
//! the newest file it knows, [`Tailer::refresh`] stats the live path; when
//! the path names another file (a rotation, or several), the files are
//! discovered again and the tailer carries on *through its open handle*:
//! the renamed file is read to its end first, then the files after it.

pub mod backward;
pub mod identity;
mod position;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use identity::{
    discover, open_regular, Authenticity, FileId, Fingerprint, LedgerFile, Opening,
    PLAIN_PROBE_LINES, PLAIN_RECORDED_FILES, PLAIN_RECORDED_LINES,
};
use position::read_tail;
pub use position::{
    bytes_after, find_file, first_lines, line_at, locate_after_head, position_in, resume_order,
    stand_in, Standing,
};

use crate::ledger::frame::{Frame, Framer};
use crate::ledger::{KeyRing, SignaturePolicy};

/// How many bytes before a checkpoint's offset are kept to notice that the
/// file was rewritten under us.
pub const TAIL_CHECK_BYTES: u64 = 64;

/// Size of one read.
const READ_CHUNK: usize = 256 * 1024;
/// Size of the first read after an end of data.
const MIN_READ: usize = 4096;

/// What [`Tailer::refresh`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// The live path still names the newest file read (or names nothing).
    Unchanged,
    /// Rotation: newer files follow the one being read.
    MoreFiles,
    /// The file being read is no longer among the ledger's files (deleted
    /// or compressed away): the caller finishes it and re-locates.
    CurrentGone,
}

/// Where reading resumes: a file and the offset just after a complete line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: FileId,
    pub path: PathBuf,
    pub offset: u64,
    /// The last up to [`TAIL_CHECK_BYTES`] bytes before `offset`.
    pub tail: Vec<u8>,
}

/// The outcome of opening a tailer at a position.
pub enum Opened {
    Ready(Box<Tailer>),
    /// The bytes behind the checkpoint changed, or the file shrank.
    Rewritten {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// The checkpoint's file is not among the ledger's files any more.
    FileMissing,
}

/// Settings the tailer needs: which files, and how to read them.
#[derive(Debug, Clone)]
pub struct TailConfig {
    pub live: PathBuf,
    pub policy: SignaturePolicy,
    pub keys: KeyRing,
    pub max_line_bytes: u64,
    /// The live path may be a symbolic link (rotated files never may).
    pub follow_symlink: bool,
    /// A plain ledger: its files' first seqs by fingerprint, from its
    /// mirror (`Some` of an empty map when the mirror is not at hand).
    pub plain_first_seqs: Option<std::sync::Arc<std::collections::HashMap<Fingerprint, u64>>>,
    /// A plain ledger: digests of the first lines of the files its mirror
    /// read (see [`Authenticity::plain_recorded_lines`]).
    pub plain_recorded_lines: Option<std::sync::Arc<std::collections::HashSet<String>>>,
}

impl TailConfig {
    pub fn auth(&self) -> Authenticity<'_> {
        Authenticity {
            policy: self.policy,
            keys: &self.keys,
            max_line_bytes: self.max_line_bytes,
            follow_symlink: self.follow_symlink,
            plain_first_seqs: self.plain_first_seqs.as_deref(),
            plain_recorded_lines: self.plain_recorded_lines.as_deref(),
        }
    }

    /// The ledger's files, oldest first.
    pub fn discover(&self) -> io::Result<Vec<LedgerFile>> {
        discover(&self.live, self.auth())
    }

    /// The seq of the last authentic event of the live file, read back
    /// from its end: the ledger's head as the files show it, without
    /// reading up to it.
    pub fn live_head(&self) -> Option<u64> {
        let Ok(Opening::File(file, meta)) = open_regular(&self.live, self.follow_symlink) else {
            return None;
        };
        backward::last_authentic(
            &file,
            meta.len(),
            self.policy,
            &self.keys,
            self.max_line_bytes,
        )
        .ok()
        .flatten()
        .map(|h| h.seq)
    }
}

struct OpenFile {
    file: File,
    id: FileId,
    path: PathBuf,
    framer: Framer,
    /// When the last read returned bytes: the lines it completed were
    /// first seen on disk then (the start of the end-to-end latency).
    read_at: Instant,
    /// Whether any line of this file was returned (only then can a
    /// checkpoint fall in it, and its handle be needed once it is done).
    returned_lines: bool,
    /// How much the next read asks for: doubled while reads fill what they
    /// asked (a backlog), back to [`MIN_READ`] when one does not (the
    /// end: a live ledger's new line needs a few KiB of buffer, not a
    /// catch-up's 256 KiB, and a thousand ledgers each holding one add up).
    read_size: usize,
}

impl OpenFile {
    fn new(file: File, id: FileId, path: PathBuf, offset: u64, max_line_bytes: u64) -> OpenFile {
        OpenFile {
            file,
            id,
            path,
            framer: Framer::new(offset, max_line_bytes),
            read_at: Instant::now(),
            returned_lines: false,
            read_size: MIN_READ,
        }
    }
}

/// Reads complete lines across a ledger's files in order.
pub struct Tailer {
    files: Vec<LedgerFile>,
    /// Index in `files` of the file being read.
    index: usize,
    current: Option<OpenFile>,
    max_line_bytes: u64,
    /// Files left behind with bytes after their last LF (path, bytes).
    abandoned: Vec<(PathBuf, u64)>,
    /// The next file's name no longer names it: discover again.
    stale: bool,
    /// Files read to their end whose lines may still be in flight (read
    /// ahead, not yet placed): a checkpoint may fall in them, and the tail
    /// bytes behind it are read through these handles. The shipper
    /// releases them as placing moves on ([`Tailer::release_before`]), so a
    /// rotated file that is deleted does not stay open.
    finished: std::collections::VecDeque<(FileId, PathBuf, File)>,
    /// Reading ahead stopped at the end of a file because
    /// [`MAX_FINISHED_OPEN`] finished files are held: it goes on once the
    /// lines in flight are placed and their files released.
    paused: bool,
    /// Finished files are held at all (see [`Tailer::hold_finished_files`]).
    hold_finished: bool,
}

/// At most this many finished files are held open while reading runs
/// ahead: a bound on descriptors whatever the number of rotated files.
pub const MAX_FINISHED_OPEN: usize = 64;

impl Tailer {
    /// A tailer over `files` (oldest first), from the start of the first,
    /// or from `position` when given.
    pub fn open(
        files: Vec<LedgerFile>,
        position: Option<&Position>,
        max_line_bytes: u64,
    ) -> io::Result<Opened> {
        let (index, offset) = match position {
            None => (0, 0),
            Some(pos) => {
                let Some(index) = files.iter().position(|f| pos.file.identifies(&f.id)) else {
                    return Ok(Opened::FileMissing);
                };
                (index, pos.offset)
            }
        };
        let mut tailer = Tailer {
            files,
            index,
            current: None,
            max_line_bytes,
            abandoned: Vec::new(),
            stale: false,
            finished: std::collections::VecDeque::new(),
            paused: false,
            hold_finished: false,
        };
        if tailer.files.is_empty() {
            return Ok(Opened::Ready(Box::new(tailer)));
        }
        let path = tailer.files[index].path.clone();
        let Some(mut file) = identity::reopen(&path, &tailer.files[index].id)? else {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                format!("{} was renamed while being opened", path.display()),
            ));
        };
        let len = file.metadata()?.len();
        if let Some(pos) = position {
            if len < pos.offset {
                return Ok(Opened::Rewritten {
                    path,
                    offset: pos.offset,
                    detail: shrank(len, pos.offset),
                });
            }
            let now = read_tail(&file, pos.offset)?;
            if now != pos.tail {
                return Ok(Opened::Rewritten {
                    path,
                    offset: pos.offset,
                    detail: format!(
                        "the {} bytes before the checkpoint at {} changed",
                        pos.tail.len(),
                        pos.offset
                    ),
                });
            }
        }
        file.seek(SeekFrom::Start(offset))?;
        let id = tailer.files[index].id;
        tailer.current = Some(OpenFile::new(file, id, path, offset, max_line_bytes));
        Ok(Opened::Ready(Box::new(tailer)))
    }

    /// The next complete line and the file it is in, or `None` when every
    /// complete line on disk has been returned (or reading ahead is
    /// [`Tailer::paused`]).
    pub fn next_frame(&mut self) -> io::Result<Option<(FileId, Frame<'_>)>> {
        self.paused = false;
        loop {
            let Some(cur) = self.current.as_mut() else {
                return Ok(None);
            };
            if cur.framer.ready() {
                break;
            }
            let want = cur.read_size;
            let n = cur.file.read(cur.framer.spare(want))?;
            cur.read_size = if n >= want {
                (want * 2).min(READ_CHUNK)
            } else {
                MIN_READ
            };
            if n > 0 {
                cur.framer.filled(n);
                cur.read_at = Instant::now();
                if cur.id.fingerprint.is_none() {
                    self.learn_fingerprint()?;
                }
                continue;
            }
            // End of this file. A rotated file will not grow again: move on.
            if self.index + 1 >= self.files.len() {
                return Ok(None);
            }
            if self.hold_finished && self.finished.len() >= MAX_FINISHED_OPEN {
                self.paused = true;
                return Ok(None);
            }
            // The next file is opened by the name discovery saw; if that
            // name now belongs to another file (a renumbering rotation
            // moved it), stop here: `refresh` finds it again by identity.
            let next = &self.files[self.index + 1];
            let Some(file) = identity::reopen(&next.path, &next.id)? else {
                self.stale = true;
                return Ok(None);
            };
            let unfinished = cur.framer.unfinished_len();
            if unfinished > 0 {
                self.abandoned.push((cur.path.clone(), unfinished));
            }
            let opened = OpenFile::new(file, next.id, next.path.clone(), 0, self.max_line_bytes);
            self.index += 1;
            if let Some(done) = self.current.replace(opened) {
                // Kept open while its lines may be in flight: a checkpoint
                // may still fall in it (the shipper reads ahead of what it
                // has placed). A file that gave no line is never needed.
                if done.returned_lines && self.hold_finished {
                    self.finished.push_back((done.id, done.path, done.file));
                }
            }
        }
        // Borrowed only here, after the loop: the frame lends from the framer.
        Ok(self.current.as_mut().and_then(|cur| {
            cur.returned_lines = true;
            cur.framer.next_frame().map(|f| (cur.id, f))
        }))
    }

    /// The file being read had no first line when it was opened: now that
    /// bytes arrived, its fingerprint may be known (the rows of its lines
    /// carry it).
    fn learn_fingerprint(&mut self) -> io::Result<()> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        if let Some(fp) = identity::fingerprint_of(&cur.file)? {
            cur.id.fingerprint = Some(fp);
            if let Some(f) = self.files.get_mut(self.index) {
                f.id.fingerprint = Some(fp);
            }
        }
        Ok(())
    }

    /// Keeps finished files open while their lines may be in flight, for
    /// [`Tailer::position_for`]: a reader that places lines after reading
    /// ahead (the shipper) needs it, and releases them as it goes
    /// ([`Tailer::release_before`]); one that handles each line at once
    /// does not, and its finished files are closed as soon as they end.
    pub fn hold_finished_files(&mut self) {
        self.hold_finished = true;
    }

    /// True when the last [`Tailer::next_frame`] stopped at the end of a
    /// file only because too many finished files are held open.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Closes the finished files read before `file` (the file of the last
    /// line placed): no checkpoint can fall in them any more.
    pub fn release_before(&mut self, file: FileId) {
        match self
            .finished
            .iter()
            .position(|(id, _, _)| id.same_inode(&file))
        {
            Some(i) => drop(self.finished.drain(..i)),
            None if self
                .current
                .as_ref()
                .is_some_and(|c| c.id.same_inode(&file)) =>
            {
                self.finished.clear()
            }
            None => {}
        }
    }

    /// Closes every finished file: everything read was placed and
    /// committed, so only the file being read can hold the next checkpoint.
    pub fn release_finished(&mut self) {
        self.finished.clear();
        // Caught up: a catch-up's large buffer is not kept while waiting.
        if let Some(cur) = &mut self.current {
            cur.framer.trim(4 * MIN_READ);
        }
    }

    /// Finished files held open (for tests and metrics).
    pub fn finished_open(&self) -> usize {
        self.finished.len()
    }

    /// Where reading would resume: just after the last line returned.
    pub fn position(&self) -> Option<Position> {
        let cur = self.current.as_ref()?;
        self.position_at(cur.framer.position())
    }

    /// A position in the file being read at `offset`, which must be the
    /// start of a line already returned (a halt keeps the checkpoint before
    /// its line, so the line is judged again on restart).
    pub fn position_at(&self, offset: u64) -> Option<Position> {
        let cur = self.current.as_ref()?;
        Some(Position {
            file: cur.id,
            path: cur.path.clone(),
            offset,
            tail: read_tail(&cur.file, offset).unwrap_or_default(),
        })
    }

    /// When the bytes of the line last returned were read.
    pub fn read_at(&self) -> Option<Instant> {
        self.current.as_ref().map(|c| c.read_at)
    }

    /// A position at `offset` (the start or end of a line already
    /// returned) in the file `file`, which is the file being read or one
    /// read before it: the checkpoint of a batch whose last line is behind
    /// lines already read ahead.
    pub fn position_for(&self, file: FileId, offset: u64) -> io::Result<Option<Position>> {
        // Within one tailer an inode names one file: a held file cannot be
        // deleted and its number reused while its handle is open. The
        // identity recorded is the one known now (a file's fingerprint may
        // have been learnt after a blank first line was returned).
        let (id, path, handle) = match self.current.as_ref().filter(|c| c.id.same_inode(&file)) {
            Some(cur) => (cur.id, &cur.path, &cur.file),
            None => match self
                .finished
                .iter()
                .rev()
                .find(|(id, _, _)| id.same_inode(&file))
            {
                Some((id, path, handle)) => (*id, path, handle),
                None => return Ok(None),
            },
        };
        Ok(Some(Position {
            file: id,
            path: path.clone(),
            offset,
            tail: read_tail(handle, offset)?,
        }))
    }

    /// The path of a file being read or read recently, as last known.
    pub fn path_of(&self, file: FileId) -> Option<&Path> {
        if let Some(cur) = self.current.as_ref().filter(|c| c.id.same_inode(&file)) {
            return Some(&cur.path);
        }
        self.finished
            .iter()
            .find(|(id, _, _)| id.same_inode(&file))
            .map(|(_, p, _)| p.as_path())
            .or_else(|| {
                self.files
                    .iter()
                    .find(|f| f.id.same_inode(&file))
                    .map(|f| f.path.as_path())
            })
    }

    /// Path of the file being read.
    pub fn current_path(&self) -> Option<&Path> {
        self.current.as_ref().map(|c| c.path.as_path())
    }

    /// Bytes on disk not yet returned as complete lines (the lag), as of
    /// the last discovery.
    pub fn remaining_bytes(&self) -> u64 {
        let Some(cur) = &self.current else { return 0 };
        let here = self.files[self.index]
            .len
            .saturating_sub(cur.framer.position());
        here + self.files[self.index + 1..]
            .iter()
            .map(|f| f.len)
            .sum::<u64>()
    }

    /// Files whose last bytes were an unfinished line: those left behind
    /// and the one being read.
    pub fn unfinished_tails(&self) -> Vec<(PathBuf, u64)> {
        let mut out = self.abandoned.clone();
        if let Some(cur) = &self.current {
            let n = cur.framer.unfinished_len();
            if n > 0 {
                out.push((cur.path.clone(), n));
            }
        }
        out
    }

    pub fn files(&self) -> &[LedgerFile] {
        &self.files
    }

    /// Called when [`Tailer::next_frame`] returns `None`: has the ledger
    /// rotated? A stat of the live path when nothing changed; a new
    /// discovery when the path names another file (or a file to read next
    /// was renamed). `head_seq` is the last authentic seq read: the files
    /// to read next are those that can hold later events (see
    /// [`resume_order`]), under the names they have now.
    pub fn refresh(&mut self, config: &TailConfig, head_seq: Option<u64>) -> io::Result<Refreshed> {
        let Some(cur) = &self.current else {
            return Ok(Refreshed::Unchanged);
        };
        if !self.stale {
            let live = match std::fs::metadata(&config.live) {
                Ok(meta) if meta.is_file() => FileId::of(&meta),
                // Renamed away and not created again yet: keep reading what we have.
                _ => return Ok(Refreshed::Unchanged),
            };
            if self.files.last().is_some_and(|f| f.id.same_inode(&live)) {
                return Ok(Refreshed::Unchanged);
            }
        }
        self.stale = false;
        let files = config.discover()?;
        if !files.iter().any(|f| f.id.may_be(&cur.id)) {
            return Ok(Refreshed::CurrentGone);
        }
        let next = resume_order(files, cur.id, head_seq);
        let more = next.len() > 1;
        self.files = next;
        self.index = 0;
        // Discovery may have read the fingerprint of a file whose first
        // line the tailer has not reached yet.
        if let (Some(cur), Some(first)) = (self.current.as_mut(), self.files.first()) {
            if cur.id.fingerprint.is_none() {
                cur.id = first.id;
            }
        }
        Ok(if more {
            Refreshed::MoreFiles
        } else {
            Refreshed::Unchanged
        })
    }

    /// Checks, through the open handle, that the committed `position` still
    /// matches the file: not shrunk, the bytes before it unchanged. `Some`
    /// names what changed (the ledger is `rewritten`).
    pub fn changed_behind(&self, position: &Position) -> io::Result<Option<String>> {
        let Some(cur) = self
            .current
            .as_ref()
            .filter(|c| position.file.identifies(&c.id) || c.id.identifies(&position.file))
        else {
            return Ok(None);
        };
        let len = cur.file.metadata()?.len();
        if len < position.offset {
            return Ok(Some(shrank(len, position.offset)));
        }
        if read_tail(&cur.file, position.offset)? != position.tail {
            return Ok(Some(format!(
                "the {} bytes before the checkpoint at {} changed",
                position.tail.len(),
                position.offset
            )));
        }
        Ok(None)
    }

    /// Complete-line bytes on disk not yet returned (the lag), from fresh
    /// stats; an unfinished last line is not counted.
    pub fn lag_bytes(&self) -> u64 {
        let Some(cur) = &self.current else { return 0 };
        let here = cur
            .file
            .metadata()
            .map(|m| m.len())
            .unwrap_or(0)
            .saturating_sub(cur.framer.position() + cur.framer.unfinished_len());
        let later: u64 = self.files[self.index + 1..]
            .iter()
            .map(|f| std::fs::metadata(&f.path).map_or(f.len, |m| m.len()))
            .sum();
        here + later
    }
}

/// Why a file that shrank below the checkpoint halts, and the likely
/// cause when it is empty: logrotate's `copytruncate` (or `> file`).
pub fn shrank(len: u64, checkpoint: u64) -> String {
    let mut detail = format!("file shrank to {len} bytes, below the checkpoint at {checkpoint}");
    if len == 0 {
        detail.push_str(
            "; a live file cut to 0 bytes is almost always logrotate's copytruncate: put its copy back beside the ledger, uncompressed and named <ledger>.<something>, and restart (better: rotate with rename, not copytruncate)",
        );
    }
    detail
}
