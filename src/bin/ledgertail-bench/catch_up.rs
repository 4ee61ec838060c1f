//! Catch-up: `replay` next to the floors, `verify`'s memory at scale,
//! and an append after a very long line.

use super::*;

pub(crate) fn catch_up(binary: &Path, dir: &Path, args: &Args) {
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

/// `verify`, without and with `--db`, on ledgers of a tenth of `n` and of
/// `n` events, each with an id (one in a thousand reusing an earlier one):
/// peak RSS should not grow with the ledger. Prints a table.
pub(crate) fn verify_memory(binary: &Path, dir: &Path, n: u64) {
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

/// One `append` to a ledger of 1,000 events that ends in a complete line
/// of `mib` MiB: (seconds, peak RSS in KiB).
pub(crate) fn append_after_long_line(binary: &Path, dir: &Path, mib: u64) -> (f64, u64) {
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
