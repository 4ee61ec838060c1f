//! Crash safety: `replay` of a 100,000-event ledger is killed with SIGKILL
//! at 20+ random instants and restarted each time; in the end the mirror
//! must hold every event exactly once, in order, with the right head, and
//! nothing in quarantine.
//!
//! The seed is printed; set LEDGERTAIL_CRASH_SEED to replay a failure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ledgertail::ledger::Hash;
use ledgertail::producer::Writer;

const EVENTS: usize = 100_000;
const KILLS: usize = 20;

/// A small deterministic generator (no dependency needed for this).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn write_ledger(path: &Path) -> Vec<Hash> {
    let mut writer = Writer::new(path).without_fsync();
    let mut hashes = Vec::with_capacity(EVENTS);
    let payloads: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"n":{i},"user":"u{:05}","note":"crash test payload with some words to make it longer","amount":{}.5}}"#, i * 7 % 100_000, i))
        .collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    for _ in 0..EVENTS / 1000 {
        for a in writer.append_batch("crash.test", &refs).unwrap() {
            hashes.push(a.hash);
        }
    }
    hashes
}

fn replay(ledger: &Path, db: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgertail"));
    cmd.arg("replay")
        .arg("--ledger")
        .arg(ledger)
        .arg("--db")
        .arg(db)
        .arg("--no-progress")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn sigkill_during_replay_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("crash.jsonl");
    let hashes = write_ledger(&ledger);
    assert_eq!(hashes.len(), EVENTS);
    let ledger_len = std::fs::metadata(&ledger).unwrap().len();

    // How long does one uninterrupted replay take on this machine? Kill
    // points are spread over that span.
    let scratch = dir.path().join("timing.db");
    let t = Instant::now();
    let out = replay(&ledger, &scratch).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = t.elapsed();

    let seed = std::env::var("LEDGERTAIL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("seed {seed}, one replay takes {full:?}");
    let mut rng = XorShift(seed);
    let db = dir.path().join("mirror.db");
    // Each run gets a random lifetime up to 1/10 of a full replay (plus
    // start-up), so 20 kills land all over the run, from schema creation
    // to the last batch.
    let span = (full.as_millis() as u64 / 10).max(20);
    let mut kills = 0;
    let mut runs = 0;
    while kills < KILLS {
        runs += 1;
        assert!(
            runs < 500,
            "replay finished before {KILLS} kills could land"
        );
        let mut child = replay(&ledger, &db).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(span) + 5));
        match child.try_wait().unwrap() {
            Some(status) => {
                // Finished before the kill: the mirror is complete; start
                // over from an empty database so kills keep landing mid-run.
                assert!(status.success(), "replay failed on its own: {status}");
                check_exactly_once(&db, &hashes, ledger_len);
                std::fs::remove_file(&db).unwrap();
                let _ = std::fs::remove_file(db.with_extension("db-wal"));
                let _ = std::fs::remove_file(db.with_extension("db-shm"));
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                check_prefix(&db, &hashes);
            }
        }
    }
    let out = replay(&ledger, &db).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_exactly_once(&db, &hashes, ledger_len);
}

/// What a killed replay left: a duplicate-free prefix of the chain whose
/// checkpoint agrees with its rows.
fn check_prefix(db: &Path, hashes: &[Hash]) {
    if !db.exists() {
        return;
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    let has_schema: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'events'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if has_schema == 0 {
        return; // killed before the schema was committed
    }
    let (count, max): (i64, Option<i64>) = conn
        .query_row("SELECT count(*), max(seq) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(max.map_or(0, |m| m + 1), count, "rows are a dense prefix");
    let head: Option<i64> = conn
        .query_row("SELECT head_seq FROM checkpoints", [], |r| r.get(0))
        .unwrap_or(None);
    assert_eq!(head, max, "checkpoint head matches the rows");
    if let Some(m) = max {
        let h: String = conn
            .query_row("SELECT hash FROM events WHERE seq = ?1", [m], |r| r.get(0))
            .unwrap();
        assert_eq!(h, hashes[m as usize].to_hex());
    }
}

fn check_exactly_once(db: &Path, hashes: &[Hash], ledger_len: u64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, hash FROM events ORDER BY seq")
        .unwrap();
    let rows: Vec<(i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), hashes.len(), "every event once");
    for (i, (seq, hash)) in rows.iter().enumerate() {
        assert_eq!(*seq, i as i64);
        assert_eq!(*hash, hashes[i].to_hex(), "seq {seq}");
    }
    let (head, offset, halted): (i64, i64, i64) = conn
        .query_row(
            "SELECT head_seq, file_offset, halted FROM checkpoints",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(head as usize, hashes.len() - 1);
    assert_eq!(halted, 0);
    let quarantined: i64 = conn
        .query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))
        .unwrap();
    assert_eq!(quarantined, 0, "nothing quarantined");
    assert_eq!(
        offset as u64, ledger_len,
        "checkpoint at the end of the ledger"
    );
}

/// One `run` following 1,000 ledgers (each woken by its own file
/// events, stepped by a few runner threads) is killed with SIGKILL while
/// every ledger is being written, three times, and restarted; in the end
/// every ledger holds each of its events exactly once, in order.
#[test]
fn sigkill_of_a_run_with_many_ledgers_loses_and_duplicates_nothing() {
    const LEDGERS: usize = 1000;
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from(
        "db = \"mirror.db\"\nlisten = \"127.0.0.1:0\"\npoll_interval_millis = 200\nlog_level = \"warn\"\n",
    );
    for i in 0..LEDGERS {
        config.push_str(&format!(
            "[[ledger]]\nname = \"l{i}\"\npath = \"ledgers/l{i}.jsonl\"\nsignatures = \"off\"\n"
        ));
    }
    let config_path = dir.path().join("ledgertail.toml");
    std::fs::write(&config_path, config).unwrap();
    std::fs::create_dir_all(dir.path().join("ledgers")).unwrap();
    let db = dir.path().join("mirror.db");
    let mut writers: Vec<Writer> = (0..LEDGERS)
        .map(|i| Writer::new(dir.path().join(format!("ledgers/l{i}.jsonl"))).without_fsync())
        .collect();
    let mut hashes: Vec<Vec<Hash>> = vec![Vec::new(); LEDGERS];
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_ledgertail"))
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut rng = XorShift(0x05ee_d1ed_9e25);
    for round in 0..ROUNDS {
        let mut child = start();
        // Write to every ledger while it runs; kill it in the middle.
        for n in 0..PER_ROUND {
            for (i, w) in writers.iter_mut().enumerate() {
                let payload = format!("{{\"round\":{round},\"n\":{n},\"ledger\":{i}}}");
                hashes[i].push(w.append("e", &payload).unwrap().hash);
            }
            std::thread::sleep(Duration::from_millis(rng.below(150)));
        }
        if round + 1 < ROUNDS {
            child.kill().unwrap(); // SIGKILL, mid-flight
            child.wait().unwrap();
        } else {
            // The last run catches up everything, then is killed as well.
            let deadline = Instant::now() + Duration::from_secs(120);
            let want = (ROUNDS * PER_ROUND) as i64;
            loop {
                let done: i64 = rusqlite::Connection::open(&db)
                    .and_then(|c| {
                        c.busy_timeout(Duration::from_secs(5))?;
                        c.query_row(
                            "SELECT count(*) FROM checkpoints WHERE head_seq = ?1",
                            [want - 1],
                            |r| r.get(0),
                        )
                    })
                    .unwrap_or(0);
                if done == LEDGERS as i64 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{done} of {LEDGERS} ledgers caught up"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    for (i, want) in hashes.iter().enumerate() {
        let mut stmt = conn
            .prepare("SELECT seq, hash FROM events WHERE ledger = ?1 ORDER BY seq")
            .unwrap();
        let rows: Vec<(i64, String)> = stmt
            .query_map([format!("l{i}")], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), want.len(), "ledger l{i}: every event once");
        for (n, (seq, hash)) in rows.iter().enumerate() {
            assert_eq!(*seq, n as i64, "ledger l{i}");
            assert_eq!(*hash, want[n].to_hex(), "ledger l{i} seq {seq}");
        }
    }
    let quarantined: i64 = conn
        .query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))
        .unwrap();
    assert_eq!(quarantined, 0, "nothing quarantined");
}
