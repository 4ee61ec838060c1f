//! `ledgertail check --config FILE`: everything a start would meet,
//! checked now and said at once (like `promtool check config` or `vector
//! validate`): the file loads; the mirror's folder and file; the listen
//! address; every ledger's file; the log key, its state folder and each
//! witness (its CA, its address answering); the fleet store's CA, login,
//! schema and the role's grant for this source. Nothing is created or
//! changed. Exit 0: no problem (notes allowed); 1: problems, each with a
//! hint; 2: the file itself cannot be read.

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::CheckArgs;
use crate::config::tlog::{TlogSettings, Witness};
use crate::config::{ConfigError, LedgerSettings, Overrides, PostgresSettings, Settings};

use super::{exit, EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS};

/// How long a witness's address may take to accept a connection.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    /// Not a problem, but worth knowing (a ledger not there yet).
    Note,
    Problem,
}

struct Finding {
    level: Level,
    subject: String,
    text: String,
    hint: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn ok(&mut self, subject: impl Into<String>, text: impl Into<String>) {
        self.add(Level::Ok, subject, text, None);
    }

    fn note(&mut self, subject: impl Into<String>, text: impl Into<String>) {
        self.add(Level::Note, subject, text, None);
    }

    fn problem(
        &mut self,
        subject: impl Into<String>,
        text: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.add(Level::Problem, subject, text, Some(hint.into()));
    }

    fn add(
        &mut self,
        level: Level,
        subject: impl Into<String>,
        text: impl Into<String>,
        hint: Option<String>,
    ) {
        self.0.push(Finding {
            level,
            subject: subject.into(),
            text: text.into(),
            hint,
        });
    }

    fn print(&self) {
        for f in &self.0 {
            let tag = match f.level {
                Level::Ok => "ok     ",
                Level::Note => "note   ",
                Level::Problem => "PROBLEM",
            };
            // A multi-line message (a TOML error's excerpt) stays indented.
            let text = f.text.trim_end().replace('\n', "\n        ");
            outln!("{tag} {}: {text}", f.subject);
            if let Some(hint) = &f.hint {
                outln!("        hint: {hint}");
            }
        }
        let problems = self.problems();
        if problems == 0 {
            outln!("no problem found");
        } else {
            outln!("{problems} problem(s) found");
        }
    }

    fn problems(&self) -> usize {
        self.0.iter().filter(|f| f.level == Level::Problem).count()
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    if let Err(e) = std::fs::File::open(&args.config) {
        eprintln!("error: cannot read {}: {e}", args.config.display());
        eprintln!("hint: give the configuration file ledgertail runs with (--config FILE)");
        return Ok(exit(EXIT_FAILED));
    }
    let mut report = Report::default();
    let overrides = Overrides {
        config: Some(args.config.clone()),
        ..Overrides::default()
    };
    match Settings::load(&overrides).and_then(|s| s.only_this_host().map(|()| s)) {
        Ok(settings) => {
            report.ok(
                "config",
                format!(
                    "{} loads: {} ledger(s), {} trusted key(s)",
                    args.config.display(),
                    settings.ledgers.len(),
                    settings.keys.len()
                ),
            );
            check_settings(&settings, &mut report);
        }
        Err(e) => config_problem(&args.config, &e, &mut report),
    }
    report.print();
    Ok(exit(if report.problems() == 0 {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    }))
}

fn config_problem(path: &Path, e: &ConfigError, report: &mut Report) {
    report.problem(
        "config",
        format!("{}: {e}", path.display()),
        e.hint()
            .unwrap_or_else(|| "config/ledgertail.toml lists every option".into()),
    );
}

fn check_settings(settings: &Settings, report: &mut Report) {
    check_db(&settings.db, report);
    check_listen(settings, report);
    for ledger in &settings.ledgers {
        check_ledger(ledger, report);
    }
    if let Some(tlog) = &settings.tlog {
        check_tlog(tlog, report);
    }
    if let Some(pg) = &settings.postgres {
        check_postgres(pg, report);
    }
}

/// Whether this process may write into `path` (a file or a folder).
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

fn check_db(db: &Path, report: &mut Report) {
    let subject = format!("db {}", db.display());
    if db.exists() {
        match crate::mirror::Mirror::open(db, crate::mirror::Access::ReadOnly) {
            Err(e) => report.problem(
                subject,
                format!("not a mirror ledgertail can open: {e}"),
                e.hint()
                    .unwrap_or_else(|| "point db at a ledgertail mirror, or at a path where a new one may be created".into()),
            ),
            Ok(_) if !writable(db) => report.problem(
                subject,
                "a mirror, but not writable by this user",
                "run ledgertail as the user that owns the mirror (or fix its permissions)",
            ),
            Ok(_) => report.ok(subject, "a mirror, writable"),
        }
        return;
    }
    let folder = parent_of(db);
    if !folder.is_dir() {
        report.problem(
            subject,
            format!("its folder {} does not exist", folder.display()),
            "create the folder (ledgertail creates the mirror, not its folder)",
        );
    } else if !writable(&folder) {
        report.problem(
            subject,
            format!(
                "its folder {} is not writable by this user",
                folder.display()
            ),
            "run ledgertail as a user that may create files there, or choose another db path",
        );
    } else {
        report.ok(subject, "not there yet: created at the first start");
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn check_listen(settings: &Settings, report: &mut Report) {
    let subject = format!("listen {}", settings.listen);
    match TcpListener::bind(settings.listen) {
        Ok(_) => report.ok(subject, "free"),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => report.note(
            subject,
            "in use now (by the running sidecar? a second one could not start)",
        ),
        Err(e) => report.problem(
            subject,
            format!("cannot listen there: {e}"),
            "use an address of this host (127.0.0.1:9898, or 0.0.0.0:9898 to be scraped from elsewhere)",
        ),
    }
}

fn check_ledger(ledger: &LedgerSettings, report: &mut Report) {
    let subject = format!("ledger {} ({})", ledger.name, ledger.path.display());
    let folder = parent_of(&ledger.path);
    match std::fs::symlink_metadata(&ledger.path) {
        Ok(meta) if meta.file_type().is_symlink() && !ledger.follow_symlink => report.problem(
            subject,
            "the live path is a symbolic link",
            "point path at the file itself, or set follow_symlink = true in its [[ledger]] table",
        ),
        Ok(_) if ledger.path.is_dir() => report.problem(
            subject,
            "a folder, not a file",
            "path names the ledger's live file, e.g. /var/lib/app/ledger.jsonl",
        ),
        Ok(_) => match std::fs::File::open(&ledger.path) {
            Ok(_) => report.ok(subject, "readable"),
            Err(e) => report.problem(
                subject,
                format!("cannot be read: {e}"),
                "let the user ledgertail runs as read it (e.g. add it to the application's group)",
            ),
        },
        Err(_) if !folder.is_dir() => report.note(
            subject,
            format!(
                "its folder {} does not exist yet: run waits for it",
                folder.display()
            ),
        ),
        Err(_) => match crate::tail::identity::any_file_exists(&ledger.path) {
            Ok(true) => report.ok(
                subject,
                "only rotated files for now: run reads them and waits for the live file",
            ),
            Ok(false) => report.note(subject, "does not exist yet: run waits for it"),
            Err(e) => report.problem(
                subject,
                format!("its folder cannot be read: {e}"),
                "let the user ledgertail runs as list and read the ledger's folder",
            ),
        },
    }
}

fn check_tlog(tlog: &TlogSettings, report: &mut Report) {
    let subject = format!("[tlog] key {}", tlog.key.display());
    match crate::tlog::Signer::load(tlog) {
        Ok(_) => report.ok(subject, "loads"),
        Err(e) => report.problem(
            subject,
            e.to_string(),
            e.hint()
                .unwrap_or_else(|| "make one with ledgertail keygen --out tlog.key".into()),
        ),
    }
    let state = &tlog.state_dir;
    let subject = format!("[tlog] state_dir {}", state.display());
    let there = if state.exists() {
        state.clone()
    } else {
        parent_of(state)
    };
    if there.is_dir() && writable(&there) {
        report.ok(
            subject,
            if state.exists() {
                "writable"
            } else {
                "created at the first checkpoint"
            },
        );
    } else {
        report.problem(
            subject,
            format!("{} is not a folder this user may write", there.display()),
            "the signer keeps its latest checkpoint there: make it writable by ledgertail's user",
        );
    }
    for w in &tlog.witnesses {
        check_witness(w, report);
    }
}

fn check_witness(w: &Witness, report: &mut Report) {
    let subject = format!("[[tlog.witness]] {}", w.url);
    if let Err(e) = crate::tlog::witness::WitnessClient::new(w) {
        report.problem(
            subject,
            e.to_string(),
            "ca_file names the PEM file of the CA the witness's certificate chains to",
        );
        return;
    }
    match reach(&w.url) {
        Ok(addr) => report.ok(subject, format!("accepts connections ({addr})")),
        Err(why) => report.problem(
            subject,
            why,
            "check the URL and that this host may reach it (a firewall, a proxy); run goes on without a witness that is down, but nothing is cosigned",
        ),
    }
}

/// Connects to the host and port of an http(s) URL.
fn reach(url: &str) -> Result<String, String> {
    let (rest, port) = match url.split_once("://") {
        Some(("https", rest)) => (rest, 443),
        Some(("http", rest)) => (rest, 80),
        _ => return Err("not an http:// or https:// URL".into()),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:{port}")
    };
    let addrs: Vec<_> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{authority} does not resolve: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, REACH_TIMEOUT) {
            Ok(_) => return Ok(addr.to_string()),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(format!("cannot connect: {last}"))
}

fn check_postgres(pg: &PostgresSettings, report: &mut Report) {
    // The connection string itself was checked when the config loaded.
    let target = pg.target();
    let subject = format!("[postgres] {}", target.shown());
    if let Err(e) = target.preflight() {
        report.problem(subject, e.to_string(), e.hint.clone().unwrap_or_default());
        return;
    }
    let session = match target.connect() {
        Ok(s) => s,
        Err(e) => {
            report.problem(
                subject,
                e.to_string(),
                e.hint
                    .clone()
                    .unwrap_or_else(|| "check the server, the network and pg_hba.conf".into()),
            );
            return;
        }
    };
    report.ok(subject.clone(), "logged in");
    let probe = match crate::postgres::schema::probe(&session, &pg.schema, &pg.source) {
        Ok(p) => p,
        Err(e) => {
            report.problem(subject, e.to_string(), e.hint.clone().unwrap_or_default());
            return;
        }
    };
    let schema = format!("[postgres] schema {}", pg.schema);
    match probe.version {
        None => report.note(schema, "not created yet: the first start creates it if its role may (else: ledgertail setup-postgres)"),
        Some(v) if v > crate::postgres::schema::VERSION && probe.newer_takes_rows => report.note(
            schema,
            format!("version {v}, newer than this build's {}; it still takes this build's rows (upgrade when convenient)", crate::postgres::schema::VERSION),
        ),
        Some(v) if v > crate::postgres::schema::VERSION => report.problem(
            schema,
            format!("version {v}, newer than this build's {}", crate::postgres::schema::VERSION),
            "upgrade ledgertail on this host (a newer sidecar migrated the fleet store)",
        ),
        Some(v) if v < crate::postgres::schema::VERSION => report.note(
            schema,
            format!("version {v}: the next start migrates it to {} if its role may", crate::postgres::schema::VERSION),
        ),
        Some(v) => report.ok(schema, format!("version {v}")),
    }
    let grant = format!("[postgres] source {}", pg.source);
    match probe.may_ship {
        None => {}
        Some(Ok(())) => report.ok(grant, "this role may ship it"),
        Some(Err(e)) => report.problem(
            grant,
            e.to_string(),
            e.hint.clone().unwrap_or_else(|| {
                "the owner of the fleet store grants it: ledgertail setup-postgres --grant ROLE --source SOURCE".into()
            }),
        ),
    }
}
