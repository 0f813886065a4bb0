//! fargo-echo, the example function: an HTTP server that answers every request with a JSON echo
//! of it (method, path, query, headers, body, hostname). `GET /healthz` answers `ok`, and
//! `?sleep=<ms>` delays the answer (at most a minute). Listens on `$PORT` (default 8080) and, on
//! SIGTERM or Ctrl-C, stops accepting and finishes the requests in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

const MAX_SLEEP: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 8080,
    };
    let hostname: Arc<str> = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
        .into();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }).fallback(echo))
        .fallback(echo)
        .with_state(hostname);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    eprintln!("fargo-echo listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn echo(
    State(hostname): State<Arc<str>>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    if let Some(ms) = query.get("sleep").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms).min(MAX_SLEEP)).await;
    }
    let mut header_map = BTreeMap::<&str, Vec<String>>::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        header_map.entry(name.as_str()).or_default().push(value);
    }
    Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": query,
        "headers": header_map,
        "body": String::from_utf8_lossy(&body),
        "hostname": &*hostname,
    }))
}

async fn shutdown() {
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
