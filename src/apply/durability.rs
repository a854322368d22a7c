//! Asynchronous commit on the target, and knowing when a commit has become durable.
//!
//! ```text
//!  COMMIT (synchronous_commit = off) ─▶ target WAL insert LSN ─▶ Unflushed [(target, source end)]
//!  every few hundred ms: pg_current_wal_flush_lsn() ─▶ release ─▶ source end LSN now durable
//! ```
//!
//! The apply session commits without waiting for its WAL to reach disk, which makes a commit
//! cost microseconds instead of an fsync, as PostgreSQL's own apply worker does. What is reported
//! to the source as flushed must still never pass what the target has made durable, so each
//! commit's target WAL position is remembered until the target's flush position passes it. A
//! crash of the target in between loses both the data and its progress row together (they
//! commit atomically), and the source still holds those transactions, so nothing is lost.

use std::collections::VecDeque;

use crate::Lsn;

/// Commits made visible on the target, not yet known to be on its disk.
#[derive(Debug, Default)]
pub(crate) struct Unflushed {
    pending: VecDeque<(Lsn, Lsn)>,
}

impl Unflushed {
    /// A commit whose WAL ends at or before `target`, covering source commits up to `source_end`.
    pub fn push(&mut self, target: Lsn, source_end: Lsn) {
        self.pending.push_back((target, source_end));
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Forget every commit the target has flushed (`flush`); the newest source end LSN among
    /// them is now durable.
    pub fn release(&mut self, flush: Lsn) -> Option<Lsn> {
        let mut durable = None;
        while let Some(&(target, source_end)) = self.pending.front() {
            if target > flush {
                break;
            }
            durable = Some(source_end);
            self.pending.pop_front();
        }
        durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_order_up_to_the_flush_position() {
        let mut u = Unflushed::default();
        u.push(Lsn::new(100), Lsn::new(1_000));
        u.push(Lsn::new(200), Lsn::new(2_000));
        u.push(Lsn::new(300), Lsn::new(3_000));
        assert_eq!(u.release(Lsn::new(99)), None);
        assert_eq!(u.release(Lsn::new(250)), Some(Lsn::new(2_000)));
        assert!(!u.is_empty());
        assert_eq!(u.release(Lsn::new(250)), None);
        assert_eq!(u.release(Lsn::new(300)), Some(Lsn::new(3_000)));
        assert!(u.is_empty());
    }
}
