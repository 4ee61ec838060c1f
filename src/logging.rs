//! Logging set-up: `tracing` to stderr, as text or JSON lines.
//!
//! Precedence for the filter: `--log-level`, then `RUST_LOG`, then the
//! config file's `log_level`, then `info`; for the format: `--log-format`,
//! then the config file's `log_format`, then text. The config file is read
//! here only for these two keys; the command itself reports its errors.

use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::config::{FileConfig, LogFormat};

pub fn init(cli: &Cli) {
    let config_path = match &cli.command {
        Command::Verify(a) => a.ledgers.config.clone(),
        Command::Replay(a) => a.ledgers.config.clone(),
        Command::Status(a) => a.config.clone(),
        Command::Append(_) | Command::Keygen(_) => None,
    };
    let file = config_path
        .and_then(|p| FileConfig::load(&p).ok())
        .unwrap_or_default();
    let filter = cli
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()))
        .or(file.log_level)
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = cli
        .log_format
        .map(LogFormat::from)
        .or_else(|| file.log_format.as_deref().and_then(LogFormat::parse))
        .unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}
