//! The target side: decoded source transactions applied to a PostgreSQL target in commit order,
//! exactly once.
//!
//! ```text
//! LogicalMessage ─▶ Applier ─▶ relation cache (source OID → target table, checked once)
//!                      │   ─▶ batch (group commit) + planner (per-table runs of inserts,
//!                      │      folded updates, deletes; order from unique indexes) ─▶ statements (cache key → prepared
//!                      │      statement; text from sql: quoted identifiers, $n parameters only)
//!                      │   ─▶ inflight (pipelined on the one target connection, in order)
//!                      └─▶ progress row (same target transaction) ─▶ durable end LSN
//! ```
//!
//! Values go to the target as the source printed them (text parameters), so no type needs
//! decoding here. The pipeline feeds every message to [`Applier::apply`] and calls
//! [`Applier::commit_if`] after each source Commit; what it returns is what may be reported to
//! the source as flushed.

mod applier;
mod batch;
mod drift;
mod durability;
mod error;
pub mod guard;
mod inflight;
mod planner;
mod progress_row;
mod relation;
pub mod sql;
mod statements;
mod value;

pub use applier::{Applier, ApplyStats, Committed};
pub use batch::{DEFAULT_MAX_AGE_MS, DEFAULT_MAX_TRANSACTIONS, GroupLimits};
pub use drift::SchemaChanges;
pub use error::{ApplyError, Operation, TargetError};
pub use progress_row::prepare as prepare_progress;
pub use relation::{SourceColumn, SourceRelation};
pub use value::Param;
