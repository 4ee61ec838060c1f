//! The verifiable log (contract §7) through the real binary: checkpoints,
//! proofs and their offline check, checked again by an implementation no
//! one here wrote (Go's x/mod `note` and `tlog`, `tests/interop/`), and the
//! faults an auditor must see: a rebuilt mirror of a rewritten ledger, a
//! restored old mirror, a tampered checkpoint, a proof for another tree.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::gocheck::{go, go_checker};
use common::{append, bin, setup_with, show, Setup};
use ledgertail::producer::Writer;

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    out
}

/// A ledger `app` with a log key and an origin.
fn tlog_setup() -> Setup {
    let s = setup_with(
        "[tlog]\nkey = \"tlog.key\"\n",
        "origin = \"example.com/ledgertail/app\"\n",
    );
    ok(bin().arg("keygen").arg("--out").arg(s.dir.join("tlog.key")));
    s
}

fn replay(s: &Setup) {
    ok(bin()
        .args(["replay", "--no-progress", "--config"])
        .arg(&s.config));
}

/// `checkpoint`: the note on stdout and the verifier key.
fn checkpoint(s: &Setup) -> (String, String) {
    let out = ok(bin().args(["checkpoint", "--config"]).arg(&s.config));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let vkey = err
        .rsplit("verifier key: ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    (String::from_utf8(out.stdout).unwrap(), vkey)
}

/// `checkpoint` refused (exit 1): its stderr.
fn refused_checkpoint(s: &Setup) -> String {
    let out = bin()
        .args(["checkpoint", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn prove(s: &Setup, args: &[&str], out: &Path) {
    ok(bin()
        .args(["prove", "--ledger", "app", "--config"])
        .arg(&s.config)
        .args(args)
        .arg("--out")
        .arg(out));
}

fn verify_proof(vkey: &str, file: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["verify-proof", "--vkey", vkey])
        .args(extra)
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn checkpoints_and_proofs_verify_here_and_in_go_for_trees_of_many_sizes() {
    let s = tlog_setup();
    let checker = go_checker();
    let mut w = Writer::new(&s.ledger).without_fsync();
    let mut have = 0usize;
    let mut previous: Option<(u64, PathBuf)> = None;
    for size in [1usize, 2, 3, 255, 256, 257, 1000, 100_000] {
        append(&mut w, have, size - have);
        have = size;
        replay(&s);
        let (note, vkey) = checkpoint(&s);
        assert!(
            note.starts_with(&format!("example.com/ledgertail/app\n{size}\n")),
            "{note}"
        );
        let cp = s.dir.join(format!("cp-{size}"));
        std::fs::write(&cp, &note).unwrap();
        let last = size as u64 - 1;
        for seq in [0, last / 2, last.saturating_sub(1), last] {
            let file = s.dir.join(format!("p-{size}-{seq}.tlog-proof"));
            prove(&s, &["--seq", &seq.to_string()], &file);
            let out = verify_proof(&vkey, &file, &[]);
            assert_eq!(out.status.code(), Some(0), "{}", show(&out));
            if checker.is_some() {
                let out = go(&["inclusion".as_ref(), vkey.as_ref(), file.as_os_str()]);
                assert!(
                    out.status.success(),
                    "Go, size {size} seq {seq}: {}",
                    show(&out)
                );
            }
        }
        if let Some((old, old_cp)) = &previous {
            let file = s.dir.join(format!("c-{old}-{size}"));
            prove(&s, &["--consistency", "--from", &old.to_string()], &file);
            if checker.is_some() {
                let out = go(&[
                    "consistency".as_ref(),
                    vkey.as_ref(),
                    old_cp.as_os_str(),
                    file.as_os_str(),
                ]);
                assert!(out.status.success(), "Go, {old} -> {size}: {}", show(&out));
            }
        }
        previous = Some((size as u64, cp));
    }
}

#[test]
fn a_proof_whose_event_is_spelt_other_than_its_canonical_line_is_invalid() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let s = tlog_setup();
    append(&mut Writer::new(&s.ledger).without_fsync(), 0, 10);
    replay(&s);
    let (_, vkey) = checkpoint(&s);
    let file = s.dir.join("p.tlog-proof");
    prove(&s, &["--seq", "7"], &file);
    let text = std::fs::read_to_string(&file).unwrap();
    let extra = text.lines().nth(1).unwrap().trim_start_matches("extra ");
    let event = String::from_utf8(b64.decode(extra).unwrap()).unwrap();
    // Each spelling hashes to the same event; only the canonical one is
    // the event's line.
    let seq_first = {
        let without = event.replacen(",\"seq\":7", "", 1);
        format!("{{\"seq\":7,{}", &without[1..])
    };
    let respelt = [
        ("an escape", event.replacen("\"type\"", "\"typ\\u0065\"", 1)),
        (
            "a number spelling",
            event.replacen("\"i\":7", "\"i\":7.0", 1),
        ),
        ("spacing", event.replacen(",", ", ", 1)),
        ("member order", seq_first),
    ];
    for (what, line) in respelt {
        assert_ne!(line, event, "{what}: not re-spelt");
        let f = s.dir.join("respelt.tlog-proof");
        std::fs::write(&f, text.replace(extra, &b64.encode(&line))).unwrap();
        let out = verify_proof(&vkey, &f, &[]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", show(&out));
        assert!(
            show(&out).contains("canonical line"),
            "{what}: {}",
            show(&out)
        );
    }
    assert_eq!(verify_proof(&vkey, &file, &[]).status.code(), Some(0));
}

#[test]
fn a_proof_tampered_with_or_for_another_tree_is_invalid() {
    let s = tlog_setup();
    append(&mut Writer::new(&s.ledger).without_fsync(), 0, 40);
    replay(&s);
    let (_, vkey) = checkpoint(&s);
    let file = s.dir.join("p.tlog-proof");
    prove(&s, &["--seq", "7"], &file);
    let text = std::fs::read_to_string(&file).unwrap();
    let cases = [
        ("index", text.replace("index 7\n", "index 8\n")),
        ("size", text.replace("\n40\n", "\n41\n")),
        ("a proof hash", {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            let h = &mut lines[3];
            let c = if h.starts_with('A') { "B" } else { "A" };
            h.replace_range(0..1, c);
            lines.join("\n") + "\n"
        }),
        ("the event", {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD;
            let extra = text.lines().nth(1).unwrap().trim_start_matches("extra ");
            let event = String::from_utf8(b64.decode(extra).unwrap()).unwrap();
            let forged = event.replace("event number 7", "event number 9");
            text.replace(extra, &b64.encode(forged))
        }),
    ];
    for (what, forged) in cases {
        let f = s.dir.join("forged.tlog-proof");
        std::fs::write(&f, &forged).unwrap();
        let out = verify_proof(&vkey, &f, &[]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("INVALID"),
            "{what}: {}",
            show(&out)
        );
        // The Go checker takes the leaf from the event's `hash` member (it
        // does not canonicalize JSON): a forged payload under the old hash
        // is only caught by recomputing the hash, as verify-proof does.
        if go_checker().is_some() && what != "the event" {
            assert!(
                !go(&["inclusion".as_ref(), vkey.as_ref(), f.as_os_str()])
                    .status
                    .success(),
                "Go accepted a forged {what}"
            );
        }
    }
    // Another log's key, and a witness policy the proof does not meet.
    let other = tlog_setup();
    append(&mut Writer::new(&other.ledger).without_fsync(), 0, 1);
    replay(&other);
    let (_, other_vkey) = checkpoint(&other);
    assert_eq!(verify_proof(&other_vkey, &file, &[]).status.code(), Some(1));
    let witness = ledgertail::ledger::note::VerifierKey::of(
        "witness.example/w",
        ledgertail::ledger::note::COSIGNATURE_V1,
        &ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
    )
    .to_string();
    let out = verify_proof(&vkey, &file, &["--witness", &witness]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 of the 1 witnesses"),
        "{}",
        show(&out)
    );
    assert_eq!(verify_proof("junk", &file, &[]).status.code(), Some(2));
}

#[test]
fn a_restored_old_mirror_and_a_rebuilt_rewritten_one_are_refused_with_the_evidence() {
    let s = tlog_setup();
    let mut w = Writer::new(&s.ledger).without_fsync();
    append(&mut w, 0, 10);
    replay(&s);
    checkpoint(&s);
    let backup = s.dir.join("backup.db");
    std::fs::copy(&s.db, &backup).unwrap();
    append(&mut w, 10, 10);
    replay(&s);
    let (note20, _) = checkpoint(&s);
    // The old copy is put back: its tree (10) is behind what was signed (20).
    std::fs::copy(&backup, &s.db).unwrap();
    let err = refused_checkpoint(&s);
    assert!(
        err.contains("refusing to sign") && err.contains("fewer than the checkpoint of size 20"),
        "{err}"
    );
    assert!(err.contains("restored"), "{err}");
    // Once the restored mirror catches up it is the same log again.
    replay(&s);
    let (again, _) = checkpoint(&s);
    assert_eq!(
        again, note20,
        "the same tree gets the checkpoint already signed"
    );

    // The ledger is rewritten (same length, other payloads) and the mirror
    // rebuilt from it: the signer remembers the old root at size 20.
    std::fs::remove_file(&s.ledger).unwrap();
    std::fs::remove_file(&s.db).unwrap();
    let mut w = Writer::new(&s.ledger).without_fsync();
    append(&mut w, 1000, 25);
    replay(&s);
    let err = refused_checkpoint(&s);
    assert!(
        err.contains("at size 20 the mirror's tree has root"),
        "{err}"
    );
    assert!(err.contains("rewritten"), "{err}");
    assert_eq!(
        common::count(&s.db, "SELECT count(*) FROM events"),
        25,
        "nothing mirrored is lost"
    );
}

#[test]
fn signed_checkpoints_are_append_only_and_a_state_folder_catches_a_split_view() {
    let s = tlog_setup();
    append(&mut Writer::new(&s.ledger).without_fsync(), 0, 5);
    replay(&s);
    let (_, vkey) = checkpoint(&s);
    let c = rusqlite::Connection::open(&s.db).unwrap();
    assert!(c
        .execute("UPDATE tlog_checkpoints SET size = 6", [])
        .is_err());
    assert!(c.execute("DELETE FROM tlog_checkpoints", []).is_err());
    drop(c);
    let proof = s.dir.join("p.tlog-proof");
    prove(&s, &["--seq", "2"], &proof);
    let state = s.dir.join("auditor-state");
    let state_arg = ["--state", state.to_str().unwrap()];
    assert_eq!(
        verify_proof(&vkey, &proof, &state_arg).status.code(),
        Some(0)
    );

    // The same key signs another tree of size 5 (a log that forked its
    // history): the auditor's state folder shows it, with both notes.
    let fork = tlog_setup();
    std::fs::copy(s.dir.join("tlog.key"), fork.dir.join("tlog.key.same")).unwrap();
    std::fs::remove_file(fork.dir.join("tlog.key")).unwrap();
    std::fs::rename(fork.dir.join("tlog.key.same"), fork.dir.join("tlog.key")).unwrap();
    append(&mut Writer::new(&fork.ledger).without_fsync(), 100, 5);
    replay(&fork);
    checkpoint(&fork);
    let forked = fork.dir.join("f.tlog-proof");
    prove(&fork, &["--seq", "2"], &forked);
    let out = verify_proof(&vkey, &forked, &state_arg);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SECURITY") && stdout.contains("two different trees of size 5"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("example.com/ledgertail/app\n5\n").count(),
        2,
        "both notes: {stdout}"
    );

    // A consistency proof moves the state on; one from the wrong size says how to make the right one.
    append(&mut Writer::new(&s.ledger).without_fsync(), 5, 7);
    replay(&s);
    checkpoint(&s);
    let cons = s.dir.join("c");
    prove(&s, &["--consistency", "--from", "5"], &cons);
    let out = verify_proof(&vkey, &cons, &state_arg);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("now holds size 12"));
    prove(&s, &["--consistency", "--from", "3"], &cons);
    let out = verify_proof(&vkey, &cons, &state_arg);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--from 12"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_mirror_from_before_the_tree_gets_it_built_on_open_and_proves_the_same() {
    let s = tlog_setup();
    append(&mut Writer::new(&s.ledger).without_fsync(), 0, 3000);
    replay(&s);
    let (note, _) = checkpoint(&s);
    // Make it a schema-2 mirror again: no tree, no signed checkpoints.
    let fresh = setup_with(
        "[tlog]\nkey = \"tlog.key\"\n",
        "origin = \"example.com/ledgertail/app\"\n",
    );
    std::fs::copy(&s.ledger, &fresh.ledger).unwrap();
    std::fs::copy(&s.db, &fresh.db).unwrap();
    std::fs::copy(s.dir.join("tlog.key"), fresh.dir.join("tlog.key")).unwrap();
    let c = rusqlite::Connection::open(&fresh.db).unwrap();
    c.execute_batch(
        "DROP TABLE tlog_tiles; DROP TABLE tlog_checkpoints; DROP TABLE tlog_cosignatures; DROP TABLE halts;
         ALTER TABLE checkpoints DROP COLUMN tree_size; ALTER TABLE checkpoints DROP COLUMN tree_root;
         PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(c);
    replay(&fresh);
    assert_eq!(
        common::count(&fresh.db, "PRAGMA user_version"),
        i64::from(ledgertail::mirror::SCHEMA_VERSION)
    );
    assert_eq!(
        common::count(&fresh.db, "SELECT tree_size FROM checkpoints"),
        3000
    );
    let (again, _) = checkpoint(&fresh);
    // Same tree, same root (the signatures differ only if the text does).
    assert_eq!(
        again.lines().take(3).collect::<Vec<_>>(),
        note.lines().take(3).collect::<Vec<_>>()
    );
}
