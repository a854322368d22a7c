//! Per-table sync points on the stream: a table re-copied after a restart holds the source's
//! data as of its own, later snapshot, so the stream's changes to it are dropped until the
//! stream passes that point.
//!
//! ```text
//!  Relation(oid, schema.name) ─▶ oid ↦ sync LSN (when the table has one)
//!  Begin(final_lsn)           ─▶ the current transaction's commit position
//!  Insert/Update/Delete(oid)  ─▶ kept when final_lsn >= sync LSN of oid, dropped otherwise
//!  Truncate(oids…)            ─▶ rebuilt without the relations it must not touch
//! ```
//!
//! The rule is the applier's skip rule, per table: a transaction whose commit began before the
//! table's copy point (`final_lsn < sync`) is already in the copied data.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::Lsn;
use crate::pgoutput::{self, DecodeContext, DecodeError, LogicalMessage};

/// Which tables' changes the stream must still drop, and up to where.
#[derive(Debug, Default, Clone)]
pub struct SyncFilter {
    by_name: HashMap<(String, String), Lsn>,
    by_oid: HashMap<u32, Lsn>,
    final_lsn: Lsn,
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
        self.by_name.is_empty()
    }

    /// The message to apply in place of `message`, or `None` to drop it.
    pub fn admit(
        &mut self,
        message: LogicalMessage,
    ) -> Result<Option<LogicalMessage>, DecodeError> {
        if self.is_empty() {
            return Ok(Some(message));
        }
        let keep = match &message {
            LogicalMessage::Relation(r) => {
                let key = (r.namespace().to_owned(), r.name().to_owned());
                match self.by_name.get(&key) {
                    Some(lsn) => self.by_oid.insert(r.oid, *lsn),
                    None => self.by_oid.remove(&r.oid),
                };
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
                let kept: Vec<u32> = t.relation_oids().filter(|o| self.applies_to(*o)).collect();
                if kept.is_empty() {
                    false
                } else if kept.len() == t.relation_count() {
                    true
                } else {
                    return truncate_of(&kept, t.options).map(Some);
                }
            }
            _ => true,
        };
        Ok(keep.then_some(message))
    }

    fn applies_to(&self, oid: u32) -> bool {
        self.by_oid
            .get(&oid)
            .is_none_or(|sync| self.final_lsn >= *sync)
    }
}

/// A Truncate message over `oids`, built as the source would send it.
fn truncate_of(oids: &[u32], options: u8) -> Result<LogicalMessage, DecodeError> {
    let mut buf = BytesMut::with_capacity(6 + 4 * oids.len());
    buf.put_u8(b'T');
    buf.put_u32(u32::try_from(oids.len()).unwrap_or(u32::MAX));
    buf.put_u8(options);
    for oid in oids {
        buf.put_u32(*oid);
    }
    pgoutput::decode(Bytes::from(buf), DecodeContext::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(buf: BytesMut) -> LogicalMessage {
        pgoutput::decode(buf.freeze(), DecodeContext::default()).unwrap()
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
            assert!(f.admit(m).unwrap().is_some(), "relations always pass");
        }
        assert!(f.admit(begin(99)).unwrap().is_some());
        assert!(f.admit(insert(1)).unwrap().is_none(), "in the copy already");
        assert!(f.admit(insert(2)).unwrap().is_some(), "not re-copied");
        f.admit(begin(100)).unwrap();
        assert!(f.admit(insert(1)).unwrap().is_some(), "at the sync point");
    }

    #[test]
    fn a_truncate_loses_only_the_relations_it_must_not_touch() {
        let mut f = SyncFilter::new([("public".to_owned(), "late".to_owned(), Lsn::from(100))]);
        f.admit(relation(1, "late")).unwrap();
        f.admit(relation(2, "early")).unwrap();
        f.admit(begin(50)).unwrap();
        let both = truncate_of(&[1, 2], 1).unwrap();
        let Some(LogicalMessage::Truncate(t)) = f.admit(both).unwrap() else {
            panic!("a truncate of the other table stays");
        };
        assert_eq!(t.relation_oids().collect::<Vec<_>>(), [2]);
        assert!(t.cascade());
        let only_late = truncate_of(&[1], 0).unwrap();
        assert!(f.admit(only_late).unwrap().is_none());
    }

    #[test]
    fn a_relation_renamed_away_from_a_synced_name_passes() {
        let mut f = SyncFilter::new([("public".to_owned(), "late".to_owned(), Lsn::from(100))]);
        f.admit(relation(1, "late")).unwrap();
        f.admit(relation(1, "renamed")).unwrap();
        f.admit(begin(10)).unwrap();
        assert!(f.admit(insert(1)).unwrap().is_some());
    }
}
