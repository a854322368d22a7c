//! The lsnpipe process of a run: started with the run's flags, killed and started again by
//! faults, its logs kept across restarts for the failure report.

use std::time::Duration;

use super::runner::clusters;
use crate::support::{self, Running};

/// The lsnpipe process of a run, restartable by faults.
pub struct Lsnpipe {
    pub running: Option<Running>,
    pub args: Vec<String>,
    pub db: String,
    pub slot: String,
    /// Logs of earlier processes of this run.
    pub history: String,
    /// A slot-drop fault happened: a refusal to start is then the designed outcome.
    pub slot_dropped: bool,
    /// Stopped on purpose while the load builds a backlog: faults do not start it.
    pub paused: bool,
}

impl Lsnpipe {
    pub fn start(&mut self) {
        self.running = Some(self.spawn());
    }

    /// Another process with this run's flags (for the `twin` fault).
    pub fn spawn(&self) -> Running {
        let (source, target) = clusters();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let cmd =
            support::lsnpipe_run(source, &self.db, target, &self.db, "pub", &self.slot, &args);
        Running::spawn(cmd)
    }

    /// The twin takes over: this process is killed (its log kept), the twin is the run's.
    pub fn hand_over(&mut self, twin: Running) {
        self.kill();
        self.history.push_str("---- the twin goes on ----\n");
        self.running = Some(twin);
    }

    pub fn kill(&mut self) {
        if let Some(r) = self.running.take() {
            self.history.push_str(&r.log());
            self.history.push_str("---- SIGKILL ----\n");
            r.kill9();
        }
    }

    pub fn log(&self) -> String {
        let now = self.running.as_ref().map(Running::log).unwrap_or_default();
        format!("{}{now}", self.history)
    }

    /// `Some(log)` when the process has exited by itself.
    pub fn exited(&mut self) -> Option<(std::process::ExitStatus, String)> {
        let r = self.running.as_mut()?;
        let status = r.child.try_wait().ok().flatten()?;
        std::thread::sleep(Duration::from_millis(100));
        Some((status, r.log()))
    }
}

/// The last lines of a log that say something went wrong (or simply the last lines).
pub fn log_excerpt(log: &str) -> String {
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.contains("error"))
        .collect();
    let lines: Vec<&str> = if bad.is_empty() {
        log.lines().collect()
    } else {
        bad
    };
    let start = lines.len().saturating_sub(10);
    lines[start..].join("\n")
}
