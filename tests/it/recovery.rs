//! Losing changes is refused, and the documented recovery works end to end: a dropped slot, a
//! slot consumed past the target, `resync`, `teardown` then a new copy; values are exact
//! whatever the databases set for how values print and parse (DateStyle, IntervalStyle,
//! xmloption, array_nulls); their application timeouts do not cut lsnpipe's sessions.

use std::time::Duration;

use tokio_postgres::Client;

use crate::support;

const WAIT: Duration = Duration::from_secs(120);

/// A source table `t` in publication `pub`, the same table on the target, and a first run that
/// copies it (rows 1–10) and streams one more row; lsnpipe is stopped at the end.
async fn replicated(prefix: &str) -> (String, String, Client, Client) {
    let (db, slot, source, target) = support::replicated_db(
        prefix,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 10) g;
         CREATE PUBLICATION pub FOR TABLE t;",
    )
    .await;
    let lsnpipe = support::run(&db, &slot, &["--create-slot"]);
    support::copy_done(&target, &slot).await;
    support::exec(&source, "INSERT INTO t VALUES (11, 'streamed')").await;
    converge(&source, &target).await;
    lsnpipe.stop().await;
    (db, slot, source, target)
}

fn ops(command: &str, db: &str, slot: &str) -> std::process::Output {
    support::lsnpipe_on(command, db, slot)
        .arg("--yes")
        .output()
        .expect("run lsnpipe")
}

async fn converge(source: &Client, target: &Client) {
    support::converge(source, target, &["t"]).await;
}

/// `lsnpipe run` must stop by itself with an error that says what happened and what to do.
async fn refused(db: &str, slot: &str, expect: &str) -> String {
    let mut lsnpipe = support::run(db, slot, &["--create-slot"]);
    let log = lsnpipe.failure().await;
    assert!(
        log.contains(expect),
        "names what happened ({expect}): {log}"
    );
    assert!(log.contains("lsnpipe resync"), "says what to do: {log}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_never_silently_recreated_and_resync_recovers() {
    let (db, slot, source, target) = replicated("rec_drop").await;
    support::exec(
        &source,
        "INSERT INTO t VALUES (42, 'written while stopped')",
    )
    .await;
    source
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    refused(&db, &slot, "does not exist on the source").await;
    assert!(
        !support::slot_exists(&source, &slot).await,
        "no slot was created"
    );

    let out = ops("resync", &db, &slot);
    assert!(out.status.success(), "resync: {out:?}");
    assert_eq!(
        support::count(&target, "t").await,
        0,
        "resync empties the table"
    );
    let lsnpipe = support::run(&db, &slot, &["--create-slot"]);
    converge(&source, &target).await;
    let log = lsnpipe.stop().await;
    assert!(log.contains("initial copy"), "copied again: {log}");
    let row: i64 = target
        .query_one("SELECT count(*) FROM t WHERE id = 42", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(row, 1, "the row written while the slot was gone arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_consumed_past_the_target_is_refused() {
    let (db, slot, source, _target) = replicated("rec_ahead").await;
    support::exec(
        &source,
        "INSERT INTO t VALUES (43, 'consumed by someone else')",
    )
    .await;
    source
        .query(
            "SELECT * FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, \
             'proto_version', '1', 'publication_names', 'pub')",
            &[&slot],
        )
        .await
        .unwrap();
    refused(&db, &slot, "has confirmed changes up to").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_advances_the_slot_through_the_progress_row_and_restarts_cleanly() {
    let (db, slot, source, target) = replicated("rec_idle").await;
    let lsnpipe = support::run(&db, &slot, &[]);
    let before = support::slot_confirmed(&source, &slot).await;
    // WAL the publication does not carry.
    support::exec(
        &source,
        "CREATE TABLE unpublished (x int); INSERT INTO unpublished VALUES (1)",
    )
    .await;
    support::wait_until("the slot to advance while idle", WAIT, || async {
        support::slot_confirmed(&source, &slot).await > before
    })
    .await;
    lsnpipe.stop().await;
    let confirmed = support::slot_confirmed(&source, &slot).await;
    let recorded: i64 = target
        .query_one(
            "SELECT pg_wal_lsn_diff(lsn, '0/0')::bigint FROM lsnpipe.progress WHERE slot = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        recorded >= confirmed,
        "the target recorded what the slot confirmed"
    );
    // A restart is not mistaken for lost changes.
    let lsnpipe = support::run(&db, &slot, &[]);
    support::exec(&source, "INSERT INTO t VALUES (12, 'after the restart')").await;
    converge(&source, &target).await;
    lsnpipe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_then_a_new_slot_copies_again_as_the_readme_says() {
    let (db, slot, source, target) = replicated("rec_teardown").await;
    let out = ops("teardown", &db, &slot);
    assert!(out.status.success(), "teardown: {out:?}");
    support::exec(
        &source,
        "INSERT INTO t VALUES (44, 'written after the teardown')",
    )
    .await;
    support::exec(&target, "TRUNCATE t").await;
    let lsnpipe = support::run(&db, &slot, &["--create-slot"]);
    converge(&source, &target).await;
    let log = lsnpipe.stop().await;
    assert!(log.contains("initial copy"), "copied again: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_exact_whatever_text_settings_the_databases_have() {
    let db = support::test_dbs("rec_style").await;
    let slot = support::unique_name("rec_style_slot");
    let ddl = "CREATE TYPE mood AS ENUM ('sad', 'ok');
               CREATE TABLE t (id int PRIMARY KEY, d date, ts timestamp, i interval, m mood, f float8,
                                doc xml, a text[])";
    {
        let source = support::connect(support::source(), &db).await;
        let target = support::connect(support::target(), &db).await;
        support::exec(&source, ddl).await;
        support::exec(&target, ddl).await;
        let setup = |style: &str, intervals: &str| {
            format!(
                "ALTER DATABASE {db} SET datestyle = '{style}'; \
                 ALTER DATABASE {db} SET intervalstyle = '{intervals}'; \
                 ALTER DATABASE {db} SET extra_float_digits = -3; \
                 ALTER DATABASE {db} SET xmloption = document; \
                 ALTER DATABASE {db} SET array_nulls = off"
            )
        };
        support::exec(&source, &setup("SQL, DMY", "sql_standard")).await;
        support::exec(&target, &setup("SQL, MDY", "iso_8601")).await;
    }
    // New sessions see the database settings.
    let source = support::connect(support::source(), &db).await;
    let target = support::connect(support::target(), &db).await;
    support::exec(&source, "INSERT INTO t VALUES
               (1, '2024-06-05', '2024-06-05 13:14:15.5', '-1 day -2 hours', 'ok', 0.1,
                XMLPARSE(CONTENT 'a<b/>c'), ARRAY['x', NULL]),
               (2, '1999-12-31', '2001-02-03 04:05:06', '1 year 2 mons 3 days 04:05:06.7', 'sad', 1e-300,
                NULL, NULL);
             CREATE PUBLICATION pub FOR TABLE t;",).await;
    let lsnpipe = support::run(&db, &slot, &["--create-slot"]);
    support::exec(
        &source,
        "INSERT INTO t VALUES (3, '2024-01-02', '2024-01-02 03:04:05', '-3 days +04:00', 'ok', 2.5,
                                XMLPARSE(CONTENT 'd<e/>f'), ARRAY[NULL, 'y'])",
    )
    .await;
    // Compare in one fixed style on both sides.
    for client in [&source, &target] {
        support::exec(
            client,
            "SET datestyle = ISO; SET intervalstyle = postgres; SET extra_float_digits = 3;
             SET xmloption = content; SET array_nulls = on",
        )
        .await;
    }
    converge(&source, &target).await;
    support::assert_tables_equal(&source, &target, &["t"]).await;
    lsnpipe.stop().await;
}

/// Timeouts a database sets for its applications (`ALTER DATABASE … SET statement_timeout`,
/// idle timeouts, `lock_timeout`) do not cut lsnpipe's own sessions: a copy longer than the
/// statement timeout, a large transaction, and quiet spells longer than the idle timeouts all
/// replicate with nothing logged as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_timeouts_set_on_the_databases_do_not_cut_lsnpipe_sessions() {
    let (db, slot, source, target) = support::replicated_db(
        "rec_timeouts",
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g;
         CREATE PUBLICATION pub FOR TABLE t;",
    )
    .await;
    for (client, major) in [
        (&source, support::source().major),
        (&target, support::target().major),
    ] {
        let mut timeouts = format!(
            "ALTER DATABASE {db} SET statement_timeout = '20ms'; \
             ALTER DATABASE {db} SET lock_timeout = '20ms'; \
             ALTER DATABASE {db} SET idle_in_transaction_session_timeout = '20ms'; \
             ALTER DATABASE {db} SET idle_session_timeout = '50ms';"
        );
        if major >= 17 {
            timeouts.push_str(&format!(
                "ALTER DATABASE {db} SET transaction_timeout = '50ms';"
            ));
        }
        support::exec(client, &timeouts).await;
    }
    let lsnpipe = support::run(&db, &slot, &["--create-slot"]);
    support::copy_done(&target, &slot).await;
    converge(&source, &target).await;
    // Quiet for longer than every idle timeout, then a transaction larger than one statement
    // may take under the statement timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    support::exec(
        &source,
        "UPDATE t SET v = 'updated' WHERE id % 2 = 0; INSERT INTO t VALUES (0, 'after')",
    )
    .await;
    converge(&source, &target).await;
    let log = lsnpipe.stop().await;
    assert!(!log.contains("ERROR") && !log.contains("WARN"), "{log}");
}
