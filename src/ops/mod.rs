//! The operator commands beside `run`: `check` (preflight), `status`, `teardown`, `resync`,
//! `cutover` and `demo` (`verify` has its own module, `crate::verify`).
//!
//! ```text
//!  main.rs ──settings──▶ check::run    ── SQL on source + target ──▶ findings table, exit code
//!                        status::run   ── pg_replication_slots + lsnpipe.progress ──▶ report
//!                        teardown::run ── confirm ─▶ drop slot, bookkeeping rows, schema
//!                        resync::run   ── confirm ─▶ drop slot, empty published tables, bookkeeping
//!                        cutover::run  ── fence ─▶ catch up ─▶ sequences ─▶ verify ─▶ stop `run`
//!                        demo::run     ── LocalCluster × 2 ─▶ load ─▶ pipeline::run ─▶ status line
//! ```
//!
//! Each command writes its report to a `Write` it is given (stdout from `main`), and logs through
//! `tracing` like `run` does. Connection strings are shown only in their redacted form.

pub mod check;
pub mod cutover;
pub mod demo;
pub mod resync;
pub mod status;
pub mod teardown;

use tokio_postgres::Client;

use crate::cluster::ClusterError;
use crate::pipeline::RunError;
use crate::wire::{self, ConnConfig, ConnConfigError, WireError};

/// Why an operator command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{side} connection string")]
    ConnString {
        side: &'static str,
        #[source]
        source: ConnConfigError,
    },
    #[error("cannot connect to the {side} ({at})")]
    Connect {
        side: &'static str,
        at: String,
        #[source]
        source: WireError,
    },
    #[error("{side}: {what}")]
    Sql {
        side: &'static str,
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("demo clusters")]
    Cluster(#[from] ClusterError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pipeline")]
    Pipeline(#[source] Box<RunError>),
}

impl From<RunError> for OpsError {
    fn from(e: RunError) -> Self {
        OpsError::Pipeline(Box::new(e))
    }
}

impl OpsError {
    pub(crate) fn sql(
        side: &'static str,
        what: &'static str,
    ) -> impl Fn(tokio_postgres::Error) -> Self {
        move |source| OpsError::Sql { side, what, source }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| OpsError::Io { what, source }
    }
}

/// The source or the target of an operator command: its parsed connection string and an open SQL
/// session on it.
pub(crate) struct SideSession {
    pub name: &'static str,
    pub config: ConnConfig,
    pub client: Client,
}

impl SideSession {
    /// Parse `conn` and connect; errors show the redacted connection string.
    pub async fn connect(name: &'static str, conn: &str) -> Result<Self, OpsError> {
        let config = ConnConfig::parse(conn)
            .map_err(|source| OpsError::ConnString { side: name, source })?
            .with_fallback_application_name("lsnpipe");
        let client = wire::connect_sql(&config)
            .await
            .map_err(|source| OpsError::Connect {
                side: name,
                at: config.redacted(),
                source,
            })?;
        Ok(SideSession {
            name,
            config,
            client,
        })
    }

    pub fn sql(&self, what: &'static str) -> impl Fn(tokio_postgres::Error) -> OpsError {
        OpsError::sql(self.name, what)
    }
}

/// Rows of text cells printed as aligned columns (the last column is not padded).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 < columns {
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A byte count for people: "12.3 MiB".
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_all_but_the_last_column() {
        let text = table(
            &["A", "BB", "C"],
            &[vec!["long".into(), "x".into(), "free text".into()]],
        );
        assert_eq!(text, "A     BB  C\nlong  x   free text\n");
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
