//! `lsnpipe status`: where replication stands, read from both databases (no running lsnpipe
//! needed).
//!
//! ```text
//!  source: pg_replication_slots (active, wal_status, restart/confirmed LSN), pg_current_wal_lsn()
//!  target: lsnpipe.progress (applied LSN, commit time of the last applied source transaction)
//!       ─▶ lag in bytes = source WAL now − max(applied, confirmed); lag in seconds ≤ time since
//!          that commit (0 when there are no bytes to apply)
//! ```

use std::fmt::Write as _;

use super::{OpsError, SideSession, human_bytes};
use crate::Lsn;
use crate::config::OpsSettings;
use crate::source::SlotInfo;

/// The slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub active_pid: Option<i32>,
    pub wal_status: String,
    pub restart_lsn: Option<Lsn>,
    pub confirmed_lsn: Option<Lsn>,
    pub retained_wal_bytes: Option<u64>,
}

/// This slot's row in `lsnpipe.progress` on the target.
#[derive(Debug, Clone)]
pub struct Applied {
    pub lsn: Lsn,
    pub commit_time: Option<String>,
    pub commit_age_secs: Option<f64>,
    pub updated_at: String,
}

/// Everything `status` reports.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub slot_name: String,
    pub source_wal: Lsn,
    pub slot: Option<SlotState>,
    pub applied: Option<Applied>,
    pub lag_bytes: Option<u64>,
    pub lag_secs: Option<f64>,
    /// Tables whose copy is not done (`schema.table`): an initial copy, or tables that joined
    /// the publication.
    pub copying: Vec<String>,
    /// Tables this slot's copy holds that its publication no longer lists (their changes are
    /// no longer replicated); only when the publication is known (`--publication`).
    pub left_publication: Vec<String>,
    /// The `run` that holds this slot's lock on the target (see `apply::guard`), described.
    pub run: Option<String>,
}

impl StatusReport {
    /// True when replication can go on from here (the slot exists and is not lost).
    pub fn healthy(&self) -> bool {
        self.slot.as_ref().is_some_and(|s| s.wal_status != "lost")
    }

    /// The report for scripts (`status --format json`). The field names are part of lsnpipe's
    /// interface (README, "Scripting check and status"): add fields, never rename them.
    pub fn to_json(&self) -> serde_json::Value {
        let lsn = |l: Option<Lsn>| l.map(|l| l.to_string());
        let slot = self.slot.as_ref().map(|s| {
            serde_json::json!({
                "active": s.active_pid.is_some(),
                "active_pid": s.active_pid,
                "wal_status": s.wal_status,
                "restart_lsn": lsn(s.restart_lsn),
                "confirmed_flush_lsn": lsn(s.confirmed_lsn),
                "retained_wal_bytes": s.retained_wal_bytes,
            })
        });
        let applied = self.applied.as_ref().map(|a| {
            serde_json::json!({
                "lsn": a.lsn.to_string(),
                "commit_time": a.commit_time,
                "commit_age_seconds": a.commit_age_secs,
                "updated_at": a.updated_at,
            })
        });
        serde_json::json!({
            "slot_name": self.slot_name,
            "healthy": self.healthy(),
            "source_wal_lsn": self.source_wal.to_string(),
            "slot": slot,
            "applied": applied,
            "lag_bytes": self.lag_bytes,
            "lag_seconds": self.lag_secs,
            "copying": self.copying,
            "left_publication": self.left_publication,
            "run": self.run,
        })
    }

    pub fn render(&self) -> String {
        let lsn = |l: Option<Lsn>| l.map_or_else(|| "-".to_owned(), |l| l.to_string());
        let mut out = format!("slot {}\n", self.slot_name);
        match &self.slot {
            None => field(
                &mut out,
                "state",
                "missing: run `lsnpipe run --create-slot` to create it",
            ),
            Some(s) => {
                let state = match s.active_pid {
                    Some(pid) => format!("active (walsender pid {pid})"),
                    None => "inactive (no consumer connected)".to_owned(),
                };
                field(&mut out, "state", &state);
                let wal = match s.wal_status.as_str() {
                    "lost" => {
                        "lost: the slot was invalidated (see README, \"When the slot is \
                               invalidated\")"
                    }
                    other => other,
                };
                field(&mut out, "wal_status", wal);
                let retained = s.retained_wal_bytes.map_or("-".into(), human_bytes);
                let restart = lsn(s.restart_lsn);
                field(
                    &mut out,
                    "retained WAL",
                    &format!("{retained} (restart LSN {restart})"),
                );
                field(&mut out, "confirmed LSN", &lsn(s.confirmed_lsn));
            }
        }
        field(&mut out, "source WAL now", &self.source_wal.to_string());
        out.push_str("target\n");
        let run = self.run.as_ref().map_or_else(
            || "none (no lsnpipe run holds this slot's lock here)".to_owned(),
            |holder| format!("running ({holder})"),
        );
        field(&mut out, "run", &run);
        match &self.applied {
            None => field(
                &mut out,
                "applied LSN",
                "none: nothing applied for this slot yet (no row in lsnpipe.progress)",
            ),
            Some(a) => {
                field(&mut out, "applied LSN", &a.lsn.to_string());
                let age = a
                    .commit_age_secs
                    .map_or(String::new(), |s| format!(" ({s:.1} s ago)"));
                let time = a.commit_time.as_deref().unwrap_or("-");
                field(&mut out, "last commit", &format!("{time}{age}"));
                field(&mut out, "row updated", &a.updated_at);
            }
        }
        if !self.copying.is_empty() {
            field(&mut out, "copying", &self.copying.join(", "));
        }
        if !self.left_publication.is_empty() {
            field(
                &mut out,
                "left publication",
                &self.left_publication.join(", "),
            );
        }
        out.push_str("lag\n");
        let bytes = self
            .lag_bytes
            .map_or("-".into(), |b| format!("{b} ({})", human_bytes(b)));
        field(&mut out, "bytes", &bytes);
        let seconds = match self.lag_secs {
            Some(s) if s <= 0.0 => "0 (caught up)".to_owned(),
            Some(s) => format!("at most {s:.1} (time since the last applied commit)"),
            None => "-".to_owned(),
        };
        field(&mut out, "seconds", &seconds);
        out
    }
}

fn field(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "  {key:<16}{value}");
}

/// Read the slot on the source and the progress row on the target.
pub async fn run(settings: &OpsSettings) -> Result<StatusReport, OpsError> {
    let source = SideSession::connect("source", &settings.source).await?;
    let target = SideSession::connect("target", &settings.target).await?;
    let slot_name = settings.slot.clone();

    let now: String = source
        .client
        // A standby source (decoding on a standby, 16+) has no insert position: its replayed
        // WAL is the end of what it can send.
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                    ELSE pg_current_wal_lsn() END::text",
            &[],
        )
        .await
        .map_err(source.sql("read the current WAL position"))?
        .get(0);
    let source_wal = parse_lsn(&now);
    let slot = SlotInfo::read(&source.client, &slot_name)
        .await
        .map_err(source.sql("read the slot"))?
        .map(|found| SlotState {
            active_pid: found.active_pid,
            wal_status: found.wal_status.unwrap_or_default(),
            restart_lsn: found.restart_lsn,
            confirmed_lsn: found.confirmed_flush_lsn,
            // Against the position shown beside it, not the server's own at the read.
            retained_wal_bytes: found.restart_lsn.map(|r| source_wal.bytes_since(r)),
        });

    let run = crate::apply::guard::running(&target.client, &slot_name)
        .await
        .map_err(target.sql("look for a run of this slot"))?;
    let has_progress: bool = target
        .client
        .query_one("SELECT to_regclass('lsnpipe.progress') IS NOT NULL", &[])
        .await
        .map_err(target.sql("look for lsnpipe.progress"))?
        .get(0);
    let applied = if has_progress {
        target
            .client
            .query_opt(
                "SELECT lsn::text, commit_time::text, \
                        extract(epoch FROM clock_timestamp() - commit_time)::float8, \
                        updated_at::text \
                 FROM lsnpipe.progress WHERE slot = $1",
                &[&slot_name],
            )
            .await
            .map_err(target.sql("read lsnpipe.progress"))?
            .map(|row| Applied {
                lsn: parse_lsn(&row.get::<_, String>(0)),
                commit_time: row.get(1),
                commit_age_secs: row.get(2),
                updated_at: row.get(3),
            })
    } else {
        None
    };

    let has_copy_state: bool = target
        .client
        .query_one("SELECT to_regclass('lsnpipe.copy_state') IS NOT NULL", &[])
        .await
        .map_err(target.sql("look for lsnpipe.copy_state"))?
        .get(0);
    // (schema.table, pending) of this slot's copy state.
    let copy_state: Vec<(String, bool)> = if has_copy_state {
        target
            .client
            .query(
                "SELECT schema_name || '.' || table_name, status = 'pending' \
                 FROM lsnpipe.copy_state WHERE slot = $1 ORDER BY 1",
                &[&slot_name],
            )
            .await
            .map_err(target.sql("read lsnpipe.copy_state"))?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    } else {
        Vec::new()
    };
    let published: Option<Vec<String>> = match &settings.publication {
        Some(publication) if !copy_state.is_empty() => Some(
            source
                .client
                .query(
                    "SELECT schemaname || '.' || tablename FROM pg_publication_tables \
                     WHERE pubname = $1",
                    &[publication],
                )
                .await
                .map_err(source.sql("list the publication's tables"))?
                .iter()
                .map(|row| row.get(0))
                .collect(),
        ),
        _ => None,
    };
    let listed = |table: &String| published.as_ref().is_none_or(|p| p.contains(table));
    let copying = copy_state
        .iter()
        .filter(|(table, pending)| *pending && listed(table))
        .map(|(table, _)| table.clone())
        .collect();
    let left_publication = copy_state
        .iter()
        .filter(|(table, _)| !listed(table))
        .map(|(table, _)| table.clone())
        .collect();

    let done = match (&applied, slot.as_ref().and_then(|s| s.confirmed_lsn)) {
        (Some(a), Some(c)) => Some(a.lsn.max(c)),
        (Some(a), None) => Some(a.lsn),
        (None, c) => c,
    };
    let lag_bytes = done.map(|d| source_wal.bytes_since(d));
    let lag_secs = match (lag_bytes, &applied) {
        (Some(0), _) => Some(0.0),
        (Some(_), Some(a)) => a.commit_age_secs.map(|s| s.max(0.0)),
        _ => None,
    };
    Ok(StatusReport {
        slot_name,
        source_wal,
        slot,
        applied,
        lag_bytes,
        lag_secs,
        copying,
        left_publication,
        run,
    })
}

/// The server prints LSNs in the form `Lsn` parses; anything else reads as zero rather than
/// failing a status report.
fn parse_lsn(text: &str) -> Lsn {
    text.parse().unwrap_or(Lsn::ZERO)
}
