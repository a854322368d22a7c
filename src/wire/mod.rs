//! The PostgreSQL side of lsnpipe: connection settings, logging in, replication commands and the
//! CopyBoth replication stream, spoken directly over tokio (tokio-postgres cannot stream
//! replication), plus ordinary SQL sessions through tokio-postgres with the same settings.
//!
//! ```text
//! config.rs   "host=… user=…" | postgres://… + PG* env + passfile ─▶ ConnConfig
//! conn.rs     socket ─▶ [TLS: tls.rs] ─▶ startup(replication=database) ─▶ auth ─▶ frames
//! commands.rs IDENTIFY_SYSTEM, SHOW, CREATE/DROP_REPLICATION_SLOT, simple queries
//! stream.rs   START_REPLICATION ─▶ reader task ─▶ XLogData ─▶ consumer; writer task ─▶ 'r'
//! error.rs    WireError / ServerError, retryable or not
//! ```

mod commands;
mod config;
mod conn;
mod error;
mod stream;
mod tls;

pub use commands::{
    CreateSlotOptions, CreatedSlot, LogicalOptions, Origin, ReplicationConnection, SnapshotAction,
    Streaming, SystemInfo, max_proto_version, quote_ident, quote_literal,
};
pub use config::{ChannelBindingMode, ConfigError, ConnConfig, Host, Password, SslMode};
pub use error::{ServerError, WireError};
pub use stream::ReplicationStream;
pub use tls::{MakeRustlsConnect, TlsSettings};

/// An ordinary SQL session (not replication) with the same host, authentication and TLS rules;
/// the connection is driven on a spawned task.
pub async fn connect_sql(cfg: &ConnConfig) -> Result<tokio_postgres::Client, WireError> {
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
    if let Some(options) = cfg.options() {
        pg.options(options);
    }
    if let Some(app) = cfg.application_name() {
        pg.application_name(app);
    }
    if let Some(t) = cfg.connect_timeout() {
        pg.connect_timeout(t);
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
    let client = match TlsSettings::for_config(cfg)? {
        Some(tls) if !unix => {
            let (client, connection) = pg
                .connect(MakeRustlsConnect(tls))
                .await
                .map_err(sql_error)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%target, %error, "SQL connection ended");
                }
            });
            client
        }
        _ => {
            let (client, connection) =
                pg.connect(tokio_postgres::NoTls).await.map_err(sql_error)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%target, %error, "SQL connection ended");
                }
            });
            client
        }
    };
    Ok(client)
}
