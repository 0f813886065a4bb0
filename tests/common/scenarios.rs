//! The scenarios of the recorded-exchange tier ([`super::exchange`]): each runs one step of a
//! reconciler or the autoscaler with the client it is given, from inputs that are recorded with
//! it, and returns its outcome as text.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use fargo::api::{FargateProfile, ServerlessFunction};
use fargo::autoscaler::plan::{AutoscalerState, Plan, ScaleWrite};
use fargo::reconcile::{EventPublisher, Note, ReconcileMetrics, Reporting};

/// The reporting instance of the scenarios' Events.
const IDENTITY: &str = "exchange-test";
/// The activator URL the function scenarios report.
pub const ACTIVATOR_URL: &str = "http://fargo-activator.fargo-system.svc";
/// fargo's namespace in the profile scenarios.
pub const FARGO_NAMESPACE: &str = "fargo-system";

/// The function reconciler's inputs: the function, and the Deployments its cache holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FunctionInputs {
    pub function: ServerlessFunction,
    pub deployments: Vec<Deployment>,
}

/// The profile reconciler's inputs: the profile, and what the namespace and profile caches hold.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProfileInputs {
    pub profile: FargateProfile,
    pub namespaces: Vec<Namespace>,
    pub profiles: Vec<FargateProfile>,
}

/// The autoscaler's writes for one function: a scale from `from` to `to` and a request time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleInputs {
    pub function: ServerlessFunction,
    pub from: i32,
    pub to: i32,
    pub last_request: jiff::Timestamp,
}

fn reporting(client: Client) -> Reporting {
    Reporting {
        events: EventPublisher::new(client, IDENTITY),
        metrics: ReconcileMetrics::register(&mut Registry::default()),
    }
}

fn store_of<K>(objects: &[K]) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store();
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(object.clone()));
    }
    store
}

fn outcome<E: std::error::Error>(result: Result<kube::runtime::controller::Action, E>) -> String {
    match result {
        Ok(action) => format!("{action:?}"),
        Err(error) => format!("failed: {}", fargo::telemetry::error_chain(&error)),
    }
}

/// One reconcile of a function.
pub async fn reconcile_function(client: Client, inputs: &FunctionInputs) -> String {
    let ctx = fargo::function::reconciler::Context {
        client: client.clone(),
        reporting: reporting(client),
        deployments: fargo::caches::ChildCache::of(
            inputs
                .deployments
                .iter()
                .map(fargo::caches::CachedDeployment::from),
        ),
        functions: store_of(&[DeserializeGuard(Ok(inputs.function.clone()))]),
        services: fargo::caches::ChildCache::of([]),
        applied: Default::default(),
        applied_services: Default::default(),
        written_statuses: Default::default(),
        activator_url: ACTIVATOR_URL.into(),
        activator_names: fargo::api::routes::ActivatorNames::new(
            "fargo-activator",
            FARGO_NAMESPACE,
            "fargo.local",
        ),
        runtimes: Default::default(),
        standby_pods: store_of::<k8s_openapi::api::core::v1::Pod>(&[]),
        profiles: store_of::<fargo::api::FargateProfile>(&[]),
    };
    let guard = Arc::new(DeserializeGuard(Ok(inputs.function.clone())));
    outcome(fargo::function::reconciler::reconcile(guard, Arc::new(ctx)).await)
}

/// One reconcile of a profile.
pub async fn reconcile_profile(client: Client, inputs: &ProfileInputs) -> String {
    let ctx = fargo::profile::reconciler::Context {
        client: client.clone(),
        reporting: reporting(client),
        surroundings: fargo::profile::Surroundings {
            activator_namespace: FARGO_NAMESPACE.into(),
            dns: fargo::profile::ClusterDns::default(),
        },
        reserved_namespaces: vec![FARGO_NAMESPACE.into()],
        namespaces: store_of(&inputs.namespaces),
        profiles: store_of(&inputs.profiles),
    };
    outcome(
        fargo::profile::reconciler::reconcile(Arc::new(inputs.profile.clone()), Arc::new(ctx))
            .await,
    )
}

/// The autoscaler's writes of one planned tick.
pub async fn perform_scale(client: Client, inputs: &ScaleInputs) -> String {
    let function = &inputs.function;
    let key = (
        function.namespace().unwrap_or_default(),
        function.name_any(),
    );
    let ctx = fargo::autoscaler::Context {
        client: client.clone(),
        events: EventPublisher::new(client, IDENTITY),
        metrics: fargo::autoscaler::AutoscalerMetrics::register(&mut Registry::default()),
        functions: store_of(&[DeserializeGuard(Ok(function.clone()))]),
        deployments: fargo::caches::ChildCache::of([]),
        stats: fargo::autoscaler::StatsSource::Urls(vec![]),
    };
    let plan = Plan {
        scale: vec![ScaleWrite {
            key: key.clone(),
            from: inputs.from,
            to: inputs.to,
            panicking: false,
            note: Note::normal(
                "Scale",
                "Scaled",
                format!("scaled from {} to {}", inputs.from, inputs.to),
            ),
        }],
        last_requests: vec![(key.clone(), inputs.last_request)],
        queues: vec![],
        panicking: 0,
    };
    let mut state = AutoscalerState::default();
    fargo::autoscaler::perform(&ctx, plan, &mut state).await;
    "performed".into()
}
