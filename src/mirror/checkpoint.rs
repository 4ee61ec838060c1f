//! WAL checkpoints on a thread of their own, off the writers' path, and
//! the WAL file given back to the disk once the writer is idle.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{close_in_place, has_moved, MirrorError, Result, BUSY_TIMEOUT};

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// The WAL's size and modification time, if it exists.
fn wal_stamp(db: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(format!("{}-wal", db.display())).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// A WAL larger than this is truncated once the writer has been idle for
/// [`IDLE_BEFORE_TRUNCATE`]: a catch-up can leave tens of MiB of WAL that
/// SQLite would otherwise keep (and reuse) for as long as `run` runs.
const TRUNCATE_ABOVE: u64 = 4 << 20;
/// How long the WAL must have stood still before it is truncated.
const IDLE_BEFORE_TRUNCATE: Duration = Duration::from_secs(2);

/// Runs WAL checkpoints on a thread of its own, off the writers' path
/// (litestream's approach). PASSIVE: it never waits for, nor blocks,
/// readers or writers. Once the WAL has stood still, fully copied, for
/// [`IDLE_BEFORE_TRUNCATE`] and is larger than [`TRUNCATE_ABOVE`], it is
/// truncated (a TRUNCATE checkpoint that gives up at once if a reader or
/// the writer is busy, and is tried again later). Stops (after a last
/// checkpoint) when dropped. When the mirror file is replaced (deleted
/// and created again by a writer), it connects to the new one.
pub struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// The checkpoint thread's state between ticks.
struct Ticks {
    path: PathBuf,
    conn: Option<Connection>,
    /// The WAL's stamp after a checkpoint that copied all of it.
    settled: Option<(u64, std::time::SystemTime)>,
    /// Since when the WAL has been settled.
    still_since: Option<std::time::Instant>,
    every: Duration,
}

impl Ticks {
    /// One tick; the wait before the next.
    fn tick(&mut self, wait: Duration) -> Duration {
        if let Some(moved) = self.conn.take_if(|c| has_moved(c)) {
            close_in_place(moved);
        }
        if self.conn.is_none() && self.path.exists() {
            self.conn = connect(&self.path).ok();
        }
        // A WAL unchanged since a checkpoint that copied all of it needs
        // none (a stat, not a checkpoint, per tick).
        let wal_now = wal_stamp(&self.path);
        let unchanged = wal_now.is_some() && wal_now == self.settled;
        if !unchanged {
            self.still_since = None;
            self.checkpoint(wal_now);
            return self.every;
        }
        let since = *self.still_since.get_or_insert_with(std::time::Instant::now);
        let big = wal_now.is_some_and(|(len, _)| len > TRUNCATE_ABOVE);
        if big && since.elapsed() >= IDLE_BEFORE_TRUNCATE {
            self.truncate();
        }
        // Backing off to 1 s while it stands still (an idle sidecar wakes
        // once a second).
        (wait * 2).min(self.every.max(Duration::from_secs(1)))
    }

    fn checkpoint(&mut self, wal_now: Option<(u64, std::time::SystemTime)>) {
        let Some(c) = self.conn.as_ref() else { return };
        match c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        }) {
            Ok((0, log, done)) if log == done => self.settled = wal_now,
            Ok(_) => self.settled = None,
            Err(e) => {
                self.settled = None;
                tracing::debug!(db = %self.path.display(), error = %e, "WAL checkpoint postponed");
            }
        }
    }

    /// Truncates the WAL, unless anyone is using it: a reader in the WAL
    /// or a writer makes it give up at once (no busy wait), to try again
    /// at a later tick.
    fn truncate(&mut self) {
        let Some(c) = self.conn.as_ref() else { return };
        let _ = c.busy_timeout(Duration::ZERO);
        let done = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        });
        let _ = c.busy_timeout(BUSY_TIMEOUT);
        match done {
            Ok(0) => {
                tracing::debug!(db = %self.path.display(), "WAL truncated: the writer is idle");
                self.settled = wal_stamp(&self.path);
                self.still_since = None;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(db = %self.path.display(), error = %e, "WAL truncation postponed")
            }
        }
    }
}

impl Checkpointer {
    pub fn spawn(path: &Path, every: Duration) -> Result<Checkpointer> {
        let err = |source| MirrorError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let first = connect(path).map_err(err)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let mut ticks = Ticks {
            path: path.to_path_buf(),
            conn: Some(first),
            settled: None,
            still_since: None,
            every,
        };
        let handle = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                let mut wait = every;
                loop {
                    let last = !matches!(
                        stopped.recv_timeout(wait),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    wait = ticks.tick(wait);
                    if last {
                        if let Some(c) = ticks.conn.take() {
                            close_in_place(c);
                        }
                        return;
                    }
                }
            })
            .map_err(|e| MirrorError::Sqlite {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            handle: Some(handle),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
