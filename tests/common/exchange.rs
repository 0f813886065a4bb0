//! Recorded API exchanges: the tier between pure unit tests and the cluster.
//!
//! A scenario runs a reconciler (or the autoscaler's writes) once against the real API server
//! of the local cluster through a client that records every request and answer
//! (`tests/exchanges_record.rs`); the recording is kept in `tests/exchanges/<scenario>.json`
//! together with the scenario's inputs and outcome. Without a cluster, the same scenario runs
//! against the recording (`tests/exchanges.rs`): each request the code makes must be the one
//! recorded, and gets the answer the API server gave. Every answer was the API server's own;
//! the cluster tier fails when the code's requests no longer match the recording, so it cannot
//! go stale silently.
//!
//! Names that differ from run to run (the temporary namespace, a cluster-scoped profile) are
//! replaced by fixed ones, and fields the API server or the clock fill in (uids, resource
//! versions, timestamps, generated Event names) are masked before requests are compared.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use kube::Client;
use kube::client::{Body, ClientBuilder, DynBody};
use serde::{Deserialize, Serialize};
use serde_json::Value;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The namespace every recorded scenario runs in, as the recording names it.
pub const RECORDED_NAMESPACE: &str = "recorded";
/// Set to 1 to write the recordings anew instead of comparing with them.
pub const RECORD_ENV: &str = "FARGO_RECORD_EXCHANGES";
/// Written in place of a value that differs from run to run.
const MASKED: &str = "<masked>";
/// Fields the API server or the clock fill in.
const VOLATILE_FIELDS: [&str; 9] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "lastTransitionTime",
    "eventTime",
    "lastObservedTime",
    "deprecatedFirstTimestamp",
    "deprecatedLastTimestamp",
    "managedFields",
];

/// One request and the API server's answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Exchange {
    pub method: String,
    /// Path and query.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    pub status: u16,
    pub response: Value,
}

impl Exchange {
    /// What is compared of a request: method, path and the body with volatile fields masked.
    pub fn request_key(&self) -> (String, String, Option<Value>) {
        let mut body = self.request.clone();
        if let Some(body) = body.as_mut() {
            mask(body, self.path.contains("/events"));
        }
        (self.method.clone(), self.path.clone(), body)
    }
}

/// A scenario's recording: what it started from, what the API server said, and how it ended.
#[derive(Debug, Serialize, Deserialize)]
pub struct Fixture<I> {
    pub inputs: I,
    /// Whether the scenario's requests come one after another (a reconcile), or concurrently
    /// (the autoscaler's writes), in which case their order is not compared.
    pub ordered: bool,
    pub exchanges: Vec<Exchange>,
    /// The scenario's result, as text.
    pub outcome: String,
}

/// Where scenario `name` is recorded.
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/exchanges")
        .join(format!("{name}.json"))
}

pub fn load<I: serde::de::DeserializeOwned>(name: &str) -> Fixture<I> {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

pub fn save<I: Serialize>(name: &str, fixture: &Fixture<I>) {
    let path = fixture_path(name);
    let mut text = serde_json::to_string_pretty(fixture).expect("a fixture serializes");
    text.push('\n');
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Replaces run-specific names (`(actual, recorded)` pairs) in any serializable value.
pub fn rename<T: Serialize + serde::de::DeserializeOwned>(value: &T, names: &[(&str, &str)]) -> T {
    let mut text = serde_json::to_string(value).expect("serializes");
    for (actual, recorded) in names {
        text = text.replace(actual, recorded);
    }
    serde_json::from_str(&text).expect("deserializes after renaming")
}

fn mask(value: &mut Value, is_event: bool) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if VOLATILE_FIELDS.contains(&key.as_str()) {
                    *field = Value::String(MASKED.into());
                } else {
                    mask(field, is_event);
                }
            }
            // An Event's name is its object's name and a generated suffix.
            if is_event
                && let Some(Value::Object(metadata)) = map.get_mut("metadata")
                && metadata.contains_key("name")
            {
                metadata.insert("name".into(), Value::String(MASKED.into()));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| mask(item, is_event)),
        _ => {}
    }
}

fn body_json(bytes: &[u8]) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    Some(
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
    )
}

/// Exchanges recorded so far.
#[derive(Clone, Default)]
pub struct Recording(Arc<Mutex<Vec<Exchange>>>);

impl Recording {
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.0.lock().expect("recording lock").clone()
    }

    /// Waits until `count` exchanges are in (background writes finish after the scenario
    /// returns), or, with no count to wait for, until none came for a second.
    pub async fn settle(&self, count: Option<usize>) {
        let mut last = usize::MAX;
        for _ in 0..50 {
            let now = self.0.lock().expect("recording lock").len();
            match count {
                Some(count) if now >= count => return,
                None if now == last => return,
                _ => {}
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A client for the cluster in `KUBECONFIG` that records every exchange.
pub async fn recording_client() -> (Client, Recording) {
    let config = kube::Config::infer().await.expect("a kubeconfig");
    let recording = Recording::default();
    let layer = tower::layer::layer_fn({
        let recording = recording.clone();
        move |inner| Recorder {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            recording: recording.clone(),
        }
    });
    let client = ClientBuilder::try_from(config)
        .expect("a client stack")
        .with_layer(&layer)
        .build();
    (client, recording)
}

/// Passes each call on to the real client stack (which is not `Clone`, hence the lock, held
/// only while a call is handed over) and records it.
struct Recorder<S> {
    inner: Arc<tokio::sync::Mutex<S>>,
    recording: Recording,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send>>;

impl<S> tower::Service<Request<Body>> for Recorder<S>
where
    S: tower::Service<Request<Body>, Response = Response<Box<DynBody>>, Error = BoxError>
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the inner stack is awaited in `call`, under the lock.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        use tower::ServiceExt;
        let inner = self.inner.clone();
        let recording = self.recording.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let sent = body.collect().await?.to_bytes();
            let method = parts.method.to_string();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let pending = {
                let mut inner = inner.lock().await;
                inner
                    .ready()
                    .await?
                    .call(Request::from_parts(parts, Body::from(sent.clone())))
            };
            let response = pending.await?;
            let (parts, body) = response.into_parts();
            let answer = body.collect().await?.to_bytes();
            recording.0.lock().expect("recording lock").push(Exchange {
                method,
                path,
                request: body_json(&sent),
                status: parts.status.as_u16(),
                response: body_json(&answer).unwrap_or(Value::Null),
            });
            Ok(Response::from_parts(parts, Full::new(answer)))
        })
    }
}

/// What a replay found wrong.
#[derive(Default)]
struct ReplayState {
    remaining: VecDeque<Exchange>,
    unexpected: Vec<String>,
}

/// A client that answers from a recording.
#[derive(Clone)]
pub struct Replay {
    state: Arc<Mutex<ReplayState>>,
}

impl Replay {
    /// Asserts that the code made every recorded request and nothing else; waits up to five
    /// seconds for requests still being made in the background.
    pub async fn finish(&self) {
        for _ in 0..50 {
            if self.state.lock().expect("replay lock").remaining.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let state = self.state.lock().expect("replay lock");
        assert!(
            state.unexpected.is_empty(),
            "requests that differ from the recording:\n{}",
            state.unexpected.join("\n")
        );
        let missing: Vec<String> = state
            .remaining
            .iter()
            .map(|e| format!("{} {}", e.method, e.path))
            .collect();
        assert!(
            missing.is_empty(),
            "recorded requests the code did not make:\n{}",
            missing.join("\n")
        );
    }
}

/// A client answering from `exchanges`: each request must equal (after masking) the next
/// recorded one (`ordered`) or any recorded one not yet used, and gets its recorded answer.
pub fn replaying_client(exchanges: Vec<Exchange>, ordered: bool) -> (Client, Replay) {
    let replay = Replay {
        state: Arc::new(Mutex::new(ReplayState {
            remaining: exchanges.into(),
            unexpected: vec![],
        })),
    };
    let state = replay.state.clone();
    let service = tower::service_fn(move |request: Request<Body>| {
        let state = state.clone();
        async move {
            let (parts, body) = request.into_parts();
            let sent = body.collect().await?.to_bytes();
            let made = Exchange {
                method: parts.method.to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                request: body_json(&sent),
                status: 0,
                response: Value::Null,
            };
            let key = made.request_key();
            let mut state = state.lock().expect("replay lock");
            let position = if ordered {
                state
                    .remaining
                    .front()
                    .filter(|next| next.request_key() == key)
                    .map(|_| 0)
            } else {
                state.remaining.iter().position(|e| e.request_key() == key)
            };
            let answer = match position.and_then(|i| state.remaining.remove(i)) {
                Some(recorded) => recorded,
                None => {
                    let expected = state
                        .remaining
                        .front()
                        .map(|e| serde_json::to_string_pretty(&e.request_key()).unwrap_or_default())
                        .unwrap_or_else(|| "nothing more".into());
                    state.unexpected.push(format!(
                        "made:\n{}\nexpected next:\n{expected}",
                        serde_json::to_string_pretty(&key).unwrap_or_default()
                    ));
                    Exchange {
                        status: 500,
                        response: serde_json::json!({
                            "kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "message": "not in the recording", "reason": "InternalError", "code": 500
                        }),
                        ..made
                    }
                }
            };
            let body = serde_json::to_vec(&answer.response)?;
            Ok::<_, BoxError>(
                Response::builder()
                    .status(answer.status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))?,
            )
        }
    });
    // As a kubeconfig without a namespace: Events of cluster-scoped objects go to `default`.
    (Client::new(service, "default"), replay)
}
