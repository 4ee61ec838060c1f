//! The periodic parity check's cost: in process, a full check next to an
//! incremental one; and in `run` on a large ledger, the time from a
//! restart to ready and the CPU of a steady ledger (one event a second)
//! while the rolling pass re-reads its slice at every check.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledgertail::mirror::{Access, Mirror};
use ledgertail::producer::{KeyFile, Writer};

use super::{cpu_seconds, generate, payload, replay, stop, Case};

/// The periodic parity check on `n` events in ten files (nine rotated):
/// a full check, then one after ten more events (incremental: the live
/// file and the new rows), unpaced. Prints a table.
pub fn parity_cost(binary: &Path, dir: &Path, n: u64) {
    use ledgertail::config::{FileConfig, Overrides, Settings};
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create dir");
    let live = dir.join("app.jsonl");
    let per_file = (n / 10).max(1);
    let mut w = Writer::new(&live).without_fsync();
    for f in 0..10u64 {
        let payloads: Vec<String> = (0..per_file)
            .map(|i| payload(f * per_file + i, 420))
            .collect();
        for chunk in payloads.chunks(1000) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            w.append_batch("order.created", &refs).expect("generate");
        }
        if f < 9 {
            std::fs::rename(&live, dir.join(format!("app.jsonl.{}", 9 - f))).expect("rotate");
        }
    }
    let db = dir.join("m.db");
    let (_, _) = replay(binary, &live, &db, None);
    let over = Overrides {
        ledger: Some(live.clone()),
        db: Some(db.clone()),
        ..Overrides::default()
    };
    let settings = Settings::resolve(&FileConfig::default(), &over, dir).expect("settings");
    let ledger = &settings.ledgers[0];
    let check = |previous: Option<&ledgertail::parity::Checked>| {
        let mirror = Mirror::open(&db, Access::ReadOnly).expect("open mirror");
        let mut bytes = 0u64;
        let started = Instant::now();
        let (p, next) = ledgertail::parity::recheck_since(ledger, &mirror, previous, &mut |b| {
            bytes += b;
            true
        })
        .expect("check")
        .expect("not abandoned");
        assert!(p.holds(), "parity does not hold in the benchmark: {p:?}");
        (started.elapsed().as_secs_f64(), bytes, next)
    };
    let (full_s, full_b, checked) = check(None);
    let payloads: Vec<String> = (0..10).map(|i| payload(n + i, 420)).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    w.append_batch("order.created", &refs).expect("append");
    let (_, _) = replay(binary, &live, &db, None);
    let (inc_s, inc_b, _) = check(checked.as_ref());
    println!("{} events in 10 files (9 rotated); the check's read rate unbounded here (`parity_max_bytes_per_sec` paces it in `run`).\n", per_file * 10);
    println!("| check | seconds | MiB read (lines and rows) |");
    println!("|---|---|---|");
    println!("| full | {full_s:.2} | {:.1} |", full_b as f64 / 1048576.0);
    println!(
        "| incremental, after 10 more events | {inc_s:.2} | {:.1} |",
        inc_b as f64 / 1048576.0
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The parity check of `run` on a ledger of `n` events in one live file:
/// a first `run` makes the full check (unpaced) and keeps where it stands
/// in the mirror; a second `run` is timed from its start to `/readyz` 200,
/// then its CPU is measured for `watch_secs` while one event a second is
/// appended (the rolling pass reads a sixtieth of the rows per check).
/// Prints a table.
pub fn parity_in_run(binary: &Path, dir: &Path, n: u64, watch_secs: u64, smoke: bool) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create dir");
    let live = dir.join("app.jsonl");
    // Named as `replay --ledger app.jsonl` names it: the same ledger.
    let case = Case {
        name: "app",
        events: n,
        payload_bytes: 420,
        signed: false,
    };
    generate(&live, &case, &KeyFile::generate("bench").expect("key"));
    let db = dir.join("m.db");
    let _ = replay(binary, &live, &db, None);
    // The default interval in a full run; every second in a smoke run.
    let interval = if smoke { 1 } else { 60 };
    let config = |max_rate: u64, port: u16| {
        let path = dir.join("ledgertail.toml");
        std::fs::write(
            &path,
            format!(
                "db = \"m.db\"\nlisten = \"127.0.0.1:{port}\"\nlog_level = \"warn\"\nparity_interval_secs = {interval}\nparity_max_bytes_per_sec = {max_rate}\n[[ledger]]\nname = \"{}\"\npath = \"app.jsonl\"\nsignatures = \"off\"\n",
                case.name
            ),
        )
        .expect("config");
        path
    };
    // The first run's full check, unpaced; where it stands is kept at
    // the stop (the ledger is idle).
    let port = free_port();
    let first = spawn_run(binary, &config(1 << 40, port));
    let started = Instant::now();
    while !parity_checked(port) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let full_s = started.elapsed().as_secs_f64();
    stop(first);
    assert!(
        has_meta(&db, &ledgertail::parity::state_key(case.name)),
        "the first run kept no parity state"
    );
    // The restart, as an operator's config paces it.
    let port = free_port();
    let restart = Instant::now();
    let second = spawn_run(
        binary,
        &config(ledgertail::config::DEFAULT_PARITY_MAX_BYTES_PER_SEC, port),
    );
    while !ready(port) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready_s = restart.elapsed().as_secs_f64();
    let before = cpu_seconds(second.id());
    let mut w = Writer::new(&live);
    let watch = Instant::now();
    let mut i = n;
    while watch.elapsed() < Duration::from_secs(watch_secs) {
        w.append("order.created", &payload(i, 420)).expect("append");
        i += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    let cpu = cpu_seconds(second.id()) - before;
    let per_min = cpu * 60.0 / watch.elapsed().as_secs_f64();
    stop(second);
    let slice = n.div_ceil(u64::from(ledgertail::parity::FULL_EVERY));
    println!("\n{n} events in the live file, a check every {interval} s; the first `run` made the full check (unpaced), the second started on the state it kept in the mirror.\n");
    println!("| full check s | restart to ready s | steady CPU-s/min at 1 event/s | rows re-read per check | full pass within |");
    println!("|---|---|---|---|---|");
    println!(
        "| {full_s:.1} | {ready_s:.2} | {per_min:.3} | {slice} | {} checks ({} s) |",
        ledgertail::parity::FULL_EVERY,
        u64::from(ledgertail::parity::FULL_EVERY) * interval
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn spawn_run(binary: &Path, config: &Path) -> Child {
    Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start run")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn has_meta(db: &Path, key: &str) -> bool {
    Mirror::open(db, Access::ReadOnly)
        .ok()
        .and_then(|m| m.meta(key).ok().flatten())
        .is_some_and(|v| !v.is_empty())
}

/// `GET /readyz` answers 200.
fn ready(port: u16) -> bool {
    get(port, "/readyz").starts_with("HTTP/1.1 200")
}

/// A parity check has finished (its gauge is set).
fn parity_checked(port: u16) -> bool {
    get(port, "/metrics").lines().any(|l| {
        l.starts_with("ledgertail_parity_last_check_timestamp_seconds{")
            && l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|t| t > 0.0)
    })
}

/// The response to `GET path` (empty when there is none).
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(request.as_bytes());
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}
