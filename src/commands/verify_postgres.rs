//! `ledgertail verify --postgres URL [--source S] [--ledger L] [--json]`
//! (contract §6): the fleet store audited from its columns alone. Every
//! central row is rebuilt into its event and judged as the mirror's rows
//! are ([`crate::parity::ChainWalk`]): its columns canonical, its hash
//! recomputed, its signature checked under the ledger's policy, its
//! `prev_hash` the hash of the row before, no seq missing from the anchor
//! to the head the `ledgers` table records. Nothing is trusted that the
//! triggers enforce, since a superuser can bypass them. Writes nothing.
//! 0 clean, 1 anything wrong, 2 could not run.

use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;

use super::{exit, settings, EXIT_OK, EXIT_PROBLEMS};
use crate::cli::VerifyArgs;
use crate::config::{default_ledger_name, LedgerSettings, Settings};
use crate::ledger::{ChainRules, Hash, Head, SignaturePolicy};
use crate::mirror::LedgerState;
use crate::parity::{ChainWalk, RowCheck};
use crate::parity::{HeadView, Parity, MAX_PROBLEMS};
use crate::postgres::{self, Target, Timeouts};

#[derive(Debug, Serialize)]
struct RowProblem {
    seq: u64,
    detail: String,
}

#[derive(Debug, Serialize)]
struct CentralReport {
    source: String,
    ledger: String,
    ok: bool,
    rows: u64,
    anchor: Option<HeadView>,
    head: Option<HeadView>,
    /// The first problems (at most parity::MAX_PROBLEMS).
    problems: Vec<RowProblem>,
    problems_total: u64,
    /// Which key signed which rows (`None`: unsigned rows).
    signed_by: Vec<Signer>,
}

#[derive(Debug, Serialize)]
struct Signer {
    key_id: Option<String>,
    rows: u64,
    first_seq: u64,
    last_seq: u64,
}

#[derive(Debug, Serialize)]
struct Unregistered {
    source: String,
    ledger: String,
    rows: u64,
    first_seq: u64,
    last_seq: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    postgres: String,
    schema: String,
    ledgers: Vec<CentralReport>,
    /// Rows of `(source, ledger)`s that have no `ledgers` row: only a hand
    /// that bypassed the triggers puts them there.
    unregistered: Vec<Unregistered>,
}

pub fn run(args: &VerifyArgs, url: &str) -> anyhow::Result<ExitCode> {
    // --ledger names a ledger here; a path is taken by its file's name.
    let mut ledger_args = args.ledgers.clone();
    let wanted = ledger_args.ledger.take();
    let settings = settings(&ledger_args, None)?;
    let wanted = wanted.map(|w| {
        let raw = w.display().to_string();
        if settings.ledgers.iter().any(|l| l.name == raw) {
            raw
        } else {
            default_ledger_name(&w)
        }
    });
    let pg = settings.postgres.as_ref();
    let schema = args
        .schema
        .clone()
        .or_else(|| pg.map(|p| p.schema.clone()))
        .unwrap_or_else(|| "ledgertail".to_owned());
    let timeouts = Timeouts {
        connect: pg.map_or(std::time::Duration::from_secs(10), |p| p.connect_timeout),
        statement: std::time::Duration::from_secs(600),
    };
    let target = Target::parse(
        url,
        pg.and_then(|p| p.ca_file.as_deref()),
        timeouts,
        std::env::var(postgres::PASSWORD_ENV).ok(),
    )
    .context("--postgres")?;
    let client = target.connect()?;
    let central =
        postgres::rows::ledgers(&client, &schema, args.source.as_deref(), wanted.as_deref())
            .with_context(|| format!("reading {schema}.ledgers"))?;
    let unregistered = postgres::rows::unregistered(
        &client,
        &schema,
        args.source.as_deref(),
        wanted.as_deref(),
    )
    .with_context(|| format!("looking for rows of ledgers {schema}.ledgers does not know"))?;
    let mut report = Report {
        ok: unregistered.is_empty(),
        postgres: target.shown().to_owned(),
        schema: schema.clone(),
        ledgers: Vec::new(),
        unregistered: unregistered
            .into_iter()
            .map(|u| Unregistered {
                source: u.source,
                ledger: u.ledger,
                rows: u.rows,
                first_seq: u.first_seq,
                last_seq: u.last_seq,
            })
            .collect(),
    };
    if central.is_empty() && report.unregistered.is_empty() {
        // Asking about a ledger the store does not hold is a finding, not
        // a clean bill.
        if args.source.is_some() || wanted.is_some() {
            report.ok = false;
        }
    }
    for (source, ledger, head) in central {
        let policy = ledger_policy(&settings, &source, &ledger);
        let r = audit_one(&client, &schema, &source, &ledger, &head, &policy)?;
        report.ok &= r.ok;
        report.ledgers.push(r);
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report, args.source.as_deref(), wanted.as_deref());
    }
    Ok(exit(if report.ok { EXIT_OK } else { EXIT_PROBLEMS }))
}

/// The report for people: each ledger's problems and rows, the rows of
/// no ledger, and the verdict.
fn print_text(report: &Report, source: Option<&str>, wanted: Option<&str>) {
    let schema = &report.schema;
    for l in &report.ledgers {
        print_ledger(l);
    }
    for u in &report.unregistered {
        outln!(
            "{}/{}: {} row{} (seqs {} to {}) in events, but no row in {schema}.ledgers: written past the triggers (a superuser's hand); not part of any chain",
            u.source,
            u.ledger,
            u.rows,
            if u.rows == 1 { "" } else { "s" },
            u.first_seq,
            u.last_seq
        );
    }
    if report.ledgers.is_empty() && report.unregistered.is_empty() {
        outln!(
            "{}: no ledger{} in {schema}.ledgers",
            report.postgres,
            match (source, wanted) {
                (None, None) => String::new(),
                (s, l) => format!(
                    " matching{}{}",
                    s.as_ref()
                        .map(|s| format!(" source {s}"))
                        .unwrap_or_default(),
                    l.as_ref()
                        .map(|l| format!(" ledger {l}"))
                        .unwrap_or_default()
                ),
            }
        );
    }
    outln!("{}", if report.ok { "OK" } else { "PROBLEMS FOUND" });
}

fn print_ledger(l: &CentralReport) {
    for p in &l.problems {
        outln!("{}/{}: seq {}: {}", l.source, l.ledger, p.seq, p.detail);
    }
    if l.problems_total > l.problems.len() as u64 {
        outln!(
            "{}/{}: ... and {} more problems",
            l.source,
            l.ledger,
            l.problems_total - l.problems.len() as u64
        );
    }
    outln!(
        "{}/{}: {} row{} (anchor {}, head {}), {} problem{}",
        l.source,
        l.ledger,
        l.rows,
        if l.rows == 1 { "" } else { "s" },
        l.anchor
            .as_ref()
            .map_or("none".into(), |h| format!("seq {}", h.seq)),
        l.head
            .as_ref()
            .map_or("none".into(), |h| format!("seq {}", h.seq)),
        l.problems_total,
        if l.problems_total == 1 { "" } else { "s" },
    );
    for k in &l.signed_by {
        outln!(
            "{}/{}:   {} {} row{} (seqs {} to {})",
            l.source,
            l.ledger,
            k.key_id
                .as_ref()
                .map_or("unsigned:".to_owned(), |k| format!("signed by key {k}:")),
            k.rows,
            if k.rows == 1 { "" } else { "s" },
            k.first_seq,
            k.last_seq
        );
    }
}

/// The policy and keys a central ledger is judged under: the
/// `[[ledger]]` table of its name that names its source, else the one of
/// its name that names no source (when the configuration has one), else
/// the flags' or verify-if-present, trusting every key of `[keys]` and
/// `--trust`. Keys are thus chosen per (source, ledger): a row another
/// host signed with its own key is not authentic in this host's ledger.
fn ledger_policy(settings: &Settings, source: &str, name: &str) -> LedgerSettings {
    let tables = || {
        settings
            .ledgers
            .iter()
            .filter(|l| l.name == name && settings.config_path.is_some())
    };
    let own = tables().find(|l| l.source.as_deref() == Some(source));
    if let Some(l) = own.or_else(|| tables().find(|l| l.source.is_none())) {
        return l.clone();
    }
    let template = settings.ledgers.first();
    LedgerSettings {
        name: name.to_owned(),
        path: Default::default(),
        signatures: template.map_or(SignaturePolicy::VerifyIfPresent, |t| t.signatures),
        max_line_bytes: crate::config::DEFAULT_MAX_LINE_BYTES,
        rules: ChainRules::default(),
        keys: settings.keys.clone(),
        follow_symlink: false,
        origin: String::new(),
        source: Some(source.to_owned()),
        plain: None,
        sign_key: None,
    }
}

fn audit_one(
    client: &postgres::Session,
    schema: &str,
    source: &str,
    ledger: &str,
    central: &postgres::CentralHead,
    policy: &LedgerSettings,
) -> anyhow::Result<CentralReport> {
    let mut problems = Vec::new();
    let mut total = 0u64;
    let mut note = |seq: u64, detail: String| {
        total += 1;
        if problems.len() < MAX_PROBLEMS {
            problems.push(RowProblem { seq, detail });
        }
    };
    let anchor_hash = Hash::from_hex(&central.anchor_hash);
    let head_hash = central.head.as_ref().map(|(_, h)| Hash::from_hex(h));
    if anchor_hash.is_none() {
        note(
            central.anchor_seq,
            format!(
                "the ledgers row's anchor_hash {:?} is not a hash",
                central.anchor_hash
            ),
        );
    }
    if let (Some((seq, text)), Some(None)) = (&central.head, &head_hash) {
        note(
            *seq,
            format!("the ledgers row's head_hash {text:?} is not a hash"),
        );
    }
    let mut state = LedgerState::new(std::path::Path::new(""));
    state.anchor = anchor_hash.map(|hash| Head {
        seq: central.anchor_seq,
        hash,
    });
    state.head = match (&central.head, head_hash.flatten()) {
        (Some((seq, _)), Some(hash)) => Some(Head { seq: *seq, hash }),
        _ => None,
    };
    let mut walk = ChainWalk::new(policy, Some(&state));
    let mut parity = Parity::default();
    let mut rows = 0u64;
    let mut signed_by: Vec<Signer> = Vec::new();
    postgres::rows::for_each_row(client, schema, source, ledger, |row| {
        rows += 1;
        count_signer(&mut signed_by, &row);
        let check = walk.row(&row, true);
        if let Some(gap) = walk.take_gap() {
            parity.missing(gap);
        }
        match check {
            RowCheck::Sound => {}
            RowCheck::Unsound(why) => note(row.seq, why),
            RowCheck::Later => note(
                row.seq,
                "a row past the head the ledgers table records".into(),
            ),
        }
        true
    })
    .with_context(|| format!("reading the central rows of {source}/{ledger}"))?;
    if state.head.is_none() && rows > 0 && central.head.is_none() {
        note(
            central.anchor_seq,
            "rows, but the ledgers table records no head".into(),
        );
    }
    if let Some(gap) = walk.finish() {
        parity.missing(gap);
    }
    for e in &parity.examples {
        if e.kind == "missing_in_sqlite" {
            note(
                e.seq,
                "missing: the chain from the anchor to the head has no row at this seq".into(),
            );
        }
    }
    let listed = parity
        .examples
        .iter()
        .filter(|e| e.kind == "missing_in_sqlite")
        .count() as u64;
    total += parity.missing_in_sqlite.saturating_sub(listed);
    Ok(CentralReport {
        source: source.to_owned(),
        ledger: ledger.to_owned(),
        ok: total == 0,
        rows,
        anchor: state.anchor.map(HeadView::from),
        head: state.head.map(HeadView::from),
        problems,
        problems_total: total,
        signed_by,
    })
}

/// Counts `row` under its key (a few keys per ledger: a short list).
fn count_signer(signers: &mut Vec<Signer>, row: &crate::mirror::StoredEvent) {
    let key = if row.sig.is_some() {
        row.key_id.clone()
    } else {
        None
    };
    match signers.iter_mut().find(|s| s.key_id == key) {
        Some(s) => {
            s.rows += 1;
            s.first_seq = s.first_seq.min(row.seq);
            s.last_seq = s.last_seq.max(row.seq);
        }
        None => signers.push(Signer {
            key_id: key,
            rows: 1,
            first_seq: row.seq,
            last_seq: row.seq,
        }),
    }
}
