//! The Lambda API on the activator: `Invoke`, `GetFunction`, `GetFunctionConfiguration` and
//! `ListFunctions` in AWS's REST shape (the 2015-03-31 version botocore's `lambda` model
//! describes), so the AWS CLI and SDKs call fargo's functions with `--endpoint-url`.
//!
//! A function is named as Lambda names it, with the namespace in the account's place:
//! `name` (in the caller's default namespace), `namespace/name`, or the ARN
//! `arn:aws:lambda:<region>:<namespace>:function:<name>`; a qualifier, when given, must be
//! `$LATEST` (fargo keeps no versions). A synchronous invocation goes the way every request
//! goes (hold at zero, poke, balance, `perInstance`); an `Event` one is stored in JetStream
//! ([`super::events`]) before its 202.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::events::EventQueue;
use super::function_state::FunctionState;
use super::proxy::{NotForwarded, Outgoing, Proxy, ProxyBody, Target};
use super::queues::QueueSettings;
use super::router::LAMBDA_API_PREFIX;
use crate::api::function::{Destination, ServerlessFunction, StorageTrigger};
use crate::api::lambda::{ErrorBody, FUNCTION_ERROR_HEADER};
use crate::quantity::parse_bytes;

/// Largest payload of a synchronous invocation, as Lambda's.
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
/// Largest payload of an asynchronous invocation, as Lambda's.
pub const MAX_ASYNC_PAYLOAD: usize = 1024 * 1024;
/// The one version fargo has of a function.
pub const LATEST: &str = "$LATEST";
/// Functions listed per page unless `MaxItems` says otherwise.
const DEFAULT_PAGE: usize = 50;

const ERROR_TYPE_HEADER: HeaderName = HeaderName::from_static("x-amzn-errortype");
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-amzn-requestid");
const EXECUTED_VERSION_HEADER: HeaderName = HeaderName::from_static("x-amz-executed-version");
const INVOCATION_TYPE_HEADER: &str = "x-amz-invocation-type";
const LOG_TYPE_HEADER: &str = "x-amz-log-type";
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// What the Lambda API answers with besides the functions: the region in ARNs, where plain
/// names go when the caller has no default, and the queue of `Event` invocations.
#[derive(Clone)]
pub struct LambdaSettings {
    pub region: String,
    /// The namespace of a plain function name when the caller's key names none (or the API
    /// runs without authentication).
    pub default_namespace: String,
    /// `None` runs without NATS: `Event` invocations are refused with 503.
    pub events: Option<Arc<EventQueue>>,
}

impl Default for LambdaSettings {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            default_namespace: "default".into(),
            events: None,
        }
    }
}

/// What the Lambda API, the HTTP auth and the async queue need of a function's spec.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FunctionFacts {
    pub runtime: Option<&'static str>,
    pub handler: Option<String>,
    pub image: Option<String>,
    pub memory_mb: u64,
    pub timeout: Duration,
    /// Invoked through the in-pod Runtime API (handler code, Lambda images): payloads go to it
    /// as raw events.
    pub uses_runtime_api: bool,
    /// A container image (Lambda's `PackageType: Image`), rather than code (`Zip`).
    pub package_image: bool,
    pub last_modified: Option<Timestamp>,
    pub asynchronous: AsyncSettings,
    /// `spec.triggers.storage`.
    pub storage: Vec<StorageTrigger>,
    /// `spec.triggers.queues`, read.
    pub queues: Vec<QueueSettings>,
}

/// `spec.async`, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsyncSettings {
    pub max_retries: u32,
    pub max_event_age: Duration,
    pub retry_delay: Duration,
    pub on_success: Option<Destination>,
    pub on_failure: Option<Destination>,
}

impl Default for AsyncSettings {
    fn default() -> Self {
        Self::of(&crate::api::function::Async::default())
    }
}

impl AsyncSettings {
    fn of(spec: &crate::api::function::Async) -> Self {
        let duration = |d: &kube::core::Duration, fallback: u64| {
            if d.is_negative() {
                Duration::from_secs(fallback)
            } else {
                Duration::from(*d)
            }
        };
        Self {
            max_retries: u32::try_from(spec.max_retries.clamp(0, 2)).unwrap_or(2),
            max_event_age: duration(&spec.max_event_age, 6 * 3600),
            retry_delay: duration(&spec.retry_delay, 60).max(Duration::from_secs(1)),
            on_success: spec.on_success.as_deref().cloned(),
            on_failure: spec.on_failure.as_deref().cloned(),
        }
    }
}

impl FunctionFacts {
    pub fn of(function: &ServerlessFunction, timeout: Duration) -> Self {
        let spec = &function.spec;
        Self {
            runtime: spec.runtime.map(|runtime| runtime.as_str()),
            handler: spec.handler.clone(),
            image: spec.image.clone(),
            memory_mb: parse_bytes(&spec.memory).map_or(128, |bytes| bytes / (1024 * 1024)),
            timeout,
            uses_runtime_api: spec.uses_runtime_api(),
            package_image: spec.image.is_some(),
            last_modified: function.metadata.creation_timestamp.as_ref().map(|t| t.0),
            asynchronous: AsyncSettings::of(&spec.asynchronous),
            storage: spec.triggers.storage.clone(),
            queues: spec.triggers.queues.iter().map(QueueSettings::of).collect(),
        }
    }
}

/// `arn:aws:lambda:<region>:<namespace>:function:<name>`.
pub fn function_arn(region: &str, namespace: &str, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{namespace}:function:{name}")
}

/// An error as the Lambda API answers it: the type in `x-amzn-ErrorType`, and
/// `{"Type": "User", "Message": …}` (botocore reads either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
        }
    }

    fn not_found(namespace: &str, name: &str, region: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!(
                "Function not found: {}",
                function_arn(region, namespace, name)
            ),
        )
    }

    fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let kind = if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        let body = json!({"Type": kind, "Message": self.message, "message": self.message});
        let mut response = Response::new(ProxyBody::bytes(Bytes::from(body.to_string())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(ERROR_TYPE_HEADER, HeaderValue::from_static(self.error_type));
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Which operation a request is.
#[derive(Debug, PartialEq, Eq)]
enum Operation<'a> {
    ListFunctions,
    GetFunction(&'a str),
    GetFunctionConfiguration(&'a str),
    Invoke(&'a str),
}

fn operation<'a>(method: &Method, path: &'a str) -> Result<Operation<'a>, ApiError> {
    let rest = path.strip_prefix(LAMBDA_API_PREFIX).unwrap_or(path);
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let operation = match (method, segments.as_slice()) {
        (&Method::GET, [""]) => Some(Operation::ListFunctions),
        (&Method::GET, [name] | [name, ""]) => Some(Operation::GetFunction(name)),
        (&Method::GET, [name, "configuration"]) => Some(Operation::GetFunctionConfiguration(name)),
        (&Method::POST, [name, "invocations"]) => Some(Operation::Invoke(name)),
        _ => None,
    };
    operation.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!(
                "fargo serves Invoke, GetFunction, GetFunctionConfiguration and ListFunctions; \
                 not {method} {path}"
            ),
        )
    })
}

/// A function as a caller named it.
#[derive(Debug, PartialEq, Eq)]
pub struct FunctionRef {
    /// `None` for a plain name: the caller's default namespace.
    pub namespace: Option<String>,
    pub name: String,
}

/// Reads `FunctionName` (percent-decoded already) and the `Qualifier` parameter.
pub fn function_ref(raw: &str, qualifier: Option<&str>) -> Result<FunctionRef, ApiError> {
    let (namespace, rest) = if let Some(arn) = raw.strip_prefix("arn:aws:lambda:") {
        // <region>:<namespace>:function:<name>[:<qualifier>]
        let mut fields = arn.splitn(4, ':');
        let (_region, namespace, kind, rest) = (
            fields.next(),
            fields.next().unwrap_or_default(),
            fields.next(),
            fields.next().unwrap_or_default(),
        );
        if kind != Some("function") {
            return Err(ApiError::invalid_parameter(format!(
                "{raw} is not a function ARN: arn:aws:lambda:<region>:<namespace>:function:<name>"
            )));
        }
        (Some(namespace), rest)
    } else if let Some((namespace, rest)) = raw.split_once('/') {
        (Some(namespace), rest)
    } else {
        (None, raw)
    };
    let (name, name_qualifier) = match rest.split_once(':') {
        Some((name, qualifier)) => (name, Some(qualifier)),
        None => (rest, None),
    };
    for qualifier in [name_qualifier, qualifier].into_iter().flatten() {
        if qualifier != LATEST {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                format!(
                    "fargo functions have one version, {LATEST}; there is no version or alias \
                     {qualifier:?} of {raw}"
                ),
            ));
        }
    }
    for (what, value) in [("namespace", namespace), ("function name", Some(name))] {
        if let Some(value) = value
            && !is_object_name(value)
        {
            return Err(ApiError::invalid_parameter(format!(
                "{what} {value:?} in {raw:?} is not a Kubernetes object name (lower-case letters, \
                 digits, '-' and '.', at most 253); name a function as name, namespace/name or \
                 arn:aws:lambda:<region>:<namespace>:function:<name>"
            )));
        }
    }
    Ok(FunctionRef {
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
    })
}

fn is_object_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// How a caller asked for an invocation (`X-Amz-Invocation-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

fn invocation_type(value: Option<&HeaderValue>) -> Result<InvocationType, ApiError> {
    match value.map(HeaderValue::as_bytes) {
        None | Some(b"RequestResponse") => Ok(InvocationType::RequestResponse),
        Some(b"Event") => Ok(InvocationType::Event),
        Some(b"DryRun") => Ok(InvocationType::DryRun),
        Some(other) => Err(ApiError::invalid_parameter(format!(
            "X-Amz-Invocation-Type {:?} is not one of RequestResponse, Event, DryRun",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// Serves one Lambda API request.
pub async fn serve(
    proxy: &Proxy,
    request: Request<Incoming>,
    client_ip: &HeaderValue,
) -> Response<ProxyBody> {
    let arrived = Instant::now();
    match serve_checked(proxy, request, client_ip, arrived).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(error_type = error.error_type, message = %error.message, "Lambda API refused");
            error.into_response()
        }
    }
}

async fn serve_checked(
    proxy: &Proxy,
    request: Request<Incoming>,
    client_ip: &HeaderValue,
    arrived: Instant,
) -> Result<Response<ProxyBody>, ApiError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let operation = operation(&parts.method, &path)?;
    let kind = match operation {
        Operation::Invoke(_) => invocation_type(parts.headers.get(INVOCATION_TYPE_HEADER))?,
        _ => InvocationType::DryRun,
    };
    let limit = match kind {
        InvocationType::Event => MAX_ASYNC_PAYLOAD,
        _ => MAX_SYNC_PAYLOAD,
    };
    let payload = read_payload(body, limit).await?;
    let caller = proxy.auth().invoke_api(&parts, &payload)?;
    let settings = proxy.lambda();
    let query = parts.uri.query().unwrap_or_default();
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    let target = |raw: &str| -> Result<(String, String, Arc<FunctionState>), ApiError> {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| ApiError::invalid_parameter("FunctionName is not UTF-8"))?;
        let named = function_ref(&decoded, param("Qualifier").as_deref())?;
        let namespace = match (named.namespace, &caller) {
            (Some(namespace), _) => namespace,
            (None, Some(caller)) => {
                caller
                    .default_namespace()
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ApiError::invalid_parameter(format!(
                            "access key {} has no default namespace: name the function as \
                         namespace/{} or by its ARN",
                            caller.access_key_id, named.name
                        ))
                    })?
            }
            (None, None) => settings.default_namespace.clone(),
        };
        // Permission before existence: a caller learns nothing of namespaces it may not use.
        if let Some(caller) = &caller
            && !caller.may_invoke(&namespace)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                format!(
                    "access key {} may not use functions of namespace {namespace}",
                    caller.access_key_id
                ),
            ));
        }
        let function = proxy
            .index()
            .function(&namespace, &named.name)
            .ok_or_else(|| ApiError::not_found(&namespace, &named.name, &settings.region))?;
        Ok((namespace, named.name, function))
    };

    match operation {
        Operation::ListFunctions => {
            let marker = param("Marker");
            let max_items = param("MaxItems")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (1..=10_000).contains(n))
                .unwrap_or(DEFAULT_PAGE);
            let allowed = |namespace: &str| caller.as_ref().is_none_or(|c| c.may_invoke(namespace));
            let mut functions = proxy.index().functions();
            functions.retain(|(namespace, _, _)| allowed(namespace));
            functions.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            let keys: Vec<(&str, &str)> = functions
                .iter()
                .map(|(namespace, name, _)| (namespace.as_str(), name.as_str()))
                .collect();
            let (range, next) = page_of(&keys, marker.as_deref(), max_items);
            let page: Vec<Value> = functions[range]
                .iter()
                .map(|(namespace, name, function)| {
                    configuration(&settings.region, namespace, name, function)
                })
                .collect();
            let mut body = json!({"Functions": page});
            if let Some(next) = next {
                body["NextMarker"] = Value::String(next);
            }
            Ok(json_response(StatusCode::OK, &body))
        }
        Operation::GetFunction(raw) => {
            let (namespace, name, function) = target(raw)?;
            let facts = function.config().facts;
            let configuration = configuration(&settings.region, &namespace, &name, &function);
            let code = match &facts.image {
                Some(image) => json!({"RepositoryType": "ECR", "ImageUri": image}),
                None => json!({"RepositoryType": "S3"}),
            };
            Ok(json_response(
                StatusCode::OK,
                &json!({"Configuration": configuration, "Code": code}),
            ))
        }
        Operation::GetFunctionConfiguration(raw) => {
            let (namespace, name, function) = target(raw)?;
            Ok(json_response(
                StatusCode::OK,
                &configuration(&settings.region, &namespace, &name, &function),
            ))
        }
        Operation::Invoke(raw) => {
            let (namespace, name, function) = target(raw)?;
            check_json(&payload)?;
            match kind {
                InvocationType::DryRun => {
                    let mut response = Response::new(ProxyBody::bytes(Bytes::new()));
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    Ok(response)
                }
                InvocationType::Event => {
                    let queue = settings.events.as_ref().ok_or_else(|| {
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "ServiceException",
                            "asynchronous invocations are stored in NATS JetStream, and this \
                             activator runs without one (--nats-url)",
                        )
                    })?;
                    let request_id = crate::api::lambda::request_id();
                    let stored = queue.accept(&namespace, &name, &request_id, payload).await;
                    function.metrics().event(if stored.is_ok() {
                        "accepted"
                    } else {
                        "refused"
                    });
                    stored.map_err(|error| {
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "ServiceException",
                            format!("the event was not stored, retry: {error}"),
                        )
                    })?;
                    let mut response = Response::new(ProxyBody::bytes(Bytes::new()));
                    *response.status_mut() = StatusCode::ACCEPTED;
                    if let Ok(id) = HeaderValue::try_from(request_id) {
                        response.headers_mut().insert(REQUEST_ID_HEADER, id);
                    }
                    Ok(response)
                }
                InvocationType::RequestResponse => {
                    let tail = parts
                        .headers
                        .get(LOG_TYPE_HEADER)
                        .is_some_and(|value| value.as_bytes() == b"Tail");
                    let response =
                        invoke(proxy, &function, payload, tail, client_ip, arrived).await;
                    Ok(invoke_answer(&function, response))
                }
            }
        }
    }
}

/// An invocation fargo itself makes (an event's delivery, a queue batch): sent along the one
/// path, and how it ended.
pub async fn invoke_from_fargo(
    proxy: &Proxy,
    function: &Arc<FunctionState>,
    payload: Bytes,
) -> (Ended, Response<ProxyBody>) {
    let client_ip = HeaderValue::from_static("127.0.0.1");
    let response = invoke(proxy, function, payload, false, &client_ip, Instant::now()).await;
    let (ended, _) = ended(function, &response);
    (ended, response)
}

/// Sends one invocation's payload to the function along the activator's one path; with
/// `log_tail`, a handler function's sidecar answers with the invocation's log lines
/// (`X-Amz-Log-Result`).
pub async fn invoke(
    proxy: &Proxy,
    function: &Arc<FunctionState>,
    payload: Bytes,
    log_tail: bool,
    client_ip: &HeaderValue,
    arrived: Instant,
) -> Response<ProxyBody> {
    let facts = function.config().facts;
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    request
        .headers_mut()
        .insert(header::CONTENT_TYPE, APPLICATION_JSON);
    if log_tail && facts.uses_runtime_api {
        request
            .headers_mut()
            .insert(LOG_TYPE_HEADER, HeaderValue::from_static("Tail"));
    }
    let (parts, ()) = request.into_parts();
    let target = Target {
        strip: 0,
        raw_event: facts.uses_runtime_api,
    };
    proxy
        .send(
            function,
            parts,
            Outgoing::Buffered(payload),
            target,
            client_ip,
            arrived,
        )
        .await
}

/// How an invocation ended, in the Invoke API's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The function returned (200, the result).
    Success,
    /// The function failed: its error is the body (200 with `X-Amz-Function-Error`).
    FunctionError,
    /// The activator or the function's pod refused or failed it; the invocation may not have
    /// run (an [`ApiError`]).
    NotRun,
}

/// Reads a forwarded invocation's answer: what it means, and, for the activator's own
/// refusals, the Lambda API error.
pub fn ended(
    function: &FunctionState,
    response: &Response<ProxyBody>,
) -> (Ended, Option<ApiError>) {
    let status = response.status();
    if let Some(text) = response.body().activators_text() {
        let forwarded = response.extensions().get::<NotForwarded>().is_none();
        // A request forwarded and not answered by the function's timeout is a timed out
        // invocation, as Lambda reports it: the function's error.
        if forwarded && status == StatusCode::GATEWAY_TIMEOUT {
            return (Ended::FunctionError, None);
        }
        let (status, error_type) = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException")
            }
            // Held until the timeout, pods that cannot start, a pod that failed.
            StatusCode::GATEWAY_TIMEOUT | StatusCode::BAD_GATEWAY => {
                (StatusCode::BAD_GATEWAY, "ResourceNotReadyException")
            }
            StatusCode::FORBIDDEN => (status, "AccessDeniedException"),
            StatusCode::BAD_REQUEST => (status, "InvalidRequestContentException"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "ServiceException"),
        };
        return (Ended::NotRun, Some(ApiError::new(status, error_type, text)));
    }
    let facts = &function.config().facts;
    let function_error = response.headers().contains_key(FUNCTION_ERROR_HEADER);
    if facts.uses_runtime_api {
        match status {
            StatusCode::OK => (Ended::Success, None),
            _ if function_error => (Ended::FunctionError, None),
            // The sidecar's own timeout (Sandbox.Timedout).
            StatusCode::GATEWAY_TIMEOUT => (Ended::FunctionError, None),
            StatusCode::PAYLOAD_TOO_LARGE => (
                Ended::NotRun,
                Some(ApiError::new(
                    status,
                    "RequestTooLargeException",
                    "the event is larger than the function's runtime takes",
                )),
            ),
            _ => (
                Ended::NotRun,
                Some(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceException",
                    format!("the function's pod answered {status}"),
                )),
            ),
        }
    } else if status.is_server_error() {
        (Ended::FunctionError, None)
    } else {
        (Ended::Success, None)
    }
}

/// The Invoke API's answer to a synchronous invocation: 200 with the result (or the function's
/// error and `X-Amz-Function-Error: Unhandled`), or an API error when it did not run.
fn invoke_answer(function: &FunctionState, response: Response<ProxyBody>) -> Response<ProxyBody> {
    let (ended, error) = ended(function, &response);
    if let Some(error) = error {
        return error.into_response();
    }
    let (mut parts, body) = response.into_parts();
    let body = if let Some(text) = body.activators_text() {
        // The activator's timeout, as the function's error.
        parts.headers.clear();
        parts.headers.insert(header::CONTENT_TYPE, APPLICATION_JSON);
        ProxyBody::bytes(Bytes::from(
            ErrorBody::new("Sandbox.Timedout", text).to_json(),
        ))
    } else {
        body
    };
    parts.status = StatusCode::OK;
    if ended == Ended::FunctionError {
        parts.headers.insert(
            HeaderName::from_static(FUNCTION_ERROR_HEADER),
            HeaderValue::from_static("Unhandled"),
        );
    }
    parts
        .headers
        .insert(EXECUTED_VERSION_HEADER, HeaderValue::from_static(LATEST));
    if !parts.headers.contains_key(REQUEST_ID_HEADER)
        && let Ok(id) = HeaderValue::try_from(crate::api::lambda::request_id())
    {
        parts.headers.insert(REQUEST_ID_HEADER, id);
    }
    Response::from_parts(parts, body)
}

/// A payload must be JSON, as Lambda's (an empty one stands for none).
fn check_json(payload: &[u8]) -> Result<(), ApiError> {
    if payload.is_empty() {
        return Ok(());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(payload)
        .map(drop)
        .map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                format!("Could not parse request body into json: {error}"),
            )
        })
}

/// Reads a request body up to `limit` bytes.
pub async fn read_payload(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            format!("Request must be smaller than {limit} bytes for the InvokeFunction operation"),
        )),
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            format!("reading the request body: {error}"),
        )),
    }
}

/// One page of `ListFunctions` over `keys` (sorted `(namespace, name)`): the functions after
/// `marker` (the last `namespace/name` of the previous page), at most `max`, and the marker of
/// the next page when more follow.
fn page_of(
    keys: &[(&str, &str)],
    marker: Option<&str>,
    max: usize,
) -> (std::ops::Range<usize>, Option<String>) {
    let start = marker.map_or(0, |marker| {
        let after = marker.split_once('/').unwrap_or(("", ""));
        keys.partition_point(|key| *key <= after)
    });
    let end = start.saturating_add(max).min(keys.len());
    let next = (end < keys.len() && end > start).then(|| {
        let (namespace, name) = keys[end - 1];
        format!("{namespace}/{name}")
    });
    (start..end, next)
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::bytes(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// A function as `FunctionConfiguration` describes it (AWS's field names).
fn configuration(region: &str, namespace: &str, name: &str, function: &FunctionState) -> Value {
    let config = function.config();
    let facts = &config.facts;
    let mut value = json!({
        "FunctionName": name,
        "FunctionArn": function_arn(region, namespace, name),
        "MemorySize": facts.memory_mb,
        "Timeout": facts.timeout.as_secs(),
        "Version": LATEST,
        "PackageType": if facts.package_image { "Image" } else { "Zip" },
        "State": "Active",
        "Description": format!("ServerlessFunction {namespace}/{name}"),
    });
    if let Some(runtime) = facts.runtime {
        value["Runtime"] = runtime.into();
    }
    if let Some(handler) = &facts.handler {
        value["Handler"] = handler.clone().into();
    }
    if let Some(modified) = facts.last_modified {
        // Lambda's format: 2019-10-18T18:29:01.000+0000.
        value["LastModified"] = modified
            .strftime("%Y-%m-%dT%H:%M:%S%.3f+0000")
            .to_string()
            .into();
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_read_from_method_and_path() {
        let op = |method: Method, path: &'static str| operation(&method, path);
        assert_eq!(
            op(Method::GET, "/2015-03-31/functions/"),
            Ok(Operation::ListFunctions)
        );
        assert_eq!(
            op(Method::GET, "/2015-03-31/functions"),
            Ok(Operation::ListFunctions)
        );
        assert_eq!(
            op(Method::GET, "/2015-03-31/functions/echo"),
            Ok(Operation::GetFunction("echo"))
        );
        assert_eq!(
            op(
                Method::GET,
                "/2015-03-31/functions/demo%2Fecho/configuration"
            ),
            Ok(Operation::GetFunctionConfiguration("demo%2Fecho"))
        );
        assert_eq!(
            op(Method::POST, "/2015-03-31/functions/echo/invocations"),
            Ok(Operation::Invoke("echo"))
        );
        let unknown = op(Method::DELETE, "/2015-03-31/functions/echo").unwrap_err();
        assert_eq!(unknown.error_type, "UnknownOperationException");
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn functions_are_named_by_name_path_or_arn() {
        let named = |raw: &str| function_ref(raw, None).map(|r| (r.namespace, r.name));
        assert_eq!(named("echo"), Ok((None, "echo".into())));
        assert_eq!(named("demo/echo"), Ok((Some("demo".into()), "echo".into())));
        assert_eq!(
            named("arn:aws:lambda:us-east-1:demo:function:echo"),
            Ok((Some("demo".into()), "echo".into()))
        );
        assert_eq!(
            named("arn:aws:lambda:us-east-1:demo:function:echo:$LATEST"),
            Ok((Some("demo".into()), "echo".into()))
        );
        assert_eq!(named("echo:$LATEST"), Ok((None, "echo".into())));
    }

    #[test]
    fn versions_and_bad_names_are_refused() {
        let refused =
            |raw: &str, qualifier: Option<&str>| function_ref(raw, qualifier).unwrap_err();
        assert_eq!(
            refused("echo:prod", None).error_type,
            "ResourceNotFoundException"
        );
        assert_eq!(
            refused("echo", Some("1")).error_type,
            "ResourceNotFoundException"
        );
        for bad in [
            "Echo",
            "a/b/c",
            "../echo",
            "",
            "demo/",
            "arn:aws:lambda:us-east-1:demo:layer:x",
            "arn:aws:lambda:us-east-1::function:echo",
        ] {
            let error = refused(bad, None);
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{bad}: {error:?}");
        }
    }

    #[test]
    fn invocation_types_are_aws_names() {
        assert_eq!(invocation_type(None), Ok(InvocationType::RequestResponse));
        assert_eq!(
            invocation_type(Some(&HeaderValue::from_static("Event"))),
            Ok(InvocationType::Event)
        );
        assert_eq!(
            invocation_type(Some(&HeaderValue::from_static("DryRun"))),
            Ok(InvocationType::DryRun)
        );
        assert_eq!(
            invocation_type(Some(&HeaderValue::from_static("event")))
                .unwrap_err()
                .error_type,
            "InvalidParameterValueException"
        );
    }

    #[test]
    fn functions_are_listed_in_pages_after_the_marker() {
        // Sorted as (namespace, name): "a" before "a-b" although "a-b/x" < "a/x" as text.
        let keys = [("a", "x"), ("a", "y"), ("a-b", "x"), ("c", "z")];
        assert_eq!(page_of(&keys, None, 50), (0..4, None));
        assert_eq!(page_of(&keys, None, 2), (0..2, Some("a/y".into())));
        assert_eq!(page_of(&keys, Some("a/y"), 2), (2..4, None));
        assert_eq!(page_of(&keys, Some("a/y"), 1), (2..3, Some("a-b/x".into())));
        assert_eq!(page_of(&keys, Some("c/z"), 2), (4..4, None));
        // A marker of a function deleted since: the page continues where it would have been.
        assert_eq!(page_of(&keys, Some("a/xx"), 1), (1..2, Some("a/y".into())));
    }

    #[test]
    fn payloads_must_be_json() {
        assert_eq!(check_json(b""), Ok(()));
        assert_eq!(check_json(br#"{"a": [1, "b"]}"#), Ok(()));
        assert_eq!(check_json(b"\"text\""), Ok(()));
        let error = check_json(b"{not json").unwrap_err();
        assert_eq!(error.error_type, "InvalidRequestContentException");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn errors_have_aws_shape() {
        let response = ApiError::not_found("demo", "echo", "us-east-1").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()["x-amzn-errortype"],
            "ResourceNotFoundException"
        );
        let ProxyBody::Message { text: Some(text) } = response.body() else {
            panic!("an activator body");
        };
        let body: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(body["Type"], "User");
        assert_eq!(
            body["Message"],
            "Function not found: arn:aws:lambda:us-east-1:demo:function:echo"
        );
    }
}
