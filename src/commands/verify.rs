//! `ledgertail verify [--config FILE] [--ledger FILE] [--db FILE] [--json]`
//!
//! Judges every line of each ledger's files from scratch, in memory, as the
//! shipper would; with `--db`, compares the result with the mirror (parity)
//! and recomputes every mirrored row's hash from its columns. Writes
//! nothing. 0 all clean, 1 a problem, 2 could not run.

use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;

use super::{exit, require_ledger_files, settings, EXIT_OK, EXIT_PROBLEMS};
use crate::cli::VerifyArgs;
use crate::mirror::{Access, Mirror};
use crate::parity::{self, FileSummary, HeadView, IdReuse, Parity, Problem};

#[derive(Debug, Serialize)]
struct LedgerReport {
    ledger: String,
    path: String,
    /// `sealed`, or `plain`: a JSON log the sidecar seals as it reads it
    /// (its lines hold no chain: `mirrored` counts the lines it adopts).
    format: &'static str,
    ok: bool,
    files: Vec<FileSummary>,
    counts: std::collections::BTreeMap<String, u64>,
    blank_lines: u64,
    head: Option<HeadView>,
    anchor: Option<HeadView>,
    halted: bool,
    halt: Option<Problem>,
    /// The first refused lines (parity::MAX_PROBLEMS), and the halting one.
    problems: Vec<Problem>,
    /// Every refused line, listed or not.
    problems_total: u64,
    /// The earliest reused ids (at most parity::MAX_REUSES).
    warnings: Vec<IdReuse>,
    /// Every reuse of an id, listed or not.
    warnings_total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    mirror: Option<MirrorReport>,
}

#[derive(Debug, Serialize)]
struct MirrorReport {
    db: String,
    found: bool,
    halted: bool,
    halt_verdict: Option<String>,
    head: Option<HeadView>,
    parity: Parity,
    /// (v1.2) The Merkle tree recomputed from the rows.
    tree: crate::tlog::audit::TreeAudit,
}

#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    ledgers: Vec<LedgerReport>,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.postgres {
        return super::verify_postgres::run(&args, url);
    }
    let settings = settings(&args.ledgers, args.db.clone())?;
    settings.only_this_host()?;
    require_ledger_files(&settings)?;
    // --db (or the config's db, with --config) turns on parity.
    let db = args
        .db
        .as_ref()
        .map(|_| settings.db.clone())
        .or_else(|| args.ledgers.config.as_ref().map(|_| settings.db.clone()))
        .filter(|p| args.db.is_some() || p.exists());
    let mirror = match &db {
        Some(path) => Some(Mirror::open(path, Access::ReadOnly)?),
        None => None,
    };
    let mut report = Report {
        ok: true,
        ledgers: Vec::new(),
    };
    for ledger in &settings.ledgers {
        let mut scan = parity::scan(ledger).with_context(|| {
            format!(
                "reading ledger `{}` ({})",
                ledger.name,
                ledger.path.display()
            )
        })?;
        let mut ok = scan.is_clean();
        let mirror_report = match &mirror {
            None => None,
            Some(m) => {
                let state = m.state(&ledger.name)?;
                let parity = parity::compare(&mut scan, m, ledger)?;
                let tree = crate::tlog::audit::audit(m, &ledger.name)?;
                let found = state.is_some();
                let halt = state.as_ref().and_then(|s| s.halt.clone());
                ok &= found && halt.is_none() && parity.holds() && tree.holds();
                Some(MirrorReport {
                    db: m.path().display().to_string(),
                    found,
                    halted: halt.is_some(),
                    halt_verdict: halt.map(|h| h.verdict.as_str().to_owned()),
                    head: state.and_then(|s| s.head).map(HeadView::from),
                    parity,
                    tree,
                })
            }
        };
        report.ok &= ok;
        report.ledgers.push(LedgerReport {
            ledger: ledger.name.clone(),
            path: ledger.path.display().to_string(),
            format: if ledger.plain.is_some() {
                "plain"
            } else {
                "sealed"
            },
            ok,
            files: scan.files.clone(),
            counts: scan
                .counts
                .iter()
                .map(|(v, n)| (v.as_str().to_owned(), *n))
                .collect(),
            blank_lines: scan.blank,
            head: scan.head.map(HeadView::from),
            anchor: scan.anchor.map(HeadView::from),
            halted: scan.halt.is_some(),
            halt: scan.halt.take(),
            problems: std::mem::take(&mut scan.problems),
            problems_total: scan.problems_total,
            warnings: std::mem::take(&mut scan.id_reuse),
            warnings_total: scan.id_reuse_total,
            mirror: mirror_report,
        });
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(exit(if report.ok { EXIT_OK } else { EXIT_PROBLEMS }))
}

fn print_problem(p: &Problem) {
    outln!(
        "{}:{}: offset {}{}: {}: {}",
        p.file,
        p.line,
        p.offset,
        p.seq.map(|s| format!(", seq {s}")).unwrap_or_default(),
        p.verdict,
        p.detail
    );
}

fn print_text(report: &Report) {
    for l in &report.ledgers {
        // Beyond the limit, the halting line is listed after the others.
        let (first, beyond) = l
            .problems
            .split_at(l.problems.len().min(parity::MAX_PROBLEMS));
        for p in first {
            print_problem(p);
        }
        let listed = l.problems.len() as u64;
        if l.problems_total > listed {
            outln!(
                "... and {} more refused lines (the first {} are listed; the counts by verdict are in --json)",
                l.problems_total - listed,
                parity::MAX_PROBLEMS
            );
        }
        for p in beyond {
            print_problem(p);
        }
        for w in &l.warnings {
            outln!(
                "warning: seq {} reuses id {:?} of seq {}",
                w.seq,
                w.id,
                w.first_seq
            );
        }
        if l.warnings_total > l.warnings.len() as u64 {
            outln!(
                "warning: ... and {} more reused ids (the earliest {} are listed)",
                l.warnings_total - l.warnings.len() as u64,
                l.warnings.len()
            );
        }
        for f in l.files.iter().filter(|f| f.unfinished_tail_bytes > 0) {
            outln!(
                "note: {} ends in an unfinished line ({} bytes; not judged)",
                f.path,
                f.unfinished_tail_bytes
            );
        }
        let mirrored = l.counts.get("mirrored").copied().unwrap_or(0);
        let head = l
            .head
            .as_ref()
            .map_or("none".into(), |h| format!("seq {}", h.seq));
        let anchor = l
            .anchor
            .as_ref()
            .map_or("none".into(), |h| format!("seq {}", h.seq));
        let events = if l.format == "plain" {
            format!(
                "{mirrored} line{} of a plain JSON log (sealed by the sidecar as it reads them)",
                if mirrored == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "{mirrored} event{} in the chain (anchor {anchor}, head {head})",
                if mirrored == 1 { "" } else { "s" }
            )
        };
        outln!(
            "{}: {} file{}, {events}, {} problem{}{}",
            l.ledger,
            l.files.len(),
            if l.files.len() == 1 { "" } else { "s" },
            l.problems_total,
            if l.problems_total == 1 { "" } else { "s" },
            match &l.halt {
                Some(h) => format!("; HALTS at {}:{} ({})", h.file, h.line, h.verdict),
                None => String::new(),
            }
        );
        if let Some(m) = &l.mirror {
            if !m.found {
                outln!(
                    "{}: the mirror {} holds no ledger of this name",
                    l.ledger,
                    m.db
                );
                continue;
            }
            for e in m.parity.examples_by_weight() {
                outln!(
                    "{}: parity: seq {}: {}: {}",
                    l.ledger,
                    e.seq,
                    e.kind,
                    e.detail
                );
            }
            for problem in &m.tree.problems {
                outln!("{}: tree: {problem}", l.ledger);
            }
            if m.tree.holds() && m.tree.size > 0 {
                outln!(
                    "{}: tree of {} leaves recomputed from the rows: matches the stored tree and {} signed checkpoint{}",
                    l.ledger,
                    m.tree.size,
                    m.tree.checkpoints_checked,
                    if m.tree.checkpoints_checked == 1 { "" } else { "s" }
                );
            }
            let p = &m.parity;
            outln!(
                "{}: parity with {}: missing in sqlite {}, missing in jsonl {}, mismatched {}, archived {}, not yet mirrored {}{}",
                l.ledger,
                m.db,
                p.missing_in_sqlite,
                p.missing_in_jsonl,
                p.mismatched,
                p.archived,
                p.pending,
                if m.halted {
                    format!("; the mirror is HALTED ({})", m.halt_verdict.as_deref().unwrap_or("?"))
                } else {
                    String::new()
                }
            );
        }
    }
    outln!("{}", if report.ok { "OK" } else { "PROBLEMS FOUND" });
}
