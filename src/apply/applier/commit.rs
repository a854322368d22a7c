//! Committing a group (progress row first, in the same transaction), recording idle
//! positions, and telling which commits the target has flushed.

use super::*;

impl Applier {
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

    pub(super) async fn commit_group(&mut self) -> Result<Lsn, ApplyError> {
        self.planner.flush_all();
        self.run_plans().await?;
        let Some((end_lsn, commit_time)) = self.group.as_ref().and_then(|g| g.last_commit) else {
            return Err(ApplyError::protocol("no source commit to record"));
        };
        let params = progress_row::write_params(&self.slot, end_lsn, Some(commit_time));
        self.inflight
            .execute(
                self.progress_statement.clone(),
                params,
                Context {
                    table: Arc::from(progress_row::table_name()),
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
        let params = progress_row::write_params(&self.slot, lsn, None);
        self.inflight
            .client()
            .execute_raw(&self.progress_statement, params)
            .await
            .map_err(|e| {
                ApplyError::from_target(e, progress_row::table_name(), Operation::Bookkeeping)
            })?;
        self.await_flush_of(lsn).await?;
        self.durable = lsn;
        Ok(true)
    }

    /// After a commit recording source position `lsn`: its commit record is behind the target's
    /// WAL insert position, so once the target has flushed past that, `lsn` is on disk.
    pub(super) async fn await_flush_of(&mut self, lsn: Lsn) -> Result<(), ApplyError> {
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
        progress_row::flush(self.inflight.client(), &self.slot).await?;
        self.confirm_durable().await
    }

    /// What has been committed on the target since the last call: source transactions and row
    /// changes per `schema.table` and operation (for metrics).
    pub fn take_committed(&mut self) -> Committed {
        std::mem::take(&mut self.committed)
    }
}

pub(super) const TARGET_INSERT_LSN: &str = "SELECT pg_catalog.pg_current_wal_insert_lsn()::text";
pub(super) const TARGET_FLUSH_LSN: &str = "SELECT pg_catalog.pg_current_wal_flush_lsn()::text";
pub(super) fn parse_lsn_row(row: &tokio_postgres::Row) -> Result<Lsn, ApplyError> {
    let text: String = row
        .try_get(0)
        .map_err(|e| ApplyError::from_target(e, "(session)", Operation::Bookkeeping))?;
    text.parse()
        .map_err(|e| ApplyError::protocol(format!("the target reported an unreadable LSN: {e}")))
}
