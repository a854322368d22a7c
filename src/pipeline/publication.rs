//! The periodic look at the publication's tables: tables that joined it without a change (so
//! without a Relation message) and tables that left it.

use std::time::Duration;

use crate::snapshot;

/// How often the publication's tables are listed, for tables that joined (or left) it.
pub(super) const PUBLICATION_CHECK: Duration = Duration::from_secs(3);

/// List the publication's tables on the applier's source session (one cheap catalog query,
/// then the source's WAL position), and hand the list to `added`, which acts on it once the
/// stream has passed that position. A look that fails or takes
/// too long is logged and left for the next tick: it only speeds up what the next Relation
/// message or the next start would find.
pub(super) async fn look_at_publication(
    catalog: Option<&tokio_postgres::Client>,
    added: &mut snapshot::AddedTables,
    publication: &str,
) {
    let Some(catalog) = catalog else {
        return;
    };
    let look = async {
        let rows = catalog
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_catalog.pg_publication_tables \
                 WHERE pubname = $1",
                &[&publication],
            )
            .await?;
        let at = catalog
            .query_one(
                "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() \
                    THEN pg_catalog.pg_last_wal_replay_lsn() \
                    ELSE pg_catalog.pg_current_wal_lsn() END)::text",
                &[],
            )
            .await?;
        let tables = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(String, String)>, tokio_postgres::Error>>()?;
        Ok::<_, tokio_postgres::Error>((tables, at.try_get::<_, String>(0)?))
    };
    let (tables, at) = match tokio::time::timeout(PUBLICATION_CHECK * 3, look).await {
        Ok(Ok((tables, at))) => match at.parse() {
            Ok(at) => (tables, at),
            Err(_) => return,
        },
        Ok(Err(e)) => {
            tracing::warn!("could not list the publication's tables: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("listing the publication's tables timed out; trying again later");
            return;
        }
    };
    added.listed(&tables, at);
}
