//! Tables that join the publication after the initial copy: copied at a point of their own,
//! while the other tables keep streaming.
//!
//! ```text
//!  found (at start: published but unknown to copy_state; while streaming: a Relation message
//!  for an unknown table) ─▶ copy_state row 'pending' ─▶ [create on the target] ─▶ temporary
//!  slot, exported snapshot at C' ─▶ COPY ─▶ 'done', sync LSN C' ─▶ [keys and indexes]
//!
//!  the stream meanwhile (SyncFilter): the table's changes committed before C' are in the copy
//!  and dropped; a change at or after C' waits until the copy is done, then applies.
//! ```
//!
//! Only for slots whose data lsnpipe copied (a `lsnpipe.copy_run` row): they know which tables
//! they hold. A copy interrupted by a crash stays `pending` and is made again at the next start,
//! at a newer point. The copied table must be empty on the target (a resumed one is emptied).

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_postgres::Client;

use super::catalog::{self, Table};
use super::error::SnapshotError;
use super::{
    SnapshotOptions, check_tables, connect_source, copy_tables, create_missing, schema, state,
};
use crate::Lsn;
use crate::metrics::Metrics;
use crate::source;
use crate::wire::{self, ConnConfig, CreateSlotOptions, ReplicationConnection, SnapshotAction};

/// Where the copy of a table that joined the publication stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSync {
    /// Its copy point is not known yet.
    Starting,
    /// Copying at `sync`: earlier changes are in the copy.
    Copying { sync: Lsn },
    /// Copied at `sync`.
    Done { sync: Lsn },
    /// The copy failed; the session must end (it is made again at the next start).
    Failed(String),
}

/// Copy `names` at a new point of their own: `fresh` tables must be empty on the target,
/// the others (an interrupted copy) are emptied. `on_point` hears the point as soon as it is
/// known. Returns the point, or `None` when stopped.
#[allow(
    clippy::too_many_arguments,
    reason = "the copy's inputs, as for the initial copy"
)]
pub(super) async fn copy_at_new_point(
    names: &[(String, String)],
    fresh: bool,
    options: &SnapshotOptions,
    source_config: &ConnConfig,
    target_config: &ConnConfig,
    target: &mut Client,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
    on_point: impl FnOnce(Lsn),
) -> Result<Option<Lsn>, SnapshotError> {
    let catalog = connect_source(source_config).await?;
    let tables: Vec<Table> = catalog::published(&catalog, &options.publication)
        .await?
        .into_iter()
        .filter(|t| names.contains(&(t.schema.clone(), t.name.clone())))
        .collect();
    let found = check_tables(target, &tables, options, fresh).await?;
    let found = create_missing(&catalog, target, &tables, found).await?;
    // Pending from here on: a copy a stop interrupts is made again (emptying the table first).
    state::add_pending(target, &options.slot, names).await?;
    let mut exporter = ReplicationConnection::connect(source_config)
        .await
        .map_err(source::SourceError::from)?;
    let name = added_slot_name(&options.slot, names);
    let created = exporter
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
    let snapshot = created.snapshot_name.clone().ok_or_else(|| {
        SnapshotError::BadState("the source exported no snapshot for the temporary slot".into())
    })?;
    let point = created.consistent_point;
    on_point(point);
    tracing::info!(
        tables = %names.iter().map(|(s, t)| format!("{s}.{t}")).collect::<Vec<_>>().join(", "),
        sync_point = %point,
        "copying tables that joined the publication"
    );
    let outcome = copy_tables(
        tables.iter().cloned().zip(found).collect(),
        point,
        snapshot,
        options,
        source_config,
        target_config,
        target,
        metrics,
        shutdown,
    )
    .await;
    let _ = exporter.close().await;
    if !outcome? {
        return Ok(None);
    }
    if options.create_tables {
        schema::prepare_index_session(target).await?;
        for table in &tables {
            schema::build_indexes(&catalog, target, table).await?;
        }
    }
    Ok(Some(point))
}

/// At start, for a slot whose initial copy is done: tables published now but never copied, and
/// copies interrupted before, are copied before streaming. Returns false when stopped.
pub(super) async fn copy_before_streaming(
    options: &SnapshotOptions,
    source_config: &ConnConfig,
    target_config: &ConnConfig,
    target: &mut Client,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, SnapshotError> {
    let catalog = connect_source(source_config).await?;
    let published: Vec<(String, String)> = catalog::published(&catalog, &options.publication)
        .await?
        .into_iter()
        .map(|t| (t.schema, t.name))
        .collect();
    let known: HashSet<(String, String)> = state::tables(target, &options.slot)
        .await?
        .into_iter()
        .collect();
    let pending: Vec<(String, String)> = state::pending(target, &options.slot)
        .await?
        .into_iter()
        .filter(|t| published.contains(t))
        .collect();
    let new: Vec<(String, String)> = published
        .iter()
        .filter(|t| !known.contains(*t))
        .cloned()
        .collect();
    for (schema, table) in known.iter().filter(|t| !published.contains(*t)) {
        tracing::warn!(
            table = %format!("{schema}.{table}"),
            "table left the publication: its changes are no longer replicated"
        );
    }
    for (names, fresh) in [(pending, false), (new, true)] {
        if names.is_empty() {
            continue;
        }
        let copied = copy_at_new_point(
            &names,
            fresh,
            options,
            source_config,
            target_config,
            target,
            metrics,
            shutdown,
            |_| {},
        )
        .await?;
        if copied.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copies of tables that join the publication while streaming.
#[derive(Debug)]
pub struct AddedTables {
    options: SnapshotOptions,
    source: ConnConfig,
    target: ConnConfig,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
    /// Tables this slot holds or is copying; `None` when lsnpipe did not copy this slot's data
    /// (it cannot tell a new table from one the operator filled).
    known: Option<HashSet<(String, String)>>,
}

impl AddedTables {
    /// For a session of `options.slot`; `known` as read from the copy state (or `None`).
    pub fn new(
        options: SnapshotOptions,
        source: ConnConfig,
        target: ConnConfig,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
        known: Option<HashSet<(String, String)>>,
    ) -> Self {
        AddedTables {
            options,
            source,
            target,
            metrics,
            shutdown,
            known,
        }
    }

    /// `schema.table` is held by this slot from now on (created on the target by captured DDL).
    pub fn known(&mut self, schema: &str, table: &str) {
        if let Some(known) = self.known.as_mut() {
            known.insert((schema.to_owned(), table.to_owned()));
        }
    }

    /// A Relation message named `schema.table`: when it is a table this slot does not hold yet,
    /// start copying it and return the copy's progress for the stream's filter.
    pub fn relation(&mut self, schema: &str, table: &str) -> Option<watch::Receiver<TableSync>> {
        let known = self.known.as_mut()?;
        let key = (schema.to_owned(), table.to_owned());
        if !known.insert(key.clone()) {
            return None;
        }
        let (tx, rx) = watch::channel(TableSync::Starting);
        let tx = Arc::new(tx);
        let options = self.options.clone();
        let (source, target) = (self.source.clone(), self.target.clone());
        let metrics = self.metrics.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let names = [key];
            let point = tx.clone();
            let result = async {
                let mut client = wire::connect_sql(&target)
                    .await
                    .map_err(SnapshotError::TargetSql)?;
                copy_at_new_point(
                    &names,
                    true,
                    &options,
                    &source,
                    &target,
                    &mut client,
                    &metrics,
                    &mut shutdown,
                    |sync| {
                        let _ = point.send(TableSync::Copying { sync });
                    },
                )
                .await
            }
            .await;
            let _ = tx.send(match result {
                Ok(Some(sync)) => TableSync::Done { sync },
                Ok(None) => TableSync::Failed("stopped".into()),
                Err(e) => TableSync::Failed(crate::report::chain(&e)),
            });
        });
        Some(rx)
    }
}

/// The temporary slot of a copy of tables that joined the publication.
fn added_slot_name(slot: &str, names: &[(String, String)]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    names.hash(&mut hasher);
    let suffix = format!("_add{:08x}", hasher.finish() & 0xffff_ffff);
    let base: String = slot.chars().take(63 - suffix.len()).collect();
    format!("{base}{suffix}")
}
