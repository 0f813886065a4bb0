//! Logs, metrics and the health endpoints every component serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Starts logging to stderr, filtered by `RUST_LOG` (default `info`), as JSON when asked;
/// colored only on a terminal, so pod logs and log files stay plain text.
pub fn init_logging(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// An error with its causes, colon-separated: hyper's own message ("client error (Connect)")
/// hides the reason. A cause whose message the text already holds (an error that prints its
/// source and also returns it from `source()`) is not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// Whether a component is ready to take work; `/readyz` answers from it.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct HealthState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// `/healthz` (the process runs), `/readyz` (it takes work) and `/metrics` (Prometheus text).
pub fn health_router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(HealthState {
            registry,
            readiness,
        })
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then finishes requests in
/// flight. The caller binds, so that an address in use is reported before anything starts.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving health and metrics");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// An interval for a loop that must not catch up on ticks it missed (a slow tick delays the
/// next one instead of bunching them).
pub fn ticker(period: std::time::Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Hands the memory the process freed back to the system every `period`, until `shutdown`.
///
/// glibc's allocator keeps freed memory for reuse and returns only what lies at the top of a
/// heap: after a burst (thousands of functions reconciled at once, each decoding and encoding
/// objects) the free pages scattered in between stay resident for good. `malloc_trim` returns
/// every whole free page. Elsewhere than glibc this does nothing.
pub async fn release_free_memory(period: std::time::Duration, shutdown: CancellationToken) {
    let mut every = ticker(period);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let _ = tokio::task::spawn_blocking(trim_heap).await;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim takes no pointer and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// A token cancelled on SIGTERM or Ctrl-C, for graceful shutdown. Must be called inside the
/// Tokio runtime.
pub fn shutdown_on_signal() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Failure {
        #[error("Kubernetes API call failed: {0}")]
        Printed(#[source] std::io::Error),
        #[error("setting the initial replicas")]
        Hidden(#[source] std::io::Error),
    }

    #[test]
    fn the_chain_names_every_cause_once() {
        let cause = || std::io::Error::other("connection refused");
        assert_eq!(
            error_chain(&Failure::Hidden(cause())),
            "setting the initial replicas: connection refused"
        );
        assert_eq!(
            error_chain(&Failure::Printed(cause())),
            "Kubernetes API call failed: connection refused"
        );
    }
}
