//! Readiness: whether lsnpipe is doing its job well enough to be sent traffic or left alone.
//!
//! ```text
//!  ready  ⇔  streaming from the source  ∧  target reachable  ∧  lag_bytes ≤ threshold
//!            ∧  not stalled (changes waiting, nothing applied for longer than max_stall)
//! ```
//!
//! The pipeline flips the flags as connections come and go; the telemetry refresh (its own
//! timer, not the apply loop) stores the byte lag and whether changes are waiting, and every
//! applied batch counts as progress. So a session stuck on a silent link still turns `/readyz`
//! to 503 once it has been stuck for `max_stall`, even though nothing in it runs. Liveness
//! (`/healthz`) needs no state: answering at all is the signal.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `max_stall` unless [`Health::set_max_stall`] says otherwise (`--ready-max-lag-seconds`).
const DEFAULT_MAX_STALL: Duration = Duration::from_secs(60);

/// Shared readiness state (wrap it in an `Arc`); the flags are lock-free atomics.
#[derive(Debug)]
pub struct Health {
    streaming: AtomicBool,
    target_reachable: AtomicBool,
    lag_bytes: AtomicU64,
    /// Milliseconds after `epoch` of the last applied batch, or of the last moment nothing was
    /// waiting; whichever is later.
    progress_ms: AtomicU64,
    max_stall_ms: AtomicU64,
    /// Why the last session ended, while no new one streams (cleared by `set_streaming(true)`).
    last_failure: Mutex<Option<String>>,
    epoch: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            streaming: AtomicBool::new(false),
            target_reachable: AtomicBool::new(false),
            lag_bytes: AtomicU64::new(0),
            progress_ms: AtomicU64::new(0),
            max_stall_ms: AtomicU64::new(millis(DEFAULT_MAX_STALL)),
            last_failure: Mutex::new(None),
            epoch: Instant::now(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Health {
    /// Not ready: nothing is streaming and the target has not been reached yet.
    pub fn new() -> Self {
        Health::default()
    }

    /// Longest time changes may wait with nothing applied before `/readyz` fails.
    pub fn set_max_stall(&self, max_stall: Duration) {
        self.max_stall_ms
            .store(millis(max_stall), Ordering::Relaxed);
    }

    pub fn set_streaming(&self, streaming: bool) {
        self.streaming.store(streaming, Ordering::Relaxed);
        if streaming {
            self.progress_at(Instant::now());
            *self.failure() = None;
        }
    }

    pub fn set_target_reachable(&self, reachable: bool) {
        self.target_reachable.store(reachable, Ordering::Relaxed);
    }

    pub fn set_lag_bytes(&self, lag_bytes: u64) {
        self.lag_bytes.store(lag_bytes, Ordering::Relaxed);
    }

    /// A batch was applied, or nothing is waiting: the pipeline is not stalled at `now`.
    pub fn progress_at(&self, now: Instant) {
        let ms = millis(now.saturating_duration_since(self.epoch));
        self.progress_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Why the last session ended (one line), shown by `/readyz` until streaming again.
    pub fn set_last_failure(&self, reason: String) {
        *self.failure() = Some(reason);
    }

    fn failure(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_failure.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok` when ready; otherwise a one-line reason for the `/readyz` body.
    pub fn readiness(&self, max_lag_bytes: u64) -> Result<(), String> {
        self.readiness_at(max_lag_bytes, Instant::now())
    }

    fn readiness_at(&self, max_lag_bytes: u64, now: Instant) -> Result<(), String> {
        if !self.streaming.load(Ordering::Relaxed) {
            return Err(match self.failure().as_deref() {
                Some(why) => format!("not streaming from the source: {why}"),
                None => "not streaming from the source".to_owned(),
            });
        }
        if !self.target_reachable.load(Ordering::Relaxed) {
            return Err("target unreachable".to_owned());
        }
        let lag = self.lag_bytes.load(Ordering::Relaxed);
        if lag > max_lag_bytes {
            return Err(format!(
                "lag {lag} bytes is over the readiness threshold of {max_lag_bytes} bytes"
            ));
        }
        let now_ms = millis(now.saturating_duration_since(self.epoch));
        let stalled_ms = now_ms.saturating_sub(self.progress_ms.load(Ordering::Relaxed));
        let max_ms = self.max_stall_ms.load(Ordering::Relaxed);
        if stalled_ms > max_ms {
            return Err(format!(
                "stalled: changes are waiting and nothing has been applied for {} s (threshold \
                 {} s); lag {lag} bytes",
                stalled_ms / 1000,
                max_ms / 1000
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_streaming_reachable_and_within_lag() {
        let health = Health::new();
        assert_eq!(
            health.readiness(100),
            Err("not streaming from the source".to_owned())
        );
        health.set_streaming(true);
        assert_eq!(health.readiness(100), Err("target unreachable".to_owned()));
        health.set_target_reachable(true);
        assert_eq!(health.readiness(100), Ok(()));
        health.set_lag_bytes(100);
        assert_eq!(health.readiness(100), Ok(()));
        health.set_lag_bytes(101);
        let reason = health.readiness(100).unwrap_err();
        assert!(reason.contains("101") && reason.contains("100"), "{reason}");
        health.set_lag_bytes(0);
        health.set_target_reachable(false);
        assert_eq!(health.readiness(100), Err("target unreachable".to_owned()));
    }

    #[test]
    fn a_stall_longer_than_the_threshold_is_not_ready_until_progress() {
        let health = Health::new();
        health.set_max_stall(Duration::from_secs(60));
        health.set_streaming(true);
        health.set_target_reachable(true);
        let start = Instant::now();
        health.progress_at(start);
        assert_eq!(
            health.readiness_at(100, start + Duration::from_secs(59)),
            Ok(())
        );
        let reason = health
            .readiness_at(100, start + Duration::from_secs(61))
            .unwrap_err();
        assert!(
            reason.contains("stalled") && reason.contains("61 s"),
            "{reason}"
        );
        // Progress never moves backwards: an older report does not shorten the stall.
        health.progress_at(start + Duration::from_secs(30));
        health.progress_at(start);
        assert_eq!(
            health.readiness_at(100, start + Duration::from_secs(89)),
            Ok(())
        );
    }

    #[test]
    fn the_reason_a_session_ended_shows_until_streaming_again() {
        let health = Health::new();
        health.set_last_failure("the target did not answer for 10 s".into());
        let reason = health.readiness(100).unwrap_err();
        assert!(reason.contains("did not answer"), "{reason}");
        health.set_streaming(true);
        health.set_target_reachable(true);
        assert_eq!(health.readiness(100), Ok(()));
    }
}
