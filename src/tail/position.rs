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
/// is kept.
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
            .filter(|(i, f)| *i != at && (f.is_live || f.first_seq.is_some_and(|s| s > floor)))
            .map(|(_, f)| f),
    );
    out
}

/// Complete-line bytes of `files` (in reading order) not yet read at
/// `position`: the rest of its file and every file after it. Without a
/// position, all of them. For the lag of a ledger that is not being read
/// (halted): fresh sizes, the unfinished last line counted too.
pub fn bytes_after(files: &[LedgerFile], position: Option<&Position>) -> u64 {
    let Some(pos) = position else {
        return files.iter().map(|f| f.len).sum();
    };
    match files.iter().position(|f| pos.file.identifies(&f.id)) {
        Some(i) => {
            files[i].len.saturating_sub(pos.offset)
                + files[i + 1..].iter().map(|f| f.len).sum::<u64>()
        }
        None => files.iter().map(|f| f.len).sum(),
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
