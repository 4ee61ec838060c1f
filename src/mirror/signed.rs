//! The signed side of the verifiable log in the mirror (contract §7): the
//! checkpoints the log key signed (append-only: triggers refuse an update
//! or a delete) and the witnesses' cosignatures of them.

use rusqlite::{params, OptionalExtension};

use super::{now_text, seq_i64, Mirror, Result};

/// A checkpoint as kept: its size, base64 root, and the signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: String,
    pub note: String,
    pub signed_at: String,
}

/// A witness's cosignature as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCosignature {
    pub witness: String,
    pub size: u64,
    pub line: String,
    pub cosigned_at: u64,
}

impl Mirror {
    fn has_tlog(&self) -> bool {
        self.version >= 3
    }

    /// The latest signed checkpoint of a ledger (the largest).
    pub fn latest_checkpoint(&self, ledger: &str) -> Result<Option<StoredCheckpoint>> {
        if !self.has_tlog() {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT size, root, note, signed_at FROM tlog_checkpoints WHERE ledger = ?1 ORDER BY size DESC LIMIT 1",
                [ledger],
                |r| {
                    Ok(StoredCheckpoint {
                        size: r.get::<_, i64>(0)?.max(0) as u64,
                        root: r.get(1)?,
                        note: r.get(2)?,
                        signed_at: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every signed checkpoint of a ledger, by size.
    pub fn checkpoints_signed(&self, ledger: &str) -> Result<Vec<StoredCheckpoint>> {
        if !self.has_tlog() {
            return Ok(Vec::new());
        }
        let run = || -> rusqlite::Result<Vec<StoredCheckpoint>> {
            let mut stmt = self.conn.prepare(
                "SELECT size, root, note, signed_at FROM tlog_checkpoints WHERE ledger = ?1 ORDER BY size",
            )?;
            let rows = stmt.query_map([ledger], |r| {
                Ok(StoredCheckpoint {
                    size: r.get::<_, i64>(0)?.max(0) as u64,
                    root: r.get(1)?,
                    note: r.get(2)?,
                    signed_at: r.get(3)?,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// Keeps a newly signed checkpoint.
    pub fn store_checkpoint(&self, ledger: &str, size: u64, root: &str, note: &str) -> Result<()> {
        self.check_in_place()?;
        self.conn
            .execute(
                "INSERT INTO tlog_checkpoints (ledger, size, root, note, signed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![ledger, seq_i64(size), root, note, now_text()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Keeps several signed checkpoints in one transaction (a round of
    /// the publisher signs many ledgers; one commit, not one each).
    /// `(ledger, size, root, note)`; all are kept, or none.
    pub fn store_checkpoints(&self, rows: &[(&str, u64, String, &str)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.check_in_place()?;
        let run = || -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO tlog_checkpoints (ledger, size, root, note, signed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let at = now_text();
                for (ledger, size, root, note) in rows {
                    insert.execute(params![ledger, seq_i64(*size), root, note, at])?;
                }
            }
            tx.commit()
        };
        run().map_err(|e| self.err(e))
    }

    /// Keeps a witness's cosignature (once per witness and size).
    pub fn store_cosignature(&self, ledger: &str, c: &StoredCosignature) -> Result<()> {
        self.check_in_place()?;
        self.conn
            .execute(
                "INSERT OR IGNORE INTO tlog_cosignatures (ledger, size, witness, line, cosigned_at, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![ledger, seq_i64(c.size), c.witness, c.line, seq_i64(c.cosigned_at), now_text()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The cosignatures of the checkpoint of `size`.
    pub fn cosignatures(&self, ledger: &str, size: u64) -> Result<Vec<StoredCosignature>> {
        if !self.has_tlog() {
            return Ok(Vec::new());
        }
        let run = || -> rusqlite::Result<Vec<StoredCosignature>> {
            let mut stmt = self.conn.prepare(
                "SELECT witness, size, line, cosigned_at FROM tlog_cosignatures
                 WHERE ledger = ?1 AND size = ?2 ORDER BY witness",
            )?;
            let rows = stmt.query_map(params![ledger, seq_i64(size)], |r| {
                Ok(StoredCosignature {
                    witness: r.get(0)?,
                    size: r.get::<_, i64>(1)?.max(0) as u64,
                    line: r.get(2)?,
                    cosigned_at: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// The largest size a witness cosigned for a ledger.
    pub fn witness_size(&self, ledger: &str, witness: &str) -> Result<Option<u64>> {
        if !self.has_tlog() {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT max(size) FROM tlog_cosignatures WHERE ledger = ?1 AND witness = ?2",
                params![ledger, witness],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|s| s.map(|s| s.max(0) as u64))
            .map_err(|e| self.err(e))
    }
}
