//! Statement text for applying changes: pure functions, no I/O.
//!
//! Every identifier is quoted (`"Weird ""Table"""`) and schema-qualified; no value ever appears
//! in the text, only `$n` parameters, so the target infers each parameter's type from the column
//! it meets. Parameters are numbered in the order the caller passes values: SET values first,
//! then the values of the row-matching clause.
//!
//! Matching one row under `REPLICA IDENTITY FULL` (no unique key may exist, and duplicates may):
//! ```text
//! UPDATE t SET .. WHERE ctid = (SELECT ctid FROM t WHERE a = $3 AND b IS NULL AND c::text = $4::text LIMIT 1)
//! ```
//! A NULL old value becomes `IS NULL` instead of a parameter (same meaning as
//! `IS NOT DISTINCT FROM`, but an index on the column stays usable), so the statement shape
//! depends on which old values are NULL. Columns whose type has no equality operator (json,
//! point, xml, …) are compared by their text output: the target stored exactly what the source
//! printed, so printing it again gives the same text.

use std::fmt::Write;

use crate::wire::push_ident;
pub use crate::wire::quote_ident;

/// `"schema"."table"`.
pub fn qualified_name(schema: &str, table: &str) -> String {
    let mut out = String::with_capacity(schema.len() + table.len() + 5);
    push_ident(&mut out, schema);
    out.push('.');
    push_ident(&mut out, table);
    out
}

/// How one column of the old row is matched under `REPLICA IDENTITY FULL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match<'a> {
    /// `col = $n`.
    Equal(&'a str),
    /// `col::text = $n::text`: the type has no equality operator.
    Text(&'a str),
    /// `col IS NULL` (no parameter).
    IsNull(&'a str),
}

/// `INSERT INTO table (cols) VALUES ($1, $2), ($3, $4), …` for `rows` rows.
/// With no columns (every value unknown), one row of defaults.
pub fn insert(table: &str, columns: &[&str], rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} ");
    if columns.is_empty() {
        sql.push_str("DEFAULT VALUES");
        return sql;
    }
    push_list(&mut sql, columns);
    sql.push_str(" VALUES ");
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..columns.len() {
            if col > 0 {
                sql.push_str(", ");
            }
            n += 1;
            let _ = write!(sql, "${n}");
        }
        sql.push(')');
    }
    sql
}

/// The table an UPDATE or DELETE names: `ONLY t`, so that inheritance children (replicated on
/// their own) are never changed through their parent. A partitioned table has no rows of its
/// own, so it is named without `ONLY`: its partitions hold the rows.
fn only(table: &str, partitioned: bool) -> String {
    if partitioned {
        table.to_owned()
    } else {
        format!("ONLY {table}")
    }
}

/// `UPDATE ONLY table SET a = $1, b = $2 WHERE k = $3` (identity DEFAULT / USING INDEX).
pub fn update_by_key(table: &str, set: &[&str], key: &[&str], partitioned: bool) -> String {
    let mut sql = format!("UPDATE {} SET ", only(table, partitioned));
    push_assignments(&mut sql, set);
    sql.push_str(" WHERE ");
    push_key(&mut sql, key, set.len());
    sql
}

/// Several rows updated by key in one statement; each value is cast to its column's type, since
/// a VALUES list gives its parameters no type of its own:
/// `UPDATE t SET "a" = lsnpipe_rows.c1 FROM (VALUES ($1::integer, $2::text), …)
///  AS lsnpipe_rows (c1, k1) WHERE t."k" = lsnpipe_rows.k1`.
/// Columns and keys are (name, type) pairs; the keys must be distinct across the rows.
pub fn update_rows(
    table: &str,
    set: &[(&str, &str)],
    key: &[(&str, &str)],
    rows: usize,
    partitioned: bool,
) -> String {
    let mut sql = format!("UPDATE {} SET ", only(table, partitioned));
    for (i, (column, _)) in set.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        push_ident(&mut sql, column);
        let _ = write!(sql, " = lsnpipe_rows.c{}", i + 1);
    }
    sql.push_str(" FROM (VALUES ");
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (i, (_, type_name)) in set.iter().chain(key).enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            n += 1;
            let _ = write!(sql, "${n}::{type_name}");
        }
        sql.push(')');
    }
    sql.push_str(") AS lsnpipe_rows (");
    for i in 0..set.len() {
        let _ = write!(sql, "c{}, ", i + 1);
    }
    for i in 0..key.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "k{}", i + 1);
    }
    sql.push_str(") WHERE ");
    for (i, (column, _)) in key.iter().enumerate() {
        if i > 0 {
            sql.push_str(" AND ");
        }
        let _ = write!(sql, "{table}.");
        push_ident(&mut sql, column);
        let _ = write!(sql, " = lsnpipe_rows.k{}", i + 1);
    }
    sql
}

/// `DELETE FROM ONLY table WHERE k = $1` (identity DEFAULT / USING INDEX).
pub fn delete_by_key(table: &str, key: &[&str], partitioned: bool) -> String {
    let mut sql = format!("DELETE FROM {} WHERE ", only(table, partitioned));
    push_key(&mut sql, key, 0);
    sql
}

/// Several rows deleted by key in one statement:
/// `DELETE FROM t WHERE "k" IN ($1, $2)`, or with a key of several columns
/// `DELETE FROM t WHERE ("a", "b") IN (($1, $2), ($3, $4))`.
pub fn delete_rows(table: &str, key: &[&str], rows: usize, partitioned: bool) -> String {
    let mut sql = format!("DELETE FROM {} WHERE ", only(table, partitioned));
    let composite = key.len() != 1;
    if composite {
        push_list(&mut sql, key);
    } else {
        push_ident(&mut sql, key.first().copied().unwrap_or_default());
    }
    sql.push_str(" IN (");
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        if composite {
            sql.push('(');
        }
        for i in 0..key.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            n += 1;
            let _ = write!(sql, "${n}");
        }
        if composite {
            sql.push(')');
        }
    }
    sql.push(')');
    sql
}

/// `UPDATE table SET … WHERE <one row matching old>` (identity FULL).
pub fn update_one_row(table: &str, set: &[&str], old: &[Match<'_>], partitioned: bool) -> String {
    let mut sql = format!("UPDATE {} SET ", only(table, partitioned));
    push_assignments(&mut sql, set);
    sql.push_str(" WHERE ");
    push_one_row(&mut sql, table, old, set.len(), partitioned);
    sql
}

/// `DELETE FROM table WHERE <one row matching old>` (identity FULL).
pub fn delete_one_row(table: &str, old: &[Match<'_>], partitioned: bool) -> String {
    let mut sql = format!("DELETE FROM {} WHERE ", only(table, partitioned));
    push_one_row(&mut sql, table, old, 0, partitioned);
    sql
}

/// One relation of a TRUNCATE: its qualified name, and whether to truncate it alone (`ONLY`):
/// the source listed every relation it truncated, so inheritance children are listed when they
/// were truncated; a partitioned table cannot be named with `ONLY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncateTarget {
    pub table: String,
    pub only: bool,
}

/// `TRUNCATE ONLY a, b [RESTART IDENTITY] [CASCADE]`: one statement for all relations of one
/// source TRUNCATE.
pub fn truncate(tables: &[TruncateTarget], cascade: bool, restart_identity: bool) -> String {
    let mut sql = String::from("TRUNCATE TABLE ");
    for (i, t) in tables.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        if t.only {
            sql.push_str("ONLY ");
        }
        sql.push_str(&t.table);
    }
    if restart_identity {
        sql.push_str(" RESTART IDENTITY");
    }
    if cascade {
        sql.push_str(" CASCADE");
    }
    sql
}

fn push_list(sql: &mut String, columns: &[&str]) {
    sql.push('(');
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        push_ident(sql, c);
    }
    sql.push(')');
}

fn push_assignments(sql: &mut String, set: &[&str]) {
    for (i, c) in set.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        push_ident(sql, c);
        let _ = write!(sql, " = ${}", i + 1);
    }
}

fn push_key(sql: &mut String, key: &[&str], params_before: usize) {
    for (i, c) in key.iter().enumerate() {
        if i > 0 {
            sql.push_str(" AND ");
        }
        push_ident(sql, c);
        let _ = write!(sql, " = ${}", params_before + i + 1);
    }
}

/// `ctid = (SELECT ctid FROM t WHERE … LIMIT 1)`: exactly one row even among duplicates. A
/// partitioned table's ctids repeat across partitions, so there the pair (tableoid, ctid) is used.
fn push_one_row(
    sql: &mut String,
    table: &str,
    old: &[Match<'_>],
    params_before: usize,
    partitioned: bool,
) {
    let row_id = if partitioned {
        "(tableoid, ctid)"
    } else {
        "ctid"
    };
    let selected = if partitioned {
        "tableoid, ctid"
    } else {
        "ctid"
    };
    let _ = write!(
        sql,
        "{row_id} = (SELECT {selected} FROM {} WHERE ",
        only(table, partitioned)
    );
    let mut n = params_before;
    if old.is_empty() {
        sql.push_str("true");
    }
    for (i, m) in old.iter().enumerate() {
        if i > 0 {
            sql.push_str(" AND ");
        }
        match m {
            Match::Equal(c) => {
                n += 1;
                push_ident(sql, c);
                let _ = write!(sql, " = ${n}");
            }
            Match::Text(c) => {
                n += 1;
                push_ident(sql, c);
                let _ = write!(sql, "::text = ${n}::text");
            }
            Match::IsNull(c) => {
                push_ident(sql, c);
                sql.push_str(" IS NULL");
            }
        }
    }
    sql.push_str(" LIMIT 1)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_doubled_quotes() {
        assert_eq!(quote_ident("Weird \"Table\""), "\"Weird \"\"Table\"\"\"");
        assert_eq!(qualified_name("My Schema", "t"), "\"My Schema\".\"t\"");
        assert_eq!(quote_ident("ünï"), "\"ünï\"");
    }

    #[test]
    fn insert_numbers_parameters_across_rows() {
        assert_eq!(
            insert("\"s\".\"t\"", &["id", "Name"], 2),
            "INSERT INTO \"s\".\"t\" (\"id\", \"Name\") VALUES ($1, $2), ($3, $4)"
        );
        assert_eq!(insert("t", &[], 1), "INSERT INTO t DEFAULT VALUES");
    }

    #[test]
    fn update_by_key_numbers_set_then_key() {
        assert_eq!(
            update_by_key("t", &["a", "b"], &["k1", "k2"], false),
            "UPDATE ONLY t SET \"a\" = $1, \"b\" = $2 WHERE \"k1\" = $3 AND \"k2\" = $4"
        );
    }

    #[test]
    fn update_rows_casts_every_value_and_joins_on_the_key() {
        assert_eq!(
            update_rows(
                "\"s\".\"t\"",
                &[("a b", "integer")],
                &[("id", "bigint")],
                2,
                false
            ),
            "UPDATE ONLY \"s\".\"t\" SET \"a b\" = lsnpipe_rows.c1 FROM (VALUES ($1::integer, \
             $2::bigint), ($3::integer, $4::bigint)) AS lsnpipe_rows (c1, k1) WHERE \
             \"s\".\"t\".\"id\" = lsnpipe_rows.k1"
        );
    }

    #[test]
    fn delete_rows_lists_keys_or_key_tuples() {
        assert_eq!(
            delete_rows("t", &["id"], 3, false),
            "DELETE FROM ONLY t WHERE \"id\" IN ($1, $2, $3)"
        );
        assert_eq!(
            delete_rows("t", &["a", "b"], 2, true),
            "DELETE FROM t WHERE (\"a\", \"b\") IN (($1, $2), ($3, $4))"
        );
    }

    #[test]
    fn delete_by_key_uses_only_the_key() {
        assert_eq!(
            delete_by_key("t", &["id"], false),
            "DELETE FROM ONLY t WHERE \"id\" = $1"
        );
    }

    #[test]
    fn full_identity_matches_one_row_with_null_and_text_comparisons() {
        let old = [Match::Equal("a"), Match::IsNull("b"), Match::Text("j")];
        assert_eq!(
            delete_one_row("t", &old, false),
            "DELETE FROM ONLY t WHERE ctid = (SELECT ctid FROM ONLY t WHERE \"a\" = $1 AND \
             \"b\" IS NULL AND \"j\"::text = $2::text LIMIT 1)"
        );
        assert_eq!(
            update_one_row("t", &["a"], &old, false),
            "UPDATE ONLY t SET \"a\" = $1 WHERE ctid = (SELECT ctid FROM ONLY t WHERE \"a\" = $2 AND \
             \"b\" IS NULL AND \"j\"::text = $3::text LIMIT 1)"
        );
    }

    #[test]
    fn full_identity_on_a_partitioned_table_matches_tableoid_and_ctid() {
        assert_eq!(
            delete_one_row("p", &[Match::Equal("a")], true),
            "DELETE FROM p WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM p WHERE \
             \"a\" = $1 LIMIT 1)"
        );
    }

    #[test]
    fn truncate_lists_every_relation_with_flags() {
        let tables = [
            TruncateTarget {
                table: "\"s\".\"a\"".into(),
                only: true,
            },
            TruncateTarget {
                table: "\"s\".\"p\"".into(),
                only: false,
            },
        ];
        assert_eq!(
            truncate(&tables, true, true),
            "TRUNCATE TABLE ONLY \"s\".\"a\", \"s\".\"p\" RESTART IDENTITY CASCADE"
        );
        assert_eq!(
            truncate(&tables[..1], false, false),
            "TRUNCATE TABLE ONLY \"s\".\"a\""
        );
    }
}
