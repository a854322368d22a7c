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

mod passfile;
mod settings;
mod syntax;
#[cfg(test)]
mod tests;

use passfile::read_passfile;
use settings::Endpoint;
pub use settings::{ChannelBindingMode, Host, Password, SessionAttrs, SslMode, TcpOptions};
use syntax::{parse_key_values, parse_url, positive_seconds, quote_value, whole_number};

/// Where libpq looks for the server's Unix socket when no host is given (Debian's build).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";
pub const DEFAULT_PORT: u16 = 5432;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnConfigError {
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
    pub fn parse(s: &str) -> Result<Self, ConnConfigError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::parse_with(s, &|name| std::env::var(name).ok(), home.as_deref())
    }

    /// [`ConnConfig::parse`] with the environment and home directory given explicitly.
    pub fn parse_with(
        s: &str,
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<Self, ConnConfigError> {
        let raw = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            parse_url(s)?
        } else {
            parse_key_values(s)?
        };
        let mut given = BTreeMap::new();
        for (key, value) in raw {
            if let Some((_, why)) = UNSUPPORTED_KEYS.iter().find(|(k, _)| *k == key) {
                return Err(ConnConfigError::Unsupported { key, why });
            }
            if IGNORED_KEYS.contains(&key.as_str()) {
                continue;
            }
            if !KEYS.iter().any(|(k, _)| *k == key) {
                return Err(ConnConfigError::UnknownKey(key));
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
            Some(list) => {
                list.split(',')
                    .map(|v| match v.trim() {
                        "" => Ok(None),
                        v => v.parse::<IpAddr>().map(Some).map_err(|_| {
                            ConnConfigError::InvalidValue {
                                key: "hostaddr",
                                value: v.to_owned(),
                                expected: "a numeric IP address",
                            }
                        }),
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let ports: Vec<u16> = match get("port") {
            None => vec![DEFAULT_PORT],
            Some(list) => list
                .split(',')
                .map(|v| match v.trim() {
                    "" => Ok(DEFAULT_PORT),
                    v => v.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                        ConnConfigError::InvalidValue {
                            key: "port",
                            value: v.to_owned(),
                            expected: "a number from 1 to 65535",
                        }
                    }),
                })
                .collect::<Result<_, _>>()?,
        };
        if hostaddrs.len() != hosts.len() {
            return Err(ConnConfigError::InvalidValue {
                key: "hostaddr",
                value: get("hostaddr").unwrap_or_default(),
                expected: "one address per host",
            });
        }
        if ports.len() != 1 && ports.len() != hosts.len() {
            return Err(ConnConfigError::InvalidValue {
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
            .ok_or(ConnConfigError::NoUser)?;
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
                return Err(ConnConfigError::InvalidValue {
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
                    return Err(ConnConfigError::InvalidValue {
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

    /// Use `name` as `application_name`, whatever the user chose (for a session that must be
    /// recognisable, see `apply::guard`).
    pub fn with_application_name(mut self, name: &str) -> Self {
        self.application_name = Some(name.to_owned());
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
