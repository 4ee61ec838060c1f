//! The fleet store against hostile hands and a hung server: a role
//! granted one source cannot write, fence or squat another's ledgers; an
//! event holding SQL is stored as its exact text whatever the server's
//! `standard_conforming_strings`; a server that stops answering is seen
//! within the round-trip deadline; a central chain ahead of the files
//! ends `replay` and halts `run`'s shipping; rows of a ledger the
//! `ledgers` table does not know are reported by `verify --postgres`.

use crate::common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::pg::*;
use common::*;
use ledgertail::producer::Writer;

fn url_table(url: &str, source: &str, extra: &str) -> String {
    format!(
        "[postgres]\nurl = \"{url}\"\nsource = \"{source}\"\nconnect_timeout_secs = 2\n{extra}\n"
    )
}

fn replay_as(s: &Setup, password: &str) -> Output {
    let child = bin()
        .args(["replay", "--config"])
        .arg(&s.config)
        .env("LEDGERTAIL_POSTGRES_PASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish_within(child, Duration::from_secs(120), "replay")
}

fn setup_postgres(pg: &Pg, args: &[&str]) -> Output {
    bin()
        .args([
            "setup-postgres",
            "--postgres",
            &pg.url("lt_owner", "owner-pw"),
        ])
        .args(args)
        .output()
        .unwrap()
}

/// A database with an owner that set the schema up, and one login role
/// per host, each granted its own source.
fn two_hosts() -> Option<Pg> {
    let pg = Pg::start_or_skip("per-source roles")?;
    pg.exec(
        "CREATE ROLE lt_owner LOGIN PASSWORD 'owner-pw'; GRANT CREATE ON DATABASE postgres TO lt_owner;
         CREATE ROLE host_a LOGIN PASSWORD 'a-pw'; CREATE ROLE host_b LOGIN PASSWORD 'b-pw';",
    );
    for (role, source) in [("host_a", "host-a"), ("host_b", "host-b")] {
        let out = setup_postgres(&pg, &["--grant", role, "--source", source]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    }
    Some(pg)
}

fn connect_as(pg: &Pg, user: &str, password: &str) -> postgres::Client {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .connect(postgres::NoTls)
        .unwrap()
}

fn refused_code(client: &mut postgres::Client, sql: &str) -> String {
    let e = client
        .batch_execute(sql)
        .expect_err(&format!("accepted: {sql}"));
    let _ = client.batch_execute("ROLLBACK");
    format!(
        "{} {}",
        e.code().map_or("?", |c| c.code()),
        e.as_db_error()
            .map_or(e.to_string(), |d| d.message().to_owned())
    )
}

#[test]
fn a_role_granted_one_source_cannot_write_fence_or_squat_another_hosts_ledgers() {
    let Some(pg) = two_hosts() else {
        return;
    };
    // host-b's sidecar runs: its lease on `app` is live.
    let b = setup(&url_table(
        &pg.url("host_b", ""),
        "host-b",
        "lease_secs = 60",
    ));
    let mut wb = Writer::new(&b.ledger);
    append(&mut wb, 0, 20);
    let sidecar = Sidecar::start_with(&b.config, |c| {
        c.env("LEDGERTAIL_POSTGRES_PASSWORD", "b-pw");
    });
    sidecar.eventually("host-b ships", || central_count(&pg, "host-b", "app") == 20);
    let (head, anchor) = {
        let row = pg.column("SELECT head_hash || ' ' || anchor_hash FROM ledgertail.ledgers WHERE source = 'host-b' AND ledger = 'app'");
        let text = row[0].clone().unwrap();
        let (h, a) = text.split_once(' ').unwrap();
        (h.to_owned(), a.to_owned())
    };
    let shipper = pg.column("SELECT shipper FROM ledgertail.ledgers WHERE source = 'host-b'")[0]
        .clone()
        .unwrap();

    let mut a = connect_as(&pg, "host_a", "a-pw");
    let linked = format!(
        "INSERT INTO ledgertail.events (source, ledger, seq, ts, type, payload, prev_hash, hash) VALUES ('host-b', 'app', 20, 't', 't', '{{}}', '{head}', '{}')",
        "ab".repeat(32)
    );
    // A linked row, alone or after taking the lease (fencing host-b out
    // until 2094), a squat on a ledger host-b has not shipped yet, and
    // giving up host-b's lease: each refused by the database.
    let attempts = [
        linked.clone(),
        format!("BEGIN; SELECT ledgertail.ship_begin('host-b', 'app', 'evil', 2147483647, 19, '{head}', 0, '{anchor}'); {linked}; COMMIT"),
        format!("SELECT ledgertail.ship_begin_many('host-b', 'evil', 60, ARRAY['app'], ARRAY[19::bigint], ARRAY['{head}'], ARRAY[0::bigint], ARRAY['{anchor}'])"),
        format!("SELECT ledgertail.ship_begin('host-b', 'orders', 'evil', 60, NULL, NULL, 0, '{}')", "cd".repeat(32)),
        format!("SELECT ledgertail.ship_end('host-b', 'app', '{shipper}')"),
    ];
    for sql in &attempts {
        let why = refused_code(&mut a, sql);
        assert!(why.starts_with("42501"), "{sql}: {why}");
    }
    let why = refused_code(&mut a, &attempts[0]);
    assert!(why.contains("holds its lease"), "{why}");
    let why = refused_code(&mut a, &attempts[3]);
    assert!(
        why.contains("role host_a may not ship source host-b"),
        "{why}"
    );
    // Its own source, but a lease past a day: refused too.
    let why = refused_code(
        &mut a,
        &format!(
            "SELECT ledgertail.ship_begin('host-a', 'x', 'me', 2147483647, NULL, NULL, 0, '{}')",
            "cd".repeat(32)
        ),
    );
    assert!(why.starts_with("22023") && why.contains("86400"), "{why}");
    assert_eq!(
        pg.number(
            "SELECT count(*) FROM ledgertail.ledgers WHERE source = 'host-b' AND ledger = 'orders'"
        ),
        0
    );
    // host-b ships on, untouched.
    append(&mut wb, 20, 15);
    sidecar.eventually("host-b ships on", || {
        central_count(&pg, "host-b", "app") == 35
    });
    assert!(sidecar.stop().success());
    assert_central_equals_file(&pg, "host-b", "app", &b.ledger);

    // The grants as the owner recorded them, and a grant that names no
    // source is refused with the way out.
    assert_eq!(
        pg.column("SELECT role || '=' || source FROM ledgertail.source_grants ORDER BY role"),
        [
            Some("host_a=host-a".to_owned()),
            Some("host_b=host-b".to_owned())
        ]
    );
    let out = setup_postgres(&pg, &["--grant", "host_a"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        show(&out).contains("hint: add --source NAME"),
        "{}",
        show(&out)
    );
}

#[test]
fn an_event_holding_sql_is_stored_as_its_exact_text_when_the_server_reads_backslashes_the_old_way()
{
    let Some(pg) = Pg::start_or_skip("injection") else {
        return;
    };
    // A single-host set-up: the role owns the schema it ships into.
    pg.exec(
        "CREATE ROLE host_a LOGIN PASSWORD 'a-pw'; GRANT CREATE ON DATABASE postgres TO host_a;
         ALTER ROLE host_a SET standard_conforming_strings = off; ALTER ROLE host_a SET escape_string_warning = off;",
    );
    let s = setup(&url_table(&pg.url("host_a", ""), "host-a", ""));
    let mut w = Writer::new(&s.ledger);
    let hostile = "x\\');CREATE TABLE public.pwned (x int);--";
    w.append(hostile, r#"{"path":"C:\\temp\\it's","q":"\\'"}"#)
        .unwrap();
    append(&mut w, 1, 5);
    let out = replay_as(&s, "a-pw");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        pg.column("SELECT to_regclass('public.pwned')::text"),
        [None],
        "SQL from an event ran"
    );
    assert_eq!(
        pg.column("SELECT type FROM ledgertail.events WHERE source = 'host-a' AND seq = 0"),
        [Some(hostile.to_owned())]
    );
    assert_central_equals_file(&pg, "host-a", "app", &s.ledger);
    let verify = bin()
        .args([
            "verify",
            "--postgres",
            &pg.url("host_a", "a-pw"),
            "--source",
            "host-a",
        ])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", show(&verify));
}

#[test]
fn a_server_that_stops_answering_is_seen_within_the_deadline_and_shipping_resumes() {
    let Some(pg) = Pg::start_or_skip("a hung server") else {
        return;
    };
    // Deadline: statement_timeout_secs + connect_timeout_secs = 2 s.
    let s = setup(&format!(
        "[postgres]\nurl = \"postgresql://{SUPERUSER}@127.0.0.1:{}/postgres?sslmode=disable\"\nsource = \"host-h\"\nconnect_timeout_secs = 1\nstatement_timeout_secs = 1\n",
        pg.port
    ));
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 10);
    let sidecar = start(&s, &pg);
    sidecar.eventually("shipped", || central_count(&pg, "host-h", "app") == 10);
    let frozen = pg.freeze();
    let stopped = std::time::Instant::now();
    append(&mut w, 10, 30);
    sidecar.eventually("the hung server is seen", || {
        sidecar.metric("ledgertail_postgres_up{ledger=\"app\"}") == Some(0.0)
    });
    let seen = stopped.elapsed();
    // The log line may reach the test's reader a moment after the gauge.
    sidecar.eventually("the timeout is logged", || {
        sidecar
            .log_text()
            .contains("PostgreSQL did not answer within 2.0 s")
    });
    assert!(
        sidecar
            .metric("ledgertail_postgres_errors_total{ledger=\"app\"}")
            .unwrap()
            >= 1.0
    );
    // status answers meanwhile, saying why.
    let status = bin()
        .args(["status", "--config"])
        .arg(&s.config)
        .env("LEDGERTAIL_POSTGRES_PASSWORD", SUPERUSER_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = finish_within(status, Duration::from_secs(30), "status with a hung server");
    assert!(
        show(&status).contains("UNREACHABLE") && show(&status).contains("did not answer"),
        "{}",
        show(&status)
    );
    // The lag follows the mirror meanwhile.
    sidecar.eventually("the lag shows the backlog", || {
        sidecar.metric("ledgertail_postgres_lag_events{ledger=\"app\"}") == Some(30.0)
    });
    drop(frozen);
    sidecar.eventually("shipping resumes", || {
        central_count(&pg, "host-h", "app") == 40
    });
    // The gauge is set when the round that shipped them ends, a moment
    // after its commit made the rows visible.
    sidecar.eventually("ledgertail_postgres_up back at 1", || {
        sidecar.metric("ledgertail_postgres_up{ledger=\"app\"}") == Some(1.0)
    });
    assert!(sidecar.stop().success());
    assert_central_equals_file(&pg, "host-h", "app", &s.ledger);
    eprintln!("the hung server was seen after {seen:?}");
}

#[test]
fn a_central_chain_ahead_of_the_files_ends_replay_halts_run_and_status_says_why() {
    let Some(pg) = Pg::start_or_skip("central ahead") else {
        return;
    };
    let s = setup(&postgres_table(&pg, "host-c", ""));
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 10);
    let out = replay(&s, &pg);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let head = pg.column("SELECT head_hash FROM ledgertail.ledgers WHERE source = 'host-c'")[0]
        .clone()
        .unwrap();
    pg.exec(&in_lease(
        "host-c",
        "app",
        &format!(
            "INSERT INTO ledgertail.events (source, ledger, seq, ts, type, payload, prev_hash, hash) VALUES ('host-c', 'app', 10, 't', 't', '{{}}', '{head}', '{}')",
            "ef".repeat(32)
        ),
    ));
    // It ends (it waited for ever before), naming the head it cannot reach.
    let out = replay_as(&s, SUPERUSER_PASSWORD);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out)
            .contains("central head is seq 10, past everything this ledger's files hold (seq 9)"),
        "{}",
        show(&out)
    );
    let status = bin()
        .args(["status", "--config"])
        .arg(&s.config)
        .env("LEDGERTAIL_POSTGRES_PASSWORD", SUPERUSER_PASSWORD)
        .output()
        .unwrap();
    let text = show(&status);
    assert!(
        text.contains("central head seq 10 is past this mirror's head (seq 9)"),
        "{text}"
    );

    let sidecar = start(&s, &pg);
    sidecar.eventually("run halts that ledger's shipping", || {
        sidecar.metric("ledgertail_postgres_halted{ledger=\"app\"}") == Some(1.0)
    });
    let (code, body) = sidecar.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("past everything this ledger's files hold"),
        "{body}"
    );
    assert!(sidecar.stop().success());
}

#[test]
fn verify_postgres_reports_rows_of_a_ledger_the_ledgers_table_does_not_know() {
    let Some(pg) = Pg::start_or_skip("unregistered rows") else {
        return;
    };
    let s = setup(&postgres_table(&pg, "host-v", ""));
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 5);
    assert_eq!(replay(&s, &pg).status.code(), Some(0));
    // A superuser with the triggers off plants a row of its own.
    pg.exec(&format!(
        "SET session_replication_role = replica; INSERT INTO ledgertail.events (source, ledger, seq, id, ts, type, payload, hash) VALUES ('host-z', 'ghost', 0, 'order-42', 't', 't', '{{}}', '{}')",
        "ab".repeat(32)
    ));
    let out = bin()
        .args(["verify", "--postgres", &pg.admin_url()])
        .output()
        .unwrap();
    let text = show(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "host-z/ghost: 1 row (seqs 0 to 0) in events, but no row in ledgertail.ledgers"
        ),
        "{text}"
    );
    assert!(text.contains("host-v/app: 5 rows"), "{text}");
    // Narrowed to the planted source, still found.
    let out = bin()
        .args([
            "verify",
            "--postgres",
            &pg.admin_url(),
            "--source",
            "host-z",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["unregistered"][0]["ledger"], "ghost", "{report}");
}

/// `verify --postgres` over the whole store says OK.
fn assert_verify_postgres_passes(pg: &Pg) {
    let verify = bin()
        .args(["verify", "--postgres", &pg.admin_url()])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", show(&verify));
}

/// Roles `lt_owner` (who may create the schema) and `lt_ingest` (no
/// rights yet); a session of the owner's.
fn owner_and_ingest_roles(pg: &Pg) -> ledgertail::postgres::Session {
    pg.exec(
        "CREATE ROLE lt_owner LOGIN PASSWORD 'owner-pw'; GRANT CREATE ON DATABASE postgres TO lt_owner;
         CREATE ROLE lt_ingest LOGIN PASSWORD 'ingest-pw';",
    );
    ledgertail::postgres::Target::parse(
        &pg.url("lt_owner", "owner-pw"),
        None,
        ledgertail::postgres::Timeouts {
            connect: Duration::from_secs(5),
            statement: Duration::from_secs(30),
        },
        None,
    )
    .unwrap()
    .connect()
    .unwrap()
}

#[test]
fn a_schema_of_the_previous_version_is_migrated_in_place_and_its_ingest_role_ships_on() {
    let Some(pg) = Pg::start_or_skip("schema migration") else {
        return;
    };
    // The schema as the previous version left it, with its grants.
    let owner = owner_and_ingest_roles(&pg);
    ledgertail::postgres::schema::ensure_at(&owner, "ledgertail", 1).unwrap();
    drop(owner);
    pg.exec(
        "GRANT USAGE ON SCHEMA ledgertail TO lt_ingest;
         GRANT SELECT, INSERT ON ledgertail.events TO lt_ingest;
         GRANT SELECT ON ledgertail.ledgers, ledgertail.schema_version TO lt_ingest;
         GRANT EXECUTE ON FUNCTION ledgertail.ship_begin(text, text, text, integer, bigint, text, bigint, text) TO lt_ingest;
         GRANT EXECUTE ON FUNCTION ledgertail.ship_end(text, text, text) TO lt_ingest;",
    );
    // Rows it shipped: the mirror's, put in as that version's shipper did.
    let s = setup(&url_table(&pg.url("lt_ingest", ""), "host-m", ""));
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 8);
    let local = bin()
        .args(["replay", "--ledger"])
        .arg(&s.ledger)
        .arg("--db")
        .arg(&s.db)
        .output()
        .unwrap();
    assert_eq!(local.status.code(), Some(0), "{}", show(&local));
    let mut client = connect_as(&pg, "lt_ingest", "ingest-pw");
    let mut tx = client.transaction().unwrap();
    let mirror = db(&s.db);
    let mut rows = mirror
        .prepare("SELECT seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset FROM events WHERE ledger = 'app' ORDER BY seq")
        .unwrap();
    let rows: Vec<(i64, Vec<Option<String>>, i64)> = rows
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                (1..=10).map(|i| r.get(i).unwrap()).collect(),
                r.get(11)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let anchor = rows[0].1[6].clone().unwrap();
    tx.execute(
        "SELECT ledgertail.ship_begin('host-m', 'app', 'old/1', 60, NULL, NULL, 0, $1)",
        &[&anchor],
    )
    .unwrap();
    for (seq, c, offset) in &rows {
        tx.execute(
            "INSERT INTO ledgertail.events (source, ledger, seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset) VALUES ('host-m', 'app', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[seq, &c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6], &c[7], &c[8], &c[9], offset],
        )
        .unwrap();
    }
    tx.execute("SELECT ledgertail.ship_end('host-m', 'app', 'old/1')", &[])
        .unwrap();
    tx.commit().unwrap();
    std::fs::remove_file(&s.db).unwrap();

    // The owner migrates it; the ingest role keeps shipping any source,
    // recorded and warned about.
    let out = setup_postgres(&pg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(show(&out).contains("at version 2"), "{}", show(&out));
    assert!(
        show(&out).contains("this role may ship every source"),
        "{}",
        show(&out)
    );
    assert_eq!(
        pg.column(
            "SELECT role || ' ' || coalesce(source, 'every source') FROM ledgertail.source_grants"
        ),
        [Some("lt_ingest every source".to_owned())]
    );
    append(&mut w, 8, 12);
    let out = replay_as(&s, "ingest-pw");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_central_equals_file(&pg, "host-m", "app", &s.ledger);
    assert_verify_postgres_passes(&pg);
}

#[test]
fn a_schema_of_an_earlier_revision_takes_rows_as_it_is_and_setup_postgres_revises_it_in_place() {
    let Some(pg) = Pg::start_or_skip("schema revision") else {
        return;
    };
    // The schema as a build of this version without the revision left it.
    let owner = owner_and_ingest_roles(&pg);
    use ledgertail::postgres::schema;
    schema::ensure_at(&owner, "ledgertail", schema::VERSION).unwrap();
    let sources = ["host-r".to_owned()];
    schema::grant_ingest(
        &owner,
        "ledgertail",
        "lt_ingest",
        schema::Sources::Only(&sources),
    )
    .unwrap();
    drop(owner);
    let revision = || pg.column("SELECT to_regclass('ledgertail.schema_revision')::text");
    assert_eq!(revision(), [None]);

    // The ingest role may not revise it: it ships into it as it is, and
    // says what the owner can do.
    let s = setup(&url_table(&pg.url("lt_ingest", ""), "host-r", ""));
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 20);
    let out = replay_as(&s, "ingest-pw");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        show(&out).contains("lacks this build's revision"),
        "{}",
        show(&out)
    );
    assert!(show(&out).contains("setup-postgres"), "{}", show(&out));
    assert_central_equals_file(&pg, "host-r", "app", &s.ledger);
    assert_eq!(revision(), [None]);

    // The owner revises it in place; shipping goes on through it. The
    // table keeps the jsonb copy it had, which the new view reads.
    let out = setup_postgres(&pg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        show(&out).contains(&format!(
            "revision {}; payload_json stored",
            schema::REVISION
        )),
        "{}",
        show(&out)
    );
    assert_eq!(
        pg.column("SELECT max(revision)::text FROM ledgertail.schema_revision"),
        [Some(schema::REVISION.to_string())]
    );
    // And its index by (type, ts): a new store has none, an old one is
    // not changed under its analysts.
    assert!(has_type_index(&pg));
    append(&mut w, 20, 20);
    let out = replay_as(&s, "ingest-pw");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        !show(&out).contains("lacks this build's revision"),
        "{}",
        show(&out)
    );
    assert_central_equals_file(&pg, "host-r", "app", &s.ledger);
    assert_verify_postgres_passes(&pg);
    assert_payload_json_reads_every_payload(&pg, 40);

    // The copy dropped, then stored again: the view answers the same,
    // and the ingest role ships in between.
    let out = setup_postgres(&pg, &["--payload-json", "computed"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        show(&out).contains("payload_json computed by the view"),
        "{}",
        show(&out)
    );
    assert_eq!(stored_copy(&pg), [Some("0".to_owned())]);
    append(&mut w, 40, 10);
    assert_eq!(replay_as(&s, "ingest-pw").status.code(), Some(0));
    assert_payload_json_reads_every_payload(&pg, 50);
    let out = setup_postgres(&pg, &["--payload-json", "stored"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(stored_copy(&pg), [Some("1".to_owned())]);
    append(&mut w, 50, 10);
    assert_eq!(replay_as(&s, "ingest-pw").status.code(), Some(0));
    assert_payload_json_reads_every_payload(&pg, 60);
    assert_central_equals_file(&pg, "host-r", "app", &s.ledger);
    assert_verify_postgres_passes(&pg);
}

/// `events_json.payload_json` is each of the `rows` central payloads, parsed.
fn assert_payload_json_reads_every_payload(pg: &Pg, rows: usize) {
    assert_eq!(
        pg.column(
            "SELECT count(*)::text FROM ledgertail.events_json WHERE payload_json = payload::jsonb"
        ),
        [Some(rows.to_string())]
    );
}

#[test]
fn verify_postgres_judges_each_source_under_its_own_keys_and_names_the_signer() {
    let Some(pg) = Pg::start_or_skip("keys per source") else {
        return;
    };
    use ledgertail::producer::KeyFile;
    let (key_a, key_b) = (
        KeyFile::generate("a").unwrap(),
        KeyFile::generate("b").unwrap(),
    );
    let host = |source: &str, key: &KeyFile| {
        let s = setup(&format!(
            "{}[keys]\n{}\n",
            postgres_table(&pg, source, ""),
            key.trust_line()
        ));
        let mut w = Writer::new(&s.ledger).with_key(key.clone());
        append(&mut w, 0, 5);
        let out = replay(&s, &pg);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        s
    };
    let (_a, b) = (host("host-a", &key_a), host("host-b", &key_b));
    // A row that extends host-b's chain, signed with host-a's key (the
    // database refuses it from host-a's role: a superuser with the
    // triggers off plants it, heads and all).
    let forged = tempfile::tempdir().unwrap();
    let file = forged.path().join("app.jsonl");
    std::fs::copy(&b.ledger, &file).unwrap();
    Writer::new(&file)
        .with_key(key_a.clone())
        .append("test", r#"{"forged":true}"#)
        .unwrap();
    let db = forged.path().join("m.db");
    let out = bin()
        .args(["replay", "--signatures", "off", "--ledger"])
        .arg(&file)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let row: Vec<Option<String>> = {
        let c = common::db(&db);
        c.query_row(
            "SELECT ts, type, payload, prev_hash, hash, key_id, sig FROM events WHERE seq = 5",
            [],
            |r| (0..7).map(|i| r.get(i)).collect(),
        )
        .unwrap()
    };
    let text = |v: &Option<String>| v.clone().unwrap().replace('\'', "''");
    pg.exec(&format!(
        "SET session_replication_role = replica;
         INSERT INTO ledgertail.events (source, ledger, seq, ts, type, payload, prev_hash, hash, key_id, sig)
         VALUES ('host-b', 'app', 5, '{}', '{}', '{}', '{}', '{}', '{}', '{}');
         UPDATE ledgertail.ledgers SET head_seq = 5, head_hash = '{}' WHERE source = 'host-b';",
        text(&row[0]), text(&row[1]), text(&row[2]), text(&row[3]), text(&row[4]), text(&row[5]), text(&row[6]), text(&row[4])
    ));
    let auditor = |tables: &str| {
        let path = forged.path().join("auditor.toml");
        std::fs::write(
            &path,
            format!(
                "[keys]\n{}\n{}\n{tables}",
                key_a.trust_line(),
                key_b.trust_line()
            ),
        )
        .unwrap();
        bin()
            .args(["verify", "--postgres", &pg.admin_url(), "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    // Keys chosen by ledger name alone: both trusted, the row passes; the
    // signers are named, which shows it.
    let out =
        auditor("[[ledger]]\nname = \"app\"\npath = \"app.jsonl\"\nsignatures = \"required\"\n");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        show(&out).contains("host-b/app:   signed by key a: 1 row (seqs 5 to 5)"),
        "{}",
        show(&out)
    );
    // Keys per source: host-b's ledger trusts host-b's key only.
    let out = auditor(
        "[[ledger]]\nname = \"app\"\npath = \"app.jsonl\"\nsource = \"host-a\"\nsignatures = \"required\"\nkeys = [\"a\"]\n\
         [[ledger]]\nname = \"app\"\npath = \"app.jsonl\"\nsource = \"host-b\"\nsignatures = \"required\"\nkeys = [\"b\"]\n",
    );
    let text = show(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("host-b/app: seq 5:"), "{text}");
    assert!(
        text.contains("host-a/app: 5 rows (anchor seq 0, head seq 4), 0 problems"),
        "{text}"
    );
    // A sidecar's own config may not name another source.
    std::fs::write(
        &b.config,
        std::fs::read_to_string(&b.config).unwrap() + "source = \"host-z\"\n",
    )
    .unwrap();
    let out = replay(&b, &pg);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        show(&out).contains("names a source other than this sidecar's (host-b)"),
        "{}",
        show(&out)
    );
}
