//! The producer side: sealing events and appending them to a ledger
//! (contract §4 `append`, `keygen`), for the CLI and for Rust programs.
//!
//! ```no_run
//! use ledgertail::producer::{KeyFile, Writer};
//!
//! let key = KeyFile::load("producer.key".as_ref())?;
//! let mut writer = Writer::new("ledger.jsonl").with_key(key);
//! let appended = writer.append("order.created", r#"{"order": 42, "total": "19.90"}"#)?;
//! println!("sealed seq {} as {}", appended.seq, appended.hash);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every append takes an exclusive lock on the live file, finds the head by
//! reading *back* from the end of the file (never the whole ledger), writes
//! each sealed line with one `write`, and `fsync`s before reporting
//! success. Several writers, in one process or many, therefore produce one
//! valid chain.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;

use crate::ledger::event::{seal_line, Draft, DraftError};
use crate::ledger::frame::QUARANTINE_PREFIX;
use crate::ledger::{authenticate, json, seal, Hash, Head, KeyRing, SignaturePolicy};
use crate::tail::{self, Authenticity};

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: the ledger ends in an unfinished line ({bytes} bytes after the last newline); refusing to append after it", path.display())]
    UnfinishedLine { path: PathBuf, bytes: u64 },
    #[error("payload is not acceptable JSON: {0}")]
    Payload(String),
    #[error("{0}")]
    Draft(#[from] DraftError),
    #[error("key file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error("{}: the head is at seq {seq}, the largest a ledger can hold", path.display())]
    Full { path: PathBuf, seq: u64 },
}

impl ProduceError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ProduceError::UnfinishedLine { .. } => Some(
                "a writer died mid-line or is still writing; if no writer is running, the line will never complete: investigate before removing it".into(),
            ),
            ProduceError::KeyFile { .. } => {
                Some("a key file is {\"key_id\": \"ID\", \"seed\": \"base64 of 32 bytes\"}, as `ledgertail keygen` writes it".into())
            }
            ProduceError::Payload(_) => Some(
                "one JSON value per line; write integers beyond 2^53-1 as strings".into(),
            ),
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
    pub fn load(path: &Path) -> Result<KeyFile, ProduceError> {
        let bad = |reason: String| ProduceError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let parsed: KeyFileJson =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a key file: {e}")))?;
        if parsed.key_id.is_empty() || parsed.key_id.len() > 128 {
            return Err(bad("key_id must be 1 to 128 bytes".into()));
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

    /// A new random key.
    pub fn generate(key_id: &str) -> Result<KeyFile, ProduceError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| ProduceError::KeyFile {
            path: PathBuf::new(),
            reason: format!("no randomness available: {e}"),
        })?;
        Ok(KeyFile {
            key_id: key_id.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Writes the key file with mode 0600; never overwrites a file.
    pub fn save_new(&self, path: &Path) -> Result<(), ProduceError> {
        let json = serde_json::to_string(&KeyFileJson {
            key_id: self.key_id.clone(),
            seed: STANDARD.encode(self.key.to_bytes()),
        })
        .map_err(|e| ProduceError::KeyFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let io_err = |source| ProduceError::Io {
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

    /// The line to add under `[keys]`: `ID = "base64 public key"`.
    /// The public key, base64 (the value of its `[keys]` line).
    pub fn public_base64(&self) -> String {
        seal::public_key_base64(&self.key)
    }

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

/// One appended event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: Hash,
}

/// Appends sealed events to a ledger.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    signer: Option<KeyFile>,
    /// Whether to fsync after each batch (off only for test fixtures).
    sync: bool,
    /// The head we wrote last, valid while the file is `(id, len)`.
    cached: Option<(tail::FileId, u64, Head)>,
}

impl Writer {
    pub fn new(path: impl Into<PathBuf>) -> Writer {
        Writer {
            path: path.into(),
            signer: None,
            sync: true,
            cached: None,
        }
    }

    /// Signs every event with this key (its `key_id` goes into the event).
    pub fn with_key(mut self, key: KeyFile) -> Writer {
        self.signer = Some(key);
        self
    }

    /// Skips fsync. Only for building test fixtures: a crash may then lose
    /// events that were reported as appended.
    pub fn without_fsync(mut self) -> Writer {
        self.sync = false;
        self
    }

    /// Seals and appends one event with the payload given as JSON text.
    pub fn append(
        &mut self,
        event_type: &str,
        payload_json: &str,
    ) -> Result<Appended, ProduceError> {
        let mut out = self.append_batch(event_type, &[payload_json])?;
        out.pop()
            .ok_or_else(|| ProduceError::Payload("nothing appended".into()))
    }

    /// Seals and appends several events under one lock and one fsync (each
    /// line still gets its own `write`). Every payload is checked before
    /// anything is written.
    pub fn append_batch(
        &mut self,
        event_type: &str,
        payloads: &[&str],
    ) -> Result<Vec<Appended>, ProduceError> {
        let parsed = payloads
            .iter()
            .map(|p| json::parse(p).map_err(|e| ProduceError::Payload(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let io_err = |source| ProduceError::Io {
            path: self.path.clone(),
            source,
        };
        let file = self.open_locked().map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        let id = tail::FileId::of(&meta);
        let head = match self.cached {
            Some((cid, clen, head)) if cid == id && clen == meta.len() => Some(head),
            _ => self.find_head(&file, meta.len())?,
        };
        let mut appended = Vec::with_capacity(parsed.len());
        let mut head = head;
        let mut len = meta.len();
        let mut line = Vec::with_capacity(512);
        for payload in &parsed {
            let (seq, prev_hash) = match head {
                None => (0, None),
                Some(h) => (h.seq + 1, Some(h.hash)),
            };
            if seq as f64 > json::MAX_SAFE_INTEGER {
                return Err(ProduceError::Full {
                    path: self.path.clone(),
                    seq: seq - 1,
                });
            }
            let ts = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
            let draft = Draft {
                seq,
                prev_hash,
                ts: &ts,
                event_type,
                id: None,
                payload,
            };
            let signer = self.signer.as_ref().map(|k| (k.key_id.as_str(), &k.key));
            let (text, hash) = seal_line(&draft, signer)?;
            line.clear();
            line.extend_from_slice(text.as_bytes());
            line.push(b'\n');
            (&file).write_all(&line).map_err(io_err)?;
            len += line.len() as u64;
            head = Some(Head { seq, hash });
            appended.push(Appended { seq, hash });
        }
        if self.sync {
            file.sync_data().map_err(io_err)?;
        }
        self.cached = head.map(|h| (id, len, h));
        // Dropping `file` releases the lock.
        Ok(appended)
    }

    /// Opens the live file for appending and locks it exclusively, making
    /// sure the lock is on the file the path names now (a rotation may
    /// have renamed the one we opened).
    fn open_locked(&self) -> io::Result<File> {
        loop {
            let file = OpenOptions::new()
                .append(true)
                .read(true)
                .create(true)
                .mode(0o644)
                .open(&self.path)?;
            file.lock()?;
            let locked = file.metadata()?;
            match std::fs::metadata(&self.path) {
                Ok(now) if now.ino() == locked.ino() && now.dev() == locked.dev() => {
                    return Ok(file)
                }
                _ => continue, // rotated between open and lock: try the new file
            }
        }
    }

    /// The head: the last well-formed event with a correct hash in the
    /// live file, read back from its end; else in the newest rotated file.
    fn find_head(&self, live: &File, len: u64) -> Result<Option<Head>, ProduceError> {
        let io_err = |source| ProduceError::Io {
            path: self.path.clone(),
            source,
        };
        if len > 0 {
            let mut last = [0u8; 1];
            live.read_exact_at(&mut last, len - 1).map_err(io_err)?;
            if last[0] != b'\n' {
                let unfinished = bytes_after_last_lf(live, len).map_err(io_err)?;
                return Err(ProduceError::UnfinishedLine {
                    path: self.path.clone(),
                    bytes: unfinished,
                });
            }
        }
        if let Some(head) = last_event_in(live, len).map_err(io_err)? {
            return Ok(Some(head));
        }
        let keys = KeyRing::default();
        let files = tail::discover(
            &self.path,
            Authenticity {
                policy: SignaturePolicy::Off,
                keys: &keys,
                max_line_bytes: u64::MAX,
            },
        )
        .map_err(io_err)?;
        for f in files.iter().rev().filter(|f| !f.is_live) {
            let file = File::open(&f.path).map_err(|source| ProduceError::Io {
                path: f.path.clone(),
                source,
            })?;
            if let Some(head) = last_event_in(&file, f.len).map_err(|source| ProduceError::Io {
                path: f.path.clone(),
                source,
            })? {
                return Ok(Some(head));
            }
        }
        Ok(None)
    }
}

/// Number of bytes after the last LF of a file of `len` bytes.
fn bytes_after_last_lf(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let buf = &mut block[..(end - start) as usize];
        file.read_exact_at(buf, start)?;
        if let Some(i) = memchr::memrchr(b'\n', buf) {
            return Ok(len - (start + i as u64 + 1));
        }
        end = start;
    }
    Ok(len)
}

/// The last well-formed event with a correct hash among the complete lines
/// of a file, reading backwards in blocks from its end.
fn last_event_in(file: &File, len: u64) -> io::Result<Option<Head>> {
    const BLOCK: u64 = 64 * 1024;
    let keys = KeyRing::default();
    let mut scratch = Vec::new();
    // `pending` holds the bytes of the (partial) line being assembled
    // backwards; `end` is where the unread part of the file ends.
    let mut end = len;
    let mut pending: Vec<u8> = Vec::new();
    // Skip bytes after the last LF (an unfinished line in a rotated file).
    let mut seen_lf = false;
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let mut block = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut block, start)?;
        block.extend_from_slice(&pending);
        let mut line_end = block.len();
        // Walk the lines of this block from last to first; the first piece
        // (before the block's first LF) may continue in the previous block.
        while let Some(i) = memchr::memrchr(b'\n', &block[..line_end]) {
            if seen_lf {
                let line = &block[i + 1..line_end];
                if let Ok(ev) = authenticate(line, SignaturePolicy::Off, &keys, &mut scratch) {
                    return Ok(Some(Head {
                        seq: ev.seq,
                        hash: ev.hash,
                    }));
                }
            }
            seen_lf = true;
            line_end = i;
        }
        pending = block[..line_end].to_vec();
        if pending.len() > 64 * 1024 * 1024 {
            // A line this long is not an event a producer wrote; give up on
            // it rather than hold it all in memory.
            pending.truncate(QUARANTINE_PREFIX);
        }
        end = start;
    }
    if seen_lf && !pending.is_empty() {
        if let Ok(ev) = authenticate(&pending, SignaturePolicy::Off, &keys, &mut scratch) {
            return Ok(Some(Head {
                seq: ev.seq,
                hash: ev.hash,
            }));
        }
    }
    Ok(None)
}

/// The seq of the last well-formed event with a correct hash in a file
/// (read back from its end), for a lag estimate before the file is read.
pub fn last_seq_in(path: &Path) -> io::Result<Option<u64>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    Ok(last_event_in(&file, len)?.map(|h| h.seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_a_chain_and_finds_the_head_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut w = Writer::new(&path).without_fsync();
        let first = w.append("t", r#"{"n":0}"#).unwrap();
        assert_eq!(first.seq, 0);
        let batch = w.append_batch("t", &["1", "2", "[3]"]).unwrap();
        assert_eq!(batch.iter().map(|a| a.seq).collect::<Vec<_>>(), [1, 2, 3]);
        // A fresh writer (no cache) finds the same head by reading back.
        let mut w2 = Writer::new(&path).without_fsync();
        assert_eq!(w2.append("t", "4").unwrap().seq, 4);
        // Garbage after the head is skipped when looking for it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"garbage\n{}\n")
            .unwrap();
        assert_eq!(Writer::new(&path).append("t", "5").unwrap().seq, 5);
    }

    #[test]
    fn refuses_to_append_after_an_unfinished_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        Writer::new(&path).append("t", "0").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"half")
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = Writer::new(&path).append("t", "1").unwrap_err();
        assert!(
            matches!(err, ProduceError::UnfinishedLine { bytes: 6, .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
    }

    #[test]
    fn continues_from_the_newest_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut w = Writer::new(&path);
        w.append_batch("t", &["0", "1"]).unwrap();
        std::fs::rename(&path, dir.path().join("a.jsonl.1")).unwrap();
        let next = Writer::new(&path).append("t", "2").unwrap();
        assert_eq!(next.seq, 2);
    }

    #[test]
    fn bad_payloads_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let err = Writer::new(&path)
            .append_batch("t", &["1", "{\"a\":1,\"a\":2}"])
            .unwrap_err();
        assert!(matches!(err, ProduceError::Payload(_)));
        assert!(!path.exists() || std::fs::read(&path).unwrap().is_empty());
    }

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
}
