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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::schedule::{Next, Schedule, Taken};
use super::worker::Follower;
use crate::fleet::Doorbell;
use crate::mirror::{CommitWatch, Durability, SharedMirror};

/// Ledgers stepped in one transaction, at most.
const GROUP_MAX: usize = 256;

/// How often the runner, when it has nothing to do, looks whether the
/// mirror file was deleted or replaced (idle ledgers commit nothing that
/// would notice).
const MIRROR_CHECK: Duration = Duration::from_secs(1);

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
    let base = SharedMirror::new(db, watch, followers.len());
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
        let group = (turns.len() > 1)
            .then(|| base.begin_group())
            .and_then(|begun| {
                begun
                    .map_err(
                        |e| tracing::debug!(error = %e, "no group: each ledger commits on its own"),
                    )
                    .ok()
            });
        let durability = group.as_ref().map_or(Durability::Alone, Durability::Staged);
        let mut nexts: Vec<Next> = turns
            .iter()
            .map(|t| followers[t.ledger].step(t.wake, &base, durability))
            .collect();
        if let Some(group) = group {
            if let Err(e) = group.commit() {
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
