//! Metrics and readiness of a real `lsnpipe run`, scraped over HTTP while it replicates.

use std::net::SocketAddr;
use std::time::Duration;

use crate::metrics::request;
use crate::support::{self, ClusterRef, Running};

const WAIT: Duration = Duration::from_secs(120);

/// The value of one sample line (`name{labels} value`) in a scrape, if present.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

async fn scrape(addr: SocketAddr) -> String {
    let reply = request(addr, "GET", "/metrics").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

async fn start(
    source: &ClusterRef,
    target: &ClusterRef,
    db: &str,
    slot: &str,
) -> (Running, SocketAddr) {
    let addr = support::free_addr();
    let listen = addr.to_string();
    let running = support::run_between(source, target, db, slot, &["--metrics-listen", &listen]);
    support::wait_until("the metrics server to answer", WAIT, || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    (running, addr)
}

async fn prepare(source: &ClusterRef, target: &ClusterRef, db: &str, slot: &str) {
    let s = support::connect(source, db).await;
    let t = support::connect(target, db).await;
    let ddl = "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY)";
    support::exec(&s, ddl).await;
    support::exec(&t, ddl).await;
    support::exec(&s, "CREATE PUBLICATION pub FOR TABLE a, b").await;
    support::create_slot(&s, slot).await;
}

#[tokio::test]
async fn counters_move_by_exactly_the_rows_changed_and_lag_returns_to_zero() {
    let db = support::test_dbs("observe").await;
    let slot = support::unique_name("observe_slot");
    let (source, target) = (support::source(), support::target());
    prepare(source, target, &db, &slot).await;
    let (lsnpipe, addr) = start(source, target, &db, &slot).await;

    let s = support::connect(source, &db).await;
    let t = support::connect(target, &db).await;
    for sql in [
        "INSERT INTO a SELECT g, 'x' FROM generate_series(1, 30) g",
        "UPDATE a SET v = 'y' WHERE id <= 10",
        "DELETE FROM a WHERE id > 25",
        "INSERT INTO b SELECT generate_series(1, 7)",
        "TRUNCATE b",
    ] {
        support::exec(&s, sql).await;
    }
    support::wait_until("the target to equal the source", WAIT, || async {
        support::tables_equal(&s, &t, &["a", "b"]).await
            && t.query_one("SELECT count(*) FROM a", &[])
                .await
                .map(|r| r.get::<_, i64>(0) == 25)
                .unwrap_or(false)
    })
    .await;
    // The counters are updated when the target commits, which is before the rows are visible
    // to another session only by the time it takes to read them: poll for the last one.
    let expected = [
        (
            "lsnpipe_rows_applied_total{op=\"insert\",table=\"public.a\"}",
            30.0,
        ),
        (
            "lsnpipe_rows_applied_total{op=\"update\",table=\"public.a\"}",
            10.0,
        ),
        (
            "lsnpipe_rows_applied_total{op=\"delete\",table=\"public.a\"}",
            5.0,
        ),
        (
            "lsnpipe_rows_applied_total{op=\"insert\",table=\"public.b\"}",
            7.0,
        ),
        (
            "lsnpipe_rows_applied_total{op=\"truncate\",table=\"public.b\"}",
            1.0,
        ),
        ("lsnpipe_transactions_applied_total", 5.0),
    ];
    support::wait_until("every counter to be exact", WAIT, || async {
        let body = scrape(addr).await;
        expected
            .iter()
            .all(|(series, v)| sample(&body, series) == Some(*v))
    })
    .await;
    let body = scrape(addr).await;
    for (series, v) in expected {
        assert_eq!(sample(&body, series), Some(v), "{series}\n{body}");
    }
    assert!(sample(&body, "lsnpipe_received_messages_total{kind=\"commit\"}") >= Some(5.0));

    // Idle from here: lsnpipe confirms past this point with nothing left to apply. (Not
    // lsnpipe_lag_bytes == 0: other tests' databases on the shared source keep writing WAL,
    // which keeps a status update's worth of bytes in flight for as long as they do.)
    let idle_from = support::current_wal_lsn(&s).await as f64;
    support::wait_until("lag to return to zero while idle", WAIT, || async {
        let body = scrape(addr).await;
        sample(&body, "lsnpipe_flushed_lsn").is_some_and(|f| f >= idle_from)
            && sample(&body, "lsnpipe_lag_seconds") == Some(0.0)
    })
    .await;
    let ready = request(addr, "GET", "/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    lsnpipe.stop().await;
}

#[tokio::test]
async fn readyz_turns_503_while_the_target_is_down_and_200_after() {
    let source = support::source();
    let target = support::private_cluster_on(support::Side::Target, "readyz_dst", &[]);
    let db = support::unique_name("readyz");
    support::create_db(source, &db).await;
    support::create_db(&target, &db).await;
    let slot = support::unique_name("readyz_slot");
    prepare(source, &target, &db, &slot).await;
    let (lsnpipe, addr) = start(source, &target, &db, &slot).await;

    support::wait_until("ready while streaming", WAIT, || async {
        request(addr, "GET", "/readyz").await.status == 200
    })
    .await;
    target.with(|c| c.stop()).unwrap();
    // A change makes the applier notice the lost target at once.
    let s = support::connect(source, &db).await;
    support::exec(&s, "INSERT INTO a VALUES (1, 'while down')").await;
    support::wait_until("not ready while the target is down", WAIT, || async {
        let reply = request(addr, "GET", "/readyz").await;
        reply.status == 503 && !reply.body.is_empty()
    })
    .await;
    target.with(|c| c.start_again()).unwrap();
    support::wait_until("ready again once the target is back", WAIT, || async {
        request(addr, "GET", "/readyz").await.status == 200
    })
    .await;
    let t = support::connect(&target, &db).await;
    support::converge(&s, &t, &["a"]).await;
    lsnpipe.stop().await;
}

/// A real Prometheus scrapes a replicating lsnpipe; PromQL through its HTTP API returns the lag.
#[tokio::test]
async fn prometheus_scrapes_a_replication_and_answers_promql() {
    let db = support::test_dbs("prom").await;
    let slot = support::unique_name("prom_slot");
    let (source, target) = (support::source(), support::target());
    prepare(source, target, &db, &slot).await;
    let (lsnpipe, addr) = start(source, target, &db, &slot).await;
    let s = support::connect(source, &db).await;
    support::exec(
        &s,
        "INSERT INTO a SELECT g, 'x' FROM generate_series(1, 1000) g",
    )
    .await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/prometheus-smoke.sh");
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .arg(addr.to_string())
        .env("SMOKE_TIMEOUT", "60")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "prometheus-smoke.sh failed (CI installs the Debian package `prometheus`): {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let value: f64 = stdout
        .trim()
        .strip_prefix("lsnpipe_lag_bytes ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no lag value in {stdout:?}"));
    assert!(value >= 0.0);
    lsnpipe.stop().await;
}

/// Poll `check` until it holds, failing at once (with the log) if lsnpipe has exited.
async fn until<F, Fut>(lsnpipe: &mut Running, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = lsnpipe.child.try_wait().unwrap() {
            panic!(
                "lsnpipe exited ({status}) before {what}:\n{}",
                lsnpipe.log()
            );
        }
        if check().await {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            lsnpipe.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_first_start_with_create_slot_logs_no_slot_warning() {
    let (db, slot, s, t) = support::replicated_db(
        "quietstart",
        "CREATE TABLE a (id int PRIMARY KEY)",
        "CREATE PUBLICATION pub FOR TABLE a",
    )
    .await;
    let addr = support::free_addr();
    let listen = addr.to_string();
    // The slot monitor reads at once (before the pipeline has created the slot), then every
    // second.
    let mut lsnpipe = support::run(
        &db,
        &slot,
        &[
            "--create-slot",
            "--snapshot=false",
            "--slot-monitor-interval-secs",
            "1",
            "--metrics-listen",
            &listen,
        ],
    );
    // Rows written before the slot exists would not be streamed (no initial copy here).
    until(&mut lsnpipe, "lsnpipe to create the slot", || {
        support::slot_exists(&s, &slot)
    })
    .await;
    support::exec(&s, "INSERT INTO a SELECT generate_series(1, 10)").await;
    until(&mut lsnpipe, "rows on the target", || async {
        support::count(&t, "a").await == 10
    })
    .await;
    // The monitor has read the slot the pipeline created.
    let reserved = r#"lsnpipe_slot_wal_status{status="reserved"}"#;
    until(&mut lsnpipe, "the monitor to see the slot", || async move {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => sample(&scrape(addr).await, reserved) == Some(1.0),
            Err(_) => false,
        }
    })
    .await;
    let log = lsnpipe.stop().await;
    assert!(log.contains("streaming"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("replication slot")),
        "{log}"
    );
}
