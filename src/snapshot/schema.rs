//! `--create-tables`: published tables missing on the target, created from the source catalog.
//!
//! ```text
//!  before the copy: CREATE SCHEMA IF NOT EXISTS; CREATE TABLE (columns, types, collations,
//!                   NOT NULL, defaults that need no source-only object, identity, generated
//!                   columns)
//!  after the copy:  primary key, unique/exclusion constraints and secondary indexes the target
//!                   lacks, then the replica identity
//! ```
//!
//! Building an index once over all rows is much faster than maintaining it row by row, so even
//! the primary key waits for the data; it is in place before streaming starts, which is when the
//! applier needs it. Identity columns are created `BY DEFAULT`: the target receives the source's
//! values, it never generates its own. Partitioned tables and column types that exist only on
//! the source are reported for the operator to create.

use tokio_postgres::Client;

use super::catalog::Table;
use super::error::SnapshotError;
use crate::wire::quote_ident;

const COLUMNS: &str = "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
        a.attnotnull, a.attidentity::text, a.attgenerated::text, \
        CASE WHEN ad.oid IS NOT NULL AND (a.attgenerated <> '' OR NOT EXISTS ( \
            SELECT 1 FROM pg_catalog.pg_depend d \
            WHERE d.classid = 'pg_catalog.pg_attrdef'::regclass AND d.objid = ad.oid \
              AND d.refobjid >= 16384 \
              AND NOT (d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = a.attrelid))) \
          THEN pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) END, \
        CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation \
          THEN pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) END \
    FROM pg_catalog.pg_attribute a \
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
    LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
    LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation \
    LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
    WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped \
    ORDER BY a.attnum";

/// Constraints backed by an index, and plain indexes, in a form that can be run as is.
const SECONDARY: &str = "SELECT c.conname::text, 'ALTER TABLE ' || $2 || ' ADD CONSTRAINT ' \
        || pg_catalog.quote_ident(c.conname) || ' ' || pg_catalog.pg_get_constraintdef(c.oid), \
        CASE c.contype WHEN 'p' THEN 0 ELSE 1 END AS rank \
    FROM pg_catalog.pg_constraint c \
    WHERE c.conrelid = $1::int8::oid AND c.contype IN ('p', 'u', 'x') \
    UNION ALL \
    SELECT ic.relname::text, pg_catalog.pg_get_indexdef(i.indexrelid), 2 \
    FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
    WHERE i.indrelid = $1::int8::oid AND NOT EXISTS ( \
        SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conrelid = i.indrelid \
          AND c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x')) \
    ORDER BY rank, 1";

const REPLICA_IDENTITY: &str = "SELECT c.relreplident::text, \
        (SELECT ic.relname::text FROM pg_catalog.pg_index i \
         JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
         WHERE i.indrelid = c.oid AND i.indisreplident) \
    FROM pg_catalog.pg_class c WHERE c.oid = $1::int8::oid";

/// The `CREATE TABLE` statement for `table` as the source defines it.
pub async fn create_table_sql(source: &Client, table: &Table) -> Result<String, SnapshotError> {
    if table.partitioned {
        return Err(SnapshotError::CannotCreate {
            table: table.qualified(),
            reason: "it is partitioned on the source, and lsnpipe does not create partitions"
                .into(),
        });
    }
    let oid = i64::from(table.oid);
    let columns = source
        .query(COLUMNS, &[&oid])
        .await
        .map_err(SnapshotError::Catalog)?;
    let mut parts = Vec::with_capacity(columns.len());
    for row in &columns {
        let get = |i| {
            row.try_get::<_, Option<String>>(i)
                .map(Option::unwrap_or_default)
        };
        let name = get(0).map_err(SnapshotError::Catalog)?;
        let ty = get(1).map_err(SnapshotError::Catalog)?;
        let not_null: bool = row.try_get(2).map_err(SnapshotError::Catalog)?;
        let identity = get(3).map_err(SnapshotError::Catalog)?;
        let generated = get(4).map_err(SnapshotError::Catalog)?;
        let default = get(5).map_err(SnapshotError::Catalog)?;
        let collation = get(6).map_err(SnapshotError::Catalog)?;
        parts.push(column_sql(
            &name, &ty, &collation, not_null, &identity, &generated, &default,
        ));
    }
    Ok(format!(
        "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE {} ({})",
        quote_ident(&table.schema),
        table.qualified(),
        parts.join(", ")
    ))
}

fn column_sql(
    name: &str,
    ty: &str,
    collation: &str,
    not_null: bool,
    identity: &str,
    generated: &str,
    default: &str,
) -> String {
    let mut sql = format!("{} {ty}", quote_ident(name));
    if !collation.is_empty() {
        sql.push_str(&format!(" COLLATE {collation}"));
    }
    if generated == "s" && !default.is_empty() {
        sql.push_str(&format!(" GENERATED ALWAYS AS ({default}) STORED"));
    } else if !identity.is_empty() {
        sql.push_str(" GENERATED BY DEFAULT AS IDENTITY");
    } else if !default.is_empty() {
        sql.push_str(&format!(" DEFAULT {default}"));
    }
    if not_null && identity.is_empty() {
        sql.push_str(" NOT NULL");
    }
    sql
}

/// Create `table` on the target.
pub async fn create_table(
    source: &Client,
    target: &Client,
    table: &Table,
) -> Result<(), SnapshotError> {
    let sql = create_table_sql(source, table).await?;
    target
        .batch_execute(&sql)
        .await
        .map_err(|e| SnapshotError::CannotCreate {
            table: table.qualified(),
            reason: e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
        })?;
    tracing::info!(table = %table.qualified(), "created table on the target");
    Ok(())
}

/// Give index builds on `target` memory enough to sort large tables in memory (256 MB unless
/// the server already allows more), for this session only.
pub async fn prepare_index_session(target: &Client) -> Result<(), SnapshotError> {
    target
        .batch_execute(
            "SELECT pg_catalog.set_config('maintenance_work_mem', '256MB', false) \
             WHERE pg_catalog.pg_size_bytes(pg_catalog.current_setting('maintenance_work_mem')) \
                   < 256 * 1024 * 1024",
        )
        .await
        .map_err(|source| SnapshotError::Schema {
            what: "the index build session".into(),
            source,
        })
}

/// Build the source's primary key, constraints and indexes that the target lacks (the primary
/// key first: the replica identity may rest on it), then set the replica identity.
pub async fn build_indexes(
    source: &Client,
    target: &Client,
    table: &Table,
) -> Result<(), SnapshotError> {
    let oid = i64::from(table.oid);
    let qualified = table.qualified();
    let rows = source
        .query(SECONDARY, &[&oid, &qualified])
        .await
        .map_err(SnapshotError::Catalog)?;
    for row in rows {
        let name: String = row.try_get(0).map_err(SnapshotError::Catalog)?;
        let sql: String = row.try_get(1).map_err(SnapshotError::Catalog)?;
        let exists: bool = target
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!(
                    "{}.{}",
                    quote_ident(&table.schema),
                    quote_ident(&name)
                )],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|source| SnapshotError::Schema {
                what: format!("index {name} of {qualified}"),
                source,
            })?;
        if exists {
            continue;
        }
        tracing::info!(table = %qualified, index = %name, "building index");
        target
            .batch_execute(&sql)
            .await
            .map_err(|source| SnapshotError::Schema {
                what: format!("index {name} of {qualified}"),
                source,
            })?;
    }
    let row = source
        .query_one(REPLICA_IDENTITY, &[&oid])
        .await
        .map_err(SnapshotError::Catalog)?;
    let kind: String = row.try_get(0).map_err(SnapshotError::Catalog)?;
    let index: Option<String> = row.try_get(1).map_err(SnapshotError::Catalog)?;
    let identity = match (kind.as_str(), index) {
        ("f", _) => Some("FULL".to_owned()),
        ("n", _) => Some("NOTHING".to_owned()),
        ("i", Some(index)) => Some(format!("USING INDEX {}", quote_ident(&index))),
        _ => None,
    };
    if let Some(identity) = identity {
        target
            .batch_execute(&format!(
                "ALTER TABLE {qualified} REPLICA IDENTITY {identity}"
            ))
            .await
            .map_err(|source| SnapshotError::Schema {
                what: format!("the replica identity of {qualified}"),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_carry_what_the_source_defines() {
        assert_eq!(
            column_sql("id", "bigint", "", true, "a", "", ""),
            r#""id" bigint GENERATED BY DEFAULT AS IDENTITY"#
        );
        assert_eq!(
            column_sql("Name", "text", "\"C\"", true, "", "", "'x'::text"),
            r#""Name" text COLLATE "C" DEFAULT 'x'::text NOT NULL"#
        );
        assert_eq!(
            column_sql("d", "integer", "", false, "", "s", "(a * 2)"),
            r#""d" integer GENERATED ALWAYS AS ((a * 2)) STORED"#
        );
    }
}
