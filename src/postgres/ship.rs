//! The shipping transaction (contract §6): in one transaction, one round
//! trip, `ship_begin` checks the fence and the head the batch expects,
//! the rows go in with one multi-row INSERT (whose trigger checks the
//! chain and moves the head), and the transaction commits. The central
//! head is read back with [`read_head`], at every start, after any error,
//! and to settle a commit whose outcome the connection did not tell.

use std::fmt::Write as _;
use std::time::Duration;

use super::{ident, literal, ErrorKind, PgError};
use crate::mirror::StoredEvent;

/// A ledger's row in the central `ledgers` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralHead {
    pub anchor_seq: u64,
    pub anchor_hash: String,
    /// The last shipped row (seq, hash); `None` before the first batch.
    pub head: Option<(u64, String)>,
    /// Who shipped last, and whether that shipper's lease still runs.
    pub shipper: Option<String>,
    pub leased: bool,
}

/// One batch of one ledger, ready to go.
pub struct Shipment<'a> {
    pub schema: &'a str,
    pub source: &'a str,
    pub ledger: &'a str,
    /// This sidecar's name in the fence.
    pub shipper: &'a str,
    pub lease: Duration,
    /// The central head this batch follows (`None`: the ledger's first).
    pub expected: Option<(u64, &'a str)>,
    /// The ledger's anchor, registered with its first batch.
    pub anchor: (u64, &'a str),
    /// Rows in seq order, the first right after `expected` (may be empty:
    /// the lease is renewed and nothing else).
    pub rows: &'a [StoredEvent],
}

/// The central head of one ledger, `None` when it was never shipped.
pub fn read_head(
    client: &mut postgres::Client,
    schema: &str,
    source: &str,
    ledger: &str,
) -> Result<Option<CentralHead>, PgError> {
    let mut sql = format!(
        "SELECT anchor_seq, anchor_hash, head_seq, head_hash, shipper, coalesce(lease_until > now(), false) FROM {}.ledgers WHERE source = ",
        ident(schema)
    );
    key(&mut sql, source)?;
    sql.push_str(" AND ledger = ");
    key(&mut sql, ledger)?;
    let messages = client.simple_query(&sql).map_err(PgError::from_query)?;
    for m in messages {
        if let postgres::SimpleQueryMessage::Row(row) = m {
            let number = |i: usize| row.get(i).and_then(|v| v.parse::<u64>().ok());
            let text = |i: usize| row.get(i).map(str::to_owned);
            let (Some(anchor_seq), Some(anchor_hash)) = (number(0), text(1)) else {
                return Err(PgError::new(
                    ErrorKind::Schema,
                    format!("the central ledgers row of {ledger} ({source}) has no anchor"),
                ));
            };
            return Ok(Some(CentralHead {
                anchor_seq,
                anchor_hash,
                head: number(2).zip(text(3)),
                shipper: text(4),
                leased: row.get(5) == Some("t"),
            }));
        }
    }
    Ok(None)
}

/// Ships `s` in one transaction. `Ok` means committed; an error of kind
/// [`ErrorKind::Unknown`] means the connection dropped after the batch
/// was sent, and only [`read_head`] tells whether it committed.
pub fn ship(
    client: &mut postgres::Client,
    statement_timeout: Duration,
    s: &Shipment<'_>,
) -> Result<(), PgError> {
    let sql = statement(statement_timeout, s)?;
    match client.batch_execute(&sql) {
        Ok(()) => Ok(()),
        Err(e) => {
            let mut err = PgError::from_query(e);
            if err.kind == ErrorKind::Unreachable && client.is_closed() {
                err.kind = ErrorKind::Unknown;
            } else if !client.is_closed() {
                // The failed statement left the transaction aborted.
                let _ = client.batch_execute("ROLLBACK");
            }
            Err(err)
        }
    }
}

/// The SQL of one shipping transaction.
pub(crate) fn statement(statement_timeout: Duration, s: &Shipment<'_>) -> Result<String, PgError> {
    let schema = ident(s.schema);
    let bytes: usize = s
        .rows
        .iter()
        .map(|r| r.payload.len() + r.extra.as_ref().map_or(0, String::len) + 400)
        .sum();
    let mut sql = String::with_capacity(bytes + 512);
    // Timeouts are SET LOCAL, per transaction: nothing of the session is
    // relied on (a pgbouncer in transaction mode hands out any server
    // connection).
    let _ = write!(
        sql,
        "BEGIN;SET LOCAL standard_conforming_strings = on;SET LOCAL statement_timeout = {};SET LOCAL lock_timeout = {};SELECT {schema}.ship_begin(",
        statement_timeout.as_millis().max(1),
        statement_timeout.as_millis().max(1),
    );
    key(&mut sql, s.source)?;
    sql.push(',');
    key(&mut sql, s.ledger)?;
    sql.push(',');
    key(&mut sql, s.shipper)?;
    let _ = write!(sql, ",{},", s.lease.as_secs().clamp(1, i32::MAX as u64));
    match s.expected {
        Some((seq, hash)) => {
            let _ = write!(sql, "{seq},");
            key(&mut sql, hash)?;
        }
        None => sql.push_str("NULL,NULL"),
    }
    let _ = write!(sql, ",{},", s.anchor.0);
    key(&mut sql, s.anchor.1)?;
    sql.push_str(");");
    if !s.rows.is_empty() {
        let _ = write!(
            sql,
            "INSERT INTO {schema}.events (source,ledger,seq,id,ts,type,payload,extra,prev_hash,hash,key_id,sig,file_id,file_offset) VALUES "
        );
        let mut prefix = String::from("(");
        key(&mut prefix, s.source)?;
        prefix.push(',');
        key(&mut prefix, s.ledger)?;
        for (i, r) in s.rows.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&prefix);
            let _ = write!(sql, ",{},", r.seq);
            let seq = r.seq;
            column(&mut sql, r.id.as_deref(), "id", seq)?;
            sql.push(',');
            column(&mut sql, Some(&r.ts), "ts", seq)?;
            sql.push(',');
            column(&mut sql, Some(&r.event_type), "type", seq)?;
            sql.push(',');
            column(&mut sql, Some(&r.payload), "payload", seq)?;
            sql.push(',');
            column(&mut sql, r.extra.as_deref(), "extra", seq)?;
            sql.push(',');
            column(&mut sql, r.prev_hash.as_deref(), "prev_hash", seq)?;
            sql.push(',');
            column(&mut sql, Some(&r.hash), "hash", seq)?;
            sql.push(',');
            column(&mut sql, r.key_id.as_deref(), "key_id", seq)?;
            sql.push(',');
            column(&mut sql, r.sig.as_deref(), "sig", seq)?;
            sql.push(',');
            column(&mut sql, Some(&r.file_id), "file_id", seq)?;
            let _ = write!(sql, ",{})", r.file_offset);
        }
        sql.push(';');
    }
    sql.push_str("COMMIT;");
    Ok(sql)
}

fn key(sql: &mut String, s: &str) -> Result<(), PgError> {
    literal(sql, s).ok_or_else(|| {
        PgError::new(
            ErrorKind::Other,
            format!("{s:?} holds U+0000, which PostgreSQL text cannot"),
        )
    })
}

fn column(sql: &mut String, v: Option<&str>, name: &str, seq: u64) -> Result<(), PgError> {
    match v {
        None => {
            sql.push_str("NULL");
            Ok(())
        }
        Some(v) => literal(sql, v).ok_or_else(|| {
            PgError::new(
                ErrorKind::Chain,
                format!("the {name} column of seq {seq} holds U+0000, which PostgreSQL text cannot hold: this ledger cannot be shipped past it"),
            )
        }),
    }
}

/// Gives up this shipper's lease on a ledger (a clean stop).
pub fn release(
    client: &mut postgres::Client,
    schema: &str,
    source: &str,
    ledger: &str,
    shipper: &str,
) -> Result<(), PgError> {
    let mut sql = format!("SELECT {}.ship_end(", ident(schema));
    key(&mut sql, source)?;
    sql.push(',');
    key(&mut sql, ledger)?;
    sql.push(',');
    key(&mut sql, shipper)?;
    sql.push(')');
    client.batch_execute(&sql).map_err(PgError::from_query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, payload: &str) -> StoredEvent {
        StoredEvent {
            fault: None,
            seq,
            id: Some("o'1".into()),
            ts: "2026-01-01T00:00:00Z".into(),
            event_type: "t".into(),
            payload: payload.into(),
            extra: None,
            prev_hash: None,
            hash: "ab".into(),
            key_id: None,
            sig: None,
            file_id: "1:2".into(),
            file_offset: 7,
        }
    }

    #[test]
    fn one_transaction_with_literals() {
        let rows = [row(4, "{\"a\":\"it's\"}")];
        let s = Shipment {
            schema: "lt",
            source: "host-a",
            ledger: "app",
            shipper: "host-a/1",
            lease: Duration::from_secs(60),
            expected: Some((3, "cd")),
            anchor: (0, "ef"),
            rows: &rows,
        };
        let sql = statement(Duration::from_secs(30), &s).unwrap();
        assert!(sql.starts_with("BEGIN;"), "{sql}");
        assert!(sql.ends_with("COMMIT;"), "{sql}");
        assert!(
            sql.contains("\"lt\".ship_begin('host-a','app','host-a/1',60,3,'cd',0,'ef');"),
            "{sql}"
        );
        assert!(sql.contains("('host-a','app',4,'o''1','2026-01-01T00:00:00Z','t','{\"a\":\"it''s\"}',NULL,NULL,'ab',NULL,NULL,'1:2',7)"), "{sql}");
        let nul = [row(5, "\"a\u{0}\"")];
        let e = statement(Duration::from_secs(1), &Shipment { rows: &nul, ..s }).unwrap_err();
        assert!(e.message.contains("payload column of seq 5"), "{e}");
    }
}
