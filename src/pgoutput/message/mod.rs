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

use super::reader::Name;
use super::tuple::TupleData;
use crate::Lsn;

mod decode;
#[cfg(test)]
mod tests;

pub use decode::decode;

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

    /// The same truncation over only the relations `keep` accepts (same options, same xid):
    /// for a caller that must leave some of the relations alone.
    pub fn retain_relations(&self, mut keep: impl FnMut(u32) -> bool) -> Truncate {
        let oids: Vec<u8> = self
            .oids
            .chunks_exact(4)
            .zip(self.relation_oids())
            .filter(|(_, oid)| keep(*oid))
            .flat_map(|(bytes, _)| bytes.iter().copied())
            .collect();
        Truncate {
            xid: self.xid,
            options: self.options,
            oids: Bytes::from(oids),
        }
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
