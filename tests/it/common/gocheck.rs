//! The Go checker of tests/interop/tlogcheck.go (Go's x/mod note and
//! tlog, from Debian), built once per test binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::show;

/// The Go checker, built once per test binary; `None` (and the test says
/// so) where Go or x/mod is missing outside CI.
pub fn go_checker() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let present = super::which("go").is_some()
                && Path::new("/usr/share/gocode/src/golang.org/x/mod/sumdb/tlog").is_dir();
            if !present {
                assert!(
                    std::env::var_os("LEDGERTAIL_CI").is_none(),
                    "CI must have golang-go and golang-golang-x-mod-dev (.ci/run installs them)"
                );
                eprintln!(
                    "skipping the Go interop checks: install golang-go and golang-golang-x-mod-dev"
                );
                return None;
            }
            let dir =
                std::env::temp_dir().join(format!("ledgertail-tlogcheck-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let exe = dir.join("tlogcheck");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/tlogcheck.go");
            let out = Command::new("go")
                .args(["build", "-o"])
                .arg(&exe)
                .arg(&src)
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env("GOCACHE", dir.join("cache"))
                .env("GOFLAGS", "")
                .output()
                .unwrap();
            assert!(out.status.success(), "go build: {}", show(&out));
            Some(exe)
        })
        .clone()
}

pub fn go(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(go_checker().unwrap())
        .args(args)
        .output()
        .unwrap()
}
