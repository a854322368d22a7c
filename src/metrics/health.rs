//! Readiness: whether lsnpipe is doing its job well enough to be sent traffic or left alone.
//!
//! ```text
//!  ready  ⇔  streaming from the source  ∧  target reachable  ∧  lag_bytes ≤ threshold
//! ```
//!
//! The pipeline flips the flags as connections come and go and stores the byte lag with each
//! position update; `/readyz` reads them. Liveness (`/healthz`) needs no state: answering at
//! all is the signal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shared readiness state (wrap it in an `Arc`); every field is a lock-free atomic.
#[derive(Debug, Default)]
pub struct Health {
    streaming: AtomicBool,
    target_reachable: AtomicBool,
    lag_bytes: AtomicU64,
}

impl Health {
    /// Not ready: nothing is streaming and the target has not been reached yet.
    pub fn new() -> Self {
        Health::default()
    }

    pub fn set_streaming(&self, streaming: bool) {
        self.streaming.store(streaming, Ordering::Relaxed);
    }

    pub fn set_target_reachable(&self, reachable: bool) {
        self.target_reachable.store(reachable, Ordering::Relaxed);
    }

    pub fn set_lag_bytes(&self, lag_bytes: u64) {
        self.lag_bytes.store(lag_bytes, Ordering::Relaxed);
    }

    /// `Ok` when ready; otherwise a one-line reason for the `/readyz` body.
    pub fn readiness(&self, max_lag_bytes: u64) -> Result<(), String> {
        if !self.streaming.load(Ordering::Relaxed) {
            return Err("not streaming from the source".to_owned());
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
}
