//! Reading the central store back: its ledgers, the ledgers its `events`
//! hold that `ledgers` does not know, and each ledger's rows in seq order,
//! a page at a time (bounded memory however many rows), for `verify
//! --postgres` and `status`.

use tokio_postgres::types::Type;

use super::session::Session;
use super::ship::{central_head, CentralHead};
use super::{ident, PgError};
use crate::ledger::columns::StoredEvent;

/// Rows fetched per page.
const PAGE: i64 = 5000;

/// Every central ledger, sorted by (source, ledger), narrowed to `source`
/// and `ledger` when given.
pub fn ledgers(
    session: &Session,
    schema: &str,
    source: Option<&str>,
    ledger: Option<&str>,
) -> Result<Vec<(String, String, CentralHead)>, PgError> {
    let sql = format!(
        "SELECT source, ledger, anchor_seq, anchor_hash, head_seq, head_hash, shipper, coalesce(lease_until > now(), false) \
         FROM {}.ledgers WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR ledger = $2) ORDER BY source, ledger",
        ident(schema)
    );
    let rows = session.query(
        "reading the central ledgers",
        &sql,
        &[(&source, Type::TEXT), (&ledger, Type::TEXT)],
    )?;
    rows.iter()
        .map(|row| {
            let name = |i| row.try_get::<_, String>(i).unwrap_or_default();
            let (source, ledger) = (name(0), name(1));
            let head = central_head(row, 2, &source, &ledger)?;
            Ok((source, ledger, head))
        })
        .collect()
}

/// A `(source, ledger)` that has rows in `events` but no `ledgers` row
/// (only a hand that bypassed the triggers puts one there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unregistered {
    pub source: String,
    pub ledger: String,
    pub rows: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Every `(source, ledger)` of `events` with no `ledgers` row, narrowed as
/// [`ledgers`] is. The pairs are found by skipping through the primary
/// key (one index probe per pair, not a scan of every row).
pub fn unregistered(
    session: &Session,
    schema: &str,
    source: Option<&str>,
    ledger: Option<&str>,
) -> Result<Vec<Unregistered>, PgError> {
    let s = ident(schema);
    let sql = format!(
        "WITH RECURSIVE pairs AS (
             (SELECT e.source, e.ledger FROM {s}.events e ORDER BY e.source, e.ledger LIMIT 1)
             UNION ALL
             SELECT n.source, n.ledger FROM pairs p, LATERAL (
                 SELECT e.source, e.ledger FROM {s}.events e
                  WHERE (e.source, e.ledger) > (p.source, p.ledger)
                  ORDER BY e.source, e.ledger LIMIT 1) n)
         SELECT p.source, p.ledger, c.n, c.lo, c.hi FROM pairs p,
             LATERAL (SELECT count(*) AS n, min(e.seq) AS lo, max(e.seq) AS hi FROM {s}.events e
                       WHERE e.source = p.source AND e.ledger = p.ledger) c
          WHERE NOT EXISTS (SELECT 1 FROM {s}.ledgers l WHERE l.source = p.source AND l.ledger = p.ledger)
            AND ($1::text IS NULL OR p.source = $1) AND ($2::text IS NULL OR p.ledger = $2)
          ORDER BY p.source, p.ledger"
    );
    let rows = session.query(
        "looking for rows of unregistered ledgers",
        &sql,
        &[(&source, Type::TEXT), (&ledger, Type::TEXT)],
    )?;
    Ok(rows
        .iter()
        .map(|row| {
            let number = |i| {
                row.try_get::<_, Option<i64>>(i)
                    .ok()
                    .flatten()
                    .map_or(0, |v| v.max(0) as u64)
            };
            Unregistered {
                source: row.try_get(0).unwrap_or_default(),
                ledger: row.try_get(1).unwrap_or_default(),
                rows: number(2),
                first_seq: number(3),
                last_seq: number(4),
            }
        })
        .collect())
}

/// Visits every central row of one ledger in seq order, in one read-only
/// snapshot; `visit` returning false stops early.
pub fn for_each_row(
    session: &Session,
    schema: &str,
    source: &str,
    ledger: &str,
    mut visit: impl FnMut(StoredEvent) -> bool,
) -> Result<(), PgError> {
    let select = format!(
        "SELECT seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset FROM {}.events \
         WHERE source = $1 AND ledger = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        ident(schema)
    );
    session.execute_fixed(
        "starting a read-only snapshot",
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    )?;
    let walked = (|| {
        let mut after = -1i64;
        loop {
            let page = session.query(
                "reading central rows",
                &select,
                &[
                    (&source, Type::TEXT),
                    (&ledger, Type::TEXT),
                    (&after, Type::INT8),
                    (&PAGE, Type::INT8),
                ],
            )?;
            for row in &page {
                let event = stored(row);
                if event.fault.is_some() {
                    // A seq that cannot be read ends the walk here: the
                    // page cannot be continued past it.
                    visit(event);
                    return Ok(());
                }
                after = event.seq as i64;
                if !visit(event) {
                    return Ok(());
                }
            }
            if (page.len() as i64) < PAGE {
                return Ok(());
            }
        }
    })();
    let ended = session.execute_fixed("ending a read-only snapshot", "COMMIT");
    walked.and(ended)
}

fn stored(row: &tokio_postgres::Row) -> StoredEvent {
    use crate::ledger::columns::Cell;
    let found = StoredEvent::from_cells(|i| -> Result<Cell, std::convert::Infallible> {
        Ok(match i {
            // seq and file_offset are bigint; file_id and file_offset are
            // a host's own bookkeeping, which the central table may leave
            // NULL.
            0 => row.try_get::<_, i64>(i).map_or(Cell::Null, Cell::Integer),
            11 => Cell::Integer(
                row.try_get::<_, Option<i64>>(i)
                    .ok()
                    .flatten()
                    .map_or(0, |v| v.max(0)),
            ),
            _ => match row.try_get::<_, Option<String>>(i) {
                Ok(Some(t)) => Cell::Text(t),
                Ok(None) if i == 10 => Cell::Text(String::new()),
                Ok(None) => Cell::Null,
                Err(_) => Cell::Other("a non-text value"),
            },
        })
    });
    match found {
        Ok(event) => event,
        Err(never) => match never {},
    }
}
