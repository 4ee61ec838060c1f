//! The fleet store (contract §6): the ONLY module that speaks PostgreSQL.
//!
//! [`connect`] reaches the server (connection strings, the password from
//! the environment, TLS as libpq's `sslmode` means it), [`schema`] creates
//! and migrates the central tables and the functions and triggers through
//! which the database itself enforces each chain and each role's sources,
//! [`ship`] is the shipping transaction (grant, fence, expected heads,
//! rows, new heads: one transaction for a group of ledgers) and the
//! reading of central heads, and [`rows`] reads central rows back for
//! `verify --postgres`.
//!
//! [`session`] is the connection: a deadline on every round trip, and
//! values only ever as bound parameters (unnamed statements of the
//! extended protocol, which a pgbouncer in transaction pooling mode
//! passes). No text of an event is ever part of SQL, so no server setting
//! (`standard_conforming_strings = off`) can make one run.

pub mod connect;
pub mod payload_json;
pub mod rows;
pub mod schema;
pub mod session;
pub mod ship;

pub use connect::{Target, TargetError, Timeouts, TlsMode, PASSWORD_ENV};
pub use session::Session;
pub use ship::{CentralHead, Shipment};

/// What went wrong, sorted by what the caller does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server could not be reached (refused, unknown host, timeout,
    /// the connection dropped): try again later.
    Unreachable,
    /// The connection dropped while a transaction was being committed:
    /// whether it committed is known only by reading the central head.
    Unknown,
    /// The server refused the credentials.
    Authentication,
    /// The TLS handshake failed or could not be set up.
    Tls,
    /// The role lacks a privilege it needs.
    Privilege,
    /// The central store refused rows that do not extend its chain
    /// (a gap, a broken link, an anchor that differs).
    Chain,
    /// Another sidecar holds the lease on this `(source, ledger)`.
    Fenced,
    /// The central head is not the one the batch expected.
    HeadMoved,
    /// The central schema is missing, newer than this build, or damaged.
    Schema,
    /// Anything else the server said.
    Other,
}

/// An error from the fleet store, with what the operator can do about it.
#[derive(Debug, Clone)]
pub struct PgError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    /// The server did not answer within the round-trip deadline.
    pub timed_out: bool,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PgError {}

/// SQLSTATEs the central triggers raise (class LT: ours).
pub(crate) const CHAIN_REFUSED: &str = "LT001";
pub(crate) const FENCED: &str = "LT002";
pub(crate) const HEAD_MOVED: &str = "LT003";

impl PgError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> PgError {
        PgError {
            kind,
            message: message.into(),
            hint: None,
            timed_out: false,
        }
    }

    fn with_hint(mut self, hint: impl Into<String>) -> PgError {
        self.hint = Some(hint.into());
        self
    }

    pub(crate) fn tls_setup(message: String) -> PgError {
        PgError::new(ErrorKind::Tls, message)
            .with_hint("ca_file under [postgres] must be a PEM file holding the CA certificate that signed the server's")
    }

    /// Whether trying again later can help (the server or the network),
    /// as opposed to something an operator must change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unreachable | ErrorKind::Unknown | ErrorKind::HeadMoved | ErrorKind::Fenced
        )
    }

    /// An error met while connecting to `target`.
    pub(crate) fn from_connect(e: tokio_postgres::Error, target: &Target) -> PgError {
        let mut err = PgError::from_query(e);
        err.message = format!(
            "could not connect to PostgreSQL at {}: {}",
            target.shown(),
            err.message
        );
        // tokio-postgres says only "password missing" when the server asks
        // for one and none was given: on a healthy host that is a shell
        // without the sidecar's environment.
        if !target.has_password() && err.message.contains("password missing") {
            err.kind = ErrorKind::Authentication;
            err.message = format!(
                "could not connect to PostgreSQL at {}: the server asks role {} for a password and none is set: {} is not set in this environment and the connection string has none",
                target.shown(),
                target.user(),
                connect::PASSWORD_ENV
            );
            err.hint = Some(format!(
                "export {} in this shell (the sidecar's service has it from its own environment: an EnvironmentFile, a Kubernetes Secret)",
                connect::PASSWORD_ENV
            ));
            return err;
        }
        if err.kind == ErrorKind::Authentication && err.hint.is_none() {
            err.hint = Some(format!(
                "check the password of role {} (LEDGERTAIL_POSTGRES_PASSWORD, or the connection string) and pg_hba.conf",
                target.user()
            ));
        }
        if err.kind == ErrorKind::Tls && target.tls_mode() == TlsMode::VerifyFull {
            err.hint = Some("the server's certificate must be signed by ca_file and name the host of the connection string (a DNS or IP subject alternative name)".into());
        }
        err
    }

    /// An error from a statement (or from connecting: the same sorting).
    pub(crate) fn from_query(e: tokio_postgres::Error) -> PgError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let mut message = db.message().to_owned();
            if let Some(detail) = db.detail() {
                message = format!("{message} ({detail})");
            }
            let kind = match code {
                "28P01" | "28000" => ErrorKind::Authentication,
                "42501" => ErrorKind::Privilege,
                CHAIN_REFUSED => ErrorKind::Chain,
                FENCED => ErrorKind::Fenced,
                HEAD_MOVED => ErrorKind::HeadMoved,
                "3F000" | "42P01" | "42883" => ErrorKind::Schema,
                // Shutting down, too many connections, a deadlock, a
                // serialization failure, a statement timeout: the server
                // is there and may take it later.
                c if c.starts_with("57") || c.starts_with("53") || c.starts_with("08") => {
                    ErrorKind::Unreachable
                }
                "40001" | "40P01" => ErrorKind::Unreachable,
                _ => ErrorKind::Other,
            };
            let err = PgError::new(kind, format!("{message} [SQLSTATE {code}]"));
            return match (kind, db.hint()) {
                (_, Some(h)) => err.with_hint(h.to_owned()),
                (ErrorKind::Privilege, None) => err.with_hint(
                    "the ingest role needs the grants the fleet guide (docs/fleet.md) lists (USAGE on the schema, SELECT and INSERT on its tables, EXECUTE on its functions)",
                ),
                (ErrorKind::Schema, None) => err.with_hint(
                    "the central schema is missing or incomplete: run ledgertail once with a role that may create it (the fleet guide, docs/fleet.md), or check `schema` under [postgres]",
                ),
                _ => err,
            };
        }
        let top = e.to_string();
        let chain = causes(&e);
        let text = if chain.is_empty() {
            top.clone()
        } else {
            format!("{top}: {chain}")
        };
        if top.starts_with("error performing TLS handshake") || chain.contains("certificate") {
            return PgError::new(ErrorKind::Tls, text).with_hint(
                "check sslmode and ca_file under [postgres]; the server must have ssl = on for sslmode=require and above",
            );
        }
        if chain.contains("server does not support TLS") {
            return PgError::new(ErrorKind::Tls, text)
                .with_hint("the server has ssl = off: turn it on, or set sslmode=disable (only on a trusted network)");
        }
        if chain.contains("lookup address") || chain.contains("Name or service not known") {
            return PgError::new(ErrorKind::Unreachable, text)
                .with_hint("the host name in the connection string does not resolve: check it, and the DNS of this host");
        }
        if chain.contains("refused") {
            return PgError::new(ErrorKind::Unreachable, text)
                .with_hint("nothing listens at that host and port: is PostgreSQL (or pgbouncer) running, and listen_addresses set?");
        }
        if top.starts_with("authentication error") || chain.contains("password") {
            return PgError::new(ErrorKind::Authentication, text);
        }
        PgError::new(ErrorKind::Unreachable, text)
    }
}

/// The causes under an error, joined.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push(text);
        }
        next = cause.source();
    }
    out.join(": ")
}

/// A quoted SQL identifier: the schema name, which the configuration
/// holds to a plain lower-case name (an identifier cannot be bound).
pub(crate) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }
}
