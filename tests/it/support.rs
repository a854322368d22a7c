//! Shared fixtures for the integration tests: one source and one target cluster per test binary,
//! started on first use and stopped when the process exits (also after failed tests); each test
//! makes its own databases and slot names, so tests run in parallel.

#![allow(dead_code)]

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
}

impl ClusterRef {
    fn of(c: &LocalCluster) -> Self {
        ClusterRef {
            name: c.name().to_owned(),
            port: c.port(),
            root: c.root().to_owned(),
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
        let source = std::thread::spawn(|| LocalCluster::start("source", &[]));
        let target = LocalCluster::start("target", &[]).unwrap_or_else(|e| panic!("{e}"));
        let source = source
            .join()
            .expect("source start thread")
            .unwrap_or_else(|e| panic!("{e}"));
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

/// A cluster of this test's own, for tests that restart or reconfigure a server.
pub fn private_cluster(name: &str, settings: &[(&str, &str)]) -> ClusterRef {
    pair();
    own(LocalCluster::start(name, settings).unwrap_or_else(|e| panic!("{e}")))
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
