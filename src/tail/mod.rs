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

pub mod identity;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use identity::{discover, Authenticity, FileId, LedgerFile};

use crate::ledger::frame::{Frame, Framer};
use crate::ledger::{authenticate, Head, KeyRing, SignaturePolicy};

/// How many bytes before a checkpoint's offset are kept to notice that the
/// file was rewritten under us.
pub const TAIL_CHECK_BYTES: u64 = 64;

/// Size of one read.
const READ_CHUNK: usize = 256 * 1024;

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
}

impl TailConfig {
    fn auth(&self) -> Authenticity<'_> {
        Authenticity {
            policy: self.policy,
            keys: &self.keys,
            max_line_bytes: self.max_line_bytes,
        }
    }

    /// The ledger's files, oldest first.
    pub fn discover(&self) -> io::Result<Vec<LedgerFile>> {
        discover(&self.live, self.auth())
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
    /// The last files read to their end, still open.
    finished: std::collections::VecDeque<(FileId, PathBuf, File)>,
}

/// How many finished files stay open for [`Tailer::position_for`].
const FINISHED_KEPT: usize = 32;

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
                let Some(index) = files.iter().position(|f| f.id == pos.file) else {
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
        };
        if tailer.files.is_empty() {
            return Ok(Opened::Ready(Box::new(tailer)));
        }
        let path = tailer.files[index].path.clone();
        let mut file = File::open(&path)?;
        let meta = file.metadata()?;
        if FileId::of(&meta) != tailer.files[index].id {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                format!("{} was renamed while being opened", path.display()),
            ));
        }
        let len = meta.len();
        if let Some(pos) = position {
            if len < pos.offset {
                return Ok(Opened::Rewritten {
                    path,
                    offset: pos.offset,
                    detail: format!(
                        "file shrank to {len} bytes, below the checkpoint at {}",
                        pos.offset
                    ),
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
        tailer.current = Some(OpenFile {
            file,
            id: tailer.files[index].id,
            path,
            framer: Framer::new(offset, max_line_bytes),
            read_at: Instant::now(),
        });
        Ok(Opened::Ready(Box::new(tailer)))
    }

    /// The next complete line and the file it is in, or `None` when every
    /// complete line on disk has been returned.
    pub fn next_frame(&mut self) -> io::Result<Option<(FileId, Frame<'_>)>> {
        loop {
            let Some(cur) = self.current.as_mut() else {
                return Ok(None);
            };
            if cur.framer.ready() {
                break;
            }
            let n = cur.file.read(cur.framer.spare(READ_CHUNK))?;
            if n > 0 {
                cur.framer.filled(n);
                cur.read_at = Instant::now();
                continue;
            }
            // End of this file. A rotated file will not grow again: move on.
            if self.index + 1 >= self.files.len() {
                return Ok(None);
            }
            // The next file is opened by the name discovery saw; if that
            // name now belongs to another file (a renumbering rotation
            // moved it), stop here: `refresh` finds it again by identity.
            let next = &self.files[self.index + 1];
            let file = match File::open(&next.path) {
                Ok(f) if FileId::of(&f.metadata()?) == next.id => f,
                Ok(_) => {
                    self.stale = true;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.stale = true;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let unfinished = cur.framer.unfinished_len();
            if unfinished > 0 {
                self.abandoned.push((cur.path.clone(), unfinished));
            }
            let opened = OpenFile {
                file,
                id: next.id,
                path: next.path.clone(),
                framer: Framer::new(0, self.max_line_bytes),
                read_at: Instant::now(),
            };
            self.index += 1;
            if let Some(done) = self.current.replace(opened) {
                // Kept open a while: a checkpoint may still fall in it (the
                // shipper reads ahead of what it has committed).
                if self.finished.len() == FINISHED_KEPT {
                    self.finished.pop_front();
                }
                self.finished.push_back((done.id, done.path, done.file));
            }
        }
        // Borrowed only here, after the loop: the frame lends from the framer.
        Ok(self
            .current
            .as_mut()
            .and_then(|cur| cur.framer.next_frame().map(|f| (cur.id, f))))
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
        let (path, handle) = match self.current.as_ref().filter(|c| c.id == file) {
            Some(cur) => (&cur.path, &cur.file),
            None => match self.finished.iter().rev().find(|(id, _, _)| *id == file) {
                Some((_, path, handle)) => (path, handle),
                None => return Ok(None),
            },
        };
        Ok(Some(Position {
            file,
            path: path.clone(),
            offset,
            tail: read_tail(handle, offset)?,
        }))
    }

    /// The path of a file being read or read recently, as last known.
    pub fn path_of(&self, file: FileId) -> Option<&Path> {
        if let Some(cur) = self.current.as_ref().filter(|c| c.id == file) {
            return Some(&cur.path);
        }
        self.files
            .iter()
            .find(|f| f.id == file)
            .map(|f| f.path.as_path())
            .or_else(|| {
                self.finished
                    .iter()
                    .find(|(id, _, _)| *id == file)
                    .map(|(_, p, _)| p.as_path())
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
            if self.files.last().map(|f| f.id) == Some(live) {
                return Ok(Refreshed::Unchanged);
            }
        }
        self.stale = false;
        let files = config.discover()?;
        if !files.iter().any(|f| f.id == cur.id) {
            return Ok(Refreshed::CurrentGone);
        }
        let next = resume_order(files, cur.id, head_seq);
        let more = next.len() > 1;
        self.files = next;
        self.index = 0;
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
        let Some(cur) = self.current.as_ref().filter(|c| c.id == position.file) else {
            return Ok(None);
        };
        let len = cur.file.metadata()?.len();
        if len < position.offset {
            return Ok(Some(format!(
                "file shrank to {len} bytes, below the checkpoint at {}",
                position.offset
            )));
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

/// The files to read from the file `current` on, with the last authentic
/// seq read at `head_seq`: that file, then the rotated files that can only
/// hold later events (first authentic seq above the head), oldest first,
/// then the live file. Used when resuming at a checkpoint and after each
/// rotation.
///
/// Files are chosen by what they hold, not by identity alone: an inode
/// number is reused as soon as a rotated file is deleted, and a file with
/// no authentic event (empty, or garbage only) sorts first in discovery.
/// Such a rotated file is therefore not read again after start-up; its
/// lines hold nothing the chain needs. Before any authentic event was read
/// (`head_seq` is `None`), every file after `current` in discovery order
/// is kept.
pub fn resume_order(
    files: Vec<LedgerFile>,
    current: FileId,
    head_seq: Option<u64>,
) -> Vec<LedgerFile> {
    let Some(at) = files.iter().position(|f| f.id == current) else {
        return files;
    };
    let start = files[at].clone();
    // Files before `current` in the chain start at or below its first
    // event, even when the head lags behind lines read ahead.
    let Some(floor) = head_seq.max(start.first_seq) else {
        return files.into_iter().skip(at).collect();
    };
    if start.is_live {
        return vec![start];
    }
    let mut out = vec![start];
    out.extend(
        files
            .into_iter()
            .filter(|f| f.id != current && (f.is_live || f.first_seq.is_some_and(|s| s > floor))),
    );
    out
}

/// A position at `offset` in the file `id` among `files` (the offset must
/// start a line): for resuming from a place other than the checkpoint,
/// such as the first line to judge again after a reload.
pub fn position_in(files: &[LedgerFile], id: FileId, offset: u64) -> io::Result<Option<Position>> {
    let Some(f) = files.iter().find(|f| f.id == id) else {
        return Ok(None);
    };
    let file = File::open(&f.path)?;
    if file.metadata()?.len() < offset {
        return Ok(None);
    }
    Ok(Some(Position {
        file: id,
        path: f.path.clone(),
        offset,
        tail: read_tail(&file, offset)?,
    }))
}

/// The last up to [`TAIL_CHECK_BYTES`] bytes before `offset`.
fn read_tail(file: &File, offset: u64) -> io::Result<Vec<u8>> {
    let start = offset.saturating_sub(TAIL_CHECK_BYTES);
    let mut buf = vec![0u8; (offset - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

/// Finds the position just after the line holding `head`, for a checkpoint
/// whose file is gone (a ledger restored from a copy has new inodes).
/// Looks only in files whose first event is at or below the head.
pub fn locate_after_head(
    files: &[LedgerFile],
    head: &Head,
    policy: SignaturePolicy,
    keys: &KeyRing,
    max_line_bytes: u64,
) -> io::Result<Option<Position>> {
    let needle = head.hash.to_hex();
    let mut scratch = Vec::new();
    for f in files {
        if f.first_seq.is_none_or(|s| s > head.seq) {
            continue;
        }
        let Opened::Ready(mut t) = Tailer::open(vec![f.clone()], None, max_line_bytes)? else {
            continue;
        };
        let mut found = None;
        while let Some((_, frame)) = t.next_frame()? {
            let Frame::Line { bytes, .. } = frame else {
                continue;
            };
            if memchr::memmem::find(bytes, needle.as_bytes()).is_none() {
                continue;
            }
            if let Ok(ev) = authenticate(bytes, policy, keys, &mut scratch) {
                if ev.seq == head.seq && ev.hash == head.hash {
                    found = t.position();
                    break;
                }
            }
        }
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}
