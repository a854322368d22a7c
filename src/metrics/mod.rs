//! Prometheus metrics and the health endpoints: what the pipeline reports and how it is served.
//!
//! ```text
//!  wire / decoder / applier ──record_*(), set_*()──▶ Metrics ──registered once──▶ Registry
//!  slot monitor (own SQL connection, every few s) ──▶ Metrics                        │
//!  pipeline state ──set_streaming(), set_lag_bytes()──▶ Health                       │
//!                                    GET /metrics, /healthz, /readyz ◀── server ◀────┘
//! ```
//!
//! Every metric is a named constant in [`names`], registered once into a `Registry` the caller
//! passes in (no global registry). The pipeline calls the helpers once per batch, not per row.
//! Labels are low-cardinality (message kind, table, operation, side, error kind, slot status) and
//! never carry row values. `docs/metrics.md` documents each metric for operators.

mod health;
mod lag;
pub mod names;
mod server;
mod slot_monitor;

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::Lsn;
use crate::error_policy::ErrorKind;
pub use health::Health;
use lag::LagClock;
pub use server::serve;
pub use slot_monitor::{SLOT_STATUSES, run_slot_monitor};

/// Which end of the pipeline a connection belongs to (the `side` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

/// A row operation applied to the target (the `op` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl RowOp {
    pub const fn as_str(self) -> &'static str {
        match self {
            RowOp::Insert => "insert",
            RowOp::Update => "update",
            RowOp::Delete => "delete",
            RowOp::Truncate => "truncate",
        }
    }
}

/// Apply batches take from a millisecond (caught up, one small commit) to tens of seconds
/// (a large backlog grouped into one target transaction).
const BATCH_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Rows per batch: one row when caught up, up to whatever the grouping limit allows.
const BATCH_ROWS_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

/// Handles to every lsnpipe metric. Cloning is cheap (the handles are shared), so each task
/// keeps its own copy.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub received_lsn: IntGauge,
    pub flushed_lsn: IntGauge,
    pub lag_bytes: IntGauge,
    lag_clock: LagClock,
    pub received_bytes: IntCounterVec,
    pub received_messages: IntCounterVec,
    pub rows_applied: IntCounterVec,
    pub schema_changes: IntCounterVec,
    pub transactions_applied: IntCounter,
    pub apply_batch_duration: Histogram,
    pub apply_batch_rows: Histogram,
    pub status_updates_sent: IntCounter,
    pub reconnects: IntCounterVec,
    pub errors: IntCounterVec,
    pub slot_retained_wal_bytes: IntGauge,
    pub slot_wal_status: IntGaugeVec,
    pub snapshot_rows_copied: IntCounter,
    pub snapshot_tables_remaining: IntGauge,
}

impl Metrics {
    /// Create every metric and register it, and the process collector (`process_*`), into
    /// `registry`. Fails if any name is already registered there.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        use names::*;
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };

        let lag_clock = LagClock::caught_up();
        registry.register(Box::new(lag_clock.collector(
            LAG_SECONDS,
            "Seconds since the source commit of the oldest change not yet applied to the \
             target (0 when caught up); computed at scrape time, so it grows while stuck.",
        )?))?;
        let slot_wal_status = IntGaugeVec::new(
            Opts::new(
                SLOT_WAL_STATUS,
                "The slot's wal_status from pg_replication_slots: 1 for the current status, 0 \
                 for the others; \"missing\": no such slot; \"unknown\": NULL or not known.",
            ),
            &["status"],
        )?;
        registry.register(Box::new(slot_wal_status.clone()))?;

        let metrics = Metrics {
            received_lsn: gauge(
                RECEIVED_LSN,
                "Highest WAL position received from the source (LSN as a number).",
            )?,
            flushed_lsn: gauge(
                FLUSHED_LSN,
                "End of the last source commit durably applied to the target (LSN as a number).",
            )?,
            lag_bytes: gauge(
                LAG_BYTES,
                "Bytes of WAL between the source's WAL end and the flushed position.",
            )?,
            lag_clock,
            received_bytes: counter_vec(
                RECEIVED_BYTES,
                "Bytes of pgoutput message payload received, by message kind.",
                &["kind"],
            )?,
            received_messages: counter_vec(
                RECEIVED_MESSAGES,
                "pgoutput messages received, by message kind.",
                &["kind"],
            )?,
            rows_applied: counter_vec(
                ROWS_APPLIED,
                "Row changes applied to the target, by target table and operation.",
                &["table", "op"],
            )?,
            schema_changes: {
                let changes = counter_vec(
                    SCHEMA_CHANGES,
                    "Schema changes made on the target to follow the source, by kind.",
                    &["kind"],
                )?;
                // Every kind apply::drift reports, at 0 from the start.
                for kind in ["add_column", "alter_type", "drop_not_null", "drop_column"] {
                    changes.with_label_values(&[kind]);
                }
                changes
            },
            transactions_applied: counter(
                TRANSACTIONS_APPLIED,
                "Source transactions applied to the target.",
            )?,
            apply_batch_duration: histogram(
                APPLY_BATCH_DURATION,
                "Wall time to apply and commit one batch on the target.",
                BATCH_DURATION_BUCKETS,
            )?,
            apply_batch_rows: histogram(
                APPLY_BATCH_ROWS,
                "Row changes per applied batch.",
                BATCH_ROWS_BUCKETS,
            )?,
            status_updates_sent: counter(
                STATUS_UPDATES_SENT,
                "Standby status updates sent to the source.",
            )?,
            reconnects: counter_vec(
                RECONNECTS,
                "Reconnections after a lost connection, by side (source or target).",
                &["side"],
            )?,
            errors: counter_vec(ERRORS, "Errors, by kind.", &["kind"])?,
            slot_retained_wal_bytes: gauge(
                SLOT_RETAINED_WAL_BYTES,
                "WAL the source retains for the slot: pg_current_wal_lsn() - restart_lsn.",
            )?,
            slot_wal_status,
            snapshot_rows_copied: counter(
                SNAPSHOT_ROWS_COPIED,
                "Rows copied to the target by the initial snapshot.",
            )?,
            snapshot_tables_remaining: gauge(
                SNAPSHOT_TABLES_REMAINING,
                "Tables a copy (initial, or of tables that joined the publication) has still to copy.",
            )?,
        };

        // Series that exist from the start, so that rate() and alerts see a 0 before the first
        // event rather than no data.
        for side in [Side::Source, Side::Target] {
            metrics.reconnects.with_label_values(&[side.as_str()]);
        }
        for status in SLOT_STATUSES {
            metrics.slot_wal_status.with_label_values(&[status]).set(0);
        }
        for kind in ErrorKind::ALL {
            metrics.errors.with_label_values(&[kind.as_str()]);
        }

        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }

    /// One message (or a run of messages of one kind) received from the source.
    pub fn record_received(&self, kind: &'static str, messages: u64, bytes: u64) {
        self.received_messages
            .with_label_values(&[kind])
            .inc_by(messages);
        self.received_bytes.with_label_values(&[kind]).inc_by(bytes);
    }

    /// A batch committed on the target: `txns` source transactions, row counts per
    /// (`schema.table`, operation), and how long applying and committing took.
    pub fn record_applied_batch<'a>(
        &self,
        txns: u64,
        rows: impl IntoIterator<Item = (&'a str, RowOp, u64)>,
        duration: Duration,
    ) {
        let mut total = 0u64;
        for (table, op, count) in rows {
            self.rows_applied
                .with_label_values(&[table, op.as_str()])
                .inc_by(count);
            total = total.saturating_add(count);
        }
        self.transactions_applied.inc_by(txns);
        self.apply_batch_duration.observe(duration.as_secs_f64());
        #[allow(
            clippy::cast_precision_loss,
            reason = "a histogram bucket needs no exact count"
        )]
        self.apply_batch_rows.observe(total as f64);
    }

    /// The stream positions; also sets the byte lag (received − flushed). (The walsender's
    /// headers carry the position it has decoded up to, which is `received`; the server's own
    /// WAL end is not on the stream.)
    pub fn set_positions(&self, received: Lsn, flushed: Lsn) {
        self.received_lsn.set(lsn_gauge(received));
        self.flushed_lsn.set(lsn_gauge(flushed));
        self.lag_bytes
            .set(saturating_i64(received.bytes_since(flushed)));
    }

    /// The source commit time (PostgreSQL µs since 2000-01-01, as in Begin/Commit messages) of
    /// the oldest change not yet applied, or `None` when everything received is applied.
    /// `lsnpipe_lag_seconds` is computed from it at each scrape.
    pub fn set_oldest_unapplied_commit(&self, commit_time: Option<i64>) {
        self.lag_clock.set(commit_time);
    }

    pub fn reconnect(&self, side: Side) {
        self.reconnects.with_label_values(&[side.as_str()]).inc();
    }

    /// Count an error; its kind is one of the small fixed set in [`ErrorKind`].
    pub fn error(&self, kind: ErrorKind) {
        self.errors.with_label_values(&[kind.as_str()]).inc();
    }

    /// The slot's state as read from `pg_replication_slots`: retained WAL bytes and
    /// `wal_status` (`None` when the server reports NULL), or `None` when the slot is missing.
    pub fn set_slot_state(&self, state: Option<(u64, Option<&str>)>) {
        let (retained, current) = match state {
            None => (0, "missing"),
            // The label set stays fixed: a status this build does not know counts as unknown.
            Some((retained, Some(status))) if SLOT_STATUSES.contains(&status) => (retained, status),
            Some((retained, _)) => (retained, "unknown"),
        };
        self.slot_retained_wal_bytes.set(saturating_i64(retained));
        for status in SLOT_STATUSES {
            let value = i64::from(*status == current);
            self.slot_wal_status.with_label_values(&[status]).set(value);
        }
    }

    pub fn snapshot_rows_copied(&self, rows: u64) {
        self.snapshot_rows_copied.inc_by(rows);
    }

    pub fn set_snapshot_tables_remaining(&self, tables: u64) {
        self.snapshot_tables_remaining.set(saturating_i64(tables));
    }
}

/// Resolves once `shutdown` is true, or its sender is gone (the process is going away then too).
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard wait_for returns is not Send; drop it here, not in the caller's select!.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// An LSN as a gauge value: exact below 2^63 bytes of WAL, which no server reaches.
fn lsn_gauge(lsn: Lsn) -> i64 {
    saturating_i64(lsn.as_u64())
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
