//! The `[postgres]` table (contract §6): where the fleet store is, who
//! this sidecar is in it, and how shipping batches and waits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{absolute, bounds, ConfigError};

pub const DEFAULT_SCHEMA: &str = "ledgertail";

/// `[postgres]` as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTable {
    pub url: Option<String>,
    pub source: Option<String>,
    pub schema: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub batch_max_events: Option<usize>,
    pub batch_max_millis: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub statement_timeout_secs: Option<u64>,
    pub lease_secs: Option<u64>,
}

/// `[postgres]` resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The connection string as configured (it may hold a password: never
    /// logged; `postgres::Target` shows it without).
    pub url: String,
    pub source: String,
    pub schema: String,
    pub ca_file: Option<PathBuf>,
    /// A batch ships when it holds this many rows…
    pub batch_max_events: usize,
    /// …or when its first row has waited this long for company.
    pub batch_max_wait: Duration,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// How long a shipper's claim on a ledger outlives its last
    /// transaction: another sidecar with the same source is refused
    /// until then.
    pub lease: Duration,
    /// `url` parsed, with `ca_file` and the timeouts (not the password:
    /// [`PostgresSettings::target`] adds it).
    target: crate::postgres::Target,
}

impl PostgresSettings {
    /// Where to connect, with the password from the environment
    /// (`LEDGERTAIL_POSTGRES_PASSWORD`) when it is set.
    pub fn target(&self) -> crate::postgres::Target {
        let password = std::env::var(crate::postgres::PASSWORD_ENV).ok();
        self.target.clone().with_password(password)
    }
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("source", &self.source)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A schema name ledgertail will create: a plain lower-case SQL name.
fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// The host name, for the default source.
pub(super) fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim().to_owned();
    (!name.is_empty()).then_some(name)
}

impl PostgresTable {
    pub fn resolve(&self, config_dir: &Path) -> Result<PostgresSettings, ConfigError> {
        let url = match self.url.as_deref().map(str::trim) {
            Some(u) if !u.is_empty() => u.to_owned(),
            _ => {
                return Err(ConfigError::invalid("postgres.url", "nothing", "is required").with_hint(
                    "for example url = \"postgresql://ledgertail@db.example/ledgers?sslmode=verify-full\"",
                ))
            }
        };
        let source = match &self.source {
            Some(s) if s.trim().is_empty() || s.contains('\0') => {
                return Err(ConfigError::invalid(
                    "postgres.source",
                    format!("{s:?}"),
                    "must be a non-empty name",
                ))
            }
            Some(s) => s.clone(),
            None => host_name().ok_or_else(|| {
                ConfigError::invalid(
                    "postgres.source",
                    "nothing",
                    "the host name could not be read",
                )
                .with_hint("set source = \"NAME\" under [postgres]")
            })?,
        };
        let schema = self
            .schema
            .clone()
            .unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        if !valid_schema(&schema) {
            return Err(ConfigError::invalid(
                "postgres.schema",
                &schema,
                "must be a lower-case SQL name (a-z, 0-9, _; at most 63 characters)",
            ));
        }
        let batch_max_events =
            bounds::POSTGRES_BATCH_MAX_EVENTS.check_usize(self.batch_max_events)?;
        let batch_max_millis = bounds::POSTGRES_BATCH_MAX_MILLIS.check(self.batch_max_millis)?;
        let lease = bounds::POSTGRES_LEASE_SECS.check(self.lease_secs)?;
        let ca_file = self.ca_file.as_ref().map(|p| absolute(config_dir, p));
        let secs = |b: bounds::Bound, v| b.check(v).map(Duration::from_secs);
        let connect_timeout = secs(
            bounds::POSTGRES_CONNECT_TIMEOUT_SECS,
            self.connect_timeout_secs,
        )?;
        let statement_timeout = secs(
            bounds::POSTGRES_STATEMENT_TIMEOUT_SECS,
            self.statement_timeout_secs,
        )?;
        // The connection string is parsed here, once, so that a bad one
        // stops any command at once, with the field named.
        let timeouts = crate::postgres::Timeouts {
            connect: connect_timeout,
            statement: statement_timeout,
        };
        let target = crate::postgres::Target::parse(&url, ca_file.as_deref(), timeouts, None)
            .map_err(|why| {
                let e =
                    ConfigError::invalid("postgres.url", "the connection string", &why.to_string());
                match why.hint() {
                    Some(hint) => e.with_hint(&hint),
                    None => e,
                }
            })?;
        Ok(PostgresSettings {
            url,
            source,
            schema,
            ca_file,
            batch_max_events,
            batch_max_wait: Duration::from_millis(batch_max_millis),
            connect_timeout,
            statement_timeout,
            lease: Duration::from_secs(lease),
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let t = PostgresTable {
            url: Some("postgresql://u@h/db".into()),
            source: Some("host-a".into()),
            ..PostgresTable::default()
        };
        let s = t.resolve(Path::new("/etc/ledgertail")).unwrap();
        assert_eq!(s.schema, "ledgertail");
        assert_eq!(s.batch_max_events, 5000);
        assert_eq!(s.lease, Duration::from_secs(60));
        let bad = |change: fn(&mut PostgresTable)| {
            let mut t = t.clone();
            change(&mut t);
            t.resolve(Path::new("/")).unwrap_err().to_string()
        };
        assert!(bad(|t| t.url = None).contains("postgres.url"));
        assert!(bad(|t| t.schema = Some("Bad-Name".into())).contains("postgres.schema"));
        assert!(bad(|t| t.batch_max_events = Some(0)).contains("batch_max_events"));
        assert!(bad(|t| t.lease_secs = Some(1)).contains("lease_secs"));
        assert!(bad(|t| t.lease_secs = Some(86_401)).contains("between 3 and 86400"));
        assert!(bad(|t| t.source = Some(" ".into())).contains("postgres.source"));
        let ca = PostgresTable {
            ca_file: Some("ca.pem".into()),
            ..t.clone()
        };
        assert_eq!(
            ca.resolve(Path::new("/etc/lt")).unwrap().ca_file.unwrap(),
            PathBuf::from("/etc/lt/ca.pem")
        );
        let anon = PostgresTable { source: None, ..t };
        assert!(!anon.resolve(Path::new("/")).unwrap().source.is_empty());
    }
}

#[cfg(test)]
mod sample {
    use super::*;

    /// The commented `[postgres]` block of the shipped example, with its
    /// "# " taken off, must resolve to the defaults.
    #[test]
    fn the_sample_postgres_table_says_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ledgertail.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text
            .find("# [postgres]")
            .expect("a [postgres] block in the sample");
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        #[derive(Deserialize)]
        struct Wrapper {
            postgres: PostgresTable,
        }
        let table = toml::from_str::<Wrapper>(&block).unwrap().postgres;
        for key in [
            "url",
            "source",
            "schema",
            "ca_file",
            "batch_max_events",
            "batch_max_millis",
            "connect_timeout_secs",
            "statement_timeout_secs",
            "lease_secs",
        ] {
            assert!(
                block.contains(&format!("{key} = ")),
                "the sample lacks {key}"
            );
        }
        // The numbers' defaults are checked against the bounds table by
        // the sample test of config/tests.rs.
        let s = table.resolve(Path::new("/")).unwrap();
        assert_eq!(s.schema, DEFAULT_SCHEMA);
    }
}
