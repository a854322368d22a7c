//! Our replication slot as the source shows it: the one place lsnpipe reads
//! `pg_replication_slots`.
//!
//! ```text
//!  SlotInfo::read(session, name) ─▶ SELECT … FROM pg_replication_slots
//!                                     WHERE slot_name = '…' AND database = current_database()
//!                                 ─▶ Option<SlotInfo> (None: no slot of ours by that name)
//! ```
//!
//! Slot names are unique per server, not per database, so a slot of our name made for another
//! database is not ours: it reads as missing. Only `check` looks for it, to say so
//! ([`SlotInfo::read_any_database`]).
//!
//! The query goes as simple-query text: the same SQL then serves a replication session (which
//! speaks only the simple protocol) and an ordinary one, and every value arrives as text.
//! Columns newer than PostgreSQL 14 (`failover` and `invalidation_reason`, 17+) are read through
//! `to_jsonb`, so one query text serves every supported server.

use std::future::Future;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::Lsn;
use crate::wire::{ReplicationConnection, WireError, quote_literal};

/// One row of `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// The output plugin (`None` for a physical slot).
    pub plugin: Option<String>,
    /// `logical` or `physical`.
    pub slot_type: String,
    /// The database a logical slot decodes (`None` for a physical slot).
    pub database: Option<String>,
    /// Whether that is the database of the session that read it.
    pub in_this_database: bool,
    /// A client streams from the slot now.
    pub active: bool,
    /// The walsender that streams it.
    pub active_pid: Option<i32>,
    /// `reserved`, `extended`, `unreserved` or `lost`; `None` when the server reports NULL.
    pub wal_status: Option<String>,
    /// Why the slot was invalidated (PostgreSQL 17+; `None` before, and while it is usable).
    pub invalidation_reason: Option<String>,
    pub two_phase: bool,
    /// Standbys keep a copy of it (PostgreSQL 17+; `None` before).
    pub failover: Option<bool>,
    pub restart_lsn: Option<Lsn>,
    pub confirmed_flush_lsn: Option<Lsn>,
    /// The WAL the server keeps for the slot: its own position (the last WAL received, on a
    /// standby) minus `restart_lsn`; never negative. `None` when either is unknown.
    pub retained_wal_bytes: Option<u64>,
}

/// The columns [`SlotInfo::from_text`] reads, in order. On a standby (logical slots on standbys,
/// PostgreSQL 16+) the current position is the last WAL received: `pg_current_wal_lsn()` fails
/// there.
const COLUMNS: &str = "\
    s.plugin::text, s.slot_type, s.database::text, \
    s.database IS NOT DISTINCT FROM current_database(), s.active, s.active_pid, s.wal_status, \
    s.two_phase, to_jsonb(s) ->> 'failover', to_jsonb(s) ->> 'invalidation_reason', \
    s.restart_lsn, s.confirmed_flush_lsn, \
    pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
                         ELSE pg_current_wal_lsn() END, s.restart_lsn)::bigint";

impl SlotInfo {
    /// The slot `name` of the session's database, or `None` when it has no such slot.
    pub async fn read<S: TextSession>(session: S, name: &str) -> Result<Option<Self>, S::Error> {
        Self::read_where(session, name, " AND s.database = current_database()").await
    }

    /// The slot `name` whatever database it belongs to ([`SlotInfo::in_this_database`] tells):
    /// for `check`, which says so when the name is taken by another database's slot.
    pub async fn read_any_database<S: TextSession>(
        session: S,
        name: &str,
    ) -> Result<Option<Self>, S::Error> {
        Self::read_where(session, name, "").await
    }

    async fn read_where<S: TextSession>(
        session: S,
        name: &str,
        database: &str,
    ) -> Result<Option<Self>, S::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM pg_catalog.pg_replication_slots s \
             WHERE s.slot_name = {}{database}",
            quote_literal(name)
        );
        let rows = session.text_rows(sql).await?;
        Ok(rows.first().map(|row| Self::from_text(row)))
    }

    /// A row of [`COLUMNS`] as text. The server prints every value in the form parsed here; a
    /// value that does not parse reads as NULL rather than failing a read of the slot.
    fn from_text(row: &[Option<String>]) -> Self {
        let text = |i: usize| row.get(i).cloned().flatten();
        let flag = |i: usize| text(i).map(|t| matches!(t.as_str(), "t" | "true"));
        let lsn = |i: usize| text(i).and_then(|t| t.parse::<Lsn>().ok());
        SlotInfo {
            plugin: text(0),
            slot_type: text(1).unwrap_or_default(),
            database: text(2),
            in_this_database: flag(3).unwrap_or(false),
            active: flag(4).unwrap_or(false),
            active_pid: text(5).and_then(|t| t.parse().ok()),
            wal_status: text(6),
            two_phase: flag(7).unwrap_or(false),
            failover: flag(8),
            invalidation_reason: text(9).filter(|r| !r.is_empty()),
            restart_lsn: lsn(10),
            confirmed_flush_lsn: lsn(11),
            // Negative only if restart_lsn were ahead of the server's own position.
            retained_wal_bytes: text(12)
                .and_then(|t| t.parse::<i64>().ok())
                .map(|b| u64::try_from(b).unwrap_or(0)),
        }
    }

    /// The source removed WAL the slot still needs: streaming from it would miss changes.
    pub fn is_invalidated(&self) -> bool {
        self.wal_status.as_deref() == Some("lost") || self.invalidation_reason.is_some()
    }
}

/// How many slots the server has, of every database and kind (they all count against
/// `max_replication_slots`).
pub async fn slots_in_use(client: &Client) -> Result<i32, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*)::int FROM pg_catalog.pg_replication_slots",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The physical slots of the server (each standby that streams through a slot has one), by name.
pub async fn physical_slot_names(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT slot_name::text FROM pg_catalog.pg_replication_slots \
             WHERE slot_type = 'physical' ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// A session that runs a simple query and hands back the rows as text: an ordinary SQL session
/// or a replication session.
pub trait TextSession {
    type Error;
    fn text_rows(
        self,
        sql: String,
    ) -> impl Future<Output = Result<Vec<Vec<Option<String>>>, Self::Error>>;
}

impl TextSession for &Client {
    type Error = tokio_postgres::Error;

    async fn text_rows(self, sql: String) -> Result<Vec<Vec<Option<String>>>, Self::Error> {
        let messages = self.simple_query(&sql).await?;
        Ok(messages
            .iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.try_get(i).ok().flatten().map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }
}

impl TextSession for &mut ReplicationConnection {
    type Error = WireError;

    async fn text_rows(self, sql: String) -> Result<Vec<Vec<Option<String>>>, Self::Error> {
        self.simple_query(&sql).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_owned)).collect()
    }

    #[test]
    fn reads_a_logical_slot_as_the_server_prints_it() {
        let slot = SlotInfo::from_text(&row(&[
            Some("pgoutput"),
            Some("logical"),
            Some("app"),
            Some("t"),
            Some("t"),
            Some("4242"),
            Some("reserved"),
            Some("f"),
            Some("true"),
            None,
            Some("0/16B3748"),
            Some("0/16B3780"),
            Some("8192"),
        ]));
        assert_eq!(slot.plugin.as_deref(), Some("pgoutput"));
        assert!(slot.in_this_database && slot.active && !slot.two_phase);
        assert_eq!(slot.active_pid, Some(4242));
        assert_eq!(slot.failover, Some(true));
        assert_eq!(slot.restart_lsn, Some("0/16B3748".parse().unwrap()));
        assert_eq!(slot.confirmed_flush_lsn, Some("0/16B3780".parse().unwrap()));
        assert_eq!(slot.retained_wal_bytes, Some(8192));
        assert!(!slot.is_invalidated());
    }

    #[test]
    fn nulls_and_older_servers_read_as_unknown() {
        // PostgreSQL 14–16: no failover or invalidation_reason column, so to_jsonb gives NULL.
        let slot = SlotInfo::from_text(&row(&[
            None,
            Some("physical"),
            None,
            Some("f"),
            Some("f"),
            None,
            Some("lost"),
            Some("f"),
            None,
            None,
            None,
            None,
            Some("-5"),
        ]));
        assert_eq!((&slot.plugin, &slot.database), (&None, &None));
        assert_eq!((slot.active_pid, slot.failover), (None, None));
        assert_eq!(slot.restart_lsn, None);
        assert_eq!(slot.retained_wal_bytes, Some(0), "never negative");
        assert!(slot.is_invalidated(), "wal_status lost");
        assert!(
            SlotInfo::from_text(&[]).plugin.is_none(),
            "a short row does not panic"
        );
    }

    #[test]
    fn an_invalidation_reason_alone_means_invalidated() {
        let mut slot = SlotInfo::from_text(&[]);
        assert!(!slot.is_invalidated());
        slot.invalidation_reason = Some("rows_removed".into());
        assert!(slot.is_invalidated());
    }
}
