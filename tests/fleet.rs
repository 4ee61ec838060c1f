//! The fleet store (contract §6) against a real PostgreSQL server: the
//! real binary ships what it mirrors, exactly once, through kills,
//! server crashes and cut connections; the database keeps the chain
//! itself; fencing, forks and `verify --postgres`.

mod common;

use common::pg::Pg;
use common::pg::*;
use common::*;
use ledgertail::producer::Writer;

#[test]
fn one_sidecar_ships_its_ledger_exactly_once_and_the_database_keeps_the_chain() {
    let Some(pg) = Pg::start_or_skip("fleet shipping") else {
        return;
    };
    let s = setup(&postgres_table(&pg, "host-a", ""));
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 300);
    let sidecar = start(&s, &pg);
    sidecar.eventually("300 events central", || {
        central_count(&pg, "host-a", "app") == 300
    });
    append(&mut w, 300, 200);
    sidecar.eventually("500 events central", || {
        central_count(&pg, "host-a", "app") == 500
    });
    assert_central_equals_file(&pg, "host-a", "app", &s.ledger);
    sidecar.eventually("the lag metric at 0", || {
        sidecar.metric("ledgertail_postgres_lag_events{ledger=\"app\"}") == Some(0.0)
    });
    assert_eq!(
        sidecar.metric("ledgertail_postgres_head_seq{ledger=\"app\"}"),
        Some(499.0)
    );
    assert_eq!(
        sidecar.metric("ledgertail_postgres_up{ledger=\"app\"}"),
        Some(1.0)
    );
    assert_eq!(
        sidecar.metric("ledgertail_postgres_halted{ledger=\"app\"}"),
        Some(0.0)
    );
    let log = sidecar.log_text();
    assert!(
        !log.contains("\"level\":\"WARN\"") && !log.contains("\"level\":\"ERROR\""),
        "{log}"
    );
    assert!(sidecar.stop().success());

    // The database itself refuses what does not extend the chain, and
    // any change of a shipped row, whoever sends it (here the superuser).
    let refused = |sql: &str| {
        let e = pg.client().batch_execute(sql).unwrap_err();
        e.as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string())
    };
    let row = |seq: u64, prev: &str| {
        format!(
            "INSERT INTO ledgertail.events (source, ledger, seq, ts, type, payload, prev_hash, hash) VALUES ('host-a', 'app', {seq}, 't', 't', '{{}}', '{prev}', '{}')",
            "ab".repeat(32)
        )
    };
    let head = pg.column(
        "SELECT hash FROM ledgertail.events WHERE source='host-a' AND ledger='app' AND seq=499",
    )[0]
    .clone()
    .unwrap();
    assert!(refused(&row(501, &head)).contains("central head is seq 499"));
    assert!(refused(&row(500, &"cd".repeat(32))).contains("does not link to the central head"));
    assert!(
        refused("UPDATE ledgertail.events SET payload = '{\"amt\":1}' WHERE seq = 3")
            .contains("never changed")
    );
    assert!(refused("DELETE FROM ledgertail.events WHERE seq = 3").contains("never changed"));
    assert!(refused("TRUNCATE ledgertail.events").contains("never changed"));
    assert!(
        refused("UPDATE ledgertail.ledgers SET head_seq = 10, head_hash = 'x'")
            .contains("head moves only forward")
    );
    assert!(refused("DELETE FROM ledgertail.ledgers").contains("never removed"));
    assert_central_equals_file(&pg, "host-a", "app", &s.ledger);
    // The analysts' copy.
    assert_eq!(
        pg.column("SELECT payload_json->>'note' FROM ledgertail.events WHERE seq = 7")[0]
            .as_deref(),
        Some("event number 7")
    );
}

#[test]
fn shipping_resumes_from_the_central_head_after_a_restart_and_replay_ships_too() {
    let Some(pg) = Pg::start_or_skip("fleet restart") else {
        return;
    };
    let s = setup(&postgres_table(&pg, "host-a", ""));
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 100);
    let out = replay(&s, &pg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(central_count(&pg, "host-a", "app"), 100);
    append(&mut w, 100, 50);
    let out = replay(&s, &pg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_central_equals_file(&pg, "host-a", "app", &s.ledger);
    // A new mirror (the old one deleted) ships nothing twice: the central
    // head says where shipping stands.
    std::fs::remove_file(&s.db).unwrap();
    append(&mut w, 150, 10);
    let out = replay(&s, &pg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_central_equals_file(&pg, "host-a", "app", &s.ledger);
}
