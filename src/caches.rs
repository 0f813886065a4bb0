//! The caches the controller's loops share, and what each keeps of its objects: the functions
//! (watched by the function reconciler, read by the autoscaler and the schedule trigger), the
//! functions' Deployments (read by the reconciler and the autoscaler) and their Services (read by
//! the reconciler).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference,
};
use kube::Client;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::api::{
    AUTOSCALER_MANAGER, FUNCTION_LABEL, FargateProfile, STANDBY_LABEL, ServerlessFunction,
};
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

/// A function's Deployment as its watch reads it: its metadata, `spec.replicas` and status,
/// trimmed ([`trim_deployment`]) to what [`CachedDeployment`] keeps. A [`Deployment`] takes
/// 2.4 KB before any of its strings, most of it the pod template's `PodSpec` held inline, empty
/// or not; this takes a fifth of that, and the watch never builds the rest.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct WatchedDeployment {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<WatchedDeploymentSpec>,
    #[serde(default)]
    pub status: Option<DeploymentStatus>,
    /// The value of its `fargo.dev/function` label.
    #[serde(skip)]
    pub function: Option<String>,
    /// A digest of its labels ([`labels_digest`]), which the cache does not keep: a map of
    /// labels, however few, takes more than half a kilobyte.
    #[serde(skip)]
    pub labels_digest: u64,
}

/// A digest of a map of labels: whether they changed.
pub fn labels_digest(labels: &std::collections::BTreeMap<String, String>) -> u64 {
    digest(labels)
}

/// A digest of `value` with this process's own random keys, so that no tenant can choose names
/// or labels that collide.
pub fn digest(value: &impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::LazyLock<std::collections::hash_map::RandomState> =
        std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);
    KEYS.hash_one(value)
}

impl WatchedDeployment {
    /// The Deployment this was read from, as far as it was read: its metadata, replicas and
    /// status.
    pub fn into_deployment(self) -> Deployment {
        Deployment {
            metadata: self.metadata,
            spec: Some(DeploymentSpec {
                replicas: self.spec.and_then(|spec| spec.replicas),
                ..DeploymentSpec::default()
            }),
            status: self.status,
        }
    }
}

/// What [`WatchedDeployment`] reads of a Deployment's spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct WatchedDeploymentSpec {
    #[serde(default)]
    pub replicas: Option<i32>,
}

/// `kube::Resource` for `$cached`, a cached form of `$kind`: the same API and kind, its own
/// `metadata`.
macro_rules! cached_form_of {
    ($cached:ty, $kind:ty) => {
        impl kube::Resource for $cached {
            type DynamicType = ();
            type Scope = <$kind as kube::Resource>::Scope;

            fn kind(dt: &()) -> Cow<'_, str> {
                <$kind as kube::Resource>::kind(dt)
            }

            fn group(dt: &()) -> Cow<'_, str> {
                <$kind as kube::Resource>::group(dt)
            }

            fn version(dt: &()) -> Cow<'_, str> {
                <$kind as kube::Resource>::version(dt)
            }

            fn plural(dt: &()) -> Cow<'_, str> {
                <$kind as kube::Resource>::plural(dt)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

cached_form_of!(WatchedDeployment, Deployment);

impl From<&Deployment> for WatchedDeployment {
    fn from(deployment: &Deployment) -> Self {
        let mut watched = Self {
            metadata: deployment.metadata.clone(),
            spec: deployment.spec.as_ref().map(|spec| WatchedDeploymentSpec {
                replicas: spec.replicas,
            }),
            status: deployment.status.clone(),
            ..Self::default()
        };
        trim_deployment(&mut watched);
        watched
    }
}

/// What a cache keeps of a child's metadata. An [`ObjectMeta`] takes over 300 bytes, set or
/// not, and an owner reference four strings; this keeps four of the first's fields and one of
/// the second's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChildMeta {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// The uid of its controller owner reference (there is at most one).
    pub controller_uid: Option<String>,
}

impl From<&ObjectMeta> for ChildMeta {
    fn from(meta: &ObjectMeta) -> Self {
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            controller_uid: meta
                .owner_references
                .iter()
                .flatten()
                .find(|owner| owner.controller == Some(true))
                .map(|owner| owner.uid.clone()),
        }
    }
}

/// A function's Deployment as the cache keeps it: what the reconciler and the autoscaler read,
/// and no more.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CachedDeployment {
    pub meta: ChildMeta,
    pub generation: Option<i64>,
    /// Whether the autoscaler's field manager has written it (its replicas).
    pub autoscaled: bool,
    /// `spec.replicas`.
    pub replicas: Option<i32>,
    /// The status, trimmed as [`trim_deployment`] does.
    pub status: Option<DeploymentStatus>,
    /// The value of its `fargo.dev/function` label.
    pub function: Option<String>,
    /// A digest of its labels ([`labels_digest`]).
    pub labels_digest: u64,
}

impl CachedDeployment {
    /// The Deployment this was cached from, as far as the cache kept it: of its owner
    /// references, the controller's uid.
    pub fn to_deployment(&self) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some(self.meta.name.clone()),
                namespace: Some(self.meta.namespace.clone()),
                uid: self.meta.uid.clone(),
                resource_version: self.meta.resource_version.clone(),
                generation: self.generation,
                owner_references: self.meta.controller_uid.as_ref().map(|uid| {
                    vec![OwnerReference {
                        uid: uid.clone(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                managed_fields: self.autoscaled.then(autoscaler_entry),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: self.replicas,
                ..DeploymentSpec::default()
            }),
            status: self.status.clone(),
        }
    }
}

impl From<&WatchedDeployment> for CachedDeployment {
    fn from(watched: &WatchedDeployment) -> Self {
        Self {
            meta: ChildMeta::from(&watched.metadata),
            generation: watched.metadata.generation,
            autoscaled: autoscaler_owns_replicas(watched),
            replicas: watched.spec.as_ref().and_then(|spec| spec.replicas),
            status: watched.status.clone(),
            function: watched.function.clone(),
            labels_digest: watched.labels_digest,
        }
    }
}

impl From<&Deployment> for CachedDeployment {
    fn from(deployment: &Deployment) -> Self {
        Self::from(&WatchedDeployment::from(deployment))
    }
}

impl Child for CachedDeployment {
    fn meta(&self) -> &ChildMeta {
        &self.meta
    }
}

/// A bare managed-fields entry of the autoscaler's field manager: it has written the object.
fn autoscaler_entry() -> Vec<ManagedFieldsEntry> {
    vec![ManagedFieldsEntry {
        manager: Some(AUTOSCALER_MANAGER.to_string()),
        ..Default::default()
    }]
}

/// Keeps only what the reconciler and the autoscaler read of a watched Deployment: its
/// metadata without annotations, with its labels reduced to the function's and a digest, and
/// with its managed fields reduced to whether the autoscaler has written it (a bare entry); and
/// of its status conditions, a ReplicaFailure that holds.
pub fn trim_deployment(deployment: &mut WatchedDeployment) {
    if let Some(labels) = deployment.metadata.labels.take() {
        deployment.function = labels.get(FUNCTION_LABEL).cloned();
        deployment.labels_digest = labels_digest(&labels);
    }
    let autoscaled = autoscaler_owns_replicas(deployment);
    deployment.metadata.managed_fields = autoscaled.then(autoscaler_entry);
    deployment.metadata.annotations = None;
    if let Some(status) = deployment.status.as_mut() {
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| c.type_ == "ReplicaFailure" && c.status == "True");
        }
        // Emptied, the list would still hold the buffer of every condition it had.
        if status.conditions.as_ref().is_some_and(Vec::is_empty) {
            status.conditions = None;
        }
    }
}

/// A cache of the functions' children (their Deployments, or their Services), by namespace and
/// name. kube's [`Store`] keys each object by a reference that holds four strings (name,
/// namespace, uid, resourceVersion): some 300 bytes an object with its table. This one keys
/// each by a [`digest`] of its namespace and name, and checks both on a read.
pub struct ChildCache<K> {
    objects: Arc<RwLock<HashMap<u64, Arc<K>>>>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl<K> Clone for ChildCache<K> {
    fn clone(&self) -> Self {
        Self {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
        }
    }
}

fn child_key(namespace: &str, name: &str) -> u64 {
    digest(&(namespace, name))
}

/// What a [`ChildCache`] holds: an object with a [`ChildMeta`].
pub trait Child: Send + Sync + 'static {
    fn meta(&self) -> &ChildMeta;
}

fn is_named(object: &impl Child, namespace: &str, name: &str) -> bool {
    object.meta().namespace == namespace && object.meta().name == name
}

impl<K: Child> ChildCache<K> {
    fn new() -> (Self, ChildWriter<K>) {
        let objects = Arc::new(RwLock::new(HashMap::new()));
        let (ready, waiting) = tokio::sync::watch::channel(false);
        let writer = ChildWriter {
            objects: objects.clone(),
            relisted: None,
            ready,
        };
        let cache = Self {
            objects,
            ready: waiting,
        };
        (cache, writer)
    }

    /// A cache holding `objects`, ready: what a replayed reconcile reads.
    pub fn of(objects: impl IntoIterator<Item = K>) -> Self {
        let (cache, mut writer) = Self::new();
        writer.apply(watcher::Event::Init);
        for object in objects {
            writer.apply(watcher::Event::InitApply(object));
        }
        writer.apply(watcher::Event::InitDone);
        cache
    }

    /// The object of that namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        objects
            .get(&child_key(namespace, name))
            .filter(|object| is_named(object.as_ref(), namespace, name))
            .cloned()
    }

    /// Waits until the first full list is in. Any number may wait.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

/// What fills a [`ChildCache`] from its watch's events, as kube's reflector fills a store: a
/// relist is gathered apart and replaces the objects whole when it is done.
struct ChildWriter<K> {
    objects: Arc<RwLock<HashMap<u64, Arc<K>>>>,
    relisted: Option<HashMap<u64, Arc<K>>>,
    ready: tokio::sync::watch::Sender<bool>,
}

impl<K: Child> ChildWriter<K> {
    fn apply(&mut self, event: watcher::Event<K>) {
        let key_of = |object: &K| child_key(&object.meta().namespace, &object.meta().name);
        match event {
            watcher::Event::Apply(object) => {
                let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
                objects.insert(key_of(&object), Arc::new(object));
            }
            watcher::Event::Delete(object) => {
                let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
                let key = key_of(&object);
                let meta = object.meta();
                if objects
                    .get(&key)
                    .is_some_and(|cached| is_named(cached.as_ref(), &meta.namespace, &meta.name))
                {
                    objects.remove(&key);
                }
            }
            watcher::Event::Init => self.relisted = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                if let Some(relisted) = self.relisted.as_mut() {
                    relisted.insert(key_of(&object), Arc::new(object));
                }
            }
            watcher::Event::InitDone => {
                if let Some(relisted) = self.relisted.take() {
                    *self.objects.write().unwrap_or_else(|e| e.into_inner()) = relisted;
                }
                self.ready.send_replace(true);
            }
        }
    }
}

/// A [`ChildCache`] of the objects `config` selects, each read as `W`, trimmed by `trim` and
/// kept as `K`, and the watch that fills it until `shutdown`, calling `seen` with every event
/// once the cache holds it (errors are logged, never passed on).
fn child_cache<W, K>(
    api: Api<W>,
    config: watcher::Config,
    trim: impl FnMut(&mut W) + Send + 'static,
    mut seen: impl FnMut(&watcher::Event<W>) + Send + 'static,
    shutdown: CancellationToken,
) -> (
    ChildCache<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    W: Cached,
    K: Child + for<'a> From<&'a W>,
{
    let (cache, mut writer) = ChildCache::new();
    let events = watcher(api, config).default_backoff().modify(trim);
    let watch = each_event(
        events,
        move |event| {
            writer.apply(kept(event));
            seen(event);
        },
        shutdown,
    );
    (cache, watch)
}

/// A watch's event with its object as the cache keeps it.
fn kept<W, K: for<'a> From<&'a W>>(event: &watcher::Event<W>) -> watcher::Event<K> {
    match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(K::from(object)),
        watcher::Event::InitApply(object) => watcher::Event::InitApply(K::from(object)),
        watcher::Event::Delete(object) => watcher::Event::Delete(K::from(object)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Calls `each` with every event of `events` until `shutdown` (errors are logged, never passed
/// on).
fn each_event<K: Cached>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    mut each: impl FnMut(&watcher::Event<K>) + Send + 'static,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    events
        .take_until(shutdown.cancelled_owned())
        .for_each(move |event| {
            match event {
                Ok(event) => each(&event),
                Err(error) => tracing::debug!(%error, kind = %K::kind(&()), "watching a cache"),
            }
            std::future::ready(())
        })
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

/// The functions' Deployments, as [`CachedDeployment`]: the cache, and the watch that fills it
/// until `shutdown`, calling `seen` with every event once the cache holds it.
pub fn function_deployments(
    client: Client,
    seen: impl FnMut(&watcher::Event<WatchedDeployment>) + Send + 'static,
    shutdown: CancellationToken,
) -> (
    ChildCache<CachedDeployment>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let functions = watcher::Config::default().labels(FUNCTION_LABEL);
    child_cache(Api::all(client), functions, trim_deployment, seen, shutdown)
}

/// The standby pods of functions (labelled `fargo.dev/standby-of`), without their managed
/// fields: the store, and the watch that fills it until `shutdown`.
pub fn standby_pods(
    client: Client,
    shutdown: CancellationToken,
) -> (
    Store<Pod>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let standby = watcher::Config::default().labels(STANDBY_LABEL);
    cache(
        Api::all(client),
        standby,
        |pod: &mut Pod| pod.metadata.managed_fields = None,
        |_| {},
        shutdown,
    )
}

/// A function's Service as its watch reads it: its metadata and cluster IP.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct WatchedService {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<WatchedServiceSpec>,
}

/// What [`WatchedService`] reads of a Service's spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct WatchedServiceSpec {
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
}

cached_form_of!(WatchedService, Service);

/// A function's Service as the cache keeps it: its metadata as [`ChildMeta`] and its cluster
/// IP, all the reconciler reads to skip applying a Service it finds as it left it, and to
/// replace one an earlier fargo made with a cluster IP.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CachedService {
    pub meta: ChildMeta,
    /// `spec.clusterIP` (`"None"` for a headless Service).
    pub cluster_ip: Option<String>,
}

impl From<&WatchedService> for CachedService {
    fn from(watched: &WatchedService) -> Self {
        Self {
            meta: ChildMeta::from(&watched.metadata),
            cluster_ip: watched.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
        }
    }
}

impl From<&Service> for CachedService {
    fn from(service: &Service) -> Self {
        Self {
            meta: ChildMeta::from(&service.metadata),
            cluster_ip: service.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
        }
    }
}

impl Child for CachedService {
    fn meta(&self) -> &ChildMeta {
        &self.meta
    }
}

/// The functions' Services, as [`CachedService`]: the cache, and the watch that fills it until
/// `shutdown`, calling `seen` with every event once the cache holds it.
pub fn function_services(
    client: Client,
    seen: impl FnMut(&watcher::Event<WatchedService>) + Send + 'static,
    shutdown: CancellationToken,
) -> (
    ChildCache<CachedService>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let functions = watcher::Config::default().labels(FUNCTION_LABEL);
    child_cache(Api::all(client), functions, |_| {}, seen, shutdown)
}

/// The object a watch event says was added, changed or deleted (`None` for the markers of a
/// relist).
pub fn touched<K>(event: &watcher::Event<K>) -> Option<&K> {
    match event {
        watcher::Event::Apply(object)
        | watcher::Event::InitApply(object)
        | watcher::Event::Delete(object) => Some(object),
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// The function that controls an object (its controller owner reference, a
/// ServerlessFunction of this API version), to reconcile when the object changes.
pub fn controlling_function(
    object: &impl kube::Resource,
) -> Option<ObjectRef<DeserializeGuard<ServerlessFunction>>> {
    let namespace = object.meta().namespace.as_deref()?;
    let api_version = <ServerlessFunction as kube::Resource>::api_version(&());
    let kind = <ServerlessFunction as kube::Resource>::kind(&());
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|owner| {
            owner.controller == Some(true) && owner.kind == kind && owner.api_version == api_version
        })
        .map(|owner| ObjectRef::new(&owner.name).within(namespace))
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
    seen: impl FnMut(&watcher::Event<K>) + Send + 'static,
    shutdown: CancellationToken,
) -> (
    Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Cached,
{
    let (store, writer) = reflector::store();
    let events = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer);
    (store, each_event(events, seen, shutdown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicas::Instances;
    use kube::ResourceExt;

    /// A Deployment as a watch delivers it, written by the controller and the autoscaler.
    fn watched() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "hello", "namespace": "shop", "uid": "u-1", "generation": 3,
                "resourceVersion": "42",
                "labels": {"fargo.dev/function": "hello"},
                "annotations": {"deployment.kubernetes.io/revision": "2"},
                "ownerReferences": [{"apiVersion": "fargo.dev/v1alpha1", "kind": "ServerlessFunction",
                                     "name": "hello", "uid": "f-1", "controller": true}],
                "managedFields": [
                    {"manager": "fargo-controller", "operation": "Apply", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:spec": {"f:template": {}}}},
                    {"manager": AUTOSCALER_MANAGER, "operation": "Apply", "subresource": "scale",
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                ],
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"fargo.dev/function": "hello"}},
                "template": {"metadata": {"labels": {"fargo.dev/function": "hello"}},
                             "spec": {"containers": [{"name": "function", "image": "echo"}]}},
            },
            "status": {
                "observedGeneration": 3, "replicas": 2, "readyReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                     "message": "Deployment does not have minimum availability."},
                    {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                     "message": "pods \"hello-1\" is forbidden: exceeded quota"},
                ],
            },
        })
    }

    #[test]
    fn a_cached_deployment_keeps_what_the_reconciler_and_the_autoscaler_read() {
        let mut read: WatchedDeployment = serde_json::from_value(watched()).unwrap();
        trim_deployment(&mut read);
        let cached = CachedDeployment::from(&read);
        let full: Deployment = serde_json::from_value(watched()).unwrap();

        // Read as it was before the cache trimmed it.
        let kept = cached.to_deployment();
        assert_eq!(Instances::of_cached(&cached), Instances::of(&full));
        assert_eq!(Instances::of(&kept), Instances::of(&full));
        assert!(cached.autoscaled && autoscaler_owns_replicas(&full));
        assert!(autoscaler_owns_replicas(&kept));
        assert_eq!(
            crate::function::status::replica_failure(&kept),
            crate::function::status::replica_failure(&full),
        );
        assert_eq!(
            (kept.name_any(), kept.namespace()),
            (full.name_any(), full.namespace())
        );
        assert_eq!(kept.metadata.uid, full.metadata.uid);
        assert_eq!(
            kept.metadata.resource_version,
            full.metadata.resource_version
        );
        assert_eq!(kept.metadata.generation, full.metadata.generation);
        assert_eq!(cached.labels_digest, labels_digest(full.labels()));
        assert_eq!(cached.function.as_deref(), Some("hello"));
        // Of the owners, the controller's uid.
        let owners = kept.owner_references();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (owners[0].uid.as_str(), owners[0].controller),
            ("f-1", Some(true))
        );
        assert_eq!(
            kept.status.as_ref().and_then(|s| s.observed_generation),
            Some(3)
        );

        // Left out: the template, the labels, the annotations, the managed fields' contents,
        // the other conditions.
        assert_eq!(read.metadata.labels, None);
        assert_eq!(read.metadata.annotations, None);
        let managers: Vec<_> = read.managed_fields().iter().map(|e| &e.manager).collect();
        assert_eq!(managers, [&Some(AUTOSCALER_MANAGER.to_string())]);
        assert_eq!(read.managed_fields()[0].fields_v1, None);
        let conditions = cached.status.as_ref().unwrap().conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "ReplicaFailure");

        // The same from a Deployment already read (the recorded scenarios feed those).
        assert_eq!(WatchedDeployment::from(&full), read);
        assert_eq!(CachedDeployment::from(&full), cached);
    }

    #[test]
    fn an_applied_deployment_read_as_the_cache_reads_it_keeps_what_the_reconciler_reads() {
        let read: WatchedDeployment = serde_json::from_value(watched()).unwrap();
        let full: Deployment = serde_json::from_value(watched()).unwrap();
        let applied = read.into_deployment();
        assert_eq!(applied.metadata, full.metadata);
        assert_eq!(applied.status, full.status);
        assert_eq!(Instances::of(&applied), Instances::of(&full));
        assert!(autoscaler_owns_replicas(&applied));
        assert_eq!(
            crate::function::status::replica_failure(&applied),
            crate::function::status::replica_failure(&full),
        );
        // Not read: the pod template.
        let spec = applied.spec.unwrap();
        assert_eq!(spec.template, Default::default());
        assert_eq!(spec.replicas, Some(2));
    }

    #[test]
    fn a_watched_deployment_takes_a_fraction_of_a_deployments_size() {
        assert!(
            std::mem::size_of::<WatchedDeployment>() * 4 < std::mem::size_of::<Deployment>(),
            "{} bytes against {}",
            std::mem::size_of::<WatchedDeployment>(),
            std::mem::size_of::<Deployment>()
        );
    }

    #[test]
    fn the_cached_children_take_less_than_their_metadata_alone() {
        let metadata = std::mem::size_of::<ObjectMeta>();
        for (kind, size) in [
            ("Deployment", std::mem::size_of::<CachedDeployment>()),
            ("Service", std::mem::size_of::<CachedService>()),
        ] {
            assert!(size < metadata, "{kind}: {size} bytes against {metadata}");
        }
    }

    #[test]
    fn a_deployment_without_a_replica_failure_keeps_no_conditions() {
        let mut watched = watched();
        watched["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .pop();
        let cached =
            CachedDeployment::from(&serde_json::from_value::<Deployment>(watched).unwrap());
        assert_eq!(cached.status.unwrap().conditions, None);
    }

    #[test]
    fn a_deployment_the_autoscaler_never_wrote_keeps_no_managed_fields() {
        let mut watched = watched();
        watched["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .pop();
        let full = serde_json::from_value::<Deployment>(watched).unwrap();
        assert_eq!(WatchedDeployment::from(&full).metadata.managed_fields, None);
        let cached = CachedDeployment::from(&full);
        assert!(!cached.autoscaled);
        assert!(!autoscaler_owns_replicas(&cached.to_deployment()));
    }

    fn service_owned_by(owners: serde_json::Value) -> WatchedService {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "thumbnail", "namespace": "media", "ownerReferences": owners},
        }))
        .unwrap()
    }

    fn service_named(namespace: &str, name: &str, version: &str) -> CachedService {
        let watched: WatchedService = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": version},
        }))
        .unwrap();
        CachedService::from(&watched)
    }

    #[test]
    fn a_cached_service_keeps_its_cluster_ip_and_its_controllers_uid() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hello", "namespace": "shop", "uid": "s-1",
                         "resourceVersion": "7", "labels": {"fargo.dev/function": "hello"},
                         "ownerReferences": [
                             {"apiVersion": "v1", "kind": "ConfigMap", "name": "other",
                              "uid": "c-1"},
                             {"apiVersion": "fargo.dev/v1alpha1", "kind": "ServerlessFunction",
                              "name": "hello", "uid": "f-1", "controller": true}]},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
        }))
        .unwrap();
        let watched: WatchedService =
            serde_json::from_value(serde_json::to_value(&service).unwrap()).unwrap();
        let cached = CachedService::from(&watched);
        assert_eq!(cached, CachedService::from(&service));
        assert_eq!(
            cached,
            CachedService {
                meta: ChildMeta {
                    namespace: "shop".into(),
                    name: "hello".into(),
                    uid: Some("s-1".into()),
                    resource_version: Some("7".into()),
                    controller_uid: Some("f-1".into()),
                },
                cluster_ip: Some("None".into()),
            }
        );
    }

    #[tokio::test]
    async fn a_child_cache_holds_what_its_watch_said_last_by_namespace_and_name() {
        let (cache, mut writer) = ChildCache::<CachedService>::new();
        let version = |namespace: &str, name: &str| {
            cache
                .get(namespace, name)
                .and_then(|s| s.meta.resource_version.clone())
        };
        writer.apply(watcher::Event::Init);
        writer.apply(watcher::Event::InitApply(service_named("a", "one", "1")));
        // A relist is not read before it is whole.
        assert_eq!(version("a", "one"), None);
        writer.apply(watcher::Event::InitDone);
        cache.wait_until_ready().await;
        assert_eq!(version("a", "one").as_deref(), Some("1"));
        // Same name, other namespace: apart.
        assert_eq!(version("b", "one"), None);

        writer.apply(watcher::Event::Apply(service_named("a", "one", "2")));
        writer.apply(watcher::Event::Apply(service_named("b", "one", "3")));
        assert_eq!(version("a", "one").as_deref(), Some("2"));
        assert_eq!(version("b", "one").as_deref(), Some("3"));
        writer.apply(watcher::Event::Delete(service_named("a", "one", "2")));
        assert_eq!(version("a", "one"), None);
        assert_eq!(version("b", "one").as_deref(), Some("3"));

        // A relist replaces everything: what it no longer lists is gone.
        writer.apply(watcher::Event::Init);
        writer.apply(watcher::Event::InitApply(service_named("c", "two", "4")));
        writer.apply(watcher::Event::InitDone);
        assert_eq!(version("b", "one"), None);
        assert_eq!(version("c", "two").as_deref(), Some("4"));

        let replayed = ChildCache::of([service_named("d", "three", "5")]);
        replayed.wait_until_ready().await;
        assert!(replayed.get("d", "three").is_some());
    }

    #[test]
    fn a_child_triggers_the_function_that_controls_it_and_no_other_owner() {
        let owner = |api_version: &str, kind: &str, name: &str, controller: bool| {
            serde_json::json!({"apiVersion": api_version, "kind": kind, "name": name,
                               "uid": "u", "controller": controller})
        };
        let child = service_owned_by(serde_json::json!([
            owner("fargo.dev/v1alpha1", "ServerlessFunction", "other", false),
            owner("apps/v1", "Deployment", "thumbnail", true),
            owner(
                "fargo.dev/v1alpha1",
                "ServerlessFunction",
                "thumbnail",
                true
            ),
        ]));
        let function = controlling_function(&child).expect("the controlling function");
        assert_eq!(
            (function.name.as_str(), function.namespace.as_deref()),
            ("thumbnail", Some("media"))
        );

        // Not a function's child: another kind, another API version, or only owned.
        for owners in [
            serde_json::json!([owner("apps/v1", "Deployment", "thumbnail", true)]),
            serde_json::json!([owner(
                "fargo.dev/v2",
                "ServerlessFunction",
                "thumbnail",
                true
            )]),
            serde_json::json!([owner(
                "fargo.dev/v1alpha1",
                "ServerlessFunction",
                "thumbnail",
                false
            )]),
            serde_json::json!([]),
        ] {
            assert_eq!(controlling_function(&service_owned_by(owners)), None);
        }
    }

    #[test]
    fn added_changed_and_deleted_objects_are_touched_and_relist_markers_are_not() {
        let service = service_owned_by(serde_json::json!([]));
        for event in [
            watcher::Event::Apply(service.clone()),
            watcher::Event::InitApply(service.clone()),
            watcher::Event::Delete(service.clone()),
        ] {
            assert_eq!(touched(&event), Some(&service));
        }
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            assert_eq!(touched::<WatchedService>(&event), None);
        }
    }
}
