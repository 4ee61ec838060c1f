//! The subcommands. Each is `run(args) -> anyhow::Result<ExitCode>`:
//! wiring between the CLI, the configuration and the library, with the
//! contract's exit codes (0 fine, 1 problems found, 2 could not run).
//! Errors carry context; `main` prints them with a hint.

/// `println!` for the commands' reports (see [`output`]).
macro_rules! outln {
    () => {
        $crate::commands::output::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::commands::output::write(format_args!($($arg)*), true)
    };
}

/// `print!` for the commands' reports (see [`output`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::commands::output::write(format_args!($($arg)*), false)
    };
}

pub mod append;
pub mod check;
pub mod keygen;
pub mod output;
pub mod replay;
pub mod run;
pub mod setup_postgres;
pub mod status;
mod status_tlog;
pub mod tlog;
pub mod verify;
pub mod verify_postgres;

use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::LedgerArgs;
use crate::config::Settings;

/// Exit status: everything as it should be.
pub const EXIT_OK: u8 = 0;
/// Exit status: something quarantined, halted or out of parity.
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit status: could not run.
pub const EXIT_FAILED: u8 = 2;

pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// Resolves the settings for a command that reads ledgers.
pub fn settings(args: &LedgerArgs, db: Option<std::path::PathBuf>) -> anyhow::Result<Settings> {
    let overrides = args.overrides(db).map_err(TrustFlagError)?;
    let settings = Settings::load(&overrides)?;
    settings.warn_about();
    Ok(settings)
}

/// A file-size limit (`ulimit -f`) must surface as a write error that is
/// handled (a batch retried, a partial line cut off), like a full disk:
/// by default SIGXFSZ kills the process in the middle of the write.
pub fn survive_file_size_limit() -> anyhow::Result<()> {
    use anyhow::Context as _;
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .map(|_| ())
    .context("installing the SIGXFSZ handler")
}

/// Fails early, before any database is touched, when a ledger has no file
/// at all (neither the live file nor a rotated one).
pub fn require_ledger_files(settings: &Settings) -> anyhow::Result<()> {
    for l in &settings.ledgers {
        if l.path.is_dir() {
            anyhow::bail!(IsDirectory {
                what: "--ledger",
                path: l.path.clone(),
            });
        }
        let exists = crate::tail::identity::any_file_exists(&l.path)
            .with_context(|| format!("ledger `{}`: cannot read {}", l.name, l.path.display()))?;
        if !exists {
            anyhow::bail!(NoLedger {
                name: l.name.clone(),
                path: l.path.display().to_string(),
            });
        }
    }
    Ok(())
}

/// A ledger with no file on disk.
#[derive(Debug, thiserror::Error)]
#[error("ledger `{name}`: no such file {path} (nor any rotated file beside it)")]
pub struct NoLedger {
    pub name: String,
    pub path: String,
}

/// An error as one line: each cause once. Error types that name their
/// cause in their own text and also chain it would otherwise print it two
/// or three times ("No such file or directory (os error 2): No such file
/// or directory (os error 2)").
pub fn render_error(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        // SQLite's own codes repeat the message after a prefix.
        let core = match text.split_once(": ") {
            Some((code, rest)) if code.starts_with("Error code ") => rest,
            _ => text.as_str(),
        };
        if core.is_empty() || out.contains(core) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A `--trust` flag that is not `ID=BASE64`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TrustFlagError(pub String);

/// A path that names a folder where a file belongs.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: is a directory", path.display())]
pub struct IsDirectory {
    pub what: &'static str,
    pub path: std::path::PathBuf,
}

/// The operator's next step for an error, if one of ours knows it.
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        if let Some(hint) = crate::hint::recognized(cause) {
            return hint;
        }
        if cause.downcast_ref::<run::ListenError>().is_some() {
            return Some("another process (another ledgertail?) uses this address: set `listen` in the config or --listen, e.g. 127.0.0.1:9899".into());
        }
        if let Some(refused) = cause.downcast_ref::<append::PayloadRefused>() {
            return Some(refused.hint().into());
        }
        if cause.downcast_ref::<TrustFlagError>().is_some() {
            return Some("trust a key as --trust ID=BASE64, for example --trust producer=<the base64 public key `ledgertail keygen` printed>".into());
        }
        if let Some(d) = cause.downcast_ref::<IsDirectory>() {
            return Some(format!(
                "{} names a file: for example {}",
                d.what,
                d.path.join("app.jsonl").display()
            ));
        }
        if cause.downcast_ref::<NoLedger>().is_some() {
            return Some("check --ledger (or `path` in the [[ledger]] table); paths in a config file are relative to its folder".into());
        }
    }
    None
}

/// Raises the soft limit on open files to the hard limit, for every
/// command (as Go's runtime does): `run` may hold many clients beside the
/// ledger files, and a ledger with many rotated files, or many ledgers,
/// needs more than 1,024, a common default soft limit, at times. The hard
/// limit stays the operator's bound; nothing is said when it cannot be
/// raised.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
