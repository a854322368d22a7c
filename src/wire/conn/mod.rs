//! One replication connection: socket (TCP, TLS or Unix), backend framing (including the
//! CopyBothResponse `W` that postgres-protocol does not know), startup and authentication.
//!
//! ```text
//! connect ─▶ [SSLRequest ─▶ 'S' ─▶ TLS handshake] ─▶ StartupMessage(replication=database)
//!         ─▶ auth: trust | cleartext | MD5 | SCRAM-SHA-256[-PLUS] ─▶ ParameterStatus* ─▶ 'Z'
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{
    ErrorFields, ErrorResponseBody, Header, Message, NoticeResponseBody,
};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::conn_config::{ChannelBindingMode, ConnConfig, Host, SslMode, TcpOptions};
use super::error::{ServerError, WireError};
use super::tls::{TlsSettings, channel_binding_of};

/// A byte stream to the server, whatever carries it.
pub trait ServerStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ServerStream for T {}

pub type BoxStream = Box<dyn ServerStream>;

/// A backend message, or the CopyBothResponse that opens streaming.
pub enum Backend {
    CopyBoth,
    Message(Message),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::CopyBoth => f.write_str("CopyBothResponse"),
            Backend::Message(m) => f.write_str(describe(m)),
        }
    }
}

const COPY_BOTH_TAG: u8 = b'W';
/// The server cannot build a message over 1 GiB (its allocation limit); a larger length is
/// corruption, and must not make us reserve that much memory.
const MAX_FRAME: usize = (1 << 30) + (1 << 20);

/// Reads whole backend frames from `io`, buffering partial ones.
#[derive(Debug)]
pub struct FrameReader<R> {
    pub io: R,
    buf: BytesMut,
    /// Longest wait for bytes before the server is presumed gone; `None` waits forever.
    idle_limit: Option<Duration>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
            idle_limit: None,
        }
    }

    pub fn into_parts(self) -> (R, BytesMut) {
        (self.io, self.buf)
    }

    pub fn from_parts(io: R, buf: BytesMut) -> Self {
        FrameReader {
            io,
            buf,
            idle_limit: None,
        }
    }

    pub fn set_idle_limit(&mut self, limit: Option<Duration>) {
        self.idle_limit = limit;
    }

    pub fn idle_limit(&self) -> Option<Duration> {
        self.idle_limit
    }

    /// The next frame; `doing` names the step for the error if the connection ends.
    pub async fn next(&mut self, doing: &'static str) -> Result<Backend, WireError> {
        loop {
            if let Some(frame) = self.parse_buffered()? {
                return Ok(frame);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            let read = self.io.read_buf(&mut self.buf);
            let n = match self.idle_limit {
                None => read.await,
                Some(limit) => {
                    tokio::time::timeout(limit, read)
                        .await
                        .map_err(|_| WireError::Silent {
                            seconds: limit.as_secs(),
                        })?
                }
            }
            .map_err(WireError::io(doing))?;
            if n == 0 {
                return Err(WireError::Closed { doing });
            }
        }
    }

    fn parse_buffered(&mut self) -> Result<Option<Backend>, WireError> {
        let protocol = |e: std::io::Error| WireError::Protocol(format!("bad frame: {e}"));
        let Some(header) = Header::parse(&self.buf).map_err(protocol)? else {
            return Ok(None);
        };
        // Header::parse has rejected lengths below 4.
        let total = usize::try_from(header.len())
            .map_err(|_| WireError::Protocol("negative frame length".into()))?
            + 1;
        if total > MAX_FRAME {
            return Err(WireError::Protocol(format!(
                "a {total}-byte frame (tag {:#04x}) is larger than any the server sends",
                header.tag()
            )));
        }
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        if header.tag() == COPY_BOTH_TAG {
            // Format (u8), column count (u16), then a u16 format code per column; the walsender
            // sends no columns, and nothing here depends on them.
            let mut frame = self.buf.split_to(total);
            frame.advance(5);
            if frame.len() < 3 {
                return Err(WireError::Protocol("CopyBothResponse too short".into()));
            }
            return Ok(Some(Backend::CopyBoth));
        }
        match Message::parse(&mut self.buf).map_err(protocol)? {
            Some(m) => Ok(Some(Backend::Message(m))),
            None => Err(WireError::Protocol("frame vanished while parsing".into())),
        }
    }
}

/// Decode an ErrorResponse body.
pub fn server_error(body: &ErrorResponseBody) -> ServerError {
    decode_fields(body.fields())
}

/// Decode a NoticeResponse body (same fields as an error).
pub fn server_notice(body: &NoticeResponseBody) -> ServerError {
    decode_fields(body.fields())
}

fn decode_fields(mut fields: ErrorFields<'_>) -> ServerError {
    let mut e = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    let mut localized_severity = String::new();
    // A malformed field list keeps whatever was decoded before it.
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => e.severity = value,
            b'S' => localized_severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            b'H' => e.hint = Some(value),
            _ => {}
        }
    }
    if e.severity.is_empty() {
        e.severity = localized_severity;
    }
    e
}

/// A logged-in session: the frame reader over the socket and what the server told us.
#[derive(Debug)]
pub struct Session {
    pub frames: FrameReader<BoxStream>,
    pub parameters: HashMap<String, String>,
    pub server_version_num: u32,
}

impl std::fmt::Debug for dyn ServerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerStream")
    }
}

impl Session {
    pub async fn send(&mut self, out: &[u8], doing: &'static str) -> Result<(), WireError> {
        write_flush(&mut self.frames.io, out, doing).await
    }
}

/// Connect and log in with `replication=database`.
pub async fn open_replication(cfg: &ConnConfig) -> Result<Session, WireError> {
    let work = open(cfg);
    match cfg.connect_timeout() {
        None => work.await,
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(WireError::ConnectTimeout {
                target: cfg.redacted(),
                seconds: limit.as_secs(),
            })
        }),
    }
}

async fn open(cfg: &ConnConfig) -> Result<Session, WireError> {
    let (stream, binding) = connect_socket(cfg).await?;
    let mut frames = FrameReader::new(stream);
    let mut out = BytesMut::new();
    let mut params: Vec<(&str, &str)> = vec![
        ("user", cfg.user()),
        ("database", cfg.dbname()),
        ("replication", "database"),
        ("client_encoding", "UTF8"),
    ];
    // pgoutput prints values with the walsender session's settings: the ones every other
    // session parses with.
    params.extend(super::SESSION_SETTINGS);
    if let Some(app) = cfg.application_name() {
        params.push(("application_name", app));
    }
    if let Some(options) = cfg.options() {
        params.push(("options", options));
    }
    frontend::startup_message(params, &mut out)
        .map_err(|e| WireError::Protocol(format!("cannot build the startup message: {e}")))?;
    write_flush(&mut frames.io, &out, "sending the startup message").await?;
    authenticate(cfg, &mut frames, binding).await?;

    let mut parameters = HashMap::new();
    loop {
        match frames.next("starting the session").await? {
            Backend::Message(Message::ReadyForQuery(_)) => break,
            Backend::Message(Message::ParameterStatus(p)) => {
                if let (Ok(name), Ok(value)) = (p.name(), p.value()) {
                    parameters.insert(name.to_owned(), value.to_owned());
                }
            }
            Backend::Message(Message::BackendKeyData(_) | Message::NoticeResponse(_)) => {}
            Backend::Message(Message::ErrorResponse(body)) => {
                return Err(WireError::Server(Box::new(server_error(&body))));
            }
            other => {
                return Err(WireError::Protocol(format!(
                    "unexpected {other:?} while starting the session"
                )));
            }
        }
    }
    let server_version_num = parameters
        .get("server_version")
        .map_or(0, |v| parse_server_version(v));
    Ok(Session {
        frames,
        parameters,
        server_version_num,
    })
}

async fn write_flush<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &[u8],
    doing: &'static str,
) -> Result<(), WireError> {
    io.write_all(out).await.map_err(WireError::io(doing))?;
    io.flush().await.map_err(WireError::io(doing))
}

/// The socket, after TLS when the server and sslmode agree; with the channel binding data.
async fn connect_socket(cfg: &ConnConfig) -> Result<(BoxStream, Option<Vec<u8>>), WireError> {
    let target = cfg.redacted();
    let tcp_host = match cfg.host() {
        Host::Unix(dir) if cfg.hostaddr().is_none() => {
            // libpq never uses TLS over a Unix socket, whatever sslmode says.
            let path: PathBuf = dir.join(format!(".s.PGSQL.{}", cfg.port()));
            let sock = UnixStream::connect(&path)
                .await
                .map_err(|source| WireError::Connect {
                    target: format!("Unix socket {}", path.display()),
                    source,
                })?;
            return Ok((Box::new(sock), None));
        }
        Host::Unix(dir) => dir.to_string_lossy().into_owned(),
        Host::Tcp(h) => h.clone(),
    };
    let tcp = match cfg.hostaddr() {
        Some(addr) => TcpStream::connect(SocketAddr::new(addr, cfg.port())).await,
        None => TcpStream::connect((tcp_host.as_str(), cfg.port())).await,
    }
    .map_err(|source| WireError::Connect {
        target: format!("{tcp_host}:{}", cfg.port()),
        source,
    })?;
    let _ = tcp.set_nodelay(true);
    set_tcp_options(&tcp, cfg.tcp()).map_err(|source| WireError::Connect {
        target: format!("{tcp_host}:{} (setting TCP keepalive options)", cfg.port()),
        source,
    })?;
    let Some(tls) = TlsSettings::for_config(cfg)? else {
        return Ok((Box::new(tcp), None));
    };
    let mut tcp = tcp;
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    write_flush(&mut tcp, &out, "asking for TLS").await?;
    let answer = tcp
        .read_u8()
        .await
        .map_err(WireError::io("asking for TLS"))?;
    match answer {
        b'S' => {
            let stream = tls
                .handshake(tcp, &tcp_host)
                .await
                .map_err(|e| WireError::Tls {
                    target: target.clone(),
                    // The cause is the source; reporting prints it after this.
                    reason: "in the handshake".to_owned(),
                    source: Some(e),
                })?;
            let binding = channel_binding_of(&stream);
            Ok((Box::new(stream), binding))
        }
        b'N' if cfg.sslmode() == SslMode::Prefer => Ok((Box::new(tcp), None)),
        b'N' => Err(WireError::Tls {
            target,
            reason: format!(
                "the server does not support TLS but sslmode={}; enable ssl on the server",
                cfg.sslmode().as_str()
            ),
            source: None,
        }),
        other => Err(WireError::Protocol(format!(
            "unexpected answer {other:#x} to the TLS request"
        ))),
    }
}

/// Keepalive probes and `TCP_USER_TIMEOUT` as the connection string asks (libpq's options).
fn set_tcp_options(tcp: &TcpStream, options: TcpOptions) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(tcp);
    if options.keepalives {
        let mut keepalive = socket2::TcpKeepalive::new();
        if let Some(idle) = options.keepalives_idle {
            keepalive = keepalive.with_time(idle);
        }
        if let Some(interval) = options.keepalives_interval {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(count) = options.keepalives_count {
            keepalive = keepalive.with_retries(count);
        }
        socket.set_tcp_keepalive(&keepalive)?;
    } else {
        socket.set_keepalive(false)?;
    }
    if let Some(timeout) = options.tcp_user_timeout {
        socket.set_tcp_user_timeout(Some(timeout))?;
    }
    Ok(())
}

async fn authenticate(
    cfg: &ConnConfig,
    frames: &mut FrameReader<BoxStream>,
    binding: Option<Vec<u8>>,
) -> Result<(), WireError> {
    let user = cfg.user();
    let auth_failed = |reason: String| WireError::Auth {
        user: user.to_owned(),
        reason,
        source: None,
    };
    let password = || {
        cfg.password()
            .map(|p| p.expose().as_bytes())
            .ok_or_else(|| {
                auth_failed(
                    "the server asks for a password and none is set (password=, PGPASSWORD or a \
                 passfile)"
                        .into(),
                )
            })
    };
    let mut scram: Option<sasl::ScramSha256> = None;
    let mut out = BytesMut::new();
    let doing = "authenticating";
    loop {
        out.clear();
        let msg = match frames.next(doing).await? {
            Backend::Message(m) => m,
            Backend::CopyBoth => {
                return Err(WireError::Protocol("CopyBothResponse during login".into()));
            }
        };
        match msg {
            Message::AuthenticationOk => {
                if cfg.channel_binding() == ChannelBindingMode::Require && scram.is_none() {
                    return Err(auth_failed(
                        "channel_binding=require but the server did not use SCRAM".into(),
                    ));
                }
                return Ok(());
            }
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(password()?, &mut out).map_err(pw_err)?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(user.as_bytes(), password()?, body.salt());
                frontend::password_message(hash.as_bytes(), &mut out).map_err(pw_err)?;
            }
            Message::AuthenticationSasl(body) => {
                let mut plus = false;
                let mut plain = false;
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms
                    .next()
                    .map_err(|e| WireError::Protocol(format!("bad SASL mechanism list: {e}")))?
                {
                    plus |= m == sasl::SCRAM_SHA_256_PLUS;
                    plain |= m == sasl::SCRAM_SHA_256;
                }
                let use_binding = cfg.channel_binding() != ChannelBindingMode::Disable;
                let (mechanism, channel) = match (&binding, plus && use_binding) {
                    (Some(data), true) => (
                        sasl::SCRAM_SHA_256_PLUS,
                        sasl::ChannelBinding::tls_server_end_point(data.clone()),
                    ),
                    _ if cfg.channel_binding() == ChannelBindingMode::Require => {
                        return Err(auth_failed(
                            "channel_binding=require but SCRAM-SHA-256-PLUS over TLS is not \
                             available"
                                .into(),
                        ));
                    }
                    _ if !plain => {
                        return Err(auth_failed(
                            "the server offers no SASL mechanism lsnpipe supports".into(),
                        ));
                    }
                    (Some(_), false) if use_binding => {
                        (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unrequested())
                    }
                    _ => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unsupported()),
                };
                let s = sasl::ScramSha256::new(password()?, channel);
                frontend::sasl_initial_response(mechanism, s.message(), &mut out)
                    .map_err(pw_err)?;
                scram = Some(s);
            }
            Message::AuthenticationSaslContinue(body) => {
                let s = scram.as_mut().ok_or_else(|| {
                    WireError::Protocol("SASL continue without a SASL exchange".into())
                })?;
                s.update(body.data())
                    .map_err(|e| auth_failed(format!("SCRAM exchange failed: {e}")))?;
                frontend::sasl_response(s.message(), &mut out).map_err(pw_err)?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let s = scram.as_mut().ok_or_else(|| {
                    WireError::Protocol("SASL final without a SASL exchange".into())
                })?;
                s.finish(body.data()).map_err(|e| {
                    auth_failed(format!("the server's SCRAM signature is wrong: {e}"))
                })?;
                continue;
            }
            Message::ErrorResponse(body) => {
                let e = server_error(&body);
                if e.code.starts_with("28") {
                    return Err(WireError::Auth {
                        user: user.to_owned(),
                        // The server's message is the source; reporting prints it after this.
                        reason: "the server refused the login".to_owned(),
                        source: Some(Box::new(e)),
                    });
                }
                return Err(WireError::Server(Box::new(e)));
            }
            Message::NoticeResponse(_) => continue,
            Message::AuthenticationGss
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationSspi
            | Message::AuthenticationScmCredential
            | Message::AuthenticationGssContinue(_) => {
                return Err(auth_failed(
                    "the server asks for GSSAPI/SSPI/Kerberos, which lsnpipe does not support; \
                     use scram-sha-256 in pg_hba.conf"
                        .into(),
                ));
            }
            other => {
                return Err(WireError::Protocol(format!(
                    "unexpected {} while authenticating",
                    describe(&other)
                )));
            }
        }
        write_flush(&mut frames.io, &out, doing).await?;
    }
}

fn pw_err(e: std::io::Error) -> WireError {
    WireError::Protocol(format!("cannot encode an authentication message: {e}"))
}

/// `server_version` ("15.18 (Debian 15.18-1)", "16devel", "9.6.24") as `server_version_num`.
pub fn parse_server_version(v: &str) -> u32 {
    let numeric: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let second = parts.next().unwrap_or(0);
    if major >= 10 {
        major * 10_000 + second
    } else {
        major * 10_000 + second * 100 + parts.next().unwrap_or(0)
    }
}

/// Tags of backend messages, for error text.
pub fn describe(m: &Message) -> &'static str {
    match m {
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::DataRow(_) => "DataRow",
        Message::RowDescription(_) => "RowDescription",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::ErrorResponse(_) => "ErrorResponse",
        Message::NoticeResponse(_) => "NoticeResponse",
        Message::ParameterStatus(_) => "ParameterStatus",
        _ => "another message",
    }
}

#[cfg(test)]
mod tests;
