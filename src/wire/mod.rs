//! The PostgreSQL side of lsnpipe: connection settings, logging in, replication commands and the
//! CopyBoth replication stream, spoken directly over tokio (tokio-postgres cannot stream
//! replication), plus ordinary SQL sessions through tokio-postgres with the same settings.
//!
//! ```text
//! conn_config/            "host=… user=…" | postgres://… + PG* env + passfile ─▶ ConnConfig
//! conn/                   socket ─▶ [TLS: tls.rs] ─▶ startup(replication=database) ─▶ auth ─▶ frames
//! replication_commands.rs IDENTIFY_SYSTEM, SHOW, CREATE/DROP_REPLICATION_SLOT, simple queries
//! stream.rs               START_REPLICATION ─▶ reader task ─▶ XLogData ─▶ consumer; writer task ─▶ 'r'
//! frames.rs               the CopyData payloads of streaming replication ('w', 'k', 'r'), sans-IO
//! error.rs                WireError / ServerError (whether they retry: crate::error_policy)
//! quote.rs                identifiers and literals quoted for SQL and replication commands (the one place)
//! ```

mod conn;
mod conn_config;
mod error;
mod frames;
mod quote;
mod replication_commands;
mod stream;
mod tls;

pub use conn_config::{
    ChannelBindingMode, ConnConfig, ConnConfigError, Host, Password, SessionAttrs, SslMode,
    TcpOptions,
};
pub use error::{ServerError, WireError};
pub use frames::{Keepalive, ReplicationMessage, StandbyStatusUpdate, XLogData};
pub use quote::{push_ident, quote_ident, quote_literal};
pub use replication_commands::{
    CreateSlotOptions, CreatedSlot, LogicalOptions, OriginFilter, ReplicationConnection,
    SnapshotAction, Streaming, SystemInfo, max_proto_version,
};
pub use stream::ReplicationStream;
pub use tls::{MakeRustlsConnect, TlsSettings};

/// The settings every session lsnpipe opens asks for, whatever the server's, the database's or
/// the role's defaults (`ALTER DATABASE … SET datestyle = 'SQL, DMY'`): values travel as text
/// (pgoutput, text COPY, parameters), and must be printed on one side exactly as the other side
/// parses them. They are the ones PostgreSQL's own subscriber asks for. `client_encoding` is
/// UTF8 on every session already. The timeouts a database or role sets for its applications
/// (`ALTER DATABASE … SET statement_timeout`) would cut a long copy, a large group or a session
/// waiting for the next change; like pg_dump, lsnpipe turns them off for its own sessions
/// (`idle_session_timeout` exists from PostgreSQL 14, the oldest lsnpipe supports;
/// `transaction_timeout`, 17+, is turned off by [`TRANSACTION_TIMEOUT_OFF`] once connected).
pub const SESSION_SETTINGS: [(&str, &str); 14] = [
    ("datestyle", "ISO"),
    ("intervalstyle", "postgres"),
    ("extra_float_digits", "3"),
    // Parsing: `document` refuses the XML fragments a column may hold, `array_nulls = off`
    // reads an array's NULL as the string "NULL"; money prints and parses by lc_monetary.
    ("xmloption", "content"),
    ("array_nulls", "on"),
    ("lc_monetary", "C"),
    // A row-level security policy that applies to lsnpipe's role makes a statement fail
    // instead of silently reading or changing fewer rows.
    ("row_security", "off"),
    ("statement_timeout", "0"),
    ("lock_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("idle_session_timeout", "0"),
    // The server probes an idle connection after 10 s and drops it after three unanswered
    // probes 5 s apart: a session whose client died with its link (a crashed host, a lost
    // NAT entry) goes within about 25 s, with the slot, the lock that keeps one lsnpipe per
    // slot and any row locks, instead of after the system's two hours. (TCP only.)
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
];

/// Turns off `transaction_timeout` (PostgreSQL 17+) where the server has it, as
/// [`SESSION_SETTINGS`] does the older timeouts: one statement for every major.
pub(crate) const TRANSACTION_TIMEOUT_OFF: &str = "SELECT pg_catalog.set_config(name, '0', false) \
     FROM pg_catalog.pg_settings WHERE name = 'transaction_timeout'";

/// [`SESSION_SETTINGS`] as command-line options of the startup packet, after the user's own
/// `options` so that ours win.
fn session_options(user: Option<&str>) -> String {
    let mut options = user.map(|o| format!("{o} ")).unwrap_or_default();
    for (i, (name, value)) in SESSION_SETTINGS.iter().enumerate() {
        if i > 0 {
            options.push(' ');
        }
        options.push_str(&format!("-c {name}={value}"));
    }
    options
}

/// An ordinary SQL session (not replication) with the same host, authentication and TLS rules;
/// the connection is driven on a spawned task. With several hosts, each is tried in turn and
/// the first that `target_session_attrs` accepts is kept, as for replication sessions.
pub async fn connect_sql(cfg: &ConnConfig) -> Result<tokio_postgres::Client, WireError> {
    // Detached: the task ends when the client is dropped and the server has answered.
    connect_sql_task(cfg).await.map(|(client, _task)| client)
}

/// [`connect_sql`], with a guard that ends the connection when dropped, even while a query is
/// still waiting for an answer (after a timeout, say). A dropped client alone would leave the
/// connection task waiting for that answer on a link that may never deliver it.
pub async fn connect_sql_guarded(
    cfg: &ConnConfig,
) -> Result<(tokio_postgres::Client, SqlConnectionGuard), WireError> {
    let (client, task) = connect_sql_task(cfg).await?;
    Ok((client, SqlConnectionGuard(task)))
}

/// Aborts the task that drives an SQL connection when dropped (see [`connect_sql_guarded`]).
#[derive(Debug)]
pub struct SqlConnectionGuard(tokio::task::JoinHandle<()>);

impl Drop for SqlConnectionGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type SqlSession = (tokio_postgres::Client, tokio::task::JoinHandle<()>);

async fn connect_sql_task(cfg: &ConnConfig) -> Result<SqlSession, WireError> {
    let attrs = cfg.target_session_attrs();
    if !cfg.is_multi_host() && attrs == SessionAttrs::Any {
        return connect_sql_one(cfg).await;
    }
    let mut attempts = HostAttempts::default();
    for candidate in cfg.candidates() {
        match connect_sql_one(&candidate).await {
            Ok((client, task)) => {
                let row = client
                    .query_one(
                        "SELECT pg_catalog.pg_is_in_recovery(), \
                                pg_catalog.current_setting('default_transaction_read_only') = 'on'",
                        &[],
                    )
                    .await;
                match row {
                    Ok(row) => match (row.try_get::<_, bool>(0), row.try_get::<_, bool>(1)) {
                        (Ok(standby), Ok(read_only)) if attrs.accepts(standby, read_only) => {
                            return Ok((client, task));
                        }
                        (Ok(standby), Ok(_)) => attempts.unsuitable(&candidate, standby),
                        (Err(e), _) | (_, Err(e)) => attempts.skip(&candidate, e.to_string()),
                    },
                    Err(e) => attempts.skip(&candidate, e.to_string()),
                }
                task.abort();
            }
            Err(e) => attempts.failed(&candidate, e)?,
        }
    }
    Err(attempts.finish(attrs))
}

/// What trying the hosts of a connection string in turn found, for the error when none fits.
/// A failure that another attempt cannot mend (a wrong password on every host) is reported as
/// itself; "no host fits" is retryable, for a promotion in progress.
#[derive(Debug, Default)]
pub(crate) struct HostAttempts {
    tried: Vec<String>,
    fatal: Option<WireError>,
    retryable: bool,
}

impl HostAttempts {
    /// `candidate` answered, but its role does not fit (`standby`: in recovery; else read-only).
    pub fn unsuitable(&mut self, candidate: &ConnConfig, standby: bool) {
        self.retryable = true;
        let role = if standby { "a standby" } else { "read-only" };
        self.skip(candidate, role.to_owned());
    }

    /// Connecting to `candidate` failed; a configuration error (the same for every host) is
    /// returned at once.
    pub fn failed(&mut self, candidate: &ConnConfig, e: WireError) -> Result<(), WireError> {
        if let WireError::Config(_) = e {
            return Err(e);
        }
        let text = crate::report::chain(&e);
        if crate::error_policy::wire(&e) == crate::error_policy::Action::Retry {
            self.retryable = true;
        } else {
            self.fatal.get_or_insert(e);
        }
        self.skip(candidate, text);
        Ok(())
    }

    pub fn skip(&mut self, candidate: &ConnConfig, outcome: String) {
        tracing::debug!(host = %candidate.redacted(), %outcome, "host skipped");
        self.tried.push(format!(
            "{}:{}: {outcome}",
            candidate.host(),
            candidate.port()
        ));
    }

    /// The error once every host was tried.
    pub fn finish(self, attrs: SessionAttrs) -> WireError {
        match self.fatal {
            Some(e) if !self.retryable => e,
            _ => WireError::NoSuitableHost {
                attrs: attrs.as_str(),
                tried: self.tried.join("; "),
            },
        }
    }
}

async fn connect_sql_one(cfg: &ConnConfig) -> Result<SqlSession, WireError> {
    let mut pg = tokio_postgres::Config::new();
    let unix = match cfg.host() {
        Host::Tcp(h) => {
            pg.host(h);
            false
        }
        Host::Unix(dir) => {
            pg.host_path(dir);
            true
        }
    };
    if let Some(addr) = cfg.hostaddr() {
        pg.hostaddr(addr);
    }
    pg.port(cfg.port()).user(cfg.user()).dbname(cfg.dbname());
    if let Some(p) = cfg.password() {
        pg.password(p.expose());
    }
    pg.options(session_options(cfg.options()));
    if let Some(app) = cfg.application_name() {
        pg.application_name(app);
    }
    if let Some(t) = cfg.connect_timeout() {
        pg.connect_timeout(t);
    }
    let tcp = cfg.tcp();
    pg.keepalives(tcp.keepalives);
    if let Some(idle) = tcp.keepalives_idle {
        pg.keepalives_idle(idle);
    }
    if let Some(interval) = tcp.keepalives_interval {
        pg.keepalives_interval(interval);
    }
    if let Some(count) = tcp.keepalives_count {
        pg.keepalives_retries(count);
    }
    if let Some(timeout) = tcp.tcp_user_timeout {
        pg.tcp_user_timeout(timeout);
    }
    pg.channel_binding(match cfg.channel_binding() {
        ChannelBindingMode::Disable => tokio_postgres::config::ChannelBinding::Disable,
        ChannelBindingMode::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
        ChannelBindingMode::Require => tokio_postgres::config::ChannelBinding::Require,
    });
    // Our connector does the checking; tokio-postgres only needs to know whether to insist.
    pg.ssl_mode(match cfg.sslmode() {
        _ if unix => tokio_postgres::config::SslMode::Disable,
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    let sql_error = |e: tokio_postgres::Error| match e.code() {
        Some(code) if code.code().starts_with("28") => WireError::Auth {
            user: cfg.user().to_owned(),
            reason: e
                .as_db_error()
                .map_or_else(|| e.to_string(), |db| db.message().to_owned()),
            source: None,
        },
        _ => WireError::Sql(e),
    };
    let target = cfg.redacted();
    let work = async {
        let (client, task) =
            connect_tokio_postgres(pg, cfg, unix, target.clone(), &sql_error).await?;
        // PostgreSQL 17's transaction_timeout cannot go in the startup options of older servers.
        client
            .batch_execute(TRANSACTION_TIMEOUT_OFF)
            .await
            .map_err(&sql_error)?;
        Ok((client, task))
    };
    // tokio-postgres bounds only the TCP connect; libpq's connect_timeout covers the login too
    // (a server that accepts and then says nothing must not hold the caller).
    match cfg.connect_timeout() {
        None => work.await,
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(WireError::ConnectTimeout {
                target,
                seconds: limit.as_secs(),
            })
        }),
    }
}

async fn connect_tokio_postgres(
    pg: tokio_postgres::Config,
    cfg: &ConnConfig,
    unix: bool,
    target: String,
    sql_error: &impl Fn(tokio_postgres::Error) -> WireError,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), WireError> {
    let session = match TlsSettings::for_config(cfg)? {
        Some(tls) if !unix => {
            let (client, connection) = pg
                .connect(MakeRustlsConnect(tls))
                .await
                .map_err(sql_error)?;
            let task = tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%target, %error, "SQL connection ended");
                }
            });
            (client, task)
        }
        _ => {
            let (client, connection) =
                pg.connect(tokio_postgres::NoTls).await.map_err(sql_error)?;
            let task = tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%target, %error, "SQL connection ended");
                }
            });
            (client, task)
        }
    };
    Ok(session)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A server that accepts and then says nothing (a hung server, a dead link behind a proxy).
    async fn mute_server() -> (tokio::net::TcpListener, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    #[tokio::test]
    async fn connect_timeout_bounds_the_login_of_both_kinds_of_session() {
        let (listener, port) = mute_server().await;
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let cfg = ConnConfig::parse(&format!(
            "host=127.0.0.1 port={port} user=u sslmode=disable connect_timeout=2"
        ))
        .unwrap();
        // Without the bound each login would wait for ever; the outer limit only turns that
        // into a failure, and is generous so that a loaded machine does not fail the test.
        let outer = Duration::from_secs(60);
        let sql = tokio::time::timeout(outer, connect_sql(&cfg)).await;
        assert!(
            matches!(sql, Ok(Err(WireError::ConnectTimeout { seconds: 2, .. }))),
            "{sql:?}"
        );
        let replication = tokio::time::timeout(outer, ReplicationConnection::connect(&cfg)).await;
        assert!(
            matches!(
                replication,
                Ok(Err(WireError::ConnectTimeout { seconds: 2, .. }))
            ),
            "{replication:?}"
        );
        held.abort();
    }

    #[test]
    fn session_settings_follow_the_users_options() {
        assert_eq!(
            session_options(None),
            "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 \
             -c xmloption=content -c array_nulls=on -c lc_monetary=C -c row_security=off \
             -c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0 \
             -c idle_session_timeout=0 -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 \
             -c tcp_keepalives_count=3"
        );
        assert!(
            session_options(Some("-c work_mem=64MB"))
                .starts_with("-c work_mem=64MB -c datestyle=ISO")
        );
    }
}
