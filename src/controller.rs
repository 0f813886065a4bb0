//! `fargo controller`: the admission webhook on every replica, and — on the replica holding the
//! leader Lease — the reconcilers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::telemetry::{self, Readiness};
use crate::webhook::{self, WebhookMetrics};

/// Name of the Lease that elects the leader, in the controller's namespace.
pub const LEASE_NAME: &str = "fargo-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "leader election through Lease {LEASE_NAME} in namespace {namespace} failed (the namespace must exist; --namespace / FARGO_NAMESPACE names it): {source}"
    )]
    LeaderElection {
        namespace: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("lost the leader Lease; exiting so a fresh process competes again")]
    LostLeadership,
    #[error(transparent)]
    Webhook(#[from] webhook::Error),
    #[error("serving health on {addr}: {source}")]
    Health {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Settings of `fargo controller`.
#[derive(Clone, Debug)]
pub struct Config {
    pub health_addr: SocketAddr,
    /// Namespace of the controller's own objects (Lease, webhook Secret).
    pub namespace: String,
    /// Namespace of the activator, whose pods may always reach function pods.
    pub activator_namespace: String,
    /// Identity in the leader election; the pod name in cluster.
    pub identity: String,
    pub webhook: webhook::Config,
    /// Where the activators are, for function URLs, the autoscaler and the schedules.
    pub functions: crate::function::Settings,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
    reason: &'static str,
}

/// Reconcile counts, failures by reason, and durations, by resource kind.
pub struct ControllerMetrics {
    reconciles: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a ControllerMetrics,
    kind: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&KindLabels { kind: self.kind })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl ControllerMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0])
            }),
        };
        registry.register(
            "reconciles",
            "Reconciles started, by kind",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by kind and reason",
            metrics.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration, by kind",
            metrics.duration.clone(),
        );
        Arc::new(metrics)
    }

    pub fn reconcile_started(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        ReconcileTimer {
            metrics: self,
            kind,
            started: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, kind: &'static str, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { kind, reason })
            .inc();
    }
}

/// Publishes a Warning Event for a failed reconcile of `reference`, in the background: the error
/// policy that calls it cannot wait.
pub fn publish_failure(
    recorder: &Recorder,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    reason: &'static str,
    error: &dyn std::fmt::Display,
) {
    let recorder = recorder.clone();
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: reason.into(),
        note: Some(error.to_string().chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    tokio::spawn(async move {
        let _ = recorder.publish(&event, &reference).await;
    });
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let mut registry = Registry::with_prefix("fargo");
    let controller_metrics =
        ControllerMetrics::register(registry.sub_registry_with_prefix("controller"));
    let webhook_metrics = WebhookMetrics::register(registry.sub_registry_with_prefix("webhook"));
    let function_metrics =
        crate::function::FunctionMetrics::register(registry.sub_registry_with_prefix("functions"));
    let readiness = Readiness::default();

    let health = {
        let router = telemetry::health_router(Arc::new(registry), readiness.clone());
        let addr = config.health_addr;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            telemetry::serve(addr, router, shutdown)
                .await
                .map_err(|source| Error::Health { addr, source })
        })
    };

    let webhook = tokio::spawn(webhook::run(
        client.clone(),
        config.webhook.clone(),
        webhook_metrics,
        shutdown.clone(),
    ));
    readiness.set(true);

    let leader = lead(
        client,
        &config,
        controller_metrics,
        function_metrics,
        shutdown.clone(),
    )
    .await;
    if leader.is_err() {
        shutdown.cancel();
    }
    let webhook = webhook.await;
    let _ = health.await;
    leader?;
    match webhook {
        Ok(result) => result?,
        Err(join) => error!(%join, "the webhook task panicked"),
    }
    info!("controller stopped");
    Ok(())
}

/// fargo's own namespaces, which no profile may take.
fn reserved_namespaces(config: &Config) -> Vec<String> {
    let mut reserved = vec![config.namespace.clone(), config.activator_namespace.clone()];
    reserved.dedup();
    reserved
}

/// Waits for the leader Lease, then runs the reconcilers while holding it.
async fn lead(
    client: Client,
    config: &Config,
    metrics: Arc<ControllerMetrics>,
    function_metrics: Arc<crate::function::FunctionMetrics>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(|source| Error::LeaderElection {
            namespace: config.namespace.clone(),
            source,
        })?;
    let (mut leading, lease_task) = manager.watch().await;

    let elected = tokio::select! {
        _ = shutdown.cancelled() => false,
        elected = leading.wait_for(|&is_leader| is_leader) => elected.is_ok(),
    };
    if !elected {
        drop(leading);
        let _ = lease_task.await;
        return Ok(());
    }
    info!(identity = %config.identity, "became the leader");

    let reporter = Reporter {
        controller: "fargo-controller".into(),
        instance: Some(config.identity.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let leader_work = CancellationToken::new();
    let profiles = tokio::spawn(crate::profile::reconciler::run(
        client.clone(),
        recorder.clone(),
        metrics.clone(),
        config.activator_namespace.clone(),
        reserved_namespaces(config),
        leader_work.clone(),
    ));
    let functions = tokio::spawn(crate::function::run(
        client.clone(),
        recorder.clone(),
        metrics.clone(),
        function_metrics,
        config.functions.clone(),
        leader_work.clone(),
    ));

    let outcome = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        _ = leading.wait_for(|&is_leader| !is_leader) => Err(Error::LostLeadership),
    };
    leader_work.cancel();
    // Reconciles in flight finish before the Lease is released.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = tokio::join!(profiles, functions);
    })
    .await;
    drop(leading);
    let _ = lease_task.await;
    outcome
}
