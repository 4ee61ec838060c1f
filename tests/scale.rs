//! Operator-grade at scale (issue 10): memory bounded per batch whatever
//! the line size, costs that do not grow with what cannot have changed,
//! and behaviour an operator relies on. Each test failed on the build
//! before its fix (`LEDGERTAIL_BIN` points the binary tests at another
//! build).

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use ledgertail::config::{FileConfig, Overrides, Settings};
use ledgertail::mirror::{Access, Mirror};
use ledgertail::producer::Writer;
use ledgertail::shipper::{Batching, Shipper};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// `n` events whose lines are about `bytes` long.
fn big_events(ledger: &Path, n: usize, bytes: usize) {
    let mut w = Writer::new(ledger).without_fsync();
    for i in 0..n {
        let pad = "x".repeat(bytes - 200);
        w.append("big", &format!("{{\"i\":{i},\"pad\":\"{pad}\"}}"))
            .unwrap();
    }
}

#[test]
fn a_batch_is_cut_by_bytes_as_well_as_by_lines() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    big_events(&live, 20, 300_000);
    let over = Overrides {
        ledger: Some(live.clone()),
        db: Some(dir.path().join("m.db")),
        ..Overrides::default()
    };
    let s = Settings::resolve(&FileConfig::default(), &over, dir.path()).unwrap();
    let mirror = Mirror::open(&s.db, Access::ReadWrite).unwrap();
    let batching = Batching {
        max_events: 1000,
        max_bytes: 1 << 20,
        max_wait: Duration::from_secs(3600),
    };
    let mut shipper = Shipper::new(s.ledgers[0].clone(), mirror, batching).unwrap();
    let mut sizes = Vec::new();
    shipper
        .catch_up(&AtomicBool::new(false), &mut |b| {
            if b.commit.is_some() {
                sizes.push(b.mirrored_seen_at.len());
            }
        })
        .unwrap();
    assert_eq!(sizes.iter().sum::<usize>(), 20);
    // 1 MiB of 300 kB lines: three fit, the fourth goes over and ends it.
    assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
}

#[test]
fn replay_of_one_mib_lines_stays_within_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    big_events(&live, 60, 1_040_000);
    let mut replay = bin();
    replay
        .args(["replay", "--no-progress", "--ledger"])
        .arg(&live)
        .arg("--db")
        .arg(dir.path().join("m.db"));
    let Some((code, kib, err)) = peak_rss_or_skip("replay's peak memory", &replay, b"") else {
        return;
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(kib < 64 * 1024, "replay peaked at {} MiB", kib / 1024);
    assert_eq!(
        count(&dir.path().join("m.db"), "SELECT count(*) FROM events"),
        60
    );
}

/// A ledger whose fourth line halts it (seq_gap).
fn halting_ledger(ledger: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("s.jsonl");
    append(&mut Writer::new(&scratch).without_fsync(), 0, 6);
    let lines: Vec<String> = std::fs::read_to_string(&scratch)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        ledger,
        format!("{}{}{}{}", lines[0], lines[1], lines[2], lines[5]),
    )
    .unwrap();
}

#[test]
fn log_level_warning_means_warn_and_a_bare_word_is_refused() {
    let s = setup("log_level = \"warning\"");
    halting_ledger(&s.ledger);
    // RUST_LOG would outrank the file: the file's level is what is tried.
    let out = bin()
        .env_remove("RUST_LOG")
        .args(["replay", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("ledger halted"),
        "the halt is logged: {}",
        show(&out)
    );
    let out = bin()
        .env_remove("RUST_LOG")
        .args(["--log-level", "Warning", "replay", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("ledger halted"),
        "{}",
        show(&out)
    );
    for (how, args) in [
        ("flag", vec!["--log-level", "loud", "status", "--db"]),
        (
            "flag with a target",
            vec!["--log-level", "ledgertail=verbose", "status", "--db"],
        ),
    ] {
        let out = bin()
            .env_remove("RUST_LOG")
            .args(&args)
            .arg(&s.db)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{how}: {}", show(&out));
        assert!(
            text(&out.stderr).contains("not a log level"),
            "{how}: {}",
            show(&out)
        );
    }
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("\"warning\"", "\"loud\""),
    )
    .unwrap();
    let out = bin()
        .env_remove("RUST_LOG")
        .args(["replay", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("log_level"), "{}", show(&out));
}

#[test]
fn every_duration_option_is_bounded_when_the_config_loads() {
    for option in [
        "shutdown_grace_secs = 9223372036854775807",
        "parity_interval_secs = 9223372036854775807",
        "batch_max_millis = 9223372036854775807",
        "poll_interval_millis = 9223372036854775807",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("lt.toml");
        std::fs::write(&config, format!("{option}\n")).unwrap();
        let run = bin()
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish_within(run, Duration::from_secs(30), "run with a bad option");
        assert_eq!(out.status.code(), Some(2), "{option}: {}", show(&out));
        let field = option.split(' ').next().unwrap();
        assert!(
            text(&out.stderr).contains(field),
            "{option}: {}",
            show(&out)
        );
        assert!(
            text(&out.stderr).contains("must be between"),
            "{option}: {}",
            show(&out)
        );
    }
}
