//! `lsnpipe verify`: prove that the target holds what the source holds, table by table, while
//! replication runs, and name the rows that differ.
//!
//! ```text
//!  catalog ─▶ TablePlan per published table ─▶ jobs (each a source + a target session)
//!   one integer key: source, one REPEATABLE READ snapshot at LSN L, and target, once
//!            lsnpipe.progress ≥ L: (count, sum of row hashes) per key-range bucket, one
//!            scan of each side at once ─▶ buckets that differ are walked as below
//!   keyed:   source, one REPEATABLE READ snapshot at LSN L: chunks in key order ─┐ (bounded)
//!            target, once lsnpipe.progress ≥ L: the same key ranges ◀────────────┘
//!            ranges whose (count, sum of row hashes) differ ─▶ rows of the range on both
//!            sides ─▶ candidate keys ─▶ re-read by key (source, target, source) until each
//!            settles: equal (it was lag), or different / missing / extra (reported)
//!   keyless: (count, sum) per hash bucket ─▶ rows of differing buckets with multiplicity,
//!            read again under newer snapshots; only surpluses seen every time are reported
//! ```
//!
//! Why re-reading by key settles lag exactly: the target holds every source commit up to the
//! position it reached and nothing the source had not committed when it was read. If the
//! source row is the same before the target read (at a position the target then passed) and
//! after it, the target's row must equal it, whatever the lag. Rows that change between every
//! pair of reads are read once more under `FOR SHARE` (which holds their writers for the time
//! the target needs to catch up); if that is not allowed they are reported as unsettled, never
//! as different.
//!
//! Why buckets first: a whole-table checksum is one (parallel) sequential scan per side, the
//! floor for reading everything; a walk in key order costs about twice that. Buckets cost the
//! same as the checksum and still lead to the rows, since only differing ones are walked.
//! With `--max-rows-per-sec` every table is walked, as a walk can pause between chunks.
//!
//! Submodules: `plan` (SQL text), `diff` (decisions), `buckets` (the key-range layout),
//! `catalog`, `session` (settings, waiting for the target), `keyed`, `keyless`, `progress`,
//! `report`.

mod buckets;
mod catalog;
mod diff;
mod keyed;
mod keyless;
mod plan;
mod progress;
mod report;
pub(crate) mod session;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use report::{Example, TableReport, VerifyReport};

use crate::Lsn;
use crate::config::{ConfigError, FileSettings, OpsSettings};
use crate::ops::{OpsError, SideSession};
use catalog::Planned;
use plan::TablePlan;

/// Flags of `lsnpipe verify` beside the connection flags.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub conn: crate::config::ConnArgs,
    /// Compare only this table (`name` or `schema.name`; repeat for more).
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Tables compared at once (each uses one session on each side).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Read at most this many rows per second from each side, all jobs together (protects a
    /// busy source; default: no limit).
    #[arg(long, value_name = "ROWS")]
    pub max_rows_per_sec: Option<u64>,
    /// Rows per chunk: the unit compared by hash, and read row by row when it differs.
    #[arg(long, default_value_t = 20_000)]
    pub chunk_rows: u64,
    /// Differing rows named per table.
    #[arg(long, default_value_t = 10)]
    pub show: usize,
    /// How long to wait for the target to reach a source position before giving up.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub wait_secs: u64,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What a verify run works with, validated.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub conn: OpsSettings,
    pub publication: String,
    pub tables: Vec<String>,
    pub jobs: usize,
    pub max_rows_per_sec: Option<u64>,
    pub chunk_rows: u64,
    pub show: usize,
    pub wait: Duration,
    /// Re-reads of a candidate row before it is called unsettled.
    pub rereads: u32,
}

impl VerifyOptions {
    pub fn resolve(args: &VerifyArgs, file: &FileSettings) -> Result<Self, ConfigError> {
        let conn = OpsSettings::resolve(&args.conn, file, true)?;
        let publication = conn.publication.clone().unwrap_or_default();
        let positive = |key: &'static str, v: u64| {
            if v == 0 {
                Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(v)
            }
        };
        positive("jobs", args.jobs as u64)?;
        positive("chunk-rows", args.chunk_rows)?;
        if let Some(r) = args.max_rows_per_sec {
            positive("max-rows-per-sec", r)?;
        }
        Ok(VerifyOptions {
            conn,
            publication,
            tables: args.tables.clone(),
            jobs: args.jobs,
            max_rows_per_sec: args.max_rows_per_sec,
            chunk_rows: args.chunk_rows,
            show: args.show,
            wait: Duration::from_secs(args.wait_secs),
            rereads: 4,
        })
    }
}

/// The rate limit shared by all jobs.
#[derive(Debug)]
pub(crate) struct Pace {
    start: Instant,
    rows: AtomicU64,
    rate: Option<u64>,
}

impl Pace {
    /// Count rows read, and pause while ahead of the limit.
    async fn took(&self, rows: i64) {
        let rows = u64::try_from(rows).unwrap_or(0);
        let done = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let wait = diff::pause(self.rate, done, self.start.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What every job shares: the options, a source session for slot checks, the rate limit.
pub(crate) struct Ctx<'a> {
    opts: &'a VerifyOptions,
    control: &'a SideSession,
    pace: &'a Pace,
    progress: &'a progress::Progress,
    /// The earliest source position a first pass was read at.
    first_lsn: Mutex<Option<Lsn>>,
}

impl Ctx<'_> {
    /// Wait until the target has applied up to `lsn`.
    async fn wait(&self, target: &SideSession, lsn: Lsn) -> Result<(), OpsError> {
        session::wait_for_target(
            self.control,
            target,
            &self.opts.conn.slot,
            &self.opts.publication,
            lsn,
            self.opts.wait,
        )
        .await
    }

    fn saw(&self, lsn: Lsn) {
        let mut first = self.first_lsn.lock().unwrap_or_else(|e| e.into_inner());
        *first = Some(first.map_or(lsn, |f| f.min(lsn)));
    }
}

/// Compare every published table (or the filtered ones).
pub async fn run(opts: &VerifyOptions) -> Result<VerifyReport, OpsError> {
    let started = Instant::now();
    let control = session::connect("source", &opts.conn.source).await?;
    let catalog_target = session::connect("target", &opts.conn.target).await?;
    let planned = catalog::plan(&control, &catalog_target, &opts.publication, &opts.tables).await?;
    drop(catalog_target);

    let mut reports = Vec::new();
    let mut queue = VecDeque::new();
    for p in planned {
        match p {
            Planned::Compare(plan) => queue.push_back(plan),
            Planned::Differs { table, problem } => reports.push(TableReport {
                table,
                problem: Some(problem),
                ..TableReport::default()
            }),
        }
    }
    let pace = Pace {
        start: Instant::now(),
        rows: AtomicU64::new(0),
        rate: opts.max_rows_per_sec,
    };
    let progress = progress::Progress::new(queue.len() as u64);
    let ctx = Ctx {
        opts,
        control: &control,
        pace: &pace,
        progress: &progress,
        first_lsn: Mutex::new(None),
    };
    let queue = Mutex::new(queue);
    let jobs = opts.jobs.min(queue.lock().map_or(1, |q| q.len())).max(1);
    let workers = futures::future::join_all((0..jobs).map(|_| worker(&ctx, &queue)));
    tokio::pin!(workers);
    let mut ticker = tokio::time::interval(progress::TICK);
    let finished = loop {
        tokio::select! {
            done = &mut workers => break done,
            _ = ticker.tick() => progress.tick(pace.rows.load(Ordering::Relaxed)),
        }
    };
    for done in finished {
        reports.extend(done?);
    }
    reports.sort_by(|a, b| a.table.cmp(&b.table));
    let source_lsn = *ctx.first_lsn.lock().unwrap_or_else(|e| e.into_inner());
    Ok(VerifyReport {
        tables: reports,
        source_lsn,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// One job: its own two sessions, tables taken from the queue until it is empty.
async fn worker(
    ctx: &Ctx<'_>,
    queue: &Mutex<VecDeque<TablePlan>>,
) -> Result<Vec<TableReport>, OpsError> {
    let source = session::connect("source", &ctx.opts.conn.source).await?;
    let target = session::connect("target", &ctx.opts.conn.target).await?;
    let mut out = Vec::new();
    loop {
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let Some(plan) = next else { break };
        let started = Instant::now();
        let report = if plan.keyed() {
            keyed::compare(ctx, &plan, &source, &target).await?
        } else {
            keyless::compare(ctx, &plan, &source, &target).await?
        };
        tracing::info!(
            table = %report.table,
            rows = report.rows,
            chunks = report.chunks,
            reread = report.reread,
            differs = report.differs(),
            secs = format!("{:.1}", started.elapsed().as_secs_f64()),
            "compared"
        );
        ctx.progress.table_done();
        out.push(report);
    }
    Ok(out)
}

/// Start a source snapshot and return its position: everything the snapshot shows was
/// committed at or before it.
async fn begin_snapshot(source: &SideSession) -> Result<Lsn, OpsError> {
    source
        .client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(source.sql("begin a snapshot"))?;
    session::current_lsn(source).await
}

async fn commit(side: &SideSession) -> Result<(), OpsError> {
    side.client
        .batch_execute("COMMIT")
        .await
        .map_err(side.sql("end a snapshot"))
}
