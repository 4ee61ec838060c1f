//! The producer libraries' own test suites, run against this build's
//! binary: `pytest` for producers/python and `node --test` for
//! producers/node (contract vectors, random payloads signed and replayed,
//! the §4 rules, key files both ways, the packages; the Python suite also
//! runs Python, Node and `ledgertail append` writers at once). A missing
//! interpreter or dependency skips here with the reason, and fails under
//! CI (.ci/run installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

fn library(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("producers")
        .join(name)
}

/// True when `ready`; else says what is missing (a failure under CI).
fn present(ready: bool, missing: &str) -> bool {
    if !ready {
        assert!(
            std::env::var_os("LEDGERTAIL_CI").is_none(),
            "CI must have {missing} (.ci/run installs it)"
        );
        eprintln!("skipped: {missing} is needed");
    }
    ready
}

/// Runs a suite in `dir` with this build as `LEDGERTAIL_BIN`: its output.
fn suite(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("LEDGERTAIL_BIN", env!("CARGO_BIN_EXE_ledgertail"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_python_library_passes_its_tests() {
    let ready = succeeds(
        "python3",
        &[
            "-c",
            "import rfc8785, cryptography, pytest, setuptools, wheel",
        ],
    );
    if !present(
        ready,
        "python3 with rfc8785, cryptography, pytest, setuptools and wheel",
    ) {
        return;
    }
    let text = suite(
        &library("python"),
        "python3",
        &["-m", "pytest", "-q", "-p", "no:cacheprovider"],
    );
    assert!(!text.contains("skipped"), "a Python test skipped:\n{text}");
}

#[test]
fn the_node_library_passes_its_tests() {
    let dir = library("node");
    let ready = succeeds("node", &["--version"]) && dir.join("node_modules/fs-ext").is_dir();
    if !present(ready, "node with `npm ci` run in producers/node") {
        return;
    }
    let text = suite(&dir, "node", &["--test", "tests/"]);
    assert!(
        text.contains("# fail 0") && text.contains("# skipped 0"),
        "{text}"
    );
}
