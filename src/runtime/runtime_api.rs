//! AWS Lambda's Runtime API (`2018-06-01`), served to the runtime interface client on
//! 127.0.0.1: `/next` hands out invocations, `/response`, `/error` and `/init/error` take the
//! runtime's answers, with the status codes and error bodies of AWS's runtime interface
//! emulator.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::invocations::{Finished, Invocations};
use super::response::response_too_large_error;
use crate::api::lambda::ErrorBody;

/// Header and trailer naming the type of a runtime's error.
pub const ERROR_TYPE: &str = "lambda-runtime-function-error-type";
/// Trailer with the error JSON, base64: aws-lambda-go sends it when a response fails while
/// it is being streamed.
pub const ERROR_BODY_TRAILER: &str = "lambda-runtime-function-error-body";

/// A connection of a runtime client, known by when it was accepted: a runtime that timed out
/// is known by its connections older than the timeout.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeConnection {
    pub accepted: Instant,
}

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for RuntimeConnection {
    fn connect_info(_: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self {
            accepted: Instant::now(),
        }
    }
}

#[derive(Clone)]
struct ApiState {
    invocations: Arc<Invocations>,
    /// Ends the runtime clients' waits for work.
    stop: CancellationToken,
    max_payload_bytes: usize,
}

/// The Runtime API; serve it with connect info [`RuntimeConnection`].
pub fn router(
    invocations: Arc<Invocations>,
    stop: CancellationToken,
    max_payload_bytes: usize,
) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(not_found)
        .with_state(ApiState {
            invocations,
            stop,
            max_payload_bytes,
        })
}

#[tracing::instrument(skip_all)]
async fn next(
    State(state): State<ApiState>,
    ConnectInfo(connection): ConnectInfo<RuntimeConnection>,
) -> Response {
    let Some(invocation) = state
        .invocations
        .next(connection.accepted, &state.stop)
        .await
    else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the runtime API is shutting down",
        );
    };
    let function = state.invocations.function();
    let mut response = Response::new(Body::from(invocation.event));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let values = [
        ("lambda-runtime-aws-request-id", invocation.request_id),
        (
            "lambda-runtime-deadline-ms",
            invocation.deadline_ms.to_string(),
        ),
        ("lambda-runtime-invoked-function-arn", function.arn.clone()),
        ("lambda-runtime-trace-id", invocation.trace_id),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
    response
}

#[tracing::instrument(skip(state, request))]
async fn response(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let finished = match read_body(request.into_body(), state.max_payload_bytes).await {
        Ok((body, trailers)) => match trailers.as_ref().and_then(trailer_error) {
            Some(error) => Finished::Error(error),
            None => Finished::Response(body),
        },
        Err(BodyError::TooLarge) => return answer_too_large(&state, &id),
        Err(BodyError::Truncated) => return truncated(),
    };
    answered(state.invocations.finish(&id, finished))
}

/// The runtime's answer for `id` was over the limit: the caller gets Lambda's error for it.
fn answer_too_large(state: &ApiState, id: &str) -> Response {
    let error = response_too_large_error(state.max_payload_bytes);
    match state.invocations.finish(id, Finished::Error(error)) {
        Ok(()) => too_large(state.max_payload_bytes),
        Err(_) => invalid_request_id(),
    }
}

#[tracing::instrument(skip(state, request))]
async fn error(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body(body, state.max_payload_bytes).await {
        Ok((body, trailers)) => trailers
            .as_ref()
            .and_then(trailer_error)
            .unwrap_or_else(|| error_body(&parts.headers, &body)),
        Err(BodyError::TooLarge) => return answer_too_large(&state, &id),
        Err(BodyError::Truncated) => return truncated(),
    };
    answered(state.invocations.finish(&id, Finished::Error(body)))
}

#[tracing::instrument(skip_all)]
async fn init_error(State(state): State<ApiState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body(body, state.max_payload_bytes).await {
        Ok((body, _)) => error_body(&parts.headers, &body),
        Err(BodyError::TooLarge) => return too_large(state.max_payload_bytes),
        Err(BodyError::Truncated) => return truncated(),
    };
    tracing::warn!(error = %String::from_utf8_lossy(&body), "the runtime failed to initialize");
    state.invocations.init_error(body);
    accepted()
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        "not a Runtime API path (2018-06-01/runtime/…)",
    )
}

enum BodyError {
    TooLarge,
    Truncated,
}

/// A body of at most `max_bytes`, and its trailers: runtimes may send chunked bodies with
/// trailers.
async fn read_body(body: Body, max_bytes: usize) -> Result<(Bytes, Option<HeaderMap>), BodyError> {
    let collected = Limited::new(body, max_bytes)
        .collect()
        .await
        .map_err(|error| {
            if error.downcast_ref::<LengthLimitError>().is_some() {
                BodyError::TooLarge
            } else {
                BodyError::Truncated
            }
        })?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

/// The error a runtime reported in trailers, if it did: `Lambda-Runtime-Function-Error-Type`
/// and, base64, `Lambda-Runtime-Function-Error-Body` (aws-lambda-go, for a response that
/// failed while streaming). Without a usable body, one is made from the type.
pub fn trailer_error(trailers: &HeaderMap) -> Option<Bytes> {
    let error_type = trailers
        .get(ERROR_TYPE)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())?;
    let body = trailers
        .get(ERROR_BODY_TRAILER)
        .and_then(|value| {
            base64::engine::general_purpose::STANDARD
                .decode(value.as_bytes())
                .ok()
        })
        .filter(|body| serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok());
    Some(match body {
        Some(body) => Bytes::from(body),
        None => ErrorBody::new(
            error_type,
            "the function's response failed while it was sent",
        )
        .to_json()
        .into(),
    })
}

/// The error JSON of `/error` and `/init/error`: the body when it is JSON (runtimes send
/// `errorMessage`, `errorType`, `stackTrace`), else an error of the header's type with the
/// body's text as its message.
pub fn error_body(headers: &HeaderMap, body: &[u8]) -> Bytes {
    if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body).is_ok() {
        return Bytes::copy_from_slice(body);
    }
    let error_type = headers
        .get(ERROR_TYPE)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
        .unwrap_or("Runtime.Unknown");
    let message = String::from_utf8_lossy(body);
    let message = if message.trim().is_empty() {
        "the runtime reported an error without a message".into()
    } else {
        message
    };
    ErrorBody::new(error_type, message).to_json().into()
}

fn answered(result: Result<(), super::invocations::UnknownRequestId>) -> Response {
    match result {
        Ok(()) => accepted(),
        Err(_) => invalid_request_id(),
    }
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

/// An id no running invocation has: never given, already answered, or timed out.
fn invalid_request_id() -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        "Invalid request ID",
    )
}

fn too_large(max_bytes: usize) -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        &format!("Exceeded maximum allowed payload size ({max_bytes} bytes)."),
    )
}

fn truncated() -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "TruncatedHTTPRequest",
        "HTTP request detected as truncated",
    )
}

fn error_response(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        ErrorBody::new(error_type, message).to_json(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                *name,
                HeaderValue::try_from(*value).expect("a header value"),
            );
        }
        headers
    }

    #[test]
    fn an_error_in_trailers_is_the_error_body_they_carry() {
        let body = r#"{"errorMessage":"stream broke","errorType":"errorString"}"#;
        let encoded = base64::engine::general_purpose::STANDARD.encode(body);
        let trailers = map(&[
            ("Lambda-Runtime-Function-Error-Type", "errorString"),
            ("Lambda-Runtime-Function-Error-Body", &encoded),
        ]);
        assert_eq!(trailer_error(&trailers).expect("an error"), body);
    }

    #[test]
    fn an_error_type_trailer_without_a_usable_body_still_makes_an_error() {
        let trailers = map(&[
            ("Lambda-Runtime-Function-Error-Type", "Runtime.Broken"),
            ("Lambda-Runtime-Function-Error-Body", "not base64!"),
        ]);
        let error: serde_json::Value =
            serde_json::from_slice(&trailer_error(&trailers).expect("an error")).expect("JSON");
        assert_eq!(error["errorType"], "Runtime.Broken");
    }

    #[test]
    fn trailers_without_an_error_type_are_no_error() {
        assert_eq!(trailer_error(&HeaderMap::new()), None);
        assert_eq!(
            trailer_error(&map(&[("Lambda-Runtime-Function-Error-Type", "")])),
            None
        );
    }

    #[test]
    fn error_bodies_are_passed_on_when_json_and_made_otherwise() {
        let json = br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":[]}"#;
        assert_eq!(error_body(&HeaderMap::new(), json), &json[..]);
        let made: serde_json::Value = serde_json::from_slice(&error_body(
            &map(&[(
                "Lambda-Runtime-Function-Error-Type",
                "Runtime.ImportModuleError",
            )]),
            b"No module named 'app'",
        ))
        .expect("JSON");
        assert_eq!(
            made,
            serde_json::json!({"errorMessage": "No module named 'app'", "errorType": "Runtime.ImportModuleError"})
        );
        let untyped: serde_json::Value =
            serde_json::from_slice(&error_body(&HeaderMap::new(), b"")).expect("JSON");
        assert_eq!(untyped["errorType"], "Runtime.Unknown");
    }
}
