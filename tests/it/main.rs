//! Integration tests: one binary, one shared pair of real PostgreSQL clusters.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failed unwrap is a failed test"
)]

mod support;

mod added;
mod apply;
mod cli;
mod crash;
mod ddl;
mod faults;
mod ha;
mod harness;
mod metrics;
mod observe;
mod ops;
mod pg_download;
mod recovery;
mod run;
mod schema;
mod snapshot;
mod streaming;
mod torture;
mod verify;
mod versions;
mod wire;
