//! What `verify` compares for one table, and the SQL text that reads it (pure: no I/O).
//!
//! ```text
//!  published columns + key (primary key or replica identity index) ─▶ TablePlan
//!  TablePlan ─▶ chunk hash on the source (next chunk after a key, its last key)
//!            ─▶ chunk hash on the target (between two source keys)
//!            ─▶ rows of a range, rows by keys (key and column texts, for naming differences)
//!            ─▶ keyless: hashes per bucket, rows of some buckets with their multiplicity
//! ```
//!
//! The canonical form of a row is its record text, `ROW(c1, c2, …)::text`, over the published
//! columns in the source's order; its hash is `hashtextextended(text, 0)`, and a set of rows is
//! described by `count(*)` and `sum(hash)` (order-independent, exact in `numeric`). The text is
//! the same on both sides because every verify session pins the settings that shape output
//! (see [`super::session`]). Keys travel as text parameters cast to each side's own column type,
//! so a key printed by one server is read back by the other. Identifiers are always quoted;
//! no value is ever put into SQL text.

use super::buckets::integer_type;
use crate::wire::quote_ident;

/// Which server a statement is for: the source applies the publication's row filter, and each
/// side casts key parameters to its own column types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

/// One published table as verify reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub schema: String,
    pub name: String,
    /// Published columns in the source's order.
    pub columns: Vec<String>,
    /// Positions in `columns` of the key, in index order; empty: compared as a multiset.
    pub key: Vec<usize>,
    /// `format_type` of each key column on the source and on the target.
    pub source_key_types: Vec<String>,
    pub target_key_types: Vec<String>,
    /// The publication's row filter (source only).
    pub row_filter: Option<String>,
    /// A partitioned table is read with its partitions; any other only by itself (`ONLY`).
    pub partitioned: bool,
}

/// Buckets of a keyless table's first comparison (by the low bits of each row's hash).
pub const BUCKETS: i64 = 256;

impl TablePlan {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    pub fn keyed(&self) -> bool {
        !self.key.is_empty()
    }

    /// Names of the key columns.
    pub fn key_names(&self) -> Vec<&str> {
        self.key.iter().map(|&i| self.columns[i].as_str()).collect()
    }

    fn from(&self, side: Side) -> String {
        let only = if self.partitioned { "" } else { "ONLY " };
        let mut from = format!("FROM {only}{} AS t", self.qualified());
        if side == Side::Source {
            if let Some(filter) = &self.row_filter {
                from.push_str(&format!(" WHERE ({filter})"));
                return from;
            }
        }
        from.push_str(" WHERE true");
        from
    }

    fn column(&self, i: usize) -> String {
        format!("t.{}", quote_ident(&self.columns[i]))
    }

    /// The canonical text of a row.
    fn row_text(&self) -> String {
        let cols: Vec<String> = (0..self.columns.len()).map(|i| self.column(i)).collect();
        format!("ROW({})::text", cols.join(", "))
    }

    fn row_hash(&self) -> String {
        format!("hashtextextended({}, 0)", self.row_text())
    }

    /// `(t."k1", t."k2")`.
    fn key_tuple(&self) -> String {
        let cols: Vec<String> = self.key.iter().map(|&i| self.column(i)).collect();
        format!("({})", cols.join(", "))
    }

    fn key_order(&self) -> String {
        let cols: Vec<String> = self.key.iter().map(|&i| self.column(i)).collect();
        cols.join(", ")
    }

    /// `ARRAY[t."k1"::text, …]`: the key as the report and the by-key lookups know it.
    fn key_texts(&self) -> String {
        let cols: Vec<String> = self
            .key
            .iter()
            .map(|&i| format!("{}::text", self.column(i)))
            .collect();
        format!("ARRAY[{}]", cols.join(", "))
    }

    fn column_texts(&self) -> String {
        let cols: Vec<String> = (0..self.columns.len())
            .map(|i| format!("{}::text", self.column(i)))
            .collect();
        format!("ARRAY[{}]::text[]", cols.join(", "))
    }

    fn key_types(&self, side: Side) -> &[String] {
        match side {
            Side::Source => &self.source_key_types,
            Side::Target => &self.target_key_types,
        }
    }

    /// `($n::text::type1, $n+1::text::type2)`: a key given as text parameters from `$first`.
    fn key_params(&self, side: Side, first: usize) -> String {
        let params: Vec<String> = self
            .key_types(side)
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("${}::text::{ty}", first + i))
            .collect();
        format!("({})", params.join(", "))
    }

    /// `AND (key) > (lower) AND (key) <= (upper)`, parameters numbered from 1 (lower first).
    fn range(&self, side: Side, lower: bool, upper: bool) -> String {
        let mut sql = String::new();
        let mut next = 1;
        if lower {
            sql.push_str(&format!(
                " AND {} > {}",
                self.key_tuple(),
                self.key_params(side, next)
            ));
            next += self.key.len();
        }
        if upper {
            sql.push_str(&format!(
                " AND {} <= {}",
                self.key_tuple(),
                self.key_params(side, next)
            ));
        }
        sql
    }

    /// Source: the next chunk of at most `limit` rows after the lower key and up to the upper
    /// key (parameters `$1…`, lower first, when present): `count`, `sum(hash)` as text, and the
    /// chunk's last key as text array (NULL when empty).
    pub fn source_chunk_sql(&self, lower: bool, upper: bool, limit: u64) -> String {
        if let ([only], [ty]) = (self.key.as_slice(), self.source_key_types.as_slice()) {
            if has_max(ty) {
                // One key column with a max() aggregate: the rows stream through one aggregate,
                // with no materialized chunk and no sort for its last key (about half the cost).
                return format!(
                    "SELECT count(*)::int8, coalesce(sum(h), 0)::text, \
                     CASE WHEN count(*) > 0 THEN ARRAY[max(k1)::text] END \
                     FROM (SELECT {col} AS k1, {hash} AS h {from}{range} \
                     ORDER BY {col} LIMIT {limit}) c",
                    col = self.column(*only),
                    hash = self.row_hash(),
                    from = self.from(Side::Source),
                    range = self.range(Side::Source, lower, upper),
                );
            }
        }
        // The key columns ride along as c.k1… so the last key is found with the scan's own
        // ordering (not the order of their texts).
        let raw: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} AS k{}", self.column(i), n + 1))
            .collect();
        let last: Vec<String> = (1..=self.key.len()).map(|n| format!("k{n} DESC")).collect();
        // Only the last key is printed as text, not every row's.
        let texts: Vec<String> = (1..=self.key.len())
            .map(|n| format!("k{n}::text"))
            .collect();
        format!(
            "WITH c AS MATERIALIZED (SELECT {raw}, {hash} AS h {from}{range} \
             ORDER BY {order} LIMIT {limit}) \
             SELECT count(*)::int8, coalesce(sum(h), 0)::text, \
             (SELECT ARRAY[{texts}] FROM c ORDER BY {last} LIMIT 1) FROM c",
            raw = raw.join(", "),
            texts = texts.join(", "),
            hash = self.row_hash(),
            from = self.from(Side::Source),
            range = self.range(Side::Source, lower, upper),
            order = self.key_order(),
            last = last.join(", "),
        )
    }

    /// Either side: `count` and `sum(hash)` of the rows in `(lower, upper]` (an absent bound is
    /// open).
    pub fn range_hash_sql(&self, side: Side, lower: bool, upper: bool) -> String {
        format!(
            "SELECT count(*)::int8, coalesce(sum({hash}), 0)::text {from}{range}",
            hash = self.row_hash(),
            from = self.from(side),
            range = self.range(side, lower, upper),
        )
    }

    /// The single integer key column, when both sides hold it as an integer type: such a
    /// table is first compared by key-range buckets (see [`super::buckets`]).
    pub fn integer_key(&self) -> Option<usize> {
        match (
            self.key.as_slice(),
            self.source_key_types.as_slice(),
            self.target_key_types.as_slice(),
        ) {
            ([only], [s], [t]) if integer_type(s) && integer_type(t) => Some(*only),
            _ => None,
        }
    }

    /// Source: the key's `min` and `max` (from the index, without the row filter: a wider range
    /// only makes buckets wider) and the estimated rows of the table and its partitions
    /// (`$1`: the qualified name; not positive when never analyzed).
    pub fn key_bounds_sql(&self, key: usize) -> String {
        let only = if self.partitioned { "" } else { "ONLY " };
        format!(
            "SELECT min({col})::int8, max({col})::int8, \
             (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::float8 \
              FROM pg_catalog.pg_partition_tree($1::text::regclass) p \
              JOIN pg_catalog.pg_class c ON c.oid = p.relid WHERE p.isleaf) \
             FROM {only}{table} AS t",
            col = self.column(key),
            table = self.qualified(),
        )
    }

    /// Either side: `bucket, count, sum(hash)` per key-range bucket in one scan; parameters
    /// `$1` min, `$2` max, `$3` width, `$4` buckets (all `int8`). Keys outside `[min, max]`
    /// fall into the first or last bucket.
    pub fn key_bucket_hash_sql(&self, side: Side, key: usize) -> String {
        format!(
            "SELECT b, count(*)::int8, sum(h)::text FROM \
             (SELECT CASE WHEN {k} < $1::int8 THEN 0 WHEN {k} > $2::int8 THEN $4::int8 - 1 \
                     ELSE ({k}::int8 - $1::int8) / $3::int8 END AS b, {hash} AS h {from}) r \
             GROUP BY 1",
            k = self.column(key),
            hash = self.row_hash(),
            from = self.from(side),
        )
    }

    /// Either side: key texts and column texts of every row in `(lower, upper]`.
    pub fn range_rows_sql(&self, side: Side, lower: bool, upper: bool) -> String {
        format!(
            "SELECT {key}, {cols} {from}{range}",
            key = self.key_texts(),
            cols = self.column_texts(),
            from = self.from(side),
            range = self.range(side, lower, upper),
        )
    }

    /// Either side: key texts and column texts of the rows whose keys are given as one text
    /// array per key column (`$1`, `$2`, …; the same length). `FOR SHARE` when `lock`.
    pub fn rows_by_keys_sql(&self, side: Side, lock: bool) -> String {
        let arrays: Vec<String> = (1..=self.key.len())
            .map(|i| format!("${i}::text[]"))
            .collect();
        let names: Vec<String> = (1..=self.key.len()).map(|i| format!("k{i}")).collect();
        let casts: Vec<String> = self
            .key_types(side)
            .iter()
            .zip(&names)
            .map(|(ty, n)| format!("x.{n}::{ty}"))
            .collect();
        let lock = if lock { " FOR SHARE OF t" } else { "" };
        format!(
            "SELECT {key}, {cols} {from} AND {tuple} IN (SELECT {casts} \
             FROM unnest({arrays}) AS x({names})){lock}",
            key = self.key_texts(),
            cols = self.column_texts(),
            from = self.from(side),
            tuple = self.key_tuple(),
            casts = casts.join(", "),
            arrays = arrays.join(", "),
            names = names.join(", "),
        )
    }

    /// Either side, keyless: `bucket, count, sum(hash)` per bucket of the whole table.
    pub fn bucket_hash_sql(&self, side: Side) -> String {
        format!(
            "SELECT h & {mask} AS b, count(*)::int8, sum(h)::text FROM \
             (SELECT {hash} AS h {from}) r GROUP BY 1",
            mask = BUCKETS - 1,
            hash = self.row_hash(),
            from = self.from(side),
        )
    }

    /// Either side, keyless: each distinct row text in the buckets `$1::int8[]` with its
    /// multiplicity.
    pub fn bucket_rows_sql(&self, side: Side) -> String {
        format!(
            "SELECT r, count(*)::int8 FROM (SELECT {text} AS r {from}) s \
             WHERE hashtextextended(r, 0) & {mask} = ANY ($1::int8[]) GROUP BY r",
            text = self.row_text(),
            from = self.from(side),
            mask = BUCKETS - 1,
        )
    }
}

/// Types whose built-in `max()` orders like their btree index (the usual key types).
fn has_max(ty: &str) -> bool {
    const TYPES: [&str; 12] = [
        "smallint",
        "integer",
        "bigint",
        "numeric",
        "text",
        "character varying",
        "character",
        "date",
        "timestamp without time zone",
        "timestamp with time zone",
        "oid",
        "time without time zone",
    ];
    TYPES
        .iter()
        .any(|t| ty == *t || ty.strip_prefix(t).is_some_and(|rest| rest.starts_with('(')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(key: Vec<usize>) -> TablePlan {
        TablePlan {
            schema: "s".into(),
            name: "T\"x".into(),
            columns: vec!["id".into(), "sub".into(), "v".into()],
            source_key_types: key.iter().map(|_| "integer".into()).collect(),
            target_key_types: key.iter().map(|_| "bigint".into()).collect(),
            key,
            row_filter: Some("id > 0".into()),
            partitioned: false,
        }
    }

    #[test]
    fn the_row_filter_applies_to_the_source_only() {
        let p = plan(vec![0]);
        let s = p.range_hash_sql(Side::Source, false, false);
        let t = p.range_hash_sql(Side::Target, false, false);
        assert!(s.contains("WHERE (id > 0)"), "{s}");
        assert!(!t.contains("id > 0"), "{t}");
        assert!(s.contains(r#"FROM ONLY "s"."T""x" AS t"#), "{s}");
    }

    #[test]
    fn keys_are_text_parameters_cast_to_each_sides_type() {
        let p = plan(vec![0, 1]);
        let s = p.range_hash_sql(Side::Source, true, true);
        assert!(
            s.contains(r#"AND (t."id", t."sub") > ($1::text::integer, $2::text::integer)"#),
            "{s}"
        );
        assert!(
            s.contains(r#"AND (t."id", t."sub") <= ($3::text::integer, $4::text::integer)"#),
            "{s}"
        );
        let t = p.range_hash_sql(Side::Target, false, true);
        assert!(t.contains("<= ($1::text::bigint, $2::text::bigint)"), "{t}");
        assert!(!t.contains(" > "), "{t}");
    }

    #[test]
    fn a_single_key_with_max_streams_through_one_aggregate() {
        let p = plan(vec![0]);
        let sql = p.source_chunk_sql(true, false, 500);
        assert!(sql.contains("ARRAY[max(k1)::text]"), "{sql}");
        assert!(sql.contains(r#"ORDER BY t."id" LIMIT 500) c"#), "{sql}");
        assert!(!sql.contains("MATERIALIZED"), "{sql}");
        assert!(has_max("numeric(10,2)") && has_max("bigint") && !has_max("uuid"));
        assert!(!has_max("integer[]"));
    }

    #[test]
    fn the_source_chunk_walks_in_key_order_and_returns_its_last_key() {
        let mut p = plan(vec![0]);
        p.source_key_types = vec!["uuid".into()];
        let sql = p.source_chunk_sql(true, false, 500);
        assert!(sql.contains(r#"ORDER BY t."id" LIMIT 500"#), "{sql}");
        assert!(sql.contains(r#"t."id" AS k1"#), "{sql}");
        assert!(
            sql.contains("SELECT ARRAY[k1::text] FROM c ORDER BY k1 DESC LIMIT 1"),
            "{sql}"
        );
        assert!(sql.contains(r#"hashtextextended(ROW(t."id", t."sub", t."v")::text, 0)"#));
        assert!(sql.contains("> ($1::text::uuid)"), "{sql}");
    }

    #[test]
    fn lookups_by_key_unnest_one_array_per_key_column() {
        let p = plan(vec![0, 1]);
        let sql = p.rows_by_keys_sql(Side::Target, true);
        assert!(
            sql.contains(
                r#"(t."id", t."sub") IN (SELECT x.k1::bigint, x.k2::bigint FROM unnest($1::text[], $2::text[]) AS x(k1, k2)) FOR SHARE OF t"#
            ),
            "{sql}"
        );
    }

    #[test]
    fn partitioned_tables_are_read_with_their_partitions() {
        let mut p = plan(vec![]);
        p.partitioned = true;
        let sql = p.bucket_hash_sql(Side::Target);
        assert!(sql.contains(r#"FROM "s"."T""x" AS t"#), "{sql}");
        assert!(sql.contains("h & 255"), "{sql}");
        assert!(
            p.bucket_rows_sql(Side::Source)
                .contains("= ANY ($1::int8[])")
        );
    }
}
