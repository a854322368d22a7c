//! What depends on the server's major version: failover slots (PostgreSQL 17+), refused with a
//! clear error on older sources. These run on whatever majors `PG_BINDIR_SOURCE` and
//! `PG_BINDIR_TARGET` choose (`scripts/pg-versions.sh`), and check the behaviour of that major.

use std::time::Duration;

use crate::support::{self, Running};

const WAIT: Duration = Duration::from_secs(120);

async fn setup(prefix: &str) -> (String, String, tokio_postgres::Client) {
    let (db, slot, source, _target) = support::replicated_db(
        prefix,
        "CREATE TABLE a (id int PRIMARY KEY, v text);",
        "CREATE PUBLICATION pub FOR TABLE a; INSERT INTO a VALUES (1, 'before')",
    )
    .await;
    (db, slot, source)
}

/// Whether `slot` exists, and its `failover` flag on 17+ (`None` before 17).
async fn slot_failover(source: &tokio_postgres::Client, slot: &str) -> Option<Option<bool>> {
    let column = if support::source().major >= 17 {
        "failover"
    } else {
        "NULL::bool"
    };
    source
        .query_opt(
            &format!("SELECT {column} FROM pg_replication_slots WHERE slot_name = $1"),
            &[&slot],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[tokio::test]
async fn failover_slot_is_created_on_17_and_refused_with_the_fix_before() {
    // Both ways lsnpipe creates a slot: with the initial copy, and streaming only.
    for (prefix, extra) in [
        ("failover_copy", &[][..]),
        ("failover_stream", &["--snapshot=false"][..]),
    ] {
        let (db, slot, source) = setup(prefix).await;
        let mut args = vec!["--create-slot", "--failover-slot"];
        args.extend_from_slice(extra);
        let cmd = support::run_command(&db, &slot, &args);
        if support::source().major >= 17 {
            let lsnpipe = Running::spawn(cmd);
            support::wait_until("the slot to be created", WAIT, || async {
                slot_failover(&source, &slot).await.is_some()
            })
            .await;
            assert_eq!(
                slot_failover(&source, &slot).await,
                Some(Some(true)),
                "{prefix}: the slot is a failover slot; log:\n{}",
                lsnpipe.log()
            );
            lsnpipe.stop().await;
        } else {
            let log = support::run_expecting_error(cmd).await;
            assert!(
                log.contains("failover slots need PostgreSQL 17")
                    && log.contains("leave out --failover-slot"),
                "{prefix}: {log}"
            );
            assert_eq!(
                slot_failover(&source, &slot).await,
                None,
                "{prefix}: no slot"
            );
        }
    }
}

/// On PostgreSQL 18 a stored generated column published with `publish_generated_columns =
/// stored` into a plain column of the target: the target keeps the source's values, the
/// initial copy's rows as the streamed ones. Nothing to check before 18.
#[tokio::test]
async fn a_published_generated_column_fills_a_plain_target_column() {
    if support::source().major < 18 {
        return;
    }
    let (db, slot, source, target) = support::replicated_db(
        "pubgencol",
        "",
        "CREATE TABLE k (id int PRIMARY KEY, a int, g int GENERATED ALWAYS AS (a * 3) STORED);
         INSERT INTO k (id, a) VALUES (0, 5), (2, 2);
         CREATE PUBLICATION pub FOR TABLE k WITH (publish_generated_columns = stored);",
    )
    .await;
    support::exec(&target, "CREATE TABLE k (id int PRIMARY KEY, a int, g int)").await;
    let run = support::run(&db, &slot, &["--create-slot"]);
    support::wait_until("the slot", WAIT, || support::slot_active(&source, &slot)).await;
    support::exec(
        &source,
        "INSERT INTO k (id, a) VALUES (1, 1); UPDATE k SET a = 7 WHERE id = 0;",
    )
    .await;
    let expected = vec![(0, 7, 21), (1, 1, 3), (2, 2, 6)];
    support::wait_until("k on the target", WAIT, || async {
        generated_rows(&target, "k").await == expected
    })
    .await;
    let log = run.stop().await;
    assert!(!log.contains("ERROR"), "{log}");
}

/// `id, a, g` of every row, in key order.
async fn generated_rows(client: &tokio_postgres::Client, table: &str) -> Vec<(i32, i32, i32)> {
    client
        .query(
            &format!("SELECT id, a, coalesce(g, -100) FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// A column generated on the target is never written, whatever the source sends for it: on
/// PostgreSQL 18 a generated column published with `publish_generated_columns = stored` (its
/// value arrives), before 18 a plain column of the same name. The target computes its own
/// value (here by another expression, to tell the two apart), for rows of the initial copy,
/// inserts, updates by key and under REPLICA IDENTITY FULL, and deletes.
#[tokio::test]
async fn a_column_generated_on_the_target_is_never_written() {
    let db = support::test_dbs("gencol").await;
    let slot = support::unique_name("gencol_slot");
    let source = support::connect(support::source(), &db).await;
    let target = support::connect(support::target(), &db).await;
    let sent = support::source().major >= 18;
    let (source_g, publication) = if sent {
        (
            "g int GENERATED ALWAYS AS (a * 3) STORED",
            "CREATE PUBLICATION pub FOR TABLE k, f WITH (publish_generated_columns = stored)",
        )
    } else {
        ("g int", "CREATE PUBLICATION pub FOR TABLE k, f")
    };
    support::exec(
        &source,
        &format!(
            "CREATE TABLE k (id int PRIMARY KEY, a int, {source_g});
             CREATE TABLE f (id int, a int, {source_g});
             ALTER TABLE f REPLICA IDENTITY FULL;
             {publication}"
        ),
    )
    .await;
    support::exec(
        &target,
        "CREATE TABLE k (id int PRIMARY KEY, a int, g int GENERATED ALWAYS AS (a * 2) STORED);
             CREATE TABLE f (id int, a int, g int GENERATED ALWAYS AS (a * 2) STORED);",
    )
    .await;
    let values = if sent { "" } else { ", -1" };
    let columns = if sent { "id, a" } else { "id, a, g" };
    for table in ["k", "f"] {
        support::exec(
            &source,
            &format!("INSERT INTO {table} ({columns}) VALUES (0, 5{values})"),
        )
        .await;
    }
    let run = support::run(&db, &slot, &["--create-slot"]);
    support::wait_until("the slot", WAIT, || support::slot_active(&source, &slot)).await;
    for table in ["k", "f"] {
        support::exec(&source, &format!(
                "INSERT INTO {table} ({columns}) VALUES (1, 1{values}), (2, 2{values}), (3, 3{values});
                 UPDATE {table} SET a = 10 WHERE id = 2;
                 DELETE FROM {table} WHERE id = 3;
                 INSERT INTO {table} ({columns}) VALUES (4, 4{values});"
            )).await;
    }
    let expected = vec![(0, 5, 10), (1, 1, 2), (2, 10, 20), (4, 4, 8)];
    for table in ["k", "f"] {
        support::wait_until(&format!("table {table} on the target"), WAIT, || async {
            generated_rows(&target, table).await == expected
        })
        .await;
    }
    if sent {
        // The source really sent its own values (a * 3), and they were not written.
        assert_eq!(
            generated_rows(&source, "k").await,
            vec![(0, 5, 15), (1, 1, 3), (2, 10, 30), (4, 4, 12)]
        );
    }
    let log = run.stop().await;
    assert!(!log.contains("ERROR"), "{log}");
}
