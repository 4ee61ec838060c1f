//! The benchmark in its smoke mode: it runs end to end and prints every
//! section of its report (its figures are not checked: this machine is
//! shared and a debug build is slow; see docs/performance.md).

use std::process::Command;

#[test]
fn the_benchmark_runs_in_smoke_mode_and_reports_every_section() {
    let out = Command::new(env!("CARGO_BIN_EXE_ledgertail-bench"))
        .args(["--smoke", "--ledgertail", env!("CARGO_BIN_EXE_ledgertail")])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for section in [
        "## Catch-up",
        "| unsigned, ~550 B |",
        "| signed (required), ~550 B |",
        "| unsigned, ~1 MiB |",
        "## Finding the head from the end",
        "## Parity check cost",
        "| incremental, after 10 more events |",
        "## Live latency",
        "| 10000 | sealed |",
        "| 10000 | adopted |",
        "## Adopting a plain JSON log",
        "| adopted | 20000 |",
        "## Idle cost",
        "CPU-seconds per minute",
        "- machine:",
        "## Fleet store (PostgreSQL)",
        "| the central table (the primary key, the index by id, the chain trigger;",
        "| + a stored jsonb copy of the payload (`--payload-json stored`) |",
        "shipping with a stored jsonb copy ev/s",
        "| 10 ms round trip |",
        "PostgreSQL transactions/s",
        "## The verifiable log",
        "| inclusion |",
        "### The verifiable log at 50 ledgers",
        "| [tlog], a witness that never answers |",
    ] {
        assert!(report.contains(section), "{section} missing:\n{report}");
    }
}
