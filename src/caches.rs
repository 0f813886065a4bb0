//! The caches the controller's loops share, and what each keeps of its objects: the functions
//! (watched by the function reconciler, read by the autoscaler and the schedule trigger), the
//! functions' Deployments (read by the reconciler and the autoscaler) and their Services (read by
//! the reconciler).

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::Client;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::api::{AUTOSCALER_MANAGER, FUNCTION_LABEL, FargateProfile, ServerlessFunction};
use crate::replicas::autoscaler_owns_replicas;

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

/// Keeps only what the reconciler and the autoscaler read of a cached Deployment: replicas,
/// status, and whether the autoscaler has written it (as a bare managed-fields entry).
pub fn trim_deployment(deployment: &mut Deployment) {
    let autoscaled = autoscaler_owns_replicas(deployment);
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

/// Every FargateProfile, for the usage metrics (profiles are few).
pub fn profiles(
    client: Client,
    shutdown: CancellationToken,
) -> (
    Store<FargateProfile>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    cache(
        Api::all(client),
        watcher::Config::default(),
        |_| {},
        |_| {},
        shutdown,
    )
}

/// The functions' Deployments, trimmed: the store, and the watch that fills it until
/// `shutdown`. Only the autoscaler waits on the store (see [`FunctionStore`] on why a single
/// waiter matters).
pub fn function_deployments(
    client: Client,
    shutdown: CancellationToken,
) -> (
    Store<Deployment>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let functions = watcher::Config::default().labels(FUNCTION_LABEL);
    cache(
        Api::all(client),
        functions,
        trim_deployment,
        |_| {},
        shutdown,
    )
}

/// The functions' Services, each kept as its name, uid, resourceVersion, owners and cluster IP
/// only: all the reconciler reads to skip applying a Service it finds as it left it, and to
/// replace one an earlier fargo made with a cluster IP.
pub fn function_services(
    client: Client,
    shutdown: CancellationToken,
) -> (
    Store<Service>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let functions = watcher::Config::default().labels(FUNCTION_LABEL);
    let trim = |service: &mut Service| {
        let metadata = std::mem::take(&mut service.metadata);
        let cluster_ip = service.spec.take().and_then(|spec| spec.cluster_ip);
        *service = Service {
            metadata: ObjectMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                uid: metadata.uid,
                resource_version: metadata.resource_version,
                owner_references: metadata.owner_references,
                ..ObjectMeta::default()
            },
            spec: cluster_ip.map(|cluster_ip| ServiceSpec {
                cluster_ip: Some(cluster_ip),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
    };
    cache(Api::all(client), functions, trim, |_| {}, shutdown)
}

/// What a cache can hold: a kind whose objects a watch reads into a store.
pub(crate) trait Cached:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Cached for K where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// A store of the objects `config` selects, each trimmed by `trim`, and the watch that fills it
/// until `shutdown`, calling `seen` with every event once the store holds it (errors are logged,
/// never passed on).
pub(crate) fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
    mut seen: impl FnMut(&watcher::Event<K>) + Send + 'static,
    shutdown: CancellationToken,
) -> (
    Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Cached,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .take_until(shutdown.cancelled_owned())
        .for_each(move |event| {
            match event {
                Ok(event) => seen(&event),
                Err(error) => tracing::debug!(%error, kind = %K::kind(&()), "watching a cache"),
            }
            std::future::ready(())
        });
    (store, stream)
}
