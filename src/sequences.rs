//! Sequences used by the published tables, copied from the source to the target: logical
//! replication does not carry them, and a target promoted without them hands out ids the
//! source already used.
//!
//! ```text
//!  source: pg_depend ─▶ sequences owned by a published table's column (serial, identity)
//!                       or named in a published table's column default (nextval('s'))
//!          SELECT last_value, is_called FROM each ─▶ target: setval(seq, last_value, is_called)
//!
//!  run --sync-sequences SECS: every SECS (connect if needed) ─▶ copy ─▶ error: log, reconnect
//! ```

use std::time::Duration;

use tokio::sync::watch;

use crate::ops::{OpsError, SideSession};
use crate::wire::quote_ident;

/// Sequences owned by (serial/identity) or named in the defaults of the publication's tables.
const USED_BY_PUBLICATION: &str = "WITH t AS ( \
      SELECT c.oid FROM pg_catalog.pg_publication_tables pt \
      JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
      JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
      WHERE pt.pubname = $1), \
    s AS ( \
      SELECT d.objid AS seq FROM pg_catalog.pg_depend d \
      WHERE d.classid = 'pg_catalog.pg_class'::regclass \
        AND d.refclassid = 'pg_catalog.pg_class'::regclass \
        AND d.deptype IN ('a', 'i') AND d.refobjid IN (SELECT oid FROM t) \
      UNION \
      SELECT d.refobjid FROM pg_catalog.pg_attrdef ad \
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::regclass \
        AND d.objid = ad.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
      WHERE ad.adrelid IN (SELECT oid FROM t)) \
    SELECT n.nspname::text, c.relname::text FROM s \
    JOIN pg_catalog.pg_class c ON c.oid = s.seq AND c.relkind = 'S' \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    ORDER BY 1, 2";

/// One sequence's state on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceValue {
    /// `"schema"."name"`.
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
}

/// What one copy did.
#[derive(Debug, Clone, Default)]
pub struct Copied {
    pub values: Vec<SequenceValue>,
    /// Sequences the target does not have (its ids can collide with the source's).
    pub missing: Vec<String>,
}

/// The sequences the publication's tables use, as `"schema"."name"`.
pub(crate) async fn used_by(
    source: &SideSession,
    publication: &str,
) -> Result<Vec<String>, OpsError> {
    let rows = source
        .client
        .query(USED_BY_PUBLICATION, &[&publication])
        .await
        .map_err(source.sql("find the sequences of the published tables"))?;
    rows.iter()
        .map(|r| {
            Ok(format!(
                "{}.{}",
                quote_ident(r.try_get(0)?),
                quote_ident(r.try_get(1)?)
            ))
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(source.sql("find the sequences of the published tables"))
}

/// Read each sequence on the source and set it on the target, exactly.
pub(crate) async fn copy(
    source: &SideSession,
    target: &SideSession,
    publication: &str,
) -> Result<Copied, OpsError> {
    let mut copied = Copied::default();
    for name in used_by(source, publication).await? {
        let row = source
            .client
            .query_one(&format!("SELECT last_value, is_called FROM {name}"), &[])
            .await
            .map_err(source.sql("read a sequence"))?;
        let value = SequenceValue {
            last_value: row.try_get(0).map_err(source.sql("read a sequence"))?,
            is_called: row.try_get(1).map_err(source.sql("read a sequence"))?,
            name,
        };
        let exists: bool = target
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&value.name])
            .await
            .map_err(target.sql("look for a sequence"))?
            .get(0);
        if !exists {
            copied.missing.push(value.name);
            continue;
        }
        target
            .client
            .execute(
                "SELECT pg_catalog.setval($1::text::regclass, $2, $3)",
                &[&value.name, &value.last_value, &value.is_called],
            )
            .await
            .map_err(target.sql("set a sequence"))?;
        copied.values.push(value);
    }
    Ok(copied)
}

/// `run --sync-sequences`: copy every `interval` until `stop` turns true. Errors are logged and
/// the sessions opened again on the next round: streaming must not stop for this.
pub async fn keep_in_sync(
    source: String,
    target: String,
    publication: String,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut sessions: Option<(SideSession, SideSession)> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned_missing = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        if sessions.is_none() {
            match (
                SideSession::connect("source", &source).await,
                SideSession::connect("target", &target).await,
            ) {
                (Ok(s), Ok(t)) => sessions = Some((s, t)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("sequence sync: {}", crate::report::chain(&e));
                    continue;
                }
            }
        }
        let Some((s, t)) = &sessions else { continue };
        match copy(s, t, &publication).await {
            Ok(done) => {
                tracing::debug!(sequences = done.values.len(), "sequences copied");
                if !done.missing.is_empty() && !warned_missing {
                    warned_missing = true;
                    tracing::warn!(
                        "sequence sync: the target has no sequence {}: create it there, or ids \
                         handed out after a switch-over can collide",
                        done.missing.join(", ")
                    );
                }
            }
            Err(e) => {
                tracing::warn!("sequence sync: {}", crate::report::chain(&e));
                sessions = None;
            }
        }
    }
}
