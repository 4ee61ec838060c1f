//! The "many ledgers in one `run`" section: threads, peak memory, idle
//! CPU and write-to-visible latency with N ledgers (1,000 by default).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledgertail::producer::Writer;

use super::proc_status;

/// Events already in each ledger when `run` starts.
const BACKLOG: u64 = 20;

pub struct Figures {
    pub ledgers: usize,
    pub catch_up_secs: f64,
    pub threads: u64,
    pub idle_cpu_per_min: f64,
    pub rate_each: u64,
    pub events: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub kept_up: bool,
    pub peak_rss_mib: f64,
}

fn name(i: usize) -> String {
    format!("app-{i:04}")
}

/// A field of /proc/PID/status, as a number (kB for memory fields).
fn heads(reader: &rusqlite::Connection) -> HashMap<String, i64> {
    let Ok(mut stmt) = reader.prepare_cached("SELECT ledger, head_seq FROM checkpoints") else {
        return HashMap::new();
    };
    stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
    })
    .map(|rows| {
        rows.filter_map(Result::ok)
            .filter_map(|(l, h)| Some((l, h?)))
            .collect()
    })
    .unwrap_or_default()
}

fn start(binary: &Path, dir: &Path, ledgers: usize) -> (Child, std::path::PathBuf) {
    let mut config =
        String::from("db = \"many.db\"\nlisten = \"127.0.0.1:0\"\nlog_level = \"warn\"\n");
    for i in 0..ledgers {
        config.push_str(&format!(
            "[[ledger]]\nname = \"{}\"\npath = \"ledgers/{}.jsonl\"\nsignatures = \"off\"\n",
            name(i),
            name(i)
        ));
    }
    std::fs::write(dir.join("ledgertail.toml"), config).expect("config");
    let child = Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(dir.join("ledgertail.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start run");
    (child, dir.join("many.db"))
}

pub fn many_ledgers(
    binary: &Path,
    dir: &Path,
    ledgers: usize,
    idle_secs: u64,
    live_secs: u64,
) -> Figures {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("ledgers")).expect("ledgers dir");
    let payload = |i: u64| format!("{{\"order\":{i},\"note\":\"{}\"}}", "x".repeat(200));
    let mut writers: Vec<Writer> = (0..ledgers)
        .map(|i| Writer::new(dir.join(format!("ledgers/{}.jsonl", name(i)))).without_fsync())
        .collect();
    for w in &mut writers {
        let texts: Vec<String> = (0..BACKLOG).map(payload).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        w.append_batch("order.created", &refs).expect("append");
    }
    let started = Instant::now();
    let (child, db) = start(binary, dir, ledgers);
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !db.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let reader =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open mirror");
    reader
        .busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    loop {
        let h = heads(&reader);
        if h.len() == ledgers && h.values().all(|&s| s as u64 == BACKLOG - 1) {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("many ledgers: catch-up did not finish in 120 s");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let catch_up_secs = started.elapsed().as_secs_f64();
    // Settled: the first parity check (10 s after the start, every
    // ledger checked once) is a start-up cost, not an idle one.
    std::thread::sleep(
        Duration::from_secs(3).max(Duration::from_secs(20).saturating_sub(started.elapsed())),
    );
    let threads = proc_status(pid, "Threads");
    let before = super::cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let idle_cpu_per_min = (super::cpu_seconds(pid) - before) * 60.0 / idle_secs as f64;

    // Live: every ledger gets 10 events per second, spread over 10 ms
    // ticks (a tenth of the ledgers per tick).
    let rate_each = 10u64;
    let written: Arc<Mutex<Vec<Vec<f64>>>> = Arc::new(Mutex::new(vec![Vec::new(); ledgers]));
    let origin = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (written, done) = (written.clone(), done.clone());
        std::thread::spawn(move || {
            let ticks = live_secs * 100;
            let start = Instant::now();
            for tick in 0..ticks {
                let due = start + Duration::from_millis(tick * 10);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                for (i, w) in writers.iter_mut().enumerate() {
                    if !(i as u64 + tick).is_multiple_of(10) {
                        continue;
                    }
                    // Stamped before the write: a row may be seen before a
                    // stamp taken after it.
                    let t = origin.elapsed().as_secs_f64() * 1e3;
                    written.lock().expect("stamps")[i].push(t);
                    w.append("order.created", &payload(tick)).expect("append");
                }
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let mut seen: Vec<u64> = vec![BACKLOG; ledgers];
    let mut latencies = Vec::new();
    let mut done_at = None;
    let index: HashMap<String, usize> = (0..ledgers).map(|i| (name(i), i)).collect();
    loop {
        let h = heads(&reader);
        let now = origin.elapsed().as_secs_f64() * 1e3;
        {
            let stamps = written.lock().expect("stamps");
            for (ledger, head) in h {
                let Some(&i) = index.get(&ledger) else {
                    continue;
                };
                let upto = head as u64 + 1;
                while seen[i] < upto {
                    if let Some(t) = stamps[i].get((seen[i] - BACKLOG) as usize) {
                        latencies.push(now - t);
                    }
                    seen[i] += 1;
                }
            }
        }
        let expected = BACKLOG + live_secs * rate_each;
        if seen.iter().all(|&s| s >= expected) {
            break;
        }
        if done.load(Ordering::Relaxed) && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|d| d.elapsed() > Duration::from_secs(10)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = producer.join();
    let peak_rss_mib = proc_status(pid, "VmHWM") as f64 / 1024.0;
    super::stop(child);
    let expected = BACKLOG + live_secs * rate_each;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| super::percentile(&latencies, p);
    let _ = std::fs::remove_dir_all(dir);
    Figures {
        ledgers,
        catch_up_secs,
        threads,
        idle_cpu_per_min,
        rate_each,
        events: latencies.len() as u64,
        p50: pct(0.5),
        p99: pct(0.99),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        kept_up: seen.iter().all(|&s| s >= expected),
        peak_rss_mib,
    }
}
