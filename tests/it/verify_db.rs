//! `verify --db` against a mirror someone edited: a forged archived history,
//! and columns that are not the canonical text of what they name.

use crate::common;

use common::lines::*;
use common::*;
use ledgertail::ledger::Hash;
use ledgertail::producer::{KeyFile, Writer};

/// Signed ledger under `required`: 0–2 in app.jsonl.1, 3–5 in app.jsonl.
fn signed_rotated_ledger(key: &KeyFile) -> Setup {
    let s = setup_with(
        &format!("[keys]\n{}", key.trust_line()),
        "signatures = \"required\"",
    );
    let mut w = Writer::new(&s.ledger).with_key(key.clone());
    append(&mut w, 0, 3);
    std::fs::rename(&s.ledger, s.dir.join("app.jsonl.1")).unwrap();
    append(&mut w, 3, 3);
    let out = with_config("replay", &s.config, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    s
}

#[test]
fn verify_db_refuses_a_forged_archived_history() {
    let key = KeyFile::generate("k1").unwrap();
    let s = signed_rotated_ledger(&key);
    let out = with_config("verify", &s.config, &["--db", s.db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // The oldest file goes (archived), and rows 0–2 are rewritten in
    // SQLite: other payloads, no signatures, hashes recomputed.
    std::fs::rename(
        s.dir.join("app.jsonl.1"),
        s._dir
            .path()
            .parent()
            .unwrap()
            .join(format!("moved-{}", std::process::id())),
    )
    .ok();
    let c = rusqlite::Connection::open(&s.db).unwrap();
    let mut prev = None;
    for seq in 0..3u64 {
        let (line, hash) = sealed(seq, prev, None, "{\"forged\":true}", None);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        c.execute(
            "UPDATE events SET payload = ?2, hash = ?3, prev_hash = ?4, ts = ?5, type = ?6, key_id = NULL, sig = NULL WHERE seq = ?1",
            rusqlite::params![
                seq as i64,
                "{\"forged\":true}",
                hash.to_hex(),
                prev.map(|h: Hash| h.to_hex()),
                v["ts"].as_str().unwrap(),
                v["type"].as_str().unwrap()
            ],
        )
        .unwrap();
        prev = Some(hash);
    }
    drop(c);
    let out = with_config("verify", &s.config, &["--db", s.db.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the forgery is found: {}",
        show(&out)
    );
    let report = text(&out.stdout);
    assert!(report.contains("does not link"), "{report}");
    assert!(report.contains("unsigned"), "{report}");
}

#[test]
fn verify_db_checks_that_every_column_is_the_canonical_text_of_what_it_names() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.jsonl");
    let (l0, h0) = sealed(0, None, None, "{\"n\":1}", None);
    let (l1, h1) = sealed(
        1,
        Some(h0),
        Some("order-42"),
        "{\"amt\":5,\"to\":\"bob\"}",
        None,
    );
    let (l2, _) = sealed(2, Some(h1), None, "{\"n\":2}", Some(("k1", &key)));
    write_lines(&live, &[l0, l1, l2]);
    let public = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
    };
    let trust = format!("k1={public}");
    let db = dir.path().join("m.db");
    assert_eq!(
        on_db_with("replay", &live, &db, &["--trust", &trust])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        on_db_with("verify", &live, &db, &["--trust", &trust])
            .status
            .code(),
        Some(0)
    );
    for (what, sql) in [
        ("key_id moved into extra", "UPDATE events SET extra = '{\"key_id\":\"k1\"}', key_id = NULL WHERE seq = 2"),
        ("a sig that is not 64 bytes", "UPDATE events SET sig = 'AAAA' WHERE seq = 2"),
        ("a payload not in canonical form", "UPDATE events SET payload = '{\"n\" : 1.000000000000000001}' WHERE seq = 0"),
        ("the id smuggled into the payload", "UPDATE events SET payload = '{\"amt\":5,\"to\":\"bob\"},\"id\":\"order-42\"', id = NULL WHERE seq = 1"),
    ] {
        let forged = dir.path().join("forged.db");
        std::fs::copy(&db, &forged).unwrap();
        let c = rusqlite::Connection::open(&forged).unwrap();
        c.execute(sql, []).unwrap();
        drop(c);
        let out = on_db_with("verify", &live, &forged, &["--trust", &trust]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", show(&out));
        assert!(text(&out.stdout).contains("mismatched"), "{what}: {}", show(&out));
        std::fs::remove_file(&forged).unwrap();
    }
}
