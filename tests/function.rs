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
use common::http::http_request_with_headers;
use common::namespaces::with_temp_ns;
use common::wait::eventually;
use common::{client, install_crds, kubectl};
use fargo::api::ServerlessFunction;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
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

/// A GET through the activator with `Host: host`, once the activator knows the function it
/// lands on (until its watch has seen the function, it answers 404 "no function …"). The
/// functions here have a short timeout: a request held for a pod ends soon with a 504 that
/// names the function, and `/stats` counts it for the function either way.
async fn request_as_host(activator: &ActivatorAddrs, host: &str, path: &str) -> (u16, String) {
    let url = format!("{}{path}", activator.url());
    eventually(30, &format!("the activator to route {host}{path}"), || {
        let url = url.clone();
        async move {
            let (status, body) = http_request_with_headers("GET", &url, &[("host", host)], None)
                .await
                .ok()?;
            let unknown = status == 404 && body.starts_with("no function");
            (!unknown).then_some((status, body))
        }
    })
    .await
}

/// Requests the activator counted for the function on `/stats`.
async fn requests_of(activator: &ActivatorAddrs, namespace: &str, name: &str) -> u64 {
    activator
        .function_stats(namespace, name)
        .await
        .map_or(0, |stats| stats.requests)
}

#[tokio::test]
async fn a_function_gets_a_deployment_and_service_whose_replicas_go_to_the_autoscaler_when_it_scales()
 {
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

        // The controller's first apply carries the initial replicas: until the autoscaler
        // changes them, they are the controller's.
        assert_eq!(
            owners_of_replicas(&deployment),
            [("fargo.dev/controller".to_string(), "Apply".to_string())]
        );

        let service = Api::<Service>::namespaced(client.clone(), &ns)
            .get("thumbnail")
            .await
            .expect("the Service");
        let spec = service.spec.unwrap();
        assert_eq!(
            spec.cluster_ip.as_deref(),
            Some("None"),
            "a headless Service"
        );
        let port = &spec.ports.unwrap()[0];
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
        // The autoscaler's forced write took the field, and the controller's applies since
        // left it to the autoscaler alone.
        assert_eq!(
            replicas_owners(&client, &ns, "thumbnail").await,
            Some(vec![(
                "fargo.dev/autoscaler".to_string(),
                "Apply".to_string()
            )])
        );
    })
    .await;
}

#[tokio::test]
async fn a_service_an_earlier_version_made_with_a_cluster_ip_is_replaced_by_a_headless_one() {
    let (client, _) = setup().await;
    with_temp_ns(&client, |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "legacy",
            json!({"image": "fargo.dev/echo:dev"}),
        )
        .await;
        let services = Api::<Service>::namespaced(client.clone(), &ns);
        let headless = eventually(30, "the function's Service", || {
            let services = services.clone();
            async move { services.get_opt("legacy").await.ok()? }
        })
        .await;
        // The Service as an earlier fargo made it: the same, with a cluster IP. The controller
        // makes its own again as soon as one is deleted, so this takes as many tries as it takes
        // to create it first.
        let legacy = Service {
            metadata: kube::api::ObjectMeta {
                name: Some("legacy".into()),
                labels: headless.metadata.labels.clone(),
                owner_references: headless.metadata.owner_references.clone(),
                ..Default::default()
            },
            spec: headless
                .spec
                .clone()
                .map(|spec| k8s_openapi::api::core::v1::ServiceSpec {
                    cluster_ip: None,
                    cluster_ips: None,
                    ..spec
                }),
            status: None,
        };
        let created = eventually(30, "a Service with a cluster IP in its place", || {
            let (services, legacy) = (services.clone(), legacy.clone());
            async move {
                let _ = services.delete("legacy", &DeleteParams::default()).await;
                services.create(&Default::default(), &legacy).await.ok()
            }
        })
        .await;
        let address = created.spec.as_ref().and_then(|s| s.cluster_ip.clone());
        assert!(
            address.as_deref().is_some_and(|ip| ip != "None"),
            "the stand-in has a cluster IP: {address:?}"
        );
        eventually(30, "the controller's headless Service in its place", || {
            let (services, replaced) = (services.clone(), created.uid());
            async move {
                let service = services.get_opt("legacy").await.ok()??;
                let headless = service.spec.as_ref()?.cluster_ip.as_deref() == Some("None");
                (headless && service.uid() != replaced).then_some(())
            }
        })
        .await;
    })
    .await;
}

/// The managers owning the Deployment's `spec.replicas`, with their operations.
async fn replicas_owners(client: &Client, ns: &str, name: &str) -> Option<Vec<(String, String)>> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    Some(owners_of_replicas(&deployment))
}

/// The field managers (and their operations) of a Deployment's `spec.replicas`.
fn owners_of_replicas(deployment: &Deployment) -> Vec<(String, String)> {
    deployment
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
        .collect()
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

#[tokio::test]
async fn a_function_claiming_the_activators_own_name_gets_no_other_functions_requests() {
    let (client, activator) = setup().await;
    with_temp_ns(&client, |client, ns| async move {
        // The attack: host routes win over path routes, so a function holding the activator's
        // own name under `/` would take every request addressed to the activator by name.
        apply_function(
            &client,
            &ns,
            "thief",
            json!({
                "image": "fargo.dev/echo:dev",
                "timeout": "2s",
                "triggers": {"http": {"hosts": ["fargo-activator.fargo-system.svc"], "path": "/"}},
            }),
        )
        .await;
        // Made after the thief: once the activator routes to the victim, its watch (which
        // delivers one kind's events in order) has seen the thief too.
        apply_function(
            &client,
            &ns,
            "victim",
            json!({"image": "fargo.dev/echo:dev", "timeout": "2s"}),
        )
        .await;
        let message = wait_condition(
            &client,
            &ns,
            "thief",
            "HostsAccepted",
            "False",
            "HostReserved",
        )
        .await;
        assert!(
            message
                .contains("\"fargo-activator.fargo-system.svc\" is a name of the fargo activator"),
            "{message}"
        );
        wait_condition(&client, &ns, "victim", "HostsAccepted", "True", "NoHosts").await;

        let path = format!("/{ns}/victim/");
        for host in [
            "fargo-activator.fargo-system.svc",
            "fargo-activator.fargo-system.svc.cluster.local:80",
        ] {
            let (status, body) = request_as_host(&activator, host, &path).await;
            assert!(
                body.contains("victim") && !body.contains("thief"),
                "Host {host}: status {status}, body {body}"
            );
        }
        assert!(requests_of(&activator, &ns, "victim").await >= 2);
        assert_eq!(
            requests_of(&activator, &ns, "thief").await,
            0,
            "a request meant for another function reached the function that claimed the \
             activator's name"
        );
    })
    .await;
}

#[tokio::test]
async fn the_earlier_of_two_functions_claiming_a_host_keeps_it_and_the_later_names_the_holder() {
    let (client, activator) = setup().await;
    with_temp_ns(&client, |client, ns| async move {
        // Host claims are cluster-wide: a name of this test's own.
        let host = format!("shop.{ns}.example.test");
        let claiming = json!({
            "image": "fargo.dev/echo:dev",
            "timeout": "2s",
            "triggers": {"http": {"hosts": [host], "path": "/"}},
        });
        apply_function(&client, &ns, "first", claiming.clone()).await;
        wait_condition(&client, &ns, "first", "HostsAccepted", "True", "Accepted").await;
        // A later creation time, whatever the names.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        apply_function(&client, &ns, "second", claiming.clone()).await;
        let message = wait_condition(
            &client,
            &ns,
            "second",
            "HostsAccepted",
            "False",
            "HostClaimed",
        )
        .await;
        assert!(
            message.contains(&format!("held by function {ns}/first")),
            "{message}"
        );
        assert_eq!(
            function_condition_reason(&client, &ns, "first").await,
            "Accepted",
            "the holder keeps its claim when a later function makes the same one"
        );

        // Once the activator routes to a function made after both, it has seen both.
        apply_function(
            &client,
            &ns,
            "marker",
            json!({"image": "fargo.dev/echo:dev", "timeout": "2s"}),
        )
        .await;
        request_as_host(&activator, "127.0.0.1", &format!("/{ns}/marker/")).await;

        let (status, body) = request_as_host(&activator, &host, "/cart").await;
        assert!(
            body.contains("first") && !body.contains("second"),
            "status {status}, body {body}"
        );
        assert!(requests_of(&activator, &ns, "first").await >= 1);
        assert_eq!(requests_of(&activator, &ns, "second").await, 0);

        // When the holder goes, the host passes to the later claim, and its condition says so.
        Api::<ServerlessFunction>::namespaced(client.clone(), &ns)
            .delete("first", &DeleteParams::default())
            .await
            .expect("deleting the holder");
        wait_condition(&client, &ns, "second", "HostsAccepted", "True", "Accepted").await;
        eventually(30, "the host to pass to the later function", || {
            let (activator, ns, host) = (activator, ns.clone(), host.clone());
            async move {
                let url = format!("{}/cart", activator.url());
                http_request_with_headers("GET", &url, &[("host", host.as_str())], None)
                    .await
                    .ok()?;
                (requests_of(&activator, &ns, "second").await > 0).then_some(())
            }
        })
        .await;
    })
    .await;
}

/// The reason of the function's HostsAccepted condition, as it is now.
async fn function_condition_reason(client: &Client, namespace: &str, name: &str) -> String {
    common::functions::function_condition(client, namespace, name, "HostsAccepted")
        .await
        .map(|(_, reason, _)| reason)
        .unwrap_or_default()
}
