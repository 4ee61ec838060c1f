//! The shipping transaction: in one transaction, its statements pipelined
//! into one round trip, `ship_begin_many` checks for each ledger of the
//! group that this role may ship its source, the fence and the head the
//! batch expects, the rows of all of them go in with one INSERT over
//! bound arrays (whose trigger checks each chain and moves each head),
//! and the transaction commits. The central
//! heads are read back with [`read_heads`], at every start, after any
//! error, and to settle a commit whose outcome the connection did not tell.

use std::time::Duration;

use tokio_postgres::types::Type;

use super::session::{Param, Session};
use super::{ident, ErrorKind, PgError};
use crate::ledger::columns::StoredEvent;

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

/// One ledger's part of a shipping transaction.
#[derive(Clone, Copy)]
pub struct Shipment<'a> {
    pub ledger: &'a str,
    /// The central head this part follows (`None`: the ledger's first).
    pub expected: Option<(u64, &'a str)>,
    /// The ledger's anchor, registered with its first batch.
    pub anchor: (u64, &'a str),
    /// Rows in seq order, the first right after `expected` (may be empty:
    /// the lease is renewed and nothing else).
    pub rows: &'a [StoredEvent],
}

/// One shipping transaction: any number of one source's ledgers, each
/// with its fence, expected head and rows, committed together or not at
/// all.
pub struct Group<'a> {
    pub schema: &'a str,
    pub source: &'a str,
    /// This sidecar's name in the fence.
    pub shipper: &'a str,
    pub lease: Duration,
    /// The server-side limit of each statement (`SET LOCAL`).
    pub statement_timeout: Duration,
    pub parts: &'a [Shipment<'a>],
}

/// The central heads of `ledgers` of one source, in one query; a ledger
/// never shipped is absent.
pub fn read_heads(
    session: &Session,
    schema: &str,
    source: &str,
    ledgers: &[&str],
) -> Result<std::collections::HashMap<String, CentralHead>, PgError> {
    let sql = format!(
        "SELECT ledger, anchor_seq, anchor_hash, head_seq, head_hash, shipper, coalesce(lease_until > now(), false) FROM {}.ledgers WHERE source = $1 AND ledger = ANY ($2)",
        ident(schema)
    );
    let names: Vec<&str> = ledgers.to_vec();
    let rows = session.query(
        "reading central heads",
        &sql,
        &[(&source, Type::TEXT), (&names, Type::TEXT_ARRAY)],
    )?;
    rows.iter()
        .map(|row| {
            let ledger: String = row.try_get(0).unwrap_or_default();
            let head = central_head(row, 1, source, &ledger)?;
            Ok((ledger, head))
        })
        .collect()
}

/// The `ledgers` row of `ledger` (`source`) read from column `at` on
/// (anchor_seq, anchor_hash, head_seq, head_hash, shipper, leased); a row
/// without an anchor is a damaged schema.
pub(super) fn central_head(
    row: &tokio_postgres::Row,
    at: usize,
    source: &str,
    ledger: &str,
) -> Result<CentralHead, PgError> {
    anchored(row, at).ok_or_else(|| {
        PgError::new(
            ErrorKind::Schema,
            format!("the central ledgers row of {ledger} ({source}) has no anchor"),
        )
    })
}

fn anchored(row: &tokio_postgres::Row, at: usize) -> Option<CentralHead> {
    let number = |i: usize| {
        row.try_get::<_, Option<i64>>(at + i)
            .ok()
            .flatten()
            .and_then(|v| u64::try_from(v).ok())
    };
    let text = |i: usize| row.try_get::<_, Option<String>>(at + i).ok().flatten();
    Some(CentralHead {
        anchor_seq: number(0)?,
        anchor_hash: text(1)?,
        head: number(2).zip(text(3)),
        shipper: text(4),
        leased: row.try_get::<_, bool>(at + 5).unwrap_or(false),
    })
}

/// Ships `g` in one transaction, its statements pipelined (one round
/// trip). `Ok` means committed; an error of kind [`ErrorKind::Unknown`]
/// means the connection was lost after the transaction was sent, and
/// only [`read_heads`] tells whether it committed.
pub fn ship(session: &Session, g: &Group<'_>) -> Result<(), PgError> {
    let columns = Columns::of(g)?;
    let s = ident(g.schema);
    // Timeouts are SET LOCAL, per transaction: nothing of the session is
    // relied on (a pgbouncer in transaction mode hands out any server
    // connection). Only numbers this program computed are in this text.
    let ms = g.statement_timeout.as_millis().clamp(1, i32::MAX as u128);
    let begin = format!("BEGIN;SET LOCAL statement_timeout = {ms};SET LOCAL lock_timeout = {ms}");
    let fence = format!(
        "SELECT {s}.ship_begin_many($1::text, $2::text, $3::int4, $4::text[], $5::int8[], $6::text[], $7::int8[], $8::text[])"
    );
    let insert = format!(
        "INSERT INTO {s}.events (source,ledger,seq,id,ts,type,payload,extra,prev_hash,hash,key_id,sig,file_id,file_offset) \
         SELECT $1::text, * FROM unnest($2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::int8[])"
    );
    let lease = g.lease.as_secs().clamp(1, i32::MAX as u64) as i32;
    let c = &columns;
    let fence_params: [Param<'_>; 8] = [
        (&g.source, Type::TEXT),
        (&g.shipper, Type::TEXT),
        (&lease, Type::INT4),
        (&c.part_ledger, Type::TEXT_ARRAY),
        (&c.part_head_seq, Type::INT8_ARRAY),
        (&c.part_head_hash, Type::TEXT_ARRAY),
        (&c.part_anchor_seq, Type::INT8_ARRAY),
        (&c.part_anchor_hash, Type::TEXT_ARRAY),
    ];
    let row_params: [Param<'_>; 14] = [
        (&g.source, Type::TEXT),
        (&c.ledger, Type::TEXT_ARRAY),
        (&c.seq, Type::INT8_ARRAY),
        (&c.id, Type::TEXT_ARRAY),
        (&c.ts, Type::TEXT_ARRAY),
        (&c.event_type, Type::TEXT_ARRAY),
        (&c.payload, Type::TEXT_ARRAY),
        (&c.extra, Type::TEXT_ARRAY),
        (&c.prev_hash, Type::TEXT_ARRAY),
        (&c.hash, Type::TEXT_ARRAY),
        (&c.key_id, Type::TEXT_ARRAY),
        (&c.sig, Type::TEXT_ARRAY),
        (&c.file_id, Type::TEXT_ARRAY),
        (&c.file_offset, Type::INT8_ARRAY),
    ];
    let client = session.client();
    let has_rows = !c.seq.is_empty();
    let sent = session.wait("a shipping transaction", async {
        let (a, b, d, e) = tokio::join!(
            client.batch_execute(&begin),
            client.query_typed(&fence, &fence_params),
            async {
                if has_rows {
                    client.query_typed(&insert, &row_params).await.map(|_| ())
                } else {
                    Ok(())
                }
            },
            client.batch_execute("COMMIT"),
        );
        // The first error is the cause; those after it are the aborted
        // transaction's (and COMMIT of an aborted one rolls it back).
        a.and(b.map(|_| ()))
            .and(d)
            .and(e)
            .map_err(PgError::from_query)
    });
    match sent {
        Ok(()) => Ok(()),
        Err(mut err) => {
            if err.kind == ErrorKind::Unreachable && session.is_closed() {
                err.kind = ErrorKind::Unknown;
            } else if !session.is_closed() {
                // Whatever was pipelined, nothing of it stays open.
                let _ = session.execute_fixed("rolling back", "ROLLBACK");
            }
            Err(err)
        }
    }
}

/// A group's values, column by column, as the statements bind them.
#[derive(Default)]
struct Columns<'a> {
    part_ledger: Vec<&'a str>,
    part_head_seq: Vec<Option<i64>>,
    part_head_hash: Vec<Option<&'a str>>,
    part_anchor_seq: Vec<i64>,
    part_anchor_hash: Vec<&'a str>,
    ledger: Vec<&'a str>,
    seq: Vec<i64>,
    id: Vec<Option<&'a str>>,
    ts: Vec<&'a str>,
    event_type: Vec<&'a str>,
    payload: Vec<&'a str>,
    extra: Vec<Option<&'a str>>,
    prev_hash: Vec<Option<&'a str>>,
    hash: Vec<&'a str>,
    key_id: Vec<Option<&'a str>>,
    sig: Vec<Option<&'a str>>,
    file_id: Vec<&'a str>,
    file_offset: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// The parts in ledger order (every transaction locks ledgers in the
    /// same order, so two never wait for each other in a cycle).
    fn of(g: &Group<'a>) -> Result<Columns<'a>, PgError> {
        let mut parts: Vec<&Shipment<'a>> = g.parts.iter().collect();
        parts.sort_by_key(|p| p.ledger);
        let rows: usize = parts.iter().map(|p| p.rows.len()).sum();
        let mut c = Columns::default();
        c.reserve(rows);
        text(g.source, "the source")?;
        for p in parts {
            c.part_ledger.push(text(p.ledger, "a ledger name")?);
            c.part_head_seq
                .push(p.expected.map(|e| big(e.0)).transpose()?);
            c.part_head_hash.push(p.expected.map(|e| e.1));
            c.part_anchor_seq.push(big(p.anchor.0)?);
            c.part_anchor_hash.push(p.anchor.1);
            for r in p.rows {
                c.row(p.ledger, r)?;
            }
        }
        Ok(c)
    }

    fn reserve(&mut self, n: usize) {
        self.ledger.reserve(n);
        self.seq.reserve(n);
        self.payload.reserve(n);
    }

    fn row(&mut self, ledger: &'a str, r: &'a StoredEvent) -> Result<(), PgError> {
        let seq = r.seq;
        let col = |v: &'a str, name: &str| column(v, name, seq);
        let opt = |v: &'a Option<String>, name: &str| {
            v.as_deref().map(|v| column(v, name, seq)).transpose()
        };
        self.ledger.push(ledger);
        self.seq.push(big(seq)?);
        self.id.push(opt(&r.id, "id")?);
        self.ts.push(col(&r.ts, "ts")?);
        self.event_type.push(col(&r.event_type, "type")?);
        self.payload.push(col(&r.payload, "payload")?);
        self.extra.push(opt(&r.extra, "extra")?);
        self.prev_hash.push(opt(&r.prev_hash, "prev_hash")?);
        self.hash.push(col(&r.hash, "hash")?);
        self.key_id.push(opt(&r.key_id, "key_id")?);
        self.sig.push(opt(&r.sig, "sig")?);
        self.file_id.push(col(&r.file_id, "file_id")?);
        self.file_offset.push(big(r.file_offset)?);
        Ok(())
    }
}

/// A seq or an offset as PostgreSQL's bigint.
fn big(n: u64) -> Result<i64, PgError> {
    i64::try_from(n).map_err(|_| {
        PgError::new(
            ErrorKind::Chain,
            format!("{n} does not fit PostgreSQL's bigint: this ledger cannot be shipped past it"),
        )
    })
}

/// A name as PostgreSQL text, which cannot hold U+0000.
fn text<'a>(s: &'a str, what: &str) -> Result<&'a str, PgError> {
    if s.contains('\0') {
        return Err(PgError::new(
            ErrorKind::Other,
            format!("{what} {s:?} holds U+0000, which PostgreSQL text cannot"),
        ));
    }
    Ok(s)
}

fn column<'a>(v: &'a str, name: &str, seq: u64) -> Result<&'a str, PgError> {
    if v.contains('\0') {
        return Err(PgError::new(
            ErrorKind::Chain,
            format!("the {name} column of seq {seq} holds U+0000, which PostgreSQL text cannot hold: this ledger cannot be shipped past it"),
        ));
    }
    Ok(v)
}

/// Gives up this shipper's leases on `ledgers` (a clean stop), in one
/// statement.
pub fn release(
    session: &Session,
    schema: &str,
    source: &str,
    ledgers: &[&str],
    shipper: &str,
) -> Result<(), PgError> {
    let sql = format!(
        "SELECT {}.ship_end($1::text, l, $3::text) FROM unnest($2::text[]) AS l",
        ident(schema)
    );
    let names: Vec<&str> = ledgers.to_vec();
    session
        .query(
            "giving up the leases",
            &sql,
            &[
                (&source, Type::TEXT),
                (&names, Type::TEXT_ARRAY),
                (&shipper, Type::TEXT),
            ],
        )
        .map(|_| ())
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
            line_sha256: None,
        }
    }

    fn group<'a>(parts: &'a [Shipment<'a>]) -> Group<'a> {
        Group {
            schema: "lt",
            source: "host-a",
            shipper: "host-a/1",
            lease: Duration::from_secs(60),
            statement_timeout: Duration::from_secs(30),
            parts,
        }
    }

    #[test]
    fn a_group_binds_each_column_in_ledger_order() {
        let (a, b) = ([row(4, "{}")], [row(0, "[]"), row(1, "1")]);
        let parts = [
            Shipment {
                ledger: "zed",
                expected: Some((3, "cd")),
                anchor: (0, "ef"),
                rows: &a,
            },
            Shipment {
                ledger: "app",
                expected: None,
                anchor: (0, "ab"),
                rows: &b,
            },
        ];
        let c = Columns::of(&group(&parts)).unwrap();
        assert_eq!(c.part_ledger, ["app", "zed"]);
        assert_eq!(c.part_head_seq, [None, Some(3)]);
        assert_eq!(c.ledger, ["app", "app", "zed"]);
        assert_eq!(c.seq, [0, 1, 4]);
        assert_eq!(c.payload, ["[]", "1", "{}"]);
        assert_eq!(c.id, [Some("o'1"); 3]);
    }

    #[test]
    fn a_nul_in_a_column_is_refused_before_anything_is_sent() {
        let nul = [row(5, "\"a\u{0}\"")];
        let parts = [Shipment {
            ledger: "app",
            expected: None,
            anchor: (5, "ab"),
            rows: &nul,
        }];
        let e = Columns::of(&group(&parts)).err().unwrap();
        assert!(e.message.contains("payload column of seq 5"), "{e}");
        assert_eq!(e.kind, ErrorKind::Chain);
    }
}
