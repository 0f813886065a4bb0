//! The reconcilers and the autoscaler's writes, replayed against API exchanges recorded from the
//! local cluster's API server (see `tests/common/exchange.rs`; `tests/exchanges_record.rs`
//! records them). No cluster is needed: `make unit` runs these.
//!
//! Each test states the calls the code must make, in order; the recording supplies the API
//! server's real answers, and the scenario must end as it did against the cluster.

mod common;

use std::future::Future;

use common::exchange::{Exchange, Fixture, load, replaying_client};
use common::scenarios::{
    FunctionInputs, ProfileInputs, ScaleInputs, perform_scale, reconcile_function,
    reconcile_profile,
};
use kube::Client;
use serde::de::DeserializeOwned;

/// Replays scenario `name` and returns the requests the code made, as `METHOD path` lines
/// without the query string.
async fn replay<I, F, Fut>(name: &str, run: F) -> Vec<String>
where
    I: DeserializeOwned,
    F: FnOnce(Client, I) -> Fut,
    Fut: Future<Output = String>,
{
    let fixture: Fixture<I> = load(name);
    let calls = calls(&fixture.exchanges);
    let (client, replay) = replaying_client(fixture.exchanges, fixture.ordered);
    let outcome = run(client, fixture.inputs).await;
    replay.finish().await;
    assert_eq!(outcome, fixture.outcome, "the scenario ended otherwise");
    calls
}

fn calls(exchanges: &[Exchange]) -> Vec<String> {
    exchanges
        .iter()
        .map(|e| {
            let path = e.path.split('?').next().unwrap_or_default();
            format!("{} {path}", e.method)
        })
        .collect()
}

#[tokio::test]
async fn a_new_function_gets_its_service_and_a_deployment_with_its_initial_replicas() {
    let calls = replay(
        "function_new",
        |client, inputs: FunctionInputs| async move { reconcile_function(client, &inputs).await },
    )
    .await;
    assert_eq!(
        calls,
        [
            "PATCH /api/v1/namespaces/recorded/services/thumbnail",
            // No GET of the Deployment: a function without a status, whose Deployment the
            // cache does not show, has none yet. One apply with the initial replicas, which
            // stay the controller's until the autoscaler changes them.
            "PATCH /apis/apps/v1/namespaces/recorded/deployments/thumbnail",
            "PATCH /apis/fargo.dev/v1alpha1/namespaces/recorded/serverlessfunctions/thumbnail/status",
        ]
    );
}

#[tokio::test]
async fn a_function_naming_a_missing_profile_starts_no_pods_and_says_why() {
    let calls = replay(
        "function_missing_profile",
        |client, inputs: FunctionInputs| async move { reconcile_function(client, &inputs).await },
    )
    .await;
    assert_eq!(
        calls,
        [
            "GET /apis/fargo.dev/v1alpha1/fargateprofiles/no-such-profile",
            "PATCH /api/v1/namespaces/recorded/services/resize",
            // No Deployment is applied, nor looked for: a function without a status, whose
            // Deployment the cache does not show, has none.
            "PATCH /apis/fargo.dev/v1alpha1/namespaces/recorded/serverlessfunctions/resize/status",
            "POST /apis/events.k8s.io/v1/namespaces/recorded/events",
        ]
    );
}

#[tokio::test]
async fn a_new_profile_first_gets_its_finalizer() {
    let calls = replay("profile_new", |client, inputs: ProfileInputs| async move {
        reconcile_profile(client, &inputs).await
    })
    .await;
    assert_eq!(
        calls,
        ["PATCH /apis/fargo.dev/v1alpha1/fargateprofiles/recorded-profile"]
    );
}

#[tokio::test]
async fn a_profile_labels_and_fences_its_namespaces_and_reports_a_missing_runtime_class() {
    let calls = replay(
        "profile_fences",
        |client, inputs: ProfileInputs| async move { reconcile_profile(client, &inputs).await },
    )
    .await;
    assert_eq!(
        calls,
        [
            "PATCH /api/v1/namespaces/recorded",
            "PATCH /apis/networking.k8s.io/v1/namespaces/recorded/networkpolicies/fargo-recorded-profile",
            "GET /apis/networking.k8s.io/v1/networkpolicies",
            "GET /apis/node.k8s.io/v1/runtimeclasses/no-such-runtime-class",
            "PATCH /apis/fargo.dev/v1alpha1/fargateprofiles/recorded-profile/status",
            "POST /apis/events.k8s.io/v1/namespaces/default/events",
            "POST /apis/events.k8s.io/v1/namespaces/default/events",
        ]
    );
}

#[tokio::test]
async fn a_deleted_profile_removes_its_policies_and_labels_then_its_finalizer() {
    let calls = replay(
        "profile_deleted",
        |client, inputs: ProfileInputs| async move { reconcile_profile(client, &inputs).await },
    )
    .await;
    assert_eq!(
        calls,
        [
            "PATCH /apis/fargo.dev/v1alpha1/fargateprofiles/recorded-profile/status",
            "GET /apis/networking.k8s.io/v1/networkpolicies",
            "DELETE /apis/networking.k8s.io/v1/namespaces/recorded/networkpolicies/fargo-recorded-profile",
            "PATCH /api/v1/namespaces/recorded",
            "PATCH /apis/fargo.dev/v1alpha1/fargateprofiles/recorded-profile",
        ]
    );
}

#[tokio::test]
async fn the_autoscaler_writes_replicas_an_event_and_the_last_request_time() {
    let mut calls = replay(
        "autoscaler_writes",
        |client, inputs: ScaleInputs| async move { perform_scale(client, &inputs).await },
    )
    .await;
    // Written concurrently: the order is not part of the contract.
    calls.sort();
    assert_eq!(
        calls,
        [
            "PATCH /apis/apps/v1/namespaces/recorded/deployments/thumbnail/scale",
            "PATCH /apis/fargo.dev/v1alpha1/namespaces/recorded/serverlessfunctions/thumbnail/status",
            "POST /apis/events.k8s.io/v1/namespaces/recorded/events",
        ]
    );
}
