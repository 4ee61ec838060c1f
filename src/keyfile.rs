//! Key files: an Ed25519 seed and its key id, as JSON in a file of mode
//! 0600 (`ledgertail keygen` writes them). A producer signs events with
//! one (`producer`), the verifiable log signs checkpoints with one
//! (`tlog`): this module owns the file, neither of them the other.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;

use crate::ledger::seal;

/// A key file that cannot be read, written or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {}: {reason}", path.display())]
    Bad { path: PathBuf, reason: String },
    #[error("key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key id {0:?} must be 1 to 128 bytes with no control character")]
    BadId(String),
    #[error("no randomness available for a new key: {0}")]
    NoRandomness(String),
}

impl KeyFileError {
    /// What the file is, for a key file that cannot be used.
    pub fn hint(&self) -> Option<String> {
        match self {
            KeyFileError::Bad { .. } => Some(
                "a key file is {\"key_id\": \"ID\", \"seed\": \"base64 of 32 bytes\"}, as `ledgertail keygen` writes it".into(),
            ),
            KeyFileError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => Some(format!(
                        "the folder {} does not exist: create it, or check the path",
                        dir.display()
                    )),
                    _ => Some("check the path of the key file".into()),
                }
            }
            KeyFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                Some("a key file is never overwritten: choose another path, or remove the old key once nothing needs it".into())
            }
            KeyFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                Some("check the file's permissions and the user this runs as".into())
            }
            KeyFileError::BadId(_) => Some("a key id is printed in logs and [keys] lines: use letters, digits, '-', '_' or '.'".into()),
            _ => None,
        }
    }
}

/// A producer's signing key, as stored in a key file.
#[derive(Clone)]
pub struct KeyFile {
    pub key_id: String,
    pub key: SigningKey,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    key_id: String,
    seed: String,
}

impl KeyFile {
    /// Reads a key file (`{"key_id": ..., "seed": base64 of 32 bytes}`).
    pub fn load(path: &Path) -> Result<KeyFile, KeyFileError> {
        let bad = |reason: String| KeyFileError::Bad {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parsed: KeyFileJson =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a key file: {e}")))?;
        if !seal::is_valid_key_id(&parsed.key_id) {
            return Err(bad(
                "key_id must be 1 to 128 bytes with no control character".into(),
            ));
        }
        let seed: [u8; 32] = STANDARD
            .decode(parsed.seed.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("seed is not base64 of 32 bytes".into()))?;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "key file is readable by other users; chmod 600 it"
                );
            }
        }
        Ok(KeyFile {
            key_id: parsed.key_id,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A new random key. The id must pass [`seal::is_valid_key_id`]: it
    /// is printed in logs and in the `[keys]` line of [`KeyFile::trust_line`].
    pub fn generate(key_id: &str) -> Result<KeyFile, KeyFileError> {
        if !seal::is_valid_key_id(key_id) {
            return Err(KeyFileError::BadId(key_id.to_owned()));
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyFileError::NoRandomness(e.to_string()))?;
        Ok(KeyFile {
            key_id: key_id.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Writes the key file with mode 0600; never overwrites a file.
    pub fn save_new(&self, path: &Path) -> Result<(), KeyFileError> {
        let json = serde_json::to_string(&KeyFileJson {
            key_id: self.key_id.clone(),
            seed: STANDARD.encode(self.key.to_bytes()),
        })
        .map_err(|e| KeyFileError::Bad {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let io_err = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        file.write_all(format!("{json}\n").as_bytes())
            .map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }

    /// The public key, base64 (the value of its `[keys]` line).
    pub fn public_base64(&self) -> String {
        seal::public_key_base64(&self.key)
    }

    /// The line to add under `[keys]`: `ID = "base64 public key"`.
    pub fn trust_line(&self) -> String {
        format!(
            "{} = \"{}\"",
            toml_key(&self.key_id),
            seal::public_key_base64(&self.key)
        )
    }
}

/// A TOML key, quoted when it is not a bare key.
fn toml_key(id: &str) -> String {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        id.to_owned()
    } else {
        let mut out = Vec::new();
        crate::ledger::jcs::write_string(&mut out, id);
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_with_mode_0600_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let key = KeyFile::generate("k1").unwrap();
        key.save_new(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = KeyFile::load(&path).unwrap();
        assert_eq!(loaded.key.to_bytes(), key.key.to_bytes());
        assert!(key.save_new(&path).is_err(), "existing file kept");
        assert!(key.trust_line().starts_with("k1 = \""));
        std::fs::write(
            dir.path().join("bad.json"),
            "{\"key_id\":\"x\",\"seed\":\"AAAA\"}",
        )
        .unwrap();
        assert!(KeyFile::load(&dir.path().join("bad.json")).is_err());
    }

    #[test]
    fn key_ids_with_control_characters_are_refused_and_trust_lines_are_toml() {
        for bad in ["a\nb", "k\u{7f}", "tab\there", "\u{85}next", ""] {
            assert!(KeyFile::generate(bad).is_err(), "{bad:?}");
        }
        for id in ["plain", "with space", "dot.ted", "é\"quote\\"] {
            let key = KeyFile::generate(id).unwrap();
            let line = key.trust_line();
            let table: toml::Table =
                toml::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(
                table.get(id).and_then(|v| v.as_str()),
                Some(key.public_base64().as_str()),
                "{line}"
            );
        }
    }
}
