//! `ledgertail check --config FILE`: a clean config checks clean, and each
//! problem a start would meet is found now, with a hint, changing nothing.
//! (Its PostgreSQL checks are in tests/it/fleet_access.rs, beside a server.)

use crate::common;

use std::path::Path;
use std::process::Output;

use common::*;

fn check(config: &Path) -> Output {
    bin()
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A config in a scratch folder: `body` after a free listen address.
fn config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("ledgertail.toml");
    std::fs::write(&path, format!("listen = \"127.0.0.1:0\"\n{body}")).unwrap();
    path
}

/// The output must report `problem` once, with a hint, and exit 1.
fn finds(out: &Output, problem: &str, hint: &str) {
    let text = stdout(out);
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    let line = text
        .lines()
        .position(|l| l.starts_with("PROBLEM") && l.contains(problem))
        .unwrap_or_else(|| panic!("no PROBLEM line with {problem:?}:\n{text}"));
    let next = text.lines().nth(line + 1).unwrap_or_default();
    assert!(
        next.trim_start().starts_with("hint:") && next.contains(hint),
        "{text}"
    );
}

#[test]
fn a_config_a_start_would_accept_checks_clean_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        "db = \"m.db\"\n[[ledger]]\nname = \"app\"\npath = \"app.jsonl\"\n",
    );
    let out = check(&c);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains("note    ledger app"), "{text}");
    assert!(
        text.contains("does not exist yet: run waits for it"),
        "{text}"
    );
    assert!(text.ends_with("no problem found\n"), "{text}");
    assert!(
        !dir.path().join("m.db").exists(),
        "check created the mirror"
    );
}

#[test]
fn a_config_that_does_not_load_is_a_problem_with_the_loaders_hint() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "batch_max_evnts = 5\n");
    let out = check(&c);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text.starts_with("PROBLEM config"), "{text}");
    assert!(text.contains("batch_max_evnts"), "{text}");
    assert!(text.contains("        hint: "), "{text}");
}

#[test]
fn a_config_file_that_cannot_be_read_exits_2() {
    let out = check(Path::new("/nonexistent/ledgertail.toml"));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("hint:"), "{}", show(&out));
}

#[test]
fn a_mirror_in_a_folder_that_does_not_exist_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "db = \"/nonexistent/ledgertail/m.db\"\n");
    finds(
        &check(&c),
        "its folder /nonexistent/ledgertail does not exist",
        "create the folder",
    );
}

#[test]
fn a_file_that_is_not_a_mirror_is_found() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.db"), "not sqlite").unwrap();
    let c = config(dir.path(), "db = \"m.db\"\n");
    finds(&check(&c), "not a mirror ledgertail can open", "");
}

#[test]
fn a_listen_address_of_another_host_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledgertail.toml");
    // TEST-NET-1: never an address of this host.
    std::fs::write(&path, "listen = \"192.0.2.1:9898\"\ndb = \"m.db\"\n").unwrap();
    finds(
        &check(&path),
        "listen 192.0.2.1:9898",
        "an address of this host",
    );
}

#[test]
fn a_ledger_path_that_is_a_folder_or_an_unfollowed_symlink_is_found() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("folder.jsonl")).unwrap();
    std::fs::write(dir.path().join("real.jsonl"), "").unwrap();
    std::os::unix::fs::symlink(dir.path().join("real.jsonl"), dir.path().join("link.jsonl"))
        .unwrap();
    let c = config(
        dir.path(),
        "db = \"m.db\"\n[[ledger]]\nname = \"a\"\npath = \"folder.jsonl\"\n[[ledger]]\nname = \"b\"\npath = \"link.jsonl\"\n",
    );
    let out = check(&c);
    finds(&out, "ledger a", "path names the ledger's live file");
    finds(&out, "ledger b", "follow_symlink = true");
    assert!(
        stdout(&out).contains("2 problem(s) found"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_log_key_that_does_not_load_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "db = \"m.db\"\n[tlog]\nkey = \"missing.key\"\n");
    finds(&check(&c), "[tlog] key", "ledgertail keygen");
}

#[test]
fn a_witness_that_does_not_answer_or_has_no_ca_file_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let vkey = |name: &str, seed: u8| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        ledgertail::ledger::note::VerifierKey::of(name, 0x04, &key).to_string()
    };
    let (w1, w2) = (vkey("w1", 7), vkey("w2", 8));
    ledgertail::producer::KeyFile::generate("tlog")
        .unwrap()
        .save_new(&dir.path().join("tlog.key"))
        .unwrap();
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = config(
        dir.path(),
        &format!(
            "db = \"m.db\"\n[tlog]\nkey = \"tlog.key\"\n\
             [[tlog.witness]]\nurl = \"http://127.0.0.1:{port}/\"\nvkey = \"{w1}\"\n\
             [[tlog.witness]]\nurl = \"https://127.0.0.1:{port}/\"\nvkey = \"{w2}\"\nca_file = \"no-ca.pem\"\n"
        ),
    );
    let out = check(&c);
    assert!(
        stdout(&out).contains("ok      [tlog] key"),
        "{}",
        stdout(&out)
    );
    finds(
        &out,
        &format!("http://127.0.0.1:{port}: cannot connect"),
        "firewall",
    );
    finds(
        &out,
        &format!("https://127.0.0.1:{port}: CA file"),
        "ca_file names the PEM file",
    );
}

#[test]
fn a_fleet_store_ca_file_that_is_missing_is_found_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        "db = \"m.db\"\n[postgres]\nurl = \"postgresql://u@127.0.0.1:1/db?sslmode=verify-full\"\nsource = \"a\"\nca_file = \"no-ca.pem\"\n",
    );
    finds(&check(&c), "no-ca.pem", "PEM file");
}
