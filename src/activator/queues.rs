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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream};
use base64::Engine;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http_body_util::{BodyExt, Limited};
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

/// The trigger's durable consumer: one token, no dots; names too long for NATS (function names
/// take up to 253 characters) end in a hash of the whole.
pub fn consumer_name(namespace: &str, function: &str, trigger: &str) -> String {
    let name = format!("fargo_{namespace}_{}_{trigger}", function.replace('.', "_"));
    if name.len() <= MAX_CONSUMER_NAME {
        return name;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}_{hash}", &name[..MAX_CONSUMER_NAME - 17])
}

/// Longest consumer name fargo makes (NATS takes up to 255 bytes, a file name on its disk).
const MAX_CONSUMER_NAME: usize = 200;

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
/// fails the whole batch (as Lambda does). An answer that is not JSON is a success.
pub fn failed_items(answer: &[u8], ids: &[String]) -> Option<HashSet<String>> {
    let Ok(value) = serde_json::from_slice::<Value>(answer) else {
        return None;
    };
    let failures = value.get("batchItemFailures")?;
    let all = || Some(ids.iter().cloned().collect());
    let Some(failures) = failures.as_array() else {
        return if failures.is_null() { None } else { all() };
    };
    if failures.is_empty() {
        return None;
    }
    let known: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut failed = HashSet::new();
    for failure in failures {
        match failure.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if known.contains(id) => {
                failed.insert(id.to_string());
            }
            _ => return all(),
        }
    }
    Some(failed)
}

/// Keeps one consumer task per queue trigger of every function, until `stop`.
pub async fn consume(queue: Arc<EventQueue>, proxy: Arc<Proxy>, stop: CancellationToken) {
    // By function state too: a function deleted and made again has a new one.
    type Key = (String, String, usize, QueueSettings);
    let mut running: HashMap<Key, CancellationToken> = HashMap::new();
    loop {
        let mut wanted = HashMap::new();
        for (namespace, name, function) in proxy.index().functions() {
            let facts = function.config().facts;
            function.keep_triggers(|type_, trigger| match type_ {
                TRIGGER_TYPE => facts.queues.iter().any(|q| q.name == trigger),
                _ => facts.storage.iter().any(|s| s.bucket == trigger),
            });
            super::storage::report_trigger_states(&proxy, &function, &facts.storage);
            let state = Arc::as_ptr(&function) as usize;
            for settings in facts.queues.iter().cloned() {
                wanted.insert(
                    (namespace.clone(), name.clone(), state, settings),
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
            let settings = key.3.clone();
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
    // Made, or brought up to date with the trigger (a subject, batch size or timeout that
    // changed); NATS refuses to change where a consumer starts, and says so.
    let consumer = stream.create_consumer(config).await.map_err(|error| {
        Problem(
            "ConsumerFailed",
            format!("consumer {durable}: {}", error_chain(&error)),
        )
    })?;
    Ok((stream, consumer))
}

/// One message of a batch, with its Lambda record.
struct Item {
    message: jetstream::Message,
    id: String,
    record: Value,
    /// The record's serialized size.
    size: usize,
}

impl Item {
    fn of(stream: &str, message: jetstream::Message) -> Self {
        let (id, record) = record(stream, &message);
        let size = record.to_string().len() + 1;
        Self {
            message,
            id,
            record,
            size,
        }
    }
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
        // Ends when the stream stops sharing itself with the namespace, or at `stop`.
        let session = stop.child_token();
        tokio::spawn(watch_stream(
            stream.clone(),
            consumer.cached_info().name.clone(),
            function.clone(),
            settings.clone(),
            session.clone(),
        ));
        let messages = consumer
            .stream()
            .max_messages_per_batch(settings.batch_size.min(1000))
            .max_bytes_per_batch(MAX_BATCH_BYTES)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                session.cancel();
                tracing::warn!(trigger = %settings.name, error = %error_chain(&error), "opening a queue trigger's messages");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut carried: Option<Item> = None;
        'batches: loop {
            // A place first: messages are not taken from the stream while none is free.
            let place = tokio::select! {
                () = session.cancelled() => break 'batches,
                place = batches.clone().acquire_owned() => match place {
                    Ok(place) => place,
                    Err(_) => break 'batches,
                },
            };
            let first = match carried.take() {
                Some(item) => item,
                None => {
                    let next = tokio::select! {
                        () = session.cancelled() => break 'batches,
                        next = messages.next() => next,
                    };
                    match next {
                        Some(Ok(message)) => Item::of(&settings.stream, message),
                        Some(Err(error)) => {
                            tracing::debug!(trigger = %settings.name, error = %error_chain(&error), "queue trigger consumer");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            break 'batches;
                        }
                        None => break 'batches,
                    }
                }
            };
            let mut bytes = first.size;
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
                    tokio::select! {
                        () = session.cancelled() => break,
                        next = tokio::time::timeout_at(deadline, messages.next()) => match next {
                            Ok(next) => next,
                            Err(_) => break,
                        },
                    }
                };
                let Some(Ok(message)) = next else {
                    break;
                };
                let item = Item::of(&settings.stream, message);
                if bytes + item.size > MAX_BATCH_BYTES {
                    carried = Some(item);
                    break;
                }
                bytes += item.size;
                batch.push(item);
            }
            let queue = queue.clone();
            let proxy = proxy.clone();
            let function = function.clone();
            let settings = settings.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                deliver_batch(&queue, &proxy, &function, &settings, batch, &stop).await;
                drop(place);
            });
        }
        // Back to the stream at once, for whoever reads it next.
        if let Some(item) = carried {
            let _ = item.message.ack_with(AckKind::Nak(None)).await;
        }
        session.cancel();
        if stop.is_cancelled() {
            return;
        }
    }
}

/// Wait between attempts of a batch that could not reach its function: 1s, doubling, at most
/// 30s.
fn unreached_backoff(tries: u32) -> Duration {
    Duration::from_secs(1u64 << tries.min(5)).min(Duration::from_secs(30))
}

/// When the message was stored, in Unix milliseconds.
fn published_ms(message: &jetstream::Message) -> i64 {
    message
        .info()
        .ok()
        .and_then(|i| i64::try_from(i.published.unix_timestamp_nanos() / 1_000_000).ok())
        .unwrap_or_else(|| jiff::Timestamp::now().as_millisecond())
}

async fn deliver_batch(
    queue: &EventQueue,
    proxy: &Proxy,
    function: &Arc<FunctionState>,
    settings: &QueueSettings,
    batch: Vec<Item>,
    stop: &CancellationToken,
) {
    function.trigger_events(TRIGGER_TYPE, &settings.name, batch.len() as u64);
    let asynchronous = function.config().facts.asynchronous.clone();
    let ending = Ending {
        queue,
        proxy,
        function,
        settings,
        asynchronous: &asynchronous,
    };
    // A message too large for any batch goes to onFailure alone.
    let (batch, oversized): (Vec<Item>, Vec<Item>) = batch
        .into_iter()
        .partition(|item| item.size <= MAX_BATCH_BYTES);
    for item in oversized {
        ending.give_up(&item, "RecordTooLarge", None).await;
    }
    if batch.is_empty() {
        return;
    }
    let records: Vec<&Value> = batch.iter().map(|item| &item.record).collect();
    let payload = Bytes::from(json!({"Records": records}).to_string());
    let oldest_ms = batch
        .iter()
        .map(|item| published_ms(&item.message))
        .min()
        .unwrap_or(0);
    let max_age_ms = i64::try_from(asynchronous.max_event_age.as_millis()).unwrap_or(i64::MAX);
    // Attempts that could not reach the function are retried here, the messages kept ours
    // (progress acknowledged): JetStream's delivery count stays the count of real attempts.
    let mut unreached = 0;
    let (ended, response) = loop {
        let (ended, response) =
            lambda_api::invoke_from_fargo(proxy, function, payload.clone()).await;
        if ended != Ended::NotRun {
            break (ended, response);
        }
        function.metrics().event("not_delivered");
        tracing::debug!(function = %function.name(), trigger = %settings.name, status = %response.status(), "batch not delivered; trying again");
        if jiff::Timestamp::now().as_millisecond() - oldest_ms > max_age_ms {
            for item in &batch {
                ending.give_up(item, "EventAgeExceeded", None).await;
            }
            return;
        }
        let wait = unreached_backoff(unreached);
        unreached += 1;
        for item in &batch {
            let _ = item.message.ack_with(AckKind::Progress).await;
        }
        tokio::select! {
            () = stop.cancelled() => {
                for item in &batch {
                    let _ = item.message.ack_with(AckKind::Nak(None)).await;
                }
                return;
            }
            () = tokio::time::sleep(wait) => {}
        }
    };
    // An answer over the limit is no answer: the whole batch failed.
    let body = Limited::new(response.into_body(), MAX_SYNC_PAYLOAD)
        .collect()
        .await
        .map(|c| c.to_bytes());
    let ids: Vec<String> = batch.iter().map(|item| item.id.clone()).collect();
    let failed: HashSet<String> = match (&ended, &body) {
        (Ended::Success, Ok(body)) => failed_items(body, &ids).unwrap_or_default(),
        _ => ids.iter().cloned().collect(),
    };
    let body = body.unwrap_or_default();
    if failed.is_empty() {
        function.metrics().event("success");
    }
    // Successes acknowledged and retries sent back first; records after.
    let mut exhausted = vec![];
    for item in &batch {
        let outcome = if !failed.contains(&item.id) {
            item.message.ack().await
        } else {
            // Deliveries count the attempts; the first is not a retry.
            let delivered = item.message.info().map_or(1, |i| i.delivered);
            let retries = u32::try_from(delivered.saturating_sub(1)).unwrap_or(u32::MAX);
            if retries < asynchronous.max_retries {
                function.metrics().event("retried");
                let wait = events::retry_delay(&asynchronous, retries + 1);
                item.message.ack_with(AckKind::Nak(Some(wait))).await
            } else {
                exhausted.push(item);
                ending.end(item).await;
                Ok(())
            }
        };
        if let Err(error) = outcome {
            tracing::warn!(function = %function.name(), trigger = %settings.name, error = %error_chain(&*error), "acknowledging a queue message; it comes back");
        }
    }
    // Records last: a slow destination must not hold the acknowledgements.
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
    let answer = events::Answer {
        function_error: ended == Ended::FunctionError,
        body: if body.len() <= MAX_RECORD_ANSWER {
            &body
        } else {
            b""
        },
    };
    for item in exhausted {
        ending.record(item, "RetriesExhausted", Some(&answer)).await;
    }
}

/// A function's answer larger than this is left out of the records of failed messages.
const MAX_RECORD_ANSWER: usize = 256 * 1024;

/// Where a batch's messages go when they are given up.
struct Ending<'a> {
    queue: &'a EventQueue,
    proxy: &'a Proxy,
    function: &'a Arc<FunctionState>,
    settings: &'a QueueSettings,
    asynchronous: &'a lambda_api::AsyncSettings,
}

impl Ending<'_> {
    /// Ends a message: acknowledged for good, its record to `onFailure` (best effort, as every
    /// destination).
    async fn give_up(&self, item: &Item, condition: &str, answer: Option<&events::Answer<'_>>) {
        self.end(item).await;
        self.record(item, condition, answer).await;
    }

    /// Acknowledges a message for good: JetStream never delivers it again.
    async fn end(&self, item: &Item) {
        if let Err(error) = item.message.ack_with(AckKind::Term).await {
            tracing::warn!(function = %self.function.name(), trigger = %self.settings.name, error = %error_chain(&*error), "ending a queue message");
        }
    }

    /// Counts an ended message and sends its record to `onFailure`.
    async fn record(&self, item: &Item, condition: &str, answer: Option<&events::Answer<'_>>) {
        let Self {
            queue,
            proxy,
            function,
            settings,
            asynchronous,
        } = self;
        function.metrics().event(match condition {
            "EventAgeExceeded" => "event_age_exceeded",
            _ => "retries_exhausted",
        });
        let attempts = item.message.info().map_or(1, |i| i.delivered);
        let stored = Stored::new(
            format!("{}-{}", settings.name, item.id),
            u32::try_from(attempts).unwrap_or(u32::MAX),
        );
        let payload = Bytes::from(json!({"Records": [item.record]}).to_string());
        let answer = answer.map(|a| events::Answer {
            function_error: a.function_error,
            body: a.body,
        });
        let record = events::record(proxy, function, &stored, condition, &payload, answer);
        events::send_record(queue, function, asynchronous.on_failure.as_ref(), record).await;
    }
}

/// Keeps the trigger's backlog (messages not yet delivered, and being delivered) up to date,
/// and checks that the stream still shares itself with the function's namespace: when it no
/// longer does, `session` ends and the trigger stops reading.
async fn watch_stream(
    mut stream: stream::Stream,
    consumer: String,
    function: Arc<FunctionState>,
    settings: QueueSettings,
    session: CancellationToken,
) {
    loop {
        if let Ok(info) = stream.info().await
            && !stream_shared_with(&info.config.metadata, function.namespace())
        {
            tracing::warn!(namespace = %function.namespace(), function = %function.name(), stream = %settings.stream, "the stream no longer shares itself with the namespace: the trigger stops reading");
            session.cancel();
            return;
        }
        let pending = match stream.get_consumer::<pull::Config>(&consumer).await {
            Ok(found) => {
                let info = found.cached_info();
                Some(info.num_pending + info.num_ack_pending as u64)
            }
            Err(_) => None,
        };
        function.set_trigger_state(TRIGGER_TYPE, &settings.name, None, pending);
        // Each batch in flight is one request's worth of load, as many as can run.
        let batch = settings.batch_size as u64;
        function.set_trigger_demand(
            TRIGGER_TYPE,
            &settings.name,
            pending.map_or(0, |p| p.div_ceil(batch).min(BATCHES_IN_FLIGHT as u64 * 2)),
        );
        tokio::select! {
            () = session.cancelled() => return,
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

    fn set(list: &[&str]) -> Option<HashSet<String>> {
        Some(list.iter().map(|s| s.to_string()).collect())
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
            set(&["2"])
        );
        // An id not in the batch, or none, fails the whole batch.
        assert_eq!(
            failed_items(br#"{"batchItemFailures":[{"itemIdentifier":"9"}]}"#, &batch),
            set(&["1", "2", "3"])
        );
        assert_eq!(
            failed_items(br#"{"batchItemFailures":[{"itemIdentifier":""}]}"#, &batch),
            set(&["1", "2", "3"])
        );
        assert_eq!(
            failed_items(br#"{"batchItemFailures":"2"}"#, &batch),
            set(&["1", "2", "3"])
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
        let long = consumer_name(&"n".repeat(63), &"f".repeat(253), &"t".repeat(63));
        assert_eq!(long.len(), MAX_CONSUMER_NAME);
        assert_ne!(
            long,
            consumer_name(&"n".repeat(63), &"f".repeat(253), &"u".repeat(63))
        );
    }

    #[test]
    fn unreached_batches_wait_longer_each_time() {
        assert_eq!(unreached_backoff(0), Duration::from_secs(1));
        assert_eq!(unreached_backoff(3), Duration::from_secs(8));
        assert_eq!(unreached_backoff(40), Duration::from_secs(30));
    }
}
