//! `ledgertail replay [--config FILE] [--ledger FILE] [--db FILE]`
//!
//! One pass of the shipper per ledger: mirror everything not yet mirrored
//! (from the checkpoint, or from the oldest file into a new database);
//! then each ledger's parity check from where the last one stood, beside
//! the shipping to PostgreSQL when `[postgres]` is set; then exit. 0
//! caught up, 1 a ledger is halted, 2 could not run.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::{exit, require_ledger_files, settings, EXIT_OK, EXIT_PROBLEMS};
use crate::cli::ReplayArgs;
use crate::config::{LedgerSettings, Settings};
use crate::mirror::{Access, Mirror};
use crate::shipper::{BatchStats, Batching, Report, Shipper};
use crate::verifier;

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(&args.ledgers, args.db.clone())?;
    settings.only_this_host()?;
    // Everything that can be checked without the database is checked
    // first, so a bad invocation leaves no database behind.
    require_ledger_files(&settings)?;
    let show_progress = !args.no_progress && std::io::stderr().is_terminal();
    let stop = AtomicBool::new(false);
    // Created by the first open; checkpoints then run beside the writer
    // (measured: faster than leaving them all to the end). The writer lock
    // is taken once the file is known to be a mirror.
    drop(Mirror::open(&settings.db, Access::ReadWrite).context("opening the mirror")?);
    let _writer = crate::mirror::lock_writer(&settings.db, "replay")?;
    let _checkpoints = crate::mirror::Checkpointer::spawn(&settings.db, Duration::from_millis(250))
        .context("starting WAL checkpoints")?;
    // Every ledger's files are read first; then the parity checks (one
    // whole-file pass per ledger when no check was kept) run beside the
    // shipping to PostgreSQL, which needs only the mirror's rows, verified
    // as they were mirrored (measured: the check alone took 6 s of a
    // 1M-event replay that shipped in 17). One verifier pool serves every
    // ledger, and each phase holds one ledger's connection at a time.
    let pool = verifier::Pool::per_core().context("starting the verifier threads")?;
    let mut caught_up = Vec::with_capacity(settings.ledgers.len());
    for ledger in &settings.ledgers {
        caught_up.push(catch_up(&settings, ledger, &pool, show_progress, &stop)?);
    }
    let names: Vec<String> = settings.ledgers.iter().map(|l| l.name.clone()).collect();
    let (checked, shipped) = std::thread::scope(|scope| {
        let shipping = settings
            .postgres
            .as_ref()
            .map(|pg| scope.spawn(|| ship(pg, &names, &settings.db)));
        let checked: anyhow::Result<Vec<Done>> = settings
            .ledgers
            .iter()
            .zip(caught_up)
            .map(|(ledger, done)| check_parity(&settings, ledger, &pool, done))
            .collect();
        let shipped = match shipping {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the shipping thread panicked"))),
            None => Ok(false),
        };
        (checked, shipped)
    });
    let mut halted = false;
    for done in checked? {
        halted |= done.say();
    }
    halted |= shipped?;
    Ok(exit(if halted { EXIT_PROBLEMS } else { EXIT_OK }))
}

/// What a ledger's replay did, for its summary line.
struct Done {
    name: String,
    /// The mirror held rows of it before this replay.
    had_rows: bool,
    report: Report,
    head: Option<u64>,
    halt: Option<String>,
}

/// A shipper of `ledger` on its own connection and the shared pool.
fn shipper(
    settings: &Settings,
    ledger: &LedgerSettings,
    pool: &verifier::Pool,
) -> anyhow::Result<Shipper> {
    let mirror = Mirror::open(&settings.db, Access::ReadWrite)
        .with_context(|| format!("opening the mirror for ledger `{}`", ledger.name))?;
    let verifiers = verifier::Verifiers::on(pool);
    Ok(Shipper::with_verifiers(
        ledger.clone(),
        mirror,
        Batching::from_settings(settings),
        verifiers,
    )?)
}

/// Mirrors everything of `ledger` not yet mirrored.
fn catch_up(
    settings: &Settings,
    ledger: &LedgerSettings,
    pool: &verifier::Pool,
    show_progress: bool,
    stop: &AtomicBool,
) -> anyhow::Result<Done> {
    let mut shipper = shipper(settings, ledger, pool)?;
    // Keys or policy other than those the quarantine was judged with:
    // judge those lines again (§2.1).
    shipper.rejudge_if_changed()?;
    let bar = show_progress.then(|| progress_bar(&ledger.name));
    let mut on_progress = |p: &BatchStats<'_>| {
        if let Some(bar) = &bar {
            bar.set_length(p.total_bytes);
            bar.set_position(p.done_bytes);
        }
    };
    let had_rows = shipper.state().head.is_some();
    let report = shipper
        .catch_up(stop, &mut on_progress)
        .with_context(|| format!("replaying ledger `{}`", ledger.name))?;
    shipper.record_judged_with()?;
    shipper.flush_refusal_log();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(Done {
        name: ledger.name.clone(),
        had_rows,
        report,
        head: None,
        halt: None,
    })
}

fn progress_bar(name: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_owned());
    bar
}

/// An edit of mirrored lines is found by replay too, from where the last
/// check stood; then where the ledger stands.
fn check_parity(
    settings: &Settings,
    ledger: &LedgerSettings,
    pool: &verifier::Pool,
    mut done: Done,
) -> anyhow::Result<Done> {
    let mut shipper = shipper(settings, ledger, pool)?;
    shipper
        .check_from_kept_parity(done.had_rows, &mut done.report)
        .with_context(|| format!("checking parity of ledger `{}`", ledger.name))?;
    shipper.flush_refusal_log();
    let state = shipper.state();
    done.head = state.head.map(|h| h.seq);
    done.halt = state.halt.as_ref().map(ToString::to_string);
    Ok(done)
}

impl Done {
    /// Prints the ledger's line of the summary; true when it is halted.
    fn say(&self) -> bool {
        let (name, report) = (&self.name, &self.report);
        let head = self
            .head
            .map_or_else(|| "none".to_owned(), |seq| format!("seq {seq}"));
        let quarantined: Vec<String> = report
            .verdicts
            .iter()
            .filter(|(v, _)| v.as_str() != "mirrored")
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        eprintln!(
            "{name}: mirrored {} event{}, quarantined {}{}; head {head}",
            report.mirrored(),
            if report.mirrored() == 1 { "" } else { "s" },
            report.quarantined(),
            if quarantined.is_empty() {
                String::new()
            } else {
                format!(" ({})", quarantined.join(", "))
            },
        );
        if let Some(h) = &self.halt {
            eprintln!("{name}: HALTED: {h}");
        }
        self.halt.is_some()
    }
}

/// (v1.2) Ships the mirror's rows past the central heads; true when a
/// ledger's central chain conflicts with the local one. Gives up (could
/// not run) when PostgreSQL stays unreachable for three connect timeouts,
/// at once on an error that waiting does not mend.
fn ship(
    pg: &crate::config::PostgresSettings,
    names: &[String],
    db: &std::path::Path,
) -> anyhow::Result<bool> {
    use crate::fleet::{Round, Settled, Uploader};
    let mut uploader =
        Uploader::new(pg, names, db.to_path_buf(), None, None).context("[postgres]")?;
    // Every file has been read: the mirror's heads are final.
    uploader.mirror_is_complete();
    let all = vec![true; names.len()];
    let mut failing_since = None;
    loop {
        let round = uploader.round(&all);
        if let Some(e) = uploader.last_error.clone() {
            let since = *failing_since.get_or_insert_with(std::time::Instant::now);
            if !e.is_transient() || since.elapsed() > pg.connect_timeout * 3 {
                return Err(anyhow::Error::new(e).context("shipping to PostgreSQL"));
            }
        } else {
            failing_since = None;
        }
        match uploader.settled().context("reading the mirror")? {
            Settled::CaughtUp => break,
            Settled::Halted(lanes) => {
                for (name, why) in lanes {
                    eprintln!("{name}: shipping to PostgreSQL HALTED: {why}");
                }
                return Ok(true);
            }
            Settled::Fenced(name, why) => {
                anyhow::bail!("ledger `{name}`: not shipped to PostgreSQL: {why}")
            }
            Settled::Pending => {}
        }
        if let Round::Idle(d) = round {
            std::thread::sleep(d.min(Duration::from_millis(20)));
        }
    }
    uploader.release();
    for (name, head) in uploader.heads() {
        eprintln!(
            "{name}: shipped to PostgreSQL ({}, source {}), central head {}",
            uploader.shown(),
            pg.source,
            head.map_or_else(|| "none".to_owned(), |s| format!("seq {s}"))
        );
    }
    Ok(false)
}
