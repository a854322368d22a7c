//! Captured DDL: commands run on the source's published tables, replayed on the target at their
//! place in the stream.
//!
//! ```text
//!  source: DDL ─▶ event trigger (install.rs) ─▶ pg_logical_emit_message(true, 'lsnpipe.ddl', json)
//!  stream (messages 'true') ─▶ pgoutput Message ─▶ CapturedDdl::parse (message.rs)
//!    ─▶ for this publication? ─▶ one top-level statement? (statement.rs) ─▶ the applier runs it
//!       in the open target transaction, with the captured search_path
//! ```
//!
//! Column drift (`apply/drift.rs`) still follows the Relation message that comes after a
//! captured command; it finds the target already matching, so nothing is done twice.

pub mod install;
mod message;
mod statement;

pub use install::{InstallError, install, remove};
pub use message::{CapturedDdl, DdlError, DdlObject, PREFIX, TableName};
