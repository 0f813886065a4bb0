//! `fargo controller`, wired: the health server and the admission webhook on every replica and,
//! on the replica holding the leader Lease, every loop of the controller side — the profile and
//! function reconcilers, the autoscaler and the schedule trigger — over the caches they share.
//!
//! This is the only place that starts loops; no room imports from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::api::LEASE_NAME;
use crate::api::routes::ActivatorNames;
use crate::autoscaler::{AutoscalerMetrics, StatsSource};
use crate::function::runtime_pod::RuntimeSettings;
use crate::profile::{ClusterDns, Surroundings};
use crate::reconcile::{EventPublisher, ReconcileMetrics, Reporting};
use crate::schedule::trigger::ScheduleMetrics;
use crate::telemetry::{self, Readiness};
use crate::usage::metrics::UsageCollector;
use crate::webhook::{self, WebhookMetrics};
use crate::{autoscaler, caches, function, profile, schedule, usage};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "leader election through Lease {LEASE_NAME} in namespace {namespace} failed (the namespace must exist; --namespace / FARGO_NAMESPACE names it)"
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
    #[error("the admission webhook stopped unexpectedly")]
    WebhookPanicked(#[source] tokio::task::JoinError),
    #[error("serving health and metrics on {addr}; choose another --health-addr")]
    Health {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How `fargo controller` runs (its flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub health_addr: SocketAddr,
    /// Namespace of the controller's own objects (Lease, webhook Secret).
    pub namespace: String,
    /// Namespace of the activator, whose pods may always reach function pods.
    pub activator_namespace: String,
    /// The cluster's DNS servers, which profiles' `allowDNS` opens port 53 to.
    pub dns: ClusterDns,
    /// Identity in the leader election; the pod name in cluster.
    pub identity: String,
    pub webhook: webhook::Config,
    /// Base URL of the activator Service: function URLs and schedule ticks go there.
    pub activator_url: String,
    /// The names the activator is reached by, which no function may claim as hosts.
    pub activator_names: ActivatorNames,
    /// Where the autoscaler reads the activators' `/stats`.
    pub stats: StatsSource,
    /// Images and endpoints the pods of handler functions are made with.
    pub runtimes: RuntimeSettings,
}

/// The metrics of every part, registered once under `fargo_`.
struct Metrics {
    reconcile: Arc<ReconcileMetrics>,
    webhook: Arc<WebhookMetrics>,
    autoscaler: Arc<AutoscalerMetrics>,
    schedules: Arc<ScheduleMetrics>,
    usage: UsageCollector,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let reconcile = ReconcileMetrics::register(registry.sub_registry_with_prefix("controller"));
        let webhook = WebhookMetrics::register(registry.sub_registry_with_prefix("webhook"));
        let functions = registry.sub_registry_with_prefix("functions");
        let autoscaler = AutoscalerMetrics::register(functions);
        let schedules = ScheduleMetrics::register(functions);
        let usage = UsageCollector::register(registry.sub_registry_with_prefix("usage"));
        Self {
            reconcile,
            webhook,
            autoscaler,
            schedules,
            usage,
        }
    }
}

/// How often the controller hands the memory it freed back to the system (see
/// [`telemetry::release_free_memory`]).
const RELEASE_FREE_MEMORY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let mut registry = Registry::with_prefix("fargo");
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::default();

    let health_addr = config.health_addr;
    let health_failed = |source| Error::Health {
        addr: health_addr,
        source,
    };
    // Bound here, so that an address in use stops the controller at once with its reason.
    let health_listener = tokio::net::TcpListener::bind(health_addr)
        .await
        .map_err(health_failed)?;
    let health = tokio::spawn(telemetry::serve(
        health_listener,
        telemetry::health_router(Arc::new(registry), readiness.clone()),
        shutdown.clone(),
    ));

    tokio::spawn(telemetry::release_free_memory(
        RELEASE_FREE_MEMORY_EVERY,
        shutdown.clone(),
    ));
    let mut webhook = tokio::spawn(webhook::run(
        client.clone(),
        config.webhook.clone(),
        reserved_namespaces(&config),
        metrics.webhook.clone(),
        shutdown.clone(),
    ));
    readiness.set(true);

    // The webhook ends before `shutdown` only when it failed: that stops the controller too.
    let leader = lead(client, &config, &metrics, shutdown.clone());
    tokio::pin!(leader);
    let (leader, webhook) = tokio::select! {
        led = &mut leader => {
            if led.is_err() {
                shutdown.cancel();
            }
            (led, webhook.await)
        }
        served = &mut webhook => {
            shutdown.cancel();
            (leader.await, served)
        }
    };
    let health = health.await;
    webhook.map_err(Error::WebhookPanicked)??;
    leader?;
    match health {
        Ok(served) => served.map_err(health_failed)?,
        Err(join) => error!(%join, "the health server panicked"),
    }
    info!("controller stopped");
    Ok(())
}

/// Namespaces no profile may take: fargo's own, and Kubernetes' own, whose node agents
/// (DaemonSets with host access) a profile would refuse like any tenant's pods.
fn reserved_namespaces(config: &Config) -> Vec<String> {
    let mut reserved = vec![config.namespace.clone(), config.activator_namespace.clone()];
    reserved.extend(KUBERNETES_NAMESPACES.map(String::from));
    reserved.sort();
    reserved.dedup();
    reserved
}

/// The namespaces Kubernetes itself runs in.
const KUBERNETES_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Waits for the leader Lease, then runs every loop while holding it.
async fn lead(
    client: Client,
    config: &Config,
    metrics: &Metrics,
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

    let leader_work = CancellationToken::new();
    let loops = start_loops(client, config, metrics, leader_work.clone());

    let outcome = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        _ = leading.wait_for(|&is_leader| !is_leader) => Err(Error::LostLeadership),
    };
    leader_work.cancel();
    // Reconciles in flight finish before the Lease is released.
    let finished =
        tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(loops)).await;
    match finished {
        Ok(results) => {
            for (result, name) in results.into_iter().zip(LOOP_NAMES) {
                if let Err(join) = result {
                    error!(%join, part = name, "a controller loop panicked");
                }
            }
        }
        Err(_) => error!("the controller loops did not stop within 10s"),
    }
    drop(leading);
    let _ = lease_task.await;
    outcome
}

/// What [`start_loops`] returns, in order.
const LOOP_NAMES: [&str; 7] = [
    "function Deployment cache",
    "profile cache",
    "profile reconciler",
    "function reconciler",
    "autoscaler",
    "schedule trigger",
    "profile meter",
];

/// Starts the leader's loops over the caches they share; each stops on `shutdown`.
fn start_loops(
    client: Client,
    config: &Config,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let events = EventPublisher::new(client.clone(), &config.identity);
    let reporting = Reporting {
        events: events.clone(),
        metrics: metrics.reconcile.clone(),
    };

    let functions_controller = function::reconciler::controller(client.clone());
    let functions = functions_controller.store();
    let (leaving_zero, leaving_zero_seen) = tokio::sync::mpsc::unbounded_channel();
    // A child added, changed or deleted reconciles its function, once the cache holds it.
    let deployment_changed = functions_controller.child_changed();
    let (deployments, deployment_watch) = caches::function_deployments(
        client.clone(),
        move |event| {
            deployment_changed(event);
            if let Some(function) = function::standby::leaving_zero(event) {
                let _ = leaving_zero.send(function);
            }
        },
        shutdown.clone(),
    );
    let (standby_pods, standby_watch) = caches::standby_pods(client.clone(), shutdown.clone());
    let (services, service_watch) = caches::function_services(
        client.clone(),
        functions_controller.child_changed(),
        shutdown.clone(),
    );
    let (profiles, profile_watch) = caches::profiles(client.clone(), shutdown.clone());
    metrics.usage.set_functions(functions.clone());
    metrics.usage.set_profiles(profiles.clone());
    let meter_client = client.clone();

    vec![
        tokio::spawn(deployment_watch),
        tokio::spawn(standby_watch),
        tokio::spawn(
            function::standby::Waker {
                client: client.clone(),
                functions: functions.clone(),
                standby_pods: standby_pods.clone(),
                profiles: profiles.clone(),
            }
            .run(leaving_zero_seen),
        ),
        tokio::spawn(service_watch),
        tokio::spawn(profile_watch),
        tokio::spawn(profile::reconciler::run(
            client.clone(),
            reporting.clone(),
            Surroundings {
                activator_namespace: config.activator_namespace.clone(),
                dns: config.dns.clone(),
            },
            reserved_namespaces(config),
            shutdown.clone(),
        )),
        tokio::spawn(function::reconciler::run(
            functions_controller,
            function::reconciler::Context {
                client: client.clone(),
                reporting,
                deployments: deployments.clone(),
                services,
                functions: functions.clone(),
                applied: Default::default(),
                applied_services: Default::default(),
                written_statuses: Default::default(),
                activator_url: config.activator_url.clone(),
                activator_names: config.activator_names.clone(),
                runtimes: Arc::new(config.runtimes.clone()),
                standby_pods,
                profiles,
            },
            shutdown.clone(),
        )),
        tokio::spawn(autoscaler::run(
            autoscaler::Context {
                client: client.clone(),
                events: events.clone(),
                metrics: metrics.autoscaler.clone(),
                functions: functions.clone(),
                deployments,
                stats: config.stats.clone(),
            },
            shutdown.clone(),
        )),
        tokio::spawn(schedule::trigger::run(
            schedule::trigger::Context {
                client,
                events,
                metrics: metrics.schedules.clone(),
                functions,
                activator_url: config.activator_url.clone(),
            },
            shutdown.clone(),
        )),
        tokio::spawn(usage::profiles::run(meter_client, shutdown)),
    ]
}
