//! `ledgertail run`: wiring for the daemon. Checks what can fail early
//! (configuration, the mirror, the listen address) before any thread
//! starts, then runs the workers, the HTTP server and the signal thread
//! until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::mpsc;

use anyhow::Context as _;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{exit, EXIT_OK, EXIT_PROBLEMS};
use crate::cli::RunArgs;
use crate::config::Settings;
use crate::daemon::{Control, Daemon, Ended};
use crate::logging::LogControl;
use crate::mirror::{Access, Checkpointer, Mirror};
use crate::serve::{serve, Endpoints};
use crate::telemetry::{StatusBoard, Telemetry};

/// The listen address is taken: what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// Stop signals within this long of the first are the same request
/// delivered twice, not a second signal that exits at once.
const SAME_STOP_REQUEST: std::time::Duration = std::time::Duration::from_millis(500);

pub fn run(args: RunArgs, log: Option<LogControl>) -> anyhow::Result<ExitCode> {
    let mut overrides = args
        .ledgers
        .overrides(args.db.clone())
        .map_err(super::TrustFlagError)?;
    overrides.listen = args.listen.clone();
    let settings = Settings::load(&overrides)?;
    settings.only_this_host()?;
    crate::mirror::frugal_connections();

    // Fail before starting anything, and before creating any file: the
    // fleet store's CA must load, the address must be free, no other
    // process may write the mirror, and it must open (it is created if
    // missing).
    if let Some(pg) = &settings.postgres {
        pg.target().preflight().context("[postgres]")?;
    }
    let listener = std::net::TcpListener::bind(settings.listen).map_err(|source| ListenError {
        addr: settings.listen.to_string(),
        source,
    })?;
    let addr = listener.local_addr()?;
    // (The lock is taken once the file is known to be a mirror: a command
    // that fails leaves no file behind.)
    drop(Mirror::open(&settings.db, Access::ReadWrite).context("opening the mirror")?);
    let _writer = crate::mirror::lock_writer(&settings.db, "run")?;
    // Often: with many busy ledgers the WAL grows by tens of MiB a second,
    // and a checkpoint left to the writer's own threshold stalls it (a
    // checkpoint of a WAL with nothing new costs next to nothing).
    let checkpoints = Checkpointer::spawn(&settings.db, std::time::Duration::from_millis(100))
        .context("starting WAL checkpoints")?;

    super::survive_file_size_limit()?;
    settings.warn_about();
    let control_rx = spawn_signal_thread()?;

    let telemetry = Telemetry::new();
    let names: Vec<String> = settings.ledgers.iter().map(|l| l.name.clone()).collect();
    let board = StatusBoard::new(&names);
    let served = crate::tlog::publish::Served::default();
    let endpoints = Endpoints {
        telemetry: telemetry.clone(),
        board: board.clone(),
        ready_max_lag_events: settings.run.ready_max_lag_events,
        checkpoints: served.clone(),
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let server = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || serve(listener, endpoints, shutdown_rx))?;

    tracing::info!(
        listen = %addr,
        db = %settings.db.display(),
        ledgers = names.join(","),
        "ledgertail running: metrics on http://{addr}/metrics"
    );
    // (v1.2) With [tlog]: checkpoints signed on a schedule, offered to the
    // witnesses, served. A log key that cannot be read stops the start.
    let publisher = match &settings.tlog {
        Some(tlog) => Some(
            crate::tlog::publish::Publisher::start(
                tlog,
                &settings.db,
                &settings.ledgers,
                &telemetry,
                served,
            )
            .context("starting the checkpoint publisher ([tlog])")?,
        ),
        None => None,
    };
    let daemon = Daemon::start(settings, overrides, &telemetry, &board, log)?;
    let ended = daemon.run_until_stopped(control_rx);
    if let Some(p) = publisher {
        p.stop();
    }
    let _ = shutdown_tx.send(true);
    drop(checkpoints);
    match server.join() {
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics server ended with an error"),
        Err(_) => tracing::warn!("metrics server panicked"),
        Ok(Ok(())) => {}
    }
    Ok(exit(exit_code(ended)))
}

/// How `run` ended, said in the log, as an exit code.
fn exit_code(ended: Ended) -> u8 {
    match ended {
        Ended::Clean => {
            tracing::info!("stopped cleanly: every batch in flight was committed");
            EXIT_OK
        }
        Ended::GraceExpired(busy) => {
            tracing::error!(
                ledgers = busy.join(","),
                "grace period over with batches still in flight; exiting (they roll back and are read again at the next start)"
            );
            EXIT_PROBLEMS
        }
    }
}

/// The thread that turns SIGHUP into a reload and SIGTERM / SIGINT into a
/// stop (a second, later one exits at once).
fn spawn_signal_thread() -> anyhow::Result<mpsc::Receiver<Control>> {
    let (control_tx, control_rx) = mpsc::channel();
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping: Option<std::time::Instant> = None;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    tracing::info!("SIGHUP: reloading keys, signature policies and log level");
                    let _ = control_tx.send(Control::Reload);
                    continue;
                }
                // One stop request is often delivered twice at once:
                // `timeout` signals the child and then its process group,
                // a container runtime or a supervisor may do the same. Only
                // a signal that comes later is an operator insisting.
                if stopping.is_some_and(|at| at.elapsed() < SAME_STOP_REQUEST) {
                    continue;
                }
                if stopping.is_some() {
                    // Safe: SQLite rolls back an uncommitted transaction,
                    // and the checkpoint never passed what was committed.
                    tracing::warn!(signal, "second signal: exiting now");
                    std::process::exit(128 + signal);
                }
                stopping = Some(std::time::Instant::now());
                tracing::info!(
                    signal,
                    "stopping: committing what is in flight (a second signal exits at once)"
                );
                let _ = control_tx.send(Control::Stop);
            }
        })?;
    Ok(control_rx)
}
