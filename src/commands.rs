//! The operator commands as `main` runs them: settings in, a report on stdout, an exit code out.
//! The work itself is in `lsnpipe::ops`.

use std::process::ExitCode;

use lsnpipe::config::{DemoSettings, OpsSettings};
use lsnpipe::ops::{
    check as preflight, demo as sample, resync as recopy, status as state, teardown as remove,
};
use tokio::sync::watch;

use crate::{fail, wait_for_signal};

pub async fn check(settings: OpsSettings) -> ExitCode {
    let report = preflight::run(&settings).await;
    print(&report.render());
    if report.blocks_replication() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub async fn status(settings: OpsSettings) -> ExitCode {
    match state::run(&settings).await {
        Ok(report) => {
            print(&report.render());
            if report.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(&e),
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

fn print(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
