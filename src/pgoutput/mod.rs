//! Sans-IO, zero-copy decoding of what a logical walsender sends.
//!
//! ```text
//! CopyData payload ──▶ replication.rs: 'w' XLogData { start, end, clock, data } | 'k' Keepalive
//!                                       │
//!                                       └─ data (one pgoutput message) ──▶ message.rs ──▶ tuple.rs
//! ```
//!
//! Nothing here does I/O or depends on tokio: every function takes a complete `Bytes` and returns
//! a value that borrows slices of it (no copy, no allocation per column), or a [`DecodeError`].
//! Counts read from the wire are checked against the bytes that remain before anything is sized
//! from them, and leftover bytes are an error.

mod error;
#[cfg(test)]
mod fixture_tests;
mod message;
mod reader;
pub mod replication;
#[cfg(test)]
mod robustness_tests;
mod tuple;

pub use error::DecodeError;
pub use message::{
    Begin, BeginPrepare, Column, Commit, CommitPrepared, DecodeContext, Delete, Insert,
    LogicalDecodingMessage, LogicalMessage, OldTuple, Origin, Prepare, Relation, RelationColumns,
    ReplicaIdentity, RollbackPrepared, StreamAbort, StreamCommit, StreamStart, Truncate,
    TypeMessage, Update, decode,
};
pub use reader::Name;
pub use replication::{Keepalive, ReplicationMessage, StandbyStatusUpdate, XLogData};
pub use tuple::{ColumnValue, Columns, TupleData};
