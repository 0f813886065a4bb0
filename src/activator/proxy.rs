//! The proxy: routes a request to its function, holds it while the function has no free pod,
//! then streams it to a pod and the answer back (bodies are never buffered).

use std::convert::Infallible;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{self, Authority, PathAndQuery};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::auth::Authenticator;
use super::function_state::{Admission, FunctionState, Lease};
use super::index::FunctionIndex;
use super::lambda_api::LambdaSettings;
use super::plain;
use super::router::RouteError;
use super::router::upstream_path;
use super::scale::{Cluster, spawn_poke};
use super::storage::StorageTokens;
use super::upstream::{self, PodConnection};
use crate::api::function::HttpAuth;
use crate::connections::{self, ConnectionLimits, Connections, TrackedBody};
use crate::telemetry::error_chain;

pub(super) type UpstreamBody = Either<Incoming, Full<Bytes>>;

/// A request body on its way to a pod: the client's, streamed through, or one the activator
/// read whole (an Invoke API payload, an event from the queue, a signed request).
pub enum Outgoing {
    Streamed(Incoming),
    Buffered(Bytes),
}

impl Outgoing {
    fn into_upstream(self) -> UpstreamBody {
        match self {
            Outgoing::Streamed(body) => Either::Left(body),
            Outgoing::Buffered(bytes) => Either::Right(Full::new(bytes)),
        }
    }
}
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often a held request asks whether the function's pods are all broken.
const BROKEN_CHECK_INTERVAL: Duration = Duration::from_secs(2);
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard `keep-alive` and `proxy-connection`.
pub(super) static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Request headers that say who asked, or that only the activator may send a pod: what a
/// client sends in them is dropped (see [`prepare_request_headers`]).
pub(super) static REPLACED_REQUEST_HEADERS: [HeaderName; 7] = [
    X_FORWARDED_FOR,
    X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
    X_REAL_IP,
    header::FORWARDED,
    HeaderName::from_static(crate::api::lambda::INVOKE_HEADER),
    HeaderName::from_static(crate::api::PROBE_HEADER),
];

/// A place on a pod and the request's timing, or the activator's answer.
pub(super) type Admitted = Result<(Lease, Timing), Response<ProxyBody>>;

pub struct Proxy {
    index: Arc<FunctionIndex>,
    auth: Arc<Authenticator>,
    lambda: LambdaSettings,
    /// Tokens of object-storage notifications.
    storage_tokens: Arc<StorageTokens>,
    /// `None` runs without a cluster (tests): no scale-from-zero poke, no pod diagnosis.
    cluster: Option<Cluster>,
    /// Whether forwarded requests are metered.
    metering: bool,
}

impl Proxy {
    pub fn new(index: Arc<FunctionIndex>, cluster: Option<Cluster>) -> Self {
        Self {
            index,
            auth: Arc::new(Authenticator::default()),
            lambda: LambdaSettings::default(),
            storage_tokens: Arc::default(),
            cluster,
            metering: true,
        }
    }

    /// Whether forwarded requests are metered (they are without this).
    pub fn with_metering(mut self, metering: bool) -> Self {
        self.metering = metering;
        self
    }

    /// The Lambda API's authentication and settings (off and defaults without this).
    pub fn with_lambda(mut self, auth: Arc<Authenticator>, lambda: LambdaSettings) -> Self {
        self.auth = auth;
        self.lambda = lambda;
        self
    }

    /// The tokens object-storage notifications are checked against (none without this).
    pub fn with_storage_tokens(mut self, tokens: Arc<StorageTokens>) -> Self {
        self.storage_tokens = tokens;
        self
    }

    pub fn storage_tokens(&self) -> &StorageTokens {
        &self.storage_tokens
    }

    pub fn index(&self) -> &FunctionIndex {
        &self.index
    }

    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    pub fn lambda(&self) -> &LambdaSettings {
        &self.lambda
    }

    pub(super) fn metering(&self) -> bool {
        self.metering
    }

    /// Answers one request. `client_ip` is the peer's address, ready for `X-Forwarded-For`.
    #[tracing::instrument(level = "debug", skip_all, fields(method = %request.method(), path = request.uri().path()))]
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client_ip: &HeaderValue,
    ) -> Response<ProxyBody> {
        let arrived = Instant::now();
        let resolved = match self
            .index
            .resolve(request_host(&request), request.uri().path())
        {
            Ok(resolved) => resolved,
            Err(RouteError::LambdaApi) => {
                return super::lambda_api::serve(self, request, client_ip).await;
            }
            Err(RouteError::StorageEvents) => {
                return super::storage::serve(self, request, client_ip).await;
            }
            Err(error) => return text_response(StatusCode::NOT_FOUND, error.to_string()),
        };
        let function = resolved.function;
        let (mut parts, body) = request.into_parts();
        let body = if resolved.auth == HttpAuth::AwsIam {
            match self.auth.function_url(&function, &mut parts, body).await {
                Ok(body) => Outgoing::Buffered(body),
                Err(error) => {
                    return refuse_with(&function, arrived, error.into_response());
                }
            }
        } else {
            Outgoing::Streamed(body)
        };
        let target = Target {
            strip: resolved.strip,
            raw_event: false,
        };
        self.send(&function, parts, body, target, client_ip, arrived)
            .await
    }

    /// The one path of every invocation, whatever its source: admits the request to the
    /// function (holding it while no pod is free, asking for a scale from zero at once), then
    /// forwards it to a pod.
    pub(super) async fn send(
        &self,
        function: &Arc<FunctionState>,
        parts: hyper::http::request::Parts,
        body: Outgoing,
        target: Target,
        client_ip: &HeaderValue,
        arrived: Instant,
    ) -> Response<ProxyBody> {
        match self.admit(function, arrived).await {
            Ok((lease, timing)) => {
                self.forward(parts, body, target, lease, client_ip, timing)
                    .await
            }
            Err(refused) => refused,
        }
    }

    /// A place on one of the function's pods, or the activator's answer when none comes (marked
    /// [`NotForwarded`]). A place free at once is taken here: the wait for one, a future far
    /// larger than the rest of a request's, is made (in a box) only when it is needed.
    pub(super) fn admit<'a>(
        &'a self,
        function: &'a Arc<FunctionState>,
        arrived: Instant,
    ) -> futures::future::Either<
        std::future::Ready<Admitted>,
        Pin<Box<dyn Future<Output = Admitted> + Send + 'a>>,
    > {
        let (timeout, admission) = function.admit();
        match admission {
            Admission::Proxy(lease) => {
                let timing = Timing {
                    arrived,
                    deadline: arrived + timeout,
                    timeout,
                    cold: false,
                };
                futures::future::Either::Left(std::future::ready(Ok((lease, timing))))
            }
            admission => futures::future::Either::Right(Box::pin(async move {
                self.wait_for_place(function, arrived, timeout, admission)
                    .await
                    .map_err(|mut refused| {
                        refused.extensions_mut().insert(NotForwarded);
                        refused
                    })
            })),
        }
    }

    async fn wait_for_place(
        &self,
        function: &Arc<FunctionState>,
        arrived: Instant,
        timeout: Duration,
        admission: Admission,
    ) -> Admitted {
        let deadline = arrived + timeout;
        let mut cold = false;
        let lease = match admission {
            Admission::Proxy(lease) => lease,
            Admission::QueueFull(depth) => {
                let message = format!(
                    "function {}/{} already holds {depth} requests waiting for a pod; retry later",
                    function.namespace(),
                    function.name()
                );
                let mut response =
                    refuse(function, arrived, StatusCode::TOO_MANY_REQUESTS, message);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Err(response);
            }
            Admission::ActivatorFull(limit) => {
                function.metrics().held_refused();
                let message = format!(
                    "the activator already holds {limit} requests waiting for pods, all functions \
                     together; retry later"
                );
                let mut response =
                    refuse(function, arrived, StatusCode::SERVICE_UNAVAILABLE, message);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Err(response);
            }
            Admission::Hold(held) => {
                if held.should_poke() {
                    match &self.cluster {
                        Some(cluster) => spawn_poke(cluster.clone(), function.clone()),
                        None => function.poke_finished(true),
                    }
                }
                cold = held.is_cold();
                let waited = held.wait_until(deadline);
                tokio::select! {
                    waited = waited => match waited {
                        Some(lease) => {
                            function.metrics().held_for(arrived.elapsed());
                            lease
                        }
                        None => {
                            let message = self.explain_hold_timeout(function, timeout).await;
                            return Err(refuse(function, arrived, StatusCode::GATEWAY_TIMEOUT, message));
                        }
                    },
                    problems = self.broken(function) => {
                        let message = format!(
                            "function {}/{} cannot start: {problems}",
                            function.namespace(),
                            function.name()
                        );
                        return Err(refuse(function, arrived, StatusCode::BAD_GATEWAY, message));
                    }
                }
            }
        };
        let timing = Timing {
            arrived,
            deadline,
            timeout,
            cold,
        };
        Ok((lease, timing))
    }

    /// Sends the request to the leased pod (retrying once elsewhere when that is safe) and
    /// returns the pod's answer with a body that holds the lease until it ends.
    async fn forward(
        &self,
        mut parts: hyper::http::request::Parts,
        body: Outgoing,
        target: Target,
        mut lease: Lease,
        client_ip: &HeaderValue,
        timing: Timing,
    ) -> Response<ProxyBody> {
        let Timing {
            arrived,
            deadline,
            timeout,
            cold,
        } = timing;
        let function = lease.function().clone();
        let config = function.config();
        let Ok(path_and_query) = upstream_path_and_query(&parts.uri, target.strip) else {
            let message = format!("request path {} is not valid", parts.uri.path());
            return refuse(&function, arrived, StatusCode::BAD_REQUEST, message);
        };
        prepare_request_headers(&mut parts.headers, &parts.uri, client_ip);
        if target.raw_event {
            parts.headers.insert(
                HeaderName::from_static(crate::api::lambda::INVOKE_HEADER),
                HeaderValue::from_static(crate::api::lambda::INVOKE_EVENT),
            );
        }
        let idempotent = parts.method == Method::GET || parts.method == Method::HEAD;
        // A request whose body is not read yet can be sent again; keep what that needs.
        let replay = match &body {
            Outgoing::Buffered(bytes) => Some(bytes.clone()),
            Outgoing::Streamed(body) => (idempotent || body.is_end_stream()).then(Bytes::new),
        }
        .map(|bytes| (parts.method.clone(), parts.headers.clone(), bytes));

        let first = upstream_request(
            parts.method,
            lease.authority(),
            &path_and_query,
            parts.headers,
            body.into_upstream(),
        );
        let answer_by = deadline + config.answer_grace;
        if self.metering {
            lease.meter_from_now(config.facts.memory_mb);
        }
        let mut outcome =
            tokio::time::timeout_at(answer_by, upstream::send(lease.addr(), first)).await;
        if let Ok(Err(error)) = &outcome
            && let Some((method, headers, bytes)) = replay
            && (error.is_connect() || idempotent)
        {
            tracing::debug!(%error, pod = %lease.addr(), "retrying on another pod");
            // Another pod if there is one; another connection to the same pod otherwise (the one
            // that failed is closed).
            lease.switch_pod();
            if self.metering {
                lease.meter_from_now(config.facts.memory_mb);
            }
            let again = upstream_request(
                method,
                lease.authority(),
                &path_and_query,
                headers,
                Outgoing::Buffered(bytes).into_upstream(),
            );
            outcome = tokio::time::timeout_at(answer_by, upstream::send(lease.addr(), again)).await;
        }
        let (response, connection) = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return pod_failed(&mut lease, arrived, &error),
            Err(_) => return timed_out(&function, arrived, timeout),
        };
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let ran = take_ran(&mut parts.headers);
        if config.facts.uses_runtime_api {
            // The sidecar's figures; an answer without them never reached the runtime.
            match ran {
                Some((billed, init)) => lease.ran(billed, init),
                None => lease.not_run(),
            }
        }
        function
            .metrics()
            .record(parts.status.as_u16(), arrived.elapsed());
        if cold {
            function.metrics().cold_start(arrived.elapsed());
        }
        Response::from_parts(
            parts,
            ProxyBody::upstream(body, connection, lease, deadline),
        )
    }

    /// Resolves, with the pods' problems, once every pod of the function is broken (see
    /// [`crate::diagnosis::all_broken`]): a runtime that fails to initialise, an image that
    /// cannot be pulled. A held request then gets the reason at once instead of waiting out
    /// its timeout. Never resolves without a cluster.
    async fn broken(&self, function: &FunctionState) -> Arc<str> {
        let Some(cluster) = &self.cluster else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(BROKEN_CHECK_INTERVAL).await;
            if let Some(diagnosis) = cluster.why_not_ready(function).await
                && diagnosis.broken
            {
                return diagnosis.text;
            }
        }
    }

    /// The body of a 504 for a request held until its timeout: busy pods, or why no pod is
    /// ready (from the pods as they are now).
    async fn explain_hold_timeout(&self, function: &FunctionState, timeout: Duration) -> String {
        let pods = function.pod_summary();
        let prefix = format!("function {}/{}", function.namespace(), function.name());
        if pods.usable > 0 {
            return format!(
                "{prefix}: all {} ready pods stayed busy for {} (concurrency.perInstance is {})",
                pods.usable,
                seconds(timeout),
                pods.per_instance
            );
        }
        let problems = match &self.cluster {
            Some(cluster) => cluster.why_not_ready(function).await.map(|d| d.text),
            None => None,
        };
        match problems {
            Some(problems) if !problems.is_empty() => format!(
                "{prefix}: no pod became ready within {}: {problems}",
                seconds(timeout)
            ),
            _ => format!(
                "{prefix}: no pod became ready within {} ({})",
                seconds(timeout),
                match pods.listed {
                    0 => "no pod is listed for it".to_string(),
                    1 => "1 pod is starting".to_string(),
                    n => format!("{n} pods are starting"),
                }
            ),
        }
    }
}

/// Marks an answer the activator gave without forwarding the request to any pod (queue full,
/// held until the timeout, pods broken): the invocation did not run.
#[derive(Clone, Copy, Debug)]
pub struct NotForwarded;

/// Where a request goes in the function's pod.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Bytes to cut from the front of the request path (the route's prefix).
    pub strip: usize,
    /// The body is the event itself (an Invoke API payload) for the in-pod Runtime API, not an
    /// HTTP request to turn into one.
    pub raw_event: bool,
}

/// When a request arrived and when it must be done.
#[derive(Clone, Copy)]
pub(super) struct Timing {
    pub arrived: Instant,
    pub deadline: Instant,
    /// The function's timeout, for messages.
    pub timeout: Duration,
    /// It was held while the function had no usable pod.
    pub cold: bool,
}

/// Removes the metering headers from a pod's answer, and returns the billed and init
/// durations (whole milliseconds, rounded up) they give. Only a handler function's sidecar
/// sets them; the caller decides whether to believe them.
fn take_ran(headers: &mut HeaderMap) -> Option<(u64, Option<u64>)> {
    use crate::api::lambda::{BILLED_MS_HEADER, INIT_MS_HEADER};
    let billed = headers.remove(BILLED_MS_HEADER);
    let init = headers.remove(INIT_MS_HEADER);
    ran_from(
        billed.as_ref().map(HeaderValue::as_bytes),
        init.as_ref().map(HeaderValue::as_bytes),
    )
}

/// The billed and init durations the metering headers' values give.
pub(super) fn ran_from(billed: Option<&[u8]>, init: Option<&[u8]>) -> Option<(u64, Option<u64>)> {
    let billed = std::str::from_utf8(billed?).ok()?.parse::<u64>().ok()?;
    let init = init
        .and_then(|value| std::str::from_utf8(value).ok()?.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| ms.ceil() as u64);
    Some((billed, init))
}

/// Counts a response the activator makes itself, and makes it.
pub(super) fn refuse(
    function: &FunctionState,
    arrived: Instant,
    status: StatusCode,
    message: String,
) -> Response<ProxyBody> {
    function
        .metrics()
        .record(status.as_u16(), arrived.elapsed());
    text_response(status, message)
}

/// The 502 for a request whose pod failed it (it did not run, as far as metering goes).
pub(super) fn pod_failed(
    lease: &mut Lease,
    arrived: Instant,
    error: &super::upstream::UpstreamError,
) -> Response<ProxyBody> {
    lease.not_run();
    let function = lease.function().clone();
    let message = format!(
        "function {}/{}: pod {} failed: {}",
        function.namespace(),
        function.name(),
        lease.addr(),
        error_chain(error)
    );
    refuse(&function, arrived, StatusCode::BAD_GATEWAY, message)
}

/// The 504 for a request whose pod did not answer within the function's timeout.
pub(super) fn timed_out(
    function: &FunctionState,
    arrived: Instant,
    timeout: Duration,
) -> Response<ProxyBody> {
    let message = format!(
        "function {}/{} did not answer within its timeout of {}",
        function.namespace(),
        function.name(),
        seconds(timeout)
    );
    refuse(function, arrived, StatusCode::GATEWAY_TIMEOUT, message)
}

/// Counts a response the activator made (an authentication failure), and returns it.
fn refuse_with(
    function: &FunctionState,
    arrived: Instant,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    function
        .metrics()
        .record(response.status().as_u16(), arrived.elapsed());
    response
}

fn text_response(status: StatusCode, mut message: String) -> Response<ProxyBody> {
    message.push('\n');
    let mut response = Response::new(ProxyBody::message(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub fn request_host<B>(request: &Request<B>) -> Option<&str> {
    match request.headers().get(header::HOST) {
        Some(host) => host.to_str().ok(),
        // HTTP/2 carries it in :authority.
        None => request.uri().authority().map(Authority::as_str),
    }
}

/// The request target for the pod: the path without the route's prefix, and the query.
pub fn upstream_path_and_query(uri: &Uri, strip: usize) -> Result<PathAndQuery, uri::InvalidUri> {
    if strip == 0 {
        return Ok(uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")));
    }
    let path = upstream_path(uri.path(), strip);
    match uri.query() {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}")),
        None => PathAndQuery::try_from(path),
    }
}

/// The request for the pod, in origin form (`/path?query`); a request without a `Host` header
/// (HTTP/1.0) names the pod.
pub fn upstream_request(
    method: Method,
    authority: &Authority,
    path_and_query: &PathAndQuery,
    mut headers: HeaderMap,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    if !headers.contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = Uri::from(path_and_query.clone());
    *request.headers_mut() = headers;
    request
}

/// Drops hop-by-hop headers and says who asked, as the activator saw it: `X-Forwarded-For`,
/// `X-Real-IP` and `Forwarded` name the peer of the connection, `X-Forwarded-Host` the `Host`,
/// `X-Forwarded-Proto` plain HTTP. What the client sent in these headers is dropped, not
/// appended to: a function that trusts them (for an allow list, a rate limit, an audit log)
/// must not be told another address by the caller itself.
pub fn prepare_request_headers(headers: &mut HeaderMap, uri: &Uri, client_ip: &HeaderValue) {
    remove_hop_by_hop(headers);
    for name in &REPLACED_REQUEST_HEADERS {
        headers.remove(name);
    }
    if !headers.contains_key(header::HOST)
        && let Some(authority) = uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    let host = headers.get(header::HOST).cloned();
    if let Some(host) = &host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    headers.insert(X_FORWARDED_FOR, client_ip.clone());
    headers.insert(X_REAL_IP, client_ip.clone());
    if let Some(forwarded) = forwarded(client_ip, host.as_ref()) {
        headers.insert(header::FORWARDED, forwarded);
    }
}

/// `Forwarded: for=…;host=…;proto=http` (RFC 7239): an IPv6 peer and the host are quoted; a
/// host that cannot be a quoted string is left out.
pub(super) fn forwarded(
    client_ip: &HeaderValue,
    host: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    let ip = client_ip.to_str().ok()?;
    let mut value = if ip.contains(':') {
        format!("for=\"[{ip}]\"")
    } else {
        format!("for={ip}")
    };
    if let Some(host) = host.and_then(|h| h.to_str().ok())
        && !host.contains(['"', '\\'])
    {
        value.push_str(&format!(";host=\"{host}\""));
    }
    value.push_str(";proto=http");
    HeaderValue::from_str(&value).ok()
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the sender named in any `Connection` header are hop-by-hop too. The names are read
    // as bytes: a value that is not valid text (obs-text) or a second `Connection` header must
    // not let a named header through.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|name| {
            !name.eq_ignore_ascii_case(b"close") && !name.eq_ignore_ascii_case(b"keep-alive")
        })
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

pub(super) fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{:.3}s", duration.as_secs_f64())
    }
}

pin_project! {
    /// A response body: the activator's own message, or the pod's body streamed through. The
    /// pod's body keeps the request's place on the pod until it ends, and is cut at the
    /// function's timeout.
    #[project = ProxyBodyProjection]
    pub enum ProxyBody {
        Message { text: Option<Bytes> },
        Upstream {
            #[pin]
            body: Incoming,
            #[pin]
            deadline: Sleep,
            exchange: Option<Exchange>,
        },
    }
}

/// What a response body from a pod holds until it ends: the request's place on the pod and the
/// connection to it. Dropped before the end, both are given up (the connection closed).
struct Exchange {
    lease: Lease,
    connection: PodConnection,
}

impl Exchange {
    /// The request is done as soon as its response body is: the connection goes back for the
    /// next request, and the place is freed.
    fn finish(exchange: &mut Option<Exchange>) {
        if let Some(Exchange { lease, connection }) = exchange.take() {
            connection.release();
            drop(lease);
        }
    }
}

impl ProxyBody {
    fn message(text: String) -> Self {
        Self::bytes(Bytes::from(text))
    }

    /// A body the activator made whole.
    pub fn bytes(bytes: Bytes) -> Self {
        ProxyBody::Message { text: Some(bytes) }
    }

    /// The bytes of a body the activator made; `None` for a pod's body.
    pub(super) fn into_message(self) -> Option<Bytes> {
        match self {
            ProxyBody::Message { text } => Some(text.unwrap_or_default()),
            ProxyBody::Upstream { .. } => None,
        }
    }

    /// The text of a body the activator made (its refusal's reason), trimmed; `None` for a
    /// pod's body.
    pub fn activators_text(&self) -> Option<String> {
        match self {
            ProxyBody::Message { text } => Some(
                text.as_ref()
                    .map(|t| String::from_utf8_lossy(t).trim().to_string())
                    .unwrap_or_default(),
            ),
            ProxyBody::Upstream { .. } => None,
        }
    }

    fn upstream(
        body: Incoming,
        connection: PodConnection,
        lease: Lease,
        deadline: Instant,
    ) -> Self {
        let mut exchange = Some(Exchange { lease, connection });
        // An empty body is never polled.
        if body.is_end_stream() {
            Exchange::finish(&mut exchange);
        }
        ProxyBody::Upstream {
            body,
            deadline: tokio::time::sleep_until(deadline),
            exchange,
        }
    }
}

/// The function's timeout passed while its response was still streaming.
#[derive(Debug, thiserror::Error)]
#[error("the function's timeout passed while its response was streaming")]
pub(super) struct ResponseTimedOut;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProjection::Message { text } => {
                Poll::Ready(text.take().map(|text| Ok(Frame::data(text))))
            }
            ProxyBodyProjection::Upstream {
                mut body,
                deadline,
                exchange,
            } => match body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // The server asks no further once the body says it has ended.
                    if body.is_end_stream() {
                        Exchange::finish(exchange);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(error))) => {
                    exchange.take();
                    Poll::Ready(Some(Err(error.into())))
                }
                Poll::Ready(None) => {
                    Exchange::finish(exchange);
                    Poll::Ready(None)
                }
                Poll::Pending => match deadline.poll(cx) {
                    Poll::Ready(()) => {
                        exchange.take();
                        Poll::Ready(Some(Err(ResponseTimedOut.into())))
                    }
                    Poll::Pending => Poll::Pending,
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Message { text } => text.is_none(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Message { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
            ProxyBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}

/// When the server winds down: `draining` first (still serving, but every HTTP/1 response says
/// `Connection: close`, so keep-alive clients reconnect — through the Service, to a replica
/// that stays — instead of reusing a connection that is about to close), then `stop`.
#[derive(Clone, Default)]
pub struct Shutdown {
    pub draining: CancellationToken,
    pub stop: CancellationToken,
}

/// The bounds on the proxy's clients (the `fargo activator` flags); see [`crate::connections`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    pub connections: ConnectionLimits,
    /// A request's line and headers, in bytes. Over HTTP/1 this is hyper's buffer for the
    /// connection (at least 8 KiB): a request whose headers do not fit, or that has more than
    /// 100 headers, is answered 431 and its connection closed. Over HTTP/2 it is the header list
    /// size the activator announces, and a larger request is answered 431 on its stream.
    pub max_header_bytes: usize,
}

/// Accepts connections on `listener` and serves them with `proxy` within `limits`, on `threads`
/// threads of their own (see [`ServingThreads`]; 0: on the calling runtime), until
/// `shutdown.stop` is cancelled; then stops accepting and returns once every open connection
/// has finished its requests (held ones included).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: ClientLimits,
    threads: usize,
    shutdown: Shutdown,
) {
    let Shutdown { draining, stop } = shutdown;
    let sweeper = tokio::spawn(upstream::sweep_forever());
    let mut threads = match ServingThreads::start(threads) {
        Ok(threads) => threads,
        Err(error) => {
            tracing::warn!(%error, "starting the serving threads; serving on the main runtime");
            ServingThreads::none()
        }
    };
    let connections = Connections::new(
        limits.connections,
        proxy.index.metrics().connections().clone(),
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection's place keeps the time instead (it also covers HTTP/2).
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(%error, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let place = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            place = connections.admit() => place,
        };
        let _ = stream.set_nodelay(true);
        let client_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        let proxy = proxy.clone();
        // Tokens of the connection's own, which its requests and wake-ups read: the server's
        // are read by every connection, from every thread, each under its lock.
        let draining = draining.child_token();
        let requests = place.requests();
        let (plain_proxy, plain_ip, plain_requests, plain_draining) = (
            proxy.clone(),
            client_ip.clone(),
            requests.clone(),
            draining.clone(),
        );
        let service = service_fn(move |request: Request<Incoming>| {
            let in_progress = requests.start();
            let proxy = proxy.clone();
            let client_ip = client_ip.clone();
            let draining = draining.clone();
            async move {
                // HTTP/2 needs no header: graceful shutdown sends GOAWAY.
                let http1 = request.version() < hyper::Version::HTTP_2;
                let mut response = proxy.handle(request, &client_ip).await;
                if http1 && draining.is_cancelled() {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, in_progress)))
            }
        });
        let builder = builder.clone();
        let stop = stop.child_token();
        threads.serve(stream, move |stream| async move {
            let mut stream = place.stall_timeout(stream);
            let graceful = CancellationToken::new();
            // Plain requests on this path, until one is not: hyper serves the rest.
            let connection = async {
                let client = plain::Client {
                    proxy: &plain_proxy,
                    ip: &plain_ip,
                    requests: &plain_requests,
                    draining: &plain_draining,
                    graceful: &graceful,
                    max_header_bytes: limits.max_header_bytes,
                };
                let read = match plain::serve(&mut stream, client).await? {
                    plain::Ended::Closed => return Ok(()),
                    plain::Ended::HandOver(read) => read,
                };
                let stream = plain::Prefixed::new(read, stream);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let mut connection = pin!(connection);
                tokio::select! {
                    served = connection.as_mut() => return served,
                    () = graceful.cancelled() => connection.as_mut().graceful_shutdown(),
                }
                connection.await
            };
            connections::drive(place, connection, stop, |_| graceful.cancel()).await;
        });
    }
    drop(listener);
    connections.all_closed().await;
    sweeper.abort();
}

/// Threads that serve client connections, each on a Tokio runtime of its own with one thread,
/// taking connections in turn. A connection's tasks (its requests, held ones included, and the
/// connections to pods they use) then wake each other on one thread: on a multi-thread
/// runtime, nearly every such wake-up also wakes a parked worker to look for work, a futex
/// call and a context switch per request or more. Without threads, connections are served on
/// the calling runtime. The threads stop once this is dropped.
struct ServingThreads {
    runtimes: Vec<tokio::runtime::Handle>,
    next: usize,
    /// Dropped with this, which ends every thread's runtime.
    _stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ServingThreads {
    fn none() -> Self {
        Self {
            runtimes: vec![],
            next: 0,
            _stop: None,
        }
    }

    fn start(count: usize) -> std::io::Result<Self> {
        if count == 0 {
            return Ok(Self::none());
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = futures::future::FutureExt::shared(stopped);
        let mut runtimes = vec![];
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtimes.push(runtime.handle().clone());
            let stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("fargo-proxy-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let _ = stopped.await;
                    });
                })?;
        }
        Ok(Self {
            runtimes,
            next: 0,
            _stop: Some(stop),
        })
    }

    /// Serves `stream` with `serve` on the next thread (the stream moves to that thread's
    /// runtime, whose I/O driver then watches it), or on the calling runtime without threads.
    fn serve<F, Served>(&mut self, stream: tokio::net::TcpStream, serve: F)
    where
        F: FnOnce(tokio::net::TcpStream) -> Served + Send + 'static,
        Served: std::future::Future<Output = ()> + Send + 'static,
    {
        let Some(runtime) = self.runtimes.get(self.next % self.runtimes.len().max(1)) else {
            tokio::spawn(serve(stream));
            return;
        };
        self.next = self.next.wrapping_add(1);
        match stream.into_std() {
            Ok(stream) => {
                runtime.spawn(async move {
                    match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => serve(stream).await,
                        Err(error) => tracing::warn!(%error, "moving a connection to its thread"),
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "moving a connection to its thread"),
        }
    }
}

#[cfg(test)]
mod tests;
