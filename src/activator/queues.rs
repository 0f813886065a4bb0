//! Queue triggers: a function consumes a NATS JetStream stream in batches, as Lambda's event
//! source mappings consume SQS and Kinesis. Every activator reads each trigger's one durable
//! consumer (`fargo_<namespace>_<function>_<trigger>`), so JetStream shares the messages among
//! them; a batch is one invocation through the activator's one path ([`lambda_api::invoke`]),
//! so a backlog wakes the function from zero and counts in its concurrency.
//!
//! After the invocation, every message of the batch is acknowledged but those the function
//! names in `batchItemFailures` (Lambda's partial batch response) — or all of them when it
//! failed. A failed message comes back after `async.retryDelay`, doubling, up to
//! `async.maxRetries` retries; then its record goes to `async.onFailure` and it is
//! acknowledged. A batch that could not reach the function comes back with backoff and counts
//! no attempt.
//!
//! A stream is read only when its metadata `fargo.dev/namespaces` lists the function's
//! namespace: tenants name streams, and the stream's owner decides who may read it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream};
use base64::Engine;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http_body_util::{BodyExt, Limited};
use hyper::header::HeaderValue;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{self, EventQueue, Stored};
use super::function_state::FunctionState;
use super::lambda_api::{self, Ended, MAX_SYNC_PAYLOAD};
use super::proxy::Proxy;
use crate::api::function::{QueueTrigger, StartFrom};
use crate::profile::matching::wildcard_matches;
use crate::telemetry::error_chain;

/// The stream metadata naming the namespaces that may read a stream.
pub const NAMESPACES_METADATA: &str = "fargo.dev/namespaces";
const TRIGGER_TYPE: &str = "Queue";
/// Batches of one trigger one activator has in flight at once.
const BATCHES_IN_FLIGHT: usize = 4;
/// How often the backlog is counted.
const BACKLOG_INTERVAL: Duration = Duration::from_secs(3);
/// A batch's payload stays under the synchronous limit, with room for the envelope.
const MAX_BATCH_BYTES: usize = MAX_SYNC_PAYLOAD - 64 * 1024;
/// A consumer no activator read for this long is removed by NATS (a trigger or function that
/// is gone).
const CONSUMER_INACTIVE: Duration = Duration::from_secs(24 * 3600);

/// `spec.triggers.queues[]`, read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueSettings {
    pub name: String,
    pub stream: String,
    pub subject: Option<String>,
    pub batch_size: usize,
    pub window: Duration,
    pub start_from: StartFrom,
}

impl QueueSettings {
    pub fn of(trigger: &QueueTrigger) -> Self {
        Self {
            name: trigger.name.clone(),
            stream: trigger.stream.clone(),
            subject: trigger.subject.clone(),
            batch_size: usize::try_from(trigger.batch_size.clamp(1, 10_000)).unwrap_or(1),
            window: if trigger.max_batching_window.is_negative() {
                Duration::ZERO
            } else {
                Duration::from(trigger.max_batching_window).min(Duration::from_secs(300))
            },
            start_from: trigger.start_from,
        }
    }
}

/// The trigger's durable consumer: one token, no dots.
pub fn consumer_name(namespace: &str, function: &str, trigger: &str) -> String {
    format!("fargo_{namespace}_{}_{trigger}", function.replace('.', "_"))
}

/// Whether a stream's metadata lets `namespace` read it: `fargo.dev/namespaces` is a
/// comma-separated list of patterns (`*`, `?`).
pub fn stream_shared_with(metadata: &HashMap<String, String>, namespace: &str) -> bool {
    metadata.get(NAMESPACES_METADATA).is_some_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|pattern| !pattern.is_empty() && wildcard_matches(pattern, namespace))
    })
}

/// Lambda's batch item for one message.
fn record(stream: &str, message: &jetstream::Message) -> (String, Value) {
    let info = message.info().ok();
    let sequence = info.as_ref().map_or(0, |i| i.stream_sequence);
    let id = sequence.to_string();
    let timestamp = info
        .as_ref()
        .and_then(|i| jiff::Timestamp::from_nanosecond(i.published.unix_timestamp_nanos()).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default();
    let delivered = info.as_ref().map_or(1, |i| i.delivered);
    let record = json!({
        "messageId": id,
        "eventSource": "nats:jetstream",
        "eventSourceArn": format!("nats:jetstream:{stream}"),
        "subject": message.subject.as_str(),
        "body": String::from_utf8_lossy(&message.payload),
        "data": base64::engine::general_purpose::STANDARD.encode(&message.payload),
        "attributes": {
            "streamSequence": id,
            "timestamp": timestamp,
            "deliveryCount": delivered.to_string(),
        },
    });
    (id, record)
}

/// Which items of a batch failed, from the function's answer: `None` when all succeeded, the
/// ids otherwise. An answer that names an item not in the batch, or names one without an id,
/// fails the whole batch (as Lambda does).
pub fn failed_items(answer: &[u8], ids: &[String]) -> Option<Vec<String>> {
    let Ok(value) = serde_json::from_slice::<Value>(answer) else {
        return None;
    };
    let failures = value.get("batchItemFailures")?;
    let all = || Some(ids.to_vec());
    let Some(failures) = failures.as_array() else {
        return if failures.is_null() { None } else { all() };
    };
    if failures.is_empty() {
        return None;
    }
    let mut failed = vec![];
    for failure in failures {
        match failure.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if ids.iter().any(|known| known == id) => failed.push(id.to_string()),
            _ => return all(),
        }
    }
    Some(failed)
}

/// Keeps one consumer task per queue trigger of every function, until `stop`.
pub async fn consume(queue: Arc<EventQueue>, proxy: Arc<Proxy>, stop: CancellationToken) {
    let mut running: HashMap<(String, String, QueueSettings), CancellationToken> = HashMap::new();
    loop {
        let mut wanted = HashMap::new();
        for (namespace, name, function) in proxy.index().functions() {
            let queues = function.config().facts.queues.clone();
            function.keep_triggers(|type_, trigger| {
                type_ != TRIGGER_TYPE || queues.iter().any(|q| q.name == trigger)
            });
            for settings in queues {
                wanted.insert(
                    (namespace.clone(), name.clone(), settings),
                    function.clone(),
                );
            }
        }
        running.retain(|key, token| {
            let keep = wanted.contains_key(key);
            if !keep {
                token.cancel();
            }
            keep
        });
        for (key, function) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let token = stop.child_token();
            let settings = key.2.clone();
            running.insert(key, token.clone());
            tokio::spawn(consume_trigger(
                queue.clone(),
                proxy.clone(),
                function,
                settings,
                token,
            ));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Why a trigger's consumer could not be opened.
struct Problem(&'static str, String);

async fn open(
    queue: &EventQueue,
    function: &FunctionState,
    settings: &QueueSettings,
) -> Result<(stream::Stream, jetstream::consumer::Consumer<pull::Config>), Problem> {
    let mut stream = queue
        .jetstream()
        .get_stream(&settings.stream)
        .await
        .map_err(|error| {
            let text = error_chain(&error);
            if matches!(
                error.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(_)
            ) && text.contains("not found")
            {
                Problem(
                    "StreamNotFound",
                    format!("NATS has no stream {}", settings.stream),
                )
            } else {
                Problem("NatsUnavailable", text)
            }
        })?;
    let metadata = stream
        .info()
        .await
        .map_err(|error| Problem("NatsUnavailable", error_chain(&error)))?
        .config
        .metadata
        .clone();
    if !stream_shared_with(&metadata, function.namespace()) {
        return Err(Problem(
            "StreamNotShared",
            format!(
                "stream {} does not list namespace {} in its metadata {NAMESPACES_METADATA}",
                settings.stream,
                function.namespace()
            ),
        ));
    }
    let durable = consumer_name(function.namespace(), function.name(), &settings.name);
    let timeout = function.config().timeout;
    let config = pull::Config {
        durable_name: Some(durable.clone()),
        description: Some(format!(
            "fargo: queue trigger {} of function {}/{}",
            settings.name,
            function.namespace(),
            function.name()
        )),
        filter_subject: settings.subject.clone().unwrap_or_default(),
        deliver_policy: match settings.start_from {
            StartFrom::New => DeliverPolicy::New,
            StartFrom::All => DeliverPolicy::All,
        },
        ack_policy: AckPolicy::Explicit,
        // Held while the batch fills and the function wakes, then run.
        ack_wait: timeout * 2 + settings.window + Duration::from_secs(30),
        max_ack_pending: i64::try_from(settings.batch_size * (BATCHES_IN_FLIGHT + 1) * 2)
            .unwrap_or(i64::MAX)
            .max(1000),
        inactive_threshold: CONSUMER_INACTIVE,
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer(&durable, config)
        .await
        .map_err(|error| Problem("ConsumerFailed", error_chain(&error)))?;
    Ok((stream, consumer))
}

async fn consume_trigger(
    queue: Arc<EventQueue>,
    proxy: Arc<Proxy>,
    function: Arc<FunctionState>,
    settings: QueueSettings,
    stop: CancellationToken,
) {
    let batches = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = open(&queue, &function, &settings) => opened,
        };
        let (stream, consumer) = match opened {
            Ok(opened) => opened,
            Err(Problem(reason, message)) => {
                tracing::warn!(namespace = %function.namespace(), function = %function.name(), trigger = %settings.name, %reason, %message, "queue trigger cannot read its stream");
                function.set_trigger_state(
                    TRIGGER_TYPE,
                    &settings.name,
                    Some((reason, message)),
                    None,
                );
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            }
        };
        function.set_trigger_state(TRIGGER_TYPE, &settings.name, None, None);
        let backlog = stop.child_token();
        tokio::spawn(report_backlog(
            stream.clone(),
            consumer.cached_info().name.clone(),
            function.clone(),
            settings.name.clone(),
            backlog.clone(),
        ));
        let _backlog = backlog.drop_guard();
        let messages = consumer
            .stream()
            .max_messages_per_batch(settings.batch_size.min(1000))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(trigger = %settings.name, error = %error_chain(&error), "opening a queue trigger's messages");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut carried: Option<jetstream::Message> = None;
        'batches: loop {
            // The first message of a batch: wait for it.
            let first = match carried.take() {
                Some(message) => message,
                None => {
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        next = messages.next() => next,
                    };
                    match next {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => {
                            tracing::debug!(trigger = %settings.name, error = %error_chain(&error), "queue trigger consumer");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            break 'batches;
                        }
                        None => break 'batches,
                    }
                }
            };
            let mut bytes = first.payload.len();
            let mut batch = vec![first];
            let deadline = Instant::now() + settings.window;
            while batch.len() < settings.batch_size {
                let next = if settings.window.is_zero() {
                    // No window: what has already arrived, nothing more.
                    match messages.next().now_or_never() {
                        Some(next) => next,
                        None => break,
                    }
                } else {
                    match tokio::time::timeout_at(deadline, messages.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                };
                match next {
                    Some(Ok(message)) => {
                        if bytes + message.payload.len() * 2 > MAX_BATCH_BYTES {
                            carried = Some(message);
                            break;
                        }
                        bytes += message.payload.len() * 2;
                        batch.push(message);
                    }
                    _ => break,
                }
            }
            let Ok(place) = batches.clone().acquire_owned().await else {
                return;
            };
            let queue = queue.clone();
            let proxy = proxy.clone();
            let function = function.clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                deliver_batch(&queue, &proxy, &function, &settings, batch).await;
                drop(place);
            });
        }
    }
}

async fn deliver_batch(
    queue: &EventQueue,
    proxy: &Proxy,
    function: &Arc<FunctionState>,
    settings: &QueueSettings,
    batch: Vec<jetstream::Message>,
) {
    function.trigger_events(TRIGGER_TYPE, &settings.name, batch.len() as u64);
    let (ids, records): (Vec<String>, Vec<Value>) =
        batch.iter().map(|m| record(&settings.stream, m)).unzip();
    let payload = Bytes::from(json!({"Records": records}).to_string());
    let client_ip = HeaderValue::from_static("127.0.0.1");
    let response = lambda_api::invoke(
        proxy,
        function,
        payload.clone(),
        false,
        &client_ip,
        Instant::now(),
    )
    .await;
    let (ended, _) = lambda_api::ended(function, &response);
    let asynchronous = function.config().facts.asynchronous.clone();
    if ended == Ended::NotRun {
        tracing::debug!(function = %function.name(), trigger = %settings.name, status = %response.status(), "batch not delivered; it comes back");
        for message in &batch {
            let delivered = message.info().map_or(1, |i| i.delivered);
            let _ = message
                .ack_with(AckKind::Nak(Some(events::reach_backoff(delivered))))
                .await;
        }
        function.metrics().event("not_delivered");
        return;
    }
    let body = Limited::new(response.into_body(), MAX_SYNC_PAYLOAD)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let failed: Vec<String> = match ended {
        Ended::FunctionError => ids.clone(),
        _ => failed_items(&body, &ids).unwrap_or_default(),
    };
    if failed.is_empty() {
        function.metrics().event("success");
    }
    if ended == Ended::Success && asynchronous.on_success.is_some() {
        let stored = Stored::new(crate::api::lambda::request_id(), 1);
        let record = events::record(
            proxy,
            function,
            &stored,
            "Success",
            &payload,
            Some(events::Answer {
                function_error: false,
                body: &body,
            }),
        );
        events::send_record(queue, function, asynchronous.on_success.as_ref(), record).await;
    }
    for (message, (id, item)) in batch.iter().zip(ids.iter().zip(&records)) {
        let outcome = if !failed.contains(id) {
            message.ack().await
        } else {
            // Deliveries count the attempts; the first is not a retry.
            let delivered = message.info().map_or(1, |i| i.delivered);
            let retries = u32::try_from(delivered.saturating_sub(1)).unwrap_or(u32::MAX);
            if retries < asynchronous.max_retries {
                function.metrics().event("retried");
                let wait = events::retry_delay(&asynchronous, retries + 1);
                message.ack_with(AckKind::Nak(Some(wait))).await
            } else {
                function.metrics().event("retries_exhausted");
                let stored = Stored::new(format!("{}-{id}", settings.name), retries + 1);
                let item = Bytes::from(json!({"Records": [item]}).to_string());
                let record = events::record(
                    proxy,
                    function,
                    &stored,
                    "RetriesExhausted",
                    &item,
                    Some(events::Answer {
                        function_error: ended == Ended::FunctionError,
                        body: &body,
                    }),
                );
                events::send_record(queue, function, asynchronous.on_failure.as_ref(), record)
                    .await;
                message.ack_with(AckKind::Term).await
            }
        };
        if let Err(error) = outcome {
            tracing::warn!(function = %function.name(), trigger = %settings.name, error = %error_chain(&*error), "acknowledging a queue message; it comes back");
        }
    }
}

/// Keeps the trigger's backlog (messages not yet delivered, and being delivered) up to date.
async fn report_backlog(
    stream: stream::Stream,
    consumer: String,
    function: Arc<FunctionState>,
    trigger: String,
    stop: CancellationToken,
) {
    loop {
        if let Ok(found) = stream.get_consumer::<pull::Config>(&consumer).await {
            let info = found.cached_info();
            let pending = info.num_pending + info.num_ack_pending as u64;
            function.set_trigger_state(TRIGGER_TYPE, &trigger, None, Some(pending));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(BACKLOG_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn partial_batch_answers_name_the_failed_items() {
        let batch = ids(&["1", "2", "3"]);
        assert_eq!(failed_items(b"null", &batch), None);
        assert_eq!(failed_items(b"{\"ok\":true}", &batch), None);
        assert_eq!(failed_items(br#"{"batchItemFailures":[]}"#, &batch), None);
        assert_eq!(failed_items(br#"{"batchItemFailures":null}"#, &batch), None);
        assert_eq!(
            failed_items(br#"{"batchItemFailures":[{"itemIdentifier":"2"}]}"#, &batch),
            Some(ids(&["2"]))
        );
        // An id not in the batch, or none, fails the whole batch.
        assert_eq!(
            failed_items(br#"{"batchItemFailures":[{"itemIdentifier":"9"}]}"#, &batch),
            Some(batch.clone())
        );
        assert_eq!(
            failed_items(br#"{"batchItemFailures":[{"itemIdentifier":""}]}"#, &batch),
            Some(batch.clone())
        );
        assert_eq!(
            failed_items(br#"{"batchItemFailures":"2"}"#, &batch),
            Some(batch.clone())
        );
        assert_eq!(failed_items(b"not json", &batch), None);
    }

    #[test]
    fn streams_are_read_only_by_the_namespaces_their_metadata_lists() {
        let metadata =
            HashMap::from([(NAMESPACES_METADATA.to_string(), "iot, media-*".to_string())]);
        assert!(stream_shared_with(&metadata, "iot"));
        assert!(stream_shared_with(&metadata, "media-eu"));
        assert!(!stream_shared_with(&metadata, "payments"));
        assert!(!stream_shared_with(&HashMap::new(), "iot"));
        let empty = HashMap::from([(NAMESPACES_METADATA.to_string(), " , ".to_string())]);
        assert!(!stream_shared_with(&empty, "iot"));
    }

    #[test]
    fn consumer_names_are_one_token() {
        assert_eq!(
            consumer_name("iot", "agg.v2", "readings"),
            "fargo_iot_agg_v2_readings"
        );
    }
}
