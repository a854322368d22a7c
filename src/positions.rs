//! `Positions`: the one owner of LSN bookkeeping for a replication stream.
//!
//! ```text
//!  socket reader ──observe_xlogdata / observe_keepalive──▶ ┌───────────┐
//!  applier ───────mark_flushed (after the target commit)──▶ │ Positions │──status_update──▶ 'r'
//!                                                          └───────────┘
//! ```
//!
//! * `received`: the highest WAL position seen in XLogData headers and keepalives.
//! * `flushed`: the end LSN of the last source commit that is committed on the target.
//! * When nothing is in flight (every commit handed to the applier is flushed and no transaction
//!   is open), the last keepalive's WAL end is offered as an idle position
//!   ([`Positions::idle_position`]): the pipeline records it in the target's progress row and,
//!   once that is flushed, marks it flushed like a commit, so an idle publication does not pin
//!   WAL on the source. That is safe: a transaction the server sends later commits after that
//!   keepalive's position, so the server will not skip it on restart. Going through the progress
//!   row keeps the one invariant a restart checks: the slot never confirms more than the target
//!   has recorded (a slot ahead of the target means changes were lost).
//! * Reported positions never move backwards.
//!
//! Whether a source transaction is open is known here as the socket reader sees it (a Begin
//! handed on, its Commit not yet): the idle position must wait for a transaction still in the
//! channel. The applier knows the same for what it has applied, and is the one the pipeline
//! asks. The skip rule both sides of exactly-once rest on is [`already_applied`].

use std::sync::Mutex;

use crate::Lsn;
use crate::clock::pg_clock_now;
use crate::wire::StandbyStatusUpdate;

/// Shared between the socket reader, the status-update writer and the applier.
#[derive(Debug)]
pub struct Positions {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone)]
struct State {
    received: Lsn,
    keepalive_end: Lsn,
    /// End LSN of the last Commit handed to the consumer.
    forwarded_commit_end: Lsn,
    open_transaction: bool,
    /// Streamed (in-progress) transactions whose chunks were handed on and that have not yet
    /// committed or aborted: their changes sit uncommitted on the target.
    open_streams: Vec<u32>,
    flushed: Lsn,
    reported_flush: Lsn,
    reported_write: Lsn,
    status_updates: u64,
}

/// A copy of the positions at one moment, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionsSnapshot {
    pub received: Lsn,
    pub flushed: Lsn,
    pub reported_flush: Lsn,
    pub in_flight: bool,
}

impl Positions {
    /// Start a stream whose applied (durable on the target) position is `flushed`.
    pub fn new(flushed: Lsn) -> Self {
        Positions {
            state: Mutex::new(State {
                received: flushed,
                flushed,
                reported_flush: flushed,
                reported_write: flushed,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock cannot leave the plain-data state torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An XLogData frame was read and handed on; `tag` is the first byte of its pgoutput message.
    pub fn observe_xlogdata(&self, start: Lsn, end: Lsn, tag: u8) {
        let mut s = self.lock();
        s.received = s.received.max(start).max(end);
        match tag {
            b'B' => s.open_transaction = true,
            b'C' => {
                s.open_transaction = false;
                // The Commit's header LSN is its end LSN.
                s.forwarded_commit_end = s.forwarded_commit_end.max(end);
            }
            _ => {}
        }
    }

    /// The pgoutput message of an XLogData frame that opens or ends a streamed transaction
    /// (Stream Start `S`, Stream Commit `c`, Stream Abort `A`; others are ignored). `end` is the
    /// frame's header LSN: a Stream Commit's is its end LSN. While a streamed transaction is
    /// open, nothing is idle: its changes are on the target but not committed.
    pub fn observe_stream(&self, end: Lsn, message: &[u8]) {
        let xid = |at: usize| {
            let bytes: [u8; 4] = message.get(at..at + 4)?.try_into().ok()?;
            Some(u32::from_be_bytes(bytes))
        };
        let mut s = self.lock();
        match message.first() {
            Some(b'S') => {
                if let Some(xid) = xid(1) {
                    if !s.open_streams.contains(&xid) {
                        s.open_streams.push(xid);
                    }
                }
            }
            Some(b'c') => {
                if let Some(xid) = xid(1) {
                    s.open_streams.retain(|&open| open != xid);
                }
                s.forwarded_commit_end = s.forwarded_commit_end.max(end);
            }
            // Only the abort of the whole transaction (subxid = xid) ends it.
            Some(b'A') => {
                if let (Some(xid), Some(subxid)) = (xid(1), xid(5)) {
                    if xid == subxid {
                        s.open_streams.retain(|&open| open != xid);
                    }
                }
            }
            _ => {}
        }
    }

    /// A primary keepalive: the server has sent everything up to `wal_end`.
    pub fn observe_keepalive(&self, wal_end: Lsn) {
        let mut s = self.lock();
        s.received = s.received.max(wal_end);
        s.keepalive_end = s.keepalive_end.max(wal_end);
    }

    /// The source commit ending at `end_lsn` is committed on the target.
    pub fn mark_flushed(&self, end_lsn: Lsn) {
        let mut s = self.lock();
        s.flushed = s.flushed.max(end_lsn);
    }

    pub fn received(&self) -> Lsn {
        self.lock().received
    }

    pub fn flushed(&self) -> Lsn {
        self.lock().flushed
    }

    /// How many status updates have been built for sending.
    pub fn status_updates_sent(&self) -> u64 {
        self.lock().status_updates
    }

    pub fn snapshot(&self) -> PositionsSnapshot {
        let s = self.lock();
        PositionsSnapshot {
            received: s.received,
            flushed: s.flushed,
            reported_flush: s.reported_flush,
            in_flight: in_flight(&s),
        }
    }

    /// The keepalive position, when nothing is in flight and it is past what is flushed: the
    /// target may record it as applied (see the module doc).
    pub fn idle_position(&self) -> Option<Lsn> {
        let s = self.lock();
        (!in_flight(&s) && s.keepalive_end > s.flushed).then_some(s.keepalive_end)
    }

    /// The status update to send now: write = received, flush = apply = what is durable on the
    /// target. Never lower than an earlier update.
    pub fn status_update(&self, reply_requested: bool) -> StandbyStatusUpdate {
        let mut s = self.lock();
        s.reported_flush = s.reported_flush.max(s.flushed);
        s.reported_write = s.reported_write.max(s.received).max(s.reported_flush);
        s.status_updates += 1;
        StandbyStatusUpdate {
            write: s.reported_write,
            flush: s.reported_flush,
            apply: s.reported_flush,
            clock: pg_clock_now(),
            reply_requested,
        }
    }
}

/// The skip rule of exactly-once apply: a source transaction whose commit record begins at
/// `commit_lsn` (a Begin's `final_lsn`, a Stream Commit's commit LSN) is already in the target's
/// data when it begins before `point`, the end of a commit the target holds (the progress row)
/// or a table's copy point (its snapshot was taken after that commit). Used by the applier, the
/// sync filter of re-copied tables and streamed transactions alike.
pub fn already_applied(commit_lsn: Lsn, point: Lsn) -> bool {
    commit_lsn < point
}

fn in_flight(s: &State) -> bool {
    s.open_transaction || !s.open_streams.is_empty() || s.forwarded_commit_end > s.flushed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(v: u64) -> Lsn {
        Lsn::new(v)
    }

    #[test]
    fn reports_only_what_is_flushed_while_a_transaction_is_in_flight() {
        let p = Positions::new(lsn(100));
        p.observe_xlogdata(lsn(150), lsn(150), b'B');
        p.observe_xlogdata(lsn(160), lsn(160), b'I');
        p.observe_keepalive(lsn(500));
        let s = p.status_update(false);
        assert_eq!(s.write, lsn(500));
        assert_eq!(s.flush, lsn(100));
        assert_eq!(s.apply, lsn(100));

        p.observe_xlogdata(lsn(200), lsn(200), b'C');
        assert_eq!(
            p.status_update(false).flush,
            lsn(100),
            "commit received, not applied"
        );
        assert_eq!(p.idle_position(), None, "a transaction is in flight");
        p.mark_flushed(lsn(200));
        assert_eq!(p.status_update(false).flush, lsn(200));
        // Idle now: everything handed over is durable, so the keepalive position is offered.
        assert_eq!(p.idle_position(), Some(lsn(500)));
    }

    #[test]
    fn idle_position_is_reported_only_once_recorded_as_flushed() {
        let p = Positions::new(lsn(100));
        p.observe_keepalive(lsn(900));
        assert_eq!(p.idle_position(), Some(lsn(900)));
        let s = p.status_update(true);
        assert_eq!((s.write, s.flush, s.apply), (lsn(900), lsn(100), lsn(100)));
        assert!(s.reply_requested);
        p.mark_flushed(lsn(900));
        assert_eq!(p.status_update(false).flush, lsn(900));
        assert_eq!(p.idle_position(), None, "nothing left to record");
    }

    #[test]
    fn never_moves_backwards() {
        let p = Positions::new(lsn(100));
        p.observe_keepalive(lsn(900));
        p.mark_flushed(lsn(900));
        assert_eq!(p.status_update(false).flush, lsn(900));
        // A new transaction opens: flush stays at what was already reported.
        p.observe_xlogdata(lsn(950), lsn(950), b'B');
        p.mark_flushed(lsn(50));
        let s = p.status_update(false);
        assert_eq!(s.flush, lsn(900));
        assert!(s.write >= s.flush);
    }

    #[test]
    fn an_open_streamed_transaction_is_in_flight_until_it_commits_or_aborts() {
        let p = Positions::new(lsn(100));
        p.observe_keepalive(lsn(300));
        // Stream Start of xid 7, then of xid 8.
        p.observe_stream(lsn(150), b"S\0\0\0\x07\x01");
        p.observe_stream(lsn(160), b"S\0\0\0\x08\x01");
        assert_eq!(
            p.idle_position(),
            None,
            "changes sit uncommitted on the target"
        );
        // A subtransaction of 7 aborts: 7 is still open.
        p.observe_stream(lsn(170), b"A\0\0\0\x07\0\0\0\x09");
        // 8 aborts as a whole.
        p.observe_stream(lsn(180), b"A\0\0\0\x08\0\0\0\x08");
        assert_eq!(p.idle_position(), None, "xid 7 is still open");
        // Stream Commit of 7; its header LSN is its end.
        let mut commit = b"c\0\0\0\x07".to_vec();
        commit.extend_from_slice(&[0; 25]);
        p.observe_stream(lsn(250), &commit);
        assert_eq!(p.idle_position(), None, "committed, not yet flushed");
        p.mark_flushed(lsn(250));
        assert_eq!(p.idle_position(), Some(lsn(300)));
    }

    #[test]
    fn zero_header_lsns_do_not_lower_received() {
        let p = Positions::new(lsn(100));
        p.observe_xlogdata(Lsn::ZERO, Lsn::ZERO, b'R');
        assert_eq!(p.received(), lsn(100));
    }
}
