//! The tailer: owns the ledger files (read-only) and their byte offsets.
//!
//! It yields complete lines in chain order across the rotated files of a
//! ledger, from a checkpoint [`Position`], and reports a checkpoint that no
//! longer matches the file (`rewritten`) as a value. It never judges what a
//! line means (except to order rotated files by their first event), never
//! writes SQL and never records metrics.

pub mod identity;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use identity::{discover, Authenticity, FileId, LedgerFile};

use crate::ledger::frame::{Frame, Framer};
use crate::ledger::{authenticate, Head, KeyRing, SignaturePolicy};

/// How many bytes before a checkpoint's offset are kept to notice that the
/// file was rewritten under us.
pub const TAIL_CHECK_BYTES: u64 = 64;

/// Size of one read.
const READ_CHUNK: usize = 256 * 1024;

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
    Ready(Tailer),
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
}

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
        };
        if tailer.files.is_empty() {
            return Ok(Opened::Ready(tailer));
        }
        let path = tailer.files[index].path.clone();
        let mut file = File::open(&path)?;
        let len = file.metadata()?.len();
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
        });
        Ok(Opened::Ready(tailer))
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
                continue;
            }
            // End of this file. A rotated file will not grow again: move on.
            if self.index + 1 >= self.files.len() {
                return Ok(None);
            }
            let unfinished = cur.framer.unfinished_len();
            if unfinished > 0 {
                self.abandoned.push((cur.path.clone(), unfinished));
            }
            self.index += 1;
            let next = &self.files[self.index];
            self.current = Some(OpenFile {
                file: File::open(&next.path)?,
                id: next.id,
                path: next.path.clone(),
                framer: Framer::new(0, self.max_line_bytes),
            });
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
