//! Tables without a key, compared as multisets: (count, sum of row hashes) per hash bucket, then
//! the rows of differing buckets with their multiplicity, read again under newer snapshots until
//! only the surpluses seen every time remain.

use std::collections::HashMap;

use super::diff;
use super::plan::{Side, TablePlan};
use super::report::{Example, TableReport};
use super::{Ctx, begin_snapshot, commit};
use crate::ops::{OpsError, SideSession};

type Buckets = HashMap<i64, (i64, String)>;

async fn buckets(side: &SideSession, sql: &str) -> Result<Buckets, OpsError> {
    let got = side
        .client
        .query(sql, &[])
        .await
        .map_err(side.sql("hash a table's buckets"))?;
    got.iter()
        .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(side.sql("hash a table's buckets"))
}

async fn bucket_rows(
    side: &SideSession,
    sql: &str,
    which: &[i64],
) -> Result<HashMap<String, i64>, OpsError> {
    let got = side
        .client
        .query(sql, &[&which])
        .await
        .map_err(side.sql("read the rows of differing buckets"))?;
    got.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(side.sql("read the rows of differing buckets"))
}

pub(super) async fn compare(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    source: &SideSession,
    target: &SideSession,
) -> Result<TableReport, OpsError> {
    let mut report = TableReport {
        table: plan.qualified(),
        keyed: false,
        chunks: 1,
        ..TableReport::default()
    };
    let lsn = begin_snapshot(source).await?;
    ctx.saw(lsn);
    // Both sides scan at once; the target's scan starts once it has reached the snapshot.
    let source_read = async {
        let b = buckets(source, &plan.bucket_hash_sql(Side::Source)).await?;
        commit(source).await?;
        Ok::<_, OpsError>(b)
    };
    let target_read = async {
        ctx.wait(target, lsn).await?;
        buckets(target, &plan.bucket_hash_sql(Side::Target)).await
    };
    let (on_source, on_target) = tokio::join!(source_read, target_read);
    let (on_source, on_target) = (on_source?, on_target?);
    let rows: i64 = on_source.values().map(|(n, _)| n).sum();
    report.rows = u64::try_from(rows).unwrap_or(0);
    ctx.pace.took(rows).await;
    let mut differing: Vec<i64> = on_source
        .keys()
        .chain(on_target.keys())
        .filter(|b| on_source.get(b) != on_target.get(b))
        .copied()
        .collect();
    differing.sort_unstable();
    differing.dedup();
    if differing.is_empty() {
        return Ok(report);
    }
    report.reread = differing.len() as u64;

    let mut surplus: Option<Vec<(String, i64)>> = None;
    for _ in 0..ctx.opts.rereads {
        let lsn = begin_snapshot(source).await?;
        let s = bucket_rows(source, &plan.bucket_rows_sql(Side::Source), &differing).await?;
        commit(source).await?;
        ctx.wait(target, lsn).await?;
        let t = bucket_rows(target, &plan.bucket_rows_sql(Side::Target), &differing).await?;
        let seen = diff::diff_multiset(&s, &t);
        let kept = match surplus {
            None => seen,
            Some(previous) => diff::intersect_multiset(&previous, &seen),
        };
        let done = kept.is_empty();
        surplus = Some(kept);
        if done {
            break;
        }
    }
    for (row, copies) in surplus.unwrap_or_default() {
        let kind = if copies > 0 {
            report.missing += copies.unsigned_abs();
            "missing"
        } else {
            report.extra += copies.unsigned_abs();
            "extra"
        };
        if report.examples.len() < ctx.opts.show {
            report.examples.push(Example {
                kind,
                key: row,
                columns: Vec::new(),
                copies: copies.abs(),
            });
        }
    }
    Ok(report)
}
