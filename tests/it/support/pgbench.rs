//! pgbench as a maker of tables and load: its tables on both sides, a load in a thread of its
//! own, and the check that the target caught up with it.

use super::*;

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
