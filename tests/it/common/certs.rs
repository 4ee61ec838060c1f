//! Test certificates made with openssl: a CA and a server certificate
//! for 127.0.0.1 and localhost, for the TLS tests (PostgreSQL, witnesses).

use std::path::Path;
use std::process::Command;

/// True when openssl is there; outside CI a test without it says it
/// skipped, under CI it fails (.ci/run installs openssl).
pub fn have_openssl() -> bool {
    if super::which("openssl").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("LEDGERTAIL_CI").is_none(),
        "openssl is not installed"
    );
    eprintln!("skipped: openssl is not installed");
    false
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it, in
/// `dir`: (ca.pem, server.crt, server.key).
pub fn make_ca(dir: &Path, name: &str) -> std::path::PathBuf {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    dir.join("ca.pem")
}
