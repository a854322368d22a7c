//! `lsnpipe verify` end to end: equal tables pass, tampering on the target is found and named
//! (keyed and keyless tables), and replication lag under load is never reported as a difference.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{self, Running};

const WAIT: Duration = Duration::from_secs(120);

/// Keyed `a` (several types whose text depends on session settings), keyless `b`.
const DDL: &str = "CREATE TABLE a (id int PRIMARY KEY, v text, t timestamptz, f float8, \
                   by bytea, m money, n numeric);
                   CREATE TABLE b (x int, y text);";

async fn setup(
    prefix: &str,
) -> (
    String,
    String,
    tokio_postgres::Client,
    tokio_postgres::Client,
) {
    let (db, slot, source, target) = support::replicated_db(
        prefix,
        DDL,
        "ALTER TABLE b REPLICA IDENTITY FULL;
         CREATE PUBLICATION pub FOR TABLE a, b;
         INSERT INTO a SELECT g, 'v' || g, '2024-01-01 00:00+00'::timestamptz + g * interval '1 h',
                g / 3.0, decode(md5(g::text), 'hex'), g, g * 1.5 FROM generate_series(1, 3000) g;
         INSERT INTO b SELECT g % 50, 'b' || (g % 50) FROM generate_series(1, 500) g;",
    )
    .await;
    // The target's sessions print differently by default: verify must not care.
    support::exec(
        &target,
        &format!(
            "ALTER DATABASE \"{db}\" SET timezone = 'America/New_York';
             ALTER DATABASE \"{db}\" SET bytea_output = 'escape'"
        ),
    )
    .await;
    (db, slot, source, target)
}

fn verify(db: &str, slot: &str, extra: &[&str]) -> Command {
    let mut cmd = support::lsnpipe_on("verify", db, slot);
    cmd.args(["--wait-secs", "60"])
        .args(extra)
        .stdin(Stdio::null());
    cmd
}

async fn output(cmd: Command) -> Output {
    let mut cmd = cmd;
    tokio::time::timeout(
        Duration::from_secs(240),
        tokio::task::spawn_blocking(move || cmd.output().expect("run lsnpipe verify")),
    )
    .await
    .expect("verify finished in time")
    .expect("join")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `lsnpipe run` with the initial copy, caught up with the source.
async fn replicate(
    db: &str,
    slot: &str,
    source: &tokio_postgres::Client,
    target: &tokio_postgres::Client,
) -> Running {
    let run = support::run(db, slot, &["--create-slot"]);
    support::converge(source, target, &["a", "b"]).await;
    run
}

#[tokio::test]
async fn equal_tables_pass_and_tampered_rows_are_named() {
    let (db, slot, source, target) = setup("verify_tamper").await;
    let _run = replicate(&db, &slot, &source, &target).await;

    // 3500 rows at 2000 rows per second: at least 1.5 s (the rate limit holds).
    let started = std::time::Instant::now();
    let out = output(verify(
        &db,
        &slot,
        &["--chunk-rows", "500", "--max-rows-per-sec", "2000"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the target equals the source"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("3000"), "{}", text(&out));

    support::exec(
        &target,
        "UPDATE a SET v = 'tampered' WHERE id = 1234;
             DELETE FROM a WHERE id = 77;
             INSERT INTO a (id, v) VALUES (5000, 'extra'), (-5, 'below the first key');
             UPDATE a SET t = t + interval '1 s', n = 0 WHERE id = 2999;
             DELETE FROM b WHERE ctid = (SELECT min(ctid) FROM b WHERE x = 7);
             INSERT INTO b VALUES (999, 'extra');",
    )
    .await;
    let out = output(verify(&db, &slot, &["--chunk-rows", "500"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "\"public\".\"a\" different id=1234 columns: v",
        "\"public\".\"a\" missing id=77",
        "\"public\".\"a\" extra id=5000",
        "\"public\".\"a\" extra id=-5",
        "\"public\".\"a\" different id=2999 columns: t, n",
        "\"public\".\"b\" missing (7,b7)",
        "\"public\".\"b\" extra (999,extra)",
    ] {
        assert!(stdout.contains(line), "{line} not in:\n{}", text(&out));
    }

    let out = output(verify(&db, &slot, &["--format", "json", "--table", "b"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(json.starts_with("{\"equal\":false"), "{json}");
    assert!(
        json.contains("\"missing\":1,\"extra\":1")
            && !json.contains("\"table\":\"\\\"public\\\".\\\"a\\\"\""),
        "{json}"
    );
}

#[tokio::test]
async fn lag_under_load_is_not_a_difference() {
    let db = support::test_dbs("verify_lag").await;
    let slot = support::unique_name("verify_lag_slot");
    // The target gets the tables and keys only (no data).
    support::pgbench_to_copy(support::source(), support::target(), &db, "2");
    let source = support::connect(support::source(), &db).await;
    let target = support::connect(support::target(), &db).await;
    source
        .batch_execute(
            "ALTER TABLE pgbench_history REPLICA IDENTITY FULL;
             CREATE PUBLICATION pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, \
             pgbench_history",
        )
        .await
        .unwrap();
    let run = support::run(&db, &slot, &["--create-slot"]);
    // Every table's copy, not just the big one's: the copy empties a table before filling it,
    // so the row planted below must come after pgbench_history's copy.
    support::copy_done(&target, &slot).await;

    // Writes go on for the whole verify, and the target falls seconds behind: a session on the
    // target holds a SHARE lock on pgbench_branches (reads go on, the applier waits) for two
    // seconds out of every three.
    let load = support::pgbench_load(
        support::source(),
        &db,
        &["-c", "2", "-T", "20", "-R", "300", "-n"],
    );
    let stall = {
        let blocker = support::connect(support::target(), &db).await;
        tokio::spawn(async move {
            loop {
                let held = blocker
                    .batch_execute(
                        "BEGIN; LOCK pgbench_branches IN SHARE MODE; SELECT pg_sleep(2); COMMIT",
                    )
                    .await;
                if held.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    // One real difference, behind lsnpipe's back, in a table pgbench only inserts into.
    target
        .batch_execute(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
             VALUES (-1, -1, -1, -1, '2000-01-01')",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = output(verify(&db, &slot, &["--chunk-rows", "5000"])).await;
    stall.abort();
    eprintln!("verify under load: {}", text(&out));
    let bench = load.join().unwrap();
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    // Exactly that row differs: lag on the other tables is never reported.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = run.log();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\nlsnpipe:\n{log}",
        text(&out)
    );
    assert!(
        stdout.contains(
            "\"public\".\"pgbench_history\" extra (-1,-1,-1,-1,\"2000-01-01 00:00:00\",)"
        ),
        "{}",
        text(&out)
    );
    let differing: Vec<&str> = stdout.lines().filter(|l| l.contains("DIFFERS")).collect();
    assert_eq!(differing.len(), 2, "{}", text(&out));
    assert!(
        differing[0].contains("pgbench_history") && differing[0].contains(" 1  "),
        "{}",
        text(&out)
    );
}

/// Tables with a serial and an identity column, replicated by a running `lsnpipe run`.
async fn sequence_setup(
    prefix: &str,
    run_args: &[&str],
) -> (
    String,
    String,
    tokio_postgres::Client,
    tokio_postgres::Client,
    Running,
) {
    let ddl = "CREATE TABLE s (id serial PRIMARY KEY, v text);
               CREATE TABLE g (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text);";
    let (db, slot, source, target) = support::replicated_db(
        prefix,
        ddl,
        "CREATE PUBLICATION pub FOR TABLE s, g;
         INSERT INTO s (v) SELECT 'x' FROM generate_series(1, 40);
         INSERT INTO g (v) SELECT 'y' FROM generate_series(1, 7);",
    )
    .await;
    let run = support::run(&db, &slot, &[&["--create-slot"], run_args].concat());
    support::wait_until("the copy, and streaming", WAIT, || async {
        support::tables_equal(&source, &target, &["s", "g"]).await
            && support::slot_active(&source, &slot).await
    })
    .await;
    (db, slot, source, target, run)
}

fn cutover(db: &str, slot: &str, extra: &[&str]) -> Command {
    let mut cmd = support::lsnpipe_on("cutover", db, slot);
    cmd.args(extra).stdin(Stdio::null());
    cmd
}

async fn sequence_values(client: &tokio_postgres::Client) -> Vec<(i64, bool)> {
    let mut out = Vec::new();
    for seq in ["s_id_seq", "g_id_seq"] {
        let row = client
            .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
            .await
            .unwrap();
        out.push((row.get(0), row.get(1)));
    }
    out
}

#[tokio::test]
async fn cutover_fences_copies_sequences_and_stops_run() {
    let (db, slot, source, target, mut run) = sequence_setup("cutover_ok", &[]).await;
    // A session of the application, open before the fence: it could still write, so the fence
    // ends it.
    let app = support::connect(support::source(), &db).await;
    support::exec(&app, "SELECT 1").await;
    support::exec(
        &source,
        "INSERT INTO s (v) VALUES ('last'); SELECT nextval('g_id_seq')",
    )
    .await;
    drop(source);

    let out = output(cutover(&db, &slot, &["--fence", "--wait-secs", "60"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in [
        "fence: new sessions",
        "caught up",
        "sequences: 2 copied",
        "the target equals the source",
        "streaming stopped",
        "writes fenced for",
    ] {
        assert!(stdout.contains(step), "{step} not in:\n{}", text(&out));
    }
    let (status, log) = run.wait(WAIT).await;
    assert!(status.success(), "lsnpipe run:\n{log}");
    assert!(log.contains("lsnpipe cutover"), "{log}");

    let source = support::connect(support::source(), &db).await;
    assert_eq!(
        sequence_values(&source).await,
        sequence_values(&target).await
    );
    assert_eq!(sequence_values(&target).await, vec![(41, true), (8, true)]);
    let err = source
        .batch_execute("INSERT INTO s (v) VALUES ('no')")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("db error") && format!("{err:?}").contains("read-only"),
        "{err:?}"
    );
    assert!(
        app.batch_execute("SELECT 1").await.is_err(),
        "the old session was ended"
    );

    // Repeating it is safe: already fenced, nothing to stream, equal, already stopped.
    let out = output(cutover(&db, &slot, &["--fence", "--wait-secs", "60"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already read-only"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn the_fence_is_undone_when_cutover_fails() {
    let (db, slot, source, target, run) = sequence_setup("cutover_undo", &[]).await;
    support::exec(&target, "UPDATE s SET v = 'tampered' WHERE id = 3").await;
    let out = output(cutover(&db, &slot, &["--fence", "--wait-secs", "60"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("different id=3 columns: v"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("fence undone"), "{}", text(&out));
    let writer = support::connect(support::source(), &db).await;
    support::exec(&writer, "INSERT INTO s (v) VALUES ('writable')").await;

    // Without a running `lsnpipe run` and with changes left in the slot: cutover streams them
    // itself, still finds the tampered row, and undoes the fence again.
    let _ = run.terminate().await;
    support::exec(&writer, "INSERT INTO s (v) VALUES ('pending')").await;
    drop(writer);
    let out = output(cutover(&db, &slot, &["--fence", "--wait-secs", "60"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in [
        "streaming the rest here",
        "different id=3 columns: v",
        "fence undone",
    ] {
        assert!(stdout.contains(step), "{step} not in:\n{}", text(&out));
    }
    let pending: i64 = target
        .query_one("SELECT count(*) FROM s WHERE v = 'pending'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 1, "{}", text(&out));
    let writer = support::connect(support::source(), &db).await;
    support::exec(&writer, "INSERT INTO s (v) VALUES ('still writable')").await;
    drop(source);
}

#[tokio::test]
async fn run_keeps_sequences_in_sync() {
    let (_db, _slot, source, target, _run) =
        sequence_setup("sync_sequences", &["--sync-sequences", "1"]).await;
    // Ids taken without a row (a rolled back insert) move the sequence too.
    support::exec(
        &source,
        "SELECT nextval('s_id_seq') FROM generate_series(1, 100)",
    )
    .await;
    support::wait_until("the sequences on the target", WAIT, || async {
        sequence_values(&target).await == vec![(140, true), (7, true)]
    })
    .await;
}

#[tokio::test]
async fn cutover_streams_the_rest_itself_when_no_run_is_active_and_teardown_forgets_it() {
    let (db, slot, source, target, run) = sequence_setup("cutover_alone", &[]).await;
    run.stop().await;
    // Written while nothing streams the slot: cutover must bring these over itself.
    support::exec(
        &source,
        "INSERT INTO s (v) SELECT 'late' FROM generate_series(1, 25);
             INSERT INTO g (v) VALUES ('late'); SELECT nextval('g_id_seq')",
    )
    .await;
    // The fence ends sessions opened before it.
    drop(source);

    let out = output(cutover(&db, &slot, &["--fence", "--wait-secs", "60"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let source = support::connect(support::source(), &db).await;
    for step in [
        "streaming the rest here",
        "caught up",
        "sequences: 2 copied",
        "the target equals the source",
        "streaming stopped",
    ] {
        assert!(stdout.contains(step), "{step} not in:\n{}", text(&out));
    }
    assert_eq!(support::count(&target, "s").await, 65);
    assert!(support::tables_equal(&source, &target, &["s", "g"]).await);
    assert_eq!(
        sequence_values(&source).await,
        sequence_values(&target).await
    );
    assert!(
        support::slot_exists(&source, &slot).await && !support::slot_active(&source, &slot).await,
        "the slot is left idle"
    );

    // The stop request goes with the rest of the slot's bookkeeping.
    assert_eq!(stop_rows(&target, &slot).await, 1);
    let mut teardown = support::lsnpipe_on("teardown", &db, &slot);
    teardown.arg("--yes").stdin(Stdio::null());
    let out = output(teardown).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stop_rows(&target, &slot).await, 0, "{}", text(&out));
}

/// The slot's stop requests on the target (none when the table is gone).
async fn stop_rows(target: &tokio_postgres::Client, slot: &str) -> i64 {
    let exists: bool = target
        .query_one("SELECT to_regclass('lsnpipe.cutover') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    if !exists {
        return 0;
    }
    target
        .query_one(
            "SELECT count(*) FROM lsnpipe.cutover WHERE slot = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0)
}
