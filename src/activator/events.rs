//! Asynchronous invocations on NATS JetStream: an `Event` is stored in stream `FARGO_EVENTS`
//! (subject `fargo.events.<namespace>.<function>`) before the caller gets its 202, and every
//! activator replica delivers from one durable consumer per function — JetStream hands each
//! event to one of them, and again to another when the one holding it dies before its ack.
//!
//! Delivery goes the activator's one path ([`super::lambda_api::invoke`]), so an event wakes a
//! function from zero and counts in its concurrency. After a function error the event is
//! stored again with its attempt count and the time of its next attempt (`retryDelay`,
//! doubling) and the delivered copy acknowledged: attempts are counted in the event, not by
//! JetStream's redeliveries, which also count throttles and activator deaths. Throttles and
//! failures to reach the function are retried with backoff until `maxEventAge`. A handled or
//! given-up event's record goes to the function's destination (`onSuccess`, `onFailure`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::function_state::FunctionState;
use super::lambda_api::{self, AsyncSettings, Ended, LATEST, MAX_SYNC_PAYLOAD, function_arn};
use super::proxy::Proxy;
use crate::api::function::Destination;
use crate::telemetry::error_chain;

/// The stream every event is stored in.
pub const STREAM: &str = "FARGO_EVENTS";
const SUBJECT_PREFIX: &str = "fargo.events";
/// Headers fargo keeps on a stored event.
const REQUEST_ID: &str = "Fargo-Request-Id";
/// When the event was first accepted, in Unix milliseconds.
const ACCEPTED: &str = "Fargo-Accepted";
/// Attempts that ended in a function error so far.
const ATTEMPTS: &str = "Fargo-Attempts";
/// No attempt before this time, in Unix milliseconds.
const NOT_BEFORE: &str = "Fargo-Not-Before";
/// The namespace of the function whose record a destination subject carries.
const SENDER_NAMESPACE: &str = "Fargo-Namespace";
/// How long a publish may wait for JetStream's acknowledgement before the caller gets 503.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Events one activator delivers to one function at once.
const DELIVERIES_PER_FUNCTION: usize = 64;
/// How often each activator counts each function's waiting events.
const QUEUE_REPORT_INTERVAL: Duration = Duration::from_secs(3);
/// Longest wait between two attempts of an event that could not reach its function.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("NATS at {0} is not connected")]
    Disconnected(String),
    #[error("JetStream did not store the event: {0}")]
    Publish(String),
    #[error("JetStream did not confirm the event within {0:?}")]
    Timeout(Duration),
}

/// The stream of events, for accepting them and delivering them.
pub struct EventQueue {
    url: String,
    client: async_nats::Client,
    jetstream: Context,
    /// Copies of the stream (3 for a 3-node NATS cluster).
    replicas: usize,
}

impl EventQueue {
    /// Connects to NATS in the background (the activator starts, and serves synchronous
    /// invocations, while NATS is away).
    pub async fn connect(url: &str, replicas: usize) -> Result<Self, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name("fargo-activator")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(Self {
            url: url.to_string(),
            jetstream: jetstream::new(client.clone()),
            client,
            replicas: replicas.max(1),
        })
    }

    pub fn jetstream(&self) -> &Context {
        &self.jetstream
    }

    /// Copies of each stream fargo makes.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Creates the stream when it does not exist.
    async fn ensure_stream(&self) -> Result<stream::Stream, String> {
        self.jetstream
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                description: Some("fargo: asynchronous invocations of ServerlessFunctions".into()),
                storage: StorageType::File,
                // An event is gone once acknowledged: delivered, or handed to a destination.
                retention: RetentionPolicy::WorkQueue,
                num_replicas: self.replicas,
                // A retried publish with the same request id is stored once.
                duplicate_window: Duration::from_secs(120),
                // Past the longest maxEventAge, with room for the last attempt.
                max_age: Duration::from_secs(7 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|error| error_chain(&error))
    }

    /// Stores an event; returns once JetStream has it.
    pub async fn accept(
        &self,
        namespace: &str,
        name: &str,
        request_id: &str,
        payload: Bytes,
    ) -> Result<(), QueueError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(REQUEST_ID, request_id);
        headers.insert(
            ACCEPTED,
            jiff::Timestamp::now().as_millisecond().to_string().as_str(),
        );
        headers.insert(async_nats::header::NATS_MESSAGE_ID, request_id);
        self.publish(subject(namespace, name), headers, payload)
            .await
    }

    async fn publish(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        payload: Bytes,
    ) -> Result<(), QueueError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(QueueError::Disconnected(self.url.clone()));
        }
        let stored = async {
            let ack = self
                .jetstream
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|error| QueueError::Publish(error_chain(&error)))?;
            ack.await
                .map(drop)
                .map_err(|error| QueueError::Publish(error_chain(&error)))
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, stored)
            .await
            .map_err(|_| QueueError::Timeout(PUBLISH_TIMEOUT))?
    }

    /// Publishes a record of a function of `namespace` to a destination subject: JetStream
    /// stores it when a stream takes the subject, and then only when that stream's metadata
    /// `fargo.dev/namespaces` lists the namespace — a tenant's record must not pose as a message
    /// of another tenant's stream (a queue trigger's input). The header `Fargo-Namespace` names
    /// the sender.
    async fn publish_destination(
        &self,
        namespace: &str,
        subject: String,
        payload: Bytes,
    ) -> Result<(), String> {
        // No stream: a plain publish. Any other failure refuses it: the check fails closed.
        let stored_by = match self.jetstream.stream_by_subject(subject.as_str()).await {
            Ok(stream) => Some(stream),
            Err(error)
                if matches!(
                    error.kind(),
                    async_nats::jetstream::context::GetStreamByNameErrorKind::NotFound
                ) =>
            {
                None
            }
            Err(error) => {
                return Err(format!(
                    "finding which stream stores subject {subject}: {}",
                    error_chain(&error)
                ));
            }
        };
        if let Some(stream) = stored_by {
            let mut found = self
                .jetstream
                .get_stream(&stream)
                .await
                .map_err(|error| error_chain(&error))?;
            let info = found.info().await.map_err(|error| error_chain(&error))?;
            if !super::queues::stream_shared_with(&info.config.metadata, namespace) {
                return Err(format!(
                    "subject {subject} is stored by stream {stream}, whose metadata \
                     {} does not list namespace {namespace}",
                    super::queues::NAMESPACES_METADATA
                ));
            }
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(SENDER_NAMESPACE, namespace);
        self.client
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|error| error_chain(&error))?;
        self.client
            .flush()
            .await
            .map_err(|error| error_chain(&error))
    }
}

/// `fargo.events.<namespace>.<name>`: a name's dots become `_`, which Kubernetes names never
/// hold, so each function has one subject token of its own.
pub fn subject(namespace: &str, name: &str) -> String {
    format!("{SUBJECT_PREFIX}.{namespace}.{}", name.replace('.', "_"))
}

/// The durable consumer of a function's events (no dots allowed in consumer names).
fn consumer_name(namespace: &str, name: &str) -> String {
    format!("{namespace}__{}", name.replace('.', "_"))
}

/// Keeps one delivery loop per function that exists, until `stop`; and the stream itself, which
/// is made again when NATS lost it (a server replaced with an empty store).
pub async fn deliver(queue: Arc<EventQueue>, proxy: Arc<Proxy>, stop: CancellationToken) {
    let mut running: HashMap<(String, String), CancellationToken> = HashMap::new();
    let mut ready = false;
    loop {
        let stream = match queue.ensure_stream().await {
            Ok(found) => {
                if !ready {
                    tracing::info!(stream = STREAM, url = %queue.url, "event stream ready");
                }
                ready = true;
                Some(found)
            }
            Err(error) => {
                tracing::warn!(%error, url = %queue.url, "creating the event stream");
                ready = false;
                None
            }
        };
        if let Some(stream) = &stream {
            let functions = proxy.index().functions();
            let wanted: std::collections::HashSet<(String, String)> = functions
                .iter()
                .map(|(namespace, name, _)| (namespace.clone(), name.clone()))
                .collect();
            running.retain(|key, token| {
                let keep = wanted.contains(key);
                if !keep {
                    token.cancel();
                }
                keep
            });
            for (namespace, name, function) in functions {
                let key = (namespace.clone(), name.clone());
                if running.contains_key(&key) {
                    continue;
                }
                let token = stop.child_token();
                running.insert(key, token.clone());
                tokio::spawn(deliver_function(
                    queue.clone(),
                    proxy.clone(),
                    stream.clone(),
                    function,
                    token,
                ));
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Delivers one function's events until `stop`, restarting its consumer after errors.
async fn deliver_function(
    queue: Arc<EventQueue>,
    proxy: Arc<Proxy>,
    stream: stream::Stream,
    function: Arc<FunctionState>,
    stop: CancellationToken,
) {
    let namespace = function.namespace().to_string();
    let name = function.name().to_string();
    let deliveries = Arc::new(Semaphore::new(DELIVERIES_PER_FUNCTION));
    let mut reporting = false;
    loop {
        let timeout = function.config().timeout;
        let config = pull::Config {
            durable_name: Some(consumer_name(&namespace, &name)),
            filter_subject: subject(&namespace, &name),
            ack_policy: AckPolicy::Explicit,
            // Held until a pod is free, then run: at most twice the function's timeout.
            ack_wait: timeout * 2 + Duration::from_secs(30),
            max_ack_pending: 1000,
            inactive_threshold: Duration::ZERO,
            ..Default::default()
        };
        let messages = async {
            let consumer = stream
                .get_or_create_consumer(&consumer_name(&namespace, &name), config)
                .await
                .map_err(|error| error_chain(&error))?;
            consumer
                .stream()
                .max_messages_per_batch(DELIVERIES_PER_FUNCTION)
                .messages()
                .await
                .map_err(|error| error_chain(&error))
        };
        let mut messages = tokio::select! {
            () = stop.cancelled() => return,
            messages = messages => match messages {
                Ok(messages) => {
                    if !reporting {
                        reporting = true;
                        tokio::spawn(report_queue(stream.clone(), function.clone(), stop.clone()));
                    }
                    messages
                }
                Err(error) => {
                    tracing::warn!(%namespace, %name, %error, "opening the function's event consumer");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    }
                }
            }
        };
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = messages.next() => message,
            };
            match message {
                Some(Ok(message)) => {
                    let Ok(place) = deliveries.clone().acquire_owned().await else {
                        return;
                    };
                    let queue = queue.clone();
                    let proxy = proxy.clone();
                    let function = function.clone();
                    tokio::spawn(async move {
                        deliver_one(&queue, &proxy, &function, message).await;
                        drop(place);
                    });
                }
                Some(Err(error)) => {
                    // NATS restarted, the consumer or the stream is gone: open it again.
                    tracing::debug!(%namespace, %name, error = %error_chain(&error), "event consumer");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => break,
                    }
                }
                None => break,
            }
        }
    }
}

/// What fargo kept with a stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    request_id: String,
    accepted_ms: i64,
    attempts: u32,
    not_before_ms: i64,
}

impl Stored {
    /// A record's context for an invocation not stored here (a queue trigger's batch).
    pub(super) fn new(request_id: String, attempts: u32) -> Self {
        Self {
            request_id,
            accepted_ms: jiff::Timestamp::now().as_millisecond(),
            attempts,
            not_before_ms: 0,
        }
    }

    fn read(headers: Option<&async_nats::HeaderMap>, fallback_ms: i64) -> Self {
        let get = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        Self {
            request_id: get(REQUEST_ID).unwrap_or_else(crate::api::lambda::request_id),
            accepted_ms: get(ACCEPTED)
                .and_then(|v| v.parse().ok())
                .unwrap_or(fallback_ms),
            attempts: get(ATTEMPTS).and_then(|v| v.parse().ok()).unwrap_or(0),
            not_before_ms: get(NOT_BEFORE).and_then(|v| v.parse().ok()).unwrap_or(0),
        }
    }

    fn headers(&self) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(REQUEST_ID, self.request_id.as_str());
        headers.insert(ACCEPTED, self.accepted_ms.to_string().as_str());
        headers.insert(ATTEMPTS, self.attempts.to_string().as_str());
        headers.insert(NOT_BEFORE, self.not_before_ms.to_string().as_str());
        // A copy stored for a retry is a new message: its own id keeps it from being taken
        // for the original.
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}-{}", self.request_id, self.attempts).as_str(),
        );
        headers
    }
}

/// What to do with an event now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Too old: give it up with `EventAgeExceeded`.
    Expired,
    /// Not yet: back to the stream for this long.
    Wait(Duration),
    Attempt,
}

fn next_step(stored: &Stored, settings: &AsyncSettings, now_ms: i64) -> Step {
    let age_ms = now_ms.saturating_sub(stored.accepted_ms);
    if age_ms > i64::try_from(settings.max_event_age.as_millis()).unwrap_or(i64::MAX) {
        return Step::Expired;
    }
    if stored.not_before_ms > now_ms {
        return Step::Wait(Duration::from_millis(
            u64::try_from(stored.not_before_ms - now_ms).unwrap_or(0),
        ));
    }
    Step::Attempt
}

/// The wait before retry `attempts` (1 = the first retry): `retryDelay`, doubling.
pub(super) fn retry_delay(settings: &AsyncSettings, attempts: u32) -> Duration {
    settings
        .retry_delay
        .saturating_mul(1 << attempts.saturating_sub(1).min(10))
}

/// Backoff after the `delivered`-th delivery could not reach the function: 1s, doubling, at
/// most five minutes.
pub(super) fn reach_backoff(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 20) - 1).unwrap_or(0);
    Duration::from_secs(1u64 << exponent.min(9)).min(MAX_BACKOFF)
}

async fn deliver_one(
    queue: &EventQueue,
    proxy: &Proxy,
    function: &Arc<FunctionState>,
    message: jetstream::Message,
) {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mut stored = Stored::read(message.headers.as_ref(), now_ms);
    let settings = function.config().facts.asynchronous.clone();
    let delivered = message.info().map_or(1, |info| info.delivered);
    let payload = message.payload.clone();
    let outcome = match next_step(&stored, &settings, now_ms) {
        Step::Expired => {
            let record = record(proxy, function, &stored, "EventAgeExceeded", &payload, None);
            send_record(queue, function, settings.on_failure.as_ref(), record).await;
            function.metrics().event("event_age_exceeded");
            message.ack().await
        }
        Step::Wait(wait) => message.ack_with(AckKind::Nak(Some(wait))).await,
        Step::Attempt => {
            let (ended, response) =
                lambda_api::invoke_from_fargo(proxy, function, payload.clone()).await;
            let status = response.status();
            match ended {
                Ended::NotRun => {
                    tracing::debug!(function = %function.name(), %status, "event not delivered; retrying later");
                    // Back no later than just past its age, to be given up then.
                    let left = settings.max_event_age.saturating_sub(Duration::from_millis(
                        u64::try_from(now_ms - stored.accepted_ms).unwrap_or(0),
                    ));
                    let wait = reach_backoff(delivered).min(left + Duration::from_secs(1));
                    function.metrics().event("not_delivered");
                    message.ack_with(AckKind::Nak(Some(wait))).await
                }
                Ended::Success | Ended::FunctionError => {
                    let body = Limited::new(response.into_body(), MAX_SYNC_PAYLOAD)
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    stored.attempts += 1;
                    let failed = ended == Ended::FunctionError;
                    if failed && stored.attempts <= settings.max_retries {
                        stored.not_before_ms = jiff::Timestamp::now().as_millisecond()
                            + i64::try_from(retry_delay(&settings, stored.attempts).as_millis())
                                .unwrap_or(i64::MAX / 2);
                        match queue
                            .publish(message.subject.to_string(), stored.headers(), payload)
                            .await
                        {
                            Ok(()) => {
                                function.metrics().event("retried");
                                message.ack().await
                            }
                            Err(error) => {
                                tracing::warn!(function = %function.name(), %error, "storing an event for its retry; it comes back instead");
                                message
                                    .ack_with(AckKind::Nak(Some(reach_backoff(delivered))))
                                    .await
                            }
                        }
                    } else {
                        let (condition, destination) = if failed {
                            ("RetriesExhausted", settings.on_failure.as_ref())
                        } else {
                            ("Success", settings.on_success.as_ref())
                        };
                        function.metrics().event(if failed {
                            "retries_exhausted"
                        } else {
                            "success"
                        });
                        let response = Answer {
                            function_error: failed,
                            body: &body,
                        };
                        let record = record(
                            proxy,
                            function,
                            &stored,
                            condition,
                            &payload,
                            Some(response),
                        );
                        send_record(queue, function, destination, record).await;
                        message.ack().await
                    }
                }
            }
        }
    };
    if let Err(error) = outcome {
        tracing::warn!(function = %function.name(), error = %error_chain(&*error), "acknowledging an event; it will be delivered again");
    }
}

/// A function's answer, for its destination record.
pub(super) struct Answer<'a> {
    pub(super) function_error: bool,
    pub(super) body: &'a [u8],
}

/// JSON as it is, or the text as a string.
fn json_or_text(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Lambda's destination record.
pub(super) fn record(
    proxy: &Proxy,
    function: &FunctionState,
    stored: &Stored,
    condition: &str,
    payload: &[u8],
    answer: Option<Answer<'_>>,
) -> Value {
    let arn = function_arn(
        &proxy.lambda().region,
        function.namespace(),
        function.name(),
    );
    let mut record = json!({
        "version": "1.0",
        "timestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "requestContext": {
            "requestId": stored.request_id,
            "functionArn": format!("{arn}:{LATEST}"),
            "condition": condition,
            "approximateInvokeCount": stored.attempts,
        },
        "requestPayload": json_or_text(payload),
    });
    if let Some(answer) = answer {
        let mut context = json!({"statusCode": 200, "executedVersion": LATEST});
        if answer.function_error {
            context["functionError"] = "Unhandled".into();
        }
        record["responseContext"] = context;
        record["responsePayload"] = json_or_text(answer.body);
    }
    record
}

/// Sends a record where the function's settings say; failures are logged, the event is done.
pub(super) async fn send_record(
    queue: &EventQueue,
    function: &FunctionState,
    destination: Option<&Destination>,
    record: Value,
) {
    let Some(destination) = destination else {
        return;
    };
    let body = Bytes::from(record.to_string());
    let result = if let Some(target) = &destination.function {
        let request_id = crate::api::lambda::request_id();
        queue
            .accept(function.namespace(), target, &request_id, body)
            .await
            .map_err(|error| error.to_string())
    } else if let Some(url) = &destination.url {
        post_record(url, body).await
    } else if let Some(subject) = &destination.subject {
        // The CRD refuses these; checked again here, where a stale CRD cannot let one by.
        if subject.starts_with("fargo.") || subject.starts_with('$') || subject.contains(['*', '>'])
        {
            Err(format!("subject {subject} is fargo's or NATS's own"))
        } else {
            queue
                .publish_destination(function.namespace(), subject.clone(), body)
                .await
        }
    } else {
        Ok(())
    };
    if let Err(error) = result {
        function.metrics().event("destination_failed");
        tracing::warn!(
            namespace = %function.namespace(), function = %function.name(), ?destination, %error,
            "sending an event's record to its destination"
        );
    }
}

/// POSTs a record to a destination URL (plain HTTP), three tries. Addresses of the activator's
/// own host — loopback, link-local (cloud metadata), unspecified — are refused: a tenant names
/// the URL, the activator makes the call.
async fn post_record(url: &str, body: Bytes) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|error| format!("URL {url}: {error}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "URL {url}: only http:// destinations are delivered"
        ));
    }
    let host = uri.host().ok_or_else(|| format!("URL {url} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let addrs = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|error| format!("resolving {host}: {error}"))?;
    for addr in addrs {
        if forbidden_destination(addr.ip()) {
            return Err(format!(
                "URL {url} resolves to {}, an address of the activator's own host",
                addr.ip()
            ));
        }
    }
    let client = crate::http_client::http_client();
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        let request = Request::post(uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|error| error.to_string())?;
        match tokio::time::timeout(Duration::from_secs(10), client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => return Ok(()),
            Ok(Ok(response)) => last = format!("{url} answered {}", response.status()),
            Ok(Err(error)) => last = format!("{url}: {}", error_chain(&error)),
            Err(_) => last = format!("{url} did not answer within 10s"),
        }
    }
    Err(last)
}

fn forbidden_destination(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Keeps the function's count of waiting events (and when the oldest was accepted) up to
/// date for `/stats`, from its consumer: those not yet delivered plus those being delivered.
async fn report_queue(
    stream: stream::Stream,
    function: Arc<FunctionState>,
    stop: CancellationToken,
) {
    let consumer = consumer_name(function.namespace(), function.name());
    let subject = subject(function.namespace(), function.name());
    loop {
        // Getting the consumer fetches its info: one request, not two.
        let info = stream
            .get_consumer::<pull::Config>(&consumer)
            .await
            .ok()
            .map(|found| found.cached_info().clone());
        if let Some(info) = info {
            let queued = info.num_pending + info.num_ack_pending as u64;
            let oldest = if queued == 0 {
                None
            } else {
                // Acknowledged events leave the stream: the first one stored is the oldest.
                stream
                    .get_first_raw_message_by_subject(&subject, 1)
                    .await
                    .ok()
                    .and_then(|message| {
                        let accepted = message.headers.get(ACCEPTED)?.as_str().parse().ok()?;
                        jiff::Timestamp::from_millisecond(accepted).ok()
                    })
            };
            function.set_queue(queued, oldest.map(Time));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(QUEUE_REPORT_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AsyncSettings {
        AsyncSettings {
            max_retries: 2,
            max_event_age: Duration::from_secs(60),
            retry_delay: Duration::from_secs(1),
            on_success: None,
            on_failure: None,
        }
    }

    fn stored(accepted_ms: i64, not_before_ms: i64) -> Stored {
        Stored {
            request_id: "id".into(),
            accepted_ms,
            attempts: 0,
            not_before_ms,
        }
    }

    #[test]
    fn subjects_keep_one_token_per_name() {
        assert_eq!(subject("media", "thumb.v2"), "fargo.events.media.thumb_v2");
        assert_eq!(consumer_name("media", "thumb.v2"), "media__thumb_v2");
    }

    #[test]
    fn old_events_expire_and_early_ones_wait() {
        let now = 1_000_000;
        assert_eq!(
            next_step(&stored(now - 61_000, 0), &settings(), now),
            Step::Expired
        );
        assert_eq!(
            next_step(&stored(now - 1_000, now + 2_500), &settings(), now),
            Step::Wait(Duration::from_millis(2_500))
        );
        assert_eq!(
            next_step(&stored(now - 1_000, now), &settings(), now),
            Step::Attempt
        );
    }

    #[test]
    fn retries_wait_retry_delay_doubling() {
        let settings = AsyncSettings {
            retry_delay: Duration::from_secs(60),
            ..settings()
        };
        assert_eq!(retry_delay(&settings, 1), Duration::from_secs(60));
        assert_eq!(retry_delay(&settings, 2), Duration::from_secs(120));
    }

    #[test]
    fn unreachable_functions_back_off_up_to_five_minutes() {
        assert_eq!(reach_backoff(1), Duration::from_secs(1));
        assert_eq!(reach_backoff(2), Duration::from_secs(2));
        assert_eq!(reach_backoff(4), Duration::from_secs(8));
        assert_eq!(reach_backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn stored_headers_round_trip() {
        let original = Stored {
            request_id: "abc".into(),
            accepted_ms: 5,
            attempts: 2,
            not_before_ms: 9,
        };
        assert_eq!(Stored::read(Some(&original.headers()), 0), original);
        assert_eq!(Stored::read(None, 7).accepted_ms, 7);
    }

    #[test]
    fn destinations_on_the_activators_host_are_refused() {
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "::ffff:127.0.0.1",
            "fe80::1",
        ] {
            assert!(forbidden_destination(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.7", "192.0.2.1", "2001:db8::1"] {
            assert!(!forbidden_destination(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn records_hold_json_payloads_as_json() {
        assert_eq!(json_or_text(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(json_or_text(b"plain"), json!("plain"));
    }
}
