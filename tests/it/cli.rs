//! The binary as users run it: producer commands, replay/verify/status,
//! exit codes, and bad input (a clear one-line error with a hint, exit 2,
//! every file left as it was).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use crate::common::{bin, on_db, run, run_stdin, text};

fn append(ledger: &Path, payloads: &str) -> Output {
    run_stdin(
        bin().arg("append").arg("--ledger").arg(ledger),
        payloads,
        None,
    )
}

/// A snapshot of every file in a folder (name → bytes), to prove that a
/// failed command changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn four_concurrent_appenders_make_one_valid_chain() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("shared.jsonl");
    let children: Vec<_> = (0..4)
        .map(|w| {
            let payloads: String = (0..500)
                .map(|i| format!("{{\"writer\":{w},\"i\":{i}}}\n"))
                .collect();
            let mut child = bin()
                .arg("append")
                .arg("--ledger")
                .arg(&ledger)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            // Feed slowly, in small pieces, so the writers interleave.
            std::thread::spawn(move || {
                for chunk in payloads.as_bytes().chunks(700) {
                    stdin.write_all(chunk).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
            child
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = run(bin().args(["verify", "--json", "--ledger"]).arg(&ledger));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ledgers"][0]["counts"]["mirrored"], 2000);
    assert_eq!(report["ledgers"][0]["head"]["seq"], 1999);
    // Every payload exactly once.
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(seen.insert((
            v["payload"]["writer"].as_u64().unwrap(),
            v["payload"]["i"].as_u64().unwrap()
        )));
    }
    assert_eq!(seen.len(), 2000);
}

#[test]
fn keygen_append_signed_and_verify_required() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("producer.key");
    let out = run(bin().arg("keygen").arg("--out").arg(&key));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trust_line = text(&out.stdout);
    let (id, b64) = trust_line.trim().split_once(" = ").unwrap();
    assert_eq!(id, "producer");
    // The advice depends on what the key is for: a log key under [keys]
    // would be trusted to sign events.
    let advice = text(&out.stderr);
    assert!(advice.contains("a producer's signing key"), "{advice}");
    assert!(advice.contains("under [tlog] instead"), "{advice}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Never overwrites.
    let before = std::fs::read(&key).unwrap();
    let again = run(bin().arg("keygen").arg("--out").arg(&key));
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);

    let ledger = dir.path().join("signed.jsonl");
    let out = run_stdin(
        bin()
            .arg("append")
            .arg("--ledger")
            .arg(&ledger)
            .arg("--key")
            .arg(&key)
            .args(["--type", "order.created"]),
        "{\"order\":1}\n{\"order\":2}\n",
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trust = format!("{id}={}", b64.trim_matches('"'));
    let out = run(bin()
        .args([
            "verify",
            "--signatures",
            "required",
            "--trust",
            &trust,
            "--ledger",
        ])
        .arg(&ledger));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    // Without the key, required signatures are unknown_key: exit 1.
    let out = run(bin()
        .args([
            "verify",
            "--signatures",
            "required",
            "--trust",
            "other=fOXe2311QGB9YYiojk7Du5uExN+PN9aa1XW3bmiMFTE=",
            "--ledger",
        ])
        .arg(&ledger));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("unknown_key"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn replay_rebuilds_a_deleted_database_and_status_reports() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    let payloads: String = (0..50).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    assert!(append(&ledger, &payloads).status.success());
    let db = dir.path().join("m.db");
    let replay = || on_db("replay", &ledger, &db);
    assert_eq!(replay().status.code(), Some(0));
    let dump = |db: &Path| -> Vec<(i64, String, String)> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut s = conn
            .prepare("SELECT seq, hash, payload FROM events ORDER BY seq")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let first = dump(&db);
    assert_eq!(first.len(), 50);
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    assert_eq!(replay().status.code(), Some(0));
    assert_eq!(dump(&db), first, "rebuilt byte for byte");

    // An analyst adds the index by type the README offers; more events
    // later: replay continues from the checkpoint and keeps the index up.
    let add_index = "CREATE INDEX IF NOT EXISTS events_by_type ON events (ledger, type, seq)";
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(add_index, [])
        .unwrap();
    assert!(append(&ledger, "{\"i\":50}\n").status.success());
    let out = replay();
    assert!(
        text(&out.stderr).contains("mirrored 1 event"),
        "{}",
        text(&out.stderr)
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let by_type: i64 = conn
        .query_row(
            "SELECT count(*) FROM events INDEXED BY events_by_type WHERE ledger = 'app' AND type = 'event'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(by_type, 51);
    drop(conn);

    let out = run(bin().args(["status", "--json", "--db"]).arg(&db));
    assert_eq!(out.status.code(), Some(0));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let l = &s["ledgers"][0];
    assert_eq!(l["ledger"], "app");
    assert_eq!(l["events"], 51);
    assert_eq!(l["head"]["seq"], 50);
    assert_eq!(l["anchor"]["seq"], 0);
    assert_eq!(l["lag_bytes"], 0);
    assert_eq!(l["halted"], false);
    assert_eq!(
        l["position"]["offset"],
        std::fs::metadata(&ledger).unwrap().len()
    );

    // verify --db: parity holds; then a row altered in the mirror is caught.
    let out = on_db("verify", &ledger, &db);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE events SET payload = '{\"i\":999}' WHERE seq = 7",
            [],
        )
        .unwrap();
    let out = run(bin()
        .args(["verify", "--json", "--ledger"])
        .arg(&ledger)
        .arg("--db")
        .arg(&db));
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ledgers"][0]["mirror"]["parity"]["mismatched"], 1);
}

#[test]
fn a_rewritten_ledger_halts_replay() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    assert!(append(&ledger, "1\n2\n3\n").status.success());
    let db = dir.path().join("m.db");
    assert_eq!(on_db("replay", &ledger, &db).status.code(), Some(0));
    // Change a byte just before the checkpoint (in place: same inode).
    let mut bytes = std::fs::read(&ledger).unwrap();
    let n = bytes.len();
    bytes[n - 3] = b'X';
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ledger)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let out = on_db("replay", &ledger, &db);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("rewritten"),
        "{}",
        text(&out.stderr)
    );
    // A shrunk file too.
    let db2 = dir.path().join("m2.db");
    let ledger2 = dir.path().join("b.jsonl");
    assert!(append(&ledger2, "1\n2\n").status.success());
    assert_eq!(on_db("replay", &ledger2, &db2).status.code(), Some(0));
    let len = std::fs::metadata(&ledger2).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ledger2)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let out = on_db("replay", &ledger2, &db2);
    assert_eq!(out.status.code(), Some(1));
    let out = run(bin().args(["status", "--json", "--db"]).arg(&db2));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["ledgers"][0]["halt"]["verdict"], "rewritten");
}

#[test]
fn append_refuses_bad_payloads_and_unfinished_ledgers() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("a.jsonl");
    let out = append(
        &ledger,
        "{\"ok\":1}\n{\"big\":9007199254740993}\n{\"never\":1}\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("stdin line 2"), "{err}");
    assert!(
        err.contains("before it: 1 event (seq 0), nothing after"),
        "{err}"
    );
    assert!(err.contains("hint: write integers beyond"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&ledger).unwrap().lines().count(),
        1,
        "line 1 appended, nothing after"
    );
    // A repeated name is placed where it repeats, with its own hint.
    let out = append(&ledger, "{\"order\":1,\"order\":2}\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("repeated member name 'order' at byte 11; before it: no event appended"),
        "{err}"
    );
    assert!(err.contains("hint: write each member name once"), "{err}");
    let out = append(&ledger, "3\n4\n");
    assert!(
        text(&out.stderr).contains("appended 2 events (seqs 1 to 2)"),
        "{}",
        text(&out.stderr)
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&ledger)
        .unwrap()
        .write_all(b"{\"torn\":")
        .unwrap();
    let before = std::fs::read(&ledger).unwrap();
    let out = append(&ledger, "2\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unfinished line"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("hint:"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&ledger).unwrap(), before);
}

/// Each bad input: exit 2, one `error:` line naming the problem, a hint,
/// and no file created or changed.
#[test]
fn bad_input_is_a_clear_error_that_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ledger = d.join("app.jsonl");
    assert!(append(&ledger, "1\n2\n").status.success());
    std::fs::write(d.join("unknown-key.toml"), "db = \"x.db\"\ndbb = 1\n").unwrap();
    std::fs::write(
        d.join("bad-policy.toml"),
        "[[ledger]]\npath = \"app.jsonl\"\nsignatures = \"sometimes\"\n",
    )
    .unwrap();
    std::fs::write(d.join("text.db"), "this is not a database\n").unwrap();
    {
        let other = rusqlite::Connection::open(d.join("other.db")).unwrap();
        other
            .execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY);")
            .unwrap();
    }
    {
        let newer = rusqlite::Connection::open(d.join("newer.db")).unwrap();
        newer
            .execute_batch(&format!(
                "PRAGMA application_id = {}; PRAGMA user_version = 99; CREATE TABLE events (x);",
                ledgertail::mirror::APPLICATION_ID
            ))
            .unwrap();
    }
    std::fs::write(
        d.join("bad.key"),
        "{\"key_id\":\"k\",\"seed\":\"not base64!\"}",
    )
    .unwrap();

    let path = |name: &str| d.join(name).display().to_string();
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let app = ledger.display().to_string();
    let replay_into = |db: &str| args(&["replay", "--ledger", &app, "--db", &path(db)]);
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "unknown config key",
            args(&["replay", "--config", &path("unknown-key.toml")]),
            "dbb",
        ),
        (
            "bad policy",
            args(&["verify", "--config", &path("bad-policy.toml")]),
            "signatures",
        ),
        (
            "missing config",
            args(&["replay", "--config", &path("nope.toml")]),
            "nope.toml",
        ),
        (
            "missing ledger",
            args(&[
                "replay",
                "--ledger",
                &path("missing.jsonl"),
                "--db",
                &path("fresh.db"),
            ]),
            "no such file",
        ),
        (
            "not sqlite",
            replay_into("text.db"),
            "not a ledgertail mirror",
        ),
        (
            "another app's db",
            replay_into("other.db"),
            "not a ledgertail mirror",
        ),
        ("newer schema", replay_into("newer.db"), "newer"),
        (
            "status of a missing db",
            args(&["status", "--db", &path("absent.db")]),
            "no such database",
        ),
        (
            "malformed key file",
            args(&["append", "--ledger", &app, "--key", &path("bad.key")]),
            "seed",
        ),
        (
            "bad --trust",
            args(&["verify", "--ledger", &app, "--trust", "k1"]),
            "ID=BASE64",
        ),
    ];
    for (what, args, needle) in cases {
        let before = snapshot(d);
        let out = run_stdin(bin().args(&args), "3\n", None);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains("error:") && err.contains(needle),
            "{what}: {err}"
        );
        assert_eq!(snapshot(d), before, "{what}: files changed");
        if what != "bad --trust" {
            assert!(err.contains("hint:"), "{what}: no hint in {err}");
        }
    }
}

#[test]
fn read_only_database_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    assert!(append(&ledger, "1\n").status.success());
    use std::os::unix::fs::PermissionsExt;
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores directory permissions; /proc refuses new files to anyone.
    let db = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/proc/ledgertail-test.db")
    } else {
        ro.join("m.db")
    };
    let out = on_db("replay", &ledger, &db);
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("writable"),
        "{}",
        text(&out.stderr)
    );
    assert!(!db.exists());
}

/// Runs `cmd` with its standard output a pipe whose reader is gone before
/// the command writes (as `ledgertail verify | head -1` once head exits).
fn with_reader_gone(cmd: &mut std::process::Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_reader_that_leaves_early_cuts_the_report_but_not_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    let db = dir.path().join("m.db");
    assert!(append(&ledger, "1\n2\n3\n").status.success());
    assert_eq!(on_db("replay", &ledger, &db).status.code(), Some(0));
    let verify_cut = || {
        with_reader_gone(
            bin()
                .arg("verify")
                .arg("--ledger")
                .arg(&ledger)
                .arg("--db")
                .arg(&db),
        )
    };
    let status_cut = || with_reader_gone(bin().arg("status").arg("--db").arg(&db));
    for out in [verify_cut(), status_cut()] {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{}",
            text(&out.stderr)
        );
    }
    // The verdict still reaches the exit status when the report is cut.
    let mut bytes = std::fs::read(&ledger).unwrap();
    let n = bytes.len();
    bytes[n - 3] = b'X';
    std::fs::write(&ledger, &bytes).unwrap();
    let out = verify_cut();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_report_that_cannot_be_written_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    let db = dir.path().join("m.db");
    assert!(append(&ledger, "1\n2\n3\n").status.success());
    assert_eq!(on_db("replay", &ledger, &db).status.code(), Some(0));
    // /dev/full takes nothing: every write fails with ENOSPC.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = bin()
        .arg("verify")
        .arg("--ledger")
        .arg(&ledger)
        .arg("--db")
        .arg(&db)
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("writing to standard output") && err.contains("hint:"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
