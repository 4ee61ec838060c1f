//! The configuration resolved: absolute paths, parsed policies, loaded
//! keys. Past this module no code sees an `Option` that means "unset".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, PostgresSettings, TlogSettings};
use crate::ledger::{ChainRules, KeyRing, SignaturePolicy};

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
    /// `format = "plain"`: the lines are a plain JSON log that the sidecar
    /// seals as it reads them, with `ts` and `type` from these fields;
    /// `None`: the application seals its own lines.
    pub plain: Option<crate::ledger::adopt::Fields>,
    /// A plain ledger's `sign_key` file (absolute). Its key is in
    /// `plain.signer` when this process could read it: a sidecar must,
    /// an auditor's `verify` need not (it trusts the public key).
    pub sign_key: Option<PathBuf>,
}

/// Settings only `run` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    /// A batch is committed at most this long after its first line.
    pub batch_max_wait: Duration,
    /// How often the files are stat'ed when no file event arrives.
    pub poll_interval: Duration,
    /// While lines keep coming, a ledger commits at most once per this
    /// long (zero: at every file event).
    pub commit_interval: Duration,
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
            // Without the mirror, nothing is known of a plain ledger's files
            // (a shipper's configuration adds what its mirror recorded).
            plain_first_seqs: self.plain.as_ref().map(|_| Default::default()),
            plain_recorded_lines: None,
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
