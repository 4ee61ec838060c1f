//! Hostile edges (issue 9): a garbage line, a rotation scheme, an attacker
//! or an operator's mistake, each driven through the real binary against
//! real files and a real mirror. One test per case, named after it; each
//! failed on the build before the fix (run with `LEDGERTAIL_BIN` pointing
//! at an older binary to see it).

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::lines::*;
use common::*;
use ledgertail::ledger::event::{seal_line, Draft};
use ledgertail::ledger::{json, Hash};
use ledgertail::producer::{KeyFile, Writer};

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// `ledgertail CMD --ledger LEDGER --db DB [extra...]`
fn on_db(cmd: &str, ledger: &Path, db: &Path, extra: &[&str]) -> Output {
    run(bin()
        .arg(cmd)
        .arg("--ledger")
        .arg(ledger)
        .arg("--db")
        .arg(db)
        .args(extra))
}

fn with_config(cmd: &str, config: &Path, extra: &[&str]) -> Output {
    run(bin().arg(cmd).arg("--config").arg(config).args(extra))
}

/// A sealed line with any seq, prev_hash, id, payload and signer.
fn sealed(
    seq: u64,
    prev: Option<Hash>,
    id: Option<&str>,
    payload: &str,
    signer: Option<(&str, &ed25519_dalek::SigningKey)>,
) -> (String, Hash) {
    let payload = json::parse(payload).unwrap();
    seal_line(
        &Draft {
            seq,
            prev_hash: prev,
            ts: "2026-12-01T00:00:00Z",
            event_type: "test",
            id,
            payload: &payload,
        },
        signer,
    )
    .unwrap()
}

fn hash_of(line: &str) -> Hash {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    Hash::from_hex(v["hash"].as_str().unwrap()).unwrap()
}

fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["seq"].as_u64().unwrap()
}

fn trust_line(key: &KeyFile) -> String {
    key.trust_line()
}

// ---------------------------------------------------------------- High

#[test]
fn case01_a_non_authentic_line_never_makes_readyz_fail() {
    let s = setup("ready_max_lag_events = 10");
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 5);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("5 events", || mirrored_seqs(&s.db).len() == 5);
    // A copy of a real event claiming the largest seq, its hash left as
    // it was: hash_mismatch, never authentic.
    let last = lines_of(&s.ledger).pop().unwrap();
    let forged = last.replacen("\"seq\":4", "\"seq\":9007199254740991", 1);
    assert_ne!(forged, last);
    append_lines(&s.ledger, std::slice::from_ref(&forged));
    sidecar.eventually("the forged line quarantined", || {
        sidecar
            .metric("ledgertail_events_quarantined_total{ledger=\"app\",reason=\"hash_mismatch\"}")
            == Some(1.0)
    });
    assert_eq!(
        sidecar.metric("ledgertail_ledger_head_seq{ledger=\"app\"}"),
        Some(4.0)
    );
    assert_eq!(
        sidecar.metric("ledgertail_lag_events{ledger=\"app\"}"),
        Some(0.0)
    );
    assert_eq!(
        sidecar.get("/readyz").0,
        200,
        "{}",
        sidecar.get("/readyz").1
    );
    // Later events mirror, and the pod stays ready.
    append(&mut w, 5, 3);
    sidecar.eventually("8 events", || mirrored_seqs(&s.db).len() == 8);
    assert_eq!(sidecar.get("/readyz").0, 200);
    assert_eq!(
        sidecar.metric("ledgertail_lag_events{ledger=\"app\"}"),
        Some(0.0)
    );
    assert!(sidecar.stop().success());
    // With the forged line last in the file, a restart's estimate of the
    // ledger's head does not take it either.
    append_lines(&s.ledger, &[forged]);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("quarantined again", || {
        sidecar
            .metric("ledgertail_events_quarantined_total{ledger=\"app\",reason=\"hash_mismatch\"}")
            == Some(1.0)
    });
    assert_eq!(
        sidecar.metric("ledgertail_lag_events{ledger=\"app\"}"),
        Some(0.0)
    );
    assert_eq!(
        sidecar.get("/readyz").0,
        200,
        "{}",
        sidecar.get("/readyz").1
    );
    assert!(sidecar.stop().success());
}

#[test]
fn case01_an_unsigned_line_with_a_huge_seq_is_not_the_head_when_signatures_are_required() {
    let key = KeyFile::generate("k1").unwrap();
    let s = setup_with(
        &format!("ready_max_lag_events = 10\n[keys]\n{}", trust_line(&key)),
        "signatures = \"required\"",
    );
    let mut w = Writer::new(&s.ledger).with_key(key.clone());
    append(&mut w, 0, 3);
    // Its hash is right (anyone can compute one), but it is not signed:
    // under `required` it is not authentic, whatever it claims.
    let prev = hash_of(lines_of(&s.ledger).last().unwrap());
    let (line, _) = sealed(9_007_199_254_740_991, Some(prev), None, "1", None);
    append_lines(&s.ledger, &[line]);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("3 events and the unsigned line", || {
        mirrored_seqs(&s.db).len() == 3
            && sidecar
                .metric("ledgertail_events_quarantined_total{ledger=\"app\",reason=\"unsigned\"}")
                == Some(1.0)
    });
    assert_eq!(
        sidecar.metric("ledgertail_ledger_head_seq{ledger=\"app\"}"),
        Some(2.0)
    );
    assert_eq!(
        sidecar.get("/readyz").0,
        200,
        "{}",
        sidecar.get("/readyz").1
    );
    assert!(sidecar.stop().success());
}

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
fn case02_a_hundred_small_rotated_files_replay_into_a_fresh_database() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    many_small_rotated_files(&live);
    let db = dir.path().join("m.db");
    let out = on_db("replay", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 2000);
    assert_eq!(count(&db, "SELECT max(seq) FROM events"), 1999);
    let out = on_db("verify", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // A rebuild (the documented recovery) works the same.
    std::fs::remove_file(&db).unwrap();
    let out = on_db("replay", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 2000);
}

#[test]
fn case02_run_follows_a_hundred_small_rotated_files_with_few_descriptors() {
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
fn case03_a_seq_gap_halt_goes_on_once_the_missing_file_is_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let live = ledger_with_a_gzipped_middle(dir.path());
    let db = dir.path().join("m.db");
    let out = on_db("replay", &live, &db, &[]);
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
    let out = on_db("verify", &live, &db, &[]);
    assert_ne!(out.status.code(), Some(2), "{}", show(&out));
    let out = on_db("replay", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "goes on: {}", show(&out));
    assert_eq!(mirrored_in(&db), (0..9).collect::<Vec<i64>>());
    let out = on_db("verify", &live, &db, &[]);
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
fn case03_run_goes_on_after_a_restart_once_the_missing_file_is_back() {
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
fn case03_lines_written_late_into_a_renamed_file_are_mirrored_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lines = chain(9);
    let (rotated, live) = (dir.path().join("app.jsonl.1"), dir.path().join("app.jsonl"));
    // The producer wrote 0–4, the file was renamed, and the producer's
    // next lines (5, 6) were still on their way into the renamed file when
    // the next producer continued the chain in the new live file (7, 8).
    write_lines(&rotated, &lines[..5]);
    write_lines(&live, &lines[7..]);
    let db = dir.path().join("m.db");
    let out = on_db("replay", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(1), "seq_gap: {}", show(&out));
    // The late lines land.
    append_lines(&rotated, &lines[5..7]);
    let out = on_db("replay", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "goes on: {}", show(&out));
    assert_eq!(mirrored_in(&db), (0..9).collect::<Vec<i64>>());
    let out = on_db("verify", &live, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

// -------------------------------------------------------------- Medium

/// Samples the three parity gauges for `how_long`; every sample must be 0.
fn parity_stays_clean(sidecar: &Sidecar, how_long: Duration) {
    let deadline = Instant::now() + how_long;
    while Instant::now() < deadline {
        for g in [
            "ledgertail_parity_missing_in_sqlite{ledger=\"app\"}",
            "ledgertail_parity_missing_in_jsonl{ledger=\"app\"}",
            "ledgertail_parity_mismatched{ledger=\"app\"}",
        ] {
            let v = sidecar.metric(g);
            // NaN: no check has finished yet, so none reported anything.
            assert!(
                v == Some(0.0) || v.is_some_and(f64::is_nan),
                "{g} = {v:?}\n{}",
                sidecar.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn parity_checked_at(sidecar: &Sidecar) -> f64 {
    sidecar
        .metric("ledgertail_parity_last_check_timestamp_seconds{ledger=\"app\"}")
        .filter(|t| !t.is_nan())
        .unwrap_or(0.0)
}

#[test]
fn case04_parity_after_a_reload_uses_the_new_signature_policy() {
    let key = KeyFile::generate("k1").unwrap();
    let keys = format!("[keys]\n{}", trust_line(&key));
    let s = setup_with(
        &format!("parity_interval_secs = 1\n{keys}"),
        "signatures = \"required\"",
    );
    // 0–2 signed in a rotated file, 3–5 unsigned in the live file.
    let mut w = Writer::new(&s.ledger).with_key(key.clone());
    append(&mut w, 0, 3);
    std::fs::rename(&s.ledger, s.dir.join("app.jsonl.1")).unwrap();
    append(&mut Writer::new(&s.ledger), 3, 3);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("0-2 mirrored, 3-5 unsigned", || {
        mirrored_seqs(&s.db).len() == 3
            && sidecar
                .metric("ledgertail_events_quarantined_total{ledger=\"app\",reason=\"unsigned\"}")
                == Some(3.0)
    });
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "signatures = \"required\"",
        "signatures = \"verify-if-present\"",
    );
    std::fs::write(&s.config, config).unwrap();
    sidecar.signal(libc::SIGHUP);
    sidecar.eventually("3-5 mirrored after the reload", || {
        mirrored_seqs(&s.db).len() == 6
    });
    // Two full checks after the rows arrived, and none may report them.
    let after = parity_checked_at(&sidecar);
    sidecar.eventually("a parity check after the reload", || {
        parity_checked_at(&sidecar) > after + 1.5
    });
    parity_stays_clean(&sidecar, Duration::from_millis(500));
    assert!(sidecar.stop().success());
}

#[test]
fn case04_a_rotation_during_a_slow_parity_check_is_not_a_difference() {
    let s = setup("parity_interval_secs = 1\nparity_max_bytes_per_sec = 4096");
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 30);
    std::fs::rename(&s.ledger, s.dir.join("app.jsonl.1")).unwrap();
    append(&mut w, 30, 30);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("60 events", || mirrored_seqs(&s.db).len() == 60);
    // The first check begins a second after the start and reads about
    // 4 KiB a second: well within it, rotate (logrotate's renumbering)
    // and append more.
    std::thread::sleep(Duration::from_millis(1800));
    rotate(&s.ledger, 1);
    append(&mut w, 60, 10);
    sidecar.eventually("70 events", || mirrored_seqs(&s.db).len() == 70);
    let start = Instant::now();
    let first = parity_checked_at(&sidecar);
    while start.elapsed() < Duration::from_secs(40) {
        parity_stays_clean(&sidecar, Duration::from_millis(200));
        if parity_checked_at(&sidecar) > first + 0.5 {
            break;
        }
    }
    assert!(parity_checked_at(&sidecar) > first, "no check finished");
    parity_stays_clean(&sidecar, Duration::from_millis(300));
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

#[test]
fn case05_deleting_the_database_while_running_is_noticed_and_the_mirror_rebuilt() {
    let s = setup("");
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 10);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("10 events", || mirrored_seqs(&s.db).len() == 10);
    std::fs::remove_file(&s.db).unwrap();
    append(&mut w, 10, 5);
    sidecar.eventually("the loss said loudly", || {
        sidecar.log_text().contains("DELETED OR REPLACED")
    });
    sidecar.eventually("a new mirror rebuilt from the ledger", || {
        mirrored_seqs(&s.db) == (0..15).collect::<Vec<i64>>()
    });
    sidecar.eventually("ready again", || sidecar.get("/readyz").0 == 200);
    // The deleted mirror's WAL was kept aside, not read into the new one.
    let aside = std::fs::read_dir(&s.dir).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("mirror.db-wal.orphaned-")
    });
    assert!(aside, "the old WAL set aside");
    append(&mut w, 15, 2);
    sidecar.eventually("17 events", || mirrored_seqs(&s.db).len() == 17);
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

#[test]
fn case05_deleting_the_database_and_its_wal_while_running_rebuilds_it() {
    let s = setup("");
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 10);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("10 events", || mirrored_seqs(&s.db).len() == 10);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", s.db.display()));
    }
    sidecar.eventually("a new mirror rebuilt from the ledger", || {
        mirrored_seqs(&s.db) == (0..10).collect::<Vec<i64>>()
    });
    append(&mut w, 10, 3);
    sidecar.eventually("13 events", || mirrored_seqs(&s.db).len() == 13);
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

#[test]
fn case06_a_failed_append_leaves_no_half_line() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    let input: String = (0..3).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let out = run_stdin(
        bin().arg("append").arg("--ledger").arg(&ledger),
        &input,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let before = std::fs::metadata(&ledger).unwrap().len();
    // A file size limit (like a full disk) stops the write midway.
    let limit = before + 700;
    let input: String = (3..40)
        .map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40)))
        .collect();
    let out = run_stdin(
        bin().arg("append").arg("--ledger").arg(&ledger),
        &input,
        Some(limit),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a clear failure: {}",
        show(&out)
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("reached the file whole") && err.contains("partial bytes were removed"),
        "{err}"
    );
    let bytes = std::fs::read(&ledger).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'), "ends at a complete line");
    assert!(bytes.len() as u64 <= limit);
    let out = run(bin().args(["verify", "--ledger"]).arg(&ledger));
    assert_eq!(
        out.status.code(),
        Some(0),
        "every line whole: {}",
        show(&out)
    );
    // The next append (no limit) goes on from the last complete event.
    let out = run_stdin(
        bin().arg("append").arg("--ledger").arg(&ledger),
        "{\"after\":true}\n",
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = run(bin().args(["verify", "--ledger"]).arg(&ledger));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// Runs with `stdin`, under a file size limit (`ulimit -f`) when given.
fn run_stdin(cmd: &mut Command, stdin: &str, file_size_limit: Option<u64>) -> Output {
    if let Some(limit) = file_size_limit {
        // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

#[test]
fn case07_a_reused_inode_relocates_instead_of_halting() {
    until_an_inode_is_reused(|| {
        let dir = tempfile::tempdir().unwrap();
        let (live, db) = (dir.path().join("app.jsonl"), dir.path().join("m.db"));
        let lines = chain(10);
        write_lines(&live, &lines[..5]);
        let out = on_db("replay", &live, &db, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let old = std::fs::metadata(&live).unwrap().ino();
        // Sidecar down: the file is rotated away and deleted, and the new live
        // file (the chain goes on in it) gets its inode number back.
        std::fs::remove_file(&live).unwrap();
        write_lines(&live, &lines[5..]);
        let reused = std::fs::metadata(&live).unwrap().ino() == old;
        let out = on_db("replay", &live, &db, &[]);
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
fn case07_two_files_that_shared_an_inode_keep_both_quarantine_rows() {
    until_an_inode_is_reused(|| {
        let dir = tempfile::tempdir().unwrap();
        let (live, db) = (dir.path().join("app.jsonl"), dir.path().join("m.db"));
        let rotated = dir.path().join("app.jsonl.1");
        let lines = chain(3);
        // X: garbage at offset 0, then event 0.
        write_lines(&live, &["garbage-A".to_owned(), lines[0].clone()]);
        let x = std::fs::metadata(&live).unwrap().ino();
        assert_eq!(on_db("replay", &live, &db, &[]).status.code(), Some(0));
        // X rotated, Y holds event 1; then X is deleted, Y rotated, and the
        // new live file (inode X again) holds garbage at offset 0 and event 2.
        std::fs::rename(&live, &rotated).unwrap();
        write_lines(&live, &lines[1..2]);
        assert_eq!(on_db("replay", &live, &db, &[]).status.code(), Some(0));
        std::fs::remove_file(&rotated).unwrap();
        std::fs::rename(&live, &rotated).unwrap();
        write_lines(&live, &["garbage-B".to_owned(), lines[2].clone()]);
        let reused = std::fs::metadata(&live).unwrap().ino() == x;
        let out = on_db("replay", &live, &db, &[]);
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
fn case08_a_key_change_never_erases_a_rewritten_halt() {
    let key = KeyFile::generate("k1").unwrap();
    let s = setup("");
    // 0, 1 unsigned; 2 signed by a key not trusted yet (unknown_key);
    // 3 unsigned, after 2: a seq_gap while 2 is unknown.
    append(&mut Writer::new(&s.ledger), 0, 2);
    append(&mut Writer::new(&s.ledger).with_key(key.clone()), 2, 1);
    append(&mut Writer::new(&s.ledger), 3, 1);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("halted on seq_gap", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    assert!(sidecar.stop().success());
    // The unknown_key line reformatted: same hash, other bytes, behind the
    // checkpoint (which is just before line 3).
    let mut lines = lines_of(&s.ledger);
    lines[2] = lines[2].replacen('{', "{ ", 1);
    write_lines(&s.ledger, &lines);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("halted as rewritten", || {
        let out = run(bin().args(["status", "--json", "--db"]).arg(&s.db));
        text(&out.stdout).contains("\"verdict\": \"rewritten\"")
    });
    // Trusting the key judges unknown_key lines again: it must not lift
    // the rewritten halt, nor mirror past the rewrite.
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "[[ledger]]",
        &format!("[keys]\n{}\n[[ledger]]", trust_line(&key)),
    );
    std::fs::write(&s.config, config).unwrap();
    sidecar.signal(libc::SIGHUP);
    sidecar.eventually("the reload done", || {
        sidecar.log_text().contains("reloaded trusted keys")
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        sidecar.metric("ledgertail_halted{ledger=\"app\"}"),
        Some(1.0)
    );
    assert_eq!(mirrored_seqs(&s.db), vec![0, 1]);
    let out = run(bin().args(["status", "--json", "--db"]).arg(&s.db));
    assert!(
        text(&out.stdout).contains("\"verdict\": \"rewritten\""),
        "{}",
        show(&out)
    );
    assert!(sidecar.stop().success());
}

#[test]
fn case09_deleted_rotated_files_do_not_stay_open() {
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
fn case10_a_reload_that_changes_nothing_judges_nothing_again() {
    let stranger = KeyFile::generate("stranger").unwrap();
    let s = setup("");
    append(&mut Writer::new(&s.ledger), 0, 2);
    append(&mut Writer::new(&s.ledger).with_key(stranger), 2, 1);
    let sidecar = Sidecar::start(&s.config);
    let unknown = "ledgertail_events_quarantined_total{ledger=\"app\",reason=\"unknown_key\"}";
    sidecar.eventually("the unknown_key line", || {
        sidecar.metric(unknown) == Some(1.0)
    });
    for _ in 0..3 {
        sidecar.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
    }
    sidecar.eventually("three reloads", || {
        sidecar.log_text().matches("reloaded trusted keys").count() == 3
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sidecar.metric(unknown), Some(1.0), "no alert on a reload");
    assert!(!sidecar
        .log_text()
        .contains("judging quarantined lines again"));
    assert!(sidecar.stop().success());
}

#[test]
fn case11_a_key_id_cannot_forge_a_log_line() {
    for bad in [
        "evil\n2026-12-01T00:00:00Z ERROR forged",
        "k\u{7f}",
        "tab\tbed",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(bin()
            .args(["keygen", "--out"])
            .arg(dir.path().join("k.key"))
            .args(["--key-id", bad]));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?} refused: {}",
            show(&out)
        );
        assert!(
            text(&out.stderr).contains("control character"),
            "{}",
            show(&out)
        );
        assert!(!dir.path().join("k.key").exists());
    }
    // A ledger line may still carry such a key id (it is only JSON): text
    // logs escape it, so one record stays one line.
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let (line, _) = sealed(
        0,
        None,
        None,
        "1",
        Some(("k\n2026-12-01T00:00:00Z ERROR ledgertail: forged", &key)),
    );
    write_lines(&ledger, &[line]);
    let out = run(bin()
        .env("RUST_LOG", "warn")
        .args(["--log-format", "text", "replay", "--ledger"])
        .arg(&ledger)
        .arg("--db")
        .arg(dir.path().join("m.db")));
    let err = text(&out.stderr);
    assert!(err.contains("unknown_key"), "{err}");
    assert!(
        !err.lines()
            .any(|l| l.starts_with("2026-12-01T00:00:00Z ERROR")),
        "forged line:\n{err}"
    );
    assert!(
        err.contains("\\n2026-12-01T00:00:00Z ERROR"),
        "escaped:\n{err}"
    );
}

#[test]
fn case12_slow_and_idle_clients_never_lock_out_a_new_one() {
    use std::net::TcpStream;
    let s = setup("");
    append(&mut Writer::new(&s.ledger), 0, 3);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("3 events", || mirrored_seqs(&s.db).len() == 3);
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let before = rss(sidecar.child.id());
    let mut clients = Vec::new();
    for i in 0..1000 {
        let mut c = TcpStream::connect(&sidecar.addr).unwrap();
        match i % 3 {
            // Says nothing at all.
            0 => {}
            // Half a request, never finished.
            1 => c
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap(),
            // One request, then idles on its keep-alive connection.
            _ => {
                c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
            }
        }
        clients.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    for path in ["/healthz", "/metrics", "/readyz"] {
        let began = Instant::now();
        let (status, _) = timed_get(&sidecar.addr, path, Duration::from_secs(1));
        assert_eq!(status, 200, "{path} answered a new client");
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "{path} took {:?}",
            began.elapsed()
        );
    }
    let grown = rss(sidecar.child.id()).saturating_sub(before);
    assert!(grown < 64 * 1024, "1000 clients took {grown} kB");
    // An oversized request is still answered, with 431.
    let mut big = TcpStream::connect(&sidecar.addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let header = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = big.write_all(header.as_bytes());
    let mut answer = [0u8; 12];
    let n = std::io::Read::read(&mut big, &mut answer).unwrap_or(0);
    assert!(
        text(&answer[..n]).starts_with("HTTP/1.1 431"),
        "{:?}",
        text(&answer[..n])
    );
    drop(clients);
    assert!(sidecar.stop().success());
}

/// GET with a deadline: (status, body), status 0 when no answer came.
fn timed_get(addr: &str, path: &str, limit: Duration) -> (u16, String) {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    stream.set_read_timeout(Some(limit)).unwrap();
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[test]
fn case13_a_halted_ledger_still_shows_what_waits_behind_the_halt() {
    let s = setup("");
    let lines = chain(10);
    write_lines(&s.ledger, &lines[..5]);
    // 5 and 6 missing: 7 halts the ledger; 7–9 wait behind the halt.
    append_lines(&s.ledger, &lines[7..]);
    let waiting: u64 = lines[7..].iter().map(|l| l.len() as u64 + 1).sum();
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("halted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    sidecar.eventually("the lag behind the halt", || {
        sidecar.metric("ledgertail_lag_events{ledger=\"app\"}") == Some(5.0)
            && sidecar.metric("ledgertail_lag_bytes{ledger=\"app\"}") == Some(waiting as f64)
    });
    assert_eq!(
        sidecar.metric("ledgertail_ledger_head_seq{ledger=\"app\"}"),
        Some(9.0)
    );
    assert!(sidecar.stop().success());
}

#[test]
fn case14_status_and_append_read_a_huge_unfinished_sibling_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (live, db) = (dir.path().join("app.jsonl"), dir.path().join("m.db"));
    append(&mut Writer::new(&live), 0, 3);
    assert_eq!(on_db("replay", &live, &db, &[]).status.code(), Some(0));
    // 200 MB with no newline beside the ledger (sparse: zeros).
    let big = std::fs::File::create(dir.path().join("app.jsonl.big")).unwrap();
    big.set_len(200 << 20).unwrap();
    drop(big);
    let mut status = bin();
    status.args(["status", "--db"]).arg(&db);
    let Some((code, kib, err)) = peak_rss_or_skip("status's peak memory", &status, b"") else {
        return;
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(kib < 64 * 1024, "status peaked at {kib} KiB");
    // append reads the rotated files when the live one holds no event.
    std::fs::rename(&live, dir.path().join("app.jsonl.1")).unwrap();
    let mut append = bin();
    append.arg("append").arg("--ledger").arg(&live);
    let (code, kib, err) =
        peak_rss_or_skip("append's peak memory", &append, b"{\"next\":1}\n").unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(kib < 64 * 1024, "append peaked at {kib} KiB");
    assert_eq!(lines_of(&live).len(), 1);
    assert_eq!(
        seq_of(&lines_of(&live)[0]),
        3,
        "the chain goes on from the rotated file"
    );
}

#[test]
fn case14_names_that_look_like_archives_are_read_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (live, db) = (dir.path().join("app.jsonl"), dir.path().join("m.db"));
    append(&mut Writer::new(&live), 0, 3);
    std::fs::copy(&live, dir.path().join("app.jsonl.bak")).unwrap();
    let out = on_db("replay", &live, &db, &[]);
    let err = text(&out.stderr);
    assert!(
        err.contains("app.jsonl.bak") && err.contains("archive or a copy"),
        "{}",
        show(&out)
    );
}

// ------------------------------------------------------------ Security

/// Signed ledger under `required`: 0–2 in app.jsonl.1, 3–5 in app.jsonl.
fn signed_rotated_ledger(key: &KeyFile) -> Setup {
    let s = setup_with(
        &format!("[keys]\n{}", trust_line(key)),
        "signatures = \"required\"",
    );
    let mut w = Writer::new(&s.ledger).with_key(key.clone());
    append(&mut w, 0, 3);
    std::fs::rename(&s.ledger, s.dir.join("app.jsonl.1")).unwrap();
    append(&mut w, 3, 3);
    let out = with_config("replay", &s.config, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    s
}

#[test]
fn case15_verify_db_refuses_a_forged_archived_history() {
    let key = KeyFile::generate("k1").unwrap();
    let s = signed_rotated_ledger(&key);
    let out = with_config("verify", &s.config, &["--db", s.db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // The oldest file goes (archived), and rows 0–2 are rewritten in
    // SQLite: other payloads, no signatures, hashes recomputed.
    std::fs::rename(
        s.dir.join("app.jsonl.1"),
        s._dir
            .path()
            .parent()
            .unwrap()
            .join(format!("moved-{}", std::process::id())),
    )
    .ok();
    let c = rusqlite::Connection::open(&s.db).unwrap();
    let mut prev = None;
    for seq in 0..3u64 {
        let (line, hash) = sealed(seq, prev, None, "{\"forged\":true}", None);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        c.execute(
            "UPDATE events SET payload = ?2, hash = ?3, prev_hash = ?4, ts = ?5, type = ?6, key_id = NULL, sig = NULL WHERE seq = ?1",
            rusqlite::params![
                seq as i64,
                "{\"forged\":true}",
                hash.to_hex(),
                prev.map(|h: Hash| h.to_hex()),
                v["ts"].as_str().unwrap(),
                v["type"].as_str().unwrap()
            ],
        )
        .unwrap();
        prev = Some(hash);
    }
    drop(c);
    let out = with_config("verify", &s.config, &["--db", s.db.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the forgery is found: {}",
        show(&out)
    );
    let report = text(&out.stdout);
    assert!(report.contains("does not link"), "{report}");
    assert!(report.contains("unsigned"), "{report}");
}

#[test]
fn case16_verify_db_checks_that_every_column_is_the_canonical_text_of_what_it_names() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    let (l0, h0) = sealed(0, None, None, "{\"n\":1}", None);
    let (l1, h1) = sealed(
        1,
        Some(h0),
        Some("order-42"),
        "{\"amt\":5,\"to\":\"bob\"}",
        None,
    );
    let (l2, _) = sealed(2, Some(h1), None, "{\"n\":2}", Some(("k1", &key)));
    write_lines(&live, &[l0, l1, l2]);
    let public = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
    };
    let trust = format!("k1={public}");
    let db = dir.path().join("m.db");
    assert_eq!(
        on_db("replay", &live, &db, &["--trust", &trust])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        on_db("verify", &live, &db, &["--trust", &trust])
            .status
            .code(),
        Some(0)
    );
    for (what, sql) in [
        ("key_id moved into extra", "UPDATE events SET extra = '{\"key_id\":\"k1\"}', key_id = NULL WHERE seq = 2"),
        ("a sig that is not 64 bytes", "UPDATE events SET sig = 'AAAA' WHERE seq = 2"),
        ("a payload not in canonical form", "UPDATE events SET payload = '{\"n\" : 1.000000000000000001}' WHERE seq = 0"),
        ("the id smuggled into the payload", "UPDATE events SET payload = '{\"amt\":5,\"to\":\"bob\"},\"id\":\"order-42\"', id = NULL WHERE seq = 1"),
    ] {
        let forged = dir.path().join("forged.db");
        std::fs::copy(&db, &forged).unwrap();
        let c = rusqlite::Connection::open(&forged).unwrap();
        c.execute(sql, []).unwrap();
        drop(c);
        let out = on_db("verify", &live, &forged, &["--trust", &trust]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", show(&out));
        assert!(text(&out.stdout).contains("mismatched"), "{what}: {}", show(&out));
        std::fs::remove_file(&forged).unwrap();
    }
}

#[test]
fn case17_a_fifo_beside_the_ledger_hangs_nothing() {
    let s = setup("");
    append(&mut Writer::new(&s.ledger), 0, 3);
    let fifo = s.dir.join("app.jsonl.q");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let spawn = |cmd: &str| {
        bin()
            .arg(cmd)
            .arg("--config")
            .arg(&s.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = finish_within(spawn("replay"), Duration::from_secs(30), "replay");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("a FIFO"),
        "warned: {}",
        show(&out)
    );
    assert_eq!(mirrored_seqs(&s.db), vec![0, 1, 2]);
    let out = finish_within(spawn("verify"), Duration::from_secs(30), "verify");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let sidecar = Sidecar::start(&s.config);
    append(&mut Writer::new(&s.ledger), 3, 2);
    sidecar.eventually("5 events", || mirrored_seqs(&s.db).len() == 5);
    assert_eq!(sidecar.get("/readyz").0, 200);
    assert!(sidecar.stop().success());
}

#[test]
fn case18_symlinks_beside_the_ledger_are_never_read() {
    let s = setup("");
    append(&mut Writer::new(&s.ledger), 0, 2);
    let secret = s._dir.path().join("secret");
    std::fs::write(&secret, "TOP-SECRET-LINE\n").unwrap();
    std::os::unix::fs::symlink(&secret, s.dir.join("app.jsonl.old")).unwrap();
    let out = with_config("replay", &s.config, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("a symbolic link"),
        "warned: {}",
        show(&out)
    );
    assert_eq!(
        count(&s.db, "SELECT count(*) FROM quarantine"),
        0,
        "nothing of the secret"
    );
    assert_eq!(mirrored_seqs(&s.db), vec![0, 1]);
    // The live path may be a link only when the operator says so.
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("linked.jsonl");
    std::os::unix::fs::symlink(&s.ledger, &link).unwrap();
    let out = on_db("replay", &link, &link_dir.path().join("m.db"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("follow_symlink"),
        "{}",
        show(&out)
    );
    let config = link_dir.path().join("lt.toml");
    std::fs::write(
        &config,
        "db = \"m.db\"\n[[ledger]]\nname = \"linked\"\npath = \"linked.jsonl\"\nfollow_symlink = true\n",
    )
    .unwrap();
    let out = with_config("replay", &config, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn case19_a_line_signed_for_one_ledger_is_not_authentic_in_another() {
    let (ka, kb) = (
        KeyFile::generate("ka").unwrap(),
        KeyFile::generate("kb").unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    append(&mut Writer::new(&a).with_key(ka.clone()), 0, 3);
    append(&mut Writer::new(&b).with_key(kb.clone()), 0, 3);
    // A signed line of `a` copied into `b`: seq 2 again, another hash.
    append_lines(&b, &lines_of(&a)[2..3]);
    let config = dir.path().join("lt.toml");
    let keys = format!("[keys]\n{}\n{}\n", trust_line(&ka), trust_line(&kb));
    std::fs::write(
        &config,
        format!("db = \"m.db\"\n{keys}[[ledger]]\nname = \"a\"\npath = \"a.jsonl\"\nsignatures = \"required\"\nkeys = [\"ka\"]\n[[ledger]]\nname = \"b\"\npath = \"b.jsonl\"\nsignatures = \"required\"\nkeys = [\"kb\"]\n"),
    )
    .unwrap();
    let out = with_config("replay", &config, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "no fork, no halt: {}",
        show(&out)
    );
    let db = dir.path().join("m.db");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM quarantine WHERE ledger = 'b' AND verdict = 'unknown_key'"
        ),
        1
    );
    assert!(!text(&out.stderr).contains("two ledgers trust the same key"));
    // Both ledgers trusting both keys (no `keys` lists): said at start.
    let shared = dir.path().join("shared.toml");
    std::fs::write(
        &shared,
        format!("db = \"s.db\"\n{keys}[[ledger]]\nname = \"a\"\npath = \"a.jsonl\"\n[[ledger]]\nname = \"b\"\npath = \"b.jsonl\"\n"),
    )
    .unwrap();
    let out = with_config("replay", &shared, &[]);
    assert!(
        text(&out.stderr).contains("two ledgers trust the same key"),
        "{}",
        show(&out)
    );
    // A listed key that [keys] does not have is refused, by name.
    std::fs::write(
        &shared,
        format!(
            "db = \"s.db\"\n{keys}[[ledger]]\nname = \"a\"\npath = \"a.jsonl\"\nkeys = [\"kz\"]\n"
        ),
    )
    .unwrap();
    let out = with_config("replay", &shared, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("kz"), "{}", show(&out));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs `cmd` under umask 022 (the common default).
fn with_umask_022(cmd: &mut Command) -> &mut Command {
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        })
    }
}

#[test]
fn case20_mirror_files_are_not_readable_by_everyone() {
    let s = setup("");
    append(&mut Writer::new(&s.ledger), 0, 3);
    let out = run(with_umask_022(
        bin().arg("replay").arg("--config").arg(&s.config),
    ));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(mode(&s.db), 0o640);
    std::fs::remove_file(&s.db).unwrap();
    let sidecar = Sidecar::start_with(&s.config, |cmd| {
        with_umask_022(cmd);
    });
    sidecar.eventually("3 events", || mirrored_seqs(&s.db).len() == 3);
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", s.db.display()));
        assert_eq!(mode(&p), 0o640, "{}", p.display());
    }
    assert!(sidecar.stop().success());
    // A mirror made readable by all is named in a warning.
    std::fs::set_permissions(&s.db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = with_config("replay", &s.config, &[]);
    assert!(
        text(&out.stderr).contains("readable by every user"),
        "{}",
        show(&out)
    );
}

#[test]
fn case20_trust_never_replaces_a_configured_key() {
    let (k1, other) = (
        KeyFile::generate("k1").unwrap(),
        KeyFile::generate("k1").unwrap(),
    );
    let s = setup(&format!("[keys]\n{}", trust_line(&k1)));
    append(&mut Writer::new(&s.ledger).with_key(k1.clone()), 0, 2);
    let replace = format!("k1={}", other.public_base64());
    let out = with_config("verify", &s.config, &["--trust", &replace]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("already trusts"),
        "{}",
        show(&out)
    );
    // The same key again is no conflict.
    let same = format!("k1={}", k1.public_base64());
    let out = with_config("verify", &s.config, &["--trust", &same]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn case20_readyz_details_are_for_loopback_clients_only() {
    let s = setup("");
    let lines = chain(6);
    write_lines(&s.ledger, &lines[..2]);
    append_lines(&s.ledger, &lines[4..]);
    // Listening on every interface, as in a container.
    let sidecar = Sidecar::start_on(&s.config, "0.0.0.0:0", |_| {});
    sidecar.eventually("halted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    let port = sidecar.addr.rsplit(':').next().unwrap().to_owned();
    let (status, body) = timed_get(
        &format!("127.0.0.1:{port}"),
        "/readyz",
        Duration::from_secs(5),
    );
    assert_eq!(status, 503);
    assert!(
        body.contains(&s.ledger.display().to_string()),
        "loopback gets the details: {body}"
    );
    match non_loopback_address() {
        Some(ip) => {
            let (status, body) = timed_get(&format!("{ip}:{port}"), "/readyz", Duration::from_secs(5));
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("ledger app halted (seq_gap)"), "{body}");
            assert!(!body.contains(&s.dir.display().to_string()), "no paths for {ip}: {body}");
        }
        None => eprintln!("no non-loopback address on this machine: the remote view is covered by the unit test of telemetry::readiness"),
    }
    assert!(sidecar.stop().success());
}

/// An IPv4 address of this machine that is not loopback, if it has one.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
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
