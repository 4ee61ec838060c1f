//! What lies beside a ledger in its folder: a huge unfinished sibling, names
//! that look like archives, a FIFO, symlinks. None hangs, floods memory or
//! is read when it should not be.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::lines::*;
use common::*;
use ledgertail::producer::Writer;

#[test]
fn status_and_append_read_a_huge_unfinished_sibling_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (live, db) = (dir.path().join("app.jsonl"), dir.path().join("m.db"));
    append(&mut Writer::new(&live), 0, 3);
    assert_eq!(on_db_with("replay", &live, &db, &[]).status.code(), Some(0));
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
fn names_that_look_like_archives_are_read_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (live, db) = (dir.path().join("app.jsonl"), dir.path().join("m.db"));
    append(&mut Writer::new(&live), 0, 3);
    std::fs::copy(&live, dir.path().join("app.jsonl.bak")).unwrap();
    let out = on_db_with("replay", &live, &db, &[]);
    let err = text(&out.stderr);
    assert!(
        err.contains("app.jsonl.bak") && err.contains("archive or a copy"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_fifo_beside_the_ledger_hangs_nothing() {
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
fn symlinks_beside_the_ledger_are_never_read() {
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
    let out = on_db_with("replay", &link, &link_dir.path().join("m.db"), &[]);
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
