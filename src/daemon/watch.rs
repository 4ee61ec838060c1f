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

    /// Makes sure `ledger`'s folder is watched; `false` when it cannot be
    /// (yet): the ledger is polled, and this is tried again.
    pub(super) fn ledger(&self, ledger: usize, live: &Path) -> bool {
        let (Some(dir), Some(name)) = (live.parent(), live.file_name().and_then(|n| n.to_str()))
        else {
            return false;
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
                return true;
            }
        }
        self.listen(dir, |folder| {
            let ledgers = folder.ledgers.entry(name.to_owned()).or_default();
            if !ledgers.contains(&ledger) {
                ledgers.push(ledger);
            }
        })
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

#[cfg(test)]
mod tests {
    use super::*;

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
