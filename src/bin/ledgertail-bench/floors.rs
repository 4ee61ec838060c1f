//! The floors: what this machine does with the same data and no
//! ledgertail (bare SQLite inserts, the verification alone, sqlite-utils),
//! measured in the same run.

use super::*;

/// The ledger's events, authenticated (untimed), in batches of 1000.
pub(crate) fn for_each_batch(
    ledger: &Path,
    key: Option<&KeyFile>,
    mut f: impl FnMut(&[ledgertail::ledger::SealedEvent]),
) {
    let keys = keyring(key);
    // Untimed preparation: the signatures are not what is measured here.
    let policy = SignaturePolicy::Off;
    let mut file = std::fs::File::open(ledger).expect("open ledger");
    let mut framer = Framer::new(0, 1 << 20);
    let mut scratch = Vec::new();
    let mut batch = Vec::with_capacity(1000);
    loop {
        let n = file.read(framer.spare(1 << 20)).expect("read");
        if n == 0 {
            break;
        }
        framer.filled(n);
        while let Some(frame) = framer.next_frame() {
            if let Frame::Line { bytes, .. } = frame {
                batch.push(
                    authenticate(bytes, policy, &keys, &mut scratch)
                        .expect("generated lines are authentic"),
                );
                if batch.len() == 1000 {
                    f(&batch);
                    batch.clear();
                }
            }
        }
    }
    if !batch.is_empty() {
        f(&batch);
    }
}

/// Floor (a): the same rows into the same schema with a bare prepared
/// statement, 1000 per transaction, same pragmas; the inserts and the
/// final close (which checkpoints the WAL) are timed, nothing else.
/// Returns (rows/s committed to the WAL, rows/s including the final close).
pub(crate) fn insert_floor(ledger: &Path, db: &Path, key: Option<&KeyFile>) -> (f64, f64) {
    drop(Mirror::open(db, Access::ReadWrite).expect("schema"));
    let mut conn = rusqlite::Connection::open(db).expect("open");
    // The mirror's own settings (page size comes with the schema).
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=16384;",
    )
    .expect("pragmas");
    let mut timed = Duration::ZERO;
    let mut rows = 0u64;
    let mut offset = 0i64;
    for_each_batch(ledger, key, |batch| {
        let started = Instant::now();
        let tx = conn.transaction().expect("tx");
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (ledger, seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .expect("prepare");
            for e in batch {
                stmt.execute(rusqlite::params![
                    "bench",
                    e.seq as i64,
                    e.id,
                    e.ts,
                    e.event_type,
                    e.payload,
                    e.extra,
                    e.prev_hash.map(|h| h.to_hex()),
                    e.hash.to_hex(),
                    e.key_id,
                    e.sig,
                    "2049:1234567",
                    offset,
                ])
                .expect("insert");
                offset += 500;
            }
        }
        tx.commit().expect("commit");
        timed += started.elapsed();
        rows += batch.len() as u64;
    });
    let committed = rows as f64 / timed.as_secs_f64();
    // Closing checkpoints the WAL into the database file: replay's time
    // includes that too (it checkpoints as it goes, and at its end).
    let started = Instant::now();
    drop(conn);
    timed += started.elapsed();
    (committed, rows as f64 / timed.as_secs_f64())
}

/// Floor (b): verification alone (frame, parse, canonicalize, hash,
/// signature), one thread, no database; the file is read into memory first.
pub(crate) fn verify_floor(ledger: &Path, key: Option<&KeyFile>) -> f64 {
    let keys = keyring(key);
    let policy = if key.is_some() {
        SignaturePolicy::Required
    } else {
        SignaturePolicy::Off
    };
    // Streamed (from the page cache: the file was just written or read),
    // so that this process stays small and the RSS of the children it
    // measures is theirs alone.
    let mut file = std::fs::File::open(ledger).expect("open ledger");
    let started = Instant::now();
    let mut framer = Framer::new(0, 1 << 20);
    let mut scratch = Vec::new();
    let mut n = 0u64;
    // Lines are examined in chunks of up to 256, as the verifier pool
    // examines them (signature checks finished together).
    let mut lines: Vec<u8> = Vec::new();
    let mut ends: Vec<usize> = Vec::new();
    let mut results = Vec::new();
    let mut examine_chunk = |lines: &mut Vec<u8>, ends: &mut Vec<usize>| {
        let mut start = 0;
        results.clear();
        examine_each(
            ends.iter().map(|&end| {
                let line = &lines[start..end];
                start = end;
                (line, line.len() as u64)
            }),
            1 << 20,
            policy,
            &keys,
            &mut scratch,
            &mut results,
        );
        assert!(results.iter().all(|e| matches!(e, Examined::Authentic(_))));
        n += ends.len() as u64;
        lines.clear();
        ends.clear();
    };
    loop {
        let got = file.read(framer.spare(1 << 20)).expect("read");
        if got == 0 {
            break;
        }
        framer.filled(got);
        while let Some(frame) = framer.next_frame() {
            if let Frame::Line { bytes, .. } = frame {
                lines.extend_from_slice(bytes);
                ends.push(lines.len());
                if ends.len() == 256 {
                    examine_chunk(&mut lines, &mut ends);
                }
            }
        }
    }
    examine_chunk(&mut lines, &mut ends);
    n as f64 / started.elapsed().as_secs_f64()
}

pub(crate) fn sqlite_utils(ledger: &Path, dir: &Path, events: u64, repeat: usize) {
    println!("\n### Against sqlite-utils (no verification at all)\n");
    let found = Command::new("sqlite-utils")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        println!(
            "`sqlite-utils` is not installed (`pip install sqlite-utils`): comparison skipped."
        );
        return;
    }
    let mut rates = Vec::new();
    for r in 0..repeat {
        let db = dir.join(format!("sqlite-utils-{r}.db"));
        remove_db(&db);
        let started = Instant::now();
        let status = Command::new("sqlite-utils")
            .arg("insert")
            .arg(&db)
            .arg("events")
            .arg(ledger)
            .arg("--nl")
            .stdout(Stdio::null())
            .status()
            .expect("sqlite-utils");
        assert!(status.success(), "sqlite-utils failed");
        rates.push(events as f64 / started.elapsed().as_secs_f64());
        remove_db(&db);
    }
    println!(
        "`sqlite-utils insert DB events LEDGER --nl` on the main case: **{:.0} events/s** (median of {repeat}); compare with the catch-up figure above.",
        median(&rates)
    );
}
