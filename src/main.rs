//! The `lsnpipe` command line: parse flags and config, set up logging and the runtime, run the
//! chosen command, and map its outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;

use lsnpipe::config::{FileSettings, RunArgs, RunSettings};
use lsnpipe::metrics::{self, Health, Metrics};
use lsnpipe::telemetry::Telemetry;
use tokio::sync::watch;

/// Change-data-capture from a PostgreSQL logical replication slot into a replica PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "lsnpipe", version, about)]
struct Cli {
    /// Settings file (TOML); flags and LSNPIPE_* variables take precedence over it.
    #[arg(long, global = true, env = "LSNPIPE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "LSNPIPE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream changes from the source's slot into the target until SIGINT/SIGTERM.
    Run(RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let file = match &cli.config {
        Some(path) => match FileSettings::load(path) {
            Ok(f) => f,
            Err(e) => return fail(&e),
        },
        None => FileSettings::default(),
    };
    match cli.command {
        Command::Run(args) => {
            let settings = match RunSettings::resolve(&args, &file) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            runtime.block_on(run(settings))
        }
    }
}

async fn run(settings: RunSettings) -> ExitCode {
    let (stop_tx, stop_rx) = watch::channel(false);
    let registry = prometheus::Registry::new();
    let metrics = match Metrics::register(&registry) {
        Ok(m) => m,
        Err(e) => return fail(&e),
    };
    let telemetry = Telemetry::new(metrics.clone(), Arc::new(Health::new()));

    let mut background = tokio::task::JoinSet::new();
    if let Some(addr) = settings.metrics_listen {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(
                    "cannot listen for metrics on {addr}: {e}; pick another --metrics-listen \
                     address, or \"off\""
                );
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("metrics on http://{addr}/metrics");
        let health = telemetry.health.clone();
        let (max_lag, stop) = (settings.ready_max_lag_bytes, stop_rx.clone());
        background.spawn(async move {
            if let Err(e) = metrics::serve(listener, registry, health, max_lag, stop).await {
                tracing::error!("metrics server stopped: {e}");
            }
        });
    }
    background.spawn(metrics::run_slot_monitor(
        settings.source.clone(),
        settings.slot.clone(),
        metrics,
        settings.slot_monitor_interval,
        stop_rx.clone(),
    ));

    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: finishing the current transaction");
        let _ = stop_tx.send(true);
        // Keep the sender alive until the process ends; a dropped sender would also stop the
        // background tasks, and only a signal should.
        std::future::pending::<()>().await;
    });
    let outcome = lsnpipe::pipeline::run(&settings, &telemetry, stop_rx).await;
    signals.abort();
    // The aborted signal task dropped the sender: the server and the monitor stop now.
    while background.join_next().await.is_some() {}
    match outcome {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(err: &dyn std::error::Error) -> ExitCode {
    tracing::error!("{}", lsnpipe::report::chain(err));
    ExitCode::FAILURE
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(lsnpipe::snapshot::LogWriter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
