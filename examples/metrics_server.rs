//! A metrics server with made-up values, for trying the monitoring assets without a pipeline:
//!
//! ```text
//! cargo run --example metrics_server -- 127.0.0.1:9930
//! scripts/prometheus-smoke.sh 127.0.0.1:9930
//! ```
//!
//! Prints `listening on ADDR` on stderr (pass port 0 for any free port) and serves until Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use lsnpipe::Lsn;
use lsnpipe::clock::pg_clock_now;
use lsnpipe::metrics::{self, Health, Metrics, RowOp, Side};
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9930".to_owned());
    let listener = TcpListener::bind(&listen).await?;
    eprintln!("listening on {}", listener.local_addr()?);

    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    let health = Arc::new(Health::new());
    pretend_to_stream(&metrics, &health);

    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(metrics::serve(
        listener,
        registry,
        health,
        1 << 20,
        shutdown,
    ));
    tokio::signal::ctrl_c().await?;
    stop.send(true)?;
    server.await??;
    Ok(())
}

fn pretend_to_stream(metrics: &Metrics, health: &Health) {
    let flushed = Lsn::new(0x16_B374_0000);
    let received = flushed.advance(3766);
    metrics.set_positions(received, flushed);
    health.set_lag_bytes(received.bytes_since(flushed));
    health.set_streaming(true);
    health.set_target_reachable(true);
    metrics.set_oldest_unapplied_commit(Some(pg_clock_now() - 1_500_000));
    metrics.record_received("insert", 10, 900);
    metrics.record_applied_batch(
        2,
        [("public.accounts", RowOp::Insert, 10)],
        Duration::from_millis(4),
    );
    metrics.status_updates_sent.inc();
    metrics.reconnect(Side::Source);
    metrics.set_slot_state(Some((3766, Some("reserved"))));
}
