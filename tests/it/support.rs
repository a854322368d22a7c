//! Shared fixtures for the integration tests: one source and one target cluster per test binary,
//! started on first use and stopped when the process exits (also after failed tests); each test
//! makes its own databases and slot names, so tests run in parallel.
//!
//! `PG_BINDIR_SOURCE` and `PG_BINDIR_TARGET` choose the server build of each side (unset: the
//! one `cluster::find_bindir` finds), so one run can test a source of one major against a target
//! of another (`scripts/pg-versions.sh`). Private clusters follow the side they stand in for.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use lsnpipe::cluster::LocalCluster;
use tokio_postgres::{Client, NoTls};

struct Pair {
    source: LocalCluster,
    target: LocalCluster,
}

/// Clusters owned by this process; `atexit` drops them because statics never are.
static OWNED: Mutex<Vec<LocalCluster>> = Mutex::new(Vec::new());
static PAIR: OnceLock<(ClusterRef, ClusterRef)> = OnceLock::new();

/// A handle to a cluster that lives until the process exits.
#[derive(Debug, Clone)]
pub struct ClusterRef {
    pub name: String,
    pub port: u16,
    pub root: std::path::PathBuf,
    /// The server's major version (14, …, 18).
    pub major: u32,
}

impl ClusterRef {
    fn of(c: &LocalCluster) -> Self {
        ClusterRef {
            name: c.name().to_owned(),
            port: c.port(),
            root: c.root().to_owned(),
            major: c.major().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    pub fn conn_string(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// Run `f` on the underlying cluster (for configuration changes).
    pub fn with<R>(&self, f: impl FnOnce(&LocalCluster) -> R) -> R {
        let owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
        let cluster = owned
            .iter()
            .find(|c| c.root() == self.root)
            .expect("cluster is owned by this process");
        f(cluster)
    }
}

extern "C" fn stop_clusters_at_exit() {
    let clusters = std::mem::take(&mut *OWNED.lock().unwrap_or_else(|e| e.into_inner()));
    drop(clusters);
}

fn own(cluster: LocalCluster) -> ClusterRef {
    let handle = ClusterRef::of(&cluster);
    OWNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(cluster);
    handle
}

fn pair() -> &'static (ClusterRef, ClusterRef) {
    PAIR.get_or_init(|| {
        #[allow(unsafe_code)]
        // SAFETY: registers a plain extern "C" function with no arguments; it only touches a
        // Mutex-guarded static and runs once, at process exit.
        unsafe {
            libc::atexit(stop_clusters_at_exit);
        }
        let source = std::thread::spawn(|| start(Side::Source, "source", &[]));
        let target = start(Side::Target, "target", &[]);
        let source = source.join().expect("source start thread");
        let pair = Pair { source, target };
        (own(pair.source), own(pair.target))
    })
}

/// The shared source cluster (`wal_level = logical`).
pub fn source() -> &'static ClusterRef {
    &pair().0
}

/// The shared target cluster.
pub fn target() -> &'static ClusterRef {
    &pair().1
}

/// Which shared cluster a cluster stands in for: it decides the server build.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    fn bindir_var(self) -> &'static str {
        match self {
            Side::Source => "PG_BINDIR_SOURCE",
            Side::Target => "PG_BINDIR_TARGET",
        }
    }
}

fn start(side: Side, name: &str, settings: &[(&str, &str)]) -> LocalCluster {
    let bindir = lsnpipe::cluster::role_bindir(side.bindir_var()).unwrap_or_else(|e| panic!("{e}"));
    LocalCluster::start_with_bindir(name, bindir, settings).unwrap_or_else(|e| panic!("{e}"))
}

/// A cluster of this test's own, for tests that restart or reconfigure a server; it runs the
/// source's server build.
pub fn private_cluster(name: &str, settings: &[(&str, &str)]) -> ClusterRef {
    private_cluster_on(Side::Source, name, settings)
}

/// A cluster of this test's own that stands in for `side` (and runs that side's server build).
pub fn private_cluster_on(side: Side, name: &str, settings: &[(&str, &str)]) -> ClusterRef {
    pair();
    own(start(side, name, settings))
}

/// A physical standby of `primary` (a private cluster), from a copy of its data directory made
/// while it is stopped cleanly; see `LocalCluster::start_standby_of`.
pub fn standby_of(primary: &ClusterRef, name: &str, settings: &[(&str, &str)]) -> ClusterRef {
    let standby = primary
        .with(|p| LocalCluster::start_standby_of(p, name, settings))
        .unwrap_or_else(|e| panic!("{e}"));
    own(standby)
}

/// A name no other test in this process uses: `prefix_N`.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Connect with tokio-postgres, driving the connection on a background task.
pub async fn connect(cluster: &ClusterRef, dbname: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(&cluster.conn_string(dbname), NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {} db {dbname}: {e}", cluster.name));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Run `sql` (one statement or several) on `client`; panics naming it on error.
pub async fn exec(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Create database `name` on `cluster`.
pub async fn create_db(cluster: &ClusterRef, name: &str) {
    let admin = connect(cluster, "postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
}

/// A database of the same fresh name on both the source and the target.
pub async fn test_dbs(prefix: &str) -> String {
    let name = unique_name(prefix);
    create_db(source(), &name).await;
    create_db(target(), &name).await;
    name
}

/// The usual start of a replication test: a fresh database of one name on the shared source and
/// target, `ddl` run on both, then `source_sql` (a publication, say) on the source. Returns the
/// database, a fresh slot name (the slot is not created) and a client on each side.
pub async fn replicated_db(
    prefix: &str,
    ddl: &str,
    source_sql: &str,
) -> (String, String, Client, Client) {
    let db = test_dbs(prefix).await;
    let slot = unique_name(&format!("{prefix}_slot"));
    let source_client = connect(source(), &db).await;
    let target_client = connect(target(), &db).await;
    source_client.batch_execute(ddl).await.unwrap();
    target_client.batch_execute(ddl).await.unwrap();
    source_client.batch_execute(source_sql).await.unwrap();
    (db, slot, source_client, target_client)
}

/// How long the helpers below wait for lsnpipe or the target (a bound for a stuck test, not a
/// pace: every wait polls).
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Poll `check` until it returns true; panic with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Wait until `target` records this slot's initial copy as done.
pub async fn copy_done(target: &Client, slot: &str) {
    wait_until("the initial copy to finish", WAIT, || async {
        target
            .query_opt(
                "SELECT 1 FROM lsnpipe.copy_run WHERE slot = $1 AND status = 'done'",
                &[&slot],
            )
            .await
            .is_ok_and(|row| row.is_some())
    })
    .await;
}

/// Every row of `table`, as text, sorted (duplicates kept): equal multisets compare equal.
pub async fn table_rows(client: &Client, table: &str) -> Vec<String> {
    try_table_rows(client, table)
        .await
        .unwrap_or_else(|e| panic!("read {table}: {e}"))
}

/// [`table_rows`], or the error while the table cannot be read (it does not exist yet, say).
pub async fn try_table_rows(
    client: &Client,
    table: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let sql = format!("SELECT x::text FROM {table} x ORDER BY 1");
    let rows = client.query(&sql, &[]).await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// True when each table holds the same rows (with multiplicity) on both sides; false while a
/// table cannot be read on either side.
pub async fn tables_equal(source: &Client, target: &Client, tables: &[&str]) -> bool {
    for table in tables {
        let (Ok(s), Ok(t)) = (
            try_table_rows(source, table).await,
            try_table_rows(target, table).await,
        ) else {
            return false;
        };
        if s != t {
            return false;
        }
    }
    true
}

/// Wait until each table holds the same rows on both sides; after [`WAIT`], panic with the
/// first difference.
pub async fn converge(source: &Client, target: &Client, tables: &[&str]) {
    let deadline = std::time::Instant::now() + WAIT;
    while !tables_equal(source, target, tables).await {
        if std::time::Instant::now() > deadline {
            assert_tables_equal(source, target, tables).await;
            panic!("the target kept differing from the source in {tables:?} for {WAIT:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Panic with the first difference when a table differs between source and target.
pub async fn assert_tables_equal(source: &Client, target: &Client, tables: &[&str]) {
    for table in tables {
        let s = table_rows(source, table).await;
        let t = table_rows(target, table).await;
        if s != t {
            let missing: Vec<_> = s.iter().filter(|r| !t.contains(r)).take(5).collect();
            let extra: Vec<_> = t.iter().filter(|r| !s.contains(r)).take(5).collect();
            panic!(
                "{table} differs: source {} rows, target {} rows; missing on target (first 5): \
                 {missing:?}; extra on target: {extra:?}",
                s.len(),
                t.len()
            );
        }
    }
}

/// The `lsnpipe` binary built for this test run.
pub fn lsnpipe_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lsnpipe"));
    for (key, _) in std::env::vars() {
        if key.starts_with("LSNPIPE_") || key.starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env(
        "RUST_LOG",
        std::env::var("LSNPIPE_TEST_LOG").unwrap_or_else(|_| "info".into()),
    );
    cmd
}

/// `lsnpipe run` from `source_db` to `target_db` on the given clusters.
pub fn lsnpipe_run(
    source: &ClusterRef,
    source_db: &str,
    target: &ClusterRef,
    target_db: &str,
    publication: &str,
    slot: &str,
    extra: &[&str],
) -> std::process::Command {
    let mut cmd = lsnpipe_command();
    cmd.arg("run")
        .args(["--source", &source.conn_string(source_db)])
        .args(["--target", &target.conn_string(target_db)])
        .args(["--publication", publication, "--slot", slot])
        .args(extra);
    if !extra.contains(&"--metrics-listen") {
        cmd.args(["--metrics-listen", "off"]);
    }
    cmd
}

/// `lsnpipe <subcommand>` for publication `pub` and `slot`, between database `db` on the shared
/// source and the same-named database on the shared target.
pub fn lsnpipe_on(subcommand: &str, db: &str, slot: &str) -> std::process::Command {
    let mut cmd = lsnpipe_command();
    cmd.arg(subcommand)
        .args(["--source", &source().conn_string(db)])
        .args(["--target", &target().conn_string(db)])
        .args(["--publication", "pub", "--slot", slot]);
    cmd
}

/// `lsnpipe run` of publication `pub` from database `db` on the shared source to the same-named
/// database on the shared target.
pub fn run_command(db: &str, slot: &str, extra: &[&str]) -> std::process::Command {
    lsnpipe_run(source(), db, target(), db, "pub", slot, extra)
}

/// `lsnpipe run` of publication `pub` from `db` on `source` to the same-named database on
/// `target` (clusters of the test's own, or reached through a proxy), started.
pub fn run_between(
    source: &ClusterRef,
    target: &ClusterRef,
    db: &str,
    slot: &str,
    extra: &[&str],
) -> Running {
    Running::spawn(lsnpipe_run(source, db, target, db, "pub", slot, extra))
}

/// [`run_command`], started.
pub fn run(db: &str, slot: &str, extra: &[&str]) -> Running {
    Running::spawn(run_command(db, slot, extra))
}

/// Run lsnpipe expecting it to stop by itself with an error; return its log.
pub async fn run_expecting_error(cmd: std::process::Command) -> String {
    Running::spawn(cmd).failure().await
}

/// A running `lsnpipe` whose stderr is collected; killed when dropped.
pub struct Running {
    pub child: std::process::Child,
    log: std::sync::Arc<Mutex<String>>,
}

impl Running {
    pub fn spawn(mut cmd: std::process::Command) -> Running {
        use std::io::BufRead;
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn lsnpipe");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = std::sync::Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        Running { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status (within 60 s).
    pub async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait(std::time::Duration::from_secs(60)).await
    }

    /// SIGTERM, and the log of a clean exit (panics with the log on any other exit).
    pub async fn stop(self) -> String {
        let (status, log) = self.terminate().await;
        assert!(
            status.success(),
            "lsnpipe did not stop cleanly: {status:?}; log:\n{log}"
        );
        log
    }

    /// Poll `check` until it returns true; after [`WAIT`], panic naming `what`, with the log.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = std::time::Instant::now() + WAIT;
        while !check().await {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}; lsnpipe's log:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Wait until this lsnpipe has made `tables` equal on both sides (see [`converge`]).
    pub async fn converge(&self, source: &Client, target: &Client, tables: &[&str]) {
        self.wait_until(&format!("{tables:?} to be equal on both sides"), || {
            tables_equal(source, target, tables)
        })
        .await;
    }

    /// Wait for lsnpipe to stop by itself with an error; its log.
    pub async fn failure(&mut self) -> String {
        let (status, log) = self.wait(WAIT).await;
        assert!(!status.success(), "lsnpipe should have failed; log:\n{log}");
        log
    }

    /// Wait for the process to exit by itself.
    pub async fn wait(
        &mut self,
        timeout: std::time::Duration,
    ) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread drain the pipe.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                return (status, self.log());
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "lsnpipe did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(mut self) {
        self.kill();
    }

    /// SIGKILL, and wait for the process to be gone (for a handle that is then replaced).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A local address nothing listens on (for a metrics server or a proxy).
pub fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Run pgbench from the cluster's binaries (or PATH) against `dbname`.
pub fn pgbench(cluster: &ClusterRef, dbname: &str, args: &[&str]) -> std::process::Output {
    // A downloaded server build has no pgbench: then the one on PATH.
    let bin = lsnpipe::cluster::find_bindir()
        .map(|d| d.join("pgbench"))
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "pgbench".into());
    std::process::Command::new(bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(args)
        .arg(dbname)
        .output()
        .expect("run pgbench")
}

/// [`pgbench`] that must succeed.
pub fn pgbench_ok(cluster: &ClusterRef, dbname: &str, args: &[&str]) -> std::process::Output {
    let out = pgbench(cluster, dbname, args);
    assert!(out.status.success(), "pgbench {args:?}: {out:?}");
    out
}

/// [`pgbench`] in a thread of its own: a load that runs alongside the test.
pub fn pgbench_load(
    cluster: &ClusterRef,
    dbname: &str,
    args: &[&str],
) -> std::thread::JoinHandle<std::process::Output> {
    let (cluster, dbname) = (cluster.clone(), dbname.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pgbench(&cluster, &dbname, &args)
    })
}

/// The tables `pgbench -i` makes; `pgbench_history` has no key.
pub const PGBENCH_TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

/// pgbench data of `scale` on `source`, and the same tables with their keys but no rows on
/// `target`: the start of an initial copy.
pub fn pgbench_to_copy(source: &ClusterRef, target: &ClusterRef, dbname: &str, scale: &str) {
    pgbench_ok(source, dbname, &["-i", "-q", "-s", scale]);
    // Drop, create tables, primary keys: the schema without data.
    pgbench_ok(target, dbname, &["-i", "-q", "-I", "dtp"]);
}

/// pgbench tables on both sides (`pgbench -i` is deterministic), a publication `pub` of them and
/// a slot.
pub async fn pgbench_pair(source: &ClusterRef, target: &ClusterRef, dbname: &str, slot: &str) {
    for cluster in [source, target] {
        pgbench_ok(cluster, dbname, &["-i", "-q", "-s", "1"]);
    }
    let client = connect(source, dbname).await;
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION pub FOR TABLE {}",
            PGBENCH_TABLES.join(", ")
        ))
        .await
        .unwrap();
    create_slot(&client, slot).await;
}

/// [`pgbench_pair`] in a fresh database of the shared clusters; the database and the slot.
pub async fn pgbench_db(prefix: &str) -> (String, String) {
    let db = test_dbs(prefix).await;
    let slot = unique_name(&format!("{prefix}_slot"));
    pgbench_pair(source(), target(), &db, &slot).await;
    (db, slot)
}

/// Wait until the pgbench tables are equal on both sides, and check that the load ran.
pub async fn pgbench_converge(source: &ClusterRef, target: &ClusterRef, dbname: &str) {
    let s = connect(source, dbname).await;
    let t = connect(target, dbname).await;
    converge(&s, &t, &PGBENCH_TABLES).await;
    assert!(count(&s, "pgbench_history").await > 0, "the load ran");
}

/// Whether `table` exists and holds at least one row.
pub async fn has_rows(client: &Client, table: &str) -> bool {
    client
        .query_one(&format!("SELECT count(*) > 0 FROM {table}"), &[])
        .await
        .is_ok_and(|r| r.get(0))
}

/// A pgoutput slot named `slot`, created with SQL in its own transaction.
pub async fn create_slot(client: &Client, slot: &str) {
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("create slot {slot}: {e}"));
}

/// The slot's confirmed flush position as a byte offset (0 when it does not exist yet).
pub async fn slot_confirmed(client: &Client, slot: &str) -> i64 {
    client
        .query_one(
            "SELECT coalesce(pg_wal_lsn_diff(confirmed_flush_lsn, '0/0'), 0)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0)
}

/// The first column of every row `sql` returns, as text.
pub async fn strings(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<String> {
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Whether a replication slot named `slot` exists.
pub async fn slot_exists(client: &Client, slot: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("look up slot {slot}: {e}"))
        .get::<_, i64>(0)
        == 1
}

/// Whether a session holds slot `slot` (false while it does not exist).
pub async fn slot_active(client: &Client, slot: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) = 1 FROM pg_replication_slots \
             WHERE slot_name = $1 AND active_pid IS NOT NULL",
            &[&slot],
        )
        .await
        .is_ok_and(|r| r.get(0))
}

/// The server's current WAL write position as a byte offset.
pub async fn current_wal_lsn(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("read the current WAL position: {e}"))
        .get(0)
}

/// `SELECT count(*)` of `table`.
pub async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

/// A write load on the source until stopped: `statement(n)` for n = 1, 2, … with `pause`
/// between rounds, on a session of its own.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub async fn start(
        db: &str,
        pause: std::time::Duration,
        statement: impl Fn(i32) -> String + Send + 'static,
    ) -> Load {
        let client = connect(source(), db).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                client.batch_execute(&statement(n)).await.unwrap();
                tokio::time::sleep(pause).await;
            }
        });
        Load { stop, task }
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
    }
}
