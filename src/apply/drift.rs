//! Schema drift: a source table whose columns no longer match the target table, and the ALTER
//! TABLE statements that make the target fit again, by policy. Pure: no I/O.
//!
//! ```text
//!  Relation message (names, type OIDs + modifiers) ─┐
//!  target catalog (names, types, NOT NULL, default) ─┴─▶ plan(mode) ─▶ [Alter] ─▶ ALTER TABLE …
//! ```
//!
//! | the source table …                        | `off`  | `additive` (default)     | `all`          |
//! |-------------------------------------------|--------|--------------------------|----------------|
//! | has a column the target lacks             | error  | ADD COLUMN               | ADD COLUMN     |
//! | has a wider type (int → bigint, varchar)  | —      | ALTER TYPE (widen)       | ALTER TYPE     |
//! | has another type                          | —      | —                        | ALTER TYPE     |
//! | lacks a target column (dropped, or never) | —      | DROP NOT NULL if it has  | DROP COLUMN    |
//! |                                           |        | no default, else keep    |                |
//!
//! Where nothing is done, values still go to the target as text and are cast by it, as before.
//! The applier runs the statements inside the open target transaction, before the first row that
//! needs them, so the progress row never passes a change that is not applied.

use super::sql::quote_ident;
use crate::wire::quote_literal;

/// What lsnpipe does when the source's columns drift from the target's (`--schema-changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaChanges {
    /// Stop with an error naming the table and the column.
    Off,
    /// Add columns, widen types, keep dropped columns (made nullable where they must be).
    #[default]
    Additive,
    /// Also drop columns the source lacks and change types in any direction.
    All,
}

/// One column of the target table as its catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetColumn {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`.
    pub type_name: String,
    pub not_null: bool,
    pub has_default: bool,
}

/// One column of the source table: its name and its type, spelled for the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceType {
    pub name: String,
    pub type_name: String,
}

/// One change to the target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Alter {
    /// `missing`: the value the source's existing rows read as (a constant default given when
    /// the column was added, as text), which the target's existing rows must get too.
    AddColumn {
        column: String,
        type_name: String,
        missing: Option<String>,
        not_null: bool,
    },
    ChangeType {
        column: String,
        from: String,
        to: String,
    },
    DropNotNull {
        column: String,
    },
    DropColumn {
        column: String,
    },
}

impl Alter {
    /// The metrics label of the change.
    pub fn kind(&self) -> &'static str {
        match self {
            Alter::AddColumn { .. } => "add_column",
            Alter::ChangeType { .. } => "alter_type",
            Alter::DropNotNull { .. } => "drop_not_null",
            Alter::DropColumn { .. } => "drop_column",
        }
    }

    /// The statement, on `table` (quoted and qualified). `ONLY` is not used: a column change
    /// must reach a partitioned table's partitions and an inheritance parent's children, as
    /// on the source.
    pub fn sql(&self, table: &str) -> String {
        match self {
            Alter::AddColumn {
                column,
                type_name,
                missing,
                not_null,
            } => {
                let mut sql = format!(
                    "ALTER TABLE {table} ADD COLUMN {} {type_name}",
                    quote_ident(column)
                );
                if let Some(value) = missing {
                    sql.push_str(&format!(" DEFAULT {}", quote_literal(value)));
                    if *not_null {
                        sql.push_str(" NOT NULL");
                    }
                }
                sql
            }
            Alter::ChangeType { column, to, .. } => {
                let column = quote_ident(column);
                format!("ALTER TABLE {table} ALTER COLUMN {column} TYPE {to} USING {column}::{to}")
            }
            Alter::DropNotNull { column } => {
                format!(
                    "ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL",
                    quote_ident(column)
                )
            }
            Alter::DropColumn { column } => {
                format!("ALTER TABLE {table} DROP COLUMN {}", quote_ident(column))
            }
        }
    }
}

/// The changes `mode` makes for `source` against `target`; `Err(column)` names the first source
/// column the target lacks when `mode` is `Off`.
pub(crate) fn plan(
    source: &[SourceType],
    target: &[TargetColumn],
    mode: SchemaChanges,
) -> Result<Vec<Alter>, String> {
    let mut changes = Vec::new();
    for column in source {
        match target.iter().find(|t| t.name == column.name) {
            None if mode == SchemaChanges::Off => return Err(column.name.clone()),
            None => changes.push(Alter::AddColumn {
                column: column.name.clone(),
                type_name: column.type_name.clone(),
                missing: None,
                not_null: false,
            }),
            Some(t) if t.type_name != column.type_name => {
                let change = match mode {
                    SchemaChanges::Off => false,
                    SchemaChanges::Additive => widens(&t.type_name, &column.type_name),
                    SchemaChanges::All => true,
                };
                if change {
                    changes.push(Alter::ChangeType {
                        column: column.name.clone(),
                        from: t.type_name.clone(),
                        to: column.type_name.clone(),
                    });
                }
            }
            Some(_) => {}
        }
    }
    for t in target {
        if source.iter().any(|c| c.name == t.name) {
            continue;
        }
        match mode {
            SchemaChanges::Off => {}
            SchemaChanges::Additive if t.not_null && !t.has_default => {
                changes.push(Alter::DropNotNull {
                    column: t.name.clone(),
                });
            }
            SchemaChanges::Additive => {}
            SchemaChanges::All => changes.push(Alter::DropColumn {
                column: t.name.clone(),
            }),
        }
    }
    Ok(changes)
}

/// Whether every value of type `from` is also a value of `to` (types as `format_type` spells
/// them), so that changing the column loses nothing.
pub(crate) fn widens(from: &str, to: &str) -> bool {
    const INTEGERS: [&str; 4] = ["smallint", "integer", "bigint", "numeric"];
    let rank = |t: &str| INTEGERS.iter().position(|i| *i == t);
    if let (Some(a), Some(b)) = (rank(from), rank(to)) {
        return a < b;
    }
    if from == "real" && to == "double precision" {
        return true;
    }
    if let Some(n) = modifier(from, "character varying") {
        return to == "text"
            || to == "character varying"
            || modifier(to, "character varying").is_some_and(|m| m.first() >= n.first());
    }
    if from == "character varying" {
        return to == "text";
    }
    if let Some(m) = modifier(from, "numeric") {
        if to == "numeric" {
            return true;
        }
        if let Some(n) = modifier(to, "numeric") {
            // numeric(p, s) → numeric(p', s) with p' ≥ p keeps every value.
            let scale = |v: &[u32]| v.get(1).copied().unwrap_or(0);
            return n.first() >= m.first() && scale(&n) == scale(&m);
        }
    }
    false
}

/// The numbers of `name(a[,b])`, or `None` when `spelled` is not `name` with a modifier.
fn modifier(spelled: &str, name: &str) -> Option<Vec<u32>> {
    let inner = spelled
        .strip_prefix(name)?
        .strip_prefix('(')?
        .strip_suffix(')')?;
    inner.split(',').map(|n| n.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(columns: &[(&str, &str)]) -> Vec<SourceType> {
        columns
            .iter()
            .map(|(name, type_name)| SourceType {
                name: (*name).into(),
                type_name: (*type_name).into(),
            })
            .collect()
    }

    fn target(name: &str, type_name: &str, not_null: bool, has_default: bool) -> TargetColumn {
        TargetColumn {
            name: name.into(),
            type_name: type_name.into(),
            not_null,
            has_default,
        }
    }

    #[test]
    fn additive_adds_widens_and_relaxes() {
        let source = source(&[("id", "bigint"), ("v", "text"), ("new", "numeric(10,2)")]);
        let target = [
            target("id", "integer", true, false),
            target("v", "text", false, false),
            target("gone", "integer", true, false),
            target("extra", "integer", true, true),
        ];
        let changes = plan(&source, &target, SchemaChanges::Additive).unwrap();
        assert_eq!(
            changes,
            [
                Alter::ChangeType {
                    column: "id".into(),
                    from: "integer".into(),
                    to: "bigint".into()
                },
                Alter::AddColumn {
                    column: "new".into(),
                    type_name: "numeric(10,2)".into(),
                    missing: None,
                    not_null: false,
                },
                Alter::DropNotNull {
                    column: "gone".into()
                },
            ]
        );
        assert_eq!(
            changes[1].sql("\"s\".\"t\""),
            "ALTER TABLE \"s\".\"t\" ADD COLUMN \"new\" numeric(10,2)"
        );
        let with_default = Alter::AddColumn {
            column: "n".into(),
            type_name: "integer".into(),
            missing: Some("it's 7".into()),
            not_null: true,
        };
        assert_eq!(
            with_default.sql("t"),
            "ALTER TABLE t ADD COLUMN \"n\" integer DEFAULT 'it''s 7' NOT NULL"
        );
    }

    #[test]
    fn off_names_the_missing_column_and_changes_nothing_else() {
        let target = [
            target("id", "integer", true, false),
            target("x", "int", true, false),
        ];
        assert_eq!(
            plan(
                &source(&[("id", "bigint"), ("v", "text")]),
                &target,
                SchemaChanges::Off
            ),
            Err("v".into())
        );
        assert_eq!(
            plan(&source(&[("id", "bigint")]), &target, SchemaChanges::Off),
            Ok(vec![])
        );
    }

    #[test]
    fn all_narrows_and_drops() {
        let target = [
            target("id", "bigint", true, false),
            target("gone", "text", false, false),
        ];
        let changes = plan(&source(&[("id", "integer")]), &target, SchemaChanges::All).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(
            changes[0].sql("t"),
            "ALTER TABLE t ALTER COLUMN \"id\" TYPE integer USING \"id\"::integer"
        );
        assert_eq!(changes[1].sql("t"), "ALTER TABLE t DROP COLUMN \"gone\"");
        // Additive never narrows.
        assert_eq!(
            plan(
                &source(&[("id", "integer")]),
                &target[..1],
                SchemaChanges::Additive
            ),
            Ok(vec![])
        );
    }

    #[test]
    fn widening_is_only_what_keeps_every_value() {
        assert!(widens("integer", "bigint"));
        assert!(widens("smallint", "numeric"));
        assert!(!widens("bigint", "integer"));
        assert!(widens("real", "double precision"));
        assert!(widens("character varying(10)", "character varying(20)"));
        assert!(widens("character varying(10)", "text"));
        assert!(!widens("character varying(20)", "character varying(10)"));
        assert!(widens("character varying", "text"));
        assert!(widens("numeric(10,2)", "numeric(12,2)"));
        assert!(!widens("numeric(10,2)", "numeric(12,3)"));
        assert!(widens("numeric(10,2)", "numeric"));
        assert!(!widens("text", "character varying(10)"));
        assert!(!widens("integer", "text"));
    }
}
