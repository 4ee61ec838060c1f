//! One connection to the central database, with a deadline on every round
//! trip.
//!
//! A server that keeps the connection open but stops answering (a hung
//! host, a frozen disk, a SIGSTOP) never trips a server-side timer, and
//! the kernel keeps acknowledging what is sent; only the client can
//! notice. So every wait for an answer here (connecting, each statement,
//! each pipelined transaction) is bounded by [`Session::deadline`]; past
//! it the connection is given up for good ([`Session::is_closed`]) and the
//! caller connects again. The connection is driven by a current-thread
//! tokio runtime of its own, so callers stay synchronous.
//!
//! Values always travel as bound parameters (the extended protocol, with
//! unnamed statements that a pgbouncer in transaction mode passes): no
//! text of an event ever becomes SQL, whatever the server's
//! `standard_conforming_strings`.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::{ErrorKind, PgError};

/// A value bound to a `$n` of a statement, with its PostgreSQL type.
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A connection with a deadline on every round trip.
pub struct Session {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
    deadline: Duration,
    given_up: Cell<bool>,
}

impl Session {
    /// Connects with `connect` (run on the session's runtime) within
    /// `deadline`.
    pub(super) fn open<F>(
        deadline: Duration,
        connect: impl FnOnce() -> F,
    ) -> Result<Session, PgError>
    where
        F: Future<Output = Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), PgError>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                PgError::new(
                    ErrorKind::Other,
                    format!("cannot start the PostgreSQL client runtime: {e}"),
                )
            })?;
        let opened = runtime.block_on(async { tokio::time::timeout(deadline, connect()).await });
        let (client, connection) = match opened {
            Ok(result) => result?,
            Err(_) => return Err(no_answer("connecting", deadline)),
        };
        Ok(Session {
            runtime,
            client,
            connection,
            deadline,
            given_up: Cell::new(false),
        })
    }

    /// How long any one wait for the server may last.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Whether the connection is gone (dropped by the server or the
    /// network, or given up past a deadline): connect again.
    pub fn is_closed(&self) -> bool {
        self.given_up.get() || self.client.is_closed()
    }

    /// Runs statements without parameters (the simple protocol): only for
    /// SQL this program wrote whole, never with a value in it.
    pub fn execute_fixed(&self, what: &str, sql: &str) -> Result<(), PgError> {
        self.wait(what, async {
            self.client
                .batch_execute(sql)
                .await
                .map_err(PgError::from_query)
        })
    }

    /// One statement with bound parameters; its rows.
    pub fn query(&self, what: &str, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, PgError> {
        self.wait(what, async {
            self.client
                .query_typed(sql, params)
                .await
                .map_err(PgError::from_query)
        })
    }

    /// The raw client, for a pipeline built by this module's callers and
    /// run through [`Session::wait`].
    pub(super) fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    /// Waits for `work` up to the deadline; past it the connection is
    /// given up (its answers could no longer be matched to questions).
    pub(super) fn wait<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, PgError>>,
    ) -> Result<T, PgError> {
        if self.given_up.get() {
            return Err(PgError::new(
                ErrorKind::Unreachable,
                "the connection to PostgreSQL was given up after a deadline",
            ));
        }
        let deadline = self.deadline;
        match self
            .runtime
            .block_on(async { tokio::time::timeout(deadline, work).await })
        {
            Ok(result) => result,
            Err(_) => {
                self.given_up.set(true);
                self.connection.abort();
                Err(no_answer(what, deadline))
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The error of a wait that met its deadline.
fn no_answer(what: &str, deadline: Duration) -> PgError {
    let mut e = PgError::new(
        ErrorKind::Unreachable,
        format!(
            "PostgreSQL did not answer within {:.1} s ({what}); the connection is given up",
            deadline.as_secs_f64()
        ),
    );
    e.timed_out = true;
    e.hint = Some("the server or the network is hung or overloaded: check the PostgreSQL host (load, disk, locks in pg_stat_activity); the deadline is statement_timeout_secs + connect_timeout_secs under [postgres]".into());
    e
}
