//! Shared fixtures for the integration tests: one source and one target cluster per test binary,
//! started on first use and stopped when the process exits (also after failed tests); each test
//! makes its own databases and slot names, so tests run in parallel.
//!
//! `PG_BINDIR_SOURCE` and `PG_BINDIR_TARGET` choose the server build of each side (unset: the
//! one `cluster::find_bindir` finds), so one run can test a source of one major against a target
//! of another (`scripts/pg-versions.sh`). Private clusters follow the side they stand in for.
//!
//! Here: the clusters. `db`: a test's databases, tables and slots, SQL, comparing source and
//! target, waiting for a condition. `process`: the lsnpipe binary, run and stopped. `pgbench`:
//! pgbench tables and load.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use lsnpipe::cluster::LocalCluster;
use tokio_postgres::{Client, NoTls};

mod db;
mod pgbench;
mod process;

pub use db::*;
pub use pgbench::*;
pub use process::*;

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

/// The value of environment variable `name` (a knob of a long or measuring test), `default`
/// when unset; panics when it does not parse.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// A seed from the clock, for random schedules that are printed so a failure can be replayed.
pub fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    u64::from(nanos) | 1
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
