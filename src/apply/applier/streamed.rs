//! What a streamed transaction's session needs beyond the ordinary path: statements in stream
//! order (savepoints) and giving up a transaction the source aborted.

use super::*;

impl Applier {
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
}
