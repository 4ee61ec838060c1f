//! Reading the central store back: its ledgers, and each ledger's rows in
//! seq order through a cursor (bounded memory however many rows), for
//! `verify --postgres` and `status`.

use super::ship::CentralHead;
use super::{ident, literal, ErrorKind, PgError};
use crate::mirror::StoredEvent;

/// Rows fetched from the cursor at a time.
const FETCH: usize = 5000;

/// Every central ledger, sorted by (source, ledger), narrowed to `source`
/// and `ledger` when given.
pub fn ledgers(
    client: &mut postgres::Client,
    schema: &str,
    source: Option<&str>,
    ledger: Option<&str>,
) -> Result<Vec<(String, String, CentralHead)>, PgError> {
    let mut sql = format!(
        "SELECT source, ledger, anchor_seq, anchor_hash, head_seq, head_hash, shipper, coalesce(lease_until > now(), false) FROM {}.ledgers WHERE true",
        ident(schema)
    );
    for (column, value) in [("source", source), ("ledger", ledger)] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = "));
            literal(&mut sql, v)
                .ok_or_else(|| PgError::new(ErrorKind::Other, format!("{column} holds U+0000")))?;
        }
    }
    sql.push_str(" ORDER BY source, ledger");
    let mut out = Vec::new();
    for m in client.simple_query(&sql).map_err(PgError::from_query)? {
        if let postgres::SimpleQueryMessage::Row(row) = m {
            let text = |i: usize| row.get(i).map(str::to_owned);
            let number = |i: usize| row.get(i).and_then(|v| v.parse::<u64>().ok());
            out.push((
                text(0).unwrap_or_default(),
                text(1).unwrap_or_default(),
                CentralHead {
                    anchor_seq: number(2).unwrap_or(0),
                    anchor_hash: text(3).unwrap_or_default(),
                    head: number(4).zip(text(5)),
                    shipper: text(6),
                    leased: row.get(7) == Some("t"),
                },
            ));
        }
    }
    Ok(out)
}

/// Visits every central row of one ledger in seq order, in one read-only
/// snapshot; `visit` returning false stops early.
pub fn for_each_row(
    client: &mut postgres::Client,
    schema: &str,
    source: &str,
    ledger: &str,
    mut visit: impl FnMut(StoredEvent) -> bool,
) -> Result<(), PgError> {
    let mut select = format!(
        "SELECT seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset FROM {}.events WHERE source = ",
        ident(schema)
    );
    let nul = || PgError::new(ErrorKind::Other, "a name holds U+0000");
    literal(&mut select, source).ok_or_else(nul)?;
    select.push_str(" AND ledger = ");
    literal(&mut select, ledger).ok_or_else(nul)?;
    select.push_str(" ORDER BY seq");
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(PgError::from_query)?;
    tx.batch_execute(&format!("DECLARE rows NO SCROLL CURSOR FOR {select}"))
        .map_err(PgError::from_query)?;
    loop {
        let messages = tx
            .simple_query(&format!("FETCH {FETCH} FROM rows"))
            .map_err(PgError::from_query)?;
        let mut got = 0;
        for m in messages {
            if let postgres::SimpleQueryMessage::Row(row) = m {
                got += 1;
                if !visit(stored(&row)) {
                    return tx.commit().map_err(PgError::from_query);
                }
            }
        }
        if got < FETCH {
            break;
        }
    }
    tx.commit().map_err(PgError::from_query)
}

fn stored(row: &postgres::SimpleQueryRow) -> StoredEvent {
    let text = |i: usize| row.get(i).map(str::to_owned);
    let mut fault = None;
    let seq = match row.get(0).and_then(|v| v.parse::<u64>().ok()) {
        Some(s) => s,
        None => {
            fault = Some("the seq column is not a non-negative integer".to_owned());
            u64::MAX
        }
    };
    StoredEvent {
        fault,
        seq,
        id: text(1),
        ts: text(2).unwrap_or_default(),
        event_type: text(3).unwrap_or_default(),
        payload: text(4).unwrap_or_default(),
        extra: text(5),
        prev_hash: text(6),
        hash: text(7).unwrap_or_default(),
        key_id: text(8),
        sig: text(9),
        file_id: text(10).unwrap_or_default(),
        file_offset: row.get(11).and_then(|v| v.parse().ok()).unwrap_or(0),
    }
}
