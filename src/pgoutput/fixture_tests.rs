//! Every frame captured from PostgreSQL 15 in `proto/pg15/` is decoded here and its fields
//! asserted. LSNs, xids, OIDs and times change when the fixtures are regenerated, so the tests
//! check what is stable (names, values, flags, counts) and how those numbers relate (Begin's
//! final LSN is its Commit's commit LSN, DML refers to the Relation just sent, ...).

use bytes::Bytes;

use super::*;

/// Parse a fixture: `#` comment lines, then one message per line in hex.
pub(crate) fn frames(text: &str) -> Vec<Bytes> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let l = l.trim();
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
                .into()
        })
        .collect()
}

/// Every fixture, by name.
pub(crate) const FIXTURES: &[(&str, &str)] = &[
    ("v1_dml", include_str!("../../proto/pg15/v1_dml.hex")),
    ("v1_binary", include_str!("../../proto/pg15/v1_binary.hex")),
    (
        "v1_truncate",
        include_str!("../../proto/pg15/v1_truncate.hex"),
    ),
    (
        "v1_messages",
        include_str!("../../proto/pg15/v1_messages.hex"),
    ),
    ("v1_origin", include_str!("../../proto/pg15/v1_origin.hex")),
    ("v1_types", include_str!("../../proto/pg15/v1_types.hex")),
    ("v1_toast", include_str!("../../proto/pg15/v1_toast.hex")),
    (
        "v1_identity_full",
        include_str!("../../proto/pg15/v1_identity_full.hex"),
    ),
    (
        "v1_identity_index",
        include_str!("../../proto/pg15/v1_identity_index.hex"),
    ),
    (
        "v2_stream_commit",
        include_str!("../../proto/pg15/v2_stream_commit.hex"),
    ),
    (
        "v2_stream_abort",
        include_str!("../../proto/pg15/v2_stream_abort.hex"),
    ),
    (
        "v3_two_phase",
        include_str!("../../proto/pg15/v3_two_phase.hex"),
    ),
    (
        "v3_stream_prepare",
        include_str!("../../proto/pg15/v3_stream_prepare.hex"),
    ),
];

/// Decode a captured sequence the way a client does: inside Stream Start … Stream Stop the
/// context says `in_stream`.
pub(crate) fn decode_stream(frames: &[Bytes]) -> Vec<LogicalMessage> {
    let mut ctx = DecodeContext::default();
    frames
        .iter()
        .map(|f| {
            let m = decode(f.clone(), ctx).unwrap_or_else(|e| panic!("{e} in {f:02x?}"));
            match m {
                LogicalMessage::StreamStart(_) => ctx.in_stream = true,
                LogicalMessage::StreamStop => ctx.in_stream = false,
                _ => {}
            }
            m
        })
        .collect()
}

fn fixture(name: &str) -> Vec<LogicalMessage> {
    let (_, text) = FIXTURES.iter().find(|(n, _)| *n == name).unwrap();
    decode_stream(&frames(text))
}

/// A tuple as short strings: `n`, `u`, `t:value`, `b:hex`.
fn row(t: &TupleData) -> Vec<String> {
    t.iter()
        .map(|v| match v {
            ColumnValue::Null => "n".to_owned(),
            ColumnValue::UnchangedToast => "u".to_owned(),
            ColumnValue::Text(b) => format!("t:{}", std::str::from_utf8(&b).unwrap()),
            ColumnValue::Binary(b) => format!("b:{}", hex(&b)),
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn columns(r: &Relation) -> Vec<(String, bool, u32, i32)> {
    r.columns()
        .map(|c| (c.name.to_owned(), c.is_key(), c.type_oid, c.type_modifier))
        .collect()
}

macro_rules! unpack {
    ($m:expr, $variant:ident) => {
        match $m {
            LogicalMessage::$variant(x) => x,
            other => panic!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}

/// Begin … Commit pairs agree, and LSNs are plausible.
fn check_transaction(begin: &LogicalMessage, commit: &LogicalMessage) -> u32 {
    let b = unpack!(begin, Begin);
    let c = unpack!(commit, Commit);
    assert_eq!(b.final_lsn, c.commit_lsn);
    assert!(c.end_lsn > c.commit_lsn);
    assert_eq!(b.commit_time, c.commit_time);
    assert_eq!(c.flags, 0);
    assert!(b.commit_time > 26 * 365 * 86_400 * 1_000_000, "after 2026");
    b.xid
}

const INT4: u32 = 23;
const TEXT: u32 = 25;
const NUMERIC: u32 = 1700;
const VARCHAR: u32 = 1043;

#[test]
fn v1_dml_insert_update_key_change_delete() {
    let m = fixture("v1_dml");
    assert_eq!(m.len(), 14);
    let x1 = check_transaction(&m[0], &m[4]);
    let rel = unpack!(&m[1], Relation);
    assert_eq!(
        (rel.namespace(), rel.name(), rel.xid),
        ("public", "dml", None)
    );
    assert_eq!(rel.replica_identity, ReplicaIdentity::Default);
    assert_eq!(
        columns(rel),
        [
            ("id".to_owned(), true, INT4, -1),
            ("name".to_owned(), false, TEXT, -1),
            // numeric(10,2): ((10 << 16) | 2) + 4
            ("score".to_owned(), false, NUMERIC, (10 << 16 | 2) + 4),
            // varchar(20): 20 + 4
            ("note".to_owned(), false, VARCHAR, 24),
        ]
    );
    let i1 = unpack!(&m[2], Insert);
    let i2 = unpack!(&m[3], Insert);
    assert_eq!(i1.relation_oid, rel.oid);
    assert_eq!(i1.xid, None);
    assert_eq!(row(&i1.new), ["t:1", "t:alice", "t:12.50", "t:first"]);
    assert_eq!(row(&i2.new), ["t:2", "t:bob", "n", "n"]);

    let x2 = check_transaction(&m[5], &m[7]);
    let u = unpack!(&m[6], Update);
    assert_eq!(u.relation_oid, rel.oid);
    assert_eq!(u.old, None, "key unchanged: no old tuple");
    assert_eq!(row(&u.new), ["t:1", "t:alice", "t:99.99", "t:updated"]);

    let x3 = check_transaction(&m[8], &m[10]);
    let u = unpack!(&m[9], Update);
    let Some(OldTuple::Key(old)) = &u.old else {
        panic!("key changed: K expected, got {:?}", u.old)
    };
    assert_eq!(row(old), ["t:2", "n", "n", "n"], "non-key columns are n");
    assert_eq!(row(&u.new), ["t:3", "t:bob", "n", "n"]);

    let x4 = check_transaction(&m[11], &m[13]);
    let d = unpack!(&m[12], Delete);
    assert_eq!(d.relation_oid, rel.oid);
    assert_eq!(d.old, OldTuple::Key(d.old.tuple().clone()));
    assert_eq!(row(d.old.tuple()), ["t:1", "n", "n", "n"]);
    assert!(x1 < x2 && x2 < x3 && x3 < x4);
}

#[test]
fn v1_binary_columns() {
    let m = fixture("v1_binary");
    assert_eq!(m.len(), 4);
    check_transaction(&m[0], &m[3]);
    let rel = unpack!(&m[1], Relation);
    let i = unpack!(&m[2], Insert);
    assert_eq!(i.relation_oid, rel.oid);
    assert_eq!(
        row(&i.new),
        [
            "b:0000000a".to_owned(),
            format!("b:{}", hex(b"binary")),
            // numeric send format: ndigits 2, weight 0, sign +, dscale 2; digits 1, 2500
            "b:0002000000000002000109c4".to_owned(),
            "n".to_owned(),
        ]
    );
}

#[test]
fn v1_truncate_many_relations_and_flags() {
    let m = fixture("v1_truncate");
    assert_eq!(m.len(), 9);
    check_transaction(&m[0], &m[4]);
    let parent = unpack!(&m[1], Relation);
    let child = unpack!(&m[2], Relation);
    let mut names = [parent.name(), child.name()];
    names.sort_unstable();
    assert_eq!(names, ["child", "parent"]);
    let t = unpack!(&m[3], Truncate);
    assert_eq!(t.options, 3);
    assert!(t.cascade() && t.restart_identity());
    assert_eq!(t.relation_count(), 2);
    let mut oids: Vec<u32> = t.relation_oids().collect();
    oids.sort_unstable();
    let mut expected = vec![parent.oid, child.oid];
    expected.sort_unstable();
    assert_eq!(oids, expected);

    check_transaction(&m[5], &m[8]);
    let dml = unpack!(&m[6], Relation);
    assert_eq!(dml.name(), "dml");
    let t = unpack!(&m[7], Truncate);
    assert_eq!(t.options, 0);
    assert!(!t.cascade() && !t.restart_identity());
    assert_eq!(t.relation_oids().collect::<Vec<_>>(), [dml.oid]);
}

#[test]
fn v1_messages_transactional_and_not() {
    let m = fixture("v1_messages");
    assert_eq!(m.len(), 6);
    let loose = unpack!(&m[0], Message);
    assert!(!loose.transactional());
    assert_eq!(loose.flags, 0);
    assert_eq!(loose.prefix(), "lsnpipe");
    assert_eq!(&loose.content[..], b"non-transactional");
    assert_eq!(loose.xid, None);
    check_transaction(&m[1], &m[5]);
    let inside = unpack!(&m[2], Message);
    assert!(inside.transactional());
    assert_eq!(inside.prefix(), "lsnpipe");
    assert_eq!(&inside.content[..], [0x00, 0xff], "raw bytes");
    assert!(inside.lsn > loose.lsn);
    let rel = unpack!(&m[3], Relation);
    assert_eq!(unpack!(&m[4], Insert).relation_oid, rel.oid);
}

#[test]
fn v1_origin_after_begin() {
    let m = fixture("v1_origin");
    assert_eq!(m.len(), 5);
    check_transaction(&m[0], &m[4]);
    let o = unpack!(&m[1], Origin);
    assert_eq!(o.name(), "upstream");
    assert_eq!(o.commit_lsn, "0/12345678".parse().unwrap());
    let i = unpack!(&m[3], Insert);
    assert_eq!(row(&i.new), ["t:30", "t:from upstream", "t:3.00", "t:o"]);
}

#[test]
fn v1_enum_and_domain_types() {
    let m = fixture("v1_types");
    assert_eq!(m.len(), 6);
    check_transaction(&m[0], &m[5]);
    let mood = unpack!(&m[1], Type);
    assert_eq!(
        (mood.namespace(), mood.name(), mood.xid),
        ("public", "mood", None)
    );
    let posint = unpack!(&m[2], Type);
    // A domain is announced with its own OID but its base type's name; "" is pg_catalog.
    assert_eq!((posint.namespace(), posint.name()), ("", "int4"));
    let rel = unpack!(&m[3], Relation);
    assert_eq!(
        columns(rel),
        [
            ("id".to_owned(), true, INT4, -1),
            ("m".to_owned(), false, mood.oid, -1),
            ("p".to_owned(), false, posint.oid, -1),
        ]
    );
    assert_eq!(row(&unpack!(&m[4], Insert).new), ["t:1", "t:happy", "t:42"]);
}

#[test]
fn v1_unchanged_toast_value() {
    let m = fixture("v1_toast");
    assert_eq!(m.len(), 7);
    check_transaction(&m[0], &m[3]);
    let i = unpack!(&m[2], Insert);
    let ColumnValue::Text(big) = i.new.get(2).unwrap() else {
        panic!("text expected")
    };
    assert_eq!(big.len(), 70 * 32);
    assert!(big.iter().all(u8::is_ascii_hexdigit));
    check_transaction(&m[4], &m[6]);
    let u = unpack!(&m[5], Update);
    assert_eq!(u.old, None);
    assert_eq!(row(&u.new), ["t:1", "t:1", "u"]);
    assert_eq!(u.new.get(2), Some(ColumnValue::UnchangedToast));
}

#[test]
fn v1_replica_identity_full_old_rows() {
    let m = fixture("v1_identity_full");
    assert_eq!(m.len(), 10);
    let rel = unpack!(&m[1], Relation);
    assert_eq!(rel.replica_identity, ReplicaIdentity::Full);
    assert!(rel.columns().all(|c| c.is_key()), "FULL flags every column");
    assert_eq!(row(&unpack!(&m[2], Insert).new), ["t:1", "t:before"]);
    check_transaction(&m[4], &m[6]);
    let u = unpack!(&m[5], Update);
    let Some(OldTuple::Full(old)) = &u.old else {
        panic!("O expected, got {:?}", u.old)
    };
    assert_eq!(row(old), ["t:1", "t:before"]);
    assert_eq!(row(&u.new), ["t:1", "t:after"]);
    check_transaction(&m[7], &m[9]);
    let d = unpack!(&m[8], Delete);
    let OldTuple::Full(old) = &d.old else {
        panic!("O expected")
    };
    assert_eq!(row(old), ["t:1", "t:after"]);
}

#[test]
fn v1_replica_identity_index_old_keys() {
    let m = fixture("v1_identity_index");
    assert_eq!(m.len(), 13);
    let rel = unpack!(&m[1], Relation);
    assert_eq!(rel.replica_identity, ReplicaIdentity::Index);
    assert_eq!(
        columns(rel),
        [
            ("id".to_owned(), false, INT4, -1),
            ("code".to_owned(), true, TEXT, -1),
            ("v".to_owned(), false, TEXT, -1),
        ]
    );
    let u = unpack!(&m[5], Update);
    let Some(OldTuple::Key(old)) = &u.old else {
        panic!("K expected")
    };
    assert_eq!(row(old), ["n", "t:a", "n"]);
    assert_eq!(row(&u.new), ["t:1", "t:b", "t:x"]);
    let u = unpack!(&m[8], Update);
    assert_eq!(u.old, None);
    assert_eq!(row(&u.new), ["t:1", "t:b", "t:y"]);
    let d = unpack!(&m[11], Delete);
    assert_eq!(row(d.old.tuple()), ["n", "t:b", "n"]);
    assert!(matches!(d.old, OldTuple::Key(_)));
}

#[test]
fn v2_streamed_commit_with_subtransaction_abort() {
    let m = fixture("v2_stream_commit");
    let start = unpack!(&m[0], StreamStart);
    assert!(start.first_segment);
    let top = start.xid;
    let msg = unpack!(&m[1], Message);
    assert_eq!(msg.xid, Some(top));
    assert!(msg.transactional());
    assert_eq!(&msg.content[..], b"in stream");
    let rel = unpack!(&m[2], Relation);
    assert_eq!((rel.name(), rel.xid), ("stream_big", Some(top)));

    let mut inserted = Vec::new();
    let mut subxids = std::collections::BTreeSet::new();
    let mut starts = 0;
    let mut aborts = Vec::new();
    let mut commit = None;
    for msg in &m {
        match msg {
            LogicalMessage::StreamStart(s) => {
                assert_eq!(s.xid, top);
                assert_eq!(s.first_segment, starts == 0);
                starts += 1;
            }
            LogicalMessage::Insert(i) => {
                assert_eq!(i.relation_oid, rel.oid);
                let xid = i.xid.expect("xid inside a stream");
                if xid != top {
                    subxids.insert(xid);
                }
                let ColumnValue::Text(id) = i.new.get(0).unwrap() else {
                    panic!()
                };
                inserted.push(std::str::from_utf8(&id).unwrap().parse::<u32>().unwrap());
            }
            LogicalMessage::StreamAbort(a) => aborts.push(*a),
            LogicalMessage::StreamCommit(c) => commit = Some(*c),
            _ => {}
        }
    }
    assert_eq!(starts, 3);
    // Streamed in order: all 500 of the top level, the savepoint's inserts that were streamed
    // before it rolled back (the rest were discarded unsent), then the one after the rollback.
    let (&last, streamed) = inserted.split_last().unwrap();
    assert_eq!(last, 1001);
    let k = streamed.len();
    assert!(k > 500 && k < 1000, "{k} inserts before the rollback");
    assert!(
        streamed.iter().copied().eq(1..=u32::try_from(k).unwrap()),
        "ids in order"
    );
    // The savepoint's inserts carry its subtransaction xid; the insert after ROLLBACK TO runs in
    // a fresh subtransaction.
    let savepoint_xid = inserts_xid(&m, 501);
    assert_ne!(savepoint_xid, top);
    assert!(subxids.contains(&savepoint_xid));
    assert_eq!(inserts_xid(&m, 1), top);
    assert_eq!(
        aborts,
        [StreamAbort {
            xid: top,
            subxid: savepoint_xid,
            abort_lsn: None,
            abort_time: None
        }]
    );
    let commit = commit.unwrap();
    assert_eq!(commit.xid, top);
    assert_eq!(commit.flags, 0);
    assert!(commit.end_lsn > commit.commit_lsn);
    assert!(matches!(m.last(), Some(LogicalMessage::StreamCommit(_))));
}

/// The xid of the Insert whose first column is `id`.
fn inserts_xid(m: &[LogicalMessage], id: u32) -> u32 {
    let id = id.to_string();
    m.iter()
        .find_map(|m| match m {
            LogicalMessage::Insert(i)
                if i.new.get(0) == Some(ColumnValue::Text(Bytes::from(id.clone()))) =>
            {
                i.xid
            }
            _ => None,
        })
        .unwrap()
}

#[test]
fn v2_streamed_transaction_abort() {
    let m = fixture("v2_stream_abort");
    let s = unpack!(&m[0], StreamStart);
    assert!(s.first_segment);
    assert_eq!(m[1], LogicalMessage::StreamStop);
    let a = unpack!(&m[2], StreamAbort);
    assert_eq!((a.xid, a.subxid), (s.xid, s.xid), "whole transaction");
    assert_eq!((a.abort_lsn, a.abort_time), (None, None));
}

#[test]
fn v3_prepare_commit_prepared_rollback_prepared() {
    let m = fixture("v3_two_phase");
    assert_eq!(m.len(), 9);
    let b = unpack!(&m[0], BeginPrepare);
    assert_eq!(b.gid(), "lsnpipe-gid-1");
    let rel = unpack!(&m[1], Relation);
    assert_eq!(rel.name(), "twophase");
    assert_eq!(
        row(&unpack!(&m[2], Insert).new),
        ["t:1", "t:prepared then committed"]
    );
    let p = unpack!(&m[3], Prepare);
    assert_eq!((p.gid(), p.xid, p.flags), ("lsnpipe-gid-1", b.xid, 0));
    assert_eq!((p.prepare_lsn, p.end_lsn), (b.prepare_lsn, b.end_lsn));
    assert_eq!(p.prepare_time, b.prepare_time);
    let k = unpack!(&m[4], CommitPrepared);
    assert_eq!((k.gid(), k.xid, k.flags), ("lsnpipe-gid-1", b.xid, 0));
    assert!(k.commit_lsn >= p.end_lsn && k.end_lsn > k.commit_lsn);
    assert!(k.commit_time >= p.prepare_time);

    let b2 = unpack!(&m[5], BeginPrepare);
    assert_eq!(b2.gid(), "lsnpipe-gid-2");
    assert_eq!(
        row(&unpack!(&m[6], Insert).new),
        ["t:2", "t:prepared then rolled back"]
    );
    let p2 = unpack!(&m[7], Prepare);
    assert_eq!(p2.gid(), "lsnpipe-gid-2");
    let r = unpack!(&m[8], RollbackPrepared);
    assert_eq!((r.gid(), r.xid, r.flags), ("lsnpipe-gid-2", b2.xid, 0));
    assert_eq!(r.prepare_end_lsn, p2.end_lsn);
    assert_eq!(r.prepare_time, p2.prepare_time);
    assert!(r.rollback_end_lsn > r.prepare_end_lsn);
    assert!(r.rollback_time >= r.prepare_time);
}

#[test]
fn v3_stream_prepare() {
    let m = fixture("v3_stream_prepare");
    let s = unpack!(&m[0], StreamStart);
    let inserts: Vec<&Insert> = m
        .iter()
        .filter_map(|m| match m {
            LogicalMessage::Insert(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(inserts.len(), 500);
    assert!(inserts.iter().all(|i| i.xid == Some(s.xid)));
    assert_eq!(row(&inserts[499].new), ["t:599", "t:streamed 599"]);
    let n = m.len();
    assert_eq!(m[n - 3], LogicalMessage::StreamStop);
    let p = unpack!(&m[n - 2], StreamPrepare);
    assert_eq!((p.gid(), p.xid, p.flags), ("lsnpipe-gid-3", s.xid, 0));
    assert!(p.end_lsn > p.prepare_lsn);
    let k = unpack!(&m[n - 1], CommitPrepared);
    assert_eq!((k.gid(), k.xid), ("lsnpipe-gid-3", s.xid));
}

#[test]
fn every_fixture_rejects_an_appended_byte_and_a_wrong_stream_context() {
    for (name, text) in FIXTURES {
        let frames = frames(text);
        assert!(!frames.is_empty(), "{name} is empty");
        let mut ctx = DecodeContext::default();
        for f in &frames {
            let mut longer = f.to_vec();
            longer.push(0);
            assert!(
                decode(longer.into(), ctx).is_err(),
                "{name}: an extra byte was accepted"
            );
            let m = decode(f.clone(), ctx).unwrap();
            match m {
                LogicalMessage::StreamStart(_) => ctx.in_stream = true,
                LogicalMessage::StreamStop => ctx.in_stream = false,
                LogicalMessage::Insert(_) if ctx.in_stream => {
                    // Without the stream context the xid is read as the OID and the rest
                    // no longer lines up.
                    let wrong = DecodeContext {
                        in_stream: false,
                        ..ctx
                    };
                    assert!(decode(f.clone(), wrong).is_err(), "{name}");
                }
                _ => {}
            }
        }
    }
}
