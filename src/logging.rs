//! Logging set-up: `tracing` to stderr, as text or JSON lines.
//!
//! Precedence for the filter: `--log-level`, then `RUST_LOG`, then the
//! config file's `log_level`, then `info`; for the format: `--log-format`,
//! then the config file's `log_format`, then text. The config file is read
//! here only for these two keys; the command itself reports its errors.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::cli::{Cli, Command};
use crate::config::{FileConfig, LogFormat};

/// Changes the log filter of a running process (SIGHUP).
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// Set when `--log-level` or `RUST_LOG` chose the filter: they outrank
    /// the config file, so a reload leaves it alone.
    fixed_by: Option<&'static str>,
}

impl LogControl {
    /// Applies the config file's `log_level` unless a flag or the
    /// environment chose the filter. Returns what was done, for the log.
    pub fn set_from_config(&self, level: &str) -> Result<String, String> {
        if let Some(by) = self.fixed_by {
            return Ok(format!("log level kept: set by {by}"));
        }
        let filter = EnvFilter::try_new(level).map_err(|e| format!("log_level {level:?}: {e}"))?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("log level: {e}"))?;
        Ok(format!("log level now {level:?}"))
    }
}

pub fn init(cli: &Cli) -> Option<LogControl> {
    let config_path = match &cli.command {
        Command::Run(a) => a.ledgers.config.clone(),
        Command::Verify(a) => a.ledgers.config.clone(),
        Command::Replay(a) => a.ledgers.config.clone(),
        Command::Status(a) => a.config.clone(),
        Command::Append(_) | Command::Keygen(_) => None,
    };
    let file = config_path
        .and_then(|p| FileConfig::load(&p).ok())
        .unwrap_or_default();
    let env = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    let fixed_by = if cli.log_level.is_some() {
        Some("--log-level")
    } else if env.is_some() {
        Some("RUST_LOG")
    } else {
        None
    };
    let filter = cli
        .log_level
        .clone()
        .or(env)
        .or(file.log_level)
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = cli
        .log_format
        .map(LogFormat::from)
        .or_else(|| file.log_format.as_deref().and_then(LogFormat::parse))
        .unwrap_or_default();
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let layer = fmt::layer().with_writer(std::io::stderr).with_target(false);
    let installed = match format {
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
        LogFormat::Text => registry
            .with(layer.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .try_init(),
    };
    installed.ok().map(|()| LogControl { handle, fixed_by })
}
