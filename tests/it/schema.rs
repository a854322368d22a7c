//! Column drift followed on the target while other tables stream: columns added (with and
//! without a default, NOT NULL with a default), widened and dropped on the source, by policy.

use std::time::Duration;

use tokio_postgres::Client;

use crate::support::{self, Load, Running};

const WAIT: Duration = Duration::from_secs(120);

struct Drift {
    db: String,
    slot: String,
    source: Client,
    target: Client,
}

/// `t` and a busy table `busy`, on both sides, published; lsnpipe copies and streams them with
/// `mode` while a client keeps writing to `busy`.
async fn start(prefix: &str, mode: &str) -> (Drift, Running, Load) {
    let db = support::test_dbs(prefix).await;
    let slot = support::unique_name(&format!("{prefix}_slot"));
    let source = support::connect(support::source(), &db).await;
    let target = support::connect(support::target(), &db).await;
    let ddl = "CREATE TABLE t (id int PRIMARY KEY, v text);
               CREATE TABLE busy (id bigserial PRIMARY KEY, n int)";
    source.batch_execute(ddl).await.unwrap();
    target.batch_execute(ddl).await.unwrap();
    source
        .batch_execute("INSERT INTO t VALUES (1, 'one'); CREATE PUBLICATION pub FOR TABLE t, busy")
        .await
        .unwrap();
    let lsnpipe = Running::spawn(support::lsnpipe_run(
        support::source(),
        &db,
        support::target(),
        &db,
        "pub",
        &slot,
        &["--create-slot", "--schema-changes", mode],
    ));
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
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let source = Drift::rows(&self.source, columns).await;
            let target = Drift::rows(&self.target, columns).await;
            if source == target
                && support::tables_equal(&self.source, &self.target, &["busy"]).await
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the target did not catch up: {source:?} vs {target:?}\n{}",
                lsnpipe.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        drift.source.batch_execute(sql).await.unwrap();
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
    let (status, log) = lsnpipe.terminate().await;
    assert!(status.success(), "{log}");
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
    let (status, log) = lsnpipe.terminate().await;
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_stops_with_the_table_and_column_named() {
    let (drift, mut lsnpipe, load) = start("schema_off", "off").await;
    drift
        .source
        .batch_execute("ALTER TABLE t ADD COLUMN note text; INSERT INTO t VALUES (2, 'two', 'n')")
        .await
        .unwrap();
    let (status, log) = lsnpipe.wait(WAIT).await;
    load.stop().await;
    assert!(!status.success(), "{log}");
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
    let db = support::test_dbs("schema_part").await;
    let slot = support::unique_name("schema_part_slot");
    let source = support::connect(support::source(), &db).await;
    let target = support::connect(support::target(), &db).await;
    let ddl = "CREATE TABLE p (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
               CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);
               CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200);";
    source.batch_execute(ddl).await.unwrap();
    target.batch_execute(ddl).await.unwrap();
    // Without publish_via_partition_root, changes name the partitions.
    source
        .batch_execute(
            "INSERT INTO p VALUES (1, 'a'), (101, 'b'); CREATE PUBLICATION pub FOR TABLE p",
        )
        .await
        .unwrap();
    let lsnpipe = Running::spawn(support::lsnpipe_run(
        support::source(),
        &db,
        support::target(),
        &db,
        "pub",
        &slot,
        &["--create-slot"],
    ));
    support::copy_done(&target, &slot).await;
    source
        .batch_execute(
            "ALTER TABLE p ADD COLUMN n int DEFAULT 5;
             INSERT INTO p VALUES (2, 'c', 6), (102, 'd', 7);",
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = source
            .query("SELECT (id, v, n)::text FROM p ORDER BY id", &[])
            .await;
        let t = target
            .query("SELECT (id, v, n)::text FROM p ORDER BY id", &[])
            .await;
        let rows = |r: Result<Vec<tokio_postgres::Row>, _>| {
            r.map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
            })
            .ok()
        };
        if rows(s) == rows(t) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", lsnpipe.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, log) = lsnpipe.terminate().await;
    assert!(status.success(), "{log}");
}

/// Inserts into `busy`, every 2 ms, until stopped.
async fn busy_load(db: &str) -> Load {
    Load::start(db, Duration::from_millis(2), |n| {
        format!("INSERT INTO busy (n) VALUES ({n})")
    })
    .await
}
