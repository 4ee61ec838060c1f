//! The mirror: owns the SQLite file, and is the only module that speaks SQL
//! (contract §3).
//!
//! Events, quarantine rows and the checkpoint of one batch are written in
//! one transaction ([`Mirror::commit`]), so a crash at any instant loses
//! nothing and duplicates nothing: either the rows and the position that
//! covers them are both there, or neither is, and the lines are read again.
//! A mirrored row is never overwritten: a conflicting line is a verdict
//! decided before it gets here, and a primary-key conflict is an error.
//! Each checkpoint carries a generation number, so two processes mirroring
//! the same ledger into one database cannot interleave silently.
//!
//! The file is watched too: a mirror deleted or replaced while it is open
//! would otherwise take every later commit with it, unseen. Before each
//! commit the connection checks that its path still names the file it
//! opened ([`MirrorError::Replaced`] otherwise), and a connection whose
//! file was moved away never deletes the WAL and shared-memory files at
//! the path when it closes (they may belong to a new mirror there by then).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use crate::ledger::{Hash, Head, SealedEvent, Verdict};
use crate::tail::{FileId, Position};

mod checkpoint;
mod connection;
mod file;
mod query;
mod signed;
mod tree;
mod write;

pub use query::QuarantineCounts;
pub use signed::{StoredCheckpoint, StoredCosignature};
pub use tree::{ConnTiles, TreeHead};
pub use write::Durability;

pub use checkpoint::Checkpointer;
pub use connection::{frugal_connections, Group, SharedMirror};
use connection::{small_lookaside, FRUGAL};
pub(crate) use file::close_in_place;
use file::has_moved;
pub use file::{lock_writer, WriterLock, NEW_FILE_MODE};

/// `PRAGMA application_id` of a ledgertail mirror ("LTL1").
pub const APPLICATION_ID: i32 = 0x4c54_4c31;
/// The schema this build writes. Older schemas are migrated on open;
/// newer ones are refused.
pub const SCHEMA_VERSION: i32 = 5;

const SCHEMA: &str = include_str!("schema.sql");

/// How long a writer waits for a lock held by a reader or another writer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page size of a new mirror.
const PAGE_SIZE: u32 = 16_384;

/// Writers leave WAL checkpoints to a [`Checkpointer`] (a checkpoint
/// copies pages and fsyncs: on the commit path it shows as latency
/// spikes). This threshold is only the safety net for when none runs.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{}: no such database", path.display())]
    Missing { path: PathBuf },
    #[error("{}: not a ledgertail mirror ({reason})", path.display())]
    NotALedgertailDb { path: PathBuf, reason: String },
    #[error("{}: schema version {found} is newer than this ledgertail understands ({SCHEMA_VERSION})", path.display())]
    SchemaTooNew { path: PathBuf, found: i32 },
    #[error("{}: ledger `{ledger}` was advanced by another process; only one ledgertail may mirror a ledger into a database", path.display())]
    Conflict { path: PathBuf, ledger: String },
    #[error("{}: the mirror was deleted, moved or replaced while ledgertail had it open; nothing more is written to the old file", path.display())]
    Replaced { path: PathBuf },
    #[error("{}: a group of batches was rolled back by SQLite before its commit; every ledger in it reads its checkpoint again", path.display())]
    GroupLost { path: PathBuf },
    #[error("{}: a batch was staged in a group of another connection", path.display())]
    ForeignGroup { path: PathBuf },
    #[error("{}: another process writes this mirror ({holder})", path.display())]
    Locked { path: PathBuf, holder: String },
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl MirrorError {
    /// An operator's next step, where there is an obvious one.
    pub fn hint(&self) -> Option<String> {
        match self {
            MirrorError::Missing { .. } => Some("run `ledgertail replay` or `ledgertail run` to create it".into()),
            MirrorError::NotALedgertailDb { path, .. } if path.is_dir() => Some(format!(
                "--db (or `db` in the config) names the mirror's file, for example {}",
                path.join("ledgertail.db").display()
            )),
            MirrorError::NotALedgertailDb { .. } => {
                Some("point --db (or `db` in the config) at a new file or an existing ledgertail mirror".into())
            }
            MirrorError::SchemaTooNew { .. } => Some("use the ledgertail version that wrote this mirror, or a newer one".into()),
            MirrorError::GroupLost { .. } | MirrorError::ForeignGroup { .. } => None,
            MirrorError::Conflict { .. } => Some("stop the other `ledgertail run`/`replay` on this database first".into()),
            MirrorError::Locked { .. } => Some("one ledgertail writes a mirror at a time: stop the other one first, or give this one another --db (or `db` in the config)".into()),
            MirrorError::Replaced { .. } => Some("ledgertail opens whatever the path names now: a new mirror is created there and rebuilt from the ledger's files (rows that only the old file held are gone unless it was moved aside, not deleted)".into()),
            MirrorError::Sqlite { source, path } => match source.sqlite_error_code() {
                Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => Some(format!(
                    "check that {} and its directory are writable (WAL keeps -wal and -shm files beside the database)",
                    path.display()
                )),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                    Some("another process holds a lock on the database; retry when it is done".into())
                }
                Some(ErrorCode::DiskFull) => Some("free disk space; nothing was lost, the ledger is read again".into()),
                // A write refused by the system: a full disk, a file size
                // limit (ulimit -f, EFBIG) or a failing device.
                Some(ErrorCode::SystemIoFailure) => Some(
                    "the disk may be full, the file size limit reached (ulimit -f) or the device failing; nothing was lost, the ledger is read again once writes succeed".into(),
                ),
                _ => None,
            },
        }
    }
}

pub type Result<T> = std::result::Result<T, MirrorError>;

/// Why a ledger stopped mirroring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt {
    pub verdict: Verdict,
    pub detail: String,
    pub file: Option<String>,
    pub offset: Option<u64>,
    pub seq: Option<u64>,
}

impl std::fmt::Display for Halt {
    /// `fork at app.jsonl:120 (seq 3): detail`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {}:{}",
            self.verdict,
            self.file.as_deref().unwrap_or("?"),
            self.offset.unwrap_or(0)
        )?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What the mirror remembers of one ledger (its `checkpoints` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerState {
    pub live_path: PathBuf,
    pub position: Option<Position>,
    pub head: Option<Head>,
    pub anchor: Option<Head>,
    pub halt: Option<Halt>,
    /// Bumped by every commit; 0 when the row does not exist yet.
    pub generation: i64,
}

impl LedgerState {
    pub fn new(live_path: &Path) -> LedgerState {
        LedgerState {
            live_path: live_path.to_path_buf(),
            position: None,
            head: None,
            anchor: None,
            halt: None,
            generation: 0,
        }
    }
}

/// A mirrored event and where its line was.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub event: SealedEvent,
    pub file: FileId,
    pub offset: u64,
}

/// A refused line.
#[derive(Debug, Clone)]
pub struct QuarantineRow {
    pub file: FileId,
    pub path: String,
    pub offset: u64,
    pub length: u64,
    pub seq: Option<u64>,
    pub hash: Option<Hash>,
    pub verdict: Verdict,
    pub detail: String,
    /// The first min(length, 4096) bytes of the line.
    pub line: Vec<u8>,
}

pub use crate::ledger::columns::StoredEvent;

/// One transaction's worth of writes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Batch<'a> {
    pub events: &'a [EventRow],
    pub quarantine: &'a [QuarantineRow],
    /// Re-judging (§2.1): a mirrored event marks the quarantine row of its
    /// line resolved, and a line refused again updates its row's verdict.
    pub resolve: bool,
    /// The files the batch's rows came from, with their paths and the
    /// seq of the batch's first row from each, for the `files` table.
    pub files: &'a [(FileId, String, u64)],
    /// The halt in force is lifted by this commit: how (for the `halts`
    /// history).
    pub lifted: Option<&'a str>,
}

/// One halt of a ledger's history (the `halts` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaltRecord {
    pub halt: Halt,
    pub halted_at: String,
    /// When and how it was lifted; `None` while it stands.
    pub lifted: Option<(String, String)>,
}

/// Read-only or read-write access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Creates and migrates the database when needed.
    ReadWrite,
    /// The database must exist; nothing is written.
    ReadOnly,
}

pub struct Mirror {
    /// Shared by [`Mirror::share`]: the ledgers of one `run` write through
    /// one connection, several of them in one transaction
    /// ([`SharedMirror::begin_group`]).
    conn: std::rc::Rc<Connection>,
    path: PathBuf,
    /// Each ledger's tree edge as the last commit through this connection
    /// left it (see `tree::EdgeCache`), shared like the connection.
    edges: std::rc::Rc<tree::EdgeCache>,
    /// The schema version of the file (older ones are migrated when opened
    /// to write; a reader may find one that was not).
    version: i32,
    /// Since when a write through this connection has been under way.
    watch: CommitWatch,
}

/// Since when a write to the mirror has been under way, readable from any
/// thread: a write that does not return (a hung or frozen disk) blocks
/// its thread for ever, so only another thread can say so.
#[derive(Debug, Clone, Default)]
pub struct CommitWatch(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl CommitWatch {
    /// How long the write under way has lasted; `None` when there is none.
    pub fn under_way_for(&self) -> Option<Duration> {
        let began = self.0.load(std::sync::atomic::Ordering::Relaxed);
        (began != 0).then(|| since_start().saturating_sub(Duration::from_millis(began - 1)))
    }

    /// Marks a write as under way until the guard is dropped.
    fn writing(&self) -> Writing<'_> {
        let now = u64::try_from(since_start().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.store(now + 1, std::sync::atomic::Ordering::Relaxed);
        Writing(self)
    }
}

/// A write under way (see [`CommitWatch`]).
struct Writing<'a>(&'a CommitWatch);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0 .0.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Time since the process first asked (a monotonic clock for the watch).
fn since_start() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// True when `<path>-wal` holds more than its header: a writer's commits
/// that are not in the database file yet.
fn wal_has_frames(path: &Path) -> bool {
    std::fs::metadata(format!("{}-wal", path.display())).is_ok_and(|m| m.len() > 32)
}

/// Opens the file read-only as immutable (no locks, no -shm): only for a
/// mirror no writer has open.
fn open_immutable(path: &Path) -> rusqlite::Result<Connection> {
    let mut uri = String::from("file:");
    for c in path.display().to_string().chars() {
        match c {
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            '%' => uri.push_str("%25"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Schema 5's columns, each added unless the table has it already (a
/// file whose version number was set back keeps its newer columns).
fn add_columns_of_5(tx: &rusqlite::Connection) -> rusqlite::Result<()> {
    for (table, column, decl) in [
        ("events", "line_sha256", "TEXT"),
        ("files", "ledger", "TEXT"),
        ("files", "first_seq", "INTEGER"),
    ] {
        let has: bool = tx.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
            [table, column],
            |r| r.get(0),
        )?;
        if !has {
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    tx.execute_batch(
        "CREATE INDEX IF NOT EXISTS files_by_ledger ON files (ledger) WHERE ledger IS NOT NULL",
    )
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn seq_i64(seq: u64) -> i64 {
    // Seqs are ≤ 2^53−1 by contract, so they always fit.
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn opt_hash(text: Option<String>) -> Option<Hash> {
    text.as_deref().and_then(Hash::from_hex)
}

impl Mirror {
    /// Opens (with `ReadWrite`, creates) the mirror at `path`, checking
    /// that it is a ledgertail mirror of a schema this build understands.
    pub fn open(path: &Path, access: Access) -> Result<Mirror> {
        let err = |source| MirrorError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        file::prepare(path, access)?;
        let flags = match access {
            Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            Access::ReadWrite => {
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
            }
        };
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // Every statement of the write path, the tree's and the readers'
        // stays prepared (the default of 16 is fewer than there are).
        conn.set_prepared_statement_cache_capacity(64);
        if FRUGAL.load(std::sync::atomic::Ordering::Relaxed) {
            small_lookaside(&conn);
        }
        let mut mirror = Mirror {
            conn: std::rc::Rc::new(conn),
            path: path.to_path_buf(),
            edges: Default::default(),
            version: SCHEMA_VERSION,
            watch: CommitWatch::default(),
        };
        let app_id = mirror.identify_as(access)?;
        if access == Access::ReadWrite {
            mirror.make_ready(app_id)?;
        }
        Ok(mirror)
    }

    /// Reads what the file is (falling back to an immutable read where a
    /// reader cannot create the -shm file) and refuses what is not a
    /// mirror this build can use. The application id found.
    fn identify_as(&mut self, access: Access) -> Result<i32> {
        let path = self.path.clone();
        let identified = match self.identify() {
            // A reader that may not write beside the mirror cannot create
            // its -shm file. When no writer is there (no WAL left), the file
            // is all there is: read it as it stands.
            Err(MirrorError::Sqlite { source, .. })
                if access == Access::ReadOnly
                    && matches!(
                        source.sqlite_error_code(),
                        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
                    )
                    && !wal_has_frames(&path) =>
            {
                let conn = open_immutable(&path).map_err(|source| MirrorError::Sqlite {
                    path: path.clone(),
                    source,
                })?;
                self.conn = std::rc::Rc::new(conn);
                self.identify()
            }
            other => other,
        };
        let (app_id, version, tables) = identified?;
        self.version = version;
        if app_id != APPLICATION_ID {
            if app_id != 0 || tables > 0 {
                return Err(MirrorError::NotALedgertailDb {
                    path,
                    reason: if tables > 0 {
                        format!("it holds {tables} tables of another application")
                    } else {
                        format!("application_id is {app_id:#x}")
                    },
                });
            }
            if access == Access::ReadOnly {
                return Err(MirrorError::NotALedgertailDb {
                    path,
                    reason: "it is empty".into(),
                });
            }
        }
        if version > SCHEMA_VERSION {
            return Err(MirrorError::SchemaTooNew {
                path,
                found: version,
            });
        }
        Ok(app_id)
    }

    /// A writer's connection: WAL, the schema created (a new file) or
    /// migrated, the trees built.
    fn make_ready(&mut self, app_id: i32) -> Result<()> {
        let err = |source| MirrorError::Sqlite {
            path: self.path.clone(),
            source,
        };
        if app_id == 0 {
            // Chosen by measurement (docs/performance.md): rows of ~550
            // bytes in a WITHOUT ROWID table insert about twice as fast on
            // 16 KiB pages as on the default 4 KiB. Only possible before
            // the first table and before WAL.
            self.conn
                .execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))
                .map_err(err)?;
        }
        // WAL lets readers (sqlite3, Datasette) query while we write.
        // synchronous=NORMAL: a power loss may roll back the last
        // commits, rows and checkpoint together, and those lines are
        // simply read again; a process crash loses nothing.
        // temp_store=MEMORY: each ledger's batch in a group is a savepoint,
        // whose sub-journal (the pages it changed, as they were) SQLite
        // otherwise spills to a temporary file past 64 KiB, four pages:
        // at 1,000 ledgers those writes were 14 % of the runner's time.
        // It holds one batch's pages at most (emptied at each RELEASE).
        self.conn
            .execute_batch(&format!(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}; PRAGMA temp_store=MEMORY;"
            ))
            .map_err(err)?;
        if app_id == 0 {
            self.create()?;
        } else if self.version < SCHEMA_VERSION {
            self.migrate(self.version)?;
        }
        self.version = SCHEMA_VERSION;
        self.build_trees()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes through this connection (and its shares made from now on)
    /// are marked on `watch`.
    pub fn set_commit_watch(&mut self, watch: CommitWatch) {
        self.watch = watch;
    }

    fn err(&self, source: rusqlite::Error) -> MirrorError {
        MirrorError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// (application_id, user_version, number of tables). A file that is
    /// not SQLite at all is "not a ledgertail mirror", not an SQL error.
    fn identify(&self) -> Result<(i32, i32, i64)> {
        let query = || -> rusqlite::Result<(i32, i32, i64)> {
            let app: i32 = self
                .conn
                .query_row("PRAGMA application_id", [], |r| r.get(0))?;
            let version: i32 = self
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let tables: i64 = self.conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )?;
            Ok((app, version, tables))
        };
        query().map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => MirrorError::NotALedgertailDb {
                path: self.path.clone(),
                reason: "it is not an SQLite database".into(),
            },
            _ => self.err(e),
        })
    }

    /// A transaction for changing the schema (the connection may be
    /// shared: see [`Mirror::share`]).
    fn schema_transaction(&self) -> Result<rusqlite::Transaction<'_>> {
        self.conn.unchecked_transaction().map_err(|e| self.err(e))
    }

    fn create(&mut self) -> Result<()> {
        let tx = self.schema_transaction()?;
        let result = (|| {
            tx.execute_batch(SCHEMA)?;
            tx.execute_batch(tree::TLOG_TABLES)?;
            tx.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
            ))?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('created_by', ?1), ('created_at', ?2), ('contract', 'ledger-v1')",
                params![format!("ledgertail {}", env!("CARGO_PKG_VERSION")), now_text()],
            )?;
            tx.commit()
        })();
        result.map_err(|e| self.err(e))
    }

    /// Brings an older schema up to [`SCHEMA_VERSION`]. Version 1 is the
    /// first; each later version adds one step here, in one transaction.
    fn migrate(&mut self, from: i32) -> Result<()> {
        const MIGRATIONS: &[&str] = &[
            // 1 -> 2: the path of each file once (files), not in every
            // quarantine row; when a halt was recorded.
            "CREATE TABLE files (file_id TEXT PRIMARY KEY, path TEXT NOT NULL, seen_at TEXT NOT NULL);
             INSERT OR IGNORE INTO files (file_id, path, seen_at)
                 SELECT file_id, file_path, max(quarantined_at) FROM quarantine GROUP BY file_id;
             ALTER TABLE quarantine DROP COLUMN file_path;
             ALTER TABLE checkpoints ADD COLUMN halted_at TEXT;",
            // 2 -> 3: the verifiable log (contract §7): the tree's tiles,
            // signed checkpoints, cosignatures; the trees are built after.
            "",
            // 3 -> 4: the history of halts, from the halts in force; no
            // quarantine index by verdict (see schema.sql).
            "DROP INDEX IF EXISTS quarantine_by_verdict;
             CREATE TABLE halts (hid INTEGER PRIMARY KEY, ledger TEXT NOT NULL, verdict TEXT NOT NULL,
                detail TEXT NOT NULL, file TEXT, file_offset INTEGER, seq INTEGER,
                halted_at TEXT NOT NULL, lifted_at TEXT, lifted_how TEXT);
             CREATE INDEX halts_by_ledger ON halts (ledger, hid);
             INSERT INTO halts (ledger, verdict, detail, file, file_offset, seq, halted_at)
                 SELECT ledger, coalesce(halt_verdict, 'rewritten'), coalesce(halt_detail, ''), halt_file,
                        halt_offset, halt_seq, coalesce(halted_at, updated_at)
                 FROM checkpoints WHERE halted = 1;",
            // 4 -> 5: plain ledgers, sealed as they are read, keep each
            // line's digest (a later change to the line shows), and each
            // file's ledger and first seq (their lines hold none): see
            // `add_columns_of_5`.
            "",
        ];
        let tx = self.schema_transaction()?;
        let result = (|| {
            for (version, step) in MIGRATIONS
                .iter()
                .enumerate()
                .skip(usize::try_from(from - 1).unwrap_or(0))
            {
                tx.execute_batch(step)?;
                if version + 2 == 3 {
                    tx.execute_batch(tree::MIGRATE_TO_3)?;
                    tx.execute_batch(tree::TLOG_TABLES)?;
                }
                if version + 2 == 5 {
                    add_columns_of_5(&tx)?;
                }
            }
            tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
            tx.commit()
        })();
        result.map_err(|e| self.err(e))
    }

    /// The checkpoint row of a ledger, if it has one.
    pub fn state(&self, ledger: &str) -> Result<Option<LedgerState>> {
        self.conn
            .query_row(
                "SELECT live_path, file_id, file_path, file_offset, tail_check, head_seq, head_hash,
                        anchor_seq, anchor_hash, halted, halt_verdict, halt_detail, halt_file,
                        halt_offset, halt_seq, generation
                 FROM checkpoints WHERE ledger = ?1",
                [ledger],
                |r| {
                    let file_id: Option<String> = r.get(1)?;
                    let position = file_id.and_then(|id| id.parse().ok()).map(|file| {
                        Position {
                            file,
                            path: PathBuf::from(r.get::<_, Option<String>>(2).ok().flatten().unwrap_or_default()),
                            offset: r.get::<_, i64>(3).map(|o| o as u64).unwrap_or(0),
                            tail: r.get::<_, Option<Vec<u8>>>(4).ok().flatten().unwrap_or_default(),
                        }
                    });
                    let head = match (r.get::<_, Option<i64>>(5)?, opt_hash(r.get(6)?)) {
                        (Some(seq), Some(hash)) => Some(Head { seq: seq as u64, hash }),
                        _ => None,
                    };
                    let anchor = match (r.get::<_, Option<i64>>(7)?, opt_hash(r.get(8)?)) {
                        (Some(seq), Some(hash)) => Some(Head { seq: seq as u64, hash }),
                        _ => None,
                    };
                    let halt = if r.get::<_, i64>(9)? != 0 {
                        Some(Halt {
                            verdict: r
                                .get::<_, Option<String>>(10)?
                                .as_deref()
                                .and_then(Verdict::parse)
                                .unwrap_or(Verdict::Rewritten),
                            detail: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
                            file: r.get(12)?,
                            offset: r.get::<_, Option<i64>>(13)?.map(|o| o as u64),
                            seq: r.get::<_, Option<i64>>(14)?.map(|s| s as u64),
                        })
                    } else {
                        None
                    };
                    Ok(LedgerState {
                        live_path: PathBuf::from(r.get::<_, String>(0)?),
                        position,
                        head,
                        anchor,
                        halt,
                        generation: r.get(15)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// SQLite's `data_version`: it changes whenever another connection
    /// commits to the file, so a reader that sees it unchanged knows
    /// nothing was written meanwhile (its own writes do not count).
    pub fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// `Err(Replaced)` once the path no longer names the file this mirror
    /// opened (deleted, moved, or replaced by another file).
    pub fn check_in_place(&self) -> Result<()> {
        if has_moved(&self.conn) {
            return Err(MirrorError::Replaced {
                path: self.path.clone(),
            });
        }
        Ok(())
    }
}
