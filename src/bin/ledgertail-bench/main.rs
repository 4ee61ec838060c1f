//! ledgertail-bench: how fast ledgertail catches up, how quickly a line
//! becomes a row, and what it costs when idle, next to the floors of the
//! same machine measured in the same run on the same data.
//!
//!     cargo run --release --bin ledgertail-bench            # the full run (~10 min)
//!     cargo run --release --bin ledgertail-bench -- --smoke # a quick check
//!
//! It generates its own ledgers, runs the real `ledgertail` binary that
//! sits beside it (`replay` for catch-up, `run` for live latency and idle
//! cost), and prints a Markdown report. Figures are medians of
//! `--repeat` runs. See docs/performance.md.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

mod fleet;
mod fleet_scale;
mod many;
mod parity;
mod pg;
mod tlog;
mod tlog_scale;
use ledgertail::ledger::frame::{Frame, Framer};
use ledgertail::ledger::{authenticate, examine_each, Examined, KeyRing, SignaturePolicy};
use ledgertail::mirror::{Access, Mirror};
use ledgertail::producer::{KeyFile, Writer};

#[derive(Debug, Parser)]
#[command(
    name = "ledgertail-bench",
    about = "Benchmark ledgertail against the floors of this machine"
)]
struct Args {
    /// Events in the main case (unsigned, ~550-byte lines).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Seconds of producing at each live rate.
    #[arg(long, default_value_t = 10)]
    live_secs: u64,
    /// Live producer rates, events per second.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1_000u64, 10_000, 50_000])]
    rates: Vec<u64>,
    /// Seconds of watching an idle `run`.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Events of the largest `verify` case (every event with an id).
    #[arg(long, default_value_t = 10_000_000)]
    verify_events: u64,
    /// Events of the ledger whose parity check `run` keeps up with.
    #[arg(long, default_value_t = 10_000_000)]
    parity_events: u64,
    /// Ledgers in the "many ledgers in one `run`" cases (local, and into
    /// the fleet store).
    #[arg(long, default_value_t = 1000)]
    ledgers: usize,
    /// A quick run (CI): 20,000 events, one repetition, 2 s phases.
    #[arg(long)]
    smoke: bool,
    /// Where to put the generated ledgers and databases (default: a
    /// temporary folder, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The ledgertail binary (default: the one beside this program).
    #[arg(long)]
    ledgertail: Option<PathBuf>,
    /// Sidecars shipping at once in the fleet case.
    #[arg(long, default_value_t = 50)]
    sidecars: usize,
    /// Run only these sections (default: all): catch-up, live, tail,
    /// verify, parity, ledgers, idle, fleet, tlog; fleet-scale (a part of
    /// fleet: many ledgers into PostgreSQL) or tlog-scale (a part of tlog:
    /// the log at many growing ledgers) alone.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// One catch-up case.
struct Case {
    name: &'static str,
    events: u64,
    payload_bytes: usize,
    signed: bool,
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(MEASURE) {
        measure_child();
    }
    let mut args = Args::parse();
    if args.smoke {
        args.events = 20_000;
        args.verify_events = 20_000;
        args.ledgers = 50;
        args.sidecars = 5;
        args.repeat = 1;
        args.live_secs = 2;
        args.idle_secs = 2;
        args.rates = vec![1_000, 10_000];
    }
    let binary = args.ledgertail.clone().unwrap_or_else(|| {
        let me = std::env::current_exe().expect("own path");
        me.with_file_name("ledgertail")
    });
    if !binary.exists() {
        eprintln!(
            "error: {} not found\nhint: build it first (cargo build --release), or pass --ledgertail",
            binary.display()
        );
        std::process::exit(2);
    }
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("create --dir");
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().expect("temporary folder");
            tmp.path().to_path_buf()
        }
    };

    let wanted = |section: &str| args.only.is_empty() || args.only.iter().any(|s| s == section);
    println!("# ledgertail benchmark\n");
    machine(&binary);
    if wanted("catch-up") {
        catch_up(&binary, &dir, &args);
    }
    if wanted("live") {
        live_latency(&binary, &dir, &args);
    }
    if wanted("tail") {
        tail_section(&binary, &dir, &args);
    }
    if wanted("verify") {
        println!("\n## `verify` memory at scale\n");
        verify_memory(&binary, &dir.join("verify"), args.verify_events);
    }
    if wanted("parity") {
        println!("\n## Parity check cost (`run`'s periodic check)\n");
        parity::parity_cost(&binary, &dir.join("parity"), args.events);
        let (events, watch) = if args.smoke {
            (20_000, 3)
        } else {
            (args.parity_events, 180)
        };
        parity::parity_in_run(&binary, &dir.join("parity-run"), events, watch, args.smoke);
    }
    if wanted("ledgers") {
        println!("\n## Many ledgers in one `run`\n");
        let f = many::many_ledgers(
            &binary,
            &dir.join("many"),
            args.ledgers,
            args.idle_secs,
            args.live_secs,
        );
        println!("{} ledgers in one folder, {} events each at the start; once the parity rounds after that catch-up are done (82 s after the start, full runs only), idle for {} s; then each ledger receiving {} events/s for {} s (a tenth of the ledgers written every 10 ms). Latency from the line written to its checkpoint visible in SQLite (a reader polling every 2 ms).\n", f.ledgers, 20, args.idle_secs, f.rate_each, args.live_secs);
        println!("| ledgers | threads | catch-up s | idle CPU-s/min | events | p50 ms | p99 ms | max ms | kept up | peak RSS MiB |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {} | {} | {:.1} | {:.3} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} |",
            f.ledgers,
            f.threads,
            f.catch_up_secs,
            f.idle_cpu_per_min,
            f.events,
            f.p50,
            f.p99,
            f.max,
            if f.kept_up { "yes" } else { "NO" },
            f.peak_rss_mib
        );
    }
    if wanted("fleet") {
        let ledger = dir.join("fleet.jsonl");
        let case = Case {
            name: "fleet",
            events: args.events,
            payload_bytes: 420,
            signed: false,
        };
        generate(&ledger, &case, &KeyFile::generate("bench").expect("key"));
        fleet::fleet(
            &binary,
            &dir.join("fleet"),
            &ledger,
            args.events,
            args.live_secs,
            args.sidecars,
            args.ledgers,
        );
    }
    if args.only.iter().any(|s| s == "fleet-scale") {
        fleet_scale::alone(
            &binary,
            &dir.join("fleet-scale"),
            args.ledgers,
            args.live_secs,
        );
    }
    if args.only.iter().any(|s| s == "tlog-scale") {
        tlog_scale::tlog_scale(&binary, &dir.join("tlog-scale"), args.ledgers, args.smoke);
    }
    if wanted("tlog") {
        let ledger = dir.join("tlog.jsonl");
        let case = Case {
            name: "tlog",
            events: args.events,
            payload_bytes: 420,
            signed: false,
        };
        generate(&ledger, &case, &KeyFile::generate("bench").expect("key"));
        let leaves = if args.smoke { 100_000 } else { 10_000_000 };
        tlog::tlog(&binary, &dir.join("tlog"), &ledger, args.events, leaves);
        tlog_scale::tlog_scale(&binary, &dir.join("tlog-scale"), args.ledgers, args.smoke);
    }
    if wanted("idle") {
        println!("\n## Idle cost (`run` with nothing to do)\n");
        let cpu = idle(&binary, &dir.join("idle"), args.idle_secs);
        println!(
            "{:.3} CPU-seconds over {} s = **{:.3} CPU-seconds per minute** (ledger of 1,000 events, default config).",
            cpu,
            args.idle_secs,
            cpu * 60.0 / args.idle_secs as f64
        );
    }
}

fn catch_up(binary: &Path, dir: &Path, args: &Args) {
    let n = args.events;
    let binary = binary.to_path_buf();
    let cases = [
        Case {
            name: "unsigned, ~550 B",
            events: n,
            payload_bytes: 420,
            signed: false,
        },
        Case {
            name: "unsigned, ~100 B",
            events: n,
            payload_bytes: 10,
            signed: false,
        },
        Case {
            name: "unsigned, ~5 KB",
            events: (n / 10).max(1000),
            payload_bytes: 4900,
            signed: false,
        },
        // Lines near the default limit: the batch's byte cap, not its line
        // count, bounds the memory (peak RSS is the figure to read).
        Case {
            name: "unsigned, ~1 MiB",
            events: (n / 5000).max(20),
            payload_bytes: 1_040_000,
            signed: false,
        },
        Case {
            name: "signed (required), ~550 B",
            events: (n / 5).max(1000),
            payload_bytes: 330,
            signed: true,
        },
    ];
    println!("\n## Catch-up (`replay` into a fresh database)\n");
    println!("Insert floor: the same rows, same schema and settings, bare prepared statement, 1000 per transaction; *complete* includes closing the database (the WAL checkpointed into it, as replay does), *WAL only* stops at the last commit.\n");
    println!("| case | events | MB | catch-up ev/s | MB/s | peak RSS MiB | insert floor rows/s, complete | insert floor rows/s, WAL only | verify floor ev/s (1 thread) | catch-up ÷ insert floor (complete) | catch-up ÷ insert floor (WAL only) | catch-up ÷ verify floor |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let key = KeyFile::generate("bench").expect("key");
    let mut main_ledger = None;
    for case in &cases {
        let ledger = dir.join(format!("case-{}.jsonl", case.payload_bytes));
        generate(&ledger, case, &key);
        let bytes = std::fs::metadata(&ledger).map(|m| m.len()).unwrap_or(0);
        let mut catchup = Vec::new();
        let mut rss = Vec::new();
        let mut insert = Vec::new();
        let mut insert_wal = Vec::new();
        let mut verify = Vec::new();
        for r in 0..args.repeat {
            let db = dir.join(format!("replay-{}-{r}.db", case.payload_bytes));
            remove_db(&db);
            let (secs, peak) = replay(&binary, &ledger, &db, case.signed.then_some(&key));
            catchup.push(case.events as f64 / secs);
            rss.push(peak as f64 / 1024.0);
            remove_db(&db);
            let (wal_only, complete) = insert_floor(&ledger, &db, case.signed.then_some(&key));
            insert.push(complete);
            insert_wal.push(wal_only);
            remove_db(&db);
            verify.push(verify_floor(&ledger, case.signed.then_some(&key)));
        }
        let (c, i, w, v) = (
            median(&catchup),
            median(&insert),
            median(&insert_wal),
            median(&verify),
        );
        let mb = bytes as f64 / 1e6;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
            case.name,
            case.events,
            mb,
            c,
            c * mb / case.events as f64,
            median(&rss),
            i,
            w,
            v,
            c / i,
            c / w,
            c / v
        );
        if main_ledger.is_none() {
            main_ledger = Some(ledger);
        }
    }
    if let Some(ledger) = &main_ledger {
        sqlite_utils(ledger, dir, n, args.repeat);
    }
}

fn live_latency(binary: &Path, dir: &Path, args: &Args) {
    println!("\n## Live latency (`run` following a producer)\n");
    println!("From a line's `\\n` written to the file to its row visible in SQLite (a reader polling every 1 ms).\n");
    println!(
        "| rate ev/s | seconds | events | p50 ms | p99 ms | max ms | max lag (events) | kept up |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &rate in &args.rates {
        let mut runs = Vec::new();
        for r in 0..args.repeat {
            runs.push(live(
                binary,
                &dir.join(format!("live-{rate}-{r}")),
                rate,
                args.live_secs,
            ));
        }
        runs.sort_by(|a, b| a.p99.total_cmp(&b.p99));
        let m = &runs[runs.len() / 2];
        println!(
            "| {rate} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
            args.live_secs,
            m.events,
            m.p50,
            m.p99,
            m.max,
            m.max_lag,
            if m.kept_up { "yes" } else { "NO" }
        );
    }
}

fn tail_section(binary: &Path, dir: &Path, args: &Args) {
    println!("\n## Finding the head from the end (`append` after a long last line)\n");
    println!("A ledger of 1,000 events ending in one complete line of N MiB (too long to be an event): the time and peak memory of one `append` (which reads back from the end, skipping lines over the limit). Linear in N, memory flat.\n");
    println!("| N MiB | append s | peak RSS MiB |");
    println!("|---|---|---|");
    let sizes: &[u64] = if args.smoke { &[8] } else { &[8, 16, 32, 64] };
    for &mib in sizes {
        let (secs, peak) = append_after_long_line(binary, &dir.join(format!("tail-{mib}")), mib);
        println!("| {mib} | {secs:.3} | {:.1} |", peak as f64 / 1024.0);
    }
}

fn machine(binary: &Path) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "rustc not on PATH".into());
    println!("- machine: {cores} cores, {model}, Linux {}", kernel.trim());
    println!("- {version}, SQLite {}, {rustc}", rusqlite::version());
    println!("- {}", chrono_now());
}

fn chrono_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A payload of about `bytes` bytes of JSON (an order with a note).
fn payload(i: u64, bytes: usize) -> String {
    let head = format!(
        "{{\"order\":{i},\"customer\":\"c{:06}\",\"total\":{}.{:02},\"note\":\"",
        i % 50_000,
        i % 1000,
        i % 100
    );
    let pad = bytes.saturating_sub(head.len() + 2);
    let mut s = head;
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

fn generate(ledger: &Path, case: &Case, key: &KeyFile) {
    let _ = std::fs::remove_file(ledger);
    let started = Instant::now();
    let mut w = Writer::new(ledger).without_fsync();
    if case.signed {
        w = w.with_key(key.clone());
    }
    let mut i = 0;
    while i < case.events {
        let n = (case.events - i).min(1000);
        let payloads: Vec<String> = (i..i + n).map(|k| payload(k, case.payload_bytes)).collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        w.append_batch("order.created", &refs).expect("generate");
        i += n;
    }
    eprintln!(
        "generated {} ({} events) in {:.1} s",
        ledger.display(),
        case.events,
        started.elapsed().as_secs_f64()
    );
}

fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

fn trust_args(key: Option<&KeyFile>) -> Vec<String> {
    match key {
        Some(k) => vec![
            "--signatures".into(),
            "required".into(),
            "--trust".into(),
            format!("{}={}", k.key_id, k.public_base64()),
        ],
        None => vec!["--signatures".into(), "off".into()],
    }
}

/// `verify`, without and with `--db`, on ledgers of a tenth of `n` and of
/// `n` events, each with an id (one in a thousand reusing an earlier one):
/// peak RSS should not grow with the ledger. Prints a table.
fn verify_memory(binary: &Path, dir: &Path, n: u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create dir");
    println!("Each event carries an `id`, one in a thousand reusing an earlier one (reported as a warning). The chain's hashes and the ids spill to temporary files; peak RSS is of the `verify` process.\n");
    println!("| events | MB | verify s | peak RSS MiB | verify --db s | peak RSS MiB | RSS growth per event since the smaller ledger, bytes |");
    println!("|---|---|---|---|---|---|---|");
    let mut smaller: Option<(u64, f64)> = None;
    for events in [(n / 10).max(1000), n] {
        let ledger = dir.join(format!("ids-{events}.jsonl"));
        generate_with_ids(&ledger, events);
        let db = dir.join(format!("ids-{events}.db"));
        let _ = replay(binary, &ledger, &db, None);
        let run = |with_db: bool| {
            let report = dir.join("verify.peak");
            let started = Instant::now();
            let mut cmd = measured(binary, &report);
            cmd.arg("verify")
                .arg("--ledger")
                .arg(&ledger)
                .args(["--signatures", "off"]);
            if with_db {
                cmd.arg("--db").arg(&db);
            }
            let child = cmd
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start verify");
            let (status, peak) = finish_measured(child, &report);
            assert_eq!(status, 0, "verify found problems in the benchmark's ledger");
            (started.elapsed().as_secs_f64(), peak as f64 / 1024.0)
        };
        let (plain_s, plain_mib) = run(false);
        let (db_s, db_mib) = run(true);
        let mb = std::fs::metadata(&ledger).map_or(0, |m| m.len()) as f64 / 1e6;
        let peak = plain_mib.max(db_mib);
        let growth = match smaller {
            Some((n0, peak0)) if events > n0 => {
                format!("{:.2}", (peak - peak0) * 1048576.0 / (events - n0) as f64)
            }
            _ => "–".to_owned(),
        };
        smaller = Some((events, peak));
        println!(
            "| {events} | {mb:.0} | {plain_s:.1} | {plain_mib:.1} | {db_s:.1} | {db_mib:.1} | {growth} |"
        );
        let _ = std::fs::remove_file(&ledger);
        remove_db(&db);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A ledger of `n` unsigned events, each with an id (`order-<n>`, but one
/// in a thousand reuses the id of the event 500 before it).
fn generate_with_ids(ledger: &Path, n: u64) {
    use ledgertail::ledger::event::{seal_line, Draft};
    use std::io::Write as _;
    let started = Instant::now();
    let file = std::fs::File::create(ledger).expect("create ledger");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let ts = "2026-12-01T12:00:00.000000Z";
    let mut prev = None;
    for seq in 0..n {
        let text = payload(seq, 60);
        let value = ledgertail::ledger::json::parse(&text).expect("payload");
        let id = if seq % 1000 == 999 {
            format!("order-{}", seq - 500)
        } else {
            format!("order-{seq}")
        };
        let draft = Draft {
            seq,
            prev_hash: prev,
            ts,
            event_type: "order.created",
            id: Some(&id),
            payload: &value,
        };
        let (line, hash) = seal_line(&draft, None).expect("seal");
        out.write_all(line.as_bytes()).expect("write");
        out.write_all(b"\n").expect("write");
        prev = Some(hash);
    }
    out.flush().expect("flush");
    eprintln!(
        "generated {} ({n} events with ids) in {:.1} s",
        ledger.display(),
        started.elapsed().as_secs_f64()
    );
}

/// One `append` to a ledger of 1,000 events that ends in a complete line
/// of `mib` MiB: (seconds, peak RSS in KiB).
fn append_after_long_line(binary: &Path, dir: &Path, mib: u64) -> (f64, u64) {
    use std::io::Write as _;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create dir");
    let ledger = dir.join("app.jsonl");
    let mut w = Writer::new(&ledger).without_fsync();
    let payloads: Vec<String> = (0..1000).map(|i| payload(i, 420)).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    w.append_batch("order.created", &refs).expect("generate");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&ledger)
        .expect("open ledger");
    let block = vec![b'x'; 1 << 20];
    for _ in 0..mib {
        f.write_all(&block).expect("write");
    }
    f.write_all(b"\n").expect("write");
    drop(f);
    let started = Instant::now();
    let report = dir.join("append.peak");
    let mut child = measured(binary, &report)
        .arg("append")
        .arg("--ledger")
        .arg(&ledger)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start append");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"{\"after\":true}\n");
    }
    let (status, peak) = finish_measured(child, &report);
    assert_eq!(status, 0, "append failed");
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(dir);
    (secs, peak)
}

/// `ledgertail replay` into a fresh database: (seconds, peak RSS in KiB).
fn replay(binary: &Path, ledger: &Path, db: &Path, key: Option<&KeyFile>) -> (f64, u64) {
    let started = Instant::now();
    let report = db.with_extension("peak");
    let child = measured(binary, &report)
        .arg("replay")
        .arg("--ledger")
        .arg(ledger)
        .arg("--db")
        .arg(db)
        .arg("--no-progress")
        .args(trust_args(key))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start replay");
    let (status, peak) = finish_measured(child, &report);
    let secs = started.elapsed().as_secs_f64();
    assert!(status == 0, "replay failed with status {status}");
    (secs, peak)
}

/// The hidden first argument that makes this program the small parent of
/// a measured command (see [`measured`]).
const MEASURE: &str = "__measure";

/// `ledgertail-bench __measure REPORT PROGRAM ARGS...`: runs the program
/// with this process's stdio, writes "status peak-KiB" to REPORT, and exits
/// with the program's status.
fn measure_child() -> ! {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let report = PathBuf::from(&argv[2]);
    let child = Command::new(&argv[3])
        .args(&argv[4..])
        .spawn()
        .expect("start the measured command");
    let (status, peak) = wait_with_rusage(child);
    std::fs::write(&report, format!("{status} {peak}")).expect("write the report");
    std::process::exit(status.clamp(0, 255));
}

/// A command for `binary` run through this program re-executed as its
/// parent: a child forked straight from the benchmark (which holds large
/// buffers by then) counts the benchmark's memory in its peak until it
/// execs. The figures come back through `report` ([`finish_measured`]).
fn measured(binary: &Path, report: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("the benchmark's own path"));
    c.arg(MEASURE).arg(report).arg(binary);
    c
}

/// Waits for a [`measured`] command: its exit status and peak RSS (KiB).
fn finish_measured(mut child: Child, report: &Path) -> (i32, u64) {
    let waited = child.wait().expect("wait for the measured command");
    let text = std::fs::read_to_string(report).unwrap_or_default();
    let _ = std::fs::remove_file(report);
    let mut f = text.split_whitespace();
    match (
        f.next().and_then(|s| s.parse().ok()),
        f.next().and_then(|s| s.parse().ok()),
    ) {
        (Some(status), Some(peak)) => (status, peak),
        _ => (waited.code().unwrap_or(-1), 0),
    }
}

/// Waits for a child; its exit status and peak RSS (KiB).
fn wait_with_rusage(child: Child) -> (i32, u64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: plain wait4 on our own child, with valid out-pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert!(rc == pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    std::mem::forget(child); // already reaped
    (code, usage.ru_maxrss as u64)
}

/// The ledger's events, authenticated (untimed), in batches of 1000.
fn for_each_batch(
    ledger: &Path,
    key: Option<&KeyFile>,
    mut f: impl FnMut(&[ledgertail::ledger::SealedEvent]),
) {
    let keys = keyring(key);
    // Untimed preparation: the signatures are not what is measured here.
    let policy = SignaturePolicy::Off;
    let mut file = std::fs::File::open(ledger).expect("open ledger");
    let mut framer = Framer::new(0, 1 << 20);
    let mut scratch = Vec::new();
    let mut batch = Vec::with_capacity(1000);
    loop {
        let n = file.read(framer.spare(1 << 20)).expect("read");
        if n == 0 {
            break;
        }
        framer.filled(n);
        while let Some(frame) = framer.next_frame() {
            if let Frame::Line { bytes, .. } = frame {
                batch.push(
                    authenticate(bytes, policy, &keys, &mut scratch)
                        .expect("generated lines are authentic"),
                );
                if batch.len() == 1000 {
                    f(&batch);
                    batch.clear();
                }
            }
        }
    }
    if !batch.is_empty() {
        f(&batch);
    }
}

fn keyring(key: Option<&KeyFile>) -> KeyRing {
    match key {
        Some(k) => {
            let b64 = k.public_base64();
            KeyRing::from_base64([(k.key_id.as_str(), b64.as_str())]).expect("key")
        }
        None => KeyRing::default(),
    }
}

/// Floor (a): the same rows into the same schema with a bare prepared
/// statement, 1000 per transaction, same pragmas; the inserts and the
/// final close (which checkpoints the WAL) are timed, nothing else.
/// Returns (rows/s committed to the WAL, rows/s including the final close).
fn insert_floor(ledger: &Path, db: &Path, key: Option<&KeyFile>) -> (f64, f64) {
    drop(Mirror::open(db, Access::ReadWrite).expect("schema"));
    let mut conn = rusqlite::Connection::open(db).expect("open");
    // The mirror's own settings (page size comes with the schema).
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=16384;",
    )
    .expect("pragmas");
    let mut timed = Duration::ZERO;
    let mut rows = 0u64;
    let mut offset = 0i64;
    for_each_batch(ledger, key, |batch| {
        let started = Instant::now();
        let tx = conn.transaction().expect("tx");
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (ledger, seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .expect("prepare");
            for e in batch {
                stmt.execute(rusqlite::params![
                    "bench",
                    e.seq as i64,
                    e.id,
                    e.ts,
                    e.event_type,
                    e.payload,
                    e.extra,
                    e.prev_hash.map(|h| h.to_hex()),
                    e.hash.to_hex(),
                    e.key_id,
                    e.sig,
                    "2049:1234567",
                    offset,
                ])
                .expect("insert");
                offset += 500;
            }
        }
        tx.commit().expect("commit");
        timed += started.elapsed();
        rows += batch.len() as u64;
    });
    let committed = rows as f64 / timed.as_secs_f64();
    // Closing checkpoints the WAL into the database file: replay's time
    // includes that too (it checkpoints as it goes, and at its end).
    let started = Instant::now();
    drop(conn);
    timed += started.elapsed();
    (committed, rows as f64 / timed.as_secs_f64())
}

/// Floor (b): verification alone (frame, parse, canonicalize, hash,
/// signature), one thread, no database; the file is read into memory first.
fn verify_floor(ledger: &Path, key: Option<&KeyFile>) -> f64 {
    let keys = keyring(key);
    let policy = if key.is_some() {
        SignaturePolicy::Required
    } else {
        SignaturePolicy::Off
    };
    // Streamed (from the page cache: the file was just written or read),
    // so that this process stays small and the RSS of the children it
    // measures is theirs alone.
    let mut file = std::fs::File::open(ledger).expect("open ledger");
    let started = Instant::now();
    let mut framer = Framer::new(0, 1 << 20);
    let mut scratch = Vec::new();
    let mut n = 0u64;
    // Lines are examined in chunks of up to 256, as the verifier pool
    // examines them (signature checks finished together).
    let mut lines: Vec<u8> = Vec::new();
    let mut ends: Vec<usize> = Vec::new();
    let mut results = Vec::new();
    let mut examine_chunk = |lines: &mut Vec<u8>, ends: &mut Vec<usize>| {
        let mut start = 0;
        results.clear();
        examine_each(
            ends.iter().map(|&end| {
                let line = &lines[start..end];
                start = end;
                (line, line.len() as u64)
            }),
            1 << 20,
            policy,
            &keys,
            &mut scratch,
            &mut results,
        );
        assert!(results.iter().all(|e| matches!(e, Examined::Authentic(_))));
        n += ends.len() as u64;
        lines.clear();
        ends.clear();
    };
    loop {
        let got = file.read(framer.spare(1 << 20)).expect("read");
        if got == 0 {
            break;
        }
        framer.filled(got);
        while let Some(frame) = framer.next_frame() {
            if let Frame::Line { bytes, .. } = frame {
                lines.extend_from_slice(bytes);
                ends.push(lines.len());
                if ends.len() == 256 {
                    examine_chunk(&mut lines, &mut ends);
                }
            }
        }
    }
    examine_chunk(&mut lines, &mut ends);
    n as f64 / started.elapsed().as_secs_f64()
}

fn sqlite_utils(ledger: &Path, dir: &Path, events: u64, repeat: usize) {
    println!("\n### Against sqlite-utils (no verification at all)\n");
    let found = Command::new("sqlite-utils")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        println!(
            "`sqlite-utils` is not installed (`pip install sqlite-utils`): comparison skipped."
        );
        return;
    }
    let mut rates = Vec::new();
    for r in 0..repeat {
        let db = dir.join(format!("sqlite-utils-{r}.db"));
        remove_db(&db);
        let started = Instant::now();
        let status = Command::new("sqlite-utils")
            .arg("insert")
            .arg(&db)
            .arg("events")
            .arg(ledger)
            .arg("--nl")
            .stdout(Stdio::null())
            .status()
            .expect("sqlite-utils");
        assert!(status.success(), "sqlite-utils failed");
        rates.push(events as f64 / started.elapsed().as_secs_f64());
        remove_db(&db);
    }
    println!(
        "`sqlite-utils insert DB events LEDGER --nl` on the main case: **{:.0} events/s** (median of {repeat}); compare with the catch-up figure above.",
        median(&rates)
    );
}

struct Live {
    events: u64,
    p50: f64,
    p99: f64,
    max: f64,
    max_lag: u64,
    kept_up: bool,
}

fn start_run(binary: &Path, dir: &Path) -> (Child, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("live dir");
    let config = dir.join("ledgertail.toml");
    std::fs::write(
        &config,
        "db = \"live.db\"\nlisten = \"127.0.0.1:0\"\nlog_level = \"warn\"\n[[ledger]]\nname = \"bench\"\npath = \"live.jsonl\"\nsignatures = \"off\"\n",
    )
    .expect("config");
    let child = Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start run");
    let db = dir.join("live.db");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !db.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, dir.join("live.jsonl"), db)
}

fn stop(mut child: Child) {
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
}

fn live(binary: &Path, dir: &Path, rate: u64, secs: u64) -> Live {
    let _ = std::fs::remove_dir_all(dir);
    let (child, ledger, db) = start_run(binary, dir);
    let total = rate * secs;
    let written: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let origin = Instant::now();
    let produced = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (written, produced, done) = (written.clone(), produced.clone(), done.clone());
        let ledger = ledger.clone();
        std::thread::spawn(move || {
            // Without fsync: the page cache is what `run` reads, and an
            // fsync per event would cap the producer, not ledgertail.
            let mut w = Writer::new(&ledger).without_fsync();
            let mut next = 0u64;
            let start = Instant::now();
            while next < total {
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
                if due > next {
                    let payloads: Vec<String> = (next..due).map(|i| payload(i, 420)).collect();
                    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
                    // Stamped just before the write (a row can be seen
                    // before a stamp taken after it): the figure includes
                    // the producer's own write, a few microseconds.
                    let t = origin.elapsed().as_nanos() as u64;
                    for seq in next..due {
                        written[seq as usize].store(t, Ordering::Release);
                    }
                    w.append_batch("order.created", &refs).expect("append");
                    next = due;
                    produced.store(next, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let reader =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open mirror");
    let mut latencies = Vec::with_capacity(total as usize);
    let mut seen = 0u64;
    let mut max_lag = 0u64;
    let deadline_after_done = Duration::from_secs(5);
    let mut done_at = None;
    while seen < total {
        let max: Option<i64> = reader
            .query_row(
                "SELECT max(seq) FROM events WHERE ledger = 'bench'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(None);
        let now = origin.elapsed().as_nanos() as u64;
        let upto = max.map_or(0, |m| m as u64 + 1);
        for seq in seen..upto {
            let w = written[seq as usize].load(Ordering::Acquire);
            latencies.push(now.saturating_sub(w) as f64 / 1e6);
        }
        seen = seen.max(upto);
        max_lag = max_lag.max(produced.load(Ordering::Relaxed).saturating_sub(seen));
        if done.load(Ordering::Relaxed) && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|d| d.elapsed() > deadline_after_done) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = producer.join();
    stop(child);
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&latencies, p);
    Live {
        events: seen,
        p50: pct(0.5),
        p99: pct(0.99),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        max_lag,
        kept_up: seen == total,
    }
}

/// CPU seconds `run` uses over `secs` with a mirrored ledger and no writes.
fn idle(binary: &Path, dir: &Path, secs: u64) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("idle dir");
    let mut w = Writer::new(dir.join("live.jsonl")).without_fsync();
    let payloads: Vec<String> = (0..1000).map(|i| payload(i, 420)).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    w.append_batch("order.created", &refs).expect("append");
    let (child, _, db) = start_run(binary, dir);
    // Let it catch up and settle (and its first parity check pass).
    let settle = Instant::now();
    loop {
        let n: i64 = rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT count(*) FROM events", [], |r| r.get(0)))
            .unwrap_or(0);
        if n == 1000 || settle.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_seconds(child.id());
    std::thread::sleep(Duration::from_secs(secs));
    let after = cpu_seconds(child.id());
    stop(child);
    after - before
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(Path::new(&format!("/proc/{pid}/stat")))
}

/// User plus system CPU seconds from a `/proc/…/stat` file (a process's
/// or one thread's).
fn stat_cpu_seconds(path: &Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) close with ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// The `p` quantile of sorted figures (NaN when there are none).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
