//! Exactly once across crashes and restarts: lsnpipe killed with SIGKILL at random moments, and
//! each server restarted in the middle of a load, must still leave the target equal to the
//! source, with no pgbench_history row lost or doubled.

use std::time::Duration;

use crate::support::{self, ClusterRef, Running};

const WAIT: Duration = Duration::from_secs(180);
const TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

/// pgbench tables on both sides (pgbench -i is deterministic), a publication and a slot.
async fn pgbench_pair(source: &ClusterRef, target: &ClusterRef, db: &str, slot: &str) {
    for cluster in [source, target] {
        let out = support::pgbench(cluster, db, &["-i", "-q", "-s", "1"]);
        assert!(out.status.success(), "pgbench -i: {out:?}");
    }
    let client = support::connect(source, db).await;
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION pub FOR TABLE {}",
            TABLES.join(", ")
        ))
        .await
        .unwrap();
    support::create_slot(&client, slot).await;
}

/// A small xorshift generator: random kill moments without another dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn converge(source: &ClusterRef, target: &ClusterRef, db: &str) {
    let s = support::connect(source, db).await;
    let t = support::connect(target, db).await;
    support::wait_until("the target to equal the source", WAIT, || async {
        support::tables_equal(&s, &t, &TABLES).await
    })
    .await;
    support::assert_tables_equal(&s, &t, &TABLES).await;
    let history: i64 = support::count(&s, "pgbench_history").await;
    assert!(history > 0, "the load ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    let db = support::test_dbs("crash").await;
    let slot = support::unique_name("crash_slot");
    let (source, target) = (support::source(), support::target());
    pgbench_pair(source, target, &db, &slot).await;

    let load = {
        let db = db.clone();
        std::thread::spawn(move || {
            support::pgbench(
                support::source(),
                &db,
                &["-n", "-c", "2", "-j", "2", "-T", "12"],
            )
        })
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    eprintln!("kill schedule seed: {seed}");
    let mut rng = Rng(seed);
    for _ in 0..5 {
        let lsnpipe = Running::spawn(support::lsnpipe_run(
            source,
            &db,
            target,
            &db,
            "pub",
            &slot,
            &[],
        ));
        // A random moment: not a synchronisation, the point of the test.
        tokio::time::sleep(Duration::from_millis(300 + rng.below(2000))).await;
        lsnpipe.kill9();
    }
    let out = load.join().unwrap();
    assert!(out.status.success(), "pgbench: {out:?}");

    let lsnpipe = Running::spawn(support::lsnpipe_run(
        source,
        &db,
        target,
        &db,
        "pub",
        &slot,
        &[],
    ));
    converge(source, target, &db).await;
    let (status, log) = lsnpipe.terminate().await;
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_either_server_mid_load_resumes_by_itself() {
    let source = support::private_cluster("reconnect_src", &[]);
    let target = support::private_cluster_on(support::Side::Target, "reconnect_dst", &[]);
    let db = "postgres";
    let slot = "reconnect_slot";
    pgbench_pair(&source, &target, db, slot).await;

    let lsnpipe = Running::spawn(support::lsnpipe_run(
        &source,
        db,
        &target,
        db,
        "pub",
        slot,
        &[],
    ));
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
    support::wait_until("some rows to arrive", WAIT, || async {
        t.query_one("SELECT count(*) FROM pgbench_history", &[])
            .await
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(false)
    })
    .await;
    source.with(|c| c.restart()).unwrap();
    target.with(|c| c.restart()).unwrap();
    load.join().unwrap();
    converge(&source, &target, db).await;
    let (status, log) = lsnpipe.terminate().await;
    assert!(status.success(), "{log}");
    assert!(log.contains("will reconnect"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_streams_through_in_bounded_memory() {
    let db = support::test_dbs("large").await;
    let slot = support::unique_name("large_slot");
    let source = support::connect(support::source(), &db).await;
    let target = support::connect(support::target(), &db).await;
    let ddl = "CREATE TABLE big (id int PRIMARY KEY, payload text)";
    source.batch_execute(ddl).await.unwrap();
    target.batch_execute(ddl).await.unwrap();
    source
        .batch_execute("CREATE PUBLICATION pub FOR TABLE big")
        .await
        .unwrap();
    support::create_slot(&source, &slot).await;
    source
        .batch_execute(
            "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 300000) g",
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
        &[],
    ));
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
    let (status, log) = lsnpipe.terminate().await;
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_advances_while_a_load_runs() {
    let db = support::test_dbs("advance").await;
    let slot = support::unique_name("advance_slot");
    let (source, target) = (support::source(), support::target());
    pgbench_pair(source, target, &db, &slot).await;
    let lsnpipe = Running::spawn(support::lsnpipe_run(
        source,
        &db,
        target,
        &db,
        "pub",
        &slot,
        &[],
    ));
    let load = {
        let db = db.clone();
        std::thread::spawn(move || {
            support::pgbench(
                support::source(),
                &db,
                &["-n", "-c", "2", "-j", "2", "-T", "20"],
            )
        })
    };
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
    converge(source, target, &db).await;
    let (status, log) = lsnpipe.terminate().await;
    assert!(status.success(), "{log}");
}
