//! The target's side of the preflight: each published table and its columns, write privileges,
//! the lsnpipe schema.

use std::collections::BTreeMap;

use super::source::SourceTable;
use super::*;

pub(super) async fn check_target(
    target: &SideSession,
    tables: Option<&[SourceTable]>,
    report: &mut Report,
) -> Result<(), OpsError> {
    let c = &target.client;
    for table in tables.unwrap_or_default() {
        let name = table.qualified();
        let found = c
            .query_opt(
                "SELECT c.oid, has_table_privilege(c.oid, 'INSERT'), \
                        has_table_privilege(c.oid, 'UPDATE'), \
                        has_table_privilege(c.oid, 'DELETE'), \
                        has_table_privilege(c.oid, 'TRUNCATE'), \
                        pg_catalog.row_security_active(c.oid) \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
                   ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[&table.schema, &table.name],
            )
            .await
            .map_err(target.sql("look up a table"))?;
        let Some(found) = found else {
            report.push_fix(
                Severity::Fail,
                format!("target table {name}"),
                "missing on the target",
                format!(
                    "create it there, e.g. pg_dump --schema-only -t '{name}' <source> | psql \
                     <target>"
                ),
            );
            continue;
        };
        let oid: u32 = found.get(0);
        let target_columns: BTreeMap<String, (String, bool)> = c
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod), \
                        attnotnull AND NOT atthasdef AND attidentity = '' AND attgenerated = '' \
                 FROM pg_catalog.pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
                &[&oid],
            )
            .await
            .map_err(target.sql("read a table's columns"))?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        check_columns(&name, &table.columns, &target_columns, report);
        if found.get::<_, bool>(5) {
            report.push_fix(
                Severity::Fail,
                format!("target row security {name}"),
                "policies apply to the role: applying changes to the table fails",
                "apply as a role with BYPASSRLS (or the table's owner, without FORCE ROW LEVEL \
                 SECURITY)",
            );
        }

        let missing: Vec<&str> = ["INSERT", "UPDATE", "DELETE"]
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !found.get::<_, bool>(i + 1))
            .map(|(_, p)| p)
            .collect();
        if !missing.is_empty() {
            report.push_fix(
                Severity::Fail,
                format!("target privileges {name}"),
                format!("{} not granted", missing.join(", ")),
                format!("GRANT INSERT, UPDATE, DELETE, TRUNCATE ON {name} TO <lsnpipe role>"),
            );
        } else if !found.get::<_, bool>(4) {
            report.push_fix(
                Severity::Warn,
                format!("target privileges {name}"),
                "TRUNCATE not granted: a TRUNCATE on the source will stop the run",
                format!("GRANT TRUNCATE ON {name} TO <lsnpipe role>"),
            );
        }
    }

    let row = c
        .query_one(
            "SELECT to_regclass('lsnpipe.progress') IS NOT NULL, \
                    has_database_privilege(current_database(), 'CREATE'), \
                    CASE WHEN to_regclass('lsnpipe.progress') IS NULL THEN false \
                         ELSE has_table_privilege('lsnpipe.progress', 'SELECT,INSERT,UPDATE') END",
            &[],
        )
        .await
        .map_err(target.sql("check the lsnpipe schema"))?;
    let (exists, may_create, may_write): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    match (exists, may_create, may_write) {
        (true, _, true) => report.push(
            Severity::Ok,
            "target bookkeeping",
            "lsnpipe.progress exists and is writable",
        ),
        (true, _, false) => report.push_fix(
            Severity::Fail,
            "target bookkeeping",
            "lsnpipe.progress exists but is not writable",
            "GRANT USAGE ON SCHEMA lsnpipe TO <role>; GRANT SELECT, INSERT, UPDATE ON \
             lsnpipe.progress TO <role>",
        ),
        (false, true, _) => report.push(
            Severity::Ok,
            "target bookkeeping",
            "lsnpipe.progress will be created on the first run",
        ),
        (false, false, _) => report.push_fix(
            Severity::Fail,
            "target bookkeeping",
            "no lsnpipe schema, and no CREATE privilege on the database to make it",
            "GRANT CREATE ON DATABASE <db> TO <role>, or create schema lsnpipe for the role",
        ),
    }
    Ok(())
}

/// Compare a table's columns: every published column must exist on the target; a target-only
/// column must accept being left out of an INSERT.
pub(super) fn check_columns(
    name: &str,
    source: &[(String, String)],
    target: &BTreeMap<String, (String, bool)>,
    report: &mut Report,
) {
    let check = format!("target columns {name}");
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for (column, source_type) in source {
        match target.get(column) {
            None => problems.push(format!("{column} missing")),
            Some((target_type, _)) if target_type != source_type => {
                warnings.push(format!(
                    "{column} is {target_type}, source has {source_type}"
                ));
            }
            Some(_) => {}
        }
    }
    for (column, (_, required)) in target {
        if *required && !source.iter().any(|(c, _)| c == column) {
            problems.push(format!(
                "{column} is NOT NULL without default and not on the source"
            ));
        }
    }
    if !problems.is_empty() {
        report.push_fix(
            Severity::Fail,
            check,
            problems.join("; "),
            "make the target table's columns match the source's (ALTER TABLE … ADD COLUMN …)",
        );
    } else if !warnings.is_empty() {
        report.push_fix(
            Severity::Warn,
            check,
            warnings.join("; "),
            "values are applied as text; use the same types unless the cast is known to work",
        );
    } else {
        report.push(
            Severity::Ok,
            check,
            format!("{} column(s) match", source.len()),
        );
    }
}
