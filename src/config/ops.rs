//! Settings of the operator commands (`check`, `status`, `teardown`, `demo`), merged the same way
//! as `run`'s: a flag beats its `LSNPIPE_*` variable (clap), which beats `lsnpipe.toml`.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, DEFAULT_METRICS_LISTEN, FileSettings, validate_slot_name};

/// Where lsnpipe reads and writes: the flags `check`, `status` and `teardown` share with `run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnArgs {
    /// Source connection string (libpq key/value or postgres:// URL).
    #[arg(long, env = "LSNPIPE_SOURCE", hide_env_values = true)]
    pub source: Option<String>,
    /// Target (replica) connection string.
    #[arg(long, env = "LSNPIPE_TARGET", hide_env_values = true)]
    pub target: Option<String>,
    /// Publication on the source whose tables are replicated.
    #[arg(long, env = "LSNPIPE_PUBLICATION")]
    pub publication: Option<String>,
    /// Logical replication slot on the source.
    #[arg(long, env = "LSNPIPE_SLOT")]
    pub slot: Option<String>,
}

/// The connections and names an operator command works on, validated.
#[derive(Clone)]
pub struct OpsSettings {
    pub source: String,
    pub target: String,
    /// Absent when the command does not need it (`status`, `teardown`).
    pub publication: Option<String>,
    pub slot: String,
}

impl std::fmt::Debug for OpsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Connection strings are left out: they may hold passwords.
        f.debug_struct("OpsSettings")
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl OpsSettings {
    /// Merge flags/environment over the file; `publication` is required only when asked.
    pub fn resolve(
        args: &ConnArgs,
        file: &FileSettings,
        need_publication: bool,
    ) -> Result<Self, ConfigError> {
        let source = required!(args, file, source, "source", "LSNPIPE_SOURCE");
        let target = required!(args, file, target, "target", "LSNPIPE_TARGET");
        let slot = required!(args, file, slot, "slot", "LSNPIPE_SLOT");
        validate_slot_name(&slot)?;
        let publication = if need_publication {
            Some(required!(
                args,
                file,
                publication,
                "publication",
                "LSNPIPE_PUBLICATION"
            ))
        } else {
            args.publication
                .clone()
                .or_else(|| file.publication.clone())
        };
        Ok(OpsSettings {
            source,
            target,
            publication,
            slot,
        })
    }
}

/// Flags of `lsnpipe demo`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, env = "LSNPIPE_DEMO_DURATION", value_name = "SECS")]
    pub duration: Option<u64>,
    /// Leave both clusters running when the demo ends (they are removed otherwise).
    #[arg(long, env = "LSNPIPE_DEMO_KEEP", num_args = 0..=1, default_missing_value = "true")]
    pub keep: Option<bool>,
    /// Write transactions per second of the sample load.
    #[arg(long, env = "LSNPIPE_DEMO_RATE")]
    pub rate: Option<u32>,
    /// Address of the HTTP server for /metrics ("off" to disable; port 0 picks a free port).
    #[arg(long, env = "LSNPIPE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

/// What `lsnpipe demo` runs with.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    pub duration: Option<Duration>,
    pub keep: bool,
    pub rate: u32,
    pub metrics_listen: Option<SocketAddr>,
}

impl DemoSettings {
    pub fn resolve(args: &DemoArgs, file: &FileSettings) -> Result<Self, ConfigError> {
        let rate = args.rate.or(file.demo.rate).unwrap_or(200);
        if rate == 0 {
            return Err(ConfigError::Invalid {
                key: "demo.rate",
                message: "must be at least 1".into(),
            });
        }
        let listen = args
            .metrics_listen
            .clone()
            .or_else(|| file.metrics_listen.clone())
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
        Ok(DemoSettings {
            duration: args
                .duration
                .or(file.demo.duration)
                .map(Duration::from_secs),
            keep: args.keep.or(file.demo.keep).unwrap_or(false),
            rate,
            metrics_listen: super::parse_listen(&listen)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn file(text: &str) -> FileSettings {
        FileSettings::parse(text, Path::new("lsnpipe.toml")).unwrap()
    }

    #[test]
    fn flags_win_then_the_file_fills_in() {
        let args = ConnArgs {
            slot: Some("from_flag".into()),
            ..ConnArgs::default()
        };
        let s = OpsSettings::resolve(
            &args,
            &file("source = 'host=s'\ntarget = 'host=t'\nslot = 'from_file'\n"),
            false,
        )
        .unwrap();
        assert_eq!(
            (s.slot.as_str(), s.source.as_str()),
            ("from_flag", "host=s")
        );
        assert_eq!(s.publication, None);
    }

    #[test]
    fn publication_is_required_only_when_asked() {
        let f = file("source = 'host=s'\ntarget = 'host=t'\nslot = 'x'\n");
        let err = OpsSettings::resolve(&ConnArgs::default(), &f, true).unwrap_err();
        assert!(err.to_string().contains("LSNPIPE_PUBLICATION"), "{err}");
    }

    #[test]
    fn demo_settings_come_from_the_demo_table() {
        let s = DemoSettings::resolve(
            &DemoArgs::default(),
            &file("[demo]\nduration = 7\nkeep = true\nrate = 5\n"),
        )
        .unwrap();
        assert_eq!(s.duration, Some(Duration::from_secs(7)));
        assert!(s.keep);
        assert_eq!(s.rate, 5);
        let err = FileSettings::parse("[demo]\nspeed = 1\n", Path::new("/x/l.toml")).unwrap_err();
        assert!(err.to_string().contains("speed") && err.to_string().contains("/x/l.toml"));
    }

    #[test]
    fn the_example_file_parses_commented_and_uncommented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("lsnpipe.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // Settings are commented out as `#key = value` (prose comments are `# …`): uncommented,
        // every one of them must parse too.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let f = FileSettings::parse(&uncommented, &path).unwrap();
        assert!(f.source.is_some() && f.target.is_some() && f.demo.rate.is_some());
        assert_eq!(f.sync_sequences, Some(60));
        FileSettings::parse(&text, &path).unwrap();
    }
}
