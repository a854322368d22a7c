//! Errors of the replication-protocol client. Which of them are worth a retry (connection lost,
//! server restarting, slot briefly held elsewhere) and which need an operator (bad credentials,
//! missing slot or publication, missing privilege, bad settings) is decided in
//! [`crate::error_policy`].

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

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Config(#[from] ConnConfigError),

    #[error(
        "cannot connect to {target} (check that the server runs and accepts connections there)"
    )]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },

    #[error("connecting to {target} timed out after {seconds} s (connect_timeout)")]
    ConnectTimeout { target: String, seconds: u64 },

    #[error("connection to the server lost while {doing}")]
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

    #[error("cannot decode a replication message")]
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

    #[error("SQL session failed")]
    Sql(#[source] tokio_postgres::Error),
}

impl WireError {
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
