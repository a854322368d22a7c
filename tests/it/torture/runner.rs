//! One torture run: fresh databases, the plan's schema on both sides, lsnpipe started with
//! `--create-slot` (initial copy), the clients' transactions and the faults, then the oracle.
//!
//! ```text
//!  create dbs ─▶ DDL ─▶ initial rows ─▶ lsnpipe run --create-slot ─┬─ client 0 (+ faults) ─┐
//!  (+ a native CREATE SUBSCRIPTION, for failing seeds)              ├─ client 1 … 3        ─┤
//!                                                                   ▼                        ▼
//!    copies done on the target ─▶ marker row on the source ─▶ seen on the target ─▶ compared
//! ```
//!
//! What committed is recorded in commit order (the trace): shrinking replays it in one client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::oracle::{clip, compare};
use super::process::{Lsnpipe, log_excerpt};
use super::workload::{Fault, Item, Plan, Stmt, Txn};
use crate::support::{self, ClusterRef, Running};

/// How long the initial copy may take, and how long catch-up may go without the target doing
/// anything: neither its progress row nor its WAL moving.
const CATCH_UP: Duration = Duration::from_secs(45);
/// How long catch-up may take in all while the target keeps writing. The progress row stands
/// still while one large transaction is applied (over 45 s for 100,000 rows in a debug build on
/// a loaded machine), so the target's WAL tells a busy lsnpipe from a stuck one; this bounds a
/// lsnpipe that keeps retrying one transaction, which writes WAL too.
const CATCH_UP_CAP: Duration = Duration::from_secs(600);

/// The torture pair: private clusters, because faults restart the target.
pub fn clusters() -> &'static (ClusterRef, ClusterRef) {
    static PAIR: OnceLock<(ClusterRef, ClusterRef)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let source = std::thread::spawn(|| support::private_cluster("torture_src", &[]));
        let target = support::private_cluster("torture_dst", &[]);
        (source.join().expect("start the torture source"), target)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// A table differs between source and target after catch-up.
    Differs,
    /// lsnpipe exited by itself (an error), or did not stop cleanly on SIGTERM.
    Stopped,
    /// lsnpipe kept running but the target did not catch up.
    Stuck,
    /// The run itself could not be set up (a generator bug, not lsnpipe's).
    Harness,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailKind,
    pub detail: String,
    /// lsnpipe's whole log of the run (every process), when the failure is lsnpipe's.
    pub log: String,
}

/// What a run did and found.
#[derive(Debug)]
pub struct Outcome {
    pub result: Result<(), Failure>,
    /// What committed before lsnpipe started.
    pub initial: Vec<Txn>,
    /// What committed (and which faults happened) afterwards, in commit order.
    pub trace: Vec<Item>,
    /// PostgreSQL's own replication of the same run, when asked for: `Ok` when its copy equals
    /// the source, else how not.
    pub native: Option<Result<(), String>>,
    pub elapsed: Duration,
    pub counts: Arc<Counts>,
}

impl Outcome {
    pub fn committed(&self) -> usize {
        self.initial.len()
            + self
                .trace
                .iter()
                .filter(|i| matches!(i, Item::Txn(t) if t.commit))
                .count()
    }
}

impl Failure {
    /// One line: what differs, or the last error lsnpipe logged, else the first line.
    pub fn headline(&self) -> String {
        if self.kind == FailKind::Differs {
            return clip(self.detail.lines().next().unwrap_or(""), 240);
        }
        let line = self
            .detail
            .lines()
            .rev()
            .find_map(|l| l.split_once(" ERROR ").map(|(_, rest)| rest))
            .unwrap_or_else(|| self.detail.lines().next().unwrap_or(""));
        clip(line, 240)
    }
}

fn fail(kind: FailKind, detail: impl Into<String>) -> Failure {
    Failure {
        kind,
        detail: detail.into(),
        log: String::new(),
    }
}

impl Failure {
    fn with_log(mut self, log: String) -> Failure {
        self.log = log;
        self
    }
}

/// Statements run and statements the source refused, across all clients of a run.
#[derive(Debug, Default)]
pub struct Counts {
    pub run: AtomicUsize,
    pub refused: AtomicUsize,
}

/// Run `txn` on `client`; the statements that took effect, or `None` when it did not commit
/// (an unguarded statement or the COMMIT failed).
async fn execute(client: &Client, txn: &Txn, counts: &Counts) -> Option<Txn> {
    counts.run.fetch_add(txn.stmts.len(), Ordering::Relaxed);
    let done = execute_inner(client, txn).await;
    let kept = done.as_ref().map_or(0, |t| t.stmts.len());
    counts
        .refused
        .fetch_add(txn.stmts.len() - kept, Ordering::Relaxed);
    done
}

async fn execute_inner(client: &Client, txn: &Txn) -> Option<Txn> {
    client.batch_execute("BEGIN").await.ok()?;
    let mut done: Vec<Stmt> = Vec::new();
    for s in &txn.stmts {
        if s.guard {
            if client
                .batch_execute("SAVEPOINT torture_guard")
                .await
                .is_err()
            {
                let _ = client.batch_execute("ROLLBACK").await;
                return None;
            }
            match client.batch_execute(&s.sql).await {
                Ok(()) => {
                    let _ = client
                        .batch_execute("RELEASE SAVEPOINT torture_guard")
                        .await;
                    done.push(s.clone());
                }
                Err(_) => {
                    if client
                        .batch_execute("ROLLBACK TO SAVEPOINT torture_guard")
                        .await
                        .is_err()
                    {
                        let _ = client.batch_execute("ROLLBACK").await;
                        return None;
                    }
                }
            }
        } else if client.batch_execute(&s.sql).await.is_ok() {
            done.push(s.clone());
        } else {
            let _ = client.batch_execute("ROLLBACK").await;
            return None;
        }
    }
    let end = if txn.commit { "COMMIT" } else { "ROLLBACK" };
    client.batch_execute(end).await.ok()?;
    Some(Txn {
        stmts: done,
        commit: txn.commit,
    })
}

async fn drop_slot(client: &Client, slot: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let r = client
            .query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        match r {
            Ok(_) => return,
            // Still active: the walsender of a killed lsnpipe takes a moment to notice.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Wait until the initial copy is over (some lsnpipe process of the run has streamed).
async fn copy_done(lsnpipe: &tokio::sync::Mutex<Lsnpipe>) {
    let deadline = Instant::now() + CATCH_UP;
    while Instant::now() < deadline {
        {
            let l = lsnpipe.lock().await;
            if l.paused || l.log().contains("streaming") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a `twin` runs beside the first lsnpipe before the first is killed.
const TWIN_OVERLAP: Duration = Duration::from_millis(1500);

/// Do `fault`; without `copy_faults`, server faults wait for the initial copy to finish.
async fn do_fault(
    fault: Fault,
    lsnpipe: &tokio::sync::Mutex<Lsnpipe>,
    copy_faults: bool,
) -> Result<(), Failure> {
    let (source, target) = clusters();
    if matches!(fault, Fault::TargetRestart | Fault::TargetCrash) && !copy_faults {
        copy_done(lsnpipe).await;
    }
    let mut l = lsnpipe.lock().await;
    match fault {
        Fault::Kill => {
            l.kill();
            if !l.paused {
                l.start();
            }
        }
        Fault::TargetRestart | Fault::TargetCrash => {
            let target = target.clone();
            let crash = fault == Fault::TargetCrash;
            tokio::task::spawn_blocking(move || {
                target.with(|c| {
                    if crash {
                        c.crash().and_then(|()| c.start_again())
                    } else {
                        c.restart()
                    }
                })
            })
            .await
            .map_err(|e| fail(FailKind::Harness, e.to_string()))?
            .map_err(|e| fail(FailKind::Harness, format!("restart the target: {e}")))?;
        }
        Fault::Twin => {
            if l.paused {
                return Ok(());
            }
            let twin = l.spawn();
            drop(l);
            // How long the two run side by side: the scenario, not a wait for a condition.
            tokio::time::sleep(TWIN_OVERLAP).await;
            let mut l = lsnpipe.lock().await;
            if l.paused {
                l.history.push_str(&twin.log());
                twin.kill9();
            } else {
                l.hand_over(twin);
            }
        }
        Fault::SlotDrop => {
            l.kill();
            let client = support::connect(source, &l.db).await;
            drop_slot(&client, &l.slot).await;
            l.slot_dropped = true;
            if !l.paused {
                l.start();
            }
        }
    }
    Ok(())
}

/// Run `plan`; with `native`, PostgreSQL's own subscription replicates the same run into a
/// second database on the target cluster, for comparison.
pub async fn run(plan: &Plan, native: bool) -> Outcome {
    let started = Instant::now();
    let db = support::unique_name(&format!("torture_{:x}", plan.seed & 0xffff_ffff));
    let mut outcome = Outcome {
        result: Ok(()),
        initial: Vec::new(),
        trace: Vec::new(),
        native: None,
        elapsed: Duration::ZERO,
        counts: Arc::default(),
    };
    let result = run_in(plan, native, &db, &mut outcome).await;
    outcome.result = result;
    cleanup(&db, native).await;
    outcome.elapsed = started.elapsed();
    outcome
}

async fn setup(plan: &Plan, db: &str, native: bool) -> Result<(), Failure> {
    let (source, target) = clusters();
    let harness = |what: &str, e: tokio_postgres::Error| {
        let detail = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string());
        fail(FailKind::Harness, format!("{what}: {detail}"))
    };
    support::create_db(source, db).await;
    support::create_db(target, db).await;
    let admin = support::connect(source, "postgres").await;
    if plan.settings.datestyle {
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{db}\" SET datestyle = 'SQL, DMY'; \
                 ALTER DATABASE \"{db}\" SET intervalstyle = 'sql_standard'"
            ))
            .await
            .map_err(|e| harness("datestyle", e))?;
    }
    let s = support::connect(source, db).await;
    s.batch_execute(&plan.schema.ddl(false))
        .await
        .map_err(|e| harness("source DDL", e))?;
    s.batch_execute(&plan.schema.publication(plan.settings.via_root))
        .await
        .map_err(|e| harness("publication", e))?;
    let t = support::connect(target, db).await;
    t.batch_execute(&plan.schema.ddl(true))
        .await
        .map_err(|e| harness("target DDL", e))?;
    if plan.settings.datestyle {
        // How the target parses: every setting lsnpipe's sessions must override.
        t.batch_execute(&format!(
            "ALTER DATABASE \"{db}\" SET datestyle = 'SQL, MDY'; \
             ALTER DATABASE \"{db}\" SET intervalstyle = 'iso_8601'; \
             ALTER DATABASE \"{db}\" SET xmloption = document; \
             ALTER DATABASE \"{db}\" SET array_nulls = off"
        ))
        .await
        .map_err(|e| harness("target settings", e))?;
    }
    if native {
        let native_db = format!("{db}_native");
        support::create_db(target, &native_db).await;
        let n = support::connect(target, &native_db).await;
        n.batch_execute(&plan.schema.ddl(true))
            .await
            .map_err(|e| harness("native DDL", e))?;
    }
    Ok(())
}

async fn start_native(db: &str) -> Result<(), Failure> {
    let (source, target) = clusters();
    let n = support::connect(target, &format!("{db}_native")).await;
    n.batch_execute(&format!(
        "CREATE SUBSCRIPTION \"{db}_sub\" CONNECTION '{}' PUBLICATION pub",
        source.conn_string(db)
    ))
    .await
    .map_err(|e| fail(FailKind::Harness, format!("create subscription: {e}")))
}

async fn run_in(plan: &Plan, native: bool, db: &str, outcome: &mut Outcome) -> Result<(), Failure> {
    let (source, _) = clusters();
    setup(plan, db, native).await?;
    let s = support::connect(source, db).await;
    for txn in &plan.initial {
        if let Some(done) = execute(&s, txn, &outcome.counts).await {
            outcome.initial.push(done);
        }
    }
    let st = &plan.settings;
    let args: Vec<String> = [
        "--create-slot",
        "--status-interval-ms",
        "200",
        "--max-batch-transactions",
        &st.max_batch_transactions.to_string(),
        "--max-batch-ms",
        &st.max_batch_ms.to_string(),
        "--copy-jobs",
        &st.copy_jobs.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let lsnpipe = Arc::new(tokio::sync::Mutex::new(Lsnpipe {
        running: None,
        args,
        db: db.to_owned(),
        slot: db.to_owned(),
        history: String::new(),
        slot_dropped: false,
        paused: false,
    }));
    lsnpipe.lock().await.start();
    if native {
        start_native(db).await?;
    }
    if let Some(ms) = st.copy_interrupt_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let mut l = lsnpipe.lock().await;
        l.kill();
        l.start();
    }
    // lsnpipe failing before the load still lets the load run: the native subscription, if
    // any, replicates it for the comparison.
    let early = if st.backlog {
        pause(&lsnpipe).await.err()
    } else {
        None
    };

    // The load: one task per client, each on its own connection.
    let trace: Arc<Mutex<Vec<Item>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for programme in plan.clients.clone() {
        let (trace, lsnpipe, db) = (trace.clone(), lsnpipe.clone(), db.to_owned());
        let counts = outcome.counts.clone();
        let copy_faults = plan.features.has("copy_faults");
        tasks.push(tokio::spawn(async move {
            let client = support::connect(&clusters().0, &db).await;
            for item in programme {
                match item {
                    Item::Txn(txn) => {
                        if let Some(done) = execute(&client, &txn, &counts).await {
                            trace
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Item::Txn(done));
                        }
                    }
                    Item::Fault(fault) => {
                        trace
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Item::Fault(fault));
                        do_fault(fault, &lsnpipe, copy_faults).await?;
                    }
                }
            }
            Ok::<(), Failure>(())
        }));
    }
    let mut load_result = Ok(());
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => load_result = Err(e),
            Err(e) => load_result = Err(fail(FailKind::Harness, format!("client task: {e}"))),
        }
    }
    outcome.trace = std::mem::take(&mut *trace.lock().unwrap_or_else(|e| e.into_inner()));
    load_result?;

    {
        let mut l = lsnpipe.lock().await;
        if l.paused && early.is_none() {
            l.paused = false;
            l.start();
        }
    }
    // The marker must reach the target through the stream. A copy that is still running (one
    // resumed after a fault takes a new snapshot) could copy the marker itself while other
    // tables still lag behind, so the marker waits for every copy to be over.
    let copied = match early {
        Some(failure) => Err(failure),
        None => copies_done(db, &lsnpipe).await,
    };
    if native {
        native_synced(db).await;
    }
    // Caught up: a marker row committed after everything else has reached the target (and
    // the native copy, which replicates even when lsnpipe failed early).
    s.batch_execute("INSERT INTO public._torture_marker VALUES (1)")
        .await
        .map_err(|e| fail(FailKind::Harness, format!("marker: {e}")))?;
    let result = match copied {
        Err(failure) => Err(failure),
        Ok(()) => catch_up_and_compare(plan, db, &lsnpipe).await,
    };
    if native {
        outcome.native = Some(native_result(plan, db).await);
    }
    result
}

/// Wait until the target's copy state says every copy of the run is over: the initial copy
/// (resumed ones included) done and no table pending.
async fn copies_done(db: &str, lsnpipe: &tokio::sync::Mutex<Lsnpipe>) -> Result<(), Failure> {
    let (_, target) = clusters();
    let t = support::connect(target, db).await;
    let slot = lsnpipe.lock().await.slot.clone();
    // A copy held up by the target's restarts waits out lsnpipe's reconnect back-off too.
    let deadline = Instant::now() + 2 * CATCH_UP;
    loop {
        let done = t
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM lsnpipe.copy_run WHERE slot = $1 AND status = 'done') \
                 AND NOT EXISTS (SELECT 1 FROM lsnpipe.copy_state \
                                 WHERE slot = $1 AND status = 'pending')",
                &[&slot],
            )
            .await
            .map(|r| r.get::<_, bool>(0))
            // Before lsnpipe created its state tables.
            .unwrap_or(false);
        if done {
            return Ok(());
        }
        let mut l = lsnpipe.lock().await;
        if let Some((status, log)) = l.exited() {
            if refused_dropped_slot(&l, &log) {
                return Ok(());
            }
            return Err(fail(
                FailKind::Stopped,
                format!(
                    "lsnpipe exited ({status}) before its copy was done:\n{}",
                    log_excerpt(&l.log())
                ),
            )
            .with_log(l.log()));
        }
        if Instant::now() > deadline {
            return Err(fail(
                FailKind::Stuck,
                format!(
                    "the copy was not done within {:?}:\n{}",
                    2 * CATCH_UP,
                    log_excerpt(&l.log())
                ),
            )
            .with_log(l.log()));
        }
        drop(l);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether lsnpipe exited refusing to stream over a slot a fault dropped: the designed answer.
fn refused_dropped_slot(l: &Lsnpipe, log: &str) -> bool {
    l.slot_dropped
        && log
            .lines()
            .any(|x| x.contains("ERROR") && x.to_lowercase().contains("slot"))
}

/// Wait (a while) until the native subscription has synchronised every table, for the same
/// reason as [`copies_done`]; if it does not, the marker's wait reports it.
async fn native_synced(db: &str) {
    let (_, target) = clusters();
    let n = support::connect(target, &format!("{db}_native")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let syncing = n
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_subscription_rel WHERE srsubstate NOT IN ('r', 's')",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(1);
        if syncing == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stop lsnpipe once its initial copy is done, so the load builds a backlog it later catches
/// up on in large groups.
async fn pause(lsnpipe: &tokio::sync::Mutex<Lsnpipe>) -> Result<(), Failure> {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let mut l = lsnpipe.lock().await;
        // This process's own log: an earlier, killed one may have streamed already.
        let current = l.running.as_ref().map(Running::log).unwrap_or_default();
        if current.contains("streaming") {
            if let Some(r) = l.running.take() {
                let (status, log) = r.terminate().await;
                l.history.push_str(&log);
                if !status.success() {
                    return Err(fail(
                        FailKind::Stopped,
                        format!("on SIGTERM: {status}:\n{}", log_excerpt(&log)),
                    )
                    .with_log(l.log()));
                }
            }
            l.paused = true;
            return Ok(());
        }
        if let Some((status, _)) = l.exited() {
            return Err(fail(
                FailKind::Stopped,
                format!(
                    "lsnpipe exited ({status}) before streaming:\n{}",
                    log_excerpt(&l.log())
                ),
            )
            .with_log(l.log()));
        }
        if Instant::now() > deadline {
            return Err(fail(
                FailKind::Stuck,
                format!(
                    "no initial copy within {CATCH_UP:?}:\n{}",
                    log_excerpt(&l.log())
                ),
            )
            .with_log(l.log()));
        }
        drop(l);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn catch_up_and_compare(
    plan: &Plan,
    db: &str,
    lsnpipe: &tokio::sync::Mutex<Lsnpipe>,
) -> Result<(), Failure> {
    let (_, target) = clusters();
    let t = support::connect(target, db).await;
    let mut deadline = Instant::now() + CATCH_UP;
    let cap = Instant::now() + CATCH_UP_CAP;
    let (mut progress, mut wal) = (String::new(), String::new());
    loop {
        let now = t
            .query_one(
                "SELECT coalesce(max(lsn)::text, '') FROM lsnpipe.progress",
                &[],
            )
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default();
        // The torture target serves this run only: its WAL moves when lsnpipe writes.
        let wal_now = t
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default();
        if now != progress || wal_now != wal {
            (progress, wal) = (now, wal_now);
            deadline = (Instant::now() + CATCH_UP).min(cap);
        }
        let seen = t
            .query_opt("SELECT 1 FROM public._torture_marker", &[])
            .await
            .map(|r| r.is_some())
            .unwrap_or(false);
        if seen {
            break;
        }
        let mut l = lsnpipe.lock().await;
        if let Some((status, log)) = l.exited() {
            if refused_dropped_slot(&l, &log) {
                return Ok(());
            }
            return Err(fail(
                FailKind::Stopped,
                format!("lsnpipe exited ({status}):\n{}", log_excerpt(&l.log())),
            )
            .with_log(l.log()));
        }
        if Instant::now() > deadline {
            return Err(fail(
                FailKind::Stuck,
                format!(
                    "target stopped catching up: no progress for {CATCH_UP:?} (or not caught \
                     up within {CATCH_UP_CAP:?}); lsnpipe log:\n{}",
                    log_excerpt(&l.log())
                ),
            )
            .with_log(l.log()));
        }
        drop(l);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Err(d) = compare(plan, db, db).await {
        let log = lsnpipe.lock().await.log();
        return Err(fail(
            FailKind::Differs,
            format!(
                "{d}\nlsnpipe's warnings and errors in this run:\n{}",
                log_excerpt(&log)
            ),
        )
        .with_log(log));
    }

    // A clean stop ends every run.
    let running = lsnpipe.lock().await.running.take();
    if let Some(r) = running {
        let (status, log) = r.terminate().await;
        if !status.success() {
            let whole = format!("{}{log}", lsnpipe.lock().await.history);
            return Err(fail(
                FailKind::Stopped,
                format!("on SIGTERM: {status}:\n{}", log_excerpt(&log)),
            )
            .with_log(whole));
        }
    }
    Ok(())
}

/// Wait for the native subscription to pass the marker, then compare its database.
async fn native_result(plan: &Plan, db: &str) -> Result<(), String> {
    let (_, target) = clusters();
    let native_db = format!("{db}_native");
    let n = support::connect(target, &native_db).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = n
            .query_opt("SELECT 1 FROM public._torture_marker", &[])
            .await
            .map(|r| r.is_some())
            .unwrap_or(false);
        if seen {
            break;
        }
        if Instant::now() > deadline {
            let errors: i64 = n
                .query_one(
                    "SELECT coalesce(sum(apply_error_count + sync_error_count), 0)::int8 \
                     FROM pg_stat_subscription_stats",
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(-1);
            return Err(format!(
                "did not catch up within 60 s ({errors} apply/sync errors; see the target's server log)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    compare(plan, db, &native_db).await
}

async fn cleanup(db: &str, native: bool) {
    let (source, target) = clusters();
    if native {
        let n = support::connect(target, &format!("{db}_native")).await;
        let _ = n
            .batch_execute(&format!("DROP SUBSCRIPTION IF EXISTS \"{db}_sub\""))
            .await;
    }
    let s = support::connect(source, "postgres").await;
    // Every slot of the database (lsnpipe's, and any a subscription left): DROP DATABASE
    // refuses while one exists.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let left = s
            .query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE database = $1",
                &[&db],
            )
            .await;
        if matches!(left, Ok(ref rows) if rows.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = s
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .await;
    let t = support::connect(target, "postgres").await;
    let _ = t
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .await;
    let _ = t
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{db}_native\" WITH (FORCE)"
        ))
        .await;
}
