//! Records the API exchanges that `tests/exchanges.rs` replays, against the local cluster's API
//! server, and fails when the code's requests no longer match the recording: run with
//! `FARGO_RECORD_EXCHANGES=1` to write them anew, then review the change to `tests/exchanges/`.

mod common;

use std::future::Future;

use common::exchange::{
    Exchange, Fixture, RECORD_ENV, RECORDED_NAMESPACE, fixture_path, load, recording_client,
    rename, save,
};
use common::namespaces::{unique_name, with_temp_ns};
use common::scenarios::{
    FunctionInputs, ProfileInputs, ScaleInputs, perform_scale, reconcile_function,
    reconcile_profile,
};
use common::wait::eventually;
use common::{client, install_crds};
use fargo::api::{FargateProfile, ServerlessFunction};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// The name the recorded profile scenarios give their profile.
const RECORDED_PROFILE: &str = "recorded-profile";

/// Runs scenario `name` against the cluster through a recording client, then checks the
/// recording against `tests/exchanges/<name>.json` (or writes it, with `FARGO_RECORD_EXCHANGES=1`).
async fn record<I, F, Fut>(name: &str, ordered: bool, inputs: I, names: &[(&str, &str)], run: F)
where
    I: Serialize + DeserializeOwned + Clone,
    F: FnOnce(Client, I) -> Fut,
    Fut: Future<Output = String>,
{
    let rewrite = std::env::var(RECORD_ENV).is_ok_and(|v| v == "1");
    let checked_in: Option<Fixture<serde_json::Value>> =
        (!rewrite && fixture_path(name).exists()).then(|| load(name));
    let (client, recording) = recording_client().await;
    let outcome = run(client, inputs.clone()).await;
    recording
        .settle(checked_in.as_ref().map(|f| f.exchanges.len()))
        .await;
    let fixture = rename(
        &Fixture {
            inputs,
            ordered,
            exchanges: recording.exchanges(),
            outcome,
        },
        names,
    );
    if rewrite {
        save(name, &fixture);
        return;
    }
    let checked_in = checked_in.unwrap_or_else(|| {
        panic!(
            "{} does not exist: run this test with {RECORD_ENV}=1 to record it",
            fixture_path(name).display()
        )
    });
    assert_eq!(
        requests(&fixture.exchanges, ordered),
        requests(&checked_in.exchanges, ordered),
        "scenario {name} makes other requests than recorded in {}: if the change is meant, run \
         this test with {RECORD_ENV}=1 and review the new recording",
        fixture_path(name).display()
    );
    assert_eq!(
        fixture.outcome, checked_in.outcome,
        "scenario {name} ends otherwise than recorded"
    );
}

fn requests(exchanges: &[Exchange], ordered: bool) -> Vec<String> {
    let mut keys: Vec<String> = exchanges
        .iter()
        .map(|e| serde_json::to_string_pretty(&e.request_key()).expect("serializes"))
        .collect();
    if !ordered {
        keys.sort();
    }
    keys
}

async fn create_function(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> ServerlessFunction {
    let function: ServerlessFunction = serde_json::from_value(json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "ServerlessFunction",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("a function");
    Api::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &function)
        .await
        .unwrap_or_else(|e| panic!("creating function {name}: {e}"))
}

async fn get<K>(api: &Api<K>, name: &str) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

#[tokio::test]
async fn function_reconciles_and_autoscaler_writes_match_their_recordings() {
    let client = client().await;
    install_crds(&client).await;
    with_temp_ns(&client, |client, namespace| async move {
        let names = [(namespace.as_str(), RECORDED_NAMESPACE)];
        let functions: Api<ServerlessFunction> = Api::namespaced(client.clone(), &namespace);

        create_function(
            &client,
            &namespace,
            "thumbnail",
            json!({"image": "fargo.dev/echo:dev", "scale": {"initial": 0}}),
        )
        .await;
        let inputs = FunctionInputs {
            function: get(&functions, "thumbnail").await,
            deployments: vec![],
        };
        record(
            "function_new",
            true,
            inputs,
            &names,
            |client, inputs| async move { reconcile_function(client, &inputs).await },
        )
        .await;

        let inputs = ScaleInputs {
            function: get(&functions, "thumbnail").await,
            from: 0,
            to: 1,
            last_request: "2026-11-28T12:00:00Z".parse().expect("a timestamp"),
        };
        record(
            "autoscaler_writes",
            false,
            inputs,
            &names,
            |client, inputs| async move { perform_scale(client, &inputs).await },
        )
        .await;

        create_function(
            &client,
            &namespace,
            "resize",
            json!({"image": "fargo.dev/echo:dev", "profile": "no-such-profile"}),
        )
        .await;
        let inputs = FunctionInputs {
            function: get(&functions, "resize").await,
            deployments: vec![],
        };
        record(
            "function_missing_profile",
            true,
            inputs,
            &names,
            |client, inputs| async move { reconcile_function(client, &inputs).await },
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn profile_reconciles_match_their_recordings() {
    let client = client().await;
    install_crds(&client).await;
    with_temp_ns(&client, |client, namespace| async move {
        let profile_name = unique_name("exchange-profile");
        let names = [
            (namespace.as_str(), RECORDED_NAMESPACE),
            (profile_name.as_str(), RECORDED_PROFILE),
        ];
        let profiles: Api<FargateProfile> = Api::all(client.clone());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let profile: FargateProfile = serde_json::from_value(json!({
            "apiVersion": "fargo.dev/v1alpha1",
            "kind": "FargateProfile",
            "metadata": {"name": profile_name},
            "spec": {
                "selectors": [{"namespace": namespace}],
                "runtimeClassName": "no-such-runtime-class",
            },
        }))
        .expect("a profile");
        profiles
            .create(&PostParams::default(), &profile)
            .await
            .expect("creating the profile");

        // Each step reconciles the profile as the API server has it now, with the namespace
        // as the cache would hold it.
        let step = |scenario: &'static str| {
            let (profiles, namespaces, names) = (&profiles, &namespaces, &names);
            let (profile_name, namespace) = (&profile_name, &namespace);
            async move {
                let profile = get(profiles, profile_name).await;
                let inputs = ProfileInputs {
                    namespaces: vec![get(namespaces, namespace).await],
                    profiles: vec![profile.clone()],
                    profile,
                };
                record(scenario, true, inputs, names, |client, inputs| async move {
                    reconcile_profile(client, &inputs).await
                })
                .await;
            }
        };
        let steps = async {
            step("profile_new").await;
            let profile = get(&profiles, &profile_name).await;
            assert!(
                !profile.finalizers().is_empty(),
                "the first reconcile adds the finalizer"
            );
            step("profile_fences").await;
            profiles
                .delete(&profile_name, &DeleteParams::default())
                .await
                .expect("deleting the profile");
            step("profile_deleted").await;
            eventually(10, "the profile to be gone", || async {
                profiles
                    .get_opt(&profile_name)
                    .await
                    .ok()
                    .and_then(|p| p.is_none().then_some(()))
            })
            .await;
        };
        let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(steps)).await;
        if outcome.is_err() {
            // The profile is cluster-scoped: take its finalizer off and delete it, so a failed
            // run leaves nothing behind.
            let _ = profiles
                .patch(
                    &profile_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
            let _ = profiles
                .delete(&profile_name, &DeleteParams::default())
                .await;
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .await;
}
