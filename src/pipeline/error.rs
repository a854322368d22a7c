//! Why a run stopped or a session ended early (which of those a new session can heal:
//! [`crate::error_policy::run`]).

use crate::apply::ApplyError;
use crate::apply::guard::GuardError;
use crate::pgoutput::DecodeError;
use crate::snapshot::SnapshotError;
use crate::source::SourceError;
use crate::wire::{ConnConfigError, WireError};

/// Why a run stopped, or why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("source connection string")]
    SourceConfig(#[source] ConnConfigError),
    #[error("target connection string")]
    TargetConfig(#[source] ConnConfigError),
    #[error("source")]
    Source(#[from] SourceError),
    #[error("target")]
    Target(#[source] WireError),
    #[error("apply")]
    Apply(#[from] ApplyError),
    #[error(
        "malformed message from the source; lsnpipe stops rather than skip it (the slot keeps it)"
    )]
    Decode(#[from] DecodeError),
    #[error("initial copy")]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Guard(#[from] GuardError),
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
