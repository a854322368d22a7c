//! The applier end to end without the replication socket: changes made on the real source are
//! read from a pgoutput slot with SQL, decoded, applied to the target, and the two databases are
//! compared row by row.

use bytes::Bytes;
use lsnpipe::Lsn;
use lsnpipe::apply::{Applier, ApplyError, GroupLimits, SchemaChanges};
use lsnpipe::error_policy::{self, Action};
use lsnpipe::pgoutput::{self, ColumnValue, DecodeContext, LogicalMessage};
use tokio_postgres::Client;

use crate::support;

/// One source database with a publication and a slot, and the same-named target database.
struct Case {
    db: String,
    slot: String,
    source: Client,
    target: Client,
    /// The cluster of `target` (the shared one unless a test needs its own settings).
    target_cluster: support::ClusterRef,
}

impl Case {
    /// `ddl` runs on both sides; the publication covers every table.
    async fn new(prefix: &str, ddl: &str) -> Case {
        Case::with(prefix, ddl, ddl).await
    }

    async fn with(prefix: &str, source_ddl: &str, target_ddl: &str) -> Case {
        Case::on(support::target(), prefix, source_ddl, target_ddl).await
    }

    /// A case whose target database is on `target_cluster`.
    async fn on(
        target_cluster: &support::ClusterRef,
        prefix: &str,
        source_ddl: &str,
        target_ddl: &str,
    ) -> Case {
        let db = support::unique_name(prefix);
        support::create_db(support::source(), &db).await;
        support::create_db(target_cluster, &db).await;
        let slot = support::unique_name(&format!("{prefix}_slot"));
        let source = support::connect(support::source(), &db).await;
        let target = support::connect(target_cluster, &db).await;
        source.batch_execute(source_ddl).await.expect("test setup");
        target.batch_execute(target_ddl).await.expect("test setup");
        source
            .batch_execute("CREATE PUBLICATION pub FOR ALL TABLES")
            .await
            .expect("test setup");
        source
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await
            .expect("test setup");
        Case {
            db,
            slot,
            source,
            target,
            target_cluster: target_cluster.clone(),
        }
    }

    /// Consume what the slot has and decode it.
    async fn changes(&self) -> Vec<LogicalMessage> {
        self.read("pg_logical_slot_get_binary_changes").await
    }

    /// Read what the slot has without consuming it.
    async fn peek(&self) -> Vec<LogicalMessage> {
        self.read("pg_logical_slot_peek_binary_changes").await
    }

    /// Consume what the slot has, with values in binary format where the type allows.
    async fn binary_changes(&self) -> Vec<LogicalMessage> {
        self.read_with("pg_logical_slot_get_binary_changes", ", 'binary', 'true'")
            .await
    }

    async fn read(&self, function: &str) -> Vec<LogicalMessage> {
        self.read_with(function, "").await
    }

    async fn read_with(&self, function: &str, options: &str) -> Vec<LogicalMessage> {
        let rows = self
            .source
            .query(
                &format!(
                    "SELECT data FROM {function}($1, NULL, NULL, \
                     'proto_version', '1', 'publication_names', 'pub'{options})"
                ),
                &[&self.slot],
            )
            .await
            .expect("test setup");
        rows.iter()
            .map(|row| {
                let data: Vec<u8> = row.get(0);
                pgoutput::decode(Bytes::from(data), DecodeContext::default()).expect("test setup")
            })
            .collect()
    }

    async fn applier(&self) -> Applier {
        self.applier_with(GroupLimits::default()).await
    }

    /// An applier whose groups end only when caught up (no time or size limit), so a test can
    /// count target commits.
    async fn applier_one_group(&self) -> Applier {
        self.applier_with(GroupLimits {
            max_transactions: u64::MAX,
            max_rows: u64::MAX,
            max_age: std::time::Duration::from_secs(3600),
        })
        .await
    }

    async fn applier_with(&self, limits: GroupLimits) -> Applier {
        let client = support::connect(&self.target_cluster, &self.db).await;
        Applier::with_limits(client, &self.slot, limits)
            .await
            .expect("test setup")
    }

    /// Apply `messages`, telling the applier it is caught up only at the last Commit (so
    /// transactions are grouped). Returns the last durable LSN reported.
    async fn apply(
        &self,
        applier: &mut Applier,
        messages: Vec<LogicalMessage>,
    ) -> Result<Option<Lsn>, ApplyError> {
        let last_commit = messages
            .iter()
            .rposition(|m| matches!(m, LogicalMessage::Commit(_)));
        let mut durable = None;
        for (i, message) in messages.into_iter().enumerate() {
            let is_commit = matches!(message, LogicalMessage::Commit(_));
            applier.apply(message).await?;
            if is_commit {
                if let Some(lsn) = applier.commit_if(Some(i) == last_commit).await? {
                    durable = Some(lsn);
                }
            }
        }
        Ok(durable)
    }

    /// Apply everything the slot has with a fresh applier; returns the applier.
    async fn sync(&self) -> Applier {
        let mut applier = self.applier().await;
        let messages = self.changes().await;
        self.apply(&mut applier, messages)
            .await
            .expect("test setup");
        applier
    }

    /// Apply what the slot has (without consuming it) with schema changes off, expecting a
    /// missing column; returns its table and name.
    async fn missing_column_with_schema_changes_off(&self) -> (String, String) {
        let mut applier = self.applier().await;
        applier.set_schema_changes(SchemaChanges::Off);
        match self.apply(&mut applier, self.peek().await).await {
            Err(ApplyError::MissingColumn { table, column }) => {
                (table.to_string(), column.to_string())
            }
            other => panic!("expected MissingColumn, got {other:?}"),
        }
    }

    async fn rows(client: &Client, table: &str) -> Vec<String> {
        client
            .query(
                &format!("SELECT whole_row::text FROM {table} whole_row ORDER BY 1"),
                &[],
            )
            .await
            .expect("test setup")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// The table is identical on both sides; returns its rows.
    async fn assert_same(&self, table: &str) -> Vec<String> {
        let source = Case::rows(&self.source, table).await;
        let target = Case::rows(&self.target, table).await;
        assert_eq!(source, target, "{table}: source vs target");
        source
    }

    async fn count(&self, client: &Client, table: &str) -> i64 {
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("test setup")
            .get(0)
    }

    async fn stored_progress(&self) -> Option<String> {
        self.target
            .query_opt(
                "SELECT lsn::text FROM lsnpipe.progress WHERE slot = $1",
                &[&self.slot],
            )
            .await
            .expect("test setup")
            .map(|r| r.get(0))
    }
}

fn commits(messages: &[LogicalMessage]) -> Vec<Lsn> {
    messages
        .iter()
        .filter_map(|m| match m {
            LogicalMessage::Commit(c) => Some(c.end_lsn),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn inserts_in_many_sizes_arrive() {
    let case = Case::new("apply_ins", "CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    // 1000 rows in one transaction: several full multi-row statements and each smaller size.
    for statement in [
        "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000) g",
        "INSERT INTO t VALUES (1001, 'single')",
        "INSERT INTO t VALUES (1002, NULL), (1003, 'x')",
    ] {
        case.source.batch_execute(statement).await.unwrap();
    }
    let mut applier = case.sync().await;
    let rows = case.assert_same("t").await;
    assert_eq!(rows.len(), 1003);
    let stats = applier.stats();
    assert_eq!((stats.inserts, stats.transactions), (1003, 3));
    // Everything was committed: nothing is pending.
    assert_eq!(applier.commit_if(true).await.unwrap(), None);
}

#[tokio::test]
async fn updates_including_key_changes_and_deletes() {
    let case = Case::new(
        "apply_upd",
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int)",
    )
    .await;
    case.source
        .batch_execute(
            "INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 20) g;
             UPDATE t SET v = 'updated' WHERE id % 2 = 0;
             UPDATE t SET id = id + 100 WHERE id <= 3;
             UPDATE t SET id = 200, v = 'moved and changed' WHERE id = 4;
             UPDATE t SET n = NULL WHERE id = 5;
             DELETE FROM t WHERE id IN (6, 7, 101);
             INSERT INTO t VALUES (6, 'back', 6);",
        )
        .await
        .unwrap();
    let messages = case.peek().await;
    let key_changes = messages
        .iter()
        .filter(|m| matches!(m, LogicalMessage::Update(u) if u.old.is_some()))
        .count();
    assert_eq!(
        key_changes, 4,
        "the primary key changes are sent with old keys"
    );
    let applier = case.sync().await;
    let rows = case.assert_same("t").await;
    assert_eq!(rows.len(), 18);
    assert_eq!(applier.stats().rows_not_found, 0);
}

#[tokio::test]
async fn truncate_with_cascade_and_restart_identity() {
    let ddl = "CREATE TABLE parent (id serial PRIMARY KEY, v text);
               CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent (id));
               CREATE TABLE a (id int PRIMARY KEY);
               CREATE TABLE b (id int PRIMARY KEY);";
    let case = Case::new("apply_trunc", ddl).await;
    case.source
        .batch_execute(
            "INSERT INTO parent (v) SELECT 'p' || g FROM generate_series(1, 5) g;
             INSERT INTO child (parent_id) SELECT id FROM parent;
             INSERT INTO a VALUES (1), (2); INSERT INTO b VALUES (1);",
        )
        .await
        .unwrap();
    let applier = case.sync().await;
    drop(applier);
    case.assert_same("child").await;
    // The target's own sequence has moved on; RESTART IDENTITY must reset it.
    case.target
        .batch_execute("SELECT setval('parent_id_seq', 100)")
        .await
        .unwrap();
    case.source
        .batch_execute(
            "TRUNCATE parent RESTART IDENTITY CASCADE;
             INSERT INTO parent (v) VALUES ('after');
             BEGIN; INSERT INTO a VALUES (3); TRUNCATE a, b; INSERT INTO b VALUES (9); COMMIT;",
        )
        .await
        .unwrap();
    let messages = case.peek().await;
    let truncates: Vec<(usize, bool, bool)> = messages
        .iter()
        .filter_map(|m| match m {
            LogicalMessage::Truncate(t) => {
                Some((t.relation_count(), t.cascade(), t.restart_identity()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(truncates, [(2, true, true), (2, false, false)]);
    case.sync().await;
    for table in ["parent", "child", "a", "b"] {
        case.assert_same(table).await;
    }
    let (last_value, is_called): (i64, bool) = {
        let row = case
            .target
            .query_one("SELECT last_value, is_called FROM parent_id_seq", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((last_value, is_called), (1, false), "sequence restarted");
    assert_eq!(case.count(&case.target, "child").await, 0);
}

#[tokio::test]
async fn replica_identity_using_index() {
    let ddl = "CREATE TABLE t (id int, code text NOT NULL, v text);
               CREATE UNIQUE INDEX t_code ON t (code);
               ALTER TABLE t REPLICA IDENTITY USING INDEX t_code;";
    let case = Case::new("apply_ri_index", ddl).await;
    case.source
        .batch_execute(
            "INSERT INTO t VALUES (1, 'a', 'x'), (1, 'b', 'y'), (2, 'c', 'z');
             UPDATE t SET v = 'changed' WHERE code = 'a';
             UPDATE t SET code = 'bb' WHERE code = 'b';
             DELETE FROM t WHERE code = 'c';",
        )
        .await
        .unwrap();
    let applier = case.sync().await;
    let rows = case.assert_same("t").await;
    assert_eq!(rows, ["(1,a,changed)", "(1,bb,y)"]);
    assert_eq!(applier.stats().rows_not_found, 0);
}

#[tokio::test]
async fn replica_identity_full_changes_exactly_one_of_identical_rows() {
    let ddl = "CREATE TABLE dup (a int, b text, j json, p point, f float8);
               ALTER TABLE dup REPLICA IDENTITY FULL;";
    let case = Case::new("apply_ri_full", ddl).await;
    case.source
        .batch_execute(
            "INSERT INTO dup VALUES (1, 'x', '{\"k\": 1}', '(1,2)', 'NaN'),
                                    (1, 'x', '{\"k\": 1}', '(1,2)', 'NaN'),
                                    (2, NULL, NULL, NULL, NULL), (2, NULL, NULL, NULL, NULL),
                                    (3, 'z', '[1, 2]', '(0,0)', 1.5);
             UPDATE dup SET b = 'y' WHERE ctid = (SELECT ctid FROM dup WHERE a = 1 LIMIT 1);
             DELETE FROM dup WHERE ctid = (SELECT ctid FROM dup WHERE a = 2 LIMIT 1);
             DELETE FROM dup WHERE a = 3;",
        )
        .await
        .unwrap();
    let applier = case.sync().await;
    let rows = case.assert_same("dup").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter().any(|r| r.starts_with("(1,x,")) && rows.iter().any(|r| r.starts_with("(1,y,"))
    );
    assert_eq!(applier.stats().rows_not_found, 0);
}

#[tokio::test]
async fn replica_identity_nothing_takes_inserts() {
    let ddl = "CREATE TABLE events (at int, what text);
               ALTER TABLE events REPLICA IDENTITY NOTHING;";
    let case = Case::new("apply_ri_nothing", ddl).await;
    case.source
        .batch_execute("INSERT INTO events SELECT g, 'e' FROM generate_series(1, 50) g")
        .await
        .unwrap();
    case.sync().await;
    assert_eq!(case.assert_same("events").await.len(), 50);
}

#[tokio::test]
async fn unchanged_toast_values_are_left_as_they_are() {
    let ddl = "CREATE TABLE docs (id int PRIMARY KEY, big text, n int);
               ALTER TABLE docs ALTER COLUMN big SET STORAGE EXTERNAL;
               CREATE TABLE docs_full (id int, big text, n int);
               ALTER TABLE docs_full ALTER COLUMN big SET STORAGE EXTERNAL;
               ALTER TABLE docs_full REPLICA IDENTITY FULL;";
    let case = Case::new("apply_toast", ddl).await;
    case.source
        .batch_execute(
            "INSERT INTO docs SELECT 1, string_agg(md5(random()::text), ''), 0
               FROM generate_series(1, 200);
             INSERT INTO docs_full SELECT * FROM docs;",
        )
        .await
        .unwrap();
    case.sync().await;
    case.source
        .batch_execute("UPDATE docs SET n = n + 1; UPDATE docs_full SET n = n + 1;")
        .await
        .unwrap();
    let messages = case.peek().await;
    let unchanged = messages
        .iter()
        .filter(|m| {
            matches!(m, LogicalMessage::Update(u)
                if u.new.get(1) == Some(ColumnValue::UnchangedToast))
        })
        .count();
    assert_eq!(
        unchanged, 2,
        "both updates carry the big value as unchanged TOAST"
    );
    case.sync().await;
    for table in ["docs", "docs_full"] {
        let rows = case.assert_same(table).await;
        assert_eq!(rows.len(), 1);
        assert!(rows[0].len() > 6_400 && rows[0].ends_with(",1)"), "{table}");
    }
}

#[tokio::test]
async fn values_of_many_types_and_nulls() {
    let ddl = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
               CREATE DOMAIN posint AS int CHECK (VALUE > 0);
               CREATE TABLE typed (
                 id int PRIMARY KEY, i2 int2, i4 int4, i8 int8, num numeric, f4 real, f8 float8,
                 t text, b bytea, j jsonb, arr int[], tarr text[], u uuid, ts timestamptz,
                 iv interval, m mood, d posint, js json, p point, c char(3), bits bit(3),
                 vc varchar(4));";
    let case = Case::new("apply_types", ddl).await;
    case.source
        .batch_execute(
            r#"INSERT INTO typed VALUES
             (1, -32768, 2147483647, -9223372036854775808, 12345678901234567890.123456789,
              'NaN', 'Infinity', E'it''s "quoted" \\ back\\slash\n\tünïcødé 🎉', '\x00ff10',
              '{"a": [1, 2, {"b": null}], "é": "\"q\""}', '{1,NULL,3}',
              '{"a b","c,d","e\"f",NULL,"NULL"}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
              '2026-11-25 13:00:00.123456+02', '1 year 2 mons 3 days 04:05:06.789', 'happy',
              7, '{"x":1,  "y" : 2}', '(1.5,-2)', 'abc', B'101', 'abcd'),
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
              NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
             (3, 0, 0, 0, '-0.000001', '-Infinity', '-0', '', '\x', '{}', '{}', '{}',
              '00000000-0000-0000-0000-000000000000', '-infinity', '-1 days -00:00:01', 'sad',
              1, '[]', '(0,0)', 'x', B'011', '');
             UPDATE typed SET t = 'changed', f8 = 'NaN', num = 'NaN' WHERE id = 3;
             UPDATE typed SET i4 = NULL, j = NULL WHERE id = 1;
             UPDATE typed SET m = 'ok', arr = '{{1,2},{3,4}}' WHERE id = 2;
             UPDATE typed SET t = t || '!', i2 = i2 + 1;"#,
        )
        .await
        .unwrap();
    case.sync().await;
    let rows = case.assert_same("typed").await;
    assert_eq!(rows.len(), 3);
    // Compare typed values too, not only their text, for the trickiest ones.
    let q = "SELECT f4::text, f8::text, num::text, b, iv::text FROM typed ORDER BY id";
    let s = case.source.query(q, &[]).await.unwrap();
    let t = case.target.query(q, &[]).await.unwrap();
    for (s, t) in s.iter().zip(&t) {
        let s: (Option<String>, Option<String>, Option<Vec<u8>>) = (s.get(1), s.get(2), s.get(3));
        let t: (Option<String>, Option<String>, Option<Vec<u8>>) = (t.get(1), t.get(2), t.get(3));
        assert_eq!(s, t);
    }
}

#[tokio::test]
async fn quoted_identifiers_and_several_schemas() {
    let ddl = r#"CREATE SCHEMA "Sch ""1""";
                 CREATE SCHEMA other;
                 CREATE TABLE "Sch ""1"""."Weird ""Table""" ("Id" int PRIMARY KEY, "select" text, "Mixed Case" int);
                 CREATE TABLE other."Weird ""Table""" ("Id" int PRIMARY KEY, "select" text, "Mixed Case" int);"#;
    // The target's columns are in another order: mapping is by name.
    let target_ddl = r#"CREATE SCHEMA "Sch ""1""";
                 CREATE SCHEMA other;
                 CREATE TABLE "Sch ""1"""."Weird ""Table""" ("Mixed Case" int, "select" text, "Id" int PRIMARY KEY);
                 CREATE TABLE other."Weird ""Table""" ("Id" int PRIMARY KEY, "select" text, "Mixed Case" int);"#;
    let case = Case::with("apply_idents", ddl, target_ddl).await;
    case.source
        .batch_execute(
            r#"INSERT INTO "Sch ""1"""."Weird ""Table""" VALUES (1, 'a', 10), (2, 'b', 20);
               INSERT INTO other."Weird ""Table""" VALUES (1, 'other', 1);
               UPDATE "Sch ""1"""."Weird ""Table""" SET "select" = 'sel' WHERE "Id" = 1;
               DELETE FROM "Sch ""1"""."Weird ""Table""" WHERE "Id" = 2;
               TRUNCATE other."Weird ""Table""";
               INSERT INTO other."Weird ""Table""" VALUES (5, 'five', 5);"#,
        )
        .await
        .unwrap();
    case.sync().await;
    let q = r#"SELECT "Id", "select", "Mixed Case" FROM "Sch ""1"""."Weird ""Table""""#;
    let row = case.target.query_one(q, &[]).await.unwrap();
    let row: (i32, String, i32) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(row, (1, "sel".to_owned(), 10));
    let rows = case.assert_same(r#"other."Weird ""Table""""#).await;
    assert_eq!(rows, ["(5,five,5)"]);
}

#[tokio::test]
async fn rolled_back_transactions_and_savepoints_never_appear() {
    let case = Case::new("apply_rollback", "CREATE TABLE t (id int PRIMARY KEY)").await;
    case.source
        .batch_execute(
            "BEGIN; INSERT INTO t VALUES (1); ROLLBACK;
             BEGIN; INSERT INTO t VALUES (2); SAVEPOINT s; INSERT INTO t VALUES (3);
               ROLLBACK TO SAVEPOINT s; INSERT INTO t VALUES (4);
               SAVEPOINT s2; INSERT INTO t VALUES (5); RELEASE SAVEPOINT s2; COMMIT;",
        )
        .await
        .unwrap();
    case.sync().await;
    assert_eq!(case.assert_same("t").await, ["(2)", "(4)", "(5)"]);
}

#[tokio::test]
async fn interleaved_transactions_land_in_commit_order() {
    let case = Case::new(
        "apply_interleave",
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
    )
    .await;
    let other = support::connect(support::source(), &case.db).await;
    // A starts first but commits last, and changes the row B inserted: applying A before B
    // would find nothing to update.
    case.source
        .batch_execute("BEGIN; INSERT INTO t VALUES (1, 'by a')")
        .await
        .unwrap();
    other
        .batch_execute("BEGIN; INSERT INTO t VALUES (2, 'by b'); COMMIT")
        .await
        .unwrap();
    case.source
        .batch_execute("UPDATE t SET v = 'b, then a' WHERE id = 2; COMMIT")
        .await
        .unwrap();
    let messages = case.peek().await;
    let begins: Vec<Lsn> = messages
        .iter()
        .filter_map(|m| match m {
            LogicalMessage::Begin(b) => Some(b.final_lsn),
            _ => None,
        })
        .collect();
    assert_eq!(begins.len(), 2);
    assert!(begins[0] < begins[1], "stream is in commit order");
    let applier = case.sync().await;
    assert_eq!(
        case.assert_same("t").await,
        ["(1,\"by a\")", "(2,\"b, then a\")"]
    );
    assert_eq!(applier.stats().rows_not_found, 0);
}

#[tokio::test]
async fn reapplying_a_stream_skips_what_was_applied() {
    // No key: a doubled insert would show as a duplicate row.
    let case = Case::new("apply_once", "CREATE TABLE log (v int)").await;
    for i in 0..5 {
        case.source
            .execute(
                "INSERT INTO log SELECT $1::int * 10 + g FROM generate_series(1, 3) g",
                &[&i],
            )
            .await
            .unwrap();
    }
    let messages = case.peek().await;
    let ends = commits(&messages);
    assert_eq!(ends.len(), 5);

    // First run: only the first three transactions, then "crash".
    let third = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m, LogicalMessage::Commit(_)))
        .nth(2)
        .map(|(i, _)| i)
        .unwrap();
    let mut first = case.applier().await;
    assert_eq!(first.applied_lsn(), Lsn::ZERO);
    let durable = case
        .apply(&mut first, messages[..=third].to_vec())
        .await
        .unwrap();
    assert_eq!(durable, Some(ends[2]));
    drop(first);
    assert_eq!(case.count(&case.target, "log").await, 9);
    assert_eq!(case.stored_progress().await, Some(ends[2].to_string()));

    // Second run from the very start, as a source re-sending everything would.
    let mut second = case.applier().await;
    assert_eq!(second.applied_lsn(), ends[2]);
    let durable = case.apply(&mut second, messages.clone()).await.unwrap();
    assert_eq!(durable, Some(ends[4]));
    assert_eq!(second.stats().skipped_transactions, 3);
    assert_eq!(case.assert_same("log").await.len(), 15);

    // Third run: everything is skipped, nothing is committed.
    let mut third_run = case.applier().await;
    assert_eq!(case.apply(&mut third_run, messages).await.unwrap(), None);
    assert_eq!(case.count(&case.target, "log").await, 15);
    assert_eq!(case.stored_progress().await, Some(ends[4].to_string()));
}

#[tokio::test]
async fn group_commit_reports_only_durable_commits() {
    let case = Case::new("apply_group", "CREATE TABLE t (id int PRIMARY KEY)").await;
    for i in 1..=12 {
        case.source
            .execute("INSERT INTO t VALUES ($1)", &[&i])
            .await
            .unwrap();
    }
    let messages = case.changes().await;
    let ends = commits(&messages);
    let limits = GroupLimits {
        max_transactions: 5,
        max_age: std::time::Duration::from_secs(3600),
        ..GroupLimits::default()
    };
    let mut applier = case.applier_with(limits).await;
    let mut reported = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        let is_commit = matches!(message, LogicalMessage::Commit(_));
        applier.apply(message).await.unwrap();
        if is_commit {
            if let Some(lsn) = applier.commit_if(false).await.unwrap() {
                reported.push(lsn);
                // What was reported is visible to others.
                assert_eq!(
                    case.stored_progress().await,
                    Some(lsn.to_string()),
                    "at {i}"
                );
            }
        }
    }
    assert_eq!(reported, [ends[4], ends[9]]);
    // Two transactions are still open in the target transaction, invisible to others.
    assert_eq!(case.count(&case.target, "t").await, 10);
    assert!(!applier.is_idle());
    assert_eq!(applier.commit_if(true).await.unwrap(), Some(ends[11]));
    assert!(applier.is_idle());
    assert_eq!(applier.applied_lsn(), ends[11]);
    case.assert_same("t").await;
}

#[tokio::test]
async fn missing_target_table_is_named_and_nothing_is_applied() {
    let source_ddl = "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);";
    let case = Case::with(
        "apply_missing",
        source_ddl,
        "CREATE TABLE a (id int PRIMARY KEY)",
    )
    .await;
    case.source
        .batch_execute("BEGIN; INSERT INTO a VALUES (1); INSERT INTO b VALUES (1); COMMIT;")
        .await
        .unwrap();
    let mut applier = case.applier().await;
    let err = case
        .apply(&mut applier, case.peek().await)
        .await
        .unwrap_err();
    match &err {
        ApplyError::MissingTable { table } => assert_eq!(table, "\"public\".\"b\""),
        other => panic!("expected MissingTable, got {other:?}"),
    }
    assert!(err.to_string().contains("create it on the target"), "{err}");
    assert_eq!(error_policy::apply(&err), Action::Operator);
    assert_eq!(
        case.count(&case.target, "a").await,
        0,
        "the group was rolled back"
    );
    assert_eq!(case.stored_progress().await, None);
    assert_eq!(applier.applied_lsn(), Lsn::ZERO);

    // After the operator creates b without its column, the error names the column (with
    // schema changes off; see a_column_added_on_the_source_is_added_on_the_target otherwise).
    case.target
        .batch_execute("CREATE TABLE b (other int)")
        .await
        .unwrap();
    let (table, column) = case.missing_column_with_schema_changes_off().await;
    assert_eq!(
        (table.as_str(), column.as_str()),
        ("\"public\".\"b\"", "id")
    );
    assert_eq!(case.count(&case.target, "a").await, 0);

    // Once the target matches, the same stream applies.
    case.target
        .batch_execute("ALTER TABLE b ADD COLUMN id int PRIMARY KEY")
        .await
        .unwrap();
    let mut applier = case.applier().await;
    case.apply(&mut applier, case.peek().await).await.unwrap();
    case.assert_same("a").await;
    assert_eq!(case.count(&case.target, "b").await, 1);
}

#[tokio::test]
async fn data_errors_name_table_and_operation_but_no_values() {
    let case = Case::with(
        "apply_data_err",
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        // Not a narrower type: schema changes would widen it to the source's.
        "CREATE TABLE t (id int PRIMARY KEY, v text CHECK (length(v) <= 3))",
    )
    .await;
    case.source
        .batch_execute("INSERT INTO t VALUES (1, 'ok'); INSERT INTO t VALUES (2, 'secret-value')")
        .await
        .unwrap();
    let mut applier = case.applier().await;
    let err = case
        .apply(&mut applier, case.changes().await)
        .await
        .unwrap_err();
    let text = format!(
        "{err} / {:?}",
        std::error::Error::source(&err).map(|s| s.to_string())
    );
    assert!(matches!(err, ApplyError::Data { .. }), "{text}");
    assert!(
        text.contains("insert on \"public\".\"t\"") && text.contains("23514"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
    assert_eq!(case.count(&case.target, "t").await, 0);
}

#[tokio::test]
async fn a_large_transaction_streams_through() {
    let case = Case::new(
        "apply_large",
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY, n int);",
    )
    .await;
    case.source
        .batch_execute(
            "BEGIN;
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 30000) g;
             INSERT INTO u SELECT g, 0 FROM generate_series(1, 2000) g;
             UPDATE u SET n = n + 1;
             DELETE FROM t WHERE id % 3 = 0;
             COMMIT;",
        )
        .await
        .unwrap();
    case.sync().await;
    assert_eq!(case.assert_same("t").await.len(), 20000);
    case.assert_same("u").await;
}

/// Catch-up speed on a pgbench stream: `LSNPIPE_BENCH_TX` transactions per client (4 clients)
/// are made on the source, read from the slot, then applied in one timed run.
/// Run with `cargo test --release --test it apply::bench_pgbench_catch_up -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "benchmark; run explicitly"]
async fn bench_pgbench_catch_up() {
    let per_client: u32 = support::env("LSNPIPE_BENCH_TX", 2_500);
    let db = support::test_dbs("apply_bench").await;
    let bindir = lsnpipe::cluster::find_bindir().unwrap();
    let pgbench = |cluster: &support::ClusterRef, db: &str, args: &[&str]| {
        let status = std::process::Command::new(bindir.join("pgbench"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(cluster.port.to_string())
            .args(args)
            .arg(db)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pgbench {args:?}");
    };
    let native_db = format!("{db}_native");
    support::create_db(support::target(), &native_db).await;
    pgbench(support::source(), &db, &["-i", "-s", "1", "-q"]);
    pgbench(support::target(), &db, &["-i", "-s", "1", "-q"]);
    pgbench(support::target(), &native_db, &["-i", "-s", "1", "-q"]);
    let source = support::connect(support::source(), &db).await;
    let slot = support::unique_name("apply_bench_slot");
    source
        .batch_execute("CREATE PUBLICATION pub FOR ALL TABLES")
        .await
        .unwrap();
    support::create_slot(&source, &slot).await;
    // PostgreSQL's own subscriber gets the same transactions through its own slot.
    let native_slot = format!("{slot}_native");
    support::create_slot(&source, &native_slot).await;
    let tx = per_client.to_string();
    pgbench(
        support::source(),
        &db,
        &["-n", "-c", "4", "-j", "2", "-t", &tx],
    );

    let started = std::time::Instant::now();
    let rows = source
        .query(
            "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, \
             'proto_version', '1', 'publication_names', 'pub')",
            &[&slot],
        )
        .await
        .unwrap();
    let messages: Vec<LogicalMessage> = rows
        .iter()
        .map(|r| {
            let data: Vec<u8> = r.get(0);
            pgoutput::decode(Bytes::from(data), DecodeContext::default()).unwrap()
        })
        .collect();
    let read = started.elapsed();
    let changes = messages
        .iter()
        .filter(|m| {
            matches!(
                m,
                LogicalMessage::Insert(_) | LogicalMessage::Update(_) | LogicalMessage::Delete(_)
            )
        })
        .count();
    let transactions = commits(&messages).len();

    let client = support::connect(support::target(), &db).await;
    let mut applier = Applier::new(client, &slot).await.unwrap();
    let last = messages
        .iter()
        .rposition(|m| matches!(m, LogicalMessage::Commit(_)))
        .unwrap();
    let cpu_before = thread_cpu();
    let started = std::time::Instant::now();
    for (i, message) in messages.into_iter().enumerate() {
        let is_commit = matches!(message, LogicalMessage::Commit(_));
        applier.apply(message).await.unwrap();
        if is_commit {
            applier.commit_if(i == last).await.unwrap();
        }
    }
    let applied = started.elapsed();
    let cpu = thread_cpu() - cpu_before;
    let secs = applied.as_secs_f64();
    println!(
        "pgbench stream: {transactions} transactions, {changes} row changes; slot read+decode \
         {read:.2?}; apply {applied:.2?} = {:.0} rows/s, {:.0} transactions/s; {} target commits; \
         applier CPU {cpu:.2?} ({:.1} µs per row change)",
        changes as f64 / secs,
        transactions as f64 / secs,
        applier.stats().target_commits,
        cpu.as_secs_f64() * 1e6 / changes as f64,
    );

    let target = support::connect(support::target(), &db).await;
    for table in [
        "pgbench_accounts",
        "pgbench_tellers",
        "pgbench_branches",
        "pgbench_history",
    ] {
        let q = format!(
            "SELECT count(*)::text || ' ' || coalesce(sum(hashtext(x::text)), 0)::text FROM {table} x"
        );
        let s: String = source.query_one(&q, &[]).await.unwrap().get(0);
        let t: String = target.query_one(&q, &[]).await.unwrap().get(0);
        assert_eq!(s, t, "{table}");
    }

    // Native: enable a subscription on the same backlog and wait until the last row is there.
    let native = support::connect(support::target(), &native_db).await;
    let history: i64 = support::count(&source, "pgbench_history").await;
    native
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION native_sub CONNECTION '{}' PUBLICATION pub \
             WITH (copy_data = false, create_slot = false, slot_name = '{native_slot}', \
             enabled = false)",
            support::source().conn_string(&db)
        ))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    native
        .batch_execute("ALTER SUBSCRIPTION native_sub ENABLE")
        .await
        .unwrap();
    let deadline = started + std::time::Duration::from_secs(300);
    loop {
        let n: i64 = support::count(&native, "pgbench_history").await;
        if n == history {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "native apply stalled at {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let native_secs = started.elapsed().as_secs_f64();
    println!(
        "native subscriber (decoding included): {native_secs:.2}s = {:.0} rows/s, {:.0} \
         transactions/s",
        changes as f64 / native_secs,
        transactions as f64 / native_secs
    );
    native
        .batch_execute(
            "ALTER SUBSCRIPTION native_sub DISABLE; \
             ALTER SUBSCRIPTION native_sub SET (slot_name = NONE); DROP SUBSCRIPTION native_sub",
        )
        .await
        .unwrap();
}

/// CPU time of this thread (the test's runtime runs the applier and its connection task here).
fn thread_cpu() -> std::time::Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    #[allow(unsafe_code)]
    // SAFETY: getrusage writes a plain struct we own; RUSAGE_THREAD needs no other argument.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr());
        usage.assume_init()
    };
    let micros = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec.unsigned_abs())
            + std::time::Duration::from_micros(t.tv_usec.unsigned_abs())
    };
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

#[tokio::test]
async fn hot_rows_changed_by_many_transactions_in_one_group() {
    let ddl = "CREATE TABLE hot (id int PRIMARY KEY, a int, b text);
               CREATE TABLE side (id int PRIMARY KEY, hot_id int);";
    let case = Case::new("apply_hot", ddl).await;
    let statements = [
        "INSERT INTO hot VALUES (1, 0, 'start'), (2, 0, 'two')",
        "UPDATE hot SET a = a + 1 WHERE id = 1",
        "INSERT INTO side VALUES (1, 1)",
        "UPDATE hot SET a = a + 1, b = 'again' WHERE id = 1",
        "UPDATE hot SET a = a + 10 WHERE id = 2",
        "DELETE FROM hot WHERE id = 1",
        "INSERT INTO hot VALUES (1, 100, 'reborn')",
        "UPDATE hot SET a = a + 1 WHERE id = 1",
        "UPDATE hot SET id = 3 WHERE id = 2",
        "UPDATE hot SET b = 'after key change' WHERE id = 3",
        "INSERT INTO side VALUES (2, 3)",
        "UPDATE hot SET a = a * 2",
    ];
    for statement in statements {
        case.source.batch_execute(statement).await.unwrap();
    }
    let mut applier = case.applier_one_group().await;
    let messages = case.changes().await;
    // One group: nothing is committed until the end.
    assert_eq!(
        case.apply(&mut applier, messages).await.unwrap(),
        applier.applied_lsn().into()
    );
    assert_eq!(applier.stats().target_commits, 1);
    assert_eq!(
        case.assert_same("hot").await,
        ["(1,202,reborn)", "(3,20,\"after key change\")"]
    );
    case.assert_same("side").await;
    assert_eq!(applier.stats().rows_not_found, 0);
}

#[tokio::test]
async fn without_replica_role_changes_apply_in_stream_order() {
    let ddl = "CREATE TABLE parent (id int PRIMARY KEY, n int);
               CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));";
    let case = Case::new("apply_plain_role", ddl).await;
    // An ordinary role may not set session_replication_role: foreign keys are checked on the
    // target, so a child row must never reach it before its parent.
    let role = support::unique_name("apply_role");
    case.target
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN;
             GRANT CREATE ON DATABASE \"{db}\" TO {role};
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};",
            db = case.db
        ))
        .await
        .unwrap();
    for statement in [
        "INSERT INTO parent VALUES (1, 0)",
        "INSERT INTO child VALUES (1, 1)",
        "INSERT INTO parent VALUES (2, 0)",
        "UPDATE parent SET n = n + 1",
        "INSERT INTO child VALUES (2, 2)",
        "DELETE FROM child WHERE id = 1",
        "DELETE FROM parent WHERE id = 1",
    ] {
        case.source.batch_execute(statement).await.unwrap();
    }
    let conn = format!(
        "host=127.0.0.1 port={} user={role} dbname={}",
        support::target().port,
        case.db
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut applier = Applier::new(client, &case.slot).await.unwrap();
    assert!(!applier.replica_role());
    let messages = case.changes().await;
    case.apply(&mut applier, messages).await.unwrap();
    assert_eq!(case.assert_same("parent").await, ["(2,1)"]);
    assert_eq!(case.assert_same("child").await, ["(2,2)"]);
}

#[tokio::test]
async fn binary_values_apply_too() {
    let ddl = "CREATE TYPE mood AS ENUM ('sad', 'happy');
               CREATE TABLE b (id int PRIMARY KEY, n numeric, f float8, t text, by bytea,
                               j jsonb, arr int[], u uuid, ts timestamptz, iv interval, m mood,
                               p point);
               CREATE TABLE bf (a int, p point, j json);
               ALTER TABLE bf REPLICA IDENTITY FULL;";
    let case = Case::new("apply_binary", ddl).await;
    case.source
        .batch_execute(
            "INSERT INTO b VALUES (1, 1.50, 'NaN', 'tëxt', '\\x0001', '{\"a\": 1}', '{1,2}',
                                   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', now(), '1 day',
                                   'happy', '(1,2)'),
                                  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                   NULL, NULL);
             UPDATE b SET n = n * 2, m = 'sad' WHERE id = 1;
             DELETE FROM b WHERE id = 2;
             INSERT INTO bf VALUES (1, '(1,1)', '{}'), (1, '(1,1)', '{}'), (2, '(0,0)', '[]');
             UPDATE bf SET a = 5 WHERE ctid = (SELECT ctid FROM bf WHERE a = 1 LIMIT 1);
             DELETE FROM bf WHERE a = 2;",
        )
        .await
        .unwrap();
    let messages = case.binary_changes().await;
    let binary_values = messages
        .iter()
        .filter_map(|m| match m {
            LogicalMessage::Insert(i) => Some(&i.new),
            _ => None,
        })
        .flat_map(|t| t.iter())
        .filter(|v| matches!(v, ColumnValue::Binary(_)))
        .count();
    assert!(
        binary_values > 10,
        "values were sent in binary: {binary_values}"
    );
    let mut applier = case.applier().await;
    case.apply(&mut applier, messages).await.unwrap();
    assert_eq!(case.assert_same("b").await.len(), 1);
    assert_eq!(case.assert_same("bf").await.len(), 2);
    assert_eq!(applier.stats().rows_not_found, 0);
}

#[tokio::test]
async fn with_schema_changes_off_a_column_added_on_the_source_stops_apply_with_its_name() {
    let case = Case::new("apply_added_col", "CREATE TABLE t (id int PRIMARY KEY)").await;
    case.source
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let applier = case.sync().await;
    let applied = applier.applied_lsn();
    drop(applier);
    case.source
        .batch_execute("ALTER TABLE t ADD COLUMN note text; INSERT INTO t VALUES (2, 'new')")
        .await
        .unwrap();
    let (table, column) = case.missing_column_with_schema_changes_off().await;
    assert_eq!(
        (table.as_str(), column.as_str()),
        ("\"public\".\"t\"", "note")
    );
    assert_eq!(Case::rows(&case.target, "t").await, ["(1)"]);
    assert_eq!(case.stored_progress().await, Some(applied.to_string()));
    // The operator adds the column; the same stream then applies.
    case.target
        .batch_execute("ALTER TABLE t ADD COLUMN note text")
        .await
        .unwrap();
    let mut applier = case.applier().await;
    case.apply(&mut applier, case.changes().await)
        .await
        .unwrap();
    case.assert_same("t").await;
}

#[tokio::test]
async fn deletes_in_bulk_and_keys_reused_within_a_group() {
    let ddl = "CREATE TABLE one (id int PRIMARY KEY, v text);
               CREATE TABLE two (a int, b text, v int, PRIMARY KEY (a, b));";
    let case = Case::new("apply_deletes", ddl).await;
    for statement in [
        "INSERT INTO one SELECT g, 'v' FROM generate_series(1, 1000) g",
        "INSERT INTO two SELECT g % 10, 'k' || g, g FROM generate_series(1, 500) g",
        "DELETE FROM one WHERE id % 2 = 0",
        "DELETE FROM two WHERE v < 300",
        "INSERT INTO one VALUES (2, 'again'), (4, 'again')",
        "UPDATE one SET v = 'touched' WHERE id IN (2, 3)",
        "DELETE FROM one WHERE id IN (2, 5)",
        "INSERT INTO two VALUES (1, 'k1', -1)",
        "DELETE FROM two WHERE a = 1 AND b = 'k1'",
        "INSERT INTO two VALUES (1, 'k1', -2)",
    ] {
        case.source.batch_execute(statement).await.unwrap();
    }
    let mut applier = case.applier_one_group().await;
    case.apply(&mut applier, case.changes().await)
        .await
        .unwrap();
    assert_eq!(applier.stats().target_commits, 1, "one group");
    assert_eq!(case.assert_same("one").await.len(), 500);
    assert_eq!(case.assert_same("two").await.len(), 202);
    assert_eq!(applier.stats().rows_not_found, 0);
}

#[tokio::test]
async fn losing_the_target_connection_is_retryable_and_loses_only_the_open_group() {
    let case = Case::new("apply_conn_lost", "CREATE TABLE t (id int PRIMARY KEY)").await;
    for i in 1..=6 {
        case.source
            .execute("INSERT INTO t VALUES ($1)", &[&i])
            .await
            .unwrap();
    }
    let messages = case.changes().await;
    let ends = commits(&messages);
    let name = support::unique_name("apply_conn_lost");
    let conn = format!(
        "{} application_name={name}",
        support::target().conn_string(&case.db)
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut applier = Applier::new(client, &case.slot).await.unwrap();
    let mut result = Ok(());
    let mut killed = false;
    for message in messages {
        let is_commit = matches!(message, LogicalMessage::Commit(_));
        if let Err(e) = applier.apply(message).await {
            result = Err(e);
            break;
        }
        if is_commit {
            // Commit the first three transactions, then kill the session mid-group.
            let caught_up = applier.stats().transactions == 3;
            if let Err(e) = applier.commit_if(caught_up).await {
                result = Err(e);
                break;
            }
            if caught_up && !killed {
                case.target
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = $1",
                        &[&name],
                    )
                    .await
                    .unwrap();
                killed = true;
            }
        }
    }
    if result.is_ok() {
        result = applier.commit_if(true).await.map(|_| ());
    }
    let err = result.unwrap_err();
    assert_eq!(error_policy::apply(&err), Action::Retry, "{err:?}");
    assert!(
        matches!(err, ApplyError::TargetConnection { .. }),
        "{err:?}"
    );
    assert_eq!(case.stored_progress().await, Some(ends[2].to_string()));
    assert_eq!(case.count(&case.target, "t").await, 3);
}

#[tokio::test]
async fn multi_row_updates_and_deletes_use_the_key_index_on_a_large_table() {
    let db = support::test_dbs("apply_plan").await;
    let target = support::connect(support::target(), &db).await;
    target
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, v text);
             INSERT INTO big SELECT g, 'v' FROM generate_series(1, 200000) g;
             ANALYZE big;
             SET plan_cache_mode = force_generic_plan;",
        )
        .await
        .unwrap();
    let rows = 64;
    let update = lsnpipe::apply::sql::update_rows(
        "\"public\".\"big\"",
        &[("v", "text")],
        &[("id", "integer")],
        rows,
        false,
    );
    let delete = lsnpipe::apply::sql::delete_rows("\"public\".\"big\"", &["id"], 256, false);
    let update_args: Vec<String> = (1..=rows).map(|i| format!("'x', {i}")).collect();
    let delete_args: Vec<String> = (1..=256).map(|i| i.to_string()).collect();
    for (sql, args) in [(update, update_args), (delete, delete_args)] {
        target
            .batch_execute(&format!("PREPARE p AS {sql}"))
            .await
            .unwrap();
        let plan: Vec<String> = target
            .query(&format!("EXPLAIN EXECUTE p({})", args.join(", ")), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index"), "{plan}");
        assert!(!plan.contains("Seq Scan on big"), "{plan}");
        target.batch_execute("DEALLOCATE p").await.unwrap();
    }
}

/// The target's WAL position `function` (insert or flush) as a byte offset.
async fn target_wal(client: &Client, function: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT pg_wal_lsn_diff({function}(), '0/0')::bigint"),
            &[],
        )
        .await
        .expect("read the target's WAL position")
        .get(0)
}

/// A commit becomes reportable as durable once the target has flushed it, and not before, even
/// while the next group is open (under a sustained backlog a group is nearly always open).
///
/// The target is a cluster of the test's own whose WAL writer flushes only every 10 s, so the
/// asynchronous commit stays unflushed for a while: an applier that reported it at once would
/// be caught with the target's flush position still before the commit.
#[tokio::test]
async fn durability_is_confirmed_while_the_next_group_is_open() {
    let slow_flush = support::private_cluster_on(
        support::Side::Target,
        "durable_dst",
        &[("wal_writer_delay", "'10s'")],
    );
    let ddl = "CREATE TABLE d (id int PRIMARY KEY)";
    let case = Case::on(&slow_flush, "durable", ddl, ddl).await;
    case.source
        .batch_execute("INSERT INTO d VALUES (1)")
        .await
        .unwrap();
    let first = case.changes().await;
    let mut applier = case.applier_one_group().await;
    // Everything the group writes on the target comes after this.
    let before_commit = target_wal(&case.target, "pg_current_wal_insert_lsn").await;
    let committed = case.apply(&mut applier, first).await.unwrap();
    let committed = committed.expect("the first transaction committed");

    case.source
        .batch_execute("INSERT INTO d VALUES (2)")
        .await
        .unwrap();
    // Apply the second transaction without committing its group: it stays open.
    for message in case.changes().await {
        let is_commit = matches!(message, LogicalMessage::Commit(_));
        applier.apply(message).await.unwrap();
        if is_commit {
            assert_eq!(applier.commit_if(false).await.unwrap(), None);
        }
    }
    // The target's WAL writer flushes within wal_writer_delay (10 s here): poll.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let durable = loop {
        if let Some(lsn) = applier.confirm_durable().await.unwrap() {
            let flushed = target_wal(&case.target, "pg_current_wal_flush_lsn").await;
            assert!(
                flushed > before_commit,
                "commit {lsn} reported durable while the target had flushed WAL only up to \
                 {flushed}, before the group's first record (after {before_commit})"
            );
            break lsn;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first commit was never confirmed durable while a group was open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(durable, committed);
}

#[tokio::test]
async fn a_unique_value_freed_by_an_update_and_taken_by_an_insert_in_one_group() {
    let ddl = "CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE);
               CREATE TABLE pairs (id int PRIMARY KEY, slot int UNIQUE, v int);
               CREATE TABLE gone (id int PRIMARY KEY, code text UNIQUE)";
    let case = Case::new("apply_uniq", ddl).await;
    case.source
        .batch_execute(
            "INSERT INTO users VALUES (1, 'a');
             INSERT INTO pairs VALUES (1, 1, 0), (2, 2, 0);
             INSERT INTO gone VALUES (1, 'x')",
        )
        .await
        .unwrap();
    drop(case.sync().await);
    case.source
        .batch_execute(
            // The update frees 'a' before the insert takes it.
            "BEGIN; UPDATE users SET email = 'b' WHERE id = 1; INSERT INTO users VALUES (2, 'a'); COMMIT;
             -- Two rows swap a unique value (through NULL, as the source must), then change on.
             BEGIN; UPDATE pairs SET slot = NULL WHERE id = 1; UPDATE pairs SET slot = 1 WHERE id = 2;
                    UPDATE pairs SET slot = 2 WHERE id = 1; COMMIT;
             UPDATE pairs SET v = v + 1;
             -- A delete frees a value that a later update takes.
             BEGIN; DELETE FROM gone WHERE id = 1; INSERT INTO gone VALUES (2, 'y');
                    UPDATE gone SET code = 'x' WHERE id = 2; COMMIT;",
        )
        .await
        .unwrap();
    // All in one target transaction, where folding and reordering would happen.
    let mut applier = case.applier_one_group().await;
    let messages = case.changes().await;
    case.apply(&mut applier, messages).await.expect("applies");
    assert!(
        applier.replica_role(),
        "the reordering path is the one tested"
    );
    for table in ["users", "pairs", "gone"] {
        case.assert_same(table).await;
    }
}

#[tokio::test]
async fn inheritance_children_are_not_changed_through_their_parent() {
    let ddl = "CREATE TABLE parent (id int PRIMARY KEY, v text);
               CREATE TABLE child (extra int) INHERITS (parent);
               ALTER TABLE child ADD PRIMARY KEY (id);";
    let case = Case::new("apply_inherit", ddl).await;
    case.source
        .batch_execute(
            "INSERT INTO parent VALUES (1, 'parent'), (2, 'parent');
             INSERT INTO child VALUES (1, 'child', 10), (2, 'child', 20);",
        )
        .await
        .unwrap();
    drop(case.sync().await);
    case.source
        .batch_execute(
            "UPDATE ONLY parent SET v = 'parent changed' WHERE id = 1;
             DELETE FROM ONLY parent WHERE id = 2;
             UPDATE child SET v = 'child changed' WHERE id = 2;",
        )
        .await
        .unwrap();
    drop(case.sync().await);
    for table in ["ONLY parent", "child"] {
        case.assert_same(table).await;
    }
    assert_eq!(case.count(&case.target, "child").await, 2);
}

#[tokio::test]
async fn full_identity_matches_types_without_equality_by_their_text() {
    let ddl = "CREATE TYPE mood AS (label text, extra xml);
               CREATE TABLE docs (id int, body xml, m mood, p point, j json);
               ALTER TABLE docs REPLICA IDENTITY FULL;";
    let case = Case::new("apply_xml", ddl).await;
    case.source
        .batch_execute(
            "INSERT INTO docs VALUES
               (1, '<a>1</a>', ROW('x', '<b/>'), '(1,2)', '{\"k\": 1}'),
               (1, '<a>1</a>', ROW('x', '<b/>'), '(1,2)', '{\"k\": 1}'),
               (2, '<a>2</a>', NULL, NULL, NULL);
             UPDATE docs SET body = '<a>changed</a>' WHERE id = 2;
             DELETE FROM docs WHERE ctid = (SELECT ctid FROM docs WHERE id = 1 LIMIT 1);",
        )
        .await
        .unwrap();
    let applier = case.sync().await;
    let rows = case.assert_same("docs").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(applier.stats().rows_not_found, 0);
}

#[tokio::test]
async fn truncate_cascade_leaves_tables_only_the_target_has() {
    let source_ddl = "CREATE TABLE parent (id int PRIMARY KEY);
                      CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));";
    // The target keeps its own audit table referencing parent: it is not the source's to empty.
    let target_ddl = "CREATE TABLE parent (id int PRIMARY KEY);
                      CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));
                      CREATE TABLE audit (id int PRIMARY KEY, parent_id int REFERENCES parent (id));";
    let case = Case::with("apply_trcasc", source_ddl, target_ddl).await;
    case.source
        .batch_execute("INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1, 1);")
        .await
        .unwrap();
    drop(case.sync().await);
    case.target
        .batch_execute("INSERT INTO audit VALUES (1, 1)")
        .await
        .unwrap();
    case.source
        .batch_execute("TRUNCATE parent CASCADE")
        .await
        .unwrap();
    let mut applier = case.applier().await;
    let messages = case.peek().await;
    let err = case
        .apply(&mut applier, messages)
        .await
        .expect_err("the target's own reference blocks the truncate");
    assert!(
        err.to_string().contains("truncate"),
        "the error names the operation: {err}"
    );
    assert_eq!(case.count(&case.target, "audit").await, 1);
    // Once the operator removes the reference, the same stream applies.
    case.target
        .batch_execute("ALTER TABLE audit DROP CONSTRAINT audit_parent_id_fkey")
        .await
        .unwrap();
    drop(case.sync().await);
    case.assert_same("parent").await;
    case.assert_same("child").await;
}

/// An UPDATE that moves a row into the publication's row filter reaches lsnpipe as an insert;
/// PostgreSQL sends no value for a TOASTed column the UPDATE left unchanged. lsnpipe leaves the
/// column to the target's default (there is no value to write) and says so, naming the column;
/// under REPLICA IDENTITY FULL the source sends the value and the row arrives whole.
#[tokio::test]
async fn an_update_into_a_row_filter_without_a_toasted_value_is_named_in_the_log() {
    if support::source().major < 15 {
        return; // Row filters came with PostgreSQL 15.
    }
    let (db, slot, source, target) = support::replicated_db(
        "apply_filter_toast",
        "CREATE TABLE t (id int PRIMARY KEY, doc text);
         CREATE TABLE f (id int PRIMARY KEY, doc text);",
        "ALTER TABLE f REPLICA IDENTITY FULL;
         CREATE PUBLICATION pub FOR TABLE t WHERE (id > 100), f WHERE (id > 100);",
    )
    .await;
    let lsnpipe = support::run(&db, &slot, &["--create-slot"]);
    let wait = std::time::Duration::from_secs(120);
    support::wait_until("the slot", wait, || support::slot_active(&source, &slot)).await;
    // Random text, too large to stay in the row even compressed: stored out of line.
    let big =
        "(SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 400) g)";
    // Separate transactions: within the inserting one, decoding still holds the value.
    for table in ["t", "f"] {
        for sql in [
            format!("INSERT INTO {table} VALUES (1, {big})"),
            format!("UPDATE {table} SET id = 101 WHERE id = 1"),
            format!("INSERT INTO {table} VALUES (102, 'small')"),
        ] {
            support::exec(&source, &sql).await;
        }
    }
    support::wait_until(
        "both rows of f on the target",
        std::time::Duration::from_secs(120),
        || async {
            support::count(&target, "f").await == 2 && support::count(&target, "t").await == 2
        },
    )
    .await;
    let whole: bool = target
        .query_one(
            "SELECT (SELECT doc FROM f WHERE id = 101) = $1",
            &[&source
                .query_one("SELECT doc FROM f WHERE id = 101", &[])
                .await
                .unwrap()
                .get::<_, String>(0)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(whole, "under REPLICA IDENTITY FULL the value arrives");
    let missing: bool = target
        .query_one("SELECT doc IS NULL FROM t WHERE id = 101", &[])
        .await
        .unwrap()
        .get(0);
    assert!(missing, "no value was sent for t's row");
    let log = lsnpipe.stop().await;
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("without this column's value"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("\"public\".\"t\"")
            && (warnings[0].contains("column=\"doc\"") || warnings[0].contains("column=doc")),
        "{log}"
    );
}
