//! `ledgertail append` when the disk says no: a failed append leaves no half
//! line behind.

use crate::common;

use common::*;

#[test]
fn a_failed_append_leaves_no_half_line() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("app.jsonl");
    let input: String = (0..3).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let out = run_stdin(
        bin().arg("append").arg("--ledger").arg(&ledger),
        &input,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let before = std::fs::metadata(&ledger).unwrap().len();
    // A file size limit (like a full disk) stops the write midway.
    let limit = before + 700;
    let input: String = (3..40)
        .map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40)))
        .collect();
    let out = run_stdin(
        bin().arg("append").arg("--ledger").arg(&ledger),
        &input,
        Some(limit),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a clear failure: {}",
        show(&out)
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("reached the file whole") && err.contains("partial bytes were removed"),
        "{err}"
    );
    let bytes = std::fs::read(&ledger).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'), "ends at a complete line");
    assert!(bytes.len() as u64 <= limit);
    let out = run(bin().args(["verify", "--ledger"]).arg(&ledger));
    assert_eq!(
        out.status.code(),
        Some(0),
        "every line whole: {}",
        show(&out)
    );
    // The next append (no limit) goes on from the last complete event.
    let out = run_stdin(
        bin().arg("append").arg("--ledger").arg(&ledger),
        "{\"after\":true}\n",
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = run(bin().args(["verify", "--ledger"]).arg(&ledger));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}
