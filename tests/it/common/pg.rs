//! A real PostgreSQL server for the fleet tests: Debian's `postgresql`
//! (installed by .ci/run), `initdb` into a temporary folder, `pg_ctl` on
//! a free loopback port, as the `postgres` user when the tests run as
//! root (initdb refuses root). Every TCP login needs a password (SCRAM):
//! the superuser's is [`SUPERUSER_PASSWORD`].
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "superuser-test-password";

pub struct Pg {
    _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

/// The newest installed server's bin folder.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pg {
    /// A new server, or `None` (with a message) when PostgreSQL is not
    /// installed and this is not CI, where its absence fails the test.
    pub fn start_or_skip(what: &str) -> Option<Pg> {
        match server_bin() {
            Some(bin) => Some(Pg::start_with(bin, |_| {})),
            None => {
                assert!(
                    std::env::var_os("LEDGERTAIL_CI").is_none(),
                    "{what}: PostgreSQL is not installed (apt-get install postgresql)"
                );
                eprintln!(
                    "skipped {what}: PostgreSQL is not installed (apt-get install postgresql)"
                );
                None
            }
        }
    }

    /// [`Pg::start_or_skip`], with `configure` run on the data folder
    /// after initdb (certificates, postgresql.conf lines).
    pub fn start_configured(what: &str, configure: impl FnOnce(&Path)) -> Option<Pg> {
        match server_bin() {
            Some(bin) => Some(Pg::start_with(bin, configure)),
            None => Pg::start_or_skip(what),
        }
    }

    fn start_with(bin: PathBuf, configure: impl FnOnce(&Path)) -> Pg {
        let dir = tempfile::Builder::new().prefix("lt-pg").tempdir().unwrap();
        let as_postgres = is_root();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        if as_postgres {
            chown_postgres(dir.path());
            chown_postgres(&pwfile);
        }
        let pg = Pg {
            data: data.clone(),
            port: free_port(),
            bin,
            as_postgres,
            _dir: dir,
        };
        let out = pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                SUPERUSER,
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 200\nshared_buffers = 64MB\nlog_min_messages = warning\n",
            pg.port,
            pg.data.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        configure(&data);
        if as_postgres {
            chown_tree(&data);
        }
        pg.start();
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"))
    }

    /// Starts the server (again) and waits until it takes connections.
    pub fn start(&self) {
        let log = self.data.join("server.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.try_client().is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not take connections"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `pg_ctl stop -m immediate`: no shutdown checkpoint, in-flight
    /// transactions lost as in a crash.
    pub fn stop_immediate(&self) {
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn reload(&self) {
        let out = self.run("pg_ctl", &["-D", self.data.to_str().unwrap(), "reload"]);
        assert!(out.status.success(), "pg_ctl reload");
    }

    /// A URL for `user` with `password` to database `postgres`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// The superuser's URL.
    pub fn admin_url(&self) -> String {
        self.url(SUPERUSER, SUPERUSER_PASSWORD)
    }

    fn try_client(&self) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .password(SUPERUSER_PASSWORD)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres::NoTls)
    }

    /// A superuser connection.
    pub fn client(&self) -> postgres::Client {
        self.try_client().expect("superuser connection")
    }

    /// Runs SQL as the superuser.
    pub fn exec(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// The first column of each row of `sql`, as text.
    pub fn column(&self, sql: &str) -> Vec<Option<String>> {
        self.client()
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
                _ => None,
            })
            .collect()
    }

    /// One number.
    pub fn number(&self, sql: &str) -> i64 {
        self.column(sql)[0].as_deref().unwrap().parse().unwrap()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn postgres_ids() -> (u32, u32) {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    let uid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a postgres user");
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .unwrap();
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid, gid)
}

fn chown_postgres(path: &Path) {
    let (uid, gid) = postgres_ids();
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

fn chown_tree(path: &Path) {
    chown_postgres(path);
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

/// A `[postgres]` table for the superuser on `pg` (the password comes
/// from the environment, see [`start`]).
pub fn postgres_table(pg: &Pg, source: &str, extra: &str) -> String {
    format!(
        "[postgres]\nurl = \"postgresql://{SUPERUSER}@127.0.0.1:{}/postgres?sslmode=disable\"\nsource = \"{source}\"\nconnect_timeout_secs = 3\n{extra}\n",
        pg.port
    )
}

/// `ledgertail run` with the superuser's password in the environment.
pub fn start(s: &super::Setup, _pg: &Pg) -> super::Sidecar {
    super::Sidecar::start_with(&s.config, |c| {
        c.env("LEDGERTAIL_POSTGRES_PASSWORD", SUPERUSER_PASSWORD);
    })
}

/// `ledgertail replay --config C` with the superuser's password.
pub fn replay(s: &super::Setup, _pg: &Pg) -> Output {
    super::bin()
        .args(["replay", "--config"])
        .arg(&s.config)
        .env("LEDGERTAIL_POSTGRES_PASSWORD", SUPERUSER_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Whether `ledgertail.events` has the stored jsonb column ("1") or not
/// ("0").
pub fn stored_copy(pg: &Pg) -> Vec<Option<String>> {
    pg.column(
        "SELECT count(*)::text FROM information_schema.columns \
         WHERE table_schema = 'ledgertail' AND table_name = 'events' AND column_name = 'payload_json'",
    )
}

/// Whether the central table has its index by `(type, ts)`: stores made
/// by earlier builds do, new ones do not.
pub fn has_type_index(pg: &Pg) -> bool {
    pg.column("SELECT to_regclass('ledgertail.events_type_ts') IS NOT NULL")[0].as_deref()
        == Some("t")
}

/// Central rows of a ledger (0 before the schema exists).
pub fn central_count(pg: &Pg, source: &str, ledger: &str) -> i64 {
    if pg.column("SELECT to_regclass('ledgertail.events') IS NOT NULL")[0].as_deref() != Some("t") {
        return 0;
    }
    pg.number(&format!(
        "SELECT count(*) FROM ledgertail.events WHERE source = '{source}' AND ledger = '{ledger}'"
    ))
}

/// (seq, hash) of every line of a ledger's live file.
pub fn file_chain(ledger: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(ledger)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                v["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// (seq, hash) of every central row of a ledger, in seq order.
pub fn central_chain(pg: &Pg, source: &str, ledger: &str) -> Vec<(u64, String)> {
    pg.client()
        .simple_query(&format!(
            "SELECT seq, hash FROM ledgertail.events WHERE source = '{source}' AND ledger = '{ledger}' ORDER BY seq"
        ))
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap().parse().unwrap(), r.get(1).unwrap().to_owned()))
            }
            _ => None,
        })
        .collect()
}

/// Count, seqs, hashes and head of the central ledger equal the file's.
pub fn assert_central_equals_file(pg: &Pg, source: &str, ledger: &str, file: &Path) {
    let want = file_chain(file);
    let got = central_chain(pg, source, ledger);
    assert_eq!(got.len(), want.len(), "{source}/{ledger}: central count");
    assert!(
        got == want,
        "{source}/{ledger}: central rows differ from the file"
    );
    let head = pg.column(&format!(
        "SELECT head_seq || ' ' || head_hash FROM ledgertail.ledgers WHERE source = '{source}' AND ledger = '{ledger}'"
    ));
    let last = want.last().unwrap();
    assert_eq!(
        head,
        vec![Some(format!("{} {}", last.0, last.1))],
        "{source}/{ledger}: central head"
    );
}

/// `sql` in a transaction that first takes the lease of `(source,
/// ledger)` as a hand would (the trigger admits rows from no other), at
/// whatever head the central store records, and gives it up at the end.
pub fn in_lease(source: &str, ledger: &str, sql: &str) -> String {
    format!(
        "BEGIN; SELECT ledgertail.ship_begin(source, ledger, 'by-hand', 60, head_seq, head_hash, anchor_seq, anchor_hash) \
         FROM ledgertail.ledgers WHERE source = '{source}' AND ledger = '{ledger}'; {sql}; \
         SELECT ledgertail.ship_end('{source}', '{ledger}', 'by-hand'); COMMIT"
    )
}

/// A server whose every process is stopped (SIGSTOP): connections stay
/// open and nothing answers. Thawed (SIGCONT) when dropped.
pub struct Frozen {
    pids: Vec<String>,
}

impl Pg {
    /// Stops the postmaster and all its children.
    pub fn freeze(&self) -> Frozen {
        let pid = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_owned();
        let children = Command::new("pgrep").args(["-P", &pid]).output().unwrap();
        let mut pids = vec![pid];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
        let status = Command::new("kill")
            .arg("-STOP")
            .args(&pids)
            .status()
            .unwrap();
        assert!(status.success(), "kill -STOP {pids:?}");
        Frozen { pids }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").args(&self.pids).status();
    }
}
