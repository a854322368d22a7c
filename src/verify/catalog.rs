//! Which tables `verify` compares and how: the publication's tables, their published columns
//! and row filter, the key they are compared by, and how the target holds them.
//!
//! ```text
//!  pg_publication_tables + pg_index (source) ─▶ columns, filter, key (primary key, else the
//!  replica identity index; none ─▶ multiset)   ─▶ target: table and columns present? key types
//! ```

use super::plan::TablePlan;
use crate::ops::{OpsError, SideSession};

/// Published tables with their published columns (generated ones left out: the target computes
/// its own), row filter and key columns (the primary key, else the replica identity index, when
/// every key column is published). PostgreSQL 15 has column lists and row filters.
const PUBLISHED_15: &str = "SELECT n.nspname::text, c.relname::text, c.relkind = 'p', \
        ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
              AND a.attname = ANY (pt.attnames) AND a.attgenerated = '' ORDER BY a.attnum), \
        pt.rowfilter, \
        ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index i, \
                     unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord), pg_catalog.pg_attribute a \
              WHERE i.indexrelid = (SELECT i2.indexrelid FROM pg_catalog.pg_index i2 \
                                    WHERE i2.indrelid = c.oid AND (i2.indisprimary OR i2.indisreplident) \
                                    ORDER BY i2.indisprimary DESC LIMIT 1) \
                AND a.attrelid = c.oid AND a.attnum = k.attnum ORDER BY k.ord), \
        ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
              WHERE a.attrelid = c.oid AND a.attname = ANY (pt.attnames) AND a.attgenerated = '' \
              ORDER BY a.attnum) \
    FROM pg_catalog.pg_publication_tables pt \
    JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
    WHERE pt.pubname = $1 \
    ORDER BY pg_catalog.pg_relation_size(c.oid) DESC, 1, 2";

/// Before 15: every column that is not generated, no filter.
const PUBLISHED_OLD: &str = "SELECT n.nspname::text, c.relname::text, c.relkind = 'p', \
        ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
              AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum), \
        NULL::text, \
        ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index i, \
                     unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord), pg_catalog.pg_attribute a \
              WHERE i.indexrelid = (SELECT i2.indexrelid FROM pg_catalog.pg_index i2 \
                                    WHERE i2.indrelid = c.oid AND (i2.indisprimary OR i2.indisreplident) \
                                    ORDER BY i2.indisprimary DESC LIMIT 1) \
                AND a.attrelid = c.oid AND a.attnum = k.attnum ORDER BY k.ord), \
        ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
              AND a.attgenerated = '' ORDER BY a.attnum) \
    FROM pg_catalog.pg_publication_tables pt \
    JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
    WHERE pt.pubname = $1 \
    ORDER BY pg_catalog.pg_relation_size(c.oid) DESC, 1, 2";

/// Columns of a table on the target, with their types.
const TARGET_COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
    FROM pg_catalog.pg_attribute a \
    WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped";

/// A table to compare, or why it cannot be compared (which is itself a difference).
#[derive(Debug, Clone)]
pub enum Planned {
    Compare(TablePlan),
    Differs { table: String, problem: String },
}

/// Does `filter` (`name` or `schema.name`, unquoted) name this table?
pub fn matches(filter: &str, schema: &str, name: &str) -> bool {
    filter == name || filter == format!("{schema}.{name}")
}

/// The publication's tables (those the filters name, when there are filters), largest first.
pub async fn plan(
    source: &SideSession,
    target: &SideSession,
    publication: &str,
    filters: &[String],
) -> Result<Vec<Planned>, OpsError> {
    let version: i32 = source
        .client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(source.sql("read the server version"))?
        .get(0);
    let sql = if version >= 150_000 {
        PUBLISHED_15
    } else {
        PUBLISHED_OLD
    };
    let rows = source
        .client
        .query(sql, &[&publication])
        .await
        .map_err(source.sql("read the publication's tables"))?;
    if rows.is_empty() {
        return Err(OpsError::Refused(format!(
            "publication {publication} has no tables on the source (or does not exist): \
             check --publication"
        )));
    }
    for f in filters {
        let found = rows.iter().any(|r| {
            matches(
                f,
                r.try_get::<_, &str>(0).unwrap_or_default(),
                r.try_get::<_, &str>(1).unwrap_or_default(),
            )
        });
        if !found {
            return Err(OpsError::Refused(format!(
                "--table {f}: no table of publication {publication} has that name \
                 (give `name` or `schema.name`)"
            )));
        }
    }
    let mut out = Vec::new();
    for r in &rows {
        let read = |r: &tokio_postgres::Row| -> Result<_, tokio_postgres::Error> {
            Ok((
                r.try_get::<_, String>(0)?,
                r.try_get::<_, String>(1)?,
                r.try_get::<_, bool>(2)?,
                r.try_get::<_, Vec<String>>(3)?,
                r.try_get::<_, Option<String>>(4)?,
                r.try_get::<_, Vec<String>>(5)?,
                r.try_get::<_, Vec<String>>(6)?,
            ))
        };
        let (schema, name, partitioned, columns, row_filter, key_names, types) =
            read(r).map_err(source.sql("read the publication's tables"))?;
        if !filters.is_empty() && !filters.iter().any(|f| matches(f, &schema, &name)) {
            continue;
        }
        let mut plan = TablePlan {
            schema,
            name,
            columns,
            key: Vec::new(),
            source_key_types: Vec::new(),
            target_key_types: Vec::new(),
            row_filter,
            partitioned,
        };
        let positions: Option<Vec<usize>> = key_names
            .iter()
            .map(|k| plan.columns.iter().position(|c| c == k))
            .collect();
        if let Some(positions) = positions.filter(|p| !p.is_empty()) {
            plan.source_key_types = positions.iter().map(|&i| types[i].clone()).collect();
            plan.key = positions;
        }
        out.push(on_target(target, plan).await?);
    }
    Ok(out)
}

/// Check the target holds the table and every published column; take its key types.
async fn on_target(target: &SideSession, mut plan: TablePlan) -> Result<Planned, OpsError> {
    let columns: Vec<(String, String)> = target
        .client
        .query(TARGET_COLUMNS, &[&plan.qualified()])
        .await
        .map_err(target.sql("read a table's columns"))?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(target.sql("read a table's columns"))?;
    let table = plan.qualified();
    if columns.is_empty() {
        return Ok(Planned::Differs {
            table,
            problem: "missing on the target".into(),
        });
    }
    let missing: Vec<&str> = plan
        .columns
        .iter()
        .filter(|c| !columns.iter().any(|(name, _)| name == *c))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Ok(Planned::Differs {
            table,
            problem: format!("columns missing on the target: {}", missing.join(", ")),
        });
    }
    plan.target_key_types = plan
        .key
        .iter()
        .map(|&i| {
            columns
                .iter()
                .find(|(name, _)| *name == plan.columns[i])
                .map(|(_, ty)| ty.clone())
                .unwrap_or_default()
        })
        .collect();
    Ok(Planned::Compare(plan))
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_name_a_table_with_or_without_its_schema() {
        assert!(super::matches("a", "public", "a"));
        assert!(super::matches("public.a", "public", "a"));
        assert!(!super::matches("other.a", "public", "a"));
    }
}
