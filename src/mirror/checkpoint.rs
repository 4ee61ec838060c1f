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
                loop {
                    let last = !matches!(
                        stopped.recv_timeout(every),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    if let Some(moved) = conn.take_if(|c| has_moved(c)) {
                        close_in_place(moved);
                    }
                    if conn.is_none() && path.exists() {
                        conn = connect(&path).ok();
                    }
                    if let Some(c) = &conn {
                        if let Err(e) =
                            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                        {
                            tracing::debug!(db = %shown, error = %e, "WAL checkpoint postponed");
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
