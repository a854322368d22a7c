//! Where a source commit's time goes on its way to the target, for finding freshness losses.
//!
//! ```text
//!  source commit ──(walsender: WAL flush, decode, send)──▶ Commit frame received
//!                ──(apply: the group's rest, progress row, COMMIT round trip)──▶ visible
//! ```
//!
//! The pipeline notes when each source Commit arrives and when the group holding it became
//! visible on the target; the commit time comes from the source's Begin (the source's clock, so
//! the first leg is only meaningful with both on one machine, as in the benchmarks). Logged at
//! debug level under the `lsnpipe::latency` target, one line per target commit:
//! `RUST_LOG=info,lsnpipe::latency=debug`. Nothing is measured while that level is off.

use std::time::Instant;

use crate::clock::pg_clock_now;

/// The open group's first and newest source Commit.
#[derive(Debug, Default)]
pub struct CommitLatency {
    commit_time: i64,
    /// Our clock at the group's first Commit frame.
    first: Option<Instant>,
    /// The newest Commit: its source commit time (µs since 2000), our clock at its frame (same
    /// scale, and as an Instant), and whether nothing else was waiting in the stream then.
    last: Option<(i64, i64, Instant, bool)>,
}

impl CommitLatency {
    fn enabled() -> bool {
        tracing::enabled!(target: "lsnpipe::latency", tracing::Level::DEBUG)
    }

    /// A source Begin: the commit time of the transaction that follows.
    pub fn begin(&mut self, commit_time: i64) {
        self.commit_time = commit_time;
    }

    /// Its Commit frame arrived; `caught_up`: nothing else was waiting in the stream.
    pub fn commit_received(&mut self, caught_up: bool) {
        if Self::enabled() {
            let now = Instant::now();
            self.first.get_or_insert(now);
            self.last = Some((self.commit_time, pg_clock_now(), now, caught_up));
        }
    }

    /// The group holding the Commits noted is now visible on the target.
    pub fn visible(&mut self, transactions: u64) {
        let (Some(first), Some((commit_time, received, at, caught_up))) =
            (self.first.take(), self.last.take())
        else {
            return;
        };
        let micros = |i: Instant| u64::try_from(i.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(
            target: "lsnpipe::latency",
            source_to_frame_us = received - commit_time,
            frame_to_visible_us = micros(at),
            first_waited_us = micros(first),
            transactions,
            caught_up,
            "group visible"
        );
    }
}
