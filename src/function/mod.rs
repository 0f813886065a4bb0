//! ServerlessFunction: the reconciler that keeps each function's Deployment and Service, and
//! the wiring of the three loops the leader runs for functions.
//!
//! - [`build`]: the Deployment and Service of a function (pure);
//! - [`status`]: the status and its conditions from what was observed (pure);
//! - [`reconciler`]: applies the children and writes the status;
//! - [`run`]: one watch of the functions and one of their Deployments, shared by the
//!   reconciler, the autoscaler ([`crate::autoscaler`]) and the schedule trigger
//!   ([`crate::schedule`]).

pub mod build;
pub mod reconciler;
pub mod status;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::Client;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::api::{AUTOSCALER_MANAGER, FUNCTION_LABEL, ServerlessFunction};
use crate::controller::ControllerMetrics;
pub use build::{deployment, function_url, service};

/// Where the activators are, for status URLs, scraping their stats and sending schedules.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Base URL of the activator Service, e.g. `http://fargo-activator.fargo-system.svc`.
    pub activator_url: String,
    /// Where the autoscaler reads the activators' `/stats`.
    pub stats: StatsSource,
}

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
pub(crate) struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectionLabels {
    pub direction: &'static str,
}

/// Metrics of the autoscaler and the schedule trigger.
pub struct FunctionMetrics {
    pub(crate) scrapes: Family<OutcomeLabels, Counter>,
    pub(crate) scale_writes: Family<DirectionLabels, Counter>,
    pub(crate) panicking: Gauge,
    pub(crate) schedule_fires: Family<OutcomeLabels, Counter>,
}

impl FunctionMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            scrapes: Family::default(),
            scale_writes: Family::default(),
            panicking: Gauge::default(),
            schedule_fires: Family::default(),
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
        registry.register(
            "schedule_fires",
            "Schedule ticks sent to functions, by outcome (ok, failed)",
            metrics.schedule_fires.clone(),
        );
        Arc::new(metrics)
    }
}

/// Keeps only what the reconciler and the autoscaler read of a cached Deployment: replicas,
/// status, and whether the autoscaler has written it (as a bare managed-fields entry).
pub fn trim_deployment(deployment: &mut Deployment) {
    let autoscaled = build::autoscaler_owns_replicas(deployment);
    deployment.metadata.managed_fields = autoscaled.then(|| {
        vec![ManagedFieldsEntry {
            manager: Some(AUTOSCALER_MANAGER.to_string()),
            ..Default::default()
        }]
    });
    deployment.metadata.annotations = None;
    if let Some(spec) = deployment.spec.as_mut() {
        spec.template = Default::default();
    }
}

/// Runs the function reconciler, the autoscaler and the schedule trigger until `shutdown`.
pub async fn run(
    client: Client,
    recorder: Recorder,
    metrics: Arc<ControllerMetrics>,
    function_metrics: Arc<FunctionMetrics>,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let (deployments, writer) = reflector::store();
    let deployment_cache = {
        let stream = watcher(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default().labels(FUNCTION_LABEL),
        )
        .default_backoff()
        .modify(trim_deployment)
        .reflect(writer)
        .for_each(|event| async move {
            if let Err(error) = event {
                tracing::debug!(%error, "watching function Deployments");
            }
        });
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stream => {}
                () = shutdown.cancelled() => {}
            }
        })
    };

    let controller = reconciler::controller(client.clone());
    let functions = controller.store();

    let autoscaler = tokio::spawn(crate::autoscaler::run(
        crate::autoscaler::Context {
            client: client.clone(),
            recorder: recorder.clone(),
            metrics: function_metrics.clone(),
            functions: functions.clone(),
            deployments: deployments.clone(),
            stats: settings.stats.clone(),
        },
        shutdown.clone(),
    ));
    let schedules = tokio::spawn(crate::schedule::run(
        crate::schedule::trigger::Context {
            client: client.clone(),
            recorder: recorder.clone(),
            metrics: function_metrics,
            functions: functions.clone(),
            activator_url: settings.activator_url.clone(),
        },
        shutdown.clone(),
    ));

    reconciler::run(
        controller,
        reconciler::Context {
            client,
            recorder,
            metrics,
            deployments,
            applied: Default::default(),
            activator_url: settings.activator_url,
        },
        shutdown,
    )
    .await;
    let _ = tokio::join!(autoscaler, schedules, deployment_cache);
}

/// The cache of functions the three loops share; objects that do not deserialize are kept as
/// errors so that one bad object never stalls the watch.
///
/// Only the controller's applier may wait on it (`Store::wait_until_ready` wakes a single
/// waiter, and the applier must be the one). The other loops need not wait: until the first
/// full list is in, the cache is empty and they have nothing to do.
pub type FunctionStore = Store<DeserializeGuard<ServerlessFunction>>;

/// A cached function that deserialized and is not being deleted.
pub fn live(guard: &DeserializeGuard<ServerlessFunction>) -> Option<&ServerlessFunction> {
    guard
        .0
        .as_ref()
        .ok()
        .filter(|f| f.metadata.deletion_timestamp.is_none())
}
