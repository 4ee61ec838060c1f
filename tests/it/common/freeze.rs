//! A filesystem that a test can freeze (`fsfreeze -f`), as a hung disk
//! looks to a process: an ext4 image mounted through a loop device in a
//! temporary folder. Needs root, mkfs.ext4, mount and fsfreeze; without
//! them the test is skipped, except under CI (`LEDGERTAIL_CI`).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct FreezableDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

/// A frozen disk, thawed when dropped: declared after the process that
/// writes to it, so that a failing test thaws the disk before it kills
/// that process (a process blocked on a frozen disk cannot die).
pub struct Frozen(PathBuf);

impl Frozen {
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        assert!(
            ok(Command::new("fsfreeze").arg("-u").arg(&self.0)) || std::thread::panicking(),
            "fsfreeze -u failed"
        );
    }
}

fn ok(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

impl FreezableDisk {
    /// A fresh 64 MiB ext4 filesystem, mounted; `None` (skipped) where
    /// this machine cannot make one.
    pub fn mount(what: &str) -> Option<FreezableDisk> {
        let dir = tempfile::tempdir().unwrap();
        let (image, mount) = (dir.path().join("disk.img"), dir.path().join("mnt"));
        std::fs::create_dir(&mount).unwrap();
        let made = unsafe { libc::geteuid() } == 0
            && ok(Command::new("truncate").arg("-s").arg("64M").arg(&image))
            && ok(Command::new("mkfs.ext4").arg("-q").arg(&image))
            && ok(Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(&image)
                .arg(&mount));
        if !made {
            assert!(
                std::env::var_os("LEDGERTAIL_CI").is_none(),
                "{what}: needs root, mkfs.ext4 and a loop device to make a disk it can freeze"
            );
            eprintln!("skipped {what}: this machine cannot mount a loop device");
            return None;
        }
        Some(FreezableDisk { _dir: dir, mount })
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Every write to it blocks until the guard is thawed or dropped.
    #[must_use]
    pub fn freeze(&self) -> Frozen {
        assert!(ok(Command::new("fsfreeze").arg("-f").arg(&self.mount)));
        Frozen(self.mount.clone())
    }
}

impl Drop for FreezableDisk {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.mount).output();
        let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
    }
}
