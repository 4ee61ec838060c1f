//! `ledgertail status [--db FILE | --config FILE] [--json]`
//!
//! Reads the mirror only (and stats the ledger files for the lag): per
//! ledger, its head, anchor, position, lag, halt and quarantine counts.
//! Always exits 0 when it could read the mirror.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::{exit, EXIT_OK};
use crate::cli::StatusArgs;
use crate::config::{LedgerSettings, Overrides, Settings, DEFAULT_MAX_LINE_BYTES};
use crate::ledger::{KeyRing, SignaturePolicy};
use crate::mirror::{Access, LedgerState, Mirror};
use crate::parity::HeadView;
use crate::tail::{bytes_after, discover, resume_order, Authenticity};

#[derive(Debug, Serialize)]
struct LedgerStatus {
    ledger: String,
    live_path: String,
    events: u64,
    head: Option<HeadView>,
    anchor: Option<HeadView>,
    position: Option<PositionView>,
    /// Bytes on disk after the position; null when the files cannot be read.
    lag_bytes: Option<u64>,
    halted: bool,
    halt: Option<HaltView>,
    quarantine: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
struct PositionView {
    file: String,
    file_id: String,
    offset: u64,
}

#[derive(Debug, Serialize)]
struct HaltView {
    verdict: String,
    detail: String,
    file: Option<String>,
    offset: Option<u64>,
    seq: Option<u64>,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let settings = match &args.config {
        Some(config) => Some(Settings::load(&Overrides {
            config: Some(config.clone()),
            ..Overrides::default()
        })?),
        None => None,
    };
    let db = match (&args.db, &settings) {
        (Some(db), _) => db.clone(),
        (None, Some(s)) => s.db.clone(),
        (None, None) => Settings::load(&Overrides::default())?.db,
    };
    let mirror = Mirror::open(&db, Access::ReadOnly)?;
    let mut out = Vec::new();
    for name in mirror.ledgers()? {
        let state = mirror
            .state(&name)?
            .unwrap_or_else(|| LedgerState::new(Path::new("")));
        let quarantine = mirror.quarantine_counts(&name)?.into_iter().collect();
        out.push(LedgerStatus {
            events: mirror.event_count(&name)?,
            head: state.head.map(HeadView::from),
            anchor: state.anchor.map(HeadView::from),
            position: state.position.as_ref().map(|p| PositionView {
                file: p.path.display().to_string(),
                file_id: p.file.to_string(),
                offset: p.offset,
            }),
            lag_bytes: lag_bytes(
                &state,
                settings
                    .as_ref()
                    .and_then(|s| s.ledgers.iter().find(|l| l.name == name)),
            ),
            halted: state.halt.is_some(),
            halt: state.halt.as_ref().map(|h| HaltView {
                verdict: h.verdict.as_str().to_owned(),
                detail: h.detail.clone(),
                file: h.file.clone(),
                offset: h.offset,
                seq: h.seq,
            }),
            quarantine,
            live_path: state.live_path.display().to_string(),
            ledger: name,
        });
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "db": db.display().to_string(),
                "ledgers": out,
            }))?
        );
    } else if out.is_empty() {
        println!("{}: no ledger mirrored yet", db.display());
    } else {
        for s in &out {
            print_text(s);
        }
    }
    Ok(exit(EXIT_OK))
}

fn print_text(s: &LedgerStatus) {
    let head = s
        .head
        .as_ref()
        .map_or("none".into(), |h| format!("seq {} {}", h.seq, h.hash));
    let anchor = s
        .anchor
        .as_ref()
        .map_or("none".into(), |h| format!("seq {}", h.seq));
    println!("ledger {}  ({})", s.ledger, s.live_path);
    println!("  events     {}", s.events);
    println!("  head       {head}");
    println!("  anchor     {anchor}");
    match &s.position {
        Some(p) => println!("  position   {} @ {}", p.file, p.offset),
        None => println!("  position   start"),
    }
    match s.lag_bytes {
        Some(n) => println!("  lag        {n} bytes"),
        None => println!("  lag        unknown (ledger files not readable here)"),
    }
    match &s.halt {
        Some(h) => println!(
            "  HALTED     {} at {}:{}{}: {}",
            h.verdict,
            h.file.as_deref().unwrap_or("?"),
            h.offset.unwrap_or(0),
            h.seq.map(|q| format!(" (seq {q})")).unwrap_or_default(),
            h.detail
        ),
        None => println!("  halted     no"),
    }
    if s.quarantine.is_empty() {
        println!("  quarantine none");
    } else {
        let parts: Vec<String> = s
            .quarantine
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        println!("  quarantine {}", parts.join(", "));
    }
}

/// Bytes of the ledger's files after the checkpoint. The files are read
/// as the configured ledger's are (its line limit and keys), or with the
/// defaults when only the database is known.
fn lag_bytes(state: &LedgerState, ledger: Option<&LedgerSettings>) -> Option<u64> {
    if state.live_path.as_os_str().is_empty() {
        return None;
    }
    let keys = KeyRing::default();
    let auth = match ledger {
        Some(l) => Authenticity {
            policy: l.signatures,
            keys: &l.keys,
            max_line_bytes: l.max_line_bytes,
            follow_symlink: l.follow_symlink,
        },
        None => Authenticity {
            policy: SignaturePolicy::Off,
            keys: &keys,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            follow_symlink: false,
        },
    };
    let files = discover(&state.live_path, auth).ok()?;
    let files = match &state.position {
        Some(pos) => resume_order(files, pos.file, state.head.map(|h| h.seq)),
        None => files,
    };
    Some(bytes_after(&files, state.position.as_ref()))
}
