//! One file watcher for every ledger of `run`: inotify, on one thread
//! however many ledgers. Each ledger's folder is watched for files that
//! appear, move or go (a rotation), and each ledger file itself for writes.
//! The folder is deliberately not watched for writes: the mirror often
//! lives beside the ledger, and every page SQLite writes to its WAL would
//! be an event to read and throw away (a quarter of the live path's CPU
//! when it was). A file watch follows its inode, so a rotated file the
//! application still writes to is still heard.
//!
//! After each round of events the thread waits `coalesce` (the commit
//! interval) before reading the next: a ledger written a thousand times a
//! second costs a few hundred wake-ups, not a thousand, and a ledger just
//! committed is looked at again at the end of its pace anyway (see
//! [`super::schedule`]). The first event after a quiet spell is read at
//! once. Off Linux there is no watcher: every ledger is polled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::schedule::Schedule;
use super::Wake;

/// Who wants to hear of the files in one watched folder.
#[derive(Debug, Default)]
struct Folder {
    /// Ledgers by their live file's name (its rotated files are that name,
    /// a dot and more: found by looking up each prefix before a dot, so an
    /// event costs the same with one ledger in the folder or a thousand).
    ledgers: HashMap<String, Vec<usize>>,
    #[cfg(target_os = "linux")]
    wd: Option<inotify::WatchDescriptor>,
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

/// The folder a live path is in ("" for a bare file name: the current
/// folder) and its name.
fn split(live: &Path) -> Option<(&Path, &str)> {
    let dir = live.parent()?;
    let name = live.file_name()?.to_str()?;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    Some((dir, name))
}

pub(super) struct Watch {
    inner: Arc<Mutex<Inner>>,
}

/// The watches and whom each one concerns.
#[derive(Default)]
struct Inner {
    /// `None`: no watcher (off Linux, or inotify failed): all is polled.
    #[cfg(target_os = "linux")]
    watches: Option<inotify::Watches>,
    folders: HashMap<PathBuf, Folder>,
    /// Folder watches: their folder.
    #[cfg(target_os = "linux")]
    dirs: HashMap<inotify::WatchDescriptor, PathBuf>,
    /// File watches (an inode: a live file, or one rotated while watched):
    /// the ledgers it belongs to.
    #[cfg(target_os = "linux")]
    files: HashMap<inotify::WatchDescriptor, Vec<usize>>,
    /// Events read so far (the tests see what was never delivered).
    events: u64,
    /// Files whose watch failed, said once in the log.
    unwatchable: std::collections::HashSet<PathBuf>,
}

impl Watch {
    /// Starts the watcher (without one, every ledger polls); `coalesce`:
    /// the wait after each round of events.
    pub(super) fn start(schedule: Arc<Schedule>, coalesce: Duration) -> Watch {
        let inner = Arc::new(Mutex::new(Inner::default()));
        #[cfg(target_os = "linux")]
        linux::start(&inner, schedule, coalesce);
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (schedule, coalesce);
            tracing::info!(
                "no file watcher on this system: every ledger is polled at poll_interval_millis"
            );
        }
        Watch { inner }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes sure `ledger`'s folder and live file are watched.
    /// [`Watched::Now`] when its events are heard from this call on: a
    /// change made since the ledger's last read was not announced, so it
    /// must look once more. [`Watched::No`] when they cannot be (yet): the
    /// ledger is polled, and this is tried again.
    pub(super) fn ledger(&self, ledger: usize, live: &Path) -> Watched {
        let Some((dir, name)) = split(live) else {
            return Watched::No;
        };
        let mut inner = self.lock();
        // Asked after every step: the common answer is one lookup.
        if inner
            .folders
            .get(dir)
            .and_then(|f| f.ledgers.get(name))
            .is_some_and(|l| l.contains(&ledger))
        {
            return Watched::Already;
        }
        if inner.register(dir, name, ledger) {
            Watched::Now
        } else {
            Watched::No
        }
    }

    /// Watches `live`'s folder and file afresh (a change was missed: the
    /// folder may have been deleted and made again).
    pub(super) fn renew(&self, live: &Path) {
        let Some((dir, _)) = split(live) else { return };
        let mut inner = self.lock();
        if let Some(folder) = inner.folders.remove(dir) {
            inner.forget_folder(folder);
        }
    }
}

#[cfg(not(target_os = "linux"))]
impl Inner {
    fn register(&mut self, _dir: &Path, _name: &str, _ledger: usize) -> bool {
        false
    }
    fn forget_folder(&mut self, _folder: Folder) {}
}

#[cfg(target_os = "linux")]
mod linux {
    //! The inotify side: watches added and removed under the lock, and the
    //! thread that reads events and wakes ledgers.

    use std::os::fd::AsRawFd;
    use std::sync::Weak;

    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

    use super::*;

    /// A folder: files that appear, move or go. Not writes (see the
    /// module doc).
    fn folder_mask() -> WatchMask {
        WatchMask::CREATE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::DELETE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR
    }

    pub(super) fn start(inner: &Arc<Mutex<Inner>>, schedule: Arc<Schedule>, coalesce: Duration) {
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher: every ledger is polled at poll_interval_millis");
                return;
            }
        };
        inner.lock().unwrap_or_else(PoisonError::into_inner).watches = Some(inotify.watches());
        let weak = Arc::downgrade(inner);
        let spawned = std::thread::Builder::new()
            .name("watch".into())
            .spawn(move || listen(inotify, weak, &schedule, coalesce));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no file watcher thread: every ledger is polled at poll_interval_millis");
            inner.lock().unwrap_or_else(PoisonError::into_inner).watches = None;
        }
    }

    /// Blocks until the inotify descriptor has something to read.
    fn readable(inotify: &Inotify) -> bool {
        let mut fd = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one pollfd that lives across the call.
            let n = unsafe { libc::poll(&mut fd, 1, -1) };
            if n > 0 {
                return true;
            }
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return false;
            }
        }
    }

    /// The watcher thread: a round of events, the ledgers they name woken,
    /// then `coalesce` of quiet. Ends when the [`Watch`] is gone.
    fn listen(
        mut inotify: Inotify,
        inner: Weak<Mutex<Inner>>,
        schedule: &Schedule,
        coalesce: Duration,
    ) {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut woken = Vec::new();
        while readable(&inotify) {
            let Some(inner) = inner.upgrade() else { return };
            let mut all = false;
            {
                let mut guard = inner.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    match inotify.read_events(&mut buffer) {
                        Ok(events) => {
                            for event in events {
                                all |= guard.note(&event.wd, event.mask, event.name, &mut woken);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            drop(guard);
                            return give_up(&inner, schedule, &e);
                        }
                    }
                }
                if all {
                    guard.rewatch_files();
                }
            }
            if all {
                schedule.wake_all(Wake::Files);
            } else {
                woken.sort_unstable();
                woken.dedup();
                for ledger in woken.drain(..) {
                    schedule.wake(ledger, Wake::Files);
                }
            }
            woken.clear();
            drop(inner);
            if !coalesce.is_zero() {
                std::thread::sleep(coalesce);
            }
        }
        if let Some(inner) = inner.upgrade() {
            give_up(&inner, schedule, &std::io::Error::last_os_error());
        }
    }

    /// The watcher cannot go on: every ledger is told to look, and polls
    /// from then on (its next `Watch::ledger` answers `No`).
    fn give_up(inner: &Mutex<Inner>, schedule: &Schedule, e: &std::io::Error) {
        tracing::warn!(error = %e, "the file watcher stopped: every ledger is polled at poll_interval_millis");
        let mut guard = inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard.watches = None;
        guard.folders.clear();
        drop(guard);
        schedule.wake_all(Wake::Files);
    }

    impl Inner {
        /// Watches `dir` (once) and the file `name` in it for `ledger`;
        /// `false` when that cannot be done (the ledger is polled).
        pub(super) fn register(&mut self, dir: &Path, name: &str, ledger: usize) -> bool {
            let Some(watches) = self.watches.as_mut() else {
                return false;
            };
            if !self.folders.contains_key(dir) {
                match watches.add(dir, folder_mask()) {
                    Ok(wd) => {
                        self.dirs.insert(wd.clone(), dir.to_path_buf());
                        self.folders.insert(
                            dir.to_path_buf(),
                            Folder {
                                wd: Some(wd),
                                ..Folder::default()
                            },
                        );
                    }
                    Err(e) => {
                        tracing::debug!(dir = %dir.display(), error = %e, "cannot watch the folder yet: polling");
                        return false;
                    }
                }
            }
            // A live file not made yet is watched when its folder says it
            // appeared.
            if !self.watch_file(&dir.join(name), &[ledger]) {
                return false;
            }
            let folder = self.folders.entry(dir.to_path_buf()).or_default();
            let ledgers = folder.ledgers.entry(name.to_owned()).or_default();
            if !ledgers.contains(&ledger) {
                ledgers.push(ledger);
            }
            true
        }

        /// Watches the writes to `path` for `ledgers`; `true` when it is
        /// watched or does not exist.
        fn watch_file(&mut self, path: &Path, ledgers: &[usize]) -> bool {
            let Some(watches) = self.watches.as_mut() else {
                return false;
            };
            match watches.add(path, WatchMask::MODIFY) {
                Ok(wd) => {
                    let owners = self.files.entry(wd).or_default();
                    for l in ledgers {
                        if !owners.contains(l) {
                            owners.push(*l);
                        }
                    }
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => {
                    if self.unwatchable.insert(path.to_path_buf()) {
                        tracing::warn!(file = %path.display(), error = %e, "cannot watch the ledger file: polling it every poll_interval_millis (hint: raise fs.inotify.max_user_watches)");
                    }
                    false
                }
            }
        }

        /// After the kernel's queue overflowed: every live file watched
        /// again (one may have been replaced unheard).
        fn rewatch_files(&mut self) {
            let live: Vec<(PathBuf, Vec<usize>)> = self
                .folders
                .iter()
                .flat_map(|(dir, f)| f.ledgers.iter().map(|(n, l)| (dir.join(n), l.clone())))
                .collect();
            for (path, ledgers) in live {
                self.watch_file(&path, &ledgers);
            }
        }

        pub(super) fn forget_folder(&mut self, folder: Folder) {
            if let (Some(wd), Some(watches)) = (folder.wd, self.watches.as_mut()) {
                self.dirs.remove(&wd);
                let _ = watches.remove(wd);
            }
        }

        /// One event: the ledgers it names go to `woken`; `true` when
        /// anything may have changed (the queue overflowed).
        fn note(
            &mut self,
            wd: &WatchDescriptor,
            mask: EventMask,
            name: Option<&std::ffi::OsStr>,
            woken: &mut Vec<usize>,
        ) -> bool {
            self.events += 1;
            if mask.contains(EventMask::Q_OVERFLOW) {
                return true;
            }
            if let Some(ledgers) = self.files.get(wd) {
                woken.extend(ledgers);
                if mask.contains(EventMask::IGNORED) {
                    self.files.remove(wd);
                }
                return false;
            }
            let Some(dir) = self.dirs.get(wd).cloned() else {
                return false;
            };
            if mask.intersects(EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
                // The folder went: its ledgers look (and find it missing),
                // and watch it again once it is back.
                self.dirs.remove(wd);
                if let Some(folder) = self.folders.remove(&dir) {
                    woken.extend(folder.ledgers.values().flatten());
                    self.forget_folder(folder);
                }
                return false;
            }
            let (Some(name), Some(folder)) =
                (name.and_then(|n| n.to_str()), self.folders.get(&dir))
            else {
                return false;
            };
            let named: Vec<usize> = folder.ledgers_named_by(name).collect();
            if named.is_empty() {
                return false;
            }
            if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                // A new live file, or a rotated one: its writes are heard.
                self.watch_file(&dir.join(name), &named);
            }
            woken.extend(named);
            false
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
        let watch = Watch::start(Arc::new(Schedule::new(3)), Duration::ZERO);
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

    /// The ledgers queued within `patience` (each slot taken and set idle
    /// for an hour first, by [`settled`]).
    fn woken(s: &Schedule, patience: Duration) -> Vec<usize> {
        let until = std::time::Instant::now() + patience;
        let mut out = Vec::new();
        loop {
            while let Some(t) = s.try_take() {
                out.push(t.ledger);
                s.done(
                    t.ledger,
                    super::super::schedule::Next::After(Duration::from_secs(3600)),
                );
            }
            if std::time::Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn settled(ledgers: usize) -> Arc<Schedule> {
        let s = Arc::new(Schedule::new(ledgers));
        woken(&s, Duration::ZERO);
        s
    }

    fn append(path: &Path, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn writes_to_other_files_of_the_folder_wake_no_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.jsonl");
        append(&live, "");
        let s = settled(1);
        let watch = Watch::start(s.clone(), Duration::ZERO);
        assert_eq!(watch.ledger(0, &live), Watched::Now);
        // The mirror beside the ledger: its pages are no business of ours.
        for _ in 0..50 {
            append(&dir.path().join("mirror.db-wal"), "page");
        }
        assert_eq!(woken(&s, Duration::from_millis(300)), Vec::<usize>::new());
        // One event: the WAL's creation. Its writes never reached us.
        assert_eq!(watch.lock().events, 1);
        append(&live, "{}\n");
        assert_eq!(woken(&s, Duration::from_millis(500)), [0]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_rotated_file_and_the_new_live_file_are_both_heard() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.jsonl");
        append(&live, "{}\n");
        let s = settled(2);
        let watch = Watch::start(s.clone(), Duration::ZERO);
        assert_eq!(watch.ledger(1, &live), Watched::Now);
        let rotated = dir.path().join("app.jsonl.1");
        std::fs::rename(&live, &rotated).unwrap();
        assert_eq!(woken(&s, Duration::from_millis(300)), [1], "the rename");
        // The application still writes through its open handle.
        append(&rotated, "{}\n");
        assert_eq!(
            woken(&s, Duration::from_millis(300)),
            [1],
            "the old file's write"
        );
        append(&live, "{}\n");
        assert_eq!(
            woken(&s, Duration::from_millis(300)),
            [1],
            "the new file appears"
        );
        append(&live, "{}\n");
        assert_eq!(
            woken(&s, Duration::from_millis(300)),
            [1],
            "the new file's write"
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
