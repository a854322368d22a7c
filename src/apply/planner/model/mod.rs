//! Model-based tests of the planner: random change streams on small tables with unique indexes,
//! executed through the planner's plans on an in-memory target, must end with the same rows as
//! the changes applied one by one in stream order, with no unique index ever holding a duplicate
//! on the way (multi-row updates are checked in both row orders), every update and delete
//! finding its row, and `Global` tables seeing stream order across tables.
//!
//! `LSNPIPE_PLANNER_CASES` sets the number of random cases (default 2,000, a few seconds).

use bytes::Bytes;
use proptest::prelude::*;

use super::{Plan, Planner, TableOrder};
use crate::apply::batch::ColumnSet;
use crate::apply::statements::StatementKind;
use crate::apply::value::Param;

/// Columns of every model table: `k` (the replica identity key), `u`, `v`.
const WIDTH: usize = 3;
const TABLES: usize = 2;

type Row = [Option<u8>; WIDTH];

/// What a source client tries to do; made valid (or dropped) against the source's state.
#[derive(Debug, Clone)]
enum Intent {
    Insert {
        t: usize,
        k: u8,
        u: Option<u8>,
        v: u8,
    },
    Update {
        t: usize,
        pick: usize,
        u: Option<u8>,
        v: u8,
        toast: bool,
    },
    KeyChange {
        t: usize,
        pick: usize,
        k: u8,
    },
    Delete {
        t: usize,
        pick: usize,
    },
    /// A value of `u` moved between two rows the way a source can do it: via NULL.
    Swap {
        t: usize,
        a: usize,
        b: usize,
    },
    Truncate {
        t: usize,
        both: bool,
    },
    /// A Relation message (the table's buffers are sent).
    Relation {
        t: usize,
    },
    /// The group commits.
    Commit,
}

/// One change as the source sends it.
#[derive(Debug, Clone)]
enum Change {
    Insert {
        t: usize,
        row: Row,
    },
    /// `old_key`: the key before a key change. `toast`: `v` was not sent (unchanged).
    Update {
        t: usize,
        old_key: Option<u8>,
        new: Row,
        toast: bool,
    },
    Delete {
        t: usize,
        key: u8,
    },
    Truncate {
        tables: Vec<usize>,
    },
    Relation {
        t: usize,
    },
    Commit,
}

#[derive(Debug, Clone, Copy)]
struct Setup {
    unique_u: [bool; TABLES],
    triggers: [bool; TABLES],
    replica_role: bool,
}

impl Setup {
    fn order(&self, t: usize) -> TableOrder {
        if !self.replica_role || self.triggers[t] {
            TableOrder::Global
        } else if self.unique_u[t] {
            TableOrder::Table
        } else {
            TableOrder::Keyed
        }
    }
}

/// The in-memory target (or source): rows per table, with the unique indexes enforced.
#[derive(Debug, Clone, Default)]
struct Db {
    tables: [Vec<Row>; TABLES],
}

#[derive(Debug)]
struct Violation(String);

impl Db {
    fn check(&self, t: usize, setup: &Setup) -> Result<(), Violation> {
        let rows = &self.tables[t];
        for (i, a) in rows.iter().enumerate() {
            for b in &rows[i + 1..] {
                if a[0].is_some() && a[0] == b[0] {
                    return Err(Violation(format!("table {t}: duplicate key {:?}", a[0])));
                }
                if setup.unique_u[t] && a[1].is_some() && a[1] == b[1] {
                    return Err(Violation(format!("table {t}: duplicate u {:?}", a[1])));
                }
            }
        }
        Ok(())
    }

    fn find(&self, t: usize, key: Option<u8>) -> Option<usize> {
        self.tables[t]
            .iter()
            .position(|r| r[0] == key && key.is_some())
    }

    /// Set `columns` of the row with `key` to `values`; whether the row was found.
    fn set(
        &mut self,
        t: usize,
        key: Option<u8>,
        columns: &ColumnSet,
        values: &[Option<u8>],
    ) -> bool {
        let Some(i) = self.find(t, key) else {
            return false;
        };
        let mut values = values.iter();
        for c in 0..WIDTH {
            if columns.contains(c) {
                self.tables[t][i][c] = values.next().copied().flatten();
            }
        }
        true
    }

    fn sorted(&self) -> [Vec<Row>; TABLES] {
        let mut out = self.tables.clone();
        for rows in &mut out {
            rows.sort();
        }
        out
    }
}

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

fn table(oid: u32) -> usize {
    usize::try_from(oid - 100).unwrap_or(0)
}

fn all_columns() -> ColumnSet {
    let mut set = ColumnSet::with_columns(WIDTH);
    for c in 0..WIDTH {
        set.insert(c);
    }
    set
}

/// Make the intents valid against a simulated source and return the change stream.
fn source_stream(intents: &[Intent], setup: &Setup) -> Vec<Change> {
    let mut db = Db::default();
    let mut out = Vec::new();
    let pick = |db: &Db, t: usize, pick: usize| -> Option<Row> {
        let rows = &db.tables[t];
        (!rows.is_empty()).then(|| rows[pick % rows.len()])
    };
    for intent in intents {
        let before = db.clone();
        let changes = match *intent {
            Intent::Insert { t, k, u, v } => {
                let row = [Some(k), u, Some(v)];
                db.tables[t].push(row);
                vec![Change::Insert { t, row }]
            }
            Intent::Update {
                t,
                pick: p,
                u,
                v,
                toast,
            } => {
                let Some(old) = pick(&db, t, p) else { continue };
                let new = [old[0], u, if toast { old[2] } else { Some(v) }];
                db.set(t, old[0], &all_columns(), &new);
                vec![Change::Update {
                    t,
                    old_key: None,
                    new,
                    toast,
                }]
            }
            Intent::KeyChange { t, pick: p, k } => {
                let Some(old) = pick(&db, t, p) else { continue };
                let new = [Some(k), old[1], old[2]];
                db.set(t, old[0], &all_columns(), &new);
                vec![Change::Update {
                    t,
                    old_key: old[0],
                    new,
                    toast: false,
                }]
            }
            Intent::Delete { t, pick: p } => {
                let Some(old) = pick(&db, t, p) else { continue };
                let Some(key) = old[0] else { continue };
                db.tables[t].retain(|r| r[0] != old[0]);
                vec![Change::Delete { t, key }]
            }
            Intent::Swap { t, a, b } => {
                let (Some(ra), Some(rb)) = (pick(&db, t, a), pick(&db, t, b)) else {
                    continue;
                };
                if ra[0] == rb[0] {
                    continue;
                }
                let steps = [
                    [ra[0], None, ra[2]],
                    [rb[0], ra[1], rb[2]],
                    [ra[0], rb[1], ra[2]],
                ];
                steps
                    .iter()
                    .map(|new| {
                        db.set(t, new[0], &all_columns(), new);
                        Change::Update {
                            t,
                            old_key: None,
                            new: *new,
                            toast: false,
                        }
                    })
                    .collect()
            }
            Intent::Truncate { t, both } => {
                let tables = if both { vec![0, 1] } else { vec![t] };
                for &t in &tables {
                    db.tables[t].clear();
                }
                vec![Change::Truncate { tables }]
            }
            Intent::Relation { t } => vec![Change::Relation { t }],
            Intent::Commit => vec![Change::Commit],
        };
        // An intent the source would reject (a duplicate) never reaches the stream.
        if (0..TABLES).all(|t| db.check(t, setup).is_ok()) {
            out.extend(changes);
        } else {
            db = before;
        }
    }
    out
}

/// The changes applied one by one, in stream order.
fn apply_in_order(stream: &[Change]) -> Db {
    let mut db = Db::default();
    for change in stream {
        match change {
            Change::Insert { t, row } => db.tables[*t].push(*row),
            Change::Update {
                t,
                old_key,
                new,
                toast,
            } => {
                let mut columns = all_columns();
                if *toast {
                    columns = ColumnSet::with_columns(WIDTH);
                    columns.insert(0);
                    columns.insert(1);
                }
                let values: Vec<Option<u8>> = (0..WIDTH)
                    .filter(|c| columns.contains(*c))
                    .map(|c| new[c])
                    .collect();
                db.set(*t, old_key.or(new[0]), &columns, &values);
            }
            Change::Delete { t, key } => db.tables[*t].retain(|r| r[0] != Some(*key)),
            Change::Truncate { tables } => tables.iter().for_each(|&t| db.tables[t].clear()),
            Change::Relation { .. } | Change::Commit => {}
        }
    }
    db
}

/// The stream fed through the planner: the plans in execution order.
fn plan(stream: &[Change], setup: &Setup) -> Vec<Plan> {
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
fn execute(plans: &[Plan], setup: &Setup) -> Result<Db, Violation> {
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

/// The tables a sequence touches, with repeats of one table in a row collapsed.
fn table_sequence(oids: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut out: Vec<usize> = oids.collect();
    out.dedup();
    out
}

fn intent() -> impl Strategy<Value = Intent> {
    let t = 0..TABLES;
    let small = 0u8..6;
    let u = proptest::option::weighted(0.8, 0u8..4);
    prop_oneof![
        6 => (t.clone(), small.clone(), u.clone(), 0u8..3)
            .prop_map(|(t, k, u, v)| Intent::Insert { t, k, u, v }),
        6 => (t.clone(), any::<usize>(), u, 0u8..3, any::<bool>())
            .prop_map(|(t, pick, u, v, toast)| Intent::Update { t, pick, u, v, toast }),
        2 => (t.clone(), any::<usize>(), small)
            .prop_map(|(t, pick, k)| Intent::KeyChange { t, pick, k }),
        4 => (t.clone(), any::<usize>()).prop_map(|(t, pick)| Intent::Delete { t, pick }),
        2 => (t.clone(), any::<usize>(), any::<usize>())
            .prop_map(|(t, a, b)| Intent::Swap { t, a, b }),
        1 => (t.clone(), any::<bool>()).prop_map(|(t, both)| Intent::Truncate { t, both }),
        1 => t.prop_map(|t| Intent::Relation { t }),
        1 => Just(Intent::Commit),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<[bool; TABLES]>(),
        proptest::array::uniform2(proptest::bool::weighted(0.2)),
        proptest::bool::weighted(0.85),
    )
        .prop_map(|(unique_u, triggers, replica_role)| Setup {
            unique_u,
            triggers,
            replica_role,
        })
}

fn cases() -> u32 {
    std::env::var("LSNPIPE_PLANNER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn plans_end_where_stream_order_ends_and_never_break_a_unique_index(
        setup in setup(),
        intents in proptest::collection::vec(intent(), 0..60),
    ) {
        let stream = source_stream(&intents, &setup);
        let expected = apply_in_order(&stream);
        let plans = plan(&stream, &setup);
        let got = match execute(&plans, &setup) {
            Ok(db) => db,
            Err(Violation(why)) => {
                return Err(TestCaseError::fail(format!("{why}\nstream: {stream:?}\nplans: {plans:?}")));
            }
        };
        prop_assert_eq!(got.sorted(), expected.sorted(), "stream: {:?}", stream);

        // Global tables: the order of statements across tables is the stream's.
        if (0..TABLES).all(|t| setup.order(t) == TableOrder::Global) {
            let streamed = table_sequence(stream.iter().flat_map(|c| match c {
                Change::Insert { t, .. } | Change::Update { t, .. } | Change::Delete { t, .. } => vec![*t],
                Change::Truncate { tables } => tables.clone(),
                Change::Relation { .. } | Change::Commit => vec![],
            }));
            let planned = table_sequence(plans.iter().flat_map(|p| match p {
                Plan::Rows { oid, .. } => vec![table(*oid)],
                Plan::Truncate { oids, .. } => oids.iter().map(|&o| table(o)).collect(),
            }));
            prop_assert_eq!(planned, streamed);
        }
    }
}

#[test]
fn an_update_freeing_a_unique_value_goes_before_the_insert_taking_it() {
    // users(id PRIMARY KEY, email UNIQUE) holding (1, 'a'):
    // UPDATE users SET email = 'b' WHERE id = 1; INSERT INTO users VALUES (2, 'a');
    let setup = Setup {
        unique_u: [true, false],
        triggers: [false; TABLES],
        replica_role: true,
    };
    let stream = vec![
        Change::Insert {
            t: 0,
            row: [Some(1), Some(0), Some(0)],
        },
        Change::Commit,
        Change::Update {
            t: 0,
            old_key: None,
            new: [Some(1), Some(1), Some(0)],
            toast: false,
        },
        Change::Insert {
            t: 0,
            row: [Some(2), Some(0), Some(0)],
        },
    ];
    let plans = plan(&stream, &setup);
    let db = execute(&plans, &setup)
        .map_err(|v| v.0)
        .expect("no unique violation");
    assert_eq!(db.sorted(), apply_in_order(&stream).sorted());
}

#[test]
fn keyed_tables_still_fold_and_merge() {
    let setup = Setup {
        unique_u: [false; TABLES],
        triggers: [false; TABLES],
        replica_role: true,
    };
    let mut stream = Vec::new();
    for k in 0..10 {
        stream.push(Change::Insert {
            t: 0,
            row: [Some(k), Some(k), Some(0)],
        });
    }
    for v in 1..5 {
        for k in 0..10 {
            stream.push(Change::Update {
                t: 0,
                old_key: None,
                new: [Some(k), Some(k), Some(v)],
                toast: false,
            });
        }
    }
    let plans = plan(&stream, &setup);
    // One 8-row and one 2-row insert, then the 40 updates folded to 10 rows: 8 + 2 again.
    assert_eq!(plans.len(), 4, "{plans:?}");
    assert_eq!(
        execute(&plans, &setup)
            .map_err(|v| v.0)
            .expect("valid")
            .sorted(),
        apply_in_order(&stream).sorted()
    );
}
