//! Column drift followed on the target while other tables stream: columns added (with and
//! without a default, NOT NULL with a default), widened and dropped on the source, by policy.

use std::time::Duration;

use tokio_postgres::Client;

use crate::support::{self, Load, Running};

struct Drift {
    db: String,
    slot: String,
    source: Client,
    target: Client,
}

/// `t` and a busy table `busy`, on both sides, published; lsnpipe copies and streams them with
/// `mode` while a client keeps writing to `busy`.
async fn start(prefix: &str, mode: &str) -> (Drift, Running, Load) {
    let ddl = "CREATE TABLE t (id int PRIMARY KEY, v text);
               CREATE TABLE busy (id bigserial PRIMARY KEY, n int)";
    let (db, slot, source, target) = support::replicated_db(
        prefix,
        ddl,
        "INSERT INTO t VALUES (1, 'one'); CREATE PUBLICATION pub FOR TABLE t, busy",
    )
    .await;
    let lsnpipe = support::run(&db, &slot, &["--create-slot", "--schema-changes", mode]);
    let load = busy_load(&db).await;
    let drift = Drift {
        db,
        slot,
        source,
        target,
    };
    drift.converge(&["id", "v"], &lsnpipe).await;
    (drift, lsnpipe, load)
}

impl Drift {
    async fn rows(client: &Client, columns: &[&str]) -> Vec<String> {
        let list = columns.join(", ");
        client
            .query(&format!("SELECT ({list})::text FROM t ORDER BY id"), &[])
            .await
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default()
    }

    /// `t`'s `columns` and all of `busy` equal on both sides (lsnpipe's log on a time-out).
    async fn converge(&self, columns: &[&str], lsnpipe: &Running) {
        let what = format!("t's {columns:?} and busy to be equal on both sides");
        lsnpipe
            .wait_until(&what, || async {
                Drift::rows(&self.source, columns).await == Drift::rows(&self.target, columns).await
                    && support::tables_equal(&self.source, &self.target, &["busy"]).await
            })
            .await;
    }

    /// Column name → type, as `format_type` spells it.
    async fn types(client: &Client) -> Vec<(String, String)> {
        client
            .query(
                "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = 't'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn additive_follows_added_widened_and_dropped_columns_under_load() {
    let (drift, lsnpipe, load) = start("schema_add", "additive").await;
    let steps: [(&str, &[&str]); 5] = [
        (
            "ALTER TABLE t ADD COLUMN a varchar(5); INSERT INTO t VALUES (2, 'two', 'a2')",
            &["id", "v", "a"],
        ),
        (
            // Existing rows read 7 on the source: they must on the target too.
            "ALTER TABLE t ADD COLUMN b int NOT NULL DEFAULT 7; INSERT INTO t (id, v) VALUES (3, 'three')",
            &["id", "v", "a", "b"],
        ),
        (
            "ALTER TABLE t ALTER COLUMN id TYPE bigint; INSERT INTO t VALUES (4000000000, 'big', NULL, 1)",
            &["id", "v", "a", "b"],
        ),
        (
            "ALTER TABLE t ALTER COLUMN a TYPE varchar(20); \
             INSERT INTO t VALUES (6, 'six', 'twelve chars', 1)",
            &["id", "v", "a", "b"],
        ),
        (
            "ALTER TABLE t DROP COLUMN a; INSERT INTO t (id, v) VALUES (5, 'five'); \
             UPDATE t SET b = b + 1",
            &["id", "v", "b"],
        ),
    ];
    for (sql, columns) in steps {
        support::exec(&drift.source, sql).await;
        drift.converge(columns, &lsnpipe).await;
    }
    load.stop().await;
    drift.converge(&["id", "v", "b"], &lsnpipe).await;
    // Every source column is on the target with the source's type; the dropped one is kept.
    let source = Drift::types(&drift.source).await;
    let target = Drift::types(&drift.target).await;
    for column in &source {
        assert!(target.contains(column), "{column:?} in {target:?}");
    }
    assert!(
        target.iter().any(|(name, _)| name == "a"),
        "kept: {target:?}"
    );
    let log = lsnpipe.stop().await;
    assert!(log.contains("schema change on the target"), "{log}");
    let _ = (&drift.db, &drift.slot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_drops_and_narrows_columns_too() {
    let (drift, lsnpipe, load) = start("schema_all", "all").await;
    drift
        .source
        .batch_execute(
            "ALTER TABLE t ADD COLUMN n bigint; INSERT INTO t VALUES (2, 'two', 2);
             ALTER TABLE t DROP COLUMN v; ALTER TABLE t ALTER COLUMN n TYPE int;
             INSERT INTO t VALUES (3, 3)",
        )
        .await
        .unwrap();
    drift.converge(&["id", "n"], &lsnpipe).await;
    load.stop().await;
    assert_eq!(
        Drift::types(&drift.target).await,
        Drift::types(&drift.source).await
    );
    lsnpipe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_stops_with_the_table_and_column_named() {
    let (drift, mut lsnpipe, load) = start("schema_off", "off").await;
    drift
        .source
        .batch_execute("ALTER TABLE t ADD COLUMN note text; INSERT INTO t VALUES (2, 'two', 'n')")
        .await
        .unwrap();
    let log = lsnpipe.failure().await;
    load.stop().await;
    assert!(
        log.contains("\"public\".\"t\"") && log.contains("note"),
        "names the table and the column: {log}"
    );
    assert_eq!(
        Drift::types(&drift.target).await.len(),
        2,
        "the target is left as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_to_a_partitioned_table_is_added_through_its_root() {
    let ddl = "CREATE TABLE p (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
               CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);
               CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200);";
    // Without publish_via_partition_root, changes name the partitions.
    let (db, slot, source, target) = support::replicated_db(
        "schema_part",
        ddl,
        "INSERT INTO p VALUES (1, 'a'), (101, 'b'); CREATE PUBLICATION pub FOR TABLE p",
    )
    .await;
    let lsnpipe = support::run(&db, &slot, &["--create-slot"]);
    support::copy_done(&target, &slot).await;
    support::exec(
        &source,
        "ALTER TABLE p ADD COLUMN n int DEFAULT 5;
             INSERT INTO p VALUES (2, 'c', 6), (102, 'd', 7);",
    )
    .await;
    // `n` named: the target must have the column, not only equal rows without it.
    let rows = async |client: &Client| {
        client
            .query("SELECT (id, v, n)::text FROM p ORDER BY id", &[])
            .await
            .map(|rows| rows.iter().map(|r| r.get(0)).collect::<Vec<String>>())
            .ok()
    };
    lsnpipe
        .wait_until("p with its new column on the target", || async {
            rows(&source).await == rows(&target).await
        })
        .await;
    lsnpipe.stop().await;
}

/// Inserts into `busy`, every 2 ms, until stopped.
async fn busy_load(db: &str) -> Load {
    Load::start(db, Duration::from_millis(2), |n| {
        format!("INSERT INTO busy (n) VALUES ({n})")
    })
    .await
}
