//! pgoutput messages of protocol versions 1 to 4, decoded from one XLogData payload.
//!
//! ```text
//! tag ─┬─ B C O R Y I U D T M          protocol 1 (R Y I U D T M carry an xid inside a stream)
//!      ├─ S E c A                      protocol 2: streamed (in-progress) transactions
//!      ├─ b P K r p                    protocol 3: two-phase commit
//!      └─ A + abort LSN and time       protocol 4 with streaming 'parallel'
//! ```
//!
//! Decoding is stateless except for two facts the caller tracks and passes in a
//! [`DecodeContext`]: whether the message sits between Stream Start and Stream Stop (then the
//! messages that can carry an xid do), and whether `streaming 'parallel'` was requested (then
//! Stream Abort carries the abort LSN and time). Names and values are views of the frame.

use bytes::Bytes;

use super::DecodeError;
use super::reader::{Name, Reader};
use super::tuple::TupleData;
use crate::Lsn;

/// What the caller knows about the stream position, needed to decode one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeContext {
    /// Between a Stream Start and its Stream Stop: Relation, Type, Insert, Update, Delete,
    /// Truncate and Message carry the (sub)transaction xid.
    pub in_stream: bool,
    /// The stream was started with `streaming 'parallel'` (protocol 4): Stream Abort carries the
    /// abort LSN and timestamp.
    pub parallel_streaming: bool,
}

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeMessage),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(LogicalDecodingMessage),
    StreamStart(StreamStart),
    StreamStop,
    StreamCommit(StreamCommit),
    StreamAbort(StreamAbort),
    BeginPrepare(BeginPrepare),
    Prepare(Prepare),
    CommitPrepared(CommitPrepared),
    RollbackPrepared(RollbackPrepared),
    /// Same layout as Prepare; sent after the last Stream Stop of a streamed prepared transaction.
    StreamPrepare(Prepare),
}

/// `B`: a transaction starts (sent lazily, before its first published change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// Start of the commit record (equals the Commit's `commit_lsn`).
    pub final_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
    pub xid: u32,
}

/// `C`: the transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Unused by the server (0).
    pub flags: u8,
    /// Start of the commit record.
    pub commit_lsn: Lsn,
    /// End of the commit record: the position to acknowledge once the transaction is applied.
    pub end_lsn: Lsn,
    pub commit_time: i64,
}

/// `O`: the transaction came from a replication origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Commit LSN on the origin node (0 inside a stream).
    pub commit_lsn: Lsn,
    name: Name,
}

impl Origin {
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

/// Replica identity of a relation: which old values Update and Delete carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing (updates and deletes are not published).
    Nothing,
    /// `f`: every column (old tuples are `O`).
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

/// `R`: the shape of a relation; DML messages refer to it by `oid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The (sub)transaction xid, inside a stream only.
    pub xid: Option<u32>,
    pub oid: u32,
    pub replica_identity: ReplicaIdentity,
    namespace: Name,
    name: Name,
    column_count: u16,
    /// The column entries, validated.
    columns: Bytes,
}

impl Relation {
    /// The schema name as sent. The server sends an empty string for `pg_catalog`; this keeps it
    /// raw, so callers decide how to spell it.
    pub fn namespace(&self) -> &str {
        self.namespace.as_str()
    }

    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    pub fn column_count(&self) -> usize {
        usize::from(self.column_count)
    }

    /// The published columns, in the order TupleData uses.
    pub fn columns(&self) -> RelationColumns<'_> {
        RelationColumns {
            columns: &self.columns,
            pos: 0,
            left: self.column_count,
        }
    }
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column<'a> {
    /// Bit 0: part of the replica identity key.
    pub flags: u8,
    pub name: &'a str,
    pub type_oid: u32,
    /// `atttypmod`; -1 when the type has none.
    pub type_modifier: i32,
}

impl Column<'_> {
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Iterator over a [`Relation`]'s columns. Infallible: they were checked when decoded.
#[derive(Debug, Clone)]
pub struct RelationColumns<'a> {
    columns: &'a Bytes,
    pos: usize,
    left: u16,
}

impl<'a> Iterator for RelationColumns<'a> {
    type Item = Column<'a>;

    fn next(&mut self) -> Option<Column<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let rest: &'a [u8] = self.columns.get(self.pos..)?;
        let (&flags, rest) = rest.split_first()?;
        let nul = rest.iter().position(|&b| b == 0)?;
        let name = std::str::from_utf8(&rest[..nul]).ok()?;
        let fixed = rest.get(nul + 1..nul + 9)?;
        let mut type_oid = [0u8; 4];
        type_oid.copy_from_slice(&fixed[..4]);
        let mut type_modifier = [0u8; 4];
        type_modifier.copy_from_slice(&fixed[4..]);
        self.pos += 1 + nul + 9;
        Some(Column {
            flags,
            name,
            type_oid: u32::from_be_bytes(type_oid),
            type_modifier: i32::from_be_bytes(type_modifier),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

impl ExactSizeIterator for RelationColumns<'_> {}

/// `Y`: a non-built-in type used by a following Relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMessage {
    pub xid: Option<u32>,
    /// The column's declared type OID (a domain's own OID).
    pub oid: u32,
    namespace: Name,
    name: Name,
}

impl TypeMessage {
    /// Empty for `pg_catalog` (kept raw, as sent). For a domain: the base type's schema.
    pub fn namespace(&self) -> &str {
        self.namespace.as_str()
    }

    /// For a domain: the base type's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

/// `I`: a new row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub xid: Option<u32>,
    pub relation_oid: u32,
    pub new: TupleData,
}

/// The old row of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: the replica identity key columns; every other column is `Null` (not "set to NULL").
    Key(TupleData),
    /// `O`: the whole old row (replica identity FULL).
    Full(TupleData),
}

impl OldTuple {
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// `U`: a changed row. `old` is absent when the key did not change (identity DEFAULT / INDEX).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub xid: Option<u32>,
    pub relation_oid: u32,
    pub old: Option<OldTuple>,
    /// May hold `UnchangedToast` for untouched out-of-line values.
    pub new: TupleData,
}

/// `D`: a removed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub xid: Option<u32>,
    pub relation_oid: u32,
    pub old: OldTuple,
}

/// `T`: one TRUNCATE statement, over one or more relations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    pub xid: Option<u32>,
    /// Bit 0: CASCADE, bit 1: RESTART IDENTITY.
    pub options: u8,
    /// `4 * relation_count` bytes of OIDs.
    oids: Bytes,
}

impl Truncate {
    pub const CASCADE: u8 = 1;
    pub const RESTART_IDENTITY: u8 = 2;

    pub fn cascade(&self) -> bool {
        self.options & Self::CASCADE != 0
    }

    pub fn restart_identity(&self) -> bool {
        self.options & Self::RESTART_IDENTITY != 0
    }

    /// The number of relations truncated.
    pub fn relation_count(&self) -> usize {
        self.oids.len() / 4
    }

    /// The truncated relations (cascaded ones are listed too).
    pub fn relation_oids(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        self.oids.chunks_exact(4).map(|c| {
            let mut oid = [0u8; 4];
            oid.copy_from_slice(c);
            u32::from_be_bytes(oid)
        })
    }
}

/// `M`: a message written with `pg_logical_emit_message` (option `messages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalDecodingMessage {
    pub xid: Option<u32>,
    /// Bit 0: transactional (inside Begin/Commit); otherwise sent on its own between transactions.
    pub flags: u8,
    pub lsn: Lsn,
    prefix: Name,
    /// Raw bytes, not encoding-converted.
    pub content: Bytes,
}

impl LogicalDecodingMessage {
    pub fn transactional(&self) -> bool {
        self.flags & 1 != 0
    }

    pub fn prefix(&self) -> &str {
        self.prefix.as_str()
    }
}

/// `S`: a chunk of an in-progress transaction follows, until Stream Stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    /// The top-level transaction.
    pub xid: u32,
    /// The first chunk of this transaction (a Relation cache for it starts empty).
    pub first_segment: bool,
}

/// `c`: a streamed transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    pub xid: u32,
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: i64,
}

/// `A`: a streamed transaction, or one of its subtransactions, aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    /// The top-level transaction.
    pub xid: u32,
    /// The aborted transaction: equal to `xid` when the whole transaction aborts, else a
    /// subtransaction whose changes alone are discarded.
    pub subxid: u32,
    /// Only with `streaming 'parallel'` (protocol 4).
    pub abort_lsn: Option<Lsn>,
    /// Only with `streaming 'parallel'` (protocol 4).
    pub abort_time: Option<i64>,
}

/// `b`: a transaction to be prepared starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    pub prepare_lsn: Lsn,
    pub end_lsn: Lsn,
    pub prepare_time: i64,
    pub xid: u32,
    gid: Name,
}

impl BeginPrepare {
    pub fn gid(&self) -> &str {
        self.gid.as_str()
    }
}

/// `P` (and `p`, Stream Prepare): PREPARE TRANSACTION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    pub flags: u8,
    pub prepare_lsn: Lsn,
    pub end_lsn: Lsn,
    pub prepare_time: i64,
    pub xid: u32,
    gid: Name,
}

impl Prepare {
    pub fn gid(&self) -> &str {
        self.gid.as_str()
    }
}

/// `K`: COMMIT PREPARED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: i64,
    pub xid: u32,
    gid: Name,
}

impl CommitPrepared {
    pub fn gid(&self) -> &str {
        self.gid.as_str()
    }
}

/// `r`: ROLLBACK PREPARED. Carries the prepare's end LSN and time so a receiver can tell whether
/// it ever saw that prepare (GIDs can be reused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    pub flags: u8,
    pub prepare_end_lsn: Lsn,
    pub rollback_end_lsn: Lsn,
    pub prepare_time: i64,
    pub rollback_time: i64,
    pub xid: u32,
    gid: Name,
}

impl RollbackPrepared {
    pub fn gid(&self) -> &str {
        self.gid.as_str()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::ColumnValue;

    fn hex(s: &str) -> Bytes {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
            .into()
    }

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    const OUTSIDE: DecodeContext = DecodeContext {
        in_stream: false,
        parallel_streaming: false,
    };

    #[test]
    fn decodes_the_spec_appendix_begin_and_commit() {
        let begin = decode(
            hex("42 000000000166fac0 00030418581cac15 00000308"),
            OUTSIDE,
        );
        assert_eq!(
            begin,
            Ok(LogicalMessage::Begin(Begin {
                final_lsn: lsn("0/166FAC0"),
                commit_time: 0x0003_0418_581c_ac15,
                xid: 0x308,
            }))
        );
        let commit = decode(
            hex("43 00 0000000001677bd8 0000000001677c08 000304185aa9074e"),
            OUTSIDE,
        );
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
        let LogicalMessage::Relation(rel) = decode(
            hex("52 0000403a 7075626c696300 687800 64 0002 \
                 01 696400 00000017 ffffffff \
                 00 7600 00000019 ffffffff"),
            OUTSIDE,
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

        let LogicalMessage::Update(upd) =
            decode(hex("55 0000403a 4e 0002 74 00000001 31 6e"), OUTSIDE).unwrap()
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
            decode(hex("49 0000403a 4e ffff"), OUTSIDE),
            Err(DecodeError::InvalidCount { count: -1, .. })
        ));
        assert!(matches!(
            decode(hex("49 0000403a 4e 0003 6e 6e"), OUTSIDE),
            Err(DecodeError::InvalidCount { count: 3, .. })
        ));
        assert!(matches!(
            decode(hex("49 0000403a 4e 0001 74 7fffffff 00"), OUTSIDE),
            Err(DecodeError::InvalidCount { .. })
        ));
        assert!(matches!(
            decode(hex("54 ffffffff 00 00000001"), OUTSIDE),
            Err(DecodeError::InvalidCount { .. })
        ));
    }

    #[test]
    fn names_unknown_tags_and_markers_are_typed_errors() {
        // Relation whose table name is not UTF-8.
        assert_eq!(
            decode(hex("52 0000403a 00 ff00 64 0000"), OUTSIDE),
            Err(DecodeError::InvalidName { what: "Relation" })
        );
        // Origin name without its NUL.
        assert_eq!(
            decode(hex("4f 0000000012345678 7570"), OUTSIDE),
            Err(DecodeError::UnterminatedString { what: "Origin" })
        );
        assert_eq!(
            decode(hex("5a 00"), OUTSIDE),
            Err(DecodeError::UnknownTag {
                what: "pgoutput message",
                tag: b'Z'
            })
        );
        assert_eq!(
            decode(Bytes::new(), OUTSIDE),
            Err(DecodeError::Truncated {
                what: "pgoutput message",
                offset: 0,
                needed: 1
            })
        );
        // Tuple column kind 'x'.
        assert_eq!(
            decode(hex("49 0000403a 4e 0001 78"), OUTSIDE),
            Err(DecodeError::UnknownTag {
                what: "tuple column kind",
                tag: b'x'
            })
        );
        // Update with an old key but no 'N' before the new tuple; Delete with 'N'.
        assert_eq!(
            decode(hex("55 0000403a 4b 0001 6e 4b 0001 6e"), OUTSIDE),
            Err(DecodeError::UnknownTag {
                what: "Update",
                tag: b'K'
            })
        );
        assert_eq!(
            decode(hex("44 0000403a 4e 0001 6e"), OUTSIDE),
            Err(DecodeError::UnknownTag {
                what: "Delete",
                tag: b'N'
            })
        );
        assert_eq!(
            decode(hex("52 0000403a 00 7400 78 0000"), OUTSIDE),
            Err(DecodeError::UnknownTag {
                what: "Relation replica identity",
                tag: b'x'
            })
        );
        assert_eq!(
            decode(hex("53 00000001 02"), OUTSIDE),
            Err(DecodeError::InvalidValue {
                what: "Stream Start first_segment",
                value: 2
            })
        );
        // A truncated Begin names where it stopped.
        assert_eq!(
            decode(hex("42 0000000001"), OUTSIDE),
            Err(DecodeError::Truncated {
                what: "Begin",
                offset: 6,
                needed: 3
            })
        );
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
}
