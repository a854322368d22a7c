//! What depends on the server's major version: failover slots (PostgreSQL 17+), refused with a
//! clear error on older sources. These run on whatever majors `PG_BINDIR_SOURCE` and
//! `PG_BINDIR_TARGET` choose (`scripts/pg-versions.sh`), and check the behaviour of that major.

use std::time::Duration;

use crate::support::{self, Running};

const WAIT: Duration = Duration::from_secs(120);

async fn setup(prefix: &str) -> (String, tokio_postgres::Client) {
    let db = support::test_dbs(prefix).await;
    let source = support::connect(support::source(), &db).await;
    let target = support::connect(support::target(), &db).await;
    let ddl = "CREATE TABLE a (id int PRIMARY KEY, v text);";
    source.batch_execute(ddl).await.unwrap();
    target.batch_execute(ddl).await.unwrap();
    source
        .batch_execute("CREATE PUBLICATION pub FOR TABLE a; INSERT INTO a VALUES (1, 'before')")
        .await
        .unwrap();
    (db, source)
}

/// Whether `slot` exists, and its `failover` flag on 17+ (`None` before 17).
async fn slot_failover(source: &tokio_postgres::Client, slot: &str) -> Option<Option<bool>> {
    let column = if support::source().major >= 17 {
        "failover"
    } else {
        "NULL::bool"
    };
    source
        .query_opt(
            &format!("SELECT {column} FROM pg_replication_slots WHERE slot_name = $1"),
            &[&slot],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[tokio::test]
async fn failover_slot_is_created_on_17_and_refused_with_the_fix_before() {
    // Both ways lsnpipe creates a slot: with the initial copy, and streaming only.
    for (prefix, extra) in [
        ("failover_copy", &[][..]),
        ("failover_stream", &["--snapshot=false"][..]),
    ] {
        let (db, source) = setup(prefix).await;
        let slot = support::unique_name(&format!("{prefix}_slot"));
        let mut args = vec!["--create-slot", "--failover-slot"];
        args.extend_from_slice(extra);
        let cmd = support::lsnpipe_run(
            support::source(),
            &db,
            support::target(),
            &db,
            "pub",
            &slot,
            &args,
        );
        if support::source().major >= 17 {
            let lsnpipe = Running::spawn(cmd);
            support::wait_until("the slot to be created", WAIT, || async {
                slot_failover(&source, &slot).await.is_some()
            })
            .await;
            assert_eq!(
                slot_failover(&source, &slot).await,
                Some(Some(true)),
                "{prefix}: the slot is a failover slot; log:\n{}",
                lsnpipe.log()
            );
            let (status, log) = lsnpipe.terminate().await;
            assert!(status.success(), "{prefix}: {log}");
        } else {
            let mut lsnpipe = Running::spawn(cmd);
            let (status, log) = lsnpipe.wait(WAIT).await;
            assert!(
                !status.success(),
                "{prefix}: lsnpipe should refuse; log:\n{log}"
            );
            assert!(
                log.contains("failover slots need PostgreSQL 17")
                    && log.contains("leave out --failover-slot"),
                "{prefix}: {log}"
            );
            assert_eq!(
                slot_failover(&source, &slot).await,
                None,
                "{prefix}: no slot"
            );
        }
    }
}
