//! What stops the initial copy: operator mistakes found before anything is written, and
//! failures while copying (retried when a connection dropped: [`crate::error_policy::snapshot`]).

use crate::apply::ApplyError;
use crate::source::SourceError;
use crate::wire::WireError;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("source SQL session")]
    SourceSql(#[source] WireError),
    #[error("target SQL session")]
    TargetSql(#[source] WireError),
    #[error(
        "replication slot {0:?} already exists, so its starting point cannot be copied: drop it \
         (SELECT pg_drop_replication_slot('{0}')) to copy the tables again, or run with \
         --snapshot=false to stream from it into tables that already hold the data"
    )]
    SlotExists(String),
    #[error(
        "the initial copy for slot {0:?} is unfinished but the slot is gone from the source, \
         and with it the changes since the copy began: start the copy over with `lsnpipe \
         resync` (empties the published tables on the target and lsnpipe's bookkeeping for the \
         slot), then `lsnpipe run --create-slot`"
    )]
    SlotGone(String),
    #[error(
        "the source role cannot read published table(s) {}: GRANT SELECT ON them TO the role \
         lsnpipe connects as, or remove them from the publication",
        .0.join(", ")
    )]
    Unreadable(Vec<String>),
    #[error(
        "row-level security policies hide rows of published table(s) {} from the source role, \
         so the initial copy would miss them: copy as a role with BYPASSRLS (or the tables' \
         owner, without FORCE ROW LEVEL SECURITY), or remove them from the publication",
        .0.join(", ")
    )]
    RowSecurity(Vec<String>),
    #[error(
        "published table(s) {} do not exist on the target: create them, or run with \
         --create-tables",
        .0.join(", ")
    )]
    MissingOnTarget(Vec<String>),
    #[error(
        "target table(s) {} already hold rows; the initial copy only fills empty tables: empty \
         them (TRUNCATE), or run with --snapshot=false if they already hold the source's data",
        .0.join(", ")
    )]
    TargetNotEmpty(Vec<String>),
    #[error("target table {table} has no column {column:?}, which the source publishes")]
    MissingColumn { table: String, column: String },
    #[error("cannot create {table} on the target: {reason}; create it by hand and run again")]
    CannotCreate { table: String, reason: String },
    #[error("copying {table}")]
    Copy {
        table: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("reading the source catalog")]
    Catalog(#[source] tokio_postgres::Error),
    #[error(
        "copying {table}, which joined the publication: {reason}; it is copied again when the \
         session restarts"
    )]
    AddedTable { table: String, reason: String },
    #[error("creating {what} on the target")]
    Schema {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the copy state on the target (lsnpipe.copy_run, lsnpipe.copy_state)")]
    State(#[source] tokio_postgres::Error),
    #[error("the copy state on the target is inconsistent: {0}")]
    BadState(String),
    #[error("writing the progress row")]
    Progress(#[source] Box<ApplyError>),
    #[error("a copy worker stopped unexpectedly: {0}")]
    Worker(String),
}

impl SnapshotError {
    pub(super) fn state(e: tokio_postgres::Error) -> Self {
        SnapshotError::State(e)
    }
}
