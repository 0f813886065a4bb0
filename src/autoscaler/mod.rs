//! The autoscaler: every second it asks each activator for its load, decides each function's
//! instance count ([`scaling`], pure) and writes the changes to the Deployments' `scale`
//! subresource as field manager [`AUTOSCALER_MANAGER`]. Its first write takes the replicas from
//! the reconciler, which seeds them (forced, it owns the field from then on; see
//! [`crate::replicas`]). It also records each function's
//! `status.lastRequestTime`, under the same manager so it never conflicts with the reconciler.
//!
//! It meters the functions too ([`crate::usage::functions`]): the same scrapes carry the
//! activators' usage counts.
//!
//! Only the leader runs it, so each activator's time-averaged concurrency windows line up with
//! its ticks.

pub mod plan;
pub mod scaling;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::api::{AUTOSCALER_MANAGER, EVENTS_MANAGER, SERVICE_NAME_LABEL, ServerlessFunction};
use crate::caches::{CachedDeployment, ChildCache, FunctionStore, live};
use crate::http_client::{HttpClient, http_client};
use crate::reconcile::{EventPublisher, patch_status};
use crate::replicas::{Instances, apply_replicas};
use crate::usage::functions::FunctionMeter;
use plan::{AutoscalerState, Clock, EventsRecord, Key, Plan, ScaleWrite, Target};
use scaling::ScalePolicy;

/// Between two decisions; a load step is answered within one.
const TICK: Duration = Duration::from_secs(1);
/// API writes in flight at once within a tick.
const WRITE_CONCURRENCY: usize = 16;

/// How the autoscaler finds the activators' `/stats`.
#[derive(Clone, Debug)]
pub enum StatsSource {
    /// Fixed URLs, e.g. `http://127.0.0.1:9091/stats` for an activator run out of cluster.
    Urls(Vec<String>),
    /// The pods behind a Service, from its EndpointSlices: the port named `health`, else
    /// `fallback_port`.
    Service {
        namespace: String,
        name: String,
        fallback_port: u16,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// The autoscaler's metrics.
pub struct AutoscalerMetrics {
    scrapes: Family<OutcomeLabels, Counter>,
    scale_writes: Family<DirectionLabels, Counter>,
    panicking: Gauge,
}

impl AutoscalerMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            scrapes: Family::default(),
            scale_writes: Family::default(),
            panicking: Gauge::default(),
        };
        registry.register(
            "autoscaler_scrapes",
            "Scrapes of an activator's /stats, by outcome (ok, failed)",
            metrics.scrapes.clone(),
        );
        registry.register(
            "autoscaler_scale_writes",
            "Replica counts written by the autoscaler, by direction (up, down, zero)",
            metrics.scale_writes.clone(),
        );
        registry.register(
            "autoscaler_panicking_functions",
            "Functions whose autoscaler is in panic mode",
            metrics.panicking.clone(),
        );
        Arc::new(metrics)
    }
}

/// What the autoscaler reads and writes.
pub struct Context {
    pub client: Client,
    pub events: EventPublisher,
    pub metrics: Arc<AutoscalerMetrics>,
    pub functions: FunctionStore,
    /// The functions' Deployments (trimmed, see [`crate::caches::trim_deployment`]).
    pub deployments: ChildCache<CachedDeployment>,
    pub stats: StatsSource,
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
            .take_until(shutdown.clone().cancelled_owned())
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::debug!(%error, "watching the activator's EndpointSlices");
                }
            });
            Some((reader, tokio::spawn(stream)))
        }
        StatsSource::Urls(_) => None,
    };
    let (slices, slice_watch) = slices.unzip();

    // The Deployment cache has no other waiter (see [`FunctionStore`] on why that matters).
    tokio::select! {
        _ = ctx.deployments.wait_until_ready() => {}
        () = shutdown.cancelled() => {}
    }
    if !shutdown.is_cancelled() {
        tracing::info!("autoscaler running");
        let http = http_client();
        let mut state = AutoscalerState::default();
        let mut meter = FunctionMeter::default();
        let mut interval = crate::telemetry::ticker(TICK);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = shutdown.cancelled() => break,
            }
            tick(&ctx, &http, slices.as_ref(), &mut state, &mut meter).await;
        }
        meter.finish().await;
    }
    if let Some(watch) = slice_watch {
        let _ = watch.await;
    }
}

/// Reads the caches, asks the activators, plans ([`AutoscalerState::plan`]) and writes.
async fn tick(
    ctx: &Context,
    http: &HttpClient,
    slices: Option<&Store<EndpointSlice>>,
    state: &mut AutoscalerState,
    meter: &mut FunctionMeter,
) {
    // Replicas are read before the activators are asked (see [`Target::instances`]).
    let mut targets = vec![];
    let mut warm = HashMap::new();
    for guard in ctx.functions.state() {
        let Some(function) = live(&guard) else {
            continue;
        };
        let key = (
            function.namespace().unwrap_or_default(),
            function.name_any(),
        );
        if let Some(provisioned) = crate::usage::functions::provisioned(function) {
            warm.insert(key.clone(), provisioned);
        }
        let Some(deployment) = ctx.deployments.get(&key.0, &key.1) else {
            continue;
        };
        targets.push(Target {
            key: key.clone(),
            uid: function.uid().unwrap_or_default(),
            policy: ScalePolicy::of(&function.spec),
            instances: Instances::of_cached(&deployment),
            recorded_last_request: function
                .status
                .as_ref()
                .and_then(|s| s.last_request_time.as_ref())
                .map(|t| t.0),
            recorded_queue: function.status.as_ref().map_or((None, None), |s| {
                (
                    s.queued_events.and_then(|n| u64::try_from(n).ok()),
                    s.oldest_queued_event.as_ref().map(|t| t.0),
                )
            }),
            triggers: function.spec.trigger_names(),
            recorded_triggers: function
                .status
                .as_ref()
                .map(|s| s.triggers.clone())
                .unwrap_or_default(),
        });
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

    let clock = Clock {
        now: Instant::now(),
        wall: Timestamp::now(),
    };
    meter.observe(
        scrape
            .loads
            .iter()
            .map(|(key, load)| (key, load.usage.as_slice())),
        clock.wall,
    );
    meter.flush(&ctx.client, &warm, clock.now, clock.wall);
    let plan = state.plan(&targets, &scrape, clock);
    ctx.metrics.panicking.set(plan.panicking);
    perform(ctx, plan, state).await;
}

/// Makes a tick's writes: the scale writes (a failed one is forgotten by `state`, so the next
/// tick writes it again), their Events in the background (on the function as the store holds
/// it), and the recorded request times.
pub async fn perform(ctx: &Context, plan: Plan, state: &mut AutoscalerState) {
    let failed: Vec<Key> = futures::stream::iter(plan.scale)
        .map(|write| {
            let (namespace, name) = &write.key;
            let reference = ctx
                .functions
                .get(&ObjectRef::new(name).within(namespace))
                .map(|guard| guard.object_ref(&()));
            write_scale(ctx, write, reference)
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    for key in &failed {
        state.write_failed(key);
    }
    futures::stream::iter(plan.queues)
        .for_each_concurrent(WRITE_CONCURRENCY, |record| async move {
            if let Err(error) = record_events(&ctx.client, &record).await {
                let (namespace, name) = &record.key;
                tracing::debug!(%namespace, function = %name, %error, "recording queuedEvents and triggers failed");
            }
        })
        .await;
    futures::stream::iter(plan.last_requests)
        .for_each_concurrent(WRITE_CONCURRENCY, |((namespace, name), last)| async move {
            if let Err(error) = record_last_request(&ctx.client, &namespace, &name, last).await {
                tracing::debug!(%namespace, function = %name, %error, "recording lastRequestTime failed");
            }
        })
        .await;
}

/// Performs one planned write; returns its key when it failed.
async fn write_scale(
    ctx: &Context,
    write: ScaleWrite,
    reference: Option<ObjectReference>,
) -> Option<Key> {
    let (namespace, name) = &write.key;
    if let Err(error) = apply_replicas(&ctx.client, namespace, name, write.to).await {
        tracing::warn!(%namespace, function = %name, %error, "writing replicas failed");
        return Some(write.key);
    }
    ctx.metrics
        .scale_writes
        .get_or_create(&DirectionLabels {
            direction: write.direction(),
        })
        .inc();
    tracing::info!(%namespace, function = %name, from = write.from, to = write.to, panicking = write.panicking, "scaled");
    if let Some(reference) = reference {
        ctx.events.publish_in_background(reference, write.note);
    }
    None
}

/// Sets `status.queuedEvents`, `status.oldestQueuedEvent` and `status.triggers`, as their own
/// field manager.
async fn record_events(client: &Client, record: &EventsRecord) -> Result<(), kube::Error> {
    let (namespace, name) = &record.key;
    let api: Api<ServerlessFunction> = Api::namespaced(client.clone(), namespace);
    // A field left out is removed, if this manager set it before.
    let mut status = serde_json::json!({});
    if let Some(queued) = record.queued {
        status["queuedEvents"] = queued.into();
    }
    if let Some(oldest) = record.oldest {
        status["oldestQueuedEvent"] = serde_json::json!(Time(oldest));
    }
    if !record.triggers.is_empty() {
        status["triggers"] = serde_json::json!(record.triggers);
    }
    match patch_status(&api, name, EVENTS_MANAGER, &status).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Sets `status.lastRequestTime`, and only that, as the autoscaler's field manager.
async fn record_last_request(
    client: &Client,
    namespace: &str,
    name: &str,
    last: Timestamp,
) -> Result<(), kube::Error> {
    let api: Api<ServerlessFunction> = Api::namespaced(client.clone(), namespace);
    let status = serde_json::json!({"lastRequestTime": Time(last)});
    match patch_status(&api, name, AUTOSCALER_MANAGER, &status).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}
