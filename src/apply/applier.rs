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

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use super::batch::{ColumnSet, Group, GroupLimits};
use super::drift::SchemaChanges;
use super::durability::Unflushed;
use super::error::{ApplyError, Operation};
use super::inflight::{Context, InFlight};
use super::planner::{Plan, Planner, TableOrder};
use super::progress;
use super::relation::{Relation, RelationCache, SourceRelation};
use super::sql::{self, TruncateTarget};
use super::statements::{OldMatch, StatementKey, StatementKind, statement_text};
use super::value::Param;
use crate::Lsn;
use crate::ddl::{self, CapturedDdl, TableName};
use crate::pgoutput::{
    ColumnValue, Commit, Delete, Insert, LogicalDecodingMessage, LogicalMessage, OldTuple,
    ReplicaIdentity, Truncate, TupleData, Update,
};

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
        let durable = progress::prepare(&client, slot).await?;
        // The row read may belong to an asynchronous commit the target has not flushed yet; the
        // stream reports it as flushed from its first status update, so flush it first.
        progress::flush(&client, slot).await?;
        let progress_statement = client.prepare(progress::WRITE).await.map_err(|e| {
            ApplyError::from_target(e, progress::table_name(), Operation::Bookkeeping)
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

    /// The end LSN of the last finished source transaction in the open group, if the group is
    /// past its age limit while a source transaction is still being received into it. Finished
    /// transactions can only be committed together with the one in progress, so a stream that
    /// stalls mid-transaction would hold them (and their locks) until it resumes; the pipeline
    /// then abandons the group and replays it from the progress row, committing at this LSN.
    pub fn held_by_open_transaction(&self) -> Option<Lsn> {
        if self.source != SourceTransaction::Applying {
            return None;
        }
        let group = self.group.as_ref()?;
        if group.age() < self.limits.max_age {
            return None;
        }
        group.last_commit.map(|(end_lsn, _)| end_lsn)
    }

    /// Apply one decoded message. On error the open target transaction has been rolled back.
    pub async fn apply(&mut self, message: LogicalMessage) -> Result<(), ApplyError> {
        match self.dispatch(message).await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// Call after each source Commit. Commits the open group — progress row first, in the same
    /// transaction — when `caught_up` or the group reached its limits, and returns the end LSN
    /// now committed (visible) on the target; otherwise `None` (the group stays open for more).
    /// The commit is asynchronous: [`Applier::confirm_durable`] says when it is on disk.
    /// Also call it with `true` when the stream goes quiet between transactions, so an open
    /// group does not wait for the next Commit.
    pub async fn commit_if(&mut self, caught_up: bool) -> Result<Option<Lsn>, ApplyError> {
        if self.source != SourceTransaction::Outside {
            return Ok(None);
        }
        let Some(group) = &self.group else {
            return Ok(None);
        };
        if group.last_commit.is_none() || !(caught_up || group.is_full(&self.limits)) {
            return Ok(None);
        }
        match self.commit_group().await {
            Ok(lsn) => Ok(Some(lsn)),
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
            _ => Err(ApplyError::protocol(
                "streamed or two-phase transaction messages are not supported: start \
                 replication with proto_version 1 on a slot created without two_phase",
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
        if final_lsn < self.durable {
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

    /// Run a captured DDL command in the open group, at its place among the changes: rows
    /// before it are sent first, and every table is checked again after it (the Relation
    /// message that follows then finds the target matching, so drift adds nothing twice).
    async fn captured_ddl(&mut self, message: &LogicalDecodingMessage) -> Result<(), ApplyError> {
        let Some(publication) = &self.ddl_publication else {
            return Ok(());
        };
        let lsn = message.lsn;
        let ddl =
            CapturedDdl::parse(&message.content).map_err(|reason| ApplyError::DdlUnapplicable {
                lsn,
                command: String::from_utf8_lossy(&message.content).into_owned(),
                reason,
            })?;
        if !ddl.concerns(publication) {
            return Ok(());
        }
        if self.skip_ddl == Some(lsn) {
            tracing::warn!(%lsn, command = %ddl.command, "captured DDL skipped (--skip-ddl)");
            return Ok(());
        }
        let statement = ddl
            .statement()
            .map_err(|reason| ApplyError::DdlUnapplicable {
                lsn,
                command: ddl.command.clone(),
                reason,
            })?;
        self.planner.flush_all();
        self.run_plans().await?;
        self.inflight.drain().await?;
        let client = self.inflight.client();
        let failed = |e| ApplyError::ddl_failed(e, lsn, &ddl.command);
        client
            .execute(
                "SELECT pg_catalog.set_config('search_path', $1, true)",
                &[&ddl.search_path],
            )
            .await
            .map_err(failed)?;
        client.batch_execute(&statement).await.map_err(failed)?;
        client
            .batch_execute("SET LOCAL search_path = ''")
            .await
            .map_err(failed)?;
        if !ddl.created.is_empty() {
            progress::register_created(client, &self.slot, &ddl.created)
                .await
                .map_err(failed)?;
            self.created_tables.extend(ddl.created.iter().cloned());
        }
        tracing::info!(%lsn, command = %statement, "captured DDL applied on the target");
        // Statements prepared for the old shape would fail or address renamed columns.
        self.statements.clear();
        self.relations.forget_targets();
        self.pending_schema_changes.push("ddl");
        Ok(())
    }

    /// How freely `oid`'s changes may be reordered (its target table is checked).
    fn order(&self, relation: &Relation) -> TableOrder {
        match &relation.target {
            Some(target) if self.replica_role => target.order,
            _ => TableOrder::Global,
        }
    }

    async fn insert(&mut self, insert: &Insert) -> Result<(), ApplyError> {
        let oid = insert.relation_oid;
        self.check_target(oid).await?;
        let relation = self.relations.get(oid)?;
        check_width(relation, &insert.new)?;
        let order = self.order(relation);
        // An unchanged-TOAST marker in an insert (a row-filter transformation) has no value:
        // leave the column out so the target's default applies.
        let mut columns = ColumnSet::with_columns(relation.source.columns.len());
        let mut row = Vec::with_capacity(relation.source.columns.len());
        for (i, value) in insert.new.iter().enumerate() {
            if let Some(p) = written(relation, i, value) {
                columns.insert(i);
                row.push(p);
            }
        }
        self.count(oid, Operation::Insert);
        self.planner.insert(oid, order, columns, row);
        self.run_plans().await
    }

    async fn update(&mut self, update: &Update) -> Result<(), ApplyError> {
        let oid = update.relation_oid;
        self.check_target(oid).await?;
        self.count(oid, Operation::Update);
        let relation = self.relations.get(oid)?;
        check_width(relation, &update.new)?;
        let order = self.order(relation);
        if update.old.is_none() && relation.source.identity != ReplicaIdentity::Full {
            // The key is unchanged: the planner decides whether it may be folded.
            let mut key = Vec::new();
            key_params(relation, &update.new, &mut key)?;
            let values = update
                .new
                .iter()
                .enumerate()
                .map(|(i, value)| written(relation, i, value))
                .collect();
            self.planner.update(oid, order, key, values);
            return self.run_plans().await;
        }

        // SET every column that was sent; unchanged TOAST values stay as they are on the
        // target (under FULL identity the matched row already holds the old value).
        let width = relation.source.columns.len();
        let mut set = ColumnSet::with_columns(width);
        let mut params = Vec::with_capacity(width * 2);
        for (i, value) in update.new.iter().enumerate() {
            if let Some(p) = written(relation, i, value) {
                set.insert(i);
                params.push(p);
            }
        }
        if params.is_empty() {
            return Ok(());
        }
        let kind = if relation.source.identity == ReplicaIdentity::Full {
            let Some(OldTuple::Full(old)) = &update.old else {
                return Err(ApplyError::protocol(format!(
                    "an update of {} (REPLICA IDENTITY FULL) came without its old row",
                    relation.name
                )));
            };
            StatementKind::UpdateOneRow {
                old: full_match(relation, old, &mut params)?,
            }
        } else {
            let key_tuple = match &update.old {
                Some(OldTuple::Key(key)) | Some(OldTuple::Full(key)) => key,
                None => &update.new,
            };
            check_width(relation, key_tuple)?;
            key_params(relation, key_tuple, &mut params)?;
            StatementKind::UpdateByKey
        };
        let plan = Plan::Rows {
            oid,
            kind,
            columns: set,
            params,
            operation: Operation::Update,
        };
        self.planner.statement(plan, order);
        self.run_plans().await
    }

    async fn delete(&mut self, delete: &Delete) -> Result<(), ApplyError> {
        let oid = delete.relation_oid;
        self.check_target(oid).await?;
        self.count(oid, Operation::Delete);
        let relation = self.relations.get(oid)?;
        let order = self.order(relation);
        let old = delete.old.tuple();
        check_width(relation, old)?;
        let mut params = Vec::new();
        if relation.source.identity != ReplicaIdentity::Full {
            key_params(relation, old, &mut params)?;
            self.planner.delete(oid, order, params);
            return self.run_plans().await;
        }
        let kind = StatementKind::DeleteOneRow {
            old: full_match(relation, old, &mut params)?,
        };
        let plan = Plan::Rows {
            oid,
            kind,
            columns: ColumnSet::default(),
            params,
            operation: Operation::Delete,
        };
        self.planner.statement(plan, order);
        self.run_plans().await
    }

    async fn truncate(&mut self, truncate: &Truncate) -> Result<(), ApplyError> {
        let mut oids = Vec::with_capacity(truncate.relation_count());
        for oid in truncate.relation_oids() {
            self.check_target(oid).await?;
            oids.push(oid);
        }
        if oids.is_empty() {
            return Ok(());
        }
        self.stats.truncates += 1;
        if let Some(group) = &mut self.group {
            for &oid in &oids {
                group.count(oid, Operation::Truncate);
            }
        }
        self.planner.truncate(oids, truncate.restart_identity());
        self.run_plans().await
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

    async fn commit_group(&mut self) -> Result<Lsn, ApplyError> {
        self.planner.flush_all();
        self.run_plans().await?;
        let Some((end_lsn, commit_time)) = self.group.as_ref().and_then(|g| g.last_commit) else {
            return Err(ApplyError::protocol("no source commit to record"));
        };
        let params = progress::write_params(&self.slot, end_lsn, Some(commit_time));
        self.inflight
            .execute(
                self.progress_statement.clone(),
                params,
                Context {
                    table: Arc::from(progress::table_name()),
                    operation: Operation::Bookkeeping,
                    expected_rows: 0,
                },
            )
            .await?;
        self.inflight.simple("COMMIT".into()).await?;
        // The commit's WAL position is asked right behind it: one round trip for the group's
        // last statements, its commit and the position (see `await_flush_of`).
        let row = self
            .inflight
            .query_one_behind(self.insert_lsn_statement.clone())
            .await?;
        self.unflushed.push(parse_lsn_row(&row)?, end_lsn);
        self.committed
            .schema_changes
            .append(&mut self.pending_schema_changes);
        if let Some(group) = self.group.take() {
            self.committed.transactions += group.transactions;
            self.committed.duration += group.age();
            for ((oid, operation), rows) in group.rows_by_table {
                let table = match self.relations.get(oid) {
                    Ok(r) => format!("{}.{}", r.source.schema, r.source.table),
                    Err(_) => "unknown".to_owned(),
                };
                self.committed.rows.push((table, operation, rows));
            }
        }
        self.durable = end_lsn;
        self.stats.target_commits += 1;
        Ok(end_lsn)
    }

    /// Record `lsn`, a position the stream passed with nothing to apply (see
    /// `Positions::idle_position`), in the progress row: one small asynchronous transaction.
    /// Like a commit, it is reported by [`Applier::confirm_durable`] once on disk. Only between
    /// groups; returns whether it was written.
    pub async fn record_idle(&mut self, lsn: Lsn) -> Result<bool, ApplyError> {
        if !self.is_idle() || lsn <= self.durable {
            return Ok(false);
        }
        let params = progress::write_params(&self.slot, lsn, None);
        self.inflight
            .client()
            .execute_raw(&self.progress_statement, params)
            .await
            .map_err(|e| {
                ApplyError::from_target(e, progress::table_name(), Operation::Bookkeeping)
            })?;
        self.await_flush_of(lsn).await?;
        self.durable = lsn;
        Ok(true)
    }

    /// After a commit recording source position `lsn`: its commit record is behind the target's
    /// WAL insert position, so once the target has flushed past that, `lsn` is on disk.
    async fn await_flush_of(&mut self, lsn: Lsn) -> Result<(), ApplyError> {
        let target_lsn = self
            .inflight
            .client()
            .query_one(&self.insert_lsn_statement, &[])
            .await
            .map_err(|e| ApplyError::from_target(e, "(session)", Operation::Bookkeeping))
            .and_then(|row| parse_lsn_row(&row))?;
        self.unflushed.push(target_lsn, lsn);
        Ok(())
    }

    /// The end LSN of the newest source commit that is now on the target's disk, if any became
    /// so since the last call. Asks the target for its WAL flush position (one round trip) only
    /// while some commit is waiting.
    /// Safe inside an open group: the query reads no table, and it queues behind the group's
    /// pipelined statements.
    pub async fn confirm_durable(&mut self) -> Result<Option<Lsn>, ApplyError> {
        if self.unflushed.is_empty() {
            return Ok(None);
        }
        let row = self
            .inflight
            .client()
            .query_one(&self.flush_lsn_statement, &[])
            .await
            .map_err(|e| ApplyError::from_target(e, "(session)", Operation::Bookkeeping))?;
        Ok(self.unflushed.release(parse_lsn_row(&row)?))
    }

    /// Make every commit so far durable now (a small synchronous commit flushes all WAL before
    /// it), and return the newest source end LSN covered. For a clean stop.
    pub async fn sync(&mut self) -> Result<Option<Lsn>, ApplyError> {
        if self.unflushed.is_empty() || self.group.is_some() {
            return Ok(None);
        }
        progress::flush(self.inflight.client(), &self.slot).await?;
        self.confirm_durable().await
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

    /// What has been committed on the target since the last call: source transactions and row
    /// changes per `schema.table` and operation (for metrics).
    pub fn take_committed(&mut self) -> Committed {
        std::mem::take(&mut self.committed)
    }

    /// Send `sql` (a savepoint, a `SET LOCAL`) inside the open source transaction, after every
    /// change received before it: nothing buffered by the planner may cross it. For streamed
    /// transactions, whose subtransactions are undone with savepoints.
    pub async fn execute_in_order(&mut self, sql: String) -> Result<(), ApplyError> {
        if self.source != SourceTransaction::Applying {
            return Err(ApplyError::protocol(
                "a statement for an open transaction came outside one",
            ));
        }
        self.planner.flush_all();
        let sent = match self.run_plans().await {
            Ok(()) => self.inflight.simple(sql).await,
            Err(err) => Err(err),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// Give up the open source transaction (the source aborted it): roll back the target
    /// transaction, keep the session for the next one.
    pub async fn rollback(&mut self) -> Result<(), ApplyError> {
        self.inflight.clear();
        self.source = SourceTransaction::Outside;
        self.planner.clear();
        self.pending_schema_changes.clear();
        if self.group.take().is_some() {
            // The rolled-back transaction may have changed a table's shape: check every table
            // anew before its next use.
            self.relations.forget_targets();
            self.inflight
                .client()
                .batch_execute("ROLLBACK")
                .await
                .map_err(|e| ApplyError::from_target(e, "(session)", Operation::Bookkeeping))?;
        }
        Ok(())
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
        tracing::debug!(error = %err, kind = err.kind(), "apply failed; target transaction rolled back");
        err
    }
}

/// Set up the apply session. Returns whether `session_replication_role = replica` is in effect.
const TARGET_INSERT_LSN: &str = "SELECT pg_catalog.pg_current_wal_insert_lsn()::text";
const TARGET_FLUSH_LSN: &str = "SELECT pg_catalog.pg_current_wal_flush_lsn()::text";
/// A transaction with an xid, committed synchronously: its commit flushes all WAL before it.
fn parse_lsn_row(row: &tokio_postgres::Row) -> Result<Lsn, ApplyError> {
    let text: String = row
        .try_get(0)
        .map_err(|e| ApplyError::from_target(e, "(session)", Operation::Bookkeeping))?;
    text.parse()
        .map_err(|e| ApplyError::protocol(format!("the target reported an unreadable LSN: {e}")))
}

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

/// The value written to source column `i`: none for a column generated on the target (the
/// target computes it) or an unchanged TOAST value.
fn written(relation: &Relation, i: usize, value: ColumnValue) -> Option<Param> {
    if relation.target.as_ref().is_some_and(|t| t.is_generated(i)) {
        return None;
    }
    param(value)
}

fn param(value: ColumnValue) -> Option<Param> {
    match value {
        ColumnValue::Null => Some(Param::Null),
        ColumnValue::UnchangedToast => None,
        ColumnValue::Text(bytes) => Some(Param::Text(bytes)),
        ColumnValue::Binary(bytes) => Some(Param::Binary(bytes)),
    }
}

fn check_width(relation: &Relation, tuple: &TupleData) -> Result<(), ApplyError> {
    if tuple.len() == relation.source.columns.len() {
        Ok(())
    } else {
        Err(ApplyError::protocol(format!(
            "a row for {} has {} columns, its Relation message {}",
            relation.name,
            tuple.len(),
            relation.source.columns.len()
        )))
    }
}

/// Push the key values of `tuple`.
fn key_params(
    relation: &Relation,
    tuple: &TupleData,
    params: &mut Vec<Param>,
) -> Result<(), ApplyError> {
    let mut keys = 0;
    for (column, value) in relation.source.columns.iter().zip(tuple.iter()) {
        if !column.is_key {
            continue;
        }
        let Some(p) = param(value) else {
            return Err(ApplyError::protocol(format!(
                "the key column \"{}\" of {} was not sent (unchanged TOAST)",
                column.name, relation.name
            )));
        };
        params.push(p);
        keys += 1;
    }
    if keys == 0 {
        return Err(ApplyError::protocol(format!(
            "{} has no replica identity key on the source, yet an update or delete arrived",
            relation.name
        )));
    }
    Ok(())
}

/// Push the values an identity-FULL match compares and return the match's shape.
fn full_match(
    relation: &Relation,
    old: &TupleData,
    params: &mut Vec<Param>,
) -> Result<OldMatch, ApplyError> {
    check_width(relation, old)?;
    let width = relation.source.columns.len();
    let comparable = relation.target.as_ref().map(|t| &t.comparable);
    let mut nulls = ColumnSet::with_columns(width);
    let mut skipped = ColumnSet::with_columns(width);
    for (i, value) in old.iter().enumerate() {
        let equality = comparable.and_then(|c| c.get(i)).copied().unwrap_or(false);
        if relation.target.as_ref().is_some_and(|t| t.is_generated(i)) {
            // The target computed its own value; the row is found by the others.
            skipped.insert(i);
            continue;
        }
        match value {
            ColumnValue::Null => nulls.insert(i),
            ColumnValue::Binary(_) if !equality => skipped.insert(i),
            ColumnValue::Text(bytes) => params.push(Param::Text(bytes)),
            ColumnValue::Binary(bytes) => params.push(Param::Binary(bytes)),
            ColumnValue::UnchangedToast => {
                return Err(ApplyError::protocol(format!(
                    "the old row of {} lacks a column value (unchanged TOAST)",
                    relation.name
                )));
            }
        }
    }
    Ok(OldMatch { nulls, skipped })
}
