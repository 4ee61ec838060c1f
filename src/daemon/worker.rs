//! One ledger in `run`: a [`Follower`] that a runner thread steps when the
//! ledger is woken (a file event, its poll timer, a reload, the stop). A
//! step catches up, takes a reload, and after any failure backs off and
//! starts again from the checkpoint. Between steps it holds its open
//! mirror connection and tailer, but no thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::schedule::{Next, Schedule};
use super::watch::{Watch, Watched};
use super::{Reloadable, Shared, Wake};
use crate::config::LedgerSettings;
use crate::mirror::{Durability, MirrorError, SharedMirror};
use crate::shipper::{Batching, ShipError, Shipper};
use crate::telemetry::{LedgerMetrics, StatusBoard};
use crate::verifier::{Pool, Verifiers};

/// The mirror's error behind a step's failure, if it was one.
fn mirror_error(e: &anyhow::Error) -> Option<&MirrorError> {
    e.downcast_ref::<MirrorError>()
        .or(match e.downcast_ref::<ShipError>() {
            Some(ShipError::Mirror(m)) => Some(m),
            _ => None,
        })
}

/// Within a group a ledger with a backlog gives way after this long, so
/// that the group commits (and its rows become visible) promptly.
const GROUP_SLICE: Duration = Duration::from_millis(20);

/// Backoff after a failure: doubles from 250 ms up to 5 s (short enough
/// that mirroring resumes promptly once a disk has space again).
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// While the ledger's folder is watched and its file events have not been
/// caught missing a change, the stat poll is only a safety net, this
/// rare: a thousand idle ledgers cost next to nothing.
const WATCHED_POLL: Duration = Duration::from_secs(60);

/// Timer steps that found lines no file event announced, in a row, before
/// the ledger is polled at `poll_interval` (one can be a race with an
/// event in flight; two are a filesystem that sends none, such as NFS).
const MISSES_BEFORE_POLLING: u32 = 2;

/// A step catching up a long backlog gives the other ledgers a turn after
/// this long (at a batch boundary, when any is waiting).
const SLICE: Duration = Duration::from_millis(200);

/// What a follower needs from the daemon.
pub(super) struct Context {
    pub(super) db: PathBuf,
    pub(super) batching: Batching,
    pub(super) poll: Duration,
    /// After a commit of new lines, file wake-ups wait this long (see
    /// `schedule`'s pacing); zero: served at once.
    pub(super) pace: Duration,
    pub(super) shared: Arc<Shared>,
    pub(super) board: StatusBoard,
    pub(super) pool: Pool,
    pub(super) watch: Arc<Watch>,
    pub(super) schedule: Arc<Schedule>,
}

/// One ledger: its settings, its gauges, and (between steps) its open
/// shipper.
pub(super) struct Follower {
    pub(super) index: usize,
    pub(super) ledger: LedgerSettings,
    pub(super) metrics: LedgerMetrics,
    pub(super) context: Arc<Context>,
    open: Option<Open>,
    backoff: Duration,
    /// Timer steps in a row that found unannounced lines.
    misses: u32,
    /// This step is a look no file event asked for: the one taken when
    /// the watch began (what it finds was not announced), or the one at
    /// the end of a steady stream's pace (the watcher may be resting
    /// between its rounds). What it finds is no miss of the file events.
    relook: bool,
    /// When the last pace ends (lines that come by then, or within one
    /// more pace, are a steady stream).
    paced_until: Option<std::time::Instant>,
    /// File events are trusted to announce every change.
    notify_trusted: bool,
}

/// A ledger being followed: what `follow` kept between wake-ups.
struct Open {
    shipper: Shipper,
    config: Arc<Reloadable>,
    record_judged: bool,
    /// The first step after opening judges a halted ledger again once: if
    /// the cause is gone (the missing file is back), it goes on.
    starting: bool,
    /// While halted nothing is read, but the lag behind the halt is still
    /// shown: worked out again whenever a file changed.
    halted_lag_for: Option<Vec<super::parity::FileStamp>>,
    waiting: bool,
    since: Instant,
    /// Where the parity check stands, not yet kept in the mirror: it is
    /// written with the ledger's next commit, or at the stop. Never on its
    /// own: a write of an idle ledger's mirror would look, to the next
    /// parity round, like an edit of the database, and make it full.
    parity_state: Option<String>,
}

impl Open {
    /// Keeps where the parity check stands in the mirror (see
    /// `parity_state`).
    fn keep_parity_state(&mut self, ledger: &str) -> anyhow::Result<()> {
        if let Some(text) = self.parity_state.take() {
            let key = crate::parity::state_key(ledger);
            self.shipper.mirror().set_meta(&key, &text)?;
        }
        Ok(())
    }
}

/// What one step saw.
struct Stepped {
    /// It opened the ledger (a start, or after a failure).
    opened: bool,
    /// It read new lines.
    new_lines: bool,
    /// It stopped to give other ledgers a turn.
    yielded: bool,
}

impl Follower {
    pub(super) fn new(
        index: usize,
        ledger: LedgerSettings,
        metrics: LedgerMetrics,
        context: Arc<Context>,
    ) -> Follower {
        // A symlinked ledger's file may live in a folder not watched; on
        // a network or FUSE filesystem, file events miss other hosts'
        // writes.
        let remote = ledger
            .path
            .parent()
            .and_then(super::watch::remote_filesystem);
        if let Some(kind) = remote {
            tracing::info!(
                ledger = %ledger.name,
                file = %ledger.path.display(),
                filesystem = kind,
                "the ledger's folder is on a network or FUSE filesystem, whose file events miss other hosts' writes: polling every poll_interval_millis"
            );
        }
        let notify_trusted = !ledger.follow_symlink && remote.is_none();
        Follower {
            index,
            ledger,
            metrics,
            context,
            open: None,
            backoff: BACKOFF_FIRST,
            misses: 0,
            relook: false,
            paced_until: None,
            notify_trusted,
        }
    }

    /// One turn: catches up (or retries after a failure); says when to run
    /// again.
    /// `durability`: alone, or staged in the runner's group (see
    /// [`super::runner`]), where a backlog gives way sooner.
    pub(super) fn step(
        &mut self,
        wake: Option<Wake>,
        base: &SharedMirror,
        durability: Durability<'_>,
    ) -> Next {
        if wake == Some(Wake::Stop) || self.context.shared.stopping() {
            if let Some(mut open) = self.open.take() {
                // A stop is no reason to lose where parity stands.
                if let Some(text) = self.context.shared.take_parity_state(&self.ledger.name) {
                    open.parity_state = Some(text);
                }
                if let Err(e) = open.keep_parity_state(&self.ledger.name) {
                    tracing::warn!(ledger = %self.ledger.name, error = %e, "where the parity check stands was not kept: the next start checks in full");
                }
            }
            return Next::Finished;
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.advance(base, durability)
        }));
        let trouble = match outcome {
            Ok(Ok(stepped)) => {
                if self.context.shared.stopping() {
                    self.open = None;
                    return Next::Finished;
                }
                if stepped.yielded {
                    return Next::After(Duration::ZERO);
                }
                let poll = self.poll_after(wake, &stepped);
                let pace = self.context.pace;
                if stepped.new_lines && !poll.is_zero() && !pace.is_zero() {
                    let now = std::time::Instant::now();
                    // Lines again soon after the last pace: a steady
                    // stream, looked at again when this pace ends.
                    let relook = self.paced_until.is_some_and(|p| now <= p + pace);
                    self.relook = relook;
                    self.paced_until = Some(now + pace);
                    return Next::Paced { pace, poll, relook };
                }
                return Next::After(poll);
            }
            // An earlier batch's error ended the group's transaction: the
            // runner has every ledger of the group start again (`lost`).
            Ok(Err(e))
                if matches!(
                    mirror_error(&e),
                    Some(MirrorError::GroupLost { .. } | MirrorError::ForeignGroup { .. })
                ) =>
            {
                self.open = None;
                return Next::After(Duration::ZERO);
            }
            Ok(Err(e)) => self.failed(&e),
            Err(_) => {
                tracing::error!(ledger = %self.ledger.name, retry_in = ?self.backoff, "ledger worker panicked; it starts again from its checkpoint");
                "the worker panicked".to_owned()
            }
        };
        // A ledger that ran well for a while starts its backoff afresh.
        if self
            .open
            .take()
            .is_some_and(|o| o.since.elapsed() > BACKOFF_MAX * 2)
        {
            self.backoff = BACKOFF_FIRST;
        }
        self.metrics.mirror_unavailable.set(1);
        self.back_off(&trouble)
    }

    /// Says why the ledger starts again from its checkpoint, and when.
    fn back_off(&mut self, trouble: &str) -> Next {
        self.metrics.worker_restarts.inc();
        self.context.board.update(&self.ledger.name, |s| {
            s.trouble = Some(format!("{trouble} (retrying)"));
        });
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        Next::Backoff(wait)
    }

    /// The group this ledger's step was in did not commit: what the step
    /// did is gone, so the ledger reads its checkpoint again (after a
    /// short backoff, in case the cause lasts).
    pub(super) fn lost(&mut self, e: &MirrorError) -> Next {
        self.open = None;
        self.metrics.commit_failures.inc();
        self.back_off(&e.to_string())
    }

    /// Logs a failure; returns what the status board shows.
    fn failed(&self, e: &anyhow::Error) -> String {
        let name = &self.ledger.name;
        let mirror_error = mirror_error(e);
        if mirror_error.is_some() {
            self.metrics.commit_failures.inc();
        }
        let hint = crate::hint::for_error(e).unwrap_or_default();
        if matches!(mirror_error, Some(MirrorError::Replaced { .. })) {
            tracing::error!(
                ledger = %name,
                db = %self.context.db.display(),
                error = format!("{e:#}"),
                "THE MIRROR FILE WAS DELETED OR REPLACED while running: nothing more goes into the old file; the mirror at the path is opened again (a missing one is created and rebuilt from the ledger's files)"
            );
        } else {
            tracing::error!(
                ledger = %name,
                error = format!("{e:#}"),
                hint,
                retry_in = ?self.backoff,
                "ledger worker failed; nothing is lost: it starts again from its checkpoint"
            );
        }
        if hint.is_empty() {
            format!("{e:#}")
        } else {
            format!("{e:#} (hint: {hint})")
        }
    }

    /// When to poll next: rarely while file events are trusted to announce
    /// every change, every `poll_interval` otherwise.
    fn poll_after(&mut self, wake: Option<Wake>, stepped: &Stepped) -> Duration {
        let poll = self.context.poll;
        let relook = std::mem::take(&mut self.relook);
        match self.context.watch.ledger(self.index, &self.ledger.path) {
            // A line appended between this step's read and the watch was
            // announced to no one: without another look it would wait for
            // the safety-net poll (a minute).
            Watched::Now => {
                self.relook = true;
                return Duration::ZERO;
            }
            Watched::No => return poll,
            Watched::Already if !self.notify_trusted => return poll,
            Watched::Already => {}
        }
        if stepped.new_lines && !stepped.opened && !relook {
            if wake.is_none() {
                self.misses += 1;
                if self.misses >= MISSES_BEFORE_POLLING {
                    self.notify_trusted = false;
                    tracing::warn!(
                        ledger = %self.ledger.name,
                        file = %self.ledger.path.display(),
                        poll = ?poll,
                        "file events did not announce new lines (a network or FUSE filesystem?): polling every poll_interval_millis from now on"
                    );
                    self.context.watch.renew(&self.ledger.path);
                    return poll;
                }
            } else {
                self.misses = 0;
            }
        }
        poll.max(WATCHED_POLL)
    }

    /// Opens the mirror and the shipper, from the checkpoint.
    fn open(&self, base: &SharedMirror) -> anyhow::Result<Open> {
        use anyhow::Context as _;
        let name = &self.ledger.name;
        let mirror = base
            .share()
            .with_context(|| format!("ledger `{name}`: opening the mirror"))?;
        let config = self.context.shared.current();
        let mut shipper = Shipper::with_verifiers(
            config.ledger(&self.ledger),
            mirror,
            self.context.batching,
            Verifiers::on(&self.context.pool),
        )?;
        let record_judged = shipper.rejudge_if_changed()?;
        let state = shipper.state();
        self.metrics.record_heads(
            state.head.map(|h| h.seq),
            state.anchor.map(|h| h.seq),
            shipper.head_in_live_file(),
        );
        self.publish(&shipper, false);
        Ok(Open {
            shipper,
            config,
            record_judged,
            starting: true,
            halted_lag_for: None,
            waiting: false,
            since: Instant::now(),
            parity_state: None,
        })
    }

    /// The body of a step: what `follow` did at each wake-up.
    fn advance(
        &mut self,
        base: &SharedMirror,
        durability: Durability<'_>,
    ) -> anyhow::Result<Stepped> {
        let opened = self.open.is_none();
        let mut open = match self.open.take() {
            Some(o) => o,
            None => self.open(base)?,
        };
        let mut stepped = Stepped {
            opened,
            new_lines: false,
            yielded: false,
        };
        self.advance_open(&mut open, &mut stepped, durability)?;
        self.open = Some(open);
        Ok(stepped)
    }

    fn advance_open(
        &self,
        open: &mut Open,
        stepped: &mut Stepped,
        durability: Durability<'_>,
    ) -> anyhow::Result<()> {
        let name = &self.ledger.name;
        let latest = self.context.shared.current();
        if latest.generation != open.config.generation {
            open.config = latest;
            let now = open.config.ledger(&self.ledger);
            let was = open.shipper.settings();
            if now.keys != was.keys || now.signatures != was.signatures {
                open.record_judged = true;
            }
            open.shipper.reconfigure(now.keys, now.signatures)?;
        }
        let shipper = &mut open.shipper;
        if let Some(rewrite) = self.context.shared.take_rewrite(name) {
            // The parity check found a mirrored line changed (a halt in
            // force already says why the ledger stopped).
            if shipper.state().halt.is_none() {
                shipper.halt_on(&rewrite, &mut crate::shipper::Report::default(), durability)?;
            }
        }
        if let Some(text) = self.context.shared.take_parity_state(name) {
            open.parity_state = Some(text);
        }
        if shipper.state().halt.is_none() || open.starting {
            let (metrics, board) = (&self.metrics, &self.context.board);
            // After every batch, so that a long catch-up shows its lag;
            // a halt goes to the board with the gauge, so that /readyz
            // never says ready while ledgertail_halted says 1.
            let mut observe = |b: &crate::shipper::BatchStats<'_>| {
                metrics.record_batch(b);
                let lag = metrics.lag_events();
                board.update(name, |s| {
                    s.lag_events = lag;
                    if let Some(h) = b.halt {
                        s.halted = Some(h.to_string());
                        s.halt_verdict = Some(h.verdict.as_str().to_owned());
                    }
                });
            };
            let began = Instant::now();
            let schedule = &self.context.schedule;
            // In a group the others wait for its commit; alone, only
            // the queued ones do.
            let yield_now = || {
                if durability.grouped() {
                    began.elapsed() >= GROUP_SLICE
                } else {
                    began.elapsed() >= SLICE && schedule.others_waiting()
                }
            };
            let stop = &self.context.shared.stop;
            let report = shipper.catch_up_until(stop, &yield_now, &mut observe, durability)?;
            stepped.new_lines = report.blank > 0 || report.verdicts.values().any(|n| *n > 0);
            stepped.yielded = report.yielded;
            // Written with a commit: the database changed anyway.
            if report.commits > 0 {
                if let Some(text) = open.parity_state.take() {
                    shipper
                        .mirror()
                        .set_meta(&crate::parity::state_key(name), &text)?;
                }
            }
            if open.record_judged && !report.yielded {
                shipper.record_judged_with()?;
                open.record_judged = false;
            }
        }
        open.starting = false;
        self.note_waiting(shipper, &mut open.waiting);
        if shipper.state().halt.is_none() {
            let lag_bytes = shipper.lag_bytes()?;
            self.metrics.set_lag_bytes(lag_bytes);
            open.halted_lag_for = None;
            // A ledger whose file is not there yet has not been read.
            let read = lag_bytes == 0 && !stepped.yielded && !open.waiting;
            self.context
                .board
                .update(&self.ledger.name, |s| s.files_read = read);
        } else {
            self.context
                .board
                .update(&self.ledger.name, |s| s.files_read = false);
            let files_now = super::parity::stamps(&self.ledger.path, None);
            if open.halted_lag_for.as_ref() != Some(&files_now) {
                // Halted: what waits behind the halt, from the checkpoint
                // and a fresh look at the files.
                self.metrics.set_lag_bytes(shipper.lag_bytes()?);
                let state = shipper.state();
                self.metrics.record_heads(
                    state.head.map(|h| h.seq),
                    state.anchor.map(|h| h.seq),
                    shipper.head_in_live_file(),
                );
                open.halted_lag_for = Some(files_now);
            }
        }
        // An idle ledger commits nothing, so the mirror being deleted is
        // looked for at every step too, not only at commits.
        shipper.mirror().check_in_place()?;
        self.publish(shipper, true);
        self.metrics.mirror_unavailable.set(0);
        Ok(())
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
            self.context.board.update(&self.ledger.name, |s| {
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
        self.context.board.update(&self.ledger.name, |s| {
            s.halted = halted;
            s.halt_verdict = verdict;
            if healthy {
                s.trouble = None;
            }
            s.lag_events = lag;
        });
    }
}
