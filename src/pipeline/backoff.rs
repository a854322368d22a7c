//! The pause between sessions that keep failing.

use std::time::Duration;

/// Pauses between sessions while they keep failing: 1 s, 2 s, then 3 s. Reset once a session
/// makes progress. The ceiling is low on purpose: the pause is how long lsnpipe may stay idle
/// after the failed server or link is back, and the goal is to stream again within 5 s; a
/// retry costs one connection attempt, which a server (or a stopped one's port) answers at once.
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
}

const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(3);

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff { next: FIRST_PAUSE }
    }

    pub(super) fn next(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_PAUSE);
        pause
    }
}
