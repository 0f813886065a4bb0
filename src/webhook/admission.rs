//! The admission decisions, as pure functions of the request and the profiles: the mutating
//! webhook turns a matched pod into a Fargate pod, the validating webhook refuses what a Fargate
//! pod may not do — when it is created, and afterwards: a pod keeps its profile label and the
//! size it was provisioned with, and the ephemeral containers `kubectl debug` adds to it obey the
//! same rules as its other containers.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use crate::api::profile::FargateProfile;
use crate::api::{CAPACITY_ANNOTATION, PROFILE_LABEL};
use crate::profile::{
    Capacity, Match, Need, SizingError, fargate_capacity, fargate_menu, fargate_pod, match_pod,
    missing_hardening, new_ephemeral_container_violations, rejection_message, relabelling,
    size_for, violations,
};

/// The subresource `kubectl debug` adds ephemeral containers through.
const EPHEMERAL_CONTAINERS: &str = "ephemeralcontainers";

/// What matching says of the pod of a request.
enum Matched<'a, 'p> {
    /// Not a pod creation, or no profile takes the pod: admit it untouched.
    Untouched,
    /// The pod forces a profile that cannot take it.
    Refused(String),
    /// The pod being created and the profile that takes it.
    Profile(&'a Pod, &'p FargateProfile),
}

fn matched<'a, 'p>(
    request: &'a AdmissionRequest<Pod>,
    profiles: &'p [Arc<FargateProfile>],
) -> Matched<'a, 'p> {
    let Some(pod) = request
        .object
        .as_ref()
        .filter(|_| request.operation == Operation::Create)
    else {
        return Matched::Untouched;
    };
    let namespace = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or_default();
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    match match_pod(namespace, labels, profiles) {
        Ok(Match::Profile(profile)) => Matched::Profile(pod, profile),
        Ok(Match::None) => Matched::Untouched,
        Err(error) => Matched::Refused(error.to_string()),
    }
}

/// The mutating webhook: label, runtime class, size, scheduling and hardening for a matched pod.
pub fn mutate(
    request: &AdmissionRequest<Pod>,
    profiles: &[Arc<FargateProfile>],
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let (pod, profile) = match matched(request, profiles) {
        Matched::Profile(pod, profile) => (pod, profile),
        Matched::Untouched => return response,
        Matched::Refused(reason) => return response.deny(reason),
    };
    // Refused here already, with fargo's reason: hardening a privileged container would make the
    // API server refuse the pod first with a message about the contradiction fargo introduced.
    let found = violations(profile, pod);
    if !found.is_empty() {
        return response.deny(rejection_message(&found));
    }
    let capacity = match resize(profile, pod) {
        Ok(capacity) => capacity,
        Err(error) => {
            return response.deny(format!(
                "profile {:?} cannot size this pod: {error}",
                kube::ResourceExt::name_any(profile)
            ));
        }
    };
    let mutated = fargate_pod(profile, pod, capacity);
    let patch = match (serde_json::to_value(pod), serde_json::to_value(&mutated)) {
        (Ok(before), Ok(after)) => json_patch::diff(&before, &after),
        (Err(error), _) | (_, Err(error)) => {
            return AdmissionResponse::invalid(format!("the pod could not be serialized: {error}"));
        }
    };
    match response.with_patch(patch) {
        Ok(response) => response,
        Err(error) => {
            AdmissionResponse::invalid(format!("the patch could not be serialized: {error}"))
        }
    }
}

/// The pod's Fargate size. With `reinvocationPolicy: IfNeeded` the API server calls the webhook
/// again with the pod fargo already sized whenever a later webhook changed it (a sidecar injector,
/// say). fargo's own pod-level resources already include the overhead, so sizing them again would
/// add it twice and grow the pod a size per call: such a pod is sized from its containers instead,
/// and keeps at least its earlier size, which covered any pod-level resources it first came with.
fn resize(profile: &FargateProfile, pod: &Pod) -> Result<Option<Capacity>, SizingError> {
    let Some(earlier) = earlier_capacity(pod) else {
        return size_for(profile, pod);
    };
    let mut containers_only = pod.clone();
    if let Some(resources) = containers_only
        .spec
        .as_mut()
        .and_then(|s| s.resources.as_mut())
    {
        for list in [&mut resources.requests, &mut resources.limits]
            .into_iter()
            .flatten()
        {
            list.remove("cpu");
            list.remove("memory");
        }
    }
    Ok(size_for(profile, &containers_only)?.map(|capacity| {
        fargate_capacity(Need {
            millicpu: capacity.millicpu.max(earlier.millicpu),
            memory_bytes: capacity.memory_bytes.max(earlier.memory_bytes),
        })
        .expect("the largest Fargate size covers every other")
    }))
}

/// The size fargo gave the pod on an earlier call, known by its annotation together with pod-level
/// requests and limits of exactly that size.
fn earlier_capacity(pod: &Pod) -> Option<Capacity> {
    let annotation = pod
        .metadata
        .annotations
        .as_ref()?
        .get(CAPACITY_ANNOTATION)?;
    let capacity = *fargate_menu()
        .iter()
        .find(|capacity| capacity.annotation() == *annotation)?;
    let resources = pod.spec.as_ref()?.resources.as_ref()?;
    let (cpu, memory) = (capacity.cpu_quantity(), capacity.memory_quantity());
    [&resources.requests, &resources.limits]
        .into_iter()
        .all(|list| {
            list.as_ref().is_some_and(|list| {
                list.get("cpu") == Some(&cpu) && list.get("memory") == Some(&memory)
            })
        })
        .then_some(capacity)
}

/// The validating webhook: refuses privileged and host-level access in a matched pod, and, for a
/// `Restricted` profile, the hardening a later mutation took away, naming the profile, the
/// container and the field; on an update, refuses any change to the pod's profile label, any
/// change to the capacity annotation of a pod that carries one, and, through
/// `pods/ephemeralcontainers`, ephemeral containers its profile forbids.
pub fn validate(
    request: &AdmissionRequest<Pod>,
    profiles: &[Arc<FargateProfile>],
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if request.operation == Operation::Update {
        return match update_refusal(request, profiles) {
            Some(reason) => response.deny(reason),
            None => response,
        };
    }
    let (pod, profile) = match matched(request, profiles) {
        Matched::Profile(pod, profile) => (pod, profile),
        Matched::Untouched => return response,
        Matched::Refused(reason) => return response.deny(reason),
    };
    let mut found = violations(profile, pod);
    found.extend(missing_hardening(profile, pod));
    if found.is_empty() {
        response
    } else {
        response.deny(rejection_message(&found))
    }
}

/// Why an update of a pod is refused, if it is. The labels and annotations judged are the pod's
/// as stored and as it would be stored: the API server hands the validating webhooks the object
/// after its own update rules, so a subresource that cannot change them shows them unchanged.
///
/// A pod carrying the profile label keeps its capacity annotation as admitted, or its absence
/// (a profile that does not size pods): [`Resizing`].
///
/// The pod's profile is read from its label, not matched again: the label is what the pod was
/// admitted under, and the profile's rules hold for the pod even once the profile is deleted
/// (`deletionPolicy: Orphan` leaves its pods running).
fn update_refusal(
    request: &AdmissionRequest<Pod>,
    profiles: &[Arc<FargateProfile>],
) -> Option<String> {
    let Some(pod) = request.object.as_ref() else {
        return Some("the update carries no pod to judge".into());
    };
    let old = request.old_object.as_ref();
    let empty = BTreeMap::new();
    // Without the stored pod, every profile label counts as new: refused rather than trusted.
    let old_labels = old
        .and_then(|old| old.metadata.labels.as_ref())
        .unwrap_or(&empty);
    let new_labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(relabelling) = relabelling(&request.name, old_labels, new_labels) {
        return Some(relabelling.to_string());
    }
    if new_labels.contains_key(PROFILE_LABEL) {
        let (before, after) = (old.and_then(capacity_annotation), capacity_annotation(pod));
        if let Some(resizing) = resizing(&request.name, before, after) {
            return Some(resizing.to_string());
        }
    }
    if request.sub_resource.as_deref() != Some(EPHEMERAL_CONTAINERS) {
        return None;
    }
    let profile = new_labels.get(PROFILE_LABEL)?;
    let level = profiles
        .iter()
        .find(|p| p.metadata.name.as_ref() == Some(profile))
        .map(|p| p.spec.pod_security)
        .unwrap_or_default();
    let found = new_ephemeral_container_violations(profile, level, old, pod);
    (!found.is_empty()).then(|| rejection_message(&found))
}

/// A change to the capacity annotation of a pod admitted under a profile. The annotation is what
/// the pod is metered at ([`crate::usage::profiles`]), and tenants may edit their pods'
/// annotations: a pod that could say it is smaller would be billed less than it was given.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
enum Resizing {
    #[error(
        "the annotation {CAPACITY_ANNOTATION}={size:?} cannot be added to pod {pod:?}: a Fargate \
         pod's provisioned size is set when the pod is admitted, and its use is metered at that \
         size; create the pod anew to give it another size"
    )]
    Added { pod: String, size: String },

    #[error(
        "the annotation {CAPACITY_ANNOTATION}={size:?} cannot be removed from pod {pod:?}: a \
         Fargate pod's provisioned size is set when the pod is admitted, and its use is metered \
         at that size; create the pod anew to give it another size"
    )]
    Removed { pod: String, size: String },

    #[error(
        "the annotation {CAPACITY_ANNOTATION} of pod {pod:?} cannot change from {from:?} to \
         {to:?}: a Fargate pod's provisioned size is set when the pod is admitted, and its use \
         is metered at that size; create the pod anew to give it another size"
    )]
    Changed {
        pod: String,
        from: String,
        to: String,
    },
}

fn capacity_annotation(pod: &Pod) -> Option<&String> {
    pod.metadata.annotations.as_ref()?.get(CAPACITY_ANNOTATION)
}

/// The change from capacity annotation `old` to `new` of pod `pod`, if it is one.
fn resizing(pod: &str, old: Option<&String>, new: Option<&String>) -> Option<Resizing> {
    let pod = pod.to_string();
    match (old, new) {
        (None, Some(size)) => Some(Resizing::Added {
            pod,
            size: size.clone(),
        }),
        (Some(size), None) => Some(Resizing::Removed {
            pod,
            size: size.clone(),
        }),
        (Some(from), Some(to)) if from != to => Some(Resizing::Changed {
            pod,
            from: from.clone(),
            to: to.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
