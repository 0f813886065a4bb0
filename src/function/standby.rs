//! Standby pods (`spec.scale.standby`): while a function is at zero, one pod of it waits,
//! scheduled and started with its network, running `fargo-standby` in place of the function's
//! container. When the function's Deployment goes from 0 replicas to more, the standby pod is
//! woken: its container's image becomes the function's (a pod's image is the one part of its
//! containers that may change; the kubelet restarts the container with it) and it takes the
//! labels of the function's current ReplicaSet, which adopts it. The pod's IP is already known,
//! so its EndpointSlice lists it as soon as its labels match the Service, and the activator
//! probes it there. The ReplicaSet, scaled to 1 by the same wake, may have created a pod of its
//! own meanwhile; once the standby pod is adopted it has one too many and deletes the newer,
//! unscheduled or pending one first.
//!
//! - [`pod`]: the standby pod of a function from its ReplicaSet (pure);
//! - [`wake_patch`]: the JSON patch that wakes it (pure);
//! - [`profiles_agree`] and [`may_wake`]: a standby pod is made, and woken, only when the
//!   profiles take it as they take the function's pods (pure);
//! - [`leaving_zero`] and [`Waker`]: a function's Deployment asking for replicas with none yet,
//!   seen by the Deployment cache, wakes its standby pod at once, without waiting for the
//!   reconciler (which keeps one standby pod per function at zero).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use super::build::CONTAINER_NAME;
use crate::api::{
    FUNCTION_LABEL, FargateProfile, PROFILE_LABEL, STANDBY_LABEL, ServerlessFunction,
};
use crate::caches::{FunctionStore, WatchedDeployment, live};
use crate::profile::matching::match_pod;

/// The label the Deployment controller gives a ReplicaSet and its pods: a hash of the pod
/// template, part of the ReplicaSet's selector.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// On a standby pod: the `pod-template-hash` of the ReplicaSet it was made from, which it takes
/// as a label when woken.
pub const TEMPLATE_HASH_ANNOTATION: &str = "fargo.dev/pod-template-hash";
/// On a standby pod: the function's image, which its container takes when woken.
pub const IMAGE_ANNOTATION: &str = "fargo.dev/image";
/// The Deployment controller's revision of a ReplicaSet: the highest is the current one.
const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// The function's current ReplicaSet among `sets`: the one of the highest revision that the
/// Deployment of uid `deployment_uid` controls.
pub fn current_replica_set<'a>(
    sets: &'a [ReplicaSet],
    deployment_uid: &str,
) -> Option<&'a ReplicaSet> {
    let revision = |set: &ReplicaSet| {
        set.annotations()
            .get(REVISION_ANNOTATION)
            .and_then(|revision| revision.parse::<u64>().ok())
            .unwrap_or(0)
    };
    sets.iter()
        .filter(|set| {
            set.owner_references()
                .iter()
                .any(|owner| owner.controller == Some(true) && owner.uid == deployment_uid)
        })
        .max_by_key(|set| revision(set))
}

/// The `pod-template-hash` of a ReplicaSet.
pub fn template_hash(set: &ReplicaSet) -> Option<&str> {
    set.labels()
        .get(POD_TEMPLATE_HASH_LABEL)
        .map(String::as_str)
}

/// The standby pod of `function`, made from the pod template of its ReplicaSet `set`: the same
/// pod, but labelled `fargo.dev/standby-of` instead of the labels that select it (so that
/// neither the ReplicaSet nor the Service counts it while it waits), its container running
/// `standby_image`, and owned (not controlled) by the function, so that the ReplicaSet may
/// adopt it and the garbage collector removes it with the function. `None` when the template
/// has no function container or the set no `pod-template-hash`.
pub fn pod(function: &ServerlessFunction, set: &ReplicaSet, standby_image: &str) -> Option<Pod> {
    let name = function.name_any();
    let hash = template_hash(set)?;
    let template = set.spec.as_ref()?.template.as_ref()?;
    let mut spec = template.spec.clone()?;
    let container = spec
        .containers
        .iter_mut()
        .find(|container| container.name == CONTAINER_NAME)?;
    let image = container.image.replace(standby_image.to_string())?;
    let template_meta = template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.remove(FUNCTION_LABEL);
    labels.remove(POD_TEMPLATE_HASH_LABEL);
    labels.insert(STANDBY_LABEL.to_string(), name.clone());
    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert(TEMPLATE_HASH_ANNOTATION.to_string(), hash.to_string());
    annotations.insert(IMAGE_ANNOTATION.to_string(), image);
    let mut owner = function.controller_owner_ref(&())?;
    owner.controller = None;
    Some(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-standby-")),
            namespace: function.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// Whether `pod` is a standby pod made from the ReplicaSet of `pod-template-hash` `hash`.
pub fn made_from(pod: &Pod, hash: &str) -> bool {
    pod.annotations()
        .get(TEMPLATE_HASH_ANNOTATION)
        .map(String::as_str)
        == Some(hash)
}

/// The JSON patch that wakes the standby pod `pod` of `function`: it gives the function
/// container the image it was made for and the pod the labels of its ReplicaSet, and takes
/// away the standby label. Its first test makes a second wake of the same pod fail rather than
/// act twice. `None` when `pod` is not a standby pod of `function` made by fargo.
pub fn wake_patch(pod: &Pod, function: &str) -> Option<json_patch::Patch> {
    let labels = pod.labels();
    if labels.get(STANDBY_LABEL).map(String::as_str) != Some(function) {
        return None;
    }
    let hash = pod.annotations().get(TEMPLATE_HASH_ANNOTATION)?;
    let image = pod.annotations().get(IMAGE_ANNOTATION)?;
    let index = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .position(|container| container.name == CONTAINER_NAME)?;
    let label = |key: &str| {
        format!(
            "/metadata/labels/{}",
            key.replace('~', "~0").replace('/', "~1")
        )
    };
    let patch = serde_json::json!([
        {"op": "test", "path": label(STANDBY_LABEL), "value": function},
        {"op": "test", "path": format!("/spec/containers/{index}/name"), "value": CONTAINER_NAME},
        {"op": "remove", "path": label(STANDBY_LABEL)},
        {"op": "add", "path": label(FUNCTION_LABEL), "value": function},
        {"op": "add", "path": label(POD_TEMPLATE_HASH_LABEL), "value": hash},
        {"op": "replace", "path": format!("/spec/containers/{index}/image"), "value": image},
    ]);
    serde_json::from_value(patch).ok()
}

/// The labels `standby`, a standby pod of `function`, has once woken (see [`wake_patch`]).
pub fn woken_labels(standby: &Pod, function: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = standby.labels().clone();
    if labels.remove(STANDBY_LABEL)? != function {
        return None;
    }
    let hash = standby.annotations().get(TEMPLATE_HASH_ANNOTATION)?;
    labels.insert(FUNCTION_LABEL.to_string(), function.to_string());
    labels.insert(POD_TEMPLATE_HASH_LABEL.to_string(), hash.clone());
    Some(labels)
}

/// The profile `profiles` give a pod with `labels` created in `namespace` (`Ok(None)`: none),
/// or `Err` when the webhook would refuse it.
fn profile_of(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    profiles: &[Arc<FargateProfile>],
) -> Result<Option<String>, ()> {
    match_pod(namespace, labels, profiles)
        .map(|matched| matched.profile().map(ResourceExt::name_any))
        .map_err(|_| ())
}

/// Whether a standby pod with `standby` labels, created in `namespace`, is taken by the same
/// profile (or none) as a pod with the labels it would have once woken: a profile is chosen
/// when a pod is created, so a standby pod must not become a pod that a profile would have
/// taken otherwise.
pub fn profiles_agree(
    namespace: &str,
    standby: &BTreeMap<String, String>,
    woken: &BTreeMap<String, String>,
    profiles: &[Arc<FargateProfile>],
) -> bool {
    let standby = profile_of(namespace, standby, profiles);
    standby.is_ok() && standby == profile_of(namespace, woken, profiles)
}

/// Whether the admitted standby pod `standby` may be woken as a pod of `function` under
/// `profiles` as they are now: the profile it was given when created (the label the webhook
/// keeps on every Fargate pod) is the one a pod with its woken labels would get.
pub fn may_wake(standby: &Pod, function: &str, profiles: &[Arc<FargateProfile>]) -> bool {
    let (Some(namespace), Some(woken)) = (standby.namespace(), woken_labels(standby, function))
    else {
        return false;
    };
    let given = standby.labels().get(PROFILE_LABEL).cloned();
    profile_of(&namespace, &woken, profiles) == Ok(given)
}

/// The standby pods of `function` that `pods` holds: in its namespace, labelled with its name,
/// owned by it (by uid), not being deleted.
pub fn of_function(pods: &Store<Pod>, function: &ServerlessFunction) -> Vec<Arc<Pod>> {
    let (namespace, name, uid) = (function.namespace(), function.name_any(), function.uid());
    pods.state()
        .into_iter()
        .filter(|pod| {
            pod.namespace() == namespace
                && pod.labels().get(STANDBY_LABEL) == Some(&name)
                && pod
                    .owner_references()
                    .iter()
                    .any(|owner| Some(&owner.uid) == uid.as_ref())
                && pod.metadata.deletion_timestamp.is_none()
        })
        .collect()
}

/// The function (namespace, name) whose Deployment, as the Deployment cache sees it, asks for
/// replicas and has none yet: whose standby pod, if it has one, is to be woken.
pub fn leaving_zero(event: &watcher::Event<WatchedDeployment>) -> Option<(String, String)> {
    let (watcher::Event::Apply(deployment) | watcher::Event::InitApply(deployment)) = event else {
        return None;
    };
    let wanted = deployment.spec.as_ref()?.replicas.unwrap_or(1);
    let has = deployment
        .status
        .as_ref()
        .and_then(|status| status.replicas)
        .unwrap_or(0);
    (wanted > 0 && has == 0)
        .then(|| Some((deployment.namespace()?, deployment.function.clone()?)))?
}

/// Wakes the standby pod of each function it is told of (by [`leaving_zero`], through the
/// channel), when the function asks for one: its Deployment's events while it has no pod yet
/// may tell of it more than once, so a function being woken is not woken again meanwhile.
pub struct Waker {
    pub client: Client,
    pub functions: FunctionStore,
    pub standby_pods: Store<Pod>,
    pub profiles: Store<FargateProfile>,
}

impl Waker {
    /// Wakes standby pods until the channel closes; each wake runs on its own task.
    pub async fn run(self, mut leaving_zero: mpsc::UnboundedReceiver<(String, String)>) {
        let waker = Arc::new(self);
        let waking: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
        while let Some(key) = leaving_zero.recv().await {
            if !lock(&waking).insert(key.clone()) {
                continue;
            }
            let (waker, waking) = (waker.clone(), waking.clone());
            tokio::spawn(async move {
                waker.wake(&key.0, &key.1).await;
                lock(&waking).remove(&key);
            });
        }
    }

    async fn wake(&self, namespace: &str, name: &str) {
        let started = Instant::now();
        let guard = self.functions.get(&ObjectRef::new(name).within(namespace));
        let Some(function) = guard
            .as_deref()
            .and_then(live)
            .filter(|function| function.spec.scale.standby)
        else {
            return;
        };
        // A running pod with its IP first: it wakes fastest.
        let mut standby = of_function(&self.standby_pods, function);
        standby.sort_by_key(|pod| {
            pod.status
                .as_ref()
                .and_then(|status| status.pod_ip.as_ref())
                .is_none()
        });
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let profiles = self.profiles.state();
        for pod in standby {
            let Some(patch) = wake_patch(&pod, name) else {
                continue;
            };
            let pod_name = pod.name_any();
            if !may_wake(&pod, name, &profiles) {
                // The reconciler replaces it at zero; the ReplicaSet's own pod serves now.
                tracing::info!(
                    namespace,
                    function = name,
                    pod = pod_name,
                    "standby pod not woken: the profiles would now take the function's pods \
                     otherwise than when it was made"
                );
                continue;
            }
            match pods
                .patch(
                    &pod_name,
                    &PatchParams::default(),
                    &Patch::Json::<()>(patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        namespace, function = name, pod = pod_name,
                        elapsed = ?started.elapsed(), "standby pod woken"
                    );
                    return;
                }
                Err(error) => tracing::info!(
                    namespace, function = name, pod = pod_name, %error,
                    "could not wake a standby pod"
                ),
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
