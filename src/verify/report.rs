//! What `verify` found, per table, as a table for people or JSON for automation.

use std::fmt::Write as _;

use crate::Lsn;

/// One named difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// "missing" (on the source, not the target), "extra" or "different".
    pub kind: &'static str,
    /// `id=5, sub=2`, or the row's text for a table without a key.
    pub key: String,
    /// Names of the differing columns ("different" only).
    pub columns: Vec<String>,
    /// For keyless tables: how many copies are missing or extra.
    pub copies: i64,
}

/// The result for one table.
#[derive(Debug, Clone, Default)]
pub struct TableReport {
    pub table: String,
    pub keyed: bool,
    /// Rows read on the source in the first pass.
    pub rows: u64,
    pub chunks: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Rows that kept changing on the source while being compared: neither proven equal nor
    /// different.
    pub unsettled: u64,
    /// Chunks (keyless: buckets) whose first comparison differed and that were read again:
    /// most are lag, and settle equal.
    pub reread: u64,
    pub examples: Vec<Example>,
    /// A difference of the table itself (missing on the target, a column missing).
    pub problem: Option<String>,
}

impl TableReport {
    pub fn differs(&self) -> bool {
        self.missing + self.extra + self.different > 0 || self.problem.is_some()
    }
}

/// The whole run.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub tables: Vec<TableReport>,
    /// The source position of the first pass's snapshots (the earliest).
    pub source_lsn: Option<Lsn>,
    pub elapsed_secs: f64,
}

impl VerifyReport {
    pub fn differs(&self) -> bool {
        self.tables.iter().any(TableReport::differs)
    }

    pub fn render_text(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .tables
            .iter()
            .map(|t| {
                vec![
                    t.table.clone(),
                    t.rows.to_string(),
                    t.chunks.to_string(),
                    t.missing.to_string(),
                    t.extra.to_string(),
                    t.different.to_string(),
                    match (&t.problem, t.differs(), t.keyed) {
                        (Some(p), _, _) => p.clone(),
                        (None, true, _) => "DIFFERS".into(),
                        (None, false, true) => "equal".into(),
                        (None, false, false) => "equal (no key: compared as a multiset)".into(),
                    },
                ]
            })
            .collect();
        let mut out = crate::ops::table(
            &[
                "TABLE",
                "ROWS",
                "CHUNKS",
                "MISSING",
                "EXTRA",
                "DIFFERENT",
                "RESULT",
            ],
            &rows,
        );
        for t in &self.tables {
            for e in &t.examples {
                let _ = write!(out, "{} {} {}", t.table, e.kind, e.key);
                if !e.columns.is_empty() {
                    let _ = write!(out, " columns: {}", e.columns.join(", "));
                }
                if e.copies > 1 {
                    let _ = write!(out, " ({} copies)", e.copies);
                }
                out.push('\n');
            }
            let shown = t.examples.len() as u64;
            let total = t.missing + t.extra + t.different;
            if total > shown && !t.keyed {
                // Keyless counts are copies, examples are distinct rows: no "more" line.
            } else if total > shown {
                let _ = writeln!(out, "{} … {} more differing rows", t.table, total - shown);
            }
            if t.unsettled > 0 {
                let _ = writeln!(
                    out,
                    "{}: {} rows changed on the source during every re-read and were not \
                     compared; run verify again when writes are lower",
                    t.table, t.unsettled
                );
            }
        }
        let verdict = if self.differs() {
            "the target DIFFERS from the source"
        } else {
            "the target equals the source"
        };
        let at = self
            .source_lsn
            .map_or(String::new(), |l| format!(" (source snapshot at {l})"));
        let _ = writeln!(out, "{verdict}{at}, checked in {:.1} s", self.elapsed_secs);
        out
    }

    pub fn render_json(&self) -> String {
        let mut out = String::from("{\"equal\":");
        out.push_str(if self.differs() { "false" } else { "true" });
        out.push_str(",\"source_lsn\":");
        match self.source_lsn {
            Some(l) => json_str(&mut out, &l.to_string()),
            None => out.push_str("null"),
        }
        let _ = write!(
            out,
            ",\"elapsed_secs\":{:.3},\"tables\":[",
            self.elapsed_secs
        );
        for (i, t) in self.tables.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"table\":");
            json_str(&mut out, &t.table);
            let _ = write!(
                out,
                ",\"keyed\":{},\"equal\":{},\"rows\":{},\"chunks\":{},\"missing\":{},\"extra\":{},\
                 \"different\":{},\"unsettled\":{},\"reread\":{},\"problem\":",
                t.keyed,
                !t.differs(),
                t.rows,
                t.chunks,
                t.missing,
                t.extra,
                t.different,
                t.unsettled,
                t.reread
            );
            match &t.problem {
                Some(p) => json_str(&mut out, p),
                None => out.push_str("null"),
            }
            out.push_str(",\"examples\":[");
            for (j, e) in t.examples.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str("{\"kind\":");
                json_str(&mut out, e.kind);
                out.push_str(if t.keyed { ",\"key\":" } else { ",\"row\":" });
                json_str(&mut out, &e.key);
                out.push_str(",\"columns\":[");
                for (k, c) in e.columns.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    json_str(&mut out, c);
                }
                let _ = write!(out, "],\"copies\":{}}}", e.copies);
            }
            out.push_str("]}");
        }
        out.push_str("]}\n");
        out
    }
}

/// A JSON string literal (RFC 8259 escapes).
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> VerifyReport {
        VerifyReport {
            tables: vec![
                TableReport {
                    table: "public.a".into(),
                    keyed: true,
                    rows: 10,
                    chunks: 1,
                    different: 1,
                    examples: vec![Example {
                        kind: "different",
                        key: "id=3".into(),
                        columns: vec!["v".into()],
                        copies: 1,
                    }],
                    ..TableReport::default()
                },
                TableReport {
                    table: "public.\"b\"".into(),
                    rows: 2,
                    chunks: 1,
                    ..TableReport::default()
                },
            ],
            source_lsn: None,
            elapsed_secs: 0.5,
        }
    }

    #[test]
    fn text_names_each_row_and_the_verdict() {
        let text = report().render_text();
        assert!(
            text.contains("public.a different id=3 columns: v"),
            "{text}"
        );
        assert!(text.contains("DIFFERS"), "{text}");
        assert!(
            text.contains("the target DIFFERS from the source"),
            "{text}"
        );
    }

    #[test]
    fn json_is_escaped_and_complete() {
        let json = report().render_json();
        assert!(json.starts_with("{\"equal\":false,"), "{json}");
        assert!(json.contains("\"table\":\"public.\\\"b\\\"\""), "{json}");
        assert!(json.contains("\"kind\":\"different\",\"key\":\"id=3\",\"columns\":[\"v\"]"));
        let mut s = String::new();
        json_str(&mut s, "a\u{1}\n");
        assert_eq!(s, "\"a\\u0001\\n\"");
    }
}
