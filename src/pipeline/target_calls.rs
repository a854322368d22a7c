//! Every round trip a session makes to the target, bounded by `--target-timeout` and by a
//! shutdown request.

use std::time::Duration;

use tokio::sync::watch;

use super::{RunError, stopped};

/// How long a target call may still run once shutdown is asked for. A healthy target finishes
/// the last commit in milliseconds; a stuck one must not hold the stop for a whole timeout.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Every round trip a session makes to the target goes through here: bounded by
/// `--target-timeout`, and given up [`SHUTDOWN_GRACE`] after a shutdown request.
pub(super) struct TargetCalls {
    pub(super) limit: Duration,
    pub(super) shutdown: watch::Receiver<bool>,
    /// Streamed transactions open on target sessions of their own: a timeout is then most
    /// likely a lock wait between lsnpipe's sessions, and the error says so.
    pub(super) open_streams: usize,
}

impl TargetCalls {
    /// `work`, or [`RunError::TargetTimeout`] once it has waited `limit` (zero: no limit), or
    /// [`RunError::StoppedWhileWaiting`]. Either error leaves the session unusable; the caller
    /// ends it (an open target transaction rolls back, the source sends it again).
    pub(super) async fn call<T, E: Into<RunError>>(
        &mut self,
        doing: &'static str,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, RunError> {
        let limit = self.limit;
        let open = self.open_streams;
        let bounded = async {
            if limit.is_zero() {
                return work.await.map_err(Into::into);
            }
            match tokio::time::timeout(limit, work).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) if open > 0 => Err(RunError::StreamLockWait {
                    doing,
                    seconds: limit.as_secs(),
                    open,
                }),
                Err(_) => Err(RunError::TargetTimeout {
                    doing,
                    seconds: limit.as_secs(),
                }),
            }
        };
        let shutdown = &mut self.shutdown;
        tokio::select! {
            biased;
            result = bounded => result,
            () = async {
                stopped(shutdown).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => Err(RunError::StoppedWhileWaiting { doing }),
        }
    }
}
