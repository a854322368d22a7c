//! The settings file, `lsnpipe.toml`: its shape (every key optional, unknown keys refused),
//! reading it, and the checks that name the file when a value is bad.

use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, parse_listen, validate_slot_name};
use crate::apply::SchemaChanges;

/// The same settings as they appear in `lsnpipe.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FileSettings {
    pub source: Option<String>,
    pub target: Option<String>,
    pub publication: Option<String>,
    pub slot: Option<String>,
    pub create_slot: Option<bool>,
    pub failover_slot: Option<bool>,
    pub metrics_listen: Option<String>,
    pub ready_max_lag_bytes: Option<u64>,
    pub ready_max_lag_seconds: Option<u64>,
    pub replication_timeout: Option<u64>,
    pub target_timeout: Option<u64>,
    pub max_batch_transactions: Option<u32>,
    pub max_batch_ms: Option<u64>,
    pub status_interval_ms: Option<u64>,
    pub slot_monitor_interval_secs: Option<u64>,
    pub snapshot: Option<bool>,
    pub copy_jobs: Option<u32>,
    pub create_tables: Option<bool>,
    pub schema_changes: Option<SchemaChanges>,
    /// `run --sync-sequences SECS` (0: off).
    pub sync_sequences: Option<u64>,
    /// `--log-format` (a global flag): "text" or "json".
    pub log_format: Option<String>,
    /// Settings of `lsnpipe demo`.
    #[serde(default)]
    pub demo: DemoFileSettings,
}

/// The `[demo]` table of `lsnpipe.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct DemoFileSettings {
    pub duration: Option<u64>,
    pub keep: Option<bool>,
    pub rate: Option<u32>,
}

impl FileSettings {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        file.validate().map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(file)
    }

    /// Check the values the file gives, so that a bad one is reported with the file's name
    /// (the same checks run again on the merged settings).
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(slot) = &self.slot {
            validate_slot_name(slot)?;
        }
        if let Some(listen) = &self.metrics_listen {
            parse_listen(listen)?;
        }
        if let Some(format) = &self.log_format {
            if !matches!(format.as_str(), "text" | "json") {
                return Err(ConfigError::Invalid {
                    key: "log_format",
                    message: format!("{format:?}: use \"text\" or \"json\""),
                });
            }
        }
        let at_least_one = [
            (
                "max_batch_transactions",
                self.max_batch_transactions.map(u64::from),
            ),
            ("status_interval_ms", self.status_interval_ms),
            (
                "slot_monitor_interval_secs",
                self.slot_monitor_interval_secs,
            ),
            ("demo.rate", self.demo.rate.map(u64::from)),
        ];
        for (key, value) in at_least_one {
            if value == Some(0) {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}
