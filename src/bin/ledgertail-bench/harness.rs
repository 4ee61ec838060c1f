//! Running the real binary and measuring it: a child's CPU and peak
//! memory (`__measure`), `run` started and stopped, `replay` timed, CPU
//! seconds from /proc, percentiles and medians, the machine described.

use super::*;

pub(crate) fn machine(binary: &Path) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "rustc not on PATH".into());
    println!("- machine: {cores} cores, {model}, Linux {}", kernel.trim());
    println!("- {version}, SQLite {}, {rustc}", rusqlite::version());
    println!("- {}", chrono_now());
}

pub(crate) fn chrono_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub(crate) fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

pub(crate) fn trust_args(key: Option<&KeyFile>) -> Vec<String> {
    match key {
        Some(k) => vec![
            "--signatures".into(),
            "required".into(),
            "--trust".into(),
            format!("{}={}", k.key_id, k.public_base64()),
        ],
        None => vec!["--signatures".into(), "off".into()],
    }
}

/// `ledgertail replay` into a fresh database: (seconds, peak RSS in KiB).
pub(crate) fn replay(binary: &Path, ledger: &Path, db: &Path, key: Option<&KeyFile>) -> (f64, u64) {
    let mut args: Vec<std::ffi::OsString> = vec!["--ledger".into(), ledger.into()];
    args.extend(["--db".into(), db.into()]);
    args.extend(trust_args(key).into_iter().map(Into::into));
    replay_with(binary, db, &args)
}

/// `ledgertail replay --no-progress ARGS` (writing `db`): (seconds, peak
/// RSS in KiB).
pub(crate) fn replay_with(binary: &Path, db: &Path, args: &[std::ffi::OsString]) -> (f64, u64) {
    let started = Instant::now();
    let report = db.with_extension("peak");
    let child = measured(binary, &report)
        .args(["replay", "--no-progress"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start replay");
    let (status, peak) = finish_measured(child, &report);
    let secs = started.elapsed().as_secs_f64();
    assert!(status == 0, "replay failed with status {status}");
    (secs, peak)
}

/// The hidden first argument that makes this program the small parent of
/// a measured command (see [`measured`]).
pub(crate) const MEASURE: &str = "__measure";

/// `ledgertail-bench __measure REPORT PROGRAM ARGS...`: runs the program
/// with this process's stdio, writes "status peak-KiB" to REPORT, and exits
/// with the program's status.
pub(crate) fn measure_child() -> ! {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let report = PathBuf::from(&argv[2]);
    let child = Command::new(&argv[3])
        .args(&argv[4..])
        .spawn()
        .expect("start the measured command");
    let (status, peak) = wait_with_rusage(child);
    std::fs::write(&report, format!("{status} {peak}")).expect("write the report");
    std::process::exit(status.clamp(0, 255));
}

/// A command for `binary` run through this program re-executed as its
/// parent: a child forked straight from the benchmark (which holds large
/// buffers by then) counts the benchmark's memory in its peak until it
/// execs. The figures come back through `report` ([`finish_measured`]).
pub(crate) fn measured(binary: &Path, report: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("the benchmark's own path"));
    c.arg(MEASURE).arg(report).arg(binary);
    c
}

/// Waits for a [`measured`] command: its exit status and peak RSS (KiB).
pub(crate) fn finish_measured(mut child: Child, report: &Path) -> (i32, u64) {
    let waited = child.wait().expect("wait for the measured command");
    let text = std::fs::read_to_string(report).unwrap_or_default();
    let _ = std::fs::remove_file(report);
    let mut f = text.split_whitespace();
    match (
        f.next().and_then(|s| s.parse().ok()),
        f.next().and_then(|s| s.parse().ok()),
    ) {
        (Some(status), Some(peak)) => (status, peak),
        _ => (waited.code().unwrap_or(-1), 0),
    }
}

/// Waits for a child; its exit status and peak RSS (KiB).
pub(crate) fn wait_with_rusage(child: Child) -> (i32, u64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: plain wait4 on our own child, with valid out-pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert!(rc == pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    std::mem::forget(child); // already reaped
    (code, usage.ru_maxrss as u64)
}

pub(crate) fn start_run(binary: &Path, dir: &Path) -> (Child, PathBuf, PathBuf) {
    start_run_with(binary, dir, "", "")
}

/// [`start_run`] with `extra` at the top of the configuration.
/// `run` on one ledger `bench` (`live.jsonl`), with `extra` at the top of
/// the configuration and `ledger_extra` in its `[[ledger]]` table.
pub(crate) fn start_run_with(
    binary: &Path,
    dir: &Path,
    extra: &str,
    ledger_extra: &str,
) -> (Child, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("live dir");
    let config = dir.join("ledgertail.toml");
    std::fs::write(
        &config,
        format!("{extra}db = \"live.db\"\nlisten = \"127.0.0.1:0\"\nlog_level = \"warn\"\n[[ledger]]\nname = \"bench\"\npath = \"live.jsonl\"\nsignatures = \"off\"\n{ledger_extra}"),
    )
    .expect("config");
    let child = Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start run");
    let db = dir.join("live.db");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !db.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, dir.join("live.jsonl"), db)
}

pub(crate) fn stop(mut child: Child) {
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(Path::new(&format!("/proc/{pid}/stat")))
}

/// User plus system CPU seconds from a `/proc/…/stat` file (a process's
/// or one thread's).
pub(crate) fn stat_cpu_seconds(path: &Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) close with ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// The `p` quantile of sorted figures (NaN when there are none).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) fn keyring(key: Option<&KeyFile>) -> KeyRing {
    match key {
        Some(k) => {
            let b64 = k.public_base64();
            KeyRing::from_base64([(k.key_id.as_str(), b64.as_str())]).expect("key")
        }
        None => KeyRing::default(),
    }
}

/// A field of /proc/PID/status in KiB (`VmHWM`: the peak resident set).
pub(crate) fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
