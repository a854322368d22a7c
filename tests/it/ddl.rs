//! Captured DDL (`lsnpipe ddl install`): commands on published tables replayed on the target at
//! their place in the stream, while another table takes a steady write load; a command the
//! target rejects stops replication by name; `ddl remove` leaves nothing behind.

use std::time::Duration;

use tokio_postgres::Client;

use crate::support::{self, Load, Running};

/// `lsnpipe ddl install|remove` on the source database `db`; panics with its output on failure.
fn ddl(action: &str, db: &str) -> String {
    let out = support::lsnpipe_command()
        .args([
            "ddl",
            action,
            "--source",
            &support::source().conn_string(db),
        ])
        .output()
        .expect("run lsnpipe ddl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "lsnpipe ddl {action}: {text}");
    text
}

/// Columns (name, type, not null, default) and index definitions of `table`.
async fn shape(client: &Client, table: &str) -> Vec<String> {
    let mut shape: Vec<String> = client
        .query(
            "SELECT format('%s %s %s %s', attname, format_type(atttypid, atttypmod), attnotnull, \
                 pg_get_expr(d.adbin, d.adrelid)) \
             FROM pg_attribute a LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum) \
             WHERE attrelid = to_regclass($1::text) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    shape.extend(
        client
            .query(
                "SELECT indexdef FROM pg_indexes WHERE tablename = $1 ORDER BY indexname",
                &[&table],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0)),
    );
    shape
}

struct Pair {
    db: String,
    slot: String,
    source: Client,
    target: Client,
}

/// `t`, `gone` and `busy` on both sides, published; the capture installed on the source.
async fn setup(prefix: &str) -> Pair {
    let tables = "CREATE TABLE t (id int PRIMARY KEY, v text, w int);
                  CREATE TABLE gone (id int PRIMARY KEY);
                  CREATE TABLE busy (id bigserial PRIMARY KEY, n int)";
    let (db, slot, source, target) = support::replicated_db(
        prefix,
        tables,
        "INSERT INTO t SELECT i, 'v' || i, i % 7 FROM generate_series(1, 100) i;
         CREATE PUBLICATION pub FOR TABLE t, gone, busy",
    )
    .await;
    ddl("install", &db);
    Pair {
        db,
        slot,
        source,
        target,
    }
}

impl Pair {
    fn run(&self, extra: &[&str]) -> Running {
        support::run(&self.db, &self.slot, extra)
    }

    /// `t` (rows and shape) and `busy` (rows) equal on both sides.
    async fn converge(&self, lsnpipe: &Running) {
        converge(&self.source, &self.target, "t", &["t", "busy"], lsnpipe).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_indexes_and_drops_are_replayed_in_place_under_load() {
    let pair = setup("ddl_replay").await;
    let lsnpipe = pair.run(&["--create-slot"]);
    let load = busy_load(&pair.db).await;
    pair.converge(&lsnpipe).await;
    let steps = [
        // Rows written right after the rename use the new name: the rename must come first.
        "ALTER TABLE t RENAME COLUMN v TO label",
        "INSERT INTO t (id, label, w) VALUES (101, 'new', 1); UPDATE t SET label = label || '!' WHERE id <= 10",
        "CREATE INDEX t_w ON t (w)",
        "CREATE UNIQUE INDEX CONCURRENTLY t_label ON t (label)",
        // Column drift must find this one already made.
        "ALTER TABLE t ADD COLUMN z int NOT NULL DEFAULT 3, ALTER COLUMN w SET DEFAULT 9",
        "DROP TABLE gone",
    ];
    for sql in steps {
        support::exec(&pair.source, sql).await;
    }
    // A command among rows of the same transaction, each statement sent on its own.
    let mut source = support::connect(support::source(), &pair.db).await;
    let tx = source.transaction().await.unwrap();
    for sql in [
        "INSERT INTO t (id, label) VALUES (102, 'z')",
        "ALTER TABLE t ADD CONSTRAINT w_positive CHECK (w >= 0)",
        "INSERT INTO t (id, label, w) VALUES (103, 'y', 0)",
    ] {
        tx.batch_execute(sql).await.unwrap();
    }
    tx.commit().await.unwrap();
    pair.converge(&lsnpipe).await;
    load.stop().await;
    pair.converge(&lsnpipe).await;
    let gone = pair
        .target
        .query_one("SELECT to_regclass('public.gone') IS NULL", &[])
        .await
        .unwrap();
    assert!(gone.get::<_, bool>(0), "DROP TABLE replayed");
    let constraint =
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'w_positive'";
    assert_eq!(
        pair.target
            .query_one(constraint, &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        pair.source
            .query_one(constraint, &[])
            .await
            .unwrap()
            .get::<_, String>(0),
    );
    let log = lsnpipe.stop().await;
    assert!(log.contains("captured DDL applied on the target"), "{log}");
    assert!(
        !log.contains("schema change on the target"),
        "column drift did something captured DDL had done: {log}"
    );
}

/// `shaped`'s shape and `tables`' rows equal on both sides (lsnpipe's log on a time-out).
async fn converge(
    source: &Client,
    target: &Client,
    shaped: &str,
    tables: &[&str],
    lsnpipe: &Running,
) {
    let what = format!("{shaped}'s shape and {tables:?} to be equal");
    lsnpipe
        .wait_until(&what, || async {
            shape(source, shaped).await == shape(target, shaped).await
                && support::tables_equal(source, target, tables).await
        })
        .await;
}

/// The LSN an error names after "captured DDL at ".
fn failed_lsn(log: &str) -> String {
    let at = log
        .find("captured DDL at ")
        .expect("the error names the LSN")
        + 16;
    log[at..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_end_matches(':')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_the_target_rejects_stops_with_its_text_and_nothing_after_it() {
    let pair = setup("ddl_reject").await;
    // The target has a relation of the index's name already: the replay fails.
    support::exec(&pair.target, "CREATE TABLE t_w (x int)").await;
    let mut lsnpipe = pair.run(&["--create-slot"]);
    let load = busy_load(&pair.db).await;
    pair.converge(&lsnpipe).await;
    support::exec(&pair.source, "CREATE INDEX t_w ON t (w)").await;
    support::exec(&pair.source, "INSERT INTO t VALUES (200, 'after', 1)").await;
    let log = lsnpipe.failure().await;
    assert!(
        log.contains("the target rejected captured DDL")
            && log.contains("CREATE INDEX t_w ON t (w)")
            && log.contains("already exists"),
        "names the command and the error: {log}"
    );
    let after = "SELECT count(*) FROM t WHERE id = 200";
    assert_eq!(
        pair.target
            .query_one(after, &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0,
        "nothing after the failed command is applied"
    );
    // Made by hand on the target, the command is skipped by its LSN and replication goes on.
    let lsn = failed_lsn(&log);
    support::exec(&pair.target, "DROP TABLE t_w; CREATE INDEX t_w ON t (w)").await;
    let mut lsnpipe = pair.run(&["--skip-ddl", &lsn]);
    pair.converge(&lsnpipe).await;

    // A query string of several statements cannot be replayed: a named stop.
    support::exec(
        &pair.source,
        "ALTER TABLE t ADD COLUMN q int; UPDATE t SET q = 1 WHERE id = 1",
    )
    .await;
    let log = lsnpipe.failure().await;
    load.stop().await;
    assert!(
        log.contains("holds 2 statements") && log.contains("--skip-ddl"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_remove_leaves_nothing_it_installed() {
    let db = support::test_dbs("ddl_remove").await;
    let source = support::connect(support::source(), &db).await;
    let objects = "SELECT (SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'lsnpipe%') \
        + (SELECT count(*) FROM pg_proc WHERE proname LIKE 'ddl_capture%') \
        + (SELECT count(*) FROM pg_namespace WHERE nspname = 'lsnpipe')";
    let count =
        async |client: &Client| -> i64 { client.query_one(objects, &[]).await.unwrap().get(0) };
    ddl("install", &db);
    // Installing again replaces, it does not fail.
    ddl("install", &db);
    assert_eq!(
        count(&source).await,
        5,
        "two triggers, two functions, a schema"
    );
    let out = ddl("remove", &db);
    assert!(out.contains("removed"), "{out}");
    assert_eq!(count(&source).await, 0, "{out}");
    // DDL still works on the source afterwards.
    support::exec(&source, "CREATE TABLE after_remove (id int)").await;
    // Removing twice is harmless.
    ddl("remove", &db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_under_for_all_tables_is_created_and_streamed_not_copied() {
    let (db, slot, source, target) = support::replicated_db(
        "ddl_create",
        "CREATE TABLE busy (id bigserial PRIMARY KEY, n int)",
        "CREATE PUBLICATION pub FOR ALL TABLES",
    )
    .await;
    ddl("install", &db);
    let run = || support::run(&db, &slot, &["--create-slot"]);
    let lsnpipe = run();
    let load = busy_load(&db).await;
    support::copy_done(&target, &slot).await;
    support::exec(
        &source,
        "CREATE TABLE fresh (id int PRIMARY KEY, v text DEFAULT 'd')",
    )
    .await;
    support::exec(
        &source,
        "INSERT INTO fresh (id) SELECT generate_series(1, 50)",
    )
    .await;
    converge(&source, &target, "fresh", &["fresh", "busy"], &lsnpipe).await;
    let log = lsnpipe.stop().await;
    assert!(
        !log.contains("copying tables that joined the publication"),
        "a table created by captured DDL is not copied: {log}"
    );
    // The next start knows the table too: it streams on, nothing copied again.
    let lsnpipe = run();
    support::exec(&source, "INSERT INTO fresh VALUES (51, 'after restart')").await;
    converge(&source, &target, "fresh", &["fresh"], &lsnpipe).await;
    load.stop().await;
    converge(&source, &target, "fresh", &["fresh", "busy"], &lsnpipe).await;
    let log = lsnpipe.stop().await;
    assert!(
        !log.contains("copying tables that joined the publication"),
        "{log}"
    );
}

/// Inserts and updates on `busy`, pgbench-like, until stopped.
async fn busy_load(db: &str) -> Load {
    Load::start(db, Duration::from_millis(2), |n| {
        format!(
            "BEGIN; INSERT INTO busy (n) VALUES ({n}); \
             UPDATE busy SET n = n + 1 WHERE id = (SELECT max(id) FROM busy) - 1; COMMIT"
        )
    })
    .await
}
