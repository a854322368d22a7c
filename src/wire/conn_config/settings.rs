//! The values a connection string sets: the host, `target_session_attrs`, `sslmode`,
//! `channel_binding`, the password (which never prints) and the TCP options.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::ConnConfigError;

/// The server's address: a TCP host name or address, or the directory of its Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    /// Connect to `<dir>/.s.PGSQL.<port>`.
    Unix(PathBuf),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// libpq's `target_session_attrs`: which of several hosts to settle on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionAttrs {
    /// The first server that accepts the connection.
    #[default]
    Any,
    /// A server that accepts writes: not in recovery and `default_transaction_read_only` off.
    ReadWrite,
    /// A server not in recovery (a primary), whatever its `default_transaction_read_only`.
    Primary,
}

impl SessionAttrs {
    pub(super) fn parse(v: &str) -> Result<Self, ConnConfigError> {
        match v {
            "any" => Ok(SessionAttrs::Any),
            "read-write" => Ok(SessionAttrs::ReadWrite),
            "primary" => Ok(SessionAttrs::Primary),
            "read-only" | "standby" | "prefer-standby" => Err(ConnConfigError::Unsupported {
                key: "target_session_attrs".into(),
                why: "lsnpipe writes to the target and decodes from a primary: use any, \
                      read-write or primary",
            }),
            _ => Err(ConnConfigError::InvalidValue {
                key: "target_session_attrs",
                value: v.to_owned(),
                expected: "any, read-write or primary",
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::Primary => "primary",
        }
    }

    /// Whether a server that reports these settings is acceptable. `in_hot_standby` and
    /// `default_transaction_read_only` are reported at login by every server since 14.
    pub fn accepts(self, in_hot_standby: bool, default_read_only: bool) -> bool {
        match self {
            SessionAttrs::Any => true,
            SessionAttrs::Primary => !in_hot_standby,
            SessionAttrs::ReadWrite => !in_hot_standby && !default_read_only,
        }
    }
}

/// One server of a (possibly multi-host) connection string.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub(super) host: Host,
    pub(super) hostaddr: Option<IpAddr>,
    pub(super) port: u16,
    /// The given password, or this host's passfile line.
    pub(super) password: Option<Password>,
}

/// libpq's `sslmode`. `allow` is treated as `disable` (lsnpipe never retries without TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    /// Encrypt; verify the chain only if a root certificate is given (as libpq does).
    Require,
    /// Verify the chain, not the host name.
    VerifyCa,
    /// Verify the chain and that the certificate names the host.
    VerifyFull,
}

impl SslMode {
    pub(super) fn parse(v: &str) -> Result<Self, ConnConfigError> {
        Ok(match v {
            "disable" | "allow" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(ConnConfigError::InvalidValue {
                    key: "sslmode",
                    value: v.to_owned(),
                    expected: "disable, allow, prefer, require, verify-ca or verify-full",
                });
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// libpq's `channel_binding`: whether SCRAM must bind to the TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBindingMode {
    Disable,
    Prefer,
    Require,
}

/// A password that does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub(super) String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// libpq's TCP options: keepalive probes and `TCP_USER_TIMEOUT`, so that a peer that vanished
/// (a dead NAT entry, a host that lost power) is noticed by the kernel rather than never.
/// `None` keeps the operating system's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    /// `keepalives` (default on, as in libpq).
    pub keepalives: bool,
    /// `keepalives_idle`: seconds of silence before the first probe.
    pub keepalives_idle: Option<Duration>,
    /// `keepalives_interval`: seconds between probes.
    pub keepalives_interval: Option<Duration>,
    /// `keepalives_count`: unanswered probes before the connection is dropped.
    pub keepalives_count: Option<u32>,
    /// `tcp_user_timeout`: milliseconds sent data may stay unacknowledged.
    pub tcp_user_timeout: Option<Duration>,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            keepalives: true,
            keepalives_idle: None,
            keepalives_interval: None,
            keepalives_count: None,
            tcp_user_timeout: None,
        }
    }
}
