//! Which files make up a ledger, and which file is which (contract §1.4).
//!
//! A file is identified by `(dev, ino)`, which survives the rename of a
//! rotation, plus a fingerprint of its first line: inode numbers are
//! handed out again as soon as a file is deleted (ext4 does it at once),
//! and only content tells a new file from an old one that had the same
//! number. The files of a ledger are the live file plus its rotated
//! siblings (`<name>.<anything>` beside it, compressed ones excluded, and
//! only regular files: a FIFO would block a reader for ever, and a symlink
//! would let anyone who can write the folder feed any file into the
//! mirror), ordered by the seq of their first authentic event; the live
//! file is the newest by definition and always comes last.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::ledger::frame::{Frame, Framer};
use crate::ledger::{authenticate, is_blank, KeyRing, SignaturePolicy};

/// A file's first bytes, hashed: the part of its identity that inode reuse
/// cannot fake. Known once the file holds its first non-blank line (or
/// [`FINGERPRINT_BYTES`] bytes), and never changes after that, since a
/// ledger file is only appended to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

/// How many bytes a fingerprint covers at most.
pub const FINGERPRINT_BYTES: usize = 4096;

/// The fingerprint of a file whose first bytes are `prefix` (as many as
/// are known, up to [`FINGERPRINT_BYTES`]): a hash of the bytes up to and
/// including the LF that ends the first non-blank line, or of the first
/// [`FINGERPRINT_BYTES`] bytes if that line is longer. `None` while the
/// file is too short to tell.
pub fn fingerprint(prefix: &[u8]) -> Option<Fingerprint> {
    let limit = prefix.len().min(FINGERPRINT_BYTES);
    let mut line_start = 0;
    let end = loop {
        match memchr::memchr(b'\n', &prefix[line_start..limit]) {
            Some(i) => {
                let lf = line_start + i;
                if !is_blank(&prefix[line_start..lf]) {
                    break lf + 1;
                }
                line_start = lf + 1;
            }
            None if prefix.len() >= FINGERPRINT_BYTES => break FINGERPRINT_BYTES,
            None => return None,
        }
    };
    let digest = Sha256::digest(&prefix[..end]);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 0 is never a fingerprint, so that a text form can leave it out.
    Some(Fingerprint(u64::from_be_bytes(first).max(1)))
}

/// Reads the fingerprint of an open file from its first bytes.
pub fn fingerprint_of(file: &File) -> io::Result<Option<Fingerprint>> {
    let mut buf = vec![0u8; FINGERPRINT_BYTES];
    let mut have = 0;
    while have < buf.len() {
        match file.read_at(&mut buf[have..], have as u64) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(fingerprint(&buf[..have]))
}

/// Identity of a ledger file across renames: device, inode and (once the
/// file has a first line) the fingerprint of that line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: Option<Fingerprint>,
}

impl FileId {
    /// The inode part only: what an open handle can tell without reading.
    pub fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            fingerprint: None,
        }
    }

    pub fn same_inode(&self, other: &FileId) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// Does this recorded identity (a checkpoint's, a row's) name the file
    /// `found` on disk? Same inode, and the same fingerprint when one was
    /// recorded: a position at offset 0 of a file that had no line yet, or
    /// one written by a build that recorded no fingerprint, goes by the
    /// inode alone (the bytes behind a position are checked anyway).
    pub fn identifies(&self, found: &FileId) -> bool {
        self.same_inode(found)
            && match self.fingerprint {
                None => true,
                Some(fp) => found.fingerprint == Some(fp),
            }
    }

    /// Could the two be the same file, one of them seen before its first
    /// line was written?
    pub fn may_be(&self, other: &FileId) -> bool {
        self.identifies(other) || other.identifies(self)
    }
}

/// Written as `dev:ino:fingerprint` (16 hex digits) in the mirror, or
/// `dev:ino` while the file has no first line (and in mirrors written
/// before fingerprints existed).
impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)?;
        if let Some(Fingerprint(fp)) = self.fingerprint {
            write!(f, ":{fp:016x}")?;
        }
        Ok(())
    }
}

impl FromStr for FileId {
    type Err = ();
    fn from_str(s: &str) -> Result<FileId, ()> {
        let mut parts = s.split(':');
        let dev = parts.next().ok_or(())?.parse().map_err(|_| ())?;
        let ino = parts.next().ok_or(())?.parse().map_err(|_| ())?;
        let fingerprint = match parts.next() {
            None => None,
            Some(hex) if hex.len() == 16 => {
                Some(Fingerprint(u64::from_str_radix(hex, 16).map_err(|_| ())?))
            }
            Some(_) => return Err(()),
        };
        if parts.next().is_some() {
            return Err(());
        }
        Ok(FileId {
            dev,
            ino,
            fingerprint,
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
    /// A plain ledger's lines carry no seq: the mirror's record of the
    /// file's first event, by fingerprint (`None`: a file never read).
    pub first_seq: Option<u64>,
    pub is_live: bool,
    /// When it was last written: a plain ledger's unread rotated files are
    /// read oldest first.
    pub modified: Option<std::time::SystemTime>,
    /// A plain ledger's file its mirror never read (no first seq known):
    /// still to be read, wherever the checkpoint is.
    pub unread: bool,
}

/// Endings of compressed rotations, which are never read (§1.4).
const COMPRESSED: [&str; 6] = [".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip"];

/// Endings that look like an archive or a copy rather than a rotation:
/// read all the same (the contract counts every `<name>.<suffix>`), with
/// a warning, since such a file usually repeats events of the others.
const SUSPICIOUS: [&str; 12] = [
    ".tar", ".tgz", ".tbz2", ".txz", ".7z", ".rar", ".bak", ".orig", ".swp", ".tmp", ".old", "~",
];

/// True when `name` is a rotated sibling of the live file `live_name`.
pub fn is_rotated_name(live_name: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(live_name) else {
        return false;
    };
    if !rest.starts_with('.') || rest.len() < 2 {
        return false;
    }
    !is_compressed_name(name)
}

/// True for the endings of compressed files (`.gz`, `.zst`, …, any case).
pub fn is_compressed_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    COMPRESSED.iter().any(|ext| lower.ends_with(ext))
}

/// Logs `message` about `path` once per process: discovery runs at every
/// rotation and every parity check, and one warning per odd file is
/// enough to act on.
fn warn_once(path: &Path, message: &str) {
    static WARNED: Mutex<Option<HashSet<(PathBuf, String)>>> = Mutex::new(None);
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned
        .get_or_insert_with(HashSet::new)
        .insert((path.to_path_buf(), message.to_owned()))
    {
        tracing::warn!(file = %path.display(), "{message}");
    }
}

/// What a path names, for a ledger reader.
pub enum Opening {
    /// A regular file, open for reading, with its metadata.
    File(File, Metadata),
    Missing,
    /// Something that must not be read as a ledger file: a symlink (unless
    /// followed), a FIFO, a socket, a device, a directory.
    NotRegular(&'static str),
}

fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Opens a ledger file for reading only if it is a regular file: looked at
/// without following a link (unless `follow_symlink`), opened without
/// blocking (opening a FIFO for reading waits for a writer for ever) and
/// without following a link, then checked again on the open handle (the
/// name may have been given to something else in between).
pub fn open_regular(path: &Path, follow_symlink: bool) -> io::Result<Opening> {
    let seen = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opening::Missing),
        Err(e) => return Err(e),
    };
    let is_link = seen.file_type().is_symlink();
    if is_link && !follow_symlink {
        return Ok(Opening::NotRegular("a symbolic link"));
    }
    if !is_link && !seen.is_file() {
        return Ok(Opening::NotRegular(kind_of(&seen)));
    }
    let mut flags = libc::O_NONBLOCK;
    if !follow_symlink {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opening::Missing),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Opening::NotRegular("a symbolic link"))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Opening::NotRegular(kind_of(&meta)));
    }
    Ok(Opening::File(file, meta))
}

/// Opens the file that discovery saw as `expected`, by its name: `None`
/// when the name is gone or now names another file (a rotation moved it)
/// or something that is not a regular file.
pub fn reopen(path: &Path, expected: &FileId) -> io::Result<Option<File>> {
    match open_regular(path, true)? {
        Opening::File(file, meta) if FileId::of(&meta).same_inode(expected) => Ok(Some(file)),
        _ => Ok(None),
    }
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
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The folder of a ledger's files and the live file's name.
pub fn split(live: &Path) -> io::Result<(PathBuf, String)> {
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

/// How to recognise an authentic event while ordering files, and whether
/// the live path may be a symlink.
#[derive(Clone, Copy)]
pub struct Authenticity<'a> {
    pub policy: SignaturePolicy,
    pub keys: &'a KeyRing,
    pub max_line_bytes: u64,
    /// The operator allows the live path to be a symbolic link
    /// (`follow_symlink`); rotated siblings never may be.
    pub follow_symlink: bool,
    /// A plain ledger: its files' first seqs by fingerprint, as its mirror
    /// recorded them (their lines hold none). `None`: a sealed ledger,
    /// whose files say it themselves.
    pub plain_first_seqs: Option<&'a HashMap<Fingerprint, u64>>,
    /// A plain ledger: the SHA-256 (hex) of the first lines of the files
    /// its mirror read. A file never read that holds one of them is not a
    /// new file: an edited copy put in place of a read one (`sed -i`), or
    /// a copy. It is not read (its lines would be adopted twice); parity
    /// compares it with the file it stands for.
    pub plain_recorded_lines: Option<&'a std::collections::HashSet<String>>,
}

/// Opens the live file of a ledger: `None` when it does not exist (yet).
fn open_live(live: &Path, follow_symlink: bool) -> io::Result<Option<(File, Metadata)>> {
    match open_regular(live, follow_symlink)? {
        Opening::File(file, meta) => Ok(Some((file, meta))),
        Opening::Missing => Ok(None),
        Opening::NotRegular("a symbolic link") => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link, and the ledger's follow_symlink is off (set follow_symlink = true in its [[ledger]] table if the link is yours)",
                live.display()
            ),
        )),
        Opening::NotRegular(kind) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is {kind}, not a regular file", live.display()),
        )),
    }
}

/// Rotated files discovery holds open while it runs (to tell a file
/// renamed during a listing from one deleted): a bound, so that any
/// number of rotated files is discovered within the usual limit of 1,024
/// descriptors; files beyond it are judged by the folder's listing.
const HELD_HANDLES_MAX: usize = 256;

/// How many times discovery lists the folder before it settles for what it
/// has (see [`discover`]); between attempts it waits 1 ms, doubling up to
/// 64 ms, for a rotation in progress to end (about half a second in all).
const DISCOVERY_ATTEMPTS: u32 = 12;

/// Lists a ledger's files, oldest first. A missing live file is not an
/// error (it may be about to be created); an unreadable directory is, and
/// so is a live path that is not a regular file.
///
/// A folder cannot be listed atomically: a file renamed while the listing
/// runs (logrotate's renumbering moves every rotated file at once) can be
/// missed, or seen twice, and a missed file would look like a gap in the
/// chain. So the listing is checked: once every file is opened, the folder
/// is listed again, and the rotated files it names (by inode) must be
/// exactly those found, each once, in two attempts in a row, the second
/// finding every file the first did (two listings of a folder renamed in
/// a steady rhythm can miss the same file); otherwise discovery starts
/// again (what was read of a file is kept, by inode, so a retry costs a
/// listing).
pub fn discover(live: &Path, auth: Authenticity<'_>) -> io::Result<Vec<LedgerFile>> {
    let (dir, live_name) = split(live)?;
    let mut known = HashMap::new();
    let mut found = Vec::new();
    // Every rotated file any attempt found, by inode, with the last
    // attempt that saw it (opened, or in a listing): a listing made while
    // files are renamed may miss one that the next listing shows.
    let mut union: HashMap<u64, LedgerFile> = HashMap::new();
    // A handle on each: a file deleted meanwhile has no link left, one
    // renamed is still there whatever its name.
    let mut handles: HashMap<u64, File> = HashMap::new();
    for attempt in 0..DISCOVERY_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1 << (attempt - 1).min(6)));
        }
        found = discover_once(&dir, &live_name, live, auth, &mut known, &mut handles)?;
        let live_ino = found.iter().find(|f| f.is_live).map(|f| f.id.ino);
        let mut seen: Vec<u64> = found
            .iter()
            .filter(|f| !f.is_live)
            .map(|f| f.id.ino)
            .collect();
        seen.sort_unstable();
        let once = seen.windows(2).all(|w| w[0] != w[1]);
        let mut now = rotated_inodes(&dir, &live_name)?;
        now.retain(|ino| Some(*ino) != live_ino);
        now.sort_unstable();
        union.retain(|ino, _| Some(*ino) != live_ino);
        for f in found.iter().filter(|f| !f.is_live) {
            union.insert(f.id.ino, f.clone());
        }
        // A file deleted since an attempt found it is not missed: a held
        // handle shows its links; a file not held (beyond the budget) is
        // taken as deleted when this listing does not show it.
        union.retain(|ino, _| match handles.get(ino) {
            Some(h) => h.metadata().is_ok_and(|m| m.nlink() > 0),
            None => now.binary_search(ino).is_ok(),
        });
        // Two listings agreeing is not enough while files are renamed in
        // a steady rhythm (both may miss the same one): every file an
        // earlier attempt found must be in this one too.
        let complete = union.keys().all(|ino| seen.binary_search(ino).is_ok());
        // (So at least two attempts: one alone has nothing to agree with.)
        if attempt > 0 && once && now == seen && complete {
            return Ok(found);
        }
    }
    // Renamed without pause: every file an attempt found and that is not
    // deleted, each once, under the name it was found by (a file missed by
    // every attempt shows as a gap, and a restart finds it).
    let mut rotated: Vec<LedgerFile> = union.into_values().collect();
    sort_rotated(&mut rotated, auth.plain_first_seqs.is_some());
    rotated.extend(found.into_iter().filter(|f| f.is_live));
    Ok(rotated)
}

/// Files with no authentic event first (their lines are judged, and
/// quarantined) in name order, then by first seq. A plain ledger's: the
/// files its mirror read, by first seq, then those it never read, oldest
/// first (a rotation renames the file it stopped writing).
fn sort_rotated(rotated: &mut [LedgerFile], plain: bool) {
    if plain {
        rotated.sort_by(|a, b| {
            (a.first_seq.is_none(), a.first_seq, a.modified, &a.path).cmp(&(
                b.first_seq.is_none(),
                b.first_seq,
                b.modified,
                &b.path,
            ))
        });
        return;
    }
    rotated.sort_by(|a, b| {
        (a.first_seq.is_some(), a.first_seq, &a.path).cmp(&(
            b.first_seq.is_some(),
            b.first_seq,
            &b.path,
        ))
    });
}

/// The first authentic seq discovery found in a file, by identity (inode
/// and fingerprint): it does not change (a ledger file is only appended
/// to), so a retry need not read the file again.
type Known = HashMap<(u64, u64, Fingerprint), u64>;

/// The entries with rotated names in `dir` (name, inode), from the
/// listing alone (no file is opened).
fn rotated_entries(dir: &Path, live_name: &str) -> io::Result<Vec<(String, u64)>> {
    use std::os::unix::fs::DirEntryExt;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            if is_rotated_name(live_name, name) {
                out.push((name.to_owned(), entry.ino()));
            }
        }
    }
    Ok(out)
}

/// The inode numbers of the regular files with rotated names in `dir`,
/// from the listing alone (no file is opened).
fn rotated_inodes(dir: &Path, live_name: &str) -> io::Result<Vec<u64>> {
    use std::os::unix::fs::DirEntryExt;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let rotated = name.to_str().is_some_and(|n| is_rotated_name(live_name, n));
        if rotated && entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push(entry.ino());
        }
    }
    Ok(out)
}

/// One listing of the ledger's files (see [`discover`]).
fn discover_once(
    dir: &Path,
    live_name: &str,
    live: &Path,
    auth: Authenticity<'_>,
    known: &mut Known,
    handles: &mut HashMap<u64, File>,
) -> io::Result<Vec<LedgerFile>> {
    // The live file is looked at *before* the folder is listed: a file
    // renamed away from the live path after that look shows up in the
    // listing (and is recognised by its identity), so a rotation during
    // discovery can never hide a file between the rotated ones and the
    // live one.
    let live_file = match open_live(live, auth.follow_symlink)? {
        Some((file, meta)) => Some(ledger_file(live, file, &meta, true, auth, known)?),
        None => None,
    };
    let mut rotated = Vec::new();
    // The names first (a listing is quick), then each file opened: a name
    // that no longer opens was renamed meanwhile, and its inode is looked
    // for again in a fresh listing (a few times), so a file renamed between
    // the listing and its opening is not missed.
    let mut pending = rotated_entries(dir, live_name)?;
    let mut opened: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for pass in 0..4 {
        let mut lost = std::collections::HashSet::new();
        for (name, listed_ino) in pending {
            let path = dir.join(&name);
            // One handle for the identity and the first event: the name may
            // be given to another file at any moment (renumbering rotations).
            let (file, meta) = match open_regular(&path, false)? {
                Opening::File(file, meta) => (file, meta),
                Opening::Missing => {
                    lost.insert(listed_ino);
                    continue;
                }
                Opening::NotRegular(kind) => {
                    warn_once(
                        &path,
                        &format!("ignored: {kind} beside the ledger is never read as a rotated file (only regular files are)"),
                    );
                    continue;
                }
            };
            if meta.ino() != listed_ino && !opened.contains(&listed_ino) {
                lost.insert(listed_ino);
            }
            if !opened.insert(meta.ino()) {
                continue;
            }
            lost.remove(&meta.ino());
            // The live file (renamed since we looked at it, or a hard link of
            // it among the siblings) stays the live file.
            if live_file
                .as_ref()
                .is_some_and(|l| l.id.same_inode(&FileId::of(&meta)))
            {
                continue;
            }
            let lower = name.to_ascii_lowercase();
            if let Some(ending) = SUSPICIOUS.iter().find(|e| lower.ends_with(*e)) {
                warn_once(
                    &path,
                    &format!("read as a rotated file of the ledger, though its name ends in `{ending}` like an archive or a copy; move it out of the folder if it is not a rotation"),
                );
            }
            if handles.len() < HELD_HANDLES_MAX {
                if let std::collections::hash_map::Entry::Vacant(slot) = handles.entry(meta.ino()) {
                    slot.insert(file.try_clone()?);
                }
            }
            rotated.push(ledger_file(&path, file, &meta, false, auth, known)?);
        }
        lost.retain(|ino| !opened.contains(ino));
        if lost.is_empty() || pass == 3 {
            break;
        }
        pending = rotated_entries(dir, live_name)?
            .into_iter()
            .filter(|(_, ino)| lost.contains(ino))
            .collect();
    }
    // Files with no authentic event hold nothing the chain can use.
    sort_rotated(&mut rotated, auth.plain_first_seqs.is_some());
    rotated.extend(live_file);
    Ok(rotated)
}

/// A file found by discovery, its fingerprint and first event read once.
fn ledger_file(
    path: &Path,
    file: File,
    meta: &Metadata,
    is_live: bool,
    auth: Authenticity<'_>,
    known: &mut Known,
) -> io::Result<LedgerFile> {
    let fingerprint = fingerprint_of(&file)?;
    let file_again = file.try_clone()?;
    let key = fingerprint.map(|fp| (meta.dev(), meta.ino(), fp));
    // A file with no first event yet may have one by now: only a found
    // seq is kept.
    let first_seq = match key.and_then(|k| known.get(&k)) {
        Some(&seq) => Some(seq),
        None if auth.plain_first_seqs.is_some() => {
            fingerprint.and_then(|fp| auth.plain_first_seqs.and_then(|m| m.get(&fp)).copied())
        }
        None => {
            let first = first_authentic_seq_in(file, auth)?;
            if let (Some(k), Some(seq)) = (key, first) {
                known.insert(k, seq);
            }
            first
        }
    };
    Ok(LedgerFile {
        path: path.to_path_buf(),
        id: FileId {
            fingerprint,
            ..FileId::of(meta)
        },
        len: meta.len(),
        first_seq,
        is_live,
        modified: meta.modified().ok(),
        unread: auth.plain_first_seqs.is_some()
            && first_seq.is_none()
            && !(is_live || holds_recorded_lines(path, &file_again, key, auth)?),
    })
}

/// Compressed siblings of the live file (never read), with their
/// modification times: `append` must not continue a chain whose newest
/// events it cannot see.
pub fn compressed_siblings(live: &Path) -> io::Result<Vec<(PathBuf, std::time::SystemTime)>> {
    let (dir, live_name) = split(live)?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_sibling = name
            .strip_prefix(live_name.as_str())
            .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1);
        if is_sibling && is_compressed_name(name) {
            if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                out.push((dir.join(name), modified));
            }
        }
    }
    Ok(out)
}

/// A plain ledger's copy probe (see [`Authenticity::plain_recorded_lines`]):
/// the first [`PLAIN_RECORDED_LINES`] lines of each of the newest
/// [`PLAIN_RECORDED_FILES`] files read are looked for among the first
/// [`PLAIN_PROBE_LINES`] lines of a file never read (its lines hold no
/// seq to tell it by). Parity looks for a recorded file's lines the same
/// way.
pub const PLAIN_PROBE_LINES: usize = 64;
pub const PLAIN_RECORDED_FILES: usize = 64;
pub const PLAIN_RECORDED_LINES: usize = 16;

/// Whether a plain ledger's rotated file never read holds a line already
/// sealed from another file (then it is not read, and says so once).
///
/// A file found to hold one is remembered by identity, with the size of
/// the record it was probed against, for the life of the process:
/// discovery runs at every rotation and, while a ledger has no open file,
/// at every tick, and neither the probe's reads nor its error need
/// repeating until the record changes (a file read since, as after the
/// operator moved the copy aside and back past a rotation). A file found
/// clean is not remembered: it is read next, and once read it is no
/// longer probed.
fn holds_recorded_lines(
    path: &Path,
    file: &File,
    key: Option<(u64, u64, Fingerprint)>,
    auth: Authenticity<'_>,
) -> io::Result<bool> {
    type Holding = HashMap<(u64, u64, Fingerprint), usize>;
    static HOLDING: Mutex<Option<Holding>> = Mutex::new(None);
    let Some(recorded) = auth.plain_recorded_lines.filter(|r| !r.is_empty()) else {
        return Ok(false);
    };
    let holding = || HOLDING.lock().unwrap_or_else(|e| e.into_inner());
    let held = |k| holding().get_or_insert_with(HashMap::new).get(&k) == Some(&recorded.len());
    if key.is_some_and(held) {
        return Ok(true);
    }
    let holds = probe_recorded_lines(path, file, recorded, auth.max_line_bytes)?;
    if let (true, Some(k)) = (holds, key) {
        holding()
            .get_or_insert_with(HashMap::new)
            .insert(k, recorded.len());
    }
    Ok(holds)
}

/// Reads the first [`PLAIN_PROBE_LINES`] lines of `file` for one whose
/// digest is in `recorded`.
fn probe_recorded_lines(
    path: &Path,
    file: &File,
    recorded: &HashSet<String>,
    max_line_bytes: u64,
) -> io::Result<bool> {
    let lines = first_lines_at(file, PLAIN_PROBE_LINES, max_line_bytes)?;
    let holds = lines
        .iter()
        .any(|l| recorded.contains(&crate::ledger::adopt::line_digest(l).to_hex()));
    if holds {
        tracing::error!(
            file = %path.display(),
            hint = "if it is a new file that happens to repeat a line, move it aside and back after the next rotation; if not, see the runbook for rewritten",
            "not read: this file, never read, holds a line already sealed from another file (an edited copy put in its place, or a copy): parity compares it with that file"
        );
    }
    Ok(holds)
}

/// The first `count` complete lines of `file` (without their LFs; a line
/// over `max_line_bytes` is left out), fewer when it has fewer. Read by
/// offset: a handle shared with other readers keeps its position.
pub(super) fn first_lines_at(
    file: &File,
    count: usize,
    max_line_bytes: u64,
) -> io::Result<Vec<Vec<u8>>> {
    let mut framer = Framer::new(0, max_line_bytes);
    let (mut at, mut out) = (0u64, Vec::new());
    while out.len() < count {
        match framer.next_frame() {
            Some(Frame::Line { bytes, .. }) => out.push(bytes.to_vec()),
            Some(_) => {}
            None => {
                let n = file.read_at(framer.spare(64 * 1024), at)?;
                if n == 0 {
                    break;
                }
                at += n as u64;
                framer.filled(n);
            }
        }
    }
    Ok(out)
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
        let id = FileId {
            dev: 2049,
            ino: 77,
            fingerprint: None,
        };
        assert_eq!(id.to_string(), "2049:77");
        assert_eq!("2049:77".parse::<FileId>(), Ok(id));
        let id = FileId {
            fingerprint: Some(Fingerprint(0xab)),
            ..id
        };
        assert_eq!(id.to_string(), "2049:77:00000000000000ab");
        assert_eq!("2049:77:00000000000000ab".parse::<FileId>(), Ok(id));
        assert!("2049".parse::<FileId>().is_err());
        assert!("2049:77:ab".parse::<FileId>().is_err());
        assert!("2049:77:00000000000000ab:1".parse::<FileId>().is_err());
    }

    #[test]
    fn a_fingerprint_is_known_once_the_first_non_blank_line_is_complete() {
        assert_eq!(fingerprint(b""), None);
        assert_eq!(fingerprint(b"{\"seq\":0"), None);
        assert_eq!(fingerprint(b"\n \n"), None, "blank lines do not count");
        let one = fingerprint(b"{\"seq\":0}\n").unwrap();
        assert_eq!(fingerprint(b"{\"seq\":0}\n{\"seq\":1}\n"), Some(one));
        assert_ne!(fingerprint(b"{\"seq\":9}\n"), Some(one));
        assert_ne!(fingerprint(b"\n{\"seq\":0}\n"), Some(one));
        // A first line longer than the window: its first bytes decide.
        let long = vec![b'x'; FINGERPRINT_BYTES + 10];
        assert_eq!(fingerprint(&long), fingerprint(&long[..FINGERPRINT_BYTES]));
        assert_eq!(fingerprint(&long[..FINGERPRINT_BYTES - 1]), None);
    }

    #[test]
    fn a_recorded_identity_names_a_file_by_inode_and_fingerprint() {
        let at = |fp: Option<u64>| FileId {
            dev: 1,
            ino: 2,
            fingerprint: fp.map(Fingerprint),
        };
        assert!(at(Some(5)).identifies(&at(Some(5))));
        assert!(!at(Some(5)).identifies(&at(Some(6))), "inode reused");
        assert!(!at(Some(5)).identifies(&at(None)), "a new, empty file");
        assert!(
            at(None).identifies(&at(Some(5))),
            "recorded before its first line"
        );
        assert!(at(Some(5)).may_be(&at(None)) && at(None).may_be(&at(Some(5))));
        assert!(!at(Some(5)).may_be(&at(Some(6))));
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x\n").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo = dir.path().join("p");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            open_regular(&file, false).unwrap(),
            Opening::File(..)
        ));
        assert!(matches!(
            open_regular(&link, false).unwrap(),
            Opening::NotRegular("a symbolic link")
        ));
        assert!(matches!(
            open_regular(&link, true).unwrap(),
            Opening::File(..)
        ));
        assert!(matches!(
            open_regular(&fifo, true).unwrap(),
            Opening::NotRegular("a FIFO")
        ));
        assert!(matches!(
            open_regular(dir.path(), true).unwrap(),
            Opening::NotRegular("a directory")
        ));
        assert!(matches!(
            open_regular(&dir.path().join("none"), false).unwrap(),
            Opening::Missing
        ));
    }
}
