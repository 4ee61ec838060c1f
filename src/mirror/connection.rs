//! How `run` holds its connections: one connection shared by every
//! ledger ([`Mirror::share`]) with a page cache to match, and the other
//! connections of the process kept small.

use rusqlite::Connection;

use super::{Mirror, Result};

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
