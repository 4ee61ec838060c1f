//! The live parity check (`parity::recheck`) against real files and a real
//! mirror: altered lines, deleted history (archived excluded), rows missing
//! or altered in SQLite.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::common::*;

use ledgertail::config::{FileConfig, Overrides, Settings};
use ledgertail::mirror::{Access, CommitWatch, Durability, Group, Mirror, SharedMirror};
use ledgertail::parity::{recheck, Parity};
use ledgertail::producer::{KeyFile, Writer};
use ledgertail::shipper::{Batching, Shipper};

fn settings(dir: &Path) -> Settings {
    let over = Overrides {
        ledger: Some(dir.join("app.jsonl")),
        db: Some(dir.join("m.db")),
        ..Overrides::default()
    };
    Settings::resolve(&FileConfig::default(), &over, dir).unwrap()
}

fn check(s: &Settings) -> Parity {
    let mirror = Mirror::open(&s.db, Access::ReadOnly).unwrap();
    recheck(&s.ledgers[0], &mirror, &mut |_| true)
        .unwrap()
        .unwrap()
}

/// Three rotated files of 10 events and a live file of 10.
fn mirrored_ledger(dir: &Path) -> Settings {
    let live = dir.join("app.jsonl");
    let mut w = Writer::new(&live).without_fsync();
    for n in 1..=3 {
        for i in 0..10 {
            w.append("t", &format!("{{\"file\":{n},\"i\":{i}}}"))
                .unwrap();
        }
        std::fs::rename(&live, dir.join(format!("app.jsonl.{n}"))).unwrap();
    }
    for i in 0..10 {
        w.append("t", &format!("{{\"file\":4,\"i\":{i}}}")).unwrap();
    }
    let s = settings(dir);
    let mirror = Mirror::open(&s.db, Access::ReadWrite).unwrap();
    let mut shipper = Shipper::new(s.ledgers[0].clone(), mirror, Batching::events(7)).unwrap();
    let report = shipper
        .catch_up(&AtomicBool::new(false), &mut |_| {})
        .unwrap();
    assert_eq!(report.mirrored(), 40);
    s
}

#[test]
fn a_clean_mirror_holds_parity() {
    let dir = tempfile::tempdir().unwrap();
    let s = mirrored_ledger(dir.path());
    let p = check(&s);
    assert!(p.holds(), "{p:?}");
    assert_eq!((p.archived, p.mismatched), (0, 0));
}

#[test]
fn deleted_history_is_missing_in_jsonl_unless_archived() {
    let dir = tempfile::tempdir().unwrap();
    let s = mirrored_ledger(dir.path());
    // The oldest file goes: its events are archived, not missing.
    std::fs::remove_file(dir.path().join("app.jsonl.1")).unwrap();
    let p = check(&s);
    assert!(p.holds(), "{p:?}");
    assert_eq!(p.archived, 10);
    // A file in the middle goes: missing.
    std::fs::remove_file(dir.path().join("app.jsonl.3")).unwrap();
    let p = check(&s);
    assert_eq!(p.missing_in_jsonl, 10, "{p:?}");
    assert_eq!(p.archived, 10);
}

#[test]
fn an_altered_line_and_altered_or_missing_rows_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = mirrored_ledger(dir.path());
    // A line of the second file, one byte changed in place.
    let f2 = dir.path().join("app.jsonl.2");
    let text = std::fs::read_to_string(&f2).unwrap();
    let at = text.find("\"i\":4").unwrap() + 4;
    std::os::unix::fs::FileExt::write_at(
        &std::fs::OpenOptions::new().write(true).open(&f2).unwrap(),
        b"5",
        at as u64,
    )
    .unwrap();
    let p = check(&s);
    assert_eq!(p.mismatched, 1, "{p:?}");
    assert!(
        p.examples[0].detail.contains("app.jsonl.2"),
        "{:?}",
        p.examples
    );

    // In SQLite: one row deleted, one row's payload changed.
    let db = rusqlite::Connection::open(&s.db).unwrap();
    db.execute("DELETE FROM events WHERE seq = 33", []).unwrap();
    db.execute(
        "UPDATE events SET payload = '{\"forged\":1}' WHERE seq = 2",
        [],
    )
    .unwrap();
    let p = check(&s);
    assert_eq!(p.missing_in_sqlite, 1, "{p:?}");
    assert_eq!(p.mismatched, 2, "{p:?}");
    // The head's row deleted too: still counted.
    db.execute("DELETE FROM events WHERE seq = 39", []).unwrap();
    assert_eq!(check(&s).missing_in_sqlite, 2);
}

#[test]
fn the_check_can_be_abandoned_midway() {
    let dir = tempfile::tempdir().unwrap();
    let s = mirrored_ledger(dir.path());
    let mirror = Mirror::open(&s.db, Access::ReadOnly).unwrap();
    let mut lines = 0;
    let out = recheck(&s.ledgers[0], &mirror, &mut |_| {
        lines += 1;
        lines < 5
    })
    .unwrap();
    assert!(out.is_none());
    assert_eq!(lines, 5);
}

#[test]
fn a_history_rewritten_in_sqlite_below_the_oldest_file_is_found() {
    use ledgertail::ledger::event::{seal_line, Draft};
    use ledgertail::ledger::{json, Hash};
    let dir = tempfile::tempdir().unwrap();
    let s = mirrored_ledger(dir.path());
    // The oldest file goes (its rows become archived: only their columns
    // vouch for them), and its rows are rewritten, each hash recomputed.
    std::fs::remove_file(dir.path().join("app.jsonl.1")).unwrap();
    assert!(check(&s).holds());
    let db = rusqlite::Connection::open(&s.db).unwrap();
    let mut prev: Option<Hash> = None;
    for seq in 0..10u64 {
        let payload = json::parse("{\"forged\":true}").unwrap();
        let (_, hash) = seal_line(
            &Draft {
                seq,
                prev_hash: prev,
                ts: "2026-12-01T00:00:00Z",
                event_type: "t",
                id: None,
                payload: &payload,
            },
            None,
        )
        .unwrap();
        db.execute(
            "UPDATE events SET payload = '{\"forged\":true}', hash = ?2, prev_hash = ?3, ts = '2026-12-01T00:00:00Z', type = 't' WHERE seq = ?1",
            rusqlite::params![seq as i64, hash.to_hex(), prev.map(|h| h.to_hex())],
        )
        .unwrap();
        prev = Some(hash);
    }
    // Every forged row is sound on its own; the chain is not: row 10 no
    // longer links, and the anchor is not the one recorded.
    let p = check(&s);
    assert!(!p.holds(), "{p:?}");
    assert_eq!(p.mismatched, 2, "{p:?}");
    let details: Vec<&str> = p.examples.iter().map(|e| e.detail.as_str()).collect();
    assert!(details.iter().any(|d| d.contains("anchor")), "{details:?}");
    assert!(
        details.iter().any(|d| d.contains("does not link")),
        "{details:?}"
    );
}

/// A check after `previous`: its result, what it leaves to the next one,
/// and the bytes it read (lines and rows).
fn check_since(
    s: &Settings,
    previous: Option<&ledgertail::parity::Checked>,
) -> (Parity, Option<ledgertail::parity::Checked>, u64) {
    let mirror = Mirror::open(&s.db, Access::ReadOnly).unwrap();
    let mut bytes = 0;
    let (p, next) = ledgertail::parity::recheck_since(&s.ledgers[0], &mirror, previous, &mut |n| {
        bytes += n;
        true
    })
    .unwrap()
    .unwrap();
    (p, next, bytes)
}

/// Appends `n` events to the live file and mirrors them.
fn grow(s: &Settings, from: usize, n: usize) {
    let mut w = Writer::new(&s.ledgers[0].path).without_fsync();
    for i in from..from + n {
        w.append("t", &format!("{{\"file\":4,\"i\":{i}}}")).unwrap();
    }
    let mirror = Mirror::open(&s.db, Access::ReadWrite).unwrap();
    let mut shipper = Shipper::new(s.ledgers[0].clone(), mirror, Batching::events(100)).unwrap();
    shipper
        .catch_up(&AtomicBool::new(false), &mut |_| {})
        .unwrap();
}

#[test]
fn after_a_clean_check_only_the_live_file_and_new_rows_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = mirrored_ledger(dir.path());
    let (p, checked, full) = check_since(&s, None);
    assert!(p.holds(), "{p:?}");
    grow(&s, 10, 2);
    let (p, checked, incremental) = check_since(&s, checked.as_ref());
    assert!(p.holds(), "{p:?}");
    // The live file's 12 rows of 42, not the three rotated files.
    assert!(incremental * 2 < full, "{incremental} bytes of {full}");
    assert!(checked.is_some());
}

#[test]
fn an_in_place_edit_of_an_unchanged_rotated_file_is_found_by_the_next_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = mirrored_ledger(dir.path());
    let (_, checked, _) = check_since(&s, None);
    grow(&s, 10, 1);
    let (p, checked, _) = check_since(&s, checked.as_ref());
    assert!(p.holds());
    // One byte changed in place in the oldest file, and the ledger goes on.
    let f1 = dir.path().join("app.jsonl.1");
    let text = std::fs::read_to_string(&f1).unwrap();
    let at = text.find("\"i\":3").unwrap() + 4;
    std::os::unix::fs::FileExt::write_at(
        &std::fs::OpenOptions::new().write(true).open(&f1).unwrap(),
        b"9",
        at as u64,
    )
    .unwrap();
    grow(&s, 11, 1);
    let (p, checked, _) = check_since(&s, checked.as_ref());
    assert_eq!(p.mismatched, 1, "{p:?}");
    assert!(
        checked.is_none(),
        "after a difference the next check is full"
    );
}

#[test]
fn a_row_altered_in_sqlite_while_the_files_stand_still_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = mirrored_ledger(dir.path());
    let (_, checked, _) = check_since(&s, None);
    let db = rusqlite::Connection::open(&s.db).unwrap();
    db.execute(
        "UPDATE events SET payload = '{\"file\":1,\"i\":7}' WHERE seq = 5",
        [],
    )
    .unwrap();
    drop(db);
    // Nothing of the ledger moved: only the database can have changed, so
    // the check is full.
    let (p, _, _) = check_since(&s, checked.as_ref());
    assert_eq!(p.mismatched, 1, "{p:?}");
}

#[test]
fn the_rolling_pass_finds_a_row_altered_in_sqlite_within_sixty_checks_while_the_ledger_grows() {
    let dir = tempfile::tempdir().unwrap();
    let s = mirrored_ledger(dir.path());
    let (_, mut checked, full) = check_since(&s, None);
    // Row 5 is in a rotated file that never changes again: only the
    // rolling pass reads it.
    let db = rusqlite::Connection::open(&s.db).unwrap();
    db.execute(
        "UPDATE events SET payload = '{\"file\":1,\"i\":7}' WHERE seq = 5",
        [],
    )
    .unwrap();
    drop(db);
    let mut found = None;
    for i in 0..ledgertail::parity::FULL_EVERY as usize {
        grow(&s, 10 + i, 1);
        let (p, next, bytes) = check_since(&s, checked.as_ref());
        assert!(bytes * 4 < full, "check {i} read {bytes} bytes of {full}");
        if p.mismatched > 0 {
            found = Some(i);
            break;
        }
        checked = next;
    }
    assert!(
        found.is_some(),
        "never found in {} checks",
        ledgertail::parity::FULL_EVERY
    );
}

#[test]
fn a_check_goes_on_from_the_state_kept_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let s = mirrored_ledger(dir.path());
    let (_, checked, full) = check_since(&s, None);
    let text = checked.unwrap().to_text();
    let kept = ledgertail::parity::Checked::from_text(&text).expect("reads back");
    assert_eq!(kept.to_text(), text);
    grow(&s, 10, 1);
    let (p, next, bytes) = check_since(&s, Some(&kept));
    assert!(p.holds(), "{p:?}");
    assert!(next.is_some());
    assert!(
        bytes * 4 < full,
        "{bytes} bytes of {full}: not a full check"
    );
    assert!(ledgertail::parity::Checked::from_text("not json").is_none());
}

#[test]
fn an_in_place_edit_of_the_live_file_that_did_not_grow_is_found_by_the_next_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = mirrored_ledger(dir.path());
    let (_, checked, _) = check_since(&s, None);
    grow(&s, 10, 1);
    let (_, checked, _) = check_since(&s, checked.as_ref());
    let live = &s.ledgers[0].path;
    let text = std::fs::read_to_string(live).unwrap();
    let at = text.find("\"i\":10").unwrap() + 5;
    std::os::unix::fs::FileExt::write_at(
        &std::fs::OpenOptions::new().write(true).open(live).unwrap(),
        b"9",
        at as u64,
    )
    .unwrap();
    let (p, _, _) = check_since(&s, checked.as_ref());
    assert_eq!(p.mismatched, 1, "{p:?}");
    assert!(p.rewrite.is_some(), "{p:?}");
}

/// Two ledgers of one mirror, written through one connection in one group
/// transaction (as `run`'s runner does): the group commits both or, when
/// it never commits, neither, and the ledgers then mirror exactly once.
#[test]
fn a_group_commits_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let mut a = s.ledgers[0].clone();
    let mut b = a.clone();
    a.name = "a".into();
    a.path = dir.path().join("a.jsonl");
    b.name = "b".into();
    b.path = dir.path().join("b.jsonl");
    for (l, n) in [(&a, 5), (&b, 8)] {
        let mut w = Writer::new(&l.path).without_fsync();
        for i in 0..n {
            w.append("t", &format!("{{\"i\":{i}}}")).unwrap();
        }
    }
    let rows = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap()
    };
    let stop = AtomicBool::new(false);
    let staged = |shipper: &mut Shipper, group: &Group| {
        shipper.catch_up_until(&stop, &|| false, &mut |_| {}, Durability::Staged(group))
    };
    // Both ledgers caught up inside one group, not yet committed.
    let both_in_a_group = || {
        let shared = SharedMirror::new(s.db.clone(), CommitWatch::default(), 1);
        let mut sa = Shipper::new(a.clone(), shared.share().unwrap(), Batching::events(2)).unwrap();
        let mut sb = Shipper::new(b.clone(), shared.share().unwrap(), Batching::events(3)).unwrap();
        let group = shared.begin_group().unwrap();
        assert_eq!(staged(&mut sa, &group).unwrap().mirrored(), 5);
        assert_eq!(staged(&mut sb, &group).unwrap().mirrored(), 8);
        (shared, group, sa, sb)
    };
    // A group that is never committed (the process dies): nothing of it.
    drop(both_in_a_group());
    assert_eq!(rows(&s.db), 0, "an uncommitted group leaves nothing");
    // Again, committed: each ledger exactly once, with its checkpoint.
    let (shared, group, mut sa, mut sb) = both_in_a_group();
    group.commit().unwrap();
    assert_eq!(rows(&s.db), 13);
    let base = shared.share().unwrap();
    for (l, head) in [(&a, 4), (&b, 7)] {
        let state = base.state(&l.name).unwrap().unwrap();
        assert_eq!(state.head.map(|h| h.seq), Some(head));
    }
    // A batch refused inside a group (its checkpoint moved under it) is
    // undone alone; the group still commits the rest.
    let mut stale = Shipper::new(a.clone(), base.share(), Batching::events(2)).unwrap();
    let mut w = Writer::new(&a.path).without_fsync();
    w.append("t", "{\"late\":1}").unwrap();
    Writer::new(&b.path)
        .without_fsync()
        .append("t", "{\"late\":2}")
        .unwrap();
    let group = shared.begin_group().unwrap();
    assert_eq!(staged(&mut sa, &group).unwrap().mirrored(), 1);
    assert!(staged(&mut stale, &group).is_err(), "a conflict");
    assert_eq!(staged(&mut sb, &group).unwrap().mirrored(), 1);
    group.commit().unwrap();
    assert_eq!(rows(&s.db), 15);
}

/// Durability is said, never inferred: a batch written to be durable on
/// its own is refused inside a group (it would only have been staged),
/// and a batch staged in another connection's group is refused too.
#[test]
fn a_durable_commit_inside_a_group_and_a_batch_staged_in_another_connections_group_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let ledger = s.ledgers[0].clone();
    let mut w = Writer::new(&ledger.path).without_fsync();
    for i in 0..3 {
        w.append("t", &format!("{{\"i\":{i}}}")).unwrap();
    }
    let stop = AtomicBool::new(false);
    let shared = SharedMirror::new(s.db.clone(), CommitWatch::default(), 1);
    let mut shipper =
        Shipper::new(ledger.clone(), shared.share().unwrap(), Batching::events(2)).unwrap();
    let group = shared.begin_group().unwrap();
    let err = shipper.catch_up(&stop, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("transaction"), "{err}");
    let other = SharedMirror::new(s.db.clone(), CommitWatch::default(), 1);
    let mut elsewhere = Shipper::new(ledger, other.share().unwrap(), Batching::events(2)).unwrap();
    let err = elsewhere
        .catch_up_until(&stop, &|| false, &mut |_| {}, Durability::Staged(&group))
        .unwrap_err();
    assert!(err.to_string().contains("another connection"), "{err}");
    drop(group);
    assert_eq!(shipper.catch_up(&stop, &mut |_| {}).unwrap().mirrored(), 3);
}

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
fn parity_after_a_reload_uses_the_new_signature_policy() {
    let key = KeyFile::generate("k1").unwrap();
    let keys = format!("[keys]\n{}", key.trust_line());
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
fn a_rotation_during_a_slow_parity_check_is_not_a_difference() {
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
