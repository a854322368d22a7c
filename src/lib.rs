//! lsnpipe: a change-data-capture streamer that keeps a replica PostgreSQL in step with a source.
//!
//! ```text
//! source Postgres ──pgoutput slot──▶ wire (replication protocol) ──▶ pgoutput decoder (zero-copy)
//!       ──▶ transaction assembler ──▶ applier (LSN order, exactly-once) ──▶ replica Postgres
//!                                    └──▶ Prometheus metrics over HTTP (lag, throughput, health)
//! ```
//!
//! Each layer is one module: [`lsn`] owns WAL positions; further layers arrive with their issues
//! (see `DESIGN.md` in the project's shared notes).

pub mod apply;
pub mod cluster;
pub mod config;
pub mod lsn;
pub mod metrics;
pub mod ops;
pub mod pgoutput;
pub mod pipeline;
pub mod positions;
pub mod report;
pub mod sequences;
pub mod snapshot;
pub mod source;
pub mod telemetry;
pub mod verify;
pub mod wire;

pub use lsn::Lsn;
