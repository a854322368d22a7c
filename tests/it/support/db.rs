//! Databases, tables and slots of a test: creating them, running SQL, reading rows and
//! positions, comparing the source with the target, and waiting for a condition.

use super::*;

/// Run `sql` (one statement or several) on `client`; panics naming it on error.
pub async fn exec(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Create database `name` on `cluster`.
pub async fn create_db(cluster: &ClusterRef, name: &str) {
    let admin = connect(cluster, "postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
}

/// A database of the same fresh name on both the source and the target.
pub async fn test_dbs(prefix: &str) -> String {
    let name = unique_name(prefix);
    create_db(source(), &name).await;
    create_db(target(), &name).await;
    name
}

/// The usual start of a replication test: a fresh database of one name on the shared source and
/// target, `ddl` run on both, then `source_sql` (a publication, say) on the source. Returns the
/// database, a fresh slot name (the slot is not created) and a client on each side.
pub async fn replicated_db(
    prefix: &str,
    ddl: &str,
    source_sql: &str,
) -> (String, String, Client, Client) {
    let db = test_dbs(prefix).await;
    let slot = unique_name(&format!("{prefix}_slot"));
    let source_client = connect(source(), &db).await;
    let target_client = connect(target(), &db).await;
    source_client.batch_execute(ddl).await.unwrap();
    target_client.batch_execute(ddl).await.unwrap();
    source_client.batch_execute(source_sql).await.unwrap();
    (db, slot, source_client, target_client)
}

/// How long the helpers below wait for lsnpipe or the target (a bound for a stuck test, not a
/// pace: every wait polls).
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Poll `check` until it returns true; panic with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Wait until `target` records this slot's initial copy as done.
pub async fn copy_done(target: &Client, slot: &str) {
    wait_until("the initial copy to finish", WAIT, || async {
        target
            .query_opt(
                "SELECT 1 FROM lsnpipe.copy_run WHERE slot = $1 AND status = 'done'",
                &[&slot],
            )
            .await
            .is_ok_and(|row| row.is_some())
    })
    .await;
}

/// Every row of `table`, as text, sorted (duplicates kept): equal multisets compare equal.
pub async fn table_rows(client: &Client, table: &str) -> Vec<String> {
    try_table_rows(client, table)
        .await
        .unwrap_or_else(|e| panic!("read {table}: {e}"))
}

/// [`table_rows`], or the error while the table cannot be read (it does not exist yet, say).
pub async fn try_table_rows(
    client: &Client,
    table: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let sql = format!("SELECT x::text FROM {table} x ORDER BY 1");
    let rows = client.query(&sql, &[]).await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// True when each table holds the same rows (with multiplicity) on both sides; false while a
/// table cannot be read on either side.
pub async fn tables_equal(source: &Client, target: &Client, tables: &[&str]) -> bool {
    for table in tables {
        let (Ok(s), Ok(t)) = (
            try_table_rows(source, table).await,
            try_table_rows(target, table).await,
        ) else {
            return false;
        };
        if s != t {
            return false;
        }
    }
    true
}

/// Wait until each table holds the same rows on both sides; after [`WAIT`], panic with the
/// first difference.
pub async fn converge(source: &Client, target: &Client, tables: &[&str]) {
    let deadline = std::time::Instant::now() + WAIT;
    while !tables_equal(source, target, tables).await {
        if std::time::Instant::now() > deadline {
            assert_tables_equal(source, target, tables).await;
            panic!("the target kept differing from the source in {tables:?} for {WAIT:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Panic with the first difference when a table differs between source and target.
pub async fn assert_tables_equal(source: &Client, target: &Client, tables: &[&str]) {
    for table in tables {
        let s = table_rows(source, table).await;
        let t = table_rows(target, table).await;
        if s != t {
            let missing: Vec<_> = s.iter().filter(|r| !t.contains(r)).take(5).collect();
            let extra: Vec<_> = t.iter().filter(|r| !s.contains(r)).take(5).collect();
            panic!(
                "{table} differs: source {} rows, target {} rows; missing on target (first 5): \
                 {missing:?}; extra on target: {extra:?}",
                s.len(),
                t.len()
            );
        }
    }
}

/// Whether `table` exists and holds at least one row.
pub async fn has_rows(client: &Client, table: &str) -> bool {
    client
        .query_one(&format!("SELECT count(*) > 0 FROM {table}"), &[])
        .await
        .is_ok_and(|r| r.get(0))
}

/// A pgoutput slot named `slot`, created with SQL in its own transaction.
pub async fn create_slot(client: &Client, slot: &str) {
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("create slot {slot}: {e}"));
}

/// The slot's confirmed flush position as a byte offset (0 when it does not exist yet).
pub async fn slot_confirmed(client: &Client, slot: &str) -> i64 {
    client
        .query_one(
            "SELECT coalesce(pg_wal_lsn_diff(confirmed_flush_lsn, '0/0'), 0)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0)
}

/// The first column of every row `sql` returns, as text.
pub async fn strings(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<String> {
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Whether a replication slot named `slot` exists.
pub async fn slot_exists(client: &Client, slot: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("look up slot {slot}: {e}"))
        .get::<_, i64>(0)
        == 1
}

/// Whether a session holds slot `slot` and the slot is fully created (false while it does not
/// exist). A slot being created is held too, but what commits before its consistent point is
/// never decoded: only its confirmed position says creation is over.
pub async fn slot_active(client: &Client, slot: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) = 1 FROM pg_replication_slots \
             WHERE slot_name = $1 AND active_pid IS NOT NULL \
             AND confirmed_flush_lsn IS NOT NULL",
            &[&slot],
        )
        .await
        .is_ok_and(|r| r.get(0))
}

/// The server's current WAL write position as a byte offset.
pub async fn current_wal_lsn(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("read the current WAL position: {e}"))
        .get(0)
}

/// `SELECT count(*)` of `table`.
pub async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

/// A write load on the source until stopped: `statement(n)` for n = 1, 2, … with `pause`
/// between rounds, on a session of its own.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub async fn start(
        db: &str,
        pause: std::time::Duration,
        statement: impl Fn(i32) -> String + Send + 'static,
    ) -> Load {
        let client = connect(source(), db).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                client.batch_execute(&statement(n)).await.unwrap();
                tokio::time::sleep(pause).await;
            }
        });
        Load { stop, task }
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
    }
}
