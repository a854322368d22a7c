//! The periodic look at the publication: tables that joined it without a change (so without
//! a Relation message), tables that left it, and the publication itself dropped.

use std::time::Duration;

use crate::Lsn;
use crate::snapshot;
use crate::wire::WireError;

/// How often the publication's tables are listed, for tables that joined (or left) it.
pub(super) const PUBLICATION_CHECK: Duration = Duration::from_secs(3);

/// The longest a look may take. It runs inside the session's loop, which meanwhile reads
/// nothing from the stream: a silent source link must still be noticed within its timeout.
const LOOK_LIMIT: Duration = Duration::from_secs(2);

/// What a look at the publication found.
pub(super) enum Look {
    /// It exists (its tables went to `added`).
    Present,
    /// It does not exist as of source position `at`. PostgreSQL 18's walsender then skips it
    /// with a warning and streams on without it (older ones stop the stream with an error).
    Missing { at: Lsn },
    /// The look failed or took too long (logged): nothing is known.
    Unknown,
}

/// Look at the publication on the applier's source session (one cheap catalog query, then
/// the source's WAL position and whether the publication exists). Its tables go to `added`,
/// which acts on them once the stream has passed that position. A look that fails or takes
/// too long is logged and left for the next tick: it only speeds up what the next Relation
/// message or the next start would find.
pub(super) async fn look_at_publication(
    catalog: Option<&tokio_postgres::Client>,
    added: &mut snapshot::AddedTables,
    publication: &str,
) -> Look {
    let Some(catalog) = catalog else {
        return Look::Unknown;
    };
    let look = async {
        let rows = catalog
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_catalog.pg_publication_tables \
                 WHERE pubname = $1",
                &[&publication],
            )
            .await?;
        let now = catalog
            .query_one(
                "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() \
                    THEN pg_catalog.pg_last_wal_replay_lsn() \
                    ELSE pg_catalog.pg_current_wal_lsn() END)::text, \
                 EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = $1)",
                &[&publication],
            )
            .await?;
        let tables = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(String, String)>, tokio_postgres::Error>>()?;
        Ok::<_, tokio_postgres::Error>((
            tables,
            now.try_get::<_, String>(0)?,
            now.try_get::<_, bool>(1)?,
        ))
    };
    let (tables, at, exists) = match tokio::time::timeout(LOOK_LIMIT, look).await {
        Ok(Ok((tables, at, exists))) => match at.parse() {
            Ok(at) => (tables, at, exists),
            Err(_) => return Look::Unknown,
        },
        Ok(Err(e)) => {
            tracing::warn!("could not list the publication's tables: {e}");
            return Look::Unknown;
        }
        Err(_) => {
            tracing::warn!("listing the publication's tables timed out; trying again later");
            return Look::Unknown;
        }
    };
    if !exists {
        // Not "every table left": the tables stay as they are for when it is created again.
        return Look::Missing { at };
    }
    added.listed(&tables, at);
    Look::Present
}

/// Whether the error a stream ended with is PostgreSQL's (before 18) for a dropped
/// publication: `undefined_object` at the first change after the drop, with the catalog
/// confirming that the publication is gone.
pub(super) async fn ended_by_dropped_publication(
    error: &WireError,
    catalog: Option<&tokio_postgres::Client>,
    publication: &str,
) -> bool {
    let undefined_object = error.server_error().is_some_and(|e| e.code == "42704");
    let Some(catalog) = catalog.filter(|_| undefined_object) else {
        return false;
    };
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&publication];
    let exists = catalog.query_one(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = $1)",
        &params,
    );
    match tokio::time::timeout(LOOK_LIMIT, exists).await {
        Ok(Ok(row)) => matches!(row.try_get::<_, bool>(0), Ok(false)),
        _ => false,
    }
}
