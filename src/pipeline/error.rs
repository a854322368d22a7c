//! Why a run stopped or a session ended early, and which of those a new session can heal.

use crate::apply::ApplyError;
use crate::pgoutput::DecodeError;
use crate::snapshot::SnapshotError;
use crate::source::SourceError;
use crate::wire::{ConnConfigError, WireError};

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
    #[error(
        "the target did not answer for {seconds} s while {doing} (--target-timeout); the link or \
         the server is stuck"
    )]
    TargetTimeout { doing: &'static str, seconds: u64 },
    #[error("stopped while the target had not answered ({doing})")]
    StoppedWhileWaiting { doing: &'static str },
    #[error(
        "{0} large transactions were streamed by the source at once, more than lsnpipe applies \
         side by side ({max}); the next session runs without streaming (each large transaction \
         then reaches the target only after its commit). Raise logical_decoding_work_mem on the \
         source to stream fewer transactions",
        max = super::streaming::MAX_OPEN
    )]
    TooManyStreams(usize),
    #[error(
        "a streamed transaction changed a table while that table's copy was in progress; the \
         next session runs without streaming until the copy is done"
    )]
    StreamDuringCopy,
    #[error("streamed transaction: {0}; lsnpipe stops rather than guess (the slot keeps it)")]
    Streamed(String),
    #[error(
        "the target did not answer for {seconds} s while {doing}, with {open} streamed \
         transaction(s) open on their own target sessions: a row lock another lsnpipe session \
         holds probably blocks it, which on the source could not happen (a unique index or \
         constraint the target has and the source lacks?). Nothing of what waits was committed; \
         lsnpipe retries. Remove the difference on the target"
    )]
    StreamLockWait {
        doing: &'static str,
        seconds: u64,
        open: usize,
    },
}

/// SQLSTATEs of a target that cannot take writes for now (read-only: a standby, or
/// `default_transaction_read_only`; disk full; out of memory). Nothing is committed, the slot
/// stays where it is, and retrying resumes once an operator has fixed the target.
const TARGET_UNWRITABLE: &[&str] = &["25006", "53100", "53200"];

impl RunError {
    /// Worth a new session after a pause (connection loss, a restart), rather than a stop.
    pub fn is_retryable(&self) -> bool {
        match self {
            RunError::Source(e) => e.is_retryable(),
            RunError::Target(e) => e.is_retryable(),
            RunError::Apply(e) => e.is_retryable() || target_unwritable(e),
            RunError::TargetTimeout { .. } => true,
            RunError::Snapshot(e) => e.is_retryable(),
            // The next session does without streaming (see `sessions`).
            RunError::TooManyStreams(_) | RunError::StreamDuringCopy => true,
            RunError::StreamLockWait { .. } => true,
            // A message the decoder rejects is re-sent unchanged on every new session (TCP and
            // TLS already guard the bytes in transit): retrying would loop for ever.
            _ => false,
        }
    }

    /// A short label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::SourceConfig(_) | RunError::TargetConfig(_) => "config",
            RunError::Source(SourceError::Wire(WireError::Silent { .. })) => "source_timeout",
            RunError::Source(_) => "source",
            RunError::Target(_) => "target",
            RunError::TargetTimeout { .. } => "target_timeout",
            RunError::StoppedWhileWaiting { .. } => "shutdown",
            RunError::Apply(e) if target_unwritable(e) => "target_unwritable",
            RunError::Apply(_) => "apply",
            RunError::Decode(_) => "decode",
            RunError::Unexpected(_) | RunError::Streamed(_) => "protocol",
            RunError::TooManyStreams(_) | RunError::StreamDuringCopy => "streaming",
            RunError::StreamLockWait { .. } => "target_timeout",
            RunError::Snapshot(_) => "snapshot",
        }
    }
}

fn target_unwritable(e: &ApplyError) -> bool {
    matches!(e, ApplyError::Data { source, .. } if TARGET_UNWRITABLE.contains(&source.code.as_str()))
}
