//! The replication-protocol client against real servers: login methods, TLS, slot lifecycle,
//! streaming volume and order, a stalled consumer under a short wal_sender_timeout, and a server
//! restart mid-stream.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lsnpipe::Lsn;
use lsnpipe::error_policy::{self, Action};
use lsnpipe::positions::Positions;
use lsnpipe::wire::XLogData;
use lsnpipe::wire::{
    ConnConfig, CreateSlotOptions, LogicalOptions, ReplicationConnection, ReplicationStream,
    SnapshotAction, WireError, connect_sql,
};

use crate::support::{self, ClusterRef};

const STATUS_INTERVAL: Duration = Duration::from_millis(500);

fn config(cluster: &ClusterRef, db: &str, extra: &str) -> ConnConfig {
    ConnConfig::parse(&format!("{} {extra}", cluster.conn_string(db)))
        .unwrap_or_else(|e| panic!("conn string: {e}"))
}

async fn replication(cluster: &ClusterRef, db: &str) -> ReplicationConnection {
    ReplicationConnection::connect(&config(cluster, db, ""))
        .await
        .unwrap_or_else(|e| panic!("replication connect: {e:?}"))
}

/// A database on the source with table `t (id int primary key, pad text)` and publication `pub`.
async fn published_db(prefix: &str) -> String {
    let db = support::unique_name(prefix);
    support::create_db(support::source(), &db).await;
    let sql = support::connect(support::source(), &db).await;
    sql.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, pad text); CREATE PUBLICATION pub FOR TABLE t",
    )
    .await
    .expect("create table and publication");
    db
}

/// Create `slot` without a snapshot (`temporary`: gone with the session); its consistent point.
async fn slot_without_snapshot(
    conn: &mut ReplicationConnection,
    slot: &str,
    temporary: bool,
) -> Lsn {
    let opts = CreateSlotOptions {
        temporary,
        snapshot: SnapshotAction::Nothing,
        ..CreateSlotOptions::default()
    };
    conn.create_slot(slot, opts)
        .await
        .unwrap_or_else(|e| panic!("create slot {slot}: {e}"))
        .consistent_point
}

async fn start(
    conn: ReplicationConnection,
    slot: &str,
    from: Lsn,
    publication: &str,
) -> Result<(ReplicationStream, Arc<Positions>), WireError> {
    let positions = Arc::new(Positions::new(from));
    let opts = LogicalOptions::new(1, vec![publication.to_owned()]);
    let stream = conn
        .start_replication(slot, from, &opts, positions.clone(), STATUS_INTERVAL)
        .await?;
    Ok((stream, positions))
}

/// The next XLogData within `limit`.
async fn next(stream: &mut ReplicationStream, limit: Duration) -> XLogData {
    match tokio::time::timeout(limit, stream.recv()).await {
        Ok(Ok(Some(x))) => x,
        Ok(other) => panic!("expected XLogData, got {other:?}"),
        Err(_) => panic!("no XLogData within {limit:?}"),
    }
}

fn commit_end_lsn(msg: &[u8]) -> Lsn {
    assert_eq!(msg[0], b'C');
    Lsn::new(u64::from_be_bytes(
        msg[10..18].try_into().expect("Commit end_lsn"),
    ))
}

/// The `id` of an Insert into `t`: 'I', relid, 'N', ncols, 't', len, text.
fn inserted_id(msg: &[u8]) -> i64 {
    assert_eq!(msg[0], b'I');
    assert_eq!(msg[5], b'N');
    assert_eq!(msg[8], b't');
    let len = u32::from_be_bytes(msg[9..13].try_into().expect("column length")) as usize;
    std::str::from_utf8(&msg[13..13 + len])
        .ok()
        .and_then(|t| t.parse().ok())
        .expect("an integer id")
}

/// Wait for `f` to hold, polling, or panic after `limit`.
async fn poll_until<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn identify_system_show_and_sql_on_a_trust_connection() {
    let db = support::unique_name("wire_ident");
    support::create_db(support::source(), &db).await;
    let mut conn = replication(support::source(), &db).await;
    assert!(conn.server_version_num() >= 100_000);
    let sys = conn.identify_system().await.unwrap();
    assert_eq!(sys.dbname.as_deref(), Some(db.as_str()));
    assert!(sys.timeline >= 1);
    assert!(!sys.xlogpos.is_zero());
    assert!(sys.system_id.parse::<u64>().is_ok(), "{}", sys.system_id);
    assert_eq!(conn.show("wal_sender_timeout").await.unwrap(), "1min");
    // The server notices a dead client within seconds, not hours (wire::SESSION_SETTINGS).
    assert_eq!(conn.show("tcp_keepalives_idle").await.unwrap(), "10");
    assert_eq!(conn.show("tcp_keepalives_count").await.unwrap(), "3");
    let sql = connect_sql(&config(support::source(), &db, ""))
        .await
        .unwrap();
    let idle: String = sql
        .query_one("SHOW tcp_keepalives_idle", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(idle, "10");
    let rows = conn
        .simple_query("SELECT 1, NULL::text, 'it''s'")
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![Some("1".into()), None, Some("it's".into())]]
    );
    let err = conn
        .simple_query("SELECT * FROM nowhere")
        .await
        .unwrap_err();
    assert_eq!(err.server_error().unwrap().code, "42P01");
    // The session is usable after an error.
    assert_eq!(conn.show("max_wal_senders").await.unwrap(), "100");
    conn.close().await.unwrap();

    // The shared source has no TLS: prefer (the default) went plain, require refuses.
    for extra in [
        "sslmode=require",
        "sslmode=verify-full sslrootcert=/nonexistent.pem",
    ] {
        let err = ReplicationConnection::connect(&config(support::source(), &db, extra))
            .await
            .unwrap_err();
        assert!(matches!(err, WireError::Tls { .. }), "{extra}: {err:?}");
        assert_eq!(error_policy::wire(&err), Action::Operator);
    }
}

#[tokio::test]
async fn unix_socket_and_sql_sessions() {
    let db = support::unique_name("wire_unix");
    support::create_db(support::source(), &db).await;
    let src = support::source();
    let cfg = ConnConfig::parse(&format!(
        "host={} port={} user=postgres dbname={db}",
        src.root.display(),
        src.port
    ))
    .unwrap();
    let mut conn = ReplicationConnection::connect(&cfg).await.unwrap();
    assert_eq!(
        conn.identify_system().await.unwrap().dbname.as_deref(),
        Some(db.as_str())
    );
    let sql = connect_sql(&cfg).await.unwrap();
    let row = sql
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), db);
}

#[tokio::test]
async fn slot_lifecycle_with_every_snapshot_mode() {
    let db = published_db("wire_slots").await;
    let src = support::source();
    let sql = support::connect(src, &db).await;
    let mut conn = replication(src, &db).await;

    let exported = support::unique_name("slot_export");
    let created = conn
        .create_slot(&exported, CreateSlotOptions::default())
        .await
        .unwrap();
    assert_eq!(created.slot_name, exported);
    assert!(!created.consistent_point.is_zero());
    assert!(created.snapshot_name.is_some(), "export gives a snapshot");
    assert_eq!(created.output_plugin.as_deref(), Some("pgoutput"));

    let nothing = support::unique_name("slot_nothing");
    let created = conn
        .create_slot(
            &nothing,
            CreateSlotOptions {
                snapshot: SnapshotAction::Nothing,
                ..CreateSlotOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(created.snapshot_name, None);

    // `use`: the slot's snapshot becomes this transaction's; the row inserted later is unseen.
    let used = support::unique_name("slot_use");
    conn.simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .unwrap();
    let created = conn
        .create_slot(
            &used,
            CreateSlotOptions {
                snapshot: SnapshotAction::Use,
                ..CreateSlotOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(created.snapshot_name, None);
    sql.execute("INSERT INTO t VALUES (1, 'after the slot')", &[])
        .await
        .unwrap();
    let rows = conn
        .simple_query("SELECT count(*) FROM public.t")
        .await
        .unwrap();
    assert_eq!(rows, vec![vec![Some("0".into())]]);
    conn.simple_query("COMMIT").await.unwrap();

    let temporary = support::unique_name("slot_temp");
    slot_without_snapshot(&mut conn, &temporary, true).await;
    let is_temp: bool = sql
        .query_one(
            "SELECT temporary FROM pg_replication_slots WHERE slot_name = $1",
            &[&temporary],
        )
        .await
        .unwrap()
        .get(0);
    assert!(is_temp);

    // Stream the insert from the `use` slot, stop, and reuse the connection to drop slots.
    let (mut stream, positions) = start(conn, &used, Lsn::ZERO, "pub").await.unwrap();
    let mut tags = Vec::new();
    loop {
        let x = next(&mut stream, Duration::from_secs(30)).await;
        tags.push(x.data[0]);
        if x.data[0] == b'I' {
            assert_eq!(inserted_id(&x.data), 1);
        }
        if x.data[0] == b'C' {
            positions.mark_flushed(commit_end_lsn(&x.data));
            stream.nudge();
            break;
        }
    }
    assert_eq!(tags, b"BRIC");
    let mut conn = stream.stop().await.unwrap();
    // The nudge and the final status update moved the slot.
    let confirmed: String = sql
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&used],
        )
        .await
        .unwrap()
        .get(0);
    assert!(confirmed.parse::<Lsn>().unwrap() >= positions.flushed());

    for slot in [&exported, &nothing, &used] {
        conn.drop_slot(slot, true).await.unwrap();
    }
    let err = conn.drop_slot(&exported, false).await.unwrap_err();
    assert_eq!(err.server_error().unwrap().code, "42704");
    assert_eq!(error_policy::wire(&err), Action::Operator);
    conn.close().await.unwrap();
    // The temporary slot goes with its connection.
    poll_until(Duration::from_secs(10), "temporary slot to vanish", || {
        let sql = &sql;
        let temporary = &temporary;
        async move {
            sql.query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[temporary],
            )
            .await
            .unwrap()
            .is_none()
        }
    })
    .await;
}

#[tokio::test]
async fn slot_in_use_missing_slot_and_missing_publication() {
    let db = published_db("wire_errs").await;
    let src = support::source();
    let slot = support::unique_name("slot_busy");
    let mut conn = replication(src, &db).await;
    slot_without_snapshot(&mut conn, &slot, false).await;
    let (holder, _) = start(conn, &slot, Lsn::ZERO, "pub").await.unwrap();

    let err = start(replication(src, &db).await, &slot, Lsn::ZERO, "pub")
        .await
        .unwrap_err();
    let server = err.server_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(server.code, "55006", "{server}");
    assert!(server.message.contains(&slot), "{server}");
    assert_eq!(error_policy::wire(&err), Action::Retry);

    let missing = support::unique_name("slot_missing");
    let err = start(replication(src, &db).await, &missing, Lsn::ZERO, "pub")
        .await
        .unwrap_err();
    let server = err.server_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(server.code, "42704", "{server}");
    assert!(server.message.contains(&missing), "{server}");
    assert_eq!(error_policy::wire(&err), Action::Operator);

    // A missing publication is reported when the first change is decoded.
    holder.stop().await.unwrap();
    let mut conn = replication(src, &db).await;
    let nopub = support::unique_name("nopub");
    let lonely = support::unique_name("slot_nopub");
    slot_without_snapshot(&mut conn, &lonely, false).await;
    let (mut stream, _) = start(conn, &lonely, Lsn::ZERO, &nopub).await.unwrap();
    let sql = support::connect(src, &db).await;
    sql.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.recv().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without the publication error"),
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("publication error within 30 s");
    let server = err.server_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(server.code, "42704", "{server}");
    assert!(server.message.contains(&nopub), "{server}");
    assert_eq!(error_policy::wire(&err), Action::Operator);
    drop(stream);

    let mut conn = replication(src, &db).await;
    conn.drop_slot(&slot, true).await.unwrap();
    conn.drop_slot(&lonely, true).await.unwrap();
}

#[tokio::test]
async fn ten_thousand_changes_arrive_complete_and_in_order() {
    let db = published_db("wire_volume").await;
    let src = support::source();
    let slot = support::unique_name("slot_volume");
    let mut conn = replication(src, &db).await;
    let created = slot_without_snapshot(&mut conn, &slot, true).await;
    let (mut stream, positions) = start(conn, &slot, created, "pub").await.unwrap();

    const TRANSACTIONS: i64 = 1_000;
    const PER_TRANSACTION: i64 = 10;
    let sql = support::connect(src, &db).await;
    let writer = tokio::spawn(async move {
        let mut batch = String::new();
        for tx in 0..TRANSACTIONS {
            let first = tx * PER_TRANSACTION + 1;
            let last = first + PER_TRANSACTION - 1;
            batch.push_str(&format!(
                "BEGIN; INSERT INTO t SELECT g, 'x' FROM generate_series({first}, {last}) g; COMMIT;"
            ));
        }
        sql.batch_execute(&batch).await.unwrap();
    });

    let mut expected_id = 1;
    let mut commits = 0;
    let mut last_end = Lsn::ZERO;
    while commits < TRANSACTIONS {
        let x = next(&mut stream, Duration::from_secs(60)).await;
        match x.data[0] {
            b'I' => {
                assert_eq!(inserted_id(&x.data), expected_id);
                expected_id += 1;
            }
            b'C' => {
                let end = commit_end_lsn(&x.data);
                assert!(end > last_end, "commit end {end} after {last_end}");
                last_end = end;
                commits += 1;
                positions.mark_flushed(end);
                if commits % 100 == 0 {
                    stream.nudge();
                }
            }
            b'B' | b'R' => {}
            other => panic!("unexpected pgoutput message {:?}", other as char),
        }
    }
    assert_eq!(expected_id, TRANSACTIONS * PER_TRANSACTION + 1);
    writer.await.unwrap();
    stream.stop().await.unwrap();
}

#[tokio::test]
async fn a_stalled_consumer_survives_a_short_wal_sender_timeout() {
    let db = published_db("wire_stall").await;
    let src = support::source();
    let slot = support::unique_name("slot_stall");
    let cfg = config(src, &db, "options='-c wal_sender_timeout=2s'");
    let mut conn = ReplicationConnection::connect(&cfg).await.unwrap();
    assert_eq!(conn.show("wal_sender_timeout").await.unwrap(), "2s");
    let created = slot_without_snapshot(&mut conn, &slot, true).await;
    let (mut stream, _positions) = start(conn, &slot, created, "pub").await.unwrap();

    // Enough to fill the channel and the socket buffers, so the walsender blocks on its send.
    const ROWS: i64 = 30_000;
    let sql = support::connect(src, &db).await;
    sql.execute(
        "INSERT INTO t SELECT g, repeat('p', 200) FROM generate_series(1, $1::int8) g",
        &[&ROWS],
    )
    .await
    .unwrap();
    let first = next(&mut stream, Duration::from_secs(30)).await;
    assert_eq!(first.data[0], b'B');

    // The consumer stalls for five wal_sender_timeouts: this pause is the scenario itself.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let mut inserts = 0;
    loop {
        let x = next(&mut stream, Duration::from_secs(30)).await;
        match x.data[0] {
            b'I' => inserts += 1,
            b'C' => break,
            _ => {}
        }
    }
    assert_eq!(inserts, ROWS);
    // Still streaming afterwards.
    sql.execute("INSERT INTO t VALUES (-1)", &[]).await.unwrap();
    loop {
        let x = next(&mut stream, Duration::from_secs(30)).await;
        if x.data[0] == b'I' {
            assert_eq!(inserted_id(&x.data), -1);
            break;
        }
    }
    stream.stop().await.unwrap();
}

#[tokio::test]
async fn restarting_the_source_ends_the_stream_with_a_retryable_error() {
    let cluster = support::private_cluster("wire_restart", &[("wal_sender_timeout", "'5s'")]);
    let db = "postgres";
    let sql = support::connect(&cluster, db).await;
    sql.batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t")
        .await
        .unwrap();
    let slot = "slot_restart";
    let mut conn = replication(&cluster, db).await;
    let created = slot_without_snapshot(&mut conn, slot, false).await;
    let (mut stream, positions) = start(conn, slot, created, "pub").await.unwrap();
    sql.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    loop {
        let x = next(&mut stream, Duration::from_secs(30)).await;
        if x.data[0] == b'C' {
            positions.mark_flushed(commit_end_lsn(&x.data));
            stream.nudge();
            break;
        }
    }
    drop(sql);

    let restarting = cluster.clone();
    let restart = tokio::task::spawn_blocking(move || restarting.with(|c| c.restart()));
    let err = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            match stream.recv().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a restart must not look like a clean end"),
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the stream ends within 90 s");
    assert_eq!(error_policy::wire(&err), Action::Retry, "{err:?}");
    println!("restart ended the stream with: {err}");
    restart.await.unwrap().unwrap();

    // And the slot streams again after reconnecting.
    let conn = replication(&cluster, db).await;
    let (mut stream, _) = start(conn, slot, positions.flushed(), "pub").await.unwrap();
    let sql = support::connect(&cluster, db).await;
    sql.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    loop {
        let x = next(&mut stream, Duration::from_secs(30)).await;
        if x.data[0] == b'I' {
            assert_eq!(
                inserted_id(&x.data),
                2,
                "nothing acknowledged is sent again"
            );
            break;
        }
    }
}

/// Run `sql` on the source's `postgres` database.
async fn admin(cluster: &ClusterRef, sql: &str) {
    support::connect(cluster, "postgres")
        .await
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn quote_kv(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Create a replication role whose password is stored with `encryption`.
async fn create_role(cluster: &ClusterRef, user: &str, password: &str, encryption: &str) {
    admin(
        cluster,
        &format!(
            "SET password_encryption = '{encryption}'; CREATE ROLE {} LOGIN REPLICATION PASSWORD {}",
            lsnpipe::wire::quote_ident(user),
            lsnpipe::wire::quote_literal(password)
        ),
    )
    .await;
}

async fn login(cluster: &ClusterRef, user: &str, extra: &str) -> Result<(), WireError> {
    let cfg = ConnConfig::parse(&format!(
        "host=127.0.0.1 port={} user={user} dbname=postgres {extra}",
        cluster.port
    ))
    .expect("conn string");
    let mut conn = ReplicationConnection::connect(&cfg).await?;
    conn.identify_system().await?;
    conn.close().await
}

fn assert_auth_failure(err: &WireError, user: &str) {
    assert!(matches!(err, WireError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains(user), "{err}");
    assert_eq!(error_policy::wire(err), Action::Operator);
}

#[tokio::test]
async fn every_password_method_and_the_passfile() {
    let src = support::source();
    let password = "pa ss'wörd\\";
    let cleartext = support::unique_name("wire_pw_clear");
    let md5 = support::unique_name("wire_pw_md5");
    let scram = support::unique_name("wire_pw_scram");
    let trust = support::unique_name("wire_pw_trust");
    create_role(src, &cleartext, password, "scram-sha-256").await;
    create_role(src, &md5, password, "md5").await;
    create_role(src, &scram, password, "scram-sha-256").await;
    create_role(src, &trust, password, "scram-sha-256").await;
    src.with(|c| {
        c.prepend_hba(&format!(
            "host all {cleartext} 127.0.0.1/32 password\n\
             host all {md5} 127.0.0.1/32 md5\n\
             host all {scram} 127.0.0.1/32 scram-sha-256"
        ))
    })
    .expect("pg_hba.conf");
    // The reload is asynchronous: wait until the server asks the SCRAM user for a password.
    poll_until(Duration::from_secs(20), "pg_hba.conf reload", || async {
        matches!(login(src, &scram, "").await, Err(WireError::Auth { .. }))
    })
    .await;

    let good = format!("password={}", quote_kv(password));
    for user in [&cleartext, &md5, &scram] {
        login(src, user, &good)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e:?}"));
        let err = login(src, user, "password=wrong").await.unwrap_err();
        assert_auth_failure(&err, user);
        println!("wrong password: {err}");
        assert_eq!(err.server_error().map(|e| e.code.as_str()), Some("28P01"));
        let err = login(src, user, "").await.unwrap_err();
        assert_auth_failure(&err, user);
    }
    login(src, &trust, "").await.unwrap();

    // The SQL session follows the same rules.
    let cfg = ConnConfig::parse(&format!(
        "postgresql://{scram}:{}@127.0.0.1:{}/postgres",
        "pa%20ss'w%C3%B6rd%5C", src.port
    ))
    .unwrap();
    let sql = connect_sql(&cfg).await.unwrap();
    let me: String = sql
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(me, scram);
    let wrong = ConnConfig::parse(&format!(
        "host=127.0.0.1 port={} user={scram} dbname=postgres password=nope",
        src.port
    ))
    .unwrap();
    assert_auth_failure(&connect_sql(&wrong).await.unwrap_err(), &scram);

    // A private passfile supplies the password; `:` and `\` in it are escaped.
    let dir = std::env::temp_dir().join(support::unique_name("wire_passfile"));
    std::fs::create_dir_all(&dir).unwrap();
    let passfile = dir.join("pgpass");
    let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
    std::fs::write(
        &passfile,
        format!(
            "otherhost:*:*:*:nope\n127.0.0.1:{}:*:{md5}:{escaped}\n",
            src.port
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    login(src, &md5, &format!("passfile={}", passfile.display()))
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

struct Pki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    other_ca_pem: String,
}

/// A CA, a server certificate it signs for localhost and 127.0.0.1, and an unrelated CA.
fn make_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca = |name: &str| {
        let key = KeyPair::generate().expect("rcgen");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("rcgen");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("rcgen");
        (params, key, cert)
    };
    let (ca_params, ca_key, ca_cert) = ca("lsnpipe test CA");
    let (_, _, other_ca) = ca("another CA");
    let server_key = KeyPair::generate().expect("rcgen");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("rcgen");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_cert = params.signed_by(&server_key, &issuer).expect("rcgen");
    Pki {
        ca_pem: ca_cert.pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        other_ca_pem: other_ca.pem(),
    }
}

#[tokio::test]
async fn tls_modes_name_checks_and_scram_channel_binding() {
    let pki = make_pki();
    let cluster = support::private_cluster("wire_tls", &[]);
    cluster
        .with(|c| -> Result<(), lsnpipe::cluster::ClusterError> {
            let data = c.data_dir();
            c.write_owned(&data.join("server.crt"), pki.server_cert_pem.as_bytes())?;
            let key = data.join("server.key");
            c.write_owned(&key, pki.server_key_pem.as_bytes())?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod server.key");
            c.append_conf("ssl = on")?;
            c.prepend_hba("hostssl all scram_user 127.0.0.1/32 scram-sha-256")?;
            c.reload()
        })
        .expect("turn on ssl");
    create_role(&cluster, "scram_user", "s3cret", "scram-sha-256").await;
    let dir = std::env::temp_dir().join(support::unique_name("wire_tls_pki"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&other_ca, &pki.other_ca_pem).unwrap();

    let encrypted = |extra: String| {
        let cluster = cluster.clone();
        async move {
            let cfg = ConnConfig::parse(&format!("{} {extra}", cluster.conn_string("postgres")))
                .expect("conn string");
            let mut conn = ReplicationConnection::connect(&cfg).await?;
            let rows = conn
                .simple_query("SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()")
                .await?;
            Ok::<bool, WireError>(rows == vec![vec![Some("t".to_owned())]])
        }
    };
    poll_until(Duration::from_secs(20), "ssl to come on", || {
        let attempt = encrypted("sslmode=require".into());
        async move { matches!(attempt.await, Ok(true)) }
    })
    .await;

    assert!(!encrypted("sslmode=disable".into()).await.unwrap());
    assert!(encrypted("sslmode=prefer".into()).await.unwrap());
    let root = format!("sslrootcert={}", ca.display());
    assert!(
        encrypted(format!("sslmode=verify-full {root}"))
            .await
            .unwrap()
    );
    assert!(
        encrypted(format!("sslmode=verify-ca {root}"))
            .await
            .unwrap()
    );

    // Reached by address under a name the certificate does not carry.
    let renamed = format!("host=db.elsewhere.example hostaddr=127.0.0.1 {root}");
    let err = encrypted(format!("sslmode=verify-full {renamed}"))
        .await
        .unwrap_err();
    assert!(matches!(err, WireError::Tls { .. }), "{err:?}");
    assert_eq!(error_policy::wire(&err), Action::Operator);
    println!("verify-full with another name: {err}");
    assert!(
        encrypted(format!("sslmode=verify-ca {renamed}"))
            .await
            .unwrap(),
        "verify-ca does not check the name"
    );
    let err = encrypted(format!(
        "sslmode=verify-ca sslrootcert={}",
        other_ca.display()
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, WireError::Tls { .. }), "{err:?}");

    // SCRAM-SHA-256-PLUS: channel_binding=require fails unless the binding was used.
    let scram = format!(
        "host=127.0.0.1 port={} user=scram_user dbname=postgres password=s3cret",
        cluster.port
    );
    let cfg = ConnConfig::parse(&format!(
        "{scram} sslmode=verify-full {root} channel_binding=require"
    ))
    .unwrap();
    let mut conn = ReplicationConnection::connect(&cfg).await.unwrap();
    conn.identify_system().await.unwrap();
    let sql = connect_sql(&cfg).await.unwrap();
    let me: String = sql
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(me, "scram_user");
    let cfg =
        ConnConfig::parse(&format!("{scram} sslmode=disable channel_binding=require")).unwrap();
    let err = ReplicationConnection::connect(&cfg).await.unwrap_err();
    assert_eq!(error_policy::wire(&err), Action::Operator, "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn confirmed_flush(sql: &tokio_postgres::Client, slot: &str) -> Lsn {
    let text: String = sql
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("slot row")
        .get(0);
    text.parse().expect("an LSN")
}

#[tokio::test]
async fn reply_requests_are_answered_at_once_and_a_nudge_reports_without_the_timer() {
    let db = published_db("wire_nudge").await;
    let src = support::source();
    let sql = support::connect(src, &db).await;
    let slot = support::unique_name("slot_nudge");
    let never = Duration::from_secs(3600);

    // The timer never fires; only answers to the server's reply requests (every second with a
    // 2 s timeout) keep this connection alive through six seconds of quiet.
    let cfg = config(src, &db, "options='-c wal_sender_timeout=2s'");
    let mut conn = ReplicationConnection::connect(&cfg).await.unwrap();
    let created = slot_without_snapshot(&mut conn, &slot, false).await;
    let positions = Arc::new(Positions::new(created));
    let opts = LogicalOptions::new(1, vec!["pub".into()]);
    let mut stream = conn
        .start_replication(&slot, Lsn::ZERO, &opts, positions.clone(), never)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    sql.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    loop {
        if next(&mut stream, Duration::from_secs(30)).await.data[0] == b'C' {
            break;
        }
    }
    stream.stop().await.unwrap();

    // With the default timeout the server asks for nothing, so only a nudge reports the flush.
    let sent_before = positions.status_updates_sent();
    let mut stream = replication(src, &db)
        .await
        .start_replication(&slot, Lsn::ZERO, &opts, positions.clone(), never)
        .await
        .unwrap();
    sql.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    let end = loop {
        let x = next(&mut stream, Duration::from_secs(30)).await;
        if x.data[0] == b'C' {
            break commit_end_lsn(&x.data);
        }
    };
    // The timer's first tick reports at once when the writer first runs, which may come only
    // now: let it go out before the flush moves, or it would report the flush itself.
    poll_until(
        Duration::from_secs(10),
        "the stream's first status update",
        || async { positions.status_updates_sent() > sent_before },
    )
    .await;
    positions.mark_flushed(end);
    assert!(confirmed_flush(&sql, &slot).await < end, "not reported yet");
    stream.nudge();
    poll_until(
        Duration::from_secs(10),
        "the nudged flush position",
        || async { confirmed_flush(&sql, &slot).await >= end },
    )
    .await;
    drop(stream);
    replication(src, &db)
        .await
        .drop_slot(&slot, true)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_pgoutput_option_and_an_oddly_named_publication() {
    let db = support::unique_name("wire_opts");
    let src = support::source();
    support::create_db(src, &db).await;
    let sql = support::connect(src, &db).await;
    let publication = "My \"Pub\", it's";
    sql.batch_execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION {} FOR TABLE t",
        lsnpipe::wire::quote_ident(publication)
    ))
    .await
    .unwrap();
    let mut conn = replication(src, &db).await;
    let slot = support::unique_name("slot_opts");
    let created = conn
        .create_slot(
            &slot,
            CreateSlotOptions {
                temporary: true,
                snapshot: SnapshotAction::Nothing,
                two_phase: true,
                ..CreateSlotOptions::default()
            },
        )
        .await
        .unwrap();
    let mut opts = LogicalOptions::new(
        lsnpipe::wire::max_proto_version(conn.server_version_num()),
        vec![publication.to_owned()],
    );
    opts.binary = true;
    opts.messages = true;
    opts.streaming = lsnpipe::wire::Streaming::On;
    opts.two_phase = true;
    let positions = Arc::new(Positions::new(created.consistent_point));
    let mut stream = conn
        .start_replication(&slot, Lsn::ZERO, &opts, positions, STATUS_INTERVAL)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sql.batch_execute(
        "BEGIN; SELECT pg_logical_emit_message(true, 'lsnpipe', 'hello'); \
         INSERT INTO t VALUES (7); COMMIT;",
    )
    .await
    .unwrap();
    let mut tags = Vec::new();
    loop {
        let x = next(&mut stream, Duration::from_secs(30)).await;
        tags.push(x.data[0]);
        if x.data[0] == b'C' {
            break;
        }
    }
    assert_eq!(tags, b"BMRIC", "{:?}", String::from_utf8_lossy(&tags));
    stream.stop().await.unwrap();
}

/// A figure, not a check: `cargo test --test it -- --ignored wire::throughput --nocapture`.
#[tokio::test]
#[ignore = "measurement; run by hand"]
async fn throughput() {
    let db = published_db("wire_speed").await;
    let src = support::source();
    let slot = support::unique_name("slot_speed");
    let mut conn = replication(src, &db).await;
    let created = slot_without_snapshot(&mut conn, &slot, true).await;
    const ROWS: i64 = 500_000;
    let sql = support::connect(src, &db).await;
    sql.execute(
        "INSERT INTO t SELECT g, repeat('p', 100) FROM generate_series(1, $1::int8) g",
        &[&ROWS],
    )
    .await
    .unwrap();
    let (mut stream, _) = start(conn, &slot, created, "pub").await.unwrap();
    let first = next(&mut stream, Duration::from_secs(60)).await;
    assert_eq!(first.data[0], b'B');
    let started = Instant::now();
    let mut messages = 1u64;
    let mut bytes = first.data.len() as u64;
    loop {
        let x = next(&mut stream, Duration::from_secs(60)).await;
        messages += 1;
        bytes += x.data.len() as u64;
        if x.data[0] == b'C' {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{messages} messages, {:.1} MB in {secs:.2} s: {:.0} messages/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        messages as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
    stream.stop().await.unwrap();
}
