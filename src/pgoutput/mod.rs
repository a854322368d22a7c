//! Sans-IO, zero-copy decoding of the pgoutput messages a logical walsender sends.
//!
//! ```text
//! XLogData data (one pgoutput message, framed by `wire/frames.rs`) ──▶ message/ ──▶ tuple.rs
//! ```
//!
//! Nothing here does I/O or depends on tokio: every function takes a complete `Bytes` and returns
//! a value that holds views of it (no copy, no allocation at all), or a [`DecodeError`]. Tuples
//! and Relation columns are validated once, in [`decode`], so their iterators cannot fail.
//! Counts read from the wire are checked against the bytes that remain before anything is sized
//! from them, and leftover bytes are an error. Fixtures captured from PostgreSQL 15 live in
//! `proto/` (see its README); `fuzz/` fuzzes [`decode`]; `benches/decode.rs` measures it.
//!
//! The caller tracks one piece of state, whether it is inside a streamed block:
//!
//! ```
//! use bytes::Bytes;
//! use lsnpipe::pgoutput::{decode, ColumnSlice, DecodeContext, LogicalMessage};
//!
//! let mut ctx = DecodeContext::default(); // set parallel_streaming if requested
//! let frames = [
//!     Bytes::from_static(b"S\0\0\x02\xfb\x01"),                // Stream Start, xid 763
//!     Bytes::from_static(b"I\0\0\x02\xfb\0\0\x40\x0aN\0\x01t\0\0\0\x0242"), // xid, oid, row
//!     Bytes::from_static(b"E"),                                // Stream Stop
//! ];
//! for frame in frames {
//!     match decode(frame, ctx)? {
//!         LogicalMessage::StreamStart(_) => ctx.in_stream = true,
//!         LogicalMessage::StreamStop => ctx.in_stream = false,
//!         LogicalMessage::Insert(insert) => {
//!             assert_eq!((insert.xid, insert.relation_oid), (Some(763), 0x400a));
//!             let values: Vec<_> = insert.new.slices().collect();
//!             assert_eq!(values, [ColumnSlice::Text(b"42")]);
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok::<(), lsnpipe::pgoutput::DecodeError>(())
//! ```

mod error;
#[cfg(test)]
mod fixture_tests;
mod message;
mod reader;
#[cfg(test)]
mod robustness_tests;
mod tuple;

/// Bytes from hex digits, spaces allowed: hand-written frames in tests.
#[cfg(test)]
pub(crate) fn hex_bytes(s: &str) -> bytes::Bytes {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

pub use error::DecodeError;
pub use message::{
    Begin, BeginPrepare, Column, Commit, CommitPrepared, DecodeContext, Delete, Insert,
    LogicalDecodingMessage, LogicalMessage, OldTuple, Origin, Prepare, Relation, RelationColumns,
    ReplicaIdentity, RollbackPrepared, StreamAbort, StreamCommit, StreamStart, Truncate,
    TypeMessage, Update, decode,
};
pub use tuple::{ColumnSlice, ColumnSlices, ColumnValue, Columns, TupleData};
