//! The integration tests, one binary: each module is one subject, run
//! against the real `ledgertail` binary (and the benchmark's, the docs
//! generator's), real SQLite files, a real PostgreSQL, Go's x/mod and the
//! producer libraries. One binary links the crate and `common` once
//! instead of once per file; `cargo test --test it MODULE::` runs one
//! subject, `cargo test --test it NAME` one test.

mod common;

mod adopt;
mod adopt_apps;
mod append;
mod architecture;
mod bench_smoke;
mod check;
mod cli;
mod crash;
mod daemon;
mod docs;
mod fleet;
mod fleet_access;
mod fleet_crash;
mod fleet_trust;
mod http;
mod install;
mod mirror_file;
mod packaging;
mod parity;
mod producers;
mod properties;
mod rfc8785;
mod rotated_files;
mod scale;
mod siblings;
mod tailer;
mod tamper;
mod tlog;
mod tlog_run;
mod trust;
mod vectors;
mod verify_db;
