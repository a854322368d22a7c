//! `Applier`: applies decoded source transactions to the target in commit order, exactly once.
//!
//! ```text
//!   Begin ─┬─ final_lsn < stored progress ─▶ skipping (already applied) … until its Commit
//!          └─ else: BEGIN on the target unless a group is open (sent with the group's first
//!             statement, so a caught-up transaction reaches the target in one write)
//!   Relation ─▶ cache;  Type / Origin ─▶ ignored
//!   Message 'lsnpipe.ddl' ─▶ captured DDL run in the open group (see `crate::ddl`); others ignored
//!   Insert / Update / Delete / Truncate ─▶ planner (what is buffered, merged, folded, and in
//!                                          which order) ─▶ plans ─▶ pipelined on the target
//!   Commit ─▶ group += 1 ─▶ commit_if(caught_up): flush, progress row, COMMIT ─▶ Some(end_lsn)
//! ```
//!
//! Changes execute as they arrive (nothing waits for the source Commit), so a source
//! transaction of any size streams through in bounded memory. What may be reordered is decided
//! per table by [`super::planner`] from the target's unique indexes and triggers; this type only
//! turns messages into planner input and executes the plans.
//!
//! On any error the target transaction is rolled back and the error returned; nothing after the
//! last durable LSN survives. Drop the `Applier`, reconnect, and build a new one: it resumes from
//! the progress row.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use super::batch::{ColumnSet, Group, GroupLimits};
use super::drift::SchemaChanges;
use super::durability::Unflushed;
use super::error::{ApplyError, Operation};
use super::inflight::{Context, InFlight};
use super::planner::{Plan, Planner, TableOrder};
use super::progress_row;
use super::relation::{CachedRelation, RelationCache, SourceRelation};
use super::sql::{self, TruncateTarget};
use super::statements::{OldMatch, StatementKey, StatementKind, statement_text};
use super::value::Param;
use crate::Lsn;
use crate::ddl::{self, CapturedDdl, TableName};
use crate::positions::already_applied;
mod changes;
mod commit;
mod ddl_apply;
mod params;
mod streamed;

use crate::pgoutput::{
    ColumnValue, Commit, Delete, Insert, LogicalDecodingMessage, LogicalMessage, OldTuple,
    ReplicaIdentity, Truncate, TupleData, Update,
};
use commit::{TARGET_FLUSH_LSN, TARGET_INSERT_LSN};
use params::{check_width, full_match, key_params, written};

/// Requests sent to the target and not yet answered, at most.
const PIPELINE_WINDOW: usize = 256;

/// Counters since the applier was built (changes counted as sent; a rolled-back group's
/// changes are not subtracted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub transactions: u64,
    pub skipped_transactions: u64,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub truncates: u64,
    /// Updates and deletes whose row was not on the target.
    pub rows_not_found: u64,
    pub target_commits: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceTransaction {
    Outside,
    Applying,
    /// Committed on the target before (its commit began before the stored progress LSN).
    Skipping,
}

#[derive(Debug)]
pub struct Applier {
    inflight: InFlight,
    relations: RelationCache,
    statements: HashMap<StatementKey, Statement>,
    progress_statement: Statement,
    /// `TARGET_INSERT_LSN` and `TARGET_FLUSH_LSN`, prepared: one round trip each, not two.
    insert_lsn_statement: Statement,
    flush_lsn_statement: Statement,
    slot: String,
    /// The stored progress LSN: end LSN of the last source commit durable on the target.
    durable: Lsn,
    limits: GroupLimits,
    group: Option<Group>,
    source: SourceTransaction,
    /// What the open group's changes become, in which order.
    planner: Planner,
    /// What to do when a source table's columns drift from the target's.
    schema_changes: SchemaChanges,
    /// A session on the source, read when a column is added (see `RelationCache::drift`).
    source_catalog: Option<Client>,
    /// Schema changes made in the open group, reported once it commits.
    pending_schema_changes: Vec<&'static str>,
    /// Captured DDL is applied when it concerns this publication (`None`: messages ignored).
    ddl_publication: Option<String>,
    /// The captured command at this LSN is skipped (the operator applied it by hand).
    skip_ddl: Option<Lsn>,
    /// Tables created by captured DDL since the last [`Applier::take_created_tables`].
    created_tables: Vec<TableName>,
    /// `session_replication_role = replica` is in effect, so runs into different tables commute.
    replica_role: bool,
    stats: ApplyStats,
    committed: Committed,
    unflushed: Unflushed,
    /// (table, column) pairs an insert arrived for without a value, already logged once.
    warned_valueless: HashSet<(Arc<str>, usize)>,
}

/// Source transactions and row changes committed on the target (see [`Applier::take_committed`]).
#[derive(Debug, Default)]
pub struct Committed {
    pub transactions: u64,
    /// From the opening of each target transaction to its commit.
    pub duration: std::time::Duration,
    pub rows: Vec<(String, Operation, u64)>,
    /// Schema changes made on the target, by kind (`add_column`, `alter_type`, …).
    pub schema_changes: Vec<&'static str>,
}

impl Applier {
    /// Prepare the session (`session_replication_role = replica` where permitted), create the
    /// progress table if missing and read this slot's position from it.
    pub async fn new(client: Client, slot: &str) -> Result<Self, ApplyError> {
        Self::with_limits(client, slot, GroupLimits::default()).await
    }

    /// [`Applier::new`] with explicit group commit limits.
    pub async fn with_limits(
        client: Client,
        slot: &str,
        limits: GroupLimits,
    ) -> Result<Self, ApplyError> {
        let replica_role = prepare_session(&client).await?;
        let durable = progress_row::prepare(&client, slot).await?;
        // The row read may belong to an asynchronous commit the target has not flushed yet; the
        // stream reports it as flushed from its first status update, so flush it first.
        progress_row::flush(&client, slot).await?;
        let progress_statement = client.prepare(progress_row::WRITE).await.map_err(|e| {
            ApplyError::from_target(e, progress_row::table_name(), Operation::Bookkeeping)
        })?;
        let prepare = |sql| {
            let client = &client;
            async move {
                client
                    .prepare(sql)
                    .await
                    .map_err(|e| ApplyError::from_target(e, "(session)", Operation::Bookkeeping))
            }
        };
        let insert_lsn_statement = prepare(TARGET_INSERT_LSN).await?;
        let flush_lsn_statement = prepare(TARGET_FLUSH_LSN).await?;
        Ok(Applier {
            inflight: InFlight::new(Arc::new(client), PIPELINE_WINDOW),
            insert_lsn_statement,
            flush_lsn_statement,
            relations: RelationCache::default(),
            statements: HashMap::new(),
            progress_statement,
            slot: slot.to_owned(),
            durable,
            limits,
            group: None,
            source: SourceTransaction::Outside,
            planner: Planner::default(),
            schema_changes: SchemaChanges::default(),
            source_catalog: None,
            pending_schema_changes: Vec::new(),
            ddl_publication: None,
            skip_ddl: None,
            created_tables: Vec::new(),
            replica_role,
            stats: ApplyStats::default(),
            committed: Committed::default(),
            unflushed: Unflushed::default(),
            warned_valueless: HashSet::new(),
        })
    }

    /// What to do when a source table's columns drift from the target's (default: additive).
    pub fn set_schema_changes(&mut self, mode: SchemaChanges) {
        self.schema_changes = mode;
    }

    /// A session on the source (with an empty search_path, so types print qualified): columns
    /// added on the target then get the source's type and the value its existing rows read as.
    pub fn set_source_catalog(&mut self, client: Client) {
        self.source_catalog = Some(client);
    }

    /// Apply DDL captured on the source (`lsnpipe ddl install`) that touched a table of
    /// `publication`, except the command at `skip` (already applied by hand).
    pub fn set_captured_ddl(&mut self, publication: &str, skip: Option<Lsn>) {
        self.ddl_publication = Some(publication.to_owned());
        self.skip_ddl = skip;
    }

    /// Tables created on the target by captured DDL since the last call: they start empty and
    /// fill from the stream, so they need no copy of their own.
    pub fn take_created_tables(&mut self) -> Vec<TableName> {
        std::mem::take(&mut self.created_tables)
    }

    /// The source session given by [`Applier::set_source_catalog`], for other catalog reads.
    pub fn source_catalog(&self) -> Option<&Client> {
        self.source_catalog.as_ref()
    }

    /// End LSN of the last source commit durable on the target (`Lsn::ZERO` if none yet).
    pub fn applied_lsn(&self) -> Lsn {
        self.durable
    }

    pub fn stats(&self) -> ApplyStats {
        ApplyStats {
            rows_not_found: self.inflight.rows_not_found,
            ..self.stats
        }
    }

    /// Nothing applied and not yet durable, and no source transaction open: the pipeline may
    /// then acknowledge a keepalive's WAL end (an idle publication must not pin WAL).
    pub fn is_idle(&self) -> bool {
        self.source == SourceTransaction::Outside && self.group.is_none()
    }

    /// Whether `session_replication_role = replica` is in effect on the target session.
    pub fn replica_role(&self) -> bool {
        self.replica_role
    }

    /// Apply one decoded message. On error the open target transaction has been rolled back.
    pub async fn apply(&mut self, message: LogicalMessage) -> Result<(), ApplyError> {
        match self.dispatch(message).await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    async fn dispatch(&mut self, message: LogicalMessage) -> Result<(), ApplyError> {
        let applying = self.source == SourceTransaction::Applying;
        match message {
            LogicalMessage::Begin(begin) => self.begin(begin.final_lsn).await,
            LogicalMessage::Commit(commit) => self.commit(&commit),
            LogicalMessage::Relation(relation) => {
                self.relation(SourceRelation::from_message(&relation)).await
            }
            // A user-defined type's name, for columns added by a schema change.
            LogicalMessage::Type(t) => {
                self.relations.add_type(t.oid, t.namespace(), t.name());
                Ok(())
            }
            LogicalMessage::Message(m)
                if applying && m.transactional() && m.prefix() == ddl::PREFIX =>
            {
                self.captured_ddl(&m).await
            }
            // Origins and other logical decoding messages carry nothing to apply.
            LogicalMessage::Origin(_) | LogicalMessage::Message(_) => Ok(()),
            LogicalMessage::Insert(insert) if applying => self.insert(&insert).await,
            LogicalMessage::Update(update) if applying => self.update(&update).await,
            LogicalMessage::Delete(delete) if applying => self.delete(&delete).await,
            LogicalMessage::Truncate(truncate) if applying => self.truncate(&truncate).await,
            LogicalMessage::Insert(_)
            | LogicalMessage::Update(_)
            | LogicalMessage::Delete(_)
            | LogicalMessage::Truncate(_) => {
                if self.source == SourceTransaction::Skipping {
                    Ok(())
                } else {
                    Err(ApplyError::protocol(
                        "a change arrived outside a transaction",
                    ))
                }
            }
            // Stream control and two-phase messages never reach an applier: the pipeline routes
            // the first to a streamed transaction's session and refuses the second.
            _ => Err(ApplyError::protocol(
                "a stream control or two-phase message reached the applier",
            )),
        }
    }

    async fn begin(&mut self, final_lsn: Lsn) -> Result<(), ApplyError> {
        if self.source != SourceTransaction::Outside {
            return Err(ApplyError::protocol(
                "Begin arrived inside an open transaction",
            ));
        }
        // The stored LSN is the end of a commit record; a transaction whose commit record
        // starts before it was part of what the target already has.
        if already_applied(final_lsn, self.durable) {
            self.source = SourceTransaction::Skipping;
            self.stats.skipped_transactions += 1;
            return Ok(());
        }
        if self.group.is_none() {
            self.inflight.begin_deferred();
            self.group = Some(Group::new());
        }
        self.source = SourceTransaction::Applying;
        Ok(())
    }

    fn commit(&mut self, commit: &Commit) -> Result<(), ApplyError> {
        match self.source {
            SourceTransaction::Outside => {
                Err(ApplyError::protocol("Commit arrived outside a transaction"))
            }
            SourceTransaction::Skipping => {
                self.source = SourceTransaction::Outside;
                Ok(())
            }
            SourceTransaction::Applying => {
                self.source = SourceTransaction::Outside;
                let group = self
                    .group
                    .as_mut()
                    .ok_or_else(|| ApplyError::protocol("Commit without an open target group"))?;
                group.transactions += 1;
                group.last_commit = Some((commit.end_lsn, commit.commit_time));
                self.stats.transactions += 1;
                Ok(())
            }
        }
    }

    async fn relation(&mut self, source: SourceRelation) -> Result<(), ApplyError> {
        let oid = source.oid;
        // Buffered rows were built for the old shape: send them before it is replaced.
        self.planner.flush_table(oid);
        self.run_plans().await?;
        if self.relations.replace(source) {
            self.statements.retain(|key, _| key.oid != oid);
        }
        Ok(())
    }

    /// How freely `oid`'s changes may be reordered (its target table is checked).
    fn order(&self, relation: &CachedRelation) -> TableOrder {
        match &relation.target {
            Some(target) if self.replica_role => target.order,
            _ => TableOrder::Global,
        }
    }

    /// Execute the plans the planner has ready, in order.
    async fn run_plans(&mut self) -> Result<(), ApplyError> {
        while let Some(plan) = self.planner.next_plan() {
            match plan {
                Plan::Rows {
                    oid,
                    kind,
                    columns,
                    params,
                    operation,
                } => {
                    let table = Arc::clone(&self.relations.get(oid)?.name);
                    let key = StatementKey { oid, kind, columns };
                    self.execute(key, table, operation, params).await?;
                }
                Plan::Truncate {
                    oids,
                    restart_identity,
                } => self.run_truncate(&oids, restart_identity).await?,
            }
        }
        Ok(())
    }

    /// One TRUNCATE of the relations the source truncated. Without CASCADE, as PostgreSQL's
    /// own apply worker: the source lists every published table its CASCADE reached, and a
    /// table that exists only on the target is the target's own business (if it references a
    /// truncated table, the target refuses, and the error names the table).
    async fn run_truncate(
        &mut self,
        oids: &[u32],
        restart_identity: bool,
    ) -> Result<(), ApplyError> {
        let mut tables = Vec::with_capacity(oids.len());
        for &oid in oids {
            let relation = self.relations.get(oid)?;
            let partitioned = relation.target.as_ref().is_some_and(|t| t.partitioned);
            tables.push(TruncateTarget {
                table: relation.name.to_string(),
                only: !partitioned,
            });
        }
        let names = tables
            .iter()
            .map(|t| t.table.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let statement = sql::truncate(&tables, false, restart_identity);
        self.inflight
            .simple_on(statement, names.into(), Operation::Truncate)
            .await
    }

    /// Check `oid`'s target table on first use. The catalog queries are awaited directly, so
    /// the queue is drained first: tokio-postgres hands responses out in order through small
    /// channels, and a queued response nobody reads could hold up the one awaited here.
    async fn check_target(&mut self, oid: u32) -> Result<(), ApplyError> {
        if self.relations.get(oid)?.target.is_none() {
            self.inflight.drain().await?;
            // Drift is fixed inside the open group, before the first row that needs it.
            let (table, changes) = self
                .relations
                .drift(
                    self.inflight.client(),
                    self.source_catalog.as_ref(),
                    oid,
                    self.schema_changes,
                )
                .await?;
            for change in changes {
                let statement = change.sql(&table);
                tracing::info!(table = %table, change = %statement, "schema change on the target");
                self.inflight
                    .client()
                    .batch_execute(&statement)
                    .await
                    .map_err(|e| ApplyError::schema_change(e, &table, &statement))?;
                self.pending_schema_changes.push(change.kind());
            }
            self.relations.checked(self.inflight.client(), oid).await?;
        }
        Ok(())
    }

    /// Run the statement `key` describes (prepared on first use) with `params`, pipelined.
    async fn execute(
        &mut self,
        key: StatementKey,
        table: Arc<str>,
        operation: Operation,
        params: Vec<Param>,
    ) -> Result<(), ApplyError> {
        let expected_rows = match (&key.kind, operation) {
            (StatementKind::UpdateRows { rows } | StatementKind::DeleteRows { rows }, _) => {
                u64::try_from(*rows).unwrap_or(u64::MAX)
            }
            (_, Operation::Update | Operation::Delete) => 1,
            _ => 0,
        };
        let statement = match self.statements.get(&key) {
            Some(statement) => statement.clone(),
            None => {
                // Awaited out of turn, so nothing may be queued before it (see `check_target`).
                self.inflight.drain().await?;
                let text = statement_text(self.relations.get(key.oid)?, &key);
                let statement = self
                    .inflight
                    .client()
                    .prepare(&text)
                    .await
                    .map_err(|e| ApplyError::from_target(e, &table, operation))?;
                self.statements.insert(key, statement.clone());
                statement
            }
        };
        self.inflight
            .execute(
                statement,
                params,
                Context {
                    table,
                    operation,
                    expected_rows,
                },
            )
            .await
    }

    /// Count one row change of `oid` in the open group.
    fn count(&mut self, oid: u32, operation: Operation) {
        match operation {
            Operation::Insert => self.stats.inserts += 1,
            Operation::Update => self.stats.updates += 1,
            Operation::Delete => self.stats.deletes += 1,
            Operation::Truncate => self.stats.truncates += 1,
            Operation::Bookkeeping => {}
        }
        if let Some(group) = &mut self.group {
            group.count(oid, operation);
        }
    }

    /// Roll back the open target transaction and forget everything not yet durable.
    async fn fail(&mut self, err: ApplyError) -> ApplyError {
        let err = self.inflight.first_error(err).await;
        self.inflight.clear();
        if self.group.take().is_some() {
            // Best effort: if the connection is gone the server rolls back by itself.
            let _ = self.inflight.client().batch_execute("ROLLBACK").await;
        }
        self.source = SourceTransaction::Outside;
        self.planner.clear();
        self.pending_schema_changes.clear();
        // A rolled-back schema change must be made again: check every table anew.
        self.relations.forget_targets();
        tracing::debug!(
            error = %crate::report::chain(&err),
            action = ?crate::error_policy::apply(&err),
            "apply failed; target transaction rolled back"
        );
        err
    }
}

/// Set up the apply session. Returns whether `session_replication_role = replica` is in effect.
async fn prepare_session(client: &Client) -> Result<bool, ApplyError> {
    let failed = |e| ApplyError::from_target(e, "(session)", Operation::Bookkeeping);
    // Values are parsed with the session settings every connection asks for
    // (`wire::SESSION_SETTINGS`). An empty search_path, as PostgreSQL's own apply worker uses,
    // keeps objects in user schemas from capturing operators in our statements. Commits are
    // asynchronous: durability is tracked separately (see `durability.rs`).
    client
        .batch_execute("SET search_path = ''; SET synchronous_commit = off")
        .await
        .map_err(failed)?;
    match client
        .batch_execute("SET session_replication_role = replica")
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            tracing::warn!(
                "cannot set session_replication_role = replica on the target (needs superuser or \
                 GRANT SET ON PARAMETER): triggers and foreign-key checks will fire on applied rows"
            );
            Ok(false)
        }
        Err(e) => Err(failed(e)),
    }
}
