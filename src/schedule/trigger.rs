//! The loop that fires schedules: every second it finds the functions with a tick due, claims
//! the ticks in the function's state annotation (a merge patch guarded by resourceVersion),
//! and only then sends each tick's request through the activator.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Fire, ScheduleState, next_due, plan};
use crate::api::function::Schedule;
use crate::api::function_url;
use crate::api::{
    SCHEDULE_HEADER, SCHEDULE_MANAGER, SCHEDULE_STATE_ANNOTATION, ServerlessFunction,
};
use crate::caches::{FunctionStore, live};
use crate::http_client::{HttpClient, http_client};
use crate::reconcile::{EventPublisher, Note};

/// Schedules are minute-grained; a second keeps a tick's delay under a second.
const TICK: Duration = Duration::from_secs(1);
/// After a claim, the cache is given this long to show it before the function is looked at
/// again.
const CLAIM_SETTLE: Duration = Duration::from_secs(2);
/// Attempts at a claim when someone else changes the function in between.
const CLAIM_ATTEMPTS: usize = 3;
/// Functions claimed at once within a tick.
const CLAIM_CONCURRENCY: usize = 16;
/// Attempts at sending a tick when the activator cannot be reached at all (nothing was sent).
const SEND_ATTEMPTS: usize = 3;
/// Time allowed on top of the function's timeout for the activator to answer.
const SEND_MARGIN: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The schedule trigger's metrics.
pub struct ScheduleMetrics {
    fires: Family<OutcomeLabels, Counter>,
}

impl ScheduleMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let fires = Family::default();
        registry.register(
            "schedule_fires",
            "Schedule ticks sent to functions, by outcome (ok, failed)",
            fires.clone(),
        );
        Arc::new(Self { fires })
    }
}

/// What the trigger reads and writes.
pub struct Context {
    pub client: Client,
    pub events: EventPublisher,
    pub metrics: Arc<ScheduleMetrics>,
    pub functions: FunctionStore,
    /// Base URL of the activator.
    pub activator_url: String,
}

/// The next instant a cached function needs a look, valid while its schedules and state are
/// what they were when it was computed.
struct Due {
    uid: String,
    schedules: Vec<Schedule>,
    annotation: Option<String>,
    at: Option<Timestamp>,
    not_before: Option<tokio::time::Instant>,
}

type Key = (String, String);

/// Runs the schedule trigger until `shutdown` is cancelled.
pub async fn run(ctx: Context, shutdown: CancellationToken) {
    tracing::info!("schedule trigger running");
    let ctx = Arc::new(ctx);
    let http = http_client();
    let mut due: HashMap<Key, Due> = HashMap::new();
    let mut interval = crate::telemetry::ticker(TICK);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let now = Timestamp::now();
        let instant = tokio::time::Instant::now();
        let mut seen = HashSet::new();
        let mut claims = vec![];
        for guard in ctx.functions.state() {
            let Some(function) = live(&guard) else {
                continue;
            };
            let schedules = &function.spec.triggers.schedules;
            let annotation = function.annotations().get(SCHEDULE_STATE_ANNOTATION);
            if schedules.is_empty() && annotation.is_none() {
                continue;
            }
            let key = (
                function.namespace().unwrap_or_default(),
                function.name_any(),
            );
            seen.insert(key.clone());
            let uid = function.uid().unwrap_or_default();
            let entry = due.entry(key.clone()).or_insert_with(|| Due {
                uid: String::new(),
                schedules: vec![],
                annotation: None,
                at: None,
                not_before: None,
            });
            if entry.uid != uid
                || entry.schedules != *schedules
                || entry.annotation.as_ref() != annotation
            {
                let recorded = ScheduleState::from_annotation(annotation.map(String::as_str));
                *entry = Due {
                    uid,
                    schedules: schedules.clone(),
                    annotation: annotation.cloned(),
                    at: next_due(schedules, &recorded, now),
                    not_before: None,
                };
            }
            let waiting = entry.not_before.is_some_and(|t| instant < t);
            if entry.at.is_some_and(|at| at <= now) && !waiting {
                entry.not_before = Some(instant + CLAIM_SETTLE);
                claims.push(key);
            }
        }
        due.retain(|key, _| seen.contains(key));

        futures::stream::iter(claims)
            .for_each_concurrent(CLAIM_CONCURRENCY, |(namespace, name)| {
                let ctx = ctx.clone();
                let http = http.clone();
                async move {
                    if let Err(error) = claim_and_fire(&ctx, &http, &namespace, &name).await {
                        tracing::warn!(%namespace, function = %name, %error, "claiming schedule ticks failed");
                    }
                }
            })
            .await;
    }
}

/// Reads the function afresh, records the plan with the resourceVersion it was made on, and
/// sends the claimed ticks once the record is in.
async fn claim_and_fire(
    ctx: &Arc<Context>,
    http: &HttpClient,
    namespace: &str,
    name: &str,
) -> Result<(), kube::Error> {
    let api: Api<ServerlessFunction> = Api::namespaced(ctx.client.clone(), namespace);
    for _ in 0..CLAIM_ATTEMPTS {
        let Some(function) = api.get_opt(name).await? else {
            return Ok(());
        };
        if function.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let recorded = ScheduleState::from_annotation(
            function
                .annotations()
                .get(SCHEDULE_STATE_ANNOTATION)
                .map(String::as_str),
        );
        let plan = plan(
            &function.spec.triggers.schedules,
            &recorded,
            Timestamp::now(),
        );
        if !plan.changed {
            return Ok(());
        }
        // An empty state is removed rather than left as `{}`.
        let annotation = (!plan.state.0.is_empty()).then(|| plan.state.to_annotation());
        let patch = json!({
            "metadata": {
                "resourceVersion": function.resource_version(),
                "annotations": {SCHEDULE_STATE_ANNOTATION: annotation},
            }
        });
        let params = PatchParams {
            field_manager: Some(SCHEDULE_MANAGER.into()),
            ..Default::default()
        };
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                for fire in plan.fires {
                    tokio::spawn(send(ctx.clone(), http.clone(), function.clone(), fire));
                }
                return Ok(());
            }
            // Changed in between (maybe by another controller claiming the same tick): look
            // again.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Sends one claimed tick and reports how it went.
async fn send(ctx: Arc<Context>, http: HttpClient, function: ServerlessFunction, fire: Fire) {
    let namespace = function.namespace().unwrap_or_default();
    let name = function.name_any();
    let url = function_url(&ctx.activator_url, &namespace, &name);
    let timeout = Duration::from(function.spec.timeout) + SEND_MARGIN;
    let outcome = post(&http, &url, &fire, timeout).await;
    let (note, label) = match &outcome {
        Ok(status) if status.is_success() => (
            Note::normal(
                "Schedule",
                "ScheduleFired",
                format!(
                    "schedule {:?} fired for its tick at {}: HTTP {status}",
                    fire.schedule, fire.tick
                ),
            ),
            "ok",
        ),
        Ok(status) => (
            Note::warning(
                "Schedule",
                "ScheduleFailed",
                format!(
                    "schedule {:?}, tick at {}: the function answered HTTP {status}",
                    fire.schedule, fire.tick
                ),
            ),
            "failed",
        ),
        Err(error) => (
            Note::warning(
                "Schedule",
                "ScheduleFailed",
                format!(
                    "schedule {:?}, tick at {}: {error}; the tick is not sent again",
                    fire.schedule, fire.tick
                ),
            ),
            "failed",
        ),
    };
    tracing::info!(%namespace, function = %name, schedule = %fire.schedule, tick = %fire.tick, outcome = ?outcome, "schedule tick");
    ctx.metrics
        .fires
        .get_or_create(&OutcomeLabels { outcome: label })
        .inc();
    ctx.events.publish(&function.object_ref(&()), note).await;
}

/// POSTs the tick's body; retries only when no connection could be made, so the function
/// never gets the same tick twice.
async fn post(
    http: &HttpClient,
    url: &str,
    fire: &Fire,
    timeout: Duration,
) -> Result<hyper::StatusCode, String> {
    let body = fire.body.clone().unwrap_or_default();
    let content_type = if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let request = hyper::Request::post(url)
            .header(SCHEDULE_HEADER, fire.schedule.as_str())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::USER_AGENT, "fargo-schedule")
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|e| format!("building the request to {url}: {e}"))?;
        let sent = tokio::time::timeout(timeout, async {
            let response = http.request(request).await?;
            let status = response.status();
            // Drain the answer so the connection can be reused; its content is the function's.
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        })
        .await;
        match sent {
            Ok(Ok(status)) => return Ok(status),
            Ok(Err(error)) if error.is_connect() && attempt < SEND_ATTEMPTS => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(Err(error)) => return Err(format!("sending to {url}: {error}")),
            Err(_) => return Err(format!("no answer from {url} within {timeout:?}")),
        }
    }
}
