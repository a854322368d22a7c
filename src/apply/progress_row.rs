//! The progress row: which source commit the target has applied, stored in the target itself.
//!
//! ```text
//! BEGIN; <changes of source transactions …>; UPSERT lsnpipe.progress(slot, lsn = last end_lsn); COMMIT
//! ```
//!
//! The row is written in the same target transaction as the changes it covers, so after any crash
//! the target's data and its position agree. On start the applier reads it and skips every source
//! transaction whose commit began before it (`Begin.final_lsn < lsn`), which makes apply
//! exactly-once even when the source re-sends transactions it already delivered.

use bytes::Bytes;
use tokio_postgres::Client;

use super::error::{ApplyError, Operation};
use super::value::Param;
use crate::Lsn;

const TABLE: &str = "lsnpipe.progress";

const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS lsnpipe; \
    CREATE TABLE IF NOT EXISTS lsnpipe.progress ( \
        slot text PRIMARY KEY, \
        lsn pg_lsn NOT NULL, \
        commit_time timestamptz, \
        updated_at timestamptz NOT NULL DEFAULT now())";

const READ: &str = "SELECT lsn::text FROM lsnpipe.progress WHERE slot = $1";

/// Upsert; the commit time arrives as microseconds since 2000-01-01 UTC (the wire's epoch), or
/// NULL for a position passed while idle, which keeps the last commit's time.
pub(crate) const WRITE: &str = "INSERT INTO lsnpipe.progress (slot, lsn, commit_time, updated_at) \
    VALUES ($1, $2::text::pg_lsn, \
            '2000-01-01 00:00:00+00'::timestamptz + $3::text::int8 * interval '1 microsecond', \
            clock_timestamp()) \
    ON CONFLICT (slot) DO UPDATE SET lsn = EXCLUDED.lsn, \
        commit_time = coalesce(EXCLUDED.commit_time, lsnpipe.progress.commit_time), \
        updated_at = EXCLUDED.updated_at";

/// Create the progress table if missing, and read this slot's position (`Lsn::ZERO` if none).
pub async fn prepare(client: &Client, slot: &str) -> Result<Lsn, ApplyError> {
    let failed = |e| ApplyError::from_target(e, TABLE, Operation::Bookkeeping);
    client.batch_execute(CREATE).await.map_err(failed)?;
    read(client, slot).await
}

/// This slot's stored position, `Lsn::ZERO` if there is none.
pub async fn read(client: &Client, slot: &str) -> Result<Lsn, ApplyError> {
    let failed = |e| ApplyError::from_target(e, TABLE, Operation::Bookkeeping);
    let row = client.query_opt(READ, &[&slot]).await.map_err(failed)?;
    let Some(row) = row else {
        return Ok(Lsn::ZERO);
    };
    let text: String = row.try_get(0).map_err(failed)?;
    text.parse()
        .map_err(|e| ApplyError::protocol(format!("{TABLE} holds an unreadable LSN: {e}")))
}

/// Make every commit so far durable on the target: a synchronous commit flushes all WAL before
/// its own record. Only a transaction that wrote WAL waits for that flush (one that merely took
/// an xid commits asynchronously all the same), so it rewrites this slot's row; with no row
/// there is nothing of this slot's to flush.
pub async fn flush(client: &Client, slot: &str) -> Result<(), ApplyError> {
    let sql = format!(
        "BEGIN; SET LOCAL synchronous_commit = on; \
         UPDATE {TABLE} SET updated_at = updated_at WHERE slot = {}; COMMIT",
        crate::wire::quote_literal(slot)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| ApplyError::from_target(e, TABLE, Operation::Bookkeeping))
}

/// Parameters of [`WRITE`].
pub(crate) fn write_params(slot: &str, lsn: Lsn, commit_time_micros: Option<i64>) -> Vec<Param> {
    vec![
        Param::Text(Bytes::copy_from_slice(slot.as_bytes())),
        Param::Text(Bytes::from(lsn.to_string())),
        commit_time_micros.map_or(Param::Null, |t| Param::Text(Bytes::from(t.to_string()))),
    ]
}

pub(crate) fn table_name() -> &'static str {
    TABLE
}

/// Tables created by captured DDL hold, on the target, every row the stream brings them from
/// their first one: record them in the copy state (`snapshot/state.rs`) as copied with no sync
/// point, in the open group, so neither this session nor the next copies them again. Only for a
/// slot whose copy lsnpipe made (others keep no copy state).
pub(crate) async fn register_created(
    client: &Client,
    slot: &str,
    tables: &[crate::ddl::TableName],
) -> Result<(), tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('lsnpipe.copy_run') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(());
    }
    for table in tables {
        client
            .execute(
                "INSERT INTO lsnpipe.copy_state (slot, schema_name, table_name, status) \
                 SELECT $1, $2, $3, 'done' WHERE EXISTS \
                     (SELECT 1 FROM lsnpipe.copy_run WHERE slot = $1 AND status = 'done') \
                 ON CONFLICT (slot, schema_name, table_name) \
                 DO UPDATE SET status = 'done', sync_lsn = NULL, finished_at = clock_timestamp()",
                &[&slot, &table.schema, &table.table],
            )
            .await?;
    }
    Ok(())
}
