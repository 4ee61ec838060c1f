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
//! even a panic) starts again from its checkpoint after a backoff, and says
//! so in the logs, the metrics and `/readyz`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{LedgerSettings, Overrides, RunSettings, Settings};
use crate::ledger::{KeyRing, SignaturePolicy};
use crate::logging::LogControl;
use crate::mirror::{Access, Mirror};
use crate::shipper::{Batching, ShipError, Shipper};
use crate::telemetry::{LedgerMetrics, StatusBoard, Telemetry};

/// Why a worker thread wakes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Something changed in the ledger's directory.
    Files,
    /// The keys or signature policies were reloaded.
    Reload,
    Stop,
}

/// What SIGHUP can change without a restart.
#[derive(Debug, Clone)]
struct Reloadable {
    generation: u64,
    keys: KeyRing,
    policies: HashMap<String, SignaturePolicy>,
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
            keys: settings.keys.clone(),
            policies: policies(&settings.ledgers),
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
                batching: Batching {
                    max_events: settings.batch_max_events,
                    max_wait: settings.run.batch_max_wait,
                },
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
        let reloadable = Reloadable {
            generation: previous.generation + 1,
            keys: next.keys.clone(),
            policies: policies(&next.ledgers),
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

fn policies(ledgers: &[LedgerSettings]) -> HashMap<String, SignaturePolicy> {
    ledgers
        .iter()
        .map(|l| (l.name.clone(), l.signatures))
        .collect()
}

/// One ledger's thread.
struct Worker {
    ledger: LedgerSettings,
    db: PathBuf,
    batching: Batching,
    poll: Duration,
    shared: Arc<Shared>,
    metrics: LedgerMetrics,
    board: StatusBoard,
    /// Handed to the file watcher.
    wake_tx: Sender<Wake>,
}

/// Backoff after a failure: doubles from 250 ms up to 5 s (short enough
/// that mirroring resumes promptly once a disk has space again).
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Worker {
    fn run(self, wake: Receiver<Wake>) {
        let name = self.ledger.name.clone();
        let mut backoff = BACKOFF_FIRST;
        loop {
            let began = Instant::now();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.follow(&wake)));
            let trouble = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(e)) => {
                    if matches!(e.downcast_ref::<ShipError>(), Some(ShipError::Mirror(_)))
                        || e.downcast_ref::<crate::mirror::MirrorError>().is_some()
                    {
                        self.metrics.commit_failures.inc();
                    }
                    let hint = crate::commands::hint_for(&e).unwrap_or_default();
                    tracing::error!(
                        ledger = %name,
                        error = format!("{e:#}"),
                        hint,
                        retry_in = ?backoff,
                        "ledger worker failed; nothing is lost: it starts again from its checkpoint"
                    );
                    if hint.is_empty() {
                        format!("{e:#}")
                    } else {
                        format!("{e:#} (hint: {hint})")
                    }
                }
                Err(_) => {
                    tracing::error!(ledger = %name, retry_in = ?backoff, "ledger worker panicked; it starts again from its checkpoint");
                    "the worker panicked".to_owned()
                }
            };
            // A worker that ran well for a while starts its backoff afresh.
            if began.elapsed() > BACKOFF_MAX * 2 {
                backoff = BACKOFF_FIRST;
            }
            self.metrics.worker_restarts.inc();
            self.metrics.mirror_unavailable.set(1);
            self.board
                .update(&name, |s| s.trouble = Some(format!("{trouble} (retrying)")));
            if self.wait(&wake, backoff) == Some(Wake::Stop) || self.shared.stopping() {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Waits for a wake-up or `timeout`; drains queued wake-ups (one
    /// catch-up serves them all). Returns the strongest one seen.
    fn wait(&self, wake: &Receiver<Wake>, timeout: Duration) -> Option<Wake> {
        let first = match wake.recv_timeout(timeout) {
            Ok(w) => Some(w),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Wake::Stop),
        };
        let mut strongest = first;
        while let Ok(w) = wake.try_recv() {
            strongest = match (strongest, w) {
                (Some(Wake::Stop), _) | (_, Wake::Stop) => Some(Wake::Stop),
                (Some(Wake::Reload), _) | (_, Wake::Reload) => Some(Wake::Reload),
                _ => Some(Wake::Files),
            };
        }
        strongest
    }

    /// Follows the ledger until a stop; `Err` on a failure (the caller
    /// backs off and calls again, from the checkpoint).
    fn follow(&self, wake: &Receiver<Wake>) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let name = &self.ledger.name;
        let mirror = Mirror::open(&self.db, Access::ReadWrite)
            .with_context(|| format!("ledger `{name}`: opening the mirror"))?;
        let mut config = self.shared.current();
        let mut ledger = self.ledger.clone();
        if let Some(p) = config.policies.get(name) {
            ledger.signatures = *p;
        }
        let mut shipper = Shipper::new(ledger, config.keys.clone(), mirror, self.batching)?;
        let mut record_judged = shipper.rejudge_if_changed()?;
        if let Ok(Some(seq)) = crate::producer::last_seq_in(&self.ledger.path) {
            let state = shipper.state();
            self.metrics.record_heads(
                state.head.map(|h| h.seq),
                state.anchor.map(|h| h.seq),
                Some(seq),
            );
        }
        self.publish(&shipper, false);
        let mut watcher = watch(&self.ledger.path, self.wake_tx.clone());
        loop {
            let latest = self.shared.current();
            if latest.generation != config.generation {
                config = latest;
                let policy = config
                    .policies
                    .get(name)
                    .copied()
                    .unwrap_or(shipper.settings().signatures);
                shipper.reconfigure(config.keys.clone(), policy)?;
                record_judged = true;
            }
            if shipper.state().halt.is_none() {
                let (metrics, board) = (&self.metrics, &self.board);
                // After every batch, so that a long catch-up shows its lag.
                let mut observe = |b: &crate::shipper::BatchStats<'_>| {
                    metrics.record_batch(b);
                    let lag = metrics.lag_events();
                    board.update(name, |s| s.lag_events = lag);
                };
                shipper.catch_up(&self.shared.stop, &mut observe)?;
                if record_judged {
                    shipper.record_judged_with()?;
                    record_judged = false;
                }
                self.metrics.set_lag_bytes(shipper.lag_bytes());
            }
            self.publish(&shipper, true);
            self.metrics.mirror_unavailable.set(0);
            if self.shared.stopping() {
                return Ok(());
            }
            if self.wait(wake, self.poll) == Some(Wake::Stop) {
                return Ok(());
            }
            if watcher.is_none() {
                watcher = watch(&self.ledger.path, self.wake_tx.clone());
            }
        }
    }

    /// Tells the status board and the gauges where the ledger stands;
    /// `healthy` after a catch-up went through (clears a past trouble).
    fn publish(&self, shipper: &Shipper, healthy: bool) {
        let state = shipper.state();
        let halted = state.halt.as_ref().map(ToString::to_string);
        self.metrics.set_halted(halted.is_some());
        let lag = self.metrics.lag_events();
        self.board.update(&self.ledger.name, |s| {
            s.halted = halted;
            if healthy {
                s.trouble = None;
            }
            s.lag_events = lag;
        });
    }
}

/// Watches the ledger's directory; file events for the ledger's files wake
/// the worker. `None` when the directory cannot be watched (yet): polling
/// carries on, and the worker tries again after each poll.
fn watch(live: &Path, tx: Sender<Wake>) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher as _};
    let dir = live.parent()?.to_path_buf();
    let name = live.file_name()?.to_str()?.to_owned();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        // Our own reads show up as access events: they must not wake us.
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let ours = event.paths.iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == name || crate::tail::identity::is_rotated_name(&name, n))
        });
        if ours || event.paths.is_empty() {
            let _ = tx.send(Wake::Files);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!(error = %e, "no file watcher: polling only");
            return None;
        }
    };
    match watcher.watch(&dir, RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot watch the ledger's folder yet: polling");
            None
        }
    }
}

/// What a file looked like: identity, size, modification and change times
/// (the change time moves with any write, and no user can set it back).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    name: std::ffi::OsString,
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// Stamps of the ledger's files (live and rotated) and of the database
/// and its WAL, sorted by name.
fn stamps(live: &Path, db: &Path) -> Vec<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut add = |path: &Path| {
        if let Ok(m) = std::fs::metadata(path) {
            out.push(FileStamp {
                name: path.as_os_str().to_owned(),
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            });
        }
    };
    add(db);
    add(&PathBuf::from(format!("{}-wal", db.display())));
    add(live);
    if let (Some(dir), Some(name)) = (live.parent(), live.file_name().and_then(|n| n.to_str())) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_str()
                    .is_some_and(|n| crate::tail::identity::is_rotated_name(name, n))
                {
                    add(&e.path());
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The periodic full parity check (contract §5), on its own thread with its
/// own read-only connection.
struct ParityChecker {
    db: PathBuf,
    ledgers: Vec<LedgerSettings>,
    run: RunSettings,
    interval: Duration,
    shared: Arc<Shared>,
    metrics: Vec<(String, LedgerMetrics)>,
}

impl ParityChecker {
    fn run(self, stop: Receiver<()>) {
        // The first check comes soon after start (tampering while the
        // sidecar was down shows quickly), then every interval.
        let mut wait = self.interval.min(Duration::from_secs(10));
        let mut last_checked: HashMap<String, Vec<FileStamp>> = HashMap::new();
        loop {
            match stop.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            for (ledger, (_, metrics)) in self.ledgers.iter().zip(&self.metrics) {
                if self.shared.stopping() {
                    return;
                }
                // Nothing changed since the last full check (no file of the
                // ledger, not the database): its result stands, and an idle
                // sidecar stays idle whatever the ledger's size.
                let stamps = stamps(&ledger.path, &self.db);
                if last_checked.get(&ledger.name) == Some(&stamps) {
                    metrics.record_parity_unchanged();
                    continue;
                }
                if self.check(ledger, metrics) {
                    last_checked.insert(ledger.name.clone(), stamps);
                }
            }
            wait = self.interval;
        }
    }

    /// One full check; `true` when it finished.
    fn check(&self, ledger: &LedgerSettings, metrics: &LedgerMetrics) -> bool {
        let mirror = match Mirror::open(&self.db, Access::ReadOnly) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(ledger = %ledger.name, error = %e, "parity check skipped: cannot open the mirror");
                return false;
            }
        };
        let keys = self.shared.current().keys.clone();
        let limit = self.run.parity_max_bytes_per_sec as f64;
        let started = Instant::now();
        let mut bytes = 0u64;
        let mut pace = |n: u64| {
            bytes += n;
            // Sleep whenever reading ran ahead of the allowed rate, in
            // short naps so that a stop is never kept waiting.
            let due = Duration::from_secs_f64(bytes as f64 / limit);
            while !self.shared.stopping() {
                let elapsed = started.elapsed();
                if due <= elapsed + Duration::from_millis(20) {
                    break;
                }
                std::thread::sleep((due - elapsed).min(Duration::from_millis(100)));
            }
            !self.shared.stopping()
        };
        match crate::parity::recheck(ledger, &keys, &mirror, &mut pace) {
            Ok(Some(p)) => {
                metrics.record_parity(&p);
                if p.holds() {
                    tracing::debug!(ledger = %ledger.name, archived = p.archived, took = ?started.elapsed(), "parity holds");
                } else {
                    let examples: Vec<String> = p
                        .examples
                        .iter()
                        .take(3)
                        .map(|e| format!("{} seq {}: {}", e.kind, e.seq, e.detail))
                        .collect();
                    tracing::warn!(
                        ledger = %ledger.name,
                        missing_in_sqlite = p.missing_in_sqlite,
                        missing_in_jsonl = p.missing_in_jsonl,
                        mismatched = p.mismatched,
                        examples = examples.join("; "),
                        "parity does not hold: the ledger files and the mirror differ"
                    );
                }
            }
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(ledger = %ledger.name, error = %e, "parity check failed; trying again at the next interval");
                return false;
            }
        }
        true
    }
}
