//! What the pipeline reports as it goes: the one place that turns pipeline events into
//! Prometheus metrics and readiness (see `metrics/` for the names and the HTTP server); and the
//! process-wide log writer ([`LogWriter`]), which writes each log line around the progress bars
//! a command may be drawing (the initial copy, `verify`).
//!
//! Called once per message kind, per target commit and per second, never per row. The gauges
//! are refreshed by [`Telemetry::refresh_every`], a timer of its own that the pipeline runs
//! beside its sessions, so they stay true while a session is stuck on a silent link.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::MultiProgress;

use crate::apply::{Committed, Operation};
use crate::error_policy::ErrorKind;
use crate::metrics::{Health, Metrics, RowOp, Side};
use crate::positions::Positions;

/// Shared by the pipeline, the HTTP server and the slot monitor.
#[derive(Debug)]
pub struct Telemetry {
    pub metrics: Metrics,
    pub health: Arc<Health>,
    state: Mutex<State>,
    /// Messages and bytes received per kind (`MESSAGE_KINDS`) since the last `refresh`.
    received_messages: [AtomicU64; MESSAGE_KINDS.len()],
    received_bytes: [AtomicU64; MESSAGE_KINDS.len()],
}

#[derive(Debug, Default)]
struct State {
    positions: Option<Arc<Positions>>,
    /// Commit time (PostgreSQL µs) of the oldest source transaction received, not yet applied.
    oldest_unapplied_commit: Option<i64>,
    status_updates_seen: u64,
}

impl Telemetry {
    pub fn new(metrics: Metrics, health: Arc<Health>) -> Self {
        Telemetry {
            metrics,
            health,
            state: Mutex::new(State::default()),
            received_messages: Default::default(),
            received_bytes: Default::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_streaming(&self, streaming: bool) {
        self.health.set_streaming(streaming);
        if !streaming {
            self.flush_received();
            let mut state = self.state();
            state.positions = None;
            state.oldest_unapplied_commit = None;
        }
    }

    /// Why the last session ended, for `/readyz` until the next one streams.
    pub fn set_last_failure(&self, reason: String) {
        self.health.set_last_failure(reason);
    }

    /// Refresh the gauges every `period`, forever: run it beside the pipeline (in a `select!`),
    /// never inside the loop that may be stuck.
    pub async fn refresh_every(&self, period: std::time::Duration) -> std::convert::Infallible {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh();
        }
    }

    pub fn set_target_reachable(&self, reachable: bool) {
        self.health.set_target_reachable(reachable);
    }

    /// A new session's positions: the source of the LSN gauges from now on.
    pub fn watch_positions(&self, positions: Arc<Positions>) {
        let mut state = self.state();
        state.status_updates_seen = positions.status_updates_sent();
        state.positions = Some(positions);
    }

    /// One pgoutput message received.
    /// Counted here with two relaxed atomic adds; the labelled Prometheus counters (a hash
    /// lookup each) are updated on `refresh`, not once per message.
    pub fn received(&self, message: &[u8]) {
        let i = kind_index(message.first().copied());
        self.received_messages[i].fetch_add(1, Ordering::Relaxed);
        self.received_bytes[i].fetch_add(
            u64::try_from(message.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn flush_received(&self) {
        for (i, kind) in MESSAGE_KINDS.iter().enumerate() {
            let messages = self.received_messages[i].swap(0, Ordering::Relaxed);
            let bytes = self.received_bytes[i].swap(0, Ordering::Relaxed);
            if messages > 0 {
                self.metrics.record_received(kind, messages, bytes);
            }
        }
    }

    /// A source transaction began arriving; its commit time dates the lag while it is pending.
    pub fn begin(&self, commit_time: i64) {
        let mut state = self.state();
        if state.oldest_unapplied_commit.is_none() {
            state.oldest_unapplied_commit = Some(commit_time);
            self.metrics.set_oldest_unapplied_commit(Some(commit_time));
        }
    }

    /// A group of source transactions is committed on the target.
    pub fn applied(&self, committed: Committed) {
        self.state().oldest_unapplied_commit = None;
        self.metrics.record_applied_batch(
            committed.transactions,
            committed
                .rows
                .iter()
                .filter_map(|(table, op, n)| Some((table.as_str(), row_op(*op)?, *n))),
            committed.duration,
        );
        for kind in committed.schema_changes {
            self.metrics.schema_changes.with_label_values(&[kind]).inc();
        }
        self.metrics.set_oldest_unapplied_commit(None);
        self.health.progress_at(std::time::Instant::now());
        self.refresh();
    }

    /// Copy the stream positions into the gauges (called every second and after each commit).
    pub fn refresh(&self) {
        self.flush_received();
        let mut state = self.state();
        let Some(positions) = state.positions.clone() else {
            return;
        };
        let now = positions.snapshot();
        self.metrics.set_positions(now.received, now.reported_flush);
        let lag = now.received.bytes_since(now.reported_flush);
        self.health.set_lag_bytes(lag);
        // Nothing waiting counts as progress: an idle pipeline is not a stalled one. Waiting means
        // received from the source and not yet durable on the target (the byte lag alone also
        // counts WAL the source has not been told about yet while idle).
        if !now.in_flight && state.oldest_unapplied_commit.is_none() {
            self.health.progress_at(std::time::Instant::now());
        }
        let sent = positions.status_updates_sent();
        self.metrics
            .status_updates_sent
            .inc_by(sent.saturating_sub(state.status_updates_seen));
        state.status_updates_seen = sent;
    }

    pub fn reconnect(&self, side: Side) {
        self.metrics.reconnect(side);
    }

    pub fn error(&self, kind: ErrorKind) {
        self.metrics.error(kind);
    }
}

fn row_op(operation: Operation) -> Option<RowOp> {
    match operation {
        Operation::Insert => Some(RowOp::Insert),
        Operation::Update => Some(RowOp::Update),
        Operation::Delete => Some(RowOp::Delete),
        Operation::Truncate => Some(RowOp::Truncate),
        Operation::Bookkeeping => None,
    }
}

/// The `kind` label of a pgoutput message, from its tag.
const MESSAGE_KINDS: [&str; 11] = [
    "begin", "commit", "insert", "update", "delete", "truncate", "relation", "type", "origin",
    "message", "other",
];

fn kind_index(tag: Option<u8>) -> usize {
    match tag {
        Some(b'B') => 0,
        Some(b'C') => 1,
        Some(b'I') => 2,
        Some(b'U') => 3,
        Some(b'D') => 4,
        Some(b'T') => 5,
        Some(b'R') => 6,
        Some(b'Y') => 7,
        Some(b'O') => 8,
        Some(b'M') => 9,
        _ => 10,
    }
}

/// The bars being drawn, if any: log lines are written around them.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// A `tracing` writer to stderr that lifts the progress bars while a line is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

/// Draw log lines around these bars from now on (`None`: no bars any more).
pub(crate) fn lift_logs_around(bars: Option<MultiProgress>) {
    *BARS.lock().unwrap_or_else(|e| e.into_inner()) = bars;
}

/// One log event, written whole when dropped.
#[derive(Debug)]
pub struct LogLine(Vec<u8>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        use std::io::Write;
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        let bars = BARS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bars {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }
}
