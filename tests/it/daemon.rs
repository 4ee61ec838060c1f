//! `ledgertail run` as operators run it: the real binary following real
//! files into a real SQLite database, on a free port, stopped by signals.
//!
//! Every test starts its own daemon on `127.0.0.1:0` and learns the port
//! from the JSON start-up log line.

use crate::common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::lines::*;
use common::*;
use ledgertail::producer::{KeyFile, Writer};

#[test]
fn live_appends_are_mirrored_in_order_exactly_once() {
    let s = setup("");
    let sidecar = Sidecar::start(&s.config);
    let mut w = Writer::new(&s.ledger);
    let mut last = 0;
    for batch in 0..50 {
        last = append(&mut w, batch * 10, 10);
        std::thread::sleep(Duration::from_millis(5));
    }
    eventually("500 events mirrored", || mirrored_seqs(&s.db).len() == 500);
    assert_eq!(last, 499);
    assert_eq!(mirrored_seqs(&s.db), (0..500).collect::<Vec<i64>>());
    let payload: String = db(&s.db)
        .query_row(
            "SELECT payload FROM events WHERE ledger='app' AND seq=123",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(payload, r#"{"i":123,"note":"event number 123"}"#);
    assert_eq!(
        sidecar.metric("ledgertail_events_mirrored_total{ledger=\"app\"}"),
        Some(500.0)
    );
    assert_eq!(
        sidecar.metric("ledgertail_mirror_head_seq{ledger=\"app\"}"),
        Some(499.0)
    );
    assert_eq!(
        sidecar.metric("ledgertail_end_to_end_seconds_count{ledger=\"app\"}"),
        Some(500.0)
    );
    assert_eq!(sidecar.get("/readyz").0, 200);
    assert_eq!(sidecar.get("/healthz").0, 200);
    // Quiet when healthy: no warning, no error.
    let log = sidecar.log_text();
    assert!(
        !log.contains("\"level\":\"WARN\"") && !log.contains("\"level\":\"ERROR\""),
        "{log}"
    );
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

#[test]
fn a_partial_line_waits_for_its_newline_across_a_restart() {
    let s = setup("");
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 3);
    // The next event, sealed elsewhere, written in two halves.
    let other = s.dir.join("other.jsonl");
    std::fs::copy(&s.ledger, &other).unwrap();
    append(&mut Writer::new(&other), 3, 1);
    let full = std::fs::read(&other).unwrap();
    let line = &full[std::fs::metadata(&s.ledger).unwrap().len() as usize..];
    let (first, rest) = line.split_at(line.len() / 2);

    let sidecar = Sidecar::start(&s.config);
    eventually("3 events", || mirrored_seqs(&s.db).len() == 3);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&s.ledger)
        .unwrap()
        .write_all(first)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mirrored_seqs(&s.db).len(), 3, "a partial line was mirrored");
    assert!(sidecar.stop().success());
    let offset: i64 = count(
        &s.db,
        "SELECT file_offset FROM checkpoints WHERE ledger='app'",
    );
    assert_eq!(
        offset as usize,
        full.len() - line.len(),
        "the checkpoint passed the partial line"
    );

    let sidecar = Sidecar::start(&s.config);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(mirrored_seqs(&s.db).len(), 3);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&s.ledger)
        .unwrap()
        .write_all(rest)
        .unwrap();
    eventually("the completed line mirrored", || {
        mirrored_seqs(&s.db) == vec![0, 1, 2, 3]
    });
    assert_eq!(count(&s.db, "SELECT count(*) FROM quarantine"), 0);
    assert!(sidecar.stop().success());
}

#[test]
fn fifty_rotations_under_a_steady_producer_keep_exact_parity() {
    let s = setup("");
    let sidecar = Sidecar::start(&s.config);
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (ledger, done) = (s.ledger.clone(), done.clone());
        std::thread::spawn(move || {
            let mut w = Writer::new(&ledger);
            let mut next = 0;
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                last = append(&mut w, next, 3);
                next += 3;
                std::thread::sleep(Duration::from_millis(1));
            }
            last
        })
    };
    for n in 0..50 {
        std::thread::sleep(Duration::from_millis(40));
        rotate(&s.ledger, n);
    }
    done.store(true, Ordering::Relaxed);
    let last = producer.join().unwrap() as i64;
    sidecar.eventually("every event mirrored", || {
        mirrored_seqs(&s.db).last() == Some(&last)
    });
    assert_eq!(mirrored_seqs(&s.db), (0..=last).collect::<Vec<i64>>());
    assert_eq!(count(&s.db, "SELECT count(*) FROM quarantine"), 0);
    assert_eq!(
        sidecar.metric("ledgertail_halted{ledger=\"app\"}"),
        Some(0.0)
    );
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

#[test]
fn an_old_line_altered_in_place_shows_as_a_parity_mismatch_and_halts() {
    let s = setup("parity_interval_secs = 1");
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 40);
    let sidecar = Sidecar::start(&s.config);
    eventually("40 events", || mirrored_seqs(&s.db).len() == 40);
    eventually("a clean parity check", || {
        sidecar
            .metric("ledgertail_parity_last_check_timestamp_seconds{ledger=\"app\"}")
            .is_some_and(|t| t > 0.0)
    });
    assert_eq!(
        sidecar.metric("ledgertail_parity_mismatched{ledger=\"app\"}"),
        Some(0.0)
    );
    // Change one digit of event 5's payload in place (one byte written
    // where it stands: the file neither shrinks nor grows).
    let text = std::fs::read_to_string(&s.ledger).unwrap();
    let at = text.find("event number 5\"").unwrap() + "event number ".len();
    std::os::unix::fs::FileExt::write_at(
        &std::fs::OpenOptions::new()
            .write(true)
            .open(&s.ledger)
            .unwrap(),
        b"6",
        at as u64,
    )
    .unwrap();
    eventually("the mismatch reported", || {
        sidecar.metric("ledgertail_parity_mismatched{ledger=\"app\"}") == Some(1.0)
    });
    eventually("the mismatch logged", || {
        sidecar.log_text().contains("parity does not hold")
    });
    // Bytes already mirrored changed: the ledger halts as `rewritten`.
    eventually("halted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    let (code, body) = sidecar.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("rewritten") && body.contains("seq 5"),
        "{body}"
    );
    drop(sidecar);
}

#[test]
fn a_fork_halts_the_ledger_and_readyz_says_why() {
    let s = setup("");
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 5);
    // A different event 3, sealed on a copy of the first three lines.
    let text = std::fs::read_to_string(&s.ledger).unwrap();
    let fork_file = s.dir.join("fork.jsonl");
    std::fs::write(
        &fork_file,
        text.lines()
            .take(3)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    Writer::new(&fork_file)
        .append("test", "{\"forked\":true}")
        .unwrap();
    let fork_line = std::fs::read_to_string(&fork_file)
        .unwrap()
        .lines()
        .nth(3)
        .unwrap()
        .to_owned();

    let sidecar = Sidecar::start(&s.config);
    eventually("5 events", || mirrored_seqs(&s.db).len() == 5);
    assert_eq!(sidecar.get("/readyz").0, 200);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&s.ledger)
        .unwrap()
        .write_all(format!("{fork_line}\n").as_bytes())
        .unwrap();
    eventually("halted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    let (status, body) = sidecar.get("/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("app") && body.contains("fork"), "{body}");
    assert_eq!(
        sidecar.metric("ledgertail_events_quarantined_total{ledger=\"app\",reason=\"fork\"}"),
        Some(1.0)
    );
    // Halted means nothing more is mirrored.
    append(&mut w, 5, 2);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(mirrored_seqs(&s.db).len(), 5);
    assert!(sidecar.stop().success());
}

#[test]
fn sigkill_during_live_ingestion_ten_times_then_exact_parity() {
    let s = setup("");
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (ledger, done) = (s.ledger.clone(), done.clone());
        std::thread::spawn(move || {
            let mut w = Writer::new(&ledger);
            let (mut next, mut last) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                last = append(&mut w, next, 20);
                next += 20;
            }
            last
        })
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    println!("seed {seed}");
    let mut rng = seed;
    for _ in 0..10 {
        let sidecar = Sidecar::start(&s.config);
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(100 + (rng >> 33) % 400));
        sidecar.kill();
    }
    done.store(true, Ordering::Relaxed);
    let last = producer.join().unwrap() as i64;
    let sidecar = Sidecar::start(&s.config);
    eventually("every event mirrored after the kills", || {
        mirrored_seqs(&s.db).last() == Some(&last)
    });
    assert_eq!(mirrored_seqs(&s.db), (0..=last).collect::<Vec<i64>>());
    assert_eq!(count(&s.db, "SELECT count(*) FROM quarantine"), 0);
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

#[test]
fn sigkill_inside_rotations_ten_times_then_exact_parity() {
    let s = setup("");
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (ledger, done) = (s.ledger.clone(), done.clone());
        std::thread::spawn(move || {
            let mut w = Writer::new(&ledger);
            let (mut next, mut last) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                last = append(&mut w, next, 7);
                next += 7;
                std::thread::sleep(Duration::from_millis(1));
            }
            last
        })
    };
    let rotator = {
        let (ledger, done) = (s.ledger.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(30));
                rotate(&ledger, n);
                n += 1;
            }
            n
        })
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    println!("seed {seed}");
    let mut rng = seed;
    for _ in 0..10 {
        let sidecar = Sidecar::start(&s.config);
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(100 + (rng >> 33) % 400));
        sidecar.kill();
    }
    done.store(true, Ordering::Relaxed);
    let last = producer.join().unwrap() as i64;
    let rotations = rotator.join().unwrap();
    assert!(rotations > 20, "{rotations} rotations");
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("every event mirrored after the kills", || {
        mirrored_seqs(&s.db).last() == Some(&last)
    });
    assert_eq!(mirrored_seqs(&s.db), (0..=last).collect::<Vec<i64>>());
    // Not even a gap halted it on the way (a file missed by a listing
    // during a renumbering would have).
    {
        let c = db(&s.db);
        let rows: Vec<String> = c
            .prepare("SELECT verdict || ' ' || q.file_id || ' ' || coalesce(f.path, '?') || ' ' || file_offset || ' ' || coalesce(seq, -1) || ' ' || detail FROM quarantine q LEFT JOIN files f ON f.file_id = q.file_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            rows.is_empty(),
            "no line refused: {rows:?}\n{}",
            sidecar.log_text()
        );
    }
    assert_eq!(
        sidecar.metric("ledgertail_halted{ledger=\"app\"}"),
        Some(0.0)
    );
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

#[test]
fn sigterm_commits_in_flight_and_exits_zero_losing_nothing() {
    let s = setup("");
    let mut w = Writer::new(&s.ledger);
    let sidecar = Sidecar::start(&s.config);
    append(&mut w, 0, 3000);
    std::thread::sleep(Duration::from_millis(20));
    let status = sidecar.stop();
    assert_eq!(status.code(), Some(0));
    // Whatever was committed is a clean prefix, and the checkpoint agrees.
    let seqs = mirrored_seqs(&s.db);
    assert_eq!(seqs, (0..seqs.len() as i64).collect::<Vec<i64>>());
    if let Some(&head) = seqs.last() {
        assert_eq!(
            count(&s.db, "SELECT head_seq FROM checkpoints WHERE ledger='app'"),
            head
        );
    }
    let sidecar = Sidecar::start(&s.config);
    eventually("the rest mirrored after restart", || {
        mirrored_seqs(&s.db).len() == 3000
    });
    assert_eq!(mirrored_seqs(&s.db), (0..3000).collect::<Vec<i64>>());
    assert!(sidecar.stop().success());
}

#[test]
fn sighup_with_a_new_key_mirrors_the_unknown_key_lines_and_lifts_the_halt() {
    let s = setup("");
    let key_path = s.dir.join("k1.key");
    let key = KeyFile::generate("k1").unwrap();
    key.save_new(&key_path).unwrap();
    let mut unsigned = Writer::new(&s.ledger);
    append(&mut unsigned, 0, 3);
    let mut signed = Writer::new(&s.ledger).with_key(KeyFile::load(&key_path).unwrap());
    append(&mut signed, 3, 3);
    append(&mut unsigned, 6, 2);

    let sidecar = Sidecar::start(&s.config);
    // 0..=2 mirrored; 3..=5 unknown_key; 6 is then seq_gap: halt.
    eventually("halted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    assert_eq!(mirrored_seqs(&s.db), vec![0, 1, 2]);
    assert_eq!(
        sidecar
            .metric("ledgertail_events_quarantined_total{ledger=\"app\",reason=\"unknown_key\"}"),
        Some(3.0)
    );
    let (code, ready) = sidecar.get("/readyz");
    assert_eq!(code, 503);
    // The halt names its cause, not only the gap: in /readyz, the log and
    // `status`.
    let cause = "seq 3 was quarantined as unknown_key (key_id 'k1' is not trusted): trust the key";
    assert!(ready.contains(cause), "{ready}");
    assert!(sidecar.log_text().contains(cause), "{}", sidecar.log_text());
    let status = bin().args(["status", "--db"]).arg(&s.db).output().unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(cause),
        "{}",
        show(&status)
    );

    let config = std::fs::read_to_string(&s.config).unwrap();
    let with_key = config.replace(
        "[[ledger]]",
        &format!("[keys]\n{}\n\n[[ledger]]", key.trust_line()),
    );
    std::fs::write(&s.config, with_key).unwrap();
    sidecar.signal(libc::SIGHUP);
    eventually("every event mirrored after the reload", || {
        mirrored_seqs(&s.db) == (0..8).collect::<Vec<i64>>()
    });
    eventually("halt lifted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(0.0)
    });
    assert_eq!(sidecar.get("/readyz").0, 200);
    assert_eq!(
        count(
            &s.db,
            "SELECT count(*) FROM quarantine WHERE resolved_at IS NULL"
        ),
        0,
        "re-judged rows are marked resolved"
    );
    assert_eq!(
        count(
            &s.db,
            "SELECT count(*) FROM quarantine WHERE resolved_at IS NOT NULL"
        ),
        4
    );
    let signed_rows = count(&s.db, "SELECT count(*) FROM events WHERE key_id = 'k1'");
    assert_eq!(signed_rows, 3);
    // The lifted halt is kept: what, and how it was lifted.
    let (verdict, how): (String, String) = db(&s.db)
        .query_row(
            "SELECT verdict, lifted_how FROM halts WHERE ledger = 'app' AND lifted_at IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(verdict, "seq_gap");
    assert!(how.contains("trusted keys"), "{how}");
    assert!(sidecar.stop().success());
}

#[test]
fn a_halt_after_a_line_quarantined_earlier_names_that_line_and_what_lifts_it() {
    // The Quick start's path: the sidecar runs, a signed event with an
    // untrusted key arrives (quarantined, committed), then a plain one.
    let s = setup("");
    let key_path = s.dir.join("producer.key");
    KeyFile::generate("producer")
        .unwrap()
        .save_new(&key_path)
        .unwrap();
    let mut unsigned = Writer::new(&s.ledger);
    append(&mut unsigned, 0, 1);
    let sidecar = Sidecar::start(&s.config);
    eventually("seq 0 mirrored", || mirrored_seqs(&s.db) == vec![0]);
    let mut signed = Writer::new(&s.ledger).with_key(KeyFile::load(&key_path).unwrap());
    append(&mut signed, 1, 1);
    eventually("seq 1 quarantined", || {
        count(
            &s.db,
            "SELECT count(*) FROM quarantine WHERE verdict = 'unknown_key'",
        ) == 1
    });
    append(&mut unsigned, 2, 1);
    eventually("halted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    let (_, ready) = sidecar.get("/readyz");
    assert!(
        ready.contains("seq 2 after head 0; seq 1 was quarantined as unknown_key (key_id 'producer' is not trusted): trust the key"),
        "{ready}"
    );
    assert!(ready.contains("then reload with SIGHUP"), "{ready}");
    assert!(sidecar.stop().success());
}

#[test]
fn a_plain_json_line_is_logged_as_not_a_sealed_event_with_how_to_write_one() {
    let s = setup("");
    append(&mut Writer::new(&s.ledger), 0, 1);
    let sidecar = Sidecar::start(&s.config);
    eventually("seq 0 mirrored", || mirrored_seqs(&s.db) == vec![0]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&s.ledger)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"order\":5}\n").unwrap();
    sidecar.eventually("the line is logged", || {
        sidecar.log_text().contains(r#""verdict":"malformed""#)
    });
    let log = sidecar.log_text();
    assert!(!log.contains(r#""seq":-1"#), "{log}");
    assert!(log.contains(r#""detail":"missing member seq""#), "{log}");
    assert!(log.contains("not a sealed event"), "{log}");
    assert!(log.contains("ledgertail append"), "{log}");
    assert!(sidecar.stop().success());
}

#[test]
fn metrics_carry_every_contract_family_and_pass_promtool() {
    let s = setup("");
    append(&mut Writer::new(&s.ledger), 0, 10);
    let sidecar = Sidecar::start(&s.config);
    eventually("10 events", || mirrored_seqs(&s.db).len() == 10);
    let (status, body) = sidecar.get("/metrics");
    assert_eq!(status, 200);
    for family in [
        "ledgertail_events_read_total",
        "ledgertail_events_mirrored_total",
        "ledgertail_events_quarantined_total",
        "ledgertail_ledger_head_seq",
        "ledgertail_mirror_head_seq",
        "ledgertail_lag_bytes",
        "ledgertail_lag_events",
        "ledgertail_parity_missing_in_sqlite",
        "ledgertail_parity_missing_in_jsonl",
        "ledgertail_parity_mismatched",
        "ledgertail_parity_last_check_timestamp_seconds",
        "ledgertail_halted",
        "ledgertail_commit_duration_seconds",
        "ledgertail_batch_events",
        "ledgertail_end_to_end_seconds",
        "ledgertail_build_info",
        "ledgertail_anchor_seq",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{body}"
        );
    }
    // Every ledgertail_ sample but build_info carries the ledger label.
    for line in body.lines().filter(|l| l.starts_with("ledgertail_")) {
        assert!(
            line.starts_with("ledgertail_build_info") || line.contains("ledger=\"app\""),
            "{line}"
        );
    }
    assert_eq!(
        sidecar.metric("ledgertail_events_read_total{ledger=\"app\"}"),
        Some(10.0)
    );
    assert_eq!(
        sidecar.metric("ledgertail_anchor_seq{ledger=\"app\"}"),
        Some(0.0)
    );

    // Bad requests do not hurt it.
    assert_eq!(sidecar.get("/nope").0, 404);
    let mut junk = TcpStream::connect(&sidecar.addr).unwrap();
    junk.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut idle = TcpStream::connect(&sidecar.addr).unwrap();
    idle.write_all(b"GET /metrics HT").unwrap();
    assert_eq!(sidecar.get("/healthz").0, 200);

    promtool_check_metrics(&body);
    drop((junk, idle));
    assert!(sidecar.stop().success());
}

#[test]
fn a_locked_database_is_retried_and_reported_then_mirroring_resumes() {
    let s = setup("");
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 5);
    let sidecar = Sidecar::start(&s.config);
    eventually("5 events", || mirrored_seqs(&s.db).len() == 5);
    // Another writer holds the write lock longer than the busy timeout.
    let blocker = rusqlite::Connection::open(&s.db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    append(&mut w, 5, 5);
    eventually("/readyz reports the trouble", || {
        let (status, body) = sidecar.get("/readyz");
        status == 503 && body.contains("app")
    });
    assert!(
        sidecar
            .metric("ledgertail_commit_failures_total{ledger=\"app\"}")
            .unwrap()
            >= 1.0
    );
    assert_eq!(mirrored_seqs(&s.db).len(), 5);
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    eventually("mirroring resumed", || mirrored_seqs(&s.db).len() == 10);
    eventually("ready again", || sidecar.get("/readyz").0 == 200);
    assert!(
        sidecar
            .metric("ledgertail_worker_restarts_total{ledger=\"app\"}")
            .unwrap()
            >= 1.0
    );
    assert!(sidecar.stop().success());
    verify_exact(&s);
}

#[test]
fn a_ledger_that_does_not_exist_yet_is_waited_for() {
    let s = setup("");
    let sidecar = Sidecar::start(&s.config);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sidecar.get("/readyz").0, 200);
    append(&mut Writer::new(&s.ledger), 0, 4);
    eventually("4 events", || mirrored_seqs(&s.db).len() == 4);
    assert!(sidecar.stop().success());
}

#[test]
fn several_ledgers_in_one_process_each_keep_their_own_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        "db = \"m.db\"\npoll_interval_millis = 100\n[[ledger]]\nname = \"a\"\npath = \"a.jsonl\"\n[[ledger]]\nname = \"b\"\npath = \"sub/b.jsonl\"\n",
    )
    .unwrap();
    let sidecar = Sidecar::start(&config);
    // Ledger b's folder does not exist yet: it is waited for too.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::create_dir(dir.join("sub")).unwrap();
    append(&mut Writer::new(dir.join("a.jsonl")), 0, 7);
    append(&mut Writer::new(dir.join("sub/b.jsonl")), 0, 3);
    let db_path = dir.join("m.db");
    eventually("both ledgers mirrored", || {
        db_path.exists()
            && count(&db_path, "SELECT count(*) FROM events WHERE ledger='a'") == 7
            && count(&db_path, "SELECT count(*) FROM events WHERE ledger='b'") == 3
    });
    // The gauges follow each commit a moment after its rows show.
    sidecar.eventually("both heads in the metrics", || {
        sidecar.metric("ledgertail_mirror_head_seq{ledger=\"a\"}") == Some(6.0)
            && sidecar.metric("ledgertail_mirror_head_seq{ledger=\"b\"}") == Some(2.0)
    });
    assert!(sidecar.stop().success());
}

#[test]
fn a_full_disk_is_retried_and_reported_then_mirroring_resumes() {
    let s = setup("");
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 5);
    // The sidecar may write files of at most 400 kB: its database fills up
    // (a new mirror is 16 pages of 16 KiB, the verifiable log's tables
    // included).
    let sidecar = Sidecar::start_with(&s.config, |cmd| {
        use std::os::unix::process::CommandExt;
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 400_000,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    eventually("5 events", || mirrored_seqs(&s.db).len() == 5);
    append(&mut w, 5, 3000);
    sidecar.eventually("the full disk reported", || {
        let (status, body) = sidecar.get("/readyz");
        status == 503 && body.contains("disk")
    });
    assert!(
        sidecar
            .metric("ledgertail_commit_failures_total{ledger=\"app\"}")
            .unwrap()
            >= 1.0
    );
    assert!(sidecar.log_text().contains("\"level\":\"ERROR\""));
    // Space comes back.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    let rc = unsafe {
        libc::prlimit(
            sidecar.child.id() as i32,
            libc::RLIMIT_FSIZE,
            &unlimited,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    eventually("mirroring resumed", || mirrored_seqs(&s.db).len() == 3005);
    eventually("ready again", || sidecar.get("/readyz").0 == 200);
    assert!(sidecar.stop().success());
    // Commits rolled back after the tree's edge grew in memory: the next
    // ones must have loaded it again (verify --db recomputes the tree).
    verify_exact(&s);
}

#[test]
fn a_second_signal_exits_at_once_and_a_spent_grace_period_exits_non_zero() {
    // A commit that cannot finish: another writer holds the lock (the
    // busy timeout is 5 s), so the stop waits on the batch in flight.
    for (second_signal, grace, expected) in [(true, 30, 128 + libc::SIGTERM), (false, 1, 1)] {
        let s = setup(&format!("shutdown_grace_secs = {grace}").replace("\n", ""));
        let config = std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("shutdown_grace_secs = 10\n", "");
        std::fs::write(&s.config, config).unwrap();
        let mut w = Writer::new(&s.ledger);
        append(&mut w, 0, 3);
        let sidecar = Sidecar::start(&s.config);
        eventually("3 events", || mirrored_seqs(&s.db).len() == 3);
        let blocker = rusqlite::Connection::open(&s.db).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        append(&mut w, 3, 3);
        std::thread::sleep(Duration::from_millis(500));
        sidecar.signal(libc::SIGTERM);
        if second_signal {
            // A person insisting: later than the same request delivered
            // twice (see the next test).
            std::thread::sleep(Duration::from_millis(1000));
            sidecar.signal(libc::SIGTERM);
        }
        let mut sidecar = sidecar;
        let status = wait_exit(&mut sidecar.child);
        assert_eq!(status.code(), Some(expected), "{}", sidecar.log_text());
        blocker.execute_batch("ROLLBACK").unwrap();
        drop(blocker);
        // Still safe: the batch rolled back and is mirrored after a restart.
        assert_eq!(mirrored_seqs(&s.db), vec![0, 1, 2]);
        let sidecar = Sidecar::start(&s.config);
        eventually("all 6 after restart", || mirrored_seqs(&s.db).len() == 6);
        assert!(sidecar.stop().success());
    }
}

#[test]
fn one_stop_request_delivered_twice_at_once_still_commits_what_is_in_flight() {
    // As `timeout` does: SIGTERM to the child, then to its process group.
    let s = setup("");
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 3);
    let sidecar = Sidecar::start(&s.config);
    eventually("3 events", || mirrored_seqs(&s.db).len() == 3);
    let blocker = rusqlite::Connection::open(&s.db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    append(&mut w, 3, 3);
    std::thread::sleep(Duration::from_millis(500));
    sidecar.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(20));
    sidecar.signal(libc::SIGTERM);
    // The batch in flight waits for the lock; then it commits.
    std::thread::sleep(Duration::from_millis(1000));
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    let mut sidecar = sidecar;
    let status = wait_exit(&mut sidecar.child);
    let log = sidecar.exited_log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
    // The batch in flight committed (a forced exit rolls it back: 3 rows).
    assert!(mirrored_seqs(&s.db).len() > 3, "{:?}", mirrored_seqs(&s.db));
}

#[test]
fn sighup_with_a_new_policy_and_log_level_mirrors_the_unsigned_lines() {
    let s = setup("");
    let key = KeyFile::generate("k1").unwrap();
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "[[ledger]]",
        &format!(
            "[keys]\n{}\n\n[[ledger]]\nsignatures = \"required\"",
            key.trust_line()
        ),
    );
    std::fs::write(&s.config, &config).unwrap();
    append(&mut Writer::new(&s.ledger), 0, 4);
    let sidecar = Sidecar::start_with(&s.config, |cmd| {
        cmd.env_remove("RUST_LOG");
    });
    sidecar.eventually("4 unsigned lines quarantined", || {
        sidecar.metric("ledgertail_events_quarantined_total{ledger=\"app\",reason=\"unsigned\"}")
            == Some(4.0)
    });
    assert!(mirrored_seqs(&s.db).is_empty());
    std::fs::write(
        &s.config,
        config
            .replace(
                "signatures = \"required\"",
                "signatures = \"verify-if-present\"",
            )
            .replace("db = ", "log_level = \"debug\"\ndb = "),
    )
    .unwrap();
    sidecar.signal(libc::SIGHUP);
    sidecar.eventually("the unsigned lines mirrored", || {
        mirrored_seqs(&s.db) == vec![0, 1, 2, 3]
    });
    sidecar.eventually("the log level reloaded", || {
        sidecar.log_text().contains("log level now")
    });
    assert_eq!(
        count(
            &s.db,
            "SELECT count(*) FROM quarantine WHERE resolved_at IS NULL"
        ),
        0
    );
    // A config that does not load changes nothing, and says so.
    std::fs::write(&s.config, "db = [").unwrap();
    sidecar.signal(libc::SIGHUP);
    sidecar.eventually("the bad config refused", || {
        sidecar.log_text().contains("reload refused")
    });
    append(&mut Writer::new(&s.ledger), 4, 1);
    sidecar.eventually("still mirroring", || mirrored_seqs(&s.db).len() == 5);
    assert!(sidecar.stop().success());
}

#[test]
fn a_reload_that_adds_tlog_names_it_as_waiting_for_a_restart() {
    let s = setup("");
    append(&mut Writer::new(&s.ledger), 0, 1);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("mirrored", || mirrored_seqs(&s.db).len() == 1);
    let key = s.dir.join("tlog.key");
    KeyFile::generate("tlog").unwrap().save_new(&key).unwrap();
    let mut config = std::fs::read_to_string(&s.config).unwrap();
    config.push_str("\n[tlog]\nkey = \"tlog.key\"\n");
    std::fs::write(&s.config, config).unwrap();
    sidecar.signal(libc::SIGHUP);
    sidecar.eventually("the reload names what waits for a restart", || {
        let log = sidecar.log_text();
        log.contains("restart ledgertail for them") && log.contains("[tlog]")
    });
    assert!(sidecar.stop().success());
}

#[test]
fn a_run_whose_address_is_taken_exits_2_and_creates_no_database() {
    let s = setup("");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = bin()
        .args(["run", "--listen", &addr, "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains(&addr), "{}", show(&out));
    assert!(!s.db.exists(), "a failed start left {}", s.db.display());
}

#[test]
fn a_truncated_ledger_halts_as_rewritten() {
    let s = setup("");
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 10);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("10 events", || mirrored_seqs(&s.db).len() == 10);
    let len = std::fs::metadata(&s.ledger).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&s.ledger)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    sidecar.eventually("halted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    let (status, body) = sidecar.get("/readyz");
    assert_eq!(status, 503);
    assert!(
        body.contains("rewritten") && body.contains("shrank"),
        "{body}"
    );
    assert!(sidecar.stop().success());
    let verdict: String = db(&s.db)
        .query_row(
            "SELECT halt_verdict FROM checkpoints WHERE ledger='app'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(verdict, "rewritten");
}

#[test]
fn a_live_file_cut_to_zero_bytes_halts_naming_copytruncate() {
    let s = setup("");
    append(&mut Writer::new(&s.ledger), 0, 10);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("10 events", || mirrored_seqs(&s.db).len() == 10);
    // What copytruncate does when its copy is compressed or moved away.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&s.ledger)
        .unwrap()
        .set_len(0)
        .unwrap();
    sidecar.eventually("halted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    let (_, body) = sidecar.get("/readyz");
    assert!(body.contains("shrank to 0 bytes"), "{body}");
    assert!(body.contains("copytruncate: put its copy back"), "{body}");
    assert!(sidecar.stop().success());
}

#[test]
fn a_mirror_on_a_frozen_disk_makes_readyz_fail_and_the_lag_count_what_waits() {
    let Some(disk) = common::freeze::FreezableDisk::mount("the frozen-disk test") else {
        return;
    };
    let s = setup(&format!(
        "ready_max_lag_events = 100\ndb = \"{}\"",
        disk.path().join("mirror.db").display()
    ));
    let config =
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replacen("db = \"mirror.db\"\n", "", 1);
    std::fs::write(&s.config, config).unwrap();
    let db = disk.path().join("mirror.db");
    let sidecar = Sidecar::start(&s.config);
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 10);
    sidecar.eventually("ten mirrored", || mirrored_seqs(&db).len() == 10);
    let frozen = disk.freeze();
    append(&mut w, 10, 500);
    sidecar.eventually("unready with the reason", || {
        let (code, body) = sidecar.get("/readyz");
        code == 503 && body.contains("has not returned")
    });
    sidecar.eventually("the lag counts what waits", || {
        sidecar.metric("ledgertail_lag_events{ledger=\"app\"}") == Some(500.0)
    });
    frozen.thaw();
    sidecar.eventually("all mirrored", || mirrored_seqs(&db).len() == 510);
    sidecar.eventually("ready again", || sidecar.get("/readyz").0 == 200);
    assert!(sidecar.stop().success());
}

/// The bytes each parity check of `sidecar` read, from its debug log.
fn parity_reads(sidecar: &Sidecar) -> Vec<u64> {
    sidecar
        .log_text()
        .lines()
        .filter(|l| l.contains("parity holds"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["read_bytes"].as_u64())
        .collect()
}

#[test]
fn after_a_restart_parity_goes_on_where_it_was_instead_of_reading_everything() {
    let s = setup("parity_interval_secs = 1");
    append(&mut Writer::new(&s.ledger).without_fsync(), 0, 3000);
    let debug = |cmd: &mut std::process::Command| {
        cmd.env("RUST_LOG", "info,ledgertail::daemon::parity=debug");
    };
    let sidecar = Sidecar::start_with(&s.config, debug);
    sidecar.eventually("a full check", || !parity_reads(&sidecar).is_empty());
    let full = parity_reads(&sidecar)[0];
    // Idle, with a check due every second: nothing changed, nothing read.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        parity_reads(&sidecar).len(),
        1,
        "{:?}",
        parity_reads(&sidecar)
    );
    // An idle ledger keeps where parity stands at the stop (a write of its
    // own would look like an edit of the database to the next check).
    assert_eq!(
        count(&s.db, "SELECT count(*) FROM meta WHERE key = 'parity:app'"),
        0
    );
    assert!(sidecar.stop().success());
    assert_eq!(
        count(&s.db, "SELECT count(*) FROM meta WHERE key = 'parity:app'"),
        1
    );
    append(&mut Writer::new(&s.ledger).without_fsync(), 3000, 10);
    let sidecar = Sidecar::start_with(&s.config, debug);
    sidecar.eventually("a check after the restart", || {
        !parity_reads(&sidecar).is_empty()
    });
    let first = parity_reads(&sidecar)[0];
    assert!(
        first * 10 < full,
        "the first check after a restart read {first} bytes, a full one {full}"
    );
    assert!(sidecar.stop().success());
}

#[test]
fn a_halted_ledger_still_shows_what_waits_behind_the_halt() {
    let s = setup("");
    let lines = chain(10);
    write_lines(&s.ledger, &lines[..5]);
    // 5 and 6 missing: 7 halts the ledger; 7–9 wait behind the halt.
    append_lines(&s.ledger, &lines[7..]);
    let waiting: u64 = lines[7..].iter().map(|l| l.len() as u64 + 1).sum();
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("halted", || {
        sidecar.metric("ledgertail_halted{ledger=\"app\"}") == Some(1.0)
    });
    sidecar.eventually("the lag behind the halt", || {
        sidecar.metric("ledgertail_lag_events{ledger=\"app\"}") == Some(5.0)
            && sidecar.metric("ledgertail_lag_bytes{ledger=\"app\"}") == Some(waiting as f64)
    });
    assert_eq!(
        sidecar.metric("ledgertail_ledger_head_seq{ledger=\"app\"}"),
        Some(9.0)
    );
    assert!(sidecar.stop().success());
}
