//! Which OS user the server commands run as: `initdb` refuses root, so a root process runs them
//! as `postgres`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use super::ClusterError;

/// True when this process runs as root (server commands then run as `postgres`).
pub(crate) fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid server commands run as: `None` to stay as we are, `postgres` when root.
pub(super) fn server_identity() -> Result<Option<(u32, u32)>, ClusterError> {
    let euid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if euid != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
        _ => Err(ClusterError::NoPostgresUser),
    }
}
