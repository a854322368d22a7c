//! Fault injection under a running pgbench load: links reset, silenced, delayed and throttled
//! (through an in-test proxy, `faults/proxy.rs`), servers stopped with `-m immediate`, lsnpipe
//! killed with SIGKILL, a read-only target and an invalidated slot. Every scenario ends with the
//! target equal to the source (pgbench_history as a multiset), lsnpipe still running unless it
//! had to stop, and an assertion on how long recovery took.
//!
//! `LSNPIPE_FAULT_LOOP_SECS=N cargo test --test it faults::random_loop -- --ignored` runs
//! random faults on both links and both servers for N seconds (seed printed, or taken from
//! `LSNPIPE_FAULT_SEED`).

mod copy_restart;
mod crashes;
mod links;
mod proxy;
mod random_loop;
mod read_only;
mod slot_invalidation;
mod stalls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proxy::Proxy;
use tokio_postgres::Client;

use crate::support::{self, ClusterRef, Running};

pub(crate) const WAIT: Duration = Duration::from_secs(120);
/// The acceptance settings: a silent link is noticed within 15 s.
pub(crate) const TIMEOUTS: [&str; 4] = ["--replication-timeout", "10", "--target-timeout", "10"];
/// Streaming again after a failed server or link is back (the goal), with a second of
/// slack for a loaded 2-core machine running other tests beside this one.
pub(crate) const RECOVERY: Duration = Duration::from_secs(6);
/// A silent link is noticed within this long (acceptance: 15 s with 10 s timeouts).
pub(crate) const NOTICED: Duration = Duration::from_secs(15);
/// After a silent link heals: a connection attempt made while it was silent may still wait out
/// its connect timeout (10 s), then one pause (at most 3 s).
pub(crate) const RECOVERY_AFTER_SILENCE: Duration = Duration::from_secs(20);

/// pgbench against the source in short rounds until stopped; a round that fails (the source
/// restarting) is followed by a short pause and another.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    pub(crate) fn start(source: &ClusterRef, db: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (source, db, flag) = (source.clone(), db.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                // Rate-limited: the point is a steady stream of commits, not saturation.
                let out =
                    support::pgbench(&source, &db, &["-n", "-c", "2", "-T", "2", "-R", "150"]);
                if !out.status.success() {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        });
        Load { stop, thread }
    }

    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// Lines that mark a session streaming, and sessions that ended with a retry.
pub(crate) fn sessions_started(log: &str) -> usize {
    log.lines().filter(|l| l.contains(" streaming ")).count()
}

pub(crate) fn interruptions(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("will reconnect in"))
        .count()
}

pub(crate) async fn history_rows(target: &Client) -> i64 {
    target
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1)
}

/// Time from `since` until a new session streams (more than `sessions_before` in the log) and
/// a source transaction committed after that reaches the target.
pub(crate) async fn streaming_again(
    lsnpipe: &Running,
    target: &Client,
    sessions_before: usize,
    since: Instant,
    limit: Duration,
) -> Duration {
    support::wait_until("a new session to stream", limit, || async {
        sessions_started(&lsnpipe.log()) > sessions_before
    })
    .await;
    let applied = history_rows(target).await;
    support::wait_until("rows to flow again", limit, || async {
        history_rows(target).await > applied
    })
    .await;
    since.elapsed()
}

/// Wait until rows flow: the pipeline is streaming under the load.
pub(crate) async fn flowing(target: &Client) {
    let before = history_rows(target).await;
    support::wait_until("rows to flow", WAIT, || async {
        history_rows(target).await > before
    })
    .await;
}

pub(crate) fn still_running(lsnpipe: &mut Running) {
    assert!(
        lsnpipe.child.try_wait().unwrap().is_none(),
        "lsnpipe exited; log:\n{}",
        lsnpipe.log()
    );
}

/// The same cluster, reached through `proxy`.
pub(crate) fn via(cluster: &ClusterRef, proxy: &Proxy) -> ClusterRef {
    ClusterRef {
        port: proxy.port(),
        ..cluster.clone()
    }
}

/// Turn `db` on the target read-only (or back) and end the sessions that already run there, so
/// lsnpipe's next session sees the setting.
pub(crate) async fn set_read_only(target: &ClusterRef, db: &str, on: bool) {
    let admin = support::connect(target, "postgres").await;
    let sql = if on {
        format!("ALTER DATABASE \"{db}\" SET default_transaction_read_only = on")
    } else {
        format!("ALTER DATABASE \"{db}\" RESET default_transaction_read_only")
    };
    support::exec(&admin, &sql).await;
    if on {
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db],
            )
            .await
            .unwrap();
    }
}

/// The value of one sample line (`name{labels} value`) in a scrape.
pub(crate) fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}
