//! The lsnpipe binary under test: its commands on the test's clusters, and a running process
//! whose log is collected.

use super::*;

/// The `lsnpipe` binary built for this test run.
pub fn lsnpipe_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lsnpipe"));
    for (key, _) in std::env::vars() {
        if key.starts_with("LSNPIPE_") || key.starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env(
        "RUST_LOG",
        std::env::var("LSNPIPE_TEST_LOG").unwrap_or_else(|_| "info".into()),
    );
    cmd
}

/// `lsnpipe run` from `source_db` to `target_db` on the given clusters.
pub fn lsnpipe_run(
    source: &ClusterRef,
    source_db: &str,
    target: &ClusterRef,
    target_db: &str,
    publication: &str,
    slot: &str,
    extra: &[&str],
) -> std::process::Command {
    let mut cmd = lsnpipe_command();
    cmd.arg("run")
        .args(["--source", &source.conn_string(source_db)])
        .args(["--target", &target.conn_string(target_db)])
        .args(["--publication", publication, "--slot", slot])
        .args(extra);
    if !extra.contains(&"--metrics-listen") {
        cmd.args(["--metrics-listen", "off"]);
    }
    cmd
}

/// `lsnpipe <subcommand>` for publication `pub` and `slot`, between database `db` on the shared
/// source and the same-named database on the shared target.
pub fn lsnpipe_on(subcommand: &str, db: &str, slot: &str) -> std::process::Command {
    let mut cmd = lsnpipe_command();
    cmd.arg(subcommand)
        .args(["--source", &source().conn_string(db)])
        .args(["--target", &target().conn_string(db)])
        .args(["--publication", "pub", "--slot", slot]);
    cmd
}

/// `lsnpipe run` of publication `pub` from database `db` on the shared source to the same-named
/// database on the shared target.
pub fn run_command(db: &str, slot: &str, extra: &[&str]) -> std::process::Command {
    lsnpipe_run(source(), db, target(), db, "pub", slot, extra)
}

/// `lsnpipe run` of publication `pub` from `db` on `source` to the same-named database on
/// `target` (clusters of the test's own, or reached through a proxy), started.
pub fn run_between(
    source: &ClusterRef,
    target: &ClusterRef,
    db: &str,
    slot: &str,
    extra: &[&str],
) -> Running {
    Running::spawn(lsnpipe_run(source, db, target, db, "pub", slot, extra))
}

/// [`run_command`], started.
pub fn run(db: &str, slot: &str, extra: &[&str]) -> Running {
    Running::spawn(run_command(db, slot, extra))
}

/// Run lsnpipe expecting it to stop by itself with an error; return its log.
pub async fn run_expecting_error(cmd: std::process::Command) -> String {
    Running::spawn(cmd).failure().await
}

/// A running `lsnpipe` whose stderr is collected; killed when dropped.
pub struct Running {
    pub child: std::process::Child,
    log: std::sync::Arc<Mutex<String>>,
}

impl Running {
    pub fn spawn(mut cmd: std::process::Command) -> Running {
        use std::io::BufRead;
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn lsnpipe");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = std::sync::Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        Running { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status (within 60 s).
    pub async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait(std::time::Duration::from_secs(60)).await
    }

    /// SIGTERM, and the log of a clean exit (panics with the log on any other exit).
    pub async fn stop(self) -> String {
        let (status, log) = self.terminate().await;
        assert!(
            status.success(),
            "lsnpipe did not stop cleanly: {status:?}; log:\n{log}"
        );
        log
    }

    /// Poll `check` until it returns true; after [`WAIT`], panic naming `what`, with the log.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = std::time::Instant::now() + WAIT;
        while !check().await {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}; lsnpipe's log:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Wait until this lsnpipe's log contains `text`.
    pub async fn wait_for_log(&self, text: &str) {
        self.wait_until(&format!("{text:?} in the log"), || {
            let log = self.log();
            async move { log.contains(text) }
        })
        .await;
    }

    /// Start an lsnpipe that creates its slot and copies a 300,000-row table `a` (`id` int
    /// key, `v` text) of `db`, and return it once the copy has started: a copy long enough to
    /// do something beside it.
    pub async fn copying(source: &Client, db: &str, slot: &str) -> Running {
        exec(
            source,
            "INSERT INTO a SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g",
        )
        .await;
        let lsnpipe = run(db, slot, &["--create-slot"]);
        lsnpipe.wait_for_log("copying table").await;
        lsnpipe
    }

    /// Wait until this lsnpipe has made `tables` equal on both sides (see [`converge`]).
    pub async fn converge(&self, source: &Client, target: &Client, tables: &[&str]) {
        self.wait_until(&format!("{tables:?} to be equal on both sides"), || {
            tables_equal(source, target, tables)
        })
        .await;
    }

    /// Wait for lsnpipe to stop by itself with an error; its log.
    pub async fn failure(&mut self) -> String {
        let (status, log) = self.wait(WAIT).await;
        assert!(!status.success(), "lsnpipe should have failed; log:\n{log}");
        log
    }

    /// Wait for the process to exit by itself.
    pub async fn wait(
        &mut self,
        timeout: std::time::Duration,
    ) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread drain the pipe.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                return (status, self.log());
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "lsnpipe did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(mut self) {
        self.kill();
    }

    /// SIGKILL, and wait for the process to be gone (for a handle that is then replaced).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A local address nothing listens on (for a metrics server or a proxy).
pub fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
