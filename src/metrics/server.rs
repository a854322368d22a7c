//! The HTTP server: `/metrics`, `/healthz`, `/readyz` on hyper, stopped by the shutdown signal.
//!
//! ```text
//!  accept loop ──spawn──▶ connection task (HTTP/1.1, keep-alive) ──▶ route(request)
//!      │                          ▲
//!  shutdown = true ───────────────┴─ graceful_shutdown(): finish the request in flight, then close
//!      └─▶ stop accepting, wait (bounded) for the connection tasks, return
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Health;

/// How long connections get to finish after shutdown before they are dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What every request handler sees.
#[derive(Debug)]
struct State {
    registry: Registry,
    health: Arc<Health>,
    ready_max_lag_bytes: u64,
}

/// Serve until `shutdown` turns true (or its sender is dropped), then close every connection
/// gracefully and return. Errors from single connections are logged, never returned.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: Arc<Health>,
    ready_max_lag_bytes: u64,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let state = Arc::new(State {
        registry,
        health,
        ready_max_lag_bytes,
    });
    let mut connections = JoinSet::new();
    loop {
        // Shutdown first: once it is signalled no new connection is taken.
        let accepted = tokio::select! {
            biased;
            _ = super::stopped(&mut shutdown) => break,
            accepted = listener.accept() => accepted,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                let state = Arc::clone(&state);
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    if let Err(e) = serve_connection(stream, state, shutdown).await {
                        tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics server: accept failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("metrics server: connections still open after shutdown; dropping them");
        connections.shutdown().await;
    }
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) -> hyper::Result<()> {
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(route(&request, &state)) }
    });
    // The timer gives hyper its default header read timeout, so a client that connects and
    // never finishes a request does not hold a connection task until shutdown.
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        _ = super::stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

fn route(request: &Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        );
    }
    if request.method() != Method::GET {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match path {
        "/metrics" => metrics(&state.registry),
        "/readyz" => match state.health.readiness(state.ready_max_lag_bytes) {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        },
        _ => text(StatusCode::OK, "alive\n"),
    }
}

fn metrics(registry: &Registry) -> Response<Full<Bytes>> {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut body) {
        tracing::error!(error = %e, "metrics server: encoding the registry failed");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    if let Ok(content_type) = HeaderValue::from_str(encoder.format_type()) {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
