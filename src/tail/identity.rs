//! Which files make up a ledger, and which file is which (contract §1.4).
//!
//! A file is identified by `(dev, ino)`, which survives the rename of a
//! rotation. The files of a ledger are the live file plus its rotated
//! siblings (`<name>.<anything>` beside it, compressed ones excluded),
//! ordered by the seq of their first authentic event; the live file is the
//! newest by definition and always comes last.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::ledger::frame::{Frame, Framer};
use crate::ledger::{authenticate, KeyRing, SignaturePolicy};

/// Identity of a ledger file across renames: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Written as `dev:ino` in the mirror.
impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}

impl FromStr for FileId {
    type Err = ();
    fn from_str(s: &str) -> Result<FileId, ()> {
        let (dev, ino) = s.split_once(':').ok_or(())?;
        Ok(FileId {
            dev: dev.parse().map_err(|_| ())?,
            ino: ino.parse().map_err(|_| ())?,
        })
    }
}

/// One file of a ledger as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerFile {
    pub path: PathBuf,
    pub id: FileId,
    pub len: u64,
    /// Seq of the first authentic event, `None` when it holds none (yet).
    pub first_seq: Option<u64>,
    pub is_live: bool,
}

/// Endings of compressed rotations, which are never read (§1.4).
const COMPRESSED: [&str; 6] = [".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip"];

/// True when `name` is a rotated sibling of the live file `live_name`.
pub fn is_rotated_name(live_name: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(live_name) else {
        return false;
    };
    if !rest.starts_with('.') || rest.len() < 2 {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    !COMPRESSED.iter().any(|ext| lower.ends_with(ext))
}

/// True when the live file or any rotated sibling exists. Cheap: names and
/// file types only, nothing is read.
pub fn any_file_exists(live: &Path) -> io::Result<bool> {
    if live.is_file() {
        return Ok(true);
    }
    let (dir, live_name) = split(live)?;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| is_rotated_name(&live_name, n))
            && dir.join(&name).is_file()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The folder of a ledger's files and the live file's name.
fn split(live: &Path) -> io::Result<(PathBuf, String)> {
    let dir = match live.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = live
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "ledger path has no file name"))?
        .to_owned();
    Ok((dir, name))
}

/// How to recognise an authentic event while ordering files.
#[derive(Clone, Copy)]
pub struct Authenticity<'a> {
    pub policy: SignaturePolicy,
    pub keys: &'a KeyRing,
    pub max_line_bytes: u64,
}

/// Lists a ledger's files, oldest first. A missing live file is not an
/// error (it may be about to be created); an unreadable directory is.
pub fn discover(live: &Path, auth: Authenticity<'_>) -> io::Result<Vec<LedgerFile>> {
    let (dir, live_name) = split(live)?;
    // The live file is looked at *before* the folder is listed: a file
    // renamed away from the live path after that look shows up in the
    // listing (and is recognised by its identity), so a rotation during
    // discovery can never hide a file between the rotated ones and the
    // live one.
    let live_file = match File::open(live) {
        Ok(file) => {
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a regular file", live.display()),
                ));
            }
            Some(LedgerFile {
                path: live.to_path_buf(),
                id: FileId::of(&meta),
                len: meta.len(),
                first_seq: first_authentic_seq_in(file, auth)?,
                is_live: true,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut rotated = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_rotated_name(&live_name, name) {
            continue;
        }
        let path = dir.join(name);
        // One handle for the identity and the first event: the name may
        // be given to another file at any moment (renumbering rotations).
        // Symlinks are followed like the live file's.
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let id = FileId::of(&meta);
        // The live file (renamed since we looked at it, or a hard link of
        // it among the siblings) stays the live file.
        if live_file.as_ref().is_some_and(|l| l.id == id) {
            continue;
        }
        rotated.push(LedgerFile {
            path,
            id,
            len: meta.len(),
            first_seq: first_authentic_seq_in(file, auth)?,
            is_live: false,
        });
    }
    // Files with no authentic event hold nothing the chain can use; they go
    // first (their lines are judged, and quarantined) in name order.
    rotated.sort_by(|a, b| {
        (a.first_seq.is_some(), a.first_seq, &a.path).cmp(&(
            b.first_seq.is_some(),
            b.first_seq,
            &b.path,
        ))
    });
    rotated.extend(live_file);
    Ok(rotated)
}

/// Reads a file from its start until its first authentic event.
pub fn first_authentic_seq(path: &Path, auth: Authenticity<'_>) -> io::Result<Option<u64>> {
    match File::open(path) {
        Ok(f) => first_authentic_seq_in(f, auth),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn first_authentic_seq_in(mut file: File, auth: Authenticity<'_>) -> io::Result<Option<u64>> {
    let mut framer = Framer::new(0, auth.max_line_bytes);
    let mut scratch = Vec::new();
    loop {
        let n = file.read(framer.spare(64 * 1024))?;
        if n == 0 {
            return Ok(None);
        }
        framer.filled(n);
        while let Some(frame) = framer.next_frame() {
            if let Frame::Line { bytes, .. } = frame {
                if let Ok(event) = authenticate(bytes, auth.policy, auth.keys, &mut scratch) {
                    return Ok(Some(event.seq));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names() {
        assert!(is_rotated_name("app.jsonl", "app.jsonl.1"));
        assert!(is_rotated_name("app.jsonl", "app.jsonl.2023-01-01"));
        assert!(!is_rotated_name("app.jsonl", "app.jsonl"));
        assert!(!is_rotated_name("app.jsonl", "app.jsonl."));
        assert!(!is_rotated_name("app.jsonl", "app.jsonl1"));
        assert!(!is_rotated_name("app.jsonl", "app.jsonl.2.gz"));
        assert!(!is_rotated_name("app.jsonl", "app.jsonl.3.ZST"));
        assert!(!is_rotated_name("app.jsonl", "other.jsonl.1"));
    }

    #[test]
    fn file_id_text_round_trip() {
        let id = FileId { dev: 2049, ino: 77 };
        assert_eq!(id.to_string(), "2049:77");
        assert_eq!("2049:77".parse::<FileId>(), Ok(id));
        assert!("2049".parse::<FileId>().is_err());
    }
}
