//! One ledger's thread in `run`: follows the ledger (notify wake-ups, a
//! stat poll as the guarantee), catches up, takes reloads, and backs off
//! and starts again from its checkpoint after any failure.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Shared, Wake};
use crate::config::LedgerSettings;
use crate::mirror::{Access, Mirror, MirrorError};
use crate::shipper::{Batching, ShipError, Shipper};
use crate::telemetry::{LedgerMetrics, StatusBoard};

/// Backoff after a failure: doubles from 250 ms up to 5 s (short enough
/// that mirroring resumes promptly once a disk has space again).
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One ledger's thread.
pub(super) struct Worker {
    pub(super) ledger: LedgerSettings,
    pub(super) db: PathBuf,
    pub(super) batching: Batching,
    pub(super) poll: Duration,
    pub(super) shared: Arc<Shared>,
    pub(super) metrics: LedgerMetrics,
    pub(super) board: StatusBoard,
    /// Handed to the file watcher.
    pub(super) wake_tx: Sender<Wake>,
}

impl Worker {
    pub(super) fn run(self, wake: Receiver<Wake>) {
        let name = self.ledger.name.clone();
        let mut backoff = BACKOFF_FIRST;
        loop {
            let began = Instant::now();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.follow(&wake)));
            let trouble = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(e)) => {
                    let mirror_error =
                        e.downcast_ref::<MirrorError>()
                            .or(match e.downcast_ref::<ShipError>() {
                                Some(ShipError::Mirror(m)) => Some(m),
                                _ => None,
                            });
                    if mirror_error.is_some() {
                        self.metrics.commit_failures.inc();
                    }
                    let hint = crate::commands::hint_for(&e).unwrap_or_default();
                    if matches!(mirror_error, Some(MirrorError::Replaced { .. })) {
                        tracing::error!(
                            ledger = %name,
                            db = %self.db.display(),
                            error = format!("{e:#}"),
                            "THE MIRROR FILE WAS DELETED OR REPLACED while running: nothing more goes into the old file; the mirror at the path is opened again (a missing one is created and rebuilt from the ledger's files)"
                        );
                    } else {
                        tracing::error!(
                            ledger = %name,
                            error = format!("{e:#}"),
                            hint,
                            retry_in = ?backoff,
                            "ledger worker failed; nothing is lost: it starts again from its checkpoint"
                        );
                    }
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
        let mut shipper = Shipper::new(config.ledger(&self.ledger), mirror, self.batching)?;
        let mut record_judged = shipper.rejudge_if_changed()?;
        let state = shipper.state();
        self.metrics.record_heads(
            state.head.map(|h| h.seq),
            state.anchor.map(|h| h.seq),
            shipper.head_in_live_file(),
        );
        self.publish(&shipper, false);
        let mut watcher = watch(&self.ledger.path, self.wake_tx.clone());
        // A ledger halted before this start is judged again once: if the
        // cause is gone (the missing file is back), it goes on.
        let mut starting = true;
        // While halted nothing is read, but the lag behind the halt is
        // still shown: worked out again whenever a file changed.
        let mut halted_lag_for: Option<Vec<super::parity::FileStamp>> = None;
        let mut waiting = false;
        loop {
            let latest = self.shared.current();
            if latest.generation != config.generation {
                config = latest;
                let now = config.ledger(&self.ledger);
                let was = shipper.settings();
                if now.keys != was.keys || now.signatures != was.signatures {
                    record_judged = true;
                }
                shipper.reconfigure(now.keys, now.signatures)?;
            }
            if shipper.state().halt.is_none() || starting {
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
            }
            starting = false;
            self.note_waiting(&shipper, &mut waiting);
            if shipper.state().halt.is_none() {
                self.metrics.set_lag_bytes(shipper.lag_bytes()?);
                halted_lag_for = None;
            } else {
                let files_now = super::parity::stamps(&self.ledger.path, None);
                if halted_lag_for.as_ref() != Some(&files_now) {
                    // Halted: what waits behind the halt, from the
                    // checkpoint and a fresh look at the files.
                    self.metrics.set_lag_bytes(shipper.lag_bytes()?);
                    let state = shipper.state();
                    self.metrics.record_heads(
                        state.head.map(|h| h.seq),
                        state.anchor.map(|h| h.seq),
                        shipper.head_in_live_file(),
                    );
                    halted_lag_for = Some(files_now);
                }
            }
            // An idle ledger commits nothing, so the mirror being deleted
            // is looked for at every wake-up too, not only at commits.
            shipper.mirror().check_in_place()?;
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

    /// A ledger with no file at all yet is waited for (an application that
    /// has not written yet is normal), but a typo in its path must not go
    /// unseen: said once in the log, and on the status board (`/readyz`'s
    /// text, still ready) until the file appears.
    fn note_waiting(&self, shipper: &Shipper, waiting: &mut bool) {
        let now = !shipper.following()
            && shipper.state().halt.is_none()
            && matches!(
                crate::tail::identity::any_file_exists(&self.ledger.path),
                Ok(false)
            );
        if now != *waiting {
            let path = self.ledger.path.display().to_string();
            if now {
                tracing::info!(ledger = %self.ledger.name, file = %path, "waiting for the ledger's file: it does not exist yet (nor any rotated file beside it)");
            } else {
                tracing::info!(ledger = %self.ledger.name, file = %path, "the ledger's file is there: following it");
            }
            *waiting = now;
            self.board.update(&self.ledger.name, |s| {
                s.waiting_for = now.then_some(path);
            });
        }
    }

    /// Tells the status board and the gauges where the ledger stands;
    /// `healthy` after a catch-up went through (clears a past trouble).
    fn publish(&self, shipper: &Shipper, healthy: bool) {
        let state = shipper.state();
        let halted = state.halt.as_ref().map(ToString::to_string);
        let verdict = state.halt.as_ref().map(|h| h.verdict.as_str().to_owned());
        self.metrics.set_halted(halted.is_some());
        let lag = self.metrics.lag_events();
        self.board.update(&self.ledger.name, |s| {
            s.halted = halted;
            s.halt_verdict = verdict;
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
