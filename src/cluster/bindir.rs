//! Where the PostgreSQL server binaries are: `PG_BINDIR`, `pg_config`, the newest Debian install,
//! else a build downloaded into the user's cache (`pg_download`); per side for the tests
//! (`PG_BINDIR_SOURCE`, `PG_BINDIR_TARGET`).

use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::Command;

use super::ClusterError;
use crate::pg_download::{self, DownloadError, DownloadPolicy, Fetch};

/// Where the PostgreSQL server binaries are: `PG_BINDIR`, else `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/*/bin`, else a build downloaded into the user's cache (see
/// `pg_download`; `LSNPIPE_PG_DOWNLOAD=never` turns that off, `always` uses it first). A
/// directory counts only if it holds `initdb`, `pg_ctl` and `postgres` (Debian's
/// `/usr/bin/pg_config` may point at a client-only directory).
pub fn find_bindir() -> Result<PathBuf, ClusterError> {
    let policy = DownloadPolicy::from_env().map_err(ClusterError::Download)?;
    if policy == DownloadPolicy::Always {
        return download_bindir().map_err(ClusterError::Download);
    }
    match find_installed() {
        Ok(dir) => Ok(dir),
        Err(looked) if policy == DownloadPolicy::Auto => {
            download_bindir().map_err(|source| ClusterError::DownloadFailed { looked, source })
        }
        Err(looked) => Err(ClusterError::NoBinaries { looked }),
    }
}

/// The server bindir for one role of the test clusters: the directory named by the environment
/// variable `var` (`PG_BINDIR_SOURCE`, `PG_BINDIR_TARGET`) when it is set, else `find_bindir`.
/// This is what lets one test run put a source of one major next to a target of another
/// (`scripts/pg-versions.sh`). A variable naming a directory without the server binaries is an
/// error, not a silent fall-back: the run would otherwise test a different major than asked.
pub fn role_bindir(var: &str) -> Result<PathBuf, ClusterError> {
    match std::env::var_os(var) {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if pg_download::complete(&dir) {
                Ok(dir)
            } else {
                Err(ClusterError::Command {
                    what: format!("{var}={}", dir.display()),
                    detail: "the directory does not hold initdb, pg_ctl and postgres; \
                             `lsnpipe pg-fetch --major N --print-bindir` prints one that does"
                        .into(),
                })
            }
        }
        _ => find_bindir(),
    }
}

/// The downloaded build of `LSNPIPE_PG_MAJOR` (fetched now unless cached; the download says so
/// on stderr, in one line).
fn download_bindir() -> Result<PathBuf, DownloadError> {
    let fetch = Fetch::from_env(pg_download::major_from_env()?)?;
    fetch.ensure(&mut io::stderr())
}

/// An installed server's bindir, or where it was looked for.
fn find_installed() -> Result<PathBuf, String> {
    let complete = pg_download::complete;
    let mut looked = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if complete(&dir) {
            return Ok(dir);
        }
        looked.push(format!("PG_BINDIR={}", dir.display()));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && complete(&dir) {
            return Ok(dir);
        }
        looked.push(format!("pg_config --bindir={}", dir.display()));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    looked.push("/usr/lib/postgresql/*/bin".to_owned());
    versions.pop().map(|(_, dir)| dir).ok_or(looked.join(", "))
}
