//! ledgertail: verify a hash-chained JSONL ledger and mirror it into SQLite
//! exactly once.
pub mod ledger;
