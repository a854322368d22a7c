//! `lsnpipe check`: a preflight of everything replication depends on, as a table of findings,
//! each with its fix.
//!
//! ```text
//!  source: connect ─▶ wal_level ─▶ slots/senders ─▶ slot ─▶ role ─▶ publication ─▶ tables
//!          (replica identity, SELECT) ─▶ max_slot_wal_keep_size
//!  target: connect ─▶ each published table and its columns ─▶ write privileges ─▶ lsnpipe schema
//! ```
//!
//! A finding is OK, WARN (works, but an operator should know) or FAIL (replication cannot work
//! until it is fixed); any FAIL makes the command exit non-zero.

use std::collections::BTreeMap;

use super::{OpsError, Side, table};
use crate::config::OpsSettings;
use crate::wire::quote_ident;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    Warn,
    Fail,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub check: String,
    pub finding: String,
    pub fix: String,
}

/// Everything `check` found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, severity: Severity, check: impl Into<String>, finding: impl Into<String>) {
        self.push_fix(severity, check, finding, "");
    }

    fn push_fix(
        &mut self,
        severity: Severity,
        check: impl Into<String>,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            check: check.into(),
            finding: finding.into(),
            fix: fix.into(),
        });
    }

    /// True when something stops replication from working.
    pub fn blocks_replication(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Fail)
    }

    /// The report for scripts (`check --format json`). The field names are part of lsnpipe's
    /// interface (README, "Scripting check and status"): add fields, never rename them.
    pub fn to_json(&self) -> serde_json::Value {
        let count = |severity| {
            self.findings
                .iter()
                .filter(|f| f.severity == severity)
                .count()
        };
        let findings: Vec<serde_json::Value> = self
            .findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "status": f.severity.as_str().to_ascii_lowercase(),
                    "check": f.check,
                    "finding": f.finding,
                    "fix": (!f.fix.is_empty()).then_some(&f.fix),
                })
            })
            .collect();
        serde_json::json!({
            "ready": !self.blocks_replication(),
            "failures": count(Severity::Fail),
            "warnings": count(Severity::Warn),
            "findings": findings,
        })
    }

    /// The findings as an aligned table, then a one-line verdict.
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .findings
            .iter()
            .map(|f| {
                vec![
                    f.severity.as_str().to_owned(),
                    f.check.clone(),
                    f.finding.clone(),
                    f.fix.clone(),
                ]
            })
            .collect();
        let mut out = table(&["STATUS", "CHECK", "FINDING", "FIX"], &rows);
        let fails = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Fail)
            .count();
        let warns = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Warn)
            .count();
        out.push('\n');
        if fails > 0 {
            out.push_str(&format!(
                "{fails} problem(s) block replication, {warns} warning(s).\n"
            ));
        } else {
            out.push_str(&format!("Ready to replicate ({warns} warning(s)).\n"));
        }
        out
    }
}

/// A published table as the source sees it.
#[derive(Debug)]
struct SourceTable {
    schema: String,
    name: String,
    identity: String,
    has_pk: bool,
    can_select: bool,
    columns: Vec<(String, String)>,
}

impl SourceTable {
    fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Run every check; connection failures are findings too, so one report shows all problems.
pub async fn run(settings: &OpsSettings) -> Report {
    let mut report = Report::default();
    let publication = settings.publication.clone().unwrap_or_default();
    let tables = match Side::connect("source", &settings.source).await {
        Ok(source) => {
            report.push(Severity::Ok, "source connection", source.config.redacted());
            match check_source(&source, &publication, &settings.slot, &mut report).await {
                Ok(tables) => Some(tables),
                Err(e) => {
                    report.push(Severity::Fail, "source", crate::report::chain(&e));
                    None
                }
            }
        }
        Err(e) => {
            report.push_fix(
                Severity::Fail,
                "source connection",
                crate::report::chain(&e),
                "check --source / LSNPIPE_SOURCE and that the server accepts the connection",
            );
            None
        }
    };
    match Side::connect("target", &settings.target).await {
        Ok(target) => {
            report.push(Severity::Ok, "target connection", target.config.redacted());
            if let Err(e) = check_target(&target, tables.as_deref(), &mut report).await {
                report.push(Severity::Fail, "target", crate::report::chain(&e));
            }
        }
        Err(e) => report.push_fix(
            Severity::Fail,
            "target connection",
            crate::report::chain(&e),
            "check --target / LSNPIPE_TARGET and that the server accepts the connection",
        ),
    }
    report
}

async fn check_source(
    source: &Side,
    publication: &str,
    slot: &str,
    report: &mut Report,
) -> Result<Vec<SourceTable>, OpsError> {
    let c = &source.client;
    let row = c
        .query_one(
            "SELECT current_setting('wal_level'), \
                    current_setting('max_replication_slots')::int, \
                    (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int, \
                    current_setting('max_wal_senders')::int, \
                    (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int, \
                    current_setting('max_slot_wal_keep_size'), \
                    (SELECT rolsuper OR rolreplication FROM pg_catalog.pg_roles \
                      WHERE rolname = current_user), \
                    current_user::text",
            &[],
        )
        .await
        .map_err(source.sql("read settings"))?;
    let wal_level: String = row.get(0);
    if wal_level == "logical" {
        report.push(Severity::Ok, "wal_level", "logical");
    } else {
        report.push_fix(
            Severity::Fail,
            "wal_level",
            format!("{wal_level}: logical decoding is off"),
            "ALTER SYSTEM SET wal_level = logical; then restart the source",
        );
    }

    let (max_slots, used_slots): (i32, i32) = (row.get(1), row.get(2));
    let (max_senders, used_senders): (i32, i32) = (row.get(3), row.get(4));
    let slot_row = c
        .query_opt(
            "SELECT coalesce(plugin, ''), slot_type, coalesce(database::text, ''), \
                    database IS NOT DISTINCT FROM current_database(), active, \
                    coalesce(wal_status, ''), two_phase \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(source.sql("read the slot"))?;
    let free_slots = max_slots - used_slots;
    let slots_finding = format!("{used_slots} of {max_slots} slots used");
    if slot_row.is_none() && free_slots <= 0 {
        report.push_fix(
            Severity::Fail,
            "free slots",
            format!("{slots_finding}: none left for {slot:?}"),
            "raise max_replication_slots (restart needed) or drop an unused slot",
        );
    } else {
        report.push(Severity::Ok, "free slots", slots_finding);
    }
    let senders_finding = format!("{used_senders} of {max_senders} WAL senders in use");
    if max_senders - used_senders <= 0 {
        report.push_fix(
            Severity::Fail,
            "free WAL senders",
            senders_finding,
            "raise max_wal_senders (restart needed) or stop an unused replication client",
        );
    } else {
        report.push(Severity::Ok, "free WAL senders", senders_finding);
    }
    check_slot(slot_row.as_ref(), slot, report);
    check_failover(source, slot, report).await?;

    let may_replicate: Option<bool> = row.get(6);
    let user: String = row.get(7);
    if may_replicate == Some(true) {
        report.push(Severity::Ok, "source role", format!("{user} may replicate"));
    } else {
        report.push_fix(
            Severity::Fail,
            "source role",
            format!("{user} has neither REPLICATION nor superuser"),
            format!("ALTER ROLE {} REPLICATION", quote_ident(&user)),
        );
    }

    let keep: String = row.get(5);
    if keep == "-1" {
        report.push_fix(
            Severity::Warn,
            "max_slot_wal_keep_size",
            "-1 (unlimited): while lsnpipe is stopped the source keeps all WAL, until its disk \
             fills",
            "ALTER SYSTEM SET max_slot_wal_keep_size = '…GB'; SELECT pg_reload_conf(); \
             (size it for the longest outage to survive) and alert on \
             lsnpipe_slot_retained_wal_bytes",
        );
    } else {
        report.push(
            Severity::Ok,
            "max_slot_wal_keep_size",
            format!("{keep}: the slot is invalidated if lsnpipe falls further behind than that"),
        );
    }

    check_publication(source, publication, report).await
}

fn check_slot(row: Option<&tokio_postgres::Row>, slot: &str, report: &mut Report) {
    let check = format!("slot {slot}");
    let Some(row) = row else {
        report.push_fix(
            Severity::Warn,
            check,
            "does not exist yet",
            format!(
                "run with --create-slot, or SELECT pg_create_logical_replication_slot('{slot}', \
                 'pgoutput')"
            ),
        );
        return;
    };
    let (plugin, kind, database): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let (same_db, active, wal_status, two_phase): (Option<bool>, bool, String, bool) =
        (row.get(3), row.get(4), row.get(5), row.get(6));
    let recreate = format!(
        "SELECT pg_drop_replication_slot('{slot}'); then run with --create-slot (the target \
         needs a fresh copy)"
    );
    if kind != "logical" || plugin != "pgoutput" {
        report.push_fix(
            Severity::Fail,
            check,
            format!("a {kind} slot with plugin {plugin:?}; lsnpipe needs logical/pgoutput"),
            recreate,
        );
    } else if same_db != Some(true) {
        report.push_fix(
            Severity::Fail,
            check,
            format!("belongs to database {database:?}, not this one"),
            "use another slot name, or connect to the slot's database",
        );
    } else if wal_status == "lost" {
        report.push_fix(
            Severity::Fail,
            check,
            "invalidated: the WAL it needed was removed (max_slot_wal_keep_size)",
            recreate,
        );
    } else if two_phase {
        report.push_fix(
            Severity::Fail,
            check,
            "created with two-phase decoding, which lsnpipe does not apply",
            recreate,
        );
    } else {
        let state = if active {
            "in use by a consumer"
        } else {
            "idle"
        };
        report.push(
            Severity::Ok,
            check,
            format!("pgoutput, {state}, wal_status {wal_status}"),
        );
    }
}

async fn check_publication(
    source: &Side,
    publication: &str,
    report: &mut Report,
) -> Result<Vec<SourceTable>, OpsError> {
    let c = &source.client;
    let check = format!("publication {publication}");
    let Some(row) = c
        .query_opt(
            "SELECT pubupdate OR pubdelete FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(source.sql("read the publication"))?
    else {
        report.push_fix(
            Severity::Fail,
            check,
            "does not exist",
            format!(
                "CREATE PUBLICATION {} FOR TABLE …; (or FOR ALL TABLES)",
                quote_ident(publication)
            ),
        );
        return Ok(Vec::new());
    };
    let publishes_changes: bool = row.get(0);
    let rows = c
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text, \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                            WHERE i.indrelid = c.oid AND i.indisprimary), \
                    has_table_privilege(c.oid, 'SELECT'), c.oid \
             FROM pg_catalog.pg_publication_tables pt \
             JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE pt.pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await
        .map_err(source.sql("read the publication's tables"))?;
    if rows.is_empty() {
        report.push_fix(
            Severity::Warn,
            check,
            "publishes no tables: nothing will be replicated",
            format!("ALTER PUBLICATION {} ADD TABLE …", quote_ident(publication)),
        );
        return Ok(Vec::new());
    }
    report.push(Severity::Ok, check, format!("{} table(s)", rows.len()));

    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        let oid: u32 = row.get(5);
        let columns = c
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod) \
                 FROM pg_catalog.pg_attribute \
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' \
                 ORDER BY attnum",
                &[&oid],
            )
            .await
            .map_err(source.sql("read a table's columns"))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let table = SourceTable {
            schema: row.get(0),
            name: row.get(1),
            identity: row.get(2),
            has_pk: row.get(3),
            can_select: row.get(4),
            columns,
        };
        check_identity(&table, publishes_changes, report);
        if !table.can_select {
            report.push_fix(
                Severity::Warn,
                format!("source SELECT {}", table.qualified()),
                "not granted: the initial copy cannot read the table",
                format!("GRANT SELECT ON {} TO <lsnpipe role>", table.qualified()),
            );
        }
        tables.push(table);
    }
    Ok(tables)
}

fn check_identity(table: &SourceTable, publishes_changes: bool, report: &mut Report) {
    let check = format!("replica identity {}", table.qualified());
    let (finding, ok) = match (table.identity.as_str(), table.has_pk) {
        ("d", true) => ("DEFAULT (primary key)".to_owned(), true),
        ("i", _) => ("USING INDEX".to_owned(), true),
        ("f", _) => ("FULL (every column identifies a row)".to_owned(), true),
        ("d", false) => (
            "DEFAULT, but no primary key: UPDATE and DELETE cannot be replicated (the source \
             rejects them while the table is published)"
                .to_owned(),
            false,
        ),
        _ => (
            "NOTHING: UPDATE and DELETE cannot be replicated".to_owned(),
            false,
        ),
    };
    if ok {
        report.push(Severity::Ok, check, finding);
    } else {
        let severity = if publishes_changes {
            Severity::Fail
        } else {
            Severity::Warn
        };
        report.push_fix(
            severity,
            check,
            finding,
            format!(
                "ALTER TABLE {0} ADD PRIMARY KEY (…); or ALTER TABLE {0} REPLICA IDENTITY FULL;",
                table.qualified()
            ),
        );
    }
}

async fn check_target(
    target: &Side,
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
                        has_table_privilege(c.oid, 'TRUNCATE') \
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
fn check_columns(
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

/// What the source says about surviving a failover (PostgreSQL 17+ primaries only).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FailoverFacts {
    /// The slot's `failover` flag; `None`: no slot yet.
    slot_failover: Option<bool>,
    /// `synchronized_standby_slots` (empty: unset).
    synchronized: String,
    /// Physical slots on this server (each standby that streams through a slot has one).
    physical_slots: Vec<String>,
}

/// Warnings for a failover-slot setup: a slot standbys do not keep, or a failover slot whose
/// standbys may lag behind what lsnpipe has received.
fn failover_findings(slot: &str, facts: &FailoverFacts, report: &mut Report) {
    let check = "failover";
    match facts.slot_failover {
        Some(false) if !facts.physical_slots.is_empty() => report.push_fix(
            Severity::Warn,
            check,
            format!(
                "slot {slot} is not a failover slot, and standbys stream from this server \
                 (physical slots {}): after a promotion the new primary has no slot {slot}, and \
                 the target needs a new copy",
                facts.physical_slots.join(", ")
            ),
            format!(
                "psql \"dbname=… replication=database\" -c 'ALTER_REPLICATION_SLOT {slot} \
                 (FAILOVER true)' (or a new slot with --failover-slot), and on the standby \
                 sync_replication_slots = on, hot_standby_feedback = on"
            ),
        ),
        Some(true) if facts.synchronized.trim().is_empty() => report.push_fix(
            Severity::Warn,
            check,
            format!(
                "slot {slot} is a failover slot, but synchronized_standby_slots is empty: lsnpipe \
                 may receive changes a standby has not, and after a promotion the standby's \
                 copy of the slot cannot serve it"
            ),
            format!(
                "ALTER SYSTEM SET synchronized_standby_slots = '{}'; SELECT pg_reload_conf(); \
                 (the physical slots of the standbys that may be promoted)",
                if facts.physical_slots.is_empty() {
                    "standby_slot".to_owned()
                } else {
                    facts.physical_slots.join(",")
                }
            ),
        ),
        Some(true) => {
            let listed: Vec<&str> = facts
                .synchronized
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let unknown: Vec<&str> = listed
                .iter()
                .copied()
                .filter(|s| !facts.physical_slots.iter().any(|p| p == s))
                .collect();
            if unknown.is_empty() {
                report.push(
                    Severity::Ok,
                    check,
                    format!(
                        "slot {slot} is a failover slot; lsnpipe waits for standby slots {}",
                        listed.join(", ")
                    ),
                );
            } else {
                report.push_fix(
                    Severity::Warn,
                    check,
                    format!(
                        "synchronized_standby_slots names {}, which is not a physical slot here: \
                         logical decoding waits for it (lsnpipe stalls) until it exists",
                        unknown.join(", ")
                    ),
                    "create the standby's physical slot, or set synchronized_standby_slots to \
                     the slots that exist",
                );
            }
        }
        _ => {}
    }
}

/// On a PostgreSQL 17+ primary: is the slot kept by standbys, and do they keep up with it?
async fn check_failover(source: &Side, slot: &str, report: &mut Report) -> Result<(), OpsError> {
    let c = &source.client;
    let row = c
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 170000, pg_is_in_recovery()",
            &[],
        )
        .await
        .map_err(source.sql("read the server version"))?;
    let (new_enough, standby): (bool, bool) = (row.get(0), row.get(1));
    if !new_enough || standby {
        return Ok(());
    }
    let row = c
        .query_one(
            "SELECT (SELECT failover FROM pg_catalog.pg_replication_slots WHERE slot_name = $1), \
                    current_setting('synchronized_standby_slots'), \
                    ARRAY(SELECT slot_name::text FROM pg_catalog.pg_replication_slots \
                          WHERE slot_type = 'physical' ORDER BY 1)",
            &[&slot],
        )
        .await
        .map_err(source.sql("read the failover settings"))?;
    let facts = FailoverFacts {
        slot_failover: row.get(0),
        synchronized: row.get(1),
        physical_slots: row.get(2),
    };
    failover_findings(slot, &facts, report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_setups_that_lose_or_stall_the_slot_are_warned_about() {
        let facts = |failover, synchronized: &str, physical: &[&str]| FailoverFacts {
            slot_failover: failover,
            synchronized: synchronized.into(),
            physical_slots: physical.iter().map(|s| (*s).to_owned()).collect(),
        };
        let findings = |f: &FailoverFacts| {
            let mut report = Report::default();
            failover_findings("s", f, &mut report);
            report.findings
        };
        // No standby, no failover slot: nothing to say.
        assert!(findings(&facts(Some(false), "", &[])).is_empty());
        assert!(findings(&facts(None, "", &["sb"])).is_empty());
        let lost = findings(&facts(Some(false), "", &["sb"]));
        assert_eq!(lost[0].severity, Severity::Warn);
        assert!(lost[0].finding.contains("not a failover slot"), "{lost:?}");
        assert!(
            lost[0]
                .fix
                .contains("ALTER_REPLICATION_SLOT s (FAILOVER true)")
        );
        let unsynced = findings(&facts(Some(true), "", &["sb"]));
        assert_eq!(unsynced[0].severity, Severity::Warn);
        assert!(
            unsynced[0]
                .fix
                .contains("synchronized_standby_slots = 'sb'")
        );
        let stalls = findings(&facts(Some(true), "sb, gone", &["sb"]));
        assert_eq!(stalls[0].severity, Severity::Warn);
        assert!(stalls[0].finding.contains("gone"), "{stalls:?}");
        let fine = findings(&facts(Some(true), "sb", &["sb"]));
        assert_eq!(fine[0].severity, Severity::Ok, "{fine:?}");
    }

    #[test]
    fn columns_missing_or_required_on_the_target_fail() {
        let source = vec![
            ("id".to_owned(), "integer".to_owned()),
            ("v".to_owned(), "text".to_owned()),
        ];
        let mut target = BTreeMap::new();
        target.insert("id".to_owned(), ("bigint".to_owned(), false));
        let mut report = Report::default();
        check_columns("t", &source, &target, &mut report);
        assert_eq!(report.findings[0].severity, Severity::Fail);
        assert!(report.findings[0].finding.contains("v missing"));

        target.insert("v".to_owned(), ("text".to_owned(), false));
        let mut report = Report::default();
        check_columns("t", &source, &target, &mut report);
        assert_eq!(report.findings[0].severity, Severity::Warn, "{report:?}");

        target.insert("extra".to_owned(), ("text".to_owned(), true));
        let mut report = Report::default();
        check_columns("t", &source, &target, &mut report);
        assert!(report.blocks_replication());
    }
}
