//! Servers stopped with `-m immediate` and lsnpipe killed with SIGKILL, under load.

use std::time::Instant;

use super::*;
use crate::support::{self, Running};

/// Both servers stopped with `-m immediate` and started again, and lsnpipe killed with SIGKILL,
/// under load. The target crash loses its asynchronously committed tail; the source still holds
/// it because only flushed positions were reported, so nothing is missing at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_crashes_and_sigkill_under_load() {
    let source = support::private_cluster("faults_crash_src", &[]);
    let target = support::private_cluster("faults_crash_dst", &[]);
    let db = "postgres";
    let slot = "faults_crash_slot";
    pgbench_pair(&source, &target, db, slot).await;
    let start = || {
        Running::spawn(support::lsnpipe_run(
            &source, db, &target, db, "pub", slot, &TIMEOUTS,
        ))
    };
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
    converge(&source, &target, db).await;
    let (status, log) = lsnpipe.terminate().await;
    assert!(status.success(), "{log}");
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
