//! Whether the slot survives a promotion of a physical standby (PostgreSQL 17+ failover slots).

use super::*;
use crate::source::slot::physical_slot_names;

/// What the source says about surviving a failover (PostgreSQL 17+ primaries only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FailoverFacts {
    /// The slot's `failover` flag; `None`: no slot yet.
    pub(super) slot_failover: Option<bool>,
    /// `synchronized_standby_slots` (empty: unset).
    pub(super) synchronized: String,
    /// Physical slots on this server (each standby that streams through a slot has one).
    pub(super) physical_slots: Vec<String>,
}

/// Warnings for a failover-slot setup: a slot standbys do not keep, or a failover slot whose
/// standbys may lag behind what lsnpipe has received.
pub(super) fn failover_findings(slot: &str, facts: &FailoverFacts, report: &mut Report) {
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
/// `slot_failover`: the slot's `failover` flag as `check` read it (`None`: no slot yet).
pub(super) async fn check_failover(
    source: &SideSession,
    slot: &str,
    slot_failover: Option<bool>,
    report: &mut Report,
) -> Result<(), OpsError> {
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
    let synchronized: String = c
        .query_one("SELECT current_setting('synchronized_standby_slots')", &[])
        .await
        .map_err(source.sql("read the failover settings"))?
        .get(0);
    let physical_slots = physical_slot_names(c)
        .await
        .map_err(source.sql("read the failover settings"))?;
    let facts = FailoverFacts {
        slot_failover,
        synchronized,
        physical_slots,
    };
    failover_findings(slot, &facts, report);
    Ok(())
}
