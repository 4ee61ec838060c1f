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
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::SystemTime;

pub use crate::keyfile::{KeyFile, KeyFileError};

use crate::ledger::event::{seal_line, Draft, DraftError};
use crate::ledger::frame::DEFAULT_MAX_LINE_BYTES;
use crate::ledger::{authenticate, json, Hash, Head, KeyRing, SignaturePolicy};
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
    #[error("{}: the head is at seq {seq}, the largest a ledger can hold", path.display())]
    Full { path: PathBuf, seq: u64 },
    /// A write failed midway (a full disk, a file size limit): the partial
    /// line was cut off again; `appended` events of the call reached the
    /// file whole (and were fsynced).
    #[error("{}: {what}: {source}", path.display())]
    Write {
        path: PathBuf,
        what: String,
        appended: Vec<Appended>,
        #[source]
        source: io::Error,
    },
    #[error("{}: payload {} of the batch would make a line the sidecar refuses ({verdict}: {detail}); nothing of the batch was written", path.display(), index + 1)]
    Refused {
        path: PathBuf,
        /// Its position in the batch, from 0.
        index: usize,
        verdict: String,
        detail: String,
    },
    #[error("{}: the live file holds no event and no uncompressed rotated file does, but {} is compressed: the head may be in it, and a new chain here would reuse its seqs", path.display(), compressed.display())]
    HeadCompressed { path: PathBuf, compressed: PathBuf },
}

impl ProduceError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ProduceError::Io { path, source } => match source.kind() {
                io::ErrorKind::NotFound => match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => Some(format!(
                        "the folder {} does not exist: create it, or check the path",
                        dir.display()
                    )),
                    _ => None,
                },
                io::ErrorKind::PermissionDenied => Some(
                    "check the file's and its folder's permissions, and the user this runs as".into(),
                ),
                _ => None,
            },
            ProduceError::UnfinishedLine { .. } => Some(
                "a writer died mid-line or is still writing; if no writer is running, the line will never complete: investigate before removing it".into(),
            ),
            ProduceError::Payload(_) => Some(
                "one JSON value per line; write integers beyond 2^53-1 as strings".into(),
            ),
            ProduceError::Write { .. } => Some(
                "free disk space (or raise the file size limit) and append the rest again; the ledger ends at a complete line".into(),
            ),
            ProduceError::Refused { verdict, .. } if verdict == "too_long" => Some(
                "make the payload smaller, or raise max_line_bytes in the sidecar's [[ledger]] table and pass the same --max-line-bytes (or --config) to append".into(),
            ),
            ProduceError::Refused { .. } => Some(
                "objects and arrays may nest 127 levels in a payload (the event around it is one more)".into(),
            ),
            ProduceError::HeadCompressed { .. } => Some(
                "decompress the newest rotated file beside the ledger, and rotate with logrotate's delaycompress so that the newest rotated file stays readable".into(),
            ),
            _ => None,
        }
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
    /// The sidecar's line limit: a longer line would be `too_long` there,
    /// so it is never written; a longer line found at the end of the file
    /// is not an event to continue from.
    max_line_bytes: u64,
}

impl Writer {
    pub fn new(path: impl Into<PathBuf>) -> Writer {
        Writer {
            path: path.into(),
            signer: None,
            sync: true,
            cached: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// The line limit of the ledger's sidecar (`max_line_bytes`; the
    /// default is the sidecar's default).
    pub fn with_max_line_bytes(mut self, max: u64) -> Writer {
        self.max_line_bytes = max;
        self
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
    ///
    /// Before each line the live path is checked to still name the locked
    /// file: a rotation that does not take the lock may rename it at any
    /// moment, and lines written after that would land in a rotated file
    /// the sidecar has already finished. The remaining lines then go to the
    /// new live file, under its own lock. A write that fails midway leaves
    /// no partial line: the file is cut back to its last complete line
    /// (lines written whole stay: a sidecar may have mirrored them already),
    /// and the error says which events reached it.
    pub fn append_batch(
        &mut self,
        event_type: &str,
        payloads: &[&str],
    ) -> Result<Vec<Appended>, ProduceError> {
        let parsed = payloads
            .iter()
            .map(|p| json::parse(p).map_err(|e| ProduceError::Payload(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut appended = Vec::with_capacity(parsed.len());
        while appended.len() < parsed.len() {
            let rest = &parsed[appended.len()..];
            self.append_to_live(event_type, rest, &mut appended)?;
        }
        Ok(appended)
    }

    /// Appends as many of `payloads` as the live file takes before it is
    /// renamed (all of them, normally), pushing each to `appended`.
    fn append_to_live(
        &mut self,
        event_type: &str,
        payloads: &[json::Value<'_>],
        appended: &mut Vec<Appended>,
    ) -> Result<(), ProduceError> {
        let io_err = |source| ProduceError::Io {
            path: self.path.clone(),
            source,
        };
        let file = self.open_locked().map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        let id = tail::FileId::of(&meta);
        let mut head = match self.cached {
            Some((cid, clen, head)) if cid == id && clen == meta.len() => Some(head),
            _ => self.find_head(&file, meta.len())?,
        };
        self.cached = None;
        // Every line is sealed and judged as the sidecar will judge it
        // before anything is written: a line it would refuse (too long,
        // nested too deep) is never appended, and no seq is used up.
        let sealed = self.seal_all(event_type, payloads, head)?;
        let mut len = meta.len();
        let before = appended.len();
        for (i, (line, next)) in sealed.iter().enumerate() {
            if i > 0 && !self.still_live(&id) {
                break; // renamed under us: the rest goes to the new file
            }
            if let Err(e) = (&file).write_all(line) {
                return Err(self.cut_back(&file, len, appended, before, e));
            }
            len += line.len() as u64;
            head = Some(Head {
                seq: next.seq,
                hash: next.hash,
            });
            appended.push(next.clone());
        }
        self.sync(&file, appended, before, len)?;
        self.cached = head.map(|h| (id, len, h));
        // Dropping `file` releases the lock.
        Ok(())
    }

    /// Seals each payload as the next event after `head` and judges the
    /// line (with its LF) as the sidecar would, up to authenticity.
    fn seal_all(
        &self,
        event_type: &str,
        payloads: &[json::Value<'_>],
        mut head: Option<Head>,
    ) -> Result<Vec<(Vec<u8>, Appended)>, ProduceError> {
        let mut out = Vec::with_capacity(payloads.len());
        let keys = KeyRing::default();
        let mut scratch = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
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
            let refused = |verdict: &str, detail: String| ProduceError::Refused {
                path: self.path.clone(),
                index: i,
                verdict: verdict.to_owned(),
                detail,
            };
            if text.len() as u64 > self.max_line_bytes {
                return Err(refused(
                    "too_long",
                    format!(
                        "its line would be {} bytes, over the line limit of {} (max_line_bytes)",
                        text.len(),
                        self.max_line_bytes
                    ),
                ));
            }
            if let Err(r) = authenticate(text.as_bytes(), SignaturePolicy::Off, &keys, &mut scratch)
            {
                return Err(refused(r.verdict.as_str(), r.detail));
            }
            let mut line = text.into_bytes();
            line.push(b'\n');
            out.push((line, Appended { seq, hash }));
            head = Some(Head { seq, hash });
        }
        Ok(out)
    }

    /// Does the live path still name the file `id` we hold locked?
    fn still_live(&self, id: &tail::FileId) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| tail::FileId::of(&m).same_inode(id))
    }

    /// fsyncs what this call wrote to `file` (a failure is reported like a
    /// failed write: the lines may not be durable).
    fn sync(
        &self,
        file: &File,
        appended: &mut Vec<Appended>,
        before: usize,
        len: u64,
    ) -> Result<(), ProduceError> {
        if !self.sync {
            return Ok(());
        }
        file.sync_data().map_err(|source| {
            let written = appended.len() - before;
            ProduceError::Write {
                path: self.path.clone(),
                what: format!(
                    "{written} event(s) were written (the file is {len} bytes) but fsync failed, so they may not be durable"
                ),
                appended: std::mem::take(appended),
                source,
            }
        })
    }

    /// After a failed write: cuts the file back to `len` (the end of the
    /// last line written whole), fsyncs, and says what reached the file.
    fn cut_back(
        &self,
        file: &File,
        len: u64,
        appended: &mut Vec<Appended>,
        before: usize,
        source: io::Error,
    ) -> ProduceError {
        let whole = &appended[before..];
        let kept = match (whole.first(), whole.last()) {
            (Some(a), Some(b)) => format!(
                "{} event(s) of this batch reached the file whole (seq {}..={}), then",
                whole.len(),
                a.seq,
                b.seq
            ),
            _ => "no event of this batch reached the file:".to_owned(),
        };
        let what = match file.set_len(len).and_then(|()| file.sync_data()) {
            Ok(()) => format!(
                "{kept} a line could not be written; its partial bytes were removed (the file ends at its last complete line, {len} bytes)"
            ),
            Err(e) => format!(
                "{kept} a line could not be written, and removing its partial bytes failed too ({e}): cut the file back to {len} bytes (`truncate -s {len}`) before appending again"
            ),
        };
        ProduceError::Write {
            path: self.path.clone(),
            what,
            appended: std::mem::take(appended),
            source,
        }
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
    /// Lines longer than the line limit are skipped unread (the sidecar
    /// refuses them as `too_long`, and this writer never writes one).
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
        let keys = KeyRing::default();
        let last = |file: &File, len: u64| {
            tail::backward::last_authentic(
                file,
                len,
                SignaturePolicy::Off,
                &keys,
                self.max_line_bytes,
            )
        };
        if let Some(head) = last(live, len).map_err(io_err)? {
            return Ok(Some(head));
        }
        // Ordering needs only each file's first event: the usual line limit.
        let files = tail::discover(
            &self.path,
            Authenticity {
                policy: SignaturePolicy::Off,
                keys: &keys,
                max_line_bytes: self.max_line_bytes,
                follow_symlink: true,
                plain_first_seqs: None,
                plain_recorded_lines: None,
            },
        )
        .map_err(io_err)?;
        for f in files.iter().rev().filter(|f| !f.is_live) {
            let in_file = |source| ProduceError::Io {
                path: f.path.clone(),
                source,
            };
            let Some(file) = tail::identity::reopen(&f.path, &f.id).map_err(in_file)? else {
                continue;
            };
            if let Some(head) = last(&file, f.len).map_err(in_file)? {
                return Ok(Some(head));
            }
        }
        // No readable event anywhere. Compressed siblings mean the chain's
        // history is in files that are never read: starting again at seq 0
        // would fork it.
        let compressed = tail::identity::compressed_siblings(&self.path).map_err(io_err)?;
        if let Some((newest, _)) = compressed.into_iter().max_by_key(|(_, modified)| *modified) {
            return Err(ProduceError::HeadCompressed {
                path: self.path.clone(),
                compressed: newest,
            });
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

/// `n` lines of one chain (newline included), made with the library's
/// own writer: for the unit tests of the modules that read ledgers.
#[cfg(test)]
pub(crate) fn chain_lines(n: usize) -> Vec<Vec<u8>> {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("chain.jsonl");
    let mut w = Writer::new(&path).without_fsync();
    for i in 0..n {
        w.append("t", &format!("{{\"i\":{i}}}")).unwrap();
    }
    let text = std::fs::read(&path).unwrap();
    text.split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
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
    fn a_line_the_sidecar_would_refuse_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut w = Writer::new(&path).without_fsync().with_max_line_bytes(1000);
        w.append("t", "0").unwrap();
        let before = std::fs::read(&path).unwrap();
        let deep = format!("{}{}", "[".repeat(128), "]".repeat(128));
        let err = w.append_batch("t", &["1", &deep]).unwrap_err();
        assert!(
            matches!(&err, ProduceError::Refused { index: 1, verdict, .. } if verdict == "malformed"),
            "{err}"
        );
        let long = format!("\"{}\"", "x".repeat(1000));
        let err = w.append("t", &long).unwrap_err();
        assert!(
            matches!(&err, ProduceError::Refused { verdict, .. } if verdict == "too_long"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
        assert_eq!(w.append("t", "2").unwrap().seq, 1, "no seq used up");
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
}
