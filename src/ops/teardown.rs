//! `lsnpipe teardown`: remove what lsnpipe left on both sides, after a confirmation.
//!
//! ```text
//!  connect both ─▶ plan (slot exists? active? progress row? other rows?) ─▶ print the plan
//!    ─▶ confirmed (--yes, or "yes" typed at a terminal)?  no terminal and no --yes ─▶ refuse
//!    ─▶ drop the slot (source) ─▶ delete the progress row, and drop lsnpipe.progress and the
//!       schema when nothing else is left (target)
//! ```
//!
//! The slot goes first: a progress row without its slot is harmless, but a slot whose progress
//! row is gone would make the next run apply everything from the slot's start again. The
//! publication and the replicated tables belong to the user and are left alone.

use std::io::{BufRead, IsTerminal, Write};

use super::{OpsError, SideSession};
use crate::config::OpsSettings;
use crate::source::SlotInfo;

/// How the user agreed (or not) to the teardown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// `--yes`.
    Given,
    /// Ask on the terminal; refuse when stdin is not one.
    Ask,
}

/// Tear down, writing the plan and each step to `out`.
pub async fn run(
    settings: &OpsSettings,
    confirmation: Confirmation,
    out: &mut dyn Write,
) -> Result<(), OpsError> {
    let source = SideSession::connect("source", &settings.source).await?;
    let target = SideSession::connect("target", &settings.target).await?;
    let slot = settings.slot.as_str();
    let write = |out: &mut dyn Write, text: String| {
        writeln!(out, "{text}").map_err(OpsError::io("write to stdout"))
    };

    no_run_on_target(&target, slot).await?;
    let slot_exists = idle_slot(&source, slot).await?;
    let has_progress = has_bookkeeping(&target).await?;

    write(out, "lsnpipe teardown will:".into())?;
    write(out, slot_plan(&source, slot, slot_exists))?;
    if has_progress {
        write(
            out,
            format!(
                "  - delete slot {slot}'s rows from lsnpipe.progress, its copy state and any cutover stop request on the target ({}), and drop \
                 the lsnpipe schema if nothing else is left in it",
                target.config.redacted()
            ),
        )?;
    } else {
        write(out, "  - (no lsnpipe bookkeeping on the target)".into())?;
    }
    write(
        out,
        "The publication and the replicated tables are left as they are.".into(),
    )?;
    if !slot_exists && !has_progress {
        write(out, "Nothing to do.".into())?;
        return Ok(());
    }
    if confirmation == Confirmation::Ask && !ask(out)? {
        return Err(OpsError::Refused("teardown cancelled".into()));
    }

    if slot_exists {
        drop_slot(&source, slot, out).await?;
    }
    if has_progress {
        drop_bookkeeping(&target, slot, out).await?;
    }
    Ok(())
}

/// Whether `slot` exists in the source database; refused while a client reads it.
pub(crate) async fn idle_slot(source: &SideSession, slot: &str) -> Result<bool, OpsError> {
    let found = SlotInfo::read(&source.client, slot)
        .await
        .map_err(source.sql("read the slot"))?;
    if let Some(pid) = found.as_ref().and_then(|s| s.active_pid) {
        return Err(OpsError::Refused(format!(
            "slot {slot:?} is in use by walsender pid {pid}: stop the lsnpipe (or other client) \
             reading it first"
        )));
    }
    Ok(found.is_some())
}

/// Refused while a `run` holds the slot's lock on the target: during its initial copy the
/// slot is not in use, yet the run writes.
pub(crate) async fn no_run_on_target(target: &SideSession, slot: &str) -> Result<(), OpsError> {
    let holder = crate::apply::guard::running(&target.client, slot)
        .await
        .map_err(target.sql("look for a run of this slot on the target"))?;
    match holder {
        None => Ok(()),
        Some(holder) => Err(OpsError::Refused(format!(
            "slot {slot:?} is in use by an lsnpipe run, which holds its lock on the target \
             ({holder}): stop it first. If no lsnpipe runs any more, that session outlived its link: end it with \
             SELECT pg_terminate_backend(PID) on the target"
        ))),
    }
}

/// The plan's line about the slot.
pub(crate) fn slot_plan(source: &SideSession, slot: &str, exists: bool) -> String {
    if exists {
        format!(
            "  - drop replication slot {slot} on the source ({})",
            source.config.redacted()
        )
    } else {
        format!("  - (slot {slot} does not exist on the source)")
    }
}

pub(crate) async fn drop_slot(
    source: &SideSession,
    slot: &str,
    out: &mut dyn Write,
) -> Result<(), OpsError> {
    source
        .client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(source.sql("drop the slot"))?;
    writeln!(out, "dropped slot {slot}").map_err(OpsError::io("write to stdout"))?;
    tracing::info!(slot, "dropped replication slot");
    Ok(())
}

/// lsnpipe's tables on the target; each names the slot its rows belong to. A stop request of
/// `cutover` goes too: a new slot of the same name must stream, not stop at once.
const BOOKKEEPING: [&str; 4] = [
    "lsnpipe.progress",
    "lsnpipe.copy_run",
    "lsnpipe.copy_state",
    "lsnpipe.cutover",
];

async fn table_exists(target: &SideSession, table: &str) -> Result<bool, OpsError> {
    Ok(target
        .client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(target.sql("look for lsnpipe's tables"))?
        .get(0))
}

/// Whether any of lsnpipe's tables exists on the target.
pub(crate) async fn has_bookkeeping(target: &SideSession) -> Result<bool, OpsError> {
    for table in BOOKKEEPING {
        if table_exists(target, table).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Delete the slot's rows (its position, its initial copy's state, so that a new slot is
/// copied again, and a cutover's stop request); drop each table, and the schema, only when
/// they hold nothing else.
pub(crate) async fn drop_bookkeeping(
    target: &SideSession,
    slot: &str,
    out: &mut dyn Write,
) -> Result<(), OpsError> {
    let c = &target.client;
    let mut kept_table = false;
    for table in BOOKKEEPING {
        if !table_exists(target, table).await? {
            continue;
        }
        let deleted = c
            .execute(&format!("DELETE FROM {table} WHERE slot = $1"), &[&slot])
            .await
            .map_err(target.sql("delete the slot's bookkeeping"))?;
        let mut said = format!("deleted {deleted} row(s) from {table}");
        let others: i64 = c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(target.sql("count the bookkeeping rows"))?
            .get(0);
        if others > 0 {
            kept_table = true;
            said.push_str(&format!("; kept the table: it holds {others} other row(s)"));
        } else {
            c.batch_execute(&format!("DROP TABLE {table}"))
                .await
                .map_err(target.sql("drop lsnpipe's table"))?;
            said.push_str(&format!("; dropped {table}"));
        }
        writeln!(out, "{said}").map_err(OpsError::io("write to stdout"))?;
    }
    if !kept_table {
        // RESTRICT: anything a user put in the schema keeps it alive.
        let said = match c
            .batch_execute("DROP SCHEMA IF EXISTS lsnpipe RESTRICT")
            .await
        {
            Ok(()) => "dropped schema lsnpipe",
            Err(e)
                if e.code()
                    == Some(&tokio_postgres::error::SqlState::DEPENDENT_OBJECTS_STILL_EXIST) =>
            {
                "kept schema lsnpipe: it holds other objects"
            }
            Err(e) => return Err(OpsError::sql("target", "drop schema lsnpipe")(e)),
        };
        writeln!(out, "{said}").map_err(OpsError::io("write to stdout"))?;
    }
    tracing::info!(slot, "removed lsnpipe bookkeeping from the target");
    Ok(())
}

/// Ask on the terminal; without one there is nobody to ask, so refuse.
pub(crate) fn ask(out: &mut dyn Write) -> Result<bool, OpsError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(OpsError::Refused(
            "not confirmed: stdin is not a terminal, so lsnpipe cannot ask; pass --yes to tear \
             down without asking"
                .into(),
        ));
    }
    write!(out, "Type \"yes\" to continue: ").map_err(OpsError::io("write to stdout"))?;
    out.flush().map_err(OpsError::io("write to stdout"))?;
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(OpsError::io("read the answer"))?;
    Ok(answer.trim().eq_ignore_ascii_case("yes"))
}
