//! Connection strings as users write them, parsed as libpq would.

use super::*;

fn parse(s: &str, env: &[(&str, &str)]) -> Result<ConnConfig, ConnConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ConnConfig::parse_with(
        s,
        &move |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        None,
    )
}

#[test]
fn key_values_with_quotes_and_escapes() {
    let c = parse(
            r"host=db.example port = 6543 user='o\'brien' dbname='my \\ db' password=p\ w sslmode=verify-full options='-c wal_sender_timeout=2s'",
            &[],
        )
        .unwrap();
    assert_eq!(c.host(), &Host::Tcp("db.example".into()));
    assert_eq!(c.port(), 6543);
    assert_eq!(c.user(), "o'brien");
    assert_eq!(c.dbname(), r"my \ db");
    assert_eq!(c.password().unwrap().expose(), "p w");
    assert_eq!(c.sslmode(), SslMode::VerifyFull);
    assert_eq!(c.options(), Some("-c wal_sender_timeout=2s"));
}

#[test]
fn tcp_options_as_libpq_reads_them() {
    let c = parse(
        "user=a keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=3 \
             tcp_user_timeout=9000",
        &[],
    )
    .unwrap();
    let tcp = c.tcp();
    assert!(tcp.keepalives);
    assert_eq!(tcp.keepalives_idle, Some(Duration::from_secs(5)));
    assert_eq!(tcp.keepalives_interval, Some(Duration::from_secs(2)));
    assert_eq!(tcp.keepalives_count, Some(3));
    assert_eq!(tcp.tcp_user_timeout, Some(Duration::from_millis(9000)));

    // Zero keeps the system default; keepalives=0 turns probes off.
    let c = parse(
        "user=a keepalives=0 keepalives_idle=0 tcp_user_timeout=0",
        &[],
    )
    .unwrap();
    assert_eq!(
        c.tcp(),
        TcpOptions {
            keepalives: false,
            ..TcpOptions::default()
        }
    );
    assert!(parse("user=a", &[]).unwrap().tcp().keepalives);
    assert!(matches!(
        parse("user=a keepalives_idle=soon", &[]),
        Err(ConnConfigError::InvalidValue {
            key: "keepalives_idle",
            ..
        })
    ));
}

#[test]
fn lsnpipe_timeouts_bound_connecting_unless_the_string_says_otherwise() {
    let ten = Duration::from_secs(10);
    let c = parse("user=a", &[])
        .unwrap()
        .with_default_connect_timeout(ten);
    assert_eq!(c.connect_timeout(), Some(ten));
    let c = parse("user=a connect_timeout=3", &[])
        .unwrap()
        .with_default_connect_timeout(ten);
    assert_eq!(c.connect_timeout(), Some(Duration::from_secs(3)));
}

#[test]
fn key_value_errors() {
    assert!(matches!(
        parse("host", &[]),
        Err(ConnConfigError::Syntax { .. })
    ));
    assert!(matches!(
        parse("user='abc", &[]),
        Err(ConnConfigError::Syntax { .. })
    ));
    assert_eq!(
        parse("user=a colour=blue", &[]),
        Err(ConnConfigError::UnknownKey("colour".into()))
    );
    assert!(matches!(
        parse("user=a port=0", &[]),
        Err(ConnConfigError::InvalidValue { key: "port", .. })
    ));
    assert!(matches!(
        parse("user=a sslmode=maybe", &[]),
        Err(ConnConfigError::InvalidValue { key: "sslmode", .. })
    ));
    assert!(matches!(
        parse("user=a sslcert=/x", &[]),
        Err(ConnConfigError::Unsupported { .. })
    ));
}

#[test]
fn urls_with_percent_encoding_and_query() {
    let c = parse(
            "postgresql://us%40er:p%3Ass@db.example:5433/my%20db?sslmode=require&application_name=lsn%2Fpipe&options=-c%20a%3Db",
            &[],
        )
        .unwrap();
    assert_eq!(c.user(), "us@er");
    assert_eq!(c.password().unwrap().expose(), "p:ss");
    assert_eq!(c.host(), &Host::Tcp("db.example".into()));
    assert_eq!(c.port(), 5433);
    assert_eq!(c.dbname(), "my db");
    assert_eq!(c.sslmode(), SslMode::Require);
    assert_eq!(c.application_name(), Some("lsn/pipe"));
    assert_eq!(c.options(), Some("-c a=b"));

    let c = parse("postgres://[::1]:7000/x?user=u", &[]).unwrap();
    assert_eq!(c.host(), &Host::Tcp("::1".into()));
    assert_eq!(c.port(), 7000);

    let c = parse("postgres://%2Ftmp%2Fpg/db?user=u&port=5999", &[]).unwrap();
    assert_eq!(c.host(), &Host::Unix("/tmp/pg".into()));
    assert_eq!(c.port(), 5999);

    assert!(parse("postgres://u@h/db?sslmode", &[]).is_err());
    assert!(parse("postgres://u@h/d%zz", &[]).is_err());
    assert!(parse("postgres://u@h/d%00", &[]).is_err());
}

#[test]
fn environment_fills_gaps_and_string_wins() {
    let env = [
        ("PGHOST", "/run/pg"),
        ("PGPORT", "5499"),
        ("PGUSER", "envuser"),
        ("PGDATABASE", "envdb"),
        ("PGPASSWORD", "envpw"),
        ("PGSSLMODE", "disable"),
        ("PGAPPNAME", "app"),
        ("PGOPTIONS", "-c x=1"),
        ("PGCONNECT_TIMEOUT", "1"),
        ("PGSSLROOTCERT", "/ca.pem"),
    ];
    let c = parse("", &env).unwrap();
    assert_eq!(c.host(), &Host::Unix("/run/pg".into()));
    assert_eq!(c.port(), 5499);
    assert_eq!(c.user(), "envuser");
    assert_eq!(c.dbname(), "envdb");
    assert_eq!(c.password().unwrap().expose(), "envpw");
    assert_eq!(c.sslmode(), SslMode::Disable);
    assert_eq!(c.application_name(), Some("app"));
    assert_eq!(c.options(), Some("-c x=1"));
    assert_eq!(c.connect_timeout(), Some(Duration::from_secs(2)));
    assert_eq!(c.sslrootcert(), Some(Path::new("/ca.pem")));

    assert_eq!(
        c.clone()
            .with_fallback_application_name("lsnpipe")
            .application_name(),
        Some("app")
    );
    let c = parse("user=me port=1234", &env).unwrap();
    assert_eq!(c.user(), "me");
    assert_eq!(c.port(), 1234);

    let c = parse("", &[("USER", "osuser")]).unwrap();
    assert_eq!(c.user(), "osuser");
    assert_eq!(c.dbname(), "osuser");
    assert_eq!(c.host(), &Host::Unix(DEFAULT_SOCKET_DIR.into()));
    assert_eq!(c.port(), DEFAULT_PORT);
    assert_eq!(c.sslmode(), SslMode::Prefer);
    assert_eq!(
        c.with_fallback_application_name("lsnpipe")
            .application_name(),
        Some("lsnpipe")
    );
    assert_eq!(parse("", &[]), Err(ConnConfigError::NoUser));
}

#[test]
fn passfile_matching_wildcards_and_escapes() {
    let c = parse("host=db port=5432 user=app dbname=shop", &[]).unwrap();
    let file = "\
# comment
other:5432:shop:app:wrong-host
db:5433:shop:app:wrong-port
db:5432:*:nobody:wrong-user
db:*:shop:app:first\\:match:with colons
*:*:*:*:fallback
";
    assert_eq!(
        c.password_from_passfile(file).as_deref(),
        Some("first:match:with colons")
    );
    assert_eq!(
        c.password_from_passfile("*:*:*:*:any\n").as_deref(),
        Some("any")
    );
    assert_eq!(c.password_from_passfile("db:5432:shop\n"), None);

    let c = parse(r"host=/var/run/postgresql user=a\:b dbname=d", &[]).unwrap();
    assert_eq!(
        c.password_from_passfile("localhost:5432:d:a\\:b:sock\n")
            .as_deref(),
        Some("sock")
    );
    let c = parse("host=/tmp/x user=u dbname=d", &[]).unwrap();
    assert_eq!(
        c.password_from_passfile("/tmp/x:5432:d:u:dir\\\\pw\n")
            .as_deref(),
        Some("dir\\pw")
    );
}

#[test]
fn passfile_is_read_only_when_private() {
    let dir = std::env::temp_dir().join(format!("lsnpipe-pgpass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pgpass");
    std::fs::write(&path, "*:*:*:u:secret\n").unwrap();
    let conn = format!("host=h user=u passfile={}", path.display());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(parse(&conn, &[]).unwrap().password().is_none());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        parse(&conn, &[]).unwrap().password().unwrap().expose(),
        "secret"
    );
    let home = ConnConfig::parse_with("host=h user=u", &|_| None, Some(&dir));
    assert!(
        home.unwrap().password().is_none(),
        "no .pgpass in that home"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn hosts(c: &ConnConfig) -> Vec<String> {
    c.candidates()
        .iter()
        .map(|c| format!("{}:{}", c.host(), c.port()))
        .collect()
}

#[test]
fn several_hosts_with_one_port_each_or_one_for_all() {
    let c = parse("host=a,b,c port=5432,5433,5434 user=u", &[]).unwrap();
    assert_eq!(hosts(&c), ["a:5432", "b:5433", "c:5434"]);
    assert!(c.is_multi_host());
    assert_eq!(
        c.host(),
        &Host::Tcp("a".into()),
        "the first host is the default"
    );
    assert_eq!(c.target_session_attrs(), SessionAttrs::Any);
    let c = parse("host=a,b port=6000 user=u", &[]).unwrap();
    assert_eq!(hosts(&c), ["a:6000", "b:6000"]);
    // An empty element is the default, as in libpq.
    let c = parse("host=a,,/tmp/s port=,7000, user=u", &[]).unwrap();
    assert_eq!(
        hosts(&c),
        [
            "a:5432".to_owned(),
            format!("{DEFAULT_SOCKET_DIR}:7000"),
            "/tmp/s:5432".to_owned()
        ]
    );
    let one = parse("host=a port=1 user=u", &[]).unwrap();
    assert!(!one.is_multi_host());
    assert_eq!(hosts(&one), ["a:1"]);
    // Each candidate is a single-host configuration again.
    assert!(c.candidates().iter().all(|c| !c.is_multi_host()));
}

#[test]
fn several_hosts_in_a_url() {
    let c = parse(
        "postgresql://u@a:5432,b:5433,[::1]:5434/db?target_session_attrs=read-write",
        &[],
    )
    .unwrap();
    assert_eq!(hosts(&c), ["a:5432", "b:5433", "::1:5434"]);
    assert_eq!(c.target_session_attrs(), SessionAttrs::ReadWrite);
    assert_eq!(c.dbname(), "db");
    let c = parse("postgres://u@a,b:6000/db", &[]).unwrap();
    assert_eq!(hosts(&c), ["a:5432", "b:6000"]);
}

#[test]
fn host_lists_that_do_not_match_are_refused() {
    let err = parse("host=a,b,c port=1,2 user=u", &[]).unwrap_err();
    assert!(err.to_string().contains("one port per host"), "{err}");
    let err = parse("host=a,b hostaddr=10.0.0.1 user=u", &[]).unwrap_err();
    assert!(err.to_string().contains("one address per host"), "{err}");
    let err = parse("host=a,b port=1,x user=u", &[]).unwrap_err();
    assert!(err.to_string().contains("\"x\""), "{err}");
    let c = parse("host=a,b hostaddr=10.0.0.1,10.0.0.2 user=u", &[]).unwrap();
    let addrs: Vec<_> = c.candidates().iter().map(|c| c.hostaddr()).collect();
    assert_eq!(
        addrs,
        [
            Some("10.0.0.1".parse().unwrap()),
            Some("10.0.0.2".parse().unwrap())
        ]
    );
}

#[test]
fn target_session_attrs_from_the_string_or_the_environment() {
    for (value, attrs) in [
        ("any", SessionAttrs::Any),
        ("read-write", SessionAttrs::ReadWrite),
        ("primary", SessionAttrs::Primary),
    ] {
        let c = parse(
            &format!("host=a,b user=u target_session_attrs={value}"),
            &[],
        )
        .unwrap();
        assert_eq!(c.target_session_attrs(), attrs);
    }
    let c = parse("host=a user=u", &[("PGTARGETSESSIONATTRS", "primary")]).unwrap();
    assert_eq!(c.target_session_attrs(), SessionAttrs::Primary);
    let err = parse("host=a user=u target_session_attrs=standby", &[]).unwrap_err();
    assert!(err.to_string().contains("read-write or primary"), "{err}");
    let err = parse("host=a user=u target_session_attrs=bogus", &[]).unwrap_err();
    assert!(matches!(err, ConnConfigError::InvalidValue { .. }), "{err}");
}

#[test]
fn session_attrs_accept_by_role() {
    use SessionAttrs::*;
    // (in hot standby, default read-only)
    assert!(Any.accepts(true, true));
    assert!(Primary.accepts(false, true) && !Primary.accepts(true, false));
    assert!(ReadWrite.accepts(false, false));
    assert!(!ReadWrite.accepts(false, true) && !ReadWrite.accepts(true, false));
}

#[test]
fn redacted_shows_every_host_and_the_attrs_but_no_password() {
    let c = parse(
        "host=a,b port=1,2 user=u password=secret target_session_attrs=primary",
        &[],
    )
    .unwrap();
    let text = c.redacted();
    assert!(text.contains("host=a,b port=1,2"), "{text}");
    assert!(text.contains("target_session_attrs=primary"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    // The redacted form parses back to the same hosts.
    assert_eq!(hosts(&parse(&text, &[]).unwrap()), ["a:1", "b:2"]);
}

#[test]
fn the_passfile_is_matched_per_host() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("lsnpipe-pgpass-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pgpass");
    std::fs::write(&path, "a:1:*:u:pw-a\nb:2:*:u:pw-b\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = parse(
        &format!("host=a,b port=1,2 user=u passfile={}", path.display()),
        &[],
    );
    let per_host: Vec<_> = c
        .unwrap()
        .candidates()
        .iter()
        .map(|c| c.password().map(|p| p.expose().to_owned()))
        .collect();
    assert_eq!(per_host, [Some("pw-a".to_owned()), Some("pw-b".to_owned())]);
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest::proptest! {
    #[test]
    fn any_text_parses_or_fails_without_panicking(s in "\\PC{0,60}") {
        let _ = parse(&s, &[]);
        let _ = parse(&format!("postgres://{s}"), &[]);
    }

    #[test]
    fn quoted_values_come_back_unchanged(v in "[^\\x00]{1,40}") {
        let c = parse(&format!("user=u application_name={}", quote_value(&v)), &[]).unwrap();
        proptest::prop_assert_eq!(c.application_name(), Some(v.as_str()));
    }
}

#[test]
fn password_never_prints() {
    let c = parse("host=h user=u password=hunter2 dbname=d", &[]).unwrap();
    for shown in [format!("{c}"), format!("{c:?}"), c.redacted()] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("password=<redacted>"), "{shown}");
    }
    let c = parse("postgres://u:hunter2@h/d", &[]).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
}
