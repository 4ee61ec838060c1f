//! PostgreSQL for the benchmark: a throwaway server of its own (Debian's
//! `postgresql`: initdb into a temporary folder, pg_ctl on a free loopback
//! port, as the postgres user when run as root), and `ledgertail` run
//! against it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const PASSWORD: &str = "bench-password";

/// A throwaway server.
pub struct Server {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl Server {
    pub fn start() -> Option<Server> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("pg_ctl").is_file())
            .max()?;
        let dir = tempfile::Builder::new()
            .prefix("lt-bench-pg")
            .tempdir()
            .ok()?;
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let s = Server {
            dir,
            bin,
            port,
            as_postgres,
        };
        std::fs::write(s.dir.path().join("pw"), PASSWORD).ok()?;
        if as_postgres {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(s.dir.path())
                .status()
                .ok()?;
        }
        let data = s.data();
        let pw = s.dir.path().join("pw");
        s.tool(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--pwfile",
                pw.to_str()?,
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(s.dir.path().join("data/postgresql.conf"))
            .ok()?;
        // Durable as a production server would be (fsync on), with room
        // for 50 clients.
        writeln!(conf, "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\nmax_connections = 120\nshared_buffers = 256MB\nmax_wal_size = 4GB").ok()?;
        s.tool(
            "pg_ctl",
            &["-D", &data, "-l", &format!("{data}/log"), "-w", "start"],
        )?;
        Some(s)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn tool(&self, name: &str, args: &[&str]) -> Option<()> {
        let program = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let out = cmd.args(args).stdin(Stdio::null()).output().ok()?;
        if !out.status.success() {
            eprintln!("{name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success().then_some(())
    }

    pub fn client(&self) -> postgres::Client {
        self.client_of("postgres")
    }

    /// A client of database `db`.
    pub fn client_of(&self, db: &str) -> postgres::Client {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .password(PASSWORD)
            .dbname(db)
            .connect(postgres::NoTls)
            .expect("connect to the bench server")
    }

    /// The server's URL, as its superuser.
    pub fn url(&self) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    pub fn table(&self, source: &str) -> String {
        self.table_at(self.port, source)
    }

    /// A `[postgres]` table reaching the server through `port` (a proxy).
    pub fn table_at(&self, port: u16, source: &str) -> String {
        format!("[postgres]\nurl = \"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable\"\nsource = \"{source}\"\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.tool("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

pub fn ledgertail(binary: &Path, args: &[&str], config: &Path) -> Command {
    let mut c = Command::new(binary);
    c.args(args)
        .arg("--config")
        .arg(config)
        .env("LEDGERTAIL_POSTGRES_PASSWORD", PASSWORD)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}
