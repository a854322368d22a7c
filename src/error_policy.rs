//! The one error policy: what lsnpipe does about every error a run, an initial copy or an
//! operator command can end with, and the `kind` it is counted under in `lsnpipe_errors_total`.
//!
//! ```text
//! RunError ─┬─ Source(SourceError) ──┬─ Wire(WireError) ─────────────▶ wire()
//!           │                        ├─ Catalog(SQL) ────────────────▶ sql()
//!           │                        └─ what the preflight found ────▶ Operator
//!           ├─ Target(WireError) ────────────────────────────────────▶ wire()
//!           ├─ Apply(ApplyError) ────────────────────────────────────▶ apply()
//!           ├─ Snapshot(SnapshotError) ──────────────────────────────▶ snapshot()
//!           ├─ Decode, Streamed (the stream itself is wrong) ────────▶ Fatal
//!           └─ timeouts, streaming fall-backs ───────────────────────▶ Retry
//! ```
//!
//! - **Retry**: the same work can succeed on a new session with no one acting (a connection
//!   lost, a server restarting, a slot still held by a walsender going away, a target that is
//!   read-only or full until someone frees it). The run loop pauses (1 s, 2 s, then 3 s) and
//!   starts again from the progress row.
//! - **Operator**: nothing changes until someone acts; the error's own message says what to do
//!   (create the slot, grant a privilege, fix a table). The run stops with exit code 1.
//! - **Fatal**: a bug in lsnpipe or input it cannot handle (a malformed message, a broken
//!   protocol): stop, keep the slot, and ask for a report ([`FATAL_HINT`]).
//!
//! [`is_transient`] is the only list of SQLSTATEs that retry; [`ErrorKind`] is the only
//! vocabulary of the errors metric.

use std::error::Error;

use tokio_postgres::error::SqlState;

use crate::apply::ApplyError;
use crate::apply::guard::GuardError;
use crate::pipeline::RunError;
use crate::snapshot::SnapshotError;
use crate::source::SourceError;
use crate::wire::WireError;

/// What lsnpipe does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pause, then a new session: the cause goes away by itself.
    Retry,
    /// Stop; the message says what the operator does.
    Operator,
    /// Stop; a bug or input lsnpipe cannot handle, to be reported.
    Fatal,
}

/// What the operator reads after an error that is [`Action::Fatal`].
pub const FATAL_HINT: &str = "lsnpipe cannot go on past this (the slot keeps the changes): \
     report it with the lsnpipe and PostgreSQL versions, or upgrade lsnpipe";

/// The `kind` label of `lsnpipe_errors_total`: a small fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A connection string or setting that cannot work.
    Config,
    /// The source: its connection, its preflight (slot, publication, wal_level).
    Source,
    /// The source sent nothing for `--replication-timeout`.
    SourceTimeout,
    /// The target's connection (before applying anything).
    Target,
    /// The target did not answer for `--target-timeout`.
    TargetTimeout,
    /// The target is read-only, out of disk or out of memory.
    TargetUnwritable,
    /// Applying a change (including losing the target while doing it).
    Apply,
    /// A message the decoder rejects.
    Decode,
    /// A message lsnpipe does not expect in the stream.
    Protocol,
    /// Streamed large transactions that the session could not apply side by side.
    Streaming,
    /// The initial copy, or the check each session starts with.
    Snapshot,
    /// A read of the slot's state by the slot monitor.
    SlotMonitor,
}

impl ErrorKind {
    /// Every kind, in the order the metrics documentation lists them.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::Config,
        ErrorKind::Source,
        ErrorKind::SourceTimeout,
        ErrorKind::Target,
        ErrorKind::TargetTimeout,
        ErrorKind::TargetUnwritable,
        ErrorKind::Apply,
        ErrorKind::Decode,
        ErrorKind::Protocol,
        ErrorKind::Streaming,
        ErrorKind::Snapshot,
        ErrorKind::SlotMonitor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Source => "source",
            ErrorKind::SourceTimeout => "source_timeout",
            ErrorKind::Target => "target",
            ErrorKind::TargetTimeout => "target_timeout",
            ErrorKind::TargetUnwritable => "target_unwritable",
            ErrorKind::Apply => "apply",
            ErrorKind::Decode => "decode",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Streaming => "streaming",
            ErrorKind::Snapshot => "snapshot",
            ErrorKind::SlotMonitor => "slot_monitor",
        }
    }
}

/// What to do about an error that ended a session, and how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub kind: ErrorKind,
}

/// SQLSTATEs after which the same work may succeed on a new session, with no operator: the one
/// list every layer (replication stream, copy, apply) retries by.
const TRANSIENT_SQLSTATES: &[&str] = &[
    "57P01", // admin_shutdown: the server is stopping or the backend was terminated
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now: the server is starting up or shutting down
    "57P05", // idle_session_timeout
    "53300", // too_many_connections
    "55006", // object_in_use: the slot is still held by a walsender that is going away
    "55P03", // lock_not_available: lock_timeout
    "40001", // serialization_failure
    "40P01", // deadlock_detected
];

/// Whether an error with this SQLSTATE may go away on a new session: a connection failure
/// (class 08) or one of [`TRANSIENT_SQLSTATES`]. Not 57P04 (database dropped) nor any other
/// state that needs an operator.
pub fn is_transient(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08") || TRANSIENT_SQLSTATES.contains(&code)
}

/// SQLSTATEs of a target that cannot take writes for now (read-only: a standby, or
/// `default_transaction_read_only`; disk full; out of memory). Nothing is committed, the slot
/// stays where it is, and retrying resumes once an operator has fixed the target, so these
/// retry although someone has to act.
const TARGET_UNWRITABLE: &[&str] = &["25006", "53100", "53200"];

/// The verdict on an error that ended a session of `lsnpipe run`.
pub fn run(err: &RunError) -> Verdict {
    use Action::{Fatal, Operator, Retry};
    let (action, kind) = match err {
        RunError::SourceConfig(_) | RunError::TargetConfig(_) => (Operator, ErrorKind::Config),
        RunError::Source(SourceError::Wire(WireError::Silent { .. })) => {
            (Retry, ErrorKind::SourceTimeout)
        }
        RunError::Source(e) => (source(e), ErrorKind::Source),
        RunError::Target(e) => (wire(e), ErrorKind::Target),
        RunError::Apply(e) if target_unwritable(e) => (Retry, ErrorKind::TargetUnwritable),
        RunError::Apply(e) => (apply(e), ErrorKind::Apply),
        // A message the decoder rejects is re-sent unchanged on every new session (TCP and TLS
        // already guard the bytes in transit): retrying would loop for ever.
        RunError::Decode(_) => (Fatal, ErrorKind::Decode),
        RunError::Snapshot(e) => (snapshot(e), ErrorKind::Snapshot),
        // The other lsnpipe may stop, or be this one's own session that is going away.
        RunError::Guard(GuardError::Held { .. } | GuardError::Lost(_)) => {
            (Retry, ErrorKind::Target)
        }
        RunError::Guard(GuardError::Target(e)) => (wire(e), ErrorKind::Target),
        // A slot shared with another consumer, or created with two-phase decoding.
        RunError::Unexpected(_) => (Operator, ErrorKind::Protocol),
        RunError::Streamed(_) => (Fatal, ErrorKind::Protocol),
        RunError::TargetTimeout { .. } | RunError::StreamLockWait { .. } => {
            (Retry, ErrorKind::TargetTimeout)
        }
        // The run loop stops on it before asking; a new session would do.
        RunError::StoppedWhileWaiting { .. } => (Retry, ErrorKind::TargetTimeout),
        // The next session does without streaming (see `pipeline::sessions`).
        RunError::TooManyStreams(_) | RunError::StreamDuringCopy => (Retry, ErrorKind::Streaming),
    };
    Verdict { action, kind }
}

/// An error of the replication-protocol client or of an SQL session opened through it.
pub fn wire(err: &WireError) -> Action {
    match err {
        WireError::Connect { .. }
        | WireError::ConnectTimeout { .. }
        | WireError::Io { .. }
        | WireError::Closed { .. }
        | WireError::Silent { .. }
        // A promotion in progress: the new primary appears soon.
        | WireError::NoSuitableHost { .. } => Action::Retry,
        WireError::Server(e) => server_code(&e.code),
        WireError::Sql(e) => sql(e),
        WireError::Config(_)
        | WireError::Tls { .. }
        | WireError::Auth { .. }
        | WireError::FailoverSlotUnsupported { .. } => Action::Operator,
        WireError::Protocol(_) | WireError::Decode(_) => Action::Fatal,
    }
}

/// What the source's preflight found, or its connection.
pub fn source(err: &SourceError) -> Action {
    match err {
        SourceError::Wire(e) => wire(e),
        SourceError::Catalog(e) => sql(e),
        SourceError::WalLevel(_)
        | SourceError::NoPublication(_)
        | SourceError::PublicationDropped { .. }
        | SourceError::NoSlot(_)
        | SourceError::SlotMissing { .. }
        | SourceError::SlotAhead { .. }
        | SourceError::WrongPlugin { .. }
        | SourceError::SlotInvalidated(_)
        | SourceError::TwoPhaseSlot(_) => Action::Operator,
    }
}

/// An error applying to the target. A target that is read-only or full retries (see
/// [`TARGET_UNWRITABLE`]).
pub fn apply(err: &ApplyError) -> Action {
    match err {
        ApplyError::TargetConnection { .. } => Action::Retry,
        _ if target_unwritable(err) => Action::Retry,
        ApplyError::MissingTable { .. }
        | ApplyError::MissingColumn { .. }
        | ApplyError::SchemaChange { .. }
        | ApplyError::Data { .. }
        | ApplyError::DdlUnapplicable { .. }
        | ApplyError::DdlFailed { .. } => Action::Operator,
        // Messages out of order or an unknown relation: a bug or an unsupported slot option.
        ApplyError::Protocol { .. } => Action::Fatal,
    }
}

/// An error of the initial copy, or of the check each session starts with. A retried copy
/// starts again with the tables not yet finished.
pub fn snapshot(err: &SnapshotError) -> Action {
    match err {
        SnapshotError::Source(e) => source(e),
        SnapshotError::SourceSql(e) | SnapshotError::TargetSql(e) => wire(e),
        SnapshotError::Copy { source, .. } => sql(source),
        SnapshotError::Catalog(e)
        | SnapshotError::State(e)
        | SnapshotError::Schema { source: e, .. } => sql(e),
        SnapshotError::Progress(e) => apply(e),
        // The next session's start copies it again, and stops on what needs an operator.
        SnapshotError::AddedTable { .. } => Action::Retry,
        SnapshotError::SlotExists(_)
        | SnapshotError::SlotGone(_)
        | SnapshotError::Unreadable(_)
        | SnapshotError::RowSecurity(_)
        | SnapshotError::MissingOnTarget(_)
        | SnapshotError::TargetNotEmpty(_)
        | SnapshotError::MissingColumn { .. }
        | SnapshotError::CannotCreate { .. } => Action::Operator,
        SnapshotError::BadState(_) | SnapshotError::Worker(_) => Action::Fatal,
    }
}

/// An ordinary SQL session's error: without a SQLSTATE the session itself failed (I/O).
fn sql(err: &tokio_postgres::Error) -> Action {
    match err.code() {
        None => Action::Retry,
        Some(code) => sql_state(code),
    }
}

fn server_code(code: &str) -> Action {
    sql_state(&SqlState::from_code(code))
}

fn sql_state(code: &SqlState) -> Action {
    if is_transient(code) {
        Action::Retry
    } else {
        Action::Operator
    }
}

fn target_unwritable(err: &ApplyError) -> bool {
    matches!(err, ApplyError::Data { source, .. } if TARGET_UNWRITABLE.contains(&source.code.as_str()))
}

/// The action for the first error in `err`'s chain this policy knows (an operator command's
/// error wraps the pipeline's, a connection's or a copy's), or `None`.
pub fn of_chain(err: &(dyn Error + 'static)) -> Option<Action> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(e) = known::<RunError>(e) {
            return Some(run(e).action);
        }
        if let Some(e) = known::<SnapshotError>(e) {
            return Some(snapshot(e));
        }
        if let Some(e) = known::<ApplyError>(e) {
            return Some(apply(e));
        }
        if let Some(e) = known::<SourceError>(e) {
            return Some(source(e));
        }
        if let Some(e) = known::<WireError>(e) {
            return Some(wire(e));
        }
        next = e.source();
    }
    None
}

/// `e` as a `T`, also when it is boxed (a boxed error is a source of its own type, `Box<T>`).
fn known<'a, T: Error + 'static>(e: &'a (dyn Error + 'static)) -> Option<&'a T> {
    e.downcast_ref::<T>()
        .or_else(|| e.downcast_ref::<Box<T>>().map(|b| &**b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Operation, TargetError};
    use crate::pgoutput::DecodeError;
    use crate::wire::{ConnConfig, ServerError};

    fn server(code: &str) -> WireError {
        WireError::Server(Box::new(ServerError {
            severity: "FATAL".into(),
            code: code.into(),
            message: "m".into(),
            detail: None,
            hint: None,
        }))
    }

    fn rejected(code: &str) -> ApplyError {
        ApplyError::Data {
            table: "\"public\".\"t\"".into(),
            operation: Operation::Insert,
            source: TargetError {
                code: code.into(),
                message: "m".into(),
                constraint: None,
                column: None,
            },
        }
    }

    fn decode() -> DecodeError {
        DecodeError::UnknownTag {
            what: "message",
            tag: b'?',
        }
    }

    fn verdict(action: Action, kind: ErrorKind) -> Verdict {
        Verdict { action, kind }
    }

    #[test]
    fn every_error_of_a_run_has_one_verdict() {
        use Action::{Fatal, Operator, Retry};
        let bad_config = match ConnConfig::parse("nosuchoption=1") {
            Err(e) => e,
            Ok(c) => panic!("parsed: {}", c.redacted()),
        };
        let table: Vec<(RunError, Verdict)> = vec![
            // The source restarting, crashing, or its backend terminated.
            (
                RunError::Source(SourceError::Wire(server("57P01"))),
                verdict(Retry, ErrorKind::Source),
            ),
            (
                RunError::Source(SourceError::Wire(server("57P03"))),
                verdict(Retry, ErrorKind::Source),
            ),
            // The database was dropped: no reconnect undoes that.
            (
                RunError::Source(SourceError::Wire(server("57P04"))),
                verdict(Operator, ErrorKind::Source),
            ),
            // The slot is still held by a walsender that is going away.
            (
                RunError::Source(SourceError::Wire(server("55006"))),
                verdict(Retry, ErrorKind::Source),
            ),
            (
                RunError::Source(SourceError::Wire(WireError::Closed { doing: "x" })),
                verdict(Retry, ErrorKind::Source),
            ),
            (
                RunError::Source(SourceError::Wire(WireError::Silent { seconds: 30 })),
                verdict(Retry, ErrorKind::SourceTimeout),
            ),
            (
                RunError::Source(SourceError::NoSlot("s".into())),
                verdict(Operator, ErrorKind::Source),
            ),
            (
                RunError::Source(SourceError::SlotMissing {
                    slot: "s".into(),
                    applied: crate::Lsn::from(0x1_0000),
                }),
                verdict(Operator, ErrorKind::Source),
            ),
            (
                RunError::Source(SourceError::NoPublication("p".into())),
                verdict(Operator, ErrorKind::Source),
            ),
            (
                RunError::SourceConfig(bad_config),
                verdict(Operator, ErrorKind::Config),
            ),
            (
                RunError::Target(server("28P01")),
                verdict(Operator, ErrorKind::Target),
            ),
            (
                RunError::Target(server("08006")),
                verdict(Retry, ErrorKind::Target),
            ),
            // A read-only target, or one out of disk: retried until someone frees it.
            (
                RunError::Apply(rejected("25006")),
                verdict(Retry, ErrorKind::TargetUnwritable),
            ),
            (
                RunError::Apply(rejected("53100")),
                verdict(Retry, ErrorKind::TargetUnwritable),
            ),
            // A constraint the change violates on the target.
            (
                RunError::Apply(rejected("23505")),
                verdict(Operator, ErrorKind::Apply),
            ),
            (
                RunError::Apply(ApplyError::MissingTable { table: "t".into() }),
                verdict(Operator, ErrorKind::Apply),
            ),
            (
                RunError::Apply(ApplyError::protocol("Insert outside a transaction")),
                verdict(Fatal, ErrorKind::Apply),
            ),
            // A message the decoder rejects comes again, unchanged, on every session.
            (
                RunError::Decode(decode()),
                verdict(Fatal, ErrorKind::Decode),
            ),
            (
                RunError::Source(SourceError::Wire(WireError::Decode(decode()))),
                verdict(Fatal, ErrorKind::Source),
            ),
            (
                RunError::Unexpected("Prepare"),
                verdict(Operator, ErrorKind::Protocol),
            ),
            (
                RunError::Streamed("x".into()),
                verdict(Fatal, ErrorKind::Protocol),
            ),
            (
                RunError::TargetTimeout {
                    doing: "committing",
                    seconds: 10,
                },
                verdict(Retry, ErrorKind::TargetTimeout),
            ),
            (
                RunError::TooManyStreams(9),
                verdict(Retry, ErrorKind::Streaming),
            ),
            (
                RunError::Snapshot(SnapshotError::SourceSql(server("57P01"))),
                verdict(Retry, ErrorKind::Snapshot),
            ),
            (
                RunError::Snapshot(SnapshotError::TargetSql(server("57P04"))),
                verdict(Operator, ErrorKind::Snapshot),
            ),
            (
                RunError::Snapshot(SnapshotError::SlotExists("s".into())),
                verdict(Operator, ErrorKind::Snapshot),
            ),
            (
                RunError::Snapshot(SnapshotError::Progress(Box::new(rejected("53100")))),
                verdict(Retry, ErrorKind::Snapshot),
            ),
            (
                RunError::Snapshot(SnapshotError::Worker("panicked".into())),
                verdict(Fatal, ErrorKind::Snapshot),
            ),
        ];
        for (err, expected) in table {
            assert_eq!(run(&err), expected, "{err:?}");
        }
    }

    #[test]
    fn one_list_of_transient_sqlstates() {
        for code in [
            "57P01", "57P02", "57P03", "57P05", "53300", "55006", "08006", "08001", "40001",
        ] {
            assert!(is_transient(&SqlState::from_code(code)), "{code}");
        }
        // 57P04: database dropped; 53100: disk full (retried only as an unwritable target);
        // 25006: read-only; 28P01: bad password; 42704: undefined object (a missing slot).
        for code in [
            "57P04", "53100", "25006", "28P01", "42704", "42501", "23505",
        ] {
            assert!(!is_transient(&SqlState::from_code(code)), "{code}");
        }
    }

    #[test]
    fn an_operator_command_wrapping_a_pipeline_error_gets_its_verdict() {
        let err = crate::ops::OpsError::from(RunError::Decode(decode()));
        assert_eq!(of_chain(&err), Some(Action::Fatal));
        let err = crate::ops::OpsError::Connect {
            side: "source",
            at: "host=h".into(),
            source: WireError::Closed { doing: "x" },
        };
        assert_eq!(of_chain(&err), Some(Action::Retry));
        let err = crate::ops::OpsError::Refused("no".into());
        assert_eq!(of_chain(&err), None);
    }

    #[test]
    fn the_metrics_documentation_lists_every_kind() {
        let docs = include_str!("../docs/metrics.md");
        let line = docs
            .lines()
            .find(|l| l.starts_with("| `lsnpipe_errors_total`"))
            .unwrap_or_default();
        for kind in ErrorKind::ALL {
            assert!(
                line.contains(&format!("`{}`", kind.as_str())),
                "{kind:?}: {line}"
            );
        }
    }
}
