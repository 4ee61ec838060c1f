//! The mirror as a file: its mode when created, what is left of a mirror
//! deleted while open (set aside, never read into a new one), and noticing
//! that the path no longer names the file a connection opened.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rusqlite::{Connection, FileControl};

use super::{Access, Mirror, MirrorError, Result};

/// Mode of a new mirror (its WAL and shared-memory files take the same):
/// it holds payloads and the raw bytes of quarantined lines, so the owner
/// writes and the group (analysts) reads; others get nothing, whatever the
/// umask.
pub const NEW_FILE_MODE: u32 = 0o640;

/// True when the file `conn` opened is no longer the one its path names
/// (deleted, renamed, replaced). SQLite's own check: it compares the inode
/// behind the open handle with the inode at the path.
pub(super) fn has_moved(conn: &Connection) -> bool {
    let mut moved = 0;
    conn.file_control(None::<&str>, FileControl::HasMoved(&mut moved))
        .is_ok()
        && moved != 0
}

/// Closes a connection without letting SQLite delete the `-wal` and
/// `-shm` files *at the path* (it deletes them by name when the last
/// connection closes): once the file was moved away, they may belong to
/// another database at that path.
pub(crate) fn close_in_place(conn: Connection) {
    if has_moved(&conn) {
        let mut keep = 1;
        let _ = conn.file_control(None::<&str>, FileControl::PersistWal(&mut keep));
    }
    drop(conn);
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if has_moved(&self.conn) {
            let mut keep = 1;
            let _ = self
                .conn
                .file_control(None::<&str>, FileControl::PersistWal(&mut keep));
        }
    }
}

/// Before a new mirror is created at `path`: WAL and shared-memory files
/// with no database beside them belong to a mirror that was deleted while
/// open. SQLite would read that WAL into the new file (a corrupt mirror),
/// so they are moved aside, kept, and named in the log.
pub(super) fn set_aside_orphans(path: &Path) -> std::io::Result<()> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for suffix in ["-wal", "-shm"] {
        let orphan = PathBuf::from(format!("{}{suffix}", path.display()));
        if std::fs::symlink_metadata(&orphan).is_err() {
            continue;
        }
        let aside = PathBuf::from(format!("{}.orphaned-{stamp}", orphan.display()));
        std::fs::rename(&orphan, &aside)?;
        tracing::warn!(
            db = %path.display(),
            file = %orphan.display(),
            moved_to = %aside.display(),
            "the mirror is missing but its {suffix} file is there (the mirror was deleted while open): moved it aside before creating a new mirror"
        );
    }
    Ok(())
}

/// Creates an empty file for a new mirror with [`NEW_FILE_MODE`], so that
/// SQLite (which would use 0644 less the umask) opens it as it is, and
/// gives its WAL and shared-memory files the same mode.
pub(super) fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(NEW_FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Warns (once per path and process) about a mirror that every user of
/// the machine can read.
pub(super) fn warn_if_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 == 0 {
        return;
    }
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if !warned.iter().any(|p| p == path) {
        warned.push(path.to_path_buf());
        tracing::warn!(
            db = %path.display(),
            mode = format!("{mode:o}"),
            "the mirror is readable by every user: it holds payloads and quarantined bytes; chmod 640 it (and its -wal and -shm files)"
        );
    }
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").field("path", &self.path).finish()
    }
}

/// The exclusive right to write a mirror, held by one process (`run` or
/// `replay`) while it runs: a lock on `<db>.lock`, which names the holder.
/// Released when dropped, or when the process ends however it ends.
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
}

/// Takes the writer lock of the mirror at `db` for `role` (`run`,
/// `replay`); `Err(Locked)` names the process that holds it.
pub fn lock_writer(db: &Path, role: &str) -> super::Result<WriterLock> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = PathBuf::from(format!("{}.lock", db.display()));
    let failed = |e: std::io::Error| super::MirrorError::Sqlite {
        path: db.to_path_buf(),
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "cannot take the writer lock {}: {e}",
                path.display()
            )),
        ),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(NEW_FILE_MODE)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(super::MirrorError::Locked {
                path: db.to_path_buf(),
                holder: holder.trim().replace('\n', " "),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
    }
    let started = humantime::format_rfc3339_seconds(SystemTime::now());
    let me = format!(
        "ledgertail {role}, pid {}, since {started}\n",
        std::process::id()
    );
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()))
        .map_err(failed)?;
    Ok(WriterLock { _file: file })
}

/// Before a connection: a folder is refused, a reader needs the file, and
/// a writer's new file is created private (orphaned -wal/-shm files of an
/// earlier mirror set aside first).
pub(super) fn prepare(path: &Path, access: Access) -> Result<()> {
    if path.is_dir() {
        return Err(MirrorError::NotALedgertailDb {
            path: path.to_path_buf(),
            reason: "it is a directory".into(),
        });
    }
    let exists = path.exists();
    match access {
        Access::ReadOnly if !exists => Err(MirrorError::Missing {
            path: path.to_path_buf(),
        }),
        Access::ReadOnly => Ok(()),
        Access::ReadWrite => {
            let prepared = if exists {
                warn_if_world_readable(path);
                Ok(())
            } else {
                set_aside_orphans(path).and_then(|()| create_private(path))
            };
            prepared.map_err(|e| MirrorError::Sqlite {
                path: path.to_path_buf(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("preparing a new mirror: {e}")),
                ),
            })
        }
    }
}
