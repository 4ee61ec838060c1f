//! Adoption: a plain JSON log (an nginx-style access log) sealed by the
//! sidecar as it reads it, next to the sealed ledger of the same payloads.
//! The sidecar computes one hash per line in both; adopting also parses
//! the line into its canonical form, and checks no signature.

use super::*;

/// One access-log line of about 250 bytes, as nginx's
/// `log_format … escape=json` writes it.
pub(crate) fn access_line(i: u64) -> String {
    format!(
        "{{\"time\":\"2026-12-07T10:{:02}:{:02}+00:00\",\"remote_addr\":\"10.0.{}.{}\",\"method\":\"GET\",\"uri\":\"/api/orders/{i}?page={}\",\"status\":{},\"bytes\":{},\"referer\":\"\",\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0\",\"request_time\":0.{:03}}}",
        i / 60 % 60,
        i % 60,
        i / 256 % 256,
        i % 256,
        i % 7,
        if i.is_multiple_of(50) { 404 } else { 200 },
        1000 + i % 9000,
        i % 1000
    )
}

/// The plain log of `n` access lines.
fn generate_plain(path: &Path, n: u64) {
    use std::io::Write as _;
    let file = std::fs::File::create(path).expect("create the access log");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    for i in 0..n {
        writeln!(out, "{}", access_line(i)).expect("write the access log");
    }
    out.flush().expect("write the access log");
}

/// The sealed ledger of the same `n` payloads.
fn generate_sealed(path: &Path, n: u64) {
    let _ = std::fs::remove_file(path);
    let mut w = Writer::new(path).without_fsync();
    let mut i = 0;
    while i < n {
        let k = (n - i).min(1000);
        let payloads: Vec<String> = (i..i + k).map(access_line).collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        w.append_batch("http.request", &refs).expect("generate");
        i += k;
    }
}

/// `replay --config` of a plain ledger: seconds and peak RSS in KiB.
fn replay_plain(binary: &Path, log: &Path, db: &Path) -> (f64, u64) {
    let config = db.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "db = \"{}\"\n[[ledger]]\nname = \"bench\"\npath = \"{}\"\nformat = \"plain\"\nts_field = \"time\"\ntype = \"http.request\"\n",
            db.display(),
            log.display()
        ),
    )
    .expect("config");
    replay_with(binary, db, &["--config".into(), config.into()])
}

pub(crate) fn adoption(binary: &Path, dir: &Path, args: &Args) {
    let n = args.events;
    std::fs::create_dir_all(dir).expect("create the adoption folder");
    println!("\n## Adopting a plain JSON log (`format = \"plain\"`)\n");
    println!("An nginx-style JSON access log of {n} lines (about 250 bytes each), adopted by `replay` into a fresh database, next to the sealed ledger of the same payloads (the same rows, each line carrying its seq, hash and prev_hash). Targets: adopted ≥ 0.8× sealed, and ≥ 100,000 lines/s.\n");
    println!("| ledger | lines | MB | catch-up lines/s | peak RSS MiB | ÷ sealed | target |");
    println!("|---|---|---|---|---|---|---|");
    let plain = dir.join("access.log");
    let sealed = dir.join("access-sealed.jsonl");
    generate_plain(&plain, n);
    generate_sealed(&sealed, n);
    let mut runs: [Vec<(f64, f64)>; 2] = Default::default();
    for r in 0..args.repeat {
        let db = dir.join(format!("adopt-sealed-{r}.db"));
        remove_db(&db);
        let (secs, peak) = replay(binary, &sealed, &db, None);
        runs[0].push((n as f64 / secs, peak as f64 / 1024.0));
        remove_db(&db);
        let db = dir.join(format!("adopt-plain-{r}.db"));
        remove_db(&db);
        let (secs, peak) = replay_plain(binary, &plain, &db);
        runs[1].push((n as f64 / secs, peak as f64 / 1024.0));
        remove_db(&db);
    }
    let rate = |i: usize| median(&runs[i].iter().map(|r| r.0).collect::<Vec<_>>());
    let rss = |i: usize| median(&runs[i].iter().map(|r| r.1).collect::<Vec<_>>());
    let (sealed_rate, plain_rate) = (rate(0), rate(1));
    let mb = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len()) as f64 / 1e6;
    println!(
        "| sealed | {n} | {:.0} | {sealed_rate:.0} | {:.1} | 1.00 | |",
        mb(&sealed),
        rss(0)
    );
    let ratio = plain_rate / sealed_rate;
    let met = ratio >= 0.8 && plain_rate >= 100_000.0;
    println!(
        "| adopted | {n} | {:.0} | {plain_rate:.0} | {:.1} | {ratio:.2} | {} |",
        mb(&plain),
        rss(1),
        if met { "met" } else { "NOT MET" }
    );
}
