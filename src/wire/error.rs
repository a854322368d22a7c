//! Errors of the replication-protocol client, and the one place that decides which are worth a
//! retry (connection lost, server restarting, slot briefly held elsewhere) and which need an
//! operator (bad credentials, missing slot or publication, missing privilege, bad settings).

use std::fmt;
use std::io;

use crate::pgoutput::DecodeError;

use super::conn_config::ConnConfigError;

/// An `ErrorResponse` from the server, with the fields an operator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL` or `PANIC` (the non-localized `V` field when the server sends it).
    pub severity: String,
    /// Five-character SQLSTATE.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

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
pub fn is_transient(code: &str) -> bool {
    code.starts_with("08") || TRANSIENT_SQLSTATES.contains(&code)
}

impl ServerError {
    pub fn is_retryable(&self) -> bool {
        is_transient(&self.code)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Config(#[from] ConnConfigError),

    #[error(
        "cannot connect to {target}: {source}; check that the server runs and accepts \
         connections there"
    )]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },

    #[error("connecting to {target} timed out after {seconds} s (connect_timeout)")]
    ConnectTimeout { target: String, seconds: u64 },

    #[error("connection to the server lost while {doing}: {source}")]
    Io {
        doing: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("the server closed the connection unexpectedly while {doing}")]
    Closed { doing: &'static str },

    #[error(
        "the server sent nothing for {seconds} s although asked to reply; the connection is \
         presumed dead (network partition or a stuck server)"
    )]
    Silent { seconds: u64 },

    #[error("TLS with {target} failed: {reason}")]
    Tls {
        target: String,
        reason: String,
        #[source]
        source: Option<io::Error>,
    },

    #[error(
        "authentication of user \"{user}\" failed: {reason}; check the password, the passfile \
         and pg_hba.conf"
    )]
    Auth {
        user: String,
        reason: String,
        #[source]
        source: Option<Box<ServerError>>,
    },

    #[error(transparent)]
    Server(Box<ServerError>),

    #[error("unexpected reply from the server: {0}")]
    Protocol(String),

    #[error("cannot decode a replication message: {0}")]
    Decode(#[source] DecodeError),

    #[error(
        "no host of the connection string is usable with target_session_attrs={attrs} \
         ({tried}); during a failover this passes once a standby is promoted, else check the \
         host list"
    )]
    NoSuitableHost { attrs: &'static str, tried: String },

    #[error(
        "failover slots need PostgreSQL 17 or newer on the source, which runs {server_version}: \
         leave out --failover-slot (the slot is then lost when a standby is promoted), or \
         upgrade the source"
    )]
    FailoverSlotUnsupported { server_version: String },

    #[error("SQL session failed: {0}")]
    Sql(#[source] tokio_postgres::Error),
}

impl WireError {
    /// Whether the same work may succeed after reconnecting (with a backoff).
    pub fn is_retryable(&self) -> bool {
        match self {
            WireError::Connect { .. }
            | WireError::ConnectTimeout { .. }
            | WireError::Io { .. }
            | WireError::Closed { .. }
            | WireError::Silent { .. }
            // A promotion in progress: the new primary appears soon.
            | WireError::NoSuitableHost { .. } => true,
            WireError::Server(e) => e.is_retryable(),
            // Without a server error the SQL session failed on I/O.
            WireError::Sql(e) => e.code().is_none_or(|c| is_transient(c.code())),
            WireError::Config(_)
            | WireError::Tls { .. }
            | WireError::Auth { .. }
            | WireError::Protocol(_)
            | WireError::FailoverSlotUnsupported { .. }
            | WireError::Decode(_) => false,
        }
    }

    /// The server's `ErrorResponse`, when this error is one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            WireError::Server(e) => Some(e),
            WireError::Auth { source, .. } => source.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn io(doing: &'static str) -> impl FnOnce(io::Error) -> WireError {
        move |source| match source.kind() {
            io::ErrorKind::UnexpectedEof => WireError::Closed { doing },
            _ => WireError::Io { doing, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> WireError {
        WireError::Server(Box::new(ServerError {
            severity: "FATAL".into(),
            code: code.into(),
            message: "m".into(),
            detail: None,
            hint: None,
        }))
    }

    #[test]
    fn classifies_server_errors() {
        for code in ["57P01", "57P02", "57P03", "53300", "55006", "08006"] {
            assert!(server(code).is_retryable(), "{code}");
        }
        // 57P04: the database was dropped, which no reconnect undoes.
        for code in [
            "42704", "42501", "28P01", "22023", "42601", "57P04", "53100",
        ] {
            assert!(!server(code).is_retryable(), "{code}");
        }
        assert!(WireError::Closed { doing: "x" }.is_retryable());
        assert!(!WireError::Protocol("x".into()).is_retryable());
    }
}
