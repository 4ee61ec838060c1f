//! Plain logs of real programs adopted: nginx writing its JSON access log
//! while requests arrive (rotated by `nginx -s reopen`), a Node program
//! logging with pino (rotated by rename and `reopen()`), and a Python
//! program logging with structlog (rotated by copy and truncate). None of
//! them was written for ledgertail. Each: every request or log call is
//! mirrored exactly once, in order, through a rotation and a SIGKILL of
//! the sidecar; the mirror verifies; and an edit of an adopted line halts
//! the ledger as `rewritten`. A missing program skips here with the
//! reason, and fails under CI (.ci/run installs them).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::common::*;

/// A program logging JSON lines into the ledger's file.
trait App {
    /// Makes the program log lines `from..from + n` (one request or call
    /// each, its number in the line), and returns once they are written.
    fn emit(&mut self, from: usize, n: usize);
    /// Rotates the log as the program's operators do.
    fn rotate(&mut self);
}

/// The ledger's payloads in seq order, as JSON.
fn payloads(s: &Setup) -> Vec<serde_json::Value> {
    let c = db(&s.db);
    let mut stmt = c
        .prepare("SELECT payload FROM events WHERE ledger = 'app' ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|p| serde_json::from_str(&p.unwrap()).unwrap())
        .collect()
}

/// Drives `app` through a rotation, a SIGKILL of the sidecar while lines
/// are coming, and a rotation while it is down; then checks that each
/// line is mirrored once, in order (`number` reads a payload's line
/// number), that the mirror verifies, and that an edit of an adopted
/// line halts the ledger as `rewritten`.
fn adopted_exactly_once(s: &Setup, app: &mut dyn App, number: impl Fn(&serde_json::Value) -> u64) {
    let sidecar = Sidecar::start(&s.config);
    app.emit(0, 300);
    app.rotate();
    app.emit(300, 300);
    sidecar.eventually("600 lines", || mirrored_seqs(&s.db).len() == 600);
    // A burst, and the sidecar killed while it reads it.
    app.emit(600, 2000);
    sidecar.kill();
    app.emit(2600, 200);
    app.rotate();
    app.emit(2800, 200);
    let sidecar = Sidecar::start(&s.config);
    sidecar.eventually("3000 lines", || mirrored_seqs(&s.db).len() >= 3000);
    let numbers: Vec<u64> = payloads(s).iter().map(number).collect();
    let expected: Vec<u64> = (0..3000).collect();
    assert!(
        numbers == expected,
        "not each line once, in order: {numbers:?}"
    );
    assert_eq!(count(&s.db, "SELECT count(*) FROM quarantine"), 0);
    drop(sidecar);
    verify_exact(s);
    // An adopted line of the live file edited in place, its length kept.
    let sidecar = Sidecar::start(&s.config);
    let mut bytes = std::fs::read(&s.ledger).unwrap();
    let digit = bytes.iter().position(u8::is_ascii_digit).unwrap();
    bytes[digit] = if bytes[digit] == b'1' { b'2' } else { b'1' };
    std::fs::write(&s.ledger, &bytes).unwrap();
    sidecar.eventually("halted as rewritten", || {
        count(
            &s.db,
            "SELECT count(*) FROM checkpoints WHERE halted = 1 AND halt_verdict = 'rewritten'",
        ) == 1
    });
}

/// The sidecar's configuration for an adopted log: a parity check every
/// second (so the edit is found quickly).
fn adopted(ledger: &str) -> Setup {
    setup_with(
        "parity_interval_secs = 1\n",
        &format!("format = \"plain\"\n{ledger}"),
    )
}

/// nginx in the foreground on a free port, its JSON access log the
/// ledger's file.
struct Nginx {
    child: Child,
    args: Vec<String>,
    port: u16,
    log: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, log: &Path) -> Nginx {
        let port = pg::free_port();
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("tmp")).unwrap();
        // Root's workers would run as nobody, who may not enter the test's
        // folder: they run as root too.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root root;"
        } else {
            ""
        };
        let p = prefix.display();
        let conf = format!(
            r#"{user}
daemon off;
worker_processes 1;
pid {p}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    log_format ledger escape=json '{{"time":"$time_iso8601","status":$status,"method":"$request_method","uri":"$request_uri","bytes":$body_bytes_sent}}';
    access_log {log} ledger;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#,
            log = log.display()
        );
        std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
        let args: Vec<String> = vec![
            "-p".into(),
            p.to_string(),
            "-c".into(),
            format!("{p}/nginx.conf"),
            "-e".into(),
            format!("{p}/error.log"),
        ];
        // No pipe of the test's: a worker outliving the test must not hold
        // one open.
        let child = Command::new(nginx_program().unwrap())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let nginx = Nginx {
            child,
            args,
            port,
            log: log.to_path_buf(),
        };
        eventually("nginx listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        nginx
    }

    fn get(&self, path: &str) {
        let (status, body) = http_get(&format!("127.0.0.1:{}", self.port), path);
        assert_eq!(status, 200, "{body}");
    }
}

fn nginx_program() -> Option<PathBuf> {
    which("nginx").or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
}

impl App for Nginx {
    fn emit(&mut self, from: usize, n: usize) {
        for i in from..from + n {
            self.get(&format!("/r/{i}"));
        }
    }

    /// logrotate's way with nginx: rename, then `nginx -s reopen` (the
    /// master reopens the log, and the worker writes to the new file).
    fn rotate(&mut self) {
        let rotated = self.log.with_extension("jsonl.1");
        let _ = std::fs::remove_file(&rotated);
        std::fs::rename(&self.log, &rotated).unwrap();
        let out = Command::new(nginx_program().unwrap())
            .args(&self.args)
            .args(["-s", "reopen"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        eventually("nginx reopened its log", || self.log.exists());
    }
}

/// SIGTERM, not SIGKILL: the master stops its workers on the way out
/// (killed, it would leave them running).
impl Drop for Nginx {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A program of a few lines, driven through its stdin: `FROM N` logs N
/// calls and answers `done`; `reopen` reopens the log and answers too.
struct Scripted {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    log: PathBuf,
    /// How the log is rotated: by rename and a reopen, or by copy and
    /// truncate (the program notices nothing).
    by_rename: bool,
}

impl Scripted {
    fn start(mut cmd: Command, log: &Path, by_rename: bool) -> Scripted {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Scripted {
            child,
            stdin,
            stdout,
            log: log.to_path_buf(),
            by_rename,
        }
    }

    fn ask(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        assert_eq!(answer.trim(), "done", "the program said {answer:?}");
    }
}

impl App for Scripted {
    fn emit(&mut self, from: usize, n: usize) {
        self.ask(&format!("{from} {n}"));
    }

    fn rotate(&mut self) {
        let rotated = self.log.with_extension("jsonl.1");
        if self.by_rename {
            let _ = std::fs::remove_file(&rotated);
            std::fs::rename(&self.log, &rotated).unwrap();
            self.ask("reopen");
        } else {
            crate::common::lines::copytruncate(&self.log, &rotated);
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn nginx_access_log_is_adopted_once_through_reopen_and_sigkill() {
    if !present(nginx_program().is_some(), "nginx (Debian's nginx)") {
        return;
    }
    let s = adopted("ts_field = \"time\"\ntype = \"http.request\"\n");
    let mut nginx = Nginx::start(&s.dir, &s.ledger);
    adopted_exactly_once(&s, &mut nginx, |p| {
        p["uri"].as_str().unwrap()["/r/".len()..].parse().unwrap()
    });
    let types = count(
        &s.db,
        "SELECT count(*) FROM events WHERE type = 'http.request'",
    );
    assert_eq!(types, 3000);
}

const PINO_APP: &str = r#"
const pino = require(process.argv[2]);
const dest = pino.destination({ dest: process.argv[3], sync: true });
const log = pino({ base: null }, dest);
const lines = require('readline').createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (line === 'reopen') {
    dest.reopen();
  } else {
    const [from, n] = line.split(' ').map(Number);
    for (let i = from; i < from + n; i++) log.info({ n: i }, 'call');
  }
  process.stdout.write('done\n');
});
"#;

#[test]
fn a_pino_log_is_adopted_once_through_rename_and_sigkill() {
    let pino = Path::new(env!("CARGO_MANIFEST_DIR")).join("producers/node/node_modules/pino");
    let ready = which("node").is_some() && pino.is_dir();
    if !present(ready, "node with `npm ci` run in producers/node (pino)") {
        return;
    }
    let s = adopted("ts_field = \"time\"\n");
    let script = s.dir.join("app.js");
    std::fs::write(&script, PINO_APP).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(&script).arg(&pino).arg(&s.ledger);
    let mut app = Scripted::start(cmd, &s.ledger, true);
    adopted_exactly_once(&s, &mut app, |p| p["n"].as_u64().unwrap());
    // pino's time is epoch milliseconds: it became the event's ts.
    let ts: String = db(&s.db)
        .query_row("SELECT ts FROM events WHERE seq = 0", [], |r| r.get(0))
        .unwrap();
    assert!(ts.starts_with("20") && ts.ends_with('Z'), "{ts}");
}

const STRUCTLOG_APP: &str = r#"
import logging, sys
import structlog
handler = logging.FileHandler(sys.argv[1])
handler.setFormatter(logging.Formatter("%(message)s"))
root = logging.getLogger()
root.addHandler(handler)
root.setLevel(logging.INFO)
structlog.configure(
    processors=[
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.JSONRenderer(),
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
)
log = structlog.get_logger()
for line in sys.stdin:
    start, n = map(int, line.split())
    for i in range(start, start + n):
        log.info("call", n=i)
    handler.flush()
    print("done", flush=True)
"#;

#[test]
fn a_structlog_log_is_adopted_once_through_copytruncate_and_sigkill() {
    let ready = Command::new("python3")
        .args(["-c", "import structlog"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present(ready, "python3 with structlog") {
        return;
    }
    let s = adopted("ts_field = \"timestamp\"\ntype_field = \"level\"\n");
    let script = s.dir.join("app.py");
    std::fs::write(&script, STRUCTLOG_APP).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(&s.ledger);
    let mut app = Scripted::start(cmd, &s.ledger, false);
    adopted_exactly_once(&s, &mut app, |p| p["n"].as_u64().unwrap());
    let info = count(&s.db, "SELECT count(*) FROM events WHERE type = 'info'");
    assert_eq!(info, 3000);
}
