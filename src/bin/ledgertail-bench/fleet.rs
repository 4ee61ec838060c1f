//! The fleet store's figures, against a PostgreSQL server this
//! benchmark starts for itself (Debian's `postgresql`: initdb into its
//! folder, pg_ctl on a free loopback port, as the postgres user when run
//! as root):
//!
//! - shipping a mirror of N events (`replay` with `[postgres]` on a mirror
//!   already caught up, so it only ships) next to its floors: a COPY of
//!   the raw lines into a plain table, and of the same rows into the same
//!   table, each in one transaction; and what each part of that table
//!   costs ([`super::ingest`]);
//! - from a line written to its row visible centrally, at 10k events/s;
//! - 50 sidecars shipping at once into the one server (the aggregate);
//! - one sidecar with many ledgers, live and idle ([`super::fleet_scale`]);
//! - local catch-up (`run` until the mirror holds N) with `[postgres]`
//!   configured, next to the same without.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgertail::producer::Writer;
use postgres::fallible_iterator::FallibleIterator as _;

use super::pg::{ledgertail, Server};

fn config(dir: &Path, db: &str, ledger: &Path, extra: &str) -> PathBuf {
    let path = dir.join(format!("{db}.toml"));
    std::fs::write(
        &path,
        format!(
            "db = \"{db}.db\"\nlisten = \"127.0.0.1:0\"\nlog_level = \"warn\"\n{extra}\n[[ledger]]\nname = \"bench\"\npath = \"{}\"\nsignatures = \"off\"\n",
            ledger.display()
        ),
    )
    .expect("config");
    path
}

/// Every figure of the section.
pub fn fleet(
    binary: &Path,
    dir: &Path,
    ledger: &Path,
    events: u64,
    live_secs: u64,
    sidecars: usize,
    ledgers: usize,
) {
    println!("\n## Fleet store (PostgreSQL)\n");
    let Some(server) = Server::start() else {
        println!("skipped: no PostgreSQL server could be started (apt-get install postgresql)");
        return;
    };
    std::fs::create_dir_all(dir).expect("fleet dir");
    let mut client = server.client();
    client.batch_execute("SELECT 1").expect("server up");
    // The mirror to ship, caught up locally first.
    let plain = config(dir, "outbox", ledger, "");
    let status = ledgertail(binary, &["replay", "--no-progress"], &plain)
        .status()
        .expect("replay");
    assert!(status.success(), "local replay failed");
    let version: String = client
        .query_one("SHOW server_version", &[])
        .map(|r| r.get(0))
        .unwrap_or_default();
    println!("PostgreSQL {version} on this machine, fsync on; one sidecar ships with `replay` (mirror already caught up, its parity checked beside the shipping), batches of 5000 rows, one transaction each; then again into a schema that stores a jsonb copy of each payload (`setup-postgres --payload-json stored`). Floors, each one COPY in one transaction: the ledger's raw lines into a table of one text column (what any shipper's rows cost at least), and the same rows as the sidecar's into the central table (its triggers included).\n");

    let shipping = config(dir, "outbox", ledger, &server.table("shipper"));
    super::ingest::settle(&mut client);
    let started = Instant::now();
    let status = ledgertail(binary, &["replay", "--no-progress"], &shipping)
        .status()
        .expect("replay");
    let ship_secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "shipping failed");
    let stored_secs = ship_into_stored_copy(binary, dir, ledger, &server, &mut client);
    let raw = super::ingest::raw_text(ledger);
    let first_raw = super::ingest::raw_lines(&mut client, &raw);
    let (text, anchor) = super::ingest::rows_text(&dir.join("outbox.db"), "floor");
    let copy_secs = super::ingest::central(&mut client, &text, "floor", &anchor);
    let mut steps = super::ingest::parts(&mut client, &text);
    // The floor is the faster of two: the first COPY after the shipping
    // runs was up to 3 times slower than the same COPY later (on this
    // host's shared disk), which would flatter every ratio.
    let raw_secs = first_raw.min(super::ingest::raw_lines(&mut client, &raw));
    drop(raw);
    println!(
        "| events | shipping s | shipping ev/s | raw-line COPY rows/s | shipping ÷ raw-line COPY | COPY into the central table rows/s | shipping ÷ that COPY | shipping with a stored jsonb copy ev/s | that ÷ raw-line COPY |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let rate = |secs: f64| events as f64 / secs;
    println!(
        "| {events} | {ship_secs:.2} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} |",
        rate(ship_secs),
        rate(raw_secs),
        raw_secs / ship_secs,
        rate(copy_secs),
        copy_secs / ship_secs,
        rate(stored_secs),
        raw_secs / stored_secs,
    );
    println!("\nWhat each part of the central table costs: the same rows COPYed (one transaction each) into a table that adds one part at a time; the last row is the central table itself:\n");
    println!("| into | COPY s | rows/s | ÷ raw-line COPY |");
    println!("|---|---|---|---|");
    println!(
        "| the raw lines, one text column (the faster of two) | {raw_secs:.2} | {:.0} | 1.00 |",
        rate(raw_secs)
    );
    steps.push((
        "the central table (the primary key, the index by id, the chain trigger; payload_json computed when read: a new store)",
        copy_secs,
    ));
    for (what, secs) in steps {
        println!(
            "| {what} | {secs:.2} | {:.0} | {:.2} |",
            rate(secs),
            raw_secs / secs
        );
    }

    println!("\nFrom a line written (a producer at a fixed rate for {live_secs} s, appending what is due every 0.5 ms) to its row visible in PostgreSQL (a reader told of each central head by a NOTIFY at its commit); `run`'s peak RSS:\n");
    println!("| rate ev/s | events | p50 ms | p99 ms | max ms | kept up | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    notify_heads(&mut client);
    for rate in [2_000, 10_000] {
        let l = live_central(
            binary,
            &server,
            &dir.join(format!("live-{rate}")),
            rate,
            live_secs,
        );
        println!(
            "| {rate} | {} | {:.1} | {:.1} | {:.1} | {} | {:.1} |",
            l.0,
            l.1,
            l.2,
            l.3,
            if l.4 { "yes" } else { "NO" },
            l.5
        );
    }

    let (total, secs) = many_sidecars(
        binary,
        &server,
        &dir.join("many"),
        sidecars,
        (events / 20).max(1000),
    );
    println!("\n{sidecars} sidecars (each its own process, source and mirror of {} events) shipping at once into the one server:\n", total / sidecars as u64);
    println!("| sidecars | events | seconds | aggregate ev/s |");
    println!("|---|---|---|---|");
    println!(
        "| {sidecars} | {total} | {secs:.2} | {:.0} |",
        total as f64 / secs
    );

    super::fleet_scale::fleet_scale(binary, &server, &dir.join("scale"), ledgers, live_secs);

    let (without, with) = local_catch_up(binary, &server, &dir.join("local"), ledger, events);
    println!("\nLocal catch-up of `run` (until the mirror holds all {events} events), with and without `[postgres]` (the shipping thread reading the same mirror meanwhile):\n");
    println!("| without ev/s | with `[postgres]` ev/s | with ÷ without |");
    println!("|---|---|---|");
    println!(
        "| {:.0} | {:.0} | {:.2} |",
        events as f64 / without,
        events as f64 / with,
        without / with
    );
}

/// `run` with `[postgres]` under a producer at `rate`: (events, p50, p99,
/// max in ms, kept up).
fn live_central(
    binary: &Path,
    server: &Server,
    dir: &Path,
    rate: u64,
    secs: u64,
) -> (u64, f64, f64, f64, bool, f64) {
    std::fs::create_dir_all(dir).expect("live dir");
    let ledger = dir.join("live.jsonl");
    let source = format!("live-{rate}");
    let cfg = config(dir, "live", &ledger, &server.table(&source));
    let child = ledgertail(binary, &["run"], &cfg).spawn().expect("run");
    std::thread::sleep(Duration::from_millis(500));
    let total = rate * secs;
    let written: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let origin = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (written, done, ledger) = (written.clone(), done.clone(), ledger.clone());
        std::thread::spawn(move || {
            let mut w = Writer::new(&ledger).without_fsync();
            let (mut next, start) = (0u64, Instant::now());
            while next < total {
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
                if due > next {
                    let payloads: Vec<String> =
                        (next..due).map(|i| super::payload(i, 420)).collect();
                    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
                    let t = origin.elapsed().as_nanos() as u64;
                    for seq in next..due {
                        written[seq as usize].store(t, Ordering::Release);
                    }
                    w.append_batch("order.created", &refs).expect("append");
                    next = due;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let mut latencies = Vec::with_capacity(total as usize);
    let mut seen = 0u64;
    let mut done_at = None;
    let mut heads = server.client();
    heads.batch_execute("LISTEN bench_heads").expect("listen");
    while seen < total {
        // Told of each head at its commit (see `notify_heads`): no polling
        // interval in the figures.
        let mut told = heads.notifications();
        let mut told = told.timeout_iter(Duration::from_millis(100));
        while let Ok(Some(n)) = told.next() {
            let now = origin.elapsed().as_nanos() as u64;
            let Some(head) = n
                .payload()
                .strip_prefix(&format!("{source} "))
                .and_then(|h| h.parse::<u64>().ok())
            else {
                continue;
            };
            for seq in seen..(head + 1).min(total) {
                latencies.push(
                    now.saturating_sub(written[seq as usize].load(Ordering::Acquire)) as f64 / 1e6,
                );
            }
            seen = seen.max(head + 1);
            if seen >= total {
                break;
            }
        }
        if done.load(Ordering::Relaxed) && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|d| d.elapsed() > Duration::from_secs(10)) {
            break;
        }
    }
    let peak_rss_mib = super::proc_status(child.id(), "VmHWM") as f64 / 1024.0;
    let _ = producer.join();
    super::stop(child);
    latencies.sort_by(f64::total_cmp);
    (
        seen,
        super::percentile(&latencies, 0.5),
        super::percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        seen >= total,
        peak_rss_mib,
    )
}

/// Each central head, sent to the listeners of `bench_heads` as
/// "SOURCE SEQ" when the transaction that moved it commits: the live
/// readers learn of a row the moment it is visible, without a polling
/// interval in the figures (what it costs the server, one statement
/// trigger per shipping transaction, is counted in them).
fn notify_heads(client: &mut postgres::Client) {
    client
        .batch_execute(
            "CREATE OR REPLACE FUNCTION public.bench_heads() RETURNS trigger LANGUAGE plpgsql AS $fn$
             BEGIN
                 PERFORM pg_notify('bench_heads', n.source || ' ' || n.head_seq) FROM moved n WHERE n.head_seq IS NOT NULL;
                 RETURN NULL;
             END $fn$;
             CREATE TRIGGER bench_heads AFTER UPDATE ON ledgertail.ledgers REFERENCING NEW TABLE AS moved
                 FOR EACH STATEMENT EXECUTE FUNCTION public.bench_heads();",
        )
        .expect("head notifications");
}

/// Seconds of a `replay` shipping the same caught-up mirror into a schema
/// made with `setup-postgres --payload-json stored` (its parity already
/// checked by the first shipping).
fn ship_into_stored_copy(
    binary: &Path,
    dir: &Path,
    ledger: &Path,
    server: &Server,
    client: &mut postgres::Client,
) -> f64 {
    let table = format!("{}schema = \"stored\"\n", server.table("shipper"));
    let config = config(dir, "outbox", ledger, &table);
    let url = server.url();
    let status = Command::new(binary)
        .args(["setup-postgres", "--postgres", &url, "--schema", "stored"])
        .args(["--payload-json", "stored"])
        .env("LEDGERTAIL_POSTGRES_PASSWORD", super::pg::PASSWORD)
        .stdout(Stdio::null())
        .status()
        .expect("setup-postgres");
    assert!(
        status.success(),
        "setup-postgres --payload-json stored failed"
    );
    super::ingest::settle(client);
    let started = Instant::now();
    let status = ledgertail(binary, &["replay", "--no-progress"], &config)
        .status()
        .expect("replay");
    assert!(status.success(), "shipping into the stored copy failed");
    started.elapsed().as_secs_f64()
}

/// `n` sidecars, each a `replay` shipping its own caught-up mirror of
/// `each` events under its own source, all at once: (events, seconds).
fn many_sidecars(binary: &Path, server: &Server, dir: &Path, n: usize, each: u64) -> (u64, f64) {
    std::fs::create_dir_all(dir).expect("many dir");
    let ledger = dir.join("one.jsonl");
    let mut w = Writer::new(&ledger).without_fsync();
    let mut i = 0;
    while i < each {
        let k = (each - i).min(1000);
        let payloads: Vec<String> = (i..i + k).map(|j| super::payload(j, 420)).collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        w.append_batch("order.created", &refs).expect("generate");
        i += k;
    }
    let base = config(dir, "base", &ledger, "");
    assert!(ledgertail(binary, &["replay", "--no-progress"], &base)
        .status()
        .expect("replay")
        .success());
    let configs: Vec<PathBuf> = (0..n)
        .map(|k| {
            std::fs::copy(dir.join("base.db"), dir.join(format!("s{k}.db"))).expect("copy mirror");
            config(
                dir,
                &format!("s{k}"),
                &ledger,
                &server.table(&format!("sidecar-{k}")),
            )
        })
        .collect();
    let started = Instant::now();
    let children: Vec<Child> = configs
        .iter()
        .map(|c| {
            ledgertail(binary, &["replay", "--no-progress"], c)
                .spawn()
                .expect("replay")
        })
        .collect();
    for mut c in children {
        assert!(
            c.wait().expect("wait").success(),
            "a sidecar failed to ship"
        );
    }
    (each * n as u64, started.elapsed().as_secs_f64())
}

/// Seconds for `run` to mirror all `events` of a copy of `ledger`, without
/// and with `[postgres]`.
fn local_catch_up(
    binary: &Path,
    server: &Server,
    dir: &Path,
    ledger: &Path,
    events: u64,
) -> (f64, f64) {
    std::fs::create_dir_all(dir).expect("local dir");
    let mut secs = Vec::new();
    for (name, extra) in [
        ("without", String::new()),
        ("with", server.table("catch-up")),
    ] {
        let cfg = config(dir, name, ledger, &extra);
        let db = dir.join(format!("{name}.db"));
        let started = Instant::now();
        let child = ledgertail(binary, &["run"], &cfg).spawn().expect("run");
        loop {
            let head: Option<i64> = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .ok()
            .and_then(|c| {
                c.query_row(
                    "SELECT head_seq FROM checkpoints WHERE ledger = 'bench'",
                    [],
                    |r| r.get(0),
                )
                .ok()
            })
            .flatten();
            if head.is_some_and(|h| h as u64 + 1 >= events) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        secs.push(started.elapsed().as_secs_f64());
        super::stop(child);
    }
    (secs[0], secs[1])
}
