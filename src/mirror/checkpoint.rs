//! WAL checkpoints on a thread of their own, off the writers' path.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{MirrorError, Result, BUSY_TIMEOUT};

/// Runs WAL checkpoints on a thread of its own, off the writers' path
/// (litestream's approach). PASSIVE: it never waits for, nor blocks,
/// readers or writers. Stops (after a last checkpoint) when dropped.
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
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let shown = path.display().to_string();
        let handle = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || loop {
                let last = !matches!(
                    stopped.recv_timeout(every),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(db = %shown, error = %e, "WAL checkpoint postponed");
                }
                if last {
                    return;
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
