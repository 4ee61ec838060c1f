//! The verifiable log's tree in the mirror (contract §7): tiles of 256
//! hashes (`tlog_tiles`), written by [`append`] inside the transaction of
//! the rows they cover (all but tile level 0, the leaf hashes, which are
//! read from the events' own `hash` column: storing them again cost a
//! third more bytes per commit for small events), and the tree's size and root on the ledger's
//! `checkpoints` row, so every committed head has its tree. A mirror made
//! before the tree existed gets it built on open ([`Mirror::build_trees`]),
//! in chunks that each commit the tiles with the size they reach: an
//! interrupted build resumes where it stopped, and never hashes a leaf
//! twice into the tree.

use rusqlite::{params, Connection, OptionalExtension};

use super::{seq_i64, EventRow, LedgerState, Mirror, Result};
use crate::ledger::tiles::{partial_tiles, Edge, TileHashes, TileId, TileReader, TILE_WIDTH};
use crate::ledger::tree::{self, leaf_hash, ProofError};
use crate::ledger::Hash;

/// The tables of the tree and of the signed checkpoints (schema v3).
pub(super) const TLOG_TABLES: &str = "
-- The Merkle tree of each ledger (contract §7), as tlog-tiles: tile
-- `idx` at tile level `level` holds up to 256 hashes of 32 bytes; only the
-- last tile of a level is partial. Written with the rows it covers. Tile
-- level 0 (the leaf hashes, SHA-256(0x00 || hash)) is not stored: it is
-- read from the events' `hash` column.
CREATE TABLE tlog_tiles (
    ledger TEXT    NOT NULL,
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hashes BLOB    NOT NULL,
    PRIMARY KEY (ledger, level, idx)
);
-- Every checkpoint this mirror's log key signed: append-only.
CREATE TABLE tlog_checkpoints (
    ledger    TEXT    NOT NULL,
    size      INTEGER NOT NULL,
    root      TEXT    NOT NULL,  -- base64, as in the note
    note      TEXT    NOT NULL,  -- the signed note, verbatim
    signed_at TEXT    NOT NULL,
    PRIMARY KEY (ledger, size)
) WITHOUT ROWID;
CREATE TRIGGER tlog_checkpoints_no_update BEFORE UPDATE ON tlog_checkpoints
BEGIN SELECT RAISE(ABORT, 'signed checkpoints are append-only'); END;
CREATE TRIGGER tlog_checkpoints_no_delete BEFORE DELETE ON tlog_checkpoints
BEGIN SELECT RAISE(ABORT, 'signed checkpoints are append-only'); END;
-- Witness cosignatures of those checkpoints, as note signature lines.
CREATE TABLE tlog_cosignatures (
    ledger      TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    witness     TEXT    NOT NULL,  -- the witness's verifier key
    line        TEXT    NOT NULL,
    cosigned_at INTEGER NOT NULL,  -- the cosignature's timestamp (POSIX)
    received_at TEXT    NOT NULL,
    PRIMARY KEY (ledger, size, witness)
) WITHOUT ROWID;
";

/// Migration 2 → 3: the tree's tables and the tree's place on the
/// `checkpoints` row. The trees themselves are built after it.
pub(super) const MIGRATE_TO_3: &str = "
ALTER TABLE checkpoints ADD COLUMN tree_size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN tree_root TEXT;
";

/// Leaves hashed per transaction when a tree is built on open.
const BUILD_CHUNK: u64 = 100_000;

/// A tree's size and root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    pub size: u64,
    pub root: Hash,
}

fn corrupt(detail: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(detail),
    )
}

fn to_hashes(blob: &[u8]) -> Option<Vec<Hash>> {
    blob.len().is_multiple_of(32).then(|| {
        blob.chunks_exact(32)
            .map(|c| Hash(c.try_into().unwrap_or([0; 32])))
            .collect()
    })
}

fn to_blob(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// Tiles read through a connection (inside a write transaction, or by a
/// reader).
pub struct ConnTiles<'c> {
    conn: &'c Connection,
    ledger: &'c str,
    /// The seq of leaf 0.
    anchor: u64,
    /// Leaves of the tree read (level 0 is read from `events`, which may
    /// already hold rows beyond it inside a commit).
    size: u64,
}

impl TileReader for ConnTiles<'_> {
    type Error = rusqlite::Error;
    fn tile(&mut self, id: TileId) -> rusqlite::Result<Vec<Hash>> {
        if id.level == 0 {
            return self.leaves(id.index);
        }
        let blob: Option<Vec<u8>> = self
            .conn
            .prepare_cached(
                "SELECT hashes FROM tlog_tiles WHERE ledger = ?1 AND level = ?2 AND idx = ?3",
            )?
            .query_row(params![self.ledger, id.level, seq_i64(id.index)], |r| {
                r.get(0)
            })
            .optional()?;
        let blob = blob.ok_or_else(|| {
            corrupt(format!(
                "ledger `{}`: the tree's tile {}/{} is missing",
                self.ledger, id.level, id.index
            ))
        })?;
        to_hashes(&blob).ok_or_else(|| {
            corrupt(format!(
                "ledger `{}`: the tree's tile {}/{} is not whole hashes",
                self.ledger, id.level, id.index
            ))
        })
    }
    fn short_tile(&self, id: TileId, have: usize, need: usize) -> rusqlite::Error {
        corrupt(format!(
            "ledger `{}`: the tree's tile {}/{} holds {have} hashes where {need} are needed",
            self.ledger, id.level, id.index
        ))
    }
}

impl ConnTiles<'_> {
    /// Tile 0/`index`: the leaf hashes of its events' `hash` column (the
    /// tree stores no copy of them).
    fn leaves(&self, index: u64) -> rusqlite::Result<Vec<Hash>> {
        let first = self.anchor + index * TILE_WIDTH as u64;
        let end = (first + TILE_WIDTH as u64).min(self.anchor + self.size);
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, hash FROM events WHERE ledger = ?1 AND seq >= ?2 AND seq < ?3 ORDER BY seq",
        )?;
        let mut rows = stmt.query(params![self.ledger, seq_i64(first), seq_i64(end)])?;
        let mut out = Vec::with_capacity(TILE_WIDTH);
        while let Some(row) = rows.next()? {
            let want = first + out.len() as u64;
            let seq = row.get::<_, i64>(0)?;
            match row.get_ref(1)?.as_str().ok().and_then(Hash::from_hex) {
                Some(h) if seq == seq_i64(want) => out.push(leaf_hash(&h.0)),
                _ => {
                    return Err(corrupt(format!(
                        "ledger `{}`: the events row at seq {want} is missing or its hash is not 64 hex digits (run `ledgertail verify --db`)",
                        self.ledger
                    )))
                }
            }
        }
        Ok(out)
    }
}

/// The tree's size and root as the ledger's checkpoints row records them
/// (size 0 before its first commit).
fn stored_head(conn: &Connection, ledger: &str) -> rusqlite::Result<(u64, Option<String>)> {
    let head: Option<(i64, Option<String>)> = conn
        .prepare_cached("SELECT tree_size, tree_root FROM checkpoints WHERE ledger = ?1")?
        .query_row([ledger], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(head.map_or((0, None), |(s, r)| (s.max(0) as u64, r)))
}

/// The edge each ledger's last commit left, so that the next commit need
/// not read its partial tiles (up to 255 rows of level 0 and a tile per
/// level above) and rebuild it. It is only trusted while the stored size
/// and root are still the ones it ends: a commit that was rolled back, or
/// another writer's, makes it miss, and the edge is loaded from the rows.
pub(super) type EdgeCache = std::cell::RefCell<std::collections::HashMap<String, Edge>>;

fn load_edge(conn: &Connection, ledger: &str, anchor: u64, size: u64) -> rusqlite::Result<Edge> {
    let mut reader = ConnTiles {
        conn,
        ledger,
        anchor,
        size,
    };
    let tiles = partial_tiles(size)
        .into_iter()
        .map(|(id, _)| reader.tile(id))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Edge::from_tiles(size, tiles).map_err(|e| corrupt(format!("ledger `{ledger}`: {e}")))
}

fn store_tile(
    conn: &Connection,
    ledger: &str,
    id: TileId,
    hashes: &[Hash],
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO tlog_tiles (ledger, level, idx, hashes) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (ledger, level, idx) DO UPDATE SET hashes = excluded.hashes",
    )?
    .execute(params![
        ledger,
        id.level,
        seq_i64(id.index),
        to_blob(hashes)
    ])?;
    Ok(())
}

/// Appends `leaves` (event hashes, in seq order) to the stored tree of
/// `ledger`, which must have `size` leaves; stores the tiles and the new
/// size and root on the checkpoints row. Runs inside the caller's
/// transaction.
fn extend(
    conn: &Connection,
    ledger: &str,
    anchor: u64,
    size: u64,
    leaves: impl Iterator<Item = Hash>,
) -> rusqlite::Result<TreeHead> {
    let edge = load_edge(conn, ledger, anchor, size)?;
    Ok(grow(conn, ledger, edge, leaves)?.0)
}

/// Adds `leaves` to `edge` and stores what changed: the new tree's head
/// and its edge.
fn grow(
    conn: &Connection,
    ledger: &str,
    mut edge: Edge,
    leaves: impl Iterator<Item = Hash>,
) -> rusqlite::Result<(TreeHead, Edge)> {
    let old_size = edge.size();
    let mut full = Vec::new();
    for hash in leaves {
        edge.push(leaf_hash(&hash.0), &mut full);
    }
    // Level 0 is the events' own hashes: only the levels above are kept.
    for (id, hashes) in full.iter().filter(|(id, _)| id.level > 0) {
        store_tile(conn, ledger, *id, hashes)?;
    }
    let changed = edge.partial_changed_since(old_size);
    for (id, hashes) in changed.filter(|(id, _)| id.level > 0) {
        store_tile(conn, ledger, id, hashes)?;
    }
    let head = TreeHead {
        size: edge.size(),
        root: edge.root(),
    };
    conn.prepare_cached("UPDATE checkpoints SET tree_size = ?2, tree_root = ?3 WHERE ledger = ?1")?
        .execute(params![ledger, seq_i64(head.size), head.root.to_hex()])?;
    Ok((head, edge))
}

/// The tree's part of a batch's commit: the batch's events become leaves.
/// The checkpoints row must already be written (it is the batch's state).
pub(super) fn append(
    conn: &Connection,
    ledger: &str,
    state: &LedgerState,
    events: &[EventRow],
    edges: &EdgeCache,
) -> rusqlite::Result<()> {
    let (Some(first), Some(anchor)) = (events.first(), state.anchor) else {
        return Ok(());
    };
    let (size, root) = stored_head(conn, ledger)?;
    let expected = first.event.seq.checked_sub(anchor.seq);
    if expected != Some(size) {
        return Err(corrupt(format!(
            "ledger `{ledger}`: the tree has {size} leaves, but the batch starts at seq {} (anchor {})",
            first.event.seq, anchor.seq
        )));
    }
    let cached = edges
        .borrow_mut()
        .remove(ledger)
        .filter(|e| e.size() == size && root.as_deref().and_then(Hash::from_hex) == Some(e.root()));
    let edge = match cached {
        Some(edge) => edge,
        None => load_edge(conn, ledger, anchor.seq, size)?,
    };
    let (_, edge) = grow(conn, ledger, edge, events.iter().map(|r| r.event.hash))?;
    edges.borrow_mut().insert(ledger.to_owned(), edge);
    Ok(())
}

impl Mirror {
    /// Builds the tree of every ledger whose tree is behind its head (a
    /// mirror from before the tree, or a build that was interrupted), one
    /// chunk per transaction, with progress in the log.
    pub(super) fn build_trees(&self) -> Result<()> {
        let behind = || -> rusqlite::Result<Vec<(String, u64, u64, u64)>> {
            let mut stmt = self.conn.prepare(
                "SELECT ledger, anchor_seq, head_seq, tree_size FROM checkpoints
                 WHERE head_seq IS NOT NULL AND anchor_seq IS NOT NULL
                   AND tree_size != head_seq - anchor_seq + 1",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, i64>(3)? as u64,
                ))
            })?;
            rows.collect()
        };
        for (ledger, anchor, head, mut size) in behind().map_err(|e| self.err(e))? {
            let total = head.saturating_sub(anchor) + 1;
            if size > total {
                return Err(self.err(corrupt(format!(
                    "ledger `{ledger}`: the tree has {size} leaves, more than the {total} events from the anchor to the head"
                ))));
            }
            tracing::info!(ledger = %ledger, done = size, total, "building the ledger's Merkle tree");
            let started = std::time::Instant::now();
            while size < total {
                let chunk = BUILD_CHUNK.min(total - size);
                let tx = self.schema_transaction()?;
                let step = (|| {
                    let mut stmt = tx.prepare_cached(
                        "SELECT seq, hash FROM events WHERE ledger = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                    )?;
                    let mut rows =
                        stmt.query(params![ledger, seq_i64(anchor + size), seq_i64(chunk)])?;
                    let mut leaves = Vec::with_capacity(chunk as usize);
                    while let Some(row) = rows.next()? {
                        let seq = row.get::<_, i64>(0)? as u64;
                        let want = anchor + size + leaves.len() as u64;
                        let hash = row.get_ref(1)?.as_str().ok().and_then(Hash::from_hex);
                        match hash {
                            Some(h) if seq == want => leaves.push(h),
                            _ => {
                                return Err(corrupt(format!(
                                    "ledger `{ledger}`: the events row at seq {want} is missing or its hash is not 64 hex digits; the tree cannot be built (run `ledgertail verify --db`)"
                                )))
                            }
                        }
                    }
                    drop(rows);
                    if (leaves.len() as u64) < chunk {
                        return Err(corrupt(format!(
                            "ledger `{ledger}`: the events rows stop at seq {} before the head {head}; the tree cannot be built",
                            anchor + size + leaves.len() as u64
                        )));
                    }
                    drop(stmt);
                    extend(&tx, &ledger, anchor, size, leaves.into_iter())
                })();
                let head = step
                    .and_then(|h| tx.commit().map(|()| h))
                    .map_err(|e| self.err(e))?;
                size = head.size;
                tracing::info!(ledger = %ledger, done = size, total, "building the ledger's Merkle tree");
            }
            tracing::info!(ledger = %ledger, leaves = total, secs = started.elapsed().as_secs_f64(), "the ledger's Merkle tree is built");
        }
        Ok(())
    }

    /// The tree's size and root as committed with the head.
    pub fn tree_head(&self, ledger: &str) -> Result<Option<TreeHead>> {
        if self.version < 3 {
            // Opened read-only before a writer migrated it: no tree yet.
            return Ok(None);
        }
        let row: Option<(i64, Option<String>)> = self
            .conn
            .query_row(
                "SELECT tree_size, tree_root FROM checkpoints WHERE ledger = ?1",
                [ledger],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.and_then(|(size, root)| {
            Some(TreeHead {
                size: u64::try_from(size).ok()?,
                root: Hash::from_hex(root.as_deref()?)?,
            })
        }))
    }

    /// The tree's stored hashes, for roots and proofs at any size up to
    /// the stored one.
    pub fn tree_hashes<'m>(&'m self, ledger: &'m str) -> Result<TileHashes<ConnTiles<'m>>> {
        let (anchor, size) = self
            .conn
            .query_row(
                "SELECT coalesce(anchor_seq, 0), tree_size FROM checkpoints WHERE ledger = ?1",
                [ledger],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, i64>(1)?.max(0) as u64,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or((0, 0));
        Ok(TileHashes::new(ConnTiles {
            conn: &self.conn,
            ledger,
            anchor,
            size,
        }))
    }

    /// The root of the tree at `size` (≤ the stored size).
    pub fn tree_root_at(&self, ledger: &str, size: u64) -> Result<Hash> {
        tree::root(&mut self.tree_hashes(ledger)?, size).map_err(|e| self.err(e))
    }

    /// The inclusion proof of leaf `index` in the tree at `size`.
    pub fn inclusion_proof(
        &self,
        ledger: &str,
        index: u64,
        size: u64,
    ) -> Result<std::result::Result<Vec<Hash>, ProofError>> {
        tree::inclusion_proof(&mut self.tree_hashes(ledger)?, index, size).map_err(|e| self.err(e))
    }

    /// The consistency proof from the tree at `old` to the tree at `size`.
    pub fn consistency_proof(
        &self,
        ledger: &str,
        old: u64,
        size: u64,
    ) -> Result<std::result::Result<Vec<Hash>, ProofError>> {
        tree::consistency_proof(&mut self.tree_hashes(ledger)?, old, size).map_err(|e| self.err(e))
    }
}
