//! How `run` holds its connections: one connection shared by every
//! ledger ([`SharedMirror`]) with a page cache to match, whose
//! transaction several ledgers' batches can join ([`Group`]); and the
//! other connections of the process kept small.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use rusqlite::Connection;

use super::{Access, CommitWatch, Mirror, MirrorError, Result};

/// The shared connection's page cache: the one connection of all the
/// ledgers can afford what a thousand could not. What a ledger's commits
/// touch again and again is the right edge of its trees (a few pages of
/// its rows, its id index, its checkpoint and its partial tiles): the
/// cache holds that much for every ledger, with a floor, up to a ceiling.
/// A fixed 64 MiB let the cache of one busy ledger fill with pages it
/// never read again, and `run` grow by as much.
const CACHE_FLOOR_KIB: u32 = 4 * 1024;
const CACHE_PER_LEDGER_KIB: u32 = 256;
const CACHE_CEILING_KIB: u32 = 64 * 1024;

/// The shared connection's page cache for `ledgers` ledgers, in KiB.
pub fn shared_cache_kib(ledgers: usize) -> u32 {
    let per = u32::try_from(ledgers)
        .unwrap_or(u32::MAX)
        .saturating_mul(CACHE_PER_LEDGER_KIB);
    per.clamp(CACHE_FLOOR_KIB, CACHE_CEILING_KIB)
}

/// For a process holding many connections (`run` with many ledgers, each
/// with its own): no up-front page-cache allocation per connection.
/// SQLite otherwise sets aside 20 pages (~330 KiB at our page size) for
/// every connection, used or not: 330 MiB for a thousand ledgers. Pages
/// are then allocated as they are needed. Takes effect only before the
/// process's first connection (later it is refused, and nothing changes).
pub fn frugal_connections() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    FRUGAL.store(true, std::sync::atomic::Ordering::Relaxed);
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is only acted on before SQLite is
        // initialised (it returns SQLITE_MISUSE otherwise); the arguments
        // are those SQLITE_CONFIG_PAGECACHE takes: no buffer, no pages.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_PAGECACHE,
                std::ptr::null_mut::<std::ffi::c_void>(),
                0 as std::ffi::c_int,
                0 as std::ffi::c_int,
            )
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(rc, "SQLite page cache left as it was (already initialised)");
        }
    });
}

pub(super) static FRUGAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A connection's lookaside (its pool for small allocations) of 32 slots
/// of 512 bytes rather than SQLite's 100 of 1,200: 16 KiB, not 120 KiB,
/// per connection when there are a thousand.
pub(super) fn small_lookaside(conn: &Connection) {
    // SAFETY: right after the connection is opened, before any statement
    // (SQLite refuses the change while lookaside memory is in use, which
    // only costs the saving); a NULL buffer lets SQLite allocate it.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_config(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            512 as std::ffi::c_int,
            32 as std::ffi::c_int,
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        tracing::debug!(rc, "SQLite lookaside left as it was");
    }
}

impl Mirror {
    /// Lets this connection's page cache grow to `kib` KiB (SQLite's
    /// default is 2,000 KiB: too little for the pages a thousand ledgers'
    /// batches touch, which were then read and written again and again).
    pub fn set_cache_kib(&self, kib: u32) -> Result<()> {
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{kib}"))
            .map_err(|e| self.err(e))
    }

    /// Another handle on the same connection (for another ledger of the
    /// same `run`): its commits can share a transaction with this one's.
    pub fn share(&self) -> Mirror {
        Mirror {
            conn: self.conn.clone(),
            path: self.path.clone(),
            edges: self.edges.clone(),
            version: self.version,
            watch: self.watch.clone(),
        }
    }
}

/// The connection every ledger of a `run` writes through, opened on
/// first use and again when the mirror file is replaced. Not `Send`: it
/// lives on the runner's thread.
pub struct SharedMirror {
    db: PathBuf,
    base: RefCell<Option<Mirror>>,
    /// Marks every write of the shared connection (see [`CommitWatch`]).
    watch: CommitWatch,
    /// Its page cache ([`shared_cache_kib`]).
    cache_kib: u32,
}

impl SharedMirror {
    /// The shared connection of `ledgers` ledgers to the mirror `db`.
    pub fn new(db: PathBuf, watch: CommitWatch, ledgers: usize) -> SharedMirror {
        SharedMirror {
            db,
            base: RefCell::new(None),
            watch,
            cache_kib: shared_cache_kib(ledgers),
        }
    }

    /// A handle for one ledger on the shared connection.
    pub fn share(&self) -> Result<Mirror> {
        let mut base = self.base.borrow_mut();
        // A connection to a file no longer at the path is let go.
        let mirror = match base.take().filter(|m| m.check_in_place().is_ok()) {
            Some(m) => m,
            None => {
                let mut m = Mirror::open(&self.db, Access::ReadWrite)?;
                m.set_cache_kib(self.cache_kib)?;
                m.set_commit_watch(self.watch.clone());
                m
            }
        };
        let shared = mirror.share();
        *base = Some(mirror);
        Ok(shared)
    }

    /// The mirror file was deleted or replaced under the connection.
    pub fn replaced(&self) -> bool {
        self.base
            .borrow()
            .as_ref()
            .is_some_and(|m| m.check_in_place().is_err())
    }

    /// Starts a transaction that batches of this connection's handles
    /// join with [`Mirror::stage`], each as a savepoint: one write to disk
    /// for the batches of many ledgers. Nothing of the group is visible,
    /// or durable, before [`Group::commit`].
    pub fn begin_group(&self) -> Result<Group> {
        let mirror = self.share()?;
        mirror.check_in_place()?;
        {
            let _writing = mirror.watch.writing();
            super::write::control(&mirror.conn, "BEGIN IMMEDIATE").map_err(|e| mirror.err(e))?;
        }
        Ok(Group {
            mirror,
            ended: false,
        })
    }
}

/// A transaction of the shared connection that several ledgers' batches
/// join ([`Mirror::stage`]). Rolled back if dropped before
/// [`Group::commit`].
pub struct Group {
    mirror: Mirror,
    ended: bool,
}

impl Group {
    /// Whether batches written through `conn` belong in this group.
    pub(super) fn holds(&self, conn: &Rc<Connection>) -> bool {
        Rc::ptr_eq(&self.mirror.conn, conn)
    }

    /// Commits every batch staged in the group. On an error nothing of the
    /// group was written (it is rolled back), and every ledger in it must
    /// read its checkpoint again.
    pub fn commit(mut self) -> Result<()> {
        self.ended = true;
        let m = &self.mirror;
        if m.conn.is_autocommit() {
            // An error inside ended it already: nothing of it was written.
            return Err(MirrorError::GroupLost {
                path: m.path.clone(),
            });
        }
        let _writing = m.watch.writing();
        let committed = m
            .check_in_place()
            .and_then(|()| super::write::control(&m.conn, "COMMIT").map_err(|e| m.err(e)));
        if committed.is_err() && !m.conn.is_autocommit() {
            let _ = m.conn.execute_batch("ROLLBACK");
        }
        committed
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.ended && !self.mirror.conn.is_autocommit() {
            let _ = self.mirror.conn.execute_batch("ROLLBACK");
        }
    }
}
