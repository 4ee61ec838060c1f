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

mod adopt;
mod catch_up;
mod fleet;
mod fleet_scale;
mod floors;
mod generators;
mod harness;
mod ingest;
mod live;
mod many;
mod parity;
mod pg;
mod tlog;
mod tlog_scale;
use catch_up::*;
use floors::*;
use generators::*;
use harness::*;
use ledgertail::ledger::frame::{Frame, Framer};
use ledgertail::ledger::{authenticate, examine_each, Examined, KeyRing, SignaturePolicy};
use ledgertail::mirror::{Access, Mirror};
use ledgertail::producer::{KeyFile, Writer};
use live::*;

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
    #[arg(long, value_delimiter = ',', default_values_t = vec![2_000u64, 10_000, 50_000])]
    rates: Vec<u64>,
    /// `commit_interval_millis` of the live section's `run` (its default
    /// when not given).
    #[arg(long)]
    commit_interval_millis: Option<u64>,
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
    /// Run only these sections (default: all): catch-up, live, adopt, tail,
    /// verify, parity, ledgers, idle, fleet, tlog; fleet-scale (a part of
    /// fleet: many ledgers into PostgreSQL) or tlog-scale (a part of tlog:
    /// the log at many growing ledgers) alone.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
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
    if wanted("adopt") {
        adopt::adoption(&binary, &dir.join("adopt"), &args);
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
