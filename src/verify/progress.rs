//! How far a long `verify` has come, on stderr: a line redrawn in place on a terminal (drawn by
//! `indicatif`, with log lines written around it), a log line every [`LOG_EVERY`] otherwise.
//! Stdout carries only the report, so JSON output stays clean.
//!
//! ```text
//!  jobs ─▶ tables done, rows compared (the rate limit's count) ─▶ every tick:
//!          "1/4 tables, 2,500,000 rows compared"
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a line is logged when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// How often the progress is looked at.
pub const TICK: Duration = Duration::from_millis(250);

/// `1/4 tables, 2,500,000 rows compared`.
pub fn line(tables_done: u64, tables: u64, rows: u64) -> String {
    format!(
        "{tables_done}/{tables} tables, {} rows compared",
        thousands(rows)
    )
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The progress of one run, shown until dropped.
pub struct Progress {
    tables: u64,
    tables_done: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
    bar: ProgressBar,
    multi: MultiProgress,
}

impl Progress {
    pub fn new(tables: u64) -> Self {
        // Draws nothing when stderr is not a terminal.
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        let bar = multi.add(ProgressBar::new_spinner());
        if let Ok(style) = ProgressStyle::with_template("{spinner} verify: {msg} {elapsed}") {
            bar.set_style(style);
        }
        bar.set_message(line(0, tables, 0));
        crate::telemetry::lift_logs_around(Some(multi.clone()));
        Progress {
            tables,
            tables_done: AtomicU64::new(0),
            started: Instant::now(),
            last_log: Mutex::new(Instant::now()),
            bar,
            multi,
        }
    }

    pub fn table_done(&self) {
        self.tables_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Show `rows` compared so far.
    pub fn tick(&self, rows: u64) {
        let text = line(self.tables_done.load(Ordering::Relaxed), self.tables, rows);
        if self.multi.is_hidden() {
            let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= LOG_EVERY {
                *last = Instant::now();
                tracing::info!("verify: {text}, {} s", self.started.elapsed().as_secs());
            }
        } else {
            self.bar.set_message(text);
            self.bar.tick();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        let _ = self.multi.clear();
        crate::telemetry::lift_logs_around(None);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_line_says_tables_and_rows() {
        assert_eq!(
            super::line(1, 4, 2_500_000),
            "1/4 tables, 2,500,000 rows compared"
        );
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(0), "0");
    }
}
