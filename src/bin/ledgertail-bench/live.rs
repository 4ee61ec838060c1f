//! The live path: `run` following a producer at given rates (latency,
//! CPU per event, memory), the tail section, and the idle cost.

use super::*;

pub(crate) fn live_latency(binary: &Path, dir: &Path, args: &Args) {
    println!("\n## Live latency (`run` following a producer)\n");
    println!("From a line's `\\n` written to the file to its row visible in SQLite (a reader polling every 1 ms). The producer appends what is due every 0.5 ms (so at 2,000 events/s about one event per write). CPU: what `run` used from the first event written to the last one seen, per million events; RSS: `run`'s peak. *adopted*: the same payloads written as a plain JSON log (`format = \"plain\"`), sealed by `run` as it reads them (target: p99 within 1.5× the sealed figure at 10,000 lines/s).\n");
    println!(
        "| rate ev/s | ledger | seconds | events | p50 ms | p99 ms | max ms | max lag (events) | kept up | CPU-s per 1M events | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &rate in &args.rates {
        let mut sealed_p99 = None;
        for plain in [false, true] {
            let m = live_median(binary, dir, args, rate, plain);
            let versus = match sealed_p99 {
                Some(p99) => format!(" ({:.2}× sealed)", m.p99 / p99),
                None => String::new(),
            };
            sealed_p99.get_or_insert(m.p99);
            println!(
                "| {rate} | {} | {} | {} | {:.2} | {:.2}{versus} | {:.2} | {} | {} | {:.1} | {:.1} |",
                if plain { "adopted" } else { "sealed" },
                args.live_secs,
                m.events,
                m.p50,
                m.p99,
                m.max,
                m.max_lag,
                if m.kept_up { "yes" } else { "NO" },
                m.cpu_per_million,
                m.peak_rss_mib
            );
        }
    }
}

/// The run of median p99 among `args.repeat` live runs at `rate`.
fn live_median(binary: &Path, dir: &Path, args: &Args, rate: u64, plain: bool) -> Live {
    let mut runs = Vec::new();
    for r in 0..args.repeat {
        let extra = args.commit_interval_millis.map_or(String::new(), |ms| {
            format!("commit_interval_millis = {ms}\n")
        });
        let name = format!("live-{rate}-{}-{r}", if plain { "plain" } else { "sealed" });
        runs.push(live(
            binary,
            &dir.join(name),
            rate,
            args.live_secs,
            &extra,
            plain,
        ));
    }
    runs.sort_by(|a, b| a.p99.total_cmp(&b.p99));
    runs.swap_remove(runs.len() / 2)
}

pub(crate) fn tail_section(binary: &Path, dir: &Path, args: &Args) {
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

pub(crate) struct Live {
    events: u64,
    p50: f64,
    p99: f64,
    max: f64,
    max_lag: u64,
    kept_up: bool,
    /// `run`'s CPU seconds per million events, while it followed.
    cpu_per_million: f64,
    peak_rss_mib: f64,
}

/// `run` following a producer at `rate` for `secs`: a sealed ledger, or
/// (`plain`) the same payloads as a plain JSON log that `run` adopts.
pub(crate) fn live(
    binary: &Path,
    dir: &Path,
    rate: u64,
    secs: u64,
    extra: &str,
    plain: bool,
) -> Live {
    let _ = std::fs::remove_dir_all(dir);
    let ledger_extra = if plain { "format = \"plain\"\n" } else { "" };
    let (child, ledger, db) = start_run_with(binary, dir, extra, ledger_extra);
    let total = rate * secs;
    let cpu_before = cpu_seconds(child.id());
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
            let mut w = LiveWriter::new(&ledger, plain);
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
                    w.append(&refs);
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
    let cpu = cpu_seconds(child.id()) - cpu_before;
    let peak_rss_mib = proc_status(child.id(), "VmHWM") as f64 / 1024.0;
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
        cpu_per_million: cpu / seen.max(1) as f64 * 1e6,
        peak_rss_mib,
    }
}

/// The live producer: sealed events through the producer library, or the
/// same payloads as plain lines, one write per batch (as a logger does).
enum LiveWriter {
    Sealed(Box<Writer>),
    Plain(std::fs::File),
}

impl LiveWriter {
    fn new(ledger: &Path, plain: bool) -> LiveWriter {
        if plain {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(ledger)
                .expect("open the plain log");
            LiveWriter::Plain(file)
        } else {
            LiveWriter::Sealed(Box::new(Writer::new(ledger).without_fsync()))
        }
    }

    fn append(&mut self, payloads: &[&str]) {
        use std::io::Write as _;
        match self {
            LiveWriter::Sealed(w) => {
                w.append_batch("order.created", payloads).expect("append");
            }
            LiveWriter::Plain(f) => {
                let text: String = payloads.iter().map(|p| format!("{p}\n")).collect();
                f.write_all(text.as_bytes()).expect("append");
            }
        }
    }
}

/// CPU seconds `run` uses over `secs` with a mirrored ledger and no writes.
pub(crate) fn idle(binary: &Path, dir: &Path, secs: u64) -> f64 {
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
