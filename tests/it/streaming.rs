//! Large transactions streamed while the source still writes them (pgoutput protocol 2): applied
//! on a target session of their own, committed in source commit order, undone on abort (also one
//! subtransaction at a time), and exactly once across a crash mid-stream.
//!
//! The source database streams a transaction once its decoded changes pass 64 kB
//! (`logical_decoding_work_mem`, set on the database, which the walsender reads), so a few
//! thousand rows stream and each test takes seconds.

use std::time::Duration;

use tokio_postgres::Client;

use crate::support::{self, Running};

const WAIT: Duration = Duration::from_secs(60);

/// `big` (keyed), `log` (no key: a row applied twice would show) and `small`, on both sides;
/// a publication; lsnpipe running.
struct Setup {
    db: String,
    slot: String,
    source: Client,
    target: Client,
    lsnpipe: Running,
}

const TABLES: [&str; 3] = ["big", "log", "small"];

async fn setup(prefix: &str) -> Setup {
    let ddl = "CREATE TABLE big (id int PRIMARY KEY, v text);
               CREATE TABLE log (n int, note text);
               ALTER TABLE log REPLICA IDENTITY FULL;
               CREATE TABLE small (id int PRIMARY KEY, v text);";
    let (db, slot, source, target) = support::replicated_db(
        prefix,
        ddl,
        "CREATE PUBLICATION pub FOR TABLE big, log, small",
    )
    .await;
    support::exec(
        &source,
        &format!("ALTER DATABASE \"{db}\" SET logical_decoding_work_mem = '64kB'"),
    )
    .await;
    support::create_slot(&source, &slot).await;
    let lsnpipe = start(&db, &slot);
    Setup {
        db,
        slot,
        source,
        target,
        lsnpipe,
    }
}

fn start(db: &str, slot: &str) -> Running {
    support::run(db, slot, &[])
}

/// A second session on the source, for the transaction that stays open.
async fn writer(s: &Setup) -> Client {
    support::connect(support::source(), &s.db).await
}

/// Rows `from..=to` into `big` and `log`.
fn insert_rows(from: i32, to: i32) -> String {
    format!(
        "INSERT INTO big SELECT g, repeat('x', 40) || g FROM generate_series({from}, {to}) g;
         INSERT INTO log SELECT g, 'row ' || g FROM generate_series({from}, {to}) g;"
    )
}

/// Whether a target session other than `target`'s holds a lock on `big` taken by a write: the
/// streamed transaction's changes are on the target, not committed.
async fn streamed_onto_target(target: &Client) -> bool {
    target
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = 'big' AND l.mode = 'RowExclusiveLock' \
               AND l.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        > 0
}

/// How many transactions the source streamed through `slot`.
async fn streamed_transactions(source: &Client, slot: &str) -> i64 {
    source
        .query_one(
            "SELECT coalesce(sum(stream_txns), 0)::bigint FROM pg_stat_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_streamed(s: &Setup) {
    support::wait_until(
        "the open transaction's changes on the target",
        WAIT,
        || async { streamed_onto_target(&s.target).await },
    )
    .await;
}

async fn wait_equal(s: &Setup) {
    s.lsnpipe.converge(&s.source, &s.target, &TABLES).await;
}

/// A marker row committed after everything else: once it is on the target, so is all before.
async fn wait_marker(s: &Setup, id: i32) {
    s.source
        .execute("INSERT INTO small VALUES ($1, 'marker')", &[&id])
        .await
        .unwrap();
    support::wait_until("the marker row on the target", WAIT, || async {
        s.target
            .query_opt("SELECT 1 FROM small WHERE id = $1", &[&id])
            .await
            .unwrap()
            .is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_transaction_is_applied_before_its_commit_and_visible_at_it() {
    let s = setup("stream_commit").await;
    let w = writer(&s).await;
    support::exec(&w, "BEGIN").await;
    support::exec(&w, &insert_rows(1, 5_000)).await;
    wait_streamed(&s).await;
    assert_eq!(
        support::count(&s.target, "big").await,
        0,
        "not visible before the source commits"
    );
    support::exec(&w, &insert_rows(5_001, 6_000)).await;
    support::exec(&w, "UPDATE big SET v = 'updated' WHERE id % 10 = 0; COMMIT").await;
    wait_equal(&s).await;
    assert_eq!(support::count(&s.target, "big").await, 6_000);
    assert!(streamed_transactions(&s.source, &s.slot).await > 0);
    // The progress row covers the streamed commit: the slot is confirmed past it.
    let current = support::current_wal_lsn(&s.source).await;
    let deadline = std::time::Instant::now() + WAIT;
    while support::slot_confirmed(&s.source, &s.slot).await < current {
        assert!(
            std::time::Instant::now() < deadline,
            "the slot did not confirm the streamed commit ({current}); {:?}; log:\n{}",
            s.source
                .query_one(
                    "SELECT format('%s %s %s %s', sent_lsn, write_lsn, flush_lsn, \
                     (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1)) \
                     FROM pg_stat_replication",
                    &[&s.slot]
                )
                .await
                .map(|r| r.get::<_, String>(0)),
            s.lsnpipe.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = s.lsnpipe.stop().await;
    assert!(
        log.contains("in-progress transactions are streamed"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_transaction_that_aborts_leaves_nothing() {
    let s = setup("stream_abort").await;
    let w = writer(&s).await;
    support::exec(&w, "BEGIN").await;
    support::exec(&w, &insert_rows(1, 5_000)).await;
    wait_streamed(&s).await;
    support::exec(&w, "ROLLBACK").await;
    support::wait_until("the target session to roll back", WAIT, || async {
        !streamed_onto_target(&s.target).await
    })
    .await;
    // The same keys again, committed: the aborted rows must not be in the way.
    support::exec(&w, &format!("BEGIN; {} COMMIT", insert_rows(2_001, 7_000))).await;
    wait_marker(&s, 1).await;
    wait_equal(&s).await;
    assert_eq!(support::count(&s.target, "log").await, 5_000);
    assert!(streamed_transactions(&s.source, &s.slot).await >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtransaction_abort_undoes_exactly_its_changes() {
    let s = setup("stream_subxact").await;
    let w = writer(&s).await;
    support::exec(&w, "BEGIN").await;
    support::exec(&w, &insert_rows(1, 3_000)).await;
    // Streamed, then rolled back alone.
    support::exec(&w, &format!("SAVEPOINT a; {}", insert_rows(3_001, 6_000))).await;
    wait_streamed(&s).await;
    support::exec(&w, "ROLLBACK TO SAVEPOINT a").await;
    // Kept: released into the top level.
    support::exec(
        &w,
        &format!(
            "SAVEPOINT b; {} RELEASE SAVEPOINT b",
            insert_rows(6_001, 9_000)
        ),
    )
    .await;
    // Nested: the inner one released, the outer one rolled back takes both.
    support::exec(
        &w,
        &format!(
            "SAVEPOINT c; {} SAVEPOINT d; {} RELEASE SAVEPOINT d;
         UPDATE big SET v = 'from c' WHERE id <= 100;",
            insert_rows(9_001, 11_000),
            insert_rows(11_001, 13_000)
        ),
    )
    .await;
    support::exec(&w, "ROLLBACK TO SAVEPOINT c").await;
    // Keys of the aborted subtransaction, reused by the top level.
    support::exec(&w, &insert_rows(3_001, 3_500)).await;
    support::exec(&w, "UPDATE big SET v = 'top' WHERE id % 100 = 0; COMMIT").await;
    wait_equal(&s).await;
    assert_eq!(support::count(&s.target, "big").await, 3_000 + 3_000 + 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_transactions_committed_meanwhile_apply_in_commit_order() {
    let s = setup("stream_interleave").await;
    let w = writer(&s).await;
    support::exec(&w, "BEGIN").await;
    support::exec(&w, &insert_rows(1, 4_000)).await;
    wait_streamed(&s).await;
    // Committed while the large one is open: on the target before it commits.
    for i in 1..=20 {
        s.source
            .execute("INSERT INTO small VALUES ($1, 'meanwhile')", &[&i])
            .await
            .unwrap();
        s.source
            .execute("UPDATE small SET v = 'updated' WHERE id = $1 - 1", &[&i])
            .await
            .unwrap();
    }
    support::converge(&s.source, &s.target, &["small"]).await;
    assert_eq!(support::count(&s.target, "big").await, 0);
    // More of the large one, then a second large one that commits first.
    support::exec(&w, &insert_rows(4_001, 8_000)).await;
    let w2 = writer(&s).await;
    support::exec(
        &w2,
        &format!(
            "BEGIN; {} UPDATE small SET v = 'second' WHERE id <= 10; COMMIT",
            insert_rows(100_001, 104_000)
        ),
    )
    .await;
    support::exec(
        &s.source,
        "UPDATE small SET v = 'after the second' WHERE id <= 5",
    )
    .await;
    support::exec(&w, "UPDATE small SET v = 'first' WHERE id > 15; COMMIT").await;
    support::exec(&s.source, "UPDATE small SET v = 'last' WHERE id >= 19").await;
    wait_equal(&s).await;
    assert_eq!(support::count(&s.target, "big").await, 12_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_stream_applies_the_transaction_once() {
    let mut s = setup("stream_crash").await;
    let w = writer(&s).await;
    support::exec(&w, "BEGIN").await;
    support::exec(&w, &insert_rows(1, 5_000)).await;
    wait_streamed(&s).await;
    s.lsnpipe.kill();
    support::wait_until("the killed session's work to roll back", WAIT, || async {
        !streamed_onto_target(&s.target).await
    })
    .await;
    // The source keeps writing and commits while lsnpipe is down.
    support::exec(&w, &format!("{} COMMIT", insert_rows(5_001, 8_000))).await;
    s.lsnpipe = start(&s.db, &s.slot);
    wait_equal(&s).await;
    // Killed again right after a streamed commit reached the target, whether or not the source
    // heard of it: on restart it is sent again, and must not be applied twice.
    support::exec(
        &w,
        &format!("BEGIN; {} COMMIT", insert_rows(10_001, 15_000)),
    )
    .await;
    wait_equal(&s).await;
    s.lsnpipe.kill();
    s.lsnpipe = start(&s.db, &s.slot);
    wait_marker(&s, 1).await;
    wait_equal(&s).await;
    assert_eq!(support::count(&s.target, "log").await, 13_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_conflict_only_the_target_has_ends_with_a_clear_error_and_no_loss() {
    let mut s = setup("stream_conflict").await;
    // A unique index the source lacks: the source lets a small transaction reuse a value the
    // open large one wrote; on the target the small one must wait for the large one's session.
    support::exec(&s.target, "CREATE UNIQUE INDEX big_v ON big (v)").await;
    s.lsnpipe.kill();
    s.lsnpipe = support::run(&s.db, &s.slot, &["--target-timeout", "2"]);
    let w = writer(&s).await;
    support::exec(&w, "BEGIN").await;
    support::exec(&w, &insert_rows(1, 4_000)).await;
    wait_streamed(&s).await;
    let taken = format!("{}42", "x".repeat(40));
    s.source
        .execute("INSERT INTO big VALUES (100000, $1)", &[&taken])
        .await
        .unwrap();
    s.lsnpipe
        .wait_until("the lock-wait error", || async {
            s.lsnpipe.log().contains("streamed transaction(s) open")
        })
        .await;
    // The source's row wins once the target stops differing: the large one is rolled back.
    support::exec(&s.target, "DROP INDEX big_v").await;
    support::exec(&w, "ROLLBACK").await;
    wait_marker(&s, 1).await;
    wait_equal(&s).await;
    assert_eq!(support::count(&s.target, "big").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_streamed_transactions_than_sessions_fall_back_to_commit_time_delivery() {
    let s = setup("stream_many").await;
    // One more open large transaction than lsnpipe applies side by side (8).
    let mut writers = Vec::new();
    for i in 0..9 {
        let w = writer(&s).await;
        let from = i * 10_000 + 1;
        support::exec(&w, &format!("BEGIN; {}", insert_rows(from, from + 2_999))).await;
        writers.push(w);
    }
    s.lsnpipe
        .wait_until("the fallback", || async {
            s.lsnpipe
                .log()
                .contains("the next session runs without streaming")
        })
        .await;
    for w in &writers {
        support::exec(w, "COMMIT").await;
    }
    wait_equal(&s).await;
    assert_eq!(support::count(&s.target, "log").await, 9 * 3_000);
}

/// Prepared (two-phase) transactions on the source reach the target at COMMIT PREPARED, in its
/// commit order, whether small or large enough to stream; ROLLBACK PREPARED leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_transactions_apply_at_commit_prepared_and_vanish_at_rollback() {
    let s = setup("stream_2pc").await;
    let w = writer(&s).await;
    let prepare = |name: &str, from: i32, to: i32| {
        format!(
            "BEGIN; {} PREPARE TRANSACTION '{}_{name}'",
            insert_rows(from, to),
            s.slot
        )
    };
    support::exec(&w, &prepare("small", 1, 10)).await;
    support::exec(&w, &prepare("large", 11, 5_010)).await;
    support::exec(&w, &prepare("gone_small", 20_001, 20_010)).await;
    support::exec(&w, &prepare("gone_large", 30_001, 35_000)).await;
    wait_marker(&s, 1).await;
    assert_eq!(
        support::count(&s.target, "big").await,
        0,
        "nothing prepared is visible before COMMIT PREPARED"
    );
    for (name, verb) in [
        ("large", "COMMIT"),
        ("gone_small", "ROLLBACK"),
        ("small", "COMMIT"),
        ("gone_large", "ROLLBACK"),
    ] {
        support::exec(&w, &format!("{verb} PREPARED '{}_{name}'", s.slot)).await;
    }
    wait_marker(&s, 2).await;
    wait_equal(&s).await;
    assert_eq!(support::count(&s.target, "log").await, 5_010);
    assert!(streamed_transactions(&s.source, &s.slot).await > 0);
    let log = s.lsnpipe.stop().await;
    assert!(!log.contains("ERROR"), "{log}");
}
