//! Decoding one XLogData payload into a [`LogicalMessage`]: the tag, then the body its protocol
//! version defines (see the table in the parent module).

use bytes::Bytes;

use super::*;
use crate::pgoutput::DecodeError;
use crate::pgoutput::reader::Reader;
use crate::pgoutput::tuple::TupleData;

/// Decode one pgoutput message (one XLogData payload). Names, values and OID lists in the result
/// are views of `data`. Bytes after the message are an error.
pub fn decode(data: Bytes, ctx: DecodeContext) -> Result<LogicalMessage, DecodeError> {
    let Some(&tag) = data.first() else {
        return Err(DecodeError::Truncated {
            what: "pgoutput message",
            offset: 0,
            needed: 1,
        });
    };
    let what = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        b'S' => "Stream Start",
        b'E' => "Stream Stop",
        b'c' => "Stream Commit",
        b'A' => "Stream Abort",
        b'b' => "Begin Prepare",
        b'P' => "Prepare",
        b'K' => "Commit Prepared",
        b'r' => "Rollback Prepared",
        b'p' => "Stream Prepare",
        _ => {
            return Err(DecodeError::UnknownTag {
                what: "pgoutput message",
                tag,
            });
        }
    };
    if matches!(tag, b'I' | b'U' | b'D') {
        return row_change(tag, what, data, ctx);
    }
    let mut r = Reader::new(&data, 1, what);
    let message = body(tag, &mut r, ctx)?;
    r.finish()?;
    Ok(message)
}

fn body(tag: u8, r: &mut Reader<'_>, ctx: DecodeContext) -> Result<LogicalMessage, DecodeError> {
    let stream_xid = |r: &mut Reader<'_>| -> Result<Option<u32>, DecodeError> {
        if ctx.in_stream {
            r.u32().map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(match tag {
        b'B' => LogicalMessage::Begin(Begin {
            final_lsn: r.lsn()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
        }),
        b'C' => LogicalMessage::Commit(Commit {
            flags: r.u8()?,
            commit_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            commit_time: r.i64()?,
        }),
        b'O' => LogicalMessage::Origin(Origin {
            commit_lsn: r.lsn()?,
            name: r.name()?,
        }),
        b'R' => LogicalMessage::Relation(relation(stream_xid(r)?, r)?),
        b'Y' => LogicalMessage::Type(TypeMessage {
            xid: stream_xid(r)?,
            oid: r.u32()?,
            namespace: r.name()?,
            name: r.name()?,
        }),
        b'T' => {
            let xid = stream_xid(r)?;
            let raw = r.u32()?;
            let options = r.u8()?;
            let count = r.count(i64::from(raw), 4)?;
            LogicalMessage::Truncate(Truncate {
                xid,
                options,
                oids: r.take_bytes(count * 4)?,
            })
        }
        b'M' => LogicalMessage::Message(LogicalDecodingMessage {
            xid: stream_xid(r)?,
            flags: r.u8()?,
            lsn: r.lsn()?,
            prefix: r.name()?,
            content: r.counted_bytes()?,
        }),
        b'S' => LogicalMessage::StreamStart(StreamStart {
            xid: r.u32()?,
            first_segment: match r.u8()? {
                0 => false,
                1 => true,
                value => {
                    return Err(DecodeError::InvalidValue {
                        what: "Stream Start first_segment",
                        value: u64::from(value),
                    });
                }
            },
        }),
        b'E' => LogicalMessage::StreamStop,
        b'c' => LogicalMessage::StreamCommit(StreamCommit {
            xid: r.u32()?,
            flags: r.u8()?,
            commit_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            commit_time: r.i64()?,
        }),
        b'A' => {
            let xid = r.u32()?;
            let subxid = r.u32()?;
            let (abort_lsn, abort_time) = if ctx.parallel_streaming {
                (Some(r.lsn()?), Some(r.i64()?))
            } else {
                (None, None)
            };
            LogicalMessage::StreamAbort(StreamAbort {
                xid,
                subxid,
                abort_lsn,
                abort_time,
            })
        }
        b'b' => LogicalMessage::BeginPrepare(BeginPrepare {
            prepare_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            prepare_time: r.i64()?,
            xid: r.u32()?,
            gid: r.name()?,
        }),
        b'P' => LogicalMessage::Prepare(prepare(r)?),
        b'p' => LogicalMessage::StreamPrepare(prepare(r)?),
        b'K' => LogicalMessage::CommitPrepared(CommitPrepared {
            flags: r.u8()?,
            commit_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
            gid: r.name()?,
        }),
        b'r' => LogicalMessage::RollbackPrepared(RollbackPrepared {
            flags: r.u8()?,
            prepare_end_lsn: r.lsn()?,
            rollback_end_lsn: r.lsn()?,
            prepare_time: r.i64()?,
            rollback_time: r.i64()?,
            xid: r.u32()?,
            gid: r.name()?,
        }),
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "pgoutput message",
                tag,
            });
        }
    })
}

fn relation(xid: Option<u32>, r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let oid = r.u32()?;
    let namespace = r.name()?;
    let name = r.name()?;
    let replica_identity = match r.u8()? {
        b'd' => ReplicaIdentity::Default,
        b'n' => ReplicaIdentity::Nothing,
        b'f' => ReplicaIdentity::Full,
        b'i' => ReplicaIdentity::Index,
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "Relation replica identity",
                tag,
            });
        }
    };
    let raw = r.i16()?;
    // flags, NUL of an empty name, type OID, type modifier.
    let count = r.count(i64::from(raw), 1 + 1 + 4 + 4)?;
    let start = r.pos();
    for _ in 0..count {
        r.u8()?;
        r.name()?;
        r.u32()?;
        r.i32()?;
    }
    Ok(Relation {
        xid,
        oid,
        replica_identity,
        namespace,
        name,
        column_count: u16::try_from(count).unwrap_or(u16::MAX),
        columns: r.since(start),
    })
}

/// Insert, Update and Delete, the hot path: the tuples are validated first, then the frame is
/// moved into the (last) tuple, so decoding costs no reference-count operation (one for an
/// Update with an old tuple).
fn row_change(
    tag: u8,
    what: &'static str,
    data: Bytes,
    ctx: DecodeContext,
) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(&data, 1, what);
    let xid = if ctx.in_stream { Some(r.u32()?) } else { None };
    let relation_oid = r.u32()?;
    let marker = r.u8()?;
    let (old, new) = match (tag, marker) {
        (b'I', b'N') | (b'U', b'N') => (None, Some(TupleData::validate(&mut r)?)),
        (b'U', b'K' | b'O') => {
            let old = TupleData::validate(&mut r)?;
            expect_marker(&mut r, b'N')?;
            (Some((marker, old)), Some(TupleData::validate(&mut r)?))
        }
        (b'D', b'K' | b'O') => (Some((marker, TupleData::validate(&mut r)?)), None),
        (_, tag) => return Err(DecodeError::UnknownTag { what, tag }),
    };
    r.finish()?;
    let old_tuple = |marker: u8, frame: Bytes, range| {
        let tuple = TupleData::new(frame, range);
        if marker == b'K' {
            OldTuple::Key(tuple)
        } else {
            OldTuple::Full(tuple)
        }
    };
    Ok(match (tag, old, new) {
        (b'I', None, Some(new)) => LogicalMessage::Insert(Insert {
            xid,
            relation_oid,
            new: TupleData::new(data, new),
        }),
        (b'U', old, Some(new)) => LogicalMessage::Update(Update {
            xid,
            relation_oid,
            old: old.map(|(marker, range)| old_tuple(marker, data.clone(), range)),
            new: TupleData::new(data, new),
        }),
        (b'D', Some((marker, old)), None) => LogicalMessage::Delete(Delete {
            xid,
            relation_oid,
            old: old_tuple(marker, data, old),
        }),
        // The match above produces only the shapes handled here.
        (tag, _, _) => return Err(DecodeError::UnknownTag { what, tag }),
    })
}

fn expect_marker(r: &mut Reader<'_>, expected: u8) -> Result<(), DecodeError> {
    match r.u8()? {
        tag if tag == expected => Ok(()),
        tag => Err(DecodeError::UnknownTag {
            what: r.what(),
            tag,
        }),
    }
}

fn prepare(r: &mut Reader<'_>) -> Result<Prepare, DecodeError> {
    Ok(Prepare {
        flags: r.u8()?,
        prepare_lsn: r.lsn()?,
        end_lsn: r.lsn()?,
        prepare_time: r.i64()?,
        xid: r.u32()?,
        gid: r.name()?,
    })
}
