//! Rotated files as operators and tools leave them: a hundred small ones, a
//! gzipped one in the middle of the chain, inodes reused, lines written
//! late into a renamed file, deleted files still open.

use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::lines::*;
use common::*;
use ledgertail::producer::Writer;

/// 99 rotated files of 20 events (logrotate's numbering: .99 is the
/// oldest, .1 the newest) and a live file of 20: seq 0–1999.
fn many_small_rotated_files(live: &Path) {
    let mut w = Writer::new(live).without_fsync();
    let mut next = 0;
    for n in (1..=99).rev() {
        append(&mut w, next, 20);
        next += 20;
        std::fs::rename(live, live.with_file_name(format!("app.jsonl.{n}"))).unwrap();
    }
    append(&mut w, next, 20);
}

#[test]
fn a_hundred_small_rotated_files_replay_into_a_fresh_database() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    many_small_rotated_files(&live);
    let db = dir.path().join("m.db");
    let out = on_db_with("replay", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 2000);
    assert_eq!(count(&db, "SELECT max(seq) FROM events"), 1999);
    let out = on_db_with("verify", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // A rebuild (the documented recovery) works the same.
    std::fs::remove_file(&db).unwrap();
    let out = on_db_with("replay", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 2000);
}

#[test]
fn run_follows_a_hundred_small_rotated_files_with_few_descriptors() {
    let s = setup("");
    many_small_rotated_files(&s.ledger);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("2000 events", || mirrored_seqs(&s.db).len() == 2000);
    assert_eq!(
        sidecar.metric("ledgertail_worker_restarts_total{ledger=\"app\"}"),
        Some(0.0)
    );
    // Caught up: only the file being followed stays open.
    sidecar.eventually("rotated files closed", || {
        open_ledger_files(sidecar.child.id(), &s.dir).len() <= 1
    });
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

/// The ledger files (`app.jsonl*`) a process holds open, as
/// `/proc/PID/fd` shows them (a deleted one ends in ` (deleted)`).
fn open_ledger_files(pid: u32, dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let prefix = dir.join("app.jsonl").display().to_string();
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with(&prefix))
        .collect()
}

/// .2 holds 0–2, .1 (3–5) is gzipped, the live file holds 6–8.
fn ledger_with_a_gzipped_middle(dir: &Path) -> PathBuf {
    let live = dir.join("app.jsonl");
    let mut w = Writer::new(&live).without_fsync();
    append(&mut w, 0, 3);
    std::fs::rename(&live, dir.join("app.jsonl.2")).unwrap();
    append(&mut w, 3, 3);
    std::fs::rename(&live, dir.join("app.jsonl.1")).unwrap();
    append(&mut w, 6, 3);
    let gz = Command::new("gzip")
        .arg(dir.join("app.jsonl.1"))
        .status()
        .unwrap();
    assert!(gz.success());
    live
}

#[test]
fn a_seq_gap_halt_goes_on_once_the_missing_file_is_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let live = ledger_with_a_gzipped_middle(dir.path());
    let db = dir.path().join("m.db");
    let out = on_db_with("replay", &live, &db, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "halts on seq_gap: {}",
        show(&out)
    );
    assert!(text(&out.stderr).contains("seq_gap"), "{}", show(&out));
    // The runbook: put the missing file back, uncompressed, and run again.
    let gunzip = Command::new("gunzip")
        .arg(dir.path().join("app.jsonl.1.gz"))
        .status()
        .unwrap();
    assert!(gunzip.success());
    let out = on_db_with("verify", &live, &db, &[]);
    assert_ne!(out.status.code(), Some(2), "{}", show(&out));
    let out = on_db_with("replay", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "goes on: {}", show(&out));
    assert_eq!(mirrored_in(&db), (0..9).collect::<Vec<i64>>());
    let out = on_db_with("verify", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

fn mirrored_in(db: &Path) -> Vec<i64> {
    let c = common::db(db);
    let mut stmt = c.prepare("SELECT seq FROM events ORDER BY seq").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn run_goes_on_after_a_restart_once_the_missing_file_is_back() {
    let s = setup("");
    ledger_with_a_gzipped_middle(&s.dir);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("halted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    assert!(sidecar.stop().success());
    let gunzip = Command::new("gunzip")
        .arg(s.dir.join("app.jsonl.1.gz"))
        .status()
        .unwrap();
    assert!(gunzip.success());
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("all 9 events after the restart", || {
        mirrored_seqs(&s.db) == (0..9).collect::<Vec<i64>>()
    });
    assert_eq!(
        sidecar.metric("ledgertail_halted{ledger=\"app\"}"),
        Some(0.0)
    );
    assert_eq!(sidecar.get("/readyz").0, 200);
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

#[test]
fn lines_written_late_into_a_renamed_file_are_mirrored_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lines = chain(9);
    let (rotated, live) = (dir.path().join("app.jsonl.1"), dir.path().join("app.jsonl"));
    // The producer wrote 0–4, the file was renamed, and the producer's
    // next lines (5, 6) were still on their way into the renamed file when
    // the next producer continued the chain in the new live file (7, 8).
    write_lines(&rotated, &lines[..5]);
    write_lines(&live, &lines[7..]);
    let db = dir.path().join("m.db");
    let out = on_db_with("replay", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(1), "seq_gap: {}", show(&out));
    // The late lines land.
    append_lines(&rotated, &lines[5..7]);
    let out = on_db_with("replay", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "goes on: {}", show(&out));
    assert_eq!(mirrored_in(&db), (0..9).collect::<Vec<i64>>());
    let out = on_db_with("verify", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn a_reused_inode_relocates_instead_of_halting() {
    until_an_inode_is_reused(|| {
        let dir = tempfile::tempdir().unwrap();
        let (live, db) = (dir.path().join("app.jsonl"), dir.path().join("m.db"));
        let lines = chain(10);
        write_lines(&live, &lines[..5]);
        let out = on_db_with("replay", &live, &db, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let old = std::fs::metadata(&live).unwrap().ino();
        // Sidecar down: the file is rotated away and deleted, and the new live
        // file (the chain goes on in it) gets its inode number back.
        std::fs::remove_file(&live).unwrap();
        write_lines(&live, &lines[5..]);
        let reused = std::fs::metadata(&live).unwrap().ino() == old;
        let out = on_db_with("replay", &live, &db, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "relocates (inode reused: {reused}): {}",
            show(&out)
        );
        assert_eq!(mirrored_in(&db), (0..10).collect::<Vec<i64>>());
        reused
    });
}

/// Runs `case` (which asserts what must hold either way and says whether
/// the freed inode was given to the new file) until the filesystem reuses
/// the inode: another test creating a file at that moment may take it.
fn until_an_inode_is_reused(case: impl Fn() -> bool) {
    for _ in 0..10 {
        if case() {
            return;
        }
    }
    panic!("this filesystem did not reuse the inode in 10 tries: the case was not exercised");
}

#[test]
fn two_files_that_shared_an_inode_keep_both_quarantine_rows() {
    until_an_inode_is_reused(|| {
        let dir = tempfile::tempdir().unwrap();
        let (live, db) = (dir.path().join("app.jsonl"), dir.path().join("m.db"));
        let rotated = dir.path().join("app.jsonl.1");
        let lines = chain(3);
        // X: garbage at offset 0, then event 0.
        write_lines(&live, &["garbage-A".to_owned(), lines[0].clone()]);
        let x = std::fs::metadata(&live).unwrap().ino();
        assert_eq!(on_db_with("replay", &live, &db, &[]).status.code(), Some(0));
        // X rotated, Y holds event 1; then X is deleted, Y rotated, and the
        // new live file (inode X again) holds garbage at offset 0 and event 2.
        std::fs::rename(&live, &rotated).unwrap();
        write_lines(&live, &lines[1..2]);
        assert_eq!(on_db_with("replay", &live, &db, &[]).status.code(), Some(0));
        std::fs::remove_file(&rotated).unwrap();
        std::fs::rename(&live, &rotated).unwrap();
        write_lines(&live, &["garbage-B".to_owned(), lines[2].clone()]);
        let reused = std::fs::metadata(&live).unwrap().ino() == x;
        let out = on_db_with("replay", &live, &db, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert_eq!(mirrored_in(&db), vec![0, 1, 2]);
        let c = common::db(&db);
        let lines: Vec<Vec<u8>> = c
            .prepare("SELECT line FROM quarantine ORDER BY qid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            lines,
            vec![b"garbage-A".to_vec(), b"garbage-B".to_vec()],
            "inode reused: {reused}"
        );
        reused
    });
}

#[test]
fn deleted_rotated_files_do_not_stay_open() {
    let s = setup("");
    let sidecar = Sidecar::start(&s.config);
    let mut next = 0;
    for n in 0..6 {
        append(&mut Writer::new(&s.ledger), next, 3);
        next += 3;
        let want = next;
        sidecar.eventually("mirrored", || mirrored_seqs(&s.db).len() == want);
        let rotated = s.dir.join(format!("app.jsonl.{n}"));
        std::fs::rename(&s.ledger, &rotated).unwrap();
        append(&mut Writer::new(&s.ledger), next, 3);
        next += 3;
        let want = next;
        sidecar.eventually("mirrored past the rotation", || {
            mirrored_seqs(&s.db).len() == want
        });
        // A rotation that deletes old files.
        std::fs::remove_file(&rotated).unwrap();
    }
    sidecar.eventually("no deleted ledger file held open", || {
        !open_ledger_files(sidecar.child.id(), &s.dir)
            .iter()
            .any(|p| p.ends_with("(deleted)"))
    });
    let held = open_ledger_files(sidecar.child.id(), &s.dir);
    assert!(held.len() <= 1, "{held:?}");
    assert!(sidecar.stop().success());
}

#[test]
fn append_refuses_when_the_chain_is_only_in_compressed_files() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    append(&mut Writer::new(&live), 0, 3);
    // logrotate's `compress` without `delaycompress`.
    std::fs::rename(&live, dir.path().join("app.jsonl.1")).unwrap();
    assert!(Command::new("gzip")
        .arg(dir.path().join("app.jsonl.1"))
        .status()
        .unwrap()
        .success());
    let out = run_stdin(
        bin().arg("append").arg("--ledger").arg(&live),
        "{\"x\":1}\n",
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("delaycompress"),
        "{}",
        show(&out)
    );
    assert!(
        !live.exists() || std::fs::read(&live).unwrap().is_empty(),
        "nothing written"
    );
}
