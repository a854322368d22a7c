//! The metrics layer over real HTTP and against the real source: the server's routes and
//! shutdown, a scrape checked by `promtool`, the alert rules, and the slot monitor.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lsnpipe::Lsn;
use lsnpipe::metrics::{self, Health, Metrics, RowOp, Side, names};
use prometheus::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support;

const DEADLINE: Duration = Duration::from_secs(10);

/// A metrics server on an ephemeral loopback port.
struct Server {
    addr: SocketAddr,
    registry: Registry,
    metrics: Metrics,
    health: Arc<Health>,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start_server(ready_max_lag_bytes: u64) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).expect("register metrics");
    let health = Arc::new(Health::new());
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(metrics::serve(
        listener,
        registry.clone(),
        Arc::clone(&health),
        ready_max_lag_bytes,
        shutdown,
    ));
    Server {
        addr,
        registry,
        metrics,
        health,
        stop,
        task,
    }
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection, read to the server's close.
pub(crate) async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the metrics server");
    let head = format!("{method} {path} HTTP/1.1\r\nHost: lsnpipe\r\nConnection: close\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the request");
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut raw))
        .await
        .expect("server answers and closes within the deadline")
        .expect("read the response");
    let raw = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header line");
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn healthz_and_unknown_paths_and_methods() {
    let server = start_server(1024).await;
    let reply = request(server.addr, "GET", "/healthz").await;
    assert_eq!(reply.status, 200, "{reply:?}");

    let reply = request(server.addr, "GET", "/nope").await;
    assert_eq!(reply.status, 404, "{reply:?}");
    let reply = request(server.addr, "POST", "/nope").await;
    assert_eq!(reply.status, 404, "{reply:?}");

    for path in ["/metrics", "/healthz", "/readyz"] {
        let reply = request(server.addr, "POST", path).await;
        assert_eq!(reply.status, 405, "{path}: {reply:?}");
        assert_eq!(reply.header("allow"), Some("GET"), "{path}");
    }
}

#[tokio::test]
async fn metrics_endpoint_serves_the_passed_in_registry_as_text() {
    let server = start_server(1024).await;
    server.metrics.set_positions(Lsn::new(5000), Lsn::new(1234));
    let reply = request(server.addr, "GET", "/metrics").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    assert!(
        reply.body.contains("\nlsnpipe_lag_bytes 3766\n"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("\nlsnpipe_flushed_lsn 1234\n"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("# TYPE lsnpipe_lag_seconds gauge"));

    // Nothing comes from a global registry: a metric registered there is not served.
    let stray = prometheus::IntGauge::new("lsnpipe_test_global_only", "test").unwrap();
    prometheus::register(Box::new(stray)).unwrap();
    // …while one registered into the passed-in registry after start is.
    let late = prometheus::IntGauge::new("lsnpipe_test_late", "test").unwrap();
    late.set(7);
    server.registry.register(Box::new(late)).unwrap();
    let reply = request(server.addr, "GET", "/metrics").await;
    assert!(!reply.body.contains("lsnpipe_test_global_only"));
    assert!(
        reply.body.contains("\nlsnpipe_test_late 7\n"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn readyz_follows_the_health_state() {
    let server = start_server(1000).await;
    let reply = request(server.addr, "GET", "/readyz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body.trim(), "not streaming from the source");

    server.health.set_streaming(true);
    let reply = request(server.addr, "GET", "/readyz").await;
    assert_eq!(
        (reply.status, reply.body.trim()),
        (503, "target unreachable")
    );

    server.health.set_target_reachable(true);
    let reply = request(server.addr, "GET", "/readyz").await;
    assert_eq!((reply.status, reply.body.trim()), (200, "ready"));

    server.health.set_lag_bytes(1001);
    let reply = request(server.addr, "GET", "/readyz").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("lag 1001 bytes"), "{}", reply.body);

    server.health.set_lag_bytes(10);
    assert_eq!(request(server.addr, "GET", "/readyz").await.status, 200);
    server.health.set_streaming(false);
    assert_eq!(request(server.addr, "GET", "/readyz").await.status, 503);
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops_the_server() {
    let server = start_server(1024).await;
    // A kept-alive connection that has finished one request and sits idle.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: lsnpipe\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    server.stop.send(true).unwrap();
    let result = tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("server stops within the deadline after shutdown")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");

    // The idle connection is closed by the server (EOF), and nothing listens any more.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(DEADLINE, idle.read_to_end(&mut rest))
        .await
        .expect("idle connection closed after shutdown")
        .unwrap();
    assert_eq!(
        n,
        0,
        "unexpected bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(TcpStream::connect(server.addr).await.is_err());
}

/// Give every metric family a value, as a running pipeline would.
fn exercise_every_metric(metrics: &Metrics) {
    metrics.set_positions(Lsn::new(0x3_0000_2000), Lsn::new(0x3_0000_0000));
    metrics.set_oldest_unapplied_commit(Some(lsnpipe::clock::pg_clock_now() - 2_000_000));
    metrics.record_received("begin", 1, 21);
    metrics.record_received("insert", 10, 800);
    metrics.record_received("commit", 1, 26);
    metrics.record_applied_batch(
        1,
        [
            ("public.accounts", RowOp::Insert, 10),
            ("public.ledger", RowOp::Update, 3),
        ],
        Duration::from_millis(7),
    );
    metrics.status_updates_sent.inc();
    metrics.reconnect(Side::Source);
    metrics.error(lsnpipe::error_policy::ErrorKind::Apply);
    metrics.set_slot_state(Some((123_456, Some("reserved"))));
    metrics.snapshot_rows_copied(5000);
    metrics.set_snapshot_tables_remaining(2);
}

/// `promtool` from PATH; CI installs it (Debian package `prometheus`).
fn promtool() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool not found on PATH: install the Prometheus tools \
                 (Debian/Ubuntu: `apt-get install prometheus`) to run the metrics checks"
            )
        })
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[tokio::test]
async fn promtool_finds_no_problem_in_a_real_scrape() {
    let server = start_server(1024).await;
    exercise_every_metric(&server.metrics);
    let reply = request(server.addr, "GET", "/metrics").await;
    assert_eq!(reply.status, 200);
    for name in names::ALL {
        let kind = if name.ends_with("_total") {
            "counter"
        } else if *name == names::APPLY_BATCH_DURATION || *name == names::APPLY_BATCH_ROWS {
            "histogram"
        } else {
            "gauge"
        };
        let type_line = format!("# TYPE {name} {kind}\n");
        assert!(
            reply.body.contains(&type_line),
            "missing {type_line:?} in:\n{}",
            reply.body
        );
    }
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(reply.body.contains(&format!("\n{name} ")), "missing {name}");
    }

    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, reply.body.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {report}\nscrape:\n{}",
        reply.body
    );
}

fn run_promtool(args: &[&str]) {
    let out = Command::new(promtool())
        .args(args)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_and_scrape_config_are_valid() {
    let rules = repo_file("monitoring/alerts.yml");
    let config = repo_file("monitoring/prometheus.yml");
    run_promtool(&["check", "rules", rules.to_str().unwrap()]);
    run_promtool(&["check", "config", config.to_str().unwrap()]);
}

#[test]
fn alert_rules_fire_as_their_unit_tests_expect() {
    let tests = repo_file("monitoring/alerts_test.yml");
    run_promtool(&["test", "rules", tests.to_str().unwrap()]);
}

/// Poll `f` until it returns `Some`, or fail after the deadline with `what`.
async fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn slot_monitor_reports_retained_wal_and_status() {
    let db = support::test_dbs("slotmon").await;
    let slot = support::unique_name("slotmon_slot");
    let source = support::connect(support::source(), &db).await;
    support::create_slot(&source, &slot).await;
    // WAL written after the slot's restart_lsn is what the slot retains.
    source
        .batch_execute(
            "CREATE TABLE filler (id int, pad text);
             INSERT INTO filler SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();

    let registry = Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let monitor = tokio::spawn(metrics::run_slot_monitor(
        support::source().conn_string(&db),
        slot.clone(),
        metrics.clone(),
        Duration::from_millis(100),
        shutdown,
    ));
    let status = |s: &str| metrics.slot_wal_status.with_label_values(&[s]).get();

    let retained = poll("retained WAL bytes", || {
        let b = metrics.slot_retained_wal_bytes.get();
        (b > 100_000).then_some(b)
    })
    .await;
    assert_eq!(status("reserved"), 1, "retained {retained}");
    assert_eq!(status("missing"), 0);
    assert_eq!(metrics.errors.with_label_values(&["slot_monitor"]).get(), 0);

    source
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    poll("status missing after the slot is dropped", || {
        (status("missing") == 1).then_some(())
    })
    .await;
    assert_eq!(status("reserved"), 0);
    assert_eq!(metrics.slot_retained_wal_bytes.get(), 0);

    stop.send(true).unwrap();
    tokio::time::timeout(DEADLINE, monitor)
        .await
        .expect("slot monitor stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn slot_monitor_counts_errors_when_the_source_is_unreachable() {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    let (stop, shutdown) = watch::channel(false);
    // A port nothing listens on: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let monitor = tokio::spawn(metrics::run_slot_monitor(
        format!("host=127.0.0.1 port={port} user=postgres connect_timeout=2"),
        "any".to_owned(),
        metrics.clone(),
        Duration::from_millis(50),
        shutdown,
    ));
    poll("two counted slot monitor errors", || {
        (metrics.errors.with_label_values(&["slot_monitor"]).get() >= 2).then_some(())
    })
    .await;
    drop(stop);
    tokio::time::timeout(DEADLINE, monitor)
        .await
        .expect("slot monitor stops when the shutdown sender is dropped")
        .unwrap();
}

/// Every `expr` in the Grafana dashboard, JSON-unescaped (the file only escapes `"` and `\`).
fn dashboard_exprs() -> Vec<String> {
    let json = std::fs::read_to_string(repo_file("monitoring/grafana/lsnpipe-dashboard.json"))
        .expect("read the dashboard");
    json.lines()
        .filter_map(|l| l.trim().strip_prefix("\"expr\": \""))
        .map(|rest| {
            let raw = rest
                .trim_end_matches(',')
                .strip_suffix('"')
                .expect("an expr on one line");
            raw.replace("\\\"", "\"").replace("\\\\", "\\")
        })
        .collect()
}

#[test]
fn dashboard_queries_parse_as_promql() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "found only {} queries", exprs.len());
    // promtool parses recording rules' PromQL; Grafana's variables get plausible values.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace('\'', "''");
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: '{expr}'\n"
        ));
    }
    let dir = std::env::temp_dir().join(support::unique_name(&format!(
        "lsnpipe_dash_{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    run_promtool(&["check", "rules", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `lsnpipe_*` names used by the monitoring assets, with histogram series suffixes removed.
fn names_used_in(text: &str) -> Vec<String> {
    let mut used = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("lsnpipe_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| names::ALL.contains(f))
            .unwrap_or(name);
        // The bare prefix is prose ("names start with lsnpipe_"), not a metric.
        if family != "lsnpipe_" {
            used.push(family.to_owned());
        }
        rest = &tail[end..];
    }
    used
}

#[test]
fn monitoring_assets_and_docs_use_only_real_metric_names() {
    for file in [
        "monitoring/alerts.yml",
        "monitoring/alerts_test.yml",
        "monitoring/grafana/lsnpipe-dashboard.json",
        "docs/metrics.md",
    ] {
        let text = std::fs::read_to_string(repo_file(file)).unwrap();
        let used = names_used_in(&text);
        assert!(!used.is_empty(), "{file} names no metric");
        for name in used {
            assert!(
                names::ALL.contains(&name.as_str()),
                "{file} uses unknown metric {name}"
            );
        }
    }
    // And the docs describe every metric.
    let docs = std::fs::read_to_string(repo_file("docs/metrics.md")).unwrap();
    for name in names::ALL {
        assert!(
            docs.contains(&format!("`{name}`")),
            "docs/metrics.md does not document {name}"
        );
    }
}

#[tokio::test]
async fn prometheus_smoke_script_reads_the_lag_through_prometheus() {
    let server = start_server(1024).await;
    server
        .metrics
        .set_positions(Lsn::new(10_000), Lsn::new(6_234));
    let script = repo_file("scripts/prometheus-smoke.sh");
    let addr = server.addr.to_string();
    // The script blocks for a few seconds; keep the runtime free to serve the scrapes.
    let out = tokio::task::spawn_blocking(move || Command::new(script).arg(addr).output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "prometheus-smoke.sh failed (needs the Debian package `prometheus` and curl):\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "lsnpipe_lag_bytes 3766");
}

#[tokio::test]
async fn slot_monitor_stops_promptly_while_the_source_hangs() {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    // A "server" that accepts and never answers: the monitor's connect hangs.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn(async move {
        let (conn, _) = silent.accept().await.unwrap();
        let _ = accepted_tx.send(());
        // Hold the connection open until the test ends.
        std::future::pending::<()>().await;
        drop(conn);
    });
    let (stop, shutdown) = watch::channel(false);
    let monitor = tokio::spawn(metrics::run_slot_monitor(
        format!("host=127.0.0.1 port={port} user=postgres"),
        "any".to_owned(),
        metrics.clone(),
        Duration::from_secs(60),
        shutdown,
    ));
    tokio::time::timeout(DEADLINE, accepted_rx)
        .await
        .expect("the monitor connects at once")
        .unwrap();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), monitor)
        .await
        .expect("slot monitor stops on shutdown even while a read hangs")
        .unwrap();
    assert_eq!(metrics.errors.with_label_values(&["slot_monitor"]).get(), 0);
    holder.abort();
}
