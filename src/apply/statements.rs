//! Which statement a change needs, as a cache key, and its text from the relation.
//!
//! ```text
//! change ─▶ StatementKey { relation, kind, columns } ─▶ cache hit: prepared Statement
//!                                                   └▶ miss: text from relation + key ─▶ prepare
//! ```
//!
//! The key alone determines the statement text (with the relation it names), so a change costs a
//! hash lookup, and text is built and prepared once per (table, operation, column set).

use super::batch::ColumnSet;
use super::relation::{CachedRelation, SourceColumn};
use super::sql::{self, Match};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum StatementKind {
    /// Multi-row insert of `rows` rows.
    Insert {
        rows: usize,
    },
    UpdateByKey,
    /// Update of `rows` rows with distinct keys in one statement.
    UpdateRows {
        rows: usize,
    },
    DeleteByKey,
    /// Delete of `rows` rows by key in one statement.
    DeleteRows {
        rows: usize,
    },
    /// Identity FULL: which old values were NULL and which were left out of the match.
    UpdateOneRow {
        old: OldMatch,
    },
    DeleteOneRow {
        old: OldMatch,
    },
}

/// The shape of an identity-FULL row match: NULLs match by `IS NULL`; binary values of types
/// without equality are left out (their binary form cannot be compared as text).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct OldMatch {
    pub nulls: ColumnSet,
    pub skipped: ColumnSet,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StatementKey {
    pub oid: u32,
    pub kind: StatementKind,
    /// Inserted or SET columns (empty for deletes).
    pub columns: ColumnSet,
}

/// The statement text for `key` on `relation`.
pub(crate) fn statement_text<'a>(relation: &'a CachedRelation, key: &StatementKey) -> String {
    let columns = &relation.source.columns;
    let chosen: Vec<&str> = columns
        .iter()
        .enumerate()
        .filter(|(i, _)| key.columns.contains(*i))
        .map(|(_, c)| c.name.as_str())
        .collect();
    let keys = || -> Vec<&str> {
        columns
            .iter()
            .filter(|c| c.is_key)
            .map(|c| c.name.as_str())
            .collect()
    };
    let partitioned = relation.target.as_ref().is_some_and(|t| t.partitioned);
    let name = &relation.name;
    match &key.kind {
        StatementKind::Insert { rows } => sql::insert(name, &chosen, *rows),
        StatementKind::UpdateByKey => sql::update_by_key(name, &chosen, &keys(), partitioned),
        StatementKind::UpdateRows { rows } => {
            let types = relation.target.as_ref().map(|t| t.types.as_slice());
            let typed = |i: usize, c: &'a SourceColumn| -> (&'a str, &'a str) {
                let type_name = types.and_then(|t| t.get(i)).map_or("text", String::as_str);
                (c.name.as_str(), type_name)
            };
            let set: Vec<(&str, &str)> = columns
                .iter()
                .enumerate()
                .filter(|(i, _)| key.columns.contains(*i))
                .map(|(i, c)| typed(i, c))
                .collect();
            let keys: Vec<(&str, &str)> = columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_key)
                .map(|(i, c)| typed(i, c))
                .collect();
            sql::update_rows(name, &set, &keys, *rows, partitioned)
        }
        StatementKind::DeleteByKey => sql::delete_by_key(name, &keys(), partitioned),
        StatementKind::DeleteRows { rows } => sql::delete_rows(name, &keys(), *rows, partitioned),
        StatementKind::UpdateOneRow { old } => {
            sql::update_one_row(name, &chosen, &matches(relation, old), partitioned)
        }
        StatementKind::DeleteOneRow { old } => {
            sql::delete_one_row(name, &matches(relation, old), partitioned)
        }
    }
}

fn matches<'a>(relation: &'a CachedRelation, old: &OldMatch) -> Vec<Match<'a>> {
    let comparable = relation.target.as_ref().map(|t| t.comparable.as_slice());
    relation
        .source
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !old.skipped.contains(*i))
        .map(|(i, c)| {
            if old.nulls.contains(i) {
                Match::IsNull(&c.name)
            } else if comparable.and_then(|c| c.get(i)).copied().unwrap_or(false) {
                Match::Equal(&c.name)
            } else {
                Match::Text(&c.name)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::relation::{SourceColumn, SourceRelation, TargetShape};
    use crate::pgoutput::ReplicaIdentity;

    fn relation() -> CachedRelation {
        let column = |name: &str, is_key| SourceColumn {
            name: name.into(),
            type_oid: 25,
            type_modifier: -1,
            is_key,
        };
        CachedRelation {
            source: SourceRelation {
                oid: 1,
                schema: "s".into(),
                table: "t".into(),
                identity: ReplicaIdentity::Full,
                columns: vec![column("id", true), column("j", true), column("v", true)],
            },
            name: "\"s\".\"t\"".into(),
            target: Some(TargetShape {
                partitioned: false,
                order: crate::apply::planner::TableOrder::Keyed,
                comparable: vec![true, false, true],
                types: vec!["integer".into(), "json".into(), "text".into()],
                generated: vec![false; 3],
            }),
        }
    }

    fn set(width: usize, members: &[usize]) -> ColumnSet {
        let mut set = ColumnSet::with_columns(width);
        for &i in members {
            set.insert(i);
        }
        set
    }

    #[test]
    fn full_identity_text_uses_equality_text_and_null_per_column() {
        let key = StatementKey {
            oid: 1,
            kind: StatementKind::UpdateOneRow {
                old: OldMatch {
                    nulls: set(3, &[2]),
                    skipped: set(3, &[]),
                },
            },
            columns: set(3, &[2]),
        };
        assert_eq!(
            statement_text(&relation(), &key),
            "UPDATE ONLY \"s\".\"t\" SET \"v\" = $1 WHERE ctid = (SELECT ctid FROM ONLY \"s\".\"t\" WHERE \
             \"id\" = $2 AND \"j\"::text = $3::text AND \"v\" IS NULL LIMIT 1)"
        );
    }

    #[test]
    fn update_rows_takes_types_from_the_target() {
        let mut relation = relation();
        for c in &mut relation.source.columns {
            c.is_key = c.name == "id";
        }
        let key = StatementKey {
            oid: 1,
            kind: StatementKind::UpdateRows { rows: 1 },
            columns: set(3, &[1]),
        };
        assert_eq!(
            statement_text(&relation, &key),
            "UPDATE ONLY \"s\".\"t\" SET \"j\" = lsnpipe_rows.c1 FROM (VALUES ($1::json, \
             $2::integer)) AS lsnpipe_rows (c1, k1) WHERE \"s\".\"t\".\"id\" = lsnpipe_rows.k1"
        );
    }

    #[test]
    fn insert_names_only_the_chosen_columns() {
        let key = StatementKey {
            oid: 1,
            kind: StatementKind::Insert { rows: 2 },
            columns: set(3, &[0, 2]),
        };
        assert_eq!(
            statement_text(&relation(), &key),
            "INSERT INTO \"s\".\"t\" (\"id\", \"v\") VALUES ($1, $2), ($3, $4)"
        );
    }
}
