//! Shrinking: a failing run's trace (what committed, in commit order, and the faults) replayed
//! by one client, cut down while it still fails the same way, then printed as SQL to paste.
//!
//! ```text
//!  trace ─▶ replay (one client) fails alike? ─▶ ddmin over transactions ─▶ over statements
//!        ─▶ over the initial rows ─▶ drop unused tables ─▶ SQL a person can paste
//! ```
//! Every candidate is a full run against fresh databases, so shrinking is bounded by a budget.

use std::time::{Duration, Instant};

use super::runner::{self, FailKind, Failure, Outcome};
use super::workload::{Item, Plan, Txn, txn_sql};

/// The plan that replays `outcome` sequentially.
pub fn replay_plan(plan: &Plan, outcome: &Outcome) -> Plan {
    let mut p = plan.clone();
    p.initial = outcome.initial.clone();
    p.clients = vec![outcome.trace.clone()];
    p
}

struct Shrinker {
    kind: FailKind,
    deadline: Instant,
    attempts: u32,
    last: Option<Failure>,
}

impl Shrinker {
    /// Does `candidate` still fail the same way? (False once the budget is spent.)
    async fn fails(&mut self, candidate: &Plan) -> bool {
        if Instant::now() > self.deadline {
            return false;
        }
        self.attempts += 1;
        let out = runner::run(candidate, false).await;
        match out.result {
            Err(f) if f.kind == self.kind => {
                self.last = Some(f);
                true
            }
            _ => false,
        }
    }

    /// Delta debugging over a list: drop chunks while the result still fails.
    async fn ddmin<T: Clone>(
        &mut self,
        items: Vec<T>,
        build: &(dyn Fn(&[T]) -> Plan + Sync),
    ) -> Vec<T> {
        let mut items = items;
        let mut n = 2usize;
        while items.len() >= 2 && Instant::now() < self.deadline {
            let chunk = items.len().div_ceil(n);
            let mut reduced = false;
            let mut start = 0;
            while start < items.len() {
                let end = (start + chunk).min(items.len());
                let mut rest = items[..start].to_vec();
                rest.extend_from_slice(&items[end..]);
                if self.fails(&build(&rest)).await {
                    items = rest;
                    n = (n - 1).max(2);
                    reduced = true;
                    break;
                }
                start = end;
            }
            if !reduced {
                if n >= items.len() {
                    break;
                }
                n = (n * 2).min(items.len());
            }
        }
        if items.len() == 1 && self.fails(&build(&[])).await {
            items.clear();
        }
        items
    }
}

/// Tables no statement of `plan` mentions.
fn unused_tables(plan: &Plan) -> Vec<usize> {
    let txns: Vec<&Txn> = plan
        .initial
        .iter()
        .chain(plan.clients[0].iter().filter_map(|i| match i {
            Item::Txn(t) => Some(t),
            Item::Fault(_) => None,
        }))
        .collect();
    (0..plan.schema.tables.len())
        .filter(|&t| {
            let name = plan.schema.tables[t].qualified();
            !txns
                .iter()
                .any(|txn| txn.stmts.iter().any(|st| st.sql.contains(&name)))
        })
        .collect()
}

/// `plan` without tables `drop` (highest first); `None` when another table depends on one.
fn without_tables(plan: &Plan, drop: &[usize]) -> Option<Plan> {
    let mut p = plan.clone();
    let mut drop = drop.to_vec();
    drop.sort_unstable_by(|a, b| b.cmp(a));
    for t in drop {
        if p.schema.tables.len() == 1 {
            return None;
        }
        p.schema.tables.remove(t);
        if !fix_indexes(&mut p, t) {
            return None;
        }
    }
    Some(p)
}

impl Shrinker {
    /// Drop tables no statement mentions: all at once, else one by one (a dependency may
    /// veto; a failing DDL is a harness failure, not the same failure).
    async fn drop_unused_tables(&mut self, current: Plan) -> Plan {
        let unused = unused_tables(&current);
        if unused.is_empty() {
            return current;
        }
        if let Some(candidate) = without_tables(&current, &unused) {
            if self.fails(&candidate).await {
                return candidate;
            }
        }
        let mut current = current;
        for t in unused.into_iter().rev() {
            if let Some(candidate) = without_tables(&current, &[t]) {
                if self.fails(&candidate).await {
                    current = candidate;
                }
            }
        }
        current
    }
}

/// The shrunk plan and its failure, or `None` when the sequential replay does not fail alike.
pub async fn shrink(
    plan: &Plan,
    outcome: &Outcome,
    kind: FailKind,
    budget: Duration,
) -> Option<(Plan, Failure, u32)> {
    let mut s = Shrinker {
        kind,
        deadline: Instant::now() + budget,
        attempts: 0,
        last: None,
    };
    // Replayed as a backlog first: lsnpipe then meets the whole trace in large groups, the
    // same way every time; else as the run did it.
    let original = replay_plan(plan, outcome);
    let mut current = original.clone();
    current.settings.copy_interrupt_ms = None;
    current.settings.backlog = true;
    if !s.fails(&current).await {
        current = original;
        if !s.fails(&current).await {
            return None;
        }
    }

    // First a bold cut: only statements on the tables the failure names.
    let names = related(
        &current,
        quoted_names(
            &s.last
                .as_ref()
                .map(|f| f.detail.clone())
                .unwrap_or_default(),
        ),
    );
    if !names.is_empty() {
        let focused = focus(&current, &names);
        if s.fails(&focused).await {
            current = focused;
        }
    }

    current = s.drop_unused_tables(current).await;

    // Transactions and faults after the start.
    let base = current.clone();
    let items = s
        .ddmin(current.clients[0].clone(), &|items: &[Item]| {
            let mut p = base.clone();
            p.clients = vec![items.to_vec()];
            p
        })
        .await;
    current.clients = vec![items];

    // Rows copied before the start.
    let base = current.clone();
    current.initial = s
        .ddmin(current.initial.clone(), &|txns: &[Txn]| {
            let mut p = base.clone();
            p.initial = txns.to_vec();
            p
        })
        .await;

    current = s.drop_unused_tables(current).await;
    // Statements inside each remaining transaction.
    let mut i = 0;
    while i < current.initial.len() {
        let txn = current.initial[i].clone();
        let base = current.clone();
        let stmts = s
            .ddmin(txn.stmts.clone(), &|stmts| {
                let mut p = base.clone();
                p.initial[i] = Txn {
                    stmts: stmts.to_vec(),
                    commit: txn.commit,
                };
                p
            })
            .await;
        current.initial[i] = Txn {
            stmts,
            commit: txn.commit,
        };
        i += 1;
    }
    current = s.drop_unused_tables(current).await;
    let mut i = 0;
    while i < current.clients[0].len() {
        if let Item::Txn(txn) = current.clients[0][i].clone() {
            let base = current.clone();
            let stmts = s
                .ddmin(txn.stmts.clone(), &|stmts| {
                    let mut p = base.clone();
                    p.clients[0][i] = Item::Txn(Txn {
                        stmts: stmts.to_vec(),
                        commit: txn.commit,
                    });
                    p
                })
                .await;
            current.clients[0][i] = Item::Txn(Txn {
                stmts,
                commit: txn.commit,
            });
        }
        i += 1;
    }

    current = s.drop_unused_tables(current).await;
    let failure = s.last.clone()?;
    Some((current, failure, s.attempts))
}

/// Qualified names in a message: `"schema"."table"`.
fn quoted_names(detail: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = detail;
    while let Some(i) = rest.find("\".\"") {
        let before = &rest[..i];
        let after = &rest[i + 3..];
        let (Some(a), Some(b)) = (before.rfind('"'), after.find('"')) else {
            break;
        };
        let name = format!("{}\".\"{}\"", &before[a..], &after[..b]);
        if !out.contains(&name) {
            out.push(name);
        }
        rest = &after[b..];
    }
    out
}

/// The tables behind `names` (a partition names its root), with their inheritance parents and
/// the tables their foreign keys reference: statements on those change the named ones too.
fn related(plan: &Plan, names: Vec<String>) -> Vec<String> {
    use super::schema::Shape;
    let tables = &plan.schema.tables;
    let mut out = names.clone();
    for t in tables {
        if t.compared().iter().any(|r| names.contains(r)) || names.contains(&t.qualified()) {
            out.push(t.qualified());
            if let Shape::Child(p) = t.shape {
                out.push(tables[p].qualified());
            }
            if let Some((_, p)) = t.fk {
                out.push(tables[p].qualified());
            }
            // Children are changed through their parent, and cascades come from the referenced.
            for other in tables {
                if other.shape
                    == Shape::Child(
                        tables
                            .iter()
                            .position(|x| x.name == t.name)
                            .unwrap_or(usize::MAX),
                    )
                {
                    out.push(other.qualified());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    if out.len() == names.len()
        && names
            .iter()
            .all(|n| !tables.iter().any(|t| &t.qualified() == n))
    {
        return Vec::new();
    }
    out
}

/// `plan` with only the statements that mention one of `names` (and savepoint statements, which
/// keep their blocks balanced); empty transactions dropped.
fn focus(plan: &Plan, names: &[String]) -> Plan {
    let keep = |txn: &Txn| -> Option<Txn> {
        let stmts: Vec<_> = txn
            .stmts
            .iter()
            .filter(|s| {
                names.iter().any(|n| s.sql.contains(n.as_str())) || s.sql.contains("SAVEPOINT")
            })
            .cloned()
            .collect();
        stmts
            .iter()
            .any(|s| !s.sql.contains("SAVEPOINT"))
            .then_some(Txn {
                stmts,
                commit: txn.commit,
            })
    };
    let mut p = plan.clone();
    p.initial = plan.initial.iter().filter_map(keep).collect();
    p.clients = vec![
        plan.clients[0]
            .iter()
            .filter_map(|item| match item {
                Item::Txn(t) => keep(t).map(Item::Txn),
                Item::Fault(f) => Some(Item::Fault(*f)),
            })
            .collect(),
    ];
    p
}

/// After removing table `removed`, renumber references to later tables; false when another
/// table depends on the removed one.
fn fix_indexes(plan: &mut Plan, removed: usize) -> bool {
    use super::schema::Shape;
    for t in &mut plan.schema.tables {
        if let Some((col, parent)) = t.fk {
            if parent == removed {
                return false;
            }
            if parent > removed {
                t.fk = Some((col, parent - 1));
            }
        }
        if let Shape::Child(p) = t.shape {
            if p == removed {
                return false;
            }
            if p > removed {
                t.shape = Shape::Child(p - 1);
            }
        }
    }
    true
}

/// The plan as SQL a person can paste: DDL, rows before the start, then what runs after it.
pub fn plan_sql(plan: &Plan, failure: &Failure) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "-- lsnpipe torture, seed {:#x}: {:?}\n-- {}\n",
        plan.seed,
        failure.kind,
        failure.headline()
    ));
    out.push_str("-- On the source database");
    if plan.settings.datestyle {
        out.push_str(
            " (first: ALTER DATABASE … SET datestyle = 'SQL, DMY'; \
             ALTER DATABASE … SET intervalstyle = 'sql_standard'; then reconnect)",
        );
    }
    out.push_str(":\n");
    out.push_str(&plan.schema.ddl(false));
    out.push_str(&plan.schema.publication(plan.settings.via_root));
    out.push_str(";\n");
    let target = plan.schema.ddl(true);
    if target == plan.schema.ddl(false) {
        out.push_str("-- On the target database: the same DDL (without the publication).\n");
    } else {
        out.push_str("-- On the target database:\n");
        out.push_str(&target);
    }
    if plan.settings.datestyle {
        out.push_str(
            "-- Then on the target: ALTER DATABASE … SET datestyle = 'SQL, MDY'; \
             intervalstyle = 'iso_8601'; xmloption = document; array_nulls = off.\n",
        );
    }
    if !plan.initial.is_empty() {
        out.push_str(
            "-- On the source, before lsnpipe starts (reaches the target by the initial copy):\n",
        );
        for t in &plan.initial {
            out.push_str(&txn_sql(t));
        }
    }
    let st = &plan.settings;
    out.push_str(&format!(
        "-- Start: lsnpipe run --create-slot --publication pub --slot s --max-batch-transactions {} \
         --max-batch-ms {} --copy-jobs {}{}{}\n-- Then on the source:\n",
        st.max_batch_transactions,
        st.max_batch_ms,
        st.copy_jobs,
        st.copy_interrupt_ms
            .map(|ms| format!(" (SIGKILL it after {ms} ms and start it again)"))
            .unwrap_or_default(),
        if st.backlog {
            "\n-- and once it logs \"streaming\" (initial copy done), stop it (SIGTERM) until the end"
        } else {
            ""
        }
    ));
    for item in &plan.clients[0] {
        match item {
            Item::Txn(t) => out.push_str(&txn_sql(t)),
            Item::Fault(f) => out.push_str(&format!("-- fault: {}\n", f.describe())),
        }
    }
    if st.backlog {
        out.push_str("-- Start lsnpipe again (same command).\n");
    }
    out.push_str(
        "-- Then, once lsnpipe.copy_run says done on the target: \
         INSERT INTO public._torture_marker VALUES (1); wait for it on the target; compare.\n",
    );
    out
}
