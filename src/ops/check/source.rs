//! The source's side of the preflight: connection, wal_level, slots and senders, the slot, the
//! role, the publication and each published table (replica identity, SELECT).

use super::*;
use crate::source::SlotInfo;
use crate::source::slot::slots_in_use;
use crate::wire::quote_ident;

/// A published table as the source sees it.
#[derive(Debug)]
pub(super) struct SourceTable {
    pub(super) schema: String,
    pub(super) name: String,
    pub(super) identity: String,
    pub(super) has_pk: bool,
    pub(super) can_select: bool,
    pub(super) columns: Vec<(String, String)>,
}

impl SourceTable {
    pub(super) fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

pub(super) async fn check_source(
    source: &SideSession,
    publication: &str,
    slot: &str,
    report: &mut Report,
) -> Result<Vec<SourceTable>, OpsError> {
    let c = &source.client;
    let row = c
        .query_one(
            "SELECT current_setting('wal_level'), \
                    current_setting('max_replication_slots')::int, \
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

    let max_slots: i32 = row.get(1);
    let used_slots = slots_in_use(c)
        .await
        .map_err(source.sql("count the slots"))?;
    let (max_senders, used_senders): (i32, i32) = (row.get(2), row.get(3));
    // Any database's: a slot of this name made for another database takes the name.
    let slot_row = SlotInfo::read_any_database(c, slot)
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
    let slot_failover = slot_row.as_ref().and_then(|s| s.failover);
    check_failover(source, slot, slot_failover, report).await?;

    let may_replicate: Option<bool> = row.get(5);
    let user: String = row.get(6);
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

    let keep: String = row.get(4);
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

fn check_slot(row: Option<&SlotInfo>, slot: &str, report: &mut Report) {
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
    let plugin = row.plugin.as_deref().unwrap_or_default();
    let (kind, database) = (&row.slot_type, row.database.as_deref().unwrap_or_default());
    let wal_status = row.wal_status.as_deref().unwrap_or_default();
    let (same_db, active, two_phase) = (row.in_this_database, row.active, row.two_phase);
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
    } else if !same_db {
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
    source: &SideSession,
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
                    has_table_privilege(c.oid, 'SELECT'), c.oid, \
                    pg_catalog.row_security_active(c.oid) \
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
        let row_security: bool = row.get(6);
        check_identity(&table, publishes_changes, report);
        if !table.can_select {
            report.push_fix(
                Severity::Warn,
                format!("source SELECT {}", table.qualified()),
                "not granted: the initial copy cannot read the table",
                format!("GRANT SELECT ON {} TO <lsnpipe role>", table.qualified()),
            );
        }
        if row_security {
            report.push_fix(
                Severity::Warn,
                format!("source row security {}", table.qualified()),
                "policies hide rows from the role: the initial copy refuses the table",
                "copy as a role with BYPASSRLS (or the table's owner, without FORCE ROW LEVEL \
                 SECURITY)",
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
