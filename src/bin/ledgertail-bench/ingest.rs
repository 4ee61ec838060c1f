//! What a central row costs the server: the same rows COPYed, each time
//! in one transaction, into tables that add one part of the central
//! `events` table at a time (the raw lines in one text column; the
//! columns alone; the primary key; the index by id; an index by (type,
//! ts), which only stores made by earlier builds have; a stored jsonb
//! copy of the payload, which only `setup-postgres --payload-json stored`
//! keeps), and into the central table itself, so that each part's share
//! of shipping is measured, not guessed.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

/// The columns a sidecar ships, in the central table's order.
const COLUMNS: &str = "source, ledger, seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset";

/// The table each step adds to: the columns, then a part at a time.
const STEPS: &[(&str, &str)] = &[
    (
        "the columns alone",
        "CREATE TABLE {t} (source text NOT NULL, ledger text NOT NULL, seq bigint NOT NULL, id text, ts text NOT NULL, type text NOT NULL, payload text NOT NULL, extra text, prev_hash text, hash text NOT NULL, key_id text, sig text, file_id text, file_offset bigint, shipped_at timestamptz NOT NULL DEFAULT now())",
    ),
    (
        "+ the primary key (source, ledger, seq)",
        "ALTER TABLE {t} ADD PRIMARY KEY (source, ledger, seq)",
    ),
    (
        "+ the index by id",
        "CREATE INDEX ON {t} (source, ledger, id) WHERE id IS NOT NULL",
    ),
    (
        "+ an index by (type, ts) (stores made by earlier builds)",
        "CREATE INDEX ON {t} (type, ts)",
    ),
    (
        "+ a stored jsonb copy of the payload (`--payload-json stored`)",
        "ALTER TABLE {t} ADD COLUMN payload_json jsonb GENERATED ALWAYS AS (CASE WHEN strpos(payload, '\\u0000') > 0 THEN NULL ELSE payload::jsonb END) STORED",
    ),
];

/// The mirror's rows of ledger `bench` as COPY text for `source`, and the
/// first row's (seq, hash): the anchor the central table registers.
pub fn rows_text(mirror: &Path, source: &str) -> (Vec<u8>, (i64, String)) {
    let db =
        rusqlite::Connection::open_with_flags(mirror, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("mirror");
    let mut text = Vec::new();
    let mut first = None;
    let mut stmt = db
        .prepare("SELECT seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset FROM events WHERE ledger = 'bench' ORDER BY seq")
        .expect("select");
    let mut rows = stmt.query([]).expect("rows");
    while let Some(r) = rows.next().expect("row") {
        let seq: i64 = r.get(0).expect("seq");
        let hash: String = r.get(7).expect("hash");
        first.get_or_insert((seq, hash));
        write!(text, "{source}\tbench\t{seq}\t").ok();
        for i in 1..=10 {
            match r.get::<_, Option<String>>(i).expect("column") {
                None => text.extend_from_slice(b"\\N"),
                Some(s) => escaped(&mut text, s.as_bytes()),
            }
            text.push(b'\t');
        }
        writeln!(text, "{}", r.get::<_, i64>(11).expect("offset")).ok();
    }
    (text, first.expect("rows to copy"))
}

/// `v` as a field of COPY's text format.
fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
}

/// The raw lines of `ledger` as COPY text (one text column each).
pub fn raw_text(ledger: &Path) -> Vec<u8> {
    let bytes = std::fs::read(ledger).expect("ledger");
    let mut text = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        escaped(&mut text, line);
        text.push(b'\n');
    }
    text
}

/// Seconds to COPY the raw lines (`text`, from [`raw_text`]) into a
/// table of one text column, in one transaction: the floor of any
/// shipper.
pub fn raw_lines(client: &mut postgres::Client, text: &[u8]) -> f64 {
    client
        .batch_execute("DROP TABLE IF EXISTS bench_raw_lines; CREATE TABLE bench_raw_lines (line text NOT NULL)")
        .expect("raw lines table");
    copy(client, "", "COPY bench_raw_lines (line) FROM STDIN", text)
}

/// Seconds to COPY `text` into each step's table (each step a table of
/// its own, with the parts of the steps before it).
pub fn parts(client: &mut postgres::Client, text: &[u8]) -> Vec<(&'static str, f64)> {
    STEPS
        .iter()
        .enumerate()
        .map(|(i, (what, _))| {
            let table = format!("bench_part_{i}");
            let made: Vec<String> = STEPS[..=i]
                .iter()
                .map(|(_, sql)| sql.replace("{t}", &table))
                .collect();
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {table}; {}", made.join(";")))
                .expect("part table");
            let secs = copy(
                client,
                "",
                &format!("COPY {table} ({COLUMNS}) FROM STDIN"),
                text,
            );
            client
                .batch_execute(&format!("DROP TABLE {table}"))
                .expect("drop part table");
            (*what, secs)
        })
        .collect()
}

/// Seconds to COPY `text` into the central table as `source` (registered
/// and leased first, as its trigger requires), in one transaction.
pub fn central(
    client: &mut postgres::Client,
    text: &[u8],
    source: &str,
    anchor: &(i64, String),
) -> f64 {
    let begin = format!(
        "SELECT ledgertail.ship_begin('{source}', 'bench', 'floor', 60, NULL, NULL, {}, '{}')",
        anchor.0, anchor.1
    );
    copy(
        client,
        &begin,
        &format!("COPY ledgertail.events ({COLUMNS}) FROM STDIN"),
        text,
    )
}

/// Seconds for one transaction: `before` (SQL, may be empty), then the
/// COPY of `text`, then the commit.
fn copy(client: &mut postgres::Client, before: &str, sql: &str, text: &[u8]) -> f64 {
    settle(client);
    let started = Instant::now();
    let mut tx = client.transaction().expect("begin");
    if !before.is_empty() {
        tx.batch_execute(before).expect("before the copy");
    }
    let mut w = tx.copy_in(sql).expect("copy");
    w.write_all(text).expect("copy rows");
    w.finish().expect("copy end");
    tx.commit().expect("commit");
    started.elapsed().as_secs_f64()
}

/// Writes out what earlier steps left in the server's buffers and WAL,
/// before a timed step: a million rows leave gigabytes that the next
/// step would otherwise pay for (measured: a raw-line COPY right after
/// two shipping runs took 19.8 s, against 5.0 s from a quiet server).
pub fn settle(client: &mut postgres::Client) {
    client.batch_execute("CHECKPOINT").expect("checkpoint");
}
