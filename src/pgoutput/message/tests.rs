//! Every message kind decoded from hand-written frames, and the malformed ones refused.

use super::*;
use crate::pgoutput::{ColumnValue, DecodeError};

use crate::pgoutput::hex_bytes as hex;

fn lsn(s: &str) -> Lsn {
    s.parse().unwrap()
}

const OUTSIDE: DecodeContext = DecodeContext {
    in_stream: false,
    parallel_streaming: false,
};

/// Decode `frame` (hex) outside a streamed transaction.
fn outside(frame: &str) -> Result<LogicalMessage, DecodeError> {
    decode(hex(frame), OUTSIDE)
}

#[test]
fn decodes_the_spec_appendix_begin_and_commit() {
    let begin = outside("42 000000000166fac0 00030418581cac15 00000308");
    assert_eq!(
        begin,
        Ok(LogicalMessage::Begin(Begin {
            final_lsn: lsn("0/166FAC0"),
            commit_time: 0x0003_0418_581c_ac15,
            xid: 0x308,
        }))
    );
    let commit = outside("43 00 0000000001677bd8 0000000001677c08 000304185aa9074e");
    assert_eq!(
        commit,
        Ok(LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: lsn("0/1677BD8"),
            end_lsn: lsn("0/1677C08"),
            commit_time: 0x0003_0418_5aa9_074e,
        }))
    );
}

#[test]
fn decodes_the_spec_appendix_relation_insert_and_update() {
    let LogicalMessage::Relation(rel) = outside(
        "52 0000403a 7075626c696300 687800 64 0002 \
             01 696400 00000017 ffffffff \
             00 7600 00000019 ffffffff",
    )
    .unwrap() else {
        panic!("not a Relation")
    };
    assert_eq!(
        (rel.xid, rel.oid, rel.namespace(), rel.name()),
        (None, 0x403a, "public", "hx")
    );
    assert_eq!(rel.replica_identity, ReplicaIdentity::Default);
    let cols: Vec<_> = rel.columns().collect();
    assert_eq!(cols.len(), rel.column_count());
    assert_eq!(
        cols,
        [
            Column {
                flags: 1,
                name: "id",
                type_oid: 23,
                type_modifier: -1
            },
            Column {
                flags: 0,
                name: "v",
                type_oid: 25,
                type_modifier: -1
            },
        ]
    );
    assert!(cols[0].is_key() && !cols[1].is_key());

    let frame = hex("49 0000403a 4e 0002 74 00000001 31 74 00000002 6162");
    let LogicalMessage::Insert(ins) = decode(frame.clone(), OUTSIDE).unwrap() else {
        panic!("not an Insert")
    };
    assert_eq!(ins.relation_oid, 0x403a);
    let values: Vec<_> = ins.new.iter().collect();
    assert_eq!(
        values,
        [
            ColumnValue::Text(Bytes::from_static(b"1")),
            ColumnValue::Text(Bytes::from_static(b"ab"))
        ]
    );
    let ColumnValue::Text(ab) = ins.new.get(1).unwrap() else {
        panic!()
    };
    assert_eq!(ab.as_ptr(), frame[frame.len() - 2..].as_ptr(), "a view");

    let LogicalMessage::Update(upd) = outside("55 0000403a 4e 0002 74 00000001 31 6e").unwrap()
    else {
        panic!("not an Update")
    };
    assert_eq!(upd.old, None);
    assert_eq!(upd.new.get(1), Some(ColumnValue::Null));
    assert_eq!(upd.new.get(2), None);
}

#[test]
fn stream_abort_has_lsn_and_time_only_with_parallel_streaming() {
    // Built by hand from the protocol 4 layout (PostgreSQL 16+, streaming 'parallel').
    let v4 = hex("41 000002f0 000002f1 0000000001680000 0003041851a2a4c3");
    let parallel = DecodeContext {
        in_stream: false,
        parallel_streaming: true,
    };
    assert_eq!(
        decode(v4.clone(), parallel),
        Ok(LogicalMessage::StreamAbort(StreamAbort {
            xid: 0x2f0,
            subxid: 0x2f1,
            abort_lsn: Some(lsn("0/1680000")),
            abort_time: Some(0x0003_0418_51a2_a4c3),
        }))
    );
    assert!(matches!(
        decode(v4, OUTSIDE),
        Err(DecodeError::TrailingBytes { len: 16, .. })
    ));
}

#[test]
fn rejects_negative_and_oversize_counts() {
    assert!(matches!(
        outside("49 0000403a 4e ffff"),
        Err(DecodeError::InvalidCount { count: -1, .. })
    ));
    assert!(matches!(
        outside("49 0000403a 4e 0003 6e 6e"),
        Err(DecodeError::InvalidCount { count: 3, .. })
    ));
    assert!(matches!(
        outside("49 0000403a 4e 0001 74 7fffffff 00"),
        Err(DecodeError::InvalidCount { .. })
    ));
    assert!(matches!(
        outside("54 ffffffff 00 00000001"),
        Err(DecodeError::InvalidCount { .. })
    ));
}

#[test]
fn names_unknown_tags_and_markers_are_typed_errors() {
    let cases = [
        // Relation whose table name is not UTF-8.
        (
            "52 0000403a 00 ff00 64 0000",
            DecodeError::InvalidName { what: "Relation" },
        ),
        // Origin name without its NUL.
        (
            "4f 0000000012345678 7570",
            DecodeError::UnterminatedString { what: "Origin" },
        ),
        (
            "5a 00",
            DecodeError::UnknownTag {
                what: "pgoutput message",
                tag: b'Z',
            },
        ),
        (
            "",
            DecodeError::Truncated {
                what: "pgoutput message",
                offset: 0,
                needed: 1,
            },
        ),
        // Tuple column kind 'x'.
        (
            "49 0000403a 4e 0001 78",
            DecodeError::UnknownTag {
                what: "tuple column kind",
                tag: b'x',
            },
        ),
        // Update with an old key but no 'N' before the new tuple; Delete with 'N'.
        (
            "55 0000403a 4b 0001 6e 4b 0001 6e",
            DecodeError::UnknownTag {
                what: "Update",
                tag: b'K',
            },
        ),
        (
            "44 0000403a 4e 0001 6e",
            DecodeError::UnknownTag {
                what: "Delete",
                tag: b'N',
            },
        ),
        (
            "52 0000403a 00 7400 78 0000",
            DecodeError::UnknownTag {
                what: "Relation replica identity",
                tag: b'x',
            },
        ),
        (
            "53 00000001 02",
            DecodeError::InvalidValue {
                what: "Stream Start first_segment",
                value: 2,
            },
        ),
        // A truncated Begin names where it stopped.
        (
            "42 0000000001",
            DecodeError::Truncated {
                what: "Begin",
                offset: 6,
                needed: 3,
            },
        ),
    ];
    for (frame, expected) in cases {
        assert_eq!(outside(frame), Err(expected), "frame {frame:?}");
    }
}

#[test]
fn xids_are_read_only_inside_a_stream() {
    let in_stream = DecodeContext {
        in_stream: true,
        parallel_streaming: false,
    };
    let truncate = hex("54 000002fb 00000001 03 0000403a");
    let LogicalMessage::Truncate(t) = decode(truncate, in_stream).unwrap() else {
        panic!()
    };
    assert_eq!((t.xid, t.options), (Some(0x2fb), 3));
    assert_eq!(t.relation_oids().collect::<Vec<_>>(), [0x403a]);
    let typ = hex("59 000002fb 00004001 7075626c696300 6d6f6f6400");
    let LogicalMessage::Type(y) = decode(typ.clone(), in_stream).unwrap() else {
        panic!()
    };
    assert_eq!(
        (y.xid, y.oid, y.namespace(), y.name()),
        (Some(0x2fb), 0x4001, "public", "mood")
    );
    assert!(decode(typ, OUTSIDE).is_err());
    // Begin, Commit and the two-phase messages never carry one.
    let begin = hex("42 000000000166fac0 00030418581cac15 00000308");
    assert_eq!(decode(begin.clone(), in_stream), decode(begin, OUTSIDE));
}
