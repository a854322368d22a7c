//! The initial copy: the slot is created with an exported snapshot, every published table is
//! copied under it, and streaming starts at the slot's consistent point.
//!
//! ```text
//!  replication session: CREATE_REPLICATION_SLOT … (SNAPSHOT 'export') ─▶ consistent point C,
//!        │ (open and idle until every worker has imported the snapshot)   snapshot name S
//!        ▼
//!  N workers: source BEGIN REPEATABLE READ; SET TRANSACTION SNAPSHOT S ─▶ COPY units (tables,
//!             ctid ranges of large tables), binary when the types allow ─▶ target COPY FROM
//!        ▼
//!  target: secondary indexes (--create-tables) ─▶ BEGIN; copy_run done; progress row = C; COMMIT
//!        ▼
//!  streaming from C: the applier skips what the snapshot holds (commits before C)
//! ```
//!
//! Restart. An exported snapshot dies with its session, so a copy interrupted by a crash, a
//! Ctrl-C or a lost connection cannot continue in the old snapshot. Tables already `done` hold
//! the source as of C and stay; the slot is kept, so streaming still starts at C and loses
//! nothing. Each unfinished table is emptied and copied again under a new snapshot, exported by
//! a temporary slot whose consistent point C' > C is stored as that table's sync point. While
//! streaming from C, changes to such a table from transactions that committed before C' are
//! already in its copy and are dropped ([`SyncFilter`]); from C' on they apply. Each table is
//! thus exactly the source at every point the stream passes, and once the stream passes the
//! last C' all tables are mutually consistent again (as with PostgreSQL's own table
//! synchronisation). Re-copying everything under a new slot would also be correct, but throws
//! finished work away; this keeps it at the cost of one per-table filter.
//!
//! Nothing is written to the target before the checks pass (published tables readable, present
//! or creatable on the target, empty, slot not already there), so a refused run leaves the
//! target as it was.

mod added;
mod catalog;
mod copy;
mod copy_progress;
mod error;
mod filter;
mod schema;
mod state;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_postgres::Client;

pub use added::{AddedTables, TableSync};
pub use error::SnapshotError;
pub use filter::{Hold, SyncFilter};

use crate::Lsn;
use crate::metrics::Metrics;
use crate::source;
use crate::wire::{self, ConnConfig, CreateSlotOptions, ReplicationConnection, SnapshotAction};
use catalog::Table;
use copy::{Job, Shared, Unit};
use copy_progress::{CopyProgress, TableProgress};
use state::Run;

/// What the copy needs from the run settings.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    pub publication: String,
    pub slot: String,
    /// `Some` when asked for; `None`: copy when lsnpipe creates the slot (`create_slot`).
    pub snapshot: Option<bool>,
    pub create_slot: bool,
    /// Create the slot with `FAILOVER` (server 17+).
    pub failover_slot: bool,
    pub copy_jobs: usize,
    pub create_tables: bool,
}

/// How the copy phase ended.
#[derive(Debug)]
pub enum Prepared {
    /// Stream now; pass each decoded message through the filter.
    Ready(SyncFilter),
    /// Shutdown was asked for during the copy; it resumes on the next run.
    Stopped,
}

/// Make sure the target holds the copy this slot's stream starts from: do it, finish an
/// interrupted one, or find it done (or not wanted).
pub async fn prepare(
    options: &SnapshotOptions,
    source_config: &ConnConfig,
    target_config: &ConnConfig,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Prepared, SnapshotError> {
    let mut target = wire::connect_sql(target_config)
        .await
        .map_err(SnapshotError::TargetSql)?;
    let run = state::read_run(&target, &options.slot).await?;
    if let Some(Run::Done { .. }) = run {
        // Tables that joined the publication while lsnpipe was stopped (or whose copy a stop
        // interrupted) are copied first, each at a point of its own.
        let copied = added::copy_before_streaming(
            options,
            source_config,
            target_config,
            &mut target,
            metrics,
            shutdown,
        )
        .await?;
        if !copied {
            return Ok(Prepared::Stopped);
        }
        let points = state::sync_points(&target, &options.slot).await?;
        return Ok(Prepared::Ready(SyncFilter::new(points)));
    }
    if run.is_none() && options.snapshot == Some(false)
        || run.is_none() && options.snapshot.is_none() && !options.create_slot
    {
        return Ok(Prepared::Ready(SyncFilter::default()));
    }

    let mut repl = ReplicationConnection::connect(source_config)
        .await
        .map_err(source::SourceError::from)?;
    source::check_source(&mut repl, &options.publication).await?;
    let slot_exists = source::SlotInfo::read(&mut repl, &options.slot)
        .await
        .map_err(source::SourceError::from)?
        .is_some();
    if run.is_none() && options.snapshot.is_none() && slot_exists {
        // --create-slot with a slot that is already there: nothing to create, nothing to copy.
        return Ok(Prepared::Ready(SyncFilter::default()));
    }
    let catalog = connect_source(source_config).await?;
    let published = catalog::published(&catalog, &options.publication).await?;
    // Keys and indexes are built at the end for every table of the run, also for those a
    // resumed copy finished in the interrupted run (building skips what exists).
    let mut indexed = published.clone();

    let copy = match run {
        Some(Run::Copying { consistent_point }) => {
            if !slot_exists {
                return Err(SnapshotError::SlotGone(options.slot.clone()));
            }
            let pending = state::pending(&target, &options.slot).await?;
            // Not a table that joined the publication since: it is copied (and created) once
            // this run is done, as every added table is.
            let in_run = state::tables(&target, &options.slot).await?;
            indexed.retain(|t| in_run.contains(&(t.schema.clone(), t.name.clone())));
            let tables: Vec<Table> = published
                .into_iter()
                .filter(|t| pending.contains(&(t.schema.clone(), t.name.clone())))
                .collect();
            tracing::info!(
                slot = %options.slot,
                tables = tables.len(),
                "resuming the interrupted initial copy: unfinished tables are copied again"
            );
            let targets = check_tables(&target, &tables, options, false).await?;
            let targets = create_missing(&catalog, &target, &tables, targets).await?;
            // A temporary slot: its snapshot is the newer point these tables are copied at.
            let mut sync = ReplicationConnection::connect(source_config)
                .await
                .map_err(source::SourceError::from)?;
            let name = temporary_slot_name(&options.slot, "resync");
            let created = sync
                .create_slot(
                    &name,
                    CreateSlotOptions {
                        temporary: true,
                        snapshot: SnapshotAction::Export,
                        ..CreateSlotOptions::default()
                    },
                )
                .await
                .map_err(source::SourceError::from)?;
            drop(repl);
            Plan {
                exporter: sync,
                created,
                consistent_point,
                tables: tables.into_iter().zip(targets).collect(),
            }
        }
        // (`Done` returned above.)
        Some(Run::CreatingSlot | Run::Done { .. }) | None => {
            if run.is_none() && slot_exists {
                return Err(SnapshotError::SlotExists(options.slot.clone()));
            }
            let targets = check_tables(&target, &published, options, true).await?;
            let names: Vec<(String, String)> = published
                .iter()
                .map(|t| (t.schema.clone(), t.name.clone()))
                .collect();
            state::begin_run(&mut target, &options.slot, &names).await?;
            if slot_exists {
                // Ours, from a run that stopped right after creating it: nothing was copied.
                repl.drop_slot(&options.slot, false)
                    .await
                    .map_err(source::SourceError::from)?;
            }
            let targets = create_missing(&catalog, &target, &published, targets).await?;
            let created = repl
                .create_slot(
                    &options.slot,
                    CreateSlotOptions {
                        snapshot: SnapshotAction::Export,
                        failover: options.failover_slot,
                        ..CreateSlotOptions::default()
                    },
                )
                .await
                .map_err(source::SourceError::from)?;
            tracing::info!(
                slot = %options.slot,
                consistent_point = %created.consistent_point,
                "created replication slot with an exported snapshot"
            );
            state::set_copying(&target, &options.slot, created.consistent_point).await?;
            Plan {
                consistent_point: created.consistent_point,
                exporter: repl,
                created,
                tables: published.into_iter().zip(targets).collect(),
            }
        }
    };

    let Plan {
        exporter,
        created,
        consistent_point,
        tables,
    } = copy;
    let snapshot = created.snapshot_name.clone().ok_or_else(|| {
        SnapshotError::BadState("the source exported no snapshot for the new slot".into())
    })?;
    let outcome = copy_tables(
        tables,
        created.consistent_point,
        snapshot,
        options,
        source_config,
        target_config,
        &target,
        metrics,
        shutdown,
        true,
    )
    .await;
    // The snapshot is no longer needed (a temporary slot goes with its session).
    let _ = exporter.close().await;
    if outcome?.is_none() {
        return Ok(Prepared::Stopped);
    }
    if options.create_tables {
        let started = std::time::Instant::now();
        schema::prepare_index_session(&target).await?;
        for table in &indexed {
            schema::build_indexes(&catalog, &target, table).await?;
        }
        tracing::info!(
            seconds = format_args!("{:.1}", started.elapsed().as_secs_f64()),
            "keys and indexes built"
        );
    }
    state::finish(&mut target, &options.slot, consistent_point).await?;
    tracing::info!(slot = %options.slot, start = %consistent_point, "initial copy complete");
    let points = state::sync_points(&target, &options.slot).await?;
    Ok(Prepared::Ready(SyncFilter::new(points)))
}

/// Copies of tables that join the publication while this session streams (none unless lsnpipe
/// copied this slot's data, so that it knows which tables the target holds).
pub async fn added_tables(
    options: &SnapshotOptions,
    source_config: &ConnConfig,
    target_config: &ConnConfig,
    metrics: &Metrics,
    shutdown: &watch::Receiver<bool>,
) -> Result<AddedTables, SnapshotError> {
    let target = wire::connect_sql(target_config)
        .await
        .map_err(SnapshotError::TargetSql)?;
    // Tables still pending here left the publication (`prepare` copied the published ones):
    // should one rejoin during this session, its rows are stale and it is copied again.
    let (known, left) = match state::read_run(&target, &options.slot).await? {
        Some(Run::Done { .. }) => {
            let left: HashSet<_> = state::pending(&target, &options.slot)
                .await?
                .into_iter()
                .collect();
            let known = state::tables(&target, &options.slot)
                .await?
                .into_iter()
                .filter(|t| !left.contains(t))
                .collect();
            (Some(known), left)
        }
        _ => (None, HashSet::new()),
    };
    Ok(AddedTables::new(
        options.clone(),
        source_config.clone(),
        target_config.clone(),
        metrics.clone(),
        shutdown.clone(),
        known,
        left,
    ))
}

struct Plan {
    exporter: ReplicationConnection,
    created: wire::CreatedSlot,
    consistent_point: Lsn,
    tables: Vec<(Table, Option<catalog::TargetTable>)>,
}

/// A temporary slot's name (a resumed copy's, `kind` "resync"; an added table's, "add"): the
/// run's slot name, `_kind` and eight hex digits of this attempt's own, within 63 bytes. Never
/// the same twice: the session of an lsnpipe that was killed may hold its temporary slot until
/// its server notices the session is gone, and the restart must not trip over it.
pub(crate) fn temporary_slot_name(slot: &str, kind: &str) -> String {
    use std::hash::BuildHasher;
    let unique = std::collections::hash_map::RandomState::new()
        .hash_one((std::process::id(), std::time::SystemTime::now()));
    let suffix = format!("_{kind}{:08x}", unique & 0xffff_ffff);
    let base: String = slot.chars().take(63 - suffix.len()).collect();
    format!("{base}{suffix}")
}

/// An ordinary source session that resolves nothing through a user-writable schema, so the
/// catalog prints every name qualified.
async fn connect_source(config: &ConnConfig) -> Result<Client, SnapshotError> {
    let client = wire::connect_sql(config)
        .await
        .map_err(SnapshotError::SourceSql)?;
    client
        .batch_execute("SET search_path = ''")
        .await
        .map_err(SnapshotError::Catalog)?;
    Ok(client)
}

/// Every check that must pass before the target is written to. `fresh`: the tables must be
/// empty (a resumed copy empties its own tables).
async fn check_tables(
    target: &Client,
    tables: &[Table],
    options: &SnapshotOptions,
    fresh: bool,
) -> Result<Vec<Option<catalog::TargetTable>>, SnapshotError> {
    let unreadable: Vec<String> = tables
        .iter()
        .filter(|t| !t.readable)
        .map(Table::qualified)
        .collect();
    if !unreadable.is_empty() {
        return Err(SnapshotError::Unreadable(unreadable));
    }
    let filtered: Vec<String> = tables
        .iter()
        .filter(|t| t.row_security)
        .map(Table::qualified)
        .collect();
    if !filtered.is_empty() {
        return Err(SnapshotError::RowSecurity(filtered));
    }
    let mut found = Vec::with_capacity(tables.len());
    let (mut missing, mut not_empty) = (Vec::new(), Vec::new());
    for table in tables {
        let t = catalog::target_table(target, table).await?;
        match &t {
            None => missing.push(table.qualified()),
            Some(t) if fresh && !t.empty => not_empty.push(table.qualified()),
            Some(_) => {}
        }
        found.push(t);
    }
    if !missing.is_empty() && !options.create_tables {
        return Err(SnapshotError::MissingOnTarget(missing));
    }
    if !not_empty.is_empty() {
        return Err(SnapshotError::TargetNotEmpty(not_empty));
    }
    Ok(found)
}

/// Create the tables the target lacks (only reached with --create-tables).
async fn create_missing(
    source: &Client,
    target: &Client,
    tables: &[Table],
    found: Vec<Option<catalog::TargetTable>>,
) -> Result<Vec<Option<catalog::TargetTable>>, SnapshotError> {
    let mut out = Vec::with_capacity(found.len());
    for (table, t) in tables.iter().zip(found) {
        match t {
            Some(t) => out.push(Some(t)),
            None => {
                schema::create_table(source, target, table).await?;
                out.push(catalog::target_table(target, table).await?);
            }
        }
    }
    Ok(out)
}

/// Copy `tables` under `snapshot`; false when stopped by shutdown.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, each argument a distinct input"
)]
async fn copy_tables(
    tables: Vec<(Table, Option<catalog::TargetTable>)>,
    sync_lsn: Lsn,
    snapshot: String,
    options: &SnapshotOptions,
    source_config: &ConnConfig,
    target_config: &ConnConfig,
    target: &Client,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
    mark_done: bool,
) -> Result<Option<Vec<Arc<Job>>>, SnapshotError> {
    let total_blocks: u64 = tables.iter().map(|(t, _)| t.blocks).sum();
    let mut jobs = Vec::with_capacity(tables.len());
    let mut units = VecDeque::new();
    for (table, found) in tables {
        let Some(found) = found else {
            return Err(SnapshotError::MissingOnTarget(vec![table.qualified()]));
        };
        let table = table.without(&found.generated);
        let ranges = catalog::split(&table, total_blocks, options.copy_jobs);
        let job = Arc::new(Job {
            progress: TableProgress::new(table.qualified(), table.est_rows),
            units: ranges.len(),
            left: AtomicUsize::new(ranges.len()),
            table,
            target: found,
            sync_lsn,
        });
        if ranges.len() > 1 {
            // Its ranges commit separately, so it is emptied up front.
            target
                .batch_execute(&job.empty_sql())
                .await
                .map_err(|source| SnapshotError::Copy {
                    table: job.table.qualified(),
                    source,
                })?;
        }
        for range in ranges {
            units.push_back(Unit {
                job: job.clone(),
                range,
            });
        }
        jobs.push(job);
    }
    let progress = Arc::new(CopyProgress::new(
        metrics.clone(),
        &jobs.iter().map(|j| &j.progress).collect::<Vec<_>>(),
    ));
    tracing::info!(
        tables = jobs.len(),
        units = units.len(),
        jobs = options.copy_jobs,
        "initial copy started"
    );
    let workers = options.copy_jobs.min(units.len());
    let shared = Arc::new(Shared {
        source: source_config.clone(),
        target: target_config.clone(),
        snapshot,
        slot: options.slot.clone(),
        queue: Arc::new(Mutex::new(units)),
        progress: progress.clone(),
        mark_done,
    });
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        set.spawn(copy::worker(shared.clone()));
    }
    let mut summary = tokio::time::interval(copy_progress::SUMMARY_INTERVAL);
    summary.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => {
                // Dropping the set aborts the workers; their open target transactions roll back.
                set.abort_all();
                progress.finish();
                tracing::info!("initial copy interrupted; unfinished tables are copied again on the next run");
                return Ok(None);
            }
            _ = summary.tick() => progress.log_summary(),
            next = set.join_next() => match next {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    set.abort_all();
                    return Err(e);
                }
                Some(Err(e)) => {
                    set.abort_all();
                    return Err(SnapshotError::Worker(e.to_string()));
                }
            },
        }
    }
    progress.finish();
    metrics.set_snapshot_tables_remaining(0);
    Ok(Some(jobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_slot_names_are_valid_and_never_repeat() {
        let a = temporary_slot_name("s", "resync");
        assert!(
            a.starts_with("s_resync") && a.len() == "s_resync".len() + 8,
            "{a}"
        );
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{a}"
        );
        assert_ne!(a, temporary_slot_name("s", "resync"));
        let long = "x".repeat(63);
        assert_eq!(temporary_slot_name(&long, "add").len(), 63);
    }
}
