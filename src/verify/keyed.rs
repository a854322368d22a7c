//! Tables with a key: chunk hashes in key order on both sides at once, then the rows of
//! differing chunks, then re-reads by key until every candidate row settles.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

use super::buckets::Buckets;
use super::diff::{self, Chunk, Difference, Key, Row, Settled};
use super::plan::{Side, TablePlan};
use super::report::{Example, TableReport};
use super::{Ctx, begin_snapshot, commit};
use crate::ops::{OpsError, SideSession};

/// Text parameters for a statement, in order.
fn params(values: &[String]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

async fn prepare(side: &SideSession, sql: String) -> Result<tokio_postgres::Statement, OpsError> {
    side.client
        .prepare(&sql)
        .await
        .map_err(side.sql("prepare a chunk query"))
}

/// Bounds of a range as parameters: the lower key's columns, then the upper key's.
fn bounds(chunk: &Chunk) -> Vec<String> {
    let mut v = chunk.lower.clone().unwrap_or_default();
    v.extend(chunk.upper.clone().unwrap_or_default());
    v
}

fn rows(side: &SideSession, got: Vec<tokio_postgres::Row>) -> Result<Vec<Row>, OpsError> {
    got.iter()
        .map(|r| {
            Ok(Row {
                key: r.try_get(0)?,
                values: r.try_get(1)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(side.sql("read rows"))
}

pub(super) async fn compare(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    source: &SideSession,
    target: &SideSession,
) -> Result<TableReport, OpsError> {
    let mut report = TableReport {
        table: plan.qualified(),
        keyed: true,
        ..TableReport::default()
    };
    // A rate limit needs the walk in chunks: a bucket scan reads the whole table at once.
    let bucketed = match plan.integer_key() {
        Some(key) if ctx.opts.max_rows_per_sec.is_none() => {
            bucket_pass(ctx, plan, key, source, target, &mut report).await?
        }
        _ => None,
    };
    let differing = match bucketed {
        Some(ranges) => {
            report.reread = ranges.len() as u64;
            if ranges.is_empty() {
                Vec::new()
            } else {
                walk(ctx, plan, source, target, &ranges, false)
                    .await?
                    .differing
            }
        }
        None => {
            let walked = walk(ctx, plan, source, target, &[(None, None)], true).await?;
            report.chunks = walked.chunks;
            report.rows = walked.rows;
            report.reread = walked.differing.len() as u64;
            walked.differing
        }
    };
    let per_batch = usize::try_from((ROWS_PER_BATCH / ctx.opts.chunk_rows).max(1)).unwrap_or(1);
    for batch in differing.chunks(per_batch) {
        resolve(ctx, plan, source, target, batch, &mut report).await?;
    }
    Ok(report)
}

/// A key range `(lower, upper]`; `None` is open.
type Range = (Option<Key>, Option<Key>);

/// Per bucket: rows and the sum of their hashes.
type BucketHashes = HashMap<i64, (i64, String)>;

/// Settings for one bucket scan. The planner counts one group per key (it cannot know the
/// buckets are few), so it would sort the whole table for a grouped aggregate: without sorts
/// it hashes, in parallel when it may hand rows to the leader for free, and JIT compiling a
/// plan it prices that high costs seconds.
const BUCKET_SCAN_SETTINGS: &str =
    "SET LOCAL enable_sort = off; SET LOCAL parallel_tuple_cost = 0; SET LOCAL jit = off";

async fn bucket_hashes(
    side: &SideSession,
    sql: &str,
    layout: &Buckets,
) -> Result<BucketHashes, OpsError> {
    side.client
        .batch_execute(BUCKET_SCAN_SETTINGS)
        .await
        .map_err(side.sql("set up a bucket scan"))?;
    let got = side
        .client
        .query(
            sql,
            &[&layout.min, &layout.max, &layout.width, &layout.count],
        )
        .await
        .map_err(side.sql("hash a table's key ranges"))?;
    got.iter()
        .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(side.sql("hash a table's key ranges"))
}

/// One scan of each side at once, hashing key-range buckets; the ranges whose hashes differ.
/// `None` when the key range does not suit bucket arithmetic (the table is walked instead).
async fn bucket_pass(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    key: usize,
    source: &SideSession,
    target: &SideSession,
    report: &mut TableReport,
) -> Result<Option<Vec<Range>>, OpsError> {
    let lsn = begin_snapshot(source).await?;
    ctx.saw(lsn);
    let row = source
        .client
        .query_one(&plan.key_bounds_sql(key), &[&plan.qualified()])
        .await
        .map_err(source.sql("read the key range"))?;
    let read = (|| -> Result<_, tokio_postgres::Error> {
        Ok((
            row.try_get::<_, Option<i64>>(0)?,
            row.try_get::<_, Option<i64>>(1)?,
            row.try_get::<_, f64>(2)?,
        ))
    })()
    .map_err(source.sql("read the key range"))?;
    let Some(layout) = Buckets::new(read.0.zip(read.1), read.2, ctx.opts.chunk_rows) else {
        commit(source).await?;
        return Ok(None);
    };
    let source_read = async {
        let b = bucket_hashes(
            source,
            &plan.key_bucket_hash_sql(Side::Source, key),
            &layout,
        )
        .await?;
        commit(source).await?;
        Ok::<_, OpsError>(b)
    };
    // The target's scan starts once it has reached the snapshot, while the source's runs.
    let target_read = async {
        ctx.wait(target, lsn).await?;
        target
            .client
            .batch_execute("BEGIN READ ONLY")
            .await
            .map_err(target.sql("begin a bucket scan"))?;
        let b = bucket_hashes(
            target,
            &plan.key_bucket_hash_sql(Side::Target, key),
            &layout,
        )
        .await;
        commit(target).await?;
        b
    };
    let (on_source, on_target) = tokio::join!(source_read, target_read);
    let (on_source, on_target) = (on_source?, on_target?);
    let rows: i64 = on_source.values().map(|(n, _)| n).sum();
    ctx.pace.took(rows).await;
    report.rows = u64::try_from(rows).unwrap_or(0);
    report.chunks = u64::try_from(layout.count).unwrap_or(0);
    let mut differing: Vec<i64> = on_source
        .keys()
        .chain(on_target.keys())
        .filter(|b| on_source.get(b) != on_target.get(b))
        .copied()
        .collect();
    differing.sort_unstable();
    differing.dedup();
    Ok(Some(
        differing.into_iter().map(|b| layout.range(b)).collect(),
    ))
}

/// What a walk in chunks found.
struct Walked {
    differing: Vec<Chunk>,
    chunks: u64,
    rows: u64,
}

/// Source chunks of the ranges in key order under one snapshot, and the target's hashes of the
/// same key ranges as they arrive (once the target has reached the snapshot's position); the
/// chunks that differ. `first`: this is the table's first comparison (its position and rows
/// count for the report and the rate limit).
async fn walk(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    source: &SideSession,
    target: &SideSession,
    ranges: &[Range],
    first: bool,
) -> Result<Walked, OpsError> {
    let limit = ctx.opts.chunk_rows;
    let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
    let lsn = begin_snapshot(source).await?;
    if first {
        ctx.saw(lsn);
    }
    let (mut on_source, mut on_target) = (Vec::new(), Vec::new());
    for (lower, upper) in [(false, false), (false, true), (true, false), (true, true)] {
        on_source.push(prepare(source, plan.source_chunk_sql(lower, upper, limit)).await?);
        on_target.push(prepare(target, plan.range_hash_sql(Side::Target, lower, upper)).await?);
    }
    let which = |lower: &Option<Key>, upper: &Option<Key>| {
        usize::from(lower.is_some()) * 2 + usize::from(upper.is_some())
    };

    let (tx, mut rx) = mpsc::channel::<Chunk>(16);
    let source_pass = async move {
        'ranges: for (start, end) in ranges {
            let mut lower = start.clone();
            loop {
                let mut values = lower.clone().unwrap_or_default();
                values.extend(end.clone().unwrap_or_default());
                let row = source
                    .client
                    .query_one(&on_source[which(&lower, end)], &params(&values))
                    .await
                    .map_err(source.sql("hash a chunk"))?;
                let read = (|| -> Result<_, tokio_postgres::Error> {
                    Ok((
                        row.try_get::<_, i64>(0)?,
                        row.try_get::<_, String>(1)?,
                        row.try_get::<_, Option<Key>>(2)?,
                    ))
                })()
                .map_err(source.sql("hash a chunk"))?;
                let mut chunk = diff::chunks(std::slice::from_ref(&read), limit_i)
                    .pop()
                    .ok_or_else(|| OpsError::Refused("no chunk from a chunk read".into()))?;
                chunk.lower = lower.clone();
                let is_last = chunk.upper.is_none();
                if is_last {
                    chunk.upper = end.clone();
                }
                if first {
                    ctx.pace.took(chunk.rows).await;
                }
                if tx.send(chunk).await.is_err() {
                    break 'ranges;
                }
                if is_last {
                    break;
                }
                lower = read.2;
            }
        }
        drop(tx);
        commit(source).await
    };
    let target_pass = async {
        ctx.wait(target, lsn).await?;
        let mut walked = Walked {
            differing: Vec::new(),
            chunks: 0,
            rows: 0,
        };
        while let Some(chunk) = rx.recv().await {
            let values = bounds(&chunk);
            let row = target
                .client
                .query_one(
                    &on_target[which(&chunk.lower, &chunk.upper)],
                    &params(&values),
                )
                .await
                .map_err(target.sql("hash a chunk"))?;
            let (count, sum) = (|| -> Result<(i64, String), tokio_postgres::Error> {
                Ok((row.try_get(0)?, row.try_get(1)?))
            })()
            .map_err(target.sql("hash a chunk"))?;
            walked.chunks += 1;
            walked.rows += u64::try_from(chunk.rows).unwrap_or(0);
            if count != chunk.rows || sum != chunk.sum {
                walked.differing.push(chunk);
            }
        }
        Ok::<_, OpsError>(walked)
    };
    let (source_done, target_done) = tokio::join!(source_pass, target_pass);
    // A target failure drops the channel and ends the source pass early: report it first.
    let walked = target_done?;
    source_done?;
    Ok(walked)
}

/// Rows read row by row at once when chunks differ: the chunks of one batch share a source
/// snapshot and one wait for the target.
const ROWS_PER_BATCH: u64 = 100_000;

/// Read both sides' rows of differing ranges (a batch under one snapshot), then settle each
/// candidate row by key.
async fn resolve(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    source: &SideSession,
    target: &SideSession,
    chunks: &[Chunk],
    report: &mut TableReport,
) -> Result<(), OpsError> {
    let lsn = begin_snapshot(source).await?;
    let mut on_source = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let (lower, upper) = (chunk.lower.is_some(), chunk.upper.is_some());
        let got = source
            .client
            .query(
                &plan.range_rows_sql(Side::Source, lower, upper),
                &params(&bounds(chunk)),
            )
            .await
            .map_err(source.sql("read the rows of a chunk"))?;
        on_source.push(rows(source, got)?);
    }
    commit(source).await?;
    ctx.wait(target, lsn).await?;
    let mut candidates: Vec<Key> = Vec::new();
    for (chunk, on_source) in chunks.iter().zip(on_source) {
        let (lower, upper) = (chunk.lower.is_some(), chunk.upper.is_some());
        let got = target
            .client
            .query(
                &plan.range_rows_sql(Side::Target, lower, upper),
                &params(&bounds(chunk)),
            )
            .await
            .map_err(target.sql("read the rows of a chunk"))?;
        let on_target = rows(target, got)?;
        candidates.extend(
            diff::diff_rows(on_source, on_target)
                .into_iter()
                .map(|(k, _)| k),
        );
    }
    if candidates.is_empty() {
        return Ok(());
    }
    let (found, unsettled) = settle(ctx, plan, source, target, candidates).await?;
    report.unsettled += unsettled;
    for (key, difference) in found {
        let (kind, columns) = match difference {
            Difference::Missing => {
                report.missing += 1;
                ("missing", Vec::new())
            }
            Difference::Extra => {
                report.extra += 1;
                ("extra", Vec::new())
            }
            Difference::Different(cols) => {
                report.different += 1;
                let names = cols
                    .iter()
                    .filter_map(|&i| plan.columns.get(i).cloned())
                    .collect();
                ("different", names)
            }
        };
        if report.examples.len() < ctx.opts.show {
            report.examples.push(Example {
                kind,
                key: key_text(plan, &key),
                columns,
                copies: 1,
            });
        }
    }
    Ok(())
}

/// `id=5, sub=2`.
fn key_text(plan: &TablePlan, key: &Key) -> String {
    plan.key_names()
        .iter()
        .zip(key)
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

type ByKey = HashMap<Key, Vec<Option<String>>>;

/// Rows of `keys` on one side, by key.
async fn by_keys(side: &SideSession, sql: &str, keys: &[Key]) -> Result<ByKey, OpsError> {
    let width = keys.first().map_or(0, Vec::len);
    let columns: Vec<Vec<String>> = (0..width)
        .map(|i| {
            keys.iter()
                .map(|k| k.get(i).cloned().unwrap_or_default())
                .collect()
        })
        .collect();
    let params: Vec<&(dyn ToSql + Sync)> =
        columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
    let got = side
        .client
        .query(sql, &params)
        .await
        .map_err(side.sql("read rows by key"))?;
    Ok(rows(side, got)?
        .into_iter()
        .map(|r| (r.key, r.values))
        .collect())
}

/// Re-read candidate keys until each is equal (lag) or proven different; the differences, and
/// how many rows never held still long enough to tell.
async fn settle(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    source: &SideSession,
    target: &SideSession,
    mut pending: Vec<Key>,
) -> Result<(Vec<(Key, Difference)>, u64), OpsError> {
    let on_source = plan.rows_by_keys_sql(Side::Source, false);
    let on_target = plan.rows_by_keys_sql(Side::Target, false);
    let mut found = Vec::new();
    for _ in 0..ctx.opts.rereads {
        if pending.is_empty() {
            break;
        }
        let lsn = begin_snapshot(source).await?;
        let before = by_keys(source, &on_source, &pending).await?;
        commit(source).await?;
        ctx.wait(target, lsn).await?;
        let now = by_keys(target, &on_target, &pending).await?;
        let after = by_keys(source, &on_source, &pending).await?;
        let mut moving = Vec::new();
        for key in pending {
            match diff::settle(before.get(&key), now.get(&key), after.get(&key)) {
                Settled::Equal => {}
                Settled::Differs(d) => found.push((key, d)),
                Settled::Moving => moving.push(key),
            }
        }
        pending = moving;
    }
    if pending.is_empty() {
        found.sort_by(|a, b| a.0.cmp(&b.0));
        return Ok((found, 0));
    }
    // Rows that changed between every pair of reads: hold them still.
    let unsettled = match locked(ctx, plan, source, target, &pending).await? {
        Some(decided) => {
            found.extend(decided);
            0
        }
        None => pending.len() as u64,
    };
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((found, unsettled))
}

/// Read `keys` on the source `FOR SHARE` (their writers wait), wait for the target to pass that
/// point, compare, release. `None` when the source does not allow it (no UPDATE privilege, a
/// read-only database, a lock held too long).
async fn locked(
    ctx: &Ctx<'_>,
    plan: &TablePlan,
    source: &SideSession,
    target: &SideSession,
    keys: &[Key],
) -> Result<Option<Vec<(Key, Difference)>>, OpsError> {
    source
        .client
        .batch_execute("BEGIN; SET LOCAL lock_timeout = '5s'")
        .await
        .map_err(source.sql("begin a locking read"))?;
    let held = match by_keys(source, &plan.rows_by_keys_sql(Side::Source, true), keys).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(table = %plan.qualified(), "cannot hold rows that keep changing: {e}");
            source
                .client
                .batch_execute("ROLLBACK")
                .await
                .map_err(source.sql("end a locking read"))?;
            return Ok(None);
        }
    };
    let outcome = async {
        let lsn = super::session::current_lsn(source).await?;
        ctx.wait(target, lsn).await?;
        by_keys(target, &plan.rows_by_keys_sql(Side::Target, false), keys).await
    }
    .await;
    source
        .client
        .batch_execute("ROLLBACK")
        .await
        .map_err(source.sql("end a locking read"))?;
    let now = outcome?;
    Ok(Some(
        keys.iter()
            .filter_map(
                |key| match diff::settle(held.get(key), now.get(key), held.get(key)) {
                    Settled::Differs(d) => Some((key.clone(), d)),
                    Settled::Equal | Settled::Moving => None,
                },
            )
            .collect(),
    ))
}
