//! Connection settings as users write them for libpq: a key/value string
//! (`host=db port=5432 user=app dbname='my db'`) or a `postgres://` / `postgresql://` URL, the
//! `PG*` environment variables for whatever the string leaves out, and the password file
//! (`passfile`, `PGPASSFILE`, `~/.pgpass`) when no password is given.
//!
//! ```text
//! string (key/value | URL) ─▶ raw options ─┐
//! PG* environment ─────────────────────────┼─▶ ConnConfig ◀── passfile (password only)
//! libpq defaults (socket dir, 5432, $USER) ┘
//! ```
//!
//! The password is never shown: `Debug`, `Display` and [`ConnConfig::redacted`] replace it.
//!
//! Several hosts are written as libpq has them: `host=a,b port=5432,5433` (one port for all, or
//! one per host; in a URL `postgres://a:5432,b:5433/db`), with `target_session_attrs` saying
//! which server to settle on. [`ConnConfig::candidates`] lists one single-host configuration per
//! host, in order; whoever connects tries them in turn (`wire::conn`, `wire::connect_sql`) and
//! checks each server with [`SessionAttrs`], so a reconnect after a failover finds the new
//! primary.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where libpq looks for the server's Unix socket when no host is given (Debian's build).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";
pub const DEFAULT_PORT: u16 = 5432;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("connection string: {reason} at byte {at}")]
    Syntax { at: usize, reason: &'static str },
    #[error("unknown connection option \"{0}\"")]
    UnknownKey(String),
    #[error("connection option \"{key}\" is not supported by lsnpipe: {why}")]
    Unsupported { key: String, why: &'static str },
    #[error("invalid value for connection option \"{key}\": \"{value}\" ({expected})")]
    InvalidValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("no user name: set user= in the connection string, or PGUSER")]
    NoUser,
}

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
    fn parse(v: &str) -> Result<Self, ConfigError> {
        match v {
            "any" => Ok(SessionAttrs::Any),
            "read-write" => Ok(SessionAttrs::ReadWrite),
            "primary" => Ok(SessionAttrs::Primary),
            "read-only" | "standby" | "prefer-standby" => Err(ConfigError::Unsupported {
                key: "target_session_attrs".into(),
                why: "lsnpipe writes to the target and decodes from a primary: use any, \
                      read-write or primary",
            }),
            _ => Err(ConfigError::InvalidValue {
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
struct Endpoint {
    host: Host,
    hostaddr: Option<IpAddr>,
    port: u16,
    /// The given password, or this host's passfile line.
    password: Option<Password>,
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
    fn parse(v: &str) -> Result<Self, ConfigError> {
        Ok(match v {
            "disable" | "allow" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(ConfigError::InvalidValue {
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
pub struct Password(String);

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

/// Everything needed to reach and log in to one server.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnConfig {
    host: Host,
    hostaddr: Option<IpAddr>,
    port: u16,
    /// Every host of the string, in order (the first is `host`/`hostaddr`/`port`).
    endpoints: Vec<Endpoint>,
    target_session_attrs: SessionAttrs,
    user: String,
    dbname: String,
    password: Option<Password>,
    sslmode: SslMode,
    sslrootcert: Option<PathBuf>,
    channel_binding: ChannelBindingMode,
    application_name: Option<String>,
    options: Option<String>,
    connect_timeout: Option<Duration>,
    tcp: TcpOptions,
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

/// Options lsnpipe reads, and the environment variable that supplies each when it is not given.
const KEYS: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("user", Some("PGUSER")),
    ("dbname", Some("PGDATABASE")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("sslmode", Some("PGSSLMODE")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("application_name", Some("PGAPPNAME")),
    ("fallback_application_name", None),
    ("options", Some("PGOPTIONS")),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("keepalives_interval", None),
    ("keepalives_count", None),
    ("tcp_user_timeout", None),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
];

/// libpq options that only tune behaviour lsnpipe does not have; accepted and ignored.
const IGNORED_KEYS: &[&str] = &[
    "load_balance_hosts",
    "gssencmode",
    "sslcompression",
    "sslsni",
    "krbsrvname",
    "client_encoding",
];

/// libpq options whose meaning lsnpipe would silently drop: refuse them.
const UNSUPPORTED_KEYS: &[(&str, &str)] = &[
    ("sslcert", "client certificates are not implemented"),
    ("sslkey", "client certificates are not implemented"),
    ("sslpassword", "client certificates are not implemented"),
    ("sslcrl", "certificate revocation lists are not implemented"),
    (
        "sslcrldir",
        "certificate revocation lists are not implemented",
    ),
    ("requirepeer", "peer checks are not implemented"),
    (
        "service",
        "service files are not read; write the settings out",
    ),
    ("replication", "lsnpipe sets replication=database itself"),
];

impl ConnConfig {
    /// Parse a key/value string or URL, filling gaps from the process environment and the
    /// password file.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::parse_with(s, &|name| std::env::var(name).ok(), home.as_deref())
    }

    /// [`ConnConfig::parse`] with the environment and home directory given explicitly.
    pub fn parse_with(
        s: &str,
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let raw = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            parse_url(s)?
        } else {
            parse_key_values(s)?
        };
        let mut given = BTreeMap::new();
        for (key, value) in raw {
            if let Some((_, why)) = UNSUPPORTED_KEYS.iter().find(|(k, _)| *k == key) {
                return Err(ConfigError::Unsupported { key, why });
            }
            if IGNORED_KEYS.contains(&key.as_str()) {
                continue;
            }
            if !KEYS.iter().any(|(k, _)| *k == key) {
                return Err(ConfigError::UnknownKey(key));
            }
            given.insert(key, value);
        }
        // An empty value counts as not given, in the string and in the environment (libpq).
        let get = |key: &str| -> Option<String> {
            let from_env = KEYS
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, var)| var.and_then(env));
            given
                .get(key)
                .cloned()
                .filter(|v| !v.is_empty())
                .or(from_env)
                .filter(|v| !v.is_empty())
        };

        // libpq: comma-separated lists; an empty element is the default.
        let hosts: Vec<Host> = match get("host") {
            None => vec![Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR))],
            Some(list) => list
                .split(',')
                .map(|h| match h.trim() {
                    "" => Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR)),
                    h if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
                    h => Host::Tcp(h.to_owned()),
                })
                .collect(),
        };
        let hostaddrs: Vec<Option<IpAddr>> = match get("hostaddr") {
            None => vec![None; hosts.len()],
            Some(list) => list
                .split(',')
                .map(|v| match v.trim() {
                    "" => Ok(None),
                    v => v
                        .parse::<IpAddr>()
                        .map(Some)
                        .map_err(|_| ConfigError::InvalidValue {
                            key: "hostaddr",
                            value: v.to_owned(),
                            expected: "a numeric IP address",
                        }),
                })
                .collect::<Result<_, _>>()?,
        };
        let ports: Vec<u16> = match get("port") {
            None => vec![DEFAULT_PORT],
            Some(list) => list
                .split(',')
                .map(|v| match v.trim() {
                    "" => Ok(DEFAULT_PORT),
                    v => v.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                        ConfigError::InvalidValue {
                            key: "port",
                            value: v.to_owned(),
                            expected: "a number from 1 to 65535",
                        }
                    }),
                })
                .collect::<Result<_, _>>()?,
        };
        if hostaddrs.len() != hosts.len() {
            return Err(ConfigError::InvalidValue {
                key: "hostaddr",
                value: get("hostaddr").unwrap_or_default(),
                expected: "one address per host",
            });
        }
        if ports.len() != 1 && ports.len() != hosts.len() {
            return Err(ConfigError::InvalidValue {
                key: "port",
                value: get("port").unwrap_or_default(),
                expected: "one port for every host, or one port per host",
            });
        }
        let port_of = |i: usize| {
            ports
                .get(i)
                .or(ports.first())
                .copied()
                .unwrap_or(DEFAULT_PORT)
        };
        let target_session_attrs = match get("target_session_attrs") {
            Some(v) => SessionAttrs::parse(&v)?,
            None => SessionAttrs::Any,
        };
        let user = get("user")
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
            .ok_or(ConfigError::NoUser)?;
        let dbname = get("dbname").unwrap_or_else(|| user.clone());
        let sslmode = match get("sslmode") {
            Some(v) => SslMode::parse(&v)?,
            None => SslMode::Prefer,
        };
        let channel_binding = match get("channel_binding").as_deref() {
            None | Some("prefer") => ChannelBindingMode::Prefer,
            Some("disable") => ChannelBindingMode::Disable,
            Some("require") => ChannelBindingMode::Require,
            Some(v) => {
                return Err(ConfigError::InvalidValue {
                    key: "channel_binding",
                    value: v.to_owned(),
                    expected: "disable, prefer or require",
                });
            }
        };
        let connect_timeout = match get("connect_timeout") {
            None => None,
            Some(v) => match v.trim().parse::<i64>() {
                // libpq: zero or negative waits forever; 1 is raised to 2 seconds.
                Ok(n) if n <= 0 => None,
                Ok(n) => Some(Duration::from_secs(n.max(2).unsigned_abs())),
                Err(_) => {
                    return Err(ConfigError::InvalidValue {
                        key: "connect_timeout",
                        value: v,
                        expected: "whole seconds",
                    });
                }
            },
        };
        let tcp = TcpOptions {
            keepalives: match get("keepalives") {
                None => true,
                Some(v) => whole_number(&v, "keepalives", "0 or 1")? != 0,
            },
            keepalives_idle: positive_seconds(get("keepalives_idle"), "keepalives_idle")?,
            keepalives_interval: positive_seconds(
                get("keepalives_interval"),
                "keepalives_interval",
            )?,
            keepalives_count: match get("keepalives_count") {
                None => None,
                Some(v) => match whole_number(&v, "keepalives_count", "a whole number")? {
                    n if n <= 0 => None,
                    n => Some(u32::try_from(n).unwrap_or(u32::MAX)),
                },
            },
            tcp_user_timeout: match get("tcp_user_timeout") {
                None => None,
                Some(v) => match whole_number(&v, "tcp_user_timeout", "whole milliseconds")? {
                    n if n <= 0 => None,
                    n => Some(Duration::from_millis(n.unsigned_abs())),
                },
            },
        };

        let mut cfg = ConnConfig {
            host: hosts[0].clone(),
            hostaddr: hostaddrs[0],
            port: port_of(0),
            endpoints: Vec::new(),
            target_session_attrs,
            user,
            dbname,
            password: None,
            sslmode,
            sslrootcert: get("sslrootcert").map(PathBuf::from),
            channel_binding,
            application_name: get("application_name").or_else(|| get("fallback_application_name")),
            options: get("options"),
            connect_timeout,
            tcp,
        };
        let passfile = match get("password") {
            Some(_) => None,
            None => get("passfile")
                .map(PathBuf::from)
                .or_else(|| home.map(|h| h.join(".pgpass")))
                .and_then(|path| read_passfile(&path)),
        };
        // The passfile is matched per host, as libpq does: each host may have its own line.
        for (i, (host, hostaddr)) in hosts.into_iter().zip(hostaddrs).enumerate() {
            cfg.host = host;
            cfg.hostaddr = hostaddr;
            cfg.port = port_of(i);
            let password = match (get("password"), &passfile) {
                (Some(p), _) => Some(Password(p)),
                (None, Some(contents)) => cfg.password_from_passfile(contents).map(Password),
                (None, None) => None,
            };
            cfg.endpoints.push(Endpoint {
                host: cfg.host.clone(),
                hostaddr,
                port: cfg.port,
                password,
            });
        }
        Ok(cfg.on(0))
    }

    /// The password line of a passfile's contents that matches this connection, if any.
    pub fn password_from_passfile(&self, contents: &str) -> Option<String> {
        let host = match &self.host {
            Host::Tcp(h) => h.clone(),
            // libpq matches the default socket directory as "localhost".
            Host::Unix(dir) if dir == Path::new(DEFAULT_SOCKET_DIR) => "localhost".to_owned(),
            Host::Unix(dir) => dir.to_string_lossy().into_owned(),
        };
        let port = self.port.to_string();
        let wanted = [host.as_str(), port.as_str(), &self.dbname, &self.user];
        contents.lines().find_map(|line| {
            let line = line.trim_end_matches('\r');
            if line.starts_with('#') || line.trim().is_empty() {
                return None;
            }
            let fields = split_passfile_line(line)?;
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want);
            matches.then(|| fields[4].clone())
        })
    }

    /// This configuration on its `i`th host alone (`i` < the number of hosts).
    fn on(&self, i: usize) -> ConnConfig {
        let mut cfg = self.clone();
        if let Some(e) = self.endpoints.get(i) {
            cfg.host = e.host.clone();
            cfg.hostaddr = e.hostaddr;
            cfg.port = e.port;
            cfg.password = e.password.clone();
        }
        cfg
    }

    /// One single-host configuration per host of the string, in the order to try them. A
    /// connection string with one host gives itself.
    pub fn candidates(&self) -> Vec<ConnConfig> {
        (0..self.endpoints.len().max(1))
            .map(|i| {
                let mut cfg = self.on(i);
                cfg.endpoints = self.endpoints.get(i).cloned().into_iter().collect();
                cfg
            })
            .collect()
    }

    /// Whether the string names more than one host.
    pub fn is_multi_host(&self) -> bool {
        self.endpoints.len() > 1
    }

    pub fn target_session_attrs(&self) -> SessionAttrs {
        self.target_session_attrs
    }

    /// The (first) host; see [`ConnConfig::candidates`] for all of them.
    pub fn host(&self) -> &Host {
        &self.host
    }
    pub fn hostaddr(&self) -> Option<IpAddr> {
        self.hostaddr
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn user(&self) -> &str {
        &self.user
    }
    pub fn dbname(&self) -> &str {
        &self.dbname
    }
    pub fn password(&self) -> Option<&Password> {
        self.password.as_ref()
    }
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }
    pub fn sslrootcert(&self) -> Option<&Path> {
        self.sslrootcert.as_deref()
    }
    pub fn channel_binding(&self) -> ChannelBindingMode {
        self.channel_binding
    }
    pub fn application_name(&self) -> Option<&str> {
        self.application_name.as_deref()
    }
    /// Server settings for the session (`-c name=value ...`), sent in the startup packet.
    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }
    pub fn tcp(&self) -> TcpOptions {
        self.tcp
    }

    /// Use `limit` as `connect_timeout` unless the connection string gave one: lsnpipe's own
    /// timeouts (`--replication-timeout`, `--target-timeout`) bound connecting too, where
    /// libpq would wait forever.
    pub fn with_default_connect_timeout(mut self, limit: Duration) -> Self {
        if self.connect_timeout.is_none() && !limit.is_zero() {
            self.connect_timeout = Some(limit);
        }
        self
    }

    /// Use `name` as `application_name` unless the user chose one (libpq's
    /// `fallback_application_name`).
    pub fn with_fallback_application_name(mut self, name: &str) -> Self {
        if self.application_name.is_none() {
            self.application_name = Some(name.to_owned());
        }
        self
    }

    /// The same settings for another database (e.g. the maintenance database).
    pub fn with_dbname(&self, dbname: &str) -> Self {
        ConnConfig {
            dbname: dbname.to_owned(),
            ..self.clone()
        }
    }

    /// A key/value connection string without the password, for logs and errors.
    pub fn redacted(&self) -> String {
        let (hosts, ports) = if self.endpoints.len() > 1 {
            let hosts: Vec<String> = self.endpoints.iter().map(|e| e.host.to_string()).collect();
            let ports: Vec<String> = self.endpoints.iter().map(|e| e.port.to_string()).collect();
            (hosts.join(","), ports.join(","))
        } else {
            (self.host.to_string(), self.port.to_string())
        };
        let mut parts = vec![
            format!("host={}", quote_value(&hosts)),
            format!("port={ports}"),
            format!("user={}", quote_value(&self.user)),
            format!("dbname={}", quote_value(&self.dbname)),
            format!("sslmode={}", self.sslmode.as_str()),
        ];
        if self.endpoints.len() > 1 {
            if self.endpoints.iter().any(|e| e.hostaddr.is_some()) {
                let addrs: Vec<String> = self
                    .endpoints
                    .iter()
                    .map(|e| e.hostaddr.map(|a| a.to_string()).unwrap_or_default())
                    .collect();
                parts.push(format!("hostaddr={}", addrs.join(",")));
            }
        } else if let Some(addr) = self.hostaddr {
            parts.push(format!("hostaddr={addr}"));
        }
        if self.target_session_attrs != SessionAttrs::Any {
            parts.push(format!(
                "target_session_attrs={}",
                self.target_session_attrs.as_str()
            ));
        }
        if let Some(root) = &self.sslrootcert {
            parts.push(format!(
                "sslrootcert={}",
                quote_value(&root.to_string_lossy())
            ));
        }
        if let Some(app) = &self.application_name {
            parts.push(format!("application_name={}", quote_value(app)));
        }
        if let Some(options) = &self.options {
            parts.push(format!("options={}", quote_value(options)));
        }
        if self.password.is_some() {
            parts.push("password=<redacted>".to_owned());
        }
        parts.join(" ")
    }
}

impl fmt::Display for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnConfig({})", self.redacted())
    }
}

/// A whole number as libpq reads one (surrounding blanks allowed).
fn whole_number(v: &str, key: &'static str, expected: &'static str) -> Result<i64, ConfigError> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| ConfigError::InvalidValue {
            key,
            value: v.to_owned(),
            expected,
        })
}

/// Seconds for a keepalive setting; zero or less keeps the system default (libpq).
fn positive_seconds(v: Option<String>, key: &'static str) -> Result<Option<Duration>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    Ok(match whole_number(&v, key, "whole seconds")? {
        n if n <= 0 => None,
        n => Some(Duration::from_secs(n.unsigned_abs())),
    })
}

fn quote_value(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_owned();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Read a passfile the way libpq does: missing is fine, and a file others can read is ignored.
fn read_passfile(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "password file has group or world access and is ignored; chmod 0600 it"
            );
            return None;
        }
    }
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read password file");
            None
        }
    }
}

/// `host:port:db:user:password`, with `\:` and `\\` escapes; `None` for a malformed line.
fn split_passfile_line(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut()?.push(next);
                }
            }
            // The password is the rest of the line, colons and all.
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

/// libpq's `key=value` syntax: values may be single-quoted; `\` escapes the next character.
fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let bytes: Vec<(usize, char)> = s.char_indices().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let at = |i: usize| bytes.get(i).map_or(s.len(), |(b, _)| *b);
    let skip_ws = |i: &mut usize| {
        while bytes.get(*i).is_some_and(|(_, c)| c.is_whitespace()) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&(_, c)) = bytes.get(i) {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            i += 1;
        }
        skip_ws(&mut i);
        if bytes.get(i).map(|(_, c)| *c) != Some('=') {
            return Err(ConfigError::Syntax {
                at: at(i),
                reason: "expected \"=\" after the option name",
            });
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if bytes.get(i).map(|(_, c)| *c) == Some('\'') {
            i += 1;
            loop {
                match bytes.get(i).map(|(_, c)| *c) {
                    None => {
                        return Err(ConfigError::Syntax {
                            at: at(i),
                            reason: "unterminated quoted value",
                        });
                    }
                    Some('\\') => {
                        i += 1;
                        match bytes.get(i) {
                            Some(&(_, c)) => value.push(c),
                            None => {
                                return Err(ConfigError::Syntax {
                                    at: at(i),
                                    reason: "unterminated quoted value",
                                });
                            }
                        }
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => value.push(c),
                }
                i += 1;
            }
        } else {
            while let Some(&(_, c)) = bytes.get(i) {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    i += 1;
                    if let Some(&(_, next)) = bytes.get(i) {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
                i += 1;
            }
        }
        out.push((key, value));
    }
}

/// `postgres[ql]://[user[:password]@][host][:port][/dbname][?key=value&...]`.
fn parse_url(s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let scheme_len = s.find("://").map_or(0, |i| i + 3);
    let rest = &s[scheme_len..];
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let mut out = Vec::new();
    let offset = |part: &str| scheme_len + (part.as_ptr() as usize - rest.as_ptr() as usize);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            out.push(("user".to_owned(), percent_decode(user, offset(user))?));
        }
        if let Some(p) = password {
            out.push(("password".to_owned(), percent_decode(p, offset(p))?));
        }
    }
    // `host1:port1,host2:port2`: one host/port pair per comma-separated element.
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for hostport in hostport.split(',') {
        let (host, port) = url_host_port(hostport, offset(hostport))?;
        hosts.push(host);
        ports.push(port.unwrap_or_default());
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        out.push(("host".to_owned(), hosts.join(",")));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        out.push(("port".to_owned(), ports.join(",")));
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.push(("dbname".to_owned(), percent_decode(db, offset(db))?));
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(ConfigError::Syntax {
                at: offset(pair),
                reason: "expected key=value in the URL query",
            });
        };
        let key = percent_decode(k, offset(k))?;
        let value = percent_decode(v, offset(v))?;
        // libpq's JDBC-compatible spelling.
        if key == "ssl" && value == "true" {
            out.push(("sslmode".to_owned(), "require".to_owned()));
        } else {
            out.push((key, value));
        }
    }
    Ok(out)
}

/// One `host[:port]` (or `[v6addr][:port]`) element of a URL's authority, `at` its offset.
fn url_host_port(hostport: &str, at: usize) -> Result<(String, Option<&str>), ConfigError> {
    let offset = |part: &str| at + (part.as_ptr() as usize - hostport.as_ptr() as usize);
    if let Some(v6) = hostport.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(ConfigError::Syntax {
                at,
                reason: "missing \"]\" after an IPv6 address",
            });
        };
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => {
                return Err(ConfigError::Syntax {
                    at: offset(after),
                    reason: "expected \":\" and a port after the IPv6 address",
                });
            }
        };
        return Ok((addr.to_owned(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Ok((percent_decode(h, offset(h))?, Some(p))),
        None => Ok((percent_decode(hostport, at)?, None)),
    }
}

fn percent_decode(s: &str, at: usize) -> Result<String, ConfigError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(0) | None => {
                    return Err(ConfigError::Syntax {
                        at: at + i,
                        reason: "invalid percent-encoding (need %XX, not %00)",
                    });
                }
                Some(byte) => out.push(byte),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConfigError::Syntax {
        at,
        reason: "percent-decoded text is not UTF-8",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, env: &[(&str, &str)]) -> Result<ConnConfig, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ConnConfig::parse_with(
            s,
            &move |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            None,
        )
    }

    #[test]
    fn key_values_with_quotes_and_escapes() {
        let c = parse(
            r"host=db.example port = 6543 user='o\'brien' dbname='my \\ db' password=p\ w sslmode=verify-full options='-c wal_sender_timeout=2s'",
            &[],
        )
        .unwrap();
        assert_eq!(c.host(), &Host::Tcp("db.example".into()));
        assert_eq!(c.port(), 6543);
        assert_eq!(c.user(), "o'brien");
        assert_eq!(c.dbname(), r"my \ db");
        assert_eq!(c.password().unwrap().expose(), "p w");
        assert_eq!(c.sslmode(), SslMode::VerifyFull);
        assert_eq!(c.options(), Some("-c wal_sender_timeout=2s"));
    }

    #[test]
    fn tcp_options_as_libpq_reads_them() {
        let c = parse(
            "user=a keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=3 \
             tcp_user_timeout=9000",
            &[],
        )
        .unwrap();
        let tcp = c.tcp();
        assert!(tcp.keepalives);
        assert_eq!(tcp.keepalives_idle, Some(Duration::from_secs(5)));
        assert_eq!(tcp.keepalives_interval, Some(Duration::from_secs(2)));
        assert_eq!(tcp.keepalives_count, Some(3));
        assert_eq!(tcp.tcp_user_timeout, Some(Duration::from_millis(9000)));

        // Zero keeps the system default; keepalives=0 turns probes off.
        let c = parse(
            "user=a keepalives=0 keepalives_idle=0 tcp_user_timeout=0",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.tcp(),
            TcpOptions {
                keepalives: false,
                ..TcpOptions::default()
            }
        );
        assert!(parse("user=a", &[]).unwrap().tcp().keepalives);
        assert!(matches!(
            parse("user=a keepalives_idle=soon", &[]),
            Err(ConfigError::InvalidValue {
                key: "keepalives_idle",
                ..
            })
        ));
    }

    #[test]
    fn lsnpipe_timeouts_bound_connecting_unless_the_string_says_otherwise() {
        let ten = Duration::from_secs(10);
        let c = parse("user=a", &[])
            .unwrap()
            .with_default_connect_timeout(ten);
        assert_eq!(c.connect_timeout(), Some(ten));
        let c = parse("user=a connect_timeout=3", &[])
            .unwrap()
            .with_default_connect_timeout(ten);
        assert_eq!(c.connect_timeout(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn key_value_errors() {
        assert!(matches!(
            parse("host", &[]),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            parse("user='abc", &[]),
            Err(ConfigError::Syntax { .. })
        ));
        assert_eq!(
            parse("user=a colour=blue", &[]),
            Err(ConfigError::UnknownKey("colour".into()))
        );
        assert!(matches!(
            parse("user=a port=0", &[]),
            Err(ConfigError::InvalidValue { key: "port", .. })
        ));
        assert!(matches!(
            parse("user=a sslmode=maybe", &[]),
            Err(ConfigError::InvalidValue { key: "sslmode", .. })
        ));
        assert!(matches!(
            parse("user=a sslcert=/x", &[]),
            Err(ConfigError::Unsupported { .. })
        ));
    }

    #[test]
    fn urls_with_percent_encoding_and_query() {
        let c = parse(
            "postgresql://us%40er:p%3Ass@db.example:5433/my%20db?sslmode=require&application_name=lsn%2Fpipe&options=-c%20a%3Db",
            &[],
        )
        .unwrap();
        assert_eq!(c.user(), "us@er");
        assert_eq!(c.password().unwrap().expose(), "p:ss");
        assert_eq!(c.host(), &Host::Tcp("db.example".into()));
        assert_eq!(c.port(), 5433);
        assert_eq!(c.dbname(), "my db");
        assert_eq!(c.sslmode(), SslMode::Require);
        assert_eq!(c.application_name(), Some("lsn/pipe"));
        assert_eq!(c.options(), Some("-c a=b"));

        let c = parse("postgres://[::1]:7000/x?user=u", &[]).unwrap();
        assert_eq!(c.host(), &Host::Tcp("::1".into()));
        assert_eq!(c.port(), 7000);

        let c = parse("postgres://%2Ftmp%2Fpg/db?user=u&port=5999", &[]).unwrap();
        assert_eq!(c.host(), &Host::Unix("/tmp/pg".into()));
        assert_eq!(c.port(), 5999);

        assert!(parse("postgres://u@h/db?sslmode", &[]).is_err());
        assert!(parse("postgres://u@h/d%zz", &[]).is_err());
        assert!(parse("postgres://u@h/d%00", &[]).is_err());
    }

    #[test]
    fn environment_fills_gaps_and_string_wins() {
        let env = [
            ("PGHOST", "/run/pg"),
            ("PGPORT", "5499"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
            ("PGPASSWORD", "envpw"),
            ("PGSSLMODE", "disable"),
            ("PGAPPNAME", "app"),
            ("PGOPTIONS", "-c x=1"),
            ("PGCONNECT_TIMEOUT", "1"),
            ("PGSSLROOTCERT", "/ca.pem"),
        ];
        let c = parse("", &env).unwrap();
        assert_eq!(c.host(), &Host::Unix("/run/pg".into()));
        assert_eq!(c.port(), 5499);
        assert_eq!(c.user(), "envuser");
        assert_eq!(c.dbname(), "envdb");
        assert_eq!(c.password().unwrap().expose(), "envpw");
        assert_eq!(c.sslmode(), SslMode::Disable);
        assert_eq!(c.application_name(), Some("app"));
        assert_eq!(c.options(), Some("-c x=1"));
        assert_eq!(c.connect_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(c.sslrootcert(), Some(Path::new("/ca.pem")));

        assert_eq!(
            c.clone()
                .with_fallback_application_name("lsnpipe")
                .application_name(),
            Some("app")
        );
        let c = parse("user=me port=1234", &env).unwrap();
        assert_eq!(c.user(), "me");
        assert_eq!(c.port(), 1234);

        let c = parse("", &[("USER", "osuser")]).unwrap();
        assert_eq!(c.user(), "osuser");
        assert_eq!(c.dbname(), "osuser");
        assert_eq!(c.host(), &Host::Unix(DEFAULT_SOCKET_DIR.into()));
        assert_eq!(c.port(), DEFAULT_PORT);
        assert_eq!(c.sslmode(), SslMode::Prefer);
        assert_eq!(
            c.with_fallback_application_name("lsnpipe")
                .application_name(),
            Some("lsnpipe")
        );
        assert_eq!(parse("", &[]), Err(ConfigError::NoUser));
    }

    #[test]
    fn passfile_matching_wildcards_and_escapes() {
        let c = parse("host=db port=5432 user=app dbname=shop", &[]).unwrap();
        let file = "\
# comment
other:5432:shop:app:wrong-host
db:5433:shop:app:wrong-port
db:5432:*:nobody:wrong-user
db:*:shop:app:first\\:match:with colons
*:*:*:*:fallback
";
        assert_eq!(
            c.password_from_passfile(file).as_deref(),
            Some("first:match:with colons")
        );
        assert_eq!(
            c.password_from_passfile("*:*:*:*:any\n").as_deref(),
            Some("any")
        );
        assert_eq!(c.password_from_passfile("db:5432:shop\n"), None);

        let c = parse(r"host=/var/run/postgresql user=a\:b dbname=d", &[]).unwrap();
        assert_eq!(
            c.password_from_passfile("localhost:5432:d:a\\:b:sock\n")
                .as_deref(),
            Some("sock")
        );
        let c = parse("host=/tmp/x user=u dbname=d", &[]).unwrap();
        assert_eq!(
            c.password_from_passfile("/tmp/x:5432:d:u:dir\\\\pw\n")
                .as_deref(),
            Some("dir\\pw")
        );
    }

    #[test]
    fn passfile_is_read_only_when_private() {
        let dir = std::env::temp_dir().join(format!("lsnpipe-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pgpass");
        std::fs::write(&path, "*:*:*:u:secret\n").unwrap();
        let conn = format!("host=h user=u passfile={}", path.display());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(parse(&conn, &[]).unwrap().password().is_none());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            parse(&conn, &[]).unwrap().password().unwrap().expose(),
            "secret"
        );
        let home = ConnConfig::parse_with("host=h user=u", &|_| None, Some(&dir));
        assert!(
            home.unwrap().password().is_none(),
            "no .pgpass in that home"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn hosts(c: &ConnConfig) -> Vec<String> {
        c.candidates()
            .iter()
            .map(|c| format!("{}:{}", c.host(), c.port()))
            .collect()
    }

    #[test]
    fn several_hosts_with_one_port_each_or_one_for_all() {
        let c = parse("host=a,b,c port=5432,5433,5434 user=u", &[]).unwrap();
        assert_eq!(hosts(&c), ["a:5432", "b:5433", "c:5434"]);
        assert!(c.is_multi_host());
        assert_eq!(
            c.host(),
            &Host::Tcp("a".into()),
            "the first host is the default"
        );
        assert_eq!(c.target_session_attrs(), SessionAttrs::Any);
        let c = parse("host=a,b port=6000 user=u", &[]).unwrap();
        assert_eq!(hosts(&c), ["a:6000", "b:6000"]);
        // An empty element is the default, as in libpq.
        let c = parse("host=a,,/tmp/s port=,7000, user=u", &[]).unwrap();
        assert_eq!(
            hosts(&c),
            [
                "a:5432".to_owned(),
                format!("{DEFAULT_SOCKET_DIR}:7000"),
                "/tmp/s:5432".to_owned()
            ]
        );
        let one = parse("host=a port=1 user=u", &[]).unwrap();
        assert!(!one.is_multi_host());
        assert_eq!(hosts(&one), ["a:1"]);
        // Each candidate is a single-host configuration again.
        assert!(c.candidates().iter().all(|c| !c.is_multi_host()));
    }

    #[test]
    fn several_hosts_in_a_url() {
        let c = parse(
            "postgresql://u@a:5432,b:5433,[::1]:5434/db?target_session_attrs=read-write",
            &[],
        )
        .unwrap();
        assert_eq!(hosts(&c), ["a:5432", "b:5433", "::1:5434"]);
        assert_eq!(c.target_session_attrs(), SessionAttrs::ReadWrite);
        assert_eq!(c.dbname(), "db");
        let c = parse("postgres://u@a,b:6000/db", &[]).unwrap();
        assert_eq!(hosts(&c), ["a:5432", "b:6000"]);
    }

    #[test]
    fn host_lists_that_do_not_match_are_refused() {
        let err = parse("host=a,b,c port=1,2 user=u", &[]).unwrap_err();
        assert!(err.to_string().contains("one port per host"), "{err}");
        let err = parse("host=a,b hostaddr=10.0.0.1 user=u", &[]).unwrap_err();
        assert!(err.to_string().contains("one address per host"), "{err}");
        let err = parse("host=a,b port=1,x user=u", &[]).unwrap_err();
        assert!(err.to_string().contains("\"x\""), "{err}");
        let c = parse("host=a,b hostaddr=10.0.0.1,10.0.0.2 user=u", &[]).unwrap();
        let addrs: Vec<_> = c.candidates().iter().map(|c| c.hostaddr()).collect();
        assert_eq!(
            addrs,
            [
                Some("10.0.0.1".parse().unwrap()),
                Some("10.0.0.2".parse().unwrap())
            ]
        );
    }

    #[test]
    fn target_session_attrs_from_the_string_or_the_environment() {
        for (value, attrs) in [
            ("any", SessionAttrs::Any),
            ("read-write", SessionAttrs::ReadWrite),
            ("primary", SessionAttrs::Primary),
        ] {
            let c = parse(
                &format!("host=a,b user=u target_session_attrs={value}"),
                &[],
            )
            .unwrap();
            assert_eq!(c.target_session_attrs(), attrs);
        }
        let c = parse("host=a user=u", &[("PGTARGETSESSIONATTRS", "primary")]).unwrap();
        assert_eq!(c.target_session_attrs(), SessionAttrs::Primary);
        let err = parse("host=a user=u target_session_attrs=standby", &[]).unwrap_err();
        assert!(err.to_string().contains("read-write or primary"), "{err}");
        let err = parse("host=a user=u target_session_attrs=bogus", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err}");
    }

    #[test]
    fn session_attrs_accept_by_role() {
        use SessionAttrs::*;
        // (in hot standby, default read-only)
        assert!(Any.accepts(true, true));
        assert!(Primary.accepts(false, true) && !Primary.accepts(true, false));
        assert!(ReadWrite.accepts(false, false));
        assert!(!ReadWrite.accepts(false, true) && !ReadWrite.accepts(true, false));
    }

    #[test]
    fn redacted_shows_every_host_and_the_attrs_but_no_password() {
        let c = parse(
            "host=a,b port=1,2 user=u password=secret target_session_attrs=primary",
            &[],
        )
        .unwrap();
        let text = c.redacted();
        assert!(text.contains("host=a,b port=1,2"), "{text}");
        assert!(text.contains("target_session_attrs=primary"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        // The redacted form parses back to the same hosts.
        assert_eq!(hosts(&parse(&text, &[]).unwrap()), ["a:1", "b:2"]);
    }

    #[test]
    fn the_passfile_is_matched_per_host() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lsnpipe-pgpass-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pgpass");
        std::fs::write(&path, "a:1:*:u:pw-a\nb:2:*:u:pw-b\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = parse(
            &format!("host=a,b port=1,2 user=u passfile={}", path.display()),
            &[],
        );
        let per_host: Vec<_> = c
            .unwrap()
            .candidates()
            .iter()
            .map(|c| c.password().map(|p| p.expose().to_owned()))
            .collect();
        assert_eq!(per_host, [Some("pw-a".to_owned()), Some("pw-b".to_owned())]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_fails_without_panicking(s in "\\PC{0,60}") {
            let _ = parse(&s, &[]);
            let _ = parse(&format!("postgres://{s}"), &[]);
        }

        #[test]
        fn quoted_values_come_back_unchanged(v in "[^\\x00]{1,40}") {
            let c = parse(&format!("user=u application_name={}", quote_value(&v)), &[]).unwrap();
            proptest::prop_assert_eq!(c.application_name(), Some(v.as_str()));
        }
    }

    #[test]
    fn password_never_prints() {
        let c = parse("host=h user=u password=hunter2 dbname=d", &[]).unwrap();
        for shown in [format!("{c}"), format!("{c:?}"), c.redacted()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("password=<redacted>"), "{shown}");
        }
        let c = parse("postgres://u:hunter2@h/d", &[]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
