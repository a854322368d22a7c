//! Fuzz the pgoutput decoder and the replication CopyData parser.
//!
//! Input: one flag byte (bit 0: inside a stream, bit 1: parallel streaming), then one message.
//! Seeds: `scripts/fuzz-seed-corpus.sh` writes every captured fixture frame in this form.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use lsnpipe_fuzz::frames::ReplicationMessage;
use lsnpipe_fuzz::pgoutput::{DecodeContext, LogicalMessage, OldTuple, TupleData, decode};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, message)) = data.split_first() else {
        return;
    };
    let ctx = DecodeContext {
        in_stream: flags & 1 != 0,
        parallel_streaming: flags & 2 != 0,
    };
    let frame = Bytes::copy_from_slice(message);
    if let Ok(decoded) = decode(frame.clone(), ctx) {
        walk(&decoded);
    }
    let _ = ReplicationMessage::parse(frame);
});

/// Read everything the decoded message hands out lazily, checking the counts agree.
fn walk(message: &LogicalMessage) {
    let mut tuples: [Option<&TupleData>; 2] = [None, None];
    match message {
        LogicalMessage::Insert(i) => tuples[0] = Some(&i.new),
        LogicalMessage::Update(u) => {
            tuples[0] = Some(&u.new);
            tuples[1] = u.old.as_ref().map(OldTuple::tuple);
        }
        LogicalMessage::Delete(d) => tuples[0] = Some(d.old.tuple()),
        LogicalMessage::Relation(r) => {
            assert_eq!(r.columns().count(), r.column_count());
            assert!(r.columns().all(|c| c.name.len() < 1 << 20));
        }
        LogicalMessage::Truncate(t) => assert_eq!(t.relation_oids().count(), t.relation_count()),
        _ => {}
    }
    for t in tuples.into_iter().flatten() {
        assert_eq!(t.iter().count(), t.len());
        assert_eq!(t.get(t.len()), None);
    }
}
