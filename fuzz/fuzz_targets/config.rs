//! The configuration loader on arbitrary text: it must never panic, every
//! refusal must say something, and whatever it accepts must hold the
//! guarantees the rest of ledgertail relies on (at least one ledger, each
//! with a usable name and its own absolute path, bounded batch sizes, a
//! trusted key wherever signatures are required).
#![no_main]

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use ledgertail::config::{FileConfig, Overrides, Settings};
use ledgertail::ledger::SignaturePolicy;
use libfuzzer_sys::fuzz_target;

/// The path with `.` and `..` worked out, as the file system would.
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = Path::new("/etc/ledgertail/ledgertail.toml");
    let file = match FileConfig::parse(text, origin) {
        Ok(file) => file,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            let _ = e.hint();
            return;
        }
    };
    let over = Overrides {
        config: Some(origin.to_path_buf()),
        ..Overrides::default()
    };
    let settings = match Settings::resolve(&file, &over, Path::new("/")) {
        Ok(settings) => settings,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            let _ = e.hint();
            return;
        }
    };
    assert!(!settings.ledgers.is_empty());
    assert!(settings.db.is_absolute());
    assert!(settings.batch_max_events >= 1 && settings.batch_max_bytes >= 1);
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for ledger in &settings.ledgers {
        assert!(!ledger.name.is_empty() && !ledger.name.chars().any(char::is_control));
        assert!(
            names.insert(ledger.name.clone()),
            "two ledgers named {}",
            ledger.name
        );
        assert!(ledger.path.is_absolute());
        assert!(
            paths.insert(normal(&ledger.path)),
            "two ledgers follow {}",
            ledger.path.display()
        );
        assert!(ledger.max_line_bytes >= 1);
        if ledger.signatures == SignaturePolicy::Required {
            assert!(!ledger.keys.is_empty());
        }
    }
});
