//! Typed settings for `lsnpipe run`, from flags, `LSNPIPE_*` environment variables and a TOML
//! file, validated up front.
//!
//! ```text
//!  flags ─┐ (clap: a flag beats its environment variable)
//!  env  ──┼──▶ RunArgs ──merge──▶ RunSettings (validated; every field has a value)
//!  file ──┘        ▲ (only where neither a flag nor the environment gave one)
//! ```
//!
//! Connection strings may hold passwords: nothing here prints them, and `--help` hides the values
//! of environment variables.
//!
//! The file itself (its keys, reading it) is `file.rs`; the operator commands' settings are
//! `ops.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::apply::SchemaChanges;

/// Flags of `lsnpipe run` (each also readable from its environment variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// Source connection string (libpq key/value or postgres:// URL); needs wal_level=logical
    /// and a role with REPLICATION.
    #[arg(long, env = "LSNPIPE_SOURCE", hide_env_values = true)]
    pub source: Option<String>,
    /// Target (replica) connection string.
    #[arg(long, env = "LSNPIPE_TARGET", hide_env_values = true)]
    pub target: Option<String>,
    /// Publication on the source whose tables are replicated.
    #[arg(long, env = "LSNPIPE_PUBLICATION")]
    pub publication: Option<String>,
    /// Logical replication slot on the source (pgoutput).
    #[arg(long, env = "LSNPIPE_SLOT")]
    pub slot: Option<String>,
    /// Create the slot when it does not exist.
    #[arg(long, env = "LSNPIPE_CREATE_SLOT", num_args = 0..=1, default_missing_value = "true")]
    pub create_slot: Option<bool>,
    /// Create the slot as a failover slot (PostgreSQL 17+): standbys with
    /// sync_replication_slots keep a copy, so it survives a promotion.
    #[arg(long, env = "LSNPIPE_FAILOVER_SLOT", num_args = 0..=1, default_missing_value = "true")]
    pub failover_slot: Option<bool>,
    /// Address of the HTTP server for /metrics, /healthz and /readyz ("off" to disable).
    #[arg(long, env = "LSNPIPE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// /readyz answers 503 while the lag is above this many bytes.
    #[arg(long, env = "LSNPIPE_READY_MAX_LAG_BYTES")]
    pub ready_max_lag_bytes: Option<u64>,
    /// /readyz answers 503 while changes are waiting and nothing has been applied for longer
    /// than this many seconds.
    #[arg(long, env = "LSNPIPE_READY_MAX_LAG_SECONDS")]
    pub ready_max_lag_seconds: Option<u64>,
    /// Seconds without a byte from the source (it is asked to answer well before) after which
    /// the replication session is presumed dead and reconnected; 0 waits forever.
    #[arg(long, env = "LSNPIPE_REPLICATION_TIMEOUT")]
    pub replication_timeout: Option<u64>,
    /// Seconds a round trip to the target (connecting, applying, committing) may take before
    /// the session is presumed stuck and reconnected; 0 waits forever.
    #[arg(long, env = "LSNPIPE_TARGET_TIMEOUT")]
    pub target_timeout: Option<u64>,
    /// Most source transactions grouped into one target transaction while there is a backlog.
    #[arg(long, env = "LSNPIPE_MAX_BATCH_TRANSACTIONS")]
    pub max_batch_transactions: Option<u32>,
    /// Longest a group of source transactions stays open on the target, in milliseconds.
    #[arg(long, env = "LSNPIPE_MAX_BATCH_MS")]
    pub max_batch_ms: Option<u64>,
    /// Longest pause between status updates to the source, in milliseconds (it is also capped at
    /// half the source's wal_sender_timeout).
    #[arg(long, env = "LSNPIPE_STATUS_INTERVAL_MS")]
    pub status_interval_ms: Option<u64>,
    /// Seconds between reads of the slot's retained WAL from pg_replication_slots.
    #[arg(long, env = "LSNPIPE_SLOT_MONITOR_INTERVAL_SECS")]
    pub slot_monitor_interval_secs: Option<u64>,
    /// Create the slot with an exported snapshot and copy every published table under it before
    /// streaming (on by default when lsnpipe creates the slot itself; `--snapshot=false` to skip).
    #[arg(long, env = "LSNPIPE_SNAPSHOT", num_args = 0..=1, default_missing_value = "true")]
    pub snapshot: Option<bool>,
    /// Parallel COPY sessions for the initial copy (default: the number of cores).
    #[arg(long, env = "LSNPIPE_COPY_JOBS")]
    pub copy_jobs: Option<u32>,
    /// Create published tables missing on the target from the source catalog before copying.
    #[arg(long, env = "LSNPIPE_CREATE_TABLES", num_args = 0..=1, default_missing_value = "true")]
    pub create_tables: Option<bool>,
    /// When a source table's columns drift from the target's: `additive` adds columns, widens
    /// types and keeps dropped columns; `all` also drops and retypes; `off` stops with an error.
    #[arg(long, env = "LSNPIPE_SCHEMA_CHANGES", value_enum)]
    pub schema_changes: Option<SchemaChanges>,
    /// Skip the captured DDL command at this LSN (named by the error that stopped replication,
    /// after making the change on the target by hand). Not read from the file: a one-off.
    #[arg(long, value_name = "LSN")]
    pub skip_ddl: Option<crate::Lsn>,
}

/// Everything `lsnpipe run` needs, validated.
#[derive(Clone)]
pub struct RunSettings {
    pub source: String,
    pub target: String,
    pub publication: String,
    pub slot: String,
    pub create_slot: bool,
    /// Create the slot with `FAILOVER` (server 17+).
    pub failover_slot: bool,
    pub metrics_listen: Option<SocketAddr>,
    pub ready_max_lag_bytes: u64,
    /// `/readyz` fails while work is pending and nothing was applied for this long.
    pub ready_max_lag: Duration,
    /// Silence from the source that ends a session; zero waits forever.
    pub replication_timeout: Duration,
    /// A target round trip that takes longer ends the session; zero waits forever.
    pub target_timeout: Duration,
    pub max_batch_transactions: u32,
    pub max_batch: Duration,
    pub status_interval: Duration,
    pub slot_monitor_interval: Duration,
    /// `Some` when asked for explicitly; `None`: copy only when lsnpipe creates the slot.
    pub snapshot: Option<bool>,
    pub copy_jobs: usize,
    pub create_tables: bool,
    pub schema_changes: SchemaChanges,
    /// The captured DDL command at this LSN is not applied (`--skip-ddl`).
    pub skip_ddl: Option<crate::Lsn>,
}

impl std::fmt::Debug for RunSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Connection strings are left out: they may hold passwords.
        f.debug_struct("RunSettings")
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .field("create_slot", &self.create_slot)
            .field("failover_slot", &self.failover_slot)
            .field("metrics_listen", &self.metrics_listen)
            .field("max_batch_transactions", &self.max_batch_transactions)
            .field("max_batch", &self.max_batch)
            .field("status_interval", &self.status_interval)
            .field("replication_timeout", &self.replication_timeout)
            .field("target_timeout", &self.target_timeout)
            .field("snapshot", &self.snapshot)
            .field("copy_jobs", &self.copy_jobs)
            .field("create_tables", &self.create_tables)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9930";

/// A setting that is missing or wrong; the message names it and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "missing setting `{key}`: give --{flag}, set {env}, or put `{key} = …` in the config file"
    )]
    Missing {
        key: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

macro_rules! required {
    ($args:expr, $file:expr, $key:ident, $flag:literal, $env:literal) => {
        $args
            .$key
            .clone()
            .or_else(|| $file.$key.clone())
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing {
                key: stringify!($key),
                flag: $flag,
                env: $env,
            })?
    };
}

impl RunSettings {
    /// Merge flags/environment (already combined by clap) over the file, and validate.
    pub fn resolve(args: &RunArgs, file: &FileSettings) -> Result<Self, ConfigError> {
        let source = required!(args, file, source, "source", "LSNPIPE_SOURCE");
        let target = required!(args, file, target, "target", "LSNPIPE_TARGET");
        let publication = required!(
            args,
            file,
            publication,
            "publication",
            "LSNPIPE_PUBLICATION"
        );
        let slot = required!(args, file, slot, "slot", "LSNPIPE_SLOT");
        validate_slot_name(&slot)?;

        let listen = args
            .metrics_listen
            .clone()
            .or_else(|| file.metrics_listen.clone())
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
        let metrics_listen = parse_listen(&listen)?;

        let max_batch_transactions = args
            .max_batch_transactions
            .or(file.max_batch_transactions)
            .unwrap_or(crate::apply::DEFAULT_MAX_TRANSACTIONS);
        if max_batch_transactions == 0 {
            return Err(ConfigError::Invalid {
                key: "max_batch_transactions",
                message: "must be at least 1".into(),
            });
        }
        let status_ms = args
            .status_interval_ms
            .or(file.status_interval_ms)
            .unwrap_or(10_000);
        if status_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "status_interval_ms",
                message: "must be at least 1".into(),
            });
        }
        let slot_monitor_secs = args
            .slot_monitor_interval_secs
            .or(file.slot_monitor_interval_secs)
            .unwrap_or(5);
        if slot_monitor_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "slot_monitor_interval_secs",
                message: "must be at least 1".into(),
            });
        }
        let copy_jobs = match args.copy_jobs.or(file.copy_jobs) {
            Some(0) => {
                return Err(ConfigError::Invalid {
                    key: "copy_jobs",
                    message: "must be at least 1".into(),
                });
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        Ok(RunSettings {
            source,
            target,
            publication,
            slot,
            create_slot: args.create_slot.or(file.create_slot).unwrap_or(false),
            failover_slot: args.failover_slot.or(file.failover_slot).unwrap_or(false),
            metrics_listen,
            ready_max_lag_bytes: args
                .ready_max_lag_bytes
                .or(file.ready_max_lag_bytes)
                .unwrap_or(256 * 1024 * 1024),
            ready_max_lag: Duration::from_secs(
                args.ready_max_lag_seconds
                    .or(file.ready_max_lag_seconds)
                    .unwrap_or(60),
            ),
            replication_timeout: Duration::from_secs(
                args.replication_timeout
                    .or(file.replication_timeout)
                    .unwrap_or(60),
            ),
            target_timeout: Duration::from_secs(
                args.target_timeout.or(file.target_timeout).unwrap_or(60),
            ),
            max_batch_transactions,
            max_batch: Duration::from_millis(
                args.max_batch_ms
                    .or(file.max_batch_ms)
                    .unwrap_or(crate::apply::DEFAULT_MAX_AGE_MS),
            ),
            status_interval: Duration::from_millis(status_ms),
            slot_monitor_interval: Duration::from_secs(slot_monitor_secs),
            snapshot: args.snapshot.or(file.snapshot),
            copy_jobs,
            create_tables: args.create_tables.or(file.create_tables).unwrap_or(false),
            schema_changes: args
                .schema_changes
                .or(file.schema_changes)
                .unwrap_or_default(),
            skip_ddl: args.skip_ddl,
        })
    }
}

/// A `metrics_listen` value: an address, or "off".
fn parse_listen(listen: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if listen.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    listen.parse().map(Some).map_err(|e| ConfigError::Invalid {
        key: "metrics_listen",
        message: format!("{listen:?} is not an address like 127.0.0.1:9930 ({e})"),
    })
}

/// PostgreSQL's own rule for slot names: lower-case letters, digits and underscores, at most 63.
fn validate_slot_name(slot: &str) -> Result<(), ConfigError> {
    let ok = slot.len() <= 63
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: "slot",
            message: format!(
                "{slot:?}: slot names may hold only lower-case letters, digits and underscores \
                 (at most 63)"
            ),
        })
    }
}

mod file;
mod ops;
pub use file::{DemoFileSettings, FileSettings};
pub use ops::{ConnArgs, DemoArgs, DemoSettings, OpsSettings};

#[cfg(test)]
mod tests;
