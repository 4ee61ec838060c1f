//! The periodic full parity check of `run` (contract §5), on its own
//! thread with its own read-only connection, skipped while nothing changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use crate::config::{LedgerSettings, RunSettings};
use crate::mirror::{Access, Mirror};
use crate::parity::Checked;
use crate::telemetry::LedgerMetrics;

/// What a file looked like: identity, size, modification and change times
/// (the change time moves with any write, and no user can set it back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileStamp {
    name: std::ffi::OsString,
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// Stamps of the ledger's files (live and rotated) and, with `db`, of the
/// database and its WAL, sorted by name.
pub(super) fn stamps(live: &Path, db: Option<&Path>) -> Vec<FileStamp> {
    stamps_with(live, db, &mut Listings::default())
}

/// Folder listings taken once per parity round: a thousand ledgers in one
/// folder cost one listing, not a thousand.
#[derive(Default)]
pub(super) struct Listings(HashMap<PathBuf, Vec<std::ffi::OsString>>);

impl Listings {
    fn of(&mut self, dir: &Path) -> &[std::ffi::OsString] {
        self.0.entry(dir.to_path_buf()).or_insert_with(|| {
            std::fs::read_dir(dir)
                .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default()
        })
    }
}

/// [`stamps`], with the folders' listings shared across calls.
pub(super) fn stamps_with(
    live: &Path,
    db: Option<&Path>,
    listings: &mut Listings,
) -> Vec<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut add_with = |path: &Path, with_ctime: bool| {
        if let Ok(m) = std::fs::metadata(path) {
            out.push(FileStamp {
                name: path.as_os_str().to_owned(),
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                ctime_ns: if with_ctime {
                    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
                } else {
                    0
                },
            });
        }
    };
    if let Some(db) = db {
        add_with(db, true);
        // Not the WAL's change time: every connection that opens it as
        // root chowns it to the database's owner (SQLite does, to keep
        // them alike), which moves its ctime, so each parity round (a new
        // connection) looked like a change and checked every ledger again.
        // A write to the WAL moves its size or mtime.
        add_with(&PathBuf::from(format!("{}-wal", db.display())), false);
    }
    let mut add = |path: &Path| add_with(path, true);
    add(live);
    if let (Some(dir), Some(name)) = (live.parent(), live.file_name().and_then(|n| n.to_str())) {
        for n in listings.of(dir) {
            if n.to_str()
                .is_some_and(|n| crate::tail::identity::is_rotated_name(name, n))
            {
                add(&dir.join(n));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Where a ledger's parity check stands, and its text as last kept in
/// the mirror (written again only when it changes).
struct Saved {
    checked: Option<Checked>,
    text: String,
}

impl Saved {
    /// As the last run left it in the mirror: a restart goes on from there
    /// instead of reading the whole ledger again.
    fn read(mirror: &Mirror, ledger: &str) -> Saved {
        let text = mirror
            .meta(&crate::parity::state_key(ledger))
            .ok()
            .flatten()
            .unwrap_or_default();
        Saved {
            checked: Checked::from_text(&text),
            text,
        }
    }
}

/// The periodic full parity check (contract §5), on its own thread with its
/// own read-only connection.
pub(super) struct ParityChecker {
    pub(super) db: PathBuf,
    pub(super) ledgers: Vec<LedgerSettings>,
    pub(super) run: RunSettings,
    pub(super) interval: Duration,
    pub(super) shared: Arc<Shared>,
    pub(super) metrics: Vec<(String, LedgerMetrics)>,
    /// To wake a ledger whose mirrored lines changed (it halts).
    pub(super) schedule: Arc<super::schedule::Schedule>,
}

impl ParityChecker {
    pub(super) fn run(self, stop: Receiver<()>) {
        // The first check comes soon after start (tampering while the
        // sidecar was down shows quickly), then every interval.
        let mut wait = self.interval.min(Duration::from_secs(10));
        let mut last_checked: HashMap<String, Vec<FileStamp>> = HashMap::new();
        // What the last clean check of each ledger leaves to the next, as
        // kept in the mirror (read once, at the first check).
        let mut built_on: HashMap<String, Saved> = HashMap::new();
        loop {
            match stop.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            // One listing per folder and one connection per round.
            let mut listings = Listings::default();
            let mut mirror = None;
            for (index, (ledger, (_, metrics))) in
                self.ledgers.iter().zip(&self.metrics).enumerate()
            {
                if self.shared.stopping() {
                    return;
                }
                // Nothing changed since the last full check (no file of the
                // ledger, not the database): its result stands, and an idle
                // sidecar stays idle whatever the ledger's size.
                let stamps = stamps_with(&ledger.path, Some(&self.db), &mut listings);
                if last_checked.get(&ledger.name) == Some(&stamps) {
                    metrics.record_parity_unchanged();
                    continue;
                }
                if self.check(index, ledger, metrics, &mut mirror, &mut built_on) {
                    last_checked.insert(ledger.name.clone(), stamps);
                }
            }
            wait = self.interval;
        }
    }

    /// One check (incremental after a clean one: see
    /// [`crate::parity::recheck_since`]); `true` when it finished.
    fn check(
        &self,
        index: usize,
        ledger: &LedgerSettings,
        metrics: &LedgerMetrics,
        mirror: &mut Option<Mirror>,
        built_on: &mut HashMap<String, Saved>,
    ) -> bool {
        if mirror.is_none() {
            match Mirror::open(&self.db, Access::ReadOnly) {
                Ok(m) => *mirror = Some(m),
                Err(e) => {
                    tracing::warn!(ledger = %ledger.name, error = %e, "parity check skipped: cannot open the mirror");
                    return false;
                }
            }
        }
        let Some(mirror) = mirror.as_ref() else {
            return false;
        };
        // The keys and policy of now: a reload since the start changes how
        // the files are read (which events are authentic).
        let ledger = &self.shared.current().ledger(ledger);
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
        let saved = match built_on.remove(&ledger.name) {
            Some(saved) => saved,
            None => Saved::read(mirror, &ledger.name),
        };
        match crate::parity::recheck_since(ledger, mirror, saved.checked.as_ref(), &mut pace) {
            Ok(Some((p, next))) => {
                let text = next.as_ref().map(Checked::to_text).unwrap_or_default();
                if text != saved.text {
                    self.shared.report_parity_state(&ledger.name, text.clone());
                }
                built_on.insert(
                    ledger.name.clone(),
                    Saved {
                        checked: next,
                        text,
                    },
                );
                metrics.record_parity(&p);
                if p.holds() {
                    tracing::debug!(ledger = %ledger.name, archived = p.archived, took = ?started.elapsed(), read_bytes = bytes, "parity holds");
                } else {
                    if let Some(rewrite) = p.rewrite.clone() {
                        // Bytes already mirrored changed: `rewritten`.
                        self.shared.report_rewrite(&ledger.name, rewrite);
                        self.schedule.wake(index, super::Wake::Files);
                    }
                    let examples: Vec<String> = p
                        .examples_by_weight()
                        .into_iter()
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
