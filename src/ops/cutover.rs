//! `lsnpipe cutover`: the planned switch-over from the source to the target, each step safe to
//! repeat after an interruption.
//!
//! ```text
//!  [--fence] ALTER DATABASE … SET default_transaction_read_only = on (new sessions read-only)
//!            ─▶ sessions older than the fence: idle ones ended (they reconnect read-only),
//!               ones in a transaction waited for, up to --fence-timeout-secs
//!  source WAL position L ─▶ target lsnpipe.progress ≥ L (streamed by the running `lsnpipe run`,
//!                           or, when none streams the slot, by the same pipeline run here)
//!  ─▶ sequences copied exactly ─▶ verify ─▶ stop request in lsnpipe.cutover on the target:
//!     the running `lsnpipe run` stops cleanly (walsender ended only if it does not in time)
//!  any failure after the fence: the fence is undone (ALTER DATABASE … RESET …)
//! ```
//!
//! The stop request is a row `(slot, stop_at)` in `lsnpipe.cutover` on the target; `lsnpipe
//! run` looks for it every second ([`stop_requested`]) and stops like on SIGTERM once its
//! progress row has reached `stop_at`. The row stays, so a restarted `run` stops again; delete
//! it (or `lsnpipe teardown`) to stream that slot again. The pipeline cutover runs itself for an
//! unattended slot watches the same row, so both cases end the same way.

use std::io::Write;
use std::time::{Duration, Instant};

use super::{OpsError, SideSession};
use crate::Lsn;
use crate::verify::{self, VerifyOptions, session};
use crate::wire::quote_ident;

/// Flags of `lsnpipe cutover` beside those of `verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct CutoverArgs {
    #[command(flatten)]
    pub verify: verify::VerifyArgs,
    /// Make the source database read-only first (default_transaction_read_only), end sessions
    /// that were open before, and wait for their transactions; undone if a later step fails.
    #[arg(long)]
    pub fence: bool,
    /// Longest wait for open write transactions on the source once fenced.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub fence_timeout_secs: u64,
    /// Longest wait for a running `lsnpipe run` to stop after the stop request.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub stop_timeout_secs: u64,
}

/// Where the stop request lives on the target.
const STOP_TABLE: &str = "CREATE SCHEMA IF NOT EXISTS lsnpipe; \
    CREATE TABLE IF NOT EXISTS lsnpipe.cutover (slot text PRIMARY KEY, stop_at pg_lsn NOT NULL, \
    requested_at timestamptz NOT NULL DEFAULT now())";

/// Run the cut-over, writing each step to `out`; true when everything was equal and streaming
/// stopped.
pub async fn run(
    opts: &VerifyOptions,
    args: &CutoverArgs,
    out: &mut dyn Write,
) -> Result<bool, OpsError> {
    let started = Instant::now();
    let source = session::connect("source", &opts.conn.source).await?;
    let target = session::connect("target", &opts.conn.target).await?;
    let slot = &opts.conn.slot;
    if session::slot_active_pid(&source, slot).await?.is_none() {
        return Err(OpsError::Refused(format!(
            "slot {slot} does not exist on the source: nothing streams to the target"
        )));
    }
    let fence = if args.fence {
        Some(fence(&source, args, out).await?)
    } else {
        say(
            out,
            "no --fence: writes to the source after this point are not on the target",
        )?;
        None
    };
    let outcome = after_fence(opts, args, &source, &target, out).await;
    match (&outcome, &fence) {
        (Err(_) | Ok(false), Some(Fence::Set { database, .. })) => {
            unfence(&source, database).await?;
            say(
                out,
                &format!("fence undone: database {database} accepts writes again"),
            )?;
        }
        (Ok(true), Some(Fence::Set { database, since } | Fence::Kept { database, since })) => {
            say(
                out,
                &format!(
                    "writes fenced for {:.1} s; the source stays read-only (undo: ALTER \
                     DATABASE {} RESET default_transaction_read_only)",
                    since.elapsed().as_secs_f64(),
                    quote_ident(database)
                ),
            )?;
        }
        (Err(_) | Ok(false), Some(Fence::Kept { database, .. })) => {
            say(
                out,
                &format!(
                    "the fence was set before this run and stays (undo: ALTER DATABASE {} RESET \
                     default_transaction_read_only)",
                    quote_ident(database)
                ),
            )?;
        }
        _ => {}
    }
    if outcome.as_ref().is_ok_and(|ok| *ok) {
        say(
            out,
            &format!("cutover done in {:.1} s", started.elapsed().as_secs_f64()),
        )?;
    }
    outcome
}

enum Fence {
    /// Set by this run: undone on failure.
    Set { database: String, since: Instant },
    /// Already set (an earlier, interrupted cutover): left as it is.
    Kept { database: String, since: Instant },
}

async fn fence(
    source: &SideSession,
    args: &CutoverArgs,
    out: &mut dyn Write,
) -> Result<Fence, OpsError> {
    let row = source
        .client
        .query_one(
            "SELECT current_database()::text, EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s \
               WHERE s.setdatabase = (SELECT oid FROM pg_catalog.pg_database \
                                      WHERE datname = current_database()) \
                 AND s.setrole = 0 \
                 AND 'default_transaction_read_only=on' = ANY (s.setconfig))",
            &[],
        )
        .await
        .map_err(source.sql("read the database's settings"))?;
    let database: String = row.get(0);
    let already: bool = row.get(1);
    let since = Instant::now();
    if !already {
        source
            .client
            .batch_execute(&format!(
                "ALTER DATABASE {} SET default_transaction_read_only = on",
                quote_ident(&database)
            ))
            .await
            .map_err(source.sql("fence the source (ALTER DATABASE needs its owner)"))?;
        say(
            out,
            &format!("fence: new sessions of database {database} are read-only"),
        )?;
    } else {
        say(
            out,
            &format!("fence: database {database} was already read-only"),
        )?;
    }
    let fenced = if already {
        Fence::Kept { database, since }
    } else {
        Fence::Set { database, since }
    };
    // Sessions that started before this instant may still write; later ones are read-only.
    let fenced_at: String = source
        .client
        .query_one("SELECT clock_timestamp()::text", &[])
        .await
        .map_err(source.sql("read the clock"))?
        .get(0);
    match drain(source, &fenced_at, args, out).await {
        Ok(()) => Ok(fenced),
        Err(e) => {
            if let Fence::Set { database, .. } = &fenced {
                unfence(source, database).await?;
                say(
                    out,
                    &format!("fence undone: database {database} accepts writes again"),
                )?;
            }
            Err(e)
        }
    }
}

/// End the sessions opened before the fence (they could still write): idle ones at once, ones
/// in a transaction when it ends, within the time limit.
async fn drain(
    source: &SideSession,
    fenced_at: &str,
    args: &CutoverArgs,
    out: &mut dyn Write,
) -> Result<(), OpsError> {
    let deadline = Instant::now() + Duration::from_secs(args.fence_timeout_secs);
    let mut ended = 0usize;
    loop {
        let rows = source
            .client
            .query(
                "SELECT pid, state = 'idle' FROM pg_catalog.pg_stat_activity \
                 WHERE datname = current_database() AND backend_type = 'client backend' \
                   AND pid <> pg_backend_pid() AND coalesce(application_name, '') <> 'lsnpipe' \
                   AND backend_start < $1::text::timestamptz",
                &[&fenced_at],
            )
            .await
            .map_err(source.sql("list the sessions open before the fence"))?;
        let mut busy = Vec::new();
        for r in &rows {
            let pid: i32 = r.get(0);
            let idle: Option<bool> = r.get(1);
            if idle == Some(true) {
                source
                    .client
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await
                    .map_err(source.sql("end an idle session opened before the fence"))?;
                ended += 1;
            } else {
                busy.push(pid.to_string());
            }
        }
        if busy.is_empty() {
            say(
                out,
                &format!("fence: {ended} sessions opened before it ended; no write can start"),
            )?;
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(OpsError::Refused(format!(
                "fence: sessions {} were still in a transaction after {} s; end them (or raise \
                 --fence-timeout-secs) and run cutover again",
                busy.join(", "),
                args.fence_timeout_secs
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn unfence(source: &SideSession, database: &str) -> Result<(), OpsError> {
    source
        .client
        .batch_execute(&format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            quote_ident(database)
        ))
        .await
        .map_err(source.sql("undo the fence"))
}

/// Catch up, sequences, verify, stop streaming. `Ok(false)`: the target differs.
async fn after_fence(
    opts: &VerifyOptions,
    args: &CutoverArgs,
    source: &SideSession,
    target: &SideSession,
    out: &mut dyn Write,
) -> Result<bool, OpsError> {
    let slot = &opts.conn.slot;
    let lsn = session::current_lsn(source).await?;
    // A `lsnpipe run` that is between sessions (starting, or reconnecting after an error: at
    // most 30 s apart) would find the slot taken; it retries, and the stop request below ends
    // it too once the target has everything.
    let mut own = None::<OwnRun>;
    if session::slot_active_pid(source, slot)
        .await?
        .flatten()
        .is_none()
        && session::pending_changes(source, slot, &opts.publication).await? > 0
    {
        say(
            out,
            &format!("no `lsnpipe run` streams slot {slot}: streaming the rest here"),
        )?;
        own = Some(OwnRun::start(opts)?);
    }
    let outcome = caught_up(opts, args, source, target, lsn, own.as_ref(), out).await;
    if let Some(own) = own {
        // Stopped by the stop request when everything went well; asked to stop otherwise.
        own.finish().await?;
    }
    outcome
}

/// `lsnpipe run` inside cutover, for a slot nobody streams: the same pipeline, stopped by the
/// same stop request (or by cutover when a step fails).
struct OwnRun {
    task: tokio::task::JoinHandle<Result<(), crate::pipeline::RunError>>,
    cancel: tokio::sync::watch::Sender<bool>,
}

impl OwnRun {
    fn start(opts: &VerifyOptions) -> Result<OwnRun, OpsError> {
        use crate::config::{FileSettings, RunArgs, RunSettings};
        let args = RunArgs {
            source: Some(opts.conn.source.clone()),
            target: Some(opts.conn.target.clone()),
            publication: Some(opts.publication.clone()),
            slot: Some(opts.conn.slot.clone()),
            metrics_listen: Some("off".into()),
            // The slot exists and the target holds its data: never copy here.
            snapshot: Some(false),
            ..RunArgs::default()
        };
        let settings = RunSettings::resolve(&args, &FileSettings::default())
            .map_err(|e| OpsError::Refused(format!("cannot stream the rest: {e}")))?;
        let registry = prometheus::Registry::new();
        let metrics = crate::metrics::Metrics::register(&registry)
            .map_err(|e| OpsError::Refused(format!("cannot stream the rest: {e}")))?;
        let telemetry = crate::telemetry::Telemetry::new(
            metrics,
            std::sync::Arc::new(crate::metrics::Health::new()),
        );
        let (cancel, mut cancelled) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let (stop, stop_rx) = tokio::sync::watch::channel(false);
            let requested = stop_requested(settings.target.clone(), settings.slot.clone());
            let pipeline = crate::pipeline::run(&settings, &telemetry, stop_rx);
            tokio::pin!(pipeline);
            tokio::select! {
                done = &mut pipeline => return done,
                () = requested => {}
                _ = cancelled.wait_for(|c| *c) => {}
            }
            let _ = stop.send(true);
            pipeline.await
        });
        Ok(OwnRun { task, cancel })
    }

    /// Resolves if the pipeline ends on its own (an error it does not retry).
    async fn ended(&self) {
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn finish(self) -> Result<(), OpsError> {
        let _ = self.cancel.send(true);
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(OpsError::Refused(format!(
                "streaming the rest of slot failed: {}",
                crate::report::chain(&e)
            ))),
            Err(e) => Err(OpsError::Refused(format!(
                "streaming the rest stopped: {e}"
            ))),
        }
    }
}

/// From the source position `lsn` on: catch up, copy sequences, verify, stop streaming.
async fn caught_up(
    opts: &VerifyOptions,
    args: &CutoverArgs,
    source: &SideSession,
    target: &SideSession,
    lsn: Lsn,
    own: Option<&OwnRun>,
    out: &mut dyn Write,
) -> Result<bool, OpsError> {
    let slot = &opts.conn.slot;
    let t = Instant::now();
    let wait = session::wait_for_target(source, target, slot, &opts.publication, lsn, opts.wait);
    match own {
        None => wait.await?,
        Some(own) => tokio::select! {
            waited = wait => waited?,
            () = own.ended() => {
                return Err(OpsError::Refused(format!(
                    "streaming the rest of slot {slot} stopped before the target caught up \
                     (the log above says why)"
                )));
            }
        },
    }
    say(
        out,
        &format!(
            "caught up: the target has applied the source up to {lsn} ({:.1} s)",
            t.elapsed().as_secs_f64()
        ),
    )?;

    let copied = crate::sequences::copy(source, target, &opts.publication).await?;
    if !copied.missing.is_empty() {
        return Err(OpsError::Refused(format!(
            "the target has no sequence {}: create it there and run cutover again",
            copied.missing.join(", ")
        )));
    }
    say(out, &format!("sequences: {} copied", copied.values.len()))?;

    let report = verify::run(opts).await?;
    let text = report.render_text();
    out.write_all(text.as_bytes())
        .map_err(OpsError::io("write the report"))?;
    if report.differs() {
        say(out, "cutover stopped: the target differs from the source")?;
        return Ok(false);
    }

    stop_streaming(source, target, slot, lsn, args, out).await?;
    Ok(true)
}

/// Ask a running `lsnpipe run` to stop; end its walsender if it does not in time.
async fn stop_streaming(
    source: &SideSession,
    target: &SideSession,
    slot: &str,
    lsn: Lsn,
    args: &CutoverArgs,
    out: &mut dyn Write,
) -> Result<(), OpsError> {
    target
        .client
        .batch_execute(STOP_TABLE)
        .await
        .map_err(target.sql("create lsnpipe.cutover"))?;
    target
        .client
        .execute(
            "INSERT INTO lsnpipe.cutover (slot, stop_at) VALUES ($1, $2::text::pg_lsn) \
             ON CONFLICT (slot) DO UPDATE SET stop_at = excluded.stop_at, requested_at = now()",
            &[&slot, &lsn.to_string()],
        )
        .await
        .map_err(target.sql("write the stop request"))?;
    let deadline = Instant::now() + Duration::from_secs(args.stop_timeout_secs);
    loop {
        match session::slot_active_pid(source, slot).await?.flatten() {
            None => {
                say(out, &format!("streaming stopped: slot {slot} is idle"))?;
                return Ok(());
            }
            Some(pid) if Instant::now() >= deadline => {
                // The target already holds everything up to `lsn` and the source is fenced:
                // ending the walsender loses nothing.
                source
                    .client
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await
                    .map_err(source.sql("end the walsender"))?;
                say(
                    out,
                    &format!(
                        "streaming stopped: the consumer of slot {slot} did not stop within {} s; \
                         its walsender (pid {pid}) was ended",
                        args.stop_timeout_secs
                    ),
                )?;
                return Ok(());
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn say(out: &mut dyn Write, line: &str) -> Result<(), OpsError> {
    writeln!(out, "{line}").map_err(OpsError::io("write the report"))
}

/// For `lsnpipe run`: resolves once `cutover` has asked this slot to stop and the target has
/// applied up to the requested position. Checks every second; errors are retried quietly.
pub async fn stop_requested(target: String, slot: String) {
    let mut session: Option<SideSession> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if session.is_none() {
            session = SideSession::connect("target", &target).await.ok();
        }
        let Some(t) = &session else { continue };
        let asked = t
            .client
            .query_one(
                "SELECT to_regclass('lsnpipe.cutover') IS NOT NULL \
                   AND to_regclass('lsnpipe.progress') IS NOT NULL",
                &[],
            )
            .await;
        match asked {
            Ok(row) if row.get::<_, bool>(0) => {}
            Ok(_) => continue,
            Err(_) => {
                session = None;
                continue;
            }
        }
        let reached = t
            .client
            .query_opt(
                "SELECT c.stop_at::text FROM lsnpipe.cutover c JOIN lsnpipe.progress p USING (slot) \
                 WHERE c.slot = $1 AND p.lsn >= c.stop_at",
                &[&slot],
            )
            .await;
        match reached {
            Ok(Some(row)) => {
                let at: String = row.get(0);
                tracing::info!(
                    "stopping: `lsnpipe cutover` asked slot {slot} to stop at {at}, and the target \
                     has applied it (delete the row in lsnpipe.cutover to stream this slot again)"
                );
                return;
            }
            Ok(None) => {}
            Err(_) => session = None,
        }
    }
}
