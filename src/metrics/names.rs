//! The metric names, one constant each; `docs/metrics.md` explains them to operators.

pub const RECEIVED_LSN: &str = "lsnpipe_received_lsn";
pub const FLUSHED_LSN: &str = "lsnpipe_flushed_lsn";
pub const LAG_BYTES: &str = "lsnpipe_lag_bytes";
pub const LAG_SECONDS: &str = "lsnpipe_lag_seconds";
pub const RECEIVED_BYTES: &str = "lsnpipe_received_bytes_total";
pub const RECEIVED_MESSAGES: &str = "lsnpipe_received_messages_total";
pub const ROWS_APPLIED: &str = "lsnpipe_rows_applied_total";
pub const SCHEMA_CHANGES: &str = "lsnpipe_schema_changes_total";
pub const TRANSACTIONS_APPLIED: &str = "lsnpipe_transactions_applied_total";
pub const APPLY_BATCH_DURATION: &str = "lsnpipe_apply_batch_duration_seconds";
pub const APPLY_BATCH_ROWS: &str = "lsnpipe_apply_batch_rows";
pub const STATUS_UPDATES_SENT: &str = "lsnpipe_status_updates_sent_total";
pub const RECONNECTS: &str = "lsnpipe_reconnects_total";
pub const ERRORS: &str = "lsnpipe_errors_total";
pub const SLOT_RETAINED_WAL_BYTES: &str = "lsnpipe_slot_retained_wal_bytes";
pub const SLOT_WAL_STATUS: &str = "lsnpipe_slot_wal_status";
pub const SNAPSHOT_ROWS_COPIED: &str = "lsnpipe_snapshot_rows_copied_total";
pub const SNAPSHOT_TABLES_REMAINING: &str = "lsnpipe_snapshot_tables_remaining";

/// Every lsnpipe metric family (process metrics aside), for tests and docs checks.
pub const ALL: &[&str] = &[
    RECEIVED_LSN,
    FLUSHED_LSN,
    LAG_BYTES,
    LAG_SECONDS,
    RECEIVED_BYTES,
    RECEIVED_MESSAGES,
    ROWS_APPLIED,
    SCHEMA_CHANGES,
    TRANSACTIONS_APPLIED,
    APPLY_BATCH_DURATION,
    APPLY_BATCH_ROWS,
    STATUS_UPDATES_SENT,
    RECONNECTS,
    ERRORS,
    SLOT_RETAINED_WAL_BYTES,
    SLOT_WAL_STATUS,
    SNAPSHOT_ROWS_COPIED,
    SNAPSHOT_TABLES_REMAINING,
];
