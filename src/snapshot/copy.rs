//! One copy worker: a source session inside the exported snapshot and a target session, moving
//! units (a table, or a block range of one) with `COPY ... TO STDOUT` into `COPY ... FROM STDIN`.
//!
//! ```text
//!  source: BEGIN REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '<name>'
//!          COPY (…range…) TO STDOUT ──CopyData──▶ pump ──CopyData──▶ COPY t FROM STDIN  :target
//!                                      (64 KiB in hand; both sessions' channels are bounded,
//!                                       so a slow target slows the source socket)
//!  target: BEGIN; [TRUNCATE t]; COPY …; [mark t done]; COMMIT
//! ```
//!
//! A table copied in one unit is emptied, filled and marked done in one target transaction (so
//! it can use COPY FREEZE); a table split into ranges was emptied before its ranges start and is
//! marked done by whichever worker commits its last range.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use tokio_postgres::{Client, GenericClient};

use super::catalog::{self, Blocks, Table, TargetTable};
use super::copy_progress::{CopyProgress, TableProgress};
use super::error::SnapshotError;
use super::state;
use crate::Lsn;
use crate::wire::{self, ConnConfig, quote_literal};

/// Rows between progress reports.
const REPORT_EVERY: u64 = 4096;
/// Size of the CopyData messages sent to the target (and all the pump holds).
const BATCH_BYTES: usize = 64 * 1024;

/// One table of the copy, shared by its units.
#[derive(Debug)]
pub(super) struct Job {
    pub table: Table,
    pub target: TargetTable,
    pub units: usize,
    pub left: AtomicUsize,
    pub sync_lsn: Lsn,
    pub progress: TableProgress,
}

impl Job {
    /// SQL that empties the table on the target (foreign keys refuse TRUNCATE).
    pub(super) fn empty_sql(&self) -> String {
        let q = self.table.qualified();
        match (self.target.referenced, self.target.partitioned) {
            (true, _) => format!("DELETE FROM {q}"),
            (false, true) => format!("TRUNCATE {q}"),
            (false, false) => format!("TRUNCATE ONLY {q}"),
        }
    }
}

#[derive(Debug)]
pub(super) struct Unit {
    pub job: Arc<Job>,
    pub range: Option<Blocks>,
}

pub(super) type Queue = Arc<Mutex<VecDeque<Unit>>>;

/// What every worker shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub source: ConnConfig,
    pub target: ConnConfig,
    pub snapshot: String,
    pub slot: String,
    pub queue: Queue,
    pub progress: Arc<CopyProgress>,
    /// Mark each table done when its data commits. Off when the caller builds keys and indexes
    /// first and marks the tables itself: a table marked done is never copied again, so a stop
    /// between its data and its keys would leave it without them for good.
    pub mark_done: bool,
}

/// Take units until the queue is empty.
pub(super) async fn worker(shared: Arc<Shared>) -> Result<(), SnapshotError> {
    let source = wire::connect_sql(&shared.source)
        .await
        .map_err(SnapshotError::SourceSql)?;
    // The snapshot must be imported while the exporting replication session is open and idle;
    // it then lives as long as this transaction.
    source
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&shared.snapshot)
        ))
        .await
        .map_err(|e| SnapshotError::SourceSql(wire::WireError::Sql(e)))?;
    let mut target = wire::connect_sql(&shared.target)
        .await
        .map_err(SnapshotError::TargetSql)?;
    // As the applier does: no user triggers or foreign key checks while copying, where the
    // role may set it.
    if let Err(e) = target
        .batch_execute("SET session_replication_role = replica")
        .await
    {
        tracing::debug!("copy session keeps triggers on: {e}");
    }
    loop {
        let unit = shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let Some(unit) = unit else { break };
        copy_unit(&source, &mut target, &unit, &shared).await?;
    }
    let _ = source.batch_execute("COMMIT").await;
    Ok(())
}

async fn copy_unit(
    source: &Client,
    target: &mut Client,
    unit: &Unit,
    shared: &Shared,
) -> Result<(), SnapshotError> {
    let job = &unit.job;
    let table = &job.table;
    let failed = |e| SnapshotError::Copy {
        table: table.qualified(),
        source: e,
    };
    shared.progress.table_started(&job.progress);
    let whole = job.units == 1;
    let binary = job.target.binary;
    let tx = target.transaction().await.map_err(failed)?;
    if whole {
        tx.batch_execute(&job.empty_sql()).await.map_err(failed)?;
    }
    let freeze = whole && !job.target.referenced && !job.target.partitioned;
    let out = source
        .copy_out(&catalog::copy_out_sql(table, unit.range, binary))
        .await
        .map_err(failed)?;
    let sink = tx
        .copy_in(&catalog::copy_in_sql(table, binary, freeze))
        .await
        .map_err(failed)?;
    let rows = pump(out, sink, binary, job, &shared.progress)
        .await
        .map_err(failed)?;
    if whole && shared.mark_done {
        mark_done(&tx, shared, job, rows).await.map_err(failed)?;
    }
    tx.commit().await.map_err(failed)?;
    if whole || job.left.fetch_sub(1, Ordering::AcqRel) == 1 {
        if !whole && shared.mark_done {
            mark_done(&*target, shared, job, job.progress.rows())
                .await
                .map_err(failed)?;
        }
        shared.progress.table_finished(&job.progress);
    }
    Ok(())
}

async fn mark_done(
    client: &impl GenericClient,
    shared: &Shared,
    job: &Job,
    rows: u64,
) -> Result<(), tokio_postgres::Error> {
    let table = &job.table;
    state::mark_done(
        client,
        &shared.slot,
        &table.schema,
        &table.name,
        job.sync_lsn,
        rows,
    )
    .await
}

/// Forward every CopyData chunk; the target's row count when done.
async fn pump(
    out: tokio_postgres::CopyOutStream,
    sink: tokio_postgres::CopyInSink<bytes::Bytes>,
    binary: bool,
    job: &Job,
    progress: &CopyProgress,
) -> Result<u64, tokio_postgres::Error> {
    let mut out = pin!(out);
    let mut sink = pin!(sink);
    // One message per row; in binary the header rides with the first row and the trailer comes
    // alone, so the first message is not counted.
    let mut skip_first = binary;
    let (mut counted, mut rows, mut bytes) = (0u64, 0u64, 0u64);
    // Rows are gathered into large CopyData messages: per-message work, not bytes, is what a
    // copy of many small rows spends its time on.
    let mut batch = BytesMut::with_capacity(BATCH_BYTES);
    while let Some(chunk) = out.next().await {
        let chunk = chunk?;
        bytes += u64::try_from(chunk.len()).unwrap_or(0);
        if skip_first {
            skip_first = false;
        } else {
            rows += 1;
        }
        batch.extend_from_slice(&chunk);
        if batch.len() >= BATCH_BYTES {
            sink.feed(batch.split().freeze()).await?;
            batch.reserve(BATCH_BYTES);
        }
        if rows >= REPORT_EVERY {
            progress.add(&job.progress, rows, bytes);
            counted += rows;
            (rows, bytes) = (0, 0);
        }
    }
    if !batch.is_empty() {
        sink.feed(batch.freeze()).await?;
    }
    let total = sink.as_mut().finish().await?;
    progress.add(&job.progress, total.saturating_sub(counted), bytes);
    Ok(total)
}
