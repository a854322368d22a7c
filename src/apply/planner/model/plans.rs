//! The planner's side of the model: the change stream fed through the planner, and its plans
//! executed on the in-memory target, which checks the unique indexes after every row.

use bytes::Bytes;

use super::super::{Plan, Planner};
use super::stream::Change;
use super::{Db, Setup, Violation, WIDTH, all_columns};
use crate::apply::statements::StatementKind;
use crate::apply::value::Param;

fn param(value: Option<u8>) -> Param {
    match value {
        Some(x) => Param::Text(Bytes::from(x.to_string())),
        None => Param::Null,
    }
}

fn value(param: &Param) -> Option<u8> {
    match param {
        Param::Null => None,
        Param::Text(b) | Param::Binary(b) => std::str::from_utf8(b).ok()?.parse().ok(),
    }
}

fn oid(t: usize) -> u32 {
    100 + u32::try_from(t).unwrap_or(0)
}

pub(super) fn table(oid: u32) -> usize {
    usize::try_from(oid - 100).unwrap_or(0)
}

/// The stream fed through the planner: the plans in execution order.
pub(super) fn plan(stream: &[Change], setup: &Setup) -> Vec<Plan> {
    let mut planner = Planner::default();
    let mut plans = Vec::new();
    for change in stream {
        match change {
            Change::Insert { t, row } => {
                planner.insert(
                    oid(*t),
                    setup.order(*t),
                    all_columns(),
                    row.map(param).to_vec(),
                );
            }
            Change::Update {
                t,
                old_key: None,
                new,
                toast,
            } => {
                let values = (0..WIDTH)
                    .map(|c| (!(*toast && c == 2)).then(|| param(new[c])))
                    .collect();
                planner.update(oid(*t), setup.order(*t), vec![param(new[0])], values);
            }
            Change::Update {
                t,
                old_key: Some(old),
                new,
                ..
            } => {
                let mut params: Vec<Param> = new.map(param).to_vec();
                params.push(param(Some(*old)));
                let plan = Plan::Rows {
                    oid: oid(*t),
                    kind: StatementKind::UpdateByKey,
                    columns: all_columns(),
                    params,
                    operation: crate::apply::Operation::Update,
                };
                planner.statement(plan, setup.order(*t));
            }
            Change::Delete { t, key } => {
                planner.delete(oid(*t), setup.order(*t), vec![param(Some(*key))]);
            }
            Change::Truncate { tables } => {
                planner.truncate(tables.iter().map(|&t| oid(t)).collect(), false);
            }
            Change::Relation { t } => planner.flush_table(oid(*t)),
            Change::Commit => planner.flush_all(),
        }
        while let Some(p) = planner.next_plan() {
            plans.push(p);
        }
    }
    planner.flush_all();
    while let Some(p) = planner.next_plan() {
        plans.push(p);
    }
    assert!(planner.is_empty());
    plans
}

/// Execute `plans` on an empty model target, checking the unique indexes after every row.
pub(super) fn execute(plans: &[Plan], setup: &Setup) -> Result<Db, Violation> {
    let mut db = Db::default();
    for plan in plans {
        let (oid, kind, columns, params) = match plan {
            Plan::Truncate { oids, .. } => {
                oids.iter().for_each(|&o| db.tables[table(o)].clear());
                continue;
            }
            Plan::Rows {
                oid,
                kind,
                columns,
                params,
                ..
            } => (*oid, kind, columns, params),
        };
        let t = table(oid);
        let values: Vec<Option<u8>> = params.iter().map(value).collect();
        let set_width = (0..WIDTH).filter(|c| columns.contains(*c)).count();
        match kind {
            StatementKind::Insert { .. } => {
                for row in values.chunks(set_width) {
                    let mut full = [None; WIDTH];
                    let mut row = row.iter();
                    for (c, slot) in full.iter_mut().enumerate() {
                        if columns.contains(c) {
                            *slot = row.next().copied().flatten();
                        }
                    }
                    db.tables[t].push(full);
                    db.check(t, setup)?;
                }
            }
            StatementKind::UpdateByKey | StatementKind::UpdateRows { .. } => {
                let rows: Vec<&[Option<u8>]> = values.chunks(set_width + 1).collect();
                // Uniqueness is checked row by row in an order the target chooses: try both.
                let mut reversed = db.clone();
                for row in rows.iter().rev() {
                    reversed.set(t, row[set_width], columns, &row[..set_width]);
                    reversed.check(t, setup)?;
                }
                for row in &rows {
                    if !db.set(t, row[set_width], columns, &row[..set_width]) {
                        return Err(Violation(format!("table {t}: update found no row")));
                    }
                    db.check(t, setup)?;
                }
            }
            StatementKind::DeleteByKey | StatementKind::DeleteRows { .. } => {
                for key in &values {
                    let Some(i) = db.find(t, *key) else {
                        return Err(Violation(format!("table {t}: delete found no row")));
                    };
                    db.tables[t].remove(i);
                }
            }
            StatementKind::UpdateOneRow { .. } | StatementKind::DeleteOneRow { .. } => {
                return Err(Violation(
                    "identity FULL statements are not modelled".into(),
                ));
            }
        }
    }
    Ok(db)
}
