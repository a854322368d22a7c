//! Captured DDL (`lsnpipe ddl install`) run on the target at its place in the stream.

use super::*;

impl Applier {
    /// Run a captured DDL command in the open group, at its place among the changes: rows
    /// before it are sent first, and every table is checked again after it (the Relation
    /// message that follows then finds the target matching, so drift adds nothing twice).
    pub(super) async fn captured_ddl(
        &mut self,
        message: &LogicalDecodingMessage,
    ) -> Result<(), ApplyError> {
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
            progress_row::register_created(client, &self.slot, &ddl.created)
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
}
