//! WAL checkpoints on a thread of their own, off the writers' path.

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

/// Runs WAL checkpoints on a thread of its own, off the writers' path
/// (litestream's approach). PASSIVE: it never waits for, nor blocks,
/// readers or writers. Stops (after a last checkpoint) when dropped. When
/// the mirror file is replaced (deleted and created again by a writer),
/// it connects to the new one.
pub struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub fn spawn(path: &Path, every: Duration) -> Result<Checkpointer> {
        let err = |source| MirrorError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let first = connect(path).map_err(err)?;
        let shown_path = path.display().to_string();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let path: PathBuf = path.to_path_buf();
        let shown = path.display().to_string();
        let handle = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                let mut conn = Some(first);
                let mut settled: Option<(u64, std::time::SystemTime)> = None;
                // Every `every` while the WAL grows; backing off to 1 s
                // while it does not (an idle sidecar wakes once a second).
                let mut wait = every;
                loop {
                    let last = !matches!(
                        stopped.recv_timeout(wait),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    if let Some(moved) = conn.take_if(|c| has_moved(c)) {
                        close_in_place(moved);
                    }
                    if conn.is_none() && path.exists() {
                        conn = connect(&path).ok();
                    }
                    // A WAL unchanged since a checkpoint that copied all of
                    // it needs none (a stat, not a checkpoint, per tick).
                    let wal_now = wal_stamp(&path);
                    let unchanged = wal_now.is_some() && wal_now == settled;
                    wait = if unchanged {
                        (wait * 2).min(every.max(std::time::Duration::from_secs(1)))
                    } else {
                        every
                    };
                    if let Some(c) = conn.as_ref().filter(|_| !unchanged) {
                        match c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                        }) {
                            Ok((0, log, done)) if log == done => settled = wal_now,
                            Ok(_) => settled = None,
                            Err(e) => {
                                settled = None;
                                tracing::debug!(db = %shown, error = %e, "WAL checkpoint postponed");
                            }
                        }
                    }
                    if last {
                        if let Some(c) = conn {
                            close_in_place(c);
                        }
                        return;
                    }
                }
            })
            .map_err(|e| MirrorError::Sqlite {
                path: PathBuf::from(&shown_path),
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
