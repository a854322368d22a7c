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
];

/// libpq options that only tune behaviour lsnpipe does not have; accepted and ignored.
const IGNORED_KEYS: &[&str] = &[
    "target_session_attrs",
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

        let host = match get("host") {
            Some(h) if h.contains(',') => {
                return Err(ConfigError::Unsupported {
                    key: "host".into(),
                    why: "give one host, not a list",
                });
            }
            Some(h) if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
            Some(h) => Host::Tcp(h),
            None => Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR)),
        };
        let hostaddr = get("hostaddr")
            .map(|v| {
                v.parse::<IpAddr>().map_err(|_| ConfigError::InvalidValue {
                    key: "hostaddr",
                    value: v.clone(),
                    expected: "a numeric IP address",
                })
            })
            .transpose()?;
        let port = match get("port") {
            None => DEFAULT_PORT,
            Some(v) => {
                v.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(ConfigError::InvalidValue {
                        key: "port",
                        value: v,
                        expected: "a number from 1 to 65535",
                    })?
            }
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
            host,
            hostaddr,
            port,
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
        cfg.password = match get("password") {
            Some(p) => Some(Password(p)),
            None => {
                let passfile = get("passfile")
                    .map(PathBuf::from)
                    .or_else(|| home.map(|h| h.join(".pgpass")));
                passfile
                    .and_then(|path| read_passfile(&path))
                    .and_then(|contents| cfg.password_from_passfile(&contents))
                    .map(Password)
            }
        };
        Ok(cfg)
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
        let mut parts = vec![
            format!("host={}", quote_value(&self.host.to_string())),
            format!("port={}", self.port),
            format!("user={}", quote_value(&self.user)),
            format!("dbname={}", quote_value(&self.dbname)),
            format!("sslmode={}", self.sslmode.as_str()),
        ];
        if let Some(addr) = self.hostaddr {
            parts.push(format!("hostaddr={addr}"));
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
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(ConfigError::Syntax {
                at: offset(hostport),
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
        (addr.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (percent_decode(h, offset(h))?, Some(p)),
            None => (percent_decode(hostport, offset(hostport))?, None),
        }
    };
    if !host.is_empty() {
        out.push(("host".to_owned(), host));
    }
    if let Some(port) = port.filter(|p| !p.is_empty()) {
        out.push(("port".to_owned(), port.to_owned()));
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
