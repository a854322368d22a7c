//! Key-range buckets of a table with one integer key (pure: no I/O): how the first comparison
//! splits the key space so that each side computes every bucket's hash in one scan.
//!
//! ```text
//!  source min(key), max(key), estimated rows ─▶ Buckets { min, width, count }
//!  row key k ─▶ bucket (k − min) / width, clamped: below min ─▶ 0, above max ─▶ count − 1
//!  bucket b ─▶ key range (lower, upper], open at both ends of the table, walked in chunks
//!             when its hashes differ
//! ```
//!
//! Arithmetic on the key needs no order of its text and no index: both servers group their
//! rows in one (parallel) sequential scan, which is as cheap as a whole-table checksum, and
//! only buckets that differ are read again in key order. Rows outside the source's key range
//! (extra rows on the target) fall into the first or last bucket, whose ranges are open.

use super::diff::Key;

/// The most buckets per table: about a megabyte of hash table per scanning process.
pub const MAX_BUCKETS: i64 = 10_000;

/// Key types whose values are bucketed by arithmetic (`key::int8`).
pub fn integer_type(ty: &str) -> bool {
    matches!(ty, "smallint" | "integer" | "bigint")
}

/// The bucket layout of one table: bucket `b` holds keys `min + b·width ..= min + (b+1)·width − 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    pub min: i64,
    pub max: i64,
    pub width: i64,
    pub count: i64,
}

impl Buckets {
    /// A layout of about `rows / chunk_rows` buckets over `[min, max]` (an empty table: one
    /// bucket). `rows` is an estimate (negative when the server has none: the key range is used
    /// instead). `None` when the key range does not fit in `bigint` arithmetic.
    pub fn new(bounds: Option<(i64, i64)>, rows: f64, chunk_rows: u64) -> Option<Buckets> {
        let Some((min, max)) = bounds else {
            return Some(Buckets {
                min: 0,
                max: 0,
                width: 1,
                count: 1,
            });
        };
        let span = i128::from(max) - i128::from(min) + 1;
        if span <= 0 || span > i128::from(i64::MAX) {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_precision_loss,
            reason = "an estimate, clamped to the bucket limits"
        )]
        let rows = if rows > 0.0 { rows as i128 } else { span };
        let chunk = i128::from(chunk_rows.max(1));
        let wanted = ((rows + chunk - 1) / chunk).clamp(1, i128::from(MAX_BUCKETS));
        let width = (span + wanted - 1) / wanted;
        let count = (span + width - 1) / width;
        Some(Buckets {
            min,
            max,
            width: i64::try_from(width).ok()?,
            count: i64::try_from(count).ok()?,
        })
    }

    /// The key range of bucket `b`, `(lower, upper]`, as key texts; `None` is open.
    pub fn range(&self, b: i64) -> (Option<Key>, Option<Key>) {
        let at = |n: i64| i128::from(self.min) + i128::from(n) * i128::from(self.width) - 1;
        let lower = (b > 0).then(|| vec![at(b).to_string()]);
        let upper = (b < self.count - 1).then(|| vec![at(b + 1).to_string()]);
        (lower, upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_of(b: &Buckets, k: i64) -> i64 {
        if k < b.min {
            0
        } else if k > b.max {
            b.count - 1
        } else {
            (k - b.min) / b.width
        }
    }

    fn contains(range: &(Option<Key>, Option<Key>), k: i64) -> bool {
        let above = range.0.as_ref().is_none_or(|l| k > l[0].parse().unwrap());
        let below = range.1.as_ref().is_none_or(|u| k <= u[0].parse().unwrap());
        above && below
    }

    #[test]
    fn every_key_falls_in_the_range_of_its_bucket() {
        for (min, max, rows, chunk) in [
            (1, 5_000_000, 5e6, 20_000),
            (1, 3000, -1.0, 500),
            (-7, 7, 15.0, 4),
            (10, 10, 1.0, 20_000),
            (i64::MIN / 4, i64::MAX / 4, 1e9, 20_000),
        ] {
            let b = Buckets::new(Some((min, max)), rows, chunk).unwrap();
            assert!(b.count >= 1 && b.count <= MAX_BUCKETS, "{b:?}");
            let probes = [
                i64::MIN,
                min - 1,
                min,
                min + 1,
                min / 2 + max / 2,
                max - 1,
                max,
                max + 1,
                i64::MAX,
            ];
            for k in probes {
                let at = bucket_of(&b, k);
                assert!((0..b.count).contains(&at), "{k} in {at} of {b:?}");
                assert!(contains(&b.range(at), k), "{k} not in bucket {at} of {b:?}");
                // And in no other bucket.
                for other in [at - 1, at + 1] {
                    if (0..b.count).contains(&other) {
                        assert!(!contains(&b.range(other), k), "{k} also in {other}");
                    }
                }
            }
        }
    }

    #[test]
    fn buckets_hold_about_a_chunk_and_the_ends_are_open() {
        let b = Buckets::new(Some((1, 5_000_000)), 5e6, 20_000).unwrap();
        assert_eq!((b.width, b.count), (20_000, 250));
        assert_eq!(b.range(0), (None, Some(vec!["20000".into()])));
        assert_eq!(b.range(1).0, Some(vec!["20000".into()]));
        assert_eq!(b.range(249).1, None);
        let empty = Buckets::new(None, -1.0, 20_000).unwrap();
        assert_eq!(empty.count, 1);
        assert_eq!(empty.range(0), (None, None));
        assert!(Buckets::new(Some((i64::MIN, i64::MAX)), 1.0, 1).is_none());
        assert_eq!(
            Buckets::new(Some((1, i64::MAX)), -1.0, 1).unwrap().count,
            MAX_BUCKETS
        );
    }
}
