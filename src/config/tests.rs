//! Resolving the file and the flags: defaults, refusals, paths, keys.

use super::*;
use crate::ledger::SignaturePolicy;

fn resolve(text: &str, over: Overrides) -> Result<Settings, ConfigError> {
    let file = FileConfig::parse(text, Path::new("test.toml"))?;
    Settings::resolve(&file, &over, Path::new("/work"))
}

#[test]
fn defaults_without_any_config() {
    let s = resolve("", Overrides::default()).unwrap();
    assert_eq!(s.db, PathBuf::from("/work/ledgertail.db"));
    assert_eq!(s.listen.to_string(), "127.0.0.1:9898");
    assert_eq!(s.ledgers.len(), 1);
    assert_eq!(s.ledgers[0].name, "ledger");
    assert_eq!(s.ledgers[0].path, PathBuf::from("/work/ledger.jsonl"));
    assert_eq!(s.ledgers[0].signatures, SignaturePolicy::VerifyIfPresent);
    assert_eq!(s.ledgers[0].max_line_bytes, 1_048_576);
}

#[test]
fn unknown_keys_are_named() {
    let err = resolve("dbb = \"x\"", Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("dbb"), "{err}");
    let err = resolve(
        "[[ledger]]\npath = \"a\"\nsignature = \"off\"",
        Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("signature"), "{err}");
}

#[test]
fn paths_are_relative_to_the_config_file() {
    let over = Overrides {
        config: Some(PathBuf::from("etc/lt.toml")),
        ..Overrides::default()
    };
    let file = FileConfig::parse(
        "db = \"m.db\"\n[[ledger]]\npath = \"../data/app.jsonl\"",
        Path::new("x"),
    )
    .unwrap();
    let s = Settings::resolve(&file, &over, Path::new("/srv")).unwrap();
    assert_eq!(s.db, PathBuf::from("/srv/etc/m.db"));
    assert_eq!(s.ledgers[0].path, PathBuf::from("/srv/data/app.jsonl"));
    assert_eq!(s.ledgers[0].name, "app");
}

#[test]
fn flags_override_the_file() {
    let over = Overrides {
        db: Some(PathBuf::from("other.db")),
        signatures: Some(SignaturePolicy::Off),
        ..Overrides::default()
    };
    let s = resolve("db = \"m.db\"\n[[ledger]]\npath = \"a.jsonl\"\nsignatures = \"required\"\n[keys]\nk = \"fOXe2311QGB9YYiojk7Du5uExN+PN9aa1XW3bmiMFTE=\"", over).unwrap();
    assert_eq!(s.db, PathBuf::from("/work/other.db"));
    assert_eq!(s.ledgers[0].signatures, SignaturePolicy::Off);
}

#[test]
fn ledger_flag_picks_its_table_or_defaults() {
    let text = "[[ledger]]\nname = \"payments\"\npath = \"pay.jsonl\"\nmax_line_bytes = 10\n[[ledger]]\npath = \"b.jsonl\"";
    let over = Overrides {
        ledger: Some(PathBuf::from("pay.jsonl")),
        ..Overrides::default()
    };
    let s = resolve(text, over).unwrap();
    assert_eq!(
        (
            s.ledgers.len(),
            s.ledgers[0].name.as_str(),
            s.ledgers[0].max_line_bytes
        ),
        (1, "payments", 10)
    );
    let over = Overrides {
        ledger: Some(PathBuf::from("elsewhere/x.jsonl")),
        ..Overrides::default()
    };
    let s = resolve(text, over).unwrap();
    assert_eq!(
        (s.ledgers[0].name.as_str(), s.ledgers[0].max_line_bytes),
        ("x", DEFAULT_MAX_LINE_BYTES)
    );
}

#[test]
fn log_levels_are_read_as_people_write_them() {
    assert_eq!(log_filter("warning").unwrap(), "warn");
    assert_eq!(log_filter("WARN").unwrap(), "warn");
    assert_eq!(
        log_filter("info, ledgertail=Debug").unwrap(),
        "info,ledgertail=debug"
    );
    assert_eq!(log_filter("hyper=off").unwrap(), "hyper=off");
    for bad in ["warnings", "ledgertail", "", "info,verbose", "x=loud"] {
        assert!(log_filter(bad).is_err(), "{bad:?}");
    }
    let s = resolve("log_level = \"warning\"", Overrides::default()).unwrap();
    assert_eq!(s.log_level, "warn");
}

#[test]
fn bad_values_are_refused_with_the_field() {
    for (text, field) in [
        ("listen = \"nowhere\"", "listen"),
        ("log_format = \"xml\"", "log_format"),
        ("log_level = \"loud\"", "log_level"),
        ("parity_interval_secs = 0", "parity_interval_secs"),
        (
            "shutdown_grace_secs = 18446744073709551615",
            "shutdown_grace_secs",
        ),
        ("batch_max_millis = 99999999999", "batch_max_millis"),
        ("poll_interval_millis = 1", "poll_interval_millis"),
        ("batch_max_bytes = 10", "batch_max_bytes"),
        ("batch_max_events = 0", "batch_max_events"),
        (
            "[[ledger]]\npath = \"a\"\nsignatures = \"maybe\"",
            "signatures",
        ),
        (
            "[[ledger]]\npath = \"a\"\nmax_line_bytes = 0",
            "max_line_bytes",
        ),
        (
            "[[ledger]]\npath = \"a\"\nsignatures = \"required\"",
            "signatures",
        ),
        (
            "[[ledger]]\npath = \"a\"\n[[ledger]]\npath = \"b/a\"",
            "ledger.name",
        ),
        ("[keys]\nk = \"short\"", "keys"),
    ] {
        let err = resolve(text, Overrides::default()).unwrap_err().to_string();
        assert!(err.starts_with(field), "{text}: {err}");
    }
}

#[test]
fn each_ledger_trusts_its_own_keys_and_trust_flags_never_replace_one() {
    let k1 = "fOXe2311QGB9YYiojk7Du5uExN+PN9aa1XW3bmiMFTE=";
    let k2 = "ljf57yKpoSwy8Nd1GWF2f6w3PK18l48SwljxNSSq+ds=";
    let text = format!(
        "[keys]\nk1 = \"{k1}\"\nk2 = \"{k2}\"\n[[ledger]]\nname = \"a\"\npath = \"a.jsonl\"\nkeys = [\"k1\"]\n[[ledger]]\nname = \"b\"\npath = \"b.jsonl\"\n"
    );
    let s = resolve(&text, Overrides::default()).unwrap();
    assert_eq!(s.ledgers[0].keys.ids(), ["k1"]);
    assert_eq!(s.ledgers[1].keys.ids(), ["k1", "k2"], "all keys by default");
    assert_eq!(s.shared_keys(), [("a".into(), "b".into(), "k1".into())]);
    // --trust adds to every ledger, and the same key again is fine...
    let over = |id: &str, key: &str| Overrides {
        trust: vec![(id.into(), key.into())],
        ..Overrides::default()
    };
    let s = resolve(&text, over("k3", k2)).unwrap();
    assert_eq!(s.ledgers[0].keys.ids(), ["k1", "k3"]);
    assert!(resolve(&text, over("k1", k1)).is_ok());
    // ... but another key under a configured id is refused.
    let err = resolve(&text, over("k1", k2)).unwrap_err().to_string();
    assert!(err.starts_with("--trust"), "{err}");
    let err = resolve(&text.replace("[\"k1\"]", "[\"k9\"]"), Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("ledger.keys") && err.contains("k9"),
        "{err}"
    );
    let err = resolve(
        &format!("[keys]\n\"a\\u007fb\" = \"{k1}\""),
        Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("control character"), "{err}");
}

/// The shipped example must say exactly what the defaults are.
#[test]
fn the_sample_config_equals_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ledgertail.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let file = FileConfig::parse(&text, &path).unwrap();
    let over = Overrides {
        config: Some(path.clone()),
        ..Overrides::default()
    };
    let dir = path.parent().unwrap();
    let sample = Settings::resolve(&file, &over, dir).unwrap();
    let defaults = Settings::resolve(&FileConfig::default(), &Overrides::default(), dir).unwrap();
    assert_eq!(sample.db, defaults.db);
    assert_eq!(sample.listen, defaults.listen);
    assert_eq!(sample.parity_interval, defaults.parity_interval);
    assert_eq!(sample.log_format, defaults.log_format);
    assert_eq!(sample.log_level, defaults.log_level);
    assert_eq!(sample.batch_max_events, defaults.batch_max_events);
    assert_eq!(sample.batch_max_bytes, defaults.batch_max_bytes);
    assert_eq!(sample.run, defaults.run);
    assert_eq!(sample.keys.len(), 0);
    assert_eq!(sample.ledgers.len(), 1);
    let (a, b) = (&sample.ledgers[0], &defaults.ledgers[0]);
    assert_eq!(
        (&a.name, &a.path, a.signatures, a.max_line_bytes, a.rules),
        (&b.name, &b.path, b.signatures, b.max_line_bytes, b.rules)
    );
    assert_eq!((&a.keys, a.follow_symlink), (&b.keys, b.follow_symlink));
    // Every field of FileConfig and LedgerTable appears in the sample.
    for key in [
        "db",
        "listen",
        "parity_interval_secs",
        "log_format",
        "log_level",
        "batch_max_events",
        "batch_max_bytes",
        "batch_max_millis",
        "poll_interval_millis",
        "ready_max_lag_events",
        "shutdown_grace_secs",
        "parity_max_bytes_per_sec",
        "[keys]",
        "[[ledger]]",
        "name",
        "path",
        "signatures",
        "max_line_bytes",
        "require_genesis",
        "follow_symlink",
        "keys = [",
    ] {
        assert!(text.contains(key), "{key} missing from the sample");
    }
}

/// Every number of the bounds table appears in the shipped example with
/// its default, in its own table's section.
#[test]
fn the_sample_config_says_every_default_of_the_bounds_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ledgertail.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    for b in bounds::ALL {
        let (from, key) = match b.field.split_once('.') {
            Some((table, key)) => {
                let at = text.find(&format!("[{table}]"));
                (
                    at.unwrap_or_else(|| panic!("no [{table}] in the sample")),
                    key,
                )
            }
            None => (0, b.field),
        };
        let want = format!("{key} = {}", b.default);
        let found = text[from..].lines().any(|l| {
            let l = l.strip_prefix("# ").unwrap_or(l);
            l.split(" #").next().unwrap_or("").trim() == want
        });
        assert!(found, "the sample lacks `{want}`");
    }
}
