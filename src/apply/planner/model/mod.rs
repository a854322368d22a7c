//! Model-based tests of the planner: random change streams on small tables with unique indexes,
//! executed through the planner's plans on an in-memory target, must end with the same rows as
//! the changes applied one by one in stream order, with no unique index ever holding a duplicate
//! on the way (multi-row updates are checked in both row orders), every update and delete
//! finding its row, and `Global` tables seeing stream order across tables.
//!
//! `LSNPIPE_PLANNER_CASES` sets the number of random cases (default 2,000, a few seconds).
//!
//! ```text
//! strategies ─▶ intents ─▶ stream.rs: valid change stream ─┬─▶ apply_in_order ─▶ expected rows
//!                                                          └─▶ plans.rs: planner ─▶ plans
//!                                                                 ─▶ execute ─▶ rows, violations
//! ```

mod plans;
mod stream;

use proptest::prelude::*;

use super::{Plan, TableOrder};
use crate::apply::batch::ColumnSet;
use plans::{execute, plan, table};
use stream::{Change, Intent, apply_in_order, source_stream};

/// Columns of every model table: `k` (the replica identity key), `u`, `v`.
const WIDTH: usize = 3;
const TABLES: usize = 2;

type Row = [Option<u8>; WIDTH];

/// The model target's schema: which tables have a unique `u`, which have replica-firing
/// triggers, and whether the apply session runs with `session_replication_role = replica`.
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

fn all_columns() -> ColumnSet {
    let mut set = ColumnSet::with_columns(WIDTH);
    for c in 0..WIDTH {
        set.insert(c);
    }
    set
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
