//! High availability: connection strings with several hosts (`host=a,b port=p1,p2` with
//! `target_session_attrs`), on the source (our replication client) and the target
//! (tokio-postgres sessions): a host that is down and a host that is a read-only standby are
//! skipped, and lsnpipe settles on the primary.

use std::time::Duration;

use crate::support::{self, ClusterRef, Running, Side};

const WAIT: Duration = Duration::from_secs(120);

/// A loopback port nothing listens on (bound once to find it, then released).
fn down_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A key/value string naming each port of `ports` on 127.0.0.1, in order.
fn multi_host(ports: &[u16], dbname: &str, attrs: &str) -> String {
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "host={hosts} port={} user=postgres dbname={dbname} target_session_attrs={attrs} \
         connect_timeout=5",
        ports.join(",")
    )
}

/// A private primary with table `a` and publication `pub` in database `postgres`, and a
/// physical standby of it.
async fn primary_and_standby(name: &str) -> (ClusterRef, ClusterRef) {
    let primary = support::private_cluster_on(Side::Source, &format!("{name}_primary"), &[]);
    let client = support::connect(&primary, "postgres").await;
    support::exec(
        &client,
        "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE a;",
    )
    .await;
    let standby = support::standby_of(&primary, &format!("{name}_standby"), &[]);
    (primary, standby)
}

/// A database `prefix_N` on the shared target with the primary's table `a`.
async fn target_db(prefix: &str) -> (String, tokio_postgres::Client) {
    let db = support::unique_name(prefix);
    support::create_db(support::target(), &db).await;
    let target = support::connect(support::target(), &db).await;
    support::exec(&target, "CREATE TABLE a (id int PRIMARY KEY, v text)").await;
    (db, target)
}

/// [`primary_and_standby`] with `hot_standby_feedback` on the standby, for decoding there; `None`
/// (the test is skipped) before PostgreSQL 16, which cannot decode on a standby.
async fn decoding_standby(name: &str) -> Option<(ClusterRef, ClusterRef)> {
    let (primary, standby) = primary_and_standby(name).await;
    if primary.major < 16 {
        eprintln!(
            "skipped: decoding on a standby needs PostgreSQL 16, the source runs {}",
            primary.major
        );
        return None;
    }
    standby
        .with(|c| {
            c.append_conf("hot_standby_feedback = on")?;
            c.reload()
        })
        .unwrap();
    Some((primary, standby))
}

/// Wait for `slot` on the standby (`s`) to be ready. A logical slot on a standby becomes
/// consistent at the next running-transactions record from the primary (`p`): ask for one
/// rather than wait for the next checkpoint.
async fn slot_on_standby(p: &tokio_postgres::Client, s: &tokio_postgres::Client, slot: &str) {
    support::wait_until("the slot on the standby", WAIT, || async {
        let _ = p.batch_execute("SELECT pg_log_standby_snapshot()").await;
        support::slot_confirmed(s, slot).await > 0
    })
    .await;
}

/// `lsnpipe run` from the standby's `postgres` database to `db` on the shared target.
fn from_standby(standby: &ClusterRef, db: &str, slot: &str, extra: &[&str]) -> Running {
    Running::spawn(support::lsnpipe_run(
        standby,
        "postgres",
        support::target(),
        db,
        "pub",
        slot,
        extra,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_host_and_a_standby_are_skipped_on_both_sides() {
    let (primary, standby) = primary_and_standby("hosts").await;
    let (db, target) = target_db("hosts").await;
    // The standby is read-only: `read-write` must pass it by (on the source it would even
    // accept a slot from 16 on, and stream nothing lsnpipe's writes could reach).
    let source_string = multi_host(
        &[down_port(), standby.port, primary.port],
        "postgres",
        "read-write",
    );
    let target_string = multi_host(&[down_port(), support::target().port], &db, "primary");
    let slot = support::unique_name("hosts_slot");
    let mut cmd = support::lsnpipe_command();
    cmd.arg("run")
        .args(["--source", &source_string, "--target", &target_string])
        .args(["--publication", "pub", "--slot", &slot, "--create-slot"])
        .args(["--metrics-listen", "off"]);
    let lsnpipe = Running::spawn(cmd);
    let source = support::connect(&primary, "postgres").await;
    support::wait_until("the slot on the primary", WAIT, || async {
        support::slot_confirmed(&source, &slot).await > 0
    })
    .await;
    support::exec(
        &source,
        "INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 100) g",
    )
    .await;
    support::converge(&source, &target, &["a"]).await;
    lsnpipe.stop().await;
    assert_eq!(support::count(&target, "a").await, 100);
}

/// Run pgbench against `cluster` for `seconds` seconds (its errors are expected when the
/// server is stopped under it).
fn load(cluster: &ClusterRef, seconds: u32) -> std::thread::JoinHandle<std::process::Output> {
    let cluster = cluster.clone();
    std::thread::spawn(move || {
        support::pgbench(
            &cluster,
            "postgres",
            &["-n", "-c", "2", "-T", &seconds.to_string()],
        )
    })
}

/// The pgbench tables; `pgbench_history` has no key, so it is compared as a multiset.
const PGBENCH: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

/// PostgreSQL 17's failover slots end to end: a primary and a physical standby that
/// synchronises the slot (`sync_replication_slots`, `hot_standby_feedback`, and
/// `synchronized_standby_slots` on the primary so the slot never runs ahead of the standby);
/// under load the primary stops and the standby is promoted; lsnpipe, given both hosts, goes on
/// from the promoted server with nothing lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_slot_survives_the_promotion_of_a_standby() {
    let primary = support::private_cluster_on(Side::Source, "failover_primary", &[]);
    if primary.major < 17 {
        eprintln!(
            "skipped: failover slots need PostgreSQL 17, the source runs {}",
            primary.major
        );
        return;
    }
    let p = support::connect(&primary, "postgres").await;
    let out = support::pgbench(&primary, "postgres", &["-i", "-s", "1", "-q"]);
    assert!(out.status.success(), "{out:?}");
    support::exec(
        &p,
        "CREATE PUBLICATION pub FOR ALL TABLES;
         SELECT pg_create_physical_replication_slot('standby_slot');",
    )
    .await;
    // In postgresql.conf, not ALTER SYSTEM: the standby's copy must be able to override it.
    primary
        .with(|c| {
            c.append_conf("synchronized_standby_slots = 'standby_slot'")?;
            c.reload()
        })
        .unwrap();
    let standby = support::standby_of(
        &primary,
        "failover_standby",
        &[
            ("primary_slot_name", "'standby_slot'"),
            ("hot_standby_feedback", "on"),
            ("sync_replication_slots", "on"),
            // Once promoted it has no standby of its own to wait for.
            ("synchronized_standby_slots", "''"),
        ],
    );
    let db = support::unique_name("failover");
    support::create_db(support::target(), &db).await;
    let out = support::pgbench(support::target(), &db, &["-i", "-s", "1", "-q"]);
    assert!(out.status.success(), "{out:?}");
    let target = support::connect(support::target(), &db).await;
    support::exec(&target, &format!("TRUNCATE {}", PGBENCH.join(", "))).await;

    let slot = "failover_slot";
    let mut cmd = support::lsnpipe_command();
    cmd.arg("run")
        .args([
            "--source",
            &multi_host(&[primary.port, standby.port], "postgres", "read-write"),
        ])
        .args(["--target", &support::target().conn_string(&db)])
        .args(["--publication", "pub", "--slot", slot])
        .args([
            "--create-slot",
            "--failover-slot",
            "--metrics-listen",
            "off",
        ]);
    let lsnpipe = Running::spawn(cmd);
    let s = support::connect(&standby, "postgres").await;
    // A synced slot still temporary (the standby has not caught up with it yet) is dropped at
    // promotion: wait until it would survive one, as PostgreSQL's documentation advises.
    lsnpipe
        .wait_until(
            "the slot to be ready for failover on the standby",
            || async {
                s.query_opt(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 \
                 AND synced AND NOT temporary AND invalidation_reason IS NULL",
                    &[&slot],
                )
                .await
                .is_ok_and(|row| row.is_some())
            },
        )
        .await;

    let before = load(&primary, 30);
    lsnpipe
        .wait_until("history rows on the target", || async {
            support::count(&target, "pgbench_history").await > 200
        })
        .await;
    // Stop the old primary first (a fast stop sends the standby all of its WAL), then promote:
    // no write can land on the old primary after the standby took over.
    let stopped = std::time::Instant::now();
    primary.with(|c| c.stop()).unwrap();
    let _ = before.join();
    standby.with(|c| c.promote()).unwrap();
    let s = support::connect(&standby, "postgres").await;
    support::exec(
        &s,
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (0, 0, 0, -1, now())",
    )
    .await;
    lsnpipe
        .wait_until("the first change on the new primary", || async {
            target
                .query_one("SELECT count(*) FROM pgbench_history WHERE delta = -1", &[])
                .await
                .is_ok_and(|row| row.get::<_, i64>(0) == 1)
        })
        .await;
    let resumed = stopped.elapsed();
    eprintln!(
        "failover: lsnpipe applied the new primary's first change {:.1} s after the old \
         primary stopped",
        resumed.as_secs_f64()
    );
    let after = load(&standby, 3);
    let out = after.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    support::converge(&s, &target, &PGBENCH).await;
    lsnpipe.stop().await;
}

/// PostgreSQL 16+ decodes on a hot standby: `--source` is the standby, the slot is created
/// there (its creation waits for the primary to log a snapshot of running transactions, so
/// the test asks the primary for one with `pg_log_standby_snapshot()`), and changes made on the
/// primary reach the target through the standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_standby_can_be_the_source() {
    let Some((primary, standby)) = decoding_standby("standby_src").await else {
        return;
    };
    let (db, target) = target_db("standby_src").await;
    let slot = support::unique_name("standby_src_slot");
    let lsnpipe = from_standby(&standby, &db, &slot, &["--create-slot", "--snapshot=false"]);
    let p = support::connect(&primary, "postgres").await;
    let s = support::connect(&standby, "postgres").await;
    slot_on_standby(&p, &s, &slot).await;
    support::exec(
        &p,
        "INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 100) g",
    )
    .await;
    support::converge(&p, &target, &["a"]).await;
    lsnpipe.stop().await;
}

/// The initial copy from a hot standby (16+): the slot is created on the standby with an
/// exported snapshot, the rows already there are copied under it, and changes made on the
/// primary afterwards stream through the standby, with nothing lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_standby_source_copies_then_streams() {
    let Some((primary, standby)) = decoding_standby("standby_copy").await else {
        return;
    };
    let (db, target) = target_db("standby_copy").await;
    let p = support::connect(&primary, "postgres").await;
    let s = support::connect(&standby, "postgres").await;
    // Rows that only the initial copy can bring: written before the slot exists.
    support::exec(
        &p,
        "INSERT INTO a SELECT g, 'before' FROM generate_series(1000, 5999) g",
    )
    .await;
    support::wait_until("the standby to replay the rows", WAIT, || async {
        support::count(&s, "a").await == 5000
    })
    .await;
    let slot = support::unique_name("standby_copy_slot");
    let lsnpipe = from_standby(&standby, &db, &slot, &["--create-slot"]);
    slot_on_standby(&p, &s, &slot).await;
    support::exec(
        &p,
        "INSERT INTO a SELECT g, 'after' FROM generate_series(6000, 6099) g;
         UPDATE a SET v = 'changed' WHERE id BETWEEN 1000 AND 1009;
         DELETE FROM a WHERE id BETWEEN 1010 AND 1019",
    )
    .await;
    support::converge(&p, &target, &["a"]).await;
    lsnpipe.stop().await;
}
