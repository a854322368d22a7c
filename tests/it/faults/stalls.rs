//! Stuck and quiet sessions: metrics and readiness while stuck, and quiet that is not silence.

use std::time::{Duration, Instant};

use super::proxy::{Fault, Proxy};
use super::*;
use crate::support;

/// With the target link silent and changes waiting, the gauges and /readyz tell the truth
/// although the loop that applies is stuck; once the target timeout ends the stuck session,
/// everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stay_true_while_the_target_link_is_silent() {
    let (db, slot, s, t) =
        events_slot("faults_stuck", "CREATE TABLE events (id int PRIMARY KEY)").await;
    let (source, target) = (support::source(), support::target());
    let proxy = Proxy::start(target.port).await;
    let addr = support::free_addr();
    let listen = addr.to_string();
    let args = [
        "--target-timeout",
        "12",
        "--ready-max-lag-seconds",
        "3",
        "--metrics-listen",
        &listen,
    ];
    let mut lsnpipe = support::run_between(source, &via(target, &proxy), &db, &slot, &args);
    support::exec(&s, "INSERT INTO events VALUES (1)").await;
    support::wait_until("the first row", WAIT, || async {
        support::count(&t, "events").await == 1
    })
    .await;
    support::wait_until("ready", WAIT, || async {
        crate::metrics::request(addr, "GET", "/readyz").await.status == 200
    })
    .await;

    proxy.set(Fault::Blackhole);
    for id in 2..=4 {
        s.execute("INSERT INTO events VALUES ($1)", &[&id])
            .await
            .unwrap();
    }
    let stuck = Instant::now();
    support::wait_until("the byte lag to show the waiting changes", WAIT, || async {
        let scrape = crate::metrics::request(addr, "GET", "/metrics").await.body;
        sample(&scrape, "lsnpipe_lag_bytes").is_some_and(|lag| lag > 0.0)
    })
    .await;
    support::wait_until("/readyz to report the stall", WAIT, || async {
        let ready = crate::metrics::request(addr, "GET", "/readyz").await;
        ready.status == 503 && ready.body.contains("stalled")
    })
    .await;
    let reported = stuck.elapsed();
    eprintln!("stalled target reported by /readyz after {reported:?}");
    assert!(
        reported < Duration::from_secs(10),
        "/readyz said stalled only after {reported:?}"
    );
    // Dated by the source's commit time, so it grows while stuck like the stall itself.
    let scrape = crate::metrics::request(addr, "GET", "/metrics").await.body;
    assert!(
        sample(&scrape, "lsnpipe_lag_seconds").is_some_and(|lag| lag >= 2.0),
        "{scrape}"
    );
    assert_eq!(support::count(&t, "events").await, 1, "the link was silent");

    proxy.heal();
    support::wait_until("the waiting rows", WAIT, || async {
        support::count(&t, "events").await == 4
    })
    .await;
    let took = stuck.elapsed();
    eprintln!("silent target with --target-timeout 12: all rows applied after {took:?}");
    assert!(took < Duration::from_secs(12 + 15), "took {took:?}");
    support::wait_until("ready again", WAIT, || async {
        crate::metrics::request(addr, "GET", "/readyz").await.status == 200
    })
    .await;
    assert!(
        lsnpipe.log().contains("--target-timeout"),
        "{}",
        lsnpipe.log()
    );
    still_running(&mut lsnpipe);
    lsnpipe.stop().await;
}

/// SIGTERM while the target link is silent: lsnpipe gives the stuck call a short grace, not
/// the whole target timeout, stops cleanly, and loses nothing (the next run applies the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_target_hangs_stops_within_the_grace() {
    let (db, slot, s, t) = events_slot(
        "faults_hang_stop",
        "CREATE TABLE events (id int PRIMARY KEY)",
    )
    .await;
    let (source, target) = (support::source(), support::target());
    let proxy = Proxy::start(target.port).await;
    let addr = support::free_addr();
    let listen = addr.to_string();
    let run = |target: &ClusterRef| {
        support::run_between(
            source,
            target,
            &db,
            &slot,
            &["--target-timeout", "60", "--metrics-listen", &listen],
        )
    };
    let lsnpipe = run(&via(target, &proxy));
    support::exec(&s, "INSERT INTO events VALUES (1)").await;
    support::wait_until("the first row", WAIT, || async {
        support::count(&t, "events").await == 1
    })
    .await;

    proxy.set(Fault::Blackhole);
    support::exec(&s, "INSERT INTO events VALUES (2)").await;
    support::wait_until("the apply loop to wait on the target", WAIT, || async {
        let scrape = crate::metrics::request(addr, "GET", "/metrics").await.body;
        sample(&scrape, "lsnpipe_lag_seconds").is_some_and(|lag| lag > 0.0)
    })
    .await;
    let asked = Instant::now();
    let (status, log) = lsnpipe.terminate().await;
    let took = asked.elapsed();
    eprintln!("SIGTERM with the target link silent: stopped after {took:?}");
    assert!(status.success(), "{log}");
    assert!(took < Duration::from_secs(15), "took {took:?}:\n{log}");
    assert!(log.contains("stopping without waiting"), "{log}");

    proxy.heal();
    let lsnpipe = run(target);
    support::wait_until("the row that waited", WAIT, || async {
        support::count(&t, "events").await == 2
    })
    .await;
    lsnpipe.stop().await;
}

/// A short replication timeout on an idle source: lsnpipe asks the walsender to answer well
/// within it, so quiet is never taken for a dead link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_source_is_not_mistaken_for_a_silent_one() {
    let (db, slot, s, t) =
        events_slot("faults_idle", "CREATE TABLE events (id int PRIMARY KEY)").await;
    let (source, target) = (support::source(), support::target());
    let mut lsnpipe = support::run_between(
        source,
        target,
        &db,
        &slot, // The walsender's own keepalives come only every 30 s (wal_sender_timeout / 2).
        &[
            "--replication-timeout",
            "3",
            "--status-interval-ms",
            "60000",
        ],
    );
    support::exec(&s, "INSERT INTO events VALUES (1)").await;
    support::wait_until("the first row", WAIT, || async {
        support::count(&t, "events").await == 1
    })
    .await;
    // Idle for more than three timeouts: the point of the test, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(interruptions(&lsnpipe.log()), 0, "{}", lsnpipe.log());
    support::exec(&s, "INSERT INTO events VALUES (2)").await;
    support::wait_until("the second row", WAIT, || async {
        support::count(&t, "events").await == 2
    })
    .await;
    still_running(&mut lsnpipe);
    lsnpipe.stop().await;
}

/// A source stream that stops inside a large transaction does not hold the finished
/// transactions grouped before it: they reach the target while the rest is still held back,
/// and once the link flows again the target equals the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_stalled_mid_transaction_does_not_hold_the_finished_ones() {
    let (db, slot, s, t) = events_slot(
        "faults_mid_txn",
        "CREATE TABLE events (id int PRIMARY KEY, pad text)",
    )
    .await;
    let (source, target) = (support::source(), support::target());
    let proxy = Proxy::start(source.port).await;
    let mut lsnpipe = support::run_between(
        &via(source, &proxy),
        target,
        &db,
        &slot,
        &["--replication-timeout", "120", "--max-batch-ms", "100"],
    );
    support::exec(&s, "INSERT INTO events VALUES (0, 'warm-up')").await;
    support::wait_until("the first row", WAIT, || async {
        support::count(&t, "events").await == 1
    })
    .await;

    // Hold everything the source sends, so the small transactions and the start of the large
    // one arrive together (one group), then let the stream stop inside the large one.
    proxy.set(Fault::CapDownstream(0));
    for id in 1..=20 {
        s.execute("INSERT INTO events VALUES ($1, 'small')", &[&id])
            .await
            .unwrap();
    }
    support::exec(
        &s,
        "INSERT INTO events SELECT g, repeat('x', 1000) FROM generate_series(1000, 4999) g",
    )
    .await;
    // Once the walsender waits on its full socket, everything before the large transaction's
    // first rows is queued in the link.
    support::wait_until("the walsender to block on the held link", WAIT, || async {
        s.query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_replication_slots r \
             ON a.pid = r.active_pid WHERE r.slot_name = $1 \
             AND a.wait_event = 'WalSenderWriteData'",
            &[&slot],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 1
    })
    .await;
    proxy.set(Fault::CapDownstream(256 * 1024));
    let stalled = Instant::now();
    // Without the split they would wait for the rest of the large transaction (forever here).
    let limit = Duration::from_secs(30);
    support::wait_until("the finished transactions", limit, || async {
        let small: i64 = t
            .query_one("SELECT count(*) FROM events WHERE id BETWEEN 1 AND 20", &[])
            .await
            .unwrap()
            .get(0);
        small == 20
    })
    .await;
    let took = stalled.elapsed();
    eprintln!("finished transactions visible {took:?} after the stream stalled");
    assert!(took < limit, "took {took:?}");
    assert_eq!(
        support::count(&t, "events").await,
        21,
        "the large transaction is still held back, so none of it may be visible"
    );

    proxy.heal();
    support::converge(&s, &t, &["events"]).await;
    still_running(&mut lsnpipe);
    let log = lsnpipe.stop().await;
    assert!(log.contains("stalled inside a transaction"), "{log}");
}

/// A database with table `events` (as `ddl` makes it) on both sides, a publication `pub` of it
/// and a slot on the source.
async fn events_slot(prefix: &str, ddl: &str) -> (String, String, Client, Client) {
    let sql = "CREATE PUBLICATION pub FOR TABLE events";
    let (db, slot, s, t) = support::replicated_db(prefix, ddl, sql).await;
    support::create_slot(&s, &slot).await;
    (db, slot, s, t)
}
