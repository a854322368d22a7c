//! Streamed transactions: a large source transaction applied while the source still writes it,
//! on a target session of its own, and committed in source commit order at its Stream Commit.
//!
//! ```text
//!  Stream Start(xid) ─▶ the xid's session (new, or an idle one): BEGIN
//!    change (xid or a subxid) ─▶ first sight of a subxid: SAVEPOINT ─▶ Applier (pipelined)
//!  Stream Stop
//!  … other transactions and other xids' chunks in between …
//!  Stream Abort(xid, subxid) ─▶ subxid = xid: ROLLBACK; else ROLLBACK TO SAVEPOINT of subxid
//!  Stream Commit(xid)        ─▶ already applied (commit before the progress row)? ROLLBACK
//!                              else: progress row + COMMIT (synchronous: durable at once)
//! ```
//!
//! Each session is an ordinary [`Applier`] fed one source transaction: it writes the progress
//! row in the same target transaction as the rows, so the progress row stays the one record of
//! what the target holds, and a crash mid-stream loses only uncommitted work, which the source
//! sends again whole. The commit is synchronous (`SET LOCAL synchronous_commit = on`), so what
//! the source is told is flushed is on the target's disk, and so is every commit the main
//! session made before it (the target flushes its WAL in order).
//!
//! Lock waits: a streamed change never waits for the main session, because the pipeline commits
//! the main session's group before every chunk and before every Stream Commit (see
//! `pipeline.rs`). The main session never waits for a streamed one either: on the source, a
//! transaction that touched the same rows had to wait for the streamed one to end, so it comes
//! after its Stream Commit. Only a target that differs from the source (a unique index the
//! source lacks) can make them wait for each other; `--target-timeout` then ends the session
//! with an error that says so (`RunError::StreamLockWait`), and nothing is lost (nothing of
//! what waits was committed).
//!
//! Memory stays bounded: rows are sent as they arrive (the applier's pipeline window), and per
//! open transaction only its savepoints and the Relation messages the main session needs after
//! its commit are kept.

use std::collections::HashMap;

use crate::Lsn;
use crate::apply::{Applier, Committed, GroupLimits, SchemaChanges};
use crate::pgoutput::{Begin, Commit, LogicalMessage, StreamAbort, StreamCommit, StreamStart};
use crate::positions::already_applied;
use crate::wire::{self, ConnConfig, SqlConnectionGuard};

use super::RunError;

/// Streamed transactions applied side by side, at most. The source streams a transaction once
/// its decoded changes pass `logical_decoding_work_mem`, so many at once means many large
/// transactions running together on the source. Past this the session ends and the next one
/// runs without streaming (see `RunError::TooManyStreams`).
pub const MAX_OPEN: usize = 8;

/// Target sessions kept for the next streamed transaction once theirs has ended.
const MAX_IDLE: usize = 2;

/// One target session for streamed transactions.
struct Session {
    applier: Applier,
    /// Ends the connection with the session, even while a statement waits for its answer.
    _connection: SqlConnectionGuard,
}

/// A streamed source transaction that has not committed or aborted yet.
struct Open {
    session: Session,
    /// Subtransactions seen so far, in the order their savepoints were made.
    savepoints: Vec<u32>,
    /// Relation and Type messages sent inside this transaction: the source sends them to no one
    /// else once it commits, so the main session learns them then.
    schema: Vec<LogicalMessage>,
}

/// What a Stream Commit did.
pub struct Finished {
    /// The Relation and Type messages the main session must now know.
    pub schema: Vec<LogicalMessage>,
    /// The source end LSN now durable on the target and what was committed, unless the
    /// transaction had been applied before (then it was rolled back).
    pub committed: Option<(Lsn, Committed)>,
}

/// The open streamed transactions of one pipeline session.
pub struct Streams {
    target: ConnConfig,
    slot: String,
    limits: GroupLimits,
    schema_changes: SchemaChanges,
    /// The publication and `--skip-ddl`, when captured DDL is applied (as on the main session).
    captured_ddl: Option<(String, Option<Lsn>)>,
    open: HashMap<u32, Open>,
    idle: Vec<Session>,
    /// The transaction whose chunk is being received (between Stream Start and Stream Stop).
    current: Option<u32>,
}

impl Streams {
    pub fn new(
        target: ConnConfig,
        slot: &str,
        limits: GroupLimits,
        schema_changes: SchemaChanges,
        captured_ddl: Option<(String, Option<Lsn>)>,
    ) -> Self {
        Streams {
            target,
            slot: slot.to_owned(),
            limits,
            schema_changes,
            captured_ddl,
            open: HashMap::new(),
            idle: Vec::new(),
            current: None,
        }
    }

    /// How many streamed transactions are open.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Stream Start: a chunk of `start.xid` follows. Its first chunk opens a target session.
    pub async fn start(&mut self, start: StreamStart) -> Result<(), RunError> {
        if self.current.is_some() {
            return Err(RunError::Streamed(
                "a Stream Start arrived before the previous chunk's Stream Stop".into(),
            ));
        }
        if !self.open.contains_key(&start.xid) {
            if !start.first_segment {
                return Err(RunError::Streamed(format!(
                    "a chunk of streamed transaction {} arrived whose start lsnpipe never saw",
                    start.xid
                )));
            }
            if self.open.len() >= MAX_OPEN {
                return Err(RunError::TooManyStreams(self.open.len() + 1));
            }
            let mut session = match self.idle.pop() {
                Some(session) => session,
                None => {
                    connect(
                        &self.target,
                        &self.slot,
                        self.limits,
                        self.schema_changes,
                        self.captured_ddl.as_ref(),
                    )
                    .await?
                }
            };
            // Whether it was applied before is known only at its Stream Commit, from its
            // commit position; until then it is applied (so the skip test must pass).
            session
                .applier
                .apply(LogicalMessage::Begin(Begin {
                    final_lsn: Lsn::new(u64::MAX),
                    commit_time: 0,
                    xid: start.xid,
                }))
                .await?;
            tracing::debug!(xid = start.xid, "streamed transaction started");
            self.open.insert(
                start.xid,
                Open {
                    session,
                    savepoints: Vec::new(),
                    schema: Vec::new(),
                },
            );
        }
        self.current = Some(start.xid);
        Ok(())
    }

    /// Stream Stop: the chunk is complete.
    pub fn stop(&mut self) {
        self.current = None;
    }

    /// A message inside a chunk: a change (of the transaction or one of its subtransactions),
    /// a Relation or Type, an Origin or logical decoding message.
    pub async fn change(&mut self, message: LogicalMessage) -> Result<(), RunError> {
        let Some(xid) = self.current else {
            return Err(RunError::Streamed(
                "a streamed change arrived outside Stream Start … Stream Stop".into(),
            ));
        };
        let open = self
            .open
            .get_mut(&xid)
            .ok_or_else(|| RunError::Streamed(format!("streamed transaction {xid} is not open")))?;
        let made_by = match &message {
            LogicalMessage::Relation(_) | LogicalMessage::Type(_) => {
                open.schema.push(message.clone());
                None
            }
            LogicalMessage::Insert(m) => m.xid,
            LogicalMessage::Update(m) => m.xid,
            LogicalMessage::Delete(m) => m.xid,
            LogicalMessage::Truncate(m) => m.xid,
            LogicalMessage::Origin(_) | LogicalMessage::Message(_) => None,
            _ => {
                return Err(RunError::Streamed(
                    "a transaction-control message arrived inside a streamed chunk".into(),
                ));
            }
        };
        // A subtransaction's first change gets a savepoint before it, so that its abort can
        // undo exactly its changes (and those of its own subtransactions, which come later).
        if let Some(subxid) = made_by.filter(|&x| x != xid) {
            if !open.savepoints.contains(&subxid) {
                open.session
                    .applier
                    .execute_in_order(format!("SAVEPOINT {}", savepoint(subxid)))
                    .await?;
                open.savepoints.push(subxid);
            }
        }
        open.session.applier.apply(message).await?;
        Ok(())
    }

    /// Stream Abort: the whole transaction (`subxid == xid`) or one subtransaction aborted.
    pub async fn abort(&mut self, abort: StreamAbort) -> Result<(), RunError> {
        tracing::debug!(
            xid = abort.xid,
            subxid = abort.subxid,
            "streamed transaction aborted"
        );
        if abort.subxid == abort.xid {
            if let Some(open) = self.open.remove(&abort.xid) {
                self.finish(open.session).await?;
            }
            return Ok(());
        }
        let Some(open) = self.open.get_mut(&abort.xid) else {
            // Nothing of it was applied here.
            return Ok(());
        };
        // A subtransaction none of whose changes arrived has no savepoint, nor does one undone
        // already by its parent's rollback (the server aborts children before parents).
        if let Some(at) = open.savepoints.iter().position(|&s| s == abort.subxid) {
            open.session
                .applier
                .execute_in_order(format!("ROLLBACK TO SAVEPOINT {}", savepoint(abort.subxid)))
                .await?;
            open.savepoints.truncate(at);
        }
        Ok(())
    }

    /// Stream Commit. `applied` is the end LSN of the last commit the target held when this
    /// pipeline session started: a transaction whose commit began before it is already there
    /// (the source sends it again after a restart that came before the slot learnt of it).
    /// Call only once every transaction that committed before it is committed on the target.
    pub async fn commit(
        &mut self,
        commit: StreamCommit,
        applied: Lsn,
    ) -> Result<Finished, RunError> {
        let Some(mut open) = self.open.remove(&commit.xid) else {
            return Err(RunError::Streamed(format!(
                "Stream Commit of transaction {} that was never started",
                commit.xid
            )));
        };
        let schema = std::mem::take(&mut open.schema);
        let already_applied = already_applied(commit.commit_lsn, applied);
        tracing::debug!(
            xid = commit.xid,
            end = %commit.end_lsn,
            already_applied,
            "streamed transaction committed"
        );
        if already_applied {
            self.finish(open.session).await?;
            return Ok(Finished {
                schema,
                committed: None,
            });
        }
        let applier = &mut open.session.applier;
        // Durable before it is reported: this commit waits for the target's WAL flush, which
        // also covers every commit the main session made before it.
        applier
            .execute_in_order("SET LOCAL synchronous_commit = on".into())
            .await?;
        applier
            .apply(LogicalMessage::Commit(Commit {
                flags: commit.flags,
                commit_lsn: commit.commit_lsn,
                end_lsn: commit.end_lsn,
                commit_time: commit.commit_time,
            }))
            .await?;
        let durable = applier.commit_if(true).await?;
        // Lets the applier forget the commits it tracks that are on disk now (this one is
        // known to be).
        applier.confirm_durable().await?;
        let committed = applier.take_committed();
        if self.idle.len() < MAX_IDLE {
            self.idle.push(open.session);
        }
        Ok(Finished {
            schema,
            committed: durable.map(|lsn| (lsn, committed)),
        })
    }

    /// Roll back `session`'s open transaction and keep it for the next streamed transaction.
    async fn finish(&mut self, mut session: Session) -> Result<(), RunError> {
        session.applier.rollback().await?;
        let _ = session.applier.take_committed();
        if self.idle.len() < MAX_IDLE {
            self.idle.push(session);
        }
        Ok(())
    }
}

/// A new target session for streamed transactions. (A free function: a future holding
/// `&Streams` would not be `Send`, the appliers' queued responses being `Send` but not `Sync`.)
async fn connect(
    target: &ConnConfig,
    slot: &str,
    limits: GroupLimits,
    schema_changes: SchemaChanges,
    captured_ddl: Option<&(String, Option<Lsn>)>,
) -> Result<Session, RunError> {
    let (client, connection) = wire::connect_sql_guarded(target)
        .await
        .map_err(RunError::Target)?;
    let mut applier = Applier::with_limits(client, slot, limits).await?;
    applier.set_schema_changes(schema_changes);
    if let Some((publication, skip)) = captured_ddl {
        applier.set_captured_ddl(publication, *skip);
    }
    Ok(Session {
        applier,
        _connection: connection,
    })
}

/// The savepoint of subtransaction `subxid` (xids are unique while the transaction is open).
fn savepoint(subxid: u32) -> String {
    format!("lsnpipe_sub_{subxid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoint_names_are_plain_identifiers() {
        assert_eq!(savepoint(4_294_967_295), "lsnpipe_sub_4294967295");
    }
}
