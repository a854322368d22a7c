//! Grouping: many source transactions in one target transaction, and runs of inserts as one
//! multi-row statement.
//!
//! ```text
//! source:  B I U C   B I I C   B D C   ...            (commit_if(caught_up) after each C)
//! target:  BEGIN ─────────────────────────── progress row, COMMIT   when caught up, or the group
//!                                                                    reached its size/age limits
//! inserts into one table:  I I I I ─▶ INSERT … VALUES (…), (…), (…), (…)
//! ```
//!
//! The target only ever shows a group's last source commit, which the source itself showed, so
//! grouping is invisible to readers while it saves a commit (and its fsync) per source
//! transaction. Buffered insert rows are bounded in count and bytes, so a source transaction of
//! millions of rows streams through.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::error::Operation;
use super::value::Param;
use crate::Lsn;

/// When an open group of source transactions is committed on the target even though more are
/// waiting: a bound on how much work a crash can throw away, and on how stale the target gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    pub max_transactions: u64,
    pub max_rows: u64,
    pub max_age: Duration,
}

/// `--max-batch-transactions` unless set.
pub const DEFAULT_MAX_TRANSACTIONS: u32 = 10_000;
/// `--max-batch-ms` unless set.
pub const DEFAULT_MAX_AGE_MS: u64 = 250;

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            max_transactions: u64::from(DEFAULT_MAX_TRANSACTIONS),
            max_rows: 100_000,
            max_age: Duration::from_millis(DEFAULT_MAX_AGE_MS),
        }
    }
}

/// An open target transaction.
#[derive(Debug)]
pub(crate) struct Group {
    started: Instant,
    pub transactions: u64,
    pub rows: u64,
    /// End LSN and commit time (µs since 2000) of the last source commit in the group.
    pub last_commit: Option<(Lsn, i64)>,
    /// Row changes per (source relation OID, operation), reported once the group commits.
    pub rows_by_table: HashMap<(u32, Operation), u64>,
}

impl Group {
    pub fn new() -> Self {
        Group {
            started: Instant::now(),
            transactions: 0,
            rows: 0,
            last_commit: None,
            rows_by_table: HashMap::new(),
        }
    }

    /// How long the group has been open.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn count(&mut self, oid: u32, operation: Operation) {
        self.rows += 1;
        *self.rows_by_table.entry((oid, operation)).or_default() += 1;
    }

    pub fn is_full(&self, limits: &GroupLimits) -> bool {
        self.transactions >= limits.max_transactions
            || self.rows >= limits.max_rows
            || self.started.elapsed() >= limits.max_age
    }
}

/// A set of column positions of one relation (which columns a statement names).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct ColumnSet(Vec<u64>);

impl ColumnSet {
    pub fn with_columns(columns: usize) -> Self {
        ColumnSet(vec![0; columns.div_ceil(64).max(1)])
    }

    pub fn insert(&mut self, index: usize) {
        if let Some(word) = self.0.get_mut(index / 64) {
            *word |= 1 << (index % 64);
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        self.0
            .get(index / 64)
            .is_some_and(|word| word & (1 << (index % 64)) != 0)
    }
}

/// Largest number of rows in one multi-row INSERT; the protocol allows 65,535 parameters.
const MAX_ROWS_PER_INSERT: usize = 256;
const MAX_PARAMS: usize = 65_535;
/// Beyond these, every buffered run is sent (memory bound across tables).
pub(crate) const MAX_BUFFERED_ROWS: usize = 8_192;
pub(crate) const MAX_BUFFERED_BYTES: usize = 16 << 20;

/// Rows of a full multi-row INSERT with `columns` parameters each.
pub(crate) fn rows_per_insert(columns: usize) -> usize {
    if columns == 0 {
        // `DEFAULT VALUES` takes one row.
        return 1;
    }
    (MAX_PARAMS / columns).clamp(1, MAX_ROWS_PER_INSERT)
}

/// Largest number of rows in one multi-row UPDATE: small enough that the planner joins the
/// rows to the table by its key index rather than scanning the table.
const MAX_ROWS_PER_UPDATE: usize = 64;

/// Rows of a full multi-row DELETE with `columns` key columns.
pub(crate) fn rows_per_delete(columns: usize) -> usize {
    (MAX_PARAMS / columns.max(1)).clamp(1, MAX_ROWS_PER_INSERT)
}

/// Rows of a full multi-row UPDATE with `columns` parameters each (SET values and key).
pub(crate) fn rows_per_update(columns: usize) -> usize {
    (MAX_PARAMS / columns.max(1)).clamp(1, MAX_ROWS_PER_UPDATE)
}

/// How many rows the next statement of a run of `rows` takes: a full statement, else the largest
/// power of two, so each table needs only a handful of prepared statement sizes.
pub(crate) fn next_chunk(rows: usize, full: usize) -> usize {
    if rows >= full {
        full
    } else if rows == 0 {
        0
    } else {
        1 << rows.ilog2()
    }
}

/// Insert rows into one relation with one column set, not yet sent.
#[derive(Debug)]
pub(crate) struct InsertRun {
    pub oid: u32,
    pub columns: ColumnSet,
    pub width: usize,
    pub params: Vec<Param>,
    pub rows: usize,
    pub bytes: usize,
}

/// Deletes by key from one relation, not yet sent (the key values, row after row).
#[derive(Debug)]
pub(crate) struct DeleteRun {
    pub oid: u32,
    pub width: usize,
    pub keys: Vec<Param>,
    pub rows: usize,
    pub bytes: usize,
}

/// Updates of one relation that keep their key, folded to one entry per key: within one target
/// transaction only the last values of a row are ever seen, so a row updated by a thousand
/// source transactions is written once. Only used while no triggers fire on the target.
#[derive(Debug)]
pub(crate) struct UpdateRun {
    pub oid: u32,
    index: HashMap<Vec<Param>, usize>,
    /// Key values, and per column the newest value sent (`None`: not sent, keep the target's).
    pub entries: Vec<(Vec<Param>, Vec<Option<Param>>)>,
    pub bytes: usize,
}

impl UpdateRun {
    pub fn new(oid: u32) -> Self {
        UpdateRun {
            oid,
            index: HashMap::new(),
            entries: Vec::new(),
            bytes: 0,
        }
    }

    /// Fold an update into the run. Returns whether it added a row, and the bytes it added.
    pub fn add(&mut self, key: Vec<Param>, values: Vec<Option<Param>>) -> (bool, usize) {
        let mut bytes: usize = values.iter().flatten().map(Param::size).sum();
        if let Some(&i) = self.index.get(&key) {
            let (_, current) = &mut self.entries[i];
            for (slot, value) in current.iter_mut().zip(values) {
                if value.is_some() {
                    *slot = value;
                }
            }
            self.bytes += bytes;
            return (false, bytes);
        }
        bytes += key.iter().map(Param::size).sum::<usize>();
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, values));
        self.bytes += bytes;
        (true, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn text(s: &'static str) -> Param {
        Param::Text(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn updates_of_one_key_fold_to_the_newest_values() {
        let mut run = UpdateRun::new(1);
        assert!(
            run.add(
                vec![text("1")],
                vec![Some(text("1")), Some(text("a")), None]
            )
            .0
        );
        assert!(
            run.add(
                vec![text("2")],
                vec![Some(text("2")), Some(text("b")), None]
            )
            .0
        );
        let (added, _) = run.add(
            vec![text("1")],
            vec![Some(text("1")), None, Some(text("z"))],
        );
        assert!(!added);
        assert_eq!(run.entries.len(), 2);
        assert_eq!(
            run.entries[0].1,
            [Some(text("1")), Some(text("a")), Some(text("z"))]
        );
    }

    #[test]
    fn chunks_are_full_statements_then_powers_of_two() {
        let full = 256;
        let mut left = 600;
        let mut chunks = Vec::new();
        while left > 0 {
            let n = next_chunk(left, full);
            chunks.push(n);
            left -= n;
        }
        assert_eq!(chunks, [256, 256, 64, 16, 8]);
    }

    #[test]
    fn rows_per_insert_respects_the_parameter_limit() {
        assert_eq!(rows_per_insert(0), 1);
        assert_eq!(rows_per_insert(4), 256);
        assert_eq!(rows_per_insert(1_000), 65);
        assert_eq!(rows_per_insert(1_600), 40);
    }

    #[test]
    fn column_sets_beyond_64_columns() {
        let mut set = ColumnSet::with_columns(130);
        set.insert(0);
        set.insert(129);
        assert!(set.contains(0) && set.contains(129) && !set.contains(64));
        assert_ne!(set, ColumnSet::with_columns(130));
    }

    #[test]
    fn group_fills_by_transactions_rows_or_age() {
        let limits = GroupLimits {
            max_transactions: 2,
            max_rows: 10,
            max_age: Duration::from_secs(3600),
        };
        let mut group = Group::new();
        assert!(!group.is_full(&limits));
        group.transactions = 2;
        assert!(group.is_full(&limits));
        let mut group = Group::new();
        group.rows = 10;
        assert!(group.is_full(&limits));
        let aged = GroupLimits {
            max_age: Duration::ZERO,
            ..limits
        };
        assert!(Group::new().is_full(&aged));
    }
}
