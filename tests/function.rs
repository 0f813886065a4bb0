//! ServerlessFunction against the local cluster: the reconciler's children and status, with the
//! real `fargo activator` and `fargo controller` run out of cluster on 127.0.0.1 (the controller
//! started with `--activator-url` and `--activator-stats-url` pointing at the activator).
//!
//! What needs pods to answer requests — waking from zero, scaling out and back to zero,
//! schedules reaching the pod, a pod that cannot start — is in `e2e_function.rs`.

mod common;

use common::activator::ActivatorAddrs;
use common::functions::{
    apply_function, function_replicas, shared_function_stack, wait_function_condition,
};
use common::namespaces::with_temp_ns;
use common::wait::eventually;
use common::{client, install_crds, kubectl};
use fargo::api::ServerlessFunction;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// A client, the CRDs, and the activator and controller shared by this file's tests (the
/// controller leading).
async fn setup() -> (Client, ActivatorAddrs) {
    let client = client().await;
    install_crds(&client).await;
    let activator = shared_function_stack(&client).await;
    (client, activator)
}

async fn wait_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> String {
    wait_function_condition(client, namespace, name, (type_, status, reason), 30).await
}

async fn replicas(client: &Client, namespace: &str, name: &str) -> Option<i32> {
    function_replicas(client, namespace, name).await
}

#[tokio::test]
async fn a_function_gets_a_deployment_and_service_whose_replicas_the_autoscaler_owns() {
    let (client, _) = setup().await;
    with_temp_ns(&client, |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "thumbnail",
            json!({"image": "fargo.dev/echo:dev", "memory": "512Mi", "scale": {"initial": 2}}),
        )
        .await;
        let deployment = eventually(30, "the Deployment", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                Api::<Deployment>::namespaced(client, &ns)
                    .get_opt("thumbnail")
                    .await
                    .ok()?
            }
        })
        .await;
        assert_eq!(deployment.labels()["fargo.dev/function"], "thumbnail");
        let owner = &deployment.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ServerlessFunction", Some(true))
        );
        let spec = deployment.spec.clone().unwrap();
        assert_eq!(spec.replicas, Some(2), "scale.initial");
        let container = &spec.template.spec.unwrap().containers[0];
        let limits = container.resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits["cpu"].0, "290m");

        // The controller's first apply carries the initial replicas; the autoscaler's manager
        // then takes the field and the controller lets go of it.
        eventually(30, "spec.replicas owned by the autoscaler alone", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let deployment = Api::<Deployment>::namespaced(client, &ns)
                    .get("thumbnail")
                    .await
                    .ok()?;
                let owners: Vec<(String, String)> = deployment
                    .managed_fields()
                    .iter()
                    .filter(|entry| {
                        entry
                            .fields_v1
                            .as_ref()
                            .and_then(|f| f.0.get("f:spec"))
                            .and_then(|spec| spec.get("f:replicas"))
                            .is_some()
                    })
                    .map(|entry| {
                        (
                            entry.manager.clone().unwrap_or_default(),
                            entry.operation.clone().unwrap_or_default(),
                        )
                    })
                    .collect();
                (owners == [("fargo.dev/autoscaler".to_string(), "Apply".to_string())])
                    .then_some(())
            }
        })
        .await;

        let service = Api::<Service>::namespaced(client.clone(), &ns)
            .get("thumbnail")
            .await
            .expect("the Service");
        let port = &service.spec.unwrap().ports.unwrap()[0];
        assert_eq!((port.port, port.name.as_deref()), (80, Some("http")));

        // A change of spec is applied without touching the replicas.
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch_scale(
                "thumbnail",
                &PatchParams::apply("fargo.dev/autoscaler").force(),
                &Patch::Apply(json!({
                    "apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": "thumbnail", "namespace": ns},
                    "spec": {"replicas": 3},
                })),
            )
            .await
            .expect("scaling as the autoscaler");
        apply_function(
            &client,
            &ns,
            "thumbnail",
            json!({"image": "fargo.dev/echo:dev", "memory": "512Mi", "scale": {"initial": 2},
                   "env": [{"name": "QUALITY", "value": "90"}]}),
        )
        .await;
        eventually(30, "the new environment in the Deployment", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let deployment = Api::<Deployment>::namespaced(client, &ns)
                    .get("thumbnail")
                    .await
                    .ok()?;
                let env = deployment.spec?.template.spec?.containers[0].env.clone()?;
                env.iter().any(|v| v.name == "QUALITY").then_some(())
            }
        })
        .await;
        assert_eq!(replicas(&client, &ns, "thumbnail").await, Some(3));
    })
    .await;
}

#[tokio::test]
async fn a_function_scaled_to_zero_is_ready_and_says_where_it_is_served() {
    let (client, activator) = setup().await;
    with_temp_ns(&client, |client, ns| async move {
        apply_function(&client, &ns, "idle", json!({"image": "fargo.dev/echo:dev"})).await;
        wait_condition(&client, &ns, "idle", "Ready", "True", "ScaledToZero").await;
        wait_condition(&client, &ns, "idle", "ScaledToZero", "True", "Idle").await;
        let function = Api::<ServerlessFunction>::namespaced(client.clone(), &ns)
            .get("idle")
            .await
            .unwrap();
        let status = function.status.unwrap();
        assert_eq!(status.url, Some(activator.function_url(&ns, "idle")));
        assert_eq!(status.observed_generation, function.metadata.generation);
        assert_eq!(replicas(&client, &ns, "idle").await, Some(0));
    })
    .await;
}

#[tokio::test]
async fn a_missing_profile_and_a_bad_schedule_are_conditions_not_crashes() {
    let (client, _) = setup().await;
    with_temp_ns(&client, |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "broken",
            json!({
                "image": "fargo.dev/echo:dev",
                "profile": "no-such-profile",
                "triggers": {"schedules": [
                    {"name": "nightly", "cron": "0 25 * * *"},
                    {"name": "zoned", "cron": "0 3 * * *", "timeZone": "Mars/Olympus"},
                ]},
            }),
        )
        .await;
        let message =
            wait_condition(&client, &ns, "broken", "Ready", "False", "ProfileNotFound").await;
        assert!(message.contains("no-such-profile"), "{message}");
        let schedules = wait_condition(
            &client,
            &ns,
            "broken",
            "SchedulesValid",
            "False",
            "InvalidSchedule",
        )
        .await;
        assert!(
            schedules.contains("\"nightly\"") && schedules.contains("hour"),
            "{schedules}"
        );
        assert!(
            schedules.contains("\"zoned\"") && schedules.contains("Mars/Olympus"),
            "{schedules}"
        );
        assert_eq!(
            replicas(&client, &ns, "broken").await,
            None,
            "no pods under a missing profile"
        );

        // Fixing the spec clears both.
        apply_function(
            &client,
            &ns,
            "broken",
            json!({"image": "fargo.dev/echo:dev"}),
        )
        .await;
        wait_condition(&client, &ns, "broken", "Ready", "True", "ScaledToZero").await;
        wait_condition(
            &client,
            &ns,
            "broken",
            "SchedulesValid",
            "True",
            "NoSchedules",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn kubectl_waits_for_a_function_to_be_ready() {
    let (client, _) = setup().await;
    with_temp_ns(&client, |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "waited",
            json!({"image": "fargo.dev/echo:dev"}),
        )
        .await;
        let output = kubectl()
            .args([
                "wait",
                "--for=condition=Ready",
                "fn/waited",
                "--timeout=60s",
                "-n",
                &ns,
            ])
            .output()
            .expect("running kubectl");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "kubectl wait failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("condition met"), "{stdout}");

        // A function that cannot run is not Ready, and kubectl says so by failing.
        apply_function(
            &client,
            &ns,
            "orphan",
            json!({"image": "fargo.dev/echo:dev", "profile": "no-such-profile"}),
        )
        .await;
        wait_condition(&client, &ns, "orphan", "Ready", "False", "ProfileNotFound").await;
        let output = kubectl()
            .args([
                "wait",
                "--for=condition=Ready",
                "fn/orphan",
                "--timeout=2s",
                "-n",
                &ns,
            ])
            .output()
            .expect("running kubectl");
        assert!(
            !output.status.success(),
            "an unready function satisfied kubectl wait"
        );
    })
    .await;
}
