//! Command-line and environment settings of the metrics server, for `lsnpipe run` to flatten
//! into its own arguments.

use std::net::SocketAddr;
use std::time::Duration;

/// `--metrics-listen`, `--ready-max-lag-bytes`, `--slot-monitor-interval-secs`.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsOptions {
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "LSNPIPE_METRICS_LISTEN", default_value = "127.0.0.1:9930")]
    pub metrics_listen: SocketAddr,

    /// /readyz answers 503 while the lag is over this many bytes of WAL.
    #[arg(long, env = "LSNPIPE_READY_MAX_LAG_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub ready_max_lag_bytes: u64,

    /// Seconds between reads of the slot's retained WAL from pg_replication_slots.
    #[arg(long, env = "LSNPIPE_SLOT_MONITOR_INTERVAL_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub slot_monitor_interval_secs: u64,
}

impl MetricsOptions {
    pub fn slot_monitor_interval(&self) -> Duration {
        Duration::from_secs(self.slot_monitor_interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        metrics: MetricsOptions,
    }

    #[test]
    fn defaults_and_flags() {
        let cli = Cli::try_parse_from(["lsnpipe"]).unwrap();
        assert_eq!(cli.metrics.metrics_listen.to_string(), "127.0.0.1:9930");
        assert_eq!(cli.metrics.slot_monitor_interval(), Duration::from_secs(5));
        let cli = Cli::try_parse_from(["lsnpipe", "--metrics-listen", "0.0.0.0:1234"]).unwrap();
        assert_eq!(cli.metrics.metrics_listen.port(), 1234);
        assert!(Cli::try_parse_from(["lsnpipe", "--slot-monitor-interval-secs", "0"]).is_err());
    }
}
