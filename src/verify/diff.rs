//! The decisions `verify` makes from what it read (pure: no I/O): which chunks differ, which rows
//! differ and how, which differences survive a re-read, and how long to pause for the rate limit.
//!
//! ```text
//!  source chunks (count, sum, last key) ─▶ Chunk ranges (lower, upper] ─▶ target hashes ─▶ differ?
//!  rows of a differing range, both sides ─▶ diff_rows ─▶ candidates (missing / extra / different)
//!  candidates re-read (source, target, source again) ─▶ settle: equal | differs | still moving
//!  keyless buckets: diff_multiset ─▶ row texts with their surplus on one side
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A key as its column texts (the order of the key columns).
pub type Key = Vec<String>;

/// One range of keys, `(lower, upper]`; `None` is open on that side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub lower: Option<Key>,
    pub upper: Option<Key>,
    /// Rows and hash sum on the source.
    pub rows: i64,
    pub sum: String,
}

/// The chunks of one pass over the source: each chunk starts after the previous one's last key;
/// the last chunk is open above, so target rows past the source's last key are inside one.
/// `reads` are the source chunk reads in order (rows, sum, last key); a read that returned fewer
/// than `limit` rows ends the pass.
pub fn chunks(reads: &[(i64, String, Option<Key>)], limit: i64) -> Vec<Chunk> {
    let mut out = Vec::with_capacity(reads.len());
    let mut lower: Option<Key> = None;
    for (rows, sum, last) in reads {
        let is_last = *rows < limit || last.is_none();
        let upper = if is_last { None } else { last.clone() };
        out.push(Chunk {
            lower: lower.clone(),
            upper: upper.clone(),
            rows: *rows,
            sum: sum.clone(),
        });
        if is_last {
            break;
        }
        lower = upper;
    }
    out
}

/// A row as key texts and column texts (NULL stays NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: Key,
    pub values: Vec<Option<String>>,
}

/// How a row differs between the source and the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    /// On both, with these columns (positions) different.
    Different(Vec<usize>),
}

fn by_key(rows: Vec<Row>) -> BTreeMap<Key, Vec<Option<String>>> {
    rows.into_iter().map(|r| (r.key, r.values)).collect()
}

/// Rows that differ between two reads of the same keys or range, in key-text order.
pub fn diff_rows(source: Vec<Row>, target: Vec<Row>) -> Vec<(Key, Difference)> {
    let source = by_key(source);
    let mut target = by_key(target);
    let mut out = Vec::new();
    for (key, values) in source {
        match target.remove(&key) {
            None => out.push((key, Difference::Missing)),
            Some(other) => {
                let columns = differing_columns(&values, &other);
                if !columns.is_empty() {
                    out.push((key, Difference::Different(columns)));
                }
            }
        }
    }
    out.extend(target.into_keys().map(|k| (k, Difference::Extra)));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn differing_columns(a: &[Option<String>], b: &[Option<String>]) -> Vec<usize> {
    let n = a.len().max(b.len());
    (0..n)
        .filter(|&i| a.get(i).and_then(Option::as_ref) != b.get(i).and_then(Option::as_ref))
        .collect()
}

/// What a re-read of one key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Equal,
    Differs(Difference),
    /// The source row changed between the two source reads: the comparison proves nothing.
    Moving,
}

/// Decide one key from a source read (`before`, at a position the target then reached), the
/// target read, and a source read after it (`after`). When the source row is the same before
/// and after, the target (which holds everything up to the first read's position and nothing
/// the source did not have at the second read) must equal it; otherwise the row is moving.
pub fn settle(
    before: Option<&Vec<Option<String>>>,
    target: Option<&Vec<Option<String>>>,
    after: Option<&Vec<Option<String>>>,
) -> Settled {
    if before != after {
        return Settled::Moving;
    }
    match (before, target) {
        (None, None) => Settled::Equal,
        (Some(_), None) => Settled::Differs(Difference::Missing),
        (None, Some(_)) => Settled::Differs(Difference::Extra),
        (Some(s), Some(t)) => {
            let columns = differing_columns(s, t);
            if columns.is_empty() {
                Settled::Equal
            } else {
                Settled::Differs(Difference::Different(columns))
            }
        }
    }
}

/// Keyless tables: the row texts whose multiplicity differs, with source count − target count
/// (positive: copies missing on the target; negative: extra copies), in text order.
pub fn diff_multiset(
    source: &HashMap<String, i64>,
    target: &HashMap<String, i64>,
) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = source
        .iter()
        .map(|(row, n)| (row.clone(), n - target.get(row).copied().unwrap_or(0)))
        .chain(
            target
                .iter()
                .filter(|(row, _)| !source.contains_key(*row))
                .map(|(row, n)| (row.clone(), -n)),
        )
        .filter(|(_, d)| *d != 0)
        .collect();
    out.sort();
    out
}

/// Keep only the surpluses seen in every read (same direction, the smaller size): a row that
/// differed once because of lag does not differ in the next read.
pub fn intersect_multiset(
    previous: &[(String, i64)],
    next: &[(String, i64)],
) -> Vec<(String, i64)> {
    let next: HashMap<&str, i64> = next.iter().map(|(r, d)| (r.as_str(), *d)).collect();
    previous
        .iter()
        .filter_map(|(row, d)| {
            let n = *next.get(row.as_str())?;
            if n.signum() != d.signum() {
                return None;
            }
            Some((row.clone(), n.signum() * n.abs().min(d.abs())))
        })
        .collect()
}

/// A rate limit in rows per second over the whole run: after `done` rows in `elapsed`, how long
/// to pause before reading more.
pub fn pause(rate: Option<u64>, done: u64, elapsed: Duration) -> Duration {
    match rate {
        Some(rate) if rate > 0 => {
            #[allow(clippy::cast_precision_loss, reason = "a pause, not an amount")]
            let due = Duration::from_secs_f64(done as f64 / rate as f64);
            due.saturating_sub(elapsed)
        }
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Key {
        vec![k.to_owned()]
    }

    fn row(k: &str, v: &[Option<&str>]) -> Row {
        Row {
            key: key(k),
            values: v.iter().map(|x| x.map(str::to_owned)).collect(),
        }
    }

    #[test]
    fn chunks_follow_each_other_and_the_last_is_open_above() {
        let reads = vec![
            (2, "10".into(), Some(key("2"))),
            (2, "20".into(), Some(key("4"))),
            (1, "5".into(), Some(key("5"))),
        ];
        let c = chunks(&reads, 2);
        assert_eq!(c.len(), 3);
        assert_eq!(
            (c[0].lower.clone(), c[0].upper.clone()),
            (None, Some(key("2")))
        );
        assert_eq!(
            (c[1].lower.clone(), c[1].upper.clone()),
            (Some(key("2")), Some(key("4")))
        );
        assert_eq!(
            (c[2].lower.clone(), c[2].upper.clone()),
            (Some(key("4")), None)
        );
    }

    #[test]
    fn a_full_last_read_is_followed_by_an_empty_open_chunk() {
        let reads = vec![(2, "1".into(), Some(key("2"))), (0, "0".into(), None)];
        let c = chunks(&reads, 2);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[1].lower.clone(), c[1].upper.clone(), c[1].rows),
            (Some(key("2")), None, 0)
        );
        // An empty table is one open chunk, so extra target rows are still seen.
        let c = chunks(&[(0, "0".into(), None)], 2);
        assert_eq!((c[0].lower.clone(), c[0].upper.clone()), (None, None));
    }

    #[test]
    fn rows_are_missing_extra_or_different_by_column() {
        let s = vec![
            row("1", &[Some("1"), Some("a")]),
            row("2", &[Some("2"), Some("b")]),
            row("3", &[Some("3"), None]),
        ];
        let t = vec![
            row("1", &[Some("1"), Some("a")]),
            row("3", &[Some("3"), Some("c")]),
            row("4", &[Some("4"), Some("d")]),
        ];
        assert_eq!(
            diff_rows(s, t),
            vec![
                (key("2"), Difference::Missing),
                (key("3"), Difference::Different(vec![1])),
                (key("4"), Difference::Extra),
            ]
        );
    }

    #[test]
    fn a_row_that_moved_between_source_reads_proves_nothing() {
        let a = vec![Some("1".to_owned())];
        let b = vec![Some("2".to_owned())];
        assert_eq!(settle(Some(&a), Some(&b), Some(&b)), Settled::Moving);
        assert_eq!(settle(Some(&a), Some(&a), Some(&a)), Settled::Equal);
        assert_eq!(
            settle(Some(&a), Some(&b), Some(&a)),
            Settled::Differs(Difference::Different(vec![0]))
        );
        assert_eq!(
            settle(Some(&a), None, Some(&a)),
            Settled::Differs(Difference::Missing)
        );
        assert_eq!(
            settle(None, Some(&a), None),
            Settled::Differs(Difference::Extra)
        );
        assert_eq!(settle(None, Some(&a), Some(&a)), Settled::Moving);
    }

    #[test]
    fn multisets_count_copies() {
        let s: HashMap<String, i64> = [("(1)".into(), 2), ("(2)".into(), 1)].into();
        let t: HashMap<String, i64> = [("(1)".into(), 1), ("(3)".into(), 1)].into();
        assert_eq!(
            diff_multiset(&s, &t),
            vec![("(1)".into(), 1), ("(2)".into(), 1), ("(3)".into(), -1)]
        );
    }

    #[test]
    fn only_surpluses_seen_in_every_read_remain() {
        let first = vec![("a".into(), 2), ("b".into(), 1), ("c".into(), -1)];
        let second = vec![("a".into(), 1), ("c".into(), 1)];
        assert_eq!(intersect_multiset(&first, &second), vec![("a".into(), 1)]);
    }

    #[test]
    fn the_rate_limit_pauses_until_the_rows_are_due() {
        assert_eq!(pause(None, 1_000_000, Duration::ZERO), Duration::ZERO);
        assert_eq!(
            pause(Some(1000), 500, Duration::ZERO),
            Duration::from_millis(500)
        );
        assert_eq!(
            pause(Some(1000), 500, Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}
