//! Plain JSON logs adopted: `format = "plain"` ledgers, sealed by the
//! sidecar as it reads them.

use crate::common::lines::{append_text, copytruncate};
use std::time::Duration;

use crate::common::*;

const PLAIN: &str = "format = \"plain\"\nts_field = \"time\"\ntype_field = \"level\"\n";

fn replay(s: &Setup) -> std::process::Output {
    run(bin()
        .args(["replay", "--no-progress", "--config"])
        .arg(&s.config))
}

/// Runs `verify` on the mirror, checks its exit status and that its
/// report says `needle`, and returns the report.
fn verify_says(s: &Setup, code: i32, needle: &str) -> String {
    let out = with_config("verify", &s.config, &["--db", s.db.to_str().unwrap()]);
    let said = show(&out);
    assert_eq!(out.status.code(), Some(code), "{said}");
    assert!(said.contains(needle), "expected {needle:?} in: {said}");
    said
}

fn rows(s: &Setup) -> Vec<(i64, String, String, String)> {
    let c = db(&s.db);
    let mut stmt = c
        .prepare("SELECT seq, ts, type, payload FROM events WHERE ledger = 'app' ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn each_line_of_a_plain_log_becomes_the_next_event_and_the_mirror_verifies() {
    let s = setup_with("", PLAIN);
    append_text(
        &s.ledger,
        concat!(
            "{\"time\":\"2026-12-07T16:00:00Z\",\"level\":\"info\",\"msg\":\"a\"}\n",
            "{\"time\":1765125137123,\"level\":30, \"msg\":\"b\"}\n",
            "\n",
            "{\"msg\":\"c\"}\n",
            "{\"msg\":\"unfinished\""
        ),
    );
    let out = replay(&s);
    assert!(out.status.success(), "{}", show(&out));
    let rows = rows(&s);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows[0],
        (
            0,
            "2026-12-07T16:00:00Z".into(),
            "info".into(),
            r#"{"level":"info","msg":"a","time":"2026-12-07T16:00:00Z"}"#.into()
        )
    );
    assert_eq!(
        (rows[1].0, rows[1].1.as_str(), rows[1].2.as_str()),
        (1, "2025-12-07T16:32:17.123Z", "log")
    );
    assert_eq!((rows[2].0, rows[2].2.as_str()), (2, "log"));
    // Read time: an RFC 3339 date of today's UTC.
    assert!(
        rows[2].1.ends_with('Z') && rows[2].1.len() == 24,
        "{}",
        rows[2].1
    );
    // The links, the tree and the line digests check out.
    verify_exact(&s);
    // The unfinished line is adopted once it ends.
    append_text(&s.ledger, ",\"time\":\"2026-12-07T17:00:00Z\"}\n");
    assert!(replay(&s).status.success());
    assert_eq!(mirrored_seqs(&s.db), [0, 1, 2, 3]);
    verify_exact(&s);
}

#[test]
fn a_line_that_is_not_one_json_object_is_quarantined_and_the_chain_goes_on() {
    let s = setup_with("", PLAIN);
    append_text(
        &s.ledger,
        "{\"msg\":\"a\"}\nTraceback (most recent call last):\n[1,2]\n{\"n\":12345678901234567890}\n{\"msg\":\"b\"}\n",
    );
    let out = replay(&s);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(mirrored_seqs(&s.db), [0, 1]);
    assert_eq!(
        count(
            &s.db,
            "SELECT count(*) FROM quarantine WHERE verdict = 'malformed'"
        ),
        3
    );
    assert!(
        show(&out).contains("adopts lines that are one JSON object each"),
        "{}",
        show(&out)
    );
    // verify lists the three lines and says what the ledger is.
    let said = verify_says(&s, 1, "2 lines of a plain JSON log");
    assert!(said.contains("mismatched 0"), "{said}");
}

#[test]
fn an_adopted_line_edited_later_halts_the_ledger_as_rewritten() {
    let s = setup_with("parity_interval_secs = 1\n", PLAIN);
    append_text(&s.ledger, "{\"msg\":\"alpha\"}\n{\"msg\":\"bravo\"}\n");
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("2 events", || mirrored_seqs(&s.db).len() == 2);
    // Same length, same inode: only the line's digest can tell.
    let text = std::fs::read_to_string(&s.ledger).unwrap();
    std::fs::write(&s.ledger, text.replace("alpha", "ALPHA")).unwrap();
    append_text(&s.ledger, "{\"msg\":\"charlie\"}\n");
    sidecar.eventually("halted as rewritten", || {
        count(
            &s.db,
            "SELECT count(*) FROM checkpoints WHERE halted = 1 AND halt_verdict = 'rewritten'",
        ) == 1
    });
    let log = sidecar.log_text();
    assert!(log.contains("changed"), "{log}");
    // Nothing was adopted twice.
    assert_eq!(mirrored_seqs(&s.db), [0, 1]);
    drop(sidecar);
    verify_says(&s, 1, "changed since it was sealed");
}

#[test]
fn lines_keep_coming_through_a_rename_rotation_in_order() {
    let s = setup_with("", PLAIN);
    append_text(&s.ledger, "{\"n\":0}\n{\"n\":1}\n");
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("2 events", || mirrored_seqs(&s.db).len() == 2);
    let rotated = s.dir.join("app.jsonl.1");
    std::fs::rename(&s.ledger, &rotated).unwrap();
    append_text(&rotated, "{\"n\":2}\n");
    append_text(&s.ledger, "{\"n\":3}\n");
    sidecar.eventually("4 events", || mirrored_seqs(&s.db).len() == 4);
    let payloads: Vec<String> = rows(&s).into_iter().map(|r| r.3).collect();
    assert_eq!(
        payloads,
        [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]
    );
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

#[test]
fn a_ledger_mirrored_as_sealed_is_not_taken_on_as_plain() {
    let s = setup("");
    let mut w = ledgertail::producer::Writer::new(&s.ledger);
    append(&mut w, 0, 3);
    assert!(replay(&s).status.success());
    let config = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("{config}format = \"plain\"\n")).unwrap();
    let out = replay(&s);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        show(&out).contains("holds it as a sealed ledger"),
        "{}",
        show(&out)
    );
    assert!(show(&out).contains("hint:"), "{}", show(&out));
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(mirrored_seqs(&s.db), [0, 1, 2]);
}

fn payload_column(s: &Setup) -> Vec<String> {
    rows(s).into_iter().map(|r| r.3).collect()
}

#[test]
fn sigkill_of_replay_on_a_plain_log_loses_and_adopts_twice_nothing() {
    let s = setup_with("", PLAIN);
    let n = 40_000;
    let text: String = (0..n)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(200)))
        .collect();
    append_text(&s.ledger, &text);
    let mut kills = 0;
    for delay in [30u64, 60, 90, 120, 150, 200, 250, 300] {
        let mut child = bin()
            .args(["replay", "--no-progress", "--config"])
            .arg(&s.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        // A prefix, in order, each line once.
        let got = payload_column(&s);
        for (i, p) in got.iter().enumerate() {
            assert!(p.starts_with(&format!("{{\"n\":{i},")), "row {i}: {p}");
        }
    }
    assert!(kills > 0, "every replay finished before its kill");
    assert!(replay(&s).status.success());
    assert_eq!(mirrored_seqs(&s.db).len(), n);
    verify_exact(&s);
}

#[test]
fn copytruncate_of_a_plain_log_keeps_every_line_once() {
    let s = setup_with("", PLAIN);
    append_text(&s.ledger, "{\"n\":0}\n{\"n\":1}\n");
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("2 events", || mirrored_seqs(&s.db).len() == 2);
    append_text(&s.ledger, "{\"n\":2}\n");
    copytruncate(&s.ledger, &s.dir.join("app.jsonl.1"));
    append_text(&s.ledger, "{\"n\":3}\n");
    sidecar.eventually("4 events", || mirrored_seqs(&s.db).len() >= 4);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        payload_column(&s),
        [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]
    );
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

#[test]
fn files_rotated_while_the_sidecar_was_down_are_read_in_order_once() {
    let s = setup_with("", PLAIN);
    append_text(&s.ledger, "{\"n\":0}\n{\"n\":1}\n");
    assert!(replay(&s).status.success());
    // Two renames while it is down: app.jsonl -> .2 (via .1), a file that
    // was never read -> .1, and a new live file.
    append_text(&s.ledger, "{\"n\":2}\n");
    std::fs::rename(&s.ledger, s.dir.join("app.jsonl.1")).unwrap();
    append_text(&s.ledger, "{\"n\":3}\n");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::rename(s.dir.join("app.jsonl.1"), s.dir.join("app.jsonl.2")).unwrap();
    std::fs::rename(&s.ledger, s.dir.join("app.jsonl.1")).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    append_text(&s.ledger, "{\"n\":4}\n");
    let out = replay(&s);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        payload_column(&s),
        [
            r#"{"n":0}"#,
            r#"{"n":1}"#,
            r#"{"n":2}"#,
            r#"{"n":3}"#,
            r#"{"n":4}"#
        ]
    );
    verify_exact(&s);
}

/// `sed -i`: an edited copy renamed over the file.
fn sed_in_place(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let tmp = path.with_extension("sedtmp");
    std::fs::write(&tmp, text.replace(from, to)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_rotated_plain_file_edited_with_sed_is_named_by_verify() {
    for (from, to) in [("bravo", "BRAVO"), ("alpha", "ALPHA-LONGER")] {
        let s = setup_with("", PLAIN);
        append_text(
            &s.ledger,
            "{\"msg\":\"alpha\"}\n{\"msg\":\"bravo\"}\n{\"msg\":\"charlie\"}\n",
        );
        assert!(replay(&s).status.success());
        let rotated = s.dir.join("app.jsonl.1");
        std::fs::rename(&s.ledger, &rotated).unwrap();
        append_text(&s.ledger, "{\"msg\":\"delta\"}\n");
        assert!(replay(&s).status.success());
        verify_exact(&s);
        // A new inode at the rotated name; its first line changed too in
        // the second case (its offsets shift: only the third line is where
        // it was... none, so only the length tells).
        sed_in_place(&rotated, from, to);
        let out = with_config("verify", &s.config, &["--db", s.db.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{from}: {}", show(&out));
        assert!(
            show(&out).contains("changed since it was sealed")
                || show(&out).contains("mismatched 1"),
            "{from}: {}",
            show(&out)
        );
    }
}

#[test]
fn rotated_files_deleted_by_the_rotation_are_archived_not_rewritten() {
    let s = setup_with("parity_interval_secs = 1\n", PLAIN);
    append_text(&s.ledger, "{\"n\":0}\n{\"n\":1}\n");
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("2 events", || mirrored_seqs(&s.db).len() == 2);
    // logrotate `rotate 1`, twice: each rotation renames the live file to
    // .1 (dropping the old .1) and creates a new live file.
    for n in [2, 3] {
        let rotated = s.dir.join("app.jsonl.1");
        let _ = std::fs::remove_file(&rotated);
        std::fs::rename(&s.ledger, &rotated).unwrap();
        append_text(&s.ledger, &format!("{{\"n\":{n}}}\n"));
        sidecar.eventually("the new line", || mirrored_seqs(&s.db).len() == n + 1);
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        count(&s.db, "SELECT count(*) FROM checkpoints WHERE halted = 1"),
        0,
        "{}",
        sidecar.log_text()
    );
    assert!(sidecar.stop().success());
    let out = with_config("verify", &s.config, &["--db", s.db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(show(&out).contains("archived 2"), "{}", show(&out));
}

#[test]
fn a_line_inserted_before_the_read_position_halts_and_nothing_is_adopted_twice() {
    let s = setup_with("", PLAIN);
    append_text(&s.ledger, "{\"n\":0}\n{\"n\":1}\n");
    assert!(replay(&s).status.success());
    // The same inode, rewritten with a line in front (offsets shift).
    let text = std::fs::read_to_string(&s.ledger).unwrap();
    std::fs::write(
        &s.ledger,
        format!("{{\"n\":\"forged\"}}\n{text}{{\"n\":2}}\n"),
    )
    .unwrap();
    let out = replay(&s);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("rewritten"), "{}", show(&out));
    assert_eq!(mirrored_seqs(&s.db), [0, 1]);
    let out = with_config("verify", &s.config, &["--db", s.db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}

#[test]
fn an_edited_copy_over_a_rotated_file_is_not_adopted_again_at_the_next_rotation() {
    let s = setup_with("", PLAIN);
    append_text(&s.ledger, "{\"msg\":\"a\"}\n{\"msg\":\"b\"}\n");
    assert!(replay(&s).status.success());
    let one = s.dir.join("app.jsonl.1");
    std::fs::rename(&s.ledger, &one).unwrap();
    append_text(&s.ledger, "{\"msg\":\"c\"}\n");
    assert!(replay(&s).status.success());
    // sed -i on the rotated file; its first line changes length.
    sed_in_place(&one, "\"a\"", "\"a-longer\"");
    // The next rotation, numbered as logrotate numbers: .1 -> .2, live -> .1.
    std::fs::rename(&one, s.dir.join("app.jsonl.2")).unwrap();
    std::fs::rename(&s.ledger, &one).unwrap();
    append_text(&s.ledger, "{\"msg\":\"d\"}\n");
    let _ = replay(&s);
    let payloads = payload_column(&s);
    assert!(
        !payloads.iter().any(|p| p.contains("a-longer")),
        "the edited copy was adopted as new events: {payloads:?}"
    );
    assert_eq!(
        payloads.iter().filter(|p| p.contains("\"b\"")).count(),
        1,
        "{payloads:?}"
    );
    verify_says(&s, 1, "changed since it was sealed");
}

#[test]
fn a_copy_that_is_not_read_is_reported_once_while_the_ledger_waits() {
    let s = setup_with("", PLAIN);
    append_text(&s.ledger, "{\"msg\":\"a\"}\n{\"msg\":\"b\"}\n");
    assert!(replay(&s).status.success());
    // An edited copy of the read file, never read, beside it.
    std::fs::write(
        s.dir.join("app.jsonl.1"),
        "{\"msg\":\"A\"}\n{\"msg\":\"b\"}\n",
    )
    .unwrap();
    // The live file changed in place before its read position: halted,
    // so every tick looks at the files again.
    let mut bytes = std::fs::read(&s.ledger).unwrap();
    let n = bytes.len();
    bytes[n - 4] = b'B';
    std::fs::write(&s.ledger, &bytes).unwrap();
    let sidecar = Sidecar::start(&s.config);
    std::thread::sleep(Duration::from_millis(1500));
    let log = sidecar.stop_with_log();
    let said = log.matches("not read: this file").count();
    assert_eq!(said, 1, "{log}");
}

#[test]
fn a_sign_key_signs_every_adopted_event_and_verify_needs_only_the_public_key() {
    let s = setup_with("", &format!("{PLAIN}sign_key = \"adopt.key\"\n"));
    let made = run(bin().args(["keygen", "--out"]).arg(s.dir.join("adopt.key")));
    let trust_line = String::from_utf8(made.stdout).unwrap();
    append_text(
        &s.ledger,
        "{\"msg\":\"a\"}\n{\"msg\":\"b\"}\n{\"msg\":\"c\"}\n",
    );
    assert!(replay(&s).status.success());
    let signed = count(
        &s.db,
        "SELECT count(*) FROM events WHERE key_id = 'adopt' AND length(sig) = 88",
    );
    assert_eq!(signed, 3);
    verify_says(&s, 0, "OK");
    // An auditor without the key file trusts the public key.
    std::fs::rename(s.dir.join("adopt.key"), s.dir.join("elsewhere.key")).unwrap();
    let config = std::fs::read_to_string(&s.config).unwrap();
    let config = config.replacen(
        "[[ledger]]",
        &format!("[keys]\n{trust_line}\n[[ledger]]"),
        1,
    );
    std::fs::write(&s.config, config).unwrap();
    verify_says(&s, 0, "OK");
    // A signature that is not the key's is found.
    let c = rusqlite::Connection::open(&s.db).unwrap();
    let other: String = c
        .query_row("SELECT sig FROM events WHERE seq = 0", [], |r| r.get(0))
        .unwrap();
    c.execute("UPDATE events SET sig = ?1 WHERE seq = 1", [other])
        .unwrap();
    drop(c);
    verify_says(&s, 1, "signature");
    // The sidecar itself does not adopt unsigned when its key is gone.
    let out = replay(&s);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        show(&out).contains("sign_key") && show(&out).contains("hint:"),
        "{}",
        show(&out)
    );
}

#[test]
fn signing_mistakes_in_the_configuration_are_clear_errors_that_adopt_nothing() {
    let refused = |ledger: &str, extra: &str, said: &str| {
        let s = setup_with(extra, ledger);
        std::fs::write(s.dir.join("bad.key"), "not a key\n").unwrap();
        make_sidecar_key(&s);
        append_text(&s.ledger, "{\"msg\":\"a\"}\n");
        let out = replay(&s);
        assert_eq!(out.status.code(), Some(2), "{ledger}: {}", show(&out));
        assert!(
            show(&out).contains(said) && show(&out).contains("hint:"),
            "{ledger}: {}",
            show(&out)
        );
        assert_eq!(mirrored_seqs(&s.db), Vec::<i64>::new());
    };
    refused("sign_key = \"adopt.key\"\n", "", "is sealed");
    refused(
        &format!("{PLAIN}sign_key = \"bad.key\"\n"),
        "",
        "ledger.sign_key",
    );
    refused(
        &format!("{PLAIN}signatures = \"required\"\n"),
        "[keys]\nother = \"PCA797dqp5WotrmDjVcY7sgabYRwEJz/iYOOzvoK7Sc=\"\n",
        "no sign_key",
    );
    refused(
        &format!("{PLAIN}sign_key = \"adopt.key\"\n"),
        "[keys]\napp-sidecar = \"PCA797dqp5WotrmDjVcY7sgabYRwEJz/iYOOzvoK7Sc=\"\n",
        "gives another public key",
    );
}

#[test]
fn a_second_copytruncate_onto_a_deleted_copys_name_is_not_taken_for_an_edit() {
    let s = setup_with("", PLAIN);
    append_text(&s.ledger, "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
    assert!(replay(&s).status.success());
    // Line 3 is read from the copy, so the mirror records that file.
    append_text(&s.ledger, "{\"n\":3}\n");
    copytruncate(&s.ledger, &s.dir.join("app.jsonl.1"));
    append_text(&s.ledger, "{\"n\":4}\n{\"n\":5}\n");
    assert!(replay(&s).status.success());
    // The next rotation deletes that copy and puts a copy of the live
    // file (its lines come later) under its name.
    copytruncate(&s.ledger, &s.dir.join("app.jsonl.1"));
    append_text(&s.ledger, "{\"n\":6}\n");
    let out = replay(&s);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(mirrored_seqs(&s.db), (0..7).collect::<Vec<i64>>());
    // Lines 0 to 3 went with the deleted copy: archived, not rewritten.
    let said = verify_says(&s, 0, "OK");
    assert!(said.contains("archived 4"), "{said}");
}

/// A plain ledger `app` whose sidecar signs with `adopt.key` (id
/// `app-sidecar`), with `extra` at the top of its configuration.
fn signed_plain_setup(extra: &str) -> Setup {
    let s = setup_with(extra, &format!("{PLAIN}sign_key = \"adopt.key\"\n"));
    make_sidecar_key(&s);
    s
}

/// `ledgertail keygen` of the sidecar's key `adopt.key` (id `app-sidecar`).
fn make_sidecar_key(s: &Setup) {
    let made = run(bin()
        .args(["keygen", "--key-id", "app-sidecar", "--out"])
        .arg(s.dir.join("adopt.key")));
    assert!(made.status.success(), "{}", show(&made));
}

/// `n` plain lines numbered from `from`, with a stack trace's line (not
/// JSON) after the first.
fn log_lines(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| {
            let trace = if i == from {
                "  at main (app.js:1)\n"
            } else {
                ""
            };
            format!("{{\"time\":\"2026-12-07T10:00:00Z\",\"level\":\"info\",\"n\":{i}}}\n{trace}")
        })
        .collect()
}

#[test]
fn an_adopted_ledger_ships_to_postgresql_signed_and_verifies_there() {
    let Some(pg) = pg::Pg::start_or_skip("adopted ledger shipping") else {
        return;
    };
    let s = signed_plain_setup(&pg::postgres_table(&pg, "host-a", ""));
    append_text(&s.ledger, &log_lines(0, 40));
    let out = pg::replay(&s, &pg);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    append_text(&s.ledger, &log_lines(40, 20));
    let out = pg::replay(&s, &pg);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // The central chain is the mirror's, each row signed by the sidecar.
    let mirror: Vec<(u64, String)> = {
        let c = db(&s.db);
        let mut stmt = c
            .prepare("SELECT seq, hash FROM events WHERE ledger = 'app' ORDER BY seq")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)));
        rows.unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(mirror.len(), 60);
    assert_eq!(pg::central_chain(&pg, "host-a", "app"), mirror);
    let signed = pg.number(
        "SELECT count(*) FROM ledgertail.events WHERE key_id = 'app-sidecar' AND sig IS NOT NULL",
    );
    assert_eq!(signed, 60);
    // An auditor checks the central rows, the sidecar's key trusted.
    let out = bin()
        .args(["verify", "--postgres", &pg.url(pg::SUPERUSER, "")])
        .args(["--config"])
        .arg(&s.config)
        .env("LEDGERTAIL_POSTGRES_PASSWORD", pg::SUPERUSER_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn a_proof_of_an_adopted_event_verifies_here_and_in_go() {
    let s = signed_plain_setup("[tlog]\nkey = \"tlog.key\"\n");
    let made = run(bin().arg("keygen").arg("--out").arg(s.dir.join("tlog.key")));
    assert!(made.status.success(), "{}", show(&made));
    append_text(&s.ledger, &log_lines(0, 300));
    assert!(replay(&s).status.success());
    let out = with_config("checkpoint", &s.config, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let vkey = String::from_utf8_lossy(&out.stderr)
        .rsplit("verifier key: ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let proof = s.dir.join("p.tlog-proof");
    let out = with_config(
        "prove",
        &s.config,
        &[
            "--ledger",
            "app",
            "--seq",
            "123",
            "--out",
            proof.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = run(bin().args(["verify-proof", "--vkey", &vkey]).arg(&proof));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // The proof carries the adopted event: its payload is the line's object.
    let text = std::fs::read_to_string(&proof).unwrap();
    let event = {
        use base64::Engine as _;
        let extra = text.lines().nth(1).unwrap().trim_start_matches("extra ");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(extra)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    };
    assert!(
        event.contains("\"n\":123") && event.contains("\"key_id\":\"app-sidecar\""),
        "{event}"
    );
    if gocheck::go_checker().is_some() {
        let out = gocheck::go(&["inclusion".as_ref(), vkey.as_ref(), proof.as_os_str()]);
        assert!(out.status.success(), "Go: {}", show(&out));
    }
}
