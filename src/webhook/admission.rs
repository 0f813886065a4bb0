//! The admission decisions, as pure functions of the request and the profiles: the mutating
//! webhook turns a matched pod into a Fargate pod, the validating webhook refuses what a Fargate
//! pod may not do.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use crate::api::CAPACITY_ANNOTATION;
use crate::api::profile::FargateProfile;
use crate::profile::{
    Capacity, Match, Need, SizingError, fargate_capacity, fargate_menu, fargate_pod, match_pod,
    missing_hardening, rejection_message, size_for, violations,
};

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
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    match match_pod(namespace, labels, owners, profiles) {
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
/// container and the field.
pub fn validate(
    request: &AdmissionRequest<Pod>,
    profiles: &[Arc<FargateProfile>],
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
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

#[cfg(test)]
mod tests;
