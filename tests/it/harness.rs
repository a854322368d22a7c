//! The harness itself, end to end against the real source: a pgoutput slot read with SQL.

use crate::support;

#[tokio::test]
async fn pgoutput_slot_returns_begin_relation_insert_commit() {
    let db = support::test_dbs("harness").await;
    let slot = support::unique_name("harness_slot");
    let source = support::connect(support::source(), &db).await;
    source
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, owner text);
             CREATE PUBLICATION harness_pub FOR TABLE accounts;",
        )
        .await
        .unwrap();
    support::create_slot(&source, &slot).await;
    source
        .execute("INSERT INTO accounts VALUES (1, 'ada')", &[])
        .await
        .unwrap();

    let rows = source
        .query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
             'proto_version', '1', 'publication_names', 'harness_pub')",
            &[&slot],
        )
        .await
        .unwrap();
    let messages: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
    let tags: Vec<char> = messages.iter().map(|m| m[0] as char).collect();
    assert_eq!(tags, ['B', 'R', 'I', 'C'], "messages: {messages:?}");

    // Relation: tag, oid (4), namespace\0, name\0 ...
    let relation = &messages[1];
    let names: Vec<&[u8]> = relation[5..].split(|b| *b == 0).take(2).collect();
    assert_eq!(names, [&b"public"[..], &b"accounts"[..]]);
    // Insert: tag, oid, 'N', ncols = 2, then 't' len "1".
    let insert = &messages[2];
    assert_eq!(insert[5], b'N');
    assert_eq!(&insert[6..8], &[0, 2]);
    assert_eq!(&insert[8..14], &[b't', 0, 0, 0, 1, b'1']);

    source
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
}

#[tokio::test]
async fn each_test_gets_its_own_databases_on_both_clusters() {
    let a = support::test_dbs("isolation").await;
    let b = support::test_dbs("isolation").await;
    assert_ne!(a, b);
    for cluster in [support::source(), support::target()] {
        let client = support::connect(cluster, "postgres").await;
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname = ANY($1)",
                &[&vec![a.clone(), b.clone()]],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 2, "on {}", cluster.name);
    }
    let source = support::connect(support::source(), "postgres").await;
    let level: String = source
        .query_one("SHOW wal_level", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(level, "logical");
}
