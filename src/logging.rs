//! Logging set-up: `tracing` to stderr, as text or JSON lines.
//!
//! Precedence for the filter: `--log-level`, then `RUST_LOG`, then the
//! config file's `log_level`, then `info`; for the format: `--log-format`,
//! then the config file's `log_format`, then text. The config file is read
//! here only for these two keys; the command itself reports its errors.
//!
//! Text logs escape control characters in every field and message: a
//! ledger line, a key id or a file name can hold a newline, and one
//! written raw would print a forged log line. (JSON logs are escaped by
//! JSON itself.)

use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use std::path::Path;

use crate::config::{log_filter, FileConfig, LogFormat};

/// What the command line chose for logging (flags outrank the rest), and
/// the config file whose `log_level` and `log_format` apply otherwise.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogChoice<'a> {
    /// `--log-level`.
    pub level: Option<&'a str>,
    /// `--log-format`.
    pub format: Option<LogFormat>,
    /// The command's config file, if it reads one.
    pub config: Option<&'a Path>,
}

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
        let level = log_filter(level).map_err(|e| format!("log_level {level:?}: {e}"))?;
        let filter = EnvFilter::try_new(&level).map_err(|e| format!("log_level {level:?}: {e}"))?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("log level: {e}"))?;
        Ok(format!("log level now {level:?}"))
    }
}

/// Installs the subscriber. `Err` when `--log-level` or `RUST_LOG` is not a
/// filter ledgertail accepts ([`log_filter`]); the config file's
/// `log_level` is checked where the configuration is loaded.
pub fn init(choice: LogChoice<'_>) -> Result<Option<LogControl>, String> {
    let file = choice
        .config
        .and_then(|p| FileConfig::load(p).ok())
        .unwrap_or_default();
    let env = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    let fixed_by = if choice.level.is_some() {
        Some("--log-level")
    } else if env.is_some() {
        Some("RUST_LOG")
    } else {
        None
    };
    let filter = match (choice.level, &env) {
        (Some(flag), _) => log_filter(flag).map_err(|e| format!("--log-level {flag:?}: {e}"))?,
        (None, Some(var)) => log_filter(var).map_err(|e| format!("RUST_LOG={var:?}: {e}"))?,
        // Checked, with its field named, when the command loads the file.
        (None, None) => file
            .log_level
            .as_deref()
            .and_then(|l| log_filter(l).ok())
            .unwrap_or_else(|| "info".to_owned()),
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = choice
        .format
        .or_else(|| file.log_format.as_deref().and_then(LogFormat::parse))
        .unwrap_or_default();
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let layer = fmt::layer().with_writer(std::io::stderr).with_target(false);
    let installed = match format {
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
        LogFormat::Text => registry
            .with(
                layer
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .fmt_fields(escaped_fields()),
            )
            .try_init(),
    };
    Ok(installed.ok().map(|()| LogControl { handle, fixed_by }))
}

/// `name=value` fields separated by spaces (the message bare, first), as
/// the default text format writes them, but with control characters
/// escaped (see [`escape_controls`]).
fn escaped_fields() -> impl for<'w> fmt::FormatFields<'w> + Send + Sync + 'static {
    fmt::format::debug_fn(|w, field, value| {
        let raw = format!("{value:?}");
        let text = escape_controls(&raw);
        if field.name() == "message" {
            w.write_str(&text)
        } else {
            write!(w, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

/// `text` with every control character (newline, carriage return, escape,
/// DEL, C1) written as a Rust escape (`\n`, `\u{1b}`), so that one log
/// record is always one line and cannot drive the terminal.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_nothing_else_is() {
        assert_eq!(escape_controls("plain é ✓"), "plain é ✓");
        assert_eq!(
            escape_controls("k1\n2026-01-01 INFO forged\r\u{1b}[31m\u{7f}\u{85}"),
            "k1\\n2026-01-01 INFO forged\\r\\u{1b}[31m\\u{7f}\\u{85}"
        );
    }
}
