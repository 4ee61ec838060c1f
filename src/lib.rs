//! ledgertail: verify a hash-chained JSONL ledger and mirror it into SQLite
//! exactly once.
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod hint;
pub mod ledger;
pub mod logging;
pub mod mirror;
pub mod parity;
pub mod producer;
pub mod serve;
pub mod shipper;
pub mod tail;
pub mod telemetry;
pub mod verifier;
