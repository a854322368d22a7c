//! `lsnpipe_lag_seconds`, computed when scraped rather than when set.
//!
//! The applier knows the source commit time of the oldest change it has not applied yet; it
//! stores that instant here. Each scrape subtracts it from the clock, so the lag keeps growing
//! while the pipeline is stuck, even though nobody updates it then.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus::PullingGauge;

use crate::clock::pg_clock_now;

/// Stands for "nothing unapplied"; no real commit time is this far in the past.
const CAUGHT_UP: i64 = i64::MIN;

/// The oldest unapplied commit time, shared between the applier and the scrape.
#[derive(Debug, Clone)]
pub(super) struct LagClock {
    oldest_unapplied: Arc<AtomicI64>,
}

impl LagClock {
    pub(super) fn caught_up() -> Self {
        LagClock {
            oldest_unapplied: Arc::new(AtomicI64::new(CAUGHT_UP)),
        }
    }

    /// `commit_time` in PostgreSQL µs since 2000-01-01; `None` when caught up.
    pub(super) fn set(&self, commit_time: Option<i64>) {
        let stored = commit_time.map_or(CAUGHT_UP, |t| t.max(CAUGHT_UP + 1));
        self.oldest_unapplied.store(stored, Ordering::Relaxed);
    }

    /// Seconds of lag at `now` (same clock); never negative, so a source clock ahead of ours
    /// reads as caught up rather than as a negative lag.
    pub(super) fn seconds_at(&self, now: i64) -> f64 {
        let oldest = self.oldest_unapplied.load(Ordering::Relaxed);
        if oldest == CAUGHT_UP {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss, reason = "µs to fractional seconds")]
        let seconds = now.saturating_sub(oldest).max(0) as f64 / 1e6;
        seconds
    }

    pub(super) fn collector(
        &self,
        name: &str,
        help: &str,
    ) -> Result<PullingGauge, prometheus::Error> {
        let clock = self.clone();
        PullingGauge::new(
            name,
            help,
            Box::new(move || clock.seconds_at(pg_clock_now())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_reads_zero() {
        let clock = LagClock::caught_up();
        assert_eq!(clock.seconds_at(1_000_000_000), 0.0);
        clock.set(Some(0));
        clock.set(None);
        assert_eq!(clock.seconds_at(1_000_000_000), 0.0);
    }

    #[test]
    fn lag_grows_with_the_clock_and_never_goes_negative() {
        let clock = LagClock::caught_up();
        clock.set(Some(10_000_000));
        assert_eq!(clock.seconds_at(12_500_000), 2.5);
        assert_eq!(clock.seconds_at(70_000_000), 60.0);
        assert_eq!(clock.seconds_at(9_000_000), 0.0);
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let clock = LagClock::caught_up();
        clock.set(Some(i64::MIN));
        assert!(clock.seconds_at(i64::MAX) > 0.0);
        clock.set(Some(i64::MAX));
        assert_eq!(clock.seconds_at(i64::MIN), 0.0);
    }
}
