//! The oracle: every compared relation read as sorted canonical text rows (source columns in
//! source order, so target column order and extra columns do not matter), under the same
//! session settings on both sides, and compared as multisets.

use tokio_postgres::Client;

use super::runner::clusters;
use super::workload::Plan;
use crate::support::ClusterRef;

/// Every row of `relation` as canonical text, sorted; read with the same settings on both sides.
async fn rows(client: &Client, relation: &str, cols: &[String]) -> Result<Vec<String>, String> {
    let sql = format!(
        "SELECT ROW({})::text FROM ONLY {relation} ORDER BY 1",
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

/// Compare every table of the plan on `target_db` with the source.
pub async fn compare(plan: &Plan, source_db: &str, target_db: &str) -> Result<(), String> {
    let (source, target) = clusters();
    let s = canonical(source, source_db).await?;
    let t = canonical(target, target_db).await?;
    for (relation, cols) in plan.schema.compared() {
        let a = rows(&s, &relation, &cols).await?;
        let b = rows(&t, &relation, &cols).await?;
        if a != b {
            let missing: Vec<String> = a
                .iter()
                .filter(|r| !b.contains(r))
                .take(3)
                .map(|r| clip(r, 160))
                .collect();
            let extra: Vec<String> = b
                .iter()
                .filter(|r| !a.contains(r))
                .take(3)
                .map(|r| clip(r, 160))
                .collect();
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
