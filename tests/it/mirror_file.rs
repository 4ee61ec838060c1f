//! The mirror file itself: deleted (with or without its WAL) under a running
//! sidecar, and its mode whatever the umask.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use ledgertail::producer::Writer;

#[test]
fn deleting_the_database_while_running_is_noticed_and_the_mirror_rebuilt() {
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
fn deleting_the_database_and_its_wal_while_running_rebuilds_it() {
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
fn mirror_files_are_not_readable_by_everyone() {
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

fn wal_len(db: &Path) -> u64 {
    std::fs::metadata(format!("{}-wal", db.display())).map_or(0, |m| m.len())
}

#[test]
fn the_wal_a_catch_up_grew_is_given_back_once_the_writer_is_idle() {
    let s = setup("");
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("the mirror is created", || s.db.exists());
    // A reader holding a snapshot keeps the WAL from being reset while
    // the catch-up writes, as an analyst's long query would.
    let reader = rusqlite::Connection::open(&s.db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM checkpoints", [], |r| r.get(0))
        .unwrap();
    let payload = format!("{{\"blob\":\"{}\"}}", "x".repeat(4000));
    let payloads = vec![payload.as_str(); 500];
    let mut w = Writer::new(&s.ledger).without_fsync();
    for _ in 0..6 {
        w.append_batch("big", &payloads).unwrap();
    }
    sidecar.eventually("3000 events mirrored", || {
        mirrored_seqs(&s.db).len() == 3000
    });
    let grown = wal_len(&s.db);
    assert!(
        grown > 8 << 20,
        "the catch-up grew the WAL to {grown} bytes only"
    );
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    sidecar.eventually("the WAL truncated", || wal_len(&s.db) < 1 << 20);
    // Writing goes on as before.
    w.append_batch("big", &payloads[..5]).unwrap();
    sidecar.eventually("3005 events", || mirrored_seqs(&s.db).len() == 3005);
    assert!(sidecar.stop().success());
    verify_exact(&s);
}
