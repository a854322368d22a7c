//! Slot invalidation: the source removed WAL the slot still needed (`max_slot_wal_keep_size`
//! exceeded while lsnpipe was stopped or slow), so the changes in between are gone for good.
//!
//! ```text
//!  pg_replication_slots.wal_status = 'lost'  (+ invalidation_reason on PostgreSQL 17+)
//!        ─▶ SourceError::SlotInvalidated: a stop naming the slot, the cause and the fix
//! ```
//!
//! Streaming cannot repair this: the target would silently miss every change in the removed
//! WAL. So the run stops (no retry) and says what the operator does: drop the slot and copy
//! again. The slot monitor shows the same state as `lsnpipe_slot_wal_status{status="lost"}`,
//! and `lsnpipe status` exits 1.

use super::SourceError;
use super::slot::SlotInfo;

/// Why a slot is unusable, as the source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    pub slot: String,
    /// `invalidation_reason` (PostgreSQL 17+: `wal_removed`, `rows_removed`, …), when known.
    pub reason: Option<String>,
}

/// `Err(SourceError::SlotInvalidated)` when the source has invalidated the slot `name` it
/// describes in `slot`. (Before PostgreSQL 17 there is no `invalidation_reason`: `wal_status =
/// 'lost'` is the sign.)
pub fn check_not_invalidated(name: &str, slot: &SlotInfo) -> Result<(), SourceError> {
    if slot.is_invalidated() {
        return Err(SourceError::SlotInvalidated(Invalidation {
            slot: name.to_owned(),
            reason: slot.invalidation_reason.clone(),
        }));
    }
    Ok(())
}

impl std::fmt::Display for Invalidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replication slot {:?} has been invalidated by the source",
            self.slot
        )?;
        match self.reason.as_deref() {
            Some(reason) => write!(f, " ({reason})")?,
            None => f.write_str(" (wal_status = lost)")?,
        }
        f.write_str(
            ": the source removed WAL the slot still needed (lsnpipe was stopped or behind by more \
             than max_slot_wal_keep_size), so the target has missed changes that streaming can no \
             longer bring. To recover: run `lsnpipe teardown --yes` (drops the slot and the \
             progress row), empty the replicated tables on the target, and start `lsnpipe run \
             --create-slot` to copy the data again; raise max_slot_wal_keep_size (or alert on \
             lsnpipe_slot_wal_status{status=\"unreserved\"}) so it does not happen again",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_slot_the_cause_and_the_fix() {
        let text = Invalidation {
            slot: "orders_slot".into(),
            reason: None,
        }
        .to_string();
        for needle in [
            "\"orders_slot\"",
            "wal_status = lost",
            "max_slot_wal_keep_size",
            "lsnpipe teardown",
            "--create-slot",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        let text = Invalidation {
            slot: "s".into(),
            reason: Some("wal_removed".into()),
        }
        .to_string();
        assert!(text.contains("(wal_removed)"), "{text}");
    }
}
