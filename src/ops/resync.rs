//! `lsnpipe resync`: prepare a new initial copy after the slot's changes were lost (the slot was
//! dropped or invalidated, or it is ahead of the target), after a confirmation.
//!
//! ```text
//!  connect both ─▶ plan (slot? active? published tables on the target) ─▶ print the plan
//!    ─▶ confirmed (--yes, or "yes" typed at a terminal)?
//!    ─▶ drop the slot (source) ─▶ TRUNCATE the published tables, delete the slot's bookkeeping
//!       (target) ─▶ "now run `lsnpipe run --create-slot`", which copies everything again
//! ```
//!
//! The target's tables are emptied without CASCADE: a table only the target has that references
//! one of them is the operator's to deal with, and the target refuses with its name.

use std::io::Write;

use super::teardown::{
    Confirmation, ask, drop_bookkeeping, drop_slot, idle_slot, no_run_on_target, slot_plan,
};
use super::{OpsError, SideSession};
use crate::apply::sql::qualified_name;
use crate::config::OpsSettings;

/// The published tables as the source lists them, and whether each exists on the target and is
/// partitioned there (a partitioned table is truncated without `ONLY`).
const PUBLISHED: &str = "SELECT schemaname::text, tablename::text \
    FROM pg_catalog.pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2";
const TARGET_TABLE: &str = "SELECT c.relkind = 'p' FROM pg_catalog.pg_class c \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')";

/// Resync, writing the plan and each step to `out`.
pub async fn run(
    settings: &OpsSettings,
    confirmation: Confirmation,
    out: &mut dyn Write,
) -> Result<(), OpsError> {
    let Some(publication) = settings.publication.as_deref() else {
        return Err(OpsError::Refused(
            "resync needs --publication: its tables are the ones emptied and copied again".into(),
        ));
    };
    let source = SideSession::connect("source", &settings.source).await?;
    let target = SideSession::connect("target", &settings.target).await?;
    let slot = settings.slot.as_str();
    let write = |out: &mut dyn Write, text: String| {
        writeln!(out, "{text}").map_err(OpsError::io("write to stdout"))
    };

    no_run_on_target(&target, slot).await?;
    let slot_exists = idle_slot(&source, slot).await?;
    let mut tables = Vec::new();
    for row in source
        .client
        .query(PUBLISHED, &[&publication])
        .await
        .map_err(source.sql("list the published tables"))?
    {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        let found = target
            .client
            .query_opt(TARGET_TABLE, &[&schema, &table])
            .await
            .map_err(target.sql("look for the published tables"))?;
        if let Some(found) = found {
            let name = qualified_name(&schema, &table);
            tables.push(if found.get(0) {
                name
            } else {
                format!("ONLY {name}")
            });
        }
    }

    write(out, "lsnpipe resync will:".into())?;
    write(out, slot_plan(&source, slot, slot_exists))?;
    write(
        out,
        format!(
            "  - empty {} published table(s) on the target ({}): {}",
            tables.len(),
            target.config.redacted(),
            tables.join(", ")
        ),
    )?;
    write(
        out,
        format!("  - delete slot {slot}'s position and copy state on the target"),
    )?;
    if confirmation == Confirmation::Ask && !ask(out)? {
        return Err(OpsError::Refused("resync cancelled".into()));
    }

    if slot_exists {
        drop_slot(&source, slot, out).await?;
    }
    if !tables.is_empty() {
        target
            .client
            .batch_execute(&format!("TRUNCATE TABLE {}", tables.join(", ")))
            .await
            .map_err(target.sql("empty the published tables"))?;
        write(out, format!("emptied {} table(s)", tables.len()))?;
    }
    drop_bookkeeping(&target, slot, out).await?;
    tracing::info!(slot, "ready for a new initial copy");
    write(
        out,
        format!(
            "Now run `lsnpipe run --create-slot` (with --publication {publication} --slot \
             {slot}): it creates the slot and copies the tables again."
        ),
    )
}
