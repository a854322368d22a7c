//! The initial copy end to end: the real binary copies published tables under the slot's
//! exported snapshot while pgbench writes to the source, survives SIGKILL in the middle, creates
//! missing tables, and refuses bad input before writing anything.

use std::time::Duration;

use tokio_postgres::Client;

use crate::support::{self, Running};

const WAIT: Duration = Duration::from_secs(300);
const PGBENCH: [&str; 4] = support::PGBENCH_TABLES;

/// pgbench data (scale `scale`) on the source, the same tables without rows on the target, and
/// a publication of them (plus `extra` tables) on the source.
async fn pgbench_source(db: &str, scale: &str, extra: &[&str]) -> (Client, Client) {
    support::pgbench_to_copy(support::source(), support::target(), db, scale);
    let source = support::connect(support::source(), db).await;
    let target = support::connect(support::target(), db).await;
    let mut tables: Vec<&str> = PGBENCH.to_vec();
    tables.extend_from_slice(extra);
    support::exec(
        &source,
        &format!("CREATE PUBLICATION pub FOR TABLE {}", tables.join(", ")),
    )
    .await;
    (source, target)
}

fn load(db: &str, seconds: u32) -> std::thread::JoinHandle<std::process::Output> {
    let seconds = seconds.to_string();
    support::pgbench_load(
        support::source(),
        db,
        &["-n", "-c", "2", "-j", "2", "-T", &seconds],
    )
}

async fn copy_run_status(target: &Client, slot: &str) -> Option<String> {
    target
        .query_opt(
            "SELECT status FROM lsnpipe.copy_run WHERE slot = $1",
            &[&slot],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_under_load_has_no_gap_and_no_overlap() {
    let db = support::test_dbs("snap_load").await;
    let slot = support::unique_name("snap_load_slot");
    let (source, target) = pgbench_source(&db, "5", &[]).await;
    let load = load(&db, 15);
    // Make sure the load is running before the slot (and its snapshot) exist.
    support::wait_until("pgbench to write", WAIT, || async {
        source
            .query_one("SELECT count(*) FROM pgbench_history", &[])
            .await
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(false)
    })
    .await;
    let lsnpipe = support::run(&db, &slot, &["--create-slot", "--copy-jobs", "3"]);
    let out = load.join().unwrap();
    assert!(out.status.success(), "pgbench: {out:?}");
    support::converge(&source, &target, &PGBENCH).await;
    assert_eq!(
        copy_run_status(&target, &slot).await.as_deref(),
        Some("done")
    );
    let log = lsnpipe.stop().await;
    assert!(log.contains("initial copy finished"), "{log}");
    assert!(
        log.contains("copied table") && log.contains("pgbench_accounts"),
        "a line per table: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_the_copy_then_a_restart_finishes_it() {
    let db = support::test_dbs("snap_kill").await;
    let slot = support::unique_name("snap_kill_slot");
    let ddl = "CREATE TABLE wide (id int PRIMARY KEY, payload text)";
    let source = support::connect(support::source(), &db).await;
    support::exec(&source, ddl).await;
    support::exec(
        &source,
        "INSERT INTO wide SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 300000) g",
    )
    .await;
    let (source, target) = pgbench_source(&db, "5", &["wide"]).await;
    support::exec(&target, ddl).await;
    let mut tables = PGBENCH.to_vec();
    tables.push("wide");
    let load = load(&db, 25);
    let args = ["--create-slot", "--copy-jobs", "2"];
    let first = support::run(&db, &slot, &args);
    // Kill it once one table is complete and the others are not: the restart must keep the
    // first and copy the rest again.
    support::wait_until("one table copied, others still copying", WAIT, || async {
        let done: i64 = target
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'done') FROM lsnpipe.copy_state",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        done >= 1
    })
    .await;
    first.kill9();
    assert_eq!(
        copy_run_status(&target, &slot).await.as_deref(),
        Some("copying"),
        "killed in the middle of the copy"
    );
    let finished = "SELECT table_name || ' ' || finished_at::text FROM lsnpipe.copy_state \
                    WHERE status = 'done' ORDER BY 1";
    let done_before: Vec<String> = target
        .query(finished, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    // As the session of the killed process may still hold its temporary slot for a while: a
    // slot by the resumed copy's former fixed name does not stop the restart.
    let lingering = format!("{slot}_resync");
    support::exec(
        &source,
        &format!("SELECT pg_create_logical_replication_slot('{lingering}', 'pgoutput')"),
    )
    .await;

    let second = support::run(&db, &slot, &args);
    let out = load.join().unwrap();
    assert!(out.status.success(), "pgbench: {out:?}");
    support::converge(&source, &target, &tables).await;
    assert_eq!(
        copy_run_status(&target, &slot).await.as_deref(),
        Some("done")
    );
    let log = second.stop().await;
    assert!(
        log.contains("resuming the interrupted initial copy"),
        "{log}"
    );
    support::exec(
        &source,
        &format!("SELECT pg_drop_replication_slot('{lingering}')"),
    )
    .await;
    let done_after: Vec<String> = target
        .query(finished, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for table in &done_before {
        assert!(
            done_after.contains(table),
            "finished before the kill, so kept as it was: {table} not in {done_after:?}"
        );
    }
    let recopied: i64 = target
        .query_one(
            "SELECT count(*) FROM lsnpipe.copy_state s JOIN lsnpipe.copy_run r USING (slot) \
             WHERE s.sync_lsn > r.consistent_point",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        recopied,
        i64::try_from(tables.len() - done_before.len()).unwrap(),
        "the unfinished tables were copied at a later point"
    );
}

/// Columns (name, type, not null) and primary key of `table`, as text.
async fn shape(client: &Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || \
                    CASE WHEN a.attnotnull THEN ' not null' ELSE '' END \
             FROM pg_attribute a WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 \
               AND NOT a.attisdropped \
             UNION ALL \
             SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c \
             WHERE c.conrelid = $1::text::regclass AND c.contype IN ('p', 'u') \
             UNION ALL \
             SELECT 'identity ' || relreplident::text FROM pg_class WHERE oid = $1::text::regclass \
             UNION ALL \
             SELECT 'index on ' || pg_get_indexdef(i.indexrelid, 1, true) FROM pg_index i \
             WHERE i.indrelid = $1::text::regclass \
             ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_tables_on_an_empty_target_matches_columns_and_keys() {
    let db = support::test_dbs("snap_create").await;
    let slot = support::unique_name("snap_create_slot");
    let source = support::connect(support::source(), &db).await;
    let target = support::connect(support::target(), &db).await;
    support::exec(&source, "CREATE SCHEMA app;
             CREATE SEQUENCE app.counter;
             CREATE TABLE app.items (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 name text COLLATE \"C\" NOT NULL DEFAULT 'unnamed',
                 price numeric(10, 2),
                 made timestamptz DEFAULT now(),
                 ticket int DEFAULT nextval('app.counter'),
                 code int UNIQUE,
                 tags text[],
                 doubled int GENERATED ALWAYS AS (code * 2) STORED);
             CREATE INDEX items_name ON app.items (name);
             CREATE TABLE public.\"Mixed Case\" (a int NOT NULL, b text, PRIMARY KEY (a, b));
             CREATE TABLE public.nokey (x int, y jsonb);
             ALTER TABLE public.nokey REPLICA IDENTITY FULL;
             INSERT INTO app.items (name, price, code, tags)
                 SELECT 'n' || g, g / 3.0, g, ARRAY['a', g::text] FROM generate_series(1, 2000) g;
             INSERT INTO public.\"Mixed Case\" SELECT g, 'b' || g FROM generate_series(1, 100) g;
             INSERT INTO public.nokey SELECT g, jsonb_build_object('g', g) FROM generate_series(1, 50) g;
             CREATE PUBLICATION pub FOR TABLE app.items, public.\"Mixed Case\", public.nokey;",).await;
    let lsnpipe = support::run(&db, &slot, &["--create-slot", "--create-tables"]);
    let tables = ["app.items", "public.\"Mixed Case\"", "public.nokey"];
    support::wait_until("the copy to finish or fail", WAIT, || {
        let failed = lsnpipe.log().contains("ERROR");
        let (target, slot) = (&target, &slot);
        async move { failed || copy_run_status(target, slot).await.as_deref() == Some("done") }
    })
    .await;
    assert!(!lsnpipe.log().contains("ERROR"), "{}", lsnpipe.log());
    support::exec(
        &source,
        "INSERT INTO app.items (name, code) VALUES ('after', 5000)",
    )
    .await;
    support::converge(&source, &target, &tables).await;
    for table in tables {
        let expected = shape(&source, table).await;
        assert_eq!(shape(&target, table).await, expected, "{table}");
    }
    let default: Option<String> = target
        .query_one(
            "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef \
             WHERE adrelid = 'app.items'::regclass AND adnum = 2",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(default.as_deref(), Some("'unnamed'::text"));
    // The sequence exists only on the source, so its default stays there; the target takes
    // identity values from the source.
    let (ticket_default, identity): (bool, String) = target
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attrdef WHERE adrelid = 'app.items'::regclass \
                 AND adnum = 5), \
                 (SELECT attidentity::text FROM pg_attribute \
                  WHERE attrelid = 'app.items'::regclass AND attname = 'id')",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(!ticket_default);
    assert_eq!(identity, "d");
    lsnpipe.stop().await;
}

/// Nothing of lsnpipe's on the target and no rows in `tables`.
async fn assert_untouched(target: &Client, tables: &[&str]) {
    let schema: bool = target
        .query_one("SELECT to_regnamespace('lsnpipe') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(schema, "no lsnpipe schema on the target");
    for table in tables {
        let rows: i64 = target
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "{table} on the target");
    }
}

/// `open_t` and `secret` with ten rows each on the source, empty on the target, published.
async fn two_tables(prefix: &str) -> (String, String, Client, Client) {
    let ddl = "CREATE TABLE open_t (id int PRIMARY KEY); CREATE TABLE secret (id int PRIMARY KEY)";
    let rows = "INSERT INTO open_t SELECT generate_series(1, 10);
                INSERT INTO secret SELECT generate_series(1, 10);
                CREATE PUBLICATION pub FOR TABLE open_t, secret;";
    support::replicated_db(prefix, ddl, rows).await
}

/// `run --create-slot` over [`two_tables`] as a new source role set up by `grants` (`{role}`
/// stands for its name): it must stop before writing anything, naming `secret` and not
/// `open_t`, with `reason` in its message, and leave no slot.
async fn refused_for_secret_as_role(prefix: &str, grants: &str, reason: &str) {
    let (db, slot, source, target) = two_tables(prefix).await;
    let role = support::unique_name(&format!("{prefix}_role"));
    support::exec(&source, &grants.replace("{role}", &role)).await;
    let source_conn = format!(
        "host=127.0.0.1 port={} user={role} dbname={db}",
        support::source().port
    );
    let mut cmd = support::lsnpipe_command();
    cmd.arg("run")
        .args(["--source", &source_conn])
        .args(["--target", &support::target().conn_string(&db)])
        .args(["--publication", "pub", "--slot", &slot])
        .args(["--metrics-listen", "off", "--create-slot"]);
    let log = support::run_expecting_error(cmd).await;
    assert!(
        log.contains(reason) && log.contains("\"public\".\"secret\""),
        "{log}"
    );
    assert!(
        !log.contains("\"public\".\"open_t\""),
        "only that one: {log}"
    );
    assert_untouched(&target, &["open_t", "secret"]).await;
    assert!(
        !support::slot_exists(&source, &slot).await,
        "no slot left behind"
    );
}

#[tokio::test]
async fn a_table_the_role_cannot_read_is_named_and_the_target_untouched() {
    refused_for_secret_as_role(
        "snap_noread",
        "CREATE ROLE {role} LOGIN REPLICATION; GRANT SELECT ON open_t TO {role};",
        "cannot read",
    )
    .await;
}

/// Row-level security that hides rows from the source role would make the copy miss them
/// (the stream carries every row): refused before anything is written, naming the table.
#[tokio::test]
async fn a_table_whose_rows_row_security_hides_is_named_and_the_target_untouched() {
    refused_for_secret_as_role(
        "snap_rls",
        "CREATE ROLE {role} LOGIN REPLICATION; GRANT SELECT ON open_t, secret TO {role};
         ALTER TABLE secret ENABLE ROW LEVEL SECURITY;
         CREATE POLICY low_ids ON secret FOR SELECT TO {role} USING (id < 5);",
        "row-level security",
    )
    .await;
}

#[tokio::test]
async fn a_snapshot_asked_for_an_existing_slot_is_refused_and_the_target_untouched() {
    let (db, slot, source, target) = two_tables("snap_slotexists").await;
    support::create_slot(&source, &slot).await;
    let log = support::run_expecting_error(support::run_command(&db, &slot, &["--snapshot"])).await;
    assert!(
        log.contains(&format!("slot \"{slot}\" already exists")),
        "{log}"
    );
    assert_untouched(&target, &["open_t", "secret"]).await;
}

#[tokio::test]
async fn a_non_empty_target_table_is_named_and_left_alone() {
    let (db, slot, _source, target) = two_tables("snap_notempty").await;
    support::exec(&target, "INSERT INTO secret VALUES (42)").await;
    let log =
        support::run_expecting_error(support::run_command(&db, &slot, &["--create-slot"])).await;
    assert!(
        log.contains("already hold rows") && log.contains("\"public\".\"secret\""),
        "{log}"
    );
    let rows: i64 = target
        .query_one("SELECT count(*) FROM secret WHERE id = 42", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn create_slot_with_a_slot_already_there_streams_without_copying() {
    let (db, slot, source, target) = two_tables("snap_noop").await;
    support::create_slot(&source, &slot).await;
    // The target already holds the rows (copied by other means).
    support::exec(
        &target,
        "INSERT INTO open_t SELECT generate_series(1, 10);
             INSERT INTO secret SELECT generate_series(1, 10);",
    )
    .await;
    let lsnpipe = support::run(&db, &slot, &["--create-slot"]);
    support::exec(&source, "INSERT INTO open_t VALUES (11)").await;
    support::converge(&source, &target, &["open_t", "secret"]).await;
    let log = lsnpipe.stop().await;
    assert!(!log.contains("initial copy"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_copy_with_create_tables_builds_keys_of_tables_finished_before_the_kill() {
    let db = support::test_dbs("snap_resume_keys").await;
    let slot = support::unique_name("snap_resume_keys_slot");
    let source = support::connect(support::source(), &db).await;
    let target = support::connect(support::target(), &db).await;
    support::exec(
        &source,
        "CREATE TABLE small (id int PRIMARY KEY, code int UNIQUE);
             INSERT INTO small SELECT g, g FROM generate_series(1, 10) g;
             CREATE TABLE wide (id int PRIMARY KEY, payload text);
             INSERT INTO wide SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
             CREATE PUBLICATION pub FOR TABLE small, wide;",
    )
    .await;
    // `wide` exists on the target without its key, and a lock that lets lsnpipe's checks read
    // it but keeps its COPY waiting: `small` finishes in the first run, `wide` cannot.
    support::exec(&target, "CREATE TABLE wide (id int, payload text)").await;
    let blocker = support::connect(support::target(), &db).await;
    support::exec(&blocker, "BEGIN; LOCK TABLE wide IN SHARE MODE").await;
    let args = ["--create-slot", "--create-tables", "--copy-jobs", "2"];
    let command = || support::run_command(&db, &slot, &args);
    let first = Running::spawn(command());
    support::wait_until("small copied, wide still copying", WAIT, || async {
        target
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'done' AND table_name = 'small') = 1 \
                    AND count(*) FILTER (WHERE status = 'pending') > 0 \
                 FROM lsnpipe.copy_state",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(false)
    })
    .await;
    first.kill9();
    support::exec(&blocker, "COMMIT").await;
    // A table that joins the publication meanwhile is not part of the interrupted run: it is
    // created and copied once the run is done, not given keys before it exists.
    support::exec(
        &source,
        "CREATE TABLE later (id int PRIMARY KEY);
             INSERT INTO later SELECT generate_series(1, 100);
             ALTER PUBLICATION pub ADD TABLE later;",
    )
    .await;
    let second = Running::spawn(command());
    support::wait_until("the copy to finish", WAIT, || async {
        copy_run_status(&target, &slot).await.as_deref() == Some("done")
    })
    .await;
    support::exec(&source, "INSERT INTO later VALUES (101)").await;
    support::wait_until("later on the target", WAIT, || async {
        target
            .query_one("SELECT to_regclass('public.later') IS NOT NULL", &[])
            .await
            .is_ok_and(|r| r.get(0))
    })
    .await;
    support::converge(&source, &target, &["small", "wide", "later"]).await;
    second.stop().await;
    assert_eq!(shape(&target, "small").await, shape(&source, "small").await);
    assert_eq!(shape(&target, "wide").await, shape(&source, "wide").await);
}
