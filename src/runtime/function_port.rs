//! The function's port, which the activator forwards HTTP requests to: each request becomes an
//! invocation, its answer an HTTP response.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;

use super::event::{self, EventContext, HttpRequest};
use super::invocations::{self, Finished, Invocations, Ran, Refusal};
use super::response::{self, Answer};
use crate::api::lambda::{BILLED_MS_HEADER, INIT_MS_HEADER, INVOKE_EVENT, INVOKE_HEADER};
use crate::api::{PROBE_HEADER, SCHEDULE_HEADER};

/// Header with the invocation's request id on every answer, as function URLs send it.
const REQUEST_ID_HEADER: &str = "x-amzn-requestid";
/// The Invoke API's ask for the invocation's log, and the answer.
pub const LOG_TYPE_HEADER: &str = "x-amz-log-type";
const LOG_RESULT_HEADER: &str = "x-amz-log-result";

#[derive(Clone)]
struct PortState {
    invocations: Arc<Invocations>,
    max_payload_bytes: usize,
}

/// Every path and method is the function's; serve with connect info `SocketAddr`.
pub fn router(invocations: Arc<Invocations>, max_payload_bytes: usize) -> Router {
    Router::new().fallback(invoke).with_state(PortState {
        invocations,
        max_payload_bytes,
    })
}

/// Whether the request carries its event as its body (a schedule tick, an Invoke API event)
/// rather than being an HTTP event.
pub fn is_raw_invocation(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(SCHEDULE_HEADER)
        || headers.get(INVOKE_HEADER).is_some_and(|value| {
            value
                .as_bytes()
                .eq_ignore_ascii_case(INVOKE_EVENT.as_bytes())
        })
}

#[tracing::instrument(skip_all, fields(method = %request.method(), path = %request.uri().path(), request_id))]
async fn invoke(
    State(state): State<PortState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    // The activator asking whether the pod is up: never an invocation.
    if request.headers().contains_key(PROBE_HEADER) {
        return StatusCode::NO_CONTENT.into_response();
    }
    let arrival = Instant::now();
    let arrival_time = jiff::Timestamp::now();
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, state.max_payload_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return into_response(response::request_too_large(state.max_payload_bytes), None);
        }
        Err(error) => {
            tracing::debug!(%error, "reading the request body");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };

    let request_id = invocations::request_id();
    tracing::Span::current().record("request_id", request_id.as_str());
    let function = state.invocations.function();
    let raw = is_raw_invocation(&parts.headers);
    let event = if raw {
        event::raw_event(&body)
    } else {
        let request = HttpRequest {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or_default(),
            version: parts.version,
            headers: &parts.headers,
            body: &body,
            peer: peer.ip(),
        };
        let context = EventContext {
            request_id: &request_id,
            namespace: &function.namespace,
            function: &function.name,
            arrival: arrival_time,
        };
        serde_json::to_vec(&event::http_event(&request, &context)).unwrap_or_default()
    };
    drop(body);
    if event.len() > state.max_payload_bytes {
        return into_response(
            response::request_too_large(state.max_payload_bytes),
            Some(&request_id),
        );
    }

    let ticket = match state.invocations.submit(
        request_id.clone(),
        event.into(),
        arrival,
        arrival_time.as_millisecond(),
    ) {
        Ok(ticket) => ticket,
        Err(Refusal::InitError(error)) => {
            return into_response(response::function_error(error), Some(&request_id));
        }
        Err(Refusal::ShuttingDown) => {
            return into_response(response::shutting_down(), Some(&request_id));
        }
    };
    // The Invoke API's `X-Amz-Log-Type: Tail`, which only the activator can pass (with a raw
    // event): the invocation's lines the sidecar writes.
    let tail = raw
        && parts
            .headers
            .get(LOG_TYPE_HEADER)
            .is_some_and(|value| value.as_bytes() == b"Tail");
    let (finished, ran) = ticket.finished_with_log().await;
    let mut answer = match finished {
        Finished::Response(result) if raw => response::raw_response(result),
        Finished::Response(result) => response::http_response(&result).unwrap_or_else(|error| {
            tracing::info!(%error, "the handler's result is not an HTTP response");
            response::invalid_result(&error)
        }),
        Finished::Error(error) | Finished::InitError(error) => response::function_error(error),
        Finished::TimedOut => {
            response::timed_out(&function.namespace, &function.name, function.timeout)
        }
    };
    if tail && let Some(value) = ran.as_ref().and_then(|ran| log_result(&ran.log)) {
        answer
            .headers
            .push((HeaderName::from_static(LOG_RESULT_HEADER), value));
    }
    let mut response = into_response(answer, Some(&request_id));
    meter(response.headers_mut(), ran.as_ref());
    response
}

/// Tells the activator, which meters the invocation, what it ran: its billed duration and
/// the runtime's init duration. A handler's own headers of those names are dropped first: only
/// the sidecar's figures reach the activator.
fn meter(headers: &mut HeaderMap, ran: Option<&Ran>) {
    headers.remove(BILLED_MS_HEADER);
    headers.remove(INIT_MS_HEADER);
    let Some(ran) = ran else { return };
    headers.insert(BILLED_MS_HEADER, HeaderValue::from(ran.billed_ms));
    if let Some(init) = ran.init_ms
        && let Ok(value) = HeaderValue::try_from(format!("{init:.3}"))
    {
        headers.insert(INIT_MS_HEADER, value);
    }
}

/// `X-Amz-Log-Result`: the last 4 KB of an invocation's log, base64-encoded, as Lambda gives it.
fn log_result(log: &str) -> Option<HeaderValue> {
    const TAIL_BYTES: usize = 4096;
    let bytes = log.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(TAIL_BYTES)..];
    HeaderValue::try_from(base64::engine::general_purpose::STANDARD.encode(tail)).ok()
}

fn into_response(answer: Answer, request_id: Option<&str>) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        headers.append(name, value);
    }
    if let Some(value) = request_id.and_then(|id| HeaderValue::try_from(id).ok()) {
        headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_result_is_the_last_4_kb_in_base64() {
        let short = log_result("START RequestId: a\nEND RequestId: a\n").expect("a header");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(short.as_bytes())
                .unwrap(),
            b"START RequestId: a\nEND RequestId: a\n"
        );
        let long = format!("{}REPORT", "x".repeat(10_000));
        let tail = base64::engine::general_purpose::STANDARD
            .decode(log_result(&long).expect("a header").as_bytes())
            .unwrap();
        assert_eq!(tail.len(), 4096);
        assert!(tail.ends_with(b"REPORT"));
    }
}
