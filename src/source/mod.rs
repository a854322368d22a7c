//! The source side of a run: connect for replication, check what an operator may have got wrong
//! (wal_level, the publication, the slot), create the slot when asked, and start streaming.
//!
//! ```text
//!  ConnConfig ─▶ ReplicationConnection ─▶ preflight (SHOW wal_level, pg_publication,
//!               SlotInfo::read) ─▶ [CREATE_REPLICATION_SLOT] ─▶ START_REPLICATION
//! ```
//!
//! ```text
//!  slot.rs          SlotInfo::read: the one reader of pg_replication_slots (for every command)
//!  invalidation.rs  a lost slot stops the run, naming the cause and the fix
//! ```

mod invalidation;
pub mod slot;

use std::sync::Arc;
use std::time::Duration;

pub use invalidation::{Invalidation, check_not_invalidated};
pub use slot::SlotInfo;

use crate::Lsn;
use crate::positions::Positions;
use crate::wire::{
    ConnConfig, CreateSlotOptions, LogicalOptions, ReplicationConnection, ReplicationStream,
    SnapshotAction, Streaming, WireError, max_proto_version, quote_literal,
};

/// What stops a run until an operator acts, or a transient failure worth retrying (which is
/// which: [`crate::error_policy::source`]).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "the source has wal_level = {0}; logical replication needs wal_level = logical: set it in \
         postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart the source"
    )]
    WalLevel(String),
    #[error(
        "publication {0:?} does not exist on the source: create it there \
         (CREATE PUBLICATION {0} FOR TABLE …, or FOR ALL TABLES)"
    )]
    NoPublication(String),
    #[error(
        "publication {publication:?} does not exist on the source any more: it was dropped while \
         lsnpipe streamed, and everything published before the drop (up to {at}) is applied. \
         Changes made on the source while it does not exist are not replicated. Create it again \
         (CREATE PUBLICATION {publication} FOR TABLE …, or FOR ALL TABLES), run lsnpipe again, \
         then compare with `lsnpipe verify` (`lsnpipe resync` copies the data again)"
    )]
    PublicationDropped { publication: String, at: Lsn },
    #[error(
        "replication slot {0:?} does not exist on the source: run with --create-slot to create \
         it, or create it with SELECT pg_create_logical_replication_slot('{0}', 'pgoutput')"
    )]
    NoSlot(String),
    #[error(
        "replication slot {slot:?} does not exist on the source, but the target already holds \
         data replicated through it (applied up to {applied}). The slot was dropped, or dropped \
         after it was invalidated, or the source failed over to a server without it; the changes \
         after {applied} went with it, and a new slot would silently skip them, so lsnpipe will \
         not create one here. Copy the data again: `lsnpipe resync` (empties the published \
         tables on the target and lsnpipe's bookkeeping for this slot), then `lsnpipe run \
         --create-slot`"
    )]
    SlotMissing { slot: String, applied: Lsn },
    #[error(
        "replication slot {slot:?} has confirmed changes up to {confirmed}, but the target has \
         applied only up to {applied}: the changes in between cannot be streamed again. Another \
         client consumed the slot, the slot was re-created, or the target was restored from an \
         older backup. Copy the data again: `lsnpipe resync`, then `lsnpipe run --create-slot`"
    )]
    SlotAhead {
        slot: String,
        confirmed: Lsn,
        applied: Lsn,
    },
    #[error("replication slot {slot:?} uses output plugin {plugin:?}; lsnpipe needs pgoutput")]
    WrongPlugin { slot: String, plugin: String },
    #[error("{0}")]
    SlotInvalidated(Invalidation),
    #[error(
        "replication slot {0:?} has two-phase decoding enabled, which lsnpipe does not apply; \
         use a slot created without TWO_PHASE"
    )]
    TwoPhaseSlot(String),
    #[error("reading the source catalog")]
    Catalog(#[source] tokio_postgres::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// How the stream should be opened.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub publication: String,
    pub slot: String,
    pub create_slot: bool,
    /// Create the slot with `FAILOVER` (server 17+).
    pub failover_slot: bool,
    pub status_interval: Duration,
    /// Longest silence from the source before the session is presumed dead (preflight queries
    /// and streaming); `None` keeps the stream's default.
    pub receive_timeout: Option<Duration>,
    /// Ask for in-progress transactions to be streamed (pgoutput protocol 2, server 14+): the
    /// stream then carries Stream Start … Stream Stop blocks and Stream Commit / Stream Abort.
    pub streaming: bool,
    /// The walsender of this process's previous stream: should it still hold the slot (its
    /// link went silent and the server has not noticed yet), it is ended rather than waited
    /// for.
    pub previous_walsender: Option<Walsender>,
}

/// A walsender as the server knows it: its PID, and when it started (PIDs are reused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walsender {
    pid: i32,
    started: String,
}

/// How long an ended walsender is given to let go of the slot.
const TERMINATE_WAIT_MS: u32 = 5_000;

/// Connect, check and start streaming from `start` (the target's applied position); the
/// stream, and its walsender for [`SourceOptions::previous_walsender`] next time.
pub async fn open_stream(
    config: &ConnConfig,
    options: &SourceOptions,
    start: Lsn,
    positions: Arc<Positions>,
) -> Result<(ReplicationStream, Option<Walsender>), SourceError> {
    let mut conn = ReplicationConnection::connect(config).await?;
    conn.set_receive_timeout(options.receive_timeout);
    check_source(&mut conn, &options.publication).await?;
    let walsender = this_walsender(&mut conn).await?;
    match SlotInfo::read(&mut conn, &options.slot).await? {
        // Creating a slot starts a stream from now: only right for a target that holds nothing
        // replicated yet (the initial copy creates its own slot before this).
        None if start != Lsn::ZERO => {
            return Err(SourceError::SlotMissing {
                slot: options.slot.clone(),
                applied: start,
            });
        }
        None if options.create_slot => {
            // Creating a slot waits for the transactions running on the source to end, which
            // may take as long as they do: not a silence to time out.
            conn.set_receive_timeout(None);
            conn.create_slot(
                &options.slot,
                CreateSlotOptions {
                    snapshot: SnapshotAction::Nothing,
                    failover: options.failover_slot,
                    ..CreateSlotOptions::default()
                },
            )
            .await?;
            conn.set_receive_timeout(options.receive_timeout);
            tracing::info!(slot = %options.slot, "created replication slot");
        }
        None => return Err(SourceError::NoSlot(options.slot.clone())),
        Some(found) => {
            check_not_invalidated(&options.slot, &found)?;
            if let (Some(pid), Some(previous)) = (found.active_pid, &options.previous_walsender) {
                end_own_walsender(&mut conn, pid, previous).await?;
            }
            let plugin = found.plugin.unwrap_or_default();
            if plugin != "pgoutput" {
                return Err(SourceError::WrongPlugin {
                    slot: options.slot.clone(),
                    plugin,
                });
            }
            if found.two_phase {
                return Err(SourceError::TwoPhaseSlot(options.slot.clone()));
            }
            // lsnpipe confirms only what the target has recorded (idle positions included), so
            // a slot ahead of the target has handed changes to someone else.
            if let Some(confirmed) = found.confirmed_flush_lsn {
                if start != Lsn::ZERO && confirmed > start {
                    return Err(SourceError::SlotAhead {
                        slot: options.slot.clone(),
                        confirmed,
                        applied: start,
                    });
                }
            }
        }
    }

    // The walsender drops a client that is silent for wal_sender_timeout: report at least twice
    // per timeout.
    let timeout = conn
        .show("wal_sender_timeout")
        .await
        .ok()
        .and_then(|v| parse_pg_duration(&v))
        .unwrap_or(Duration::from_secs(60));
    let mut interval = options.status_interval;
    if !timeout.is_zero() {
        interval = interval.min(timeout / 2);
    }

    let mut plain = LogicalOptions::new(1, vec![options.publication.clone()]);
    // Logical decoding messages carry captured DDL (`lsnpipe ddl install`); pgoutput sends them
    // from server 14 on. Others' messages are ignored by the applier.
    plain.messages = conn.server_version_num() >= 140_000;
    let Some(streamed) = streaming_options(options, conn.server_version_num()) else {
        let stream = conn
            .start_replication(&options.slot, start, &plain, positions, interval)
            .await?;
        return Ok((stream, walsender));
    };
    match conn
        .start_replication(&options.slot, start, &streamed, positions.clone(), interval)
        .await
    {
        Ok(stream) => {
            tracing::info!("in-progress transactions are streamed (pgoutput protocol 2)");
            Ok((stream, walsender))
        }
        // The server refused the options before streaming began (a build or fork that does not
        // know them): stream without them, as every server since 10 accepts.
        Err(WireError::Server(e)) if STREAMING_REFUSED.contains(&e.code.as_str()) => {
            tracing::warn!(
                "the source refused streaming of in-progress transactions ({e}); large \
                 transactions are sent only once they commit"
            );
            let mut conn = ReplicationConnection::connect(config).await?;
            conn.set_receive_timeout(options.receive_timeout);
            let walsender = this_walsender(&mut conn).await?;
            let stream = conn
                .start_replication(&options.slot, start, &plain, positions, interval)
                .await?;
            Ok((stream, walsender))
        }
        Err(e) => Err(e.into()),
    }
}

/// SQLSTATEs with which a server refuses pgoutput options it does not know or support:
/// invalid parameter value, syntax error (a non-Boolean `streaming`), feature not supported.
const STREAMING_REFUSED: &[&str] = &["22023", "42601", "0A000"];

/// The options that stream in-progress transactions, when asked for and the server has them.
/// Protocol 2 with `streaming 'on'` everywhere: protocol 4's `parallel` changes only the Stream
/// Abort message (it adds the abort's LSN and time, for PostgreSQL's parallel apply workers);
/// lsnpipe already applies each streamed transaction as it arrives, on its own connection.
fn streaming_options(options: &SourceOptions, server_version_num: u32) -> Option<LogicalOptions> {
    if !options.streaming || max_proto_version(server_version_num) < 2 {
        return None;
    }
    let mut logical = LogicalOptions::new(2, vec![options.publication.clone()]);
    logical.streaming = Streaming::On;
    logical.messages = true;
    Some(logical)
}

/// The checks every run starts with: logical WAL, and the publication exists.
pub async fn check_source(
    conn: &mut ReplicationConnection,
    publication: &str,
) -> Result<(), SourceError> {
    let wal_level = conn.show("wal_level").await?;
    if wal_level != "logical" {
        return Err(SourceError::WalLevel(wal_level));
    }
    let found = conn
        .simple_query(&format!(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = {}",
            quote_literal(publication)
        ))
        .await?;
    if found.is_empty() {
        return Err(SourceError::NoPublication(publication.to_owned()));
    }
    Ok(())
}

/// The walsender `conn` talks to.
async fn this_walsender(
    conn: &mut ReplicationConnection,
) -> Result<Option<Walsender>, SourceError> {
    let rows = conn
        .simple_query(
            "SELECT pg_catalog.pg_backend_pid(), backend_start::text \
             FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()",
        )
        .await?;
    Ok(rows.into_iter().next().and_then(|row| {
        let pid = row.first()?.as_deref()?.parse().ok()?;
        let started = row.get(1)?.clone()?;
        Some(Walsender { pid, started })
    }))
}

/// End the walsender `pid` that holds the slot if it is this process's previous one: its link
/// went silent, and the server would keep it (and the slot) until `wal_sender_timeout`, or
/// for ever with that timeout off.
async fn end_own_walsender(
    conn: &mut ReplicationConnection,
    pid: i32,
    previous: &Walsender,
) -> Result<(), SourceError> {
    if pid != previous.pid {
        return Ok(());
    }
    let rows = conn
        .simple_query(&format!(
            "SELECT backend_start::text FROM pg_catalog.pg_stat_activity WHERE pid = {pid}"
        ))
        .await?;
    let started = rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten());
    if started.as_deref() != Some(previous.started.as_str()) {
        return Ok(());
    }
    tracing::warn!(
        pid,
        "this lsnpipe's previous walsender still holds the slot (its link went silent); ending it"
    );
    conn.simple_query(&format!(
        "SELECT pg_catalog.pg_terminate_backend({pid}, {TERMINATE_WAIT_MS})"
    ))
    .await?;
    Ok(())
}

/// A PostgreSQL duration setting as SHOW prints it: "60s", "500ms", "2min", "0".
pub fn parse_pg_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit {
        "" | "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_needs_protocol_2_and_is_asked_for_with_on_with_messages() {
        let mut options = SourceOptions {
            publication: "pub".into(),
            slot: "s".into(),
            create_slot: false,
            failover_slot: false,
            status_interval: Duration::from_secs(10),
            receive_timeout: None,
            streaming: true,
            previous_walsender: None,
        };
        assert_eq!(streaming_options(&options, 130_015), None, "server 13");
        let on = streaming_options(&options, 140_000).expect("server 14 streams");
        assert_eq!(
            on.to_sql(),
            r#"(proto_version '2', publication_names '"pub"', messages 'true', streaming 'on')"#
        );
        assert_eq!(streaming_options(&options, 170_002), Some(on));
        options.streaming = false;
        assert_eq!(streaming_options(&options, 170_002), None);
    }

    #[test]
    fn parses_durations_as_show_prints_them() {
        assert_eq!(parse_pg_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_pg_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_pg_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_pg_duration("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_pg_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_pg_duration("soon"), None);
        assert_eq!(parse_pg_duration("5x"), None);
    }
}
