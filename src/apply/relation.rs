//! Relation cache: what the source said a relation looks like, and the target table it maps to.
//!
//! ```text
//! Relation message ──replace──▶ RelationCache[source OID] ──first change──▶ check target catalog
//!                                  (owned copy of the shape)                 (table exists, every
//!                                                                             published column exists)
//! ```
//!
//! Keyed by the source relation OID, replaced on every Relation message (the walsender re-sends
//! one after any change and after every reconnect). The target is found by schema + table name,
//! and columns are matched by name, so the target's column order may differ and the target may
//! have extra columns (they get their defaults). The check runs on first use and again after a
//! Relation message that changed the shape.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use super::drift::{self, Alter, SchemaChanges, SourceType, TargetColumn};
use super::error::{ApplyError, Operation};
use super::planner::TableOrder;
use super::sql;
use crate::pgoutput::{self, ReplicaIdentity};

/// One published column as the source described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod`; -1 when the type has none.
    pub type_modifier: i32,
    /// Part of the replica identity (every column under FULL).
    pub is_key: bool,
}

/// An owned copy of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRelation {
    pub oid: u32,
    /// Never empty: the wire's empty namespace is `pg_catalog`.
    pub schema: String,
    pub table: String,
    pub identity: ReplicaIdentity,
    pub columns: Vec<SourceColumn>,
}

impl SourceRelation {
    /// An owned copy of a decoded Relation message.
    pub fn from_message(message: &pgoutput::Relation) -> Self {
        let schema = match message.namespace() {
            "" => "pg_catalog",
            namespace => namespace,
        };
        SourceRelation {
            oid: message.oid,
            schema: schema.to_owned(),
            table: message.name().to_owned(),
            identity: message.replica_identity,
            columns: message
                .columns()
                .map(|c| SourceColumn {
                    name: c.name.to_owned(),
                    type_oid: c.type_oid,
                    type_modifier: c.type_modifier,
                    is_key: c.is_key(),
                })
                .collect(),
        }
    }
}

/// What the target catalog said about the table, per source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetShape {
    /// A partitioned table (ctids repeat across partitions; no `ONLY`).
    pub partitioned: bool,
    /// How freely changes may be reordered, from its unique indexes and triggers (assuming
    /// `session_replication_role = replica`).
    pub order: TableOrder,
    /// Per source column: the target type has an equality operator (else compare as text).
    pub comparable: Vec<bool>,
    /// Per source column: the target column's type name, without modifier, spelled for this
    /// session (casts in multi-row statements, where no column gives a parameter its type).
    /// Asked for with typmod -1, so `char(n)` and `bit(n)` come back as `bpchar` and `"bit"`
    /// (unbounded), not as `character` / `bit`, which mean length 1 and would truncate in a cast;
    /// the column's own modifier is applied, with its errors, on assignment.
    pub types: Vec<String>,
    /// Per source column: generated on the target (`GENERATED ALWAYS AS … STORED`). Such a column
    /// is never written, whatever the source sends (a plain column there, or a generated one
    /// published with PostgreSQL 18's `publish_generated_columns`): the target computes it.
    pub generated: Vec<bool>,
}

impl TargetShape {
    /// Whether source column `i` is generated on the target.
    pub fn is_generated(&self, i: usize) -> bool {
        self.generated.get(i).copied().unwrap_or(false)
    }
}

/// A cached relation.
#[derive(Debug)]
pub struct CachedRelation {
    pub source: SourceRelation,
    /// `"schema"."table"`, shared with statement contexts and errors.
    pub name: Arc<str>,
    /// Filled by [`RelationCache::checked`] on first use.
    pub target: Option<TargetShape>,
}

/// Source relation OID → [`CachedRelation`].
#[derive(Debug, Default)]
pub struct RelationCache {
    relations: HashMap<u32, CachedRelation>,
    /// Source type OID → its quoted, qualified name, from Type messages (user-defined types;
    /// built-in types have the same OID everywhere).
    types: HashMap<u32, String>,
}

impl RelationCache {
    /// Store `source`, replacing the entry for its OID. Returns whether the shape changed (a
    /// re-sent, identical Relation keeps the target check and the statements built on it).
    pub fn replace(&mut self, source: SourceRelation) -> bool {
        if let Some(existing) = self.relations.get(&source.oid) {
            if existing.source == source {
                return false;
            }
        }
        let name: Arc<str> = sql::qualified_name(&source.schema, &source.table).into();
        self.relations.insert(
            source.oid,
            CachedRelation {
                source,
                name,
                target: None,
            },
        );
        true
    }

    /// Forget every target check (the target transaction that made schema changes rolled back).
    pub fn forget_targets(&mut self) {
        for relation in self.relations.values_mut() {
            relation.target = None;
        }
    }

    /// Remember a user-defined type's name from a Type message.
    pub fn add_type(&mut self, oid: u32, namespace: &str, name: &str) {
        let namespace = if namespace.is_empty() {
            "pg_catalog"
        } else {
            namespace
        };
        self.types.insert(oid, sql::qualified_name(namespace, name));
    }

    /// The ALTER TABLE changes `mode` makes so that the target table of `oid` fits the source's
    /// columns (none when the table is missing: the check reports that).
    /// `source`: a session on the source, to add a column as the source has it (type, and the
    /// value its existing rows read as). Also returns the table to alter: the relation's, or for
    /// a partition its partitioned root (a partition's columns are its parent's).
    pub(crate) async fn drift(
        &self,
        client: &Client,
        source: Option<&Client>,
        oid: u32,
        mode: SchemaChanges,
    ) -> Result<(String, Vec<Alter>), ApplyError> {
        let relation = self.get(oid)?;
        let mut altered = relation.name.to_string();
        if mode == SchemaChanges::Off {
            return Ok((altered, Vec::new()));
        }
        let name = &relation.name;
        let catalog_error = |e| ApplyError::from_target(e, name, Operation::Bookkeeping);
        let Some(table) = client
            .query_opt(
                FIND_TABLE,
                &[&relation.source.schema, &relation.source.table],
            )
            .await
            .map_err(catalog_error)?
        else {
            return Ok((altered, Vec::new()));
        };
        let table_oid: u32 = table.try_get(0).map_err(catalog_error)?;
        if let Some(root) = client
            .query_one(PARTITION_ROOT, &[&table_oid])
            .await
            .map_err(catalog_error)?
            .try_get::<_, Option<String>>(0)
            .map_err(catalog_error)?
        {
            altered = root;
        }
        let mut target = Vec::new();
        let mut generated = std::collections::HashSet::new();
        for row in client
            .query(DRIFT_COLUMNS, &[&table_oid])
            .await
            .map_err(catalog_error)?
        {
            if row.try_get::<_, bool>(4).map_err(catalog_error)? {
                generated.insert(row.try_get::<_, String>(0).map_err(catalog_error)?);
                continue;
            }
            target.push(TargetColumn {
                name: row.try_get(0).map_err(catalog_error)?,
                type_name: row.try_get(1).map_err(catalog_error)?,
                not_null: row.try_get(2).map_err(catalog_error)?,
                has_default: row.try_get(3).map_err(catalog_error)?,
            });
        }
        let columns = &relation.source.columns;
        let oids: Vec<u32> = columns.iter().map(|c| c.type_oid).collect();
        let modifiers: Vec<i32> = columns.iter().map(|c| c.type_modifier).collect();
        let spelled = client
            .query(BUILTIN_TYPES, &[&oids, &modifiers])
            .await
            .map_err(catalog_error)?;
        let mut source_types = Vec::with_capacity(columns.len());
        for (column, row) in columns.iter().zip(spelled) {
            let builtin: Option<String> = row.try_get(0).map_err(catalog_error)?;
            let type_name = match builtin {
                Some(t) if column.type_oid < FIRST_USER_OID => t,
                _ => self.types.get(&column.type_oid).cloned().ok_or_else(|| {
                    ApplyError::protocol(format!(
                        "column \"{}\" of {name} has type OID {}, which the source did not \
                         describe in a Type message",
                        column.name, column.type_oid
                    ))
                })?,
            };
            if generated.contains(&column.name) {
                // The target computes it: nothing to fit.
                continue;
            }
            source_types.push(SourceType {
                name: column.name.clone(),
                type_name,
            });
        }
        let mut changes = drift::plan(&source_types, &target, mode).map_err(|column| {
            ApplyError::MissingColumn {
                table: name.to_string(),
                column,
            }
        })?;
        if let Some(catalog) = source {
            for change in &mut changes {
                if let Alter::AddColumn {
                    column,
                    type_name,
                    missing,
                    not_null,
                } = change
                {
                    let found = catalog
                        .query_opt(
                            SOURCE_COLUMN,
                            &[&relation.source.schema, &relation.source.table, &*column],
                        )
                        .await
                        .map_err(|e| {
                            ApplyError::protocol(format!(
                                "cannot read column \"{column}\" of {name} from the source \
                                 catalog: {e}"
                            ))
                        })?;
                    if let Some(row) = found {
                        let read =
                            |e| ApplyError::protocol(format!("source catalog row for {name}: {e}"));
                        *type_name = row.try_get(0).map_err(read)?;
                        *missing = row.try_get(1).map_err(read)?;
                        *not_null = row.try_get(2).map_err(read)?;
                        if missing.is_none() && row.try_get::<_, bool>(3).map_err(read)? {
                            tracing::warn!(
                                table = %name,
                                column = %column,
                                "column added on the source with a default that was computed \
                                 per row: the target's existing rows get NULL there (their \
                                 source values are not in the stream); copy the table again \
                                 to fill them"
                            );
                        }
                    }
                }
            }
        }
        Ok((altered, changes))
    }

    pub fn get(&self, oid: u32) -> Result<&CachedRelation, ApplyError> {
        self.relations.get(&oid).ok_or_else(|| {
            ApplyError::protocol(format!(
                "a change for relation OID {oid} arrived before its Relation message"
            ))
        })
    }

    /// The relation, its target table checked against the target catalog (once per shape).
    pub async fn checked(
        &mut self,
        client: &Client,
        oid: u32,
    ) -> Result<&CachedRelation, ApplyError> {
        let relation = self.relations.get_mut(&oid).ok_or_else(|| {
            ApplyError::protocol(format!(
                "a change for relation OID {oid} arrived before its Relation message"
            ))
        })?;
        if relation.target.is_none() {
            relation.target = Some(lookup_target(client, &relation.source, &relation.name).await?);
        }
        Ok(relation)
    }
}

/// A source column as `ADD COLUMN` needs it: type (qualified: the session has an empty
/// search_path), the value existing rows read as (a constant default given when it was added),
/// NOT NULL, and whether it has a default at all.
const SOURCE_COLUMN: &str = "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod), \
        CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END, \
        a.attnotnull, a.atthasdef \
    FROM pg_catalog.pg_attribute a \
    JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND a.attnum > 0 \
      AND NOT a.attisdropped";

/// The partitioned root of a partition (qualified: the apply session's search_path is empty),
/// NULL for any other table.
const PARTITION_ROOT: &str = "SELECT CASE WHEN c.relispartition \
        THEN pg_catalog.pg_partition_root(c.oid)::pg_catalog.regclass::text END \
    FROM pg_catalog.pg_class c WHERE c.oid = $1";

/// OIDs below this are the same built-in types on every server.
const FIRST_USER_OID: u32 = 16_384;

/// The target's columns as the drift check compares them, and whether each is generated
/// (generated columns are the target's: never added, altered or dropped, nor written).
const DRIFT_COLUMNS: &str = "SELECT a.attname::text, \
        pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef, \
        a.attgenerated <> '' \
    FROM pg_catalog.pg_attribute a \
    WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
    ORDER BY a.attnum";

/// Each source column's type spelled by the target (meaningful for built-in OIDs only).
const BUILTIN_TYPES: &str = "SELECT pg_catalog.format_type(t.o, t.m) \
    FROM ROWS FROM (pg_catalog.unnest($1::oid[]), pg_catalog.unnest($2::int4[])) \
        WITH ORDINALITY AS t(o, m, n) ORDER BY t.n";

const FIND_TABLE: &str = "SELECT c.oid, c.relkind = 'p' \
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')";

/// Each column, and whether its type (after domains and array elements) has a default btree or
/// hash operator class, which is what `=` needs at run time (json, point, xml have none; a cast
/// to a type that has one counts only if it is implicit, as operator lookup needs). Composite
/// types count as having none: `record =` compares field by field and fails on a field without
/// equality, and a parameter compared with it is typed as an anonymous record, which has no input.
const TABLE_COLUMNS: &str = "WITH RECURSIVE chain(attname, typ, depth) AS ( \
      SELECT a.attname::text, a.atttypid, 0 FROM pg_catalog.pg_attribute a \
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
    UNION ALL \
      SELECT ch.attname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END, ch.depth + 1 \
      FROM chain ch JOIN pg_catalog.pg_type t ON t.oid = ch.typ \
      WHERE ch.depth < 20 AND (t.typtype = 'd' OR (t.typelem <> 0 \
        AND t.typsubscript = 'pg_catalog.array_subscript_handler'::pg_catalog.regproc)) \
    ), leaf AS ( \
      SELECT DISTINCT ON (attname) attname, typ FROM chain ORDER BY attname, depth DESC \
    ) \
    SELECT l.attname, EXISTS ( \
      SELECT 1 FROM pg_catalog.pg_type t, pg_catalog.pg_opclass oc \
        JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod \
      WHERE t.oid = l.typ AND oc.opcdefault AND am.amname IN ('btree', 'hash') \
        AND (oc.opcintype = t.oid \
          OR (oc.opcintype = 'pg_catalog.anyenum'::pg_catalog.regtype AND t.typtype = 'e') \
          OR (oc.opcintype = 'pg_catalog.anyrange'::pg_catalog.regtype AND t.typtype = 'r') \
          OR (oc.opcintype = 'pg_catalog.anymultirange'::pg_catalog.regtype AND t.typtype = 'm') \
          OR EXISTS (SELECT 1 FROM pg_catalog.pg_cast k WHERE k.castsource = t.oid \
                     AND k.casttarget = oc.opcintype AND k.castmethod = 'b' \
                     AND k.castcontext = 'i')) \
    ), pg_catalog.format_type(a.atttypid, -1), a.attgenerated <> '' \
    FROM leaf l JOIN pg_catalog.pg_attribute a ON a.attrelid = $1 AND a.attname = l.attname";

/// Each unique index and exclusion constraint: whether it compares something other than plain
/// columns with equality (an exclusion constraint, an expression), and its key columns.
const UNIQUE_INDEXES: &str = "SELECT i.indisexclusion OR i.indexprs IS NOT NULL, \
      ARRAY(SELECT a.attname::text \
            FROM pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
            JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
            WHERE k.n <= i.indnkeyatts) \
    FROM pg_catalog.pg_index i WHERE i.indrelid = $1 AND (i.indisunique OR i.indisexclusion)";

/// Triggers that fire under `session_replication_role = replica` (`ENABLE ALWAYS` / `REPLICA`).
const REPLICA_TRIGGERS: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t \
    WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND t.tgenabled IN ('A', 'R'))";

/// A unique index, as [`UNIQUE_INDEXES`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UniqueIndex {
    pub opaque: bool,
    pub columns: Vec<String>,
}

/// `Keyed` when every unique index is implied by the replica identity key (it holds all of the
/// key's columns, so two rows with different keys never collide on it); otherwise `Table`.
/// `Global` when triggers fire: they may observe any order.
pub(crate) fn table_order(key: &[&str], indexes: &[UniqueIndex], triggers: bool) -> TableOrder {
    if triggers {
        return TableOrder::Global;
    }
    let implied = |index: &UniqueIndex| {
        !index.opaque && key.iter().all(|k| index.columns.iter().any(|c| c == k))
    };
    if indexes.iter().all(implied) {
        TableOrder::Keyed
    } else {
        TableOrder::Table
    }
}

async fn lookup_target(
    client: &Client,
    source: &SourceRelation,
    name: &str,
) -> Result<TargetShape, ApplyError> {
    let catalog_error = |e| ApplyError::from_target(e, name, Operation::Bookkeeping);
    let table = client
        .query_opt(FIND_TABLE, &[&source.schema, &source.table])
        .await
        .map_err(catalog_error)?;
    let Some(table) = table else {
        return Err(ApplyError::MissingTable {
            table: name.to_owned(),
        });
    };
    let table_oid: u32 = table.try_get(0).map_err(catalog_error)?;
    let partitioned: bool = table.try_get(1).map_err(catalog_error)?;
    let rows = client
        .query(TABLE_COLUMNS, &[&table_oid])
        .await
        .map_err(catalog_error)?;
    let mut target_columns = HashMap::with_capacity(rows.len());
    for row in rows {
        let column: String = row.try_get(0).map_err(catalog_error)?;
        let comparable: bool = row.try_get(1).map_err(catalog_error)?;
        let type_name: String = row.try_get(2).map_err(catalog_error)?;
        let generated: bool = row.try_get(3).map_err(catalog_error)?;
        target_columns.insert(column, (comparable, type_name, generated));
    }
    let mut comparable = Vec::with_capacity(source.columns.len());
    let mut types = Vec::with_capacity(source.columns.len());
    let mut generated = Vec::with_capacity(source.columns.len());
    for column in &source.columns {
        let Some((equality, type_name, is_generated)) = target_columns.remove(&column.name) else {
            return Err(ApplyError::MissingColumn {
                table: name.to_owned(),
                column: column.name.clone(),
            });
        };
        comparable.push(equality);
        types.push(type_name);
        generated.push(is_generated);
    }
    let mut indexes = Vec::new();
    for row in client
        .query(UNIQUE_INDEXES, &[&table_oid])
        .await
        .map_err(catalog_error)?
    {
        indexes.push(UniqueIndex {
            opaque: row.try_get(0).map_err(catalog_error)?,
            columns: row.try_get(1).map_err(catalog_error)?,
        });
    }
    let triggers: bool = client
        .query_one(REPLICA_TRIGGERS, &[&table_oid])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(catalog_error)?;
    let key: Vec<&str> = source
        .columns
        .iter()
        .filter(|c| c.is_key)
        .map(|c| c.name.as_str())
        .collect();
    Ok(TargetShape {
        partitioned,
        order: table_order(&key, &indexes, triggers),
        comparable,
        types,
        generated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(columns: &[&str]) -> SourceRelation {
        SourceRelation {
            oid: 7,
            schema: "public".into(),
            table: "t".into(),
            identity: ReplicaIdentity::Default,
            columns: columns
                .iter()
                .map(|c| SourceColumn {
                    name: (*c).into(),
                    type_oid: 23,
                    type_modifier: -1,
                    is_key: *c == "id",
                })
                .collect(),
        }
    }

    #[test]
    fn identical_relation_keeps_entry_changed_one_replaces_it() {
        let mut cache = RelationCache::default();
        assert!(cache.replace(relation(&["id", "a"])));
        cache.relations.get_mut(&7).unwrap().target = Some(TargetShape {
            partitioned: false,
            order: TableOrder::Keyed,
            comparable: vec![true, true],
            types: vec!["integer".into(), "integer".into()],
            generated: vec![false, false],
        });
        assert!(!cache.replace(relation(&["id", "a"])));
        assert!(cache.get(7).unwrap().target.is_some());
        assert!(cache.replace(relation(&["id", "a", "b"])));
        assert!(cache.get(7).unwrap().target.is_none());
        assert_eq!(&*cache.get(7).unwrap().name, "\"public\".\"t\"");
    }

    #[test]
    fn unique_indexes_beyond_the_key_keep_stream_order_in_the_table() {
        let index = |opaque, columns: &[&str]| UniqueIndex {
            opaque,
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        };
        let key = ["id"];
        assert_eq!(table_order(&key, &[], false), TableOrder::Keyed);
        let pk = index(false, &["id"]);
        assert_eq!(
            table_order(&key, std::slice::from_ref(&pk), false),
            TableOrder::Keyed
        );
        let wider = index(false, &["id", "region"]);
        assert_eq!(
            table_order(&key, &[pk.clone(), wider], false),
            TableOrder::Keyed
        );
        let email = index(false, &["email"]);
        assert_eq!(
            table_order(&key, &[pk.clone(), email], false),
            TableOrder::Table
        );
        let expression = index(true, &["id"]);
        assert_eq!(table_order(&key, &[expression], false), TableOrder::Table);
        assert_eq!(table_order(&key, &[pk], true), TableOrder::Global);
        // REPLICA IDENTITY FULL: every column is key; a unique index on fewer is not implied.
        let all = ["id", "v"];
        assert_eq!(
            table_order(&all, &[index(false, &["id"])], false),
            TableOrder::Table
        );
    }

    #[test]
    fn unknown_oid_is_a_protocol_error() {
        let cache = RelationCache::default();
        assert!(matches!(cache.get(1), Err(ApplyError::Protocol { .. })));
    }
}
