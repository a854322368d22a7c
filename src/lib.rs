//! lsnpipe: a change-data-capture streamer that keeps a replica PostgreSQL in step with a source.
//!
//! ```text
//! source Postgres ──pgoutput slot──▶ wire (replication protocol) ──▶ pgoutput (sans-IO decoder)
//!       ──▶ pipeline (one session: stream → decode → apply, reconnects)
//!       ──▶ apply (planner, exactly-once progress row, group commit) ──▶ replica Postgres
//!       └──▶ telemetry ──▶ metrics (Prometheus over HTTP: lag, throughput, health)
//! ```
//!
//! One module per layer: [`wire`] speaks the protocol (its CopyData frames sans-IO, like the
//! decoder), [`pgoutput`] decodes without I/O, [`positions`] owns all LSN bookkeeping of a
//! stream and the skip rule, [`source`] checks and opens the stream and reads the slot,
//! [`snapshot`] makes the initial copy, [`apply`] writes the target, [`pipeline`] ties one
//! session together, [`service`] starts what runs beside it (metrics server, slot monitor),
//! [`ops`] holds the operator commands, [`error_policy`] decides what every error means (retry,
//! operator action, fatal) and [`report`] prints it. `docs/architecture.md` has the map.

pub mod apply;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod ddl;
pub mod error_policy;
pub mod latency;
pub mod lsn;
pub mod metrics;
pub mod ops;
pub mod pg_download;
pub mod pgoutput;
pub mod pipeline;
pub mod positions;
pub mod report;
pub mod sequences;
pub mod service;
pub mod snapshot;
pub mod source;
pub mod telemetry;
pub mod verify;
pub mod wire;

pub use lsn::Lsn;
