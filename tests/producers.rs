//! The producer libraries' own test suites, run against this build's
//! binary: `pytest` for producers/python (contract vectors, random
//! payloads signed and replayed, the §4 rules, key files both ways,
//! writers of every kind at once). A missing interpreter or dependency
//! skips here with the reason, and fails under CI (.ci/run installs them).

use std::path::Path;
use std::process::Command;

fn have_python_deps() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import rfc8785, cryptography, pytest, setuptools, wheel",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("LEDGERTAIL_CI").is_none(),
            "CI must have python3 with rfc8785, cryptography, pytest, setuptools and wheel (.ci/run installs them)"
        );
        eprintln!("skipped: python3 with rfc8785, cryptography and pytest is needed (pip install rfc8785 cryptography pytest setuptools wheel)");
    }
    ok
}

#[test]
fn the_python_library_passes_its_tests() {
    if !have_python_deps() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("producers/python");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(&dir)
        .env("LEDGERTAIL_BIN", env!("CARGO_BIN_EXE_ledgertail"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pytest failed:\n{text}");
    assert!(!text.contains("skipped"), "a Python test skipped:\n{text}");
}
