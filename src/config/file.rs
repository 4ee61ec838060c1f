//! The configuration as written: [`FileConfig`] (every field optional,
//! unknown keys refused with their name) and [`Overrides`], what the
//! flags say. Parsing is separate from reading the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, LogFormat, PostgresTable, TlogTable};
use crate::ledger::SignaturePolicy;

/// What the configuration file says, as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub db: Option<PathBuf>,
    pub listen: Option<String>,
    pub parity_interval_secs: Option<u64>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub batch_max_events: Option<usize>,
    pub batch_max_bytes: Option<u64>,
    pub batch_max_millis: Option<u64>,
    pub poll_interval_millis: Option<u64>,
    pub commit_interval_millis: Option<u64>,
    pub ready_max_lag_events: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub parity_max_bytes_per_sec: Option<u64>,
    pub keys: Option<BTreeMap<String, String>>,
    pub ledger: Option<Vec<LedgerTable>>,
    /// (v1.2) The fleet store; absent: none.
    pub postgres: Option<PostgresTable>,
    pub tlog: Option<TlogTable>,
}

/// One `[[ledger]]` table.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerTable {
    pub name: Option<String>,
    pub path: PathBuf,
    pub signatures: Option<String>,
    pub max_line_bytes: Option<u64>,
    pub require_genesis: Option<bool>,
    /// The `[keys]` this ledger trusts (contract §4.1, v1.2); all of them
    /// when absent.
    pub keys: Option<Vec<String>>,
    /// The live path may be a symbolic link.
    pub follow_symlink: Option<bool>,
    pub origin: Option<String>,
    /// The fleet source this table describes, for `verify --postgres`
    /// (keys and policy per source and ledger); a sidecar's own tables
    /// leave it out or name its `[postgres]` source.
    pub source: Option<String>,
    /// `sealed` (the default: the application seals its lines) or
    /// `plain` (a JSON log the sidecar seals as it reads it).
    pub format: Option<String>,
    /// For `plain`: the member holding each line's time.
    pub ts_field: Option<String>,
    /// For `plain`: the member holding each line's type.
    pub type_field: Option<String>,
    /// For `plain`: the type of a line without one (default `log`).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// For `plain`: a key file (`ledgertail keygen`) whose key signs every
    /// adopted event.
    pub sign_key: Option<PathBuf>,
}

impl FileConfig {
    /// Parses configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(&text, path)
    }
}

/// What the command line says; `None` leaves the file's (or default) value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub db: Option<PathBuf>,
    /// Work on this one ledger file only.
    pub ledger: Option<PathBuf>,
    pub signatures: Option<SignaturePolicy>,
    pub max_line_bytes: Option<u64>,
    pub require_genesis: Option<bool>,
    /// Extra trusted keys, `(key_id, base64)`.
    pub trust: Vec<(String, String)>,
    pub listen: Option<String>,
    pub log_format: Option<LogFormat>,
}
