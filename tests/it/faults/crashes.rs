//! Servers stopped with `-m immediate` and lsnpipe killed with SIGKILL, under load.

use std::time::Instant;

use super::*;
use crate::support;

/// Both servers stopped with `-m immediate` and started again, and lsnpipe killed with SIGKILL,
/// under load. The target crash loses its asynchronously committed tail; the source still holds
/// it because only flushed positions were reported, so nothing is missing at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_crashes_and_sigkill_under_load() {
    let source = support::private_cluster("faults_crash_src", &[]);
    let target = support::private_cluster("faults_crash_dst", &[]);
    let db = "postgres";
    let slot = "faults_crash_slot";
    support::pgbench_pair(&source, &target, db, slot).await;
    let start = || support::run_between(&source, &target, db, slot, &TIMEOUTS);
    let mut lsnpipe = start();
    let load = Load::start(&source, db);
    let mut t = support::connect(&target, db).await;
    flowing(&t).await;

    for (name, cluster) in [("source", &source), ("target", &target)] {
        let sessions = sessions_started(&lsnpipe.log());
        let applied_before = applied_lsn(&t, slot).await;
        cluster.with(|c| c.crash()).unwrap();
        cluster.with(|c| c.start_again()).unwrap();
        let back = Instant::now();
        if name == "target" {
            t = support::connect(&target, db).await;
            // Informative, not asserted (it depends on timing, and lsnpipe may already have
            // applied more): a crash within the WAL writer's 200 ms loses asynchronously
            // committed groups, which the source must send again.
            let applied_after = applied_lsn(&t, slot).await;
            eprintln!(
                "target crash: progress row at byte {applied_before} before the crash, \
                 {applied_after} when first read after it ({} bytes of commits seen lost)",
                (applied_before - applied_after).max(0)
            );
        }
        let took = streaming_again(&lsnpipe, &t, sessions, back, WAIT).await;
        eprintln!("{name} crash: streaming again {took:?} after the server was back");
        assert!(took < RECOVERY, "{name} crash: recovery took {took:?}");
        still_running(&mut lsnpipe);
    }

    lsnpipe.kill9();
    let at = Instant::now();
    lsnpipe = start();
    let took = streaming_again(&lsnpipe, &t, 0, at, WAIT).await;
    eprintln!("SIGKILL: streaming again {took:?} after the restart");
    assert!(took < RECOVERY, "SIGKILL: recovery took {took:?}");

    load.stop();
    support::pgbench_converge(&source, &target, db).await;
    lsnpipe.stop().await;
}

/// The target's progress row for `slot`, as a byte position.
async fn applied_lsn(target: &Client, slot: &str) -> i64 {
    target
        .query_one(
            "SELECT coalesce(max(pg_wal_lsn_diff(lsn, '0/0')), 0)::bigint FROM lsnpipe.progress \
             WHERE slot = $1",
            &[&slot],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// A new session reports the progress row it starts from as flushed only once the target has
/// flushed it: the row may belong to a group committed asynchronously just before lsnpipe
/// restarted, still only in the target's memory, and a target crash would then lose changes
/// the slot no longer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_reports_only_what_the_target_has_flushed() {
    // The target's WAL writer flushes asynchronous commits at most every 10 s here.
    let target = support::private_cluster_on(
        support::Side::Target,
        "faults_flush_dst",
        &[("wal_writer_delay", "10s")],
    );
    let source = support::source();
    let db = support::unique_name("faults_flush");
    let slot = db.clone();
    support::create_db(source, &db).await;
    support::create_db(&target, &db).await;
    let s = support::connect(source, &db).await;
    let t = support::connect(&target, &db).await;
    let ddl = "CREATE TABLE events (id int PRIMARY KEY)";
    support::exec(&s, ddl).await;
    support::exec(&t, ddl).await;
    support::exec(&s, "CREATE PUBLICATION pub FOR TABLE events").await;
    support::create_slot(&s, &slot).await;
    let start = || support::run_between(source, &target, &db, &slot, &[]);
    let lsnpipe = start();

    // A commit right after the WAL writer flushed stays unflushed for up to 10 s.
    let mut unflushed = None;
    for id in 1..=5 {
        s.execute("INSERT INTO events VALUES ($1)", &[&id])
            .await
            .unwrap();
        support::wait_until("the row", WAIT, || async {
            support::count(&t, "events").await == i64::from(id)
        })
        .await;
        let row = t
            .query_one(
                "SELECT pg_current_wal_insert_lsn()::text, \
                 pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, bool>(1) {
            unflushed = Some(row.get::<_, String>(0));
            break;
        }
    }
    let unflushed = unflushed.expect("a commit the target had not flushed yet");
    lsnpipe.kill9();
    let applied = applied_lsn(&t, &slot).await;
    assert!(
        support::slot_confirmed(&s, &slot).await < applied,
        "the first session reported a commit the target had not flushed"
    );

    let lsnpipe = start();
    support::wait_until("the slot to pass the applied position", WAIT, || async {
        support::slot_confirmed(&s, &slot).await >= applied
    })
    .await;
    let flushed: bool = t
        .query_one(
            "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
            &[&unflushed],
        )
        .await
        .unwrap()
        .get(0);
    let now: String = t
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        flushed,
        "the new session reported the progress row as flushed before the target flushed it \
         (unflushed {unflushed}, flush now {now}, applied {applied}); log: {}",
        lsnpipe.log()
    );
    lsnpipe.stop().await;
}
