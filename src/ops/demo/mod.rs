//! `lsnpipe demo`: everything on one machine, for a first look. Two throwaway clusters, a sample
//! shop database with a steady write load, lsnpipe in-process between them, a live status line,
//! and the metrics endpoint; Ctrl-C (or `--duration`) stops it all and removes the clusters
//! unless `--keep`.
//!
//! ```text
//!  LocalCluster source ◀── workload (rate tx/s) ──┐
//!        │ slot lsnpipe_demo, publication demo_pub │
//!        ▼                                          │ stop: load ─▶ wait for catch-up ─▶ pipeline
//!  pipeline::run (Telemetry) ──▶ LocalCluster target │       ─▶ compare tables ─▶ summary line
//!        └─▶ Service (metrics::serve, slot monitor) and the status line every second
//! ```

mod workload;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::watch;
use tokio_postgres::Client;

use super::{OpsError, human_bytes};
use crate::Lsn;
use crate::cluster::LocalCluster;
use crate::config::{DemoSettings, FileSettings, RunArgs, RunSettings};
use crate::metrics::{Metrics, names};
use crate::service::Service;
use crate::wire::{self, ConnConfig};

const DATABASE: &str = "demo";
const SLOT: &str = "lsnpipe_demo";
const PUBLICATION: &str = "demo_pub";

/// How the target gets the rows that exist before streaming starts.
///
/// The demo creates the schema and data on the source only and lets lsnpipe create the slot,
/// copy the tables (creating them on the target) and stream. Empty, it would instead create the
/// schema on both sides and the slot before loading the sample rows, so that streaming alone
/// carries everything (see `prepare`).
const INITIAL_COPY_FLAGS: &[&str] = &["--snapshot", "--create-tables"];

/// How long the demo waits, when stopping, for the target to catch up before comparing.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished demo did; `main` prints nothing more.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    pub transactions_written: u64,
    pub rows_applied: u64,
    pub tables_match: bool,
}

/// `--source …` style flags parsed by the same definitions `lsnpipe run` uses.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct RunFlags {
    #[command(flatten)]
    run: RunArgs,
}

/// Run the demo until `stop` turns true or the duration is over.
pub async fn run(
    settings: &DemoSettings,
    mut stop: watch::Receiver<bool>,
    out: &mut (dyn Write + Send),
) -> Result<DemoSummary, OpsError> {
    let say = |out: &mut (dyn Write + Send), text: &str| {
        writeln!(out, "{text}").map_err(OpsError::io("write to stdout"))
    };
    say(
        out,
        "lsnpipe demo: starting a source and a target PostgreSQL cluster …",
    )?;
    let (mut source_cluster, mut target_cluster) = start_clusters().await?;
    if settings.keep {
        source_cluster.keep();
        target_cluster.keep();
    }
    let source_conn = source_cluster.conn_string(DATABASE);
    let target_conn = target_cluster.conn_string(DATABASE);

    let outcome = async {
        prepare(&source_cluster, &target_cluster).await?;
        say(out, &banner(&source_cluster, &target_cluster))?;
        stream(settings, &source_conn, &target_conn, &mut stop, out).await
    }
    .await;

    if settings.keep {
        say(out, &kept(&source_cluster, &target_cluster))?;
    }
    // Stopping a cluster waits for its server: off the async threads.
    let removed = tokio::task::spawn_blocking(move || {
        drop(source_cluster);
        drop(target_cluster);
    })
    .await;
    if removed.is_err() {
        tracing::warn!("removing the demo clusters failed; their watchdogs will finish the job");
    }
    let summary = outcome?;
    say(
        out,
        &format!(
            "demo summary: transactions_written={} rows_applied={} tables_match={}",
            summary.transactions_written, summary.rows_applied, summary.tables_match
        ),
    )?;
    Ok(summary)
}

async fn start_clusters() -> Result<(LocalCluster, LocalCluster), OpsError> {
    let source = tokio::task::spawn_blocking(|| LocalCluster::start("demo-source", &[]));
    let target = tokio::task::spawn_blocking(|| LocalCluster::start("demo-target", &[]));
    let joined = |r: Result<_, tokio::task::JoinError>| {
        r.map_err(|e| OpsError::Io {
            what: "start a demo cluster".into(),
            source: std::io::Error::other(e),
        })
    };
    // Both are awaited before either error is returned, so a started cluster is dropped (and
    // removed) rather than leaked.
    let (source, target) = (joined(source.await), joined(target.await));
    Ok((source??, target??))
}

/// Create the sample database on both clusters, in the order `INITIAL_COPY_FLAGS` needs.
async fn prepare(source: &LocalCluster, target: &LocalCluster) -> Result<(), OpsError> {
    let streaming_only = INITIAL_COPY_FLAGS.is_empty();
    for cluster in [source, target] {
        let admin = sql(&cluster.conn_string("postgres"), "create the demo database").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .await
            .map_err(OpsError::sql("demo", "create the demo database"))?;
    }
    let src = sql(&source.conn_string(DATABASE), "set up the source").await?;
    let failed = OpsError::sql("source", "set up the sample schema");
    src.batch_execute(workload::SCHEMA).await.map_err(&failed)?;
    src.batch_execute(workload::PUBLICATION_DDL)
        .await
        .map_err(&failed)?;
    if streaming_only {
        let tgt = sql(&target.conn_string(DATABASE), "set up the target").await?;
        tgt.batch_execute(workload::SCHEMA)
            .await
            .map_err(OpsError::sql("target", "set up the sample schema"))?;
        src.execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&SLOT],
        )
        .await
        .map_err(OpsError::sql("source", "create the slot"))?;
    }
    src.batch_execute(workload::SAMPLE_DATA)
        .await
        .map_err(&failed)?;
    Ok(())
}

/// The pipeline, the metrics server, the load and the status line, until stopped.
async fn stream(
    settings: &DemoSettings,
    source_conn: &str,
    target_conn: &str,
    stop: &mut watch::Receiver<bool>,
    out: &mut (dyn Write + Send),
) -> Result<DemoSummary, OpsError> {
    let mut flags = vec![
        "--source",
        source_conn,
        "--target",
        target_conn,
        "--publication",
        PUBLICATION,
        "--slot",
        SLOT,
        "--create-slot",
        "--metrics-listen",
        "off",
        // The status line shows the slot's retained WAL: keep it fresh.
        "--slot-monitor-interval-secs",
        "2",
    ];
    flags.extend_from_slice(INITIAL_COPY_FLAGS);
    let args = RunFlags::try_parse_from(flags).map_err(|e| OpsError::Refused(e.to_string()))?;
    let run_settings = RunSettings::resolve(&args.run, &FileSettings::default())
        .map_err(|e| OpsError::Refused(e.to_string()))?;

    let (stop_pipeline, pipeline_stop) = watch::channel(false);
    let (stop_load, load_stop) = watch::channel(false);
    let listener = match settings.metrics_listen {
        Some(addr) => {
            let listener = bind_metrics(addr).await?;
            let local = listener
                .local_addr()
                .map_err(OpsError::io("metrics address"))?;
            writeln!(
                out,
                "metrics:  http://{local}/metrics   (also /healthz, /readyz)"
            )
            .map_err(OpsError::io("write to stdout"))?;
            Some(listener)
        }
        None => None,
    };
    let service = Service::start(&run_settings, listener, &pipeline_stop)
        .map_err(|e| OpsError::Refused(e.to_string()))?;
    let (registry, metrics) = (service.registry.clone(), service.metrics.clone());
    let telemetry = service.telemetry.clone();
    let pipeline = {
        let (settings, telemetry) = (run_settings.clone(), telemetry.clone());
        tokio::spawn(
            async move { crate::pipeline::run(&settings, &telemetry, pipeline_stop).await },
        )
    };
    let load_client = sql(source_conn, "start the sample load").await?;
    let load = tokio::spawn(workload::run(load_client, settings.rate, load_stop));
    writeln!(
        out,
        "writing about {} transactions/s on the source; {}\n",
        settings.rate,
        match settings.duration {
            Some(d) => format!("stopping after {} s", d.as_secs()),
            None => "Ctrl-C stops the demo".to_owned(),
        }
    )
    .map_err(OpsError::io("write to stdout"))?;

    let mut line = StatusLine::new(std::io::stdout().is_terminal());
    let deadline = settings.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut pipeline = pipeline;
    let early = loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break None,
            _ = sleep_until(deadline) => break None,
            ended = &mut pipeline => break Some(ended),
            _ = tick.tick() => line.show(&registry, &metrics, out)?,
        }
    };
    line.finish(out)?;

    let _ = stop_load.send(true);
    let written = match load.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            tracing::warn!("the sample load stopped: {}", crate::report::chain(&e));
            0
        }
        Err(_) => 0,
    };
    let source = sql(source_conn, "compare the tables").await?;
    let target = sql(target_conn, "compare the tables").await?;
    let tables_match = match early {
        Some(ended) => {
            // The pipeline stopped by itself: report why.
            let _ = stop_pipeline.send(true);
            service.stopped().await;
            return match ended {
                Ok(Ok(())) => Err(OpsError::Refused(
                    "the pipeline stopped unexpectedly".into(),
                )),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(OpsError::Io {
                    what: "pipeline task".into(),
                    source: std::io::Error::other(e),
                }),
            };
        }
        None => {
            writeln!(
                out,
                "stopping: load stopped, waiting for the target to catch up …"
            )
            .map_err(OpsError::io("write to stdout"))?;
            caught_up(&source, &target).await?
        }
    };
    let _ = stop_pipeline.send(true);
    let result = pipeline.await;
    service.stopped().await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => {
            return Err(OpsError::Io {
                what: "pipeline task".into(),
                source: std::io::Error::other(e),
            });
        }
    }
    Ok(DemoSummary {
        transactions_written: written,
        rows_applied: rows_applied(&registry),
        tables_match,
    })
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Bind the metrics address; when it is taken (another lsnpipe?), a free port on the same
/// interface will do for a demo.
async fn bind_metrics(addr: SocketAddr) -> Result<tokio::net::TcpListener, OpsError> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::info!("{addr} is in use; serving the demo's metrics on a free port");
            tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0))
                .await
                .map_err(OpsError::io(format!("listen for metrics on {}", addr.ip())))
        }
        Err(e) => Err(OpsError::io(format!("listen for metrics on {addr}"))(e)),
    }
}

/// Poll until every sample table holds the same rows on both sides; false after the timeout.
async fn caught_up(source: &Client, target: &Client) -> Result<bool, OpsError> {
    let started = Instant::now();
    loop {
        let mut same = true;
        for table in workload::TABLES {
            let q = format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY id)), '') \
                 FROM {table} t"
            );
            let s = source
                .query_one(&q, &[])
                .await
                .map_err(OpsError::sql("source", "compare the tables"))?;
            let t = target
                .query_one(&q, &[])
                .await
                .map_err(OpsError::sql("target", "compare the tables"))?;
            if s.get::<_, i64>(0) != t.get::<_, i64>(0)
                || s.get::<_, String>(1) != t.get::<_, String>(1)
            {
                same = false;
                break;
            }
        }
        if same {
            return Ok(true);
        }
        if started.elapsed() > CATCH_UP_TIMEOUT {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sql(conn: &str, what: &'static str) -> Result<Client, OpsError> {
    let config = ConnConfig::parse(conn).map_err(|source| OpsError::ConnString {
        side: "demo",
        source,
    })?;
    wire::connect_sql(&config)
        .await
        .map_err(|source| OpsError::Connect {
            side: what,
            at: config.redacted(),
            source,
        })
}

fn banner(source: &LocalCluster, target: &LocalCluster) -> String {
    format!(
        "\nsource:   psql \"{}\"\n          (data in {})\n\
         target:   psql \"{}\"\n          (data in {})\n\
         Tables customers, orders and events are published as {PUBLICATION} and streamed \
         through slot {SLOT}.",
        source.conn_string(DATABASE),
        source.root().display(),
        target.conn_string(DATABASE),
        target.root().display(),
    )
}

fn kept(source: &LocalCluster, target: &LocalCluster) -> String {
    let stop = |c: &LocalCluster| {
        let pg_ctl = c.bindir().join("pg_ctl");
        let as_user = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        format!(
            "  {as_user}{} -D {} stop && rm -rf {}",
            pg_ctl.display(),
            c.data_dir().display(),
            c.root().display()
        )
    };
    format!(
        "--keep: both clusters are still running. Remove them with:\n{}\n{}",
        stop(source),
        stop(target)
    )
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The sum of a metric family's samples (counters and gauges).
fn family_sum(registry: &prometheus::Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .map(|m| {
            if m.counter.is_some() {
                m.get_counter().value()
            } else {
                m.get_gauge().value()
            }
        })
        .sum()
}

fn rows_applied(registry: &prometheus::Registry) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a row counter: non-negative and far below 2^53"
    )]
    let rows = family_sum(registry, names::ROWS_APPLIED).max(0.0) as u64;
    rows
}

/// The one-line live view: redrawn in place on a terminal, a line every 5 s otherwise.
struct StatusLine {
    terminal: bool,
    last_rows: u64,
    last_at: Instant,
    ticks: u64,
}

impl StatusLine {
    fn new(terminal: bool) -> Self {
        StatusLine {
            terminal,
            last_rows: 0,
            last_at: Instant::now(),
            ticks: 0,
        }
    }

    fn show(
        &mut self,
        registry: &prometheus::Registry,
        metrics: &Metrics,
        out: &mut (dyn Write + Send),
    ) -> Result<(), OpsError> {
        self.ticks += 1;
        let rows = rows_applied(registry);
        let secs = self.last_at.elapsed().as_secs_f64().max(0.001);
        #[allow(clippy::cast_precision_loss, reason = "a rate for display")]
        let per_sec = rows.saturating_sub(self.last_rows) as f64 / secs;
        self.last_rows = rows;
        self.last_at = Instant::now();
        let lsn = |g: i64| Lsn::new(u64::try_from(g).unwrap_or(0));
        let lag_bytes = u64::try_from(metrics.lag_bytes.get()).unwrap_or(0);
        let lag_ms = family_sum(registry, names::LAG_SECONDS) * 1000.0;
        let text = format!(
            "applied {rows} rows ({per_sec:.0} rows/s) | lag {}, {lag_ms:.0} ms | received {} \
             | applied up to {}",
            human_bytes(lag_bytes),
            lsn(metrics.received_lsn.get()),
            lsn(metrics.flushed_lsn.get()),
        );
        let io = OpsError::io("write to stdout");
        if self.terminal {
            write!(out, "\r\x1b[2K{text}").map_err(io)?;
            out.flush().map_err(OpsError::io("write to stdout"))
        } else if self.ticks % 5 == 0 {
            writeln!(out, "{text}").map_err(io)
        } else {
            Ok(())
        }
    }

    fn finish(&self, out: &mut (dyn Write + Send)) -> Result<(), OpsError> {
        if self.terminal {
            writeln!(out).map_err(OpsError::io("write to stdout"))?;
        }
        Ok(())
    }
}
