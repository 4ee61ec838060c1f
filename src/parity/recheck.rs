//! `run`'s periodic parity check: every mirrored row against the line at
//! its file and offset, paced, in short read transactions, across
//! rotations that happen while it runs.

use super::Parity;
use crate::audit::{ChainWalk, RowCheck};
use crate::config::LedgerSettings;
use crate::ledger::authenticate;
use crate::mirror::{Mirror, MirrorError, StoredEvent};
use crate::tail::{self, FileId, LedgerFile};

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
enum Found {
    /// The complete line at the row's offset (without its LF).
    Line(std::path::PathBuf),
    /// The file holds no complete line at that offset any more.
    NoLine(std::path::PathBuf),
    /// No file of the ledger is the row's file.
    FileGone,
}

/// The ledger's files for a check that may last long (it is paced): a
/// row's file is found by its recorded identity and opened by its name,
/// with the identity checked on the handle; when a rotation renamed it
/// meanwhile, the files are discovered again and it is found under its new
/// name. Lines are read forward through one buffered handle at a time.
struct LineSource<'a> {
    ledger: &'a LedgerSettings,
    files: Vec<LedgerFile>,
    /// Recorded file ids already looked for after a new discovery.
    rediscovered: std::collections::HashSet<String>,
    reader: Option<LineReader>,
}

impl LineSource<'_> {
    fn discover(&mut self) -> Result<(), RecheckError> {
        self.files = self
            .ledger
            .tail_config()
            .discover()
            .map_err(|e| RecheckError::Io {
                path: self.ledger.path.display().to_string(),
                source: e,
            })?;
        Ok(())
    }

    /// The seq of the oldest authentic event on disk.
    fn oldest_on_disk(&self) -> Option<u64> {
        self.files.iter().filter_map(|f| f.first_seq).min()
    }

    /// Reads the line of `row` into `buf`.
    fn line_of(&mut self, row: &StoredEvent, buf: &mut Vec<u8>) -> Result<Found, RecheckError> {
        let Ok(recorded) = row.file_id.parse::<FileId>() else {
            return Ok(Found::FileGone);
        };
        loop {
            let file = tail::find_file(&self.files, &recorded).cloned();
            let reader = match file {
                Some(f) if self.reader.as_ref().is_some_and(|r| r.id == f.id) => {
                    self.reader.as_mut()
                }
                Some(f) => {
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
                return Ok(Found::FileGone);
            };
            let complete = r
                .line_at(row.file_offset, self.ledger.max_line_bytes, buf)
                .map_err(|e| RecheckError::Io {
                    path: r.path.display().to_string(),
                    source: e,
                })?;
            let path = r.path.clone();
            return Ok(if complete {
                Found::Line(path)
            } else {
                Found::NoLine(path)
            });
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

/// The periodic parity check of `run` (contract §5): every mirrored row up
/// to the head recorded at the start is set against the line it came from
/// (its file and offset), so a line altered after it was mirrored is
/// `mismatched`, a row whose file is gone is `missing_in_jsonl` (or
/// archived, when older than every file on disk), a gap in the rows up to
/// the head is `missing_in_sqlite`, and a row that fails the audit from
/// its columns (shape, hash, link; its signature too when no line on disk
/// vouches for it) is `mismatched`.
///
/// Memory is bounded (rows are read in short read transactions of a few
/// thousand, so the shipper's writes and WAL checkpoints go on), and
/// `pace(bytes)` is called after every row with the bytes read for it (its
/// line and its row): it sleeps to bound the rate and returns `false` to
/// abandon the check (`Ok(None)`).
pub fn recheck(
    ledger: &LedgerSettings,
    mirror: &Mirror,
    pace: &mut dyn FnMut(u64) -> bool,
) -> Result<Option<Parity>, RecheckError> {
    let mut source = LineSource {
        ledger,
        files: Vec::new(),
        rediscovered: std::collections::HashSet::new(),
        reader: None,
    };
    source.discover()?;
    let state = mirror.state(&ledger.name)?;
    let mut walk = ChainWalk::new(ledger, state.as_ref());
    let Some(head) = walk.head() else {
        return Ok(Some(Parity::default()));
    };
    let mut p = Parity::default();
    let mut line = Vec::new();
    let mut scratch = Vec::new();
    let mut from = 0u64;
    while from <= head.seq {
        let rows = mirror.events_from(&ledger.name, from, 2048)?;
        let Some(last) = rows.last() else { break };
        from = last.seq.saturating_add(1);
        for row in rows {
            if row.fault.is_none() && row.seq > head.seq {
                continue; // committed after the check began
            }
            let found = if row.fault.is_some() {
                Found::FileGone
            } else {
                source.line_of(&row, &mut line)?
            };
            let read = match &found {
                Found::Line(_) => line.len() as u64 + 1,
                _ => 0,
            };
            if !pace(read + row_bytes(&row)) {
                return Ok(None);
            }
            // What the line on disk says of the row, if there is one.
            let (line_problem, vouched) = match found {
                Found::Line(path) => {
                    match authenticate(&line, crate::ledger::SignaturePolicy::Off, &ledger.keys, &mut scratch) {
                        Err(refusal) => (
                            Some(format!(
                                "the line at {}:{} is now {}: {}",
                                path.display(),
                                row.file_offset,
                                refusal.verdict,
                                refusal.detail
                            )),
                            false,
                        ),
                        Ok(ev) if ev.seq != row.seq || ev.hash.to_hex() != row.hash || ev.sig != row.sig => (
                            Some(format!(
                                "the line at {}:{} now holds seq {} hash {}, the mirror seq {} hash {}",
                                path.display(),
                                row.file_offset,
                                ev.seq,
                                ev.hash,
                                row.seq,
                                row.hash
                            )),
                            false,
                        ),
                        Ok(_) => (None, true),
                    }
                }
                Found::NoLine(path) => {
                    p.gone(
                        row.seq,
                        format!(
                            "{} holds no line at offset {} any more",
                            path.display(),
                            row.file_offset
                        ),
                    );
                    (None, false)
                }
                Found::FileGone => {
                    if row.fault.is_none() && source.oldest_on_disk().is_none_or(|o| row.seq < o) {
                        p.archived += 1;
                    } else if row.fault.is_none() {
                        p.gone(
                            row.seq,
                            format!(
                                "its file {} is no longer among the ledger's files",
                                row.file_id
                            ),
                        );
                    }
                    (None, false)
                }
            };
            // A row its line vouches for was judged authentic when it was
            // mirrored: its shape, hash and links are audited here, its
            // signature is the line's. Any other row has only its columns.
            let problem = match walk.row(&row, !vouched, &mut p) {
                RowCheck::Later => continue,
                RowCheck::Unsound(why) => Some(why),
                RowCheck::Sound => None,
            };
            if let Some(why) = problem.or(line_problem) {
                p.mismatch(row.seq, why);
            }
        }
    }
    walk.finish(&mut p);
    Ok(Some(p))
}
