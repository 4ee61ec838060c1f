//! The seam between the uploader and a central store: the three things a
//! lane needs of one (read the heads, ship a group, give up leases) and
//! how a session to it is opened. [`PostgresStore`] is the one store
//! `run` and `replay` ship to; the tests also drive the lanes against an
//! in-memory store (`fleet/memory.rs`) with the same rules, so the lane's
//! decisions (equal head, fork, head past the mirror, fenced, an outcome
//! not told) are table-tested without a server.
//!
//! A store's refusals are [`PgError`]s sorted by [`ErrorKind`]: the kinds
//! are the store's vocabulary (a chain refused, fenced, the head moved, an
//! outcome unknown, unreachable), not PostgreSQL's, and the lane acts on
//! the kind alone.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::PostgresSettings;
use crate::postgres::{self, CentralHead, PgError, Shipment, Target};

/// Where an uploader ships: a source's ledgers in one central store.
pub trait CentralStore: Send {
    /// Where it is, for logs (never a password).
    fn shown(&self) -> &str;
    /// A new session, the store made ready (its schema created or
    /// migrated where it has one).
    fn open(&self) -> Result<Box<dyn CentralSession>, PgError>;
}

/// One open session to a central store.
pub trait CentralSession {
    /// The central heads of `ledgers`; a ledger never shipped is absent.
    fn read_heads(&self, ledgers: &[&str]) -> Result<HashMap<String, CentralHead>, PgError>;
    /// Ships `parts` as `shipper` in one transaction: each part's fence
    /// and expected head checked, its rows linked to the head, the lease
    /// renewed for `lease`; all of it or none. An error of kind
    /// [`ErrorKind::Unknown`](crate::postgres::ErrorKind::Unknown): the
    /// session was lost after the commit was sent, and only the heads tell.
    fn ship(&self, shipper: &str, lease: Duration, parts: &[Shipment<'_>]) -> Result<(), PgError>;
    /// Gives up `shipper`'s leases on `ledgers` (a clean stop).
    fn release(&self, ledgers: &[&str], shipper: &str) -> Result<(), PgError>;
}

/// The fleet store in PostgreSQL, as `[postgres]` configures it.
pub struct PostgresStore {
    target: Target,
    schema: String,
    source: String,
    statement_timeout: Duration,
}

impl PostgresStore {
    /// The store `cfg` names, checked before any connection (a CA file
    /// that cannot be read is said now, not at every retry).
    pub fn new(cfg: &PostgresSettings) -> Result<PostgresStore, PgError> {
        let target = cfg.target();
        target.preflight()?;
        Ok(PostgresStore {
            target,
            schema: cfg.schema.clone(),
            source: cfg.source.clone(),
            statement_timeout: cfg.statement_timeout,
        })
    }
}

impl CentralStore for PostgresStore {
    fn shown(&self) -> &str {
        self.target.shown()
    }

    fn open(&self) -> Result<Box<dyn CentralSession>, PgError> {
        let session = self.target.connect()?;
        postgres::schema::ensure_for_shipping(&session, &self.schema)?;
        Ok(Box::new(PostgresSession {
            session,
            schema: self.schema.clone(),
            source: self.source.clone(),
            statement_timeout: self.statement_timeout,
        }))
    }
}

struct PostgresSession {
    session: postgres::Session,
    schema: String,
    source: String,
    statement_timeout: Duration,
}

impl CentralSession for PostgresSession {
    fn read_heads(&self, ledgers: &[&str]) -> Result<HashMap<String, CentralHead>, PgError> {
        postgres::ship::read_heads(&self.session, &self.schema, &self.source, ledgers)
    }

    fn ship(&self, shipper: &str, lease: Duration, parts: &[Shipment<'_>]) -> Result<(), PgError> {
        postgres::ship::ship(
            &self.session,
            &postgres::ship::Group {
                schema: &self.schema,
                source: &self.source,
                shipper,
                lease,
                statement_timeout: self.statement_timeout,
                parts,
            },
        )
    }

    fn release(&self, ledgers: &[&str], shipper: &str) -> Result<(), PgError> {
        postgres::ship::release(&self.session, &self.schema, &self.source, ledgers, shipper)
    }
}
