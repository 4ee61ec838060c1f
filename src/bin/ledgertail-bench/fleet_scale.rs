//! The fleet store at fleet scale: one sidecar with many ledgers (1,000 by
//! default), each written at 10 events/s, from a line written to its row
//! visible centrally, on loopback and through a proxy that delays every
//! packet by 5 ms each way (a 10 ms round trip); and the same ledgers
//! idle, with `[postgres]` and `[tlog]` on: the sidecar's CPU and the
//! server's committed transactions per second.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ledgertail::producer::Writer;

use super::pg::{ledgertail, Server};

/// The section alone (`--only fleet-scale`), with a server of its own.
pub fn alone(binary: &Path, dir: &Path, ledgers: usize, secs: u64) {
    println!("\n## Fleet store at fleet scale (PostgreSQL)");
    let Some(server) = Server::start() else {
        println!("skipped: no PostgreSQL server could be started (apt-get install postgresql)");
        return;
    };
    std::fs::create_dir_all(dir).expect("fleet-scale dir");
    fleet_scale(binary, &server, dir, ledgers, secs);
}

/// Every figure of the section.
pub fn fleet_scale(binary: &Path, server: &Server, dir: &Path, ledgers: usize, secs: u64) {
    println!("\nOne sidecar with {ledgers} ledgers, each written at 10 events/s for {secs} s; from a line written to its row visible in PostgreSQL (the central heads polled every {} ms). The sidecar starts with one event in each ledger; the live phase begins once all of them are central and {} s have passed since the start (the start-up rounds done); start-up: from the start until every ledger's first event was central. Through the proxy, every packet waits 5 ms each way (a 10 ms round trip) and the reader polls the server directly:\n", POLL.as_millis(), SETTLED.as_secs());
    println!("| ledgers | path | start-up s | events | p50 ms | p99 ms | max ms | kept up | floor: in the mirror, p50 / p99 ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (path, delay) in [("loopback", None), ("10 ms round trip", Some(5))] {
        let proxy = delay.map(|ms| DelayProxy::start(server.port, Duration::from_millis(ms)));
        let port = proxy.as_ref().map_or(server.port, |p| p.port);
        let source = format!("many-{}", delay.unwrap_or(0));
        let (c, l, start_up) = many_ledgers_central(
            binary,
            server,
            Reach {
                port,
                source: &source,
            },
            &dir.join(format!("ledgers-{}", delay.unwrap_or(0))),
            ledgers,
            10,
            secs,
        );
        println!(
            "| {ledgers} | {path} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.1} / {:.1} |",
            start_up.map_or("NOT within 120".into(), |d| format!(
                "{:.1}",
                d.as_secs_f64()
            )),
            c.events,
            c.p50,
            c.p99,
            c.max,
            if c.kept_up { "yes" } else { "NO" },
            l.p50,
            l.p99
        );
    }
    // A minute covers three rounds of lease renewals (smoke runs: a glance).
    let idle_secs = if secs < 5 { 5 } else { 60 };
    let (cpu, xacts) = idle_fleet(binary, server, &dir.join("idle"), ledgers, idle_secs);
    println!("\nThe same {ledgers} ledgers idle for {idle_secs} s after one event each was shipped and the start-up rounds were done (82 s after the start in full runs), `[postgres]` and `[tlog]` on (lease_secs = 60: renewals every 20 s):\n");
    println!("| ledgers | sidecar CPU-s/min | PostgreSQL transactions/s |");
    println!("|---|---|---|");
    println!("| {ledgers} | {cpu:.3} | {xacts:.2} |");
}

/// `run` over `ledgers` ledgers of one event each, once all are shipped,
/// left idle for `secs`: (CPU-s per minute of the sidecar, the server's
/// commits per second, the reader's own two queries taken out).
fn idle_fleet(binary: &Path, server: &Server, dir: &Path, ledgers: usize, secs: u64) -> (f64, f64) {
    let full = secs >= 10;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("idle fleet dir");
    let key = dir.join("tlog.key");
    let made = std::process::Command::new(binary)
        .args(["keygen", "--key-id", "bench-log", "--out"])
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("keygen");
    assert!(made.success(), "keygen failed");
    // A database of its own: its commits are the sidecar's alone (not the
    // reader's, nor autovacuum's after the cases before).
    let mut client = server.client();
    for sql in [
        "DROP DATABASE IF EXISTS idle_fleet",
        "CREATE DATABASE idle_fleet",
    ] {
        client.batch_execute(sql).expect("idle database");
    }
    let mut cfg = format!(
        "db = \"idle.db\"\nlisten = \"127.0.0.1:0\"\nlog_level = \"warn\"\n{}\n[tlog]\nkey = \"tlog.key\"\n",
        server.table("idle").replace("/postgres?", "/idle_fleet?")
    );
    for l in 0..ledgers {
        cfg.push_str(&format!(
            "[[ledger]]\nname = \"l{l}\"\npath = \"l{l}.jsonl\"\nsignatures = \"off\"\n"
        ));
        Writer::new(dir.join(format!("l{l}.jsonl")))
            .without_fsync()
            .append("order.created", &super::payload(l as u64, 420))
            .expect("append");
    }
    let cfg_path = dir.join("idle.toml");
    std::fs::write(&cfg_path, cfg).expect("config");
    let child = ledgertail(binary, &["run"], &cfg_path)
        .spawn()
        .expect("run");
    let mut idle_db = server.client_of("idle_fleet");
    let settle = Instant::now();
    loop {
        let shipped: i64 = idle_db
            .query_one(
                "SELECT count(*) FROM ledgertail.ledgers WHERE source = 'idle' AND head_seq = 0",
                &[],
            )
            .map(|r| r.get(0))
            .unwrap_or(0);
        if shipped as usize == ledgers || settle.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Past the first checkpoints and the parity rounds after the
    // catch-up (82 s after the start in full runs, as in the "ledgers"
    // section): start-up costs, not idle ones.
    let settled = if full { 82 } else { 15 };
    std::thread::sleep(
        Duration::from_secs(15).max(Duration::from_secs(settled).saturating_sub(settle.elapsed())),
    );
    let commits = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = 'idle_fleet'",
            &[],
        )
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0)
    };
    let (cpu0, x0) = (super::cpu_seconds(child.id()), commits(&mut client));
    std::thread::sleep(Duration::from_secs(secs));
    let (cpu1, x1) = (super::cpu_seconds(child.id()), commits(&mut client));
    super::stop(child);
    (
        (cpu1 - cpu0) * 60.0 / secs as f64,
        (x1 - x0).max(0) as f64 / secs as f64,
    )
}

/// A loopback TCP proxy that holds every chunk for `one_way` before
/// passing it on, in both directions (order kept).
pub struct DelayProxy {
    pub port: u16,
}

impl DelayProxy {
    pub fn start(upstream: u16, one_way: Duration) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                delayed_pipe(client, server, one_way);
                delayed_pipe(s2, c2, one_way);
            }
        });
        DelayProxy { port }
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
fn delayed_pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// How often the many-ledger cases read the central heads.
pub const POLL: Duration = Duration::from_millis(25);

/// How the sidecar of a case reaches the server (`port`: the server's or
/// a proxy's) and the source it ships as.
#[derive(Clone, Copy)]
pub struct Reach<'a> {
    pub port: u16,
    pub source: &'a str,
}

/// `run` with `ledgers` ledgers and `[postgres]`, each ledger receiving
/// `rate` events/s: the latency to the central rows, and to the mirror's
/// (the floor, in the same run).
pub fn many_ledgers_central(
    binary: &Path,
    server: &Server,
    reach: Reach<'_>,
    dir: &Path,
    ledgers: usize,
    rate: u64,
    secs: u64,
) -> (Latency, Latency, Option<Duration>) {
    std::fs::create_dir_all(dir).expect("ledgers dir");
    let mut cfg = format!(
        "db = \"many.db\"\nlisten = \"127.0.0.1:0\"\nlog_level = \"warn\"\n{}\n",
        server.table_at(reach.port, reach.source)
    );
    for l in 0..ledgers {
        cfg.push_str(&format!(
            "[[ledger]]\nname = \"l{l}\"\npath = \"l{l}.jsonl\"\nsignatures = \"off\"\n"
        ));
    }
    let cfg_path = dir.join("many.toml");
    std::fs::write(&cfg_path, cfg).expect("config");
    let mut writers: Vec<Writer> = (0..ledgers)
        .map(|l| Writer::new(dir.join(format!("l{l}.jsonl"))).without_fsync())
        .collect();
    // Seq 0 of every ledger is written before the start: the live phase
    // begins once all of them are central and the start-up rounds are
    // done, so that it measures following, not starting.
    for w in &mut writers {
        w.append_batch("order.created", &[super::payload(0, 420).as_str()])
            .expect("append");
    }
    let started = Instant::now();
    let child = ledgertail(binary, &["run"], &cfg_path)
        .spawn()
        .expect("run");
    let mut client = server.client();
    let start_up = wait_all_central(&mut client, reach.source, ledgers, started);
    // Smoke runs (CI) only wait for the first events.
    let settled = if secs < 5 { Duration::ZERO } else { SETTLED };
    std::thread::sleep(settled.saturating_sub(started.elapsed()));
    let per = rate * secs;
    let origin = Instant::now();
    // written[l][seq]: when seq of ledger l was written (seq 0: never
    // measured).
    let written: Arc<Vec<Vec<AtomicU64>>> = Arc::new(
        (0..ledgers)
            .map(|_| (0..=per).map(|_| AtomicU64::new(0)).collect())
            .collect(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (written, done) = (written.clone(), done.clone());
        std::thread::spawn(move || {
            // One event per ledger every 1/rate s, the ledgers spread over it.
            let step = Duration::from_secs_f64(1.0 / rate as f64 / ledgers as f64);
            let start = Instant::now();
            let mut k = 0u64;
            for n in 1..=per {
                for (l, w) in writers.iter_mut().enumerate() {
                    let due = start + step * k as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    written[l][n as usize]
                        .store(origin.elapsed().as_nanos() as u64, Ordering::Release);
                    w.append_batch("order.created", &[super::payload(n, 420).as_str()])
                        .expect("append");
                    k += 1;
                }
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let mirror = dir.join("many.db");
    let (mut central, mut local) = (Seen::new(ledgers), Seen::new(ledgers));
    let mut done_at = None;
    while central.seen.iter().any(|s| *s <= per) {
        let rows = client
            .query(
                "SELECT ledger, head_seq FROM ledgertail.ledgers WHERE source = $1",
                &[&reach.source],
            )
            .unwrap_or_default();
        let now = origin.elapsed().as_nanos() as u64;
        for r in rows {
            central.observe(&r.get::<_, String>(0), r.get(1), per, now, &written);
        }
        // The floor in the same run: the same rows visible in the mirror.
        let heads: Vec<(String, Option<i64>)> = rusqlite::Connection::open(&mirror)
            .and_then(|c| {
                c.prepare("SELECT ledger, head_seq FROM checkpoints")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .unwrap_or_default();
        let now = origin.elapsed().as_nanos() as u64;
        for (name, head) in heads {
            local.observe(&name, head, per, now, &written);
        }
        if done.load(Ordering::Relaxed) && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|d| d.elapsed() > Duration::from_secs(10)) {
            break;
        }
        // Every 25 ms: reading a thousand heads every 5 ms took a good part
        // of the server's CPU from the sidecar being measured.
        std::thread::sleep(POLL);
    }
    let _ = producer.join();
    super::stop(child);
    let all = per * ledgers as u64;
    (central.latency(all), local.latency(all), start_up)
}

/// How long after its start a sidecar waits before the live phase: past
/// the first parity round (10 s after the start, every ledger checked
/// once), a start-up cost, as in the "ledgers" section.
const SETTLED: Duration = Duration::from_secs(20);

/// Waits (up to 120 s) until every ledger of `source` has its seq 0 in
/// PostgreSQL: how long after `started` that was (`None`: never).
fn wait_all_central(
    client: &mut postgres::Client,
    source: &str,
    ledgers: usize,
    started: Instant,
) -> Option<Duration> {
    while started.elapsed() < Duration::from_secs(120) {
        let shipped: i64 = client
            .query_one(
                "SELECT count(*) FROM ledgertail.ledgers WHERE source = $1 AND head_seq >= 0",
                &[&source],
            )
            .map(|r| r.get(0))
            .unwrap_or(0);
        if shipped as usize >= ledgers {
            return Some(started.elapsed());
        }
        std::thread::sleep(POLL);
    }
    None
}

/// Latency from a line written to its row visible: events seen, p50, p99,
/// max (ms), and whether every event was seen.
pub struct Latency {
    pub events: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub kept_up: bool,
}

/// What a reader of many ledgers' heads has seen so far.
struct Seen {
    seen: Vec<u64>,
    latencies: Vec<f64>,
}

impl Seen {
    fn new(ledgers: usize) -> Seen {
        Seen {
            // Seq 0 was written before the start: not measured.
            seen: vec![1; ledgers],
            latencies: Vec::new(),
        }
    }

    /// Ledger `name` (`l<N>`) has its head at `head` at `now` (ns since
    /// the origin); `written[l][seq]`: when each line was written.
    fn observe(
        &mut self,
        name: &str,
        head: Option<i64>,
        per: u64,
        now: u64,
        written: &[Vec<AtomicU64>],
    ) {
        let Some(l) = name.strip_prefix('l').and_then(|n| n.parse::<usize>().ok()) else {
            return;
        };
        let upto = head.map_or(0, |h| h as u64 + 1).min(per + 1);
        for seq in self.seen[l]..upto {
            let at = written[l][seq as usize].load(Ordering::Acquire);
            self.latencies.push(now.saturating_sub(at) as f64 / 1e6);
        }
        self.seen[l] = self.seen[l].max(upto);
    }

    fn latency(mut self, all: u64) -> Latency {
        self.latencies.sort_by(f64::total_cmp);
        let events: u64 = self.seen.iter().map(|s| s - 1).sum();
        Latency {
            events,
            p50: super::percentile(&self.latencies, 0.5),
            p99: super::percentile(&self.latencies, 0.99),
            max: self.latencies.last().copied().unwrap_or(f64::NAN),
            kept_up: events >= all,
        }
    }
}
