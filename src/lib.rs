//! ledgertail: verify a hash-chained JSONL ledger and mirror it into SQLite
//! exactly once, then into PostgreSQL and a verifiable log.
//!
//! # Layout
//!
//! `docs/ARCHITECTURE.md` has the whole map, the journey of one line and
//! the invariants; in short, by layer (each uses only the ones above it):
//!
//! - core: [`ledger`], what a line means; pure, no I/O.
//! - resources, each the only owner of one: [`tail`] the ledger files,
//!   [`mirror`] SQLite, [`postgres`] PostgreSQL.
//! - engines: [`verifier`] the pool that examines lines; [`shipper`] the
//!   loop tail → judge → commit of one ledger (`replay` and `run`);
//!   [`parity`] the files and rows checked against the mirror;
//!   [`fleet`] the uploader into PostgreSQL; [`tlog`] signed checkpoints,
//!   witnesses and proofs.
//! - runtime: [`daemon`] (`run`: scheduling, the runner, reloads, the
//!   stop), [`serve`] the HTTP endpoints, [`telemetry`] metrics and
//!   status, [`logging`].
//! - surface: [`cli`] flags, [`config`] settings, [`commands`] one per
//!   subcommand, [`producer`] writing ledgers, [`keyfile`] the signing
//!   keys of producers and of the log.
//! - glue: [`hint`] the operator's next step for each error, [`tls`] where
//!   TLS trust comes from.
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod fleet;
pub mod hint;
pub mod keyfile;
pub mod ledger;
pub mod logging;
pub mod mirror;
pub mod parity;
pub mod postgres;
pub mod producer;
pub mod serve;
pub mod shipper;
pub mod tail;
pub mod telemetry;
pub mod tlog;
pub mod tls;
pub mod verifier;
