//! The daemon behind `ledgertail run` (contract §4, §5): one worker thread
//! per ledger, the parity thread, the HTTP server, signals, reloads and a
//! graceful stop.
//!
//! Work that blocks stays on plain threads: each ledger's worker owns its
//! own SQLite connection and [`Shipper`], wakes on a `notify` event from
//! the ledger's directory or, failing that, every `poll_interval` (notify
//! speeds things up; polling is the guarantee), and catches up. tokio runs
//! only the HTTP server ([`crate::serve`]).
//!
//! One stop fans out: the stop flag plus a [`Wake::Stop`] in every
//! worker's channel. Workers check the flag between batches, never in the
//! middle of a commit, so a stop always lands on a committed checkpoint.
//! A worker that fails (database locked, disk full, a file it cannot read,
//! the mirror deleted under it, even a panic) starts again from its
//! checkpoint after a backoff, and says so in the logs, the metrics and
//! `/readyz`.
//!
//! [`worker`] holds a ledger's thread; [`parity`] the periodic check.

mod parity;
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
use worker::Worker;

/// Why a worker thread wakes up.
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
}

impl Shared {
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
    workers: Vec<(String, Sender<Wake>, JoinHandle<()>)>,
    parity: Option<(Sender<()>, JoinHandle<()>)>,
    log: Option<LogControl>,
}

impl Daemon {
    /// Starts a worker per ledger and the parity thread.
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
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            reloadable: RwLock::new(Arc::new(reloadable)),
        });
        let mut workers = Vec::new();
        let mut all_metrics = Vec::new();
        for ledger in &settings.ledgers {
            let (tx, rx) = mpsc::channel();
            let metrics = telemetry.ledger(&ledger.name);
            all_metrics.push((ledger.name.clone(), metrics.clone()));
            let worker = Worker {
                ledger: ledger.clone(),
                db: settings.db.clone(),
                batching: Batching::from_settings(&settings),
                poll: settings.run.poll_interval,
                shared: shared.clone(),
                metrics,
                board: board.clone(),
                wake_tx: tx.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("ledger-{}", ledger.name))
                .spawn(move || worker.run(rx))?;
            workers.push((ledger.name.clone(), tx, handle));
        }
        let (parity_tx, parity_rx) = mpsc::channel();
        let parity = ParityChecker {
            db: settings.db.clone(),
            ledgers: settings.ledgers.clone(),
            run: settings.run.clone(),
            interval: settings.parity_interval,
            shared: shared.clone(),
            metrics: all_metrics,
        };
        let parity_handle = std::thread::Builder::new()
            .name("parity".into())
            .spawn(move || parity.run(parity_rx))?;
        Ok(Daemon {
            settings,
            overrides,
            shared,
            workers,
            parity: Some((parity_tx, parity_handle)),
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
        let next = match Settings::load(&self.overrides) {
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
        let same_ledgers = next.ledgers.len() == self.settings.ledgers.len()
            && next
                .ledgers
                .iter()
                .zip(&self.settings.ledgers)
                .all(|(a, b)| a.name == b.name && a.path == b.path);
        if next.db != self.settings.db
            || next.listen != self.settings.listen
            || !same_ledgers
            || next.run != self.settings.run
            || next.parity_interval != self.settings.parity_interval
            || next.batch_max_events != self.settings.batch_max_events
        {
            tracing::warn!("reload: only keys, signature policies and the log level change without a restart; other changes wait for the next start");
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
        for (name, tx, _) in &self.workers {
            if tx.send(Wake::Reload).is_err() {
                tracing::warn!(ledger = %name, "reload: the ledger's worker is gone");
            }
        }
    }

    /// Stops reading, lets every worker commit what is in flight, and waits
    /// for them up to the grace period.
    pub fn stop(mut self) -> Ended {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, tx, _) in &self.workers {
            let _ = tx.send(Wake::Stop);
        }
        if let Some((tx, _)) = &self.parity {
            let _ = tx.send(());
        }
        let deadline = Instant::now() + self.settings.run.shutdown_grace;
        while Instant::now() < deadline && self.workers.iter().any(|(_, _, h)| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let busy: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, _, h)| !h.is_finished())
            .map(|(n, _, _)| n.clone())
            .collect();
        if !busy.is_empty() {
            return Ended::GraceExpired(busy);
        }
        for (_, _, h) in self.workers.drain(..) {
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
