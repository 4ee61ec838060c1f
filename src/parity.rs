//! Parity: the ledger files judged from scratch, compared with the mirror.
//!
//! [`scan`] judges every line of a ledger's files in memory exactly as the
//! shipper would (same [`Chain`]), without a database; `verify` uses it,
//! and so will `run`'s periodic parity check. [`compare`] then sets the
//! files' chain against the mirror's rows: events missing in SQLite,
//! events missing in the JSONL (archived ones excluded), and mismatched
//! rows, including rows whose own columns no longer hash to their `hash`.
//!
//! Memory: the scan keeps 32 bytes per event of the chain (its hash, for
//! duplicate/fork decisions and parity) and the `id`s seen (to warn about
//! reuse): about 100 MB for a million events with ids.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use serde::Serialize;

use crate::config::LedgerSettings;
use crate::ledger::event::{hash_of_columns, Columns};
use crate::ledger::frame::Frame;
use crate::ledger::{authenticate, Chain, Hash, Head, KeyRing, LineJudgement, Verdict};
use crate::mirror::{Mirror, MirrorError};
use crate::tail::{FileId, Opened, Tailer};

/// One line that is not a mirrored link of the chain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based line number in its file.
    pub line: u64,
    pub offset: u64,
    pub length: u64,
    pub seq: Option<u64>,
    pub verdict: String,
    pub detail: String,
}

/// A file as the scan saw it.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub path: String,
    pub bytes: u64,
    pub first_seq: Option<u64>,
    pub lines: u64,
    /// Bytes after the last LF (an unfinished write: not a line).
    pub unfinished_tail_bytes: u64,
}

/// A mirrored event whose `id` an earlier event already used.
#[derive(Debug, Clone, Serialize)]
pub struct IdReuse {
    pub id: String,
    pub seq: u64,
    pub first_seq: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeadView {
    pub seq: u64,
    pub hash: String,
}

impl From<Head> for HeadView {
    fn from(h: Head) -> HeadView {
        HeadView {
            seq: h.seq,
            hash: h.hash.to_hex(),
        }
    }
}

/// The verdict on every line of a ledger's files.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub files: Vec<FileSummary>,
    pub counts: BTreeMap<Verdict, u64>,
    pub blank: u64,
    /// Every refused line, the halting one included, in file order.
    pub problems: Vec<Problem>,
    pub halt: Option<Problem>,
    pub head: Option<Head>,
    pub anchor: Option<Head>,
    /// Hashes of the chain from the anchor to the head.
    pub chain: Vec<Hash>,
    pub id_reuse: Vec<IdReuse>,
}

impl Scan {
    pub fn hash_at(&self, seq: u64) -> Option<Hash> {
        let anchor = self.anchor?.seq;
        let i = usize::try_from(seq.checked_sub(anchor)?).ok()?;
        self.chain.get(i).copied()
    }

    /// Every line authentic and in the chain (blank lines aside).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.halt.is_none()
    }
}

/// Judges every line of the ledger's files from the start, in memory.
pub fn scan(ledger: &LedgerSettings, keys: &KeyRing) -> std::io::Result<Scan> {
    let files = ledger.tail_config(keys).discover()?;
    let mut out = Scan::default();
    let index_of: HashMap<FileId, usize> =
        files.iter().enumerate().map(|(i, f)| (f.id, i)).collect();
    out.files = files
        .iter()
        .map(|f| FileSummary {
            path: f.path.display().to_string(),
            bytes: f.len,
            first_seq: f.first_seq,
            lines: 0,
            unfinished_tail_bytes: 0,
        })
        .collect();
    let Opened::Ready(mut tailer) = Tailer::open(files, None, ledger.max_line_bytes)? else {
        return Ok(out);
    };
    let mut chain = Chain::new(
        None,
        None,
        ledger.signatures,
        keys.clone(),
        ledger.rules,
        ledger.max_line_bytes,
    );
    let mut ids: HashMap<String, u64> = HashMap::new();
    while let Some((file, frame)) = tailer.next_frame()? {
        let Some(summary) = index_of.get(&file).and_then(|&i| out.files.get_mut(i)) else {
            continue; // cannot happen: the tailer reads only these files
        };
        summary.lines += 1;
        let line_no = summary.lines;
        let path = summary.path.clone();
        let (offset, length) = (frame.offset(), frame.length());
        let refusal = match frame {
            Frame::TooLong { length, .. } => Some((
                Verdict::TooLong,
                format!("{length} bytes > {}", ledger.max_line_bytes),
                None,
            )),
            Frame::Line { bytes, .. } => {
                let judgement = chain.judge(bytes, length, |seq| {
                    let anchor = out.anchor.map(|a| a.seq)?;
                    out.chain
                        .get(usize::try_from(seq.checked_sub(anchor)?).ok()?)
                        .copied()
                });
                match judgement {
                    LineJudgement::Blank => {
                        out.blank += 1;
                        None
                    }
                    LineJudgement::Mirrored(ev) => {
                        *out.counts.entry(Verdict::Mirrored).or_default() += 1;
                        out.anchor.get_or_insert(Head {
                            seq: ev.seq,
                            hash: ev.hash,
                        });
                        out.chain.push(ev.hash);
                        if let Some(id) = ev.id {
                            match ids.get(&id) {
                                Some(&first_seq) => out.id_reuse.push(IdReuse {
                                    id,
                                    seq: ev.seq,
                                    first_seq,
                                }),
                                None => {
                                    ids.insert(id, ev.seq);
                                }
                            }
                        }
                        None
                    }
                    LineJudgement::Refused { refusal, .. } => {
                        Some((refusal.verdict, refusal.detail, refusal.seq))
                    }
                }
            }
        };
        if let Some((verdict, detail, seq)) = refusal {
            *out.counts.entry(verdict).or_default() += 1;
            let problem = Problem {
                file: path,
                line: line_no,
                offset,
                length,
                seq,
                verdict: verdict.as_str().to_owned(),
                detail,
            };
            out.problems.push(problem.clone());
            if verdict.halts() {
                out.halt = Some(problem);
                break;
            }
        }
    }
    // After a halt the rest is not judged, so nothing is "unfinished".
    let tails = if out.halt.is_none() {
        tailer.unfinished_tails()
    } else {
        Vec::new()
    };
    for (path, bytes) in tails {
        let path = path.display().to_string();
        if let Some(f) = out.files.iter_mut().find(|f| f.path == path) {
            f.unfinished_tail_bytes = bytes;
        }
    }
    out.head = chain.head;
    Ok(out)
}

/// How the mirror compares with the files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Parity {
    /// In the files' chain, at or below the mirror's head, but not mirrored.
    pub missing_in_sqlite: u64,
    /// Mirrored, not archived, but not in the files' chain.
    pub missing_in_jsonl: u64,
    /// Mirrored with another hash than the files', or a row whose own
    /// columns do not hash to its `hash`.
    pub mismatched: u64,
    /// Mirrored events older than the oldest event on disk.
    pub archived: u64,
    /// In the files, beyond the mirror's head: not mirrored *yet* (lag).
    pub pending: u64,
    /// First examples of each kind, for the report.
    pub examples: Vec<ParityProblem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParityProblem {
    pub kind: &'static str,
    pub seq: u64,
    pub detail: String,
}

impl Parity {
    pub fn holds(&self) -> bool {
        self.missing_in_sqlite == 0 && self.missing_in_jsonl == 0 && self.mismatched == 0
    }

    /// Seqs of the files' chain that the mirror should hold and does not.
    fn missing(&mut self, seqs: std::ops::Range<u64>) {
        self.missing_in_sqlite += seqs.end.saturating_sub(seqs.start);
        for s in seqs.take(10) {
            self.note(
                "missing_in_sqlite",
                s,
                "in the ledger files, not in the mirror".into(),
            );
        }
    }

    fn note(&mut self, kind: &'static str, seq: u64, detail: String) {
        if self.examples.len() < 100 {
            self.examples.push(ParityProblem { kind, seq, detail });
        }
    }
}

/// Compares the files' chain (`scan`) with the mirror's rows of `ledger`.
pub fn compare(scan: &Scan, mirror: &Mirror, ledger: &str) -> Result<Parity, MirrorError> {
    let mut p = Parity::default();
    let mirror_head = mirror.state(ledger)?.and_then(|s| s.head).map(|h| h.seq);
    let file_range = scan.anchor.zip(scan.head).map(|(a, h)| (a.seq, h.seq));
    // Merge the two ordered sequences: the files' chain and the rows.
    let mut next_file_seq = file_range.map(|(a, _)| a);
    mirror.for_each_event(ledger, |row| {
        if let Some(why) = row_hash_problem(&row) {
            p.mismatched += 1;
            p.note("mismatched", row.seq, why);
            return ControlFlow::Continue(());
        }
        match file_range {
            Some((anchor, _)) if row.seq < anchor => p.archived += 1,
            Some((anchor, head)) if row.seq <= head => {
                p.missing(next_file_seq.unwrap_or(anchor)..row.seq);
                next_file_seq = Some(row.seq + 1);
                let file_hash = scan.hash_at(row.seq);
                if file_hash.map(|h| h.to_hex()) != Some(row.hash.clone()) {
                    p.mismatched += 1;
                    p.note(
                        "mismatched",
                        row.seq,
                        format!(
                            "mirror holds {}, the ledger file {}",
                            row.hash,
                            file_hash.map_or_else(|| "nothing".into(), |h| h.to_hex())
                        ),
                    );
                }
            }
            _ => {
                p.missing_in_jsonl += 1;
                p.note(
                    "missing_in_jsonl",
                    row.seq,
                    "mirrored, but not in the ledger files".into(),
                );
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some((anchor, head)) = file_range {
        // Seqs `from..=head` of the files had no row. Up to the mirror's
        // head they are missing; beyond it they are not mirrored yet.
        let from = next_file_seq.unwrap_or(anchor);
        let missing_to = mirror_head.map(|m| m.min(head)).filter(|&m| m >= from);
        if let Some(m) = missing_to {
            p.missing(from..m + 1);
        }
        let pending_from = missing_to.map_or(from, |m| m + 1);
        if pending_from <= head {
            p.pending = head - pending_from + 1;
        }
    }
    Ok(p)
}

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

/// The periodic parity check of `run` (contract §5): every mirrored row is
/// set against the line it came from (its file and offset), so a line
/// altered after it was mirrored is `mismatched`, a row whose file is gone
/// is `missing_in_jsonl` (or archived, when older than every file on disk),
/// a gap in the rows up to the head is `missing_in_sqlite`, and a row whose
/// own columns no longer hash to its `hash` is `mismatched`.
///
/// Memory is bounded (rows are read in short read transactions of a few
/// thousand, so the shipper's writes and WAL checkpoints go on), and
/// `pace(bytes)` is called after every line read: it sleeps to bound the
/// read rate and returns `false` to abandon the check (`Ok(None)`).
pub fn recheck(
    ledger: &LedgerSettings,
    keys: &KeyRing,
    mirror: &Mirror,
    pace: &mut dyn FnMut(u64) -> bool,
) -> Result<Option<Parity>, RecheckError> {
    let io_err = |path: &std::path::Path, source| RecheckError::Io {
        path: path.display().to_string(),
        source,
    };
    let files = ledger
        .tail_config(keys)
        .discover()
        .map_err(|e| io_err(&ledger.path, e))?;
    let by_id: HashMap<String, &crate::tail::LedgerFile> =
        files.iter().map(|f| (f.id.to_string(), f)).collect();
    let oldest_on_disk = files.iter().filter_map(|f| f.first_seq).min();
    let state = mirror.state(&ledger.name)?;
    let head = state.as_ref().and_then(|s| s.head).map(|h| h.seq);
    let anchor = state.as_ref().and_then(|s| s.anchor).map(|h| h.seq);

    let mut p = Parity::default();
    let mut reader: Option<LineReader> = None;
    let mut line = Vec::new();
    let mut scratch = Vec::new();
    let mut expected = anchor;
    let mut from = 0u64;
    loop {
        let rows = mirror.events_from(&ledger.name, from, 2048)?;
        let Some(last) = rows.last() else { break };
        from = last.seq + 1;
        for row in rows {
            if let Some(e) = expected.filter(|&e| row.seq > e) {
                p.missing(e..row.seq);
            }
            expected = Some(row.seq + 1);
            if let Some(why) = row_hash_problem(&row) {
                p.mismatched += 1;
                p.note("mismatched", row.seq, why);
                continue;
            }
            // A file whose first event comes after this row (or that holds
            // none) cannot hold its line: the row's file is gone and its
            // inode number was reused, or the file was rewritten.
            let file = by_id
                .get(&row.file_id)
                .filter(|f| f.first_seq.is_some_and(|first| first <= row.seq));
            let Some(file) = file else {
                if oldest_on_disk.is_none_or(|o| row.seq < o) {
                    p.archived += 1;
                } else {
                    p.missing_in_jsonl += 1;
                    p.note(
                        "missing_in_jsonl",
                        row.seq,
                        format!(
                            "its file {} is no longer among the ledger's files",
                            row.file_id
                        ),
                    );
                }
                continue;
            };
            if reader.as_ref().is_none_or(|r| r.id != file.id) {
                let f = std::fs::File::open(&file.path).map_err(|e| io_err(&file.path, e))?;
                reader = Some(LineReader {
                    id: file.id,
                    path: file.path.clone(),
                    reader: std::io::BufReader::with_capacity(256 * 1024, f),
                    pos: 0,
                });
            }
            let Some(r) = reader.as_mut() else { continue };
            let complete = r
                .line_at(row.file_offset, ledger.max_line_bytes, &mut line)
                .map_err(|e| io_err(&r.path, e))?;
            if !pace(line.len() as u64 + 1) {
                return Ok(None);
            }
            if !complete {
                p.missing_in_jsonl += 1;
                p.note(
                    "missing_in_jsonl",
                    row.seq,
                    format!(
                        "{} holds no line at offset {} any more",
                        r.path.display(),
                        row.file_offset
                    ),
                );
                continue;
            }
            let now = authenticate(
                &line,
                crate::ledger::SignaturePolicy::Off,
                keys,
                &mut scratch,
            );
            let why = match now {
                Err(refusal) => Some(format!(
                    "the line at {}:{} is now {}: {}",
                    r.path.display(),
                    row.file_offset,
                    refusal.verdict,
                    refusal.detail
                )),
                Ok(ev)
                    if ev.seq != row.seq || ev.hash.to_hex() != row.hash || ev.sig != row.sig =>
                {
                    Some(format!(
                        "the line at {}:{} now holds seq {} hash {}, the mirror seq {} hash {}",
                        r.path.display(),
                        row.file_offset,
                        ev.seq,
                        ev.hash,
                        row.seq,
                        row.hash
                    ))
                }
                Ok(_) => None,
            };
            if let Some(why) = why {
                p.mismatched += 1;
                p.note("mismatched", row.seq, why);
            }
        }
    }
    if let (Some(e), Some(h)) = (expected, head) {
        if h >= e {
            p.missing(e..h + 1);
        }
    }
    Ok(Some(p))
}

/// Why a row's own columns do not hash to its `hash`, if they do not.
fn row_hash_problem(row: &crate::mirror::StoredEvent) -> Option<String> {
    let cols = Columns {
        seq: row.seq,
        ts: &row.ts,
        event_type: &row.event_type,
        payload: &row.payload,
        extra: row.extra.as_deref(),
        prev_hash: row.prev_hash.as_deref(),
        id: row.id.as_deref(),
        key_id: row.key_id.as_deref(),
    };
    match hash_of_columns(&cols) {
        Ok(h) if h.to_hex() == row.hash => None,
        Ok(h) => Some(format!(
            "the row's columns hash to {h}, not to its hash {}",
            row.hash
        )),
        Err(e) => Some(e),
    }
}
