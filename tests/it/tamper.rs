//! Tamper evidence: every change to bytes already mirrored is caught as
//! `rewritten` and named by seq, file and offset, whatever way the file was
//! changed (in place, by an edited copy renamed over it, at its first line);
//! a halt outlives a restart and is kept in the history when it is lifted;
//! copy-and-truncate is a rotation, and the lines its race loses are named.
//! Each test drives the real binary on real files and a real mirror, and
//! failed on the build before the fix (run with `LEDGERTAIL_BIN` pointing
//! at an older binary to see it).

use crate::common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::lines::*;
use common::*;

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

/// `ledgertail status --json --db DB`: the first ledger's view.
fn status(db: &Path) -> serde_json::Value {
    let out = run(bin().args(["status", "--json", "--db"]).arg(db));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["ledgers"][0].clone()
}

/// The halt in force: (verdict, seq, file, offset).
fn halt(db: &Path) -> Option<(String, Option<u64>, String, u64)> {
    let s = status(db);
    let h = s.get("halt").filter(|h| !h.is_null())?;
    Some((
        h["verdict"].as_str().unwrap().to_owned(),
        h["seq"].as_u64(),
        h["file"].as_str().unwrap_or("").to_owned(),
        h["offset"].as_u64().unwrap_or(0),
    ))
}

/// The byte offset of line `n` (0-based) of `path`.
fn offset_of_line(path: &Path, n: usize) -> u64 {
    lines_of(path)[..n].iter().map(|l| l.len() as u64 + 1).sum()
}

/// Ten events of a chain of twelve mirrored by `replay` into `db`; the
/// chain is returned (its last two lines are the ones to append later).
fn mirrored_ten(s: &Setup) -> Vec<String> {
    let lines = chain(12);
    write_lines(&s.ledger, &lines[..10]);
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    lines
}

/// Overwrites one byte of `path` in place (same inode, same length).
fn poke(path: &Path, offset: u64, byte: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&[byte], offset).unwrap();
}

/// The offset, in line `n` of `path`, of the digit in `"i":N`.
fn digit_in_line(path: &Path, n: usize) -> u64 {
    let line = &lines_of(path)[n];
    let at = line.find("\"i\":").unwrap() + 4;
    offset_of_line(path, n) + at as u64
}

// ------------------------------------------------ changes that are caught

#[test]
fn sed_i_on_a_mirrored_line_halts_replay_as_rewritten_at_its_seq() {
    let s = setup("");
    let lines = mirrored_ten(&s);
    // sed -i writes an edited copy and renames it over the ledger.
    let out = run(Command::new("sed")
        .arg("-i")
        .arg("4s/\"type\":\"test\"/\"type\":\"tesT\"/")
        .arg(&s.ledger));
    assert!(out.status.success(), "{}", show(&out));
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let (verdict, seq, file, offset) = halt(&s.db).expect("halted");
    assert_eq!(verdict, "rewritten");
    assert_eq!(seq, Some(3));
    assert_eq!(file, s.ledger.display().to_string());
    assert_eq!(offset, offset_of_line(&s.ledger, 3));
    assert_eq!(mirrored_seqs(&s.db), (0..10).collect::<Vec<i64>>());
    // A restart changes nothing: still halted, nothing mirrored on top.
    append_lines(&s.ledger, &lines[10..]);
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(mirrored_seqs(&s.db).len(), 10);
}

#[test]
fn an_in_place_edit_of_the_first_line_halts_replay_at_seq_0() {
    let s = setup("");
    mirrored_ten(&s);
    poke(&s.ledger, digit_in_line(&s.ledger, 0), b'9');
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let (verdict, seq, _, offset) = halt(&s.db).expect("halted");
    assert_eq!((verdict.as_str(), seq, offset), ("rewritten", Some(0), 0));
}

/// A sidecar on `s` that checks parity every second.
fn sidecar_checking_parity(s: &Setup) -> Sidecar {
    let config = std::fs::read_to_string(&s.config).unwrap().replacen(
        "db =",
        "parity_interval_secs = 1\ndb =",
        1,
    );
    std::fs::write(&s.config, config).unwrap();
    Sidecar::start(&s.config)
}

fn halted_gauge(sidecar: &Sidecar) -> Option<f64> {
    sidecar.metric("ledgertail_halted{ledger=\"app\"}")
}

#[test]
fn an_in_place_edit_of_the_first_line_halts_run_and_readyz() {
    let s = setup("");
    write_lines(&s.ledger, &chain(10));
    let sidecar = sidecar_checking_parity(&s);
    sidecar.eventually("ten mirrored", || mirrored_seqs(&s.db).len() == 10);
    poke(&s.ledger, digit_in_line(&s.ledger, 0), b'9');
    sidecar.eventually("halted", || halted_gauge(&sidecar) == Some(1.0));
    let (code, body) = sidecar.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("rewritten") && body.contains("seq 0"),
        "{body}"
    );
    assert!(sidecar.stop().success());
    let (verdict, seq, _, _) = halt(&s.db).expect("halted");
    assert_eq!((verdict.as_str(), seq), ("rewritten", Some(0)));
}

#[test]
fn an_in_place_edit_further_down_halts_run_and_stays_halted_after_a_restart() {
    let s = setup("");
    let lines = chain(12);
    write_lines(&s.ledger, &lines[..10]);
    let sidecar = sidecar_checking_parity(&s);
    sidecar.eventually("ten mirrored", || mirrored_seqs(&s.db).len() == 10);
    poke(&s.ledger, digit_in_line(&s.ledger, 5), b'9');
    sidecar.eventually("halted", || halted_gauge(&sidecar) == Some(1.0));
    assert_eq!(
        sidecar.metric("ledgertail_parity_mismatched{ledger=\"app\"}"),
        Some(1.0)
    );
    // New events wait behind the halt.
    append_lines(&s.ledger, &lines[10..]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mirrored_seqs(&s.db).len(), 10);
    assert!(sidecar.stop().success());
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let (verdict, seq, _, offset) = halt(&s.db).expect("still halted");
    assert_eq!(verdict, "rewritten");
    assert_eq!(seq, Some(5));
    assert_eq!(offset, offset_of_line(&s.ledger, 5));
    assert_eq!(mirrored_seqs(&s.db).len(), 10);
}

/// One byte of line 5 changed in place: `replay` exits 1, halted as
/// `rewritten` at seq 5.
fn edit_line_5_then_replay_halts_there(s: &Setup) {
    poke(&s.ledger, digit_in_line(&s.ledger, 5), b'9');
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let (verdict, seq, _, _) = halt(&s.db).expect("halted");
    assert_eq!((verdict.as_str(), seq), ("rewritten", Some(5)));
}

#[test]
fn an_in_place_edit_further_down_halts_replay_once_run_kept_its_parity_check() {
    let s = setup("");
    mirrored_ten(&s);
    let sidecar = sidecar_checking_parity(&s);
    sidecar.eventually("a parity check", || {
        sidecar
            .metric("ledgertail_parity_last_check_timestamp_seconds{ledger=\"app\"}")
            .is_some_and(|t| t > 0.0)
    });
    assert!(sidecar.stop().success());
    assert_eq!(
        count(&s.db, "SELECT count(*) FROM meta WHERE key = 'parity:app'"),
        1,
        "kept at the stop"
    );
    edit_line_5_then_replay_halts_there(&s);
}

#[test]
fn an_in_place_edit_further_down_halts_the_next_replay_of_a_replay_built_mirror() {
    let s = setup("");
    mirrored_ten(&s);
    edit_line_5_then_replay_halts_there(&s);
}

#[test]
fn a_replay_keeps_its_check_and_the_next_one_goes_on_from_it() {
    let s = setup("");
    let lines = mirrored_ten(&s);
    // The second replay checks in full and keeps where it stands.
    assert_eq!(on_db("replay", &s.ledger, &s.db).status.code(), Some(0));
    assert_eq!(
        count(&s.db, "SELECT count(*) FROM meta WHERE key = 'parity:app'"),
        1
    );
    append_lines(&s.ledger, &lines[10..]);
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(mirrored_seqs(&s.db), (0..12).collect::<Vec<i64>>());
}

#[test]
fn restoring_the_changed_bytes_lifts_the_halt_and_the_history_keeps_it() {
    let s = setup("");
    let lines = mirrored_ten(&s);
    let at = digit_in_line(&s.ledger, 0);
    let original = std::fs::read(&s.ledger).unwrap()[at as usize];
    poke(&s.ledger, at, b'9');
    assert_eq!(on_db("replay", &s.ledger, &s.db).status.code(), Some(1));
    poke(&s.ledger, at, original);
    append_lines(&s.ledger, &lines[10..]);
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(mirrored_seqs(&s.db), (0..12).collect::<Vec<i64>>());
    let st = status(&s.db);
    assert_eq!(st["halted"], false);
    let last = &st["last_halt"];
    assert_eq!(last["verdict"], "rewritten");
    assert_eq!(last["seq"], 0);
    assert!(last["lifted_at"].is_string(), "{last}");
    assert!(
        last["lifted_how"]
            .as_str()
            .unwrap()
            .contains("as it was mirrored"),
        "{last}"
    );
    let rows = count(&s.db, "SELECT count(*) FROM halts WHERE ledger = 'app'");
    assert_eq!(rows, 1, "one halt, kept once");
}

#[test]
fn a_live_file_truncated_without_a_copy_stays_halted_across_restarts() {
    let s = setup("");
    mirrored_ten(&s);
    truncate(&s.ledger);
    for _ in 0..2 {
        let out = on_db("replay", &s.ledger, &s.db);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let (verdict, _, _, _) = halt(&s.db).expect("halted");
        assert_eq!(verdict, "rewritten");
    }
    let st = status(&s.db);
    assert!(st["last_halt"]["lifted_at"].is_null(), "{st}");
}

// ----------------------------------------------- copy-and-truncate rotation

/// Cuts `path` to 0 bytes in place.
fn truncate(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// logrotate's `copytruncate`: the live file copied to `.1`, then cut to 0.
fn copytruncate(live: &Path) {
    std::fs::copy(live, live.with_extension("jsonl.1")).unwrap();
    truncate(live);
}

#[test]
fn copytruncate_is_a_rotation_for_replay() {
    let s = setup("");
    let lines = chain(15);
    write_lines(&s.ledger, &lines[..10]);
    assert_eq!(on_db("replay", &s.ledger, &s.db).status.code(), Some(0));
    copytruncate(&s.ledger);
    append_lines(&s.ledger, &lines[10..]);
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(mirrored_seqs(&s.db), (0..15).collect::<Vec<i64>>());
    assert!(halt(&s.db).is_none());
    verify_exact(&s);
}

#[test]
fn copytruncate_is_a_rotation_for_run() {
    let s = setup("");
    let lines = chain(15);
    write_lines(&s.ledger, &lines[..10]);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("ten mirrored", || mirrored_seqs(&s.db).len() == 10);
    copytruncate(&s.ledger);
    std::thread::sleep(Duration::from_millis(300));
    append_lines(&s.ledger, &lines[10..]);
    sidecar.eventually("fifteen mirrored", || mirrored_seqs(&s.db).len() == 15);
    assert_eq!(halted_gauge(&sidecar), Some(0.0));
    assert!(sidecar.stop().success());
    assert_eq!(mirrored_seqs(&s.db), (0..15).collect::<Vec<i64>>());
    verify_exact(&s);
}

#[test]
fn copytruncate_during_a_slow_parity_check_is_not_a_rewrite() {
    let s = setup("parity_interval_secs = 1\nparity_max_bytes_per_sec = 65536");
    // 60 events of 6 KB: more than the check reads ahead (256 KiB), so
    // it reads the cut file after the truncation.
    let mut w = ledgertail::producer::Writer::new(&s.ledger);
    let note = "x".repeat(6000);
    let big: Vec<String> = (0..70)
        .map(|i| format!("{{\"i\":{i},\"note\":\"{note}\"}}"))
        .collect();
    let refs: Vec<&str> = big.iter().map(String::as_str).collect();
    w.append_batch("test", &refs[..60]).unwrap();
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("60 mirrored", || mirrored_seqs(&s.db).len() == 60);
    // The first check begins a second after the start and reads 64 KiB a
    // second: well within it, the live file is copied and cut.
    std::thread::sleep(Duration::from_millis(1800));
    copytruncate(&s.ledger);
    w.append_batch("test", &refs[60..]).unwrap();
    sidecar.eventually("70 mirrored", || mirrored_seqs(&s.db).len() == 70);
    // Checks go on (the one under way and the next ones): none halts.
    let checked = |sidecar: &Sidecar| {
        sidecar
            .metric("ledgertail_parity_last_check_timestamp_seconds{ledger=\"app\"}")
            .filter(|t| !t.is_nan())
            .unwrap_or(0.0)
    };
    let first = checked(&sidecar);
    sidecar.eventually("a later check", || checked(&sidecar) > first + 1.5);
    assert_eq!(halted_gauge(&sidecar), Some(0.0), "{}", sidecar.log_text());
    assert!(sidecar.stop().success());
    assert!(halt(&s.db).is_none());
}

#[test]
fn lines_lost_in_copytruncates_race_halt_as_a_seq_gap_that_names_it() {
    let s = setup("");
    // After the truncation the live file grows past the old checkpoint
    // before the sidecar looks: it is still told from an edit.
    let lines = chain(40);
    write_lines(&s.ledger, &lines[..10]);
    assert_eq!(on_db("replay", &s.ledger, &s.db).status.code(), Some(0));
    // Lines 10 and 11 are written after the copy, before the truncation.
    std::fs::copy(&s.ledger, s.ledger.with_extension("jsonl.1")).unwrap();
    append_lines(&s.ledger, &lines[10..12]);
    truncate(&s.ledger);
    append_lines(&s.ledger, &lines[12..]);
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let st = status(&s.db);
    assert_eq!(st["halt"]["verdict"], "seq_gap");
    assert_eq!(st["halt"]["seq"], 12);
    let detail = st["halt"]["detail"].as_str().unwrap();
    assert!(detail.contains("copytruncate"), "{detail}");
    // The lost lines found again (put back beside the ledger): it goes on,
    // and the history says the halt was lifted.
    write_lines(&s.ledger.with_extension("jsonl.0"), &lines[10..12]);
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(mirrored_seqs(&s.db), (0..40).collect::<Vec<i64>>());
    let st = status(&s.db);
    assert_eq!(st["last_halt"]["verdict"], "seq_gap");
    assert!(st["last_halt"]["lifted_at"].is_string(), "{st}");
}

// ------------------------------------------ what verify --db calls things

/// `verify --ledger L --db D --json`: the parity report of the ledger.
fn verify_parity(s: &Setup) -> serde_json::Value {
    let out = on_db("verify", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let out = run(bin()
        .args(["verify", "--json", "--ledger"])
        .arg(&s.ledger)
        .arg("--db")
        .arg(&s.db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["ledgers"][0]["mirror"]["parity"].clone()
}

#[test]
fn verify_db_calls_a_line_changed_by_sed_i_mismatched_and_no_other_missing() {
    let s = setup("");
    mirrored_ten(&s);
    let out = run(Command::new("sed")
        .arg("-i")
        .arg("4s/\"type\":\"test\"/\"type\":\"tesT\"/")
        .arg(&s.ledger));
    assert!(out.status.success(), "{}", show(&out));
    let p = verify_parity(&s);
    assert_eq!(p["mismatched"], 1, "{p}");
    assert_eq!(p["missing_in_jsonl"], 0, "{p}");
    assert_eq!(p["archived"], 0, "{p}");
    assert_eq!(p["examples"][0]["seq"], 3, "{p}");
    assert_eq!(p["examples"][0]["kind"], "mismatched", "{p}");
}

#[test]
fn verify_db_calls_an_edited_first_line_mismatched_not_archived() {
    let s = setup("");
    mirrored_ten(&s);
    poke(&s.ledger, digit_in_line(&s.ledger, 0), b'9');
    let p = verify_parity(&s);
    assert_eq!(p["mismatched"], 1, "{p}");
    assert_eq!(p["archived"], 0, "{p}");
    assert_eq!(p["examples"][0]["seq"], 0, "{p}");
}

// ------------------------------------------------------ what status says

#[test]
fn status_lag_agrees_with_the_files_after_a_copy_took_the_checkpoints_file() {
    let s = setup("");
    mirrored_ten(&s);
    // The same bytes under a new inode (a restore from a backup).
    let copy = s.dir.join("restore.tmp");
    std::fs::copy(&s.ledger, &copy).unwrap();
    std::fs::rename(&copy, &s.ledger).unwrap();
    let st = status(&s.db);
    assert_eq!(st["lag_bytes"], 0, "{st}");
    assert_eq!(st["lag_events"], 0, "{st}");
    let out = on_db("replay", &s.ledger, &s.db);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(halt(&s.db).is_none());
}

// ------------------------------------------------------------ descriptors

/// Runs `cmd` with at most 1,024 open files (soft and hard).
fn with_1024_files(cmd: &mut Command) -> &mut Command {
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

#[test]
fn eleven_hundred_rotated_files_replay_verify_and_run_under_1024_descriptors() {
    let s = setup("");
    let lines = chain(2210);
    // logrotate's numbering: .1100 is the oldest, .1 the newest.
    for k in 0..1100 {
        let file = s.dir.join(format!("app.jsonl.{}", 1100 - k));
        write_lines(&file, &lines[2 * k..2 * k + 2]);
    }
    write_lines(&s.ledger, &lines[2200..]);
    let out = run(with_1024_files(
        bin().arg("replay").arg("--config").arg(&s.config),
    ));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(mirrored_seqs(&s.db).len(), 2210);
    let out = run(with_1024_files(
        bin()
            .arg("verify")
            .arg("--config")
            .arg(&s.config)
            .arg("--db")
            .arg(&s.db),
    ));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    std::fs::remove_file(&s.db).unwrap();
    let sidecar = Sidecar::start_with(&s.config, |cmd| {
        with_1024_files(cmd);
    });
    sidecar.eventually("all mirrored", || mirrored_seqs(&s.db).len() == 2210);
    assert!(sidecar.stop().success());
}

// ------------------------------------------------------------- migration

#[test]
fn a_mirror_from_before_the_history_keeps_its_halt_in_force_as_the_first_row() {
    let s = setup("");
    mirrored_ten(&s);
    poke(&s.ledger, digit_in_line(&s.ledger, 0), b'9');
    assert_eq!(on_db("replay", &s.ledger, &s.db).status.code(), Some(1));
    // Back to the schema before the history: the halt is only in
    // `checkpoints`.
    let c = rusqlite::Connection::open(&s.db).unwrap();
    c.execute_batch("DROP TABLE halts; PRAGMA user_version = 3;")
        .unwrap();
    drop(c);
    assert_eq!(on_db("replay", &s.ledger, &s.db).status.code(), Some(1));
    assert_eq!(
        count(&s.db, "PRAGMA user_version"),
        i64::from(ledgertail::mirror::SCHEMA_VERSION)
    );
    let st = status(&s.db);
    assert_eq!(st["last_halt"]["verdict"], "rewritten");
    assert_eq!(st["last_halt"]["seq"], 0);
    assert!(st["last_halt"]["lifted_at"].is_null());
    assert_eq!(count(&s.db, "SELECT count(*) FROM halts"), 1);
}
