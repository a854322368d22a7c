//! Per-table sync points on the stream: a table re-copied after a restart holds the source's
//! data as of its own, later snapshot, so the stream's changes to it are dropped until the
//! stream passes that point.
//!
//! ```text
//!  Relation(oid, schema.name) ─▶ oid ↦ sync LSN (when the table has one)
//!  Begin(final_lsn)           ─▶ the current transaction's commit position
//!  Insert/Update/Delete(oid)  ─▶ kept when final_lsn >= sync LSN of oid, dropped otherwise
//!  Truncate(oids…)            ─▶ narrowed to the relations it may touch (Truncate::retain_relations)
//! ```
//!
//! The rule is the applier's skip rule ([`crate::positions::already_applied`]), per table: a
//! transaction whose commit began before the table's copy point is already in the copied data.
//!
//! A table copied while the stream runs (it joined the publication, see `added.rs`) is
//! [`watch`](SyncFilter::watch)ed: until its point is known, and from its point on until its
//! copy is done, its changes are held ([`SyncFilter::hold`]): the pipeline waits, then admits.

use std::collections::HashMap;

use tokio::sync::watch;

use super::added::TableSync;
use crate::Lsn;
use crate::pgoutput::LogicalMessage;
use crate::positions::already_applied;

/// Which tables' changes the stream must still drop, and up to where.
#[derive(Debug, Default, Clone)]
pub struct SyncFilter {
    by_name: HashMap<(String, String), Lsn>,
    by_oid: HashMap<u32, Lsn>,
    final_lsn: Lsn,
    /// Tables being copied while the stream runs, and their relation OIDs.
    online: HashMap<(String, String), watch::Receiver<TableSync>>,
    online_oids: HashMap<u32, (String, String)>,
}

/// Why a change cannot be admitted yet.
#[derive(Debug)]
pub enum Hold {
    /// Its table's copy has to get further first: wait for a change of this, then ask again.
    Wait(watch::Receiver<TableSync>),
    /// Its table's copy failed.
    Failed { table: String, reason: String },
}

impl SyncFilter {
    /// `points`: (schema, table, sync LSN) of tables copied after the slot's consistent point.
    pub fn new(points: impl IntoIterator<Item = (String, String, Lsn)>) -> Self {
        SyncFilter {
            by_name: points
                .into_iter()
                .map(|(schema, table, lsn)| ((schema, table), lsn))
                .collect(),
            ..SyncFilter::default()
        }
    }

    /// No table has a sync point: every message passes.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty() && self.online.is_empty()
    }

    /// Whether the filter may still drop or hold a change of a transaction that commits after
    /// `lsn`: a table's sync point lies beyond it, or a table is being copied while the stream
    /// runs. (A streamed change is applied before its commit position is known.)
    pub fn binds_after(&self, lsn: Lsn) -> bool {
        !self.online.is_empty() || self.by_name.values().any(|&sync| sync > lsn)
    }

    /// `schema.table` is being copied while the stream runs; `sync` tells how far.
    pub fn watch(&mut self, schema: &str, table: &str, sync: watch::Receiver<TableSync>) {
        self.online
            .insert((schema.to_owned(), table.to_owned()), sync);
    }

    /// A table whose copy beside the stream failed, with the reason (checked on a timer too: a
    /// table that never changes would otherwise never tell).
    pub fn failed(&self) -> Option<Hold> {
        self.online
            .iter()
            .find_map(|(key, sync)| match &*sync.borrow() {
                TableSync::Failed(reason) => Some(Hold::Failed {
                    table: format!("{}.{}", key.0, key.1),
                    reason: reason.clone(),
                }),
                _ => None,
            })
    }

    /// Whether `message` must wait for a table's copy (call before [`SyncFilter::admit`]).
    pub fn hold(&mut self, message: &LogicalMessage) -> Option<Hold> {
        if self.online_oids.is_empty() {
            return None;
        }
        let oids: Vec<u32> = match message {
            LogicalMessage::Insert(m) => vec![m.relation_oid],
            LogicalMessage::Update(m) => vec![m.relation_oid],
            LogicalMessage::Delete(m) => vec![m.relation_oid],
            LogicalMessage::Truncate(t) => t.relation_oids().collect(),
            _ => return None,
        };
        for oid in oids {
            let Some(key) = self.online_oids.get(&oid) else {
                continue;
            };
            let Some(sync) = self.online.get(key) else {
                continue;
            };
            let state = sync.borrow().clone();
            match state {
                TableSync::Starting => return Some(Hold::Wait(sync.clone())),
                TableSync::Preparing { floor } if self.final_lsn >= floor => {
                    return Some(Hold::Wait(sync.clone()));
                }
                TableSync::Preparing { .. } => {}
                TableSync::Copying { sync: point } if self.final_lsn >= point => {
                    return Some(Hold::Wait(sync.clone()));
                }
                TableSync::Copying { .. } => {}
                TableSync::Done { sync: point } => {
                    // Settled: from now on an ordinary sync point.
                    let key = key.clone();
                    self.online.remove(&key);
                    self.online_oids.remove(&oid);
                    self.by_oid.insert(oid, point);
                    self.by_name.insert(key, point);
                }
                TableSync::Failed(reason) => {
                    return Some(Hold::Failed {
                        table: format!("{}.{}", key.0, key.1),
                        reason,
                    });
                }
                TableSync::Unpublished => {
                    let key = key.clone();
                    self.online.remove(&key);
                    self.online_oids.remove(&oid);
                }
            }
        }
        None
    }

    /// The message to apply in place of `message`, or `None` to drop it.
    pub fn admit(&mut self, message: LogicalMessage) -> Option<LogicalMessage> {
        if self.is_empty() {
            return Some(message);
        }
        let keep = match &message {
            LogicalMessage::Relation(r) => {
                let key = (r.namespace().to_owned(), r.name().to_owned());
                match self.by_name.get(&key) {
                    Some(lsn) => self.by_oid.insert(r.oid, *lsn),
                    None => self.by_oid.remove(&r.oid),
                };
                if self.online.contains_key(&key) {
                    self.online_oids.insert(r.oid, key);
                } else {
                    self.online_oids.remove(&r.oid);
                }
                true
            }
            LogicalMessage::Begin(b) => {
                self.final_lsn = b.final_lsn;
                true
            }
            LogicalMessage::Insert(m) => self.applies_to(m.relation_oid),
            LogicalMessage::Update(m) => self.applies_to(m.relation_oid),
            LogicalMessage::Delete(m) => self.applies_to(m.relation_oid),
            LogicalMessage::Truncate(t) => {
                let kept = t.retain_relations(|oid| self.applies_to(oid));
                if kept.relation_count() == 0 {
                    false
                } else if kept.relation_count() == t.relation_count() {
                    true
                } else {
                    return Some(LogicalMessage::Truncate(kept));
                }
            }
            _ => true,
        };
        keep.then_some(message)
    }

    fn applies_to(&self, oid: u32) -> bool {
        if let Some(sync) = self.by_oid.get(&oid) {
            return !already_applied(self.final_lsn, *sync);
        }
        // A table being copied: `hold` let only changes before its point through.
        let copying = self
            .online_oids
            .get(&oid)
            .and_then(|key| self.online.get(key))
            .map(|sync| sync.borrow().clone());
        match copying {
            Some(TableSync::Copying { sync } | TableSync::Done { sync }) => {
                !already_applied(self.final_lsn, sync)
            }
            // Let through by `hold` only when before the floor, hence in the copy.
            Some(TableSync::Preparing { floor }) => !already_applied(self.final_lsn, floor),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;
    use crate::pgoutput::{self, DecodeContext};

    fn decode(buf: BytesMut) -> LogicalMessage {
        pgoutput::decode(buf.freeze(), DecodeContext::default()).unwrap()
    }

    /// A Truncate message over `oids`, as the source sends it.
    fn truncate_of(oids: &[u32], options: u8) -> LogicalMessage {
        let mut b = BytesMut::new();
        b.put_u8(b'T');
        b.put_u32(u32::try_from(oids.len()).unwrap());
        b.put_u8(options);
        for oid in oids {
            b.put_u32(*oid);
        }
        decode(b)
    }

    fn begin(final_lsn: u64) -> LogicalMessage {
        let mut b = BytesMut::new();
        b.put_u8(b'B');
        b.put_u64(final_lsn);
        b.put_i64(0);
        b.put_u32(7);
        decode(b)
    }

    fn relation(oid: u32, name: &str) -> LogicalMessage {
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_u32(oid);
        b.put_slice(b"public\0");
        b.put_slice(name.as_bytes());
        b.put_u8(0);
        b.put_u8(b'd');
        b.put_i16(1);
        b.put_u8(1);
        b.put_slice(b"id\0");
        b.put_u32(23);
        b.put_i32(-1);
        decode(b)
    }

    fn insert(oid: u32) -> LogicalMessage {
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(oid);
        b.put_u8(b'N');
        b.put_i16(1);
        b.put_u8(b'n');
        decode(b)
    }

    #[test]
    fn changes_before_a_tables_sync_point_are_dropped() {
        let mut f = SyncFilter::new([("public".to_owned(), "late".to_owned(), Lsn::from(100))]);
        for m in [relation(1, "late"), relation(2, "early")] {
            assert!(f.admit(m).is_some(), "relations always pass");
        }
        assert!(f.admit(begin(99)).is_some());
        assert!(f.admit(insert(1)).is_none(), "in the copy already");
        assert!(f.admit(insert(2)).is_some(), "not re-copied");
        f.admit(begin(100));
        assert!(f.admit(insert(1)).is_some(), "at the sync point");
    }

    #[test]
    fn a_sync_point_binds_only_transactions_that_could_commit_before_it() {
        let f = SyncFilter::new([("public".to_owned(), "late".to_owned(), Lsn::from(100))]);
        assert!(f.binds_after(Lsn::from(99)));
        assert!(!f.binds_after(Lsn::from(100)));
        assert!(!SyncFilter::default().binds_after(Lsn::ZERO));
    }

    #[test]
    fn a_truncate_loses_only_the_relations_it_must_not_touch() {
        let mut f = SyncFilter::new([("public".to_owned(), "late".to_owned(), Lsn::from(100))]);
        f.admit(relation(1, "late"));
        f.admit(relation(2, "early"));
        f.admit(begin(50));
        let both = truncate_of(&[1, 2], 1);
        let Some(LogicalMessage::Truncate(t)) = f.admit(both) else {
            panic!("a truncate of the other table stays");
        };
        assert_eq!(t.relation_oids().collect::<Vec<_>>(), [2]);
        assert!(t.cascade());
        let only_late = truncate_of(&[1], 0);
        assert!(f.admit(only_late).is_none());
    }

    #[test]
    fn a_table_copied_while_streaming_holds_changes_from_its_point_until_done() {
        let (tx, rx) = watch::channel(TableSync::Starting);
        let mut f = SyncFilter::default();
        f.watch("public", "added", rx);
        f.admit(relation(1, "added"));
        f.admit(relation(2, "other"));
        f.admit(begin(99));
        assert!(f.hold(&insert(2)).is_none(), "other tables never wait");
        assert!(
            matches!(f.hold(&insert(1)), Some(Hold::Wait(_))),
            "point unknown"
        );
        tx.send(TableSync::Preparing {
            floor: Lsn::from(99),
        })
        .unwrap();
        assert!(
            matches!(f.hold(&insert(1)), Some(Hold::Wait(_))),
            "at the floor: may be after the point"
        );
        f.admit(begin(98));
        assert!(f.hold(&insert(1)).is_none(), "before the floor: no wait");
        assert!(
            f.admit(insert(1)).is_none(),
            "before the floor: in the copy"
        );
        f.admit(begin(99));
        tx.send(TableSync::Copying {
            sync: Lsn::from(100),
        })
        .unwrap();
        assert!(f.hold(&insert(1)).is_none());
        assert!(
            f.admit(insert(1)).is_none(),
            "before the point: in the copy"
        );
        f.admit(begin(100));
        assert!(
            matches!(f.hold(&insert(1)), Some(Hold::Wait(_))),
            "copy not done"
        );
        tx.send(TableSync::Done {
            sync: Lsn::from(100),
        })
        .unwrap();
        assert!(f.hold(&insert(1)).is_none());
        assert!(f.admit(insert(1)).is_some(), "from the point on");
        f.admit(begin(50));
        assert!(f.admit(insert(1)).is_none(), "an ordinary sync point now");
    }

    #[test]
    fn a_relation_found_unpublished_stops_being_watched() {
        let (tx, rx) = watch::channel(TableSync::Starting);
        let mut f = SyncFilter::default();
        f.watch("public", "leaf", rx);
        f.admit(relation(1, "leaf"));
        f.admit(begin(99));
        tx.send(TableSync::Unpublished).unwrap();
        assert!(f.hold(&insert(1)).is_none(), "nothing to wait for");
        assert!(f.admit(insert(1)).is_some());
        assert!(f.is_empty(), "no longer watched");
    }

    #[test]
    fn a_failed_copy_is_reported_with_its_table() {
        let (tx, rx) = watch::channel(TableSync::Starting);
        let mut f = SyncFilter::default();
        f.watch("public", "added", rx);
        f.admit(relation(1, "added"));
        tx.send(TableSync::Failed("no room".into())).unwrap();
        match f.hold(&insert(1)) {
            Some(Hold::Failed { table, reason }) => {
                assert_eq!(
                    (table.as_str(), reason.as_str()),
                    ("public.added", "no room")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_relation_renamed_away_from_a_synced_name_passes() {
        let mut f = SyncFilter::new([("public".to_owned(), "late".to_owned(), Lsn::from(100))]);
        f.admit(relation(1, "late"));
        f.admit(relation(1, "renamed"));
        f.admit(begin(10));
        assert!(f.admit(insert(1)).is_some());
    }
}
