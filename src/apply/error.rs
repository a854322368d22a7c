//! `ApplyError`: why applying to the target stopped, classified for the operator.
//!
//! ```text
//! target connection lost / server restarting ─▶ TargetConnection  (retry: reconnect, resume from progress)
//! table or column missing on the target     ─▶ MissingTable / MissingColumn (operator: create it)
//! a statement rejected by the target        ─▶ Data (table + operation + SQLSTATE; never row values)
//! messages out of order / unknown relation  ─▶ Protocol (a bug or an unsupported slot option)
//! ```
//!
//! A target error's message and DETAIL can quote row values (`Key (id)=(42) already exists`), so
//! `Data` keeps only the SQLSTATE, the message with quoted parts blanked, and the constraint /
//! column names; the full text is in the target server's log.

use std::fmt;

use crate::error_policy::is_transient;

/// The kind of change being applied when a statement failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Insert,
    Update,
    Delete,
    Truncate,
    /// Reading the target catalog, writing the progress row, BEGIN / COMMIT.
    Bookkeeping,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Truncate => "truncate",
            Operation::Bookkeeping => "bookkeeping",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A target error with row values removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    /// SQLSTATE, for example `23505`.
    pub code: String,
    /// The server's primary message with double-quoted parts replaced by `"…"`.
    pub message: String,
    pub constraint: Option<String>,
    pub column: Option<String>,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SQLSTATE {}: {}", self.code, self.message)?;
        if let Some(c) = &self.constraint {
            write!(f, " (constraint {c})")?;
        }
        if let Some(c) = &self.column {
            write!(f, " (column {c})")?;
        }
        Ok(())
    }
}

impl std::error::Error for TargetError {}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The target connection failed or the server is going away; nothing after the last
    /// returned durable LSN was committed.
    #[error(
        "lost the target connection while applying ({operation}); reconnect and resume from the \
         progress row"
    )]
    TargetConnection {
        operation: Operation,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error(
        "target table {table} does not exist: create it on the target with the source's \
         columns, then restart"
    )]
    MissingTable { table: String },

    #[error(
        "target table {table} has no column \"{column}\", which the source publishes: add it on \
         the target (ALTER TABLE {table} ADD COLUMN ...), then restart"
    )]
    MissingColumn { table: String, column: String },

    #[error(
        "the target rejected the schema change {statement} (make the change on the target by \
         hand, or give lsnpipe's role ownership of {table}, or run with --schema-changes off)"
    )]
    SchemaChange {
        table: String,
        statement: String,
        #[source]
        source: Box<TargetError>,
    },

    #[error(
        "the target rejected a change: {operation} on {table}; fix the target table or data \
         (the full message is in the target server log)"
    )]
    Data {
        table: String,
        operation: Operation,
        #[source]
        source: TargetError,
    },

    #[error(
        "captured DDL at {lsn} cannot be replayed (make the change on the target by hand, then \
         restart with --skip-ddl {lsn}; the command: {command})"
    )]
    DdlUnapplicable {
        lsn: crate::Lsn,
        command: String,
        #[source]
        reason: crate::ddl::DdlError,
    },

    #[error(
        "the target rejected captured DDL at {lsn} (fix the target so the command succeeds, or \
         make the change by hand and restart with --skip-ddl {lsn}; the command: {command})"
    )]
    DdlFailed {
        lsn: crate::Lsn,
        command: String,
        #[source]
        source: Box<TargetError>,
    },

    #[error("the change stream broke the protocol: {what}")]
    Protocol { what: String },
}

impl ApplyError {
    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        ApplyError::Protocol { what: what.into() }
    }

    /// A schema change (`statement`) on `table` failed.
    pub(crate) fn schema_change(
        source: tokio_postgres::Error,
        table: &str,
        statement: &str,
    ) -> Self {
        match ApplyError::from_target(source, table, Operation::Bookkeeping) {
            ApplyError::Data { source, .. } => ApplyError::SchemaChange {
                table: table.to_owned(),
                statement: statement.to_owned(),
                source: Box::new(source),
            },
            other => other,
        }
    }

    /// Captured DDL (`command`, at `lsn`) failed on the target. The message is kept whole: it
    /// names objects, not row values.
    pub(crate) fn ddl_failed(
        source: tokio_postgres::Error,
        lsn: crate::Lsn,
        command: &str,
    ) -> Self {
        match source.as_db_error() {
            Some(db) if !is_transient(db.code()) => ApplyError::DdlFailed {
                lsn,
                command: command.to_owned(),
                source: Box::new(TargetError {
                    code: db.code().code().to_owned(),
                    message: db.message().to_owned(),
                    constraint: db.constraint().map(str::to_owned),
                    column: db.column().map(str::to_owned),
                }),
            },
            _ => ApplyError::from_target(source, "(captured DDL)", Operation::Bookkeeping),
        }
    }

    /// Classify an error from a statement on `table`.
    pub(crate) fn from_target(
        source: tokio_postgres::Error,
        table: &str,
        operation: Operation,
    ) -> Self {
        let Some(db) = source.as_db_error() else {
            return ApplyError::TargetConnection { operation, source };
        };
        if is_transient(db.code()) {
            return ApplyError::TargetConnection { operation, source };
        }
        ApplyError::Data {
            table: table.to_owned(),
            operation,
            source: TargetError {
                code: db.code().code().to_owned(),
                message: blank_quoted(db.message()),
                constraint: db.constraint().map(str::to_owned),
                column: db.column().map(str::to_owned),
            },
        }
    }
}

/// `invalid input syntax for type integer: "abc"` → `… integer: "…"`.
fn blank_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('"');
        if i % 2 == 1 {
            out.push_str(part);
        } else {
            out.push('…');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_parts_are_blanked() {
        assert_eq!(
            blank_quoted("invalid input syntax for type integer: \"abc\""),
            "invalid input syntax for type integer: \"…\""
        );
        assert_eq!(blank_quoted("a \"x\" b \"y\" c"), "a \"…\" b \"…\" c");
        assert_eq!(blank_quoted("no quotes"), "no quotes");
    }

    #[test]
    fn schema_errors_name_the_table_and_column() {
        let err = ApplyError::MissingColumn {
            table: "\"s\".\"t\"".into(),
            column: "c".into(),
        };
        let text = err.to_string();
        assert!(
            text.contains("\"s\".\"t\"") && text.contains("\"c\""),
            "{text}"
        );
    }
}
