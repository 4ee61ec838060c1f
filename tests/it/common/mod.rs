//! What the integration tests share: the real `ledgertail run` on a free
//! port (learnt from its JSON start-up line), HTTP and metric reads, a
//! ledger folder with a config, and reads of the mirror.
#![allow(dead_code)] // helpers kept for the tests that come and go

pub mod certs;
pub mod freeze;
pub mod gocheck;
pub mod lines;
pub mod pg;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledgertail::producer::Writer;

/// Generous: CI machines are shared and slow; a test only waits this long
/// when it is failing.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The binary under test: this build's, or another one named by
/// `LEDGERTAIL_BIN` (to show that a regression test fails on an older
/// build).
pub fn bin_path() -> PathBuf {
    std::env::var_os("LEDGERTAIL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ledgertail")))
}

/// `ledgertail` with quiet logs.
pub fn bin() -> Command {
    let mut cmd = Command::new(bin_path());
    cmd.env("RUST_LOG", "warn");
    cmd
}

pub struct Sidecar {
    pub child: Child,
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
    /// The thread copying stderr into `log`.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Sidecar {
    /// Starts `ledgertail run --config CONFIG` and waits until it serves.
    pub fn start(config: &Path) -> Sidecar {
        Sidecar::start_with(config, |_| {})
    }

    pub fn start_with(config: &Path, adjust: impl FnOnce(&mut Command)) -> Sidecar {
        Sidecar::start_on(config, "127.0.0.1:0", adjust)
    }

    /// Starts `ledgertail run --listen LISTEN --config CONFIG`.
    pub fn start_on(config: &Path, listen: &str, adjust: impl FnOnce(&mut Command)) -> Sidecar {
        let mut cmd = Command::new(bin_path());
        cmd.args([
            "run",
            "--log-format",
            "json",
            "--listen",
            listen,
            "--config",
        ])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(addr) = v.get("listen").and_then(|a| a.as_str()) {
                        let _ = tx.send(addr.to_owned());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("the sidecar did not start: {:?}", log.lock().unwrap()));
        Sidecar {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.addr, path)
    }

    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// SIGTERM, then the exit status (within the patience).
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        wait_exit(&mut self.child)
    }

    /// Stops the sidecar (SIGTERM) and returns its whole log.
    pub fn stop_with_log(mut self) -> String {
        self.signal(libc::SIGTERM);
        wait_exit(&mut self.child);
        self.exited_log()
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The whole log of a sidecar that has exited: waits until the copy
    /// of its stderr has read the last line (the copy runs on a thread of
    /// its own, and may still be reading when the exit is seen).
    pub fn exited_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log_text()
    }

    /// [`eventually`], showing the sidecar's log when it times out.
    pub fn eventually(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !cond() {
            if Instant::now() >= deadline {
                let log = self.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "timed out waiting for: {what}\nlast log lines (newest first):\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the sidecar did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

/// Polls `cond` until it holds, or fails the test with `what`.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub ledger: PathBuf,
    pub db: PathBuf,
    pub config: PathBuf,
}

/// A folder with a config for one ledger `app` (`extra` is appended to the
/// config's top level).
pub fn setup(extra: &str) -> Setup {
    setup_with(extra, "")
}

/// [`setup`], with `ledger` added to the `[[ledger]]` table.
pub fn setup_with(extra: &str, ledger: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let config = dir.join("ledgertail.toml");
    std::fs::write(
        &config,
        format!(
            "db = \"mirror.db\"\npoll_interval_millis = 100\nshutdown_grace_secs = 10\n{extra}\n[[ledger]]\nname = \"app\"\npath = \"app.jsonl\"\n{ledger}\n"
        ),
    )
    .unwrap();
    Setup {
        ledger: dir.join("app.jsonl"),
        db: dir.join("mirror.db"),
        config,
        dir,
        _dir: tmp,
    }
}

pub fn db(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// The mirrored seqs of ledger `app`, in order (empty before the database exists).
pub fn mirrored_seqs(path: &Path) -> Vec<i64> {
    if !path.exists() {
        return Vec::new();
    }
    let c = db(path);
    let mut stmt = match c.prepare("SELECT seq FROM events WHERE ledger = 'app' ORDER BY seq") {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub fn count(path: &Path, sql: &str) -> i64 {
    db(path).query_row(sql, [], |r| r.get(0)).unwrap()
}

pub fn payloads(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("{{\"i\":{i},\"note\":\"event number {i}\"}}"))
        .collect()
}

pub fn append(w: &mut Writer, from: usize, n: usize) -> u64 {
    let p = payloads(from, n);
    let refs: Vec<&str> = p.iter().map(String::as_str).collect();
    w.append_batch("test", &refs).unwrap().last().unwrap().seq
}

/// `ledgertail verify --ledger L --db D --config C`: exit 0 means every
/// line authentic and in the chain, and exact parity.
pub fn verify_exact(s: &Setup) {
    let out = Command::new(bin_path())
        .args(["verify", "--config"])
        .arg(&s.config)
        .arg("--db")
        .arg(&s.db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify --db failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Renames the live file under the producer's lock, as a cooperating
/// rotator does: to a new name on even rotations, with logrotate's
/// renumbering on odd ones.
pub fn rotate(ledger: &Path, n: usize) {
    loop {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(ledger)
            .unwrap();
        f.lock().unwrap();
        let same = std::fs::metadata(ledger).map(|m| {
            use std::os::unix::fs::MetadataExt;
            let l = f.metadata().unwrap();
            m.ino() == l.ino() && m.dev() == l.dev()
        });
        if same.unwrap_or(false) {
            if n.is_multiple_of(2) {
                // A new name each time (dateext style).
                let to = ledger.with_file_name(format!("app.jsonl.r{n:03}"));
                std::fs::rename(ledger, to).unwrap();
            } else {
                // logrotate's numbering: every rotated file moves up one.
                let name = |k: usize| ledger.with_file_name(format!("app.jsonl.{k}"));
                for k in (1..=n).rev() {
                    if name(k).exists() {
                        std::fs::rename(name(k), name(k + 1)).unwrap();
                    }
                }
                std::fs::rename(ledger, name(1)).unwrap();
            }
            return;
        }
    }
}

/// `promtool check metrics` on a /metrics page: it must pass. Without
/// promtool the check is skipped, except under CI (`LEDGERTAIL_CI`),
/// which installs it.
pub fn promtool_check_metrics(body: &str) {
    let Some(promtool) = which("promtool") else {
        assert!(
            std::env::var_os("LEDGERTAIL_CI").is_none(),
            "promtool is required but not installed"
        );
        eprintln!("promtool not installed: `promtool check metrics` skipped");
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ledgertail CMD --ledger LEDGER --db DB`
pub fn on_db(cmd: &str, ledger: &Path, db: &Path) -> std::process::Output {
    on_db_with(cmd, ledger, db, &[])
}

/// `ledgertail CMD --ledger LEDGER --db DB [extra...]`
pub fn on_db_with(cmd: &str, ledger: &Path, db: &Path, extra: &[&str]) -> std::process::Output {
    run(bin()
        .arg(cmd)
        .arg("--ledger")
        .arg(ledger)
        .arg("--db")
        .arg(db)
        .args(extra))
}

/// `ledgertail CMD --config CONFIG [extra...]`
pub fn with_config(cmd: &str, config: &Path, extra: &[&str]) -> std::process::Output {
    run(bin().arg(cmd).arg("--config").arg(config).args(extra))
}

/// Runs a command to its end.
pub fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap()
}

/// Output bytes as text, for assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command's exit status and output, for assertion messages.
pub fn show(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// True when `ready`; else says what is missing, and under CI
/// (`LEDGERTAIL_CI`) fails: .ci/run installs what the tests need.
pub fn present(ready: bool, missing: &str) -> bool {
    if !ready {
        assert!(
            std::env::var_os("LEDGERTAIL_CI").is_none(),
            "CI must have {missing} (.ci/run installs it)"
        );
        eprintln!("skipped: {missing} is needed");
    }
    ready
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// Runs `cmd` (its program, arguments and environment) with `stdin` and
/// returns its exit code, peak resident memory in KiB and stderr.
///
/// The peak is measured by a small Python parent that forks and execs the
/// command: a child forked straight from this (large, multi-threaded) test
/// process has the test's resident memory in its peak until it execs.
/// Needs python3 (installed by .ci/run); `None` without it.
pub fn peak_rss(cmd: &Command, stdin: &[u8]) -> Option<(Option<i32>, u64, String)> {
    let python = which("python3")?;
    Some(measure_with(&python, cmd, stdin).expect("the measuring parent (python3) failed"))
}

fn measure_with(python: &Path, cmd: &Command, stdin: &[u8]) -> Option<(Option<i32>, u64, String)> {
    // The command's own stdout goes to /dev/null: the figures are the
    // parent's only output.
    const MEASURE: &str = "import os, sys\npid = os.fork()\nif pid == 0:\n    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)\n    os.execvp(sys.argv[1], sys.argv[1:])\n_, status, ru = os.wait4(pid, 0)\nprint(os.waitstatus_to_exitcode(status), ru.ru_maxrss)\n";
    let mut measured = Command::new(python);
    measured
        .arg("-c")
        .arg(MEASURE)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => measured.env(k, v),
            None => measured.env_remove(k),
        };
    }
    let mut child = measured
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let _ = child.stdin.take()?.write_all(stdin);
    let out = child.wait_with_output().ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut figures = stdout.lines().last()?.split_whitespace();
    let code: i32 = figures.next()?.parse().ok()?;
    let kib: u64 = figures.next()?.parse().ok()?;
    Some((
        (code >= 0).then_some(code),
        kib,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// [`peak_rss`], failing when python3 is missing under CI (`LEDGERTAIL_CI`)
/// and skipping (with a message) otherwise.
pub fn peak_rss_or_skip(
    what: &str,
    cmd: &Command,
    stdin: &[u8],
) -> Option<(Option<i32>, u64, String)> {
    let got = peak_rss(cmd, stdin);
    if got.is_none() {
        assert!(
            std::env::var_os("LEDGERTAIL_CI").is_none(),
            "{what}: python3 is needed to measure memory"
        );
        eprintln!("skipped {what}: python3 is not installed (it measures the peak memory)");
    }
    got
}

/// Waits for a child up to `limit`; kills it (and fails) if it hangs.
pub fn finish_within(
    mut child: std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} hung for {limit:?} and was killed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs with `stdin`, under a file size limit (`ulimit -f`) when given.
pub fn run_stdin(
    cmd: &mut Command,
    stdin: &str,
    file_size_limit: Option<u64>,
) -> std::process::Output {
    use std::os::unix::process::CommandExt as _;
    if let Some(limit) = file_size_limit {
        // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}
