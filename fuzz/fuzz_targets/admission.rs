//! Admission webhook: any bytes the API server might send, read as the webhook reads them (an
//! `AdmissionReview<Pod>`), then judged by both webhooks against a fixed set of profiles.
//!
//! Checked on every request that reads as a review:
//! - both answers carry the request's uid and serialize as an AdmissionReview;
//! - the validating webhook never patches;
//! - the mutating webhook's patch applies to the pod as the API server holds it, and leaves a Pod;
//! - that pod passes the validating webhook, and mutating it again changes nothing;
//! - a creation the mutating webhook leaves untouched is admitted by the validating one too;
//! - an update that adds, removes or changes the profile label is refused.

#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use fargo::api::PROFILE_LABEL;
use fargo::api::profile::FargateProfile;
use fargo::webhook::admission::{mutate, validate};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// A Baseline profile for every `team-*` namespace, a Restricted one for the backend pods of
/// `vault`, and one that leaves sizing to the pods of `jobs`.
static PROFILES: LazyLock<Vec<Arc<FargateProfile>>> = LazyLock::new(|| {
    [
        json!({
            "apiVersion": "fargo.dev/v1alpha1",
            "kind": "FargateProfile",
            "metadata": {"name": "team", "uid": "0b7e4f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"},
            "spec": {
                "selectors": [{"namespace": "team-*"}],
                "runtimeClassName": "gvisor",
                "scheduling": {
                    "nodeSelector": {"fargo.dev/capacity": "fargate"},
                    "tolerations": [{"key": "fargo.dev/dedicated", "operator": "Exists",
                                     "effect": "NoSchedule"}],
                },
            },
        }),
        json!({
            "apiVersion": "fargo.dev/v1alpha1",
            "kind": "FargateProfile",
            "metadata": {"name": "vault", "uid": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"},
            "spec": {
                "selectors": [{"namespace": "vault", "labels": {"tier": "backend"}}],
                "podSecurity": "Restricted",
                "sizing": {"overhead": "512Mi"},
            },
        }),
        json!({
            "apiVersion": "fargo.dev/v1alpha1",
            "kind": "FargateProfile",
            "metadata": {"name": "batch", "uid": "5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e9f"},
            "spec": {"selectors": [{"namespace": "jobs"}], "sizing": {"policy": "None"}},
        }),
    ]
    .into_iter()
    .map(|profile| Arc::new(serde_json::from_value(profile).expect("valid profile fixture")))
    .collect()
});

fuzz_target!(|data: &[u8]| {
    // What the webhook's `Json<AdmissionReview<Pod>>` extractor and `decide` accept.
    let Ok(review) = serde_json::from_slice::<AdmissionReview<Pod>>(data) else {
        return;
    };
    let Ok(request): Result<AdmissionRequest<Pod>, _> = review.try_into() else {
        return;
    };
    let profiles = PROFILES.as_slice();

    let mutation = mutate(&request, profiles);
    let validation = validate(&request, profiles);
    check_answer(&request, &mutation);
    check_answer(&request, &validation);
    assert!(validation.patch.is_none(), "the validating webhook patched");

    if request.operation == Operation::Update {
        check_update(&request, &validation);
    }
    if request.operation != Operation::Create || !mutation.allowed {
        return;
    }
    let Some(patch) = &mutation.patch else {
        // Untouched: no profile takes the pod, so there is nothing to validate either.
        assert!(
            validation.allowed,
            "a pod the mutating webhook leaves alone is refused: {}",
            validation.result.message
        );
        return;
    };
    let pod = request.object.as_ref().expect("a created pod was patched");
    let admitted = patched(pod, patch);

    let mut again = request.clone();
    again.object = Some(admitted.clone());
    let validation = validate(&again, profiles);
    assert!(
        validation.allowed,
        "the mutated pod is refused by the validating webhook: {}",
        validation.result.message
    );

    let mutation = mutate(&again, profiles);
    assert!(
        mutation.allowed,
        "mutating the mutated pod again refuses it: {}",
        mutation.result.message
    );
    if let Some(patch) = &mutation.patch {
        assert_eq!(
            serde_json::to_value(patched(&admitted, patch)).expect("a pod serializes"),
            serde_json::to_value(&admitted).expect("a pod serializes"),
            "mutating the mutated pod again changes it"
        );
    }
});

/// What the API server requires of every answer: the request's uid, and a review it can read.
fn check_answer(request: &AdmissionRequest<Pod>, response: &AdmissionResponse) {
    assert_eq!(
        response.uid, request.uid,
        "the answer names another request"
    );
    let review =
        serde_json::to_value(response.clone().into_review()).expect("the answer serializes");
    assert_eq!(review["response"]["allowed"], json!(response.allowed));
}

/// `pod` after the JSON Patch `bytes`, applied as the API server applies it: to the pod as JSON.
fn patched(pod: &Pod, bytes: &[u8]) -> Pod {
    let patch: json_patch::Patch =
        serde_json::from_slice(bytes).expect("the patch is a JSON Patch");
    let mut object: Value = serde_json::to_value(pod).expect("a pod serializes");
    json_patch::patch(&mut object, &patch).expect("the patch applies to the pod");
    serde_json::from_value(object).expect("the patched pod is still a Pod")
}

/// A pod keeps the profile label it was admitted with, and an update without the pod is refused.
fn check_update(request: &AdmissionRequest<Pod>, validation: &AdmissionResponse) {
    let Some(pod) = &request.object else {
        assert!(!validation.allowed, "an update without a pod is admitted");
        return;
    };
    let empty = BTreeMap::new();
    let label = |pod: Option<&Pod>| {
        pod.and_then(|pod| pod.metadata.labels.as_ref())
            .unwrap_or(&empty)
            .get(PROFILE_LABEL)
            .cloned()
    };
    if label(request.old_object.as_ref()) != label(Some(pod)) {
        assert!(
            !validation.allowed,
            "an update changing the profile label is admitted"
        );
    }
}
