//! The `[tlog]` table and each ledger's `origin` (contract §7): the log
//! key that signs checkpoints, how often, where the signer remembers what
//! it signed, and the witnesses that cosign.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{absolute, bounds, ConfigError};
use crate::ledger::note::{is_valid_key_name, VerifierKey, COSIGNATURE_V1};

/// `[tlog]` as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlogTable {
    pub key: Option<PathBuf>,
    pub checkpoint_interval_secs: Option<u64>,
    pub state_dir: Option<PathBuf>,
    pub witness_timeout_secs: Option<u64>,
    pub witness: Option<Vec<WitnessTable>>,
}

/// `[[tlog.witness]]` as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessTable {
    pub url: String,
    pub vkey: String,
    /// For an https witness: the PEM CA its certificate must chain to
    /// (absent: the system's trust store).
    pub ca_file: Option<PathBuf>,
}

/// A witness: where its `add-checkpoint` is, and the key it cosigns with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    /// The submission prefix (`add-checkpoint` is appended).
    pub url: String,
    pub vkey: VerifierKey,
    /// The CA of an https witness (None: the system's trust store).
    pub ca_file: Option<PathBuf>,
}

impl Witness {
    /// The name it goes by in metrics, logs and `status`.
    pub fn name(&self) -> &str {
        &self.vkey.name
    }
}

/// `[tlog]` resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogSettings {
    /// The log key file (a `ledgertail keygen` key file).
    pub key: PathBuf,
    pub checkpoint_interval: Duration,
    /// Where the signer keeps the latest checkpoint it signed per origin,
    /// outside the mirror: a restored or rebuilt mirror cannot make it
    /// sign a contradiction.
    pub state_dir: PathBuf,
    pub witness_timeout: Duration,
    pub witnesses: Vec<Witness>,
}

impl TlogTable {
    pub fn resolve(&self, config_dir: &Path, db: &Path) -> Result<TlogSettings, ConfigError> {
        let key = self.key.as_ref().ok_or_else(|| {
            ConfigError::invalid("tlog.key", "nothing", "is required").with_hint(
                "make one with `ledgertail keygen --out tlog.key` and set key = \"tlog.key\" under [tlog]",
            )
        })?;
        let secs = |b: bounds::Bound, v| b.check(v).map(Duration::from_secs);
        let state_dir = match &self.state_dir {
            Some(d) => absolute(config_dir, d),
            None => {
                let mut name = db.file_name().unwrap_or_default().to_os_string();
                name.push(".tlog-signed");
                db.with_file_name(name)
            }
        };
        let mut witnesses = Vec::new();
        for w in self.witness.iter().flatten() {
            let vkey = VerifierKey::parse(&w.vkey).map_err(|e| {
                ConfigError::invalid("tlog.witness.vkey", &w.vkey, &e.to_string()).with_hint(
                    "a witness's verifier key is name+hash+base64, as the witness publishes it",
                )
            })?;
            if vkey.kind != COSIGNATURE_V1 {
                return Err(ConfigError::invalid(
                    "tlog.witness.vkey",
                    &w.vkey,
                    "is not a cosignature/v1 key (signature type 0x04)",
                ));
            }
            let url = w.url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    "tlog.witness.url",
                    url,
                    "must be an http:// or https:// URL",
                ));
            }
            if w.ca_file.is_some() && !url.starts_with("https://") {
                return Err(ConfigError::invalid("tlog.witness.ca_file", url, "is set for a witness that is not reached over https")
                    .with_hint("ca_file names the CA of an https:// witness; remove it, or write the witness's URL with https://"));
            }
            if witnesses.iter().any(|o: &Witness| o.vkey.name == vkey.name) {
                return Err(ConfigError::invalid(
                    "tlog.witness.vkey",
                    &vkey.name,
                    "two witnesses have this name",
                ));
            }
            witnesses.push(Witness {
                url: url.trim_end_matches('/').to_owned(),
                vkey,
                ca_file: w.ca_file.as_ref().map(|f| absolute(config_dir, f)),
            });
        }
        Ok(TlogSettings {
            key: absolute(config_dir, key),
            checkpoint_interval: secs(
                bounds::TLOG_CHECKPOINT_INTERVAL_SECS,
                self.checkpoint_interval_secs,
            )?,
            state_dir,
            witness_timeout: secs(bounds::TLOG_WITNESS_TIMEOUT_SECS, self.witness_timeout_secs)?,
            witnesses,
        })
    }
}

/// A ledger's origin: as configured (it must be a valid key name), else
/// `<host name>/ledgertail/<name>` with what a key name cannot hold
/// replaced by `-`.
pub fn origin(configured: Option<&str>, ledger: &str) -> Result<String, ConfigError> {
    match configured {
        Some(o) if is_valid_key_name(o) && o.len() <= 255 => Ok(o.to_owned()),
        Some(o) => Err(ConfigError::invalid(
            "ledger.origin",
            format!("{o:?}"),
            "must be 1 to 255 characters with no space, control character or +",
        )
        .with_hint("an origin names the log, for example \"example.com/ledgertail/app\"")),
        None => {
            let host = super::fleet::host_name().unwrap_or_else(|| "localhost".into());
            let clean = |s: &str| -> String {
                s.chars()
                    .map(|c| {
                        if c.is_whitespace() || c.is_control() || c == '+' {
                            '-'
                        } else {
                            c
                        }
                    })
                    .collect()
            };
            Ok(format!("{}/ledgertail/{}", clean(&host), clean(ledger)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_key_names() {
        assert_eq!(
            origin(Some("example.com/log"), "x").unwrap(),
            "example.com/log"
        );
        assert!(origin(Some("has space"), "x").is_err());
        assert!(origin(Some("a+b"), "x").is_err());
        assert!(origin(Some(""), "x").is_err());
        let d = origin(None, "my app+1").unwrap();
        assert!(d.ends_with("/ledgertail/my-app-1"), "{d}");
        assert!(is_valid_key_name(&d));
    }

    #[test]
    fn the_table_resolves_with_defaults_and_refuses_bad_witnesses() {
        let t = TlogTable {
            key: Some("tlog.key".into()),
            ..TlogTable::default()
        };
        let s = t
            .resolve(Path::new("/etc/lt"), Path::new("/var/lib/lt/m.db"))
            .unwrap();
        assert_eq!(s.key, PathBuf::from("/etc/lt/tlog.key"));
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/lt/m.db.tlog-signed"));
        assert_eq!(s.checkpoint_interval, Duration::from_secs(10));
        assert!(TlogTable::default()
            .resolve(Path::new("/"), Path::new("/m.db"))
            .is_err());
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let cosigner = VerifierKey::of("w.example/1", COSIGNATURE_V1, &key).to_string();
        let plain = VerifierKey::of("w.example/1", crate::ledger::note::ED25519, &key).to_string();
        let with_ca = |url: &str, vkey: &str, ca: Option<&str>| TlogTable {
            key: Some("k".into()),
            witness: Some(vec![WitnessTable {
                url: url.into(),
                vkey: vkey.into(),
                ca_file: ca.map(PathBuf::from),
            }]),
            ..TlogTable::default()
        };
        let with = |url: &str, vkey: &str| with_ca(url, vkey, None);
        let ok = with("http://127.0.0.1:1/w/", &cosigner)
            .resolve(Path::new("/"), Path::new("/m.db"))
            .unwrap();
        assert_eq!(ok.witnesses[0].url, "http://127.0.0.1:1/w");
        assert!(with("http://x", &plain)
            .resolve(Path::new("/"), Path::new("/m.db"))
            .is_err());
        let tls = with_ca("https://w.example/", &cosigner, Some("ca.pem"))
            .resolve(Path::new("/etc/lt"), Path::new("/m.db"))
            .unwrap();
        assert_eq!(tls.witnesses[0].url, "https://w.example");
        assert_eq!(
            tls.witnesses[0].ca_file.as_deref(),
            Some(Path::new("/etc/lt/ca.pem"))
        );
        assert!(with_ca("http://x", &cosigner, Some("ca.pem"))
            .resolve(Path::new("/"), Path::new("/m.db"))
            .is_err());
        assert!(with("ftp://x", &cosigner)
            .resolve(Path::new("/"), Path::new("/m.db"))
            .is_err());
        assert!(with("http://x", "junk")
            .resolve(Path::new("/"), Path::new("/m.db"))
            .is_err());
    }
}
