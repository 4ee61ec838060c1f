//! Reaching the fleet store as operators do: a least-privilege ingest
//! role, wrong passwords, TLS (`require`, `verify-full` with a CA file, a
//! certificate from another CA, a server without TLS), and a pgbouncer
//! in transaction pooling mode between the sidecars and PostgreSQL.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::certs;
use common::pg::*;
use common::*;
use ledgertail::producer::Writer;

fn replay_as(s: &Setup, password: &str) -> Output {
    bin()
        .args(["replay", "--config"])
        .arg(&s.config)
        .env("LEDGERTAIL_POSTGRES_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn url_table(url: &str, source: &str, extra: &str) -> String {
    format!(
        "[postgres]\nurl = \"{url}\"\nsource = \"{source}\"\nconnect_timeout_secs = 2\n{extra}\n"
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_ingest_role_ships_and_can_do_nothing_else() {
    let Some(pg) = Pg::start_or_skip("ingest role") else {
        return;
    };
    pg.exec(
        "CREATE ROLE lt_owner LOGIN PASSWORD 'owner-pw'; GRANT CREATE ON DATABASE postgres TO lt_owner;
         CREATE ROLE lt_ingest LOGIN PASSWORD 'ingest-pw'; CREATE ROLE lt_nobody LOGIN PASSWORD 'nobody-pw';",
    );
    // The README's set-up: the owner creates the schema and grants.
    let out = bin()
        .args([
            "setup-postgres",
            "--postgres",
            &pg.url("lt_owner", "owner-pw"),
            "--grant",
            "lt_ingest",
            "--source",
            "host-i",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = bin()
        .args([
            "setup-postgres",
            "--postgres",
            &pg.url("lt_owner", ""),
            "--grant",
            "ledgertail_web_1",
            "--source",
            "web-1",
            "--print",
        ])
        .output()
        .unwrap();
    assert_eq!(printed.status.code(), Some(0), "{}", stderr(&printed));
    let sql = String::from_utf8_lossy(&printed.stdout);
    // The README's command as written (verify-full with --ca-file) prints
    // the same, with no server and no CA file on this machine.
    let readme_form = bin()
        .args([
            "setup-postgres",
            "--postgres",
            "postgresql://ledgertail_owner@db.example/ledgers?sslmode=verify-full",
            "--ca-file",
            "/etc/ledgertail/db-ca.pem",
            "--grant",
            "ledgertail_web_1",
            "--source",
            "web-1",
            "--print",
        ])
        .output()
        .unwrap();
    assert_eq!(
        readme_form.status.code(),
        Some(0),
        "{}",
        stderr(&readme_form)
    );
    assert_eq!(String::from_utf8_lossy(&readme_form.stdout), sql);
    assert!(
        sql.contains("GRANT SELECT, INSERT ON \"ledgertail\".events TO \"ledgertail_web_1\";"),
        "{sql}"
    );
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/fleet.md"))
            .unwrap();
    assert!(
        readme.contains(sql.trim()),
        "docs/fleet.md lists other grants than setup-postgres --print:\n{sql}"
    );

    let s = setup(&url_table(&pg.url("lt_ingest", ""), "host-i", ""));
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 40);
    let out = replay_as(&s, "ingest-pw");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_central_equals_file(&pg, "host-i", "app", &s.ledger);

    // As the ingest role: no change of a shipped row, no head moved by
    // hand, no schema change.
    let mut ingest = postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port)
        .user("lt_ingest")
        .password("ingest-pw")
        .dbname("postgres")
        .connect(postgres::NoTls)
        .unwrap();
    for sql in [
        "UPDATE ledgertail.events SET payload = '{}' WHERE seq = 1",
        "DELETE FROM ledgertail.events WHERE seq = 1",
        "TRUNCATE ledgertail.events",
        "UPDATE ledgertail.ledgers SET head_seq = 3",
        "DELETE FROM ledgertail.ledgers",
        "INSERT INTO ledgertail.ledgers (source, ledger, anchor_seq, anchor_hash) VALUES ('x', 'y', 0, 'z')",
        "CREATE TABLE ledgertail.mine (x int)",
        "ALTER TABLE ledgertail.events DISABLE TRIGGER events_chain",
        "DROP TABLE ledgertail.events",
    ] {
        let e = ingest.batch_execute(sql).unwrap_err();
        let code = e.code().map(|c| c.code().to_owned());
        assert!(
            matches!(code.as_deref(), Some("42501") | Some("LT001")),
            "{sql}: {e:?}"
        );
    }
    assert_central_equals_file(&pg, "host-i", "app", &s.ledger);

    // A role without the grants: could not run, with a hint.
    let s2 = setup(&url_table(&pg.url("lt_nobody", ""), "host-n", ""));
    let mut w2 = Writer::new(&s2.ledger);
    append(&mut w2, 0, 3);
    let out = replay_as(&s2, "nobody-pw");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    // The local mirror was written all the same.
    assert_eq!(mirrored_seqs(&s2.db), vec![0, 1, 2]);

    // `check` logs in, reads the schema's version and asks whether the
    // role may ship its source, changing nothing.
    let checked = |s: &Setup, password: &str| {
        bin()
            .args(["check", "--config"])
            .arg(&s.config)
            .env("LEDGERTAIL_POSTGRES_PASSWORD", password)
            .output()
            .unwrap()
    };
    let ok = checked(&s, "ingest-pw");
    let text = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert_eq!(ok.status.code(), Some(0), "{text}");
    assert!(text.contains("logged in"), "{text}");
    assert!(text.contains("schema ledgertail: version 2"), "{text}");
    assert!(
        text.contains("source host-i: this role may ship it"),
        "{text}"
    );
    let refused = checked(&s2, "nobody-pw");
    let text = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(text.contains("permission denied for schema"), "{text}");
    assert!(text.contains("hint: "), "{text}");
    // The ingest role, for a source it was not granted.
    let other = setup(&url_table(&pg.url("lt_ingest", ""), "host-z", ""));
    let refused = checked(&other, "ingest-pw");
    let text = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "PROBLEM [postgres] source host-z: role lt_ingest may not ship source host-z"
        ),
        "{text}"
    );
    assert!(
        text.contains("hint: the owner of the fleet store grants it"),
        "{text}"
    );
    let wrong = checked(&s, "not-the-password");
    let text = String::from_utf8_lossy(&wrong.stdout).into_owned();
    assert_eq!(wrong.status.code(), Some(1), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    assert_central_equals_file(&pg, "host-i", "app", &s.ledger);

    // Set-up again is a no-op (the schema is at this build's version);
    // a schema a newer build migrated is refused, not written to.
    let again = bin()
        .args([
            "setup-postgres",
            "--postgres",
            &pg.url("lt_owner", "owner-pw"),
        ])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    pg.exec("INSERT INTO ledgertail.schema_version (version) VALUES (99)");
    append(&mut w, 40, 2);
    let out = replay_as(&s, "ingest-pw");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("version 99, newer than this build's"), "{err}");
    assert!(err.contains("upgrade ledgertail"), "{err}");
    assert_eq!(central_count(&pg, "host-i", "app"), 40);
    // Unless the newer build said that sidecars of this version still
    // ship into it (its migrations changed nothing they rely on).
    pg.exec(
        "CREATE TABLE ledgertail.schema_sidecars (from_version integer NOT NULL);
         GRANT SELECT ON ledgertail.schema_sidecars TO PUBLIC;
         INSERT INTO ledgertail.schema_sidecars VALUES (99)",
    );
    let out = replay_as(&s, "ingest-pw");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("newer than this build's"));
    pg.exec("UPDATE ledgertail.schema_sidecars SET from_version = 2");
    let out = replay_as(&s, "ingest-pw");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(central_count(&pg, "host-i", "app"), 42);
    let checked = bin()
        .args(["check", "--config"])
        .arg(&s.config)
        .env("LEDGERTAIL_POSTGRES_PASSWORD", "ingest-pw")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(said.contains("still takes this build's rows"), "{said}");
    pg.exec("SET session_replication_role = replica; DELETE FROM ledgertail.schema_version WHERE version = 99; DROP TABLE ledgertail.schema_sidecars");

    // A wrong password: could not run, naming the role, never the password.
    let out = replay_as(&s, "not-the-password");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("password authentication failed for user \"lt_ingest\""),
        "{err}"
    );
    assert!(err.contains("LEDGERTAIL_POSTGRES_PASSWORD"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    // No password at all, as in an operator's shell without the sidecar's
    // environment: `status` says so instead of "password missing".
    let no_password = pg.url("lt_ingest", "x").replace(":x@", "@");
    let s2 = setup(&url_table(&no_password, "host-i", ""));
    std::fs::copy(&s.ledger, &s2.ledger).unwrap();
    let replayed = bin()
        .args(["replay", "--config"])
        .arg(&s2.config)
        .env_remove("LEDGERTAIL_POSTGRES_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let status = bin()
        .args(["status", "--config"])
        .arg(&s2.config)
        .env_remove("LEDGERTAIL_POSTGRES_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    for text in [
        stderr(&replayed),
        String::from_utf8_lossy(&status.stdout).into_owned(),
    ] {
        assert!(
            text.contains("LEDGERTAIL_POSTGRES_PASSWORD is not set in this environment"),
            "{text}"
        );
    }
    assert!(stderr(&replayed).contains("hint: export LEDGERTAIL_POSTGRES_PASSWORD"));
    // An unknown host.
    let s3 = setup(&url_table(
        "postgresql://lt_ingest@no-such-host.invalid/postgres?sslmode=disable",
        "host-u",
        "",
    ));
    std::fs::copy(&s.ledger, &s3.ledger).unwrap();
    let out = replay_as(&s3, "ingest-pw");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no-such-host.invalid"), "{err}");
    assert!(err.contains("does not resolve"), "{err}");
}

#[test]
fn run_refuses_to_start_with_a_connection_string_it_cannot_use() {
    for (table, said) in [
        (
            "[postgres]\nurl = \"postgresql://u@h/db?sslmode=verify-full\"\nsource = \"a\"\n",
            "ca_file",
        ),
        (
            "[postgres]\nurl = \"postgresql://u@h/db?sslmode=sometimes\"\nsource = \"a\"\n",
            "sslmode",
        ),
        ("[postgres]\nsource = \"a\"\n", "postgres.url"),
        (
            "[postgres]\nurl = \"postgresql://u@h/db?sslmode=verify-full\"\nsource = \"a\"\nca_file = \"no-such-ca.pem\"\n",
            "no-such-ca.pem",
        ),
        (
            "[postgres]\nurl = \"postgresql://u@h/db\"\nschema = \"Bad Name\"\n",
            "postgres.schema",
        ),
    ] {
        let s = setup(table);
        let out = bin()
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&s.config)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{table}: {err}");
        assert!(err.contains(said), "{table}: {err}");
    }
}

#[test]
fn a_wrong_password_in_run_is_reported_and_mirroring_goes_on() {
    let Some(pg) = Pg::start_or_skip("wrong password in run") else {
        return;
    };
    let s = setup(&postgres_table(&pg, "host-w", ""));
    let mut w = Writer::new(&s.ledger);
    append(&mut w, 0, 10);
    let sidecar = Sidecar::start_with(&s.config, |c| {
        c.env("LEDGERTAIL_POSTGRES_PASSWORD", "wrong");
    });
    sidecar.eventually("the error is logged", || {
        sidecar
            .log_text()
            .contains("password authentication failed")
    });
    sidecar.eventually("mirrored locally", || mirrored_seqs(&s.db).len() == 10);
    sidecar.eventually("ledgertail_postgres_up at 0", || {
        sidecar.metric("ledgertail_postgres_up{ledger=\"app\"}") == Some(0.0)
    });
    sidecar.eventually("the lag shows", || {
        sidecar.metric("ledgertail_postgres_lag_events{ledger=\"app\"}") == Some(10.0)
    });
    let log = sidecar.log_text();
    assert!(
        !log.contains("wrong\""),
        "the password must not be logged: {log}"
    );
    assert!(sidecar.stop().success());
}

#[test]
fn tls_require_and_verify_full_work_and_a_foreign_certificate_is_refused() {
    if !certs::have_openssl() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let ca = certs::make_ca(certs.path(), "fleet");
    let other = tempfile::tempdir().unwrap();
    let other_ca = certs::make_ca(other.path(), "other");
    let Some(pg) = Pg::start_configured("TLS", |data| {
        for f in ["server.crt", "server.key"] {
            std::fs::copy(certs.path().join(f), data.join(f)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
        )
        .unwrap();
    }) else {
        return;
    };
    let url = |host: &str, mode: &str| {
        format!(
            "postgresql://{SUPERUSER}@{host}:{}/postgres?sslmode={mode}",
            pg.port
        )
    };
    let mut w_file = None;
    for (i, (host, mode, ca_file)) in [
        ("127.0.0.1", "require", None),
        ("127.0.0.1", "verify-full", Some(&ca)),
        ("localhost", "verify-full", Some(&ca)),
        ("127.0.0.1", "verify-ca", Some(&ca)),
    ]
    .into_iter()
    .enumerate()
    {
        let extra = ca_file
            .map(|p| format!("ca_file = \"{}\"", p.display()))
            .unwrap_or_default();
        let s = setup(&url_table(&url(host, mode), &format!("tls-{i}"), &extra));
        let mut w = Writer::new(&s.ledger);
        append(&mut w, 0, 5);
        let out = replay_as(&s, SUPERUSER_PASSWORD);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{host} {mode}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(&format!("sslmode={mode}")),
            "{}",
            stderr(&out)
        );
        assert_central_equals_file(&pg, &format!("tls-{i}"), "app", &s.ledger);
        w_file = Some(s);
    }
    let template = w_file.unwrap();
    // The server's certificate from another CA: refused, said clearly.
    let s = setup(&url_table(
        &url("127.0.0.1", "verify-full"),
        "tls-bad",
        &format!("ca_file = \"{}\"", other_ca.display()),
    ));
    std::fs::copy(&template.ledger, &s.ledger).unwrap();
    let out = replay_as(&s, SUPERUSER_PASSWORD);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("TLS") || err.contains("certificate"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    // verify-full without a CA file: refused before connecting.
    let s = setup(&url_table(&url("127.0.0.1", "verify-full"), "tls-noca", ""));
    std::fs::copy(&template.ledger, &s.ledger).unwrap();
    let out = replay_as(&s, SUPERUSER_PASSWORD);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("ca_file"), "{}", stderr(&out));

    // A server without TLS refuses sslmode=require.
    let Some(plain) = Pg::start_or_skip("TLS refused") else {
        return;
    };
    let s = setup(&url_table(
        &format!(
            "postgresql://{SUPERUSER}@127.0.0.1:{}/postgres?sslmode=require",
            plain.port
        ),
        "tls-plain",
        "",
    ));
    std::fs::copy(&template.ledger, &s.ledger).unwrap();
    let out = replay_as(&s, SUPERUSER_PASSWORD);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("TLS"), "{err}");
}

/// pgbouncer (Debian's) in transaction pooling mode in front of `pg`,
/// one server connection for everyone: run as the postgres user, since
/// it will not run as root.
struct Bouncer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bouncer(pg: &Pg) -> Option<Bouncer> {
    let Some(binary) = which("pgbouncer")
        .or_else(|| Some("/usr/sbin/pgbouncer".into()).filter(|p: &std::path::PathBuf| p.exists()))
    else {
        assert!(
            std::env::var_os("LEDGERTAIL_CI").is_none(),
            "pgbouncer is not installed"
        );
        eprintln!("skipped: pgbouncer is not installed (apt-get install pgbouncer)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("users.txt"),
        format!("\"{SUPERUSER}\" \"{SUPERUSER_PASSWORD}\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pgbouncer.ini"),
        format!(
            "[databases]\npostgres = host=127.0.0.1 port={} dbname=postgres\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = scram-sha-256\nauth_file = {}/users.txt\npool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 50\nlogfile = {}/pgbouncer.log\n",
            pg.port,
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        for f in ["", "users.txt", "pgbouncer.ini"] {
            let _ = Command::new("chown")
                .arg("postgres")
                .arg(dir.path().join(f))
                .status();
        }
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&binary);
        c
    } else {
        Command::new(&binary)
    };
    let child = cmd
        .arg(dir.path().join("pgbouncer.ini"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("pgbouncer listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some(Bouncer {
        child,
        port,
        _dir: dir,
    })
}

#[test]
fn through_pgbouncer_in_transaction_pooling_mode_two_sidecars_share_one_server_connection() {
    let Some(pg) = Pg::start_or_skip("pgbouncer") else {
        return;
    };
    let Some(b) = bouncer(&pg) else { return };
    let url = format!(
        "postgresql://{SUPERUSER}@127.0.0.1:{}/postgres?sslmode=disable",
        b.port
    );
    let setups: Vec<Setup> = (0..2)
        .map(|i| {
            setup(&url_table(
                &url,
                &format!("bounced-{i}"),
                "batch_max_events = 20",
            ))
        })
        .collect();
    let sidecars: Vec<Sidecar> = setups.iter().map(|s| start(s, &pg)).collect();
    std::thread::scope(|scope| {
        for s in &setups {
            scope.spawn(move || {
                let mut w = Writer::new(&s.ledger);
                for burst in 0..10 {
                    append(&mut w, burst * 20, 20);
                    std::thread::sleep(std::time::Duration::from_millis(15));
                }
            });
        }
    });
    for (i, (s, sidecar)) in setups.iter().zip(&sidecars).enumerate() {
        sidecar.eventually("shipped through pgbouncer", || {
            central_count(&pg, &format!("bounced-{i}"), "app") == 200
        });
        assert_central_equals_file(&pg, &format!("bounced-{i}"), "app", &s.ledger);
    }
    for sidecar in sidecars {
        let log = sidecar.log_text();
        assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
        assert!(sidecar.stop().success());
    }
    // verify --postgres reads through it too (its cursor lives in one
    // transaction).
    let out = bin()
        .args(["verify", "--postgres", &url])
        .env("LEDGERTAIL_POSTGRES_PASSWORD", SUPERUSER_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}
