//! The runner: the one thread that steps the ledgers of `run`, and writes
//! them through one SQLite connection.
//!
//! SQLite takes one writer at a time whatever the number of threads, so
//! one runner loses nothing (examining lines, the costly part, runs on the
//! verifier pool), and it can do what many writers cannot: when several
//! ledgers are queued it steps up to [`GROUP_MAX`] of them inside one
//! transaction (each ledger's batch a savepoint), so that a thousand
//! ledgers each receiving a few events a second cost a few commits a
//! second, not thousands. Rows and checkpoints still go in together: a
//! group commits whole or not at all, and after a failed group every
//! ledger in it reads its checkpoint again.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::schedule::{Next, Schedule, Taken};
use super::worker::Follower;
use crate::fleet::Doorbell;
use crate::mirror::{Access, CommitWatch, Mirror, MirrorError};

/// Ledgers stepped in one transaction, at most.
const GROUP_MAX: usize = 256;

/// Within a group a ledger with a backlog gives way after this long, so
/// that the group commits (and its rows become visible) promptly.
pub(super) const GROUP_SLICE: Duration = Duration::from_millis(20);

/// The shared connection's page cache: the one connection of all the
/// ledgers can afford what a thousand could not.
const CACHE_KIB: u32 = 64 * 1024;

/// How often the runner, when it has nothing to do, looks whether the
/// mirror file was deleted or replaced (idle ledgers commit nothing that
/// would notice).
const MIRROR_CHECK: Duration = Duration::from_secs(1);

/// The connection the ledgers share (opened again when the mirror file
/// is replaced).
pub(super) struct Base {
    db: PathBuf,
    mirror: RefCell<Option<Mirror>>,
    /// Marks every write of the shared connection (see `stall`).
    watch: CommitWatch,
}

impl Base {
    /// A handle for one ledger on the shared connection.
    pub(super) fn share(&self) -> Result<Mirror, MirrorError> {
        let mut base = self.mirror.borrow_mut();
        // A connection to a file no longer at the path is let go.
        let mirror = match base.take().filter(|m| m.check_in_place().is_ok()) {
            Some(m) => m,
            None => {
                let mut m = Mirror::open(&self.db, Access::ReadWrite)?;
                m.set_cache_kib(CACHE_KIB)?;
                m.set_commit_watch(self.watch.clone());
                m
            }
        };
        let shared = mirror.share();
        *base = Some(mirror);
        Ok(shared)
    }

    /// The mirror file was deleted or replaced under the connection.
    fn replaced(&self) -> bool {
        self.mirror
            .borrow()
            .as_ref()
            .is_some_and(|m| m.check_in_place().is_err())
    }

    fn begin(&self) -> bool {
        let base = self.mirror.borrow();
        base.as_ref().is_some_and(|m| match m.begin_group() {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "no group: each ledger commits on its own");
                false
            }
        })
    }

    fn end(&self) -> Result<(), MirrorError> {
        match self.mirror.borrow().as_ref() {
            Some(m) => m.end_group(),
            None => Ok(()),
        }
    }
}

/// Steps ledgers until every one has finished (after a stop).
///
/// `bell` (with `[postgres]`) is rung for each ledger stepped: the fleet
/// shipper looks for its new rows at once. Every write marks `watch`.
pub(super) fn serve(
    mut followers: Vec<Follower>,
    schedule: Arc<Schedule>,
    db: PathBuf,
    bell: Option<Arc<Doorbell>>,
    watch: CommitWatch,
) {
    let base = Base {
        db,
        mirror: RefCell::new(None),
        watch,
    };
    loop {
        let first = match schedule.take_within(MIRROR_CHECK) {
            Taken::Turn(t) => t,
            Taken::Finished => return,
            Taken::Idle => {
                if base.replaced() {
                    // Every ledger finds out on its next step, and opens
                    // the mirror the path names now.
                    schedule.wake_all(super::Wake::Files);
                }
                continue;
            }
        };
        let mut turns = vec![first];
        while turns.len() < GROUP_MAX {
            match schedule.try_take() {
                Some(t) => turns.push(t),
                None => break,
            }
        }
        let grouped = turns.len() > 1 && base.begin();
        let mut nexts: Vec<Next> = turns
            .iter()
            .map(|t| followers[t.ledger].step(t.wake, &base, grouped))
            .collect();
        if grouped {
            if let Err(e) = base.end() {
                tracing::error!(
                    ledgers = turns.len(),
                    error = %e,
                    "a group commit failed: nothing of it was written; each of its ledgers starts again from its checkpoint"
                );
                for (t, next) in turns.iter().zip(nexts.iter_mut()) {
                    if *next != Next::Finished {
                        *next = followers[t.ledger].lost(&e);
                    }
                }
            }
        }
        for (t, next) in turns.into_iter().zip(nexts) {
            if let Some(bell) = &bell {
                bell.ring(t.ledger);
            }
            schedule.done(t.ledger, next);
        }
    }
}
