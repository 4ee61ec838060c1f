//! Configuration (contract §4.1): the TOML file, the command-line flags
//! that override it, and the resolved [`Settings`] the rest of the program
//! uses.
//!
//! Three layers, in ripgrep's manner: [`FileConfig`] holds what the file
//! says (every field optional, unknown keys refused with their name),
//! [`Overrides`] what the flags say, and [`Settings::resolve`] turns both
//! into absolute paths, parsed policies and a loaded key ring, so that past
//! this module no code sees an `Option` that means "unset". Parsing
//! ([`FileConfig::parse`]) is separate from reading the file.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ledger::{ChainRules, KeyRing, SignaturePolicy};

mod fleet;
pub mod tlog;
pub use fleet::{PostgresSettings, PostgresTable};
pub use tlog::{TlogSettings, TlogTable, Witness};

pub const DEFAULT_DB: &str = "ledgertail.db";
pub const DEFAULT_LEDGER: &str = "ledger.jsonl";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9898";
pub const DEFAULT_PARITY_INTERVAL_SECS: u64 = 60;
pub use crate::ledger::frame::DEFAULT_MAX_LINE_BYTES;
pub const DEFAULT_BATCH_MAX_EVENTS: usize = 1000;
pub const DEFAULT_BATCH_MAX_MILLIS: u64 = 100;
/// A batch holds at most this many bytes of lines (and always one line):
/// what a batch keeps in memory is bounded whatever the line size.
pub const DEFAULT_BATCH_MAX_BYTES: u64 = 16 * 1024 * 1024;
pub const DEFAULT_POLL_INTERVAL_MILLIS: u64 = 500;
pub const DEFAULT_READY_MAX_LAG_EVENTS: u64 = 10_000;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 20;
pub const DEFAULT_PARITY_MAX_BYTES_PER_SEC: u64 = 32 * 1024 * 1024;
/// A line limit beyond this would let one line take a large share of
/// memory; nothing legitimate needs more.
pub const MAX_MAX_LINE_BYTES: u64 = 256 * 1024 * 1024;

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
}

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

    fn invalid(field: &str, value: impl std::fmt::Display, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            field: field.to_owned(),
            value: value.to_string(),
            reason: reason.to_owned(),
            hint: None,
        }
    }

    fn with_hint(mut self, text: &str) -> ConfigError {
        if let ConfigError::Invalid { hint, .. } = &mut self {
            *hint = Some(text.to_owned());
        }
        self
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// One ledger, resolved.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    /// The `ledger` label and column.
    pub name: String,
    /// The live file (absolute); rotated siblings are found beside it.
    pub path: PathBuf,
    pub signatures: SignaturePolicy,
    pub max_line_bytes: u64,
    pub rules: ChainRules,
    /// The keys this ledger trusts: its `keys = [...]` of `[keys]` (all of
    /// them by default), plus any `--trust` key.
    pub keys: KeyRing,
    /// The operator allows the live path to be a symbolic link.
    pub follow_symlink: bool,
    /// (v1.2) The origin of the ledger's verifiable log (contract §7).
    pub origin: String,
    /// The fleet source this table is for (`verify --postgres`); `None`:
    /// any source with no table of its own.
    pub source: Option<String>,
}

/// Settings only `run` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    /// A batch is committed at most this long after its first line.
    pub batch_max_wait: Duration,
    /// How often the files are stat'ed when no file event arrives.
    pub poll_interval: Duration,
    /// `/readyz` fails beyond this many events not yet mirrored.
    pub ready_max_lag_events: u64,
    /// SIGTERM/SIGINT: how long in-flight batches may take to commit.
    pub shutdown_grace: Duration,
    /// The periodic parity check reads the files no faster than this.
    pub parity_max_bytes_per_sec: u64,
}

impl LedgerSettings {
    /// How the tailer reads this ledger's files.
    pub fn tail_config(&self) -> crate::tail::TailConfig {
        crate::tail::TailConfig {
            live: self.path.clone(),
            policy: self.signatures,
            keys: self.keys.clone(),
            max_line_bytes: self.max_line_bytes,
            follow_symlink: self.follow_symlink,
        }
    }
}

/// Everything resolved: absolute paths, parsed values, loaded keys.
#[derive(Debug, Clone)]
pub struct Settings {
    pub db: PathBuf,
    pub listen: SocketAddr,
    pub parity_interval: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub batch_max_events: usize,
    /// Bytes of lines per batch, at most (a batch always takes one line).
    pub batch_max_bytes: u64,
    pub run: RunSettings,
    /// Every key of `[keys]` and `--trust`; each ledger trusts its own
    /// selection of them ([`LedgerSettings::keys`]).
    pub keys: KeyRing,
    pub ledgers: Vec<LedgerSettings>,
    /// (v1.2) `[postgres]`: where this sidecar ships what it mirrors.
    pub postgres: Option<PostgresSettings>,
    /// (v1.2) `[tlog]`: the log key that signs checkpoints, and witnesses.
    pub tlog: Option<TlogSettings>,
    /// The configuration file used, if any.
    pub config_path: Option<PathBuf>,
}

impl Settings {
    /// Loads the file named by `--config` (if any) and applies the flags.
    pub fn load(overrides: &Overrides) -> Result<Settings, ConfigError> {
        let file = match &overrides.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError::invalid("working directory", "?", &e.to_string()))?;
        Settings::resolve(&file, overrides, &cwd)
    }

    /// Resolves a parsed file and the flags. Paths in the file are relative
    /// to the file's folder; paths given as flags to `cwd`.
    pub fn resolve(
        file: &FileConfig,
        over: &Overrides,
        cwd: &Path,
    ) -> Result<Settings, ConfigError> {
        let config_dir = over
            .config
            .as_ref()
            .map(|p| absolute(cwd, p.parent().unwrap_or(Path::new(""))))
            .unwrap_or_else(|| cwd.to_path_buf());

        let db = match (&over.db, &file.db) {
            (Some(p), _) => absolute(cwd, p),
            (None, Some(p)) => absolute(&config_dir, p),
            (None, None) => absolute(&config_dir, Path::new(DEFAULT_DB)),
        };
        let listen_text = over
            .listen
            .clone()
            .or_else(|| file.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            ConfigError::invalid("listen", &listen_text, "not an address:port").with_hint(
                "for example \"127.0.0.1:9898\" (loopback) or \"0.0.0.0:9898\" (all interfaces)",
            )
        })?;
        let log_format = match (over.log_format, &file.log_format) {
            (Some(f), _) => f,
            (None, Some(s)) => LogFormat::parse(s).ok_or_else(|| {
                ConfigError::invalid("log_format", s, "must be \"text\" or \"json\"")
            })?,
            (None, None) => LogFormat::Text,
        };
        let log_level = file.log_level.as_deref().unwrap_or("info");
        let log_level = log_filter(log_level).map_err(|why| {
            ConfigError::invalid("log_level", log_level, &why)
                .with_hint("use error, warn (or warning), info, debug, trace or off, or `target=level` pairs such as \"ledgertail=debug\"")
        })?;
        // Every number has bounds: an absurd value is refused when the
        // configuration loads, never found out later (a grace period of
        // 2^64 seconds once made SIGTERM overflow).
        let within = |field: &str, value: Option<u64>, default: u64, min: u64, max: u64| {
            let v = value.unwrap_or(default);
            if (min..=max).contains(&v) {
                Ok(v)
            } else {
                Err(ConfigError::invalid(
                    field,
                    v,
                    &format!("must be between {min} and {max}"),
                ))
            }
        };
        let parity_secs = within(
            "parity_interval_secs",
            file.parity_interval_secs,
            DEFAULT_PARITY_INTERVAL_SECS,
            1,
            7 * 24 * 3600,
        )?;
        let batch_max_events = within(
            "batch_max_events",
            file.batch_max_events.map(|n| n as u64),
            DEFAULT_BATCH_MAX_EVENTS as u64,
            1,
            1_000_000,
        )? as usize;
        let batch_max_bytes = within(
            "batch_max_bytes",
            file.batch_max_bytes,
            DEFAULT_BATCH_MAX_BYTES,
            64 * 1024,
            1 << 30,
        )?;
        let run = RunSettings {
            batch_max_wait: Duration::from_millis(within(
                "batch_max_millis",
                file.batch_max_millis,
                DEFAULT_BATCH_MAX_MILLIS,
                1,
                60_000,
            )?),
            poll_interval: Duration::from_millis(within(
                "poll_interval_millis",
                file.poll_interval_millis,
                DEFAULT_POLL_INTERVAL_MILLIS,
                10,
                60_000,
            )?),
            ready_max_lag_events: file
                .ready_max_lag_events
                .unwrap_or(DEFAULT_READY_MAX_LAG_EVENTS),
            shutdown_grace: Duration::from_secs(within(
                "shutdown_grace_secs",
                file.shutdown_grace_secs,
                DEFAULT_SHUTDOWN_GRACE_SECS,
                1,
                3600,
            )?),
            parity_max_bytes_per_sec: within(
                "parity_max_bytes_per_sec",
                file.parity_max_bytes_per_sec,
                DEFAULT_PARITY_MAX_BYTES_PER_SEC,
                4096,
                1 << 40,
            )?,
        };

        let configured = file.keys.clone().unwrap_or_default();
        for (id, key) in &over.trust {
            if configured.get(id).is_some_and(|k| k.trim() != key.trim()) {
                return Err(ConfigError::invalid(
                    "--trust",
                    id,
                    "the config's [keys] already trusts another key under this id",
                )
                .with_hint("give the key another id, or change it under [keys]; --trust never replaces a configured key"));
            }
        }
        let key_error = |e: crate::ledger::seal::KeyError| {
            ConfigError::invalid("keys", e.to_string(), "cannot trust this key")
                .with_hint("a key is written `ID = \"base64 of the 32-byte Ed25519 public key\"`, as `ledgertail keygen` prints it")
        };
        let file_keys =
            KeyRing::from_base64(configured.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(key_error)?;
        let flag_keys =
            KeyRing::from_base64(over.trust.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(key_error)?;
        let keys = file_keys.with(&flag_keys);

        let tables: Vec<LedgerTable> = file.ledger.clone().unwrap_or_default();
        let mut ledgers = Vec::new();
        match &over.ledger {
            Some(path) => {
                let wanted = absolute(cwd, path);
                let table = tables
                    .iter()
                    .find(|t| same_path(&absolute(&config_dir, &t.path), &wanted));
                ledgers.push(ledger_settings(
                    table, &wanted, over, &file_keys, &flag_keys,
                )?);
            }
            None if tables.is_empty() => {
                let path = absolute(&config_dir, Path::new(DEFAULT_LEDGER));
                ledgers.push(ledger_settings(None, &path, over, &file_keys, &flag_keys)?);
            }
            None => {
                for t in &tables {
                    let path = absolute(&config_dir, &t.path);
                    ledgers.push(ledger_settings(
                        Some(t),
                        &path,
                        over,
                        &file_keys,
                        &flag_keys,
                    )?);
                }
            }
        }

        let mut names = HashSet::new();
        let mut paths = HashSet::new();
        for l in &ledgers {
            // Tables for other fleet sources (an auditor's `verify
            // --postgres` config) may repeat a name or a path.
            if !names.insert((l.source.clone(), l.name.clone())) {
                return Err(ConfigError::invalid(
                    "ledger.name",
                    &l.name,
                    "two ledgers have this name",
                )
                .with_hint(
                    "each [[ledger]] needs its own name: it keys the ledger's rows in the mirror",
                ));
            }
            if !paths.insert((l.source.clone(), l.path.clone())) {
                return Err(ConfigError::invalid(
                    "ledger.path",
                    l.path.display(),
                    "two ledgers follow this file",
                ));
            }
            if l.signatures == SignaturePolicy::Required && l.keys.is_empty() {
                return Err(ConfigError::invalid(
                    "signatures",
                    "required",
                    &format!("ledger `{}` requires signatures but no key is trusted", l.name),
                )
                .with_hint("add the producer's public key under [keys] (ledgertail keygen prints the line) and list it in the ledger's `keys`"));
            }
        }

        let tlog = match &file.tlog {
            Some(table) => Some(table.resolve(&config_dir, &db)?),
            None => None,
        };
        Ok(Settings {
            db,
            listen,
            parity_interval: Duration::from_secs(parity_secs),
            log_format,
            log_level,
            batch_max_events,
            batch_max_bytes,
            run,
            keys,
            ledgers,
            postgres: match &file.postgres {
                Some(table) => Some(table.resolve(&config_dir)?),
                None => None,
            },
            tlog,
            config_path: over.config.as_ref().map(|p| absolute(cwd, p)),
        })
    }
}

fn ledger_settings(
    table: Option<&LedgerTable>,
    path: &Path,
    over: &Overrides,
    file_keys: &KeyRing,
    flag_keys: &KeyRing,
) -> Result<LedgerSettings, ConfigError> {
    let name = match table.and_then(|t| t.name.clone()) {
        Some(n) => n,
        None => default_ledger_name(path),
    };
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
        return Err(ConfigError::invalid(
            "ledger.name",
            &name,
            "must be 1 to 128 printable characters",
        ));
    }
    let signatures = match (over.signatures, table.and_then(|t| t.signatures.as_deref())) {
        (Some(p), _) => p,
        (None, Some(s)) => SignaturePolicy::parse(s).ok_or_else(|| {
            ConfigError::invalid(
                "signatures",
                s,
                "must be \"off\", \"verify-if-present\" or \"required\"",
            )
        })?,
        (None, None) => SignaturePolicy::default(),
    };
    let max_line_bytes = over
        .max_line_bytes
        .or(table.and_then(|t| t.max_line_bytes))
        .unwrap_or(DEFAULT_MAX_LINE_BYTES);
    if max_line_bytes == 0 || max_line_bytes > MAX_MAX_LINE_BYTES {
        return Err(ConfigError::invalid(
            "max_line_bytes",
            max_line_bytes,
            &format!("must be between 1 and {MAX_MAX_LINE_BYTES}"),
        ));
    }
    let require_genesis = over
        .require_genesis
        .or(table.and_then(|t| t.require_genesis))
        .unwrap_or(false);
    let chosen = match table.and_then(|t| t.keys.as_ref()) {
        None => file_keys.clone(),
        Some(ids) => file_keys
            .only(ids.iter().map(String::as_str))
            .map_err(|missing| {
                ConfigError::invalid(
                    "ledger.keys",
                    &missing,
                    &format!("ledger `{name}` lists a key that is not under [keys]"),
                )
                .with_hint("every id in a ledger's `keys` must be a key of the [keys] table")
            })?,
    };
    Ok(LedgerSettings {
        path: path.to_path_buf(),
        signatures,
        max_line_bytes,
        rules: ChainRules { require_genesis },
        keys: chosen.with(flag_keys),
        follow_symlink: table.and_then(|t| t.follow_symlink).unwrap_or(false),
        origin: tlog::origin(table.and_then(|t| t.origin.as_deref()), &name)?,
        source: match table.and_then(|t| t.source.clone()) {
            Some(s) if s.trim().is_empty() || s.chars().any(char::is_control) => {
                return Err(ConfigError::invalid(
                    "ledger.source",
                    &s,
                    "must be a source name (printable, not blank)",
                ))
            }
            other => other,
        },
        name,
    })
}

impl Settings {
    /// For the commands that follow files into this host's mirror (`run`,
    /// `replay`, `verify`): every `[[ledger]]` is this host's, so one that
    /// names another fleet source is refused (it belongs in an auditor's
    /// `verify --postgres` config).
    pub fn only_this_host(&self) -> Result<(), ConfigError> {
        let own = self.postgres.as_ref().map(|p| p.source.as_str());
        for l in &self.ledgers {
            if let Some(s) = l.source.as_deref().filter(|s| Some(*s) != own) {
                return Err(ConfigError::invalid(
                    "ledger.source",
                    s,
                    &format!(
                        "ledger `{}` names a source other than this sidecar's ({})",
                        l.name,
                        own.unwrap_or("no [postgres] table")
                    ),
                )
                .with_hint("`source` under [[ledger]] is for verify --postgres configs that judge other hosts' ledgers; in a sidecar's config leave it out"));
            }
        }
        Ok(())
    }

    /// Pairs of ledgers that trust the same public key (under any id): a
    /// line signed for one is authentic in the other, since the hash names
    /// no ledger (contract §4.1). `(ledger, ledger, key id in the first)`.
    pub fn shared_keys(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (i, a) in self.ledgers.iter().enumerate() {
            for b in &self.ledgers[i + 1..] {
                for id in a.keys.ids() {
                    let Some(key) = a.keys.get(id) else { continue };
                    let shared = b.keys.ids().into_iter().any(|o| {
                        b.keys
                            .get(o)
                            .is_some_and(|k| k.as_bytes() == key.as_bytes())
                    });
                    if shared {
                        out.push((a.name.clone(), b.name.clone(), id.to_owned()));
                    }
                }
            }
        }
        out
    }

    /// Logs what the configuration allows but an operator should hear of.
    pub fn warn_about(&self) {
        for (a, b, id) in self.shared_keys() {
            tracing::warn!(
                ledger = %a,
                other = %b,
                key_id = %id,
                "two ledgers trust the same key: a line signed for one is authentic in the other; give each ledger its own key and list it in the ledger's `keys`"
            );
        }
    }
}

/// A log filter as people type it, in the form tracing reads: level
/// names (`error`, `warn` or `warning`, `info`, `debug`, `trace`, `off`,
/// any letter case) alone or as `target=level`, separated by commas. A
/// bare word that is not a level is refused: tracing would read it as a
/// target's name and log nothing else (`warning` used to silence even the
/// halts).
pub fn log_filter(text: &str) -> Result<String, String> {
    let mut directives = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (target, level) = match part.rsplit_once('=') {
            Some((target, level)) => (Some(target.trim()), level.trim()),
            None => (None, part),
        };
        let level = match level.to_ascii_lowercase().as_str() {
            "error" => "error",
            "warn" | "warning" => "warn",
            "info" => "info",
            "debug" => "debug",
            "trace" => "trace",
            "off" => "off",
            _ => {
                return Err(format!(
                    "`{level}` is not a log level (error, warn, info, debug, trace or off)"
                ))
            }
        };
        directives.push(match target {
            Some(t) if !t.is_empty() => format!("{t}={level}"),
            _ => level.to_owned(),
        });
    }
    if directives.is_empty() {
        return Err("no log level given".into());
    }
    let filter = directives.join(",");
    tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| e.to_string())?;
    Ok(filter)
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

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, over: Overrides) -> Result<Settings, ConfigError> {
        let file = FileConfig::parse(text, Path::new("test.toml"))?;
        Settings::resolve(&file, &over, Path::new("/work"))
    }

    #[test]
    fn defaults_without_any_config() {
        let s = resolve("", Overrides::default()).unwrap();
        assert_eq!(s.db, PathBuf::from("/work/ledgertail.db"));
        assert_eq!(s.listen.to_string(), "127.0.0.1:9898");
        assert_eq!(s.ledgers.len(), 1);
        assert_eq!(s.ledgers[0].name, "ledger");
        assert_eq!(s.ledgers[0].path, PathBuf::from("/work/ledger.jsonl"));
        assert_eq!(s.ledgers[0].signatures, SignaturePolicy::VerifyIfPresent);
        assert_eq!(s.ledgers[0].max_line_bytes, 1_048_576);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = resolve("dbb = \"x\"", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("dbb"), "{err}");
        let err = resolve(
            "[[ledger]]\npath = \"a\"\nsignature = \"off\"",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("signature"), "{err}");
    }

    #[test]
    fn paths_are_relative_to_the_config_file() {
        let over = Overrides {
            config: Some(PathBuf::from("etc/lt.toml")),
            ..Overrides::default()
        };
        let file = FileConfig::parse(
            "db = \"m.db\"\n[[ledger]]\npath = \"../data/app.jsonl\"",
            Path::new("x"),
        )
        .unwrap();
        let s = Settings::resolve(&file, &over, Path::new("/srv")).unwrap();
        assert_eq!(s.db, PathBuf::from("/srv/etc/m.db"));
        assert_eq!(s.ledgers[0].path, PathBuf::from("/srv/data/app.jsonl"));
        assert_eq!(s.ledgers[0].name, "app");
    }

    #[test]
    fn flags_override_the_file() {
        let over = Overrides {
            db: Some(PathBuf::from("other.db")),
            signatures: Some(SignaturePolicy::Off),
            ..Overrides::default()
        };
        let s = resolve("db = \"m.db\"\n[[ledger]]\npath = \"a.jsonl\"\nsignatures = \"required\"\n[keys]\nk = \"fOXe2311QGB9YYiojk7Du5uExN+PN9aa1XW3bmiMFTE=\"", over).unwrap();
        assert_eq!(s.db, PathBuf::from("/work/other.db"));
        assert_eq!(s.ledgers[0].signatures, SignaturePolicy::Off);
    }

    #[test]
    fn ledger_flag_picks_its_table_or_defaults() {
        let text = "[[ledger]]\nname = \"payments\"\npath = \"pay.jsonl\"\nmax_line_bytes = 10\n[[ledger]]\npath = \"b.jsonl\"";
        let over = Overrides {
            ledger: Some(PathBuf::from("pay.jsonl")),
            ..Overrides::default()
        };
        let s = resolve(text, over).unwrap();
        assert_eq!(
            (
                s.ledgers.len(),
                s.ledgers[0].name.as_str(),
                s.ledgers[0].max_line_bytes
            ),
            (1, "payments", 10)
        );
        let over = Overrides {
            ledger: Some(PathBuf::from("elsewhere/x.jsonl")),
            ..Overrides::default()
        };
        let s = resolve(text, over).unwrap();
        assert_eq!(
            (s.ledgers[0].name.as_str(), s.ledgers[0].max_line_bytes),
            ("x", DEFAULT_MAX_LINE_BYTES)
        );
    }

    #[test]
    fn log_levels_are_read_as_people_write_them() {
        assert_eq!(log_filter("warning").unwrap(), "warn");
        assert_eq!(log_filter("WARN").unwrap(), "warn");
        assert_eq!(
            log_filter("info, ledgertail=Debug").unwrap(),
            "info,ledgertail=debug"
        );
        assert_eq!(log_filter("hyper=off").unwrap(), "hyper=off");
        for bad in ["warnings", "ledgertail", "", "info,verbose", "x=loud"] {
            assert!(log_filter(bad).is_err(), "{bad:?}");
        }
        let s = resolve("log_level = \"warning\"", Overrides::default()).unwrap();
        assert_eq!(s.log_level, "warn");
    }

    #[test]
    fn bad_values_are_refused_with_the_field() {
        for (text, field) in [
            ("listen = \"nowhere\"", "listen"),
            ("log_format = \"xml\"", "log_format"),
            ("log_level = \"loud\"", "log_level"),
            ("parity_interval_secs = 0", "parity_interval_secs"),
            (
                "shutdown_grace_secs = 18446744073709551615",
                "shutdown_grace_secs",
            ),
            ("batch_max_millis = 99999999999", "batch_max_millis"),
            ("poll_interval_millis = 1", "poll_interval_millis"),
            ("batch_max_bytes = 10", "batch_max_bytes"),
            ("batch_max_events = 0", "batch_max_events"),
            (
                "[[ledger]]\npath = \"a\"\nsignatures = \"maybe\"",
                "signatures",
            ),
            (
                "[[ledger]]\npath = \"a\"\nmax_line_bytes = 0",
                "max_line_bytes",
            ),
            (
                "[[ledger]]\npath = \"a\"\nsignatures = \"required\"",
                "signatures",
            ),
            (
                "[[ledger]]\npath = \"a\"\n[[ledger]]\npath = \"b/a\"",
                "ledger.name",
            ),
            ("[keys]\nk = \"short\"", "keys"),
        ] {
            let err = resolve(text, Overrides::default()).unwrap_err().to_string();
            assert!(err.starts_with(field), "{text}: {err}");
        }
    }

    #[test]
    fn each_ledger_trusts_its_own_keys_and_trust_flags_never_replace_one() {
        let k1 = "fOXe2311QGB9YYiojk7Du5uExN+PN9aa1XW3bmiMFTE=";
        let k2 = "ljf57yKpoSwy8Nd1GWF2f6w3PK18l48SwljxNSSq+ds=";
        let text = format!(
            "[keys]\nk1 = \"{k1}\"\nk2 = \"{k2}\"\n[[ledger]]\nname = \"a\"\npath = \"a.jsonl\"\nkeys = [\"k1\"]\n[[ledger]]\nname = \"b\"\npath = \"b.jsonl\"\n"
        );
        let s = resolve(&text, Overrides::default()).unwrap();
        assert_eq!(s.ledgers[0].keys.ids(), ["k1"]);
        assert_eq!(s.ledgers[1].keys.ids(), ["k1", "k2"], "all keys by default");
        assert_eq!(s.shared_keys(), [("a".into(), "b".into(), "k1".into())]);
        // --trust adds to every ledger, and the same key again is fine...
        let over = |id: &str, key: &str| Overrides {
            trust: vec![(id.into(), key.into())],
            ..Overrides::default()
        };
        let s = resolve(&text, over("k3", k2)).unwrap();
        assert_eq!(s.ledgers[0].keys.ids(), ["k1", "k3"]);
        assert!(resolve(&text, over("k1", k1)).is_ok());
        // ... but another key under a configured id is refused.
        let err = resolve(&text, over("k1", k2)).unwrap_err().to_string();
        assert!(err.starts_with("--trust"), "{err}");
        let err = resolve(&text.replace("[\"k1\"]", "[\"k9\"]"), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ledger.keys") && err.contains("k9"),
            "{err}"
        );
        let err = resolve(
            &format!("[keys]\n\"a\\u007fb\" = \"{k1}\""),
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("control character"), "{err}");
    }

    /// The shipped example must say exactly what the defaults are.
    #[test]
    fn the_sample_config_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ledgertail.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let file = FileConfig::parse(&text, &path).unwrap();
        let over = Overrides {
            config: Some(path.clone()),
            ..Overrides::default()
        };
        let dir = path.parent().unwrap();
        let sample = Settings::resolve(&file, &over, dir).unwrap();
        let defaults =
            Settings::resolve(&FileConfig::default(), &Overrides::default(), dir).unwrap();
        assert_eq!(sample.db, defaults.db);
        assert_eq!(sample.listen, defaults.listen);
        assert_eq!(sample.parity_interval, defaults.parity_interval);
        assert_eq!(sample.log_format, defaults.log_format);
        assert_eq!(sample.log_level, defaults.log_level);
        assert_eq!(sample.batch_max_events, defaults.batch_max_events);
        assert_eq!(sample.batch_max_bytes, defaults.batch_max_bytes);
        assert_eq!(sample.run, defaults.run);
        assert_eq!(sample.keys.len(), 0);
        assert_eq!(sample.ledgers.len(), 1);
        let (a, b) = (&sample.ledgers[0], &defaults.ledgers[0]);
        assert_eq!(
            (&a.name, &a.path, a.signatures, a.max_line_bytes, a.rules),
            (&b.name, &b.path, b.signatures, b.max_line_bytes, b.rules)
        );
        assert_eq!((&a.keys, a.follow_symlink), (&b.keys, b.follow_symlink));
        // Every field of FileConfig and LedgerTable appears in the sample.
        for key in [
            "db",
            "listen",
            "parity_interval_secs",
            "log_format",
            "log_level",
            "batch_max_events",
            "batch_max_bytes",
            "batch_max_millis",
            "poll_interval_millis",
            "ready_max_lag_events",
            "shutdown_grace_secs",
            "parity_max_bytes_per_sec",
            "[keys]",
            "[[ledger]]",
            "name",
            "path",
            "signatures",
            "max_line_bytes",
            "require_genesis",
            "follow_symlink",
            "keys = [",
        ] {
            assert!(text.contains(key), "{key} missing from the sample");
        }
    }
}
