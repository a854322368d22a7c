//! The slot monitor: how much WAL the source keeps for our slot, read every few seconds.
//!
//! ```text
//!  every interval ─▶ (connect if needed) ─▶ SlotInfo::read (pg_replication_slots) ─▶ Metrics
//!        ▲                                        │ error: count it, drop the connection
//!        └────────────────────────────────────────┘ (reconnect on the next tick)
//! ```
//!
//! It uses its own ordinary SQL connection, not the replication stream, so it keeps reporting
//! while the stream is down or stuck, which is exactly when retained WAL grows.
//!
//! A missing slot always shows in the metrics (`wal_status="missing"`), but it is logged only
//! once the slot has been seen and then disappears (`MissingSlot`): on a first start the monitor
//! reads before the pipeline has created the slot (`--create-slot`), and a slot that does not
//! exist without that flag stops the pipeline with its own error.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;

use super::Metrics;
use crate::error_policy::ErrorKind;
use crate::source::SlotInfo;

/// Every value of the `status` label of `lsnpipe_slot_wal_status`: PostgreSQL's `wal_status`
/// values, then `missing` (no such slot) and `unknown` (NULL, or a value newer than this list).
pub const SLOT_STATUSES: &[&str] = &[
    "reserved",
    "extended",
    "unreserved",
    "lost",
    "missing",
    "unknown",
];

/// The `kind` label counted in `lsnpipe_errors_total` when a read of the slot fails.
const ERROR_KIND: ErrorKind = ErrorKind::SlotMonitor;

/// How long one read may take before the connection is given up, at least; a short interval
/// must not turn a slow connect into a stream of errors.
const MIN_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Read `slot`'s retained WAL and `wal_status` every `interval` into `metrics` until `shutdown`
/// turns true (or its sender is dropped). `conn_string` is a libpq connection string to the
/// source. Failures are logged and counted, never returned: monitoring must not stop the
/// pipeline.
pub async fn run_slot_monitor(
    conn_string: String,
    slot: String,
    metrics: Metrics,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let read_timeout = interval.max(MIN_READ_TIMEOUT);
    let mut client: Option<Client> = None;
    let mut missing = MissingSlot::default();
    loop {
        tokio::select! {
            biased;
            _ = super::stopped(&mut shutdown) => return,
            _ = ticks.tick() => {}
        }
        // A hung server must not hold up shutdown, so the read races the signal too.
        let read = tokio::select! {
            biased;
            _ = super::stopped(&mut shutdown) => return,
            read = tokio::time::timeout(read_timeout, read_slot(&mut client, &conn_string, &slot)) => read,
        };
        match read {
            Ok(Ok(state)) => {
                if missing.observe(state.is_some()) {
                    tracing::warn!(%slot, "slot monitor: replication slot no longer exists on the source");
                }
                metrics.set_slot_state(state.as_ref().map(|(b, s)| (*b, s.as_deref())));
            }
            Ok(Err(e)) => {
                tracing::warn!(%slot, error = %crate::report::chain(&e), "slot monitor: reading pg_replication_slots failed; retrying");
                metrics.error(ERROR_KIND);
                client = None;
            }
            Err(_elapsed) => {
                tracing::warn!(%slot, ?read_timeout, "slot monitor: reading pg_replication_slots timed out; reconnecting");
                metrics.error(ERROR_KIND);
                client = None;
            }
        }
    }
}

/// When a missing slot is worth a warning: once per disappearance of a slot that was seen.
/// A slot not seen yet is one the pipeline is about to create (or one whose absence the pipeline
/// reports itself), so the first start stays quiet.
#[derive(Debug, Default)]
struct MissingSlot {
    seen: bool,
    reported: bool,
}

impl MissingSlot {
    /// Record one read; true when this read should be logged as a slot that went away.
    fn observe(&mut self, exists: bool) -> bool {
        if exists {
            self.seen = true;
            self.reported = false;
            return false;
        }
        let warn = self.seen && !self.reported;
        self.reported |= warn;
        warn
    }
}

/// Retained bytes (unknown reads as 0) and `wal_status`, or `None` when the slot does not exist
/// (in the source's database).
async fn read_slot(
    client: &mut Option<Client>,
    conn_string: &str,
    slot: &str,
) -> Result<Option<(u64, Option<String>)>, MonitorError> {
    let connected = match client.take() {
        Some(c) if !c.is_closed() => c,
        _ => connect(conn_string).await?,
    };
    let found = SlotInfo::read(&connected, slot).await?;
    *client = Some(connected);
    Ok(found.map(|found| (found.retained_wal_bytes.unwrap_or(0), found.wal_status)))
}

/// Why one read of the slot failed.
#[derive(Debug, thiserror::Error)]
enum MonitorError {
    #[error("source connection string")]
    Config(#[from] crate::wire::ConnConfigError),
    #[error(transparent)]
    Connect(#[from] crate::wire::WireError),
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
}

/// The same connection rules as the pipeline (TLS, PGPASSWORD, passfile).
async fn connect(conn_string: &str) -> Result<Client, MonitorError> {
    let config = crate::wire::ConnConfig::parse(conn_string)?;
    Ok(crate::wire::connect_sql(&config).await?)
}

#[cfg(test)]
mod tests {
    use super::MissingSlot;

    #[test]
    fn a_slot_not_yet_created_is_not_reported() {
        let mut missing = MissingSlot::default();
        assert!(!missing.observe(false));
        assert!(!missing.observe(false));
        assert!(!missing.observe(true));
    }

    #[test]
    fn a_slot_that_disappears_is_reported_once_per_disappearance() {
        let mut missing = MissingSlot::default();
        assert!(!missing.observe(true));
        assert!(missing.observe(false));
        assert!(!missing.observe(false));
        assert!(!missing.observe(true));
        assert!(missing.observe(false));
    }
}
