//! Object-storage notifications: S3-compatible servers tell the activator of object events, and
//! each event a function's `triggers.storage` matches is stored as one asynchronous invocation
//! of it ([`super::events`]), carrying Lambda's S3 event. From there the event is delivered,
//! retried and handed to destinations as any other.
//!
//! Two ways in:
//! - `POST /_fargo/storage/events` on the proxy port ([`serve`]), with a token from the tokens
//!   Secret (`Authorization: Bearer`, or `?token=` for servers that cannot set a header). A
//!   token names the namespaces whose functions its notifications may invoke: a bucket name is
//!   the storage server's, not a tenant's, so no tenant may read another's objects' names by
//!   naming their bucket. The answer comes once every invocation is stored; `503` when NATS
//!   cannot store them, so a server that retries does.
//! - Stream `FARGO_STORAGE` (subjects `fargo.storage.<token name>`), for servers that publish
//!   to NATS ([`consume`]): stored before the activators see them, whichever activator is up.
//!   The subject names a token of the same Secret, whose namespaces the notifications reach;
//!   the token itself is not sent (whoever may publish on the subject is trusted with it).
//!
//! Invocations get message ids made of the function and the event, so a notification sent
//! again (a retry after a 503 that stored half of it, or a redelivery) is stored once within
//! JetStream's duplicate window.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use bytes::Bytes;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::events::{EventQueue, QueueError};
use super::function_state::FunctionState;
use super::lambda_api::json_response;
use super::proxy::{Proxy, ProxyBody};
use crate::api::function::StorageTrigger;
use crate::profile::matching::wildcard_matches;
use crate::telemetry::error_chain;

/// Where servers post notifications. No namespace starts with `_`, so no function route is
/// hidden by it.
pub const PATH: &str = "/_fargo/storage/events";
/// Largest notification body taken.
pub const MAX_BODY: usize = 1 << 20;
/// The stream of notifications published to NATS.
pub const STREAM: &str = "FARGO_STORAGE";
const SUBJECTS: &str = "fargo.storage.>";
/// `fargo.storage.<token name>`.
const SUBJECT_PREFIX: &str = "fargo.storage.";
/// The activators' one consumer of [`STREAM`].
const CONSUMER: &str = "fargo-activators";
/// Notifications one activator takes from the stream ahead (it handles them one at a time).
const PREFETCH: usize = 16;

/// One token of the tokens Secret: `{"token": "…", "namespaces": ["photos", "media-*"]}`.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageToken {
    pub name: String,
    token: String,
    pub namespaces: Vec<String>,
}

impl std::fmt::Debug for StorageToken {
    /// Never the token itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageToken")
            .field("name", &self.name)
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

impl StorageToken {
    pub fn allows(&self, namespace: &str) -> bool {
        self.namespaces
            .iter()
            .any(|pattern| wildcard_matches(pattern, namespace))
    }
}

/// The tokens storage servers authenticate with.
#[derive(Default)]
pub struct StorageTokens {
    tokens: RwLock<Arc<Vec<StorageToken>>>,
}

impl StorageTokens {
    pub fn set(&self, tokens: Vec<StorageToken>) {
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tokens);
    }

    pub fn len(&self) -> usize {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry whose token is `presented`, compared in constant time.
    fn find(&self, presented: &str) -> Option<StorageToken> {
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let presented = Sha256::digest(presented.as_bytes());
        tokens
            .iter()
            .find(|entry| {
                let expected = Sha256::digest(entry.token.as_bytes());
                expected
                    .iter()
                    .zip(presented.iter())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            })
            .cloned()
    }

    /// The entry named `name`: notifications published on `fargo.storage.<name>` reach its
    /// namespaces.
    fn named(&self, name: &str) -> Option<StorageToken> {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|entry| entry.name == name)
            .cloned()
    }

    /// Whether some token lets notifications reach `namespace`.
    pub fn any_allows(&self, namespace: &str) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|entry| entry.allows(namespace))
    }

    /// Reads the Secret's data: one entry per key. Entries that do not parse are left out, with
    /// why (never the token itself).
    pub fn parse(data: &BTreeMap<String, Vec<u8>>) -> (Vec<StorageToken>, Vec<String>) {
        let mut tokens = vec![];
        let mut problems = vec![];
        for (name, value) in data {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Entry {
                token: String,
                namespaces: Vec<String>,
            }
            match serde_json::from_slice::<Entry>(value) {
                Ok(entry) if entry.token.len() < 16 => {
                    problems.push(format!("{name}: the token is shorter than 16 characters"));
                }
                Ok(entry) if entry.namespaces.is_empty() => {
                    problems.push(format!("{name}: \"namespaces\" is empty"));
                }
                Ok(entry) => tokens.push(StorageToken {
                    name: name.clone(),
                    token: entry.token,
                    namespaces: entry.namespaces,
                }),
                Err(error) => problems.push(format!(
                    "{name}: {error}; expected {{\"token\": \"…\", \"namespaces\": [\"photos\", \"media-*\"]}}"
                )),
            }
        }
        (tokens, problems)
    }
}

/// One object event, whatever shape it came in.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ObjectEvent {
    /// AWS's name, without `s3:`: `ObjectCreated:Put`, `ObjectRemoved:Delete`, …
    pub event_name: String,
    pub bucket: String,
    /// The key as written (decoded).
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub sequencer: Option<String>,
    pub event_time: Option<String>,
    pub region: Option<String>,
    pub principal: Option<String>,
    pub source_ip: Option<String>,
}

/// What a notification says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    /// A server's probe (`s3:TestEvent`) or an SNS unsubscription: nothing to deliver.
    Test,
    /// SNS asks for its subscription to be confirmed (by visiting `subscribe_url`).
    SubscriptionConfirmation {
        topic: String,
        subscribe_url: String,
    },
    Events(Vec<ObjectEvent>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotificationError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    Shape(String),
}

/// Reads a notification: S3's `Records` (AWS, MinIO, versitygw, Ceph), inside an SNS envelope
/// or not, or an EventBridge event from `aws.s3`.
pub fn parse(body: &[u8]) -> Result<Notification, NotificationError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| NotificationError::NotJson(error.to_string()))?;
    read(&value, 0)
}

fn read(value: &Value, depth: u8) -> Result<Notification, NotificationError> {
    let Some(object) = value.as_object() else {
        return Err(NotificationError::Shape(
            "a notification is a JSON object".into(),
        ));
    };
    let text = |field: &str| object.get(field).and_then(Value::as_str);
    // SNS (AWS S3 → SNS → HTTP(S) subscription).
    match text("Type") {
        Some("Notification") if depth == 0 => {
            let message = text("Message").ok_or_else(|| {
                NotificationError::Shape("an SNS Notification without a Message".into())
            })?;
            let inner: Value = serde_json::from_str(message)
                .map_err(|error| NotificationError::NotJson(format!("the SNS Message: {error}")))?;
            return read(&inner, depth + 1);
        }
        Some("SubscriptionConfirmation") => {
            return Ok(Notification::SubscriptionConfirmation {
                topic: text("TopicArn").unwrap_or_default().to_string(),
                subscribe_url: text("SubscribeURL").unwrap_or_default().to_string(),
            });
        }
        Some("UnsubscribeConfirmation") => return Ok(Notification::Test),
        _ => {}
    }
    if text("Event") == Some("s3:TestEvent") {
        return Ok(Notification::Test);
    }
    if text("source") == Some("aws.s3") && object.contains_key("detail-type") {
        return Ok(Notification::Events(
            eventbridge(object).into_iter().collect(),
        ));
    }
    match object.get("Records") {
        Some(Value::Array(records)) => records
            .iter()
            .enumerate()
            .map(|(i, record)| {
                s3_record(record)
                    .map_err(|e| NotificationError::Shape(format!("Records[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Notification::Events),
        // MinIO sends `"Records": null` in some probes.
        Some(Value::Null) => Ok(Notification::Events(vec![])),
        _ => Err(NotificationError::Shape(
            "not an S3 event notification: expected \"Records\", an SNS Notification or an \
             EventBridge event from aws.s3"
                .into(),
        )),
    }
}

/// One record of S3's notification shape.
fn s3_record(record: &Value) -> Result<ObjectEvent, String> {
    let str_at = |pointer: &str| {
        record
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let event_name = str_at("/eventName").ok_or("no eventName")?;
    let bucket = str_at("/s3/bucket/name").ok_or("no s3.bucket.name")?;
    let key = record
        .pointer("/s3/object/key")
        .and_then(Value::as_str)
        .ok_or("no s3.object.key")?;
    // AWS and MinIO send keys form-encoded; versitygw sends them as written. versitygw's
    // records say so by their configuration id (`webhook-global`, `nats-global`, …).
    let raw_key = str_at("/s3/configurationId").is_some_and(|id| id.ends_with("-global"))
        && str_at("/eventSource").as_deref() == Some("aws:s3")
        && str_at("/eventVersion").as_deref() == Some("2.2");
    let key = if raw_key {
        key.to_string()
    } else {
        decode_key(key).ok_or_else(|| format!("s3.object.key {key:?} is not URL-encoded UTF-8"))?
    };
    let size = record.pointer("/s3/object/size").and_then(|size| {
        size.as_u64()
            .or_else(|| size.as_str().and_then(|s| s.parse().ok()))
    });
    Ok(ObjectEvent {
        event_name: normalise_event_name(&event_name),
        bucket,
        key,
        size,
        etag: str_at("/s3/object/eTag"),
        version_id: str_at("/s3/object/versionId"),
        sequencer: str_at("/s3/object/sequencer"),
        event_time: str_at("/eventTime"),
        region: str_at("/awsRegion"),
        // versitygw writes `PrincipalId`.
        principal: str_at("/userIdentity/principalId")
            .or_else(|| str_at("/userIdentity/PrincipalId")),
        source_ip: str_at("/requestParameters/sourceIPAddress"),
    })
}

/// An EventBridge event from `aws.s3` (keys as written), or `None` for a detail type that is not
/// an object event fargo knows.
fn eventbridge(object: &serde_json::Map<String, Value>) -> Option<ObjectEvent> {
    let detail = object.get("detail")?;
    let str_at = |value: &Value, pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let reason = str_at(detail, "/reason").unwrap_or_default();
    let event_name = match object.get("detail-type").and_then(Value::as_str)? {
        "Object Created" => match reason.as_str() {
            "CopyObject" => "ObjectCreated:Copy",
            "CompleteMultipartUpload" => "ObjectCreated:CompleteMultipartUpload",
            "POST Object" => "ObjectCreated:Post",
            _ => "ObjectCreated:Put",
        },
        "Object Deleted" => match str_at(detail, "/deletion-type").as_deref() {
            Some("Delete Marker Created") => "ObjectRemoved:DeleteMarkerCreated",
            _ => "ObjectRemoved:Delete",
        },
        "Object Restore Completed" => "ObjectRestore:Completed",
        "Object Restore Initiated" => "ObjectRestore:Post",
        "Object Tags Added" => "ObjectTagging:Put",
        "Object Tags Deleted" => "ObjectTagging:Delete",
        _ => return None,
    };
    Some(ObjectEvent {
        event_name: event_name.into(),
        bucket: str_at(detail, "/bucket/name")?,
        key: str_at(detail, "/object/key")?,
        size: detail.pointer("/object/size").and_then(Value::as_u64),
        etag: str_at(detail, "/object/etag"),
        version_id: str_at(detail, "/object/version-id"),
        sequencer: str_at(detail, "/object/sequencer"),
        event_time: object
            .get("time")
            .and_then(Value::as_str)
            .map(str::to_string),
        region: object
            .get("region")
            .and_then(Value::as_str)
            .map(str::to_string),
        principal: str_at(detail, "/requester"),
        source_ip: str_at(detail, "/source-ip-address"),
    })
}

/// `s3:ObjectCreated:Put` → `ObjectCreated:Put`; versitygw's own `ObjectRemoved:DeleteObjects`
/// (one per object of a DeleteObjects) is AWS's `ObjectRemoved:Delete`.
pub fn normalise_event_name(name: &str) -> String {
    let name = name.strip_prefix("s3:").unwrap_or(name);
    match name {
        "ObjectRemoved:DeleteObjects" => "ObjectRemoved:Delete".into(),
        other => other.into(),
    }
}

/// A form-encoded key (`+` is a space) as written.
fn decode_key(key: &str) -> Option<String> {
    percent_decode_str(&key.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|key| key.into_owned())
}

/// What AWS leaves as it is in a key: letters, digits, `-_.*` and `/`; a space becomes `+`.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'*')
    .remove(b'/')
    .remove(b' ');

/// A key as AWS writes it in an S3 event: form-encoded UTF-8.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY_ENCODE)
        .to_string()
        .replace(' ', "+")
}

/// Whether `trigger` takes `event`: the bucket, one of its event types (`*` ends a wildcard
/// type), the key's prefix and suffix.
pub fn trigger_matches(trigger: &StorageTrigger, event: &ObjectEvent) -> bool {
    trigger.bucket == event.bucket
        && trigger.events.iter().any(|wanted| {
            let wanted = normalise_event_name(wanted);
            match wanted.strip_suffix('*') {
                Some(family) => event.event_name.starts_with(family),
                None => wanted == event.event_name,
            }
        })
        && trigger
            .prefix
            .as_deref()
            .is_none_or(|prefix| event.key.starts_with(prefix))
        && trigger
            .suffix
            .as_deref()
            .is_none_or(|suffix| event.key.ends_with(suffix))
}

/// Lambda's S3 event for one object event.
pub fn lambda_event(event: &ObjectEvent, region: &str) -> Value {
    let mut object = json!({
        "key": encode_key(&event.key),
        "sequencer": event.sequencer.clone().unwrap_or_default(),
    });
    if let Some(size) = event.size {
        object["size"] = size.into();
    }
    if let Some(etag) = &event.etag {
        object["eTag"] = etag.trim_matches('"').into();
    }
    if let Some(version) = &event.version_id {
        object["versionId"] = version.clone().into();
    }
    let principal = event.principal.clone().unwrap_or_default();
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": event.region.clone().unwrap_or_else(|| region.to_string()),
        "eventTime": event.event_time.clone().unwrap_or_else(|| {
            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        }),
        "eventName": event.event_name,
        "userIdentity": {"principalId": principal},
        "requestParameters": {"sourceIPAddress": event.source_ip.clone().unwrap_or_default()},
        "responseElements": {},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "fargo",
            "bucket": {
                "name": event.bucket,
                "ownerIdentity": {"principalId": principal},
                "arn": format!("arn:aws:s3:::{}", event.bucket),
            },
            "object": object,
        },
    }]})
}

/// The invocation's id: the same function and event give the same id, which JetStream's
/// duplicate window turns into one stored invocation. Shaped as a request id (a UUID).
fn invocation_id(namespace: &str, name: &str, event: &ObjectEvent) -> String {
    let mut hash = Sha256::new();
    for part in [
        namespace,
        name,
        &event.bucket,
        &event.key,
        &event.event_name,
        event.sequencer.as_deref().unwrap_or_default(),
        event.version_id.as_deref().unwrap_or_default(),
        event.etag.as_deref().unwrap_or_default(),
        event.event_time.as_deref().unwrap_or_default(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let mut bits = [0u8; 16];
    bits.copy_from_slice(&digest[..16]);
    crate::api::lambda::uuid_text(u128::from_be_bytes(bits))
}

/// What became of a notification's events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Invocations stored.
    pub accepted: usize,
    /// Events no function (that the sender may reach) listens to.
    pub ignored: usize,
}

/// Stores one invocation per (event, function whose trigger takes it); `allowed` says which
/// namespaces the sender may reach. Stops at the first event JetStream does not take: what was
/// stored before it is stored again, once, when the sender retries.
pub async fn fan_out(
    queue: &EventQueue,
    proxy: &Proxy,
    events: &[ObjectEvent],
    allowed: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Outcome, QueueError> {
    let functions = proxy.index().functions();
    let mut outcome = Outcome::default();
    for event in events {
        let takers: Vec<&Arc<FunctionState>> = functions
            .iter()
            .filter(|(namespace, _, _)| allowed(namespace))
            .filter(|(_, _, function)| {
                function
                    .config()
                    .facts
                    .storage
                    .iter()
                    .any(|trigger| trigger_matches(trigger, event))
            })
            .map(|(_, _, function)| function)
            .collect();
        if takers.is_empty() {
            outcome.ignored += 1;
            proxy.index().metrics().storage_event("ignored");
            continue;
        }
        let payload = Bytes::from(lambda_event(event, &proxy.lambda().region).to_string());
        for function in takers {
            let id = invocation_id(function.namespace(), function.name(), event);
            queue
                .accept(function.namespace(), function.name(), &id, payload.clone())
                .await?;
            function.metrics().event("accepted");
            function.trigger_event("Storage", &event.bucket);
            outcome.accepted += 1;
        }
        proxy.index().metrics().storage_event("delivered");
    }
    Ok(outcome)
}

/// Answers `POST /_fargo/storage/events`.
pub async fn serve(
    proxy: &Proxy,
    request: Request<Incoming>,
    client_ip: &HeaderValue,
) -> Response<ProxyBody> {
    let refuse = |status: StatusCode, message: String| {
        tracing::warn!(client = ?client_ip, %status, %message, "storage notification refused");
        proxy.index().metrics().storage_event("refused");
        json_response(status, &json!({"message": message}))
    };
    if request.method() != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, format!("{PATH} takes POST"));
    }
    let Some(token) = presented_token(&request) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "no token: send Authorization: Bearer <token>, or ?token=<token>, with a token of the activator's storage tokens Secret".into(),
        );
    };
    let Some(sender) = proxy.storage_tokens().find(&token) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unknown token: it is not in the activator's storage tokens Secret".into(),
        );
    };
    let body = match super::lambda_api::read_payload(request.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a notification must be at most {MAX_BODY} bytes"),
            );
        }
    };
    let events = match parse(&body) {
        Ok(Notification::Events(events)) => events,
        Ok(Notification::Test) => {
            proxy.index().metrics().storage_event("test");
            return json_response(StatusCode::OK, &json!({"accepted": 0, "ignored": 0}));
        }
        Ok(Notification::SubscriptionConfirmation {
            topic,
            subscribe_url,
        }) => {
            // The activator does not call URLs a request names: a person confirms.
            tracing::warn!(%topic, %subscribe_url, token = %sender.name, "SNS asks to confirm a subscription: open SubscribeURL to confirm it");
            return json_response(StatusCode::OK, &json!({"accepted": 0, "ignored": 0}));
        }
        Err(error) => return refuse(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let Some(queue) = proxy.lambda().events.clone() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the activator has no NATS (--nats-url) to store events in".into(),
        );
    };
    match fan_out(&queue, proxy, &events, &|namespace| {
        sender.allows(namespace)
    })
    .await
    {
        Ok(outcome) => json_response(
            StatusCode::OK,
            &json!({"accepted": outcome.accepted, "ignored": outcome.ignored}),
        ),
        Err(error) => {
            let mut response = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the events could not be stored, send them again: {error}"),
            );
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}

/// The token of `Authorization: Bearer`, or of the query's `token`.
fn presented_token<B>(request: &Request<B>) -> Option<String> {
    if let Some(value) = request.headers().get(AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(token.trim().to_string());
    }
    request.uri().query().and_then(|query| {
        query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == "token").then(|| percent_decode_str(value).decode_utf8_lossy().into_owned())
        })
    })
}

/// Each storage trigger's problem: none while some token lets notifications reach the
/// function's namespace.
pub fn report_trigger_states(proxy: &Proxy, function: &FunctionState, triggers: &[StorageTrigger]) {
    let reachable = proxy.storage_tokens().any_allows(function.namespace());
    for trigger in triggers {
        let problem = (!reachable).then(|| {
            (
                "NoToken",
                format!(
                    "no token of the activator's storage tokens Secret lists namespace {}: no \
                     storage server can notify its functions",
                    function.namespace()
                ),
            )
        });
        function.set_trigger_state("Storage", &trigger.bucket, problem, None);
    }
}

/// Keeps the stream of NATS-published notifications, and hands each notification to the
/// functions of the namespaces of the token its subject names (`fargo.storage.<token name>`),
/// until `stop`. A notification that cannot be stored now comes back.
pub async fn consume(queue: Arc<EventQueue>, proxy: Arc<Proxy>, stop: CancellationToken) {
    loop {
        let messages = async {
            let stream = queue
                .jetstream()
                .get_or_create_stream(stream::Config {
                    name: STREAM.into(),
                    subjects: vec![SUBJECTS.into()],
                    description: Some(
                        "fargo: object-storage notifications published to NATS".into(),
                    ),
                    storage: StorageType::File,
                    retention: RetentionPolicy::WorkQueue,
                    num_replicas: queue.replicas(),
                    max_age: Duration::from_secs(24 * 3600),
                    ..Default::default()
                })
                .await
                .map_err(|error| error_chain(&error))?;
            let consumer = stream
                .get_or_create_consumer(
                    CONSUMER,
                    pull::Config {
                        durable_name: Some(CONSUMER.into()),
                        ack_policy: AckPolicy::Explicit,
                        deliver_policy: DeliverPolicy::All,
                        ack_wait: Duration::from_secs(60),
                        max_ack_pending: 1000,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|error| error_chain(&error))?;
            consumer
                .stream()
                .max_messages_per_batch(PREFETCH)
                .messages()
                .await
                .map_err(|error| error_chain(&error))
        };
        let messages = tokio::select! {
            () = stop.cancelled() => return,
            messages = messages => messages,
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, stream = STREAM, "opening the storage notifications stream");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
        };
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = messages.next() => message,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::debug!(error = %error_chain(&error), "storage notifications consumer");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                None => break,
            };
            // The subject names the token whose namespaces the notification may reach.
            let sender = message
                .subject
                .strip_prefix(SUBJECT_PREFIX)
                .and_then(|name| proxy.storage_tokens().named(name));
            let Some(sender) = sender else {
                tracing::warn!(subject = %message.subject, "storage notification dropped: its subject names no token of the storage tokens Secret (fargo.storage.<token name>)");
                proxy.index().metrics().storage_event("refused");
                if let Err(error) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %error_chain(&*error), "acknowledging a storage notification");
                }
                continue;
            };
            let done = match parse(&message.payload) {
                Ok(Notification::Events(events)) => {
                    match fan_out(&queue, &proxy, &events, &|namespace| {
                        sender.allows(namespace)
                    })
                    .await
                    {
                        Ok(_) => message.ack().await,
                        Err(error) => {
                            tracing::warn!(%error, "storing a storage notification's invocations; it comes back");
                            message
                                .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                                .await
                        }
                    }
                }
                Ok(_) => {
                    proxy.index().metrics().storage_event("test");
                    message.ack().await
                }
                Err(error) => {
                    tracing::warn!(subject = %message.subject, %error, "storage notification dropped: not one fargo reads");
                    proxy.index().metrics().storage_event("refused");
                    message.ack_with(AckKind::Term).await
                }
            };
            if let Err(error) = done {
                tracing::warn!(error = %error_chain(&*error), "acknowledging a storage notification");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(events: &[&str], prefix: Option<&str>, suffix: Option<&str>) -> StorageTrigger {
        StorageTrigger {
            bucket: "photos".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            prefix: prefix.map(Into::into),
            suffix: suffix.map(Into::into),
        }
    }

    fn event(name: &str, key: &str) -> ObjectEvent {
        ObjectEvent {
            event_name: name.into(),
            bucket: "photos".into(),
            key: key.into(),
            ..Default::default()
        }
    }

    fn events(body: &str) -> Vec<ObjectEvent> {
        match parse(body.as_bytes()) {
            Ok(Notification::Events(events)) => events,
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn aws_records_have_form_encoded_keys_and_unprefixed_names() {
        let body = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"eu-west-1",
            "eventTime":"2026-11-29T10:00:00.000Z","eventName":"ObjectCreated:Put",
            "s3":{"s3SchemaVersion":"1.0","configurationId":"thumbs","bucket":{"name":"photos"},
            "object":{"key":"trips/%C3%A9t%C3%A9+2026/a%2Bb.jpg","size":1024,"eTag":"abc","sequencer":"0A1B"}}}]}"#;
        let read = events(body);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].key, "trips/été 2026/a+b.jpg");
        assert_eq!(read[0].event_name, "ObjectCreated:Put");
        assert_eq!(read[0].size, Some(1024));
        assert_eq!(read[0].region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn minio_records_lose_their_s3_prefix() {
        let body = r#"{"EventName":"s3:ObjectCreated:Put","Key":"photos/a b.png","Records":[{
            "eventVersion":"2.0","eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put",
            "s3":{"bucket":{"name":"photos"},"object":{"key":"a+b.png","size":"7","eTag":"e"}}}]}"#;
        let read = events(body);
        assert_eq!(read[0].event_name, "ObjectCreated:Put");
        assert_eq!(read[0].key, "a b.png");
        assert_eq!(read[0].size, Some(7));
    }

    #[test]
    fn versitygw_records_keep_their_keys_as_written() {
        let body = r#"{"Records":[{"eventVersion":"2.2","eventSource":"aws:s3","eventName":"s3:ObjectRemoved:DeleteObjects","userIdentity":{"PrincipalId":"gw-user"},
            "s3":{"configurationId":"webhook-global","bucket":{"name":"photos"},
            "object":{"key":"a+b 100%.jpg","size":0,"eTag":null,"sequencer":"17"}}}]}"#;
        let read = events(body);
        assert_eq!(read[0].key, "a+b 100%.jpg");
        assert_eq!(read[0].event_name, "ObjectRemoved:Delete");
        assert_eq!(read[0].principal.as_deref(), Some("gw-user"));
        assert_eq!(read[0].etag, None);
    }

    #[test]
    fn sns_envelopes_are_opened_and_confirmations_reported() {
        let inner = r#"{"Records":[{"eventName":"ObjectCreated:Copy","s3":{"bucket":{"name":"photos"},"object":{"key":"x.jpg"}}}]}"#;
        let body = json!({"Type": "Notification", "Message": inner}).to_string();
        assert_eq!(events(&body)[0].event_name, "ObjectCreated:Copy");
        let confirm = r#"{"Type":"SubscriptionConfirmation","TopicArn":"arn:aws:sns:us-east-1:1:t","SubscribeURL":"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"}"#;
        assert!(matches!(
            parse(confirm.as_bytes()),
            Ok(Notification::SubscriptionConfirmation { .. })
        ));
        let nested = json!({"Type": "Notification", "Message": body}).to_string();
        assert!(parse(nested.as_bytes()).is_err(), "one envelope, not two");
    }

    #[test]
    fn test_probes_are_recognised() {
        for probe in [
            r#"{"Service":"S3","Event":"s3:TestEvent","Time":"2026-11-29T10:00:00Z","Bucket":"Test-Bucket"}"#,
            r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"photos","RequestId":"x"}"#,
        ] {
            assert_eq!(parse(probe.as_bytes()), Ok(Notification::Test));
        }
    }

    #[test]
    fn eventbridge_object_events_are_read() {
        let body = r#"{"version":"0","detail-type":"Object Created","source":"aws.s3","time":"2021-11-12T00:00:00Z",
            "region":"ca-central-1","detail":{"bucket":{"name":"photos"},"object":{"key":"a b.jpg","size":5,
            "etag":"b19","sequencer":"617"},"reason":"CopyObject"}}"#;
        let read = events(body);
        assert_eq!(read[0].event_name, "ObjectCreated:Copy");
        assert_eq!(read[0].key, "a b.jpg");
        let other =
            r#"{"detail-type":"Object Storage Class Changed","source":"aws.s3","detail":{}}"#;
        assert_eq!(events(other), vec![]);
    }

    #[test]
    fn malformed_notifications_say_what_is_wrong() {
        assert!(matches!(
            parse(b"{not json"),
            Err(NotificationError::NotJson(_))
        ));
        assert!(matches!(parse(b"[1]"), Err(NotificationError::Shape(_))));
        assert!(matches!(
            parse(b"{\"hello\":1}"),
            Err(NotificationError::Shape(_))
        ));
        let no_bucket =
            r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"object":{"key":"a"}}}]}"#;
        let error = parse(no_bucket.as_bytes()).unwrap_err().to_string();
        assert!(
            error.contains("Records[0]") && error.contains("bucket"),
            "{error}"
        );
        let bad_utf8 = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%FF"}}}]}"#;
        assert!(parse(bad_utf8.as_bytes()).is_err());
    }

    #[test]
    fn triggers_take_event_families_prefixes_and_suffixes() {
        let created = trigger(&["ObjectCreated:*"], Some("uploads/"), Some(".jpg"));
        assert!(trigger_matches(
            &created,
            &event("ObjectCreated:Put", "uploads/a.jpg")
        ));
        assert!(trigger_matches(
            &created,
            &event("ObjectCreated:CompleteMultipartUpload", "uploads/b.jpg")
        ));
        assert!(!trigger_matches(
            &created,
            &event("ObjectRemoved:Delete", "uploads/a.jpg")
        ));
        assert!(!trigger_matches(
            &created,
            &event("ObjectCreated:Put", "other/a.jpg")
        ));
        assert!(!trigger_matches(
            &created,
            &event("ObjectCreated:Put", "uploads/a.png")
        ));
        let exact = trigger(&["s3:ObjectRemoved:Delete"], None, None);
        assert!(trigger_matches(&exact, &event("ObjectRemoved:Delete", "x")));
        assert!(!trigger_matches(
            &exact,
            &event("ObjectRemoved:DeleteMarkerCreated", "x")
        ));
        let mut elsewhere = event("ObjectCreated:Put", "uploads/a.jpg");
        elsewhere.bucket = "other".into();
        assert!(!trigger_matches(&created, &elsewhere));
    }

    #[test]
    fn lambda_events_carry_keys_encoded_as_aws_does() {
        assert_eq!(
            encode_key("trips/été 2026/a+b (1).jpg"),
            "trips/%C3%A9t%C3%A9+2026/a%2Bb+%281%29.jpg"
        );
        assert_eq!(
            decode_key(&encode_key("日本/x y+z%.png")).as_deref(),
            Some("日本/x y+z%.png")
        );
        let mut read = event("ObjectCreated:Put", "a b.jpg");
        read.size = Some(3);
        read.etag = Some("\"e1\"".into());
        let lambda = lambda_event(&read, "us-east-1");
        let record = &lambda["Records"][0];
        assert_eq!(record["eventSource"], "aws:s3");
        assert_eq!(record["eventVersion"], "2.1");
        assert_eq!(record["awsRegion"], "us-east-1");
        assert_eq!(record["s3"]["bucket"]["name"], "photos");
        assert_eq!(record["s3"]["object"]["key"], "a+b.jpg");
        assert_eq!(record["s3"]["object"]["size"], 3);
        assert_eq!(record["s3"]["object"]["eTag"], "e1");
    }

    #[test]
    fn the_same_event_gets_the_same_invocation_id_per_function() {
        let read = event("ObjectCreated:Put", "a.jpg");
        let id = invocation_id("media", "thumbs", &read);
        assert_eq!(id, invocation_id("media", "thumbs", &read));
        assert_ne!(id, invocation_id("media", "other", &read));
        assert_ne!(
            id,
            invocation_id("media", "thumbs", &event("ObjectCreated:Put", "b.jpg"))
        );
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn tokens_name_their_namespaces() {
        let data = BTreeMap::from([
            (
                "versitygw".to_string(),
                br#"{"token": "0123456789abcdef0123", "namespaces": ["photos", "media-*"]}"#
                    .to_vec(),
            ),
            (
                "short".to_string(),
                br#"{"token": "abc", "namespaces": ["x"]}"#.to_vec(),
            ),
            (
                "none".to_string(),
                br#"{"token": "0123456789abcdefXYZ", "namespaces": []}"#.to_vec(),
            ),
            ("junk".to_string(), b"token".to_vec()),
        ]);
        let (tokens, problems) = StorageTokens::parse(&data);
        assert_eq!(tokens.len(), 1);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().all(|p| !p.contains("0123456789abcdefXYZ")));
        let store = StorageTokens::default();
        store.set(tokens);
        let found = store
            .find("0123456789abcdef0123")
            .expect("the token is known");
        assert!(found.allows("photos") && found.allows("media-eu") && !found.allows("payments"));
        assert!(store.find("0123456789abcdef012").is_none());
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let bearer = Request::post("/_fargo/storage/events")
            .header(AUTHORIZATION, "Bearer s3cret")
            .body(())
            .unwrap();
        assert_eq!(presented_token(&bearer).as_deref(), Some("s3cret"));
        let query = Request::post("/_fargo/storage/events?x=1&token=a%2Bb")
            .body(())
            .unwrap();
        assert_eq!(presented_token(&query).as_deref(), Some("a+b"));
        let none = Request::post("/_fargo/storage/events").body(()).unwrap();
        assert_eq!(presented_token(&none), None);
    }
}
