//! Exactly once across crashes and restarts: lsnpipe killed with SIGKILL at random moments, and
//! each server restarted in the middle of a load, must still leave the target equal to the
//! source, with no pgbench_history row lost or doubled.

use std::time::Duration;

use crate::support;
use crate::torture::rng::Rng;

const WAIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    let (db, slot) = support::pgbench_db("crash").await;
    let (source, target) = (support::source(), support::target());

    let load = support::pgbench_load(source, &db, &["-n", "-c", "2", "-j", "2", "-T", "12"]);
    let seed = support::clock_seed();
    eprintln!("kill schedule seed: {seed}");
    let mut rng = Rng::new(seed);
    for _ in 0..5 {
        let lsnpipe = support::run(&db, &slot, &[]);
        // A random moment: not a synchronisation, the point of the test.
        tokio::time::sleep(Duration::from_millis(300 + rng.below(2000))).await;
        lsnpipe.kill9();
    }
    let out = load.join().unwrap();
    assert!(out.status.success(), "pgbench: {out:?}");

    let lsnpipe = support::run(&db, &slot, &[]);
    support::pgbench_converge(source, target, &db).await;
    lsnpipe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_either_server_mid_load_resumes_by_itself() {
    let source = support::private_cluster("reconnect_src", &[]);
    let target = support::private_cluster_on(support::Side::Target, "reconnect_dst", &[]);
    let db = "postgres";
    let slot = "reconnect_slot";
    support::pgbench_pair(&source, &target, db, slot).await;

    let lsnpipe = support::run_between(&source, &target, db, slot, &[]);
    let load = {
        let source = source.clone();
        std::thread::spawn(move || {
            // pgbench stops at the source restart; run it in rounds.
            for _ in 0..3 {
                let _ = support::pgbench(&source, "postgres", &["-n", "-c", "2", "-T", "3"]);
            }
        })
    };
    let t = support::connect(&target, db).await;
    support::wait_until("some rows to arrive", WAIT, || {
        support::has_rows(&t, "pgbench_history")
    })
    .await;
    source.with(|c| c.restart()).unwrap();
    target.with(|c| c.restart()).unwrap();
    load.join().unwrap();
    support::pgbench_converge(&source, &target, db).await;
    let log = lsnpipe.stop().await;
    assert!(log.contains("will reconnect"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_streams_through_in_bounded_memory() {
    let ddl = "CREATE TABLE big (id int PRIMARY KEY, payload text)";
    let (db, slot, source, target) =
        support::replicated_db("large", ddl, "CREATE PUBLICATION pub FOR TABLE big").await;
    support::create_slot(&source, &slot).await;
    support::exec(
        &source,
        "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 300000) g",
    )
    .await;
    let lsnpipe = support::run(&db, &slot, &[]);
    support::wait_until("the big transaction to land", WAIT, || async {
        target
            .query_one("SELECT count(*) FROM big", &[])
            .await
            .map(|r| r.get::<_, i64>(0) == 300_000)
            .unwrap_or(false)
    })
    .await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", lsnpipe.pid())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    // The transaction's text alone is ~40 MB; holding it would show in the peak.
    assert!(peak_kb < 100 * 1024, "peak RSS {peak_kb} kB");
    lsnpipe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_advances_while_a_load_runs() {
    let (db, slot) = support::pgbench_db("advance").await;
    let (source, target) = (support::source(), support::target());
    let lsnpipe = support::run(&db, &slot, &[]);
    let load = support::pgbench_load(source, &db, &["-n", "-c", "2", "-j", "2", "-T", "20"]);
    let s = support::connect(source, &db).await;
    let confirmed = || support::slot_confirmed(&s, &slot);
    let start = confirmed().await;
    support::wait_until("the slot to advance", WAIT, || async {
        confirmed().await > start
    })
    .await;
    let first = confirmed().await;
    support::wait_until("the slot to advance again", WAIT, || async {
        confirmed().await > first
    })
    .await;
    // Both advances happened under load, not after it.
    assert!(
        !load.is_finished(),
        "the slot advanced only once the load had ended"
    );
    let out = load.join().unwrap();
    assert!(out.status.success(), "pgbench: {out:?}");
    support::pgbench_converge(source, target, &db).await;
    lsnpipe.stop().await;
}
