//! The verifiable log at many ledgers: one `run` over N ledgers (1,000 in
//! a full run), each written at 10 events/s, so every tree grows every
//! round:
//!
//! - the floor: the same run without `[tlog]`, its CPU;
//! - with `[tlog]` (no witness): the CPU it adds, and how old each
//!   ledger's latest checkpoint gets (its
//!   `ledgertail_tlog_checkpoint_timestamp_seconds`, read every second
//!   after the first rounds) against `checkpoint_interval_secs`;
//! - with a witness that accepts connections and never answers: the same
//!   ages, and how long SIGTERM takes against `shutdown_grace_secs`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ledgertail::producer::Writer;

/// What one case measured.
struct Case {
    cpu_secs: f64,
    /// CPU of the publisher thread (named `tlog`) over the same window:
    /// what signing costs, measured apart from the host's noise.
    tlog_cpu_secs: f64,
    /// The oldest any ledger's latest checkpoint was seen, in seconds.
    max_age: f64,
    /// From SIGTERM to exit.
    stop_secs: f64,
    /// Reads of /metrics that failed (not counted in `max_age`).
    failed_scrapes: usize,
}

pub fn tlog_scale(binary: &Path, dir: &Path, ledgers: usize, smoke: bool) {
    let (interval, secs) = if smoke { (1, 8) } else { (10, 60) };
    let grace = 5;
    println!("\n### The verifiable log at {ledgers} ledgers\n");
    println!("One `run` over {ledgers} ledgers, each written at 10 events/s for {secs} s (every tree grows every round); `checkpoint_interval_secs = {interval}`, `shutdown_grace_secs = {grace}`. The age of each ledger's latest checkpoint is read from /metrics every second, after the first {} s:\n", interval + 3);
    println!("| case | run CPU-s | run CPU vs floor | `tlog` thread CPU-s | its share of the floor | oldest checkpoint s | target | SIGTERM to exit s |");
    println!("|---|---|---|---|---|---|---|---|");
    let floor = run_case(binary, &dir.join("floor"), ledgers, secs, None, grace);
    println!(
        "| floor: no [tlog] | {:.1} | | | | | | {:.2} |",
        floor.cpu_secs, floor.stop_secs
    );
    let target = format!("≤ {} s", interval + 2);
    let cases = [
        ("[tlog], no witness", false),
        ("[tlog], a witness that never answers", true),
    ];
    let mut notes = Vec::new();
    for (k, (name, witness)) in cases.into_iter().enumerate() {
        let silent = witness.then(silent_witness);
        let tlog = Tlog {
            interval,
            witness: silent.as_deref(),
        };
        let c = run_case(
            binary,
            &dir.join(format!("case-{k}")),
            ledgers,
            secs,
            Some(&tlog),
            grace,
        );
        println!(
            "| {name} | {:.1} | {:+.1} % | {:.2} | {:.1} % (target ≤ 5 %) | {:.0} | {target} | {:.2} (grace {grace}) |",
            c.cpu_secs,
            (c.cpu_secs / floor.cpu_secs - 1.0) * 100.0,
            c.tlog_cpu_secs,
            c.tlog_cpu_secs / floor.cpu_secs * 100.0,
            c.max_age,
            c.stop_secs
        );
        if c.failed_scrapes > 0 {
            notes.push(format!(
                "{name}: {} reads of /metrics failed and are not in the ages.",
                c.failed_scrapes
            ));
        }
    }
    for note in notes {
        println!("\n- {note}");
    }
}

struct Tlog<'a> {
    interval: u64,
    /// A witness's address, if one is configured.
    witness: Option<&'a str>,
}

fn run_case(
    binary: &Path,
    dir: &Path,
    ledgers: usize,
    secs: u64,
    tlog: Option<&Tlog>,
    grace: u64,
) -> Case {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("case dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = config(binary, dir, ledgers, port, tlog, grace);
    let mut writers: Vec<Writer> = (0..ledgers)
        .map(|i| Writer::new(dir.join(format!("l{i}.jsonl"))).without_fsync())
        .collect();
    for w in &mut writers {
        w.append("order.created", &super::payload(0, 200))
            .expect("append");
    }
    let child = Command::new(binary)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run");
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let done = done.clone();
        std::thread::spawn(move || produce(&mut writers, secs, &done))
    };
    let warm_up = Duration::from_secs(tlog.map_or(4, |t| t.interval + 3));
    std::thread::sleep(warm_up);
    let cpu0 = super::cpu_seconds(pid);
    let tlog0 = thread_cpu_seconds(pid, "tlog");
    let watch_until = Instant::now() + Duration::from_secs(secs).saturating_sub(warm_up);
    let mut max_age: f64 = 0.0;
    let mut failed_scrapes = 0;
    while Instant::now() < watch_until {
        if tlog.is_some() {
            match oldest_checkpoint(port, ledgers) {
                Some(age) => max_age = max_age.max(age),
                None => failed_scrapes += 1,
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let cpu_secs = super::cpu_seconds(pid) - cpu0;
    let tlog_cpu_secs = thread_cpu_seconds(pid, "tlog") - tlog0;
    done.store(true, Ordering::Relaxed);
    let _ = producer.join();
    let stop_secs = stop_timed(child);
    let _ = std::fs::remove_dir_all(dir);
    Case {
        cpu_secs,
        tlog_cpu_secs,
        max_age,
        stop_secs,
        failed_scrapes,
    }
}

/// The CPU seconds of `pid`'s threads named `name` (0 when none is).
fn thread_cpu_seconds(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .map(|t| super::stat_cpu_seconds(&t.path().join("stat")))
        .sum()
}

fn config(
    binary: &Path,
    dir: &Path,
    ledgers: usize,
    port: u16,
    tlog: Option<&Tlog>,
    grace: u64,
) -> std::path::PathBuf {
    let mut text = format!(
        "db = \"m.db\"\nlisten = \"127.0.0.1:{port}\"\nlog_level = \"warn\"\nshutdown_grace_secs = {grace}\n"
    );
    if let Some(t) = tlog {
        let key = dir.join("tlog.key");
        let made = Command::new(binary)
            .args(["keygen", "--key-id", "bench-log", "--out"])
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("keygen");
        assert!(made.success(), "keygen failed");
        text.push_str(&format!(
            "[tlog]\nkey = \"tlog.key\"\ncheckpoint_interval_secs = {}\n",
            t.interval
        ));
        if let Some(addr) = t.witness {
            let key = ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
            let vkey = ledgertail::ledger::note::VerifierKey::of(
                "silent",
                ledgertail::ledger::note::COSIGNATURE_V1,
                &key,
            );
            text.push_str(&format!(
                "[[tlog.witness]]\nurl = \"http://{addr}\"\nvkey = \"{vkey}\"\n"
            ));
        }
    }
    for i in 0..ledgers {
        text.push_str(&format!(
            "[[ledger]]\nname = \"l{i}\"\npath = \"l{i}.jsonl\"\nsignatures = \"off\"\n"
        ));
    }
    let path = dir.join("ledgertail.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Every ledger 10 events/s (a tenth of them every 10 ms) until `done`
/// or `secs` are up.
fn produce(writers: &mut [Writer], secs: u64, done: &AtomicBool) {
    let start = Instant::now();
    for tick in 0..secs * 100 {
        if done.load(Ordering::Relaxed) {
            return;
        }
        let due = start + Duration::from_millis(tick * 10);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for (i, w) in writers.iter_mut().enumerate() {
            if (i as u64 + tick).is_multiple_of(10) {
                w.append("order.created", &super::payload(tick, 200))
                    .expect("append");
            }
        }
    }
}

/// The age in seconds of the oldest latest checkpoint among the ledgers
/// (never signed counts as infinitely old).
/// The largest age of any ledger's latest checkpoint (infinite while one
/// has none), or `None` when /metrics did not answer in full.
fn oldest_checkpoint(port: u16, ledgers: usize) -> Option<f64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let body = metrics(port);
    let stamps: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with("ledgertail_tlog_checkpoint_timestamp_seconds{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    if !body.contains("ledgertail_tlog_") {
        return None;
    }
    if stamps.len() < ledgers {
        return Some(f64::INFINITY);
    }
    Some(
        stamps
            .iter()
            .map(|&t| if t > 0.0 { now - t } else { f64::INFINITY })
            .fold(0.0, f64::max),
    )
}

fn metrics(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// SIGTERM, then the seconds until the process exits.
fn stop_timed(mut child: Child) -> f64 {
    let t = Instant::now();
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
    t.elapsed().as_secs_f64()
}

/// A witness that accepts connections, reads the request and never
/// answers (each connection held by a thread until the bench ends).
fn silent_witness() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("witness bind");
    let addr = listener.local_addr().expect("witness addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    line.clear();
                }
            });
        }
    });
    addr
}
