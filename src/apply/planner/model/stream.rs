//! The source's side of the model: what clients try to do (intents), made valid against a
//! simulated source into the change stream it would send, and that stream applied one change at
//! a time in stream order (the expected result).

use super::{Db, Row, Setup, TABLES, WIDTH, all_columns};
use crate::apply::batch::ColumnSet;

/// What a source client tries to do; made valid (or dropped) against the source's state.
#[derive(Debug, Clone)]
pub(super) enum Intent {
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
pub(super) enum Change {
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

/// Make the intents valid against a simulated source and return the change stream.
pub(super) fn source_stream(intents: &[Intent], setup: &Setup) -> Vec<Change> {
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
pub(super) fn apply_in_order(stream: &[Change]) -> Db {
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
