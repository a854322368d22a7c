//! A slot invalidated by max_slot_wal_keep_size: shown, reported by status, a clear stop.

use super::*;
use crate::support::{self, Running};

/// The slot invalidated (max_slot_wal_keep_size exceeded) while lsnpipe could not consume:
/// the slot metric shows it, `status` exits 1, and lsnpipe stops naming the slot and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_stops_lsnpipe_with_the_fix() {
    let source =
        support::private_cluster("faults_lost_src", &[("max_slot_wal_keep_size", "'1MB'")]);
    let target = support::target();
    let db = "postgres";
    let target_db = support::unique_name("faults_lost");
    support::create_db(target, &target_db).await;
    let slot = "faults_lost_slot";
    let s = support::connect(&source, db).await;
    let t = support::connect(target, &target_db).await;
    let ddl = "CREATE TABLE items (id int PRIMARY KEY, payload text)";
    support::exec(&s, ddl).await;
    support::exec(&t, ddl).await;
    support::exec(&s, "CREATE PUBLICATION pub FOR TABLE items").await;
    support::create_slot(&s, slot).await;
    let fill = |from: i32| {
        format!(
            "INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series({from}, {}) g",
            from + 999
        )
    };
    support::exec(&s, &fill(1)).await;

    // The target holds replicated data, then cannot take writes, so lsnpipe falls behind.
    let addr = support::free_addr();
    let listen = addr.to_string();
    let mut args = TIMEOUTS.to_vec();
    args.extend([
        "--metrics-listen",
        &listen,
        "--slot-monitor-interval-secs",
        "1",
    ]);
    let run = || {
        Running::spawn(support::lsnpipe_run(
            &source, db, target, &target_db, "pub", slot, &args,
        ))
    };
    let lsnpipe = run();
    support::wait_until("the first rows to arrive", WAIT, || async {
        support::count(&t, "items").await == 1000
    })
    .await;
    lsnpipe.stop().await;

    // Remove the WAL the slot still needs.
    let mut from = 1001;
    support::wait_until("the source to invalidate the slot", WAIT, || {
        from += 1000;
        let sql = format!("{}; SELECT pg_switch_wal(); CHECKPOINT;", fill(from));
        let s = &s;
        async move {
            support::exec(s, &sql).await;
            s.query_one(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
            .as_deref()
                == Some("lost")
        }
    })
    .await;

    let out = support::lsnpipe_command()
        .args(["status", "--source", &source.conn_string(db)])
        .args(["--target", &target.conn_string(&target_db), "--slot", slot])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("lost"), "{text}");

    // While lsnpipe runs (retrying a read-only target), the slot monitor shows the loss.
    set_read_only(target, &target_db, true).await;
    let mut lsnpipe = run();
    support::wait_until("lsnpipe_slot_wal_status to show lost", WAIT, || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
            && crate::metrics::request(addr, "GET", "/metrics")
                .await
                .body
                .contains("lsnpipe_slot_wal_status{status=\"lost\"} 1")
    })
    .await;
    set_read_only(target, &target_db, false).await;
    let (status, log) = lsnpipe.wait(WAIT).await;
    assert_eq!(status.code(), Some(1), "{log}");
    for needle in [
        "\"faults_lost_slot\"",
        "invalidated",
        "max_slot_wal_keep_size",
        "lsnpipe teardown",
    ] {
        assert!(log.contains(needle), "{needle} missing from:\n{log}");
    }
}
