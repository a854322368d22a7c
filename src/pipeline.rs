//! The run loop: the source stream, decoded and applied to the target, with reconnects.
//!
//! ```text
//!            ┌──────────── session (one pair of connections) ─────────────┐
//!  run ──▶   │ stream.recv ─▶ pgoutput::decode ─▶ Applier ─▶ commit_if ──┐ │
//!   ▲        │      ▲ (bounded channel: a slow target slows the socket)   │ │
//!   │        │      └─────────── Positions ◀── mark_flushed ◀───────────┘ │
//!   │        └────────────────────────────────────────────────────────────┘
//!   └── retryable error: back off (1 s … 30 s) and start a new session
//! ```
//!
//! Exactly-once rests on the applier: the applied position is committed on the target with the
//! data, each session starts from it, and transactions at or before it are skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::apply::{Applier, ApplyError, GroupLimits, SchemaChanges};
use crate::config::RunSettings;
use crate::metrics::Side;
use crate::pgoutput::{self, DecodeContext, DecodeError, LogicalMessage};
use crate::positions::Positions;
use crate::snapshot::{self, Prepared, SnapshotError, SnapshotOptions};
use crate::source::{self, SourceError, SourceOptions};
use crate::telemetry::Telemetry;
use crate::wire::{self, ConfigError as ConnConfigError, ConnConfig, WireError};

/// Why a run stopped, or why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("source connection string: {0}")]
    SourceConfig(#[source] ConnConfigError),
    #[error("target connection string: {0}")]
    TargetConfig(#[source] ConnConfigError),
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("target: {0}")]
    Target(#[source] WireError),
    #[error("apply: {0}")]
    Apply(#[from] ApplyError),
    #[error(
        "malformed message from the source: {0}; lsnpipe stops rather than skip it (the slot \
         keeps it): report it with the server version, or upgrade lsnpipe"
    )]
    Decode(#[from] DecodeError),
    #[error("initial copy: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error(
        "the source sent a {0} message, which lsnpipe does not request; is the slot shared with \
         another consumer or created with two-phase decoding?"
    )]
    Unexpected(&'static str),
}

impl RunError {
    /// Worth a new session after a pause (connection loss, a restart), rather than a stop.
    pub fn is_retryable(&self) -> bool {
        match self {
            RunError::Source(e) => e.is_retryable(),
            RunError::Target(e) => e.is_retryable(),
            RunError::Apply(e) => e.is_retryable(),
            RunError::Snapshot(e) => e.is_retryable(),
            // A message the decoder rejects is re-sent unchanged on every new session (TCP and
            // TLS already guard the bytes in transit): retrying would loop for ever.
            _ => false,
        }
    }

    /// A short label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::SourceConfig(_) | RunError::TargetConfig(_) => "config",
            RunError::Source(_) => "source",
            RunError::Target(_) => "target",
            RunError::Apply(_) => "apply",
            RunError::Decode(_) => "decode",
            RunError::Unexpected(_) => "protocol",
            RunError::Snapshot(_) => "snapshot",
        }
    }
}

enum SessionEnd {
    Shutdown,
    SourceEnded,
}

/// Replicate until `shutdown` turns true (or an error needs an operator).
pub async fn run(
    settings: &RunSettings,
    telemetry: &Telemetry,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let source_config = ConnConfig::parse(&settings.source).map_err(RunError::SourceConfig)?;
    let target_config = ConnConfig::parse(&settings.target).map_err(RunError::TargetConfig)?;
    let mut backoff = Backoff::new();
    loop {
        let started = Instant::now();
        let result = session(
            settings,
            &source_config,
            &target_config,
            telemetry,
            &mut shutdown,
        )
        .await;
        telemetry.set_streaming(false);
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Backoff::new();
        }
        let pause = backoff.next();
        match result {
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::SourceEnded) => {
                tracing::warn!(
                    "the source ended the replication stream; reconnecting in {pause:?}"
                );
                telemetry.reconnect(Side::Source);
            }
            Err(err) if err.is_retryable() => {
                telemetry.error(err.kind());
                let side = match err {
                    RunError::Target(_) | RunError::Apply(_) => Side::Target,
                    _ => Side::Source,
                };
                if side == Side::Target {
                    telemetry.set_target_reachable(false);
                }
                telemetry.reconnect(side);
                tracing::warn!(
                    "replication interrupted, will reconnect in {pause:?}: {}",
                    crate::report::chain(&err)
                );
            }
            Err(err) => {
                telemetry.error(err.kind());
                return Err(err);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(&mut shutdown) => return Ok(()),
        }
    }
}

async fn session(
    settings: &RunSettings,
    source_config: &ConnConfig,
    target_config: &ConnConfig,
    telemetry: &Telemetry,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<SessionEnd, RunError> {
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
    let target = wire::connect_sql(target_config)
        .await
        .map_err(RunError::Target)?;
    let limits = GroupLimits {
        max_transactions: u64::from(settings.max_batch_transactions),
        max_age: settings.max_batch,
        ..GroupLimits::default()
    };
    let mut applier = Applier::with_limits(target, &settings.slot, limits).await?;
    applier.set_schema_changes(settings.schema_changes);
    if settings.schema_changes != SchemaChanges::Off {
        let catalog = wire::connect_sql(source_config)
            .await
            .map_err(SourceError::Wire)?;
        catalog
            .batch_execute("SET search_path = ''")
            .await
            .map_err(SourceError::Catalog)?;
        applier.set_source_catalog(catalog);
    }
    telemetry.set_target_reachable(true);
    let start = applier.applied_lsn();
    let positions = Arc::new(Positions::new(start));
    let options = SourceOptions {
        publication: settings.publication.clone(),
        slot: settings.slot.clone(),
        create_slot: settings.create_slot,
        failover_slot: settings.failover_slot,
        status_interval: settings.status_interval,
    };
    let mut stream = source::open_stream(source_config, &options, start, positions.clone()).await?;
    tracing::info!(slot = %settings.slot, start = %start, "streaming");
    telemetry.set_streaming(true);
    telemetry.watch_positions(positions.clone());

    let mut in_transaction = false;
    // Idle positions are recorded in the progress row at most this often.
    let mut idle_recorded = Instant::now();
    // Durability of asynchronous target commits is checked on this tick (the target's WAL
    // writer flushes every 200 ms by default), and the gauges are refreshed.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        // Priorities: shutdown, then the durability tick (cheap, and it must not starve under a
        // backlog, or the slot would not advance), then the next message. Shutdown is only
        // looked at between messages, and a half-received source transaction is never committed.
        let data = tokio::select! {
            biased;
            _ = stopped(shutdown) => break SessionEnd::Shutdown,
            _ = tick.tick() => {
                if let Some(durable) = applier.confirm_durable().await? {
                    positions.mark_flushed(durable);
                    stream.nudge();
                }
                if let Some(idle) = positions.idle_position() {
                    if idle_recorded.elapsed() >= IDLE_RECORD_INTERVAL
                        && applier.record_idle(idle).await?
                    {
                        idle_recorded = Instant::now();
                    }
                }
                telemetry.refresh();
                continue;
            }
            next = stream.recv() => match next {
                Ok(Some(x)) => x,
                Ok(None) => break SessionEnd::SourceEnded,
                Err(e) => return Err(SourceError::Wire(e).into()),
            },
        };
        telemetry.received(&data.data);
        let message = pgoutput::decode(data.data, DecodeContext::default())?;
        // Changes a re-copied table already holds are dropped (see snapshot::SyncFilter).
        let Some(message) = sync_filter.admit(message)? else {
            continue;
        };
        let commit = match &message {
            LogicalMessage::Begin(begin) => {
                // A group is committed only between source transactions: when the next one has
                // not fully arrived (or the group is full), commit before it starts, so a slow or
                // stalled transaction never holds the finished ones uncommitted.
                if applier.commit_if(stream.is_caught_up()).await?.is_some() {
                    telemetry.applied(applier.take_committed());
                }
                in_transaction = true;
                telemetry.begin(begin.commit_time);
                None
            }
            LogicalMessage::Commit(c) => Some(c.end_lsn),
            LogicalMessage::StreamStart(_)
            | LogicalMessage::StreamStop
            | LogicalMessage::StreamCommit(_)
            | LogicalMessage::StreamAbort(_)
            | LogicalMessage::StreamPrepare(_) => return Err(RunError::Unexpected("streaming")),
            LogicalMessage::BeginPrepare(_)
            | LogicalMessage::Prepare(_)
            | LogicalMessage::CommitPrepared(_)
            | LogicalMessage::RollbackPrepared(_) => return Err(RunError::Unexpected("two-phase")),
            _ => None,
        };
        applier.apply(message).await?;
        if commit.is_some() {
            in_transaction = false;
            if applier.commit_if(stream.is_caught_up()).await?.is_some() {
                telemetry.applied(applier.take_committed());
            }
        }
    };

    if !in_transaction && applier.commit_if(true).await?.is_some() {
        telemetry.applied(applier.take_committed());
    }
    // The final status update reports everything that is on the target's disk.
    if let Some(durable) = applier.sync().await? {
        positions.mark_flushed(durable);
    }
    // Anything still open is part of a source transaction that will be sent again: dropping
    // the applier rolls it back.
    drop(applier);
    stream.stop().await.map_err(SourceError::Wire)?;
    Ok(end)
}

/// How often a position passed while idle is written to the progress row (the slot then
/// advances on an idle publication).
const IDLE_RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// Resolves once shutdown is asked for (or nobody can ask any more). The borrow of the channel's
/// value ends inside, so the future stays `Send`.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Exponential pauses between sessions: 1 s, 2 s, 4 s … 30 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: Duration::from_secs(1),
        }
    }

    fn next(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let mut b = Backoff::new();
        let pauses: Vec<u64> = (0..7).map(|_| b.next().as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
    }
}
