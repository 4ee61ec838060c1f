//! The producer libraries' own test suites, run against this build's
//! binary: `pytest` for producers/python (against its wheel, installed
//! into a venv, as users get it) and `node --test` for
//! producers/node (contract vectors, random payloads signed and replayed,
//! the §4 rules, key files both ways, the packages; the Python suite also
//! runs Python, Node and `ledgertail append` writers at once, and its
//! `logging` handler and structlog processor from several processes; the
//! Node suite its pino transport, with the real pino). A missing
//! interpreter or dependency skips here with the reason, and fails under
//! CI (.ci/run installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

fn library(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("producers")
        .join(name)
}

use crate::common::present;

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
            "import rfc8785, cryptography, pytest, setuptools, wheel, structlog",
        ],
    );
    if !present(
        ready,
        "python3 with rfc8785, cryptography, pytest, setuptools, wheel and structlog",
    ) {
        return;
    }
    // The suite runs against the package as users get it: the wheel,
    // installed into a venv (its dependencies from this interpreter), with
    // the source tree kept off the import path.
    let work = tempfile::tempdir().unwrap();
    let python = installed_wheel(work.path());
    let imported = suite(
        &library("python"),
        python.to_str().unwrap(),
        &[
            "-c",
            "import ledgertail_producer as p; print(p.__file__, p.__version__)",
        ],
    );
    assert!(
        imported.starts_with(work.path().to_str().unwrap())
            && imported.trim_end().ends_with(" 0.1.0"),
        "the suite would not test the installed wheel: {imported}"
    );
    let text = suite(
        &library("python"),
        python.to_str().unwrap(),
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "pythonpath=tests",
        ],
    );
    assert!(!text.contains("skipped"), "a Python test skipped:\n{text}");
}

/// Builds the Python package's wheel from a copy of its folder and
/// installs it into a venv under `work`: that venv's python.
fn installed_wheel(work: &Path) -> PathBuf {
    let source = work.join("source");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(library("python"))
        .arg(&source)
        .status()
        .unwrap();
    assert!(copied.success());
    for leftover in ["build", "src/ledgertail_producer.egg-info"] {
        let _ = std::fs::remove_dir_all(source.join(leftover));
    }
    let wheels = work.join("wheels");
    let venv = work.join("venv");
    let python = venv.join("bin/python");
    for (program, args) in [
        (
            "python3",
            vec![
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                wheels.to_str().unwrap(),
                source.to_str().unwrap(),
            ],
        ),
        (
            "python3",
            vec![
                "-m",
                "venv",
                "--system-site-packages",
                venv.to_str().unwrap(),
            ],
        ),
    ] {
        suite(work, program, &args);
    }
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("a wheel was built");
    suite(
        work,
        python.to_str().unwrap(),
        &[
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            wheel.to_str().unwrap(),
        ],
    );
    python
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
