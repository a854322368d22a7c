//! Tables that join the publication after the initial copy: copied at a point of their own,
//! while the other tables keep streaming.
//!
//! ```text
//!  found (at start: published but unknown to copy_state; while streaming: a Relation message
//!  for an unknown table, or a look at pg_publication_tables every few seconds) ─▶ copy_state row 'pending' ─▶ [create on the target] ─▶ temporary
//!  slot, exported snapshot at C' ─▶ COPY ─▶ [keys and indexes] ─▶ 'done', sync LSN C'
//!
//!  the stream meanwhile (SyncFilter): the table's changes committed before C' are in the copy
//!  and dropped; a change at or after C' waits until the copy is done, then applies.
//! ```
//!
//! An empty table that joins sends no Relation message, hence the periodic look. A table it
//! finds is copied only once the stream has passed the source position read after the look:
//! by then a captured `CREATE TABLE` for it (`crate::ddl`) has been applied and marked it known.
//! A table that left the publication is reported, and set back to `pending` in the copy state:
//! its changes stop arriving, so should it rejoin, its target copy is stale and copied again.
//!
//! Only for slots whose data lsnpipe copied (a `lsnpipe.copy_run` row): they know which tables
//! they hold. Only published tables are copied: with `publish_via_partition_root`, pgoutput
//! sends a leaf partition's Relation message after its root's, though the leaf's changes come
//! as the root's and the leaf itself is not in `pg_publication_tables`. A copy interrupted by a crash stays `pending` and is made again at the next start,
//! at a newer point. The copied table must be empty on the target (a resumed one is emptied).

use std::collections::{HashMap, HashSet};
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
    /// Its copy point is not known yet, but is at or after `floor` (the source's WAL position
    /// read before the copy's slot was asked for): changes before `floor` are in the copy, so
    /// only later ones need to wait. Under load a slot takes seconds to create; without this
    /// the stream would wait that long at the table's first change.
    Preparing { floor: Lsn },
    /// Copying at `sync`: earlier changes are in the copy.
    Copying { sync: Lsn },
    /// Copied at `sync`.
    Done { sync: Lsn },
    /// The copy failed; the session must end (it is made again at the next start).
    Failed(String),
    /// Not in the publication (a leaf partition published as its root): nothing to copy, and
    /// nothing to hold.
    Unpublished,
}

/// How a copy at a new point ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NewPoint {
    /// Copied at this point.
    Copied(Lsn),
    /// Shutdown was asked for.
    Stopped,
    /// None of the tables is published: nothing was copied or recorded.
    Unpublished,
}

/// Copy `names` at a new point of their own: `fresh` tables must be empty on the target,
/// the others (an interrupted copy) are emptied. `on_point` hears the point as soon as it is
/// known.
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
    on_floor: impl FnOnce(Lsn),
    on_point: impl FnOnce(Lsn),
) -> Result<NewPoint, SnapshotError> {
    let catalog = connect_source(source_config).await?;
    // The slot is asked for after this read, so its point cannot be earlier.
    let floor: String = catalog
        .query_one(
            "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() \
                THEN pg_catalog.pg_last_wal_replay_lsn() \
                ELSE pg_catalog.pg_current_wal_lsn() END)::text",
            &[],
        )
        .await
        .map_err(source::SourceError::Catalog)?
        .try_get(0)
        .map_err(source::SourceError::Catalog)?;
    if let Ok(floor) = floor.parse() {
        on_floor(floor);
    }
    let tables: Vec<Table> = catalog::published(&catalog, &options.publication)
        .await?
        .into_iter()
        .filter(|t| names.contains(&(t.schema.clone(), t.name.clone())))
        .collect();
    if tables.is_empty() {
        // Recorded as pending, it would never be copied, and `status` would list it for ever.
        return Ok(NewPoint::Unpublished);
    }
    let found = check_tables(target, &tables, options, fresh).await?;
    let found = create_missing(&catalog, target, &tables, found).await?;
    // Pending from here on: a copy a stop interrupts is made again (emptying the table first).
    state::add_pending(target, &options.slot, names).await?;
    let mut exporter = ReplicationConnection::connect(source_config)
        .await
        .map_err(source::SourceError::from)?;
    let name = super::temporary_slot_name(&options.slot, "add");
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
        // Tables lsnpipe builds keys for are marked done after their keys (see below).
        !options.create_tables,
    )
    .await;
    let _ = exporter.close().await;
    let Some(jobs) = outcome? else {
        return Ok(NewPoint::Stopped);
    };
    if options.create_tables {
        // Until it is marked done a table stays pending, so a stop or a failure before its keys
        // and indexes exist copies it again (emptied first) and builds them on the next start.
        schema::prepare_index_session(target).await?;
        for job in &jobs {
            let table = &job.table;
            schema::build_indexes(&catalog, target, table).await?;
            state::mark_done(
                &*target,
                &options.slot,
                &table.schema,
                &table.name,
                point,
                job.progress.rows(),
            )
            .await
            .map_err(|source| SnapshotError::Copy {
                table: table.qualified(),
                source,
            })?;
        }
    }
    Ok(NewPoint::Copied(point))
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
    let left: Vec<(String, String)> = known
        .iter()
        .filter(|t| !published.contains(*t))
        .cloned()
        .collect();
    for (schema, table) in &left {
        tracing::warn!(
            table = %format!("{schema}.{table}"),
            "table left the publication: its changes are no longer replicated"
        );
    }
    state::set_pending(target, &options.slot, &left).await?;
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
            |_| {},
        )
        .await?;
        if copied == NewPoint::Stopped {
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
    /// Published tables not known yet, with the source position after which they were seen.
    seen: HashMap<(String, String), Lsn>,
    /// Known tables no longer published, with the source position after which that was seen.
    leaving: HashMap<(String, String), Lsn>,
    /// Known tables that left the publication (reported once; copied again, emptied, if they
    /// rejoin).
    left: HashSet<(String, String)>,
}

/// What [`AddedTables::due`] did.
#[derive(Debug, Default)]
pub struct Due {
    /// Copies started: (schema, table, progress).
    pub started: Vec<(String, String, watch::Receiver<TableSync>)>,
    /// Tables that left the publication.
    pub left: Vec<(String, String)>,
}

/// Take the entries of `found` at or before `passed`.
fn ready(found: &mut HashMap<(String, String), Lsn>, passed: Lsn) -> Vec<(String, String)> {
    let mut ready: Vec<(String, String)> = found
        .iter()
        .filter(|(_, at)| **at <= passed)
        .map(|(t, _)| t.clone())
        .collect();
    ready.sort();
    for table in &ready {
        found.remove(table);
    }
    ready
}

/// What a look at the publication's tables changes, given the tables known.
#[derive(Debug, Default, PartialEq, Eq)]
struct Listing {
    /// Published, not known, not seen before.
    new: Vec<(String, String)>,
    /// Known, no longer published, not reported before.
    left: Vec<(String, String)>,
}

fn compare(
    known: &HashSet<(String, String)>,
    seen: &HashMap<(String, String), Lsn>,
    reported: &HashSet<(String, String)>,
    published: &[(String, String)],
) -> Listing {
    let listed: HashSet<&(String, String)> = published.iter().collect();
    let mut listing = Listing {
        new: published
            .iter()
            .filter(|t| !known.contains(*t) && !seen.contains_key(*t))
            .cloned()
            .collect(),
        left: known
            .iter()
            .filter(|t| !listed.contains(t) && !reported.contains(*t))
            .cloned()
            .collect(),
    };
    listing.left.sort();
    listing
}

impl AddedTables {
    /// For a session of `options.slot`; `known` as read from the copy state (or `None`), `left`
    /// the tables an earlier session saw leave the publication.
    pub fn new(
        options: SnapshotOptions,
        source: ConnConfig,
        target: ConnConfig,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
        known: Option<HashSet<(String, String)>>,
        left: HashSet<(String, String)>,
    ) -> Self {
        AddedTables {
            options,
            source,
            target,
            metrics,
            shutdown,
            known,
            seen: HashMap::new(),
            leaving: HashMap::new(),
            left,
        }
    }

    /// The publication lists `published` as of source position `at` (read after the list).
    /// What changed is acted on once the stream passes `at` ([`AddedTables::due`]): before
    /// that, a captured `CREATE TABLE` or the table's last published changes are still coming.
    pub fn listed(&mut self, published: &[(String, String)], at: Lsn) {
        let Some(known) = self.known.as_ref() else {
            return;
        };
        let listing = compare(known, &self.seen, &self.left, published);
        for table in listing.new {
            self.seen.insert(table, at);
        }
        for table in listing.left {
            self.leaving.entry(table).or_insert(at);
        }
        // Listed again before the stream got there: it did not leave after all.
        self.leaving.retain(|t, _| !published.contains(t));
    }

    /// What [`AddedTables::listed`] found that the stream has now passed (`passed`): tables
    /// still unknown start copying (their progress is returned for the filter), and tables that
    /// left are set back to pending and returned, once each.
    pub async fn due(&mut self, passed: Lsn) -> Result<Due, SnapshotError> {
        let mut due = Due::default();
        for (schema, table) in ready(&mut self.seen, passed) {
            if let Some(sync) = self.relation(&schema, &table) {
                due.started.push((schema, table, sync));
            }
        }
        let left = ready(&mut self.leaving, passed);
        if left.is_empty() {
            return Ok(due);
        }
        let mut target = wire::connect_sql(&self.target)
            .await
            .map_err(SnapshotError::TargetSql)?;
        state::set_pending(&mut target, &self.options.slot, &left).await?;
        for table in left {
            if let Some(known) = self.known.as_mut() {
                known.remove(&table);
            }
            self.left.insert(table.clone());
            due.left.push(table);
        }
        Ok(due)
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
        self.seen.remove(&key);
        // A table that left and rejoined holds stale rows on the target: emptied and copied.
        let fresh = !self.left.remove(&key);
        let (tx, rx) = watch::channel(TableSync::Starting);
        let tx = Arc::new(tx);
        let options = self.options.clone();
        let (source, target) = (self.source.clone(), self.target.clone());
        let metrics = self.metrics.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let names = [key];
            let point = tx.clone();
            let floor = tx.clone();
            let result = async {
                let mut client = wire::connect_sql(&target)
                    .await
                    .map_err(SnapshotError::TargetSql)?;
                copy_at_new_point(
                    &names,
                    fresh,
                    &options,
                    &source,
                    &target,
                    &mut client,
                    &metrics,
                    &mut shutdown,
                    |at| {
                        let _ = floor.send(TableSync::Preparing { floor: at });
                    },
                    |sync| {
                        let _ = point.send(TableSync::Copying { sync });
                    },
                )
                .await
            }
            .await;
            let _ = tx.send(match result {
                Ok(NewPoint::Copied(sync)) => TableSync::Done { sync },
                Ok(NewPoint::Stopped) => TableSync::Failed("stopped".into()),
                Ok(NewPoint::Unpublished) => TableSync::Unpublished,
                Err(e) => TableSync::Failed(crate::report::chain(&e)),
            });
        });
        Some(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> (String, String) {
        ("public".to_owned(), name.to_owned())
    }

    #[test]
    fn a_look_at_the_publication_finds_joined_and_left_tables_once() {
        let known: HashSet<_> = [t("a"), t("b")].into();
        let mut seen = HashMap::new();
        let mut reported = HashSet::new();
        let listing = compare(&known, &seen, &reported, &[t("a"), t("c")]);
        assert_eq!(
            listing,
            Listing {
                new: vec![t("c")],
                left: vec![t("b")],
            }
        );
        // Seen and reported already: nothing new the next time.
        seen.insert(t("c"), Lsn::ZERO);
        reported.insert(t("b"));
        assert_eq!(
            compare(&known, &seen, &reported, &[t("a"), t("c")]),
            Listing::default()
        );
        assert_eq!(compare(&known, &seen, &reported, &[]).left, vec![t("a")]);
    }

    #[test]
    fn what_a_look_found_waits_until_the_stream_has_passed_it() {
        let at = |n: u64| Lsn::from(n);
        let mut found: HashMap<_, _> = [(t("b"), at(20)), (t("a"), at(10))].into();
        assert!(ready(&mut found, at(9)).is_empty());
        assert_eq!(ready(&mut found, at(10)), vec![t("a")]);
        assert_eq!(ready(&mut found, at(100)), vec![t("b")]);
        assert!(found.is_empty());
    }
}
