//! The autoscaler: every second it asks each activator for its load, decides each function's
//! instance count ([`scaling`], pure) and writes the changes to the Deployments' `scale`
//! subresource as field manager [`AUTOSCALER_MANAGER`]. It also records each function's
//! `status.lastRequestTime`, under the same manager so it never conflicts with the reconciler.
//!
//! Only the leader runs it, so each activator's time-averaged concurrency windows line up with
//! its ticks.

pub mod scaling;
pub mod stats;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::activator::endpoints::SERVICE_NAME_LABEL;
use crate::api::{AUTOSCALER_MANAGER, ServerlessFunction};
use crate::function::build::autoscaler_owns_replicas;
use crate::function::status::Instances;
use crate::function::{
    DirectionLabels, FunctionMetrics, FunctionStore, OutcomeLabels, StatsSource, live,
};
use scaling::{Decision, FunctionScaler, Observation, ScalePolicy};
use stats::HttpClient;

/// Between two decisions; a load step is answered within one.
const TICK: Duration = Duration::from_secs(1);
/// A value just written is not written again while the Deployment cache catches up.
const WRITE_SETTLE: Duration = Duration::from_secs(5);
/// `status.lastRequestTime` is written at most this often per function: each write also
/// triggers a reconcile and every watcher of functions.
const LAST_REQUEST_INTERVAL: Duration = Duration::from_secs(10);
/// API writes in flight at once within a tick.
const WRITE_CONCURRENCY: usize = 16;

/// What the autoscaler reads and writes.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<FunctionMetrics>,
    pub functions: FunctionStore,
    /// The functions' Deployments (trimmed, see [`crate::function::trim_deployment`]).
    pub deployments: Store<Deployment>,
    pub stats: StatsSource,
}

/// Sets a function's replicas through the Deployment's `scale` subresource with server-side
/// apply, as the autoscaler's field manager.
pub async fn apply_replicas(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> Result<(), kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let scale = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
    });
    api.patch_scale(
        name,
        &PatchParams::apply(AUTOSCALER_MANAGER).force(),
        &Patch::Apply(&scale),
    )
    .await?;
    Ok(())
}

/// One function's scaler and what was last written for it.
struct Tracked {
    uid: String,
    scaler: FunctionScaler,
    /// When the autoscaler first saw the function: idleness is counted from here at the
    /// earliest, so a new leader does not take a function for idle since forever.
    first_seen: Timestamp,
    written: Option<(i32, Instant)>,
    last_request_written: Option<Instant>,
}

impl Tracked {
    fn new(uid: String, now: Timestamp) -> Self {
        Self {
            uid,
            scaler: FunctionScaler::new(),
            first_seen: now,
            written: None,
            last_request_written: None,
        }
    }
}

type Key = (String, String);

struct ScaleChange {
    key: Key,
    function: Arc<DeserializeGuard<ServerlessFunction>>,
    from: i32,
    decision: Decision,
    target: f64,
    idle_for: Duration,
}

/// Runs the autoscaler until `shutdown` is cancelled.
pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let slices = match &ctx.stats {
        StatsSource::Service {
            namespace, name, ..
        } => {
            let (reader, writer) = reflector::store();
            let stream = watcher(
                Api::<EndpointSlice>::namespaced(ctx.client.clone(), namespace),
                watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={name}")),
            )
            .default_backoff()
            .reflect(writer)
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::debug!(%error, "watching the activator's EndpointSlices");
                }
            });
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stream => {}
                    () = shutdown.cancelled() => {}
                }
            });
            Some(reader)
        }
        StatsSource::Urls(_) => None,
    };

    // The Deployment cache has no other waiter (see [`FunctionStore`] on why that matters).
    tokio::select! {
        _ = ctx.deployments.wait_until_ready() => {}
        () = shutdown.cancelled() => return,
    }
    tracing::info!("autoscaler running");

    let http = stats::http_client();
    let mut tracked: HashMap<Key, Tracked> = HashMap::new();
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => break,
        }
        tick(&ctx, &http, slices.as_ref(), &mut tracked).await;
    }
}

async fn tick(
    ctx: &Context,
    http: &HttpClient,
    slices: Option<&Store<EndpointSlice>>,
    tracked: &mut HashMap<Key, Tracked>,
) {
    // Replicas are read before the activators are asked: a scale from zero that the cache
    // already shows was caused by a request that the scrape then includes, so the function is
    // not taken for idle and scaled straight back to zero.
    let mut targets = vec![];
    for guard in ctx.functions.state() {
        let Some(function) = live(&guard) else {
            continue;
        };
        let namespace = function.namespace().unwrap_or_default();
        let name = function.name_any();
        let Some(deployment) = ctx
            .deployments
            .get(&ObjectRef::new(&name).within(&namespace))
        else {
            continue;
        };
        // Until the reconciler has handed the replicas over, they are not ours to change.
        if !autoscaler_owns_replicas(&deployment) {
            continue;
        }
        targets.push((guard.clone(), Instances::of(&deployment)));
    }

    let urls = match (&ctx.stats, slices) {
        (StatsSource::Urls(urls), _) => urls.clone(),
        (StatsSource::Service { fallback_port, .. }, Some(store)) => {
            let state = store.state();
            stats::stats_urls(state.iter().map(|s| s.as_ref()), *fallback_port)
        }
        (StatsSource::Service { .. }, None) => vec![],
    };
    let scrape = stats::scrape(http, &urls).await;
    ctx.metrics
        .scrapes
        .get_or_create(&OutcomeLabels { outcome: "ok" })
        .inc_by(scrape.answered as u64);
    ctx.metrics
        .scrapes
        .get_or_create(&OutcomeLabels { outcome: "failed" })
        .inc_by(scrape.failed as u64);

    let now = Instant::now();
    let wall = Timestamp::now();
    let mut changes = vec![];
    let mut last_requests = vec![];
    let mut seen = HashSet::new();
    let mut panicking = 0;
    for (guard, instances) in targets {
        let Some(function) = live(&guard) else {
            continue;
        };
        let key = (
            function.namespace().unwrap_or_default(),
            function.name_any(),
        );
        seen.insert(key.clone());
        let uid = function.uid().unwrap_or_default();
        let entry = tracked
            .entry(key.clone())
            .or_insert_with(|| Tracked::new(uid.clone(), wall));
        if entry.uid != uid {
            *entry = Tracked::new(uid, wall);
        }

        let load = scrape.loads.get(&key).cloned().unwrap_or_default();
        let recorded = function
            .status
            .as_ref()
            .and_then(|s| s.last_request_time.as_ref())
            .map(|t| t.0);
        let last_activity = [load.last_request, recorded, Some(entry.first_seen)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(wall);
        let idle_for = elapsed_since(last_activity, wall);
        let policy = ScalePolicy::of(&function.spec);
        let decision = entry.scaler.observe(
            &policy,
            &Observation {
                now,
                concurrency: load.concurrency,
                in_flight: load.in_flight,
                current: instances.desired,
                ready: instances.ready,
                idle_for,
                complete: scrape.complete(),
            },
        );
        if decision.panicking {
            panicking += 1;
        }
        let settling = entry.written.is_some_and(|(value, at)| {
            value == decision.desired && now.saturating_duration_since(at) < WRITE_SETTLE
        });
        if decision.desired != instances.desired && !settling {
            entry.written = Some((decision.desired, now));
            changes.push(ScaleChange {
                key: key.clone(),
                function: guard.clone(),
                from: instances.desired,
                decision,
                target: policy.target,
                idle_for,
            });
        }

        if let Some(last) = load.last_request
            && recorded.is_none_or(|recorded| last > recorded)
            && entry
                .last_request_written
                .is_none_or(|at| now.saturating_duration_since(at) >= LAST_REQUEST_INTERVAL)
        {
            entry.last_request_written = Some(now);
            last_requests.push((guard.clone(), last));
        }
    }
    tracked.retain(|key, _| seen.contains(key));
    ctx.metrics.panicking.set(panicking);

    let failed: Vec<Key> = futures::stream::iter(changes)
        .map(|change| write_scale(ctx, change))
        .buffer_unordered(WRITE_CONCURRENCY)
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    for key in failed {
        if let Some(entry) = tracked.get_mut(&key) {
            entry.written = None;
        }
    }
    futures::stream::iter(last_requests)
        .for_each_concurrent(WRITE_CONCURRENCY, |(guard, last)| async move {
            if let Some(function) = live(&guard)
                && let Err(error) = record_last_request(&ctx.client, function, last).await
            {
                tracing::debug!(function = %function.name_any(), %error, "recording lastRequestTime failed");
            }
        })
        .await;
}

fn elapsed_since(earlier: Timestamp, now: Timestamp) -> Duration {
    let millis = now
        .as_millisecond()
        .saturating_sub(earlier.as_millisecond());
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// Writes one change; returns its key when it failed, so the next tick tries again.
async fn write_scale(ctx: &Context, change: ScaleChange) -> Option<Key> {
    let (namespace, name) = &change.key;
    let to = change.decision.desired;
    if let Err(error) = apply_replicas(&ctx.client, namespace, name, to).await {
        tracing::warn!(%namespace, function = %name, %error, "writing replicas failed");
        return Some(change.key);
    }
    let direction = if to == 0 {
        "zero"
    } else if to > change.from {
        "up"
    } else {
        "down"
    };
    ctx.metrics
        .scale_writes
        .get_or_create(&DirectionLabels { direction })
        .inc();
    let (reason, note) = if to == 0 {
        (
            "ScaledToZero",
            format!(
                "scaled from {} to 0: no request for {}s",
                change.from,
                change.idle_for.as_secs()
            ),
        )
    } else {
        (
            "Scaled",
            format!(
                "scaled from {} to {to}: {:.2} requests in flight on average over 60s ({:.2} over \
                 6s) for a target of {:.2} per instance{}",
                change.from,
                change.decision.stable_concurrency,
                change.decision.panic_concurrency,
                change.target,
                if change.decision.panicking {
                    "; panic mode: no scale-down until the load has been lower for 60s"
                } else {
                    ""
                }
            ),
        )
    };
    tracing::info!(%namespace, function = %name, from = change.from, to, panicking = change.decision.panicking, "scaled");
    let recorder = ctx.recorder.clone();
    let reference = change.function.object_ref(&());
    tokio::spawn(async move {
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: "Scale".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::debug!(%error, "publishing a scale event failed");
        }
    });
    None
}

/// Sets `status.lastRequestTime`, and only that, as the autoscaler's field manager.
async fn record_last_request(
    client: &Client,
    function: &ServerlessFunction,
    last: Timestamp,
) -> Result<(), kube::Error> {
    let api: Api<ServerlessFunction> =
        Api::namespaced(client.clone(), &function.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "ServerlessFunction",
        "status": {"lastRequestTime": Time(last)},
    });
    match api
        .patch_status(
            &function.name_any(),
            &PatchParams::apply(AUTOSCALER_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}
