//! fargo-echo, the example function: an HTTP server that answers every request with a JSON echo
//! of it (method, path, query, headers, body, hostname). `GET /healthz` answers `ok`, and
//! `?sleep=<ms>` delays the answer (at most a minute). `GET /call?url=http://HOST:PORT/PATH` makes
//! an outgoing GET from the pod and answers with its status and body, or `502` with the error when
//! the connection fails or nothing answers within 2 s — the tests use it to see what a pod's
//! NetworkPolicy lets it reach.
//! Listens on `$PORT` (default 8080) and, on SIGTERM or Ctrl-C, stops accepting and finishes the
//! requests in flight. With `ECHO_LOG_REQUESTS=1` it logs one line per echoed request to stderr
//! (off by default, so that benchmarks do not measure the container log pipeline).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fargo::telemetry::error_chain;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Some NetworkPolicy enforcers drop fenced packets rather than refuse them: without a bound, such
/// a call would hang until the caller gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

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
        .route("/call", get(call).fallback(echo))
        .fallback(echo)
        .with_state(Arc::new(Echo {
            hostname,
            log_requests: std::env::var("ECHO_LOG_REQUESTS").is_ok_and(|v| v == "1"),
        }));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    eprintln!("fargo-echo listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

struct Echo {
    hostname: Arc<str>,
    log_requests: bool,
}

async fn echo(
    State(state): State<Arc<Echo>>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    if state.log_requests {
        let schedule = headers
            .get("x-fargo-schedule")
            .and_then(|v| v.to_str().ok());
        eprintln!(
            "{method} {uri} schedule={} body={}B",
            schedule.unwrap_or("-"),
            body.len()
        );
    }
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
        "hostname": &*state.hostname,
    }))
}

/// `GET /call?url=...`: one outgoing plain-HTTP GET; its status and body, or 502 naming the error.
async fn call(Query(query): Query<BTreeMap<String, String>>) -> Response {
    let Some(url) = query.get("url") else {
        return (
            StatusCode::BAD_REQUEST,
            "call needs ?url=http://HOST:PORT/PATH\n",
        )
            .into_response();
    };
    let uri: Uri = match url.parse() {
        Ok(uri) => uri,
        Err(error) => {
            return (StatusCode::BAD_REQUEST, format!("url {url:?}: {error}\n")).into_response();
        }
    };
    if uri.scheme_str() != Some("http") {
        return (
            StatusCode::BAD_REQUEST,
            format!("url {url:?}: only http:// URLs can be called\n"),
        )
            .into_response();
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let answer = tokio::time::timeout(CALL_TIMEOUT, async {
        let response = client.get(uri).await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| error_chain(&e))?
            .to_bytes();
        Ok::<_, String>((status, content_type, body))
    })
    .await;
    match answer {
        Ok(Ok((status, content_type, body))) => {
            let mut response = (status, body).into_response();
            if let Some(content_type) = content_type {
                response.headers_mut().insert(CONTENT_TYPE, content_type);
            }
            response
        }
        Ok(Err(error)) => {
            (StatusCode::BAD_GATEWAY, format!("calling {url}: {error}\n")).into_response()
        }
        Err(_) => (
            StatusCode::BAD_GATEWAY,
            format!("calling {url}: no answer within {CALL_TIMEOUT:?}\n"),
        )
            .into_response(),
    }
}

async fn shutdown() {
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
