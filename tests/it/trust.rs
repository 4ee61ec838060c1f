//! Keys and authenticity against a hostile producer: lines that are not
//! authentic never count, key changes and reloads re-judge exactly what
//! they must, a key id cannot forge a log line, a signature binds its
//! ledger, and `trust` never replaces a configured key.

use crate::common;

use std::time::Duration;

use common::lines::*;
use common::*;
use ledgertail::producer::{KeyFile, Writer};

#[test]
fn a_non_authentic_line_never_makes_readyz_fail() {
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
fn an_unsigned_line_with_a_huge_seq_is_not_the_head_when_signatures_are_required() {
    let key = KeyFile::generate("k1").unwrap();
    let s = setup_with(
        &format!("ready_max_lag_events = 10\n[keys]\n{}", key.trust_line()),
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

#[test]
fn a_key_change_never_erases_a_rewritten_halt() {
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
        &format!("[keys]\n{}\n[[ledger]]", key.trust_line()),
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
fn a_reload_that_changes_nothing_judges_nothing_again() {
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
fn a_key_id_cannot_forge_a_log_line() {
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
fn a_line_signed_for_one_ledger_is_not_authentic_in_another() {
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
    let keys = format!("[keys]\n{}\n{}\n", ka.trust_line(), kb.trust_line());
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

#[test]
fn trust_never_replaces_a_configured_key() {
    let (k1, other) = (
        KeyFile::generate("k1").unwrap(),
        KeyFile::generate("k1").unwrap(),
    );
    let s = setup(&format!("[keys]\n{}", k1.trust_line()));
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
