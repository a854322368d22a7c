//! The operator commands end to end: `demo`, `check`, `status`, `teardown`, the config file's
//! precedence, and passwords kept out of everything lsnpipe prints.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{self, ClusterRef, Running};

const WAIT: Duration = Duration::from_secs(120);

/// Run an lsnpipe command to completion (stdin closed), within `timeout`.
async fn output(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null());
    let run = tokio::task::spawn_blocking(move || cmd.output().expect("run lsnpipe"));
    tokio::time::timeout(timeout, run)
        .await
        .expect("lsnpipe finished in time")
        .expect("join")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ops_command(command: &str, source: &str, target: &str, extra: &[&str]) -> Command {
    let mut cmd = support::lsnpipe_command();
    cmd.arg(command)
        .args(["--source", source, "--target", target])
        .args(extra);
    cmd
}

/// Processes whose command line mentions `path` (a server or watchdog of a demo cluster).
fn processes_mentioning(path: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(path) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

#[tokio::test]
async fn demo_streams_the_workload_and_leaves_nothing_behind() {
    let mut cmd = support::lsnpipe_command();
    cmd.args(["demo", "--duration", "10", "--rate", "100"])
        .args(["--metrics-listen", "127.0.0.1:0"]);
    let out = output(cmd, Duration::from_secs(240)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let summary = stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo summary: "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    let field = |key: &str| -> String {
        summary
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing: {summary}"))
            .to_owned()
    };
    let written: u64 = field("transactions_written").parse().unwrap();
    let applied: u64 = field("rows_applied").parse().unwrap();
    // The 6000 sample rows arrive by the initial copy (tables_match covers them); every load
    // transaction after it writes at least one row, which arrives by streaming.
    assert!(written > 100, "{summary}");
    assert!(applied >= written, "{summary}");
    assert_eq!(field("tables_match"), "true", "{summary}");
    assert!(stdout.contains("http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("psql \"host=127.0.0.1 port="), "{stdout}");

    let roots: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("(data in "))
        .map(|l| l.trim_end_matches(')').to_owned())
        .collect();
    assert_eq!(roots.len(), 2, "{stdout}");
    for root in &roots {
        assert!(!PathBuf::from(root).exists(), "{root} was left behind");
    }
    // The servers are stopped before the demo exits; the watchdogs notice within a second.
    support::wait_until("no demo cluster process left", WAIT, || async {
        roots.iter().all(|r| processes_mentioning(r).is_empty())
    })
    .await;
}

/// A source database with a keyed and an unkeyed table in publication `pub`, and the target
/// database with only the keyed table.
async fn check_fixture(source: &ClusterRef, target: &ClusterRef, db: &str) {
    support::create_db(source, db).await;
    support::create_db(target, db).await;
    let src = support::connect(source, db).await;
    support::exec(
        &src,
        "CREATE TABLE keyed (id int PRIMARY KEY, v text);
         CREATE TABLE nokey (v text);
         CREATE PUBLICATION pub FOR TABLE keyed, nokey;",
    )
    .await;
    let tgt = support::connect(target, db).await;
    support::exec(&tgt, "CREATE TABLE keyed (id int PRIMARY KEY, v text)").await;
}

#[tokio::test]
async fn check_reports_wal_level_identity_and_missing_tables_with_fixes() {
    let source = support::private_cluster("check_replica", &[("wal_level", "replica")]);
    let target = support::target();
    let db = support::unique_name("check_bad");
    check_fixture(&source, target, &db).await;

    let cmd = ops_command(
        "check",
        &source.conn_string(&db),
        &target.conn_string(&db),
        &["--publication", "pub", "--slot", "check_slot"],
    );
    let out = output(cmd, WAIT).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let line = |needle: &str| -> &str {
        stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{stdout}"))
    };
    let wal = line("wal_level");
    assert!(wal.starts_with("FAIL") && wal.contains("replica"), "{wal}");
    assert!(
        wal.contains("ALTER SYSTEM SET wal_level = logical"),
        "{wal}"
    );
    let identity = line(r#"replica identity "public"."nokey""#);
    assert!(identity.starts_with("FAIL"), "{identity}");
    assert!(
        identity.contains(r#"ALTER TABLE "public"."nokey" REPLICA IDENTITY FULL"#),
        "{identity}"
    );
    assert!(line(r#"replica identity "public"."keyed""#).starts_with("OK"));
    assert!(line(r#"target table "public"."nokey""#).starts_with("FAIL"));
    assert!(line(r#"target columns "public"."keyed""#).starts_with("OK"));
    assert!(line("max_slot_wal_keep_size").starts_with("WARN"));
    assert!(stdout.contains("block replication"), "{stdout}");

    // The same findings for a script, with the same exit code.
    let cmd = ops_command(
        "check",
        &source.conn_string(&db),
        &target.conn_string(&db),
        &[
            "--publication",
            "pub",
            "--slot",
            "check_slot",
            "--format",
            "json",
        ],
    );
    let out = output(cmd, WAIT).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let report = json(&stdout);
    assert_eq!(report["ready"], false, "{report}");
    let findings = report["findings"].as_array().expect("findings");
    let failures = findings.iter().filter(|f| f["status"] == "fail").count();
    assert!(failures >= 3, "{report}");
    assert_eq!(report["failures"], failures, "{report}");
    let wal = findings
        .iter()
        .find(|f| f["check"] == "wal_level")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(wal["status"], "fail", "{report}");
    assert!(
        wal["fix"]
            .as_str()
            .is_some_and(|fix| fix.contains("ALTER SYSTEM SET wal_level = logical")),
        "{wal}"
    );
}

/// The one JSON object a `--format json` command printed; each of its fields is documented in
/// the README (as `name`, `parent.name` or `list[].name`).
fn json(stdout: &str) -> serde_json::Value {
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    let value: serde_json::Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let mut fields = Vec::new();
    field_paths(&value, "", &mut fields);
    for field in fields {
        assert!(
            readme.contains(&format!("`{field}`")),
            "JSON field {field} is not documented in README.md"
        );
    }
    value
}

fn field_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    let Some(map) = value.as_object() else {
        return;
    };
    for (key, child) in map {
        let path = format!("{prefix}{key}");
        match child {
            serde_json::Value::Array(items) => {
                out.push(format!("{path}[]"));
                for item in items {
                    field_paths(item, &format!("{path}[]."), out);
                }
            }
            serde_json::Value::Object(_) => {
                out.push(path.clone());
                field_paths(child, &format!("{path}."), out);
            }
            _ => out.push(path),
        }
    }
}

/// Row-level security that applies to lsnpipe's roles: on the source the copy would miss rows
/// (a warning: it refuses), on the target applying changes fails.
#[tokio::test]
async fn check_names_row_security_that_applies_to_the_roles() {
    let db = support::unique_name("check_rls");
    check_fixture(support::source(), support::target(), &db).await;
    let role = support::unique_name("check_rls_role");
    let src = support::connect(support::source(), &db).await;
    support::exec(
        &src,
        &format!(
            "CREATE ROLE {role} LOGIN REPLICATION; GRANT SELECT ON keyed, nokey TO {role};
             ALTER TABLE keyed ENABLE ROW LEVEL SECURITY;"
        ),
    )
    .await;
    let tgt = support::connect(support::target(), &db).await;
    support::exec(
        &tgt,
        &format!(
            "CREATE ROLE {role} LOGIN; GRANT ALL ON keyed TO {role};
             ALTER TABLE keyed ENABLE ROW LEVEL SECURITY;"
        ),
    )
    .await;
    let conn = |cluster: &ClusterRef| {
        format!(
            "host=127.0.0.1 port={} user={role} dbname={db}",
            cluster.port
        )
    };
    let cmd = ops_command(
        "check",
        &conn(support::source()),
        &conn(support::target()),
        &["--publication", "pub", "--slot", "check_slot"],
    );
    let out = output(cmd, WAIT).await;
    let (stdout, stderr) = text(&out);
    let line = |needle: &str| -> &str {
        stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{stdout}\n{stderr}"))
    };
    let source_line = line(r#"source row security "public"."keyed""#);
    assert!(source_line.starts_with("WARN"), "{source_line}");
    let target_line = line(r#"target row security "public"."keyed""#);
    assert!(target_line.starts_with("FAIL"), "{target_line}");
    assert!(target_line.contains("BYPASSRLS"), "{target_line}");
    assert!(
        !stdout.contains(r#"row security "public"."nokey""#),
        "{stdout}"
    );
}

#[tokio::test]
async fn check_passes_once_the_problems_are_fixed() {
    let db = support::unique_name("check_good");
    check_fixture(support::source(), support::target(), &db).await;
    let src = support::connect(support::source(), &db).await;
    support::exec(&src, "ALTER TABLE nokey REPLICA IDENTITY FULL").await;
    let tgt = support::connect(support::target(), &db).await;
    support::exec(&tgt, "CREATE TABLE nokey (v text)").await;
    let cmd = ops_command(
        "check",
        &support::source().conn_string(&db),
        &support::target().conn_string(&db),
        &["--publication", "pub", "--slot", "check_good_slot"],
    );
    let out = output(cmd, WAIT).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Ready to replicate"), "{stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("FAIL")), "{stdout}");

    let cmd = ops_command(
        "check",
        &support::source().conn_string(&db),
        &support::target().conn_string(&db),
        &[
            "--publication",
            "pub",
            "--slot",
            "check_good_slot",
            "--format=json",
        ],
    );
    let out = output(cmd, WAIT).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report = json(&stdout);
    assert_eq!(report["ready"], true, "{report}");
    assert_eq!(report["failures"], 0, "{report}");
    let findings = report["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .all(|f| f["status"] == "ok" || f["status"] == "warn"),
        "{report}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f["check"] == "source connection" && f["status"] == "ok"),
        "{report}"
    );
}

/// Tables on both sides, a publication, and lsnpipe run until `rows` rows are on the target.
async fn replicated(prefix: &str, rows: i64) -> (String, String) {
    let (db, slot, source, target) = support::replicated_db(
        prefix,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "CREATE PUBLICATION pub FOR TABLE t",
    )
    .await;
    support::create_slot(&source, &slot).await;
    let lsnpipe = support::run(&db, &slot, &[]);
    source
        .execute(
            "INSERT INTO t SELECT g, 'v' FROM generate_series(1, $1::int8) g",
            &[&rows],
        )
        .await
        .unwrap();
    support::wait_until("rows on the target", WAIT, || async {
        support::count(&target, "t").await == rows
    })
    .await;
    lsnpipe.stop().await;
    slot_released(&source, &slot).await;
    (db, slot)
}

/// Wait until the walsender has let go of the slot (a moment after its client has gone).
async fn slot_released(source: &tokio_postgres::Client, slot: &str) {
    support::wait_until("the slot to be released", WAIT, || async {
        support::slot_exists(source, slot).await && !support::slot_active(source, slot).await
    })
    .await;
}

#[tokio::test]
async fn status_shows_the_slot_the_applied_position_and_the_lag() {
    let (db, slot) = replicated("status", 100).await;
    let status = |slot: &str| {
        ops_command(
            "status",
            &support::source().conn_string(&db),
            &support::target().conn_string(&db),
            &["--slot", slot],
        )
    };
    let out = output(status(&slot), WAIT).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("slot {slot}")), "{stdout}");
    assert!(stdout.contains("inactive"), "{stdout}");
    assert!(stdout.contains("run             none"), "{stdout}");
    let applied = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("applied LSN"))
        .unwrap_or_else(|| panic!("{stdout}"))
        .trim();
    assert!(applied.parse::<lsnpipe::Lsn>().is_ok(), "{stdout}");
    assert!(stdout.contains("last commit"), "{stdout}");

    // Changes lsnpipe has not applied show up as lag.
    let source = support::connect(support::source(), &db).await;
    support::exec(
        &source,
        "INSERT INTO t SELECT g, 'late' FROM generate_series(1001, 2000) g",
    )
    .await;
    let out = output(status(&slot), WAIT).await;
    let (stdout, _) = text(&out);
    let bytes: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("bytes"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(bytes > 1000, "{stdout}");
    assert!(stdout.contains("at most"), "{stdout}");

    // The same for a script.
    let mut cmd = status(&slot);
    cmd.args(["--format", "json"]);
    let out = output(cmd, WAIT).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report = json(&stdout);
    assert_eq!(report["slot_name"], slot.as_str(), "{report}");
    assert_eq!(report["healthy"], true, "{report}");
    assert_eq!(report["slot"]["active"], false, "{report}");
    assert_eq!(report["slot"]["wal_status"], "reserved", "{report}");
    assert_eq!(report["run"], serde_json::Value::Null, "{report}");
    let applied = report["applied"]["lsn"].as_str().expect("applied LSN");
    assert!(applied.parse::<lsnpipe::Lsn>().is_ok(), "{report}");
    assert!(
        report["lag_bytes"].as_u64().is_some_and(|b| b > 1000),
        "{report}"
    );
    assert!(report["lag_seconds"].as_f64().is_some(), "{report}");
    let source_wal = report["source_wal_lsn"].as_str().expect("source WAL");
    assert!(source_wal.parse::<lsnpipe::Lsn>().is_ok(), "{report}");

    // A missing slot is reported, with a non-zero exit.
    let out = output(status("no_such_slot"), WAIT).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("missing"), "{stdout}");
    let mut cmd = status("no_such_slot");
    cmd.args(["--format", "json"]);
    let out = output(cmd, WAIT).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let report = json(&stdout);
    assert_eq!(report["healthy"], false, "{report}");
    assert_eq!(report["slot"], serde_json::Value::Null, "{report}");

    // A source that cannot be reached still answers the script, and fails.
    let mut cmd = ops_command(
        "status",
        "host=127.0.0.1 port=1 user=postgres connect_timeout=2",
        &support::target().conn_string(&db),
        &["--slot", &slot, "--format", "json"],
    );
    cmd.env("RUST_LOG", "off");
    let out = output(cmd, WAIT).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let report = json(&stdout);
    assert_eq!(report["healthy"], false, "{report}");
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("source")),
        "{report}"
    );
}

/// During the initial copy the slot is not in use, yet the run writes to the target: resync
/// and teardown see the run by its lock on the target and refuse, and the copy goes on.
#[tokio::test]
async fn resync_and_teardown_refuse_while_a_run_copies() {
    let (db, slot, source, target) = support::replicated_db(
        "ops_copying",
        "CREATE TABLE a (id int PRIMARY KEY, v text)",
        "CREATE PUBLICATION pub FOR TABLE a",
    )
    .await;
    let lsnpipe = Running::copying(&source, &db, &slot).await;
    for command in ["resync", "teardown"] {
        let out = output(
            ops_command(
                command,
                &support::source().conn_string(&db),
                &support::target().conn_string(&db),
                &["--slot", &slot, "--publication", "pub", "--yes"],
            ),
            WAIT,
        )
        .await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{command}: {stdout}\n{stderr}");
        assert!(
            stderr.contains("holds its lock on the target"),
            "{command}: {stderr}"
        );
    }
    // status names the run.
    let mut cmd = ops_command(
        "status",
        &support::source().conn_string(&db),
        &support::target().conn_string(&db),
        &["--slot", &slot, "--format", "json"],
    );
    cmd.env("RUST_LOG", "off");
    let out = output(cmd, WAIT).await;
    let report = json(&text(&out).0);
    assert!(
        report["run"]
            .as_str()
            .is_some_and(|r| r.contains("target backend PID")),
        "{report}"
    );
    lsnpipe.converge(&source, &target, &["a"]).await;
    assert!(support::slot_exists(&source, &slot).await);
    lsnpipe.stop().await;
}

#[tokio::test]
async fn teardown_asks_then_drops_the_slot_and_the_bookkeeping() {
    let (db, slot) = replicated("teardown", 10).await;
    let source = support::connect(support::source(), &db).await;
    let target = support::connect(support::target(), &db).await;
    // A second slot's row keeps the table the first time round.
    target
        .execute(
            "INSERT INTO lsnpipe.progress (slot, lsn) VALUES ('other_slot', '0/1')",
            &[],
        )
        .await
        .unwrap();
    let teardown = |slot: &str, extra: &[&str]| {
        let mut extra: Vec<&str> = extra.to_vec();
        extra.extend(["--slot", slot]);
        ops_command(
            "teardown",
            &support::source().conn_string(&db),
            &support::target().conn_string(&db),
            &extra,
        )
    };
    let slot_exists = || support::slot_exists(&source, &slot);

    // A slot in use is not dropped, even with --yes.
    let running = support::run(&db, &slot, &[]);
    support::wait_until("the slot to be active", WAIT, || {
        support::slot_active(&source, &slot)
    })
    .await;
    let out = output(teardown(&slot, &["--yes"]), WAIT).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    running.stop().await;
    assert!(slot_exists().await);
    slot_released(&source, &slot).await;

    // No terminal and no --yes: refused, nothing dropped.
    let out = output(teardown(&slot, &[]), WAIT).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(slot_exists().await);

    let out = output(teardown(&slot, &["--yes"]), WAIT).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!slot_exists().await);
    let rows = support::strings(&target, "SELECT slot FROM lsnpipe.progress", &[]).await;
    assert_eq!(rows, ["other_slot"]);

    // The last row goes, and with it the table and the schema.
    let out = output(teardown("other_slot", &["--yes"]), WAIT).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let schema: i64 = target
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'lsnpipe'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schema, 0, "{stdout}");
    // The user's data stays.
    let n: i64 = support::count(&target, "t").await;
    assert_eq!(n, 10);
}

#[tokio::test]
async fn flags_beat_the_environment_which_beats_the_file() {
    let db = support::test_dbs("precedence").await;
    let dir = std::env::temp_dir().join(support::unique_name("lsnpipe_config"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lsnpipe.toml");
    std::fs::write(
        &file,
        format!(
            "source = \"{}\"\ntarget = \"{}\"\nslot = \"from_file\"\n",
            support::source().conn_string(&db),
            support::target().conn_string(&db)
        ),
    )
    .unwrap();
    let status = |env: Option<&str>, flag: Option<&str>| {
        let mut cmd = support::lsnpipe_command();
        cmd.arg("--config").arg(&file).arg("status");
        if let Some(slot) = flag {
            cmd.args(["--slot", slot]);
        }
        if let Some(slot) = env {
            cmd.env("LSNPIPE_SLOT", slot);
        }
        cmd
    };
    for (env, flag, expected) in [
        (None, None, "from_file"),
        (Some("from_env"), None, "from_env"),
        (Some("from_env"), Some("from_flag"), "from_flag"),
    ] {
        let out = output(status(env, flag), WAIT).await;
        let (stdout, stderr) = text(&out);
        assert!(
            stdout.starts_with(&format!("slot {expected}\n")),
            "{expected}: {stdout}\n{stderr}"
        );
    }

    // Unknown keys and bad values name the key and the file.
    for (bad, key) in [
        ("sloot = 'x'\n", "sloot"),
        ("[demo]\nrate = 'fast'\n", "rate"),
    ] {
        std::fs::write(&file, bad).unwrap();
        let out = output(status(None, None), WAIT).await;
        let (_, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(
            stderr.contains(key) && stderr.contains(&file.display().to_string()),
            "{stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn passwords_never_reach_logs_output_or_help() {
    const SECRET: &str = "Sekr1t-pw-4711";
    let source = support::source();
    let db = support::test_dbs("secret").await;
    let user = support::unique_name("secret_user");
    let admin = support::connect(source, &db).await;
    support::exec(
        &admin,
        &format!(
            "SET password_encryption = 'md5';
             CREATE ROLE {user} LOGIN REPLICATION PASSWORD '{SECRET}';
             CREATE TABLE t (id int PRIMARY KEY);
             GRANT SELECT ON t TO {user};
             CREATE PUBLICATION pub FOR TABLE t;"
        ),
    )
    .await;
    source
        .with(|c| c.prepend_hba(&format!("host all {user} 127.0.0.1/32 md5")))
        .unwrap();
    let target = support::connect(support::target(), &db).await;
    support::exec(&target, "CREATE TABLE t (id int PRIMARY KEY)").await;

    let base = format!(
        "host=127.0.0.1 port={} user={user} dbname={db}",
        source.port
    );
    // The reload is asynchronous: wait until a password is demanded.
    support::wait_until("pg_hba.conf reload", WAIT, || async {
        tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .is_err()
    })
    .await;

    let passfile = std::env::temp_dir().join(support::unique_name("secret_pgpass"));
    std::fs::write(
        &passfile,
        format!("127.0.0.1:{}:*:{user}:{SECRET}\n", source.port),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();

    let with_string = format!("{base} password={SECRET}");
    let url = format!(
        "postgresql://{user}:{SECRET}@127.0.0.1:{}/{db}",
        source.port
    );
    let target_conn = support::target().conn_string(&db);
    type Env<'a> = Vec<(&'a str, String)>;
    let ways: [(&str, &str, Env); 4] = [
        ("connection string", &with_string, vec![]),
        ("URL", &url, vec![]),
        ("PGPASSWORD", &base, vec![("PGPASSWORD", SECRET.to_owned())]),
        (
            "passfile",
            &base,
            vec![("PGPASSFILE", passfile.display().to_string())],
        ),
    ];
    for (i, (way, source_conn, env)) in ways.iter().enumerate() {
        let slot = format!("secret_slot_{i}");
        let mut seen = String::new();
        let traced = |mut cmd: Command| {
            cmd.env("RUST_LOG", "trace");
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd
        };
        // `run`, logging everything, in both formats.
        for format in ["text", "json"] {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let listen = format!("127.0.0.1:{port}");
            let mut cmd = traced(support::lsnpipe_command());
            cmd.arg("run")
                .args(["--source", source_conn, "--target", &target_conn])
                .args(["--publication", "pub", "--slot", &slot, "--create-slot"])
                .args(["--metrics-listen", &listen, "--log-format", format]);
            let lsnpipe = Running::spawn(cmd);
            support::wait_until(&format!("{way}: streaming"), WAIT, || async {
                lsnpipe.log().contains("streaming")
            })
            .await;
            seen.push_str(&scrape(&listen));
            let log = lsnpipe.stop().await;
            seen.push_str(&log);
        }
        for command in ["check", "status"] {
            let cmd = traced(ops_command(
                command,
                source_conn,
                &target_conn,
                &["--publication", "pub", "--slot", &slot],
            ));
            let out = output(cmd, WAIT).await;
            let (stdout, stderr) = text(&out);
            assert!(out.status.success(), "{way} {command}: {stdout}\n{stderr}");
            seen.push_str(&stdout);
            seen.push_str(&stderr);
        }
        // A failing login: the error names the user, never the password.
        let wrong_db = format!("{base} password={SECRET}x dbname=no_such_db");
        let out = output(
            traced(ops_command(
                "status",
                &wrong_db,
                &target_conn,
                &["--slot", &slot],
            )),
            WAIT,
        )
        .await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success());
        seen.push_str(&stdout);
        seen.push_str(&stderr);
        // --help with the connection string in the environment.
        let mut help = traced(support::lsnpipe_command());
        help.args(["run", "--help"])
            .env("LSNPIPE_SOURCE", source_conn)
            .env("LSNPIPE_TARGET", source_conn);
        let out = output(help, WAIT).await;
        let (stdout, stderr) = text(&out);
        assert!(stdout.contains("LSNPIPE_SOURCE"), "{stdout}");
        seen.push_str(&stdout);
        seen.push_str(&stderr);

        assert!(
            seen.contains(&user),
            "{way}: the output should name the user"
        );
        assert!(
            !seen.contains(SECRET),
            "{way}: the password leaked:\n{seen}"
        );
    }
    std::fs::remove_file(&passfile).unwrap();
}

/// GET /metrics over plain HTTP/1.1.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    assert!(body.contains("lsnpipe_"), "{body}");
    body
}

#[tokio::test]
async fn logs_are_text_by_default_json_on_request_and_filtered_by_rust_log() {
    let db = support::test_dbs("logs").await;
    // No such publication: `run` logs one error and exits.
    let run = |format: Option<&str>, filter: &str| {
        let mut cmd = support::lsnpipe_run(
            support::source(),
            &db,
            support::target(),
            &db,
            "no_such_pub",
            "logs_slot",
            &[],
        );
        if let Some(format) = format {
            cmd.args(["--log-format", format]);
        }
        cmd.env("RUST_LOG", filter);
        cmd
    };
    let out = output(run(None, "info"), WAIT).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    let line = stderr
        .lines()
        .find(|l| l.contains("no_such_pub"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("ERROR") && !line.starts_with('{'), "{line}");
    assert!(
        !line.contains('\x1b'),
        "no colours without a terminal: {line:?}"
    );

    let out = output(run(Some("json"), "info"), WAIT).await;
    let (_, stderr) = text(&out);
    let line = stderr
        .lines()
        .find(|l| l.contains("no_such_pub"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.starts_with('{') && line.contains(r#""level":"ERROR""#),
        "{line}"
    );

    let out = output(run(None, "off"), WAIT).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert_eq!(stderr, "", "RUST_LOG=off silences the log");
}

/// `text` without ANSI escape sequences (colours, "clear line").
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn demo_in_a_terminal_shows_its_status_line_without_log_lines() {
    // `script` (util-linux) gives the demo a pseudo-terminal for stdout and stderr, as a
    // person's terminal would; with default settings nothing may be logged into the live view.
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let demo = [
        env!("CARGO_BIN_EXE_lsnpipe"),
        "demo",
        "--duration",
        "6",
        "--rate",
        "50",
        "--metrics-listen",
        "off",
    ]
    .map(quote)
    .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-qefc", &demo, "/dev/null"]);
    for (key, _) in std::env::vars() {
        if key.starts_with("LSNPIPE_") || key.starts_with("PG") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    let out = output(cmd, Duration::from_secs(240)).await;
    let (transcript, stderr) = text(&out);
    assert!(out.status.success(), "{transcript}\n{stderr}");
    assert!(
        transcript.contains("\r\x1b[2Kapplied "),
        "the status line is redrawn in place: {transcript:?}"
    );
    let plain = strip_ansi(&transcript);
    assert!(plain.contains("tables_match=true"), "{plain}");
    for line in plain.split(['\r', '\n']) {
        assert!(
            !["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .iter()
                .any(|level| line.contains(&format!(" {level} "))),
            "a log line in the demo's terminal output: {line:?}\n{plain}"
        );
    }
}
