//! The analysts' `jsonb` of each central payload: the view `events_json`
//! (every column of `events`, plus `payload_json`), and where that value
//! comes from. The hash is over `payload`, the exact RFC 8785 text, so the
//! `jsonb` is a convenience, and the dearest one to ingest: parsing each
//! payload into a stored copy took a COPY of the central rows from 0.59×
//! to 0.35× of a COPY of the raw lines (docs/performance.md). So the
//! table stores it only when an operator asks (`setup-postgres
//! --payload-json stored`, for stores queried on many payload fields);
//! otherwise the view parses `payload` when a row is read, and an
//! expression index on the view's expression serves a hot field.

use super::schema::{in_transaction, lock_schema};
use super::session::Session;
use super::{ident, PgError};
use tokio_postgres::types::Type;

/// Where `events_json.payload_json` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadJson {
    /// A generated column of `events`, written with each row.
    Stored,
    /// Parsed from `payload` by the view when a row is read.
    Computed,
}

impl PayloadJson {
    /// As `setup-postgres` prints it.
    pub fn describe(self) -> &'static str {
        match self {
            PayloadJson::Stored => "payload_json stored in each row of events",
            PayloadJson::Computed => "payload_json computed by the view events_json when read",
        }
    }
}

/// The view's columns before `payload_json`: the table's own.
const COLUMNS: &str = "source, ledger, seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig, file_id, file_offset, shipped_at";

/// `jsonb` cannot hold U+0000: such a payload has no copy (NULL).
const PARSED: &str = r"CASE WHEN strpos(payload, '\u0000') > 0 THEN NULL ELSE payload::jsonb END";

/// Whether `events` of `schema` stores the copy.
pub fn current(session: &Session, schema: &str) -> Result<PayloadJson, PgError> {
    let table = format!("{}.events", ident(schema));
    let rows = session.query(
        "reading whether the central table stores payload_json",
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) \
         AND attname = 'payload_json' AND NOT attisdropped)",
        &[(&table, Type::TEXT)],
    )?;
    let stored = rows
        .first()
        .is_some_and(|r| r.try_get::<_, bool>(0).unwrap_or(false));
    Ok(if stored {
        PayloadJson::Stored
    } else {
        PayloadJson::Computed
    })
}

/// Makes `events_json.payload_json` come from `want`, as the schema's
/// owner, in one transaction under the schema lock; true when it changed.
/// Storing the copy rewrites the whole table under an exclusive lock
/// (shipping waits, and the sidecars ship their backlog after); dropping
/// it is immediate, and its space is reclaimed as rows are rewritten.
pub fn set(session: &Session, schema: &str, want: PayloadJson) -> Result<bool, PgError> {
    let s = ident(schema);
    in_transaction(session, || {
        lock_schema(session, schema)?;
        if current(session, schema)? == want {
            // The view is defined in any case (a store at an earlier
            // revision has none yet).
            session.execute_fixed("defining the view events_json", &view(&s, want))?;
            return Ok(false);
        }
        let sql = match want {
            // The view stops reading the column before it goes.
            PayloadJson::Computed => format!(
                "{};\nALTER TABLE {s}.events DROP COLUMN payload_json;",
                view(&s, want)
            ),
            PayloadJson::Stored => format!(
                "SET LOCAL statement_timeout = 0;\nALTER TABLE {s}.events ADD COLUMN payload_json jsonb GENERATED ALWAYS AS ({PARSED}) STORED;\n{};",
                view(&s, want)
            ),
        };
        session.execute_fixed("changing where payload_json comes from", &sql)?;
        Ok(true)
    })
}

/// The view over `events` with `payload_json` from `how`; the same
/// columns either way, so that one replaces the other in place.
fn view(s: &str, how: PayloadJson) -> String {
    let json = match how {
        PayloadJson::Stored => "payload_json",
        PayloadJson::Computed => PARSED,
    };
    format!(
        "SET LOCAL standard_conforming_strings = on;\nCREATE OR REPLACE VIEW {s}.events_json AS SELECT {COLUMNS}, {json} AS payload_json FROM {s}.events"
    )
}
