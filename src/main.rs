//! The `lsnpipe` command line: parse flags and config, set up logging and the runtime, run the
//! chosen command, and map its outcome to an exit code.

mod cli_commands;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use lsnpipe::config::{
    ConnArgs, DemoArgs, DemoSettings, FileSettings, OpsSettings, RunArgs, RunSettings,
};
use lsnpipe::service::Service;
use tokio::sync::watch;

/// Change-data-capture from a PostgreSQL logical replication slot into a replica PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "lsnpipe", version, about)]
struct Cli {
    /// Settings file (TOML); flags and LSNPIPE_* variables take precedence over it.
    #[arg(long, global = true, env = "LSNPIPE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text (readable; the default) or json (one object per line). Which messages
    /// are logged follows RUST_LOG (e.g. RUST_LOG=info,lsnpipe=debug).
    #[arg(long, global = true, env = "LSNPIPE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
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
    Run(RunCommand),
    /// Try lsnpipe on two throwaway local clusters with a sample write load (Ctrl-C stops it).
    Demo(DemoArgs),
    /// Preflight: check both databases for what replication needs; exits 1 if something blocks.
    Check(ReportArgs),
    /// Show the slot, the retained WAL, the applied position and the lag; exits 1 if the slot is
    /// missing or lost.
    Status(ReportArgs),
    /// Compare every published table between source and target while replication runs, and name
    /// the rows that differ; exits 0 when equal, 1 on any difference, 2 when it cannot compare.
    Verify(lsnpipe::verify::VerifyArgs),
    /// Planned switch-over: optionally fence writes on the source, wait until the target has
    /// applied everything, copy sequences, verify, and stop the running `lsnpipe run`.
    Cutover(lsnpipe::ops::cutover::CutoverArgs),
    /// Drop the slot and lsnpipe's bookkeeping on the target (asks first unless --yes).
    Teardown(TeardownArgs),
    /// After lost changes (slot dropped, invalidated or ahead of the target): drop the slot, empty
    /// the published tables on the target and forget the slot's position, so that the next
    /// `run --create-slot` copies everything again (asks first unless --yes).
    Resync(TeardownArgs),
    /// Captured DDL: put on the source (or take off) the event triggers that send each DDL
    /// command touching a published table through the stream, so `run` applies it on the target
    /// at its place (needs a superuser on the source).
    Ddl(DdlArgs),
    /// Print a shell completion script (e.g. `lsnpipe completions bash > /etc/bash_completion.d/lsnpipe`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Download PostgreSQL server binaries into the cache (unless there already) and say where.
    PgFetch(PgFetchArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    Man {
        /// Write lsnpipe.1 and lsnpipe-COMMAND.1 for every command into this directory.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Report format: text (a table for people) or json (one object, field names documented in
    /// the README). The exit code is the same for both.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct PgFetchArgs {
    /// PostgreSQL major version (14 to 18).
    #[arg(long, env = "LSNPIPE_PG_MAJOR", default_value_t = lsnpipe::pg_download::DEFAULT_MAJOR)]
    major: u32,
    /// Print only the server bin directory (for scripts: `PG_BINDIR=$(lsnpipe pg-fetch --print-bindir)`).
    #[arg(long)]
    print_bindir: bool,
}

#[derive(Debug, clap::Args)]
struct RunCommand {
    #[command(flatten)]
    args: RunArgs,
    /// Copy the values of the sequences the published tables use to the target every SECS
    /// seconds (a target promoted after a failover then does not hand out used ids).
    #[arg(long, env = "LSNPIPE_SYNC_SEQUENCES", value_name = "SECS")]
    sync_sequences: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct DdlArgs {
    #[command(subcommand)]
    action: DdlAction,
    /// Source connection string (a superuser: event triggers need one).
    #[arg(long, global = true, env = "LSNPIPE_SOURCE", hide_env_values = true)]
    source: Option<String>,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum DdlAction {
    /// Create (or replace) the event triggers and their functions in schema lsnpipe.
    Install,
    /// Drop them, and the lsnpipe schema when nothing else is in it.
    Remove,
}

#[derive(Debug, clap::Args)]
struct TeardownArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Generated from the flag definitions: no settings, logging or runtime needed.
    match &cli.command {
        Command::Completions { shell } => return cli_commands::completions(Cli::command(), *shell),
        Command::Man { out_dir } => return cli_commands::man(Cli::command(), out_dir.as_deref()),
        Command::PgFetch(args) => return cli_commands::pg_fetch(args.major, args.print_bindir),
        _ => {}
    }
    // The file is read before logging starts, since it may choose the log format.
    let file = match &cli.config {
        Some(path) => FileSettings::load(path),
        None => Ok(FileSettings::default()),
    };
    // FileSettings::load has checked the value, so it parses.
    let file_format = file
        .as_ref()
        .ok()
        .and_then(|f| f.log_format.as_deref())
        .and_then(|v| LogFormat::from_str(v, true).ok());
    let format = cli.log_format.or(file_format).unwrap_or(LogFormat::Text);
    // The demo draws its own status line; its log shows only what needs attention by default.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info,tokio_postgres=warn",
    };
    init_logging(format, default_filter);
    let file = match file {
        Ok(f) => f,
        Err(e) => return fail(&e),
    };
    // One thread: the pipeline is a chain of small tasks handing messages to each other, and on
    // one thread those hand-offs cost no cross-thread wake-ups. The source's walsender and the
    // target's backend are the other processes on the machine that need a core.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Run(cmd) => {
            let settings = match RunSettings::resolve(&cmd.args, &file) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            let sync = cmd
                .sync_sequences
                .or(file.sync_sequences)
                .filter(|s| *s > 0)
                .map(Duration::from_secs);
            runtime.block_on(run(settings, sync))
        }
        Command::Demo(args) => match DemoSettings::resolve(&args, &file) {
            Ok(settings) => runtime.block_on(cli_commands::demo(settings)),
            Err(e) => fail(&e),
        },
        Command::Check(args) => match OpsSettings::resolve(&args.conn, &file, true) {
            Ok(settings) => runtime.block_on(cli_commands::check(settings, args.format)),
            Err(e) => fail(&e),
        },
        Command::Status(args) => match OpsSettings::resolve(&args.conn, &file, false) {
            Ok(settings) => runtime.block_on(cli_commands::status(settings, args.format)),
            Err(e) => fail(&e),
        },
        Command::Verify(args) => match lsnpipe::verify::VerifyOptions::resolve(&args, &file) {
            Ok(options) => runtime.block_on(cli_commands::verify(options, args.format)),
            Err(e) => fail(&e),
        },
        Command::Cutover(args) => {
            match lsnpipe::verify::VerifyOptions::resolve(&args.verify, &file) {
                Ok(options) => runtime.block_on(cli_commands::cutover(options, args)),
                Err(e) => fail(&e),
            }
        }
        Command::Teardown(args) => match OpsSettings::resolve(&args.conn, &file, false) {
            Ok(settings) => runtime.block_on(cli_commands::teardown(settings, args.yes)),
            Err(e) => fail(&e),
        },
        Command::Resync(args) => match OpsSettings::resolve(&args.conn, &file, true) {
            Ok(settings) => runtime.block_on(cli_commands::resync(settings, args.yes)),
            Err(e) => fail(&e),
        },
        Command::Ddl(args) => {
            match args
                .source
                .or_else(|| file.source.clone())
                .filter(|s| !s.is_empty())
            {
                Some(source) => runtime.block_on(cli_commands::ddl(
                    &source,
                    matches!(args.action, DdlAction::Install),
                )),
                None => fail(&lsnpipe::config::ConfigError::Missing {
                    key: "source",
                    flag: "source",
                    env: "LSNPIPE_SOURCE",
                }),
            }
        }
        // Answered before the settings were read.
        Command::Completions { .. } | Command::Man { .. } | Command::PgFetch(_) => {
            ExitCode::SUCCESS
        }
    }
}

async fn run(settings: RunSettings, sync_sequences: Option<Duration>) -> ExitCode {
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = match settings.metrics_listen {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!("metrics on http://{addr}/metrics");
                Some(l)
            }
            Err(e) => {
                tracing::error!(
                    "cannot listen for metrics on {addr}: {e}; pick another --metrics-listen \
                     address, or \"off\""
                );
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let mut service = match Service::start(&settings, listener, &stop_rx) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };

    if let Some(every) = sync_sequences {
        service.spawn(lsnpipe::sequences::keep_in_sync(
            settings.source.clone(),
            settings.target.clone(),
            settings.publication.clone(),
            every,
            stop_rx.clone(),
        ));
    }

    // `lsnpipe cutover` asks a running `run` to stop through a row on the target.
    let cutover =
        lsnpipe::ops::cutover::stop_requested(settings.target.clone(), settings.slot.clone());
    let signals = tokio::spawn(async move {
        tokio::select! {
            () = wait_for_signal() => tracing::info!("stopping: finishing the current transaction"),
            () = cutover => {}
        }
        let _ = stop_tx.send(true);
        // Keep the sender alive until the process ends; a dropped sender would also stop the
        // background tasks, and only a signal should.
        std::future::pending::<()>().await;
    });
    let outcome = lsnpipe::pipeline::run(&settings, &service.telemetry, stop_rx).await;
    signals.abort();
    // The aborted signal task dropped the sender: the server and the monitor stop now.
    service.stopped().await;
    match outcome {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

pub(crate) fn fail(err: &(dyn std::error::Error + 'static)) -> ExitCode {
    tracing::error!("{}", lsnpipe::report::failure(err));
    ExitCode::FAILURE
}

pub(crate) async fn wait_for_signal() {
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

fn init_logging(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only for a person at a terminal, not in files or log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(lsnpipe::telemetry::LogWriter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
