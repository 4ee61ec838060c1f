//! Conformance: every case of `tests/data/vectors/manifest.json`, made by an
//! independent implementation, run twice:
//!
//! 1. through the core (tailer + `Chain`), line by line: verdict, offset,
//!    length, seq, hash, canonical payload and extension members, head,
//!    anchor, halt and unfinished tails;
//! 2. through the real `ledgertail replay` binary into a real SQLite file:
//!    exit status, every mirrored row and quarantine row, the checkpoint's
//!    head, anchor and halt, and every mirrored hash recomputed from the
//!    database columns alone.
//!
//! All differences are collected and reported together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ledgertail::ledger::columns::{audit, Columns};
use ledgertail::ledger::frame::Frame;
use ledgertail::ledger::{Chain, ChainRules, Hash, KeyRing, LineJudgement, SignaturePolicy};
use ledgertail::tail::{Opened, TailConfig, Tailer};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vectors")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(vectors().join("manifest.json"))
        .expect("tests/data/vectors/manifest.json");
    serde_json::from_str(&text).unwrap()
}

struct Case {
    name: String,
    live: PathBuf,
    /// File names as the manifest writes them, by absolute path.
    file_names: BTreeMap<PathBuf, String>,
    policy: SignaturePolicy,
    keys: Vec<(String, String)>,
    max_line_bytes: u64,
    require_genesis: bool,
    expect: Value,
}

fn cases() -> Vec<Case> {
    let m = manifest();
    let all_keys: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(vectors().join("keys.json")).unwrap())
            .unwrap();
    m["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let files: Vec<String> = c["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_owned())
                .collect();
            let live = match c.get("ledger_path").and_then(Value::as_str) {
                Some(p) => vectors().join(p),
                None => vectors().join(files.last().unwrap()),
            };
            Case {
                name: c["name"].as_str().unwrap().to_owned(),
                live,
                file_names: files
                    .iter()
                    .map(|f| (vectors().join(f), f.clone()))
                    .collect(),
                policy: SignaturePolicy::parse(c["signature_policy"].as_str().unwrap()).unwrap(),
                keys: c["trusted_keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| {
                        let id = k.as_str().unwrap().to_owned();
                        let key = all_keys[&id].clone();
                        (id, key)
                    })
                    .collect(),
                max_line_bytes: c["max_line_bytes"].as_u64().unwrap(),
                require_genesis: c["require_genesis"].as_bool().unwrap(),
                expect: c["expect"].clone(),
            }
        })
        .collect()
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The canonical payload as the manifest gives it (text, or its SHA-256).
fn payload_matches(expected: &Value, payload: &str) -> bool {
    match expected.get("payload_jcs") {
        Some(Value::String(want)) => want == payload,
        _ => match expected.get("payload_jcs_sha256") {
            Some(Value::String(want)) => *want == sha256_hex(payload),
            _ => true,
        },
    }
}

fn head_of(v: &Value) -> Option<(u64, String)> {
    if v.is_null() {
        return None;
    }
    Some((
        v["seq"].as_u64().unwrap(),
        v["hash"].as_str().unwrap().to_owned(),
    ))
}

/// One judged line, as the core saw it.
#[derive(Debug)]
struct Judged {
    file: String,
    offset: u64,
    length: u64,
    verdict: String,
    seq: Option<u64>,
    hash: Option<String>,
    payload: Option<String>,
    extra: Option<String>,
}

/// A mark on the chain: (seq, hash).
type Mark = Option<(u64, String)>;
/// The checkpoint columns a test reads back.
type CheckpointRow = (
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
    Option<String>,
);

fn run_core(case: &Case) -> (Vec<Judged>, Mark, Mark, BTreeMap<String, u64>) {
    let keys =
        KeyRing::from_base64(case.keys.iter().map(|(a, b)| (a.as_str(), b.as_str()))).unwrap();
    let tail = TailConfig {
        live: case.live.clone(),
        policy: case.policy,
        keys: keys.clone(),
        max_line_bytes: case.max_line_bytes,
        follow_symlink: false,
        plain_first_seqs: None,
        plain_recorded_lines: None,
    };
    let files = tail.discover().unwrap();
    let names: BTreeMap<_, _> = files
        .iter()
        .map(|f| {
            (
                f.id,
                case.file_names
                    .get(&f.path)
                    .cloned()
                    .unwrap_or_else(|| f.path.display().to_string()),
            )
        })
        .collect();
    let Ok(Opened::Ready(mut tailer)) = Tailer::open(files, None, case.max_line_bytes) else {
        panic!("{}: cannot open", case.name)
    };
    let mut chain = Chain::new(
        None,
        None,
        case.policy,
        keys,
        ChainRules {
            require_genesis: case.require_genesis,
        },
        case.max_line_bytes,
    );
    let mut hashes: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut out = Vec::new();
    while let Some((file, frame)) = tailer.next_frame().unwrap() {
        let file = names[&file].clone();
        let (offset, length) = (frame.offset(), frame.length());
        let mut j = Judged {
            file,
            offset,
            length,
            verdict: String::new(),
            seq: None,
            hash: None,
            payload: None,
            extra: None,
        };
        let halts = match frame {
            Frame::TooLong { .. } => {
                j.verdict = "too_long".into();
                false
            }
            Frame::Line { bytes, .. } => {
                match chain.judge(bytes, length, |s| hashes.get(&s).copied()) {
                    LineJudgement::Blank => {
                        j.verdict = "skipped".into();
                        false
                    }
                    LineJudgement::Mirrored(ev) => {
                        hashes.insert(ev.seq, ev.hash);
                        j.verdict = "mirrored".into();
                        j.seq = Some(ev.seq);
                        j.hash = Some(ev.hash.to_hex());
                        j.payload = Some(ev.payload);
                        j.extra = ev.extra;
                        false
                    }
                    LineJudgement::Refused { refusal, .. } => {
                        j.verdict = refusal.verdict.as_str().into();
                        j.seq = refusal.seq;
                        j.hash = refusal.hash.map(|h| h.to_hex());
                        refusal.verdict.halts()
                    }
                }
            }
        };
        out.push(j);
        if halts {
            break;
        }
    }
    let tails = tailer
        .unfinished_tails()
        .into_iter()
        .map(|(p, n)| (case.file_names.get(&p).cloned().unwrap_or_default(), n))
        .collect();
    let head = chain.head.map(|h| (h.seq, h.hash.to_hex()));
    let anchor = chain.anchor.map(|h| (h.seq, h.hash.to_hex()));
    (out, head, anchor, tails)
}

#[test]
fn every_vector_through_the_core() {
    let mut failures = Vec::new();
    let all = cases();
    // Every ledger file shipped with the vectors is exercised by some case.
    let covered: std::collections::BTreeSet<PathBuf> = all
        .iter()
        .flat_map(|c| c.file_names.keys().cloned())
        .collect();
    for entry in std::fs::read_dir(vectors()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            assert!(covered.contains(&path), "{} is in no case", path.display());
        }
    }
    for case in &all {
        let (judged, head, anchor, tails) = run_core(case);
        let lines = case.expect["lines"].as_array().unwrap();
        let mut fail = |msg: String| failures.push(format!("{}: {msg}", case.name));
        if judged.len() != lines.len() {
            fail(format!(
                "{} lines judged, manifest has {}",
                judged.len(),
                lines.len()
            ));
        }
        for (got, want) in judged.iter().zip(lines) {
            let at = format!("{} offset {}", got.file, got.offset);
            if got.file != want["file"].as_str().unwrap()
                || got.offset != want["offset"].as_u64().unwrap()
            {
                fail(format!(
                    "{at}: manifest line is {} offset {}",
                    want["file"], want["offset"]
                ));
                continue;
            }
            if got.length != want["length"].as_u64().unwrap() {
                fail(format!("{at}: length {} != {}", got.length, want["length"]));
            }
            if got.verdict != want["verdict"].as_str().unwrap() {
                fail(format!(
                    "{at}: verdict {} != {} ({})",
                    got.verdict, want["verdict"], want["detail"]
                ));
            }
            if let Some(seq) = want.get("seq").and_then(Value::as_u64) {
                if got.seq != Some(seq) {
                    fail(format!("{at}: seq {:?} != {seq}", got.seq));
                }
            }
            if let Some(hash) = want.get("hash").and_then(Value::as_str) {
                if got.hash.as_deref() != Some(hash) {
                    fail(format!("{at}: hash {:?} != {hash}", got.hash));
                }
            }
            if got.verdict == "mirrored" {
                if !payload_matches(want, got.payload.as_deref().unwrap_or("")) {
                    fail(format!(
                        "{at}: payload {:?} != {}",
                        got.payload, want["payload_jcs"]
                    ));
                }
                let want_extra = want["extra_jcs"].as_str();
                if got.extra.as_deref() != want_extra {
                    fail(format!("{at}: extra {:?} != {want_extra:?}", got.extra));
                }
            }
        }
        if head != head_of(&case.expect["head"]) {
            fail(format!("head {head:?} != {}", case.expect["head"]));
        }
        if anchor != head_of(&case.expect["anchor"]) {
            fail(format!("anchor {anchor:?} != {}", case.expect["anchor"]));
        }
        let want_tails: BTreeMap<String, u64> = case.expect["unfinished_tail_bytes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        if !case.expect["halted"].as_bool().unwrap() && tails != want_tails {
            fail(format!("unfinished tails {tails:?} != {want_tails:?}"));
        }
        let halted_at = judged
            .last()
            .filter(|j| ["fork", "seq_gap", "chain_break"].contains(&j.verdict.as_str()));
        match (case.expect["halt"].as_object(), halted_at) {
            (None, None) => {}
            (Some(h), Some(j))
                if h["verdict"].as_str() == Some(&j.verdict)
                    && h["file"].as_str() == Some(&j.file) => {}
            (want, got) => fail(format!("halt {got:?} != {want:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn replay(case: &Case, db: &Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgertail"));
    cmd.arg("replay")
        .arg("--ledger")
        .arg(&case.live)
        .arg("--db")
        .arg(db)
        .arg("--signatures")
        .arg(case.policy.as_str())
        .arg("--max-line-bytes")
        .arg(case.max_line_bytes.to_string())
        .arg(format!("--require-genesis={}", case.require_genesis))
        .arg("--no-progress")
        .env("RUST_LOG", "error");
    for (id, key) in &case.keys {
        cmd.arg("--trust").arg(format!("{id}={key}"));
    }
    cmd.output().unwrap()
}

#[test]
fn every_vector_through_replay_into_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let db = dir.path().join(format!("{}.db", case.name));
        let ledger = ledgertail::config::default_ledger_name(&case.live);
        let out = replay(&case, &db);
        let mut fail = |msg: String| failures.push(format!("{}: {msg}", case.name));
        let halted = case.expect["halted"].as_bool().unwrap();
        let want_code = if halted { 1 } else { 0 };
        if out.status.code() != Some(want_code) {
            fail(format!(
                "replay exited {:?}, want {want_code}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let conn = rusqlite::Connection::open(&db).unwrap();
        let keys =
            KeyRing::from_base64(case.keys.iter().map(|(a, b)| (a.as_str(), b.as_str()))).unwrap();
        // Every mirrored line is a row with its content and its place.
        let lines = case.expect["lines"].as_array().unwrap();
        let mirrored: Vec<&Value> = lines
            .iter()
            .filter(|l| l["verdict"] == "mirrored")
            .collect();
        let rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE ledger = ?1",
                [&ledger],
                |r| r.get(0),
            )
            .unwrap();
        if rows as usize != mirrored.len()
            || rows as u64 != case.expect["mirrored"].as_u64().unwrap()
        {
            fail(format!("{rows} rows, manifest mirrors {}", mirrored.len()));
        }
        for want in &mirrored {
            let seq = want["seq"].as_i64().unwrap();
            let row = conn.query_row(
                "SELECT hash, payload, extra, file_offset, ts, type, prev_hash, id, key_id, sig FROM events WHERE ledger = ?1 AND seq = ?2",
                rusqlite::params![ledger, seq],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                        r.get::<_, Option<String>>(9)?,
                    ))
                },
            );
            let Ok((hash, payload, extra, offset, ts, ty, prev, id, key_id, sig)) = row else {
                fail(format!("seq {seq}: no row"));
                continue;
            };
            if hash != want["hash"].as_str().unwrap() {
                fail(format!("seq {seq}: hash {hash}"));
            }
            if !payload_matches(want, &payload) {
                fail(format!("seq {seq}: payload {payload}"));
            }
            if extra.as_deref() != want["extra_jcs"].as_str() {
                fail(format!("seq {seq}: extra {extra:?}"));
            }
            if offset as u64 != want["offset"].as_u64().unwrap() {
                fail(format!("seq {seq}: file_offset {offset}"));
            }
            // The mirror is verifiable without the ledger: every column
            // canonical, the hash recomputed, the signature checked under
            // the case's policy, from the columns alone.
            let audited = audit(
                &Columns {
                    seq: seq as u64,
                    ts: &ts,
                    event_type: &ty,
                    payload: &payload,
                    extra: extra.as_deref(),
                    prev_hash: prev.as_deref(),
                    hash: &hash,
                    id: id.as_deref(),
                    key_id: key_id.as_deref(),
                    sig: sig.as_deref(),
                },
                case.policy,
                &keys,
            );
            if let Err(why) = audited {
                fail(format!(
                    "seq {seq}: the row fails the audit from its columns: {why}"
                ));
            }
        }
        // Quarantine: one row per refused line, by verdict and offset.
        let mut stmt = conn
            .prepare("SELECT verdict, file_offset, line_length FROM quarantine WHERE ledger = ?1 ORDER BY file_offset")
            .unwrap();
        let got: Vec<(String, u64, u64)> = stmt
            .query_map([&ledger], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want: Vec<(String, u64, u64)> = lines
            .iter()
            .filter(|l| !["mirrored", "skipped"].contains(&l["verdict"].as_str().unwrap()))
            .map(|l| {
                (
                    l["verdict"].as_str().unwrap().to_owned(),
                    l["offset"].as_u64().unwrap(),
                    l["length"].as_u64().unwrap(),
                )
            })
            .collect();
        if got != want {
            fail(format!("quarantine {got:?} != {want:?}"));
        }
        let counts: BTreeMap<String, u64> = case.expect["quarantined"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        let mut got_counts = BTreeMap::new();
        for (v, _, _) in &got {
            *got_counts.entry(v.clone()).or_insert(0u64) += 1;
        }
        if got_counts != counts {
            fail(format!("quarantine counts {got_counts:?} != {counts:?}"));
        }
        // Checkpoint: head, anchor, halt.
        let (head_seq, head_hash, anchor_seq, anchor_hash, is_halted, halt_verdict): CheckpointRow = conn
            .query_row(
                "SELECT head_seq, head_hash, anchor_seq, anchor_hash, halted, halt_verdict FROM checkpoints WHERE ledger = ?1",
                [&ledger],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .unwrap();
        let head = head_seq.map(|s| s as u64).zip(head_hash);
        let anchor = anchor_seq.map(|s| s as u64).zip(anchor_hash);
        if head != head_of(&case.expect["head"]) {
            fail(format!("checkpoint head {head:?}"));
        }
        if anchor != head_of(&case.expect["anchor"]) {
            fail(format!("checkpoint anchor {anchor:?}"));
        }
        if (is_halted != 0) != halted {
            fail(format!("checkpoint halted {is_halted}"));
        }
        if halted && halt_verdict.as_deref() != case.expect["halt"]["verdict"].as_str() {
            fail(format!("halt verdict {halt_verdict:?}"));
        }
        // A second replay changes nothing (exactly once).
        let again = replay(&case, &db);
        let rows2: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE ledger = ?1",
                [&ledger],
                |r| r.get(0),
            )
            .unwrap();
        let q2: i64 = conn
            .query_row(
                "SELECT count(*) FROM quarantine WHERE ledger = ?1",
                [&ledger],
                |r| r.get(0),
            )
            .unwrap();
        if again.status.code() != Some(want_code) || rows2 != rows || q2 as usize != got.len() {
            fail(format!(
                "second replay: exit {:?}, {rows2} rows, {q2} quarantined",
                again.status.code()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `verify` agrees with the manifest on every case: exit 0 exactly for
/// cases with nothing quarantined and no halt.
#[test]
fn verify_exit_status_matches_every_vector() {
    let mut failures = Vec::new();
    for case in cases() {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgertail"));
        cmd.args(["verify", "--json", "--ledger"])
            .arg(&case.live)
            .args(["--signatures", case.policy.as_str(), "--max-line-bytes"])
            .arg(case.max_line_bytes.to_string())
            .arg(format!("--require-genesis={}", case.require_genesis));
        for (id, key) in &case.keys {
            cmd.arg("--trust").arg(format!("{id}={key}"));
        }
        let out = cmd.output().unwrap();
        let clean = case.expect["quarantined"].as_object().unwrap().is_empty()
            && !case.expect["halted"].as_bool().unwrap();
        let want = if clean { 0 } else { 1 };
        if out.status.code() != Some(want) {
            failures.push(format!(
                "{}: verify exited {:?}, want {want}",
                case.name,
                out.status.code()
            ));
            continue;
        }
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let problems = report["ledgers"][0]["problems"].as_array().unwrap().len() as u64;
        let want_problems: u64 = case.expect["quarantined"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        if problems != want_problems {
            failures.push(format!(
                "{}: {problems} problems reported, want {want_problems}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The verifier pool examines lines in chunks, finishing their signature
/// checks together: on every vector line, chunked or not, the answers are
/// those of examining each line alone.
#[test]
fn examining_in_chunks_answers_as_line_by_line() {
    use ledgertail::ledger::{examine, examine_each};
    let mut signed_lines = 0;
    for case in cases() {
        let keys =
            KeyRing::from_base64(case.keys.iter().map(|(a, b)| (a.as_str(), b.as_str()))).unwrap();
        for path in case.file_names.keys() {
            let bytes = std::fs::read(path).unwrap();
            let Some(complete) = bytes.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let lines: Vec<&[u8]> = bytes[..complete].split(|&b| b == b'\n').collect();
            signed_lines += lines
                .iter()
                .filter(|l| l.windows(6).any(|w| w == b"\"sig\":"))
                .count();
            let mut scratch = Vec::new();
            let alone: Vec<_> = lines
                .iter()
                .map(|l| {
                    examine(
                        l,
                        l.len() as u64,
                        case.max_line_bytes,
                        case.policy,
                        &keys,
                        &mut scratch,
                    )
                })
                .collect();
            for chunk_lines in [1, 3, 256] {
                let mut chunked = Vec::new();
                for chunk in lines.chunks(chunk_lines) {
                    examine_each(
                        chunk.iter().map(|l| (*l, l.len() as u64)),
                        case.max_line_bytes,
                        case.policy,
                        &keys,
                        &mut scratch,
                        &mut chunked,
                    );
                }
                assert_eq!(chunked, alone, "{}: {}", case.name, path.display());
            }
        }
    }
    assert!(signed_lines > 10, "the vectors hold signed lines");
}
