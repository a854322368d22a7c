//! Tables that join the publication after the initial copy are copied at a point of their own
//! and then streamed: while lsnpipe streams other tables under load, while it is stopped, and
//! under `FOR ALL TABLES`.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::support::{self, Load};

const WAIT: Duration = Duration::from_secs(240);
const CREATE: &[&str] = &["--create-slot", "--create-tables"];

async fn setup(prefix: &str, publication: &str) -> (String, String, Client, Client) {
    let ddl = "CREATE TABLE busy (id bigserial PRIMARY KEY, at timestamptz)";
    support::replicated_db(prefix, ddl, publication).await
}

/// Seconds the target's newest `busy` row is behind the source's clock.
async fn busy_lag(target: &Client) -> f64 {
    target
        .query_one(
            "SELECT coalesce(extract(epoch FROM clock_timestamp() - max(at)), 0)::float8 FROM busy",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_to_the_publication_is_copied_while_others_stream() {
    let (db, slot, source, target) =
        setup("added_online", "CREATE PUBLICATION pub FOR TABLE busy").await;
    let lsnpipe = support::run(&db, &slot, CREATE);
    let load = busy_load(&db).await;
    busy_passed(&source, &target, &lsnpipe).await;
    support::exec(
        &source,
        "CREATE TABLE big (id int PRIMARY KEY, v text);
             INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 300000) g;
             ALTER PUBLICATION pub ADD TABLE big;",
    )
    .await;
    // The first change of big tells lsnpipe about it; more changes follow while it is copied.
    support::exec(
        &source,
        "UPDATE big SET v = 'changed' WHERE id <= 10;
             INSERT INTO big VALUES (300001, 'after');
             DELETE FROM big WHERE id = 20;",
    )
    .await;
    let mut worst_lag: f64 = 0.0;
    let deadline = Instant::now() + WAIT;
    while !support::tables_equal(&source, &target, &["big"]).await {
        worst_lag = worst_lag.max(busy_lag(&target).await);
        assert!(
            Instant::now() < deadline,
            "big did not arrive:\n{}",
            lsnpipe.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    support::exec(&source, "UPDATE big SET v = 'streamed' WHERE id = 300001").await;
    load.stop().await;
    lsnpipe.converge(&source, &target, &["busy", "big"]).await;
    eprintln!("busy's worst lag while big was copied: {worst_lag:.2} s");
    let log = lsnpipe.stop().await;
    assert!(
        log.contains("copying tables that joined the publication"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_added_while_stopped_and_under_all_tables_are_copied() {
    let (db, slot, source, target) =
        setup("added_all", "CREATE PUBLICATION pub FOR ALL TABLES").await;
    let lsnpipe = support::run(&db, &slot, CREATE);
    lsnpipe.converge(&source, &target, &["busy"]).await;
    // A new table under FOR ALL TABLES, created on the target by --create-tables.
    support::exec(
        &source,
        "CREATE TABLE fresh (id int PRIMARY KEY, v text);
             INSERT INTO fresh SELECT g, 'v' || g FROM generate_series(1, 1000) g;",
    )
    .await;
    lsnpipe.converge(&source, &target, &["fresh"]).await;
    lsnpipe.stop().await;

    // Created and filled while lsnpipe is stopped: copied before streaming at the next start.
    support::exec(
        &source,
        "CREATE TABLE later (id int PRIMARY KEY);
             INSERT INTO later SELECT generate_series(1, 500);",
    )
    .await;
    let lsnpipe = support::run(&db, &slot, CREATE);
    support::exec(
        &source,
        "INSERT INTO later VALUES (501); INSERT INTO fresh VALUES (1001, 'x')",
    )
    .await;
    lsnpipe
        .converge(&source, &target, &["busy", "fresh", "later"])
        .await;
    lsnpipe.stop().await;
}

/// With `publish_via_partition_root`, pgoutput sends each leaf partition's Relation message
/// after its root's, though the leaf is not published itself: no copy of it is started, and it
/// is not left behind as a pending copy (which `status` would list as copying for ever). Found
/// by the torture test (seed 0xe38848da5c69cd81 with copy_faults).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_partitions_published_through_their_root_are_not_copied_as_added_tables() {
    let (db, slot, source, target) = setup(
        "added_via_root",
        "CREATE PUBLICATION pub FOR ALL TABLES WITH (publish_via_partition_root = true)",
    )
    .await;
    let ddl = "CREATE TABLE part (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
               CREATE TABLE part_low PARTITION OF part FOR VALUES FROM (MINVALUE) TO (100);
               CREATE TABLE part_high PARTITION OF part FOR VALUES FROM (100) TO (MAXVALUE);";
    support::exec(&source, ddl).await;
    support::exec(&target, ddl).await;
    support::exec(
        &source,
        "INSERT INTO part SELECT g, 'v' || g FROM generate_series(1, 150) g",
    )
    .await;
    let lsnpipe = support::run(&db, &slot, CREATE);
    lsnpipe.converge(&source, &target, &["busy", "part"]).await;
    // Changes to both leaves, a row moved between them, after the copy.
    support::exec(
        &source,
        "INSERT INTO part VALUES (5000, 'high'), (0, 'low');
             UPDATE part SET v = 'moved', id = 160 WHERE id = 1;
             DELETE FROM part WHERE id = 120;",
    )
    .await;
    lsnpipe.converge(&source, &target, &["busy", "part"]).await;
    let states = support::strings(
        &target,
        "SELECT table_name || ' ' || status FROM lsnpipe.copy_state WHERE slot = $1 ORDER BY 1",
        &[&slot],
    )
    .await;
    assert_eq!(states, ["busy done", "part done"], "{}", lsnpipe.log());
    let log = lsnpipe.stop().await;
    assert!(
        !log.contains("joined the publication"),
        "no copy of a leaf was started: {log}"
    );
}

/// `lsnpipe status --format json` for this pair, with the publication given.
fn status_json(db: &str, slot: &str) -> serde_json::Value {
    let out = support::lsnpipe_on("status", db, slot)
        .args(["--format", "json"])
        .output()
        .expect("run lsnpipe status");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_joins_without_changes_is_found_and_one_that_leaves_is_reported() {
    let (db, slot, source, target) =
        setup("added_quiet", "CREATE PUBLICATION pub FOR TABLE busy").await;
    let lsnpipe = support::run(&db, &slot, CREATE);
    let load = busy_load(&db).await;
    busy_passed(&source, &target, &lsnpipe).await;
    // Filled, then published, then never changed: no Relation message ever names it.
    support::exec(
        &source,
        "CREATE TABLE quiet (id int PRIMARY KEY, v text);
             INSERT INTO quiet SELECT g, 'v' || g FROM generate_series(1, 1000) g;
             ALTER PUBLICATION pub ADD TABLE quiet;",
    )
    .await;
    let joined = Instant::now();
    lsnpipe.converge(&source, &target, &["quiet"]).await;
    eprintln!(
        "a quiet table was found and copied in {:.1} s",
        joined.elapsed().as_secs_f64()
    );

    // It leaves: reported in the log and by status; its later changes are not applied.
    support::exec(&source, "ALTER PUBLICATION pub DROP TABLE quiet").await;
    support::wait_until("the table's leaving to be logged", WAIT, || async {
        lsnpipe.log().contains("table left the publication")
    })
    .await;
    let status = status_json(&db, &slot);
    assert_eq!(
        status["left_publication"],
        serde_json::json!(["public.quiet"]),
        "{status}"
    );
    assert_eq!(status["copying"], serde_json::json!([]), "{status}");
    support::exec(&source, "INSERT INTO quiet VALUES (1001, 'unpublished')").await;
    busy_passed(&source, &target, &lsnpipe).await;
    assert_eq!(support::count(&target, "quiet").await, 1000);

    // It rejoins: its target copy is stale, so it is emptied and copied again.
    support::exec(&source, "ALTER PUBLICATION pub ADD TABLE quiet").await;
    lsnpipe.converge(&source, &target, &["quiet"]).await;
    load.stop().await;
    lsnpipe.converge(&source, &target, &["busy", "quiet"]).await;
    assert_eq!(
        status_json(&db, &slot)["left_publication"],
        serde_json::json!([])
    );
    lsnpipe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_left_before_a_restart_is_copied_again_when_it_rejoins() {
    let (db, slot, source, target) = setup(
        "added_rejoin",
        "CREATE TABLE quiet (id int PRIMARY KEY, v text);
         INSERT INTO quiet SELECT g, 'v' || g FROM generate_series(1, 100) g;
         CREATE PUBLICATION pub FOR TABLE busy, quiet",
    )
    .await;
    let lsnpipe = support::run(&db, &slot, CREATE);
    lsnpipe.converge(&source, &target, &["busy", "quiet"]).await;
    support::exec(&source, "ALTER PUBLICATION pub DROP TABLE quiet").await;
    lsnpipe
        .wait_until("the table's leaving to be logged", || async {
            lsnpipe.log().contains("table left the publication")
        })
        .await;
    lsnpipe.stop().await;

    // A new session (a restart here; a reconnect is the same) starts while it is out, and its
    // rows change unpublished: when it rejoins, only a new copy brings them.
    let lsnpipe = support::run(&db, &slot, &[]);
    support::exec(
        &source,
        "UPDATE quiet SET v = 'changed while out' WHERE id <= 10;
         DELETE FROM quiet WHERE id > 90;
         INSERT INTO busy (at) VALUES (now());",
    )
    .await;
    lsnpipe.converge(&source, &target, &["busy"]).await;
    support::exec(
        &source,
        "ALTER PUBLICATION pub ADD TABLE quiet;
         UPDATE quiet SET v = 'after rejoining' WHERE id = 50;",
    )
    .await;
    lsnpipe.converge(&source, &target, &["busy", "quiet"]).await;
    lsnpipe.stop().await;
}

/// With `--create-tables`, an added table counts as copied only once its keys and indexes are
/// built: a failure in between (here an index on a function the target lacks) copies it again
/// at the next start, rather than streaming on into a table that lacks them for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_table_whose_index_fails_is_copied_again_with_it_once_fixed() {
    let (db, slot, source, target) =
        setup("added_index", "CREATE PUBLICATION pub FOR TABLE busy").await;
    support::exec(&source, "INSERT INTO busy (at) VALUES (now())").await;
    let mut lsnpipe = support::run(&db, &slot, CREATE);
    // Past the initial copy (whose own keys are built before the run is marked done).
    lsnpipe.converge(&source, &target, &["busy"]).await;
    let function =
        "CREATE FUNCTION public.halve(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 / 2'";
    support::exec(
        &source,
        &format!(
            "{function};
             CREATE TABLE late (id int PRIMARY KEY, v int);
             CREATE INDEX late_halve ON late (public.halve(v));
             INSERT INTO late SELECT g, g FROM generate_series(1, 1000) g;
             ALTER PUBLICATION pub ADD TABLE late;"
        ),
    )
    .await;
    support::exec(&source, "INSERT INTO late VALUES (1001, 1001)").await;
    // The online copy fails on the index and the next session's start copies the table again
    // and stops there: the function is the operator's to create.
    let log = lsnpipe.failure().await;
    assert!(log.contains("halve"), "{log}");
    assert!(
        !late_copied(&target).await,
        "late was marked copied without its index; log:\n{log}"
    );

    support::exec(&target, function).await;
    let lsnpipe = support::run(&db, &slot, CREATE);
    support::exec(&source, "UPDATE late SET v = 0 WHERE id = 1").await;
    // Its rows are visible once the copy commits; its indexes come after, then the mark.
    lsnpipe
        .wait_until("late to be marked copied", || late_copied(&target))
        .await;
    lsnpipe.converge(&source, &target, &["busy", "late"]).await;
    let indexed: bool = target
        .query_one("SELECT to_regclass('public.late_halve') IS NOT NULL", &[])
        .await
        .expect("look for the index")
        .get(0);
    assert!(indexed, "late has no index late_halve:\n{}", lsnpipe.log());
    lsnpipe.stop().await;
}

async fn late_copied(target: &Client) -> bool {
    target
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM lsnpipe.copy_state \
             WHERE table_name = 'late' AND status = 'done')",
            &[],
        )
        .await
        .expect("read the copy state")
        .get(0)
}

/// Wait until lsnpipe has applied everything committed on the source so far: a `busy` row of
/// our own, inserted now, is on the target. While the load runs, the two tables are never equal
/// at one instant for long (a row every 5 ms), so a full comparison only passes on a fast machine.
async fn busy_passed(source: &Client, target: &Client, lsnpipe: &support::Running) {
    let marker: i64 = source
        .query_one(
            "INSERT INTO busy (at) VALUES (clock_timestamp()) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    lsnpipe
        .wait_until(&format!("busy row {marker} on the target"), || async {
            target
                .query_opt("SELECT 1 FROM busy WHERE id = $1", &[&marker])
                .await
                .is_ok_and(|row| row.is_some())
        })
        .await;
}

/// Rows stamped with the source's clock into `busy`, every 5 ms, until stopped.
async fn busy_load(db: &str) -> Load {
    Load::start(db, Duration::from_millis(5), |_| {
        "INSERT INTO busy (at) VALUES (clock_timestamp())".to_owned()
    })
    .await
}
