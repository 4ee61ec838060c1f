//! The published RFC 8785 test data through our canonicalizer: every
//! `input/` file must canonicalize to the bytes of its `output/` twin, and
//! every one of the 200k ECMAScript number cases must format identically.

use std::path::PathBuf;

use ledgertail::ledger::{jcs, number};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc8785")
}

#[test]
fn published_inputs_canonicalize_to_published_outputs() {
    let dir = data_dir();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.join("input")).expect("tests/data/rfc8785/input") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let input = std::fs::read_to_string(&path).unwrap();
        let want = std::fs::read(dir.join("output").join(&name)).unwrap();
        let got = jcs::canonicalize(&input).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(
            got.as_bytes(),
            want.as_slice(),
            "{name:?}:\n got {got}\nwant {}",
            String::from_utf8_lossy(&want)
        );
        checked += 1;
    }
    assert_eq!(checked, 6, "all six published files");
}

#[test]
fn es6_number_formatting_200k() {
    let text = std::fs::read_to_string(data_dir().join("es6-numbers-200k.txt")).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for line in text.lines() {
        let (hex, want) = line.split_once(',').expect("hex,expected");
        let value = f64::from_bits(u64::from_str_radix(hex, 16).unwrap());
        let got = number::format_number(value);
        if got != want {
            failures.push(format!("{hex}: got {got}, want {want}"));
        }
        // The text we write must read back to the same double (the ledger
        // is re-read by auditors), except that -0 is written as 0.
        if value != 0.0 {
            let back: f64 = jcs::canonicalize(&got).unwrap().parse().unwrap();
            if back.to_bits() != value.to_bits() {
                failures.push(format!("{hex}: {got} reads back as {back}"));
            }
        }
        checked += 1;
    }
    assert!(checked > 199_000, "only {checked} cases");
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}
