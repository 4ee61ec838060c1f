//! The verifiable log inside `run` (contract §7): checkpoints signed on a
//! schedule, served at /tlog/<ledger>/checkpoint, cosigned by a witness
//! that is not ledgertail's code (the Go `tlog-witness` of
//! tests/interop/tlogcheck.go, which checks every consistency proof with
//! Go's x/mod tlog), the §7 metrics, `status`, and a witness that is down,
//! refuses, or lost its state. Then `verify --db` recomputes the tree, and
//! catches a tile edited in SQLite.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::gocheck::go_checker;
use common::{append, bin, certs, eventually, setup_with, show, Sidecar};
use ledgertail::ledger::note::{VerifierKey, ED25519};
use ledgertail::producer::{KeyFile, Writer};

const SEED: &str = "0707070707070707070707070707070707070707070707070707070707070707";

struct GoWitness {
    child: Child,
    vkey: String,
}

impl Drop for GoWitness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the Go witness on `addr` for the log `log_vkey`: the witness
/// and the address it listens on, or `None` when it could not listen.
fn try_witness(addr: &str, log_vkey: &str, refuse: bool) -> Option<(GoWitness, String)> {
    try_witness_with(addr, log_vkey, refuse, None)
}

/// As `try_witness`, over TLS with `tls`'s server.crt and server.key.
fn try_witness_with(
    addr: &str,
    log_vkey: &str,
    refuse: bool,
    tls: Option<&Path>,
) -> Option<(GoWitness, String)> {
    let mut cmd = Command::new(go_checker().unwrap());
    cmd.args(["witness", addr, log_vkey, "witness.example/w1", SEED])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if refuse {
        cmd.env("TLOGCHECK_REFUSE", "1");
    }
    if let Some(dir) = tls {
        cmd.env("TLOGCHECK_TLS_CERT", dir.join("server.crt"))
            .env("TLOGCHECK_TLS_KEY", dir.join("server.key"));
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut vkey, mut bound) = (String::new(), String::new());
    if out.read_line(&mut vkey).unwrap_or(0) == 0 || out.read_line(&mut bound).unwrap_or(0) == 0 {
        let _ = child.wait();
        return None;
    }
    let vkey = vkey.trim().to_owned();
    Some((GoWitness { child, vkey }, bound.trim().to_owned()))
}

fn witness(addr: &str, log_vkey: &str, refuse: bool) -> (GoWitness, String) {
    try_witness(addr, log_vkey, refuse).expect("the Go witness starts")
}

/// Starts a witness on `addr`, retrying while the old one's port is freed.
fn witness_again(addr: &str, log_vkey: &str, refuse: bool) -> GoWitness {
    for _ in 0..50 {
        if let Some((w, _)) = try_witness(addr, log_vkey, refuse) {
            return w;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the witness could not listen on {addr} again");
}

/// `ledgertail verify --config`: its exit code and stdout.
fn verify(s: &common::Setup) -> (Option<i32>, String) {
    let out = bin()
        .args(["verify", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    (out.status.code(), show(&out))
}

/// A log key made by `ledgertail keygen` in `dir`, and its verifier key
/// for `origin`.
fn log_key(dir: &Path, origin: &str) -> (std::path::PathBuf, String) {
    let key_path = dir.join("tlog.key");
    let out = bin()
        .arg("keygen")
        .arg("--out")
        .arg(&key_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let log_vkey =
        VerifierKey::of(origin, ED25519, &KeyFile::load(&key_path).unwrap().key).to_string();
    (key_path, log_vkey)
}

/// `prove --seq SEQ` of ledger app, then `verify-proof` with the log's
/// key and a witness required: verify-proof's output.
fn prove_and_verify(
    s: &common::Setup,
    seq: u64,
    log_vkey: &str,
    witness: &str,
) -> std::process::Output {
    let proof = s.dir.join("p.tlog-proof");
    let out = bin()
        .args([
            "prove",
            "--ledger",
            "app",
            "--seq",
            &seq.to_string(),
            "--config",
        ])
        .arg(&s.config)
        .arg("--out")
        .arg(&proof)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    bin()
        .args(["verify-proof", "--vkey", log_vkey, "--witness", witness])
        .arg(&proof)
        .output()
        .unwrap()
}

fn checkpoint_size(note: &str) -> Option<u64> {
    note.lines().nth(1)?.parse().ok()
}

#[test]
fn run_signs_serves_and_gets_cosignatures_and_reports_a_witness_down_refusing_or_reset() {
    if go_checker().is_none() {
        return;
    }
    let origin = "example.com/ledgertail/app";
    // The log key first: the witness must know the log's verifier key.
    let dir = tempfile::tempdir().unwrap();
    let (key_path, log_vkey) = log_key(dir.path(), origin);
    let (w1, addr) = witness("127.0.0.1:0", &log_vkey, false);
    let s = setup_with(
        &format!(
            "[tlog]\nkey = \"{}\"\ncheckpoint_interval_secs = 1\nwitness_timeout_secs = 2\n[[tlog.witness]]\nurl = \"http://{addr}\"\nvkey = \"{}\"\n",
            key_path.display(),
            w1.vkey
        ),
        &format!("origin = \"{origin}\"\n"),
    );
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 50);
    let sidecar = Sidecar::start(&s.config);
    let served = |size: u64| {
        let (status, body) = sidecar.get("/tlog/app/checkpoint");
        status == 200
            && checkpoint_size(&body) == Some(size)
            && body.contains("\u{2014} witness.example/w1 ")
    };
    sidecar.eventually("checkpoint 50, cosigned", || served(50));
    append(&mut w, 50, 30);
    // The witness checks the consistency proof from 50 with Go's tlog.
    sidecar.eventually("checkpoint 80, cosigned", || served(80));
    assert_eq!(
        sidecar.metric("ledgertail_tlog_size{ledger=\"app\"}"),
        Some(80.0)
    );
    assert_eq!(
        sidecar.metric("ledgertail_tlog_checkpoint_size{ledger=\"app\"}"),
        Some(80.0)
    );
    assert!(
        sidecar
            .metric("ledgertail_tlog_checkpoint_timestamp_seconds{ledger=\"app\"}")
            .unwrap()
            > 1.7e9
    );
    let series = "{ledger=\"app\",witness=\"witness.example/w1\"}";
    assert_eq!(
        sidecar.metric(&format!("ledgertail_tlog_witness_cosigned_size{series}")),
        Some(80.0)
    );
    assert_eq!(
        sidecar.metric(&format!("ledgertail_tlog_witness_errors_total{series}")),
        Some(0.0)
    );
    common::promtool_check_metrics(&sidecar.get("/metrics").1);
    assert_eq!(sidecar.get("/tlog/nope/checkpoint").0, 404);

    // An auditor's proof, with the witness required.
    let out = prove_and_verify(&s, 60, &log_vkey, &w1.vkey);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cosigned by witness.example/w1"));
    let status = bin()
        .args(["status", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&format!("vkey       {log_vkey}")), "{text}");
    assert!(
        text.contains("witness    witness.example/w1: cosigned size 80"),
        "{text}"
    );

    // Down: counted and shown; mirroring goes on.
    drop(w1);
    append(&mut w, 80, 10);
    let errors = || {
        sidecar
            .metric(&format!("ledgertail_tlog_witness_errors_total{series}"))
            .unwrap_or(0.0)
    };
    sidecar.eventually("the witness down is counted", || errors() >= 1.0);
    eventually("mirroring goes on", || {
        common::mirrored_seqs(&s.db).len() == 90
    });
    let status = bin()
        .args(["status", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("last refusal"),
        "{}",
        show(&status)
    );

    // Refusing: counted, with its reason.
    let before = errors();
    let refusing = witness_again(&addr, &log_vkey, true);
    sidecar.eventually("the refusal is counted", || errors() > before);
    // (A round that began while it was down may count first.)
    sidecar.eventually("status shows the refusal", || {
        let status = bin()
            .args(["status", "--config"])
            .arg(&s.config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&status.stdout).contains("403")
    });
    drop(refusing);

    // A witness that lost its state answers 409 with size 0: the sidecar
    // starts again from there and gets its cosignature.
    let _w3 = witness_again(&addr, &log_vkey, false);
    sidecar.eventually("checkpoint 90, cosigned again", || served(90));
    assert_eq!(
        sidecar.metric(&format!("ledgertail_tlog_witness_cosigned_size{series}")),
        Some(90.0)
    );
    assert!(sidecar.stop().success());

    // verify --db recomputes the tree and checks every signed checkpoint.
    let (code, out) = verify(&s);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("tree of 90 leaves recomputed from the rows: matches the stored tree"),
        "{out}"
    );
    let c = rusqlite::Connection::open(&s.db).unwrap();
    c.execute(
        "UPDATE checkpoints SET tree_root = '00' || substr(tree_root, 3)",
        [],
    )
    .unwrap();
    drop(c);
    let (code, out) = verify(&s);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("app: tree: the mirror records a tree of 90 leaves with root"),
        "{out}"
    );
}

#[test]
fn an_https_witness_is_checked_against_its_ca_file() {
    if go_checker().is_none() || !certs::have_openssl() {
        return;
    }
    let origin = "example.com/ledgertail/app";
    let dir = tempfile::tempdir().unwrap();
    let (key_path, log_vkey) = log_key(dir.path(), origin);
    let (ca_dir, other_dir) = (dir.path().join("ca"), dir.path().join("other"));
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::create_dir_all(&other_dir).unwrap();
    let ca = certs::make_ca(&ca_dir, "witness");
    let other_ca = certs::make_ca(&other_dir, "other");
    let (w, addr) = try_witness_with("127.0.0.1:0", &log_vkey, false, Some(&ca_dir))
        .expect("the Go witness starts over TLS");
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let config = |url: &str, ca_file: &Path| {
        format!(
            "[tlog]\nkey = \"{}\"\ncheckpoint_interval_secs = 1\nwitness_timeout_secs = 2\n[[tlog.witness]]\nurl = \"{url}\"\nvkey = \"{}\"\nca_file = \"{}\"\n",
            key_path.display(),
            w.vkey,
            ca_file.display()
        )
    };
    let url = format!("https://localhost:{port}/");
    let s = setup_with(
        &config(&url, &other_ca),
        &format!("origin = \"{origin}\"\n"),
    );
    let mut writer = Writer::new(&s.ledger);
    append(&mut writer, 0, 20);
    let series = "{ledger=\"app\",witness=\"witness.example/w1\"}";

    // A certificate from another CA: refused, counted, said plainly;
    // checkpoints are still signed and the rows mirrored.
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("the foreign certificate is counted", || {
        sidecar
            .metric(&format!("ledgertail_tlog_witness_errors_total{series}"))
            .unwrap_or(0.0)
            >= 1.0
    });
    // (The refusal counted may be of a checkpoint signed before all 20
    // rows were mirrored: the runner and the publisher start together.)
    sidecar.eventually("every row is in a signed checkpoint", || {
        sidecar.metric("ledgertail_tlog_checkpoint_size{ledger=\"app\"}") == Some(20.0)
    });
    assert!(sidecar.stop().success());
    let status = bin()
        .args(["status", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        text.contains("last refusal") && text.contains("TLS") && text.contains("certificate"),
        "{text}"
    );

    // Its own CA: cosigned over TLS, by host name and by address.
    for url in [url.clone(), format!("https://127.0.0.1:{port}")] {
        std::fs::write(
            &s.config,
            std::fs::read_to_string(&s.config)
                .unwrap()
                .replace(&other_ca.display().to_string(), &ca.display().to_string())
                .replace(&url_in(&s.config), &url),
        )
        .unwrap();
        let size = common::mirrored_seqs(&s.db).len() + 5;
        append(&mut writer, size - 5, 5);
        let sidecar = Sidecar::start(&s.config);
        sidecar.eventually("cosigned over TLS", || {
            let (code, body) = sidecar.get("/tlog/app/checkpoint");
            code == 200
                && checkpoint_size(&body) == Some(size as u64)
                && body.contains("\u{2014} witness.example/w1 ")
        });
        assert!(sidecar.stop().success());
    }

    // No ca_file: the system's trust store, here SSL_CERT_FILE naming the CA.
    let ca_line = format!("ca_file = \"{}\"\n", ca.display());
    let text = std::fs::read_to_string(&s.config).unwrap();
    assert!(text.contains(&ca_line));
    std::fs::write(&s.config, text.replace(&ca_line, "")).unwrap();
    append(&mut writer, 30, 5);
    let sidecar = Sidecar::start_with(&s.config, |c| {
        c.env("SSL_CERT_FILE", &ca);
    });
    sidecar.eventually("cosigned with the system's trust store", || {
        let (code, body) = sidecar.get("/tlog/app/checkpoint");
        code == 200
            && checkpoint_size(&body) == Some(35)
            && body.contains("\u{2014} witness.example/w1 ")
    });
    assert!(sidecar.stop().success());
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config).unwrap().replace(
            "[[tlog.witness]]\n",
            &format!("[[tlog.witness]]\n{ca_line}"),
        ),
    )
    .unwrap();

    // A CA file that holds no certificate stops `run` at start, with why.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace(&ca.display().to_string(), &junk.display().to_string()),
    )
    .unwrap();
    let out = bin()
        .args(["run", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    let text = show(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("junk.pem") && text.contains("holds no certificate") && text.contains("hint"),
        "{text}"
    );
}

/// The witness URL written in a config file.
fn url_in(config: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text.lines().find(|l| l.starts_with("url = ")).unwrap();
    line["url = ".len()..].trim_matches('"').to_owned()
}

/// A witness made by hand on loopback, to misbehave on purpose: `answer`
/// gets each request's body and returns the status and body to send, or
/// `None` to hold the connection and never answer.
fn hand_witness(answer: impl Fn(&str) -> Option<(u16, String)> + Send + Sync + 'static) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                match answer(&String::from_utf8_lossy(&body)) {
                    // Held open, never answered, until the test ends.
                    None => std::thread::sleep(std::time::Duration::from_secs(3600)),
                    Some((status, text)) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                            text.len()
                        );
                    }
                }
            });
        }
    });
    addr
}

/// The text a witness cosigns: the checkpoint of an add-checkpoint body.
fn offered_checkpoint(body: &str) -> String {
    let add = ledgertail::ledger::tlog::AddCheckpoint::parse(body).unwrap();
    ledgertail::ledger::tlog::SignedCheckpoint::parse(&add.checkpoint)
        .unwrap()
        .note
        .text
}

#[test]
fn a_witness_answering_an_invalid_line_before_a_valid_one_has_only_the_valid_one_kept() {
    use ledgertail::ledger::note::{cosign, COSIGNATURE_V1};
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let vkey = VerifierKey::of("w1", COSIGNATURE_V1, &key);
    let id = vkey.to_string().split('+').nth(1).unwrap().to_owned();
    let signer = key.clone();
    let addr = hand_witness(move |body| {
        let good = cosign(&offered_checkpoint(body), "w1", &signer, 1_700_000_000);
        // Same name and key id, a signature of zeros: listed first.
        use base64::Engine as _;
        let mut raw = vec![0u8; 76];
        raw[..4].copy_from_slice(&u32::from_str_radix(&id, 16).unwrap().to_be_bytes());
        let bogus = format!(
            "\u{2014} w1 {}\n",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        Some((200, format!("{bogus}{}", good.line)))
    });
    let dir = tempfile::tempdir().unwrap();
    let origin = "example.com/ledgertail/app";
    let (key_path, log_vkey) = log_key(dir.path(), origin);
    let s = setup_with(
        &format!(
            "[tlog]\nkey = \"{}\"\ncheckpoint_interval_secs = 1\n[[tlog.witness]]\nurl = \"http://{addr}\"\nvkey = \"{vkey}\"\n",
            key_path.display()
        ),
        &format!("origin = \"{origin}\"\n"),
    );
    append(&mut Writer::new(&s.ledger), 0, 5);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("the witness cosigned", || {
        sidecar.metric("ledgertail_tlog_witness_cosigned_size{ledger=\"app\",witness=\"w1\"}")
            == Some(5.0)
    });
    let (_, served) = sidecar.get("/tlog/app/checkpoint");
    let w1_lines: Vec<&str> = served
        .lines()
        .filter(|l| l.starts_with("\u{2014} w1 "))
        .collect();
    assert_eq!(w1_lines.len(), 1, "{served}");
    let out = prove_and_verify(&s, 3, &log_vkey, &vkey.to_string());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(sidecar.stop().success());
}

/// A sidecar with ledgers `app`, `b` and `c`, a log key in `dir`
/// (`settings` before its `[tlog]`), a checkpoint a second, and the
/// witness at `addr`.
fn three_ledgers_and_a_witness(
    dir: &Path,
    settings: &str,
    addr: &str,
    vkey: &VerifierKey,
    timeout_secs: u64,
) -> common::Setup {
    let (key_path, _) = log_key(dir, "example.com/ledgertail/a");
    let mut ledgers = String::new();
    for name in ["b", "c"] {
        ledgers.push_str(&format!(
            "\n[[ledger]]\nname = \"{name}\"\npath = \"{name}.jsonl\"\n"
        ));
    }
    setup_with(
        &format!(
            "{settings}[tlog]\nkey = \"{}\"\ncheckpoint_interval_secs = 1\nwitness_timeout_secs = {timeout_secs}\n[[tlog.witness]]\nurl = \"http://{addr}\"\nvkey = \"{vkey}\"\n",
            key_path.display()
        ),
        &ledgers,
    )
}

#[test]
fn a_witness_that_never_answers_holds_up_no_checkpoint_and_no_stop() {
    use ledgertail::ledger::note::COSIGNATURE_V1;
    let key = ed25519_dalek::SigningKey::from_bytes(&[10; 32]);
    let vkey = VerifierKey::of("silent", COSIGNATURE_V1, &key);
    let addr = hand_witness(|_| None);
    let dir = tempfile::tempdir().unwrap();
    // An hour's timeout: a publisher that waited for the witness would
    // serve nothing, and stop not at all, within the test's patience.
    let s =
        three_ledgers_and_a_witness(dir.path(), "shutdown_grace_secs = 5\n", &addr, &vkey, 3600);
    let config = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("shutdown_grace_secs = 10\n", "");
    std::fs::write(&s.config, config).unwrap();
    for name in ["app", "b", "c"] {
        append(&mut Writer::new(s.dir.join(format!("{name}.jsonl"))), 0, 3);
    }
    let sidecar = Sidecar::start(&s.config);
    for name in ["app", "b", "c"] {
        sidecar.eventually(&format!("ledger {name}'s checkpoint served"), || {
            let (status, body) = sidecar.get(&format!("/tlog/{name}/checkpoint"));
            status == 200 && checkpoint_size(&body) == Some(3)
        });
    }
    // The tree grows: signed and served again, the witness still silent.
    append(&mut Writer::new(s.dir.join("b.jsonl")), 3, 2);
    sidecar.eventually("the grown tree's checkpoint served", || {
        checkpoint_size(&sidecar.get("/tlog/b/checkpoint").1) == Some(5)
    });
    assert!(sidecar.stop().success(), "the stop waited for the witness");
}

#[test]
fn a_slow_witness_is_asked_about_every_ledger_at_once_after_each_checkpoint_is_served() {
    use ledgertail::ledger::note::{cosign, COSIGNATURE_V1};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    let key = ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
    let vkey = VerifierKey::of("slow", COSIGNATURE_V1, &key);
    // Each request held 10 s, then cosigned: how many were held at once,
    // and how many were answered, as the witness saw them.
    let (held, most_held, answered) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let addr = {
        let (held, most_held, answered) = (held.clone(), most_held.clone(), answered.clone());
        hand_witness(move |body| {
            let now = held.fetch_add(1, SeqCst) + 1;
            most_held.fetch_max(now, SeqCst);
            std::thread::sleep(std::time::Duration::from_secs(10));
            held.fetch_sub(1, SeqCst);
            answered.fetch_add(1, SeqCst);
            let cosigned = cosign(&offered_checkpoint(body), "slow", &key, 1_700_000_000);
            Some((200, cosigned.line))
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let s = three_ledgers_and_a_witness(dir.path(), "", &addr, &vkey, 60);
    let names = ["app", "b", "c"];
    for name in names {
        append(&mut Writer::new(s.dir.join(format!("{name}.jsonl"))), 0, 3);
    }
    let sidecar = Sidecar::start(&s.config);
    for name in names {
        sidecar.eventually(&format!("ledger {name}'s checkpoint served"), || {
            checkpoint_size(&sidecar.get(&format!("/tlog/{name}/checkpoint")).1) == Some(3)
        });
    }
    assert_eq!(
        answered.load(SeqCst),
        0,
        "a checkpoint was served only after the witness answered"
    );
    for name in names {
        sidecar.eventually(&format!("the witness cosigned ledger {name}"), || {
            let metric = format!(
                "ledgertail_tlog_witness_cosigned_size{{ledger=\"{name}\",witness=\"slow\"}}"
            );
            sidecar.metric(&metric) == Some(3.0)
        });
    }
    assert_eq!(
        most_held.load(SeqCst),
        3,
        "the witness was not asked about the three ledgers at once"
    );
    let served = sidecar.get("/tlog/b/checkpoint").1;
    assert!(
        served.lines().any(|l| l.starts_with("\u{2014} slow ")),
        "{served}"
    );
    assert!(sidecar.stop().success());
}
