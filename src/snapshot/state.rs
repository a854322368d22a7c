//! The copy state, kept on the target next to the data it describes.
//!
//! ```text
//!  lsnpipe.copy_run   (slot, status: creating_slot → copying → done, consistent_point)
//!  lsnpipe.copy_state (slot, schema_name, table_name, status: pending → done, sync_lsn, rows)
//! ```
//!
//! A table becomes `done` in the target transaction that commits its last rows, so a table is
//! either done with all its rows or pending (and emptied before it is copied again). The run
//! becomes `done` in the same transaction that writes the progress row at the consistent point,
//! so streaming starts exactly where the copy's snapshot ends.

use tokio_postgres::{Client, GenericClient};

use super::error::SnapshotError;
use crate::Lsn;

const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS lsnpipe;
    CREATE TABLE IF NOT EXISTS lsnpipe.copy_run (
        slot text PRIMARY KEY,
        status text NOT NULL CHECK (status IN ('creating_slot', 'copying', 'done')),
        consistent_point pg_lsn,
        started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz);
    CREATE TABLE IF NOT EXISTS lsnpipe.copy_state (
        slot text NOT NULL,
        schema_name text NOT NULL,
        table_name text NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'done')),
        sync_lsn pg_lsn,
        rows bigint,
        finished_at timestamptz,
        PRIMARY KEY (slot, schema_name, table_name))";

/// Marks one table copied; parameters: slot, schema, table, sync LSN (text), rows.
const MARK_DONE: &str = "UPDATE lsnpipe.copy_state \
    SET status = 'done', sync_lsn = $4::text::pg_lsn, rows = $5, finished_at = clock_timestamp() \
    WHERE slot = $1 AND schema_name = $2 AND table_name = $3";

/// Mark `schema.table` copied at `sync_lsn` with `rows` rows (in the caller's transaction, if
/// `client` is one).
pub(super) async fn mark_done(
    client: &impl GenericClient,
    slot: &str,
    schema: &str,
    table: &str,
    sync_lsn: Lsn,
    rows: u64,
) -> Result<(), tokio_postgres::Error> {
    let rows = i64::try_from(rows).unwrap_or(i64::MAX);
    client
        .execute(
            MARK_DONE,
            &[&slot, &schema, &table, &sync_lsn.to_string(), &rows],
        )
        .await
        .map(drop)
}

/// Where a slot's initial copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Run {
    /// The slot may or may not have been created; nothing was copied.
    CreatingSlot,
    Copying {
        consistent_point: Lsn,
    },
    Done {
        consistent_point: Lsn,
    },
}

fn failed(e: tokio_postgres::Error) -> SnapshotError {
    SnapshotError::state(e)
}

/// This slot's run, or `None` when no copy was ever started for it (nothing is created).
pub(super) async fn read_run(target: &Client, slot: &str) -> Result<Option<Run>, SnapshotError> {
    let exists: bool = target
        .query_one("SELECT to_regclass('lsnpipe.copy_run') IS NOT NULL", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(failed)?;
    if !exists {
        return Ok(None);
    }
    let row = target
        .query_opt(
            "SELECT status, consistent_point::text FROM lsnpipe.copy_run WHERE slot = $1",
            &[&slot],
        )
        .await
        .map_err(failed)?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get(0).map_err(failed)?;
    let point: Option<String> = row.try_get(1).map_err(failed)?;
    let point = || -> Result<Lsn, SnapshotError> {
        point
            .as_deref()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| {
                SnapshotError::BadState(format!("slot {slot:?} has no consistent point"))
            })
    };
    match status.as_str() {
        "creating_slot" => Ok(Some(Run::CreatingSlot)),
        "copying" => Ok(Some(Run::Copying {
            consistent_point: point()?,
        })),
        "done" => Ok(Some(Run::Done {
            consistent_point: point()?,
        })),
        other => Err(SnapshotError::BadState(format!(
            "unknown copy status {other:?} for slot {slot:?}"
        ))),
    }
}

/// Start a run: every table pending, the slot about to be created.
pub(super) async fn begin_run(
    target: &mut Client,
    slot: &str,
    tables: &[(String, String)],
) -> Result<(), SnapshotError> {
    target.batch_execute(CREATE).await.map_err(failed)?;
    let tx = target.transaction().await.map_err(failed)?;
    tx.execute("DELETE FROM lsnpipe.copy_state WHERE slot = $1", &[&slot])
        .await
        .map_err(failed)?;
    tx.execute(
        "INSERT INTO lsnpipe.copy_run (slot, status) VALUES ($1, 'creating_slot') \
         ON CONFLICT (slot) DO UPDATE SET status = 'creating_slot', consistent_point = NULL, \
             started_at = now(), finished_at = NULL",
        &[&slot],
    )
    .await
    .map_err(failed)?;
    let insert = tx
        .prepare(
            "INSERT INTO lsnpipe.copy_state (slot, schema_name, table_name, status) \
             VALUES ($1, $2, $3, 'pending')",
        )
        .await
        .map_err(failed)?;
    for (schema, table) in tables {
        tx.execute(&insert, &[&slot, schema, table])
            .await
            .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)
}

/// The slot exists and its snapshot is being copied.
pub(super) async fn set_copying(
    target: &Client,
    slot: &str,
    consistent_point: Lsn,
) -> Result<(), SnapshotError> {
    target
        .execute(
            "UPDATE lsnpipe.copy_run SET status = 'copying', consistent_point = $2::text::pg_lsn \
             WHERE slot = $1",
            &[&slot, &consistent_point.to_string()],
        )
        .await
        .map_err(failed)
        .map(drop)
}

/// Record `tables` as pending for `slot` (tables that joined the publication); rows already
/// there are left as they are.
pub(super) async fn add_pending(
    target: &mut Client,
    slot: &str,
    tables: &[(String, String)],
) -> Result<(), SnapshotError> {
    target.batch_execute(CREATE).await.map_err(failed)?;
    let tx = target.transaction().await.map_err(failed)?;
    for (schema, table) in tables {
        tx.execute(
            "INSERT INTO lsnpipe.copy_state (slot, schema_name, table_name, status) \
             VALUES ($1, $2, $3, 'pending') ON CONFLICT DO NOTHING",
            &[&slot, schema, table],
        )
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)
}

/// `tables` left the publication: set back to pending, so that if one rejoins, it is emptied
/// and copied again (its changes stopped arriving in between).
pub(super) async fn set_pending(
    target: &mut Client,
    slot: &str,
    tables: &[(String, String)],
) -> Result<(), SnapshotError> {
    for (schema, table) in tables {
        target
            .execute(
                "UPDATE lsnpipe.copy_state SET status = 'pending'                  WHERE slot = $1 AND schema_name = $2 AND table_name = $3",
                &[&slot, schema, table],
            )
            .await
            .map_err(failed)?;
    }
    Ok(())
}

/// Every table of this slot's copy state, copied or not.
pub(super) async fn tables(
    target: &Client,
    slot: &str,
) -> Result<Vec<(String, String)>, SnapshotError> {
    let rows = target
        .query(
            "SELECT schema_name, table_name FROM lsnpipe.copy_state WHERE slot = $1",
            &[&slot],
        )
        .await
        .map_err(failed)?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(failed)
}

/// Tables of this run not yet copied.
pub(super) async fn pending(
    target: &Client,
    slot: &str,
) -> Result<Vec<(String, String)>, SnapshotError> {
    let rows = target
        .query(
            "SELECT schema_name, table_name FROM lsnpipe.copy_state \
             WHERE slot = $1 AND status = 'pending'",
            &[&slot],
        )
        .await
        .map_err(failed)?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(failed)
}

/// Tables copied at a later point than the slot's consistent point, with that point.
pub(super) async fn sync_points(
    target: &Client,
    slot: &str,
) -> Result<Vec<(String, String, Lsn)>, SnapshotError> {
    let rows = target
        .query(
            "SELECT s.schema_name, s.table_name, s.sync_lsn::text FROM lsnpipe.copy_state s \
             JOIN lsnpipe.copy_run r USING (slot) \
             WHERE s.slot = $1 AND s.sync_lsn > r.consistent_point",
            &[&slot],
        )
        .await
        .map_err(failed)?;
    let mut points = Vec::with_capacity(rows.len());
    for row in rows {
        let lsn: String = row.try_get(2).map_err(failed)?;
        let lsn = lsn
            .parse()
            .map_err(|e| SnapshotError::BadState(format!("unreadable sync LSN {lsn:?}: {e}")))?;
        points.push((
            row.try_get(0).map_err(failed)?,
            row.try_get(1).map_err(failed)?,
            lsn,
        ));
    }
    Ok(points)
}

/// The run is complete: streaming starts at the consistent point (the progress row says so, in
/// the same transaction).
pub(super) async fn finish(
    target: &mut Client,
    slot: &str,
    consistent_point: Lsn,
) -> Result<(), SnapshotError> {
    crate::apply::prepare_progress(target, slot)
        .await
        .map_err(|e| SnapshotError::Progress(Box::new(e)))?;
    let tx = target.transaction().await.map_err(failed)?;
    tx.execute(
        "UPDATE lsnpipe.copy_run SET status = 'done', finished_at = now() WHERE slot = $1",
        &[&slot],
    )
    .await
    .map_err(failed)?;
    tx.execute(
        "INSERT INTO lsnpipe.progress (slot, lsn, commit_time, updated_at) \
         VALUES ($1, $2::text::pg_lsn, NULL, clock_timestamp()) \
         ON CONFLICT (slot) DO UPDATE SET lsn = EXCLUDED.lsn, commit_time = NULL, \
             updated_at = EXCLUDED.updated_at",
        &[&slot, &consistent_point.to_string()],
    )
    .await
    .map_err(failed)?;
    tx.commit().await.map_err(failed)
}
