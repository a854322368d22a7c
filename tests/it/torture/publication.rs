//! What a run's publication and target make of its tables beyond a plain copy: publication
//! column lists and row filters, columns the target generates itself, and target triggers
//! that log every row change to an audit table (whose order the oracle checks).
//!
//! ```text
//!  Schema tables ─▶ forms (own Rng stream) ─┬─▶ CREATE PUBLICATION pub FOR TABLE t (cols) WHERE (…)
//!                                            ├─▶ target DDL: defaults, GENERATED, audit triggers
//!                                            └─▶ oracle: published columns, filtered source rows
//! ```

use super::features::Features;
use super::rng::Rng;
use super::schema::{Column, Identity, KeyTy, Schema, Shape, Table, Ty, ident};

/// Give the tables of a run the forms its features ask for.
pub fn forms(tables: &mut [Table], f: &Features, rng: &mut Rng) {
    if f.has("target_generated") {
        target_generated(tables, rng);
    }
    if f.has("column_list") {
        column_lists(tables, f, rng);
    }
    if f.has("row_filter") {
        row_filters(tables, rng);
    }
    if f.has("target_trigger") {
        for (n, t) in tables.iter_mut().enumerate() {
            let keyed = matches!(t.identity, Identity::Key | Identity::Index);
            t.audited = t.shape == Shape::Plain && keyed && (n == 0 || rng.percent(60));
        }
    }
}

impl Table {
    /// Whether the publication sends column `i` (a source-generated column is never sent).
    pub fn published(&self, i: usize) -> bool {
        self.cols[i].generated.is_none() && self.column_list.as_ref().is_none_or(|l| l.contains(&i))
    }

    /// Columns whose values must be equal on both sides: the published ones the target does
    /// not compute itself, and the source-generated ones (the target computes them alike).
    pub fn compared_cols(&self) -> Vec<usize> {
        (0..self.cols.len())
            .filter(|&i| self.published(i) || self.cols[i].generated.is_some())
            .filter(|&i| self.target_generated.as_ref().map(|(c, _)| *c) != Some(i))
            .collect()
    }

    /// See [`Compared::target_check`].
    fn target_check(&self) -> Option<String> {
        let mut checks: Vec<String> = self
            .target_generated
            .iter()
            .map(|(c, e)| format!("{} IS NOT DISTINCT FROM ({e})", self.col(*c)))
            .collect();
        for c in
            (0..self.cols.len()).filter(|&c| !self.published(c) && self.target_order.contains(&c))
        {
            if self.cols[c].generated.is_some() {
                continue;
            }
            let has_default = self.target_defaults.iter().any(|(d, _)| *d == c);
            // num_nulls: `IS NULL` of a composite value asks about its fields.
            let nulls = if has_default { 0 } else { 1 };
            checks.push(format!("num_nulls({}) = {nulls}", self.col(c)));
        }
        (!checks.is_empty()).then(|| checks.join(" AND "))
    }

    /// This table's entry in a `CREATE PUBLICATION … FOR TABLE` list.
    pub fn publication_entry(&self) -> String {
        let mut entry = self.qualified();
        if let Some(list) = &self.column_list {
            let names: Vec<String> = list.iter().map(|&i| self.col(i)).collect();
            entry.push_str(&format!(" ({})", names.join(", ")));
        }
        if let Some(filter) = &self.row_filter {
            entry.push_str(&format!(" WHERE ({filter})"));
        }
        entry
    }

    /// The target's audit table of this table (see [`Table::audited`]).
    pub fn audit_table(&self) -> String {
        format!("public.{}", ident(&format!("_torture_audit_{}", self.name)))
    }

    /// The key of the row `alias` (`NEW`, `OLD`, a table alias) as text, the audit's `k`.
    pub fn key_text(&self, alias: &str) -> String {
        let cols: Vec<String> = self
            .key
            .iter()
            .map(|&i| format!("{alias}.{}", self.col(i)))
            .collect();
        format!("ROW({})::text", cols.join(", "))
    }

    /// Target DDL of the audit: a table, a function and triggers that fire under lsnpipe
    /// (`ENABLE ALWAYS`), recording every row change in the order the target applied it.
    pub fn audit_ddl(&self) -> String {
        let audit = self.audit_table();
        let function = format!(
            "public.{}",
            ident(&format!("_torture_audit_fn_{}", self.name))
        );
        let q = self.qualified();
        format!(
            "CREATE TABLE {audit} (id bigserial PRIMARY KEY, op text NOT NULL, k text, new_row {q});\n\
             CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $f$\n\
             BEGIN\n\
               IF TG_OP = 'TRUNCATE' THEN INSERT INTO {audit} (op) VALUES ('TRUNCATE'); RETURN NULL; END IF;\n\
               IF TG_OP IN ('UPDATE', 'DELETE') THEN INSERT INTO {audit} (op, k) VALUES ('OLD', {old}); END IF;\n\
               IF TG_OP IN ('INSERT', 'UPDATE') THEN\n\
                 INSERT INTO {audit} (op, k, new_row) VALUES ('NEW', {new}, NEW);\n\
               END IF;\n\
               RETURN NULL;\n\
             END $f$;\n\
             CREATE TRIGGER torture_audit AFTER INSERT OR UPDATE OR DELETE ON {q} \
               FOR EACH ROW EXECUTE FUNCTION {function}();\n\
             CREATE TRIGGER torture_audit_truncate AFTER TRUNCATE ON {q} \
               FOR EACH STATEMENT EXECUTE FUNCTION {function}();\n\
             ALTER TABLE {q} ENABLE ALWAYS TRIGGER torture_audit;\n\
             ALTER TABLE {q} ENABLE ALWAYS TRIGGER torture_audit_truncate;\n",
            old = self.key_text("OLD"),
            new = self.key_text("NEW"),
        )
    }
}

/// One relation the oracle compares.
#[derive(Debug, Clone)]
pub struct Compared {
    pub relation: String,
    /// Columns read on both sides, in source order.
    pub cols: Vec<String>,
    /// The source rows the target must hold (the publication's row filter).
    pub source_filter: Option<String>,
    /// A condition every target row must meet: a target-generated column equals its
    /// expression, and a column the column list leaves out keeps the target's own value (its
    /// default, else NULL) whatever lsnpipe writes.
    pub target_check: Option<String>,
    /// The target's audit table and the key text of a row aliased `x`, when audited.
    pub audit: Option<(String, String)>,
}

impl Schema {
    /// Every compared relation, with the source column list to read in source order.
    pub fn compared(&self) -> Vec<Compared> {
        self.tables
            .iter()
            .flat_map(|t| {
                let cols: Vec<String> = t.compared_cols().iter().map(|&i| t.col(i)).collect();
                let target_check = t.target_check();
                let audit = t.audited.then(|| (t.audit_table(), t.key_text("x")));
                t.compared().into_iter().map(move |relation| Compared {
                    relation,
                    cols: cols.clone(),
                    source_filter: t.row_filter.clone(),
                    target_check: target_check.clone(),
                    audit: audit.clone(),
                })
            })
            .collect()
    }

    /// The source's publication `pub`: every table, with its column list and row filter when
    /// the run has those (then as a table list; else `FOR ALL TABLES`, as users most often do).
    pub fn publication(&self, via_root: bool) -> String {
        let listed = self
            .tables
            .iter()
            .any(|t| t.column_list.is_some() || t.row_filter.is_some());
        let what = if listed {
            let mut entries: Vec<String> =
                self.tables.iter().map(Table::publication_entry).collect();
            entries.push("public._torture_marker".into());
            format!("FOR TABLE {}", entries.join(", "))
        } else {
            "FOR ALL TABLES".into()
        };
        format!("CREATE PUBLICATION pub {what} WITH (publish_via_partition_root = {via_root})")
    }
}

/// A column the source writes and the target computes itself: on keyed plain tables (at
/// least the first), `tg`, generated on the target from the key.
fn target_generated(tables: &mut [Table], rng: &mut Rng) {
    for (n, t) in tables.iter_mut().enumerate() {
        let keyed = matches!(t.identity, Identity::Key | Identity::Index);
        if t.shape != Shape::Plain || !keyed || !(n == 0 || rng.percent(60)) {
            continue;
        }
        let col = t.cols.len();
        let expr = format!("{}::text || '@'", ident(&t.cols[t.key[0]].name));
        t.cols.push(Column {
            name: "tg".into(),
            ty: Ty::Text,
            generated: None,
            not_null: false,
        });
        let at = usize::try_from(rng.below(u64::try_from(t.target_order.len() + 1).unwrap_or(1)))
            .unwrap_or(0);
        t.target_order.insert(at, col);
        t.target_generated = Some((col, expr));
    }
}

/// Publication column lists on plain tables (not REPLICA IDENTITY FULL, whose list must hold
/// every column): the key and the unique, foreign-key and target-generated columns stay in
/// the list; each column left out is missing on the target, or there with a default (or
/// NULL).
fn column_lists(tables: &mut [Table], f: &Features, rng: &mut Rng) {
    for t in tables.iter_mut() {
        if t.shape != Shape::Plain || t.identity == Identity::Full || !rng.percent(70) {
            continue;
        }
        let tg = t.target_generated.as_ref().map(|(c, _)| *c);
        let candidates: Vec<usize> = t.plain().into_iter().filter(|&c| Some(c) != tg).collect();
        if candidates.is_empty() {
            continue;
        }
        let mut left_out: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|_| rng.percent(50))
            .collect();
        if left_out.is_empty() {
            left_out.push(*rng.pick(&candidates));
        }
        // A list keeps one column at least (a table without a key may have one only).
        let sent = (0..t.cols.len()).filter(|i| t.cols[*i].generated.is_none());
        if sent.filter(|i| !left_out.contains(i)).count() == 0 {
            left_out.pop();
            if left_out.is_empty() {
                continue;
            }
        }
        t.column_list = Some(
            (0..t.cols.len())
                .filter(|&i| t.cols[i].generated.is_none() && !left_out.contains(&i))
                .collect(),
        );
        for c in left_out {
            match rng.below(3) {
                0 => t.target_order.retain(|&i| i != c),
                1 => {
                    let default = t.cols[c].ty.value(rng, f);
                    // A large text value is a subquery, which a DEFAULT may not hold.
                    if !default.contains("SELECT") {
                        t.target_defaults.push((c, default));
                    }
                }
                _ => {}
            }
        }
    }
}

/// Publication row filters on plain tables no foreign key references (the target would
/// lack parent rows). A keyed table's filter reads its key only (PostgreSQL's rule when the
/// publication sends updates and deletes), so key changes move rows in and out; a table
/// without a key may filter on any column, so any update may.
fn row_filters(tables: &mut [Table], rng: &mut Rng) {
    let referenced: Vec<usize> = tables.iter().filter_map(|t| t.fk.map(|(_, p)| p)).collect();
    for (n, t) in tables.iter_mut().enumerate() {
        if t.shape != Shape::Plain || referenced.contains(&n) || !rng.percent(70) {
            continue;
        }
        let filter = match t.identity {
            // A key change that moves a row into the filter reaches the target as an insert,
            // and PostgreSQL sends a TOASTed value the update left alone as "unchanged" in it:
            // the value is lost, for lsnpipe as for CREATE SUBSCRIPTION (a limitation of
            // PostgreSQL), so keyed filtered tables hold no large text.
            Identity::Key | Identity::Index if t.cols.iter().any(|c| c.ty == Ty::BigText) => {
                continue;
            }
            Identity::Key | Identity::Index => {
                if t.key.len() > 1 && rng.percent(40) {
                    format!("{} = 1", t.col(t.key[1]))
                } else {
                    let k = t.col(t.key[0]);
                    match t.key_ty {
                        KeyTy::Int | KeyTy::BigInt => format!("{k} % 3 <> 0"),
                        KeyTy::Text => format!("length({k}) % 2 = 0"),
                        KeyTy::Uuid => {
                            format!("{k} < '00000000-0000-4000-8000-000000000020'::uuid")
                        }
                    }
                }
            }
            Identity::Full | Identity::Nothing => {
                // A row filter may not read a column of a user-defined type.
                let builtin: Vec<usize> = t
                    .writable()
                    .into_iter()
                    .filter(|&c| !matches!(t.cols[c].ty, Ty::Enum | Ty::Domain | Ty::Composite))
                    .collect();
                if builtin.is_empty() {
                    continue;
                }
                let c = *rng.pick(&builtin);
                let name = t.col(c);
                match t.cols[c].ty {
                    Ty::Int | Ty::BigInt => format!("{name} % 2 = 0"),
                    Ty::Text | Ty::BigText => format!("length({name}) % 2 = 0"),
                    Ty::Bool => name.clone(),
                    _ => format!("{name} IS NOT NULL"),
                }
            }
        };
        t.row_filter = Some(filter);
    }
}

#[cfg(test)]
mod tests {
    use super::super::features::Spec;
    use super::*;

    /// Column lists keep what PostgreSQL and the target need; filters of keyed tables read keys.
    #[test]
    fn publication_forms_keep_what_postgresql_requires() {
        let spec =
            Spec::parse("safe,+column_list,+row_filter,+target_generated,+target_trigger").unwrap();
        let mut seen = (0, 0);
        for seed in 0..200 {
            let f = spec.for_seed(&mut Rng::new(seed).fork(0xFEA7));
            let schema = Schema::generate(&mut Rng::new(seed).fork(1), &f);
            for t in &schema.tables {
                if let Some(list) = &t.column_list {
                    seen.0 += 1;
                    assert!(t.key.iter().all(|k| list.contains(k)), "{}", t.name);
                    assert!(t.uniques.iter().all(|u| list.contains(&u.col)));
                    assert!(list.iter().all(|&c| t.cols[c].generated.is_none()));
                    assert!(!list.is_empty(), "{}", t.name);
                }
                if let Some(filter) = &t.row_filter {
                    seen.1 += 1;
                    if t.identity == Identity::Key {
                        let key_names: Vec<String> = t.key.iter().map(|&k| t.col(k)).collect();
                        assert!(key_names.iter().any(|k| filter.contains(k.as_str())));
                    }
                }
            }
            if seed == 7 {
                eprintln!(
                    "{}\n{}\n{}",
                    schema.ddl(false),
                    schema.publication(false),
                    schema.ddl(true)
                );
            }
        }
        assert!(seen.0 > 50 && seen.1 > 50, "{seen:?}");
    }
}
