//! [`Settings::resolve`]: the file and the flags turned into settings,
//! every number checked against its bound (`bounds`), every path made
//! absolute, every key loaded.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::bounds;
use super::{
    absolute, default_ledger_name, same_path, tlog, ConfigError, FileConfig, LedgerSettings,
    LedgerTable, LogFormat, Overrides, RunSettings, Settings, DEFAULT_DB, DEFAULT_LEDGER,
    DEFAULT_LISTEN,
};
use crate::ledger::{ChainRules, KeyRing, SignaturePolicy};

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
        let (file_keys, flag_keys) = keys(file, over)?;
        let ledgers = ledgers(file, over, cwd, &config_dir, &file_keys, &flag_keys)?;
        check_ledgers(&ledgers)?;
        let (log_format, log_level) = logging(file, over)?;
        Ok(Settings {
            listen: listen(file, over)?,
            parity_interval: Duration::from_secs(
                bounds::PARITY_INTERVAL_SECS.check(file.parity_interval_secs)?,
            ),
            log_format,
            log_level,
            batch_max_events: bounds::BATCH_MAX_EVENTS.check_usize(file.batch_max_events)?,
            batch_max_bytes: bounds::BATCH_MAX_BYTES.check(file.batch_max_bytes)?,
            run: run_settings(file)?,
            keys: file_keys.with(&flag_keys),
            ledgers,
            postgres: match &file.postgres {
                Some(table) => Some(table.resolve(&config_dir)?),
                None => None,
            },
            tlog: match &file.tlog {
                Some(table) => Some(table.resolve(&config_dir, &db)?),
                None => None,
            },
            db,
            config_path: over.config.as_ref().map(|p| absolute(cwd, p)),
        })
    }
}

fn listen(file: &FileConfig, over: &Overrides) -> Result<SocketAddr, ConfigError> {
    let text = over
        .listen
        .clone()
        .or_else(|| file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    text.parse().map_err(|_| {
        ConfigError::invalid("listen", &text, "not an address:port").with_hint(
            "for example \"127.0.0.1:9898\" (loopback) or \"0.0.0.0:9898\" (all interfaces)",
        )
    })
}

/// The log format and the log filter.
fn logging(file: &FileConfig, over: &Overrides) -> Result<(LogFormat, String), ConfigError> {
    let format = match (over.log_format, &file.log_format) {
        (Some(f), _) => f,
        (None, Some(s)) => LogFormat::parse(s)
            .ok_or_else(|| ConfigError::invalid("log_format", s, "must be \"text\" or \"json\""))?,
        (None, None) => LogFormat::Text,
    };
    let level = file.log_level.as_deref().unwrap_or("info");
    let level = log_filter(level).map_err(|why| {
        ConfigError::invalid("log_level", level, &why)
            .with_hint("use error, warn (or warning), info, debug, trace or off, or `target=level` pairs such as \"ledgertail=debug\"")
    })?;
    Ok((format, level))
}

fn run_settings(file: &FileConfig) -> Result<RunSettings, ConfigError> {
    let millis = |b: bounds::Bound, v| b.check(v).map(Duration::from_millis);
    Ok(RunSettings {
        batch_max_wait: millis(bounds::BATCH_MAX_MILLIS, file.batch_max_millis)?,
        poll_interval: millis(bounds::POLL_INTERVAL_MILLIS, file.poll_interval_millis)?,
        commit_interval: millis(bounds::COMMIT_INTERVAL_MILLIS, file.commit_interval_millis)?,
        ready_max_lag_events: bounds::READY_MAX_LAG_EVENTS.check(file.ready_max_lag_events)?,
        shutdown_grace: Duration::from_secs(
            bounds::SHUTDOWN_GRACE_SECS.check(file.shutdown_grace_secs)?,
        ),
        parity_max_bytes_per_sec: bounds::PARITY_MAX_BYTES_PER_SEC
            .check(file.parity_max_bytes_per_sec)?,
    })
}

/// The keys of `[keys]` and of `--trust`, which never replaces one.
fn keys(file: &FileConfig, over: &Overrides) -> Result<(KeyRing, KeyRing), ConfigError> {
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
    let file_keys = KeyRing::from_base64(configured.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(key_error)?;
    let flag_keys = KeyRing::from_base64(over.trust.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(key_error)?;
    Ok((file_keys, flag_keys))
}

/// The ledgers: the one `--ledger` names (with its table, if any), else
/// every `[[ledger]]`, else `./ledger.jsonl`.
fn ledgers(
    file: &FileConfig,
    over: &Overrides,
    cwd: &Path,
    config_dir: &Path,
    file_keys: &KeyRing,
    flag_keys: &KeyRing,
) -> Result<Vec<LedgerSettings>, ConfigError> {
    let tables: &[LedgerTable] = file.ledger.as_deref().unwrap_or_default();
    let one =
        |table, path: &Path| ledger_settings(table, path, config_dir, over, (file_keys, flag_keys));
    if let Some(path) = &over.ledger {
        let wanted = absolute(cwd, path);
        let table = tables
            .iter()
            .find(|t| same_path(&absolute(config_dir, &t.path), &wanted));
        return Ok(vec![one(table, &wanted)?]);
    }
    if tables.is_empty() {
        return Ok(vec![one(
            None,
            &absolute(config_dir, Path::new(DEFAULT_LEDGER)),
        )?]);
    }
    tables
        .iter()
        .map(|t| one(Some(t), &absolute(config_dir, &t.path)))
        .collect()
}

/// No two ledgers share a name or a file; one that requires signatures
/// trusts a key.
fn check_ledgers(ledgers: &[LedgerSettings]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for l in ledgers {
        // Tables for other fleet sources (an auditor's `verify
        // --postgres` config) may repeat a name or a path.
        if !names.insert((l.source.clone(), l.name.clone())) {
            return Err(
                ConfigError::invalid("ledger.name", &l.name, "two ledgers have this name")
                    .with_hint(
                    "each [[ledger]] needs its own name: it keys the ledger's rows in the mirror",
                ),
            );
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
    Ok(())
}

fn ledger_settings(
    table: Option<&LedgerTable>,
    path: &Path,
    config_dir: &Path,
    over: &Overrides,
    (file_keys, flag_keys): (&KeyRing, &KeyRing),
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
    let sign_key = table
        .and_then(|t| t.sign_key.as_deref())
        .map(|p| super::absolute(config_dir, p));
    let signatures = match (over.signatures, table.and_then(|t| t.signatures.as_deref())) {
        (Some(p), _) => p,
        (None, Some(s)) => SignaturePolicy::parse(s).ok_or_else(|| {
            ConfigError::invalid(
                "signatures",
                s,
                "must be \"off\", \"verify-if-present\" or \"required\"",
            )
        })?,
        // A plain ledger the sidecar signs is checked for its signatures.
        (None, None) if sign_key.is_some() => SignaturePolicy::Required,
        (None, None) => SignaturePolicy::default(),
    };
    let max_line_bytes = bounds::MAX_LINE_BYTES
        .check(over.max_line_bytes.or(table.and_then(|t| t.max_line_bytes)))?;
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
    let mut plain = plain_fields(table, &name)?;
    let mut keys = chosen.with(flag_keys);
    if let (Some(fields), Some(path)) = (plain.as_mut(), &sign_key) {
        fields.signer = load_signer(path)?;
        if let Some(signer) = &fields.signer {
            keys = trust_signer(keys, signer, &name)?;
        }
    }
    Ok(LedgerSettings {
        path: path.to_path_buf(),
        plain,
        sign_key,
        signatures,
        max_line_bytes,
        rules: ChainRules { require_genesis },
        keys,
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

/// `format` and the fields of a plain ledger; the fields mean nothing to
/// a sealed one, so naming them there is a mistake worth saying.
fn plain_fields(
    table: Option<&LedgerTable>,
    name: &str,
) -> Result<Option<crate::ledger::adopt::Fields>, ConfigError> {
    let Some(t) = table else { return Ok(None) };
    let plain = match t.format.as_deref() {
        None | Some("sealed") => false,
        Some("plain") => true,
        Some(other) => {
            return Err(ConfigError::invalid(
                "ledger.format",
                other,
                "must be \"sealed\" (the application seals its lines) or \"plain\" (a JSON log the sidecar seals as it reads it)",
            ))
        }
    };
    let named = [
        ("ledger.ts_field", &t.ts_field),
        ("ledger.type_field", &t.type_field),
        ("ledger.type", &t.event_type),
    ];
    if !plain {
        if let Some(path) = &t.sign_key {
            return Err(ConfigError::invalid(
                "ledger.sign_key",
                path.display(),
                &format!("ledger `{name}` is sealed: its application signs its own lines"),
            )
            .with_hint(
                "set format = \"plain\" to adopt (and sign) a plain JSON log, or remove the key",
            ));
        }
        if let Some((key, Some(value))) = named.iter().find(|(_, v)| v.is_some()) {
            return Err(ConfigError::invalid(
                key,
                value,
                &format!("ledger `{name}` is sealed: its lines carry their own ts and type"),
            )
            .with_hint("set format = \"plain\" to adopt a plain JSON log, or remove the key"));
        }
        return Ok(None);
    }
    for (key, value) in named {
        if let Some(v) = value {
            if v.is_empty() || v.len() > 256 {
                return Err(ConfigError::invalid(key, v, "must be 1 to 256 bytes"));
            }
        }
    }
    let defaults = crate::ledger::adopt::Fields::default();
    Ok(Some(crate::ledger::adopt::Fields {
        ts_field: t.ts_field.clone(),
        type_field: t.type_field.clone(),
        event_type: t.event_type.clone().unwrap_or(defaults.event_type),
        signer: None,
    }))
}

/// A plain ledger's signing key. A file this process may not read is no
/// error here (an auditor's `verify` trusts the public key under
/// `[keys]`): a shipper refuses to start without it. A file that is not
/// a key file is an error for everyone.
fn load_signer(path: &Path) -> Result<Option<crate::ledger::adopt::Signer>, ConfigError> {
    use crate::keyfile::{KeyFile, KeyFileError};
    match KeyFile::load(path) {
        Ok(k) => Ok(Some(crate::ledger::adopt::Signer {
            key_id: k.key_id,
            key: k.key,
        })),
        Err(KeyFileError::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            Ok(None)
        }
        Err(e) => {
            let err = ConfigError::invalid("ledger.sign_key", path.display(), &e.to_string());
            Err(match e.hint() {
                Some(h) => err.with_hint(&h),
                None => err,
            })
        }
    }
}

/// `keys` with the signer's public key trusted under its id; the same id
/// trusted for another key is refused (events would not verify).
fn trust_signer(
    keys: KeyRing,
    signer: &crate::ledger::adopt::Signer,
    name: &str,
) -> Result<KeyRing, ConfigError> {
    use base64::Engine as _;
    let public =
        base64::engine::general_purpose::STANDARD.encode(signer.key.verifying_key().to_bytes());
    let own = KeyRing::from_base64([(signer.key_id.as_str(), public.as_str())])
        .map_err(|e| ConfigError::invalid("ledger.sign_key", &signer.key_id, &e.to_string()))?;
    let clash = keys.get(&signer.key_id).is_some()
        && keys.only([signer.key_id.as_str()]).ok().as_ref() != Some(&own);
    if clash {
        return Err(ConfigError::invalid(
            "ledger.sign_key",
            &signer.key_id,
            &format!("ledger `{name}` signs with key id `{}`, which [keys] gives another public key", signer.key_id),
        )
        .with_hint("give the sidecar's key its own id (`ledgertail keygen --key-id ID`), or remove the other key from [keys]"));
    }
    Ok(keys.with(&own))
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
