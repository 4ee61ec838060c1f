//! The watch on the mirror's writes. A write that does not return (a
//! hung or frozen disk, a failing device) blocks the runner for ever, and
//! with it everything the runner would report: so a thread of its own
//! looks, once a second, how long the write under way has lasted. Past
//! [`COMMIT_DEADLINE`] every ledger is unready with the reason, and its
//! lag is counted from the ledger files (the ledger's head read back from
//! the end of the live file) while nothing commits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::config::LedgerSettings;
use crate::mirror::CommitWatch;
use crate::telemetry::{LedgerMetrics, StatusBoard};

/// A write to the mirror that has not returned after this long makes every
/// ledger unready: a healthy commit takes milliseconds, a slow disk a
/// second or two.
pub(super) const COMMIT_DEADLINE: Duration = Duration::from_secs(10);

/// How often the watch looks.
const LOOK_EVERY: Duration = Duration::from_secs(1);

pub(super) struct StallWatch {
    pub(super) watch: CommitWatch,
    pub(super) db: PathBuf,
    pub(super) ledgers: Vec<(LedgerSettings, LedgerMetrics)>,
    pub(super) board: StatusBoard,
    pub(super) shared: Arc<Shared>,
}

impl StallWatch {
    /// Looks every second until the daemon stops.
    pub(super) fn run(self) {
        let mut stalled = false;
        while !self.shared.stopping() {
            std::thread::sleep(LOOK_EVERY);
            match self.watch.under_way_for() {
                Some(lasted) if lasted >= COMMIT_DEADLINE => {
                    if !stalled {
                        tracing::error!(
                            db = %self.db.display(),
                            waited = ?lasted,
                            "a write to the mirror has not returned: nothing is mirrored until it does (is its disk hung, frozen with fsfreeze, or failing?); every ledger is unready"
                        );
                    }
                    stalled = true;
                    self.mark(Some(lasted));
                }
                _ if stalled => {
                    tracing::warn!(db = %self.db.display(), "the stalled write to the mirror returned; mirroring goes on");
                    stalled = false;
                    self.mark(None);
                }
                _ => {}
            }
        }
    }

    /// Says on the board (and in the lag) that writes are stalled, or no
    /// longer.
    fn mark(&self, lasted: Option<Duration>) {
        let why = lasted.map(|d| {
            format!(
                "a write to the mirror {} has not returned for {} s (a hung or frozen disk?)",
                self.db.display(),
                d.as_secs()
            )
        });
        for (ledger, metrics) in &self.ledgers {
            if why.is_some() {
                metrics.record_seen(ledger.tail_config().live_head());
            }
            let lag = metrics.lag_events();
            self.board.update(&ledger.name, |s| {
                s.stalled = why.clone();
                s.lag_events = lag;
            });
        }
    }
}
