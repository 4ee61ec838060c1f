//! The write path: a batch's rows, quarantine rows and checkpoint in one
//! transaction ([`Mirror::commit`], durable when it returns), or in one
//! savepoint of a group's transaction ([`Mirror::stage`], durable when
//! the [`Group`] commits).

use rusqlite::{params, Connection, ErrorCode};

use super::{
    now_text, seq_i64, Batch, EventRow, Group, LedgerState, Mirror, MirrorError, QuarantineRow,
    Result,
};
use crate::tail::FileId;

/// Runs one statement without parameters through the statement cache:
/// a transaction's BEGIN and COMMIT are parsed once per connection, not
/// at every commit (parsing them was about 5 % of the live path's CPU).
pub(super) fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Writes down the path a file was read under, the ledger it belongs to
/// and, when it has rows here, the seq of its first event (once per file
/// and batch).
fn note_file(
    tx: &Connection,
    ledger: &str,
    file: &FileId,
    path: &str,
    first_seq: Option<u64>,
    now: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO files (file_id, path, seen_at, ledger, first_seq) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (file_id) DO UPDATE SET path = excluded.path, seen_at = excluded.seen_at,
             ledger = excluded.ledger,
             first_seq = CASE WHEN excluded.first_seq IS NULL THEN first_seq
                              WHEN first_seq IS NULL THEN excluded.first_seq
                              ELSE min(first_seq, excluded.first_seq) END
         WHERE path IS NOT excluded.path OR ledger IS NOT excluded.ledger
             OR (excluded.first_seq IS NOT NULL AND (first_seq IS NULL OR first_seq > excluded.first_seq))",
    )?
    .execute(params![file.to_string(), path, now, ledger, first_seq.map(seq_i64)])
    .map(|_| ())
}

/// Hex digits as text (they are ASCII).
fn hex_str(digits: &[u8; 64]) -> &str {
    std::str::from_utf8(digits).unwrap_or_default()
}

/// The body of [`Mirror::commit`]. `Ok(false)`: the checkpoint moved
/// under us (another writer).
fn write_batch(
    tx: &Connection,
    ledger: &str,
    batch: &Batch<'_>,
    state: &LedgerState,
    now: &str,
    edges: &super::tree::EdgeCache,
) -> rusqlite::Result<bool> {
    insert_events(tx, ledger, batch.events)?;
    resolve_quarantine(tx, ledger, batch.events, batch.resolve, now)?;
    insert_quarantine(tx, ledger, batch.quarantine, batch.resolve, now)?;
    for (file, path, first_seq) in batch.files {
        note_file(tx, ledger, file, path, Some(*first_seq), now)?;
    }
    let changed = write_checkpoint(tx, ledger, state, now)?;
    if changed {
        super::tree::append(tx, ledger, state, batch.events, edges)?;
        note_halt(tx, ledger, state, batch.lifted, now)?;
    }
    Ok(changed)
}

fn insert_events(tx: &Connection, ledger: &str, events: &[EventRow]) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (ledger, seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset, line_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    // Per-row allocations avoided: the hashes' hex digits on the stack,
    // the file id's text once per file.
    let mut file_text = (None, String::new());
    for row in events {
        let e = &row.event;
        if file_text.0 != Some(row.file) {
            file_text = (Some(row.file), row.file.to_string());
        }
        let hash = e.hash.hex_digits();
        let prev = e.prev_hash.map(|h| h.hex_digits());
        let line_sha256 = e.line_sha256.map(|h| h.hex_digits());
        insert.execute(params![
            ledger,
            seq_i64(e.seq),
            e.id,
            e.ts,
            e.event_type,
            e.payload,
            e.extra,
            prev.as_ref().map(hex_str),
            hex_str(&hash),
            e.key_id,
            e.sig,
            file_text.1,
            seq_i64(row.offset),
            line_sha256.as_ref().map(hex_str),
        ])?;
    }
    Ok(())
}

/// Quarantined lines now mirrored as events (judged again after a
/// reload) are marked resolved.
fn resolve_quarantine(
    tx: &Connection,
    ledger: &str,
    events: &[EventRow],
    resolve: bool,
    now: &str,
) -> rusqlite::Result<()> {
    if !resolve || events.is_empty() {
        return Ok(());
    }
    // A row written before file ids carried a fingerprint names the
    // file by `dev:ino` alone.
    let mut resolve = tx.prepare_cached(
        "UPDATE quarantine SET resolved_at = ?4
         WHERE ledger = ?1 AND file_id IN (?2, ?5) AND file_offset = ?3 AND resolved_at IS NULL",
    )?;
    for row in events {
        let inode_only = FileId {
            fingerprint: None,
            ..row.file
        };
        resolve.execute(params![
            ledger,
            row.file.to_string(),
            seq_i64(row.offset),
            now,
            inode_only.to_string()
        ])?;
    }
    Ok(())
}

fn insert_quarantine(
    tx: &Connection,
    ledger: &str,
    quarantine: &[QuarantineRow],
    resolve: bool,
    now: &str,
) -> rusqlite::Result<()> {
    if quarantine.is_empty() {
        return Ok(());
    }
    // A line found again at the same place (after a checkpoint was
    // relocated) is the same evidence, kept once; judged again after a
    // reload, its row takes the new verdict.
    let mut insert = tx.prepare_cached(if resolve {
        "INSERT INTO quarantine (ledger, file_id, file_offset, line_length, seq, hash, verdict, detail, line, quarantined_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (ledger, file_id, file_offset) DO UPDATE SET verdict = excluded.verdict,
            detail = excluded.detail, seq = excluded.seq, hash = excluded.hash
         WHERE resolved_at IS NULL"
    } else {
        "INSERT OR IGNORE INTO quarantine (ledger, file_id, file_offset, line_length, seq, hash, verdict, detail, line, quarantined_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    })?;
    let mut last_file = None;
    for q in quarantine {
        if last_file != Some(q.file) {
            note_file(tx, ledger, &q.file, &q.path, None, now)?;
            last_file = Some(q.file);
        }
        insert.execute(params![
            ledger,
            q.file.to_string(),
            seq_i64(q.offset),
            seq_i64(q.length),
            q.seq.map(seq_i64),
            q.hash.map(|h| h.to_hex()),
            q.verdict.as_str(),
            q.detail,
            q.line,
            now,
        ])?;
    }
    Ok(())
}

/// Writes the ledger's checkpoint if its generation is still the one
/// `state` was read at. False: another writer moved it.
fn write_checkpoint(
    tx: &Connection,
    ledger: &str,
    state: &LedgerState,
    now: &str,
) -> rusqlite::Result<bool> {
    let pos = state.position.as_ref();
    let halt = state.halt.as_ref();
    let values = params![
        ledger,
        state.live_path.to_string_lossy(),
        pos.map(|p| p.file.to_string()),
        pos.map(|p| p.path.to_string_lossy().into_owned()),
        pos.map_or(0, |p| seq_i64(p.offset)),
        pos.map(|p| p.tail.clone()),
        state.head.map(|h| seq_i64(h.seq)),
        state.head.map(|h| h.hash.to_hex()),
        state.anchor.map(|h| seq_i64(h.seq)),
        state.anchor.map(|h| h.hash.to_hex()),
        i64::from(halt.is_some()),
        halt.map(|h| h.verdict.as_str()),
        halt.map(|h| h.detail.clone()),
        halt.and_then(|h| h.file.clone()),
        halt.and_then(|h| h.offset.map(seq_i64)),
        halt.and_then(|h| h.seq.map(seq_i64)),
        state.generation,
        now,
    ];
    // halted_at: set when a halt is first recorded, kept while the same
    // halt stands (an UPDATE reads the row's old values), cleared with it.
    let changed = if state.generation == 0 {
        tx.prepare_cached(
            "INSERT INTO checkpoints (ledger, live_path, file_id, file_path, file_offset, tail_check,
                head_seq, head_hash, anchor_seq, anchor_hash, halted, halt_verdict, halt_detail,
                halt_file, halt_offset, halt_seq, generation, updated_at, halted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17 + 1, ?18,
                CASE WHEN ?11 = 1 THEN ?18 END)
             ON CONFLICT (ledger) DO NOTHING",
        )?
        .execute(values)?
    } else {
        tx.prepare_cached(
            "UPDATE checkpoints SET live_path = ?2, file_id = ?3, file_path = ?4, file_offset = ?5,
                tail_check = ?6, head_seq = ?7, head_hash = ?8, anchor_seq = ?9, anchor_hash = ?10,
                halted = ?11, halt_verdict = ?12, halt_detail = ?13, halt_file = ?14,
                halt_offset = ?15, halt_seq = ?16, generation = ?17 + 1, updated_at = ?18,
                halted_at = CASE
                    WHEN ?11 = 0 THEN NULL
                    WHEN halted = 1 AND halt_verdict IS ?12 AND halt_file IS ?14 AND halt_offset IS ?15
                        THEN coalesce(halted_at, ?18)
                    ELSE ?18 END
             WHERE ledger = ?1 AND generation = ?17",
        )?
        .execute(values)?
    };
    Ok(changed == 1)
}

/// Keeps the `halts` history: a halt in force has an open row (one per
/// halt: the same halt committed again adds nothing; another halt closes
/// the one before); a lifted halt's row says when and how. Nothing is
/// written while a ledger runs unhalted.
fn note_halt(
    tx: &Connection,
    ledger: &str,
    state: &LedgerState,
    lifted: Option<&str>,
    now: &str,
) -> rusqlite::Result<()> {
    let Some(h) = &state.halt else {
        if let Some(how) = lifted {
            tx.prepare_cached(
                "UPDATE halts SET lifted_at = ?2, lifted_how = ?3 WHERE ledger = ?1 AND lifted_at IS NULL",
            )?
            .execute(params![ledger, now, how])?;
        }
        return Ok(());
    };
    let values = params![
        ledger,
        h.verdict.as_str(),
        h.detail,
        h.file,
        h.offset.map(seq_i64),
        h.seq.map(seq_i64),
        now
    ];
    tx.prepare_cached(
        "UPDATE halts SET lifted_at = ?7, lifted_how = 'another halt took its place'
         WHERE ledger = ?1 AND lifted_at IS NULL
           AND NOT (verdict = ?2 AND file IS ?4 AND file_offset IS ?5 AND seq IS ?6)",
    )?
    .execute(values)?;
    tx.prepare_cached(
        "INSERT INTO halts (ledger, verdict, detail, file, file_offset, seq, halted_at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
         WHERE NOT EXISTS (SELECT 1 FROM halts WHERE ledger = ?1 AND lifted_at IS NULL)",
    )?
    .execute(values)?;
    Ok(())
}

/// Where a batch's write ends, said by whoever steps the ledger.
#[derive(Clone, Copy)]
pub enum Durability<'g> {
    /// A transaction of its own: durable when the write returns.
    Alone,
    /// A savepoint of the group's transaction: durable only when the
    /// group commits; if it does not, the ledger reads its checkpoint
    /// again.
    Staged(&'g Group),
}

impl Durability<'_> {
    /// Whether writes wait for a group's commit.
    pub fn grouped(&self) -> bool {
        matches!(self, Durability::Staged(_))
    }
}

impl Mirror {
    /// Writes a batch and the checkpoint that covers it in one transaction,
    /// durable when this returns. `state.generation` must be the
    /// generation read with the state; on success it is bumped in place.
    /// Refused when the file was moved away (rows committed to a deleted
    /// file would be lost unseen), and inside a group (use [`Mirror::stage`]).
    pub fn commit(
        &mut self,
        ledger: &str,
        batch: &Batch<'_>,
        state: &mut LedgerState,
    ) -> Result<()> {
        self.write_batch_in(ledger, batch, state, false)
    }

    /// As [`Mirror::commit`], but as a savepoint of `group`'s transaction:
    /// nothing of it is durable, or visible to other connections, before
    /// [`Group::commit`]. `state` moves on at once; if the group does not
    /// commit, the ledger must read its state again.
    pub fn stage(
        &mut self,
        group: &Group,
        ledger: &str,
        batch: &Batch<'_>,
        state: &mut LedgerState,
    ) -> Result<()> {
        if !group.holds(&self.conn) {
            return Err(MirrorError::ForeignGroup {
                path: self.path.clone(),
            });
        }
        if self.conn.is_autocommit() {
            // An error earlier in the group ended its transaction.
            return Err(MirrorError::GroupLost {
                path: self.path.clone(),
            });
        }
        self.write_batch_in(ledger, batch, state, true)
    }

    /// [`Mirror::commit`] or [`Mirror::stage`], as `durability` says.
    pub fn write(
        &mut self,
        durability: Durability<'_>,
        ledger: &str,
        batch: &Batch<'_>,
        state: &mut LedgerState,
    ) -> Result<()> {
        match durability {
            Durability::Alone => self.commit(ledger, batch, state),
            Durability::Staged(group) => self.stage(group, ledger, batch, state),
        }
    }

    fn write_batch_in(
        &mut self,
        ledger: &str,
        batch: &Batch<'_>,
        state: &mut LedgerState,
        nested: bool,
    ) -> Result<()> {
        self.check_in_place()?;
        let _writing = self.watch.writing();
        control(
            &self.conn,
            if nested {
                "SAVEPOINT batch"
            } else {
                "BEGIN IMMEDIATE"
            },
        )
        .map_err(|e| self.err(e))?;
        // Undone on any way out but the end, a panic included: a batch
        // half written must never ride on a group's commit.
        let mut pending = Pending {
            conn: &self.conn,
            nested,
            ended: false,
        };
        let now = now_text();
        let conflict = match write_batch(&self.conn, ledger, batch, state, &now, &self.edges) {
            Ok(written) => !written,
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => true,
            Err(e) => return Err(self.err(e)),
        };
        if conflict {
            return Err(MirrorError::Conflict {
                path: self.path.clone(),
                ledger: ledger.to_owned(),
            });
        }
        control(&self.conn, if nested { "RELEASE batch" } else { "COMMIT" })
            .map_err(|e| self.err(e))?;
        pending.ended = true;
        state.generation += 1;
        Ok(())
    }
}

/// A batch's transaction (or savepoint) not yet ended: rolled back when
/// dropped so.
struct Pending<'a> {
    conn: &'a Connection,
    nested: bool,
    ended: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // An error may have ended the transaction already (SQLite rolls
        // back by itself after some): undo only what is open.
        if !self.ended && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch(if self.nested {
                "ROLLBACK TO batch; RELEASE batch"
            } else {
                "ROLLBACK"
            });
        }
    }
}
