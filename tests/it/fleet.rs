//! The fleet store (contract §6) against a real PostgreSQL server: the
//! real binary ships what it mirrors, exactly once, through kills,
//! server crashes and cut connections; the database keeps the chain
//! itself; fencing, forks and `verify --postgres`.

use crate::common;

use common::pg::Pg;
use std::time::Duration;

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
    // Every fleet family is there, and the whole page passes promtool.
    let (_, body) = sidecar.get("/metrics");
    for family in [
        "ledgertail_postgres_head_seq",
        "ledgertail_postgres_lag_events",
        "ledgertail_postgres_up",
        "ledgertail_postgres_errors_total",
        "ledgertail_postgres_ship_duration_seconds",
        "ledgertail_postgres_halted",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{body}"
        );
    }
    promtool_check_metrics(&body);
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
    // Not even a linked row goes in outside a transaction holding the
    // ledger's lease; within one, only what extends the chain.
    assert!(refused(&row(500, &head)).contains("holds its lease"));
    let leased = |sql: &str| refused(&in_lease("host-a", "app", sql));
    assert!(leased(&row(501, &head)).contains("central head is seq 499"));
    assert!(leased(&row(500, &"cd".repeat(32))).contains("does not link to the central head"));
    // Within one statement: each row links to the one before, no gap.
    let two = |second_seq: u64, second_prev: &str| {
        format!(
            "INSERT INTO ledgertail.events (source, ledger, seq, ts, type, payload, prev_hash, hash) VALUES \
             ('host-a', 'app', 500, 't', 't', '{{}}', '{head}', '{}'), \
             ('host-a', 'app', {second_seq}, 't', 't', '{{}}', '{second_prev}', '{}')",
            "ab".repeat(32),
            "ef".repeat(32)
        )
    };
    assert!(leased(&two(501, &"cd".repeat(32))).contains("does not link to the row before it"));
    assert!(leased(&two(502, &"ab".repeat(32))).contains("leave a gap"));
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
    assert!(
        refused("UPDATE ledgertail.ledgers SET head_seq = 600, head_hash = 'x'")
            .contains("to a row that is there")
    );
    assert!(refused("UPDATE ledgertail.ledgers SET head_hash = 'x'")
        .contains("head moves only forward"));
    assert!(refused("UPDATE ledgertail.ledgers SET anchor_hash = 'x'").contains("never change"));
    assert!(refused("DELETE FROM ledgertail.ledgers").contains("never removed"));
    assert_central_equals_file(&pg, "host-a", "app", &s.ledger);
    // The fleet guide's queries run as written.
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/fleet.md"),
    )
    .unwrap();
    let start = readme
        .find("Three fleet-wide queries")
        .expect("the fleet guide's queries");
    let block = &readme[start..];
    let block = &block[block.find("```sql").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    let queries: Vec<&str> = block
        .split(';')
        .map(str::trim)
        .filter(|q| {
            q.lines()
                .any(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
        })
        .collect();
    assert_eq!(queries.len(), 3, "{block}");
    for q in queries {
        pg.client()
            .simple_query(q)
            .unwrap_or_else(|e| panic!("{q}: {e:?}"));
    }
    // The guide's expression index serves a filter on the view.
    let index = readme
        .split('`')
        .find(|t| t.starts_with("CREATE INDEX ON ledgertail.events"))
        .expect("the fleet guide's expression index");
    let mut client = pg.client();
    client.batch_execute(index).unwrap();
    let plan = explain(
        &mut client,
        "SELECT seq FROM ledgertail.events_json WHERE payload_json ->> 'customer' = 'c-1'",
    );
    assert!(plan.contains("events_expr_idx"), "{plan}");
    // The analysts' jsonb: a store the sidecar created keeps no copy in
    // the table; the view parses each payload when it is read.
    assert_eq!(
        pg.column("SELECT payload_json->>'note' FROM ledgertail.events_json WHERE seq = 7")[0]
            .as_deref(),
        Some("event number 7")
    );
    assert_eq!(stored_copy(&pg), [Some("0".to_owned())]);
    // Nor an index by (type, ts); the guide's statement brings it back,
    // and a filter by type uses it.
    assert!(!has_type_index(&pg));
    let index = readme
        .split('`')
        .find(|t| t.starts_with("CREATE INDEX events_type_ts ON ledgertail.events"))
        .expect("the fleet guide's index by type");
    client.batch_execute(index).unwrap();
    assert!(has_type_index(&pg));
    let plan = explain(
        &mut client,
        "SELECT seq FROM ledgertail.events WHERE type = 'order.created' AND ts >= '2026'",
    );
    assert!(plan.contains("events_type_ts"), "{plan}");
}

/// The plan of `query`, sequential scans off (a small table would not
/// use an index otherwise).
fn explain(client: &mut postgres::Client, query: &str) -> String {
    client
        .simple_query(&format!("SET enable_seqscan = off; EXPLAIN {query}"))
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
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
    // A mirrored line edited in the file: the next replay's parity check
    // (it runs beside the shipping) halts the ledger, and what was
    // mirrored, authentic when read, still ships.
    let central_before = central_chain(&pg, "host-a", "app");
    let text = std::fs::read_to_string(&s.ledger).unwrap();
    let edited = text.replacen("event number 5\"", "event number X\"", 1);
    assert_ne!(text, edited);
    std::fs::write(&s.ledger, edited).unwrap();
    append(&mut w, 160, 10);
    let out = replay(&s, &pg);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("HALTED") && said.contains("rewritten"),
        "{said}"
    );
    assert!(said.contains("central head seq 169"), "{said}");
    let central = central_chain(&pg, "host-a", "app");
    assert_eq!(central.len(), 170);
    assert_eq!(central[..160], central_before[..]);
}

/// `ledgertail verify --postgres URL ARGS`, with the superuser's password.
fn verify_postgres(pg: &Pg, args: &[&str]) -> (Option<i32>, String, String) {
    let out = bin()
        .args(["verify", "--postgres", &pg.url(SUPERUSER, "")])
        .args(args)
        .env("LEDGERTAIL_POSTGRES_PASSWORD", SUPERUSER_PASSWORD)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_forged_central_row_halts_that_ledger_only_and_verify_catches_a_superusers_edit() {
    let Some(pg) = Pg::start_or_skip("fleet fork") else {
        return;
    };
    let s = setup_with(&postgres_table(&pg, "host-a", ""), "");
    // A second ledger beside `app`, which must go on shipping.
    let config = std::fs::read_to_string(&s.config).unwrap()
        + "\n[[ledger]]\nname = \"other\"\npath = \"other.jsonl\"\n";
    std::fs::write(&s.config, config).unwrap();
    let mut app = Writer::new(&s.ledger);
    let mut other = Writer::new(s.dir.join("other.jsonl"));
    append(&mut app, 0, 50);
    append(&mut other, 0, 50);
    let out = replay(&s, &pg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, stdout, _) = verify_postgres(&pg, &[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("host-a/app: 50 rows (anchor seq 0, head seq 49), 0 problems"),
        "{stdout}"
    );

    // Someone with write access appends a row of their own that links to
    // the central head: the database takes it (it extends the chain), but
    // the sidecar's seq 50 differs: a fork.
    let head = pg.column("SELECT head_hash FROM ledgertail.ledgers WHERE ledger = 'app'")[0]
        .clone()
        .unwrap();
    pg.exec(&in_lease("host-a", "app", &format!(
        "INSERT INTO ledgertail.events (source, ledger, seq, ts, type, payload, prev_hash, hash) VALUES ('host-a', 'app', 50, '2026-01-01T00:00:00Z', 'test', '{{\"forged\":true}}', '{head}', '{}')",
        "ee".repeat(32)
    )));
    let sidecar = start(&s, &pg);
    // Before app writes its own seq 50, the central head is past
    // everything its files hold: halted, and said so.
    sidecar.eventually("app halted: the central head past its files", || {
        sidecar.get("/readyz").1.contains(
            "the central head is seq 50, past everything this ledger's files hold (seq 49)",
        )
    });
    assert_eq!(
        sidecar.metric("ledgertail_postgres_halted{ledger=\"app\"}"),
        Some(1.0)
    );
    // Then app's own seq 50 shows what the central one is: a fork.
    append(&mut app, 50, 10);
    append(&mut other, 50, 10);
    sidecar.eventually("the fork named in /readyz", || {
        sidecar
            .get("/readyz")
            .1
            .contains("a fork: the central row at seq 50")
    });
    sidecar.eventually("other ships on", || {
        central_count(&pg, "host-a", "other") == 60
    });
    assert_eq!(
        sidecar.metric("ledgertail_postgres_halted{ledger=\"other\"}"),
        Some(0.0)
    );
    let (code, body) = sidecar.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(
            "ledger app: shipping to PostgreSQL halted: a fork: the central row at seq 50"
        ),
        "{body}"
    );
    assert!(sidecar
        .log_text()
        .contains("fleet: shipping of this ledger halted"));
    assert!(sidecar.stop().success());
    assert_central_equals_file(&pg, "host-a", "other", &s.dir.join("other.jsonl"));
    // `status` shows each central head and lag, and the conflict.
    let out = bin()
        .args(["status", "--config"])
        .arg(&s.config)
        .env("LEDGERTAIL_POSTGRES_PASSWORD", SUPERUSER_PASSWORD)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("central    CONFLICT (source host-a): a fork: the central row at seq 50"),
        "{text}"
    );
    assert!(
        text.contains("central    head seq 59 (source host-a), 0 events not shipped"),
        "{text}"
    );
    // ... and says so when PostgreSQL cannot be asked.
    let out = bin()
        .args(["status", "--json", "--config"])
        .arg(&s.config)
        .env("LEDGERTAIL_POSTGRES_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = v["ledgers"][0]["central"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("password authentication failed"), "{v}");
    // The forged row itself is well-formed but its hash does not recompute.
    let (code, stdout, _) = verify_postgres(&pg, &["--source", "host-a", "--ledger", "app"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("host-a/app: seq 50:"), "{stdout}");

    // A superuser who bypasses the triggers and edits a shipped row: the
    // row's hash no longer recomputes from its columns.
    pg.exec("SET session_replication_role = replica; UPDATE ledgertail.events SET payload = '{\"i\":3,\"note\":\"edited\"}' WHERE ledger = 'other' AND seq = 3");
    let (code, stdout, _) = verify_postgres(&pg, &["--json", "--ledger", "other"]);
    assert_eq!(code, Some(1), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["ledgers"][0]["problems"][0]["seq"], 3, "{stdout}");
    assert_eq!(v["ledgers"][0]["problems_total"], 1, "{stdout}");
    // ... and one who deletes a row leaves a gap.
    pg.exec("SET session_replication_role = replica; DELETE FROM ledgertail.events WHERE ledger = 'other' AND seq = 20");
    let (code, stdout, _) = verify_postgres(&pg, &["--ledger", "other"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("seq 20: missing"), "{stdout}");
    // Bad credentials: could not run, with a hint.
    let out = bin()
        .args(["verify", "--postgres", &pg.url(SUPERUSER, "wrong")])
        .env_remove("LEDGERTAIL_POSTGRES_PASSWORD")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains("hint"), "{err}");
}

#[test]
fn a_central_head_past_the_files_halts_until_the_mirror_reaches_it_with_the_same_hash() {
    let Some(pg) = Pg::start_or_skip("fleet ahead") else {
        return;
    };
    let s = setup(&postgres_table(&pg, "host-a", ""));
    append(&mut Writer::new(&s.ledger), 0, 60);
    // The whole ledger shipped from a copy (a mirror elsewhere), then the
    // host's own file loses its last ten lines, to be written again as
    // they were.
    let out = replay(&s, &pg);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let full = std::fs::read(&s.ledger).unwrap();
    let cut = full
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(49)
        .map(|(i, _)| i + 1)
        .unwrap();
    std::fs::write(&s.ledger, &full[..cut]).unwrap();
    std::fs::remove_file(&s.db).unwrap();
    let sidecar = start(&s, &pg);
    sidecar.eventually("halted: the central head past the files", || {
        sidecar.metric("ledgertail_postgres_halted{ledger=\"app\"}") == Some(1.0)
    });
    let (code, body) = sidecar.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("the central head is seq 59, past everything"),
        "{body}"
    );
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&s.ledger)
        .unwrap()
        .write_all(&full[cut..])
        .unwrap();
    sidecar.eventually("the halt lifted once the chains agree", || {
        sidecar.metric("ledgertail_postgres_halted{ledger=\"app\"}") == Some(0.0)
    });
    sidecar.eventually("ready again", || sidecar.get("/readyz").0 == 200);
    assert!(sidecar.log_text().contains("shipping resumed"));
    assert_eq!(central_count(&pg, "host-a", "app"), 60);
    assert!(sidecar.stop().success());
}

#[test]
fn two_sidecars_with_one_source_cannot_interleave() {
    let Some(pg) = Pg::start_or_skip("fleet fencing") else {
        return;
    };
    let a = setup(&postgres_table(&pg, "shared-name", ""));
    let b = setup(&postgres_table(&pg, "shared-name", ""));
    let mut wa = Writer::new(&a.ledger);
    append(&mut wa, 0, 20);
    let first = start(&a, &pg);
    first.eventually("a ships", || central_count(&pg, "shared-name", "app") == 20);
    // The second one follows a copy of the same ledger: its rows would
    // even be the same, yet it must not ship while the first one lives.
    std::fs::copy(&a.ledger, &b.ledger).unwrap();
    let second = start(&b, &pg);
    second.eventually("b is refused by the fence", || {
        second.log_text().contains("refused by the fence")
    });
    assert!(
        second.log_text().contains("give each its own source"),
        "{}",
        second.log_text()
    );
    append(&mut wa, 20, 5);
    first.eventually("a goes on", || {
        central_count(&pg, "shared-name", "app") == 25
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_central_equals_file(&pg, "shared-name", "app", &a.ledger);
    assert!(
        !second.log_text().contains("\"level\":\"ERROR\""),
        "{}",
        second.log_text()
    );
    assert!(second.stop().success());
    // A clean stop gives the lease up: the second takes over at once,
    // and its (same) chain goes on from the central head.
    assert!(first.stop().success());
    std::fs::copy(&a.ledger, &b.ledger).unwrap();
    let mut wb = Writer::new(&b.ledger);
    append(&mut wb, 25, 5);
    let second = start(&b, &pg);
    second.eventually("b takes over", || {
        central_count(&pg, "shared-name", "app") == 30
    });
    assert!(second.stop().success());
    let chain = central_chain(&pg, "shared-name", "app");
    assert_eq!(
        chain.iter().map(|c| c.0).collect::<Vec<_>>(),
        (0..30).collect::<Vec<u64>>()
    );
}
