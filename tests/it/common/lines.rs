//! Ledger lines made and read by hand: a valid chain written in a folder
//! of its own, and whole files written, appended to or read as lines.

use std::io::Write;
use std::path::Path;

use ledgertail::ledger::event::{seal_line, Draft};
use ledgertail::ledger::{json, Hash};
use ledgertail::producer::Writer;

/// A valid chain of `n` events (unsigned), as lines, made in a folder of
/// its own (so that no file of it sits beside a ledger under test).
pub fn chain(n: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scratch.jsonl");
    let mut w = Writer::new(&path).without_fsync();
    for i in 0..n {
        w.append(
            "test",
            &format!("{{\"i\":{i},\"note\":\"event number {i}\"}}"),
        )
        .unwrap();
    }
    lines_of(&path)
}

pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

pub fn append_lines(path: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    append_text(path, &text);
}

/// logrotate's `copytruncate`: `live` copied to `rotated` (replacing it,
/// as `rotate 1` does), then emptied in place.
pub fn copytruncate(live: &Path, rotated: &Path) {
    let _ = std::fs::remove_file(rotated);
    std::fs::copy(live, rotated).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(live)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// Appends `text` as it is (creating the file), as a program logging does.
pub fn append_text(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// A sealed line with any seq, prev_hash, id, payload and signer.
pub fn sealed(
    seq: u64,
    prev: Option<Hash>,
    id: Option<&str>,
    payload: &str,
    signer: Option<(&str, &ed25519_dalek::SigningKey)>,
) -> (String, Hash) {
    let payload = json::parse(payload).unwrap();
    seal_line(
        &Draft {
            seq,
            prev_hash: prev,
            ts: "2026-12-01T00:00:00Z",
            event_type: "test",
            id,
            payload: &payload,
        },
        signer,
    )
    .unwrap()
}

pub fn hash_of(line: &str) -> Hash {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    Hash::from_hex(v["hash"].as_str().unwrap()).unwrap()
}

pub fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["seq"].as_u64().unwrap()
}
