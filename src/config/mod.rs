//! Configuration (contract §4.1): the TOML file, the command-line flags
//! that override it, and the resolved [`Settings`] the rest of the program
//! uses.
//!
//! Three layers, in ripgrep's manner: [`FileConfig`] holds what the file
//! says (every field optional, unknown keys refused with their name) and
//! [`Overrides`] what the flags say (`file`); [`Settings::resolve`]
//! (`resolve`) turns both into the [`Settings`] (`settings`): absolute
//! paths, parsed policies and a loaded key ring, so that past this module
//! no code sees an `Option` that means "unset". Every number's default
//! and bounds are in one table (`bounds`). `[postgres]` and `[tlog]` have
//! their own files (`fleet`, `tlog`). This file: the error type and path
//! helpers.

use std::path::{Path, PathBuf};

pub mod bounds;
mod file;
mod fleet;
mod resolve;
mod settings;
pub mod tlog;
pub use file::{FileConfig, LedgerTable, Overrides};
pub use fleet::{PostgresSettings, PostgresTable};
pub use resolve::log_filter;
pub use settings::{LedgerSettings, LogFormat, RunSettings, Settings};
pub use tlog::{TlogSettings, TlogTable, Witness};

pub const DEFAULT_DB: &str = "ledgertail.db";
pub const DEFAULT_LEDGER: &str = "ledger.jsonl";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9898";
pub use crate::ledger::frame::DEFAULT_MAX_LINE_BYTES;
pub const DEFAULT_BATCH_MAX_EVENTS: usize = bounds::BATCH_MAX_EVENTS.default as usize;
/// A batch holds at most this many bytes of lines (and always one line):
/// what a batch keeps in memory is bounded whatever the line size.
pub const DEFAULT_BATCH_MAX_BYTES: u64 = bounds::BATCH_MAX_BYTES.default;
pub const DEFAULT_PARITY_MAX_BYTES_PER_SEC: u64 = bounds::PARITY_MAX_BYTES_PER_SEC.default;

/// A configuration problem: which setting, what is wrong, what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{field}: {reason} (got {value})")]
    Invalid {
        field: String,
        value: String,
        reason: String,
        hint: Option<String>,
    },
}

/// Where an operator finds every option with its default and meaning.
pub const CONFIG_EXAMPLE_HINT: &str = "every option, its default and its meaning: `man ledgertail`, the commented example /usr/share/doc/ledgertail/ledgertail.toml (installed) or config/ledgertail.toml (in the source)";

impl ConfigError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ConfigError::Read { path, source } => Some(match source.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("check the --config path: {} does not exist", path.display())
                }
                std::io::ErrorKind::PermissionDenied => {
                    "check the file's permissions and the user ledgertail runs as".into()
                }
                _ => "check the --config path".into(),
            }),
            ConfigError::Syntax { .. } => Some(CONFIG_EXAMPLE_HINT.into()),
            ConfigError::Invalid { hint, .. } => {
                Some(hint.clone().unwrap_or_else(|| CONFIG_EXAMPLE_HINT.into()))
            }
        }
    }

    pub(crate) fn invalid(field: &str, value: impl std::fmt::Display, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            field: field.to_owned(),
            value: value.to_string(),
            reason: reason.to_owned(),
            hint: None,
        }
    }

    pub(crate) fn with_hint(mut self, text: &str) -> ConfigError {
        if let ConfigError::Invalid { hint, .. } = &mut self {
            *hint = Some(text.to_owned());
        }
        self
    }
}

/// `app.jsonl` → `app` (the file name without its extension).
pub fn default_ledger_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ledger".to_owned())
}

/// `base/path` unless `path` is absolute; `.` and `..` folded lexically.
pub fn absolute(base: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

pub(crate) fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests;
