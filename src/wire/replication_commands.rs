//! The replication connection before streaming: simple queries and the replication commands
//! (`IDENTIFY_SYSTEM`, `SHOW`, `CREATE_REPLICATION_SLOT`, `DROP_REPLICATION_SLOT`), each sent as a
//! `Query` with every name and value quoted, answered by text rows and `ReadyForQuery`.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::conn::{Backend, Session, open_replication, server_error};
use super::conn_config::ConnConfig;
use super::conn_config::SessionAttrs;
use super::error::WireError;
use super::quote::{quote_ident, quote_literal};
use crate::Lsn;

/// A logged-in `replication=database` session.
#[derive(Debug)]
pub struct ReplicationConnection {
    pub(super) session: Session,
    pub(super) target: String,
}

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's system identifier (decimal).
    pub system_id: String,
    pub timeline: u32,
    /// The server's current WAL flush position.
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

/// What `CREATE_REPLICATION_SLOT` does with the snapshot of the slot's starting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotAction {
    /// Export it; its name is valid until the next command on this connection.
    #[default]
    Export,
    /// Make it this transaction's snapshot (inside `BEGIN ISOLATION LEVEL REPEATABLE READ`).
    Use,
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSlotOptions {
    /// Dropped when the connection ends or on error.
    pub temporary: bool,
    pub snapshot: SnapshotAction,
    /// Decode prepared transactions at PREPARE (sticky on the slot; server 15+).
    pub two_phase: bool,
    /// Synchronised to physical standbys (`sync_replication_slots`), so it survives a failover
    /// (server 17+; `create_slot` refuses it before).
    pub failover: bool,
    pub plugin: String,
}

impl Default for CreateSlotOptions {
    fn default() -> Self {
        CreateSlotOptions {
            temporary: false,
            snapshot: SnapshotAction::Export,
            two_phase: false,
            failover: false,
            plugin: "pgoutput".to_owned(),
        }
    }
}

/// The answer to `CREATE_REPLICATION_SLOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    pub slot_name: String,
    /// Where the slot became consistent: the earliest position it can stream from.
    pub consistent_point: Lsn,
    pub snapshot_name: Option<String>,
    pub output_plugin: Option<String>,
}

/// pgoutput's `streaming` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Streaming {
    #[default]
    Off,
    On,
    /// Server 16+, proto_version 4.
    Parallel,
}

/// pgoutput's `origin` option (server 16+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginFilter {
    /// Only changes that did not come from another replication origin.
    None,
    Any,
}

/// Options for `START_REPLICATION ... LOGICAL`. Options left at their default are not sent, so
/// older servers that do not know them still accept the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalOptions {
    pub proto_version: u32,
    pub publication_names: Vec<String>,
    pub binary: bool,
    pub messages: bool,
    pub streaming: Streaming,
    pub two_phase: bool,
    pub origin: Option<OriginFilter>,
}

impl LogicalOptions {
    pub fn new(proto_version: u32, publication_names: Vec<String>) -> Self {
        LogicalOptions {
            proto_version,
            publication_names,
            binary: false,
            messages: false,
            streaming: Streaming::Off,
            two_phase: false,
            origin: None,
        }
    }

    /// The parenthesised option list of the command.
    pub fn to_sql(&self) -> String {
        let names: Vec<String> = self
            .publication_names
            .iter()
            .map(|n| quote_ident(n))
            .collect();
        let mut options = vec![
            format!(
                "proto_version {}",
                quote_literal(&self.proto_version.to_string())
            ),
            format!("publication_names {}", quote_literal(&names.join(","))),
        ];
        if self.binary {
            options.push("binary 'true'".to_owned());
        }
        if self.messages {
            options.push("messages 'true'".to_owned());
        }
        match self.streaming {
            Streaming::Off => {}
            Streaming::On => options.push("streaming 'on'".to_owned()),
            Streaming::Parallel => options.push("streaming 'parallel'".to_owned()),
        }
        if self.two_phase {
            options.push("two_phase 'on'".to_owned());
        }
        match self.origin {
            None => {}
            Some(OriginFilter::None) => options.push("origin 'none'".to_owned()),
            Some(OriginFilter::Any) => options.push("origin 'any'".to_owned()),
        }
        format!("({})", options.join(", "))
    }
}

/// The highest pgoutput protocol version a server supports (from `server_version_num`).
pub fn max_proto_version(server_version_num: u32) -> u32 {
    match server_version_num {
        160_000.. => 4,
        150_000.. => 3,
        140_000.. => 2,
        _ => 1,
    }
}

pub(super) fn create_slot_sql(
    name: &str,
    opts: &CreateSlotOptions,
    server_version_num: u32,
) -> String {
    let mut sql = format!("CREATE_REPLICATION_SLOT {}", quote_ident(name));
    if opts.temporary {
        sql.push_str(" TEMPORARY");
    }
    sql.push_str(" LOGICAL ");
    sql.push_str(&quote_ident(&opts.plugin));
    if server_version_num >= 150_000 {
        let snapshot = match opts.snapshot {
            SnapshotAction::Export => "export",
            SnapshotAction::Use => "use",
            SnapshotAction::Nothing => "nothing",
        };
        sql.push_str(&format!(" (SNAPSHOT '{snapshot}'"));
        if opts.two_phase {
            sql.push_str(", TWO_PHASE");
        }
        if opts.failover {
            sql.push_str(", FAILOVER");
        }
        sql.push(')');
    } else {
        sql.push_str(match opts.snapshot {
            SnapshotAction::Export => " EXPORT_SNAPSHOT",
            SnapshotAction::Use => " USE_SNAPSHOT",
            SnapshotAction::Nothing => " NOEXPORT_SNAPSHOT",
        });
    }
    sql
}

type Rows = Vec<Vec<Option<String>>>;

/// Whether the server is in recovery (a standby) and whether its sessions default to read-only.
async fn server_role(conn: &mut ReplicationConnection) -> Result<(bool, bool), WireError> {
    let rows = conn
        .simple_query(
            "SELECT pg_catalog.pg_is_in_recovery()::text, \
                    pg_catalog.current_setting('default_transaction_read_only')",
        )
        .await?;
    let row = one_row(&rows, "pg_is_in_recovery", 2)?;
    let on = |i: usize| {
        matches!(
            row.get(i).cloned().flatten().as_deref(),
            Some("true" | "on")
        )
    };
    Ok((on(0), on(1)))
}

impl ReplicationConnection {
    /// Connect and log in as a logical replication session (`replication=database`). With
    /// several hosts, each is tried in turn and the first that `target_session_attrs` accepts
    /// is kept (`ConnConfig::candidates`).
    pub async fn connect(cfg: &ConnConfig) -> Result<Self, WireError> {
        let attrs = cfg.target_session_attrs();
        let candidates = cfg.candidates();
        if !cfg.is_multi_host() && attrs == SessionAttrs::Any {
            return Self::connect_one(cfg).await;
        }
        let mut attempts = super::HostAttempts::default();
        for candidate in &candidates {
            match Self::connect_one(candidate).await {
                Ok(mut conn) => match server_role(&mut conn).await {
                    Ok((standby, read_only)) if attrs.accepts(standby, read_only) => {
                        return Ok(conn);
                    }
                    Ok((standby, _)) => attempts.unsuitable(candidate, standby),
                    Err(e) => attempts.skip(candidate, crate::report::chain(&e)),
                },
                Err(e) => attempts.failed(candidate, e)?,
            }
        }
        Err(attempts.finish(attrs))
    }

    async fn connect_one(cfg: &ConnConfig) -> Result<Self, WireError> {
        let session = open_replication(cfg).await?;
        let mut conn = ReplicationConnection {
            session,
            target: cfg.redacted(),
        };
        // As the native subscriber does: nothing resolves through a user-writable schema. Still
        // part of connecting: connect_timeout bounds the wait for its answer too.
        conn.set_receive_timeout(cfg.connect_timeout());
        conn.simple_query(&format!(
            "SELECT pg_catalog.set_config('search_path', '', false); {}",
            super::TRANSACTION_TIMEOUT_OFF
        ))
        .await?;
        conn.set_receive_timeout(None);
        Ok(conn)
    }

    /// Longest wait for the server's next bytes, from now on and while streaming; `None` waits
    /// forever (while streaming: the default limit described at
    /// [`ReplicationConnection::start_replication`]). A silent peer then ends the session with
    /// [`WireError::Silent`](super::WireError::Silent) instead of holding it for good.
    pub fn set_receive_timeout(&mut self, limit: Option<Duration>) {
        self.session
            .frames
            .set_idle_limit(limit.filter(|l| !l.is_zero()));
    }

    /// `server_version_num` of the server (e.g. 150018).
    pub fn server_version_num(&self) -> u32 {
        self.session.server_version_num
    }

    /// A run-time parameter the server reported at login (`server_version`, `TimeZone`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.session.parameters.get(name).map(String::as_str)
    }

    /// Run `sql` with the simple-query protocol; the rows of the last result, as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Rows, WireError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)
            .map_err(|e| WireError::Protocol(format!("cannot send the query: {e}")))?;
        self.session.send(&out, "sending a query").await?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            let msg = match self
                .session
                .frames
                .next("waiting for a query result")
                .await?
            {
                Backend::Message(m) => m,
                Backend::CopyBoth => {
                    return Err(WireError::Protocol(
                        "the server started streaming in answer to a query".into(),
                    ));
                }
            };
            match msg {
                Message::RowDescription(_) => rows.clear(),
                Message::DataRow(row) => {
                    let buf = row.buffer();
                    let mut values = Vec::new();
                    let mut ranges = row.ranges();
                    while let Some(range) = ranges
                        .next()
                        .map_err(|e| WireError::Protocol(format!("bad DataRow: {e}")))?
                    {
                        values.push(match range {
                            None => None,
                            Some(r) => Some(
                                buf.get(r)
                                    .map(|b| String::from_utf8_lossy(b).into_owned())
                                    .ok_or_else(|| {
                                        WireError::Protocol("DataRow value out of range".into())
                                    })?,
                            ),
                        });
                    }
                    rows.push(values);
                }
                Message::ErrorResponse(body) => failed = Some(server_error(&body)),
                Message::ReadyForQuery(_) => {
                    return match failed {
                        Some(e) => Err(WireError::Server(Box::new(e))),
                        None => Ok(rows),
                    };
                }
                Message::CopyInResponse(_) | Message::CopyOutResponse(_) => {
                    return Err(WireError::Protocol(
                        "COPY is not supported on the replication connection".into(),
                    ));
                }
                // CommandComplete, EmptyQueryResponse, notices, parameter changes.
                _ => {}
            }
        }
    }

    pub async fn identify_system(&mut self) -> Result<SystemInfo, WireError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = one_row(&rows, "IDENTIFY_SYSTEM", 4)?;
        let text = |i: usize| row.get(i).cloned().flatten();
        let timeline = text(1)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| WireError::Protocol("IDENTIFY_SYSTEM: bad timeline".into()))?;
        Ok(SystemInfo {
            system_id: text(0).unwrap_or_default(),
            timeline,
            xlogpos: parse_lsn(text(2).as_deref(), "IDENTIFY_SYSTEM xlogpos")?,
            dbname: text(3),
        })
    }

    /// `SHOW name`: a server setting's value as text (e.g. `wal_sender_timeout` → `60s`).
    pub async fn show(&mut self, name: &str) -> Result<String, WireError> {
        let rows = self
            .simple_query(&format!("SHOW {}", quote_ident(name)))
            .await?;
        let row = one_row(&rows, "SHOW", 1)?;
        row.first()
            .cloned()
            .flatten()
            .ok_or_else(|| WireError::Protocol(format!("SHOW {name} returned NULL")))
    }

    pub async fn create_slot(
        &mut self,
        name: &str,
        opts: CreateSlotOptions,
    ) -> Result<CreatedSlot, WireError> {
        if opts.failover && self.server_version_num() < 170_000 {
            return Err(WireError::FailoverSlotUnsupported {
                server_version: self
                    .parameter("server_version")
                    .unwrap_or("older than 17")
                    .to_owned(),
            });
        }
        let sql = create_slot_sql(name, &opts, self.server_version_num());
        let rows = self.simple_query(&sql).await?;
        let row = one_row(&rows, "CREATE_REPLICATION_SLOT", 4)?;
        let text = |i: usize| row.get(i).cloned().flatten();
        Ok(CreatedSlot {
            slot_name: text(0).unwrap_or_else(|| name.to_owned()),
            consistent_point: parse_lsn(text(1).as_deref(), "consistent_point")?,
            snapshot_name: text(2),
            output_plugin: text(3),
        })
    }

    /// Drop a slot; with `wait`, wait for a walsender still using it instead of failing.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), WireError> {
        let mut sql = format!("DROP_REPLICATION_SLOT {}", quote_ident(name));
        if wait {
            sql.push_str(" WAIT");
        }
        self.simple_query(&sql).await.map(drop)
    }

    /// End the session politely.
    pub async fn close(mut self) -> Result<(), WireError> {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        self.session.send(&out, "closing the connection").await
    }
}

fn one_row<'a>(
    rows: &'a Rows,
    what: &str,
    columns: usize,
) -> Result<&'a Vec<Option<String>>, WireError> {
    match rows.as_slice() {
        [row] if row.len() >= columns => Ok(row),
        _ => Err(WireError::Protocol(format!(
            "{what} returned {} rows, expected one with {columns} columns",
            rows.len()
        ))),
    }
}

fn parse_lsn(text: Option<&str>, what: &str) -> Result<Lsn, WireError> {
    text.and_then(|t| t.parse().ok())
        .ok_or_else(|| WireError::Protocol(format!("{what}: not an LSN: {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_replication_options() {
        let mut o = LogicalOptions::new(3, vec!["pub".into(), "My \"Pub\", it's".into()]);
        assert_eq!(
            o.to_sql(),
            r#"(proto_version '3', publication_names '"pub","My ""Pub"", it''s"')"#
        );
        o.binary = true;
        o.messages = true;
        o.streaming = Streaming::On;
        o.two_phase = true;
        o.origin = Some(OriginFilter::None);
        assert_eq!(
            o.to_sql(),
            r#"(proto_version '3', publication_names '"pub","My ""Pub"", it''s"', binary 'true', messages 'true', streaming 'on', two_phase 'on', origin 'none')"#
        );
    }

    #[test]
    fn create_slot_commands() {
        let opts = CreateSlotOptions {
            temporary: true,
            snapshot: SnapshotAction::Nothing,
            two_phase: true,
            ..CreateSlotOptions::default()
        };
        assert_eq!(
            create_slot_sql("s\"1", &opts, 150_018),
            r#"CREATE_REPLICATION_SLOT "s""1" TEMPORARY LOGICAL "pgoutput" (SNAPSHOT 'nothing', TWO_PHASE)"#
        );
        assert_eq!(
            create_slot_sql("s", &CreateSlotOptions::default(), 140_000),
            r#"CREATE_REPLICATION_SLOT "s" LOGICAL "pgoutput" EXPORT_SNAPSHOT"#
        );
        let failover = CreateSlotOptions {
            failover: true,
            ..CreateSlotOptions::default()
        };
        assert_eq!(
            create_slot_sql("s", &failover, 170_006),
            r#"CREATE_REPLICATION_SLOT "s" LOGICAL "pgoutput" (SNAPSHOT 'export', FAILOVER)"#
        );
    }

    #[test]
    fn proto_versions() {
        assert_eq!(max_proto_version(150_018), 3);
        assert_eq!(max_proto_version(170_000), 4);
        assert_eq!(max_proto_version(130_000), 1);
    }
}
