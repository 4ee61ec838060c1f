//! Operator-grade at scale: memory bounded per batch whatever
//! the line size, costs that do not grow with what cannot have changed,
//! and behaviour an operator relies on. Each test failed on the build
//! before its fix (`LEDGERTAIL_BIN` points the binary tests at another
//! build).

use crate::common;

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use ledgertail::config::{FileConfig, Overrides, Settings};
use ledgertail::mirror::{Access, Mirror};
use ledgertail::producer::Writer;
use ledgertail::shipper::{Batching, Shipper};

/// `n` events whose lines are about `bytes` long.
fn big_events(ledger: &Path, n: usize, bytes: usize) {
    let mut w = Writer::new(ledger).without_fsync();
    for i in 0..n {
        let pad = "x".repeat(bytes - 200);
        w.append("big", &format!("{{\"i\":{i},\"pad\":\"{pad}\"}}"))
            .unwrap();
    }
}

#[test]
fn a_batch_is_cut_by_bytes_as_well_as_by_lines() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    big_events(&live, 20, 300_000);
    let over = Overrides {
        ledger: Some(live.clone()),
        db: Some(dir.path().join("m.db")),
        ..Overrides::default()
    };
    let s = Settings::resolve(&FileConfig::default(), &over, dir.path()).unwrap();
    let mirror = Mirror::open(&s.db, Access::ReadWrite).unwrap();
    let batching = Batching {
        max_events: 1000,
        max_bytes: 1 << 20,
        max_wait: Duration::from_secs(3600),
    };
    let mut shipper = Shipper::new(s.ledgers[0].clone(), mirror, batching).unwrap();
    let mut sizes = Vec::new();
    shipper
        .catch_up(&AtomicBool::new(false), &mut |b| {
            if b.commit.is_some() {
                sizes.push(b.mirrored_seen_at.len());
            }
        })
        .unwrap();
    assert_eq!(sizes.iter().sum::<usize>(), 20);
    // 1 MiB of 300 kB lines: three fit, the fourth goes over and ends it.
    assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
}

#[test]
fn replay_of_one_mib_lines_stays_within_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    big_events(&live, 60, 1_040_000);
    let mut replay = bin();
    replay
        .args(["replay", "--no-progress", "--ledger"])
        .arg(&live)
        .arg("--db")
        .arg(dir.path().join("m.db"));
    let Some((code, kib, err)) = peak_rss_or_skip("replay's peak memory", &replay, b"") else {
        return;
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(kib < 64 * 1024, "replay peaked at {} MiB", kib / 1024);
    assert_eq!(
        count(&dir.path().join("m.db"), "SELECT count(*) FROM events"),
        60
    );
}

/// A ledger whose fourth line halts it (seq_gap).
fn halting_ledger(ledger: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("s.jsonl");
    append(&mut Writer::new(&scratch).without_fsync(), 0, 6);
    let lines: Vec<String> = std::fs::read_to_string(&scratch)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        ledger,
        format!("{}{}{}{}", lines[0], lines[1], lines[2], lines[5]),
    )
    .unwrap();
}

#[test]
fn log_level_warning_means_warn_and_a_bare_word_is_refused() {
    let s = setup("log_level = \"warning\"");
    halting_ledger(&s.ledger);
    // RUST_LOG would outrank the file: the file's level is what is tried.
    let out = bin()
        .env_remove("RUST_LOG")
        .args(["replay", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("ledger halted"),
        "the halt is logged: {}",
        show(&out)
    );
    let out = bin()
        .env_remove("RUST_LOG")
        .args(["--log-level", "Warning", "replay", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("ledger halted"),
        "{}",
        show(&out)
    );
    for (how, args) in [
        ("flag", vec!["--log-level", "loud", "status", "--db"]),
        (
            "flag with a target",
            vec!["--log-level", "ledgertail=verbose", "status", "--db"],
        ),
    ] {
        let out = bin()
            .env_remove("RUST_LOG")
            .args(&args)
            .arg(&s.db)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{how}: {}", show(&out));
        assert!(
            text(&out.stderr).contains("not a log level"),
            "{how}: {}",
            show(&out)
        );
    }
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("\"warning\"", "\"loud\""),
    )
    .unwrap();
    let out = bin()
        .env_remove("RUST_LOG")
        .args(["replay", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("log_level"), "{}", show(&out));
}

#[test]
fn every_duration_option_is_bounded_when_the_config_loads() {
    for option in [
        "shutdown_grace_secs = 9223372036854775807",
        "parity_interval_secs = 9223372036854775807",
        "batch_max_millis = 9223372036854775807",
        "poll_interval_millis = 9223372036854775807",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("lt.toml");
        std::fs::write(&config, format!("{option}\n")).unwrap();
        let run = bin()
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish_within(run, Duration::from_secs(30), "run with a bad option");
        assert_eq!(out.status.code(), Some(2), "{option}: {}", show(&out));
        let field = option.split(' ').next().unwrap();
        assert!(
            text(&out.stderr).contains(field),
            "{option}: {}",
            show(&out)
        );
        assert!(
            text(&out.stderr).contains("must be between"),
            "{option}: {}",
            show(&out)
        );
    }
}

fn status_json(args: &[&str]) -> (Output, serde_json::Value) {
    let out = bin()
        .args(["status", "--json"])
        .args(args)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

#[test]
fn status_never_reads_the_events_table() {
    let dir = tempfile::tempdir().unwrap();
    let (live, db) = (dir.path().join("app.jsonl"), dir.path().join("m.db"));
    append(&mut Writer::new(&live).without_fsync(), 0, 50);
    let out = bin()
        .args(["replay", "--ledger"])
        .arg(&live)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // Whatever the events table holds, status takes its figures from the
    // checkpoint: with the table out of the way, it still answers.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("ALTER TABLE events RENAME TO events_elsewhere;")
        .unwrap();
    let (out, v) = status_json(&["--db", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(v["ledgers"][0]["events"], 50);
}

#[test]
fn status_shows_staleness_and_the_ledgers_own_head() {
    let s = setup("");
    halting_ledger(&s.ledger);
    let out = bin()
        .args(["replay", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let (out, v) = status_json(&["--config", s.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let l = &v["ledgers"][0];
    assert_eq!(l["head"]["seq"], 2, "{v:#}");
    assert_eq!(l["ledger_head_seq"], 5, "{v:#}");
    assert_eq!(l["lag_events"], 3, "{v:#}");
    assert!(
        l["last_commit"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{v:#}"
    );
    assert!(
        l["halt"]["since"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{v:#}"
    );
    // The halt's time stays that of the first record across restarts.
    let since = l["halt"]["since"].clone();
    std::thread::sleep(Duration::from_millis(20));
    bin()
        .args(["replay", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    let (_, v) = status_json(&["--config", s.config.to_str().unwrap()]);
    assert_eq!(v["ledgers"][0]["halt"]["since"], since);
}

#[test]
fn a_ledger_path_with_a_typo_is_shown_as_waited_for() {
    let s = setup_with("", "");
    let config = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("path = \"app.jsonl\"", "path = \"app.jsnol\"");
    std::fs::write(&s.config, config).unwrap();
    append(&mut Writer::new(&s.ledger), 0, 3);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("said in the log", || {
        sidecar.log_text().contains("waiting for the ledger's file")
    });
    let (code, body) = sidecar.get("/readyz");
    assert_eq!(
        code, 200,
        "an app that has not written yet is normal: {body}"
    );
    assert!(
        body.contains("waiting for") && body.contains("app.jsnol"),
        "{body}"
    );
    let log = sidecar.log_text();
    assert_eq!(
        log.matches("waiting for the ledger's file").count(),
        1,
        "once: {log}"
    );
    let (out, v) = status_json(&["--config", s.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let l = &v["ledgers"][0];
    assert_eq!(l["mirrored"], false, "{v:#}");
    assert!(
        l["waiting_for"]
            .as_str()
            .is_some_and(|p| p.ends_with("app.jsnol")),
        "{v:#}"
    );
    assert!(sidecar.stop().success());
}

#[test]
fn status_works_for_a_user_who_cannot_write_beside_the_mirror() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run status as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (live, db) = (dir.path().join("app.jsonl"), dir.path().join("m.db"));
    append(&mut Writer::new(&live).without_fsync(), 0, 3);
    let out = bin()
        .args(["replay", "--ledger"])
        .arg(&live)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A copy of the binary that user can run: the build's own may sit in
    // a folder only its owner enters (a clone under /root).
    let binary = dir.path().join("ledgertail");
    std::fs::copy(bin_path(), &binary).unwrap();
    let mut status = std::process::Command::new(&binary);
    status.args(["status", "--json", "--db"]).arg(&db);
    // SAFETY: setgid/setuid are async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut status, || {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = status.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("\"events\": 3"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_mirror_of_schema_1_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (live, db) = (dir.path().join("app.jsonl"), dir.path().join("m.db"));
    append(&mut Writer::new(&live).without_fsync(), 0, 3);
    // A mirror as the first schema wrote it, with a quarantine row that
    // carries its file's path.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mirror-schema-v1.sql"),
        )
        .unwrap(),
    )
    .unwrap();
    c.execute_batch(
        "PRAGMA application_id = 1280592945; PRAGMA user_version = 1;
         INSERT INTO quarantine (ledger, file_id, file_path, file_offset, line_length, verdict, detail, line, quarantined_at)
         VALUES ('app', '1:2', '/old/app.jsonl', 0, 7, 'malformed', 'not JSON', x'67617262616765', '2026-01-01T00:00:00Z');",
    )
    .unwrap();
    drop(c);
    let out = bin()
        .args(["replay", "--ledger"])
        .arg(&live)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let c = common::db(&db);
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, i64::from(ledgertail::mirror::SCHEMA_VERSION));
    let path: String = c
        .query_row("SELECT path FROM files WHERE file_id = '1:2'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(path, "/old/app.jsonl", "the path moved to the files table");
    assert_eq!(count(&db, "SELECT count(*) FROM events"), 3);
    // Rows name their file once in `files`, not in every quarantine row.
    assert!(c.prepare("SELECT file_path FROM quarantine").is_err());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM files WHERE path LIKE '%app.jsonl'"
        ),
        2
    );
}

#[test]
fn a_second_writer_on_one_mirror_exits_naming_the_first() {
    let s = setup("");
    append(&mut Writer::new(&s.ledger), 0, 3);
    let first = Sidecar::start(&s.config);
    first.eventually("3 events", || mirrored_seqs(&s.db).len() == 3);
    let pid = first.child.id().to_string();
    let second = bin()
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&s.config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish_within(second, Duration::from_secs(30), "a second run");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains(&format!("pid {pid}")),
        "names the holder: {}",
        show(&out)
    );
    let out = bin()
        .args(["replay", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("ledgertail run"),
        "{}",
        show(&out)
    );
    // The first one never noticed.
    append(&mut Writer::new(&s.ledger), 3, 2);
    first.eventually("5 events", || mirrored_seqs(&s.db).len() == 5);
    assert_eq!(
        first.metric("ledgertail_commit_failures_total{ledger=\"app\"}"),
        Some(0.0)
    );
    assert!(first.stop().success());
    // Once it is gone, the lock is free.
    let out = bin()
        .args(["replay", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

fn append_cmd(ledger: &Path, stdin: &str, extra: &[&str]) -> Output {
    let mut child = bin()
        .arg("append")
        .arg("--ledger")
        .arg(ledger)
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

#[test]
fn append_never_writes_a_line_its_sidecar_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    assert_eq!(
        append_cmd(&ledger, "{\"first\":1}\n", &[]).status.code(),
        Some(0)
    );
    let before = std::fs::read(&ledger).unwrap();
    let nested = |depth: usize| format!("{}{}\n", "[".repeat(depth), "]".repeat(depth));
    // 128 levels in the payload make 129 with the event around it.
    let out = append_cmd(&ledger, &format!("{{\"ok\":1}}\n{}", nested(128)), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("malformed"), "{}", show(&out));
    assert_eq!(
        std::fs::read(&ledger).unwrap(),
        before,
        "nothing of the batch written"
    );
    // A payload that makes the line longer than the limit.
    let big = format!("\"{}\"\n", "x".repeat(1_048_600));
    let out = append_cmd(&ledger, &big, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("too_long"), "{}", show(&out));
    assert_eq!(std::fs::read(&ledger).unwrap(), before);
    // Within the limits, both go in; the sidecar mirrors them all.
    assert_eq!(
        append_cmd(&ledger, &nested(127), &[]).status.code(),
        Some(0)
    );
    let out = append_cmd(&ledger, &big, &["--max-line-bytes", "2000000"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = bin()
        .args(["verify", "--max-line-bytes", "2000000", "--ledger"])
        .arg(&ledger)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("3 events in the chain"),
        "{}",
        show(&out)
    );
}

#[test]
fn errors_say_each_cause_once_with_a_hint_where_the_fix_is_knowable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ledger = d.join("app.jsonl");
    append(&mut Writer::new(&ledger).without_fsync(), 0, 2);
    std::fs::create_dir(d.join("folder")).unwrap();
    let p = |name: &str| d.join(name).display().to_string();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "--db names a directory",
            vec![
                "replay".into(),
                "--ledger".into(),
                p("app.jsonl"),
                "--db".into(),
                p("folder"),
            ],
            "is a directory",
        ),
        (
            "--ledger names a directory",
            vec![
                "replay".into(),
                "--ledger".into(),
                p("folder"),
                "--db".into(),
                p("m.db"),
            ],
            "is a directory",
        ),
        (
            "append into a missing folder",
            vec![
                "append".into(),
                "--ledger".into(),
                "/nonexistent-folder/app.jsonl".into(),
            ],
            "does not exist",
        ),
        (
            "keygen into a missing folder",
            vec![
                "keygen".into(),
                "--out".into(),
                "/nonexistent-folder/k.key".into(),
            ],
            "does not exist",
        ),
        (
            "a --trust without ID=",
            vec![
                "verify".into(),
                "--ledger".into(),
                p("app.jsonl"),
                "--trust".into(),
                "foo".into(),
            ],
            "ID=BASE64",
        ),
        (
            "a missing --config",
            vec!["replay".into(), "--config".into(), p("nope.toml")],
            "does not exist",
        ),
    ];
    for (what, args, needle) in cases {
        let mut child = bin()
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        let _ = child.stdin.take().unwrap().write_all(b"1\n");
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        let error = err
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_default();
        let hint = err
            .lines()
            .find(|l| l.starts_with("hint: "))
            .unwrap_or_default();
        assert!(err.contains(needle), "{what}: {err}");
        assert!(!hint.is_empty(), "{what}: no hint in {err}");
        // No cause said twice.
        let parts: Vec<&str> = error.trim_start_matches("error: ").split(": ").collect();
        for (i, a) in parts.iter().enumerate() {
            for b in &parts[i + 1..] {
                assert!(a != b, "{what}: `{a}` twice in {error}");
            }
        }
        assert_eq!(
            error.matches("(os error").count().min(1),
            error.matches("(os error").count(),
            "{what}: {error}"
        );
    }
}

#[test]
fn a_flood_of_garbage_is_logged_a_few_lines_then_summarized() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    append(&mut Writer::new(&ledger).without_fsync(), 0, 2);
    let garbage: String = (0..200).map(|i| format!("garbage line {i}\n")).collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&ledger)
        .unwrap()
        .write_all(garbage.as_bytes())
        .unwrap();
    let db = dir.path().join("m.db");
    let out = bin()
        .args(["replay", "--ledger"])
        .arg(&ledger)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let err = text(&out.stderr);
    assert_eq!(err.matches("line quarantined").count(), 5, "{err}");
    assert!(
        err.contains("195 more malformed lines quarantined"),
        "{err}"
    );
    assert!(err.lines().count() < 12, "{err}");
    // Every line is still evidence.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM quarantine WHERE verdict = 'malformed'"
        ),
        200
    );
}

#[test]
fn a_flood_of_garbage_grows_the_mirror_by_at_most_three_times_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    // 100,000 lines of 100 bytes, each one evidence kept whole.
    let garbage: String = (0..100_000)
        .map(|i| format!("{:<100}\n", format!("garbage line {i}")))
        .collect();
    std::fs::write(&ledger, &garbage).unwrap();
    let db = dir.path().join("m.db");
    let out = on_db("replay", &ledger, &db);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine"), 100_000);
    // All of the WAL in the database file, to weigh the mirror alone.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let size = std::fs::metadata(&db).unwrap().len() as f64;
    let ratio = size / garbage.len() as f64;
    assert!(ratio <= 3.0, "the mirror is {ratio:.2} times the garbage");
}

#[test]
fn append_after_a_huge_last_line_reads_back_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    append(&mut Writer::new(&ledger).without_fsync(), 0, 3);
    // A complete line of 64 MiB at the end (too long to be an event).
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&ledger)
        .unwrap();
    let block = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        f.write_all(&block).unwrap();
    }
    f.write_all(b"\n").unwrap();
    drop(f);
    let mut cmd = bin();
    cmd.arg("append").arg("--ledger").arg(&ledger);
    let Some((code, kib, err)) = peak_rss_or_skip("append's peak memory", &cmd, b"{\"next\":1}\n")
    else {
        return;
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(kib < 64 * 1024, "append peaked at {} MiB", kib / 1024);
    let text = std::fs::read_to_string(&ledger).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["seq"], 3,
        "the chain goes on from the last event before the long line"
    );
}

/// A ledger of `n` events, every one with an id; every 1000th reuses the
/// id of the event 500 before it.
fn events_with_ids(ledger: &Path, n: u64) {
    use ledgertail::ledger::event::{seal_line, Draft};
    let mut out = std::io::BufWriter::new(std::fs::File::create(ledger).unwrap());
    let mut prev = None;
    for seq in 0..n {
        let text = format!("{{\"i\":{seq}}}");
        let value = ledgertail::ledger::json::parse(&text).unwrap();
        let id = format!("order-{}", if seq % 1000 == 999 { seq - 500 } else { seq });
        let draft = Draft {
            seq,
            prev_hash: prev,
            ts: "2026-12-01T12:00:00.000000Z",
            event_type: "order",
            id: Some(&id),
            payload: &value,
        };
        let (line, hash) = seal_line(&draft, None).unwrap();
        writeln!(out, "{line}").unwrap();
        prev = Some(hash);
    }
    out.flush().unwrap();
}

#[test]
fn verify_memory_does_not_grow_with_the_ledger() {
    // Once, verify held every hash and id in memory (~166 bytes per
    // event). Now the chain and the ids spill to temporary files.
    let dir = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    // Both sizes are past the in-memory parts' caps (64Ki hashes, runs of
    // 256Ki ids): what grows beyond them is on disk.
    for n in [300_000u64, 600_000] {
        let (ledger, db) = (
            dir.path().join(format!("ids-{n}.jsonl")),
            dir.path().join(format!("ids-{n}.db")),
        );
        events_with_ids(&ledger, n);
        let replayed = bin()
            .args(["replay", "--signatures", "off", "--no-progress", "--ledger"])
            .arg(&ledger)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap();
        assert!(replayed.status.success(), "{}", show(&replayed));
        let mut verify = bin();
        verify
            .args(["verify", "--json", "--signatures", "off", "--ledger"])
            .arg(&ledger)
            .arg("--db")
            .arg(&db);
        let Some((code, kib, err)) = peak_rss_or_skip("verify's peak memory", &verify, b"") else {
            return;
        };
        assert_eq!(code, Some(0), "{err}");
        peaks.push(kib);
        // The reuses are all counted, across the spilled runs.
        let out = verify.output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let l = &report["ledgers"][0];
        assert_eq!(l["warnings_total"], n / 1000, "{l}");
        assert_eq!(
            l["warnings"].as_array().unwrap().len() as u64,
            (n / 1000).min(100)
        );
        assert_eq!(l["warnings"][0]["seq"], 999);
        assert_eq!(l["warnings"][0]["first_seq"], 499);
    }
    // 300,000 more events at the old ~166 bytes each would be ~47 MiB.
    assert!(
        peaks[1] < peaks[0] + 8 * 1024,
        "verify's peak memory grew from {} KiB to {} KiB",
        peaks[0],
        peaks[1]
    );
}

#[test]
fn verify_lists_the_first_thousand_refused_lines_and_counts_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    let mut w = Writer::new(&ledger).without_fsync();
    w.append("ok", "{}").unwrap();
    drop(w);
    let mut garbage = std::fs::OpenOptions::new()
        .append(true)
        .open(&ledger)
        .unwrap();
    for i in 0..1500 {
        writeln!(garbage, "not json {i}").unwrap();
    }
    drop(garbage);
    let run = |json: bool| {
        let mut cmd = bin();
        cmd.args(["verify", "--signatures", "off", "--ledger"])
            .arg(&ledger);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let out = run(true);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = &report["ledgers"][0];
    assert_eq!(l["problems_total"], 1500, "{}", show(&out));
    let listed = l["problems"].as_array().unwrap();
    assert_eq!(listed.len(), 1000);
    assert_eq!(listed[0]["line"], 2);
    assert_eq!(listed[999]["line"], 1001);
    assert_eq!(l["counts"]["malformed"], 1500);
    let text_out = run(false);
    let shown = text(&text_out.stdout);
    assert!(shown.contains("... and 500 more refused lines"), "{shown}");
    assert!(shown.contains("1500 problems"), "{shown}");
    assert_eq!(out.status.code(), text_out.status.code());
}
