//! A verified tarball into the cache: unpacked in a staging directory beside the cache entry,
//! the package's library symlinks created, then renamed into place in one step, so a reader
//! sees either no entry or a complete one (two processes racing both succeed; one copy wins).

use std::path::{Component, Path, PathBuf};

use super::{DownloadError, io_err};

/// A private directory under the cache root, removed when dropped (on success it is empty by
/// then, its package having been renamed into place).
#[derive(Debug)]
pub(super) struct Staging(PathBuf);

impl Staging {
    pub fn create(cache_root: &Path, version: &str) -> Result<Self, DownloadError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = cache_root.join(format!(
            ".partial-{version}-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        Ok(Staging(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unpack a `.tgz` into `dest` (the tar crate refuses entries that would land outside it).
pub(super) fn untar(tarball: &Path, dest: &Path) -> Result<(), String> {
    let file = std::fs::File::open(tarball).map_err(|e| format!("{}: {e}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive.set_preserve_permissions(false);
    archive
        .unpack(dest)
        .map_err(|e| format!("{}: {e}", tarball.display()))?;
    // Directories are made with the process's umask; the server may run as another user
    // (`postgres`, when we are root), who must be able to enter them all.
    open_directories(dest).map_err(|e| format!("{}: {e}", dest.display()))
}

fn open_directories(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            open_directories(&entry.path())?;
        }
    }
    Ok(())
}

/// One entry of `native/pg-symlinks.json`: a link named `target` to the file `source`, both
/// relative to the package root and in the same directory.
#[derive(Debug, serde::Deserialize)]
struct Link {
    source: String,
    target: String,
}

/// Create the symlinks the package lists (npm's install script would); the libraries are
/// shipped once, under their full version, and the binaries load them by their soname.
pub(super) fn create_symlinks(package_root: &Path) -> Result<(), String> {
    let list = package_root.join("native").join("pg-symlinks.json");
    let text = match std::fs::read_to_string(&list) {
        Ok(t) => t,
        // Builds that need no links ship no list.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", list.display())),
    };
    let links: Vec<Link> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", list.display()))?;
    for link in links {
        let (source, target) = (inside(&link.source)?, inside(&link.target)?);
        let (Some(dir), Some(name)) = (source.parent(), source.file_name()) else {
            return Err(format!("symlink source {:?} names no file", link.source));
        };
        if target.parent() != Some(dir) {
            return Err(format!(
                "symlink {:?} -> {:?} leaves its directory",
                link.target, link.source
            ));
        }
        let at = package_root.join(&target);
        if at.symlink_metadata().is_ok() {
            continue;
        }
        // Relative, so the cache entry can be moved as a whole.
        std::os::unix::fs::symlink(name, &at).map_err(|e| format!("{}: {e}", at.display()))?;
    }
    Ok(())
}

/// A relative path with only plain components (no `..`, no root).
fn inside(path: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(path);
    if p.as_os_str().is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("symlink path {path:?} is not inside the package"));
    }
    Ok(p)
}

/// Move the unpacked package to `dest`; if another process got there first, keep its copy.
pub(super) fn publish(unpacked: &Path, dest: &Path) -> Result<(), DownloadError> {
    match std::fs::rename(unpacked, dest) {
        Ok(()) => Ok(()),
        Err(_) if super::complete(&dest.join("native").join("bin")) => Ok(()),
        Err(e) => Err(io_err(format!(
            "move {} to {}",
            unpacked.display(),
            dest.display()
        ))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lsnpipe-unpack-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("native/lib")).unwrap();
        dir
    }

    #[test]
    fn listed_symlinks_point_at_the_library_in_the_same_directory() {
        let root = scratch("links");
        std::fs::write(root.join("native/lib/libx.so.5.17"), b"lib").unwrap();
        std::fs::write(
            root.join("native/pg-symlinks.json"),
            r#"[{"source":"native/lib/libx.so.5.17","target":"native/lib/libx.so.5"},
                {"source":"native/lib/libx.so.5.17","target":"native/lib/libx.so"}]"#,
        )
        .unwrap();
        create_symlinks(&root).unwrap();
        for link in ["libx.so.5", "libx.so"] {
            let at = root.join("native/lib").join(link);
            assert_eq!(
                std::fs::read_link(&at).unwrap(),
                PathBuf::from("libx.so.5.17")
            );
            assert_eq!(std::fs::read(&at).unwrap(), b"lib");
        }
        // A second run (an entry already there) changes nothing.
        create_symlinks(&root).unwrap();
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn symlinks_leaving_the_package_are_refused() {
        for (source, target) in [
            ("native/lib/libx.so.1", "../../evil"),
            ("/etc/passwd", "native/lib/passwd"),
            ("native/lib/libx.so.1", "native/bin/libx.so"),
            ("", "native/lib/x"),
        ] {
            let root = scratch("evil");
            std::fs::write(
                root.join("native/pg-symlinks.json"),
                format!(r#"[{{"source":"{source}","target":"{target}"}}]"#),
            )
            .unwrap();
            assert!(create_symlinks(&root).is_err(), "{source} -> {target}");
            let _ = std::fs::remove_dir_all(&root);
        }
    }
}
