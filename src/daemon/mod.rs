//! The daemon behind `ledgertail run` (contract §4, §5): the ledgers'
//! runners, the parity thread, the HTTP server, signals, reloads and a
//! graceful stop.
//!
//! Threads are bounded by the cores, not by the ledgers: one runner steps
//! whichever ledgers are queued ([`schedule`]), writing them through one
//! connection, several in one transaction ([`runner`]); one verifier pool
//! examines every ledger's lines ([`crate::verifier::Pool`]), one file
//! watcher serves every folder ([`watch`]). A waiting ledger holds its
//! SQLite connection and open files, but no thread. It is queued by a
//! file event for its files ([`watch`]), at the end of its pace, by its poll timer (every `poll_interval`
//! where file events cannot be had or were caught missing a change; a
//! rare safety net where they work), by a reload or by the stop. tokio
//! runs only the HTTP server ([`crate::serve`]).
//!
//! One stop fans out: the stop flag plus a [`Wake::Stop`] for every
//! ledger. A step checks the flag between batches, never in the middle of
//! a commit, so a stop always lands on a committed checkpoint. A ledger
//! whose step fails (database locked, disk full, a file it cannot read,
//! the mirror deleted under it, even a panic) starts again from its
//! checkpoint after a backoff, and says so in the logs, the metrics and
//! `/readyz`.
//!
//! [`worker`] holds a ledger's step; [`parity`] the periodic check;
//! [`stall`] the watch on writes to the mirror that do not return.

mod parity;
mod runner;
mod schedule;
mod stall;
mod watch;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{LedgerSettings, Overrides, Settings};
use crate::logging::LogControl;
use crate::shipper::Batching;
use crate::telemetry::{StatusBoard, Telemetry};
use parity::ParityChecker;
use schedule::Schedule;
use worker::{Context, Follower};

/// Why a ledger is queued (besides its timer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Something changed in the ledger's directory.
    Files,
    /// The keys or signature policies were reloaded.
    Reload,
    Stop,
}

/// What SIGHUP can change without a restart: each ledger's trusted keys
/// and signature policy (the rest of its settings as at start).
#[derive(Debug, Clone)]
struct Reloadable {
    generation: u64,
    ledgers: HashMap<String, LedgerSettings>,
}

impl Reloadable {
    /// The current settings of one ledger (`fallback` if it is unknown).
    fn ledger(&self, fallback: &LedgerSettings) -> LedgerSettings {
        self.ledgers
            .get(&fallback.name)
            .cloned()
            .unwrap_or_else(|| fallback.clone())
    }
}

/// State every thread shares.
struct Shared {
    stop: AtomicBool,
    reloadable: RwLock<Arc<Reloadable>>,
    /// Mirrored lines the parity check found changed, by ledger: the
    /// ledger's follower halts on them (the parity thread only reads).
    rewrites: std::sync::Mutex<HashMap<String, crate::parity::Rewrite>>,
    /// Where each ledger's parity check stands, for its follower to keep
    /// in the mirror with its next commit or at the stop (the parity
    /// thread only reads): a restart goes on from there.
    parity_states: std::sync::Mutex<HashMap<String, String>>,
}

impl Shared {
    fn new(reloadable: Reloadable) -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            reloadable: RwLock::new(Arc::new(reloadable)),
            rewrites: Default::default(),
            parity_states: Default::default(),
        }
    }

    /// Where the parity check of `ledger` stands now (its text form).
    fn report_parity_state(&self, ledger: &str, text: String) {
        self.parity_states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ledger.to_owned(), text);
    }

    fn take_parity_state(&self, ledger: &str) -> Option<String> {
        self.parity_states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(ledger)
    }

    /// The parity check found a mirrored line changed: the ledger halts.
    fn report_rewrite(&self, ledger: &str, rewrite: crate::parity::Rewrite) {
        self.rewrites
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(ledger.to_owned())
            .or_insert(rewrite);
    }

    fn take_rewrite(&self, ledger: &str) -> Option<crate::parity::Rewrite> {
        self.rewrites
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(ledger)
    }

    fn current(&self) -> Arc<Reloadable> {
        self.reloadable
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Messages to the daemon's control loop (from the signal thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Reload,
    Stop,
}

/// How `run` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Every in-flight batch committed.
    Clean,
    /// The grace period ran out; these ledgers were still busy.
    GraceExpired(Vec<String>),
}

/// A running daemon: its threads and the handles to steer them.
pub struct Daemon {
    settings: Settings,
    overrides: Overrides,
    shared: Arc<Shared>,
    schedule: Arc<Schedule>,
    runner: Option<JoinHandle<()>>,
    parity: Option<(Sender<()>, JoinHandle<()>)>,
    /// The fleet uploader, with `[postgres]`.
    fleet: Option<crate::fleet::Running>,
    log: Option<LogControl>,
}

impl Daemon {
    /// Starts the runner (which follows every ledger) and the parity
    /// thread.
    pub fn start(
        settings: Settings,
        overrides: Overrides,
        telemetry: &Telemetry,
        board: &StatusBoard,
        log: Option<LogControl>,
    ) -> std::io::Result<Daemon> {
        let reloadable = Reloadable {
            generation: 0,
            ledgers: by_name(&settings.ledgers),
        };
        let shared = Arc::new(Shared::new(reloadable));
        let schedule = Arc::new(Schedule::new(settings.ledgers.len()));
        let watch = Arc::new(watch::Watch::start(
            schedule.clone(),
            settings.run.commit_interval,
        ));
        let context = Arc::new(Context {
            db: settings.db.clone(),
            batching: Batching::from_settings(&settings),
            poll: settings.run.poll_interval,
            pace: settings.run.commit_interval,
            shared: shared.clone(),
            board: board.clone(),
            pool: crate::verifier::Pool::per_core()?,
            watch,
            schedule: schedule.clone(),
        });
        let names: Vec<String> = settings.ledgers.iter().map(|l| l.name.clone()).collect();
        let fleet = match &settings.postgres {
            Some(pg) => Some(
                crate::fleet::Running::start(
                    pg,
                    names,
                    settings.db.clone(),
                    telemetry.clone(),
                    board.clone(),
                )
                .map_err(std::io::Error::other)?,
            ),
            None => None,
        };
        let bell = fleet.as_ref().map(|f| f.doorbell.clone());
        let mut all_metrics = Vec::new();
        for ledger in &settings.ledgers {
            all_metrics.push((ledger.name.clone(), telemetry.ledger(&ledger.name)));
        }
        // The followers hold the runner's connection: they are made on
        // its thread and never leave it.
        let commit_watch = crate::mirror::CommitWatch::default();
        let stall = stall::StallWatch {
            watch: commit_watch.clone(),
            db: settings.db.clone(),
            ledgers: settings
                .ledgers
                .iter()
                .cloned()
                .zip(all_metrics.iter().map(|(_, m)| m.clone()))
                .collect(),
            board: board.clone(),
            shared: shared.clone(),
        };
        // Not joined at the stop: it ends within a second of it.
        std::thread::Builder::new()
            .name("stall-watch".into())
            .spawn(move || stall.run())?;
        let runner = {
            let (schedule, context) = (schedule.clone(), context.clone());
            let ledgers: Vec<_> = settings
                .ledgers
                .iter()
                .cloned()
                .zip(all_metrics.iter().map(|(_, m)| m.clone()))
                .collect();
            std::thread::Builder::new()
                .name("runner".into())
                .spawn(move || {
                    let followers = ledgers
                        .into_iter()
                        .enumerate()
                        .map(|(index, (ledger, metrics))| {
                            Follower::new(index, ledger, metrics, context.clone())
                        })
                        .collect();
                    runner::serve(followers, schedule, context.db.clone(), bell, commit_watch);
                })?
        };
        let (parity_tx, parity_rx) = mpsc::channel();
        let parity = ParityChecker {
            db: settings.db.clone(),
            ledgers: settings.ledgers.clone(),
            run: settings.run.clone(),
            interval: settings.parity_interval,
            shared: shared.clone(),
            metrics: all_metrics,
            schedule: schedule.clone(),
        };
        let parity_handle = std::thread::Builder::new()
            .name("parity".into())
            .spawn(move || parity.run(parity_rx))?;
        Ok(Daemon {
            settings,
            overrides,
            shared,
            schedule,
            runner: Some(runner),
            parity: Some((parity_tx, parity_handle)),
            fleet,
            log,
        })
    }

    /// Serves control messages until a stop, then stops (see [`Daemon::stop`]).
    pub fn run_until_stopped(mut self, control: Receiver<Control>) -> Ended {
        loop {
            match control.recv() {
                Ok(Control::Reload) => self.reload(),
                Ok(Control::Stop) | Err(_) => return self.stop(),
            }
        }
    }

    /// SIGHUP: reads the configuration again; takes the trusted keys, the
    /// signature policies and the log level. Anything else needs a restart
    /// (and is said so). A configuration that does not load changes nothing.
    pub fn reload(&mut self) {
        let next =
            match Settings::load(&self.overrides).and_then(|s| s.only_this_host().map(|()| s)) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        hint = e.hint().unwrap_or_default(),
                        "reload refused: the configuration does not load; keeping the current one"
                    );
                    return;
                }
            };
        let later = restart_only_changes(&self.settings, &next);
        if !later.is_empty() {
            tracing::warn!(
                changed = %later.join(", "),
                "reload: these changes take effect only at the next start: restart ledgertail for them (keys, signature policies and the log level were reloaded)"
            );
        }
        let previous = self.shared.current();
        // Only keys and policies are taken; a ledger keeps the rest of its
        // settings until a restart.
        let ledgers = self
            .settings
            .ledgers
            .iter()
            .map(|now| {
                let mut l = now.clone();
                if let Some(new) = next.ledgers.iter().find(|n| n.name == now.name) {
                    l.keys = new.keys.clone();
                    l.signatures = new.signatures;
                }
                (l.name.clone(), l)
            })
            .collect();
        let reloadable = Reloadable {
            generation: previous.generation + 1,
            ledgers,
        };
        *self
            .shared
            .reloadable
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(reloadable);
        if let Some(log) = &self.log {
            match log.set_from_config(&next.log_level) {
                Ok(what) => tracing::info!("{what}"),
                Err(e) => tracing::error!(error = %e, "reload: log level unchanged"),
            }
        }
        tracing::info!(
            keys = next.keys.len(),
            "reloaded trusted keys and signature policies"
        );
        next.warn_about();
        self.settings.keys = next.keys;
        self.schedule.wake_all(Wake::Reload);
    }

    /// Stops reading, lets every worker commit what is in flight, and waits
    /// for them up to the grace period.
    pub fn stop(mut self) -> Ended {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.schedule.wake_all(Wake::Stop);
        if let Some((tx, _)) = &self.parity {
            let _ = tx.send(());
        }
        let deadline = Instant::now() + self.settings.run.shutdown_grace;
        while Instant::now() < deadline && self.runner.as_ref().is_some_and(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let busy: Vec<String> = self
            .schedule
            .unfinished()
            .into_iter()
            .filter_map(|i| self.settings.ledgers.get(i).map(|l| l.name.clone()))
            .collect();
        if !busy.is_empty() {
            return Ended::GraceExpired(busy);
        }
        // The rows are committed locally; the fleet uploader finishes its
        // transaction in flight (what it has not shipped, it ships after
        // the next start: the central head says where it was).
        if let Some(fleet) = self.fleet.take() {
            if !fleet.stop(deadline) {
                return Ended::GraceExpired(vec!["(shipping to PostgreSQL)".into()]);
            }
        }
        if let Some(h) = self.runner.take() {
            let _ = h.join();
        }
        if let Some((_, h)) = self.parity.take() {
            // The parity check stops at its next line; it holds no lock.
            let _ = h.join();
        }
        Ended::Clean
    }
}

fn by_name(ledgers: &[LedgerSettings]) -> HashMap<String, LedgerSettings> {
    ledgers
        .iter()
        .map(|l| (l.name.clone(), l.clone()))
        .collect()
}

/// What changed between two configurations that SIGHUP cannot take:
/// the names of the settings, for the log.
fn restart_only_changes(now: &Settings, next: &Settings) -> Vec<&'static str> {
    let same_ledgers = next.ledgers.len() == now.ledgers.len()
        && next
            .ledgers
            .iter()
            .zip(&now.ledgers)
            .all(|(a, b)| a.name == b.name && a.path == b.path);
    let mut changed = Vec::new();
    for (differs, name) in [
        (next.db != now.db, "db"),
        (next.listen != now.listen, "listen"),
        (!same_ledgers, "the [[ledger]] tables (names or paths)"),
        (
            next.run != now.run,
            "the run settings (batching, polling, grace, readiness)",
        ),
        (
            next.parity_interval != now.parity_interval,
            "parity_interval_secs",
        ),
        (
            next.batch_max_events != now.batch_max_events,
            "batch_max_events",
        ),
        (next.postgres != now.postgres, "[postgres]"),
        (next.tlog != now.tlog, "[tlog]"),
    ] {
        if differs {
            changed.push(name);
        }
    }
    changed
}
