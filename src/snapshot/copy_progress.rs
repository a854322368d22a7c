//! Progress a person can watch: on a terminal a bar per table and one overall (rows, bytes,
//! rate, ETA, drawn by `indicatif`, nothing drawn when stderr is not a terminal); in the log a
//! line per table started and finished and a periodic summary; the same counts as metrics.
//!
//! Copy workers report every few thousand rows, never per row. Log lines go through
//! [`crate::telemetry::LogWriter`], which lifts these bars while a line is written, so the two
//! do not tear each other on a terminal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::metrics::Metrics;
use crate::telemetry::lift_logs_around;

/// Progress of one table (all its ranges).
#[derive(Debug)]
pub(super) struct TableProgress {
    name: String,
    est_rows: u64,
    rows: AtomicU64,
    bytes: AtomicU64,
    started: OnceLock<Instant>,
    bar: Mutex<Option<ProgressBar>>,
}

impl TableProgress {
    pub(super) fn new(name: String, est_rows: u64) -> Self {
        TableProgress {
            name,
            est_rows,
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: OnceLock::new(),
            bar: Mutex::new(None),
        }
    }

    pub(super) fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    fn bar(&self) -> Option<ProgressBar> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The whole copy.
#[derive(Debug)]
pub(super) struct CopyProgress {
    multi: MultiProgress,
    overall: ProgressBar,
    metrics: Metrics,
    started: Instant,
    rows: AtomicU64,
    bytes: AtomicU64,
    tables_total: u64,
    tables_done: AtomicU64,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} rows/s", state.per_sec());
            },
        )
        .progress_chars("=> ")
}

impl CopyProgress {
    pub(super) fn new(metrics: Metrics, tables: &[&TableProgress]) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        let est: u64 = tables.iter().map(|t| t.est_rows).sum();
        let overall = multi.add(ProgressBar::new(est.max(1)));
        overall.set_style(style(
            "{prefix:>32.bold} [{bar:30}] {human_pos}/{human_len} rows {msg} {rate} eta {eta}",
        ));
        overall.set_prefix("all tables");
        let tables_total = u64::try_from(tables.len()).unwrap_or(u64::MAX);
        metrics.set_snapshot_tables_remaining(tables_total);
        lift_logs_around(Some(multi.clone()));
        CopyProgress {
            multi,
            overall,
            metrics,
            started: Instant::now(),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            tables_total,
            tables_done: AtomicU64::new(0),
        }
    }

    /// The first range of `table` begins.
    pub(super) fn table_started(&self, table: &TableProgress) {
        if table.started.set(Instant::now()).is_err() {
            return;
        }
        tracing::info!(table = %table.name, estimated_rows = table.est_rows, "copying table");
        let bar = self
            .multi
            .insert_before(&self.overall, ProgressBar::new(table.est_rows.max(1)));
        bar.set_style(style(
            "{prefix:>32} [{bar:30}] {human_pos}/{human_len} rows {msg} {rate} eta {eta}",
        ));
        bar.set_prefix(table.name.clone());
        *table.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    /// `rows` more rows of `table` (`bytes` of COPY data) reached the target session.
    pub(super) fn add(&self, table: &TableProgress, rows: u64, bytes: u64) {
        let table_rows = table.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let table_bytes = table.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let all_rows = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let all_bytes = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.metrics.snapshot_rows_copied(rows);
        // Increments, not positions: workers report concurrently and out of order.
        if let Some(bar) = table.bar() {
            if table_rows > bar.length().unwrap_or(0) {
                bar.set_length(table_rows);
            }
            bar.inc(rows);
            bar.set_message(HumanBytes(table_bytes).to_string());
        }
        if all_rows > self.overall.length().unwrap_or(0) {
            self.overall.set_length(all_rows);
        }
        self.overall.inc(rows);
        self.overall.set_message(HumanBytes(all_bytes).to_string());
    }

    /// Every range of `table` is committed on the target.
    pub(super) fn table_finished(&self, table: &TableProgress) {
        let done = self.tables_done.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics
            .set_snapshot_tables_remaining(self.tables_total.saturating_sub(done));
        let elapsed = table
            .started
            .get()
            .map(Instant::elapsed)
            .unwrap_or_default();
        let rows = table.rows();
        tracing::info!(
            table = %table.name,
            rows,
            bytes = %HumanBytes(table.bytes.load(Ordering::Relaxed)),
            seconds = format_args!("{:.1}", elapsed.as_secs_f64()),
            rows_per_second = rate(rows, elapsed),
            "copied table"
        );
        if let Some(bar) = table.bar() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    /// The periodic log line.
    pub(super) fn log_summary(&self) {
        let elapsed = self.started.elapsed();
        let rows = self.rows.load(Ordering::Relaxed);
        tracing::info!(
            tables_done = self.tables_done.load(Ordering::Relaxed),
            tables = self.tables_total,
            rows,
            bytes = %HumanBytes(self.bytes.load(Ordering::Relaxed)),
            rows_per_second = rate(rows, elapsed),
            "initial copy in progress"
        );
    }

    /// Clear the bars and log the totals.
    pub(super) fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
        lift_logs_around(None);
        let elapsed = self.started.elapsed();
        let rows = self.rows.load(Ordering::Relaxed);
        tracing::info!(
            tables = self.tables_total,
            rows,
            bytes = %HumanBytes(self.bytes.load(Ordering::Relaxed)),
            seconds = format_args!("{:.1}", elapsed.as_secs_f64()),
            rows_per_second = rate(rows, elapsed),
            "initial copy finished"
        );
    }
}

/// How often the summary goes to the log.
pub(super) const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

fn rate(rows: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a displayed rate needs no exact integer"
    )]
    let r = (rows as f64 / secs) as u64;
    r
}
