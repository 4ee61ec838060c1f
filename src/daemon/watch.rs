//! One file watcher for every ledger of `run` (inotify through `notify`:
//! one thread however many ledgers), each folder watched once. A file
//! event is only a wake-up for the ledgers whose files it names. (The
//! mirror's folder is not watched: every write to the WAL would be an
//! event. The runner looks at the mirror file itself when idle.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use notify::{EventKind, RecursiveMode, Watcher as _};

use super::schedule::Schedule;
use super::Wake;

/// Who wants to hear of the files in one watched folder.
#[derive(Debug, Default)]
struct Folder {
    /// Ledgers by their live file's name (its rotated files are that name,
    /// a dot and more: found by looking up each prefix before a dot, so an
    /// event costs the same with one ledger in the folder or a thousand).
    ledgers: HashMap<String, Vec<usize>>,
}

impl Folder {
    fn ledgers_named_by<'a>(&'a self, name: &'a str) -> impl Iterator<Item = usize> + 'a {
        let exact = self.ledgers.get(name).into_iter().flatten().copied();
        let rotated = name
            .match_indices('.')
            .filter(|(at, _)| *at > 0)
            .filter_map(move |(at, _)| {
                let live = &name[..at];
                crate::tail::identity::is_rotated_name(live, name)
                    .then(|| self.ledgers.get(live))
                    .flatten()
            })
            .flatten()
            .copied();
        exact.chain(rotated)
    }
}

type Folders = HashMap<PathBuf, Folder>;

/// Whether a ledger's file events are heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Watched {
    /// Since an earlier step.
    Already,
    /// From now on: what changed before was not announced.
    Now,
    /// Not (yet): the ledger is polled.
    No,
}

pub(super) struct Watch {
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    folders: Arc<RwLock<Folders>>,
}

impl Watch {
    /// Starts the watcher (without one, every ledger polls).
    pub(super) fn start(schedule: Arc<Schedule>) -> Watch {
        let folders: Arc<RwLock<Folders>> = Arc::default();
        let seen = folders.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            // Our own reads show up as access events: they must not wake us.
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            if event.paths.is_empty() {
                // The kernel's queue overflowed (or a rescan): anything
                // may have changed.
                schedule.wake_all(Wake::Files);
                return;
            }
            let folders = seen.read().unwrap_or_else(PoisonError::into_inner);
            for path in &event.paths {
                let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                    continue;
                };
                let Some(folder) = folders.get(dir) else {
                    continue;
                };
                let Some(name) = name.to_str() else { continue };
                for ledger in folder.ledgers_named_by(name) {
                    schedule.wake(ledger, Wake::Files);
                }
            }
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher: every ledger is polled at poll_interval_millis");
                None
            }
        };
        Watch {
            watcher: Mutex::new(watcher),
            folders,
        }
    }

    /// Makes sure `ledger`'s folder is watched. [`Watched::Now`] when its
    /// events are heard from this call on: a change made since the
    /// ledger's last read was not announced, so it must look once more.
    /// [`Watched::No`] when it cannot be (yet): the ledger is polled, and
    /// this is tried again.
    pub(super) fn ledger(&self, ledger: usize, live: &Path) -> Watched {
        let (Some(dir), Some(name)) = (live.parent(), live.file_name().and_then(|n| n.to_str()))
        else {
            return Watched::No;
        };
        // Asked after every step: the common answer takes no write lock.
        {
            let folders = self.folders.read().unwrap_or_else(PoisonError::into_inner);
            let key = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if folders
                .get(key)
                .and_then(|f| f.ledgers.get(name))
                .is_some_and(|l| l.contains(&ledger))
            {
                return Watched::Already;
            }
        }
        let heard = self.listen(dir, |folder| {
            let ledgers = folder.ledgers.entry(name.to_owned()).or_default();
            if !ledgers.contains(&ledger) {
                ledgers.push(ledger);
            }
        });
        if heard {
            Watched::Now
        } else {
            Watched::No
        }
    }

    /// Watches `dir` (once) and adds a listener with `add`.
    fn listen(&self, dir: &Path, add: impl FnOnce(&mut Folder)) -> bool {
        // "" (a bare file name) is the current folder.
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        {
            let mut folders = self.folders.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(folder) = folders.get_mut(dir) {
                add(folder);
                return true;
            }
        }
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(w) = watcher.as_mut() else {
            return false;
        };
        match w.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                add(self
                    .folders
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(dir.to_path_buf())
                    .or_default());
                true
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot watch the folder yet: polling");
                false
            }
        }
    }

    /// Watches `live`'s folder afresh (it missed a change: the folder may
    /// have been deleted and made again).
    pub(super) fn renew(&self, live: &Path) {
        let Some(dir) = live.parent() else { return };
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = watcher.as_mut() {
            let _ = w.unwatch(dir);
            if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot watch the folder again");
            }
        }
    }
}

/// `statfs` magic numbers of filesystems whose file events miss changes
/// made elsewhere.
const REMOTE: &[(u64, &str)] = &[
    (0x6969, "nfs"),
    (0x517b, "smb"),
    (0xfe53_4d42, "smb2"),
    (0xff53_4d42, "cifs"),
    (0x6573_5546, "fuse"),
    (0x0102_1997, "9p"),
    (0x00c3_6400, "ceph"),
    (0x5346_414f, "afs"),
    (0x7375_7245, "coda"),
    (0x0116_1970, "gfs2"),
    (0x7461_636f, "ocfs2"),
    (0x0bd0_0bd0, "lustre"),
    (0x786f_4256, "vboxsf"),
];

/// The kind of filesystem `dir` (or its nearest existing ancestor) is on,
/// when it is one whose file events miss changes made elsewhere: another
/// host writing to an NFS or SMB share, a FUSE or 9p filesystem whose
/// server changes files. There a ledger is polled at `poll_interval`.
pub(super) fn remote_filesystem(dir: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;

    let mut at = Some(dir);
    while let Some(d) = at {
        // "" (a bare file name's folder) is the current folder.
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        if d.exists() {
            let path = std::ffi::CString::new(d.as_os_str().as_bytes()).ok()?;
            // SAFETY: a NUL-terminated path and a zeroed struct statfs for
            // the kernel to fill; nothing is kept past the call.
            let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
                return None;
            }
            #[allow(clippy::unnecessary_cast)]
            return remote_kind(fs.f_type as i64);
        }
        at = d.parent();
    }
    None
}

/// The name of a remote filesystem type (`statfs`'s `f_type`), if it is
/// one. `f_type` is signed on some targets: its low 32 bits are compared.
fn remote_kind(f_type: i64) -> Option<&'static str> {
    let kind = (f_type as u64) & 0xffff_ffff;
    REMOTE.iter().find(|(m, _)| *m == kind).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_is_told_once_that_its_events_are_heard_from_now_on() {
        let dir = tempfile::tempdir().unwrap();
        let watch = Watch::start(Arc::new(Schedule::new(3)));
        let live = dir.path().join("app.jsonl");
        // The first answer asks for one more look: a line appended before
        // the watch was announced to no one.
        assert_eq!(watch.ledger(0, &live), Watched::Now);
        assert_eq!(watch.ledger(0, &live), Watched::Already);
        // Another ledger in the same folder is told so too.
        assert_eq!(watch.ledger(1, &dir.path().join("b.jsonl")), Watched::Now);
        assert_eq!(
            watch.ledger(2, &dir.path().join("missing/c.jsonl")),
            Watched::No
        );
    }

    #[test]
    fn remote_filesystems_are_known_by_their_magic() {
        assert_eq!(remote_kind(0x6969), Some("nfs"));
        assert_eq!(remote_kind(0x6573_5546), Some("fuse"));
        // CIFS's magic as a 32-bit signed f_type reads negative.
        assert_eq!(remote_kind(i64::from(0xff53_4d42_u32 as i32)), Some("cifs"));
        assert_eq!(remote_kind(0xef53), None, "ext4");
        assert_eq!(remote_kind(0x0102_1994), None, "tmpfs");
    }

    #[test]
    fn local_folders_are_not_remote() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(remote_filesystem(dir.path()), None);
        // A folder not made yet is judged by the one it will be made in.
        assert_eq!(remote_filesystem(&dir.path().join("later/still")), None);
        assert_eq!(remote_filesystem(Path::new("")), None);
        assert_eq!(remote_filesystem(Path::new("relative/folder")), None);
    }

    #[test]
    fn an_event_names_the_ledgers_of_its_file_and_its_rotations() {
        let mut folder = Folder::default();
        folder.ledgers.insert("app.jsonl".into(), vec![0]);
        folder.ledgers.insert("app".into(), vec![1]);
        folder.ledgers.insert("other.jsonl".into(), vec![2, 3]);
        let named = |name: &str| {
            let mut v: Vec<usize> = folder.ledgers_named_by(name).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(
            named("app.jsonl"),
            [0, 1],
            "app.jsonl is also a rotation of app"
        );
        assert_eq!(named("app.jsonl.1"), [0, 1]);
        assert_eq!(named("app.jsonl-2026"), [1], "a rotation of app only");
        assert_eq!(
            named("app.jsonl.1.gz"),
            Vec::<usize>::new(),
            "compressed: not read"
        );
        assert_eq!(named("other.jsonl"), [2, 3]);
        assert_eq!(named(".jsonl"), Vec::<usize>::new());
        assert_eq!(named("unrelated"), Vec::<usize>::new());
    }
}
