//! The oracle: every compared relation read as sorted canonical text rows (source columns in
//! source order, so target column order and extra columns do not matter), under the same
//! session settings on both sides, and compared as multisets. Only published columns count (a
//! column list's), only source rows the publication's row filter passes, and a column the
//! target generates itself is checked against its expression instead.

use tokio_postgres::Client;

use super::runner::clusters;
use super::workload::Plan;
use crate::support::ClusterRef;

/// Every row of `relation` (that meets `filter`) as canonical text, sorted; read with the
/// same settings on both sides.
async fn rows(
    client: &Client,
    relation: &str,
    cols: &[String],
    filter: Option<&str>,
) -> Result<Vec<String>, String> {
    let filter = filter.map(|f| format!(" WHERE ({f})")).unwrap_or_default();
    let sql = format!(
        "SELECT ROW({})::text FROM ONLY {relation}{filter} ORDER BY 1",
        cols.join(", ")
    );
    client
        .query(&sql, &[])
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
                .collect()
        })
        .map_err(|e| format!("read {relation}: {e}"))
}

/// A session whose text output means the same on both sides, whatever the database defaults.
async fn canonical(cluster: &ClusterRef, db: &str) -> Result<Client, String> {
    let (client, conn) = tokio_postgres::connect(&cluster.conn_string(db), tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect to {} {db}: {e}", cluster.name))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .batch_execute(
            "SET datestyle = ISO; SET intervalstyle = postgres; SET extra_float_digits = 3; \
             SET timezone = 'UTC'; SET bytea_output = hex",
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(client)
}

pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// The target's audit of `relation` must end, for each key since the last TRUNCATE, in the row
/// the target holds (or in its removal): lsnpipe applied each key's changes in stream order.
/// A key without entries is fine (the initial copy may load rows without firing triggers).
async fn audit_in_order(t: &Client, relation: &str, audit: &str, key: &str) -> Result<(), String> {
    let since = format!(
        "id > coalesce((SELECT max(id) FROM {audit} WHERE op = 'TRUNCATE'), 0) AND op <> 'TRUNCATE'"
    );
    // One pass each over the audit and the table (a large transaction logs 100,000 rows).
    let sql = format!(
        "WITH last AS (SELECT DISTINCT ON (k) k, op, new_row FROM {audit} WHERE {since} \
                       ORDER BY k, id DESC), \
              cur AS (SELECT {key} AS k, x::text AS row FROM ONLY {relation} AS x) \
         SELECT count(*), min(last.k) FROM last LEFT JOIN cur ON cur.k = last.k \
         WHERE (cur.k IS NULL AND last.op = 'NEW') \
            OR (cur.k IS NOT NULL AND (last.op <> 'NEW' OR last.new_row::text IS DISTINCT FROM cur.row))"
    );
    let row = t
        .query_one(&sql, &[])
        .await
        .map_err(|e| format!("read the audit of {relation}: {e}"))?;
    let (wrong, first): (i64, Option<String>) = (row.get(0), row.get(1));
    if wrong > 0 {
        return Err(format!(
            "{relation}: the target's audit trigger saw {wrong} keys' changes end otherwise than \
             the table (first key {first:?}): changes applied out of order or applied twice"
        ));
    }
    Ok(())
}

/// Compare every table of the plan on `target_db` with the source.
pub async fn compare(plan: &Plan, source_db: &str, target_db: &str) -> Result<(), String> {
    let (source, target) = clusters();
    let s = canonical(source, source_db).await?;
    let t = canonical(target, target_db).await?;
    for c in plan.schema.compared() {
        let relation = &c.relation;
        if let Some(check) = &c.target_check {
            let wrong: i64 = t
                .query_one(
                    &format!("SELECT count(*) FROM ONLY {relation} WHERE NOT ({check})"),
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .map_err(|e| format!("check {relation}: {e}"))?;
            if wrong > 0 {
                return Err(format!(
                    "{relation}: {wrong} target rows fail {check} (a column the target \
                     generates, or one the publication leaves out and the target fills)"
                ));
            }
        }
        if let Some((audit, key)) = &c.audit {
            audit_in_order(&t, relation, audit, key).await?;
        }
        let a = rows(&s, relation, &c.cols, c.source_filter.as_deref()).await?;
        let b = rows(&t, relation, &c.cols, None).await?;
        if a != b {
            // Multiset difference by counting: a large transaction's 100,000 rows make a
            // row-by-row search quadratic.
            let mut count: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
            for r in &a {
                *count.entry(r.as_str()).or_default() += 1;
            }
            for r in &b {
                *count.entry(r.as_str()).or_default() -= 1;
            }
            let mut missing: Vec<String> = a
                .iter()
                .filter(|r| count.get(r.as_str()).is_some_and(|&n| n > 0))
                .map(|r| clip(r, 160))
                .collect();
            missing.dedup();
            missing.truncate(3);
            let mut extra: Vec<String> = b
                .iter()
                .filter(|r| count.get(r.as_str()).is_some_and(|&n| n < 0))
                .map(|r| clip(r, 160))
                .collect();
            extra.dedup();
            extra.truncate(3);
            return Err(format!(
                "{relation} differs: source {} rows, target {} rows; missing on target: {missing:?}; \
                 extra on target: {extra:?}",
                a.len(),
                b.len()
            ));
        }
    }
    Ok(())
}
