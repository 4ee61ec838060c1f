//! The verifiable log's edge (contract §7): signing checkpoints of each
//! ledger's tree with the log key, never one that contradicts a checkpoint
//! signed before. What was signed is remembered twice: in the mirror
//! (`tlog_checkpoints`, append-only) and in the signer's state folder
//! outside it, so that a mirror restored from an older copy, or rebuilt
//! from a rewritten ledger, is refused with the evidence instead of being
//! signed into a fork.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub mod audit;
pub mod prove;
pub mod publish;
pub mod verify;
pub mod witness;

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use crate::config::TlogSettings;
use crate::keyfile::KeyFile;
use crate::ledger::note::{self, Note, VerifierKey, ED25519};
use crate::ledger::tlog::{hash_base64, Checkpoint, SignedCheckpoint};
use crate::ledger::Hash;
use crate::mirror::{Mirror, MirrorError};

#[derive(Debug, thiserror::Error)]
pub enum TlogError {
    #[error("no log key: the configuration has no [tlog] table")]
    NotConfigured,
    #[error("ledger `{ledger}` has no mirrored event yet: there is no tree to sign")]
    Empty { ledger: String },
    #[error("ledger `{ledger}`: refusing to sign: the mirror's tree has {tree} leaves, fewer than the checkpoint of size {signed} this log key already signed ({evidence}). A mirror restored from an older copy, or rebuilt from a shorter or rewritten ledger, looks like this")]
    Rollback {
        ledger: String,
        tree: u64,
        signed: u64,
        evidence: String,
    },
    #[error("ledger `{ledger}`: refusing to sign: at size {size} the mirror's tree has root {tree_root}, but the checkpoint this log key signed for that size has root {signed_root} ({evidence}). The ledger or the mirror was rewritten since")]
    Fork {
        ledger: String,
        size: u64,
        tree_root: String,
        signed_root: String,
        evidence: String,
    },
    #[error("the log key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("the signer's state {}: {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the signer's state {}: {reason}", path.display())]
    BadState { path: PathBuf, reason: String },
    #[error("witness {witness} ({url}): {reason}")]
    Witness {
        witness: String,
        url: String,
        reason: String,
    },
    #[error(transparent)]
    Mirror(#[from] MirrorError),
}

impl TlogError {
    pub fn hint(&self) -> Option<String> {
        match self {
            TlogError::NotConfigured => Some("add a [tlog] table with key = \"tlog.key\" (a key file made by `ledgertail keygen --out tlog.key`)".into()),
            TlogError::Empty { .. } => Some("mirror some events first (`ledgertail run` or `ledgertail replay`)".into()),
            TlogError::Rollback { .. } | TlogError::Fork { .. } => Some(
                "do not sign over it: compare the mirror with the ledger (`ledgertail verify --db`), find out what happened to them, and keep the evidence (the signed checkpoint is in the state folder)".into(),
            ),
            TlogError::Key { .. } => Some("`[tlog] key` names a key file made by `ledgertail keygen`".into()),
            TlogError::State { .. } | TlogError::BadState { .. } => Some("`[tlog] state_dir` must be a folder ledgertail can write; never edit its files".into()),
            TlogError::Witness { .. } => Some("an https:// witness is checked against its ca_file (a PEM file) under [[tlog.witness]], or the system's trust store (SSL_CERT_FILE or /etc/ssl/certs) when it names none".into()),
            TlogError::Mirror(e) => e.hint(),
        }
    }
}

/// A checkpoint as signed: the checkpoint and its note (with any
/// cosignatures kept for it).
#[derive(Debug, Clone)]
pub struct Signed {
    pub checkpoint: Checkpoint,
    pub note: String,
    /// False when the latest checkpoint already covered the tree.
    pub new: bool,
}

/// The log key and the state it keeps.
pub struct Signer {
    key: SigningKey,
    state_dir: PathBuf,
}

/// The verifier key of a ledger's log: its origin as the key name.
pub fn verifier_key(origin: &str, key: &SigningKey) -> VerifierKey {
    VerifierKey::of(origin, ED25519, key)
}

impl Signer {
    pub fn load(settings: &TlogSettings) -> Result<Signer, TlogError> {
        let key = KeyFile::load(&settings.key).map_err(|e| TlogError::Key {
            path: settings.key.clone(),
            reason: e.to_string(),
        })?;
        Ok(Signer {
            key: key.key,
            state_dir: settings.state_dir.clone(),
        })
    }

    pub fn verifier_key(&self, origin: &str) -> VerifierKey {
        verifier_key(origin, &self.key)
    }

    fn state_path(&self, origin: &str) -> PathBuf {
        state_file(&self.state_dir, origin)
    }

    fn read_state(&self, origin: &str) -> Result<Option<SignedCheckpoint>, TlogError> {
        let path = self.state_path(origin);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(TlogError::State { path, source }),
        };
        let signed = SignedCheckpoint::parse(&text).map_err(|e| TlogError::BadState {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let vkey = self.verifier_key(origin);
        if signed.checkpoint.origin != origin || signed.note.verify(&vkey).is_err() {
            return Err(TlogError::BadState {
                path,
                reason: format!("it is not a checkpoint of {origin} signed by this log key"),
            });
        }
        Ok(Some(signed))
    }

    /// Signs a checkpoint of the ledger's tree as it stands, unless the
    /// latest one already covers it; refuses one that would contradict a
    /// checkpoint signed before (in the mirror or in the state folder).
    pub fn sign(&self, mirror: &Mirror, ledger: &str, origin: &str) -> Result<Signed, TlogError> {
        let mut all = self.sign_all(mirror, &[(ledger, origin)]);
        all.pop().unwrap_or(Err(TlogError::Empty {
            ledger: ledger.to_owned(),
        }))
    }

    /// [`Signer::sign`] for many ledgers `(ledger, origin)` at once, with
    /// the writes of a round batched: the state files made durable
    /// together (one sync of the folder's filesystem, one of the folder),
    /// the mirror's rows in one transaction. One result per ledger.
    pub fn sign_all(
        &self,
        mirror: &Mirror,
        ledgers: &[(&str, &str)],
    ) -> Vec<Result<Signed, TlogError>> {
        let mut results: Vec<Result<Prepared, TlogError>> = ledgers
            .iter()
            .map(|(ledger, origin)| self.prepare(mirror, ledger, origin))
            .collect();
        // The state first: a crash after it leaves checkpoints the mirror
        // lacks, which the next signing finds consistent and keeps.
        let states: Vec<(PathBuf, &str)> = results
            .iter()
            .zip(ledgers)
            .filter_map(|(r, (_, origin))| match r {
                Ok(Prepared {
                    new: true, note, ..
                }) => Some((self.state_path(origin), note.as_str())),
                _ => None,
            })
            .collect();
        if let Err(e) = write_all_durably(&self.state_dir, &states) {
            for r in results.iter_mut().filter(|r| matches!(r, Ok(p) if p.new)) {
                *r = Err(TlogError::State {
                    path: self.state_dir.clone(),
                    source: std::io::Error::new(e.kind(), e.to_string()),
                });
            }
        }
        let rows: Vec<(&str, u64, String, &str)> = results
            .iter()
            .zip(ledgers)
            .filter_map(|(r, (ledger, _))| match r {
                Ok(p) if p.store => Some((
                    *ledger,
                    p.checkpoint.size,
                    hash_base64(&p.checkpoint.root),
                    p.note.as_str(),
                )),
                _ => None,
            })
            .collect();
        let stored_together = mirror.store_checkpoints(&rows).is_ok();
        results
            .into_iter()
            .zip(ledgers)
            .map(|(r, (ledger, _))| {
                let p = r?;
                if p.store && !stored_together {
                    // The batch failed: each alone, each with its own error.
                    let root = hash_base64(&p.checkpoint.root);
                    mirror.store_checkpoint(ledger, p.checkpoint.size, &root, &p.note)?;
                }
                Ok(Signed {
                    checkpoint: p.checkpoint,
                    note: p.note,
                    new: p.new,
                })
            })
            .collect()
    }

    /// Everything of [`Signer::sign`] but its writes: the checks against
    /// what was signed before, and the new signature if one is due.
    fn prepare(&self, mirror: &Mirror, ledger: &str, origin: &str) -> Result<Prepared, TlogError> {
        let tree = match mirror.tree_head(ledger)? {
            Some(t) if t.size > 0 => t,
            _ => {
                return Err(TlogError::Empty {
                    ledger: ledger.to_owned(),
                })
            }
        };
        let mut known: Vec<(String, SignedCheckpoint, bool)> = Vec::new();
        let in_mirror = mirror.latest_checkpoint(ledger)?;
        if let Some(stored) = &in_mirror {
            if let Ok(signed) = SignedCheckpoint::parse(&stored.note) {
                if signed.checkpoint.origin == origin {
                    known.push((
                        format!("kept in the mirror, signed {}", stored.signed_at),
                        signed,
                        true,
                    ));
                }
            }
        }
        if let Some(signed) = self.read_state(origin)? {
            known.push((
                format!("kept in {}", self.state_path(origin).display()),
                signed,
                false,
            ));
        }
        // The mirror's and the state's checkpoint are most often the same
        // one: each root is computed once (it hashes partial tiles).
        let mut roots: Vec<(u64, Hash)> = Vec::new();
        for (evidence, signed, _) in &known {
            let c = &signed.checkpoint;
            if c.size > tree.size {
                return Err(TlogError::Rollback {
                    ledger: ledger.to_owned(),
                    tree: tree.size,
                    signed: c.size,
                    evidence: evidence.clone(),
                });
            }
            let root = match roots.iter().find(|(size, _)| *size == c.size) {
                Some(&(_, root)) => root,
                None => {
                    let root = mirror.tree_root_at(ledger, c.size)?;
                    roots.push((c.size, root));
                    root
                }
            };
            if root != c.root {
                return Err(TlogError::Fork {
                    ledger: ledger.to_owned(),
                    size: c.size,
                    tree_root: hash_base64(&root),
                    signed_root: hash_base64(&c.root),
                    evidence: evidence.clone(),
                });
            }
        }
        if let Some((_, signed, kept)) = known
            .iter()
            .find(|(_, s, _)| s.checkpoint.size == tree.size)
        {
            return Ok(Prepared {
                checkpoint: signed.checkpoint.clone(),
                note: signed.note.to_text(),
                new: false,
                // Signed, then interrupted before the mirror kept it.
                store: !kept && in_mirror.as_ref().is_none_or(|m| m.size < tree.size),
            });
        }
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            size: tree.size,
            root: tree.root,
            extensions: Vec::new(),
        };
        let body = checkpoint.body();
        let sig = note::sign(&body, origin, &self.key);
        let note = Note {
            text: body,
            signatures: vec![sig],
        }
        .to_text();
        Ok(Prepared {
            checkpoint,
            note,
            new: true,
            store: true,
        })
    }
}

/// A ledger's checkpoint as signing finds it, before anything is written.
struct Prepared {
    checkpoint: Checkpoint,
    note: String,
    /// Signed now (else: the latest one already covered the tree).
    new: bool,
    /// The mirror lacks it and must keep it.
    store: bool,
}

/// Where a state folder keeps the latest checkpoint of `origin` (the
/// signer's, and `verify-proof --state`'s): a file name that stays in the
/// folder whatever the origin holds.
pub fn state_file(dir: &Path, origin: &str) -> PathBuf {
    let safe: String = origin
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let d = Sha256::digest(origin.as_bytes());
    dir.join(format!(
        "{safe}-{:02x}{:02x}{:02x}{:02x}.checkpoint",
        d[0], d[1], d[2], d[3]
    ))
}

/// Replaces each `(path, text)` in `dir` durably, together: every file
/// written beside its place, their data made durable (one sync of the
/// filesystem for many; an fsync for one), then each swapped into place
/// and the folder synced once. A crash leaves each file old or new.
///
/// The file beside (`<name>.previous`) is rewritten in place and
/// *exchanged* with the file, so it keeps the previous checkpoint and the
/// next round rewrites it again: signing 1,000 ledgers a round creates
/// and deletes no files. Creating a file per ledger per round (write
/// beside, rename over) spent 60 % of the signer's CPU in the
/// filesystem's inode allocation.
fn write_all_durably(dir: &Path, files: &[(PathBuf, &str)]) -> std::io::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let written = files
        .iter()
        .map(|(path, text)| write_beside(&previous_file(path), text))
        .collect::<std::io::Result<Vec<_>>>()?;
    match written.as_slice() {
        [(_, file)] => file.sync_all()?,
        _ => sync_data_of(dir, &written)?,
    }
    for ((beside, _), (path, _)) in written.iter().zip(files) {
        swap_into_place(beside, path)?;
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Where the signer writes a state file's next text before swapping it
/// in; between rounds it holds the previous checkpoint.
fn previous_file(path: &Path) -> PathBuf {
    path.with_extension("previous")
}

/// Puts `beside` in `path`'s place atomically: an exchange of the two
/// names where the system has one (`beside` then holds the old text),
/// else a rename.
fn swap_into_place(beside: &Path, path: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt as _;
        let (Ok(from), Ok(to)) = (
            std::ffi::CString::new(beside.as_os_str().as_bytes()),
            std::ffi::CString::new(path.as_os_str().as_bytes()),
        ) else {
            return std::fs::rename(beside, path);
        };
        // SAFETY: two NUL-terminated paths that live across the call;
        // renameat2 only reads them. The raw syscall works with any libc.
        let done = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if done == 0 {
            return Ok(());
        }
        // The first signing of an origin (nothing to exchange with), or a
        // filesystem without exchange: a plain rename.
    }
    std::fs::rename(beside, path)
}

/// Makes the data of `files` durable: on Linux one `syncfs` of their
/// folder's filesystem, elsewhere an fsync each.
fn sync_data_of(dir: &Path, files: &[(PathBuf, std::fs::File)]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let _ = files;
        let folder = std::fs::File::open(dir)?;
        // SAFETY: a valid open descriptor; syncfs only reads it.
        if unsafe { libc::syncfs(folder.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        files.iter().try_for_each(|(_, f)| f.sync_all())
    }
}

/// Replaces `path` in `dir` durably: write, fsync, rename, fsync the folder
/// (made with mode 0700 if missing).
pub fn write_durably(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let (tmp, file) = write_beside(&path.with_extension("tmp"), text)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `text` to `tmp` (mode 0600, made or emptied), not yet synced:
/// the file and its name, to put into place.
fn write_beside(tmp: &Path, text: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(text.as_bytes())?;
    Ok((tmp.to_owned(), file))
}

/// The latest checkpoint of a ledger with the cosignatures kept for it.
pub fn latest_with_cosignatures(
    mirror: &Mirror,
    ledger: &str,
) -> Result<Option<(SignedCheckpoint, String)>, TlogError> {
    let Some(stored) = mirror.latest_checkpoint(ledger)? else {
        return Ok(None);
    };
    let Ok(mut signed) = SignedCheckpoint::parse(&stored.note) else {
        return Ok(None);
    };
    for c in mirror.cosignatures(ledger, stored.size)? {
        if let Ok(sig) = note::parse_signature_line(&c.line) {
            signed.note.add_signature(sig);
        }
    }
    let text = signed.note.to_text();
    Ok(Some((signed, text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn inodes(paths: &[&Path]) -> Vec<u64> {
        let mut v: Vec<u64> = paths
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().ino())
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn state_files_are_replaced_whole_and_the_previous_text_is_kept_beside() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("a.checkpoint"),
            dir.path().join("b.checkpoint"),
        );
        for round in 0..3 {
            let (ta, tb) = (format!("a{round}\n"), format!("b{round}\n"));
            write_all_durably(dir.path(), &[(a.clone(), &ta), (b.clone(), &tb)]).unwrap();
            assert_eq!(std::fs::read_to_string(&a).unwrap(), ta);
            assert_eq!(std::fs::read_to_string(&b).unwrap(), tb);
        }
        assert_eq!(std::fs::read_to_string(previous_file(&a)).unwrap(), "a1\n");
        assert_eq!(std::fs::read_to_string(previous_file(&b)).unwrap(), "b1\n");
    }

    #[test]
    fn rounds_of_signing_reuse_the_same_two_files_per_origin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.checkpoint");
        write_all_durably(dir.path(), &[(path.clone(), "1\n")]).unwrap();
        write_all_durably(dir.path(), &[(path.clone(), "2\n")]).unwrap();
        let pair = [path.as_path(), &previous_file(&path)];
        let before = inodes(&pair);
        for text in ["3\n", "4\n", "5\n"] {
            write_all_durably(dir.path(), &[(path.clone(), text)]).unwrap();
            assert_eq!(inodes(&pair), before, "a file was made or deleted");
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "5\n");
    }
}
