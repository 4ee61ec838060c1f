//! The tailer against real files: rotations between two wake-ups, the old
//! file finished through its handle, empty files rotated, partial lines.

use std::io::Write;
use std::path::Path;

use ledgertail::ledger::frame::Frame;
use ledgertail::ledger::{KeyRing, SignaturePolicy};
use ledgertail::producer::Writer;
use ledgertail::tail::{Opened, Refreshed, TailConfig, Tailer};

thread_local! {
    static LAST_SEQ: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

fn config(live: &Path) -> TailConfig {
    TailConfig {
        live: live.to_path_buf(),
        policy: SignaturePolicy::VerifyIfPresent,
        keys: KeyRing::default(),
        max_line_bytes: 1 << 20,
        follow_symlink: false,
        plain_first_seqs: None,
        plain_recorded_lines: None,
    }
}

fn add(live: &Path, from: usize, n: usize) {
    let mut w = Writer::new(live).without_fsync();
    for i in from..from + n {
        w.append("t", &format!("{{\"i\":{i}}}")).unwrap();
    }
}

/// A tailer over the ledger's files from the start of the oldest.
fn open_from_start(cfg: &TailConfig) -> Tailer {
    match Tailer::open(cfg.discover().unwrap(), None, 1 << 20).unwrap() {
        Opened::Ready(t) => *t,
        _ => panic!("not ready"),
    }
}

/// Reads every complete line now available, following rotations the way
/// the shipper does; returns the `i` of each payload (equal to its seq).
fn drain(t: &mut Tailer, cfg: &TailConfig) -> Vec<u64> {
    let mut out = Vec::new();
    // The shipper passes its chain's head; here the seq of the last line
    // read so far (kept across calls, as the shipper's head is).
    let mut head = LAST_SEQ.with(|h| h.get());
    loop {
        match t.next_frame().unwrap() {
            Some((_, Frame::Line { bytes, .. })) => {
                let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                out.push(v["payload"]["i"].as_u64().unwrap());
                head = v["seq"].as_u64();
            }
            Some((_, Frame::TooLong { .. })) => panic!("too long"),
            None => match t.refresh(cfg, head).unwrap() {
                Refreshed::MoreFiles => continue,
                Refreshed::Unchanged => {
                    LAST_SEQ.with(|h| h.set(head));
                    return out;
                }
                Refreshed::CurrentGone => panic!("current file gone"),
            },
        }
    }
}

#[test]
fn several_rotations_between_two_wake_ups_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    let cfg = config(&live);
    add(&live, 0, 3);
    let mut t = open_from_start(&cfg);
    assert_eq!(drain(&mut t, &cfg), vec![0, 1, 2]);

    // Between two wake-ups: the old file grows, is renamed; a new file is
    // written and renamed too; an empty file is created and renamed; and
    // the newest file already has events before the old one is finished.
    add(&live, 3, 2);
    std::fs::rename(&live, dir.path().join("app.jsonl.1")).unwrap();
    add(&live, 5, 2);
    std::fs::rename(&live, dir.path().join("app.jsonl.2")).unwrap();
    std::fs::File::create(&live).unwrap();
    std::fs::rename(&live, dir.path().join("app.jsonl.3")).unwrap();
    add(&live, 7, 3);
    assert_eq!(drain(&mut t, &cfg), vec![3, 4, 5, 6, 7, 8, 9]);

    // The live file is empty when it is rotated: the tailer must not go
    // back to the oldest files (an empty file sorts first).
    std::fs::rename(&live, dir.path().join("app.jsonl.4")).unwrap();
    std::fs::File::create(&live).unwrap();
    assert_eq!(drain(&mut t, &cfg), Vec::<u64>::new());
    std::fs::rename(&live, dir.path().join("app.jsonl.5")).unwrap();
    add(&live, 10, 1);
    assert_eq!(drain(&mut t, &cfg), vec![10]);
    add(&live, 11, 1);
    assert_eq!(drain(&mut t, &cfg), vec![11]);
}

#[test]
fn a_partial_line_is_returned_only_once_complete_even_across_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    let cfg = config(&live);
    add(&live, 0, 1);
    let mut t = open_from_start(&cfg);
    assert_eq!(drain(&mut t, &cfg), vec![0]);
    let other = dir.path().join("other.jsonl");
    std::fs::copy(&live, &other).unwrap();
    add(&other, 1, 1);
    let line =
        std::fs::read(&other).unwrap()[std::fs::metadata(&live).unwrap().len() as usize..].to_vec();
    let (a, b) = line.split_at(10);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&live)
        .unwrap();
    f.write_all(a).unwrap();
    assert_eq!(drain(&mut t, &cfg), Vec::<u64>::new());
    let position = t.position().unwrap();
    assert_eq!(
        position.offset,
        std::fs::metadata(&live).unwrap().len() - a.len() as u64
    );
    f.write_all(b).unwrap();
    std::fs::rename(&live, dir.path().join("app.jsonl.1")).unwrap();
    add(&live, 2, 1);
    assert_eq!(drain(&mut t, &cfg), vec![1, 2]);
}

#[test]
fn a_shrunk_file_or_changed_bytes_behind_the_position_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    let cfg = config(&live);
    add(&live, 0, 3);
    let mut t = open_from_start(&cfg);
    drain(&mut t, &cfg);
    let pos = t.position().unwrap();
    assert_eq!(t.changed_behind(&pos).unwrap(), None);
    let mut bytes = std::fs::read(&live).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 1;
    std::os::unix::fs::FileExt::write_at(
        &std::fs::OpenOptions::new().write(true).open(&live).unwrap(),
        &bytes[last..last + 1],
        last as u64,
    )
    .unwrap();
    assert!(t.changed_behind(&pos).unwrap().unwrap().contains("changed"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&live)
        .unwrap()
        .set_len(10)
        .unwrap();
    assert!(t.changed_behind(&pos).unwrap().unwrap().contains("shrank"));
}

/// logrotate's numbering: `.2` → `.3`, `.1` → `.2`, live → `.1`.
fn renumber(live: &Path, keep: usize) {
    let name = |n: usize| live.with_file_name(format!("app.jsonl.{n}"));
    for n in (1..keep).rev() {
        if name(n).exists() {
            std::fs::rename(name(n), name(n + 1)).unwrap();
        }
    }
    std::fs::rename(live, name(1)).unwrap();
}

#[test]
fn renumbering_rotations_are_followed_by_identity_not_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    let cfg = config(&live);
    add(&live, 0, 2);
    let mut t = open_from_start(&cfg);
    assert_eq!(drain(&mut t, &cfg), vec![0, 1]);
    let mut next = 2;
    let mut expected = Vec::new();
    for round in 0..6 {
        // Several renumberings between two reads.
        for _ in 0..=round % 3 {
            add(&live, next, 2);
            expected.extend([next as u64, next as u64 + 1]);
            next += 2;
            renumber(&live, 9);
        }
        add(&live, next, 1);
        expected.push(next as u64);
        next += 1;
        assert_eq!(drain(&mut t, &cfg), expected, "round {round}");
        expected.clear();
    }
}

#[test]
fn discovery_during_a_renaming_storm_finds_every_file_exactly_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    // 30 rotated files of one event each, and the live file.
    for n in 0..30 {
        add(&live, n, 1);
        std::fs::rename(&live, dir.path().join(format!("app.jsonl.a{n:02}"))).unwrap();
    }
    add(&live, 30, 1);
    let cfg = config(&live);
    let stop = Arc::new(AtomicBool::new(false));
    // Every rotated file moves between two names, one rename at a time,
    // as logrotate's renumbering moves them all at each rotation, and
    // rotations follow each other a few milliseconds apart.
    let storm = {
        let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            let mut renames = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for n in 0..30 {
                    let (a, b) = (
                        dir.join(format!("app.jsonl.a{n:02}")),
                        dir.join(format!("app.jsonl.b{n:02}")),
                    );
                    if std::fs::rename(&a, &b).is_err() {
                        std::fs::rename(&b, &a).unwrap();
                    }
                    renames += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            renames
        })
    };
    for round in 0..40 {
        let files = cfg.discover().unwrap();
        let seqs: Vec<u64> = files.iter().filter_map(|f| f.first_seq).collect();
        assert_eq!(
            seqs,
            (0..=30).collect::<Vec<u64>>(),
            "round {round}: {files:#?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(storm.join().unwrap() > 0);
}
