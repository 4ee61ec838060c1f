//! The mirror's read side: lookups for the shipper (mirrored hashes, where
//! a line was), for re-judging, for parity and audits (rows in seq order),
//! and for `status`. Only reads, but for the small `meta` table.

use rusqlite::{params, OptionalExtension};

use super::{opt_hash, seq_i64, Halt, HaltRecord, Mirror, Result, StoredEvent};

/// Unresolved quarantine rows by ledger, then by verdict.
pub type QuarantineCounts =
    std::collections::HashMap<String, std::collections::BTreeMap<String, u64>>;
use crate::ledger::{Hash, Verdict};
use crate::tail::FileId;

impl Mirror {
    /// Names of the ledgers this mirror holds, sorted: one checkpoint row
    /// each (written with a ledger's first commit), so this never reads
    /// the events table.
    pub fn ledgers(&self) -> Result<Vec<String>> {
        let run = || -> rusqlite::Result<Vec<String>> {
            let mut stmt = self
                .conn
                .prepare("SELECT ledger FROM checkpoints ORDER BY 1")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// The hash mirrored at `seq`, if any.
    pub fn hash_at(&self, ledger: &str, seq: u64) -> Result<Option<Hash>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT hash FROM events WHERE ledger = ?1 AND seq = ?2")
            .map_err(|e| self.err(e))?;
        let hash: Option<String> = stmt
            .query_row(params![ledger, seq_i64(seq)], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(opt_hash(hash))
    }

    /// The verdict and detail of the latest unresolved quarantined line
    /// that claimed `seq`: what a `seq_gap` halt names as its cause. Only
    /// read when a ledger halts, so a scan of the ledger's rows is fine.
    pub fn quarantined_seq(&self, ledger: &str, seq: u64) -> Result<Option<(Verdict, String)>> {
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT verdict, detail FROM quarantine
                 WHERE ledger = ?1 AND seq = ?2 AND resolved_at IS NULL
                 ORDER BY qid DESC LIMIT 1",
                params![ledger, seq_i64(seq)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.and_then(|(v, d)| Some((Verdict::parse(&v)?, d))))
    }

    /// Where the lines quarantined as `unknown_key` or `unsigned` (and not
    /// resolved) are: the candidates for judging again after a reload.
    pub fn rejudge_candidates(&self, ledger: &str) -> Result<Vec<(FileId, u64)>> {
        let run = || -> rusqlite::Result<Vec<(String, i64)>> {
            let mut stmt = self.conn.prepare(
                "SELECT file_id, file_offset FROM quarantine
                 WHERE ledger = ?1 AND resolved_at IS NULL AND verdict IN ('unknown_key', 'unsigned')",
            )?;
            let rows = stmt.query_map([ledger], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        };
        let rows = run().map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, off)| Some((id.parse().ok()?, u64::try_from(off).ok()?)))
            .collect())
    }

    /// The file and offset of the line of the event mirrored at `seq`.
    pub fn event_location(&self, ledger: &str, seq: u64) -> Result<Option<(FileId, u64)>> {
        let row: Option<(String, i64)> = self
            .conn
            .query_row(
                "SELECT file_id, file_offset FROM events WHERE ledger = ?1 AND seq = ?2",
                params![ledger, seq_i64(seq)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.and_then(|(id, off)| Some((id.parse().ok()?, u64::try_from(off).ok()?))))
    }

    /// When a ledger's checkpoint was last written (its last commit) and
    /// when its halt, if any, was first recorded.
    pub fn checkpoint_times(&self, ledger: &str) -> Result<Option<(String, Option<String>)>> {
        // halted_at came with schema 2 (a reader may find an older file).
        let sql = if self.version >= 2 {
            "SELECT updated_at, halted_at FROM checkpoints WHERE ledger = ?1"
        } else {
            "SELECT updated_at, NULL FROM checkpoints WHERE ledger = ?1"
        };
        self.conn
            .query_row(sql, [ledger], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// A ledger's halts, newest first, at most `limit` (none in a mirror
    /// older than the history).
    pub fn halt_history(&self, ledger: &str, limit: usize) -> Result<Vec<HaltRecord>> {
        if self.version < 4 {
            return Ok(Vec::new());
        }
        let run = || -> rusqlite::Result<Vec<HaltRecord>> {
            let mut stmt = self.conn.prepare(
                "SELECT verdict, detail, file, file_offset, seq, halted_at, lifted_at, lifted_how
                 FROM halts WHERE ledger = ?1 ORDER BY hid DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(
                params![ledger, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    let verdict: String = r.get(0)?;
                    let lifted_at: Option<String> = r.get(6)?;
                    let lifted_how: Option<String> = r.get(7)?;
                    Ok(HaltRecord {
                        halt: Halt {
                            verdict: Verdict::parse(&verdict).unwrap_or(Verdict::Rewritten),
                            detail: r.get(1)?,
                            file: r.get(2)?,
                            offset: r.get::<_, Option<i64>>(3)?.map(|o| o as u64),
                            seq: r.get::<_, Option<i64>>(4)?.map(|s| s as u64),
                        },
                        halted_at: r.get(5)?,
                        lifted: lifted_at.map(|at| (at, lifted_how.unwrap_or_default())),
                    })
                },
            )?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// Whether a row or a quarantined line was ever read from the file
    /// with this id (its `files` row).
    pub fn knows_file(&self, file_id: &str) -> Result<bool> {
        if self.version < 2 {
            return Ok(false);
        }
        self.conn
            .query_row("SELECT 1 FROM files WHERE file_id = ?1", [file_id], |_| {
                Ok(())
            })
            .optional()
            .map(|found| found.is_some())
            .map_err(|e| self.err(e))
    }

    /// The path a file was last read under, from the `files` table.
    /// The first `limit` rows of a ledger read from the file `file_id`,
    /// from the seq of its first event (the `files` table's): the lines a
    /// file must still hold to stand for it.
    pub fn first_rows_of_file(
        &self,
        ledger: &str,
        file_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        if self.version < 5 {
            return Ok(Vec::new());
        }
        let first: Option<i64> = self
            .conn
            .query_row(
                "SELECT first_seq FROM files WHERE file_id = ?1 AND ledger = ?2",
                [file_id, ledger],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .flatten();
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        let rows = self.events_from(ledger, u64::try_from(first).unwrap_or(0), limit)?;
        Ok(rows
            .into_iter()
            .take_while(|r| r.file_id == file_id)
            .collect())
    }

    pub fn file_path(&self, file_id: &str) -> Result<Option<String>> {
        if self.version < 2 {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT path FROM files WHERE file_id = ?1",
                [file_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The last seq a recorded file can hold: the one before the first seq
    /// of the ledger's next file (by first seq); `None` when no later file
    /// is recorded (the file may hold up to the head), or when the mirror
    /// recorded no first seq for it (made before files had one).
    pub fn last_seq_of_file(&self, ledger: &str, file_id: &str) -> Result<Option<u64>> {
        if self.version < 5 {
            return Ok(None);
        }
        let next: Option<i64> = self
            .conn
            .query_row(
                "SELECT min(n.first_seq) FROM files AS f
                 JOIN files AS n ON n.ledger = f.ledger AND n.first_seq > f.first_seq
                 WHERE f.file_id = ?1 AND f.ledger = ?2",
                params![file_id, ledger],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(next.and_then(|n| u64::try_from(n - 1).ok()))
    }

    /// A value of the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Mirrored events of a ledger with `seq` in `from..`, at most `limit`,
    /// in seq order, in one short read transaction.
    pub fn events_from(&self, ledger: &str, from: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.events_where(
            "SELECT seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset, line_sha256
             FROM events WHERE ledger = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
            ledger,
            from,
            limit,
        )
    }

    /// Mirrored events of a ledger with `seq` at most `to`, at most
    /// `limit`, newest first, in one short read transaction.
    pub fn events_down_from(
        &self,
        ledger: &str,
        to: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        self.events_where(
            "SELECT seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset, line_sha256
             FROM events WHERE ledger = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT ?3",
            ledger,
            to,
            limit,
        )
    }

    /// The rows `sql` selects, bound to (ledger, seq, limit).
    fn events_where(
        &self,
        sql: &str,
        ledger: &str,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let run = || -> rusqlite::Result<Vec<StoredEvent>> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![ledger, seq_i64(seq), limit], stored_event)?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// Quarantine counts by ledger and verdict (unresolved rows only), in
    /// one pass over the table.
    pub fn quarantine_counts(&self) -> Result<QuarantineCounts> {
        let run = || -> rusqlite::Result<QuarantineCounts> {
            let mut stmt = self.conn.prepare(
                "SELECT ledger, verdict, count(*) FROM quarantine
                 WHERE resolved_at IS NULL GROUP BY ledger, verdict",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = QuarantineCounts::new();
            while let Some(r) = rows.next()? {
                let n = u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0);
                out.entry(r.get(0)?).or_default().insert(r.get(1)?, n);
            }
            Ok(out)
        };
        run().map_err(|e| self.err(e))
    }

    /// A plain ledger's files as read so far: the seq of each one's first
    /// event, by the fingerprint of its first line (the lines hold no seq
    /// to order or place the files by). The lowest seq where two files
    /// share a first line.
    pub fn plain_first_seqs(
        &self,
        ledger: &str,
    ) -> Result<std::collections::HashMap<crate::tail::Fingerprint, u64>> {
        let run =
            || -> rusqlite::Result<std::collections::HashMap<crate::tail::Fingerprint, u64>> {
                let mut stmt = self.conn.prepare_cached(
                "SELECT file_id, first_seq FROM files WHERE ledger = ?1 AND first_seq IS NOT NULL",
            )?;
                let mut rows = stmt.query([ledger])?;
                let mut out = std::collections::HashMap::new();
                while let Some(r) = rows.next()? {
                    let id: String = r.get(0)?;
                    let seq = u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0);
                    if let Some(fp) = id
                        .parse::<crate::tail::FileId>()
                        .ok()
                        .and_then(|f| f.fingerprint)
                    {
                        let at = out.entry(fp).or_insert(seq);
                        *at = (*at).min(seq);
                    }
                }
                Ok(out)
            };
        run().map_err(|e| self.err(e))
    }

    /// A plain ledger's recorded lines a copy would hold: the SHA-256 of
    /// the first `per_file` rows of each of the `files` newest files it
    /// read.
    pub fn plain_recorded_lines(
        &self,
        ledger: &str,
        files: usize,
        per_file: usize,
    ) -> Result<std::collections::HashSet<String>> {
        // A plain ledger's seqs run on from file to file, so a file's first
        // rows are the seqs from its first: one query, however many files.
        let run = || -> rusqlite::Result<std::collections::HashSet<String>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT e.line_sha256
                 FROM (SELECT first_seq FROM files
                       WHERE ledger = ?1 AND first_seq IS NOT NULL
                       ORDER BY first_seq DESC LIMIT ?2) AS f
                 JOIN events AS e
                   ON e.ledger = ?1 AND e.seq >= f.first_seq AND e.seq < f.first_seq + ?3
                 WHERE e.line_sha256 IS NOT NULL",
            )?;
            let limit = i64::try_from(files).unwrap_or(i64::MAX);
            let per_file = i64::try_from(per_file).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![ledger, limit, per_file], |r| r.get(0))?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// Visits every mirrored event of a ledger in seq order.
    pub fn for_each_event(
        &self,
        ledger: &str,
        mut visit: impl FnMut(StoredEvent) -> std::ops::ControlFlow<()>,
    ) -> Result<()> {
        let mut run = || -> rusqlite::Result<()> {
            let mut stmt = self.conn.prepare(
                "SELECT seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset, line_sha256
                 FROM events WHERE ledger = ?1 ORDER BY seq",
            )?;
            let mut rows = stmt.query([ledger])?;
            while let Some(r) = rows.next()? {
                if visit(stored_event(r)?).is_break() {
                    break;
                }
            }
            Ok(())
        };
        run().map_err(|e| self.err(e))
    }
}

/// A row of `SELECT seq, id, ts, type, payload, extra, prev_hash, hash,
/// key_id, sig, file_id, file_offset, line_sha256 FROM events`, read
/// whatever the column types hold (see [`StoredEvent::fault`]).
fn stored_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let mut row = event_cells(r)?;
    row.line_sha256 = match r.get_ref(12)? {
        rusqlite::types::ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    };
    Ok(row)
}

/// The event columns of a row (the first twelve).
fn event_cells(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    use crate::ledger::columns::Cell;
    use rusqlite::types::ValueRef;
    StoredEvent::from_cells(|i| {
        Ok(match r.get_ref(i)? {
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(t) => Cell::Text(t.to_owned()),
                Err(_) => Cell::NotUtf8,
            },
            ValueRef::Integer(n) => Cell::Integer(n),
            ValueRef::Null => Cell::Null,
            ValueRef::Real(_) => Cell::Other("Real"),
            ValueRef::Blob(_) => Cell::Other("Blob"),
        })
    })
}
