//! `lsnpipe run` end to end: the real binary between the real source and target clusters.

use std::time::Duration;

use tokio_postgres::Client;

use crate::support;

const WAIT: Duration = Duration::from_secs(120);

/// Tables `a` (keyed) and `b` on both sides, a publication and a slot on the source.
async fn setup(prefix: &str) -> (String, String, Client, Client) {
    let ddl = "CREATE TABLE a (id int PRIMARY KEY, v text);
               CREATE TABLE b (id bigint PRIMARY KEY, n numeric, t timestamptz);";
    support::replicated_db(prefix, ddl, "CREATE PUBLICATION pub FOR TABLE a, b").await
}

#[tokio::test]
async fn replicates_changes_and_stops_cleanly_on_sigterm() {
    let (db, slot, source, target) = setup("run_basic").await;
    let lsnpipe = support::run(&db, &slot, &["--create-slot"]);
    // The slot exists once lsnpipe has started streaming.
    support::wait_until("the slot to be created", WAIT, || async {
        support::slot_confirmed(&source, &slot).await > 0
    })
    .await;
    // One statement per call: each is its own source transaction.
    for sql in [
        "INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 500) g",
        "UPDATE a SET v = 'changed' WHERE id % 7 = 0",
        "DELETE FROM a WHERE id % 11 = 0",
        "INSERT INTO b VALUES (1, 1.5, now()), (2, NULL, NULL)",
        "BEGIN",
        "INSERT INTO a VALUES (10000, 'rolled back')",
        "ROLLBACK",
    ] {
        support::exec(&source, sql).await;
    }
    let expected: i64 = support::count(&source, "a").await;
    assert_eq!(expected, 500 - 45);
    support::converge(&source, &target, &["a", "b"]).await;
    let current = support::current_wal_lsn(&source).await;
    support::wait_until(
        "the slot to be confirmed up to the last change",
        WAIT,
        || async { support::slot_confirmed(&source, &slot).await >= current },
    )
    .await;

    let log = lsnpipe.stop().await;
    assert!(log.contains("stopped cleanly"), "{log}");
    let progress = support::strings(
        &target,
        "SELECT slot || ' ' || lsn::text FROM lsnpipe.progress",
        &[],
    )
    .await;
    assert_eq!(
        progress.len(),
        1,
        "one progress row: {progress:?}; log:\n{log}"
    );
    assert!(progress[0].starts_with(&format!("{slot} ")), "{progress:?}");
}

#[tokio::test]
async fn an_idle_publication_does_not_pin_wal() {
    let (db, slot, source, target) = setup("run_idle").await;
    support::exec(&source, "CREATE TABLE unpublished (id int)").await;
    let lsnpipe = support::run(
        &db,
        &slot,
        &["--create-slot", "--status-interval-ms", "200"],
    );
    support::wait_until("the slot to be created", WAIT, || async {
        support::slot_confirmed(&source, &slot).await > 0
    })
    .await;
    // Only an unpublished table changes: no transaction reaches lsnpipe, yet the slot must move.
    support::exec(
        &source,
        "INSERT INTO unpublished SELECT generate_series(1, 1000)",
    )
    .await;
    let after = support::current_wal_lsn(&source).await;
    support::wait_until("the slot to pass the unpublished writes", WAIT, || async {
        support::slot_confirmed(&source, &slot).await >= after
    })
    .await;
    let rows: i64 = support::count(&target, "a").await;
    assert_eq!(rows, 0);
    lsnpipe.stop().await;
}

#[tokio::test]
async fn a_missing_slot_is_named_with_the_fix() {
    let (db, _slot, _source, _target) = setup("run_noslot").await;
    let log = support::run_expecting_error(support::run_command(&db, "no_such_slot", &[])).await;
    assert!(
        log.contains("\"no_such_slot\" does not exist") && log.contains("--create-slot"),
        "{log}"
    );
}

#[tokio::test]
async fn a_missing_publication_is_named() {
    let (db, slot, _source, _target) = setup("run_nopub").await;
    let log = support::run_expecting_error(support::lsnpipe_run(
        support::source(),
        &db,
        support::target(),
        &db,
        "no_such_pub",
        &slot,
        &["--create-slot"],
    ))
    .await;
    assert!(
        log.contains("publication \"no_such_pub\" does not exist"),
        "{log}"
    );
}

#[tokio::test]
async fn a_table_missing_on_the_target_is_named_and_nothing_is_applied() {
    let (db, slot, source, target) = setup("run_notable").await;
    support::exec(&target, "DROP TABLE b").await;
    support::create_slot(&source, &slot).await;
    support::exec(
        &source,
        "BEGIN; INSERT INTO a VALUES (1, 'x'); INSERT INTO b VALUES (1, 1, now()); COMMIT;",
    )
    .await;
    let log = support::run_expecting_error(support::run_command(&db, &slot, &[])).await;
    assert!(
        log.contains("public.b") || log.contains("\"public\".\"b\""),
        "{log}"
    );
    let rows: i64 = support::count(&target, "a").await;
    assert_eq!(
        rows, 0,
        "the half of the transaction that fits is not applied"
    );
}

#[tokio::test]
async fn with_schema_changes_off_a_column_missing_on_the_target_is_named() {
    let (db, slot, source, target) = setup("run_nocol").await;
    support::exec(&target, "ALTER TABLE a DROP COLUMN v").await;
    support::create_slot(&source, &slot).await;
    support::exec(&source, "INSERT INTO a VALUES (1, 'x')").await;
    let log = support::run_expecting_error(support::run_command(
        &db,
        &slot,
        &["--schema-changes", "off"],
    ))
    .await;
    assert!(log.contains("\"v\"") || log.contains(" v "), "{log}");
}

#[tokio::test]
async fn a_slot_in_use_is_reported() {
    let (db, slot, source, target) = setup("run_inuse").await;
    let first = support::run(&db, &slot, &["--create-slot"]);
    // Streaming, not still copying (the slot is held while streaming).
    support::copy_done(&target, &slot).await;
    support::wait_until("the first lsnpipe to hold the slot", WAIT, || {
        support::slot_active(&source, &slot)
    })
    .await;
    // Into another target database: one lsnpipe per slot and target is enforced on the
    // target, before the slot is asked for; here only the slot says no.
    let other = support::unique_name("run_inuse_other");
    support::create_db(support::target(), &other).await;
    let mut second = support::Running::spawn(support::lsnpipe_run(
        support::source(),
        &db,
        support::target(),
        &other,
        "pub",
        &slot,
        &[],
    ));
    // "In use" is retryable (the holder may be a dying session), so the second one keeps
    // trying and says why in its log.
    support::wait_until("the second lsnpipe to report the slot in use", WAIT, || {
        let log = second.log();
        async move { log.contains("is active for PID") }
    })
    .await;
    let _ = second.child.kill();
    let _ = second.wait(WAIT).await;
    first.stop().await;
}

/// A second `run` for the slot while the first copies: it neither resumes the copy beside the
/// first nor streams, but says who runs and waits; when the first stops, it takes over, and
/// the target ends equal to the source.
#[tokio::test]
async fn a_second_run_for_the_same_slot_waits_for_the_first_even_during_the_copy() {
    let (db, slot, source, target) = setup("run_twice").await;
    let first = support::Running::copying(&source, &db, &slot).await;
    let second = support::run(&db, &slot, &[]);
    second
        .wait_until("the second lsnpipe to name the first", || {
            let log = second.log();
            async move {
                log.contains("another lsnpipe is running for slot")
                    && log.contains("target backend PID")
            }
        })
        .await;
    first.converge(&source, &target, &["a"]).await;
    let log = first.stop().await;
    assert!(!log.contains("another lsnpipe"), "{log}");
    support::exec(&source, "INSERT INTO a VALUES (0, 'after the handover')").await;
    second.converge(&source, &target, &["a", "b"]).await;
    let log = second.stop().await;
    // It waited rather than copy or apply anything beside the first.
    assert!(!log.contains("copying table"), "{log}");
    assert!(!log.contains("duplicate key"), "{log}");
}

#[tokio::test]
async fn a_source_without_logical_wal_is_refused() {
    let replica_level = support::private_cluster("walreplica", &[("wal_level", "replica")]);
    let log = support::run_expecting_error(support::lsnpipe_run(
        &replica_level,
        "postgres",
        support::target(),
        "postgres",
        "pub",
        "some_slot",
        &["--create-slot"],
    ))
    .await;
    assert!(
        log.contains("wal_level = replica") && log.contains("wal_level = logical"),
        "{log}"
    );
}

/// The publication dropped on the source while lsnpipe streams: it stops with an error that
/// names the publication, and nothing applied is lost (the rows before the drop are there).
#[tokio::test]
async fn a_publication_dropped_while_streaming_stops_the_run_with_its_name() {
    let (db, slot, source, target) = setup("run_droppub").await;
    let mut lsnpipe = support::run(&db, &slot, &["--create-slot"]);
    support::exec(&source, "INSERT INTO a VALUES (1, 'before')").await;
    lsnpipe.converge(&source, &target, &["a"]).await;
    support::exec(
        &source,
        "DROP PUBLICATION pub; INSERT INTO a VALUES (2, 'after')",
    )
    .await;
    let log = lsnpipe.failure().await;
    assert!(
        log.contains("publication \"pub\" does not exist") && log.contains("CREATE PUBLICATION"),
        "{log}"
    );
    assert_eq!(support::count(&target, "a").await, 1);
}
