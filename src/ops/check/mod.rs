//! `lsnpipe check`: a preflight of everything replication depends on, as a table of findings,
//! each with its fix.
//!
//! ```text
//!  source: connect ─▶ wal_level ─▶ slots/senders ─▶ slot ─▶ role ─▶ publication ─▶ tables
//!          (replica identity, SELECT) ─▶ max_slot_wal_keep_size
//!  target: connect ─▶ each published table and its columns ─▶ write privileges ─▶ lsnpipe schema
//! ```
//!
//! A finding is OK, WARN (works, but an operator should know) or FAIL (replication cannot work
//! until it is fixed); any FAIL makes the command exit non-zero.

use super::{OpsError, SideSession, table};
use crate::config::OpsSettings;

mod failover;
mod source;
mod target;
#[cfg(test)]
mod tests;

use failover::check_failover;
use source::check_source;
use target::check_target;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    Warn,
    Fail,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub check: String,
    pub finding: String,
    pub fix: String,
}

/// Everything `check` found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, severity: Severity, check: impl Into<String>, finding: impl Into<String>) {
        self.push_fix(severity, check, finding, "");
    }

    fn push_fix(
        &mut self,
        severity: Severity,
        check: impl Into<String>,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            check: check.into(),
            finding: finding.into(),
            fix: fix.into(),
        });
    }

    /// True when something stops replication from working.
    pub fn blocks_replication(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Fail)
    }

    /// The report for scripts (`check --format json`). The field names are part of lsnpipe's
    /// interface (README, "Scripting check and status"): add fields, never rename them.
    pub fn to_json(&self) -> serde_json::Value {
        let count = |severity| {
            self.findings
                .iter()
                .filter(|f| f.severity == severity)
                .count()
        };
        let findings: Vec<serde_json::Value> = self
            .findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "status": f.severity.as_str().to_ascii_lowercase(),
                    "check": f.check,
                    "finding": f.finding,
                    "fix": (!f.fix.is_empty()).then_some(&f.fix),
                })
            })
            .collect();
        serde_json::json!({
            "ready": !self.blocks_replication(),
            "failures": count(Severity::Fail),
            "warnings": count(Severity::Warn),
            "findings": findings,
        })
    }

    /// The findings as an aligned table, then a one-line verdict.
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .findings
            .iter()
            .map(|f| {
                vec![
                    f.severity.as_str().to_owned(),
                    f.check.clone(),
                    f.finding.clone(),
                    f.fix.clone(),
                ]
            })
            .collect();
        let mut out = table(&["STATUS", "CHECK", "FINDING", "FIX"], &rows);
        let fails = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Fail)
            .count();
        let warns = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Warn)
            .count();
        out.push('\n');
        if fails > 0 {
            out.push_str(&format!(
                "{fails} problem(s) block replication, {warns} warning(s).\n"
            ));
        } else {
            out.push_str(&format!("Ready to replicate ({warns} warning(s)).\n"));
        }
        out
    }
}

/// Run every check; connection failures are findings too, so one report shows all problems.
pub async fn run(settings: &OpsSettings) -> Report {
    let mut report = Report::default();
    let publication = settings.publication.clone().unwrap_or_default();
    let tables = match SideSession::connect("source", &settings.source).await {
        Ok(source) => {
            report.push(Severity::Ok, "source connection", source.config.redacted());
            match check_source(&source, &publication, &settings.slot, &mut report).await {
                Ok(tables) => Some(tables),
                Err(e) => {
                    report.push(Severity::Fail, "source", crate::report::chain(&e));
                    None
                }
            }
        }
        Err(e) => {
            report.push_fix(
                Severity::Fail,
                "source connection",
                crate::report::chain(&e),
                "check --source / LSNPIPE_SOURCE and that the server accepts the connection",
            );
            None
        }
    };
    match SideSession::connect("target", &settings.target).await {
        Ok(target) => {
            report.push(Severity::Ok, "target connection", target.config.redacted());
            if let Err(e) = check_target(&target, tables.as_deref(), &mut report).await {
                report.push(Severity::Fail, "target", crate::report::chain(&e));
            }
        }
        Err(e) => report.push_fix(
            Severity::Fail,
            "target connection",
            crate::report::chain(&e),
            "check --target / LSNPIPE_TARGET and that the server accepts the connection",
        ),
    }
    report
}
