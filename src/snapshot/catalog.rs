//! What to copy: the publication's tables as the source catalog describes them (published
//! columns, row filter, size), how the target holds them, and the plan of COPY units.
//!
//! ```text
//!  pg_publication_tables + pg_class (source) ─▶ Table ─┬─▶ target check (exists, empty, columns)
//!                                                       └─▶ plan: large tables in ctid ranges
//! ```

use tokio_postgres::Client;

use super::error::SnapshotError;
use crate::wire::quote_ident;

/// One published table on the source.
#[derive(Debug, Clone)]
pub struct Table {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// Published columns in the table's order.
    pub columns: Vec<String>,
    /// Source column types (`format_type`), aligned with `columns`.
    pub types: Vec<String>,
    /// Every published column has a built-in type, whose binary form carries no OID that
    /// differs between clusters.
    pub builtin_types: bool,
    pub row_filter: Option<String>,
    pub partitioned: bool,
    pub readable: bool,
    pub blocks: u64,
    pub est_rows: u64,
    /// Some published column is generated on the source (18+): `COPY table (columns)` refuses
    /// it, a query reads it.
    pub generated: bool,
    /// Row-level security policies apply to the role: a copy would see only some rows, while
    /// the stream carries them all.
    pub row_security: bool,
}

impl Table {
    /// `"schema"."name"`, for SQL and for messages.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// This table without `columns` (those the target computes itself).
    pub fn without(mut self, columns: &[String]) -> Table {
        let (kept, kept_types) = std::mem::take(&mut self.columns)
            .into_iter()
            .zip(std::mem::take(&mut self.types))
            .filter(|(c, _)| !columns.contains(c))
            .unzip();
        self.columns = kept;
        self.types = kept_types;
        self
    }

    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Published columns, filters and sizes; PostgreSQL 15 publishes column lists and row filters.
/// `{published}` picks the published columns of `pg_attribute a`: before 18 generated columns
/// are never published (the target computes its own), from 18 they are when the publication
/// says so (`publish_generated_columns`, or a column list naming them).
const PUBLISHED_15: &str = "SELECT c.oid::int8, n.nspname::text, c.relname::text, \
        c.relkind = 'p', \
        ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
              AND {published} ORDER BY a.attnum), \
        pt.rowfilter, \
        ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
              WHERE a.attrelid = c.oid AND {published} ORDER BY a.attnum), \
        NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
              AND {published} AND a.atttypid >= 16384), \
        pg_catalog.has_table_privilege(c.oid, 'SELECT'), \
        pg_catalog.pg_relation_size(c.oid)::int8, \
        current_setting('block_size')::int8, \
        greatest(c.reltuples, 0)::int8, \
        EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
              AND {published} AND a.attgenerated <> ''), \
        pg_catalog.row_security_active(c.oid) \
    FROM pg_catalog.pg_publication_tables pt \
    JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
    WHERE pt.pubname = $1 \
    ORDER BY pg_catalog.pg_relation_size(c.oid) DESC, 2, 3";

/// Before 15: every column that is not generated, no filter.
const PUBLISHED_OLD: &str = "SELECT c.oid::int8, n.nspname::text, c.relname::text, \
        c.relkind = 'p', \
        ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
              AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum), \
        NULL::text, \
        ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
              AND a.attgenerated = '' ORDER BY a.attnum), \
        NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
              AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid >= 16384), \
        pg_catalog.has_table_privilege(c.oid, 'SELECT'), \
        pg_catalog.pg_relation_size(c.oid)::int8, \
        current_setting('block_size')::int8, \
        greatest(c.reltuples, 0)::int8, \
        false, \
        pg_catalog.row_security_active(c.oid) \
    FROM pg_catalog.pg_publication_tables pt \
    JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
    WHERE pt.pubname = $1 \
    ORDER BY pg_catalog.pg_relation_size(c.oid) DESC, 2, 3";

/// The publication's tables, largest first.
pub async fn published(source: &Client, publication: &str) -> Result<Vec<Table>, SnapshotError> {
    let version: i32 = source
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(SnapshotError::Catalog)?;
    let sql = match version {
        ..150_000 => PUBLISHED_OLD.to_string(),
        150_000..180_000 => PUBLISHED_15.replace(
            "{published}",
            "a.attname = ANY (pt.attnames) AND a.attgenerated = ''",
        ),
        _ => PUBLISHED_15.replace("{published}", "a.attname = ANY (pt.attnames)"),
    };
    let rows = source
        .query(&sql, &[&publication])
        .await
        .map_err(SnapshotError::Catalog)?;
    let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
    rows.iter()
        .map(|r| {
            let block_size = unsigned(r.try_get(10)?).max(1);
            let bytes = unsigned(r.try_get(9)?);
            let types: Vec<String> = r.try_get(6)?;
            Ok(Table {
                oid: u32::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0),
                schema: r.try_get(1)?,
                name: r.try_get(2)?,
                partitioned: r.try_get(3)?,
                columns: r.try_get(4)?,
                row_filter: r.try_get(5)?,
                types,
                builtin_types: r.try_get(7)?,
                readable: r.try_get(8)?,
                blocks: bytes.div_ceil(block_size),
                est_rows: unsigned(r.try_get(11)?),
                generated: r.try_get(12)?,
                row_security: r.try_get(13)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(SnapshotError::Catalog)
}

/// How the target holds one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTable {
    /// Published columns the target generates itself: COPY refuses them, and the target's own
    /// value is the one it keeps (as the applier leaves them out of every statement).
    pub generated: Vec<String>,
    /// COPY in binary: the target's column types are the source's.
    pub binary: bool,
    /// Something references it by foreign key, so TRUNCATE is refused: it is emptied by DELETE.
    pub referenced: bool,
    pub partitioned: bool,
    pub empty: bool,
}

/// Look `table` up on the target: `None` when missing.
pub async fn target_table(
    target: &Client,
    table: &Table,
) -> Result<Option<TargetTable>, SnapshotError> {
    let failed = |e| SnapshotError::Copy {
        table: table.qualified(),
        source: e,
    };
    let row = target
        .query_opt(
            "SELECT c.oid::int8, c.relkind = 'p', \
                 EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f \
                         WHERE f.confrelid = c.oid AND f.contype = 'f' AND f.conrelid <> c.oid) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(failed)?;
    let Some(row) = row else { return Ok(None) };
    let oid: i64 = row.try_get(0).map_err(failed)?;
    let columns = target
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '' \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped",
            &[&oid],
        )
        .await
        .map_err(failed)?;
    let mut binary = table.builtin_types;
    let mut generated = Vec::new();
    for (name, source_type) in table.columns.iter().zip(&table.types) {
        let found = columns
            .iter()
            .find(|r| r.try_get::<_, String>(0).is_ok_and(|n| &n == name));
        let Some(found) = found else {
            return Err(SnapshotError::MissingColumn {
                table: table.qualified(),
                column: name.clone(),
            });
        };
        if found.try_get(2).map_err(failed)? {
            generated.push(name.clone());
            continue;
        }
        let target_type: String = found.try_get(1).map_err(failed)?;
        binary &= &target_type == source_type;
    }
    let empty = target
        .query_one(
            &format!(
                "SELECT NOT EXISTS (SELECT 1 FROM {} LIMIT 1)",
                table.qualified()
            ),
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(failed)?;
    Ok(Some(TargetTable {
        generated,
        binary,
        partitioned: row.try_get(1).map_err(failed)?,
        referenced: row.try_get(2).map_err(failed)?,
        empty,
    }))
}

/// A block range `[start, end)` of a table's heap; `end: None` reaches the end of the table,
/// including blocks added after its size was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    pub start: u64,
    pub end: Option<u64>,
}

/// The ranges one table is copied in: one (the whole table) unless it is large compared with
/// the others, so that every job has work until the end.
pub fn split(table: &Table, total_blocks: u64, jobs: usize) -> Vec<Option<Blocks>> {
    // A range of an eighth of the copy per job keeps jobs busy without making ranges so small
    // that their statements dominate; and small ranges never pay off below ~8 MB (1024 blocks).
    let jobs = u64::try_from(jobs).unwrap_or(1).max(1);
    let chunk = (total_blocks / (jobs * 4)).max(1024);
    if jobs == 1 || table.partitioned || table.blocks < 2 * chunk {
        return vec![None];
    }
    let count = table.blocks.div_ceil(chunk);
    (0..count)
        .map(|i| {
            Some(Blocks {
                start: i * chunk,
                end: (i + 1 < count).then_some((i + 1) * chunk),
            })
        })
        .collect()
}

/// `COPY ... TO STDOUT` for one range of a table.
pub fn copy_out_sql(table: &Table, range: Option<Blocks>, binary: bool) -> String {
    let format = if binary { " (FORMAT binary)" } else { "" };
    let mut conditions = Vec::new();
    if let Some(filter) = &table.row_filter {
        conditions.push(format!("({filter})"));
    }
    if let Some(range) = range {
        conditions.push(format!("ctid >= '({},0)'::tid", range.start));
        if let Some(end) = range.end {
            conditions.push(format!("ctid < '({end},0)'::tid"));
        }
    }
    if conditions.is_empty() && !table.partitioned && !table.generated {
        return format!(
            "COPY {} ({}) TO STDOUT{format}",
            table.qualified(),
            table.column_list()
        );
    }
    let only = if table.partitioned { "" } else { "ONLY " };
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!(
        "COPY (SELECT {} FROM {only}{}{filter}) TO STDOUT{format}",
        table.column_list(),
        table.qualified()
    )
}

/// `COPY ... FROM STDIN` into the target.
pub fn copy_in_sql(table: &Table, binary: bool, freeze: bool) -> String {
    let mut options = Vec::new();
    if binary {
        options.push("FORMAT binary");
    }
    if freeze {
        options.push("FREEZE");
    }
    let options = if options.is_empty() {
        String::new()
    } else {
        format!(" ({})", options.join(", "))
    };
    format!(
        "COPY {} ({}) FROM STDIN{options}",
        table.qualified(),
        table.column_list()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(blocks: u64) -> Table {
        Table {
            oid: 1,
            schema: "public".into(),
            name: "we\"ird".into(),
            columns: vec!["id".into(), "v".into()],
            types: vec!["integer".into(), "text".into()],
            builtin_types: true,
            row_filter: None,
            partitioned: false,
            readable: true,
            blocks,
            est_rows: 0,
            generated: false,
            row_security: false,
        }
    }

    #[test]
    fn small_tables_are_one_unit_and_large_ones_cover_every_block() {
        assert_eq!(split(&table(100), 100, 4), vec![None]);
        let big = table(100_000);
        let ranges = split(&big, 110_000, 2);
        assert!(ranges.len() > 4, "{ranges:?}");
        let first = ranges.first().unwrap().unwrap();
        let last = ranges.last().unwrap().unwrap();
        assert_eq!(first.start, 0);
        assert_eq!(last.end, None, "the last range is open");
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].unwrap().end, Some(pair[1].unwrap().start));
        }
        assert_eq!(split(&big, 110_000, 1), vec![None], "one job: no point");
    }

    #[test]
    fn copy_statements_quote_names_and_filter_ranges() {
        let mut t = table(10);
        assert_eq!(
            copy_out_sql(&t, None, true),
            r#"COPY "public"."we""ird" ("id", "v") TO STDOUT (FORMAT binary)"#
        );
        t.row_filter = Some("id > 5".into());
        assert_eq!(
            copy_out_sql(
                &t,
                Some(Blocks {
                    start: 8,
                    end: Some(16)
                }),
                false
            ),
            r#"COPY (SELECT "id", "v" FROM ONLY "public"."we""ird" WHERE (id > 5) AND ctid >= '(8,0)'::tid AND ctid < '(16,0)'::tid) TO STDOUT"#
        );
        assert_eq!(
            copy_in_sql(&t, true, true),
            r#"COPY "public"."we""ird" ("id", "v") FROM STDIN (FORMAT binary, FREEZE)"#
        );
    }

    #[test]
    fn a_published_generated_column_is_read_by_a_query() {
        let mut t = table(10);
        t.generated = true;
        assert_eq!(
            copy_out_sql(&t, None, false),
            r#"COPY (SELECT "id", "v" FROM ONLY "public"."we""ird") TO STDOUT"#
        );
    }

    #[test]
    fn columns_the_target_generates_are_left_out_with_their_types() {
        let mut t = table(10);
        t.columns.push("g".into());
        t.types.push("bigint".into());
        let t = t.without(&["v".to_string()]);
        assert_eq!(t.columns, ["id", "g"]);
        assert_eq!(t.types, ["integer", "bigint"]);
        assert_eq!(
            copy_in_sql(&t, false, false),
            r#"COPY "public"."we""ird" ("id", "g") FROM STDIN"#
        );
    }
}
