//! The settings' merge order (flag > environment > file), defaults and validation.

use std::path::Path;

use super::*;

fn full_args() -> RunArgs {
    RunArgs {
        source: Some("host=a".into()),
        target: Some("host=b".into()),
        publication: Some("pub".into()),
        slot: Some("slot_1".into()),
        ..RunArgs::default()
    }
}

#[test]
fn flags_win_over_the_file() {
    let file = FileSettings::parse(
        "source = 'host=file'\nslot = 'from_file'\nmax_batch_ms = 5\n",
        Path::new("x.toml"),
    )
    .unwrap();
    let s = RunSettings::resolve(&full_args(), &file).unwrap();
    assert_eq!(s.source, "host=a");
    assert_eq!(s.slot, "slot_1");
    assert_eq!(s.max_batch, Duration::from_millis(5));
    assert_eq!(s.metrics_listen, Some("127.0.0.1:9930".parse().unwrap()));
}

#[test]
fn the_file_fills_what_flags_leave_out() {
    let file = FileSettings::parse(
        "target = 'host=t'\nmetrics_listen = 'off'\ncreate_slot = true\n",
        Path::new("x.toml"),
    )
    .unwrap();
    let args = RunArgs {
        target: None,
        ..full_args()
    };
    let s = RunSettings::resolve(&args, &file).unwrap();
    assert_eq!(s.target, "host=t");
    assert_eq!(s.metrics_listen, None);
    assert!(s.create_slot);
}

#[test]
fn unknown_keys_and_bad_values_name_the_key_and_file() {
    let err = FileSettings::parse("sorce = 'x'\n", Path::new("/etc/lsnpipe.toml")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("/etc/lsnpipe.toml") && text.contains("sorce"),
        "{text}"
    );

    let err = FileSettings::parse("max_batch_ms = 'soon'\n", Path::new("a.toml")).unwrap_err();
    assert!(err.to_string().contains("max_batch_ms"), "{err}");

    let args = RunArgs {
        metrics_listen: Some("nowhere".into()),
        ..full_args()
    };
    let err = RunSettings::resolve(&args, &FileSettings::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("metrics_listen"), "{err}");
}

#[test]
fn bad_values_in_the_file_name_the_file() {
    for (text, key) in [
        ("slot = 'Bad-Name'\n", "slot"),
        ("metrics_listen = 'nowhere'\n", "metrics_listen"),
        ("log_format = 'xml'\n", "log_format"),
        ("status_interval_ms = 0\n", "status_interval_ms"),
        ("[demo]\nrate = 0\n", "demo.rate"),
    ] {
        let err = FileSettings::parse(text, Path::new("/etc/lsnpipe.toml")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/etc/lsnpipe.toml") && text.contains(key),
            "{text}"
        );
    }
}

#[test]
fn missing_settings_say_how_to_give_them() {
    let args = RunArgs {
        publication: None,
        ..full_args()
    };
    let err = RunSettings::resolve(&args, &FileSettings::default())
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("--publication") && text.contains("LSNPIPE_PUBLICATION"),
        "{text}"
    );
}

#[test]
fn slot_names_follow_postgres_rules() {
    for bad in ["Upper", "with-dash", "sp ace", &"x".repeat(64)] {
        let args = RunArgs {
            slot: Some(bad.to_owned()),
            ..full_args()
        };
        assert!(
            RunSettings::resolve(&args, &FileSettings::default()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn snapshot_settings_come_from_flags_or_the_file() {
    let file = FileSettings::parse(
        "snapshot = false\ncopy_jobs = 3\ncreate_tables = true\n",
        Path::new("x.toml"),
    )
    .unwrap();
    let s = RunSettings::resolve(&full_args(), &file).unwrap();
    assert_eq!(s.snapshot, Some(false));
    assert_eq!(s.copy_jobs, 3);
    assert!(s.create_tables);

    let args = RunArgs {
        snapshot: Some(true),
        copy_jobs: Some(0),
        ..full_args()
    };
    let err = RunSettings::resolve(&args, &file).err().unwrap();
    assert!(err.to_string().contains("copy_jobs"), "{err}");

    let s = RunSettings::resolve(&full_args(), &FileSettings::default()).unwrap();
    assert_eq!(
        s.snapshot, None,
        "decided by whether lsnpipe creates the slot"
    );
    assert!(s.copy_jobs >= 1);
    assert!(!s.create_tables);
}

#[test]
fn timeouts_default_to_a_minute_and_come_from_flags_or_the_file() {
    let s = RunSettings::resolve(&full_args(), &FileSettings::default()).unwrap();
    assert_eq!(s.replication_timeout, Duration::from_secs(60));
    assert_eq!(s.target_timeout, Duration::from_secs(60));
    assert_eq!(s.ready_max_lag, Duration::from_secs(60));
    let file = FileSettings::parse(
        "replication_timeout = 10\ntarget_timeout = 0\nready_max_lag_seconds = 5\n",
        Path::new("x.toml"),
    )
    .unwrap();
    let args = RunArgs {
        target_timeout: Some(7),
        ..full_args()
    };
    let s = RunSettings::resolve(&args, &file).unwrap();
    assert_eq!(s.replication_timeout, Duration::from_secs(10));
    assert_eq!(s.target_timeout, Duration::from_secs(7));
    assert_eq!(s.ready_max_lag, Duration::from_secs(5));
}

#[test]
fn debug_output_never_shows_connection_strings() {
    let args = RunArgs {
        source: Some("host=a password=hunter2".into()),
        ..full_args()
    };
    let s = RunSettings::resolve(&args, &FileSettings::default()).unwrap();
    assert!(!format!("{s:?}").contains("hunter2"));
}
