//! What `lsnpipe run` and `lsnpipe demo` start beside the pipeline: the Prometheus registry and
//! the telemetry the pipeline writes, the HTTP server for /metrics, /healthz and /readyz, and
//! the slot monitor. All of it stops when `stop` turns true (or its sender is dropped).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::RunSettings;
use crate::metrics::{self, Health, Metrics};
use crate::telemetry::Telemetry;

#[derive(Debug)]
pub struct Service {
    pub registry: prometheus::Registry,
    pub metrics: Metrics,
    pub telemetry: Arc<Telemetry>,
    background: JoinSet<()>,
}

impl Service {
    /// Register the metrics and start the server on `listener` (none: no HTTP server) and the
    /// slot monitor.
    pub fn start(
        settings: &RunSettings,
        listener: Option<TcpListener>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Service, prometheus::Error> {
        let registry = prometheus::Registry::new();
        let metrics = Metrics::register(&registry)?;
        let telemetry = Arc::new(Telemetry::new(metrics.clone(), Arc::new(Health::new())));
        let mut background = JoinSet::new();
        if let Some(listener) = listener {
            let (registry, health) = (registry.clone(), telemetry.health.clone());
            let (max_lag, stop) = (settings.ready_max_lag_bytes, stop.clone());
            background.spawn(async move {
                if let Err(e) = metrics::serve(listener, registry, health, max_lag, stop).await {
                    tracing::error!("metrics server stopped: {e}");
                }
            });
        }
        background.spawn(metrics::run_slot_monitor(
            settings.source.clone(),
            settings.slot.clone(),
            metrics.clone(),
            settings.slot_monitor_interval,
            stop.clone(),
        ));
        Ok(Service {
            registry,
            metrics,
            telemetry,
            background,
        })
    }

    /// Run `task` beside the others until the service stops.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.background.spawn(task);
    }

    /// Wait for every background task to end (after `stop` turned true).
    pub async fn stopped(mut self) {
        while self.background.join_next().await.is_some() {}
    }
}
