//! The run loop: the source stream, decoded and applied to the target, with reconnects.
//!
//! ```text
//!            ┌──────────── session (one pair of connections) ─────────────┐
//!  run ──▶   │ stream.recv ─▶ pgoutput::decode ─▶ Applier ─▶ commit_if ──┐ │
//!   ▲        │      ▲ (bounded channel: a slow target slows the socket)   │ │
//!   │        │      └─────────── Positions ◀── mark_flushed ◀───────────┘ │
//!   │        └────────────────────────────────────────────────────────────┘
//!   └── error_policy says Retry: pause (1 s, 2 s, then 3 s while it keeps failing) and start a new one
//!
//!  beside it: Telemetry::refresh_every (gauges and readiness stay true while a session is stuck)
//! ```
//!
//! A large transaction the source streams while it runs (Stream Start … Stream Stop chunks,
//! then Stream Commit or Stream Abort) goes to a target session of its own (`streaming.rs`);
//! the main applier's group is committed before each chunk and each Stream Commit, so commits
//! stay in source order and the two sessions never wait for each other.
//!
//! Exactly-once rests on the applier: the applied position is committed on the target with the
//! data, each session starts from it, and transactions at or before it are skipped.
//!
//! Every wait is bounded, so a silent link (a dead NAT entry, a hung server: the socket stays
//! open and nothing arrives) ends the session instead of holding it for good: the source side
//! by `--replication-timeout` (no byte from the walsender for that long, although it is asked
//! to answer well before), the target side by `--target-timeout` around every round trip the
//! session makes to the target (connect, prepare, apply, commit, flush checks). Both also bound
//! connecting where the connection string sets no `connect_timeout`.

mod backoff;
mod error;
mod publication;
mod streaming;
mod target_calls;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::Lsn;
use crate::apply::{Applier, GroupLimits, guard};
use crate::config::RunSettings;
use crate::error_policy::{self, Action};
use crate::metrics::Side;
use crate::pgoutput::{self, DecodeContext, LogicalMessage};
use crate::positions::Positions;
use crate::snapshot::{self, Hold, Prepared, SnapshotError, SnapshotOptions};
use crate::source::{self, SourceError, SourceOptions};
use crate::telemetry::Telemetry;
use crate::wire::{self, ConnConfig};

use backoff::Backoff;
pub use error::RunError;
use publication::{Look, PUBLICATION_CHECK, ended_by_dropped_publication, look_at_publication};
use target_calls::TargetCalls;

enum SessionEnd {
    Shutdown,
    SourceEnded,
    /// The stream stalled inside a source transaction that joined a group of finished ones: the
    /// group was abandoned (rolled back), and the next session commits at this end LSN, before
    /// the stalled transaction, so the finished ones do not wait for it.
    Split(Lsn),
    /// The publication was found dropped by this source position, which the stream passed:
    /// what was published before is committed, and nothing more will come.
    PublicationDropped(Lsn),
}

/// Replicate until `shutdown` turns true (or an error needs an operator).
pub async fn run(
    settings: &RunSettings,
    telemetry: &Telemetry,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let source_config = ConnConfig::parse(&settings.source)
        .map_err(RunError::SourceConfig)?
        .with_default_connect_timeout(settings.replication_timeout);
    let target_config = ConnConfig::parse(&settings.target)
        .map_err(RunError::TargetConfig)?
        .with_default_connect_timeout(settings.target_timeout);
    telemetry.health.set_max_stall(settings.ready_max_lag);
    // The gauges are refreshed beside the sessions, never by them: a session stuck on a silent
    // link must not freeze lsnpipe_lag_bytes or /readyz.
    tokio::select! {
        biased;
        result = sessions(settings, &source_config, &target_config, telemetry, &mut shutdown) => result,
        never = telemetry.refresh_every(REFRESH_PERIOD) => match never {},
    }
}

/// How often the gauges and readiness are refreshed.
const REFRESH_PERIOD: Duration = Duration::from_millis(200);

/// A session that lasted this long counts as progress even if it applied nothing (an idle
/// source): the next failure is then retried after the first, short pause again.
const STABLE_SESSION: Duration = Duration::from_secs(30);

/// What one session leaves for the next.
struct NextSession {
    /// Commit the group at the first source commit at or past this end LSN (see
    /// [`SessionEnd::Split`]).
    commit_at: Option<Lsn>,
    /// Ask the source to stream large transactions in progress. A session that could not apply
    /// the streams it got runs the next one without.
    streaming: bool,
    /// The walsender of the last stream opened (see [`source::SourceOptions`]).
    walsender: Option<source::Walsender>,
}

async fn sessions(
    settings: &RunSettings,
    source_config: &ConnConfig,
    target_config: &ConnConfig,
    telemetry: &Telemetry,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut backoff = Backoff::new();
    let mut next = NextSession {
        commit_at: None,
        streaming: true,
        walsender: None,
    };
    loop {
        let started = Instant::now();
        let mut progress = false;
        let result = session(
            settings,
            source_config,
            target_config,
            telemetry,
            shutdown,
            &mut progress,
            &mut next,
        )
        .await;
        next.streaming = !matches!(
            result,
            Err(RunError::TooManyStreams(_) | RunError::StreamDuringCopy)
        );
        telemetry.set_streaming(false);
        if progress || started.elapsed() > STABLE_SESSION {
            backoff = Backoff::new();
        }
        let pause = backoff.next();
        match result {
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::PublicationDropped(at)) => {
                let err = RunError::Source(SourceError::PublicationDropped {
                    publication: settings.publication.clone(),
                    at,
                });
                telemetry.error(error_policy::run(&err).kind);
                return Err(err);
            }
            Ok(SessionEnd::Split(end_lsn)) => {
                tracing::info!(
                    commit_at = %end_lsn,
                    "the source stream stalled inside a transaction: the finished ones before \
                     it are applied again and committed on their own"
                );
                next.commit_at = Some(end_lsn);
                continue;
            }
            Err(RunError::StoppedWhileWaiting { doing }) => {
                tracing::warn!(
                    "stopping without waiting any longer for the target ({doing}); what it had \
                     not committed is sent again by the source on the next start"
                );
                return Ok(());
            }
            Ok(SessionEnd::SourceEnded) => {
                tracing::warn!(
                    "the source ended the replication stream; reconnecting in {pause:?}"
                );
                telemetry.reconnect(Side::Source);
                telemetry.set_last_failure("the source ended the replication stream".to_owned());
            }
            Err(err) => {
                let verdict = error_policy::run(&err);
                if verdict.action != Action::Retry {
                    telemetry.error(verdict.kind);
                    return Err(err);
                }
                // A session that failed while stopping (a silent source link, say) needs no
                // retry.
                if *shutdown.borrow() {
                    tracing::warn!(
                        "stopped; the last session ended with: {}",
                        crate::report::chain(&err)
                    );
                    return Ok(());
                }
                telemetry.error(verdict.kind);
                let side = match err {
                    RunError::Target(_)
                    | RunError::Apply(_)
                    | RunError::TargetTimeout { .. }
                    | RunError::StreamLockWait { .. }
                    | RunError::Guard(_)
                    | RunError::Snapshot(SnapshotError::TargetSql(_)) => Side::Target,
                    _ => Side::Source,
                };
                if side == Side::Target {
                    telemetry.set_target_reachable(false);
                }
                telemetry.reconnect(side);
                let reason = crate::report::chain(&err);
                telemetry.set_last_failure(format!("{} side: {reason}", side.as_str()));
                tracing::warn!(
                    side = side.as_str(),
                    "replication interrupted, will reconnect in {pause:?}: {reason}"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(shutdown) => return Ok(()),
        }
    }
}

async fn session(
    settings: &RunSettings,
    source_config: &ConnConfig,
    target_config: &ConnConfig,
    telemetry: &Telemetry,
    shutdown: &mut watch::Receiver<bool>,
    progress: &mut bool,
    next: &mut NextSession,
) -> Result<SessionEnd, RunError> {
    let mut target_calls = TargetCalls {
        limit: settings.target_timeout,
        shutdown: shutdown.clone(),
        open_streams: 0,
    };
    // One lsnpipe per slot on this target, for the copy as for the stream.
    let mut guard = target_calls
        .call(
            "taking the lock that keeps one lsnpipe per slot",
            guard::acquire(target_config, &settings.slot),
        )
        .await?;
    let target_config = &guard.tagged(target_config);
    let copy = SnapshotOptions {
        publication: settings.publication.clone(),
        slot: settings.slot.clone(),
        snapshot: settings.snapshot,
        create_slot: settings.create_slot,
        failover_slot: settings.failover_slot,
        copy_jobs: settings.copy_jobs,
        create_tables: settings.create_tables,
    };
    let prepared = snapshot::prepare(
        &copy,
        source_config,
        target_config,
        &telemetry.metrics,
        shutdown,
    )
    .await?;
    let mut sync_filter = match prepared {
        Prepared::Ready(filter) => filter,
        Prepared::Stopped => return Ok(SessionEnd::Shutdown),
    };
    let mut added = snapshot::added_tables(
        &copy,
        source_config,
        target_config,
        &telemetry.metrics,
        shutdown,
    )
    .await?;
    // The guard ends the target connection with the session, even while a statement that
    // timed out is still waiting for its answer.
    let (target, _target_connection) = target_calls
        .call("connecting", async {
            wire::connect_sql_guarded(target_config)
                .await
                .map_err(RunError::Target)
        })
        .await?;
    let limits = GroupLimits {
        max_transactions: u64::from(settings.max_batch_transactions),
        max_age: settings.max_batch,
        ..GroupLimits::default()
    };
    let mut applier = target_calls
        .call(
            "preparing the apply session",
            Applier::with_limits(target, &settings.slot, limits),
        )
        .await?;
    applier.set_schema_changes(settings.schema_changes);
    applier.set_captured_ddl(&settings.publication, settings.skip_ddl);
    // The same session serves column drift and the periodic look at the publication.
    let catalog = wire::connect_sql(source_config)
        .await
        .map_err(SourceError::Wire)?;
    catalog
        .batch_execute("SET search_path = ''")
        .await
        .map_err(SourceError::Catalog)?;
    applier.set_source_catalog(catalog);
    telemetry.set_target_reachable(true);
    let start = applier.applied_lsn();
    let positions = Arc::new(Positions::new(start));
    let options = SourceOptions {
        publication: settings.publication.clone(),
        slot: settings.slot.clone(),
        create_slot: settings.create_slot,
        failover_slot: settings.failover_slot,
        status_interval: settings.status_interval,
        // Zero: wait forever, as wal_receiver_timeout = 0 does (tokio clamps the deadline).
        receive_timeout: Some(if settings.replication_timeout.is_zero() {
            Duration::MAX
        } else {
            settings.replication_timeout
        }),
        // A table still to be caught up by its copy filters changes by their commit position,
        // which a streamed change does not have yet: no streaming until every copy is done.
        streaming: next.streaming && !sync_filter.binds_after(start),
        // Kept should this session fail before it has a walsender of its own.
        previous_walsender: next.walsender.clone(),
    };
    let (mut stream, walsender) =
        source::open_stream(source_config, &options, start, positions.clone()).await?;
    if walsender.is_some() {
        next.walsender = walsender;
    }
    tracing::info!(slot = %settings.slot, start = %start, "streaming");
    telemetry.set_streaming(true);
    telemetry.watch_positions(positions.clone());

    let mut streams = streaming::Streams::new(
        target_config.clone(),
        &settings.slot,
        limits,
        settings.schema_changes,
        Some((settings.publication.clone(), settings.skip_ddl)),
    );
    let mut decode_context = DecodeContext::default();

    // When the last message was applied: the stream has been quiet since.
    let mut last_applied = Instant::now();
    let mut latency = crate::latency::CommitLatency::default();
    // Idle positions are recorded in the progress row at most this often.
    let mut idle_recorded = Instant::now();
    // Durability of asynchronous target commits is checked on this tick (the target's WAL
    // writer flushes every 200 ms by default).
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Tables that join the publication empty send nothing: look for them on this tick.
    let mut publication_tick = tokio::time::interval(PUBLICATION_CHECK);
    publication_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The source position the stream has passed: every message before it went to the applier.
    let mut passed = start;
    // The source position by which the publication was found dropped.
    let mut publication_dropped: Option<Lsn> = None;
    let end = loop {
        // Priorities: shutdown, then the durability tick (cheap, and it must not starve under a
        // backlog, or the slot would not advance), then the next message. Shutdown is only
        // looked at between messages, and a half-received source transaction is never committed.
        let data = tokio::select! {
            biased;
            _ = stopped(shutdown) => break SessionEnd::Shutdown,
            _ = tick.tick() => {
                guard.still_held(target_calls.limit).await?;
                let durable =
                    target_calls.call("checking durability", applier.confirm_durable()).await?;
                if let Some(durable) = durable {
                    positions.mark_flushed(durable);
                    stream.nudge();
                }
                if let Some(idle) = positions.idle_position() {
                    passed = passed.max(idle);
                    if idle_recorded.elapsed() >= IDLE_RECORD_INTERVAL
                        && target_calls
                            .call("recording an idle position", applier.record_idle(idle))
                            .await?
                    {
                        idle_recorded = Instant::now();
                    }
                }
                // Only inside a source transaction (the applier knows whether one is open).
                if stream.is_caught_up() && last_applied.elapsed() >= MID_TRANSACTION_STALL {
                    if let Some(end_lsn) = applier.held_by_open_transaction() {
                        break SessionEnd::Split(end_lsn);
                    }
                }
                continue;
            }
            _ = publication_tick.tick() => {
                let catalog = applier.source_catalog();
                let look = look_at_publication(catalog, &mut added, &settings.publication).await;
                // A full period from now: a look that took long (up to its limit) must not
                // follow itself at once and keep the stream unread.
                publication_tick.reset();
                match look {
                    Look::Present => publication_dropped = None,
                    Look::Missing { at } => {
                        publication_dropped.get_or_insert(at);
                    }
                    Look::Unknown => {}
                }
                // Once the stream has passed the drop, nothing published is still to come.
                if let Some(at) = publication_dropped.filter(|&at| passed >= at) {
                    break SessionEnd::PublicationDropped(at);
                }
                let due = added.due(passed).await?;
                for (schema, table, sync) in due.started {
                    sync_filter.watch(&schema, &table, sync);
                }
                for (schema, table) in due.left {
                    let name = format!("{schema}.{table}");
                    tracing::warn!(
                        table = %name,
                        "table left the publication: its changes are no longer replicated (it \
                         is copied again should it rejoin)"
                    );
                    telemetry.set_last_failure(format!("table {name} left the publication"));
                }
                if let Some(Hold::Failed { table, reason }) = sync_filter.failed() {
                    return Err(SnapshotError::AddedTable { table, reason }.into());
                }
                continue;
            }
            next = stream.recv() => match next {
                Ok(Some(x)) => x,
                Ok(None) => break SessionEnd::SourceEnded,
                Err(e) => {
                    if ended_by_dropped_publication(&e, applier.source_catalog(), &settings.publication).await {
                        break SessionEnd::PublicationDropped(passed);
                    }
                    return Err(SourceError::Wire(e).into());
                }
            },
        };
        telemetry.received(&data.data);
        last_applied = Instant::now();
        let message = pgoutput::decode(data.data, decode_context)?;
        // Streamed transactions go to their own target sessions (see `streaming`).
        if decode_context.in_stream
            || matches!(
                message,
                LogicalMessage::StreamStart(_)
                    | LogicalMessage::StreamStop
                    | LogicalMessage::StreamCommit(_)
                    | LogicalMessage::StreamAbort(_)
            )
        {
            if sync_filter.binds_after(start) {
                return Err(RunError::StreamDuringCopy);
            }
            if let LogicalMessage::Relation(r) = &message {
                if added.relation(r.namespace(), r.name()).is_some() {
                    return Err(RunError::StreamDuringCopy);
                }
            }
            match message {
                LogicalMessage::StreamStart(start) => {
                    // Everything committed before this chunk is committed on the target first,
                    // so no streamed change waits for a lock the main session holds.
                    commit_finished(&mut target_calls, &mut applier, telemetry, progress).await?;
                    target_calls
                        .call("starting a streamed transaction", streams.start(start))
                        .await?;
                    decode_context.in_stream = true;
                }
                LogicalMessage::StreamStop => {
                    streams.stop();
                    decode_context.in_stream = false;
                }
                LogicalMessage::StreamAbort(abort) => {
                    target_calls
                        .call("undoing a streamed transaction", streams.abort(abort))
                        .await?;
                }
                LogicalMessage::StreamCommit(commit) => {
                    // Source commit order: what committed before it goes first.
                    commit_finished(&mut target_calls, &mut applier, telemetry, progress).await?;
                    let finished = target_calls
                        .call(
                            "committing a streamed transaction",
                            streams.commit(commit, start),
                        )
                        .await?;
                    for message in finished.schema {
                        target_calls
                            .call("applying a change", applier.apply(message))
                            .await?;
                    }
                    if let Some((durable, committed)) = finished.committed {
                        positions.mark_flushed(durable);
                        stream.nudge();
                        telemetry.applied(committed);
                        *progress = true;
                    }
                }
                message => {
                    target_calls
                        .call("applying a streamed change", streams.change(message))
                        .await?;
                }
            }
            target_calls.open_streams = streams.open_count();
            continue;
        }
        // Changes a re-copied table already holds are dropped (see snapshot::SyncFilter).
        // A table that joins the publication is copied beside the stream (snapshot::added).
        if let LogicalMessage::Relation(r) = &message {
            if let Some(sync) = added.relation(r.namespace(), r.name()) {
                sync_filter.watch(r.namespace(), r.name(), sync);
            }
        }
        // Its changes wait while its copy needs them to.
        while let Some(hold) = sync_filter.hold(&message) {
            match hold {
                Hold::Wait(mut sync) => tokio::select! {
                    _ = stopped(shutdown) => break,
                    _ = sync.changed() => {}
                },
                Hold::Failed { table, reason } => {
                    return Err(SnapshotError::AddedTable { table, reason }.into());
                }
            }
        }
        if *shutdown.borrow() {
            break SessionEnd::Shutdown;
        }
        let Some(message) = sync_filter.admit(message) else {
            continue;
        };
        let commit = match &message {
            LogicalMessage::Begin(begin) => {
                // A group is committed only between source transactions: one that reached its
                // limits (its age, above all) while the stream was busy is committed before the
                // next transaction starts, so a slow or stalled transaction never holds the
                // finished ones uncommitted. (Not on "caught up" here: right after a Begin the
                // channel is often momentarily empty, and that would end every group.)
                if target_calls
                    .call("committing", applier.commit_if(false))
                    .await?
                    .is_some()
                {
                    let committed = applier.take_committed();
                    latency.visible(committed.transactions);
                    telemetry.applied(committed);
                    *progress = true;
                }
                telemetry.begin(begin.commit_time);
                latency.begin(begin.commit_time);
                None
            }
            LogicalMessage::Commit(c) => Some(c.end_lsn),
            // The one refusal of two-phase messages: lsnpipe never asks for them (the slot's
            // two_phase flag is refused before streaming, see `source`).
            LogicalMessage::StreamPrepare(_)
            | LogicalMessage::BeginPrepare(_)
            | LogicalMessage::Prepare(_)
            | LogicalMessage::CommitPrepared(_)
            | LogicalMessage::RollbackPrepared(_) => return Err(RunError::Unexpected("two-phase")),
            _ => None,
        };
        target_calls
            .call("applying a change", applier.apply(message))
            .await?;
        // A table created by captured DDL fills from the stream: it needs no copy.
        for created in applier.take_created_tables() {
            added.known(&created.schema, &created.table);
        }
        if let Some(end_lsn) = commit {
            passed = passed.max(end_lsn);
            let split_here = next.commit_at.is_some_and(|at| end_lsn >= at);
            let caught_up = stream.is_caught_up();
            latency.commit_received(caught_up);
            if target_calls
                .call("committing", applier.commit_if(caught_up || split_here))
                .await?
                .is_some()
            {
                let committed = applier.take_committed();
                latency.visible(committed.transactions);
                telemetry.applied(committed);
                *progress = true;
                if split_here {
                    next.commit_at = None;
                }
            }
        }
        last_applied = Instant::now();
    };

    // Not a group with a source transaction still open: the applier commits only between them.
    if target_calls
        .call("committing", applier.commit_if(true))
        .await?
        .is_some()
    {
        telemetry.applied(applier.take_committed());
    }
    // The final status update reports everything that is on the target's disk.
    if let Some(durable) = target_calls.call("flushing", applier.sync()).await? {
        positions.mark_flushed(durable);
    }
    // Anything still open is part of a source transaction that will be sent again: dropping
    // the applier rolls it back.
    drop(applier);
    if matches!(
        end,
        SessionEnd::Split(_) | SessionEnd::PublicationDropped(_)
    ) {
        // The link may be what stalled, or the source ended it with an error: close it rather
        // than wait for the source to confirm.
        drop(stream);
    } else {
        stream.stop().await.map_err(SourceError::Wire)?;
    }
    Ok(end)
}

/// Commit the finished transactions the main session holds (before a streamed chunk or commit).
async fn commit_finished(
    target_calls: &mut TargetCalls,
    applier: &mut Applier,
    telemetry: &Telemetry,
    progress: &mut bool,
) -> Result<(), RunError> {
    if target_calls
        .call("committing", applier.commit_if(true))
        .await?
        .is_some()
    {
        telemetry.applied(applier.take_committed());
        *progress = true;
    }
    Ok(())
}

/// How long the stream may stay quiet inside a source transaction before the finished ones
/// grouped with it are committed without it (see [`SessionEnd::Split`]).
const MID_TRANSACTION_STALL: Duration = Duration::from_secs(1);

/// How often a position passed while idle is written to the progress row (the slot then
/// advances on an idle publication).
const IDLE_RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// Resolves once shutdown is asked for (or nobody can ask any more). The borrow of the channel's
/// value ends inside, so the future stays `Send`.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
