//! Parity: the ledger files judged from scratch, compared with the mirror.
//!
//! [`scan`] judges every line of a ledger's files in memory exactly as the
//! shipper would (same [`Chain`]), without a database; `verify` uses it.
//! [`compare`] then sets the files' chain against the mirror's rows:
//! events missing in SQLite, events missing in the JSONL (archived ones
//! excluded), and mismatched rows. [`recheck`] is `run`'s periodic check,
//! row by row against the line at its file and offset. Both walk the rows
//! with [`ChainWalk`] (the audit from the columns alone), and both look
//! only at the rows up to the head recorded when they started: a row
//! committed since then is not a difference.
//!
//! Memory is bounded whatever the ledger's length: the chain's hashes (for
//! duplicate/fork decisions and the merge against the mirror) and the
//! `id`s seen (to warn about reuse) spill to temporary files
//! ([`spill`]); the report keeps the first [`MAX_PROBLEMS`] refused lines
//! and the first [`MAX_REUSES`] reused ids, and counts all of them.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use serde::Serialize;

mod recheck;
mod spill;
mod walk;

pub use recheck::{recheck, recheck_since, reconcile, Checked, RecheckError, FULL_EVERY};
pub use spill::HashColumn;
pub use walk::{ChainWalk, RowCheck};

/// The `meta` key under which `run` keeps where a ledger's periodic
/// parity check stands ([`Checked::to_text`]).
pub fn state_key(ledger: &str) -> String {
    format!("parity:{ledger}")
}

/// Refused lines the report lists (all are counted).
pub const MAX_PROBLEMS: usize = 1000;
/// Reused ids the report lists (all are counted).
pub const MAX_REUSES: usize = 100;

use crate::config::LedgerSettings;
use crate::ledger::frame::Frame;
use crate::ledger::{Chain, Examined, Hash, Head, LineJudgement, Verdict};
use crate::mirror::{Mirror, MirrorError, StoredEvent};
use crate::tail::{Opened, Tailer};

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
#[derive(Debug, Default)]
pub struct Scan {
    pub files: Vec<FileSummary>,
    pub counts: BTreeMap<Verdict, u64>,
    pub blank: u64,
    /// The first [`MAX_PROBLEMS`] refused lines, in file order, and the
    /// halting one (always listed, last).
    pub problems: Vec<Problem>,
    /// Every refused line, the halting one included.
    pub problems_total: u64,
    pub halt: Option<Problem>,
    pub head: Option<Head>,
    pub anchor: Option<Head>,
    /// Hashes of the chain from the anchor to the head.
    pub chain: HashColumn,
    /// The earliest [`MAX_REUSES`] later uses of an id, by seq.
    pub id_reuse: Vec<IdReuse>,
    pub id_reuse_total: u64,
}

impl Scan {
    pub fn hash_at(&mut self, seq: u64) -> std::io::Result<Option<Hash>> {
        self.chain.get(seq)
    }

    /// Every line authentic and in the chain (blank lines aside).
    pub fn is_clean(&self) -> bool {
        self.problems_total == 0 && self.halt.is_none()
    }
}

/// Judges every line of the ledger's files from the start, in memory.
pub fn scan(ledger: &LedgerSettings) -> std::io::Result<Scan> {
    let files = ledger.tail_config().discover()?;
    let mut out = Scan::default();
    // By inode: a file that had no first line when it was discovered gets
    // its fingerprint while it is read.
    let index_of: HashMap<(u64, u64), usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| ((f.id.dev, f.id.ino), i))
        .collect();
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
        ledger.keys.clone(),
        ledger.rules,
        ledger.max_line_bytes,
    );
    let mut ids = spill::IdReuseFinder::default();
    while let Some((file, frame)) = tailer.next_frame()? {
        let Some(summary) = index_of
            .get(&(file.dev, file.ino))
            .and_then(|&i| out.files.get_mut(i))
        else {
            continue; // cannot happen: the tailer reads only these files
        };
        summary.lines += 1;
        let line_no = summary.lines;
        let path = summary.path.clone();
        let (offset, length) = (frame.offset(), frame.length());
        let refusal = judge_frame(frame, ledger, &mut chain, &mut out, &mut ids)?;
        if let Some((verdict, detail, seq)) = refusal {
            let problem = Problem {
                file: path,
                line: line_no,
                offset,
                length,
                seq,
                verdict: verdict.as_str().to_owned(),
                detail,
            };
            if out.note_problem(verdict, problem) {
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
    let reuses = ids.finish(MAX_REUSES)?;
    out.id_reuse_total = reuses.total;
    out.id_reuse = reuses
        .first
        .into_iter()
        .map(|r| IdReuse {
            id: r.id,
            seq: r.seq,
            first_seq: r.first_seq,
        })
        .collect();
    Ok(out)
}

/// A refused line: (verdict, detail, seq).
type Refused = (Verdict, String, Option<u64>);

/// One frame judged in order; a mirrored event is added to the scan's
/// chain and ids, a refusal returned.
fn judge_frame(
    frame: Frame<'_>,
    ledger: &LedgerSettings,
    chain: &mut Chain,
    out: &mut Scan,
    ids: &mut spill::IdReuseFinder,
) -> std::io::Result<Option<Refused>> {
    let length = frame.length();
    let bytes = match frame {
        Frame::TooLong { length, .. } => {
            let detail = format!("{length} bytes > {}", ledger.max_line_bytes);
            return Ok(Some((Verdict::TooLong, detail, None)));
        }
        Frame::Line { bytes, .. } => bytes,
    };
    if let Some(fields) = &ledger.plain {
        // A plain line has no place of its own: whether it is a line the
        // sidecar adopts is all the files alone can say (each mirrored
        // row is compared with the line at its offset in `compare`).
        return Ok(
            match crate::ledger::examine_plain(
                bytes,
                length,
                ledger.max_line_bytes,
                fields,
                0,
                &mut Vec::new(),
            ) {
                Examined::Blank => {
                    out.blank += 1;
                    None
                }
                Examined::Refused(r) => Some((r.verdict, r.detail, None)),
                Examined::Adopted(_) | Examined::Authentic(_) => {
                    *out.counts.entry(Verdict::Mirrored).or_default() += 1;
                    None
                }
            },
        );
    }
    let mut lookup_failed = None;
    let judgement = chain.judge(bytes, length, |seq| {
        out.chain.get(seq).unwrap_or_else(|e| {
            lookup_failed = Some(e);
            None
        })
    });
    if let Some(e) = lookup_failed {
        return Err(e);
    }
    Ok(match judgement {
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
            out.chain.push(ev.seq, ev.hash)?;
            if let Some(id) = &ev.id {
                ids.push(id, ev.seq)?;
            }
            None
        }
        LineJudgement::Refused { refusal, .. } => {
            Some((refusal.verdict, refusal.detail, refusal.seq))
        }
    })
}

impl Scan {
    /// Counts a refused line and keeps it among the listed problems (the
    /// halting line always: it is the last). True: it halts the scan.
    fn note_problem(&mut self, verdict: Verdict, problem: Problem) -> bool {
        *self.counts.entry(verdict).or_default() += 1;
        self.problems_total += 1;
        if self.problems.len() < MAX_PROBLEMS || verdict.halts() {
            self.problems.push(problem.clone());
        }
        if verdict.halts() {
            self.halt = Some(problem);
        }
        verdict.halts()
    }
}

/// The files' chain holds `file_hash` at a row's seq: how it differs.
fn chain_differs(file_hash: Option<Hash>, row: &StoredEvent) -> Option<String> {
    (file_hash.map(|h| h.to_hex()).as_deref() != Some(row.hash.as_str())).then(|| {
        format!(
            "mirror holds {}, the ledger file {}",
            row.hash,
            file_hash.map_or_else(|| "nothing".into(), |h| h.to_hex())
        )
    })
}

/// A row the files' chain does not reach, looked for where it was read:
/// what differs there, if anything (archived and missing rows are
/// counted in `p`).
fn where_read(
    lines: &mut recheck::LineSource<'_>,
    row: &StoredEvent,
    ledger: &LedgerSettings,
    p: &mut Parity,
) -> Result<Option<String>, RecheckError> {
    let mut line = Vec::new();
    let (found, _) = lines.settled_line_of(row, &mut line)?;
    Ok(match found {
        recheck::Found::Line(path, _) => {
            let (why, _) = recheck::compare_line(&line, &path, row, ledger, &mut Vec::new());
            if let Some(why) = &why {
                p.rewritten(row.seq, &path, row.file_offset, why);
            }
            why
        }
        recheck::Found::NoLine(path) => {
            let why = recheck::cut_short(&path, row.file_offset);
            p.rewritten(row.seq, &path, row.file_offset, &why);
            Some(why)
        }
        recheck::Found::FileGone => {
            if lines.oldest_on_disk().is_none_or(|o| row.seq < o) {
                p.archived += 1;
            } else {
                p.gone(row.seq, "mirrored, but not in the ledger files".into());
            }
            None
        }
    })
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
    /// The first mirrored event whose line on disk changed: the ledger
    /// halts on it as `rewritten`.
    pub rewrite: Option<Rewrite>,
}

/// A mirrored event whose line on disk is no longer the line that was
/// mirrored: bytes already read were changed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rewrite {
    pub seq: u64,
    pub file: String,
    pub offset: u64,
    pub detail: String,
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

    /// Seqs of the recorded chain that the mirror should hold and does not.
    pub(crate) fn missing(&mut self, seqs: std::ops::Range<u64>) {
        self.missing_in_sqlite += seqs.end.saturating_sub(seqs.start);
        for s in seqs.take(10) {
            self.note(
                "missing_in_sqlite",
                s,
                "in the recorded chain (anchor to head), not in the mirror".into(),
            );
        }
    }

    fn mismatch(&mut self, seq: u64, detail: String) {
        self.mismatched += 1;
        self.note("mismatched", seq, detail);
    }

    /// Notes the first rewritten line (rows come in seq order).
    pub(crate) fn rewritten(&mut self, seq: u64, file: &std::path::Path, offset: u64, why: &str) {
        self.rewrite.get_or_insert_with(|| Rewrite {
            seq,
            file: file.display().to_string(),
            offset,
            detail: why.to_owned(),
        });
    }

    /// The examples with the changed lines first (the ones to act on).
    pub fn examples_by_weight(&self) -> Vec<&ParityProblem> {
        let mut out: Vec<&ParityProblem> = self.examples.iter().collect();
        out.sort_by_key(|e| e.kind != "mismatched");
        out
    }

    fn gone(&mut self, seq: u64, detail: String) {
        self.missing_in_jsonl += 1;
        self.note("missing_in_jsonl", seq, detail);
    }

    fn note(&mut self, kind: &'static str, seq: u64, detail: String) {
        if self.examples.len() < 100 {
            self.examples.push(ParityProblem { kind, seq, detail });
        }
    }
}

/// Why [`compare`] could not finish.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// The chain's hashes could not be read back from their temporary file.
    #[error("reading the ledger's chain back from its temporary file (in $TMPDIR)")]
    Spill(#[source] std::io::Error),
    /// A row's line could not be read where it was.
    #[error(transparent)]
    Lines(#[from] RecheckError),
}

/// Compares the files' chain (`scan`) with the mirror's rows of `ledger`,
/// and audits every row from its columns (signatures included). A row
/// the files' chain does not reach (the scan halted before it, or
/// anchored after it) is looked for where it was read: a line still
/// there is not missing, a changed one is `mismatched` with its seq, and
/// only a row whose file is truly gone is archived (or missing, when
/// later events are on disk).
pub fn compare(
    scan: &mut Scan,
    mirror: &Mirror,
    ledger: &LedgerSettings,
) -> Result<Parity, CompareError> {
    let mut p = Parity::default();
    let state = mirror.state(&ledger.name)?;
    let mut walk = ChainWalk::new(ledger, state.as_ref());
    let mirror_head = walk.head().map(|h| h.seq);
    let file_range = scan.anchor.zip(scan.head).map(|(a, h)| (a.seq, h.seq));
    let mut lines = recheck::LineSource::new(ledger, mirror, mirror_head.unwrap_or(0));
    lines.discover()?;
    let mut failed = None;
    mirror.for_each_event(&ledger.name, |row| {
        let check = walk.row(&row, true);
        if let Some(gap) = walk.take_gap() {
            p.missing(gap);
        }
        let problem = match check {
            RowCheck::Later => return ControlFlow::Continue(()),
            RowCheck::Unsound(why) => Some(why),
            RowCheck::Sound => None,
        };
        let file_problem = match file_range {
            Some((anchor, head)) if (anchor..=head).contains(&row.seq) => {
                // Rows come in seq order: the column is read back in
                // order, a block at a time (the merge).
                match scan.hash_at(row.seq) {
                    Ok(h) => chain_differs(h, &row),
                    Err(e) => {
                        failed = Some(CompareError::Spill(e));
                        return ControlFlow::Break(());
                    }
                }
            }
            _ if row.fault.is_some() => None,
            _ => match where_read(&mut lines, &row, ledger, &mut p) {
                Ok(why) => why,
                Err(e) => {
                    failed = Some(e.into());
                    return ControlFlow::Break(());
                }
            },
        };
        if let Some(why) = problem.or(file_problem) {
            p.mismatch(row.seq, why);
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(gap) = walk.finish() {
        p.missing(gap);
    }
    if let Some((anchor, head)) = file_range {
        // Events of the files beyond the mirror's head: not mirrored yet.
        let from = mirror_head.map_or(anchor, |m| (m + 1).max(anchor));
        if from <= head {
            p.pending = head - from + 1;
        }
    }
    Ok(p)
}
