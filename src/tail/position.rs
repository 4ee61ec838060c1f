//! Places in a ledger's files, for opening a tailer elsewhere than where
//! it stopped: which files follow a given one, a recorded identity's file,
//! the line at an offset, the line of the head (after a checkpoint's file
//! is gone), and the bytes not yet read.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use super::{identity, FileId, LedgerFile, Opened, Position, Tailer, TAIL_CHECK_BYTES};
use crate::ledger::frame::{Frame, Framer};
use crate::ledger::{authenticate, Head, KeyRing, SignaturePolicy};

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
/// is kept. A plain ledger's files never read are kept too.
pub fn resume_order(
    files: Vec<LedgerFile>,
    current: FileId,
    head_seq: Option<u64>,
) -> Vec<LedgerFile> {
    let Some(at) = files.iter().position(|f| f.id.may_be(&current)) else {
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
            .enumerate()
            .filter(|(i, f)| {
                *i != at && (f.is_live || f.unread || f.first_seq.is_some_and(|s| s > floor))
            })
            .map(|(_, f)| f),
    );
    out
}

/// Bytes of `files` (in reading order) not yet read at `position`, with
/// the head at `head_seq`: the rest of its file and every file after it.
/// Without a position, all of them. When the position's file is not found
/// by its identity, the file that stands for it counts from the same
/// offset (see [`stand_in`]), and without one, the files that can only
/// hold later events. For the lag of a ledger that is not being read
/// (halted): fresh sizes, the unfinished last line counted too.
pub fn bytes_after(
    files: &[LedgerFile],
    position: Option<&Position>,
    head_seq: Option<u64>,
) -> u64 {
    let all = |from: usize| files[from..].iter().map(|f| f.len).sum::<u64>();
    let Some(pos) = position else {
        return all(0);
    };
    let found = match head_seq {
        // Without the mirror at hand, only a copy stands for a file (the
        // figure is an estimate of what waits).
        Some(head) => stand_in(files, &pos.file, Some(&pos.path), head, &|_| true).map(|(f, _)| f),
        None => find_file(files, &pos.file),
    };
    match found.and_then(|f| files.iter().position(|g| g.id == f.id)) {
        Some(i) if files[i].len >= pos.offset => files[i].len - pos.offset + all(i + 1),
        _ => files
            .iter()
            .filter(|f| f.first_seq.is_none_or(|s| head_seq.is_none_or(|h| s > h)))
            .map(|f| f.len)
            .sum(),
    }
}

/// A position at `offset` in the file `id` among `files` (the offset must
/// start a line): for resuming from a place other than the checkpoint,
/// such as the first line to judge again after a reload.
pub fn position_in(files: &[LedgerFile], id: FileId, offset: u64) -> io::Result<Option<Position>> {
    let Some(f) = find_file(files, &id) else {
        return Ok(None);
    };
    let Some(file) = identity::reopen(&f.path, &f.id)? else {
        return Ok(None);
    };
    if file.metadata()?.len() < offset {
        return Ok(None);
    }
    Ok(Some(Position {
        file: f.id,
        path: f.path.clone(),
        offset,
        tail: read_tail(&file, offset)?,
    }))
}

/// The file among `files` that a recorded identity (a checkpoint's, a
/// row's) names.
pub fn find_file<'f>(files: &'f [LedgerFile], recorded: &FileId) -> Option<&'f LedgerFile> {
    files.iter().find(|f| recorded.identifies(&f.id))
}

/// How a file on disk stands for a file recorded in the mirror (see
/// [`stand_in`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The recorded file itself: same inode, same first line.
    Same,
    /// Another inode with the same first line: a copy (logrotate's
    /// `copytruncate`, a restore from a backup, or an edited copy renamed
    /// over the original, as `sed -i` does).
    Copy,
    /// The same inode, whose first line changed, and that still holds
    /// mirrored events: edited in place.
    EditedInPlace,
    /// Another file now at the recorded path that holds mirrored events
    /// (an edited copy of a file whose first line was changed too).
    Replaced,
}

/// The file among `files` that now holds what the mirror recorded as
/// `recorded` (last read under `recorded_path`), whose events end at or
/// before `head_seq` (the head, or the seq before the next recorded
/// file's first); `None` when no file does (deleted, or archived).
///
/// A file is known by its inode and its first line, but both can change
/// while its bytes are what a reader cares about: a copy keeps the first
/// line under another inode, an edit of the first line keeps the inode.
/// So, in this order: the file itself; a file with the same first line;
/// the same inode with another first line; the file now at the recorded
/// path. The last three only when the file holds an authentic event at
/// or below `head_seq` (the recorded file's content): an inode number is
/// handed out again once a file is deleted, the live path names each new live file, and
/// such a new file holds only later events. The last two also only when
/// the mirror never read the file under the identity it has now
/// (`read_as_itself`): a file given a deleted file's inode number, whose
/// own events were mirrored since, is a file of its own, not the old one
/// edited.
pub fn stand_in<'f>(
    files: &'f [LedgerFile],
    recorded: &FileId,
    recorded_path: Option<&std::path::Path>,
    head_seq: u64,
    read_as_itself: &dyn Fn(&FileId) -> bool,
) -> Option<(&'f LedgerFile, Standing)> {
    if let Some(f) = find_file(files, recorded) {
        return Some((f, Standing::Same));
    }
    // Only a file that holds mirrored events: two files can share a first
    // line that is not an event (a header, garbage), and a new file holds
    // only later events.
    let holds_mirrored = |f: &LedgerFile| f.first_seq.is_some_and(|s| s <= head_seq);
    if let Some(fp) = recorded.fingerprint {
        if let Some(f) = files
            .iter()
            .find(|f| f.id.fingerprint == Some(fp) && holds_mirrored(f))
        {
            return Some((f, Standing::Copy));
        }
    }
    let edited = |f: &LedgerFile| holds_mirrored(f) && !read_as_itself(&f.id);
    if let Some(f) = files
        .iter()
        .find(|f| f.id.same_inode(recorded) && edited(f))
    {
        return Some((f, Standing::EditedInPlace));
    }
    let path = recorded_path?;
    files
        .iter()
        .find(|f| f.path == path && edited(f))
        .map(|f| (f, Standing::Replaced))
}

/// The line at `offset` of `file` (without its LF) and the position just
/// after it, when a complete line of at most `max_line_bytes` starts there.
pub fn line_at(
    file: &LedgerFile,
    offset: u64,
    max_line_bytes: u64,
) -> io::Result<Option<(Vec<u8>, Position)>> {
    let Some(mut handle) = identity::reopen(&file.path, &file.id)? else {
        return Ok(None);
    };
    handle.seek(SeekFrom::Start(offset))?;
    let mut framer = Framer::new(offset, max_line_bytes);
    loop {
        if let Some(frame) = framer.next_frame() {
            let Frame::Line { offset: at, bytes } = frame else {
                return Ok(None);
            };
            let (line, end) = (bytes.to_vec(), at + bytes.len() as u64 + 1);
            return Ok(Some((
                line,
                Position {
                    file: file.id,
                    path: file.path.clone(),
                    offset: end,
                    tail: read_tail(&handle, end)?,
                },
            )));
        }
        let n = handle.read(framer.spare(64 * 1024))?;
        if n == 0 {
            return Ok(None);
        }
        framer.filled(n);
    }
}

/// The first `count` complete lines of `file` (without their LFs; a line
/// over `max_line_bytes` is left out), fewer when it has fewer.
pub fn first_lines(
    file: &LedgerFile,
    count: usize,
    max_line_bytes: u64,
) -> io::Result<Vec<Vec<u8>>> {
    match identity::reopen(&file.path, &file.id)? {
        Some(handle) => identity::first_lines_at(&handle, count, max_line_bytes),
        None => Ok(Vec::new()),
    }
}

/// The last up to [`TAIL_CHECK_BYTES`] bytes before `offset`.
pub(super) fn read_tail(file: &File, offset: u64) -> io::Result<Vec<u8>> {
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
