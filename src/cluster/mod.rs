//! Throwaway local PostgreSQL clusters, for the test suite and `lsnpipe demo`.
//!
//! ```text
//!  find server binaries (installed, else downloaded: `pg_download`) ─▶ temp dir (owned by `postgres` when we are root) ─▶ initdb
//!       ─▶ postgresql.conf (loopback port, wal_level=logical) ─▶ pg_ctl start
//!       ─▶ … used …  ─▶ Drop: pg_ctl stop -m immediate, remove the directory
//! ```
//!
//! `initdb` refuses to run as root, so when this process is root every server command runs as
//! the `postgres` OS user. A watchdog shell process removes the cluster if this process dies
//! without running its destructors (a SIGKILL, an abort), so nothing is left behind. Where the
//! binaries are is `bindir.rs`; which OS user runs them is `os_user.rs`.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::pg_download::DownloadError;

mod bindir;
mod os_user;

pub use bindir::{find_bindir, role_bindir};
pub(crate) use os_user::running_as_root;
use os_user::server_identity;

/// Why a local cluster could not be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found, and \
         LSNPIPE_PG_DOWNLOAD=never: install them (Debian/Ubuntu: `apt-get install postgresql`), \
         set PG_BINDIR to the directory that holds them, or allow the download \
         (looked in: {looked})"
    )]
    NoBinaries { looked: String },
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found (looked in: {looked}), \
         and downloading them failed (install them: Debian/Ubuntu `apt-get install postgresql`, \
         or set PG_BINDIR to the directory that holds them)"
    )]
    DownloadFailed {
        looked: String,
        #[source]
        source: DownloadError,
    },
    #[error("PostgreSQL server binaries (LSNPIPE_PG_DOWNLOAD=always)")]
    Download(#[source] DownloadError),
    #[error(
        "running as root, and initdb refuses root: create a `postgres` OS user (the Debian \
         package `postgresql` does) or run as an ordinary user"
    )]
    NoPostgresUser,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// A local server in a temporary directory, on a free loopback port, with superuser
/// `postgres` and `trust` authentication (tests tighten `pg_hba.conf` where they need to).
#[derive(Debug)]
pub struct LocalCluster {
    name: String,
    bindir: PathBuf,
    root: PathBuf,
    port: u16,
    identity: Option<(u32, u32)>,
    keep: bool,
}

/// Settings every local cluster gets: logical decoding on, room for many slots and senders and
/// for prepared (two-phase) transactions, and no fsync (these clusters are thrown away;
/// durability across an OS crash does not matter).
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "'127.0.0.1'"),
    ("wal_level", "logical"),
    ("max_replication_slots", "200"),
    ("max_wal_senders", "100"),
    ("max_connections", "300"),
    ("max_prepared_transactions", "20"),
    ("max_worker_processes", "32"),
    ("max_logical_replication_workers", "16"),
    ("max_sync_workers_per_subscription", "4"),
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("shared_buffers", "128MB"),
    ("log_min_messages", "warning"),
    ("log_line_prefix", "'%m [%p] '"),
];

impl LocalCluster {
    /// Create and start a cluster. `name` shows in the directory name and in errors;
    /// `settings` are appended to `postgresql.conf` after the defaults (so they win).
    pub fn start(name: &str, settings: &[(&str, &str)]) -> Result<Self, ClusterError> {
        Self::start_with_bindir(name, find_bindir()?, settings)
    }

    /// As `start`, with the server binaries of `bindir` (another major than `find_bindir`'s).
    pub fn start_with_bindir(
        name: &str,
        bindir: PathBuf,
        settings: &[(&str, &str)],
    ) -> Result<Self, ClusterError> {
        let identity = server_identity()?;
        let root = unique_dir(name)?;
        let mut cluster = LocalCluster {
            name: name.to_owned(),
            bindir,
            root,
            port: 0,
            identity,
            keep: false,
        };
        cluster.spawn_watchdog();
        cluster.init(settings)?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// A physical standby of `primary`, made from a copy of its data directory: the primary is
    /// stopped cleanly for the copy (so the copy needs no recovery of its own) and started
    /// again, then the copy starts with `standby.signal` and a `primary_conninfo` that points at
    /// the primary. `settings` are appended to the copy's `postgresql.conf` (for example
    /// `primary_slot_name`, `hot_standby_feedback`, `sync_replication_slots`).
    pub fn start_standby_of(
        primary: &LocalCluster,
        name: &str,
        settings: &[(&str, &str)],
    ) -> Result<Self, ClusterError> {
        let root = unique_dir(name)?;
        let mut standby = LocalCluster {
            name: name.to_owned(),
            bindir: primary.bindir.clone(),
            root,
            port: 0,
            identity: primary.identity,
            keep: false,
        };
        standby.spawn_watchdog();
        primary.stop()?;
        // `cp -a` keeps owners and modes: the copy belongs to the server's user, as initdb left it.
        let copied = Command::new("cp")
            .arg("-a")
            .arg(primary.data_dir())
            .arg(standby.data_dir())
            .output()
            .map_err(io_err("run cp"));
        let restarted = primary.start_again();
        check(&copied?, "copy the primary's data directory")?;
        restarted?;
        standby.write_owned(&standby.data_dir().join("standby.signal"), b"")?;
        let mut conf = String::from("\n# lsnpipe standby\n");
        let socket_dir = standby.root.to_string_lossy().replace('\'', "''");
        conf.push_str(&format!("unix_socket_directories = '{socket_dir}'\n"));
        conf.push_str(&format!(
            // dbname: slot synchronisation (`sync_replication_slots`, 17+) needs one.
            "primary_conninfo = 'host={} port={} user=postgres dbname=postgres \
             application_name={name}'\n",
            primary.host(),
            primary.port
        ));
        for (key, value) in settings {
            conf.push_str(&format!("{key} = {value}\n"));
        }
        standby.append_conf(&conf)?;
        standby.start_on_free_port()?;
        Ok(standby)
    }

    /// Promote a standby to a primary, waiting until it accepts writes.
    pub fn promote(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&["promote", "-w", "-t", "60"]).map(drop)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The directory that holds the data directory, the log and the Unix socket.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The server's major version, from the data directory's `PG_VERSION` (`14`, …, `18`).
    pub fn major(&self) -> Result<u32, ClusterError> {
        let path = self.data_dir().join("PG_VERSION");
        let text = fs::read_to_string(&path).map_err(io_err(format!("read {}", path.display())))?;
        text.trim().parse().map_err(|_| ClusterError::Command {
            what: format!("read {}", path.display()),
            detail: format!("not a major version: {:?}", text.trim()),
        })
    }

    /// A libpq key/value connection string for `dbname` as the superuser.
    pub fn conn_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={}",
            self.host(),
            self.port,
            dbname
        )
    }

    /// Leave the cluster running and its directory in place when this value is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
        // The watchdog notices the marker and leaves the cluster alone as well.
        let _ = fs::write(self.root.join("keep"), b"");
    }

    /// Append lines to `postgresql.conf` (takes effect on reload or restart).
    pub fn append_conf(&self, text: &str) -> Result<(), ClusterError> {
        let path = self.data_dir().join("postgresql.conf");
        let mut conf = fs::read_to_string(&path).map_err(io_err("read postgresql.conf"))?;
        conf.push('\n');
        conf.push_str(text);
        conf.push('\n');
        self.write_owned(&path, conf.as_bytes())
    }

    /// Put `lines` at the top of `pg_hba.conf` (first match wins), keep trust for the rest,
    /// and reload.
    pub fn prepend_hba(&self, lines: &str) -> Result<(), ClusterError> {
        let path = self.data_dir().join("pg_hba.conf");
        let old = fs::read_to_string(&path).map_err(io_err("read pg_hba.conf"))?;
        self.write_owned(&path, format!("{lines}\n{old}").as_bytes())?;
        self.reload()
    }

    /// Write a file inside the cluster directory, owned by the server's user.
    pub fn write_owned(&self, path: &Path, contents: &[u8]) -> Result<(), ClusterError> {
        fs::write(path, contents).map_err(io_err(format!("write {}", path.display())))?;
        self.chown(path)
    }

    pub fn reload(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&["reload"]).map(drop)
    }

    /// Stop the server (fast shutdown: sessions are ended, a checkpoint is written).
    pub fn stop(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"])
            .map(drop)
    }

    /// Stop the server as if the machine lost power (no checkpoint).
    pub fn crash(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"])
            .map(drop)
    }

    /// Start a stopped server again on the same port.
    pub fn start_again(&self) -> Result<(), ClusterError> {
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            &self.log_file().to_string_lossy(),
        ])
        .map(drop)
    }

    pub fn restart(&self) -> Result<(), ClusterError> {
        self.stop()?;
        self.start_again()
    }

    fn init(&self, settings: &[(&str, &str)]) -> Result<(), ClusterError> {
        let data = self.data_dir();
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output()
            .map_err(io_err("run initdb"))?;
        check(&out, "initdb")?;
        let mut conf = String::from("\n# lsnpipe local cluster\n");
        let socket_dir = self.root.to_string_lossy().replace('\'', "''");
        conf.push_str(&format!("unix_socket_directories = '{socket_dir}'\n"));
        for (key, value) in BASE_SETTINGS.iter().chain(settings) {
            conf.push_str(&format!("{key} = {value}\n"));
        }
        self.append_conf(&conf)
    }

    fn start_on_free_port(&mut self) -> Result<(), ClusterError> {
        let mut last = None;
        // Another process may take the port between our probe and the server's bind: retry.
        for _ in 0..5 {
            self.port = free_port()?;
            self.append_conf(&format!("port = {}", self.port))?;
            match self.start_again() {
                Ok(()) => return Ok(()),
                Err(err) => {
                    let log = fs::read_to_string(self.log_file()).unwrap_or_default();
                    if !log.contains("could not bind") && !log.contains("already in use") {
                        return Err(err);
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClusterError::Command {
            what: "start".into(),
            detail: "no free port".into(),
        }))
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, ClusterError> {
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("run pg_ctl"))?;
        check(&out, &format!("pg_ctl {} ({})", args.join(" "), self.name))?;
        Ok(out)
    }

    fn server_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.current_dir(&self.root);
        // pg_ctl hands its environment to the server; a caller's PG* settings must not leak in.
        for var in [
            "PGDATA",
            "PGPORT",
            "PGHOST",
            "PGUSER",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        if let Some((uid, gid)) = self.identity {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn chown(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some((uid, gid)) = self.identity {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(io_err(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    /// A detached shell that waits for this process to end, then stops the server and removes
    /// the directory, unless the cluster is kept. It covers deaths that skip `Drop`.
    fn spawn_watchdog(&self) {
        let script = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
            [ -e "$2/keep" ] && exit 0
            if [ -d "$2/data" ]; then
                if [ -n "$4" ]; then
                    runuser -u postgres -- "$3/pg_ctl" -D "$2/data" -m immediate -w stop
                else
                    "$3/pg_ctl" -D "$2/data" -m immediate -w stop
                fi
            fi >/dev/null 2>&1
            rm -rf "$2"
        "#;
        let as_postgres = if self.identity.is_some() { "1" } else { "" };
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("lsnpipe-cluster-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.root)
            .arg(&self.bindir)
            .arg(as_postgres)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // If the watchdog cannot start, Drop still cleans up on every ordinary exit.
        let _ = cmd.spawn();
    }

    fn remove(&self) {
        let data = self.data_dir();
        if data.join("postmaster.pid").exists() {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if !self.keep {
            self.remove();
        }
    }
}

fn check(out: &Output, what: &str) -> Result<(), ClusterError> {
    if out.status.success() {
        return Ok(());
    }
    let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if detail.is_empty() {
        detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    Err(ClusterError::Command {
        what: what.to_owned(),
        detail,
    })
}

/// A fresh directory under the system temp dir, writable by the server's user.
fn unique_dir(name: &str) -> Result<PathBuf, ClusterError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "lsnpipe-{name}-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                if let Some((uid, gid)) = server_identity()? {
                    std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                        .map_err(io_err(format!("chown {}", dir.display())))?;
                }
                return Ok(dir);
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(io_err(format!("create {}", dir.display()))(err)),
        }
    }
    Err(ClusterError::Command {
        what: "create a temporary directory".into(),
        detail: "too many name clashes".into(),
    })
}

fn free_port() -> Result<u16, ClusterError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("find a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("find a free port"))?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_binaries_and_without_download_the_error_names_the_package() {
        let err = ClusterError::NoBinaries {
            looked: "/usr/lib/postgresql/*/bin".into(),
        }
        .to_string();
        assert!(err.contains("apt-get install postgresql"), "{err}");
        assert!(err.contains("LSNPIPE_PG_DOWNLOAD=never"), "{err}");
        assert!(err.contains("PG_BINDIR"), "{err}");
    }
}
