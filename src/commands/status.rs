//! `ledgertail status [--db FILE | --config FILE] [--json]`
//!
//! Reads the mirror only (and looks at the ledger files for the lag): per
//! ledger, its head, anchor, position, the ledger's own head and the lag,
//! the last commit, the halt and since when, quarantine counts. With
//! `--config`, configured ledgers the mirror does not hold yet are shown
//! too (a typo in a path shows as "waiting for" it). Never reads the
//! events table: the counts come from the checkpoint. Always exits 0 when
//! it could read the mirror.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::{exit, EXIT_OK};
use crate::cli::StatusArgs;
use crate::config::{LedgerSettings, Overrides, Settings, DEFAULT_MAX_LINE_BYTES};
use crate::ledger::{KeyRing, SignaturePolicy};
use crate::mirror::{Access, HaltRecord, LedgerState, Mirror};
use crate::parity::HeadView;
use crate::tail::{
    backward, bytes_after, discover, open_regular, resume_order, Authenticity, Opening,
};

#[derive(Debug, Serialize)]
struct LedgerStatus {
    ledger: String,
    live_path: String,
    /// The mirror holds this ledger (false: configured, nothing committed).
    mirrored: bool,
    /// The live file does not exist yet, nor any rotated file: its path.
    waiting_for: Option<String>,
    /// Events from the anchor to the head (what the mirror holds when it
    /// is whole; `verify --db` checks that it is).
    events: u64,
    head: Option<HeadView>,
    anchor: Option<HeadView>,
    position: Option<PositionView>,
    /// `sealed`, or `plain`: a JSON log sealed as it is read, whose lines
    /// hold no seq (its lag is in bytes only).
    format: &'static str,
    /// The last authentic event of the live file (read back from its end).
    ledger_head_seq: Option<u64>,
    /// Events in the files beyond the mirror's head.
    lag_events: Option<u64>,
    /// Bytes on disk after the position; null when the files cannot be read.
    lag_bytes: Option<u64>,
    /// When the checkpoint was last written (the last commit).
    last_commit: Option<String>,
    halted: bool,
    halt: Option<HaltView>,
    /// The newest halt of the ledger's history, in force or lifted (a
    /// lifted one says when and how): a halt never vanishes unseen.
    last_halt: Option<PastHaltView>,
    quarantine: std::collections::BTreeMap<String, u64>,
    /// (v1.2) With `[postgres]` in --config: the fleet store's view.
    #[serde(skip_serializing_if = "Option::is_none")]
    central: Option<CentralView>,
    /// (v1.2) The verifiable log: the tree, the latest checkpoint, witnesses.
    #[serde(skip_serializing_if = "Option::is_none")]
    tlog: Option<super::status_tlog::TlogView>,
}

#[derive(Debug, Serialize)]
struct CentralView {
    source: String,
    /// The central head (null: nothing shipped yet, or not reachable).
    head: Option<HeadView>,
    /// Mirrored events not yet shipped.
    lag_events: Option<u64>,
    /// Who shipped last, and whether its lease still runs.
    shipper: Option<String>,
    leased: bool,
    /// The central chain conflicts with the mirror here: why (shipping
    /// of this ledger is halted).
    conflict: Option<String>,
    /// PostgreSQL could not be asked: why.
    error: Option<String>,
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
    /// When the halt was first recorded.
    since: Option<String>,
}

#[derive(Debug, Serialize)]
struct PastHaltView {
    verdict: String,
    detail: String,
    file: Option<String>,
    offset: Option<u64>,
    seq: Option<u64>,
    halted_at: String,
    /// When it was lifted (null: it stands).
    lifted_at: Option<String>,
    /// How it was lifted.
    lifted_how: Option<String>,
}

impl From<HaltRecord> for PastHaltView {
    fn from(r: HaltRecord) -> PastHaltView {
        let (lifted_at, lifted_how) = r.lifted.unzip();
        PastHaltView {
            verdict: r.halt.verdict.as_str().to_owned(),
            detail: r.halt.detail,
            file: r.halt.file,
            offset: r.halt.offset,
            seq: r.halt.seq,
            halted_at: r.halted_at,
            lifted_at,
            lifted_how,
        }
    }
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
    let configured: &[LedgerSettings] = settings.as_ref().map_or(&[], |s| &s.ledgers);
    let mut out = Vec::new();
    let mut quarantine = mirror.quarantine_counts()?;
    for name in mirror.ledgers()? {
        let state = mirror
            .state(&name)?
            .unwrap_or_else(|| LedgerState::new(Path::new("")));
        let ledger = configured.iter().find(|l| l.name == name);
        let counts = quarantine.remove(&name).unwrap_or_default();
        out.push(mirrored_status(&mirror, &name, &state, ledger, counts)?);
    }
    let missing: Vec<&LedgerSettings> = configured
        .iter()
        .filter(|l| !out.iter().any(|s| s.ledger == l.name))
        .collect();
    out.extend(missing.into_iter().map(unmirrored_status));
    if let Some(pg) = settings.as_ref().and_then(|s| s.postgres.as_ref()) {
        add_central(pg, &mirror, &mut out);
    }
    for s in &mut out {
        s.tlog = super::status_tlog::view(&mirror, &s.ledger, settings.as_ref());
    }
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "db": db.display().to_string(),
                "ledgers": out,
            }))?
        );
    } else if out.is_empty() {
        outln!("{}: no ledger mirrored yet", db.display());
    } else {
        for s in &out {
            print_text(s);
        }
    }
    Ok(exit(EXIT_OK))
}

fn mirrored_status(
    mirror: &Mirror,
    name: &str,
    state: &LedgerState,
    ledger: Option<&LedgerSettings>,
    quarantine: std::collections::BTreeMap<String, u64>,
) -> anyhow::Result<LedgerStatus> {
    let times = mirror.checkpoint_times(name)?;
    let last_halt = mirror
        .halt_history(name, 1)?
        .into_iter()
        .next()
        .map(PastHaltView::from);
    let events = match (state.anchor, state.head) {
        (Some(a), Some(h)) => h.seq.saturating_sub(a.seq) + 1,
        _ => 0,
    };
    let plain = ledger.is_some_and(|l| l.plain.is_some());
    let ledger_head_seq = if plain {
        None
    } else {
        live_head(&state.live_path, ledger)
    };
    let lag_events = ledger_head_seq.map(|l| match state.head {
        Some(h) => l.saturating_sub(h.seq),
        None => l + 1,
    });
    Ok(LedgerStatus {
        ledger: name.to_owned(),
        live_path: state.live_path.display().to_string(),
        mirrored: true,
        waiting_for: waiting_for(&state.live_path),
        events,
        head: state.head.map(HeadView::from),
        anchor: state.anchor.map(HeadView::from),
        position: state.position.as_ref().map(|p| PositionView {
            file: p.path.display().to_string(),
            file_id: p.file.to_string(),
            offset: p.offset,
        }),
        format: if plain { "plain" } else { "sealed" },
        ledger_head_seq,
        lag_events,
        lag_bytes: lag_bytes(state, ledger),
        last_commit: times.as_ref().map(|(at, _)| at.clone()),
        central: None,
        tlog: None,
        halted: state.halt.is_some(),
        halt: state.halt.as_ref().map(|h| HaltView {
            verdict: h.verdict.as_str().to_owned(),
            detail: h.detail.clone(),
            file: h.file.clone(),
            offset: h.offset,
            seq: h.seq,
            since: times.and_then(|(_, since)| since),
        }),
        last_halt,
        quarantine,
    })
}

/// Asks the fleet store for each ledger's central head (a short connect
/// timeout: status must answer while PostgreSQL is down, and says so).
fn add_central(pg: &crate::config::PostgresSettings, mirror: &Mirror, out: &mut [LedgerStatus]) {
    use crate::postgres;
    let view = |error: Option<String>| CentralView {
        source: pg.source.clone(),
        head: None,
        lag_events: None,
        shipper: None,
        leased: false,
        conflict: None,
        error,
    };
    // status must answer while PostgreSQL is down: a short connect, and
    // a short deadline on each answer (a hung server is reported, not
    // waited for).
    let quick = crate::postgres::Timeouts {
        connect: pg.connect_timeout.min(std::time::Duration::from_secs(5)),
        statement: pg.statement_timeout.min(std::time::Duration::from_secs(5)),
    };
    let connected = pg
        .target()
        .with_timeouts(quick)
        .connect()
        .map_err(|e| e.to_string());
    let client = match connected {
        Ok(c) => c,
        Err(e) => {
            for s in out.iter_mut() {
                s.central = Some(view(Some(e.clone())));
            }
            return;
        }
    };
    // Every ledger's central head in one query.
    let names: Vec<&str> = out.iter().map(|s| s.ledger.as_str()).collect();
    let heads = postgres::ship::read_heads(&client, &pg.schema, &pg.source, &names);
    for s in out.iter_mut() {
        let mut v = view(None);
        match heads.as_ref().map(|h| h.get(&s.ledger)) {
            Err(e) => v.error = Some(e.to_string()),
            Ok(None) => v.lag_events = Some(s.events),
            Ok(Some(c)) => {
                v.shipper = c.shipper.clone();
                v.leased = c.leased;
                if let Some((seq, hash)) = &c.head {
                    v.head = Some(HeadView {
                        seq: *seq,
                        hash: hash.clone(),
                    });
                    v.lag_events = s.head.as_ref().map(|h| h.seq.saturating_sub(*seq));
                    let local = s.head.as_ref().map(|h| h.seq);
                    if local.is_none_or(|l| l < *seq) {
                        v.conflict = Some(format!(
                            "the central head seq {seq} is past this mirror's head ({}): the fleet store holds rows this mirror lacks; unless the mirror is still catching up, they are rows this host's files never had",
                            local.map_or("none".to_owned(), |l| format!("seq {l}"))
                        ));
                    } else if let Ok(Some(local)) = mirror.hash_at(&s.ledger, *seq) {
                        if local.to_hex() != *hash {
                            v.conflict = Some(format!(
                                "a fork: the central row at seq {seq} has hash {hash}, this mirror's has {}",
                                local.to_hex()
                            ));
                        }
                    }
                }
            }
        }
        s.central = Some(v);
    }
}

/// A configured ledger with no commit in the mirror yet.
fn unmirrored_status(l: &LedgerSettings) -> LedgerStatus {
    let head = live_head(&l.path, Some(l)).filter(|_| l.plain.is_none());
    LedgerStatus {
        format: if l.plain.is_some() { "plain" } else { "sealed" },
        ledger: l.name.clone(),
        live_path: l.path.display().to_string(),
        mirrored: false,
        waiting_for: waiting_for(&l.path),
        events: 0,
        head: None,
        anchor: None,
        position: None,
        ledger_head_seq: head,
        lag_events: head.map(|h| h + 1),
        lag_bytes: lag_bytes(&LedgerState::new(&l.path), Some(l)),
        last_commit: None,
        central: None,
        tlog: None,
        halted: false,
        halt: None,
        last_halt: None,
        quarantine: Default::default(),
    }
}

/// The path, when neither the live file nor a rotated file exists.
fn waiting_for(live: &Path) -> Option<String> {
    if live.as_os_str().is_empty() {
        return None;
    }
    match crate::tail::identity::any_file_exists(live) {
        Ok(false) => Some(live.display().to_string()),
        _ => None,
    }
}

/// How the ledger's files are read here: as the configured ledger's are
/// (its line limit and keys), or with the defaults when only the database
/// is known.
fn auth<'a>(ledger: Option<&'a LedgerSettings>, none: &'a KeyRing) -> Authenticity<'a> {
    match ledger {
        Some(l) => Authenticity {
            policy: l.signatures,
            keys: &l.keys,
            max_line_bytes: l.max_line_bytes,
            follow_symlink: l.follow_symlink,
            plain_first_seqs: None,
            plain_recorded_lines: None,
        },
        None => Authenticity {
            policy: SignaturePolicy::Off,
            keys: none,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            follow_symlink: false,
            plain_first_seqs: None,
            plain_recorded_lines: None,
        },
    }
}

/// The seq of the last authentic event of the live file.
fn live_head(live: &Path, ledger: Option<&LedgerSettings>) -> Option<u64> {
    let none = KeyRing::default();
    let a = auth(ledger, &none);
    let Ok(Opening::File(file, meta)) = open_regular(live, a.follow_symlink) else {
        return None;
    };
    backward::last_authentic(&file, meta.len(), a.policy, a.keys, a.max_line_bytes)
        .ok()
        .flatten()
        .map(|h| h.seq)
}

/// Bytes of the ledger's files after the checkpoint.
fn lag_bytes(state: &LedgerState, ledger: Option<&LedgerSettings>) -> Option<u64> {
    if state.live_path.as_os_str().is_empty() {
        return None;
    }
    let none = KeyRing::default();
    let files = discover(&state.live_path, auth(ledger, &none)).ok()?;
    let files = match &state.position {
        Some(pos) => resume_order(files, pos.file, state.head.map(|h| h.seq)),
        None => files,
    };
    Some(bytes_after(
        &files,
        state.position.as_ref(),
        state.head.map(|h| h.seq),
    ))
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
    outln!("ledger {}  ({})", s.ledger, s.live_path);
    if let Some(path) = &s.waiting_for {
        outln!("  WAITING    for {path}: no such file yet (nor any rotated file beside it)");
    }
    if !s.mirrored {
        outln!("  mirrored   nothing yet");
    }
    outln!("  events     {}", s.events);
    outln!("  head       {head}");
    outln!("  anchor     {anchor}");
    match &s.position {
        Some(p) => outln!("  position   {} @ {}", p.file, p.offset),
        None => outln!("  position   start"),
    }
    match (s.ledger_head_seq, s.lag_events) {
        _ if s.format == "plain" => {
            outln!("  ledger     a plain JSON log, sealed as it is read (its lines hold no seq)")
        }
        (Some(h), Some(l)) => {
            outln!("  ledger     head seq {h} in the live file, {l} events not mirrored")
        }
        _ => outln!("  ledger     no authentic event in the live file"),
    }
    match s.lag_bytes {
        Some(n) => outln!("  lag        {n} bytes"),
        None => outln!("  lag        unknown (ledger files not readable here)"),
    }
    if let Some(at) = &s.last_commit {
        outln!("  committed  {at}");
    }
    match &s.halt {
        Some(h) => outln!(
            "  HALTED     {} at {}:{}{}{}: {}",
            h.verdict,
            h.file.as_deref().unwrap_or("?"),
            h.offset.unwrap_or(0),
            h.seq.map(|q| format!(" (seq {q})")).unwrap_or_default(),
            h.since
                .as_ref()
                .map(|t| format!(" since {t}"))
                .unwrap_or_default(),
            h.detail
        ),
        None => outln!("  halted     no"),
    }
    if let Some(h) = s.last_halt.as_ref().filter(|h| h.lifted_at.is_some()) {
        outln!(
            "  last halt  {} at {}:{}{} from {} to {}: {} (lifted: {})",
            h.verdict,
            h.file.as_deref().unwrap_or("?"),
            h.offset.unwrap_or(0),
            h.seq.map(|q| format!(" (seq {q})")).unwrap_or_default(),
            h.halted_at,
            h.lifted_at.as_deref().unwrap_or("?"),
            h.detail,
            h.lifted_how.as_deref().unwrap_or("?")
        );
    }
    if let Some(t) = &s.tlog {
        super::status_tlog::print(t);
    }
    if let Some(c) = &s.central {
        match (&c.error, &c.conflict, &c.head) {
            (Some(e), _, _) => outln!("  central    UNREACHABLE (source {}): {e}", c.source),
            (None, Some(why), _) => outln!("  central    CONFLICT (source {}): {why}", c.source),
            (None, None, Some(h)) => outln!(
                "  central    head seq {} (source {}), {} events not shipped",
                h.seq,
                c.source,
                c.lag_events.map_or("?".into(), |l| l.to_string())
            ),
            (None, None, None) => {
                outln!("  central    nothing shipped yet (source {})", c.source)
            }
        }
    }
    if s.quarantine.is_empty() {
        outln!("  quarantine none");
    } else {
        let parts: Vec<String> = s
            .quarantine
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        outln!("  quarantine {}", parts.join(", "));
    }
}
