//! Metering end to end on the real node: a handler function's invocations billed from what its
//! sidecar measured, nothing accrued at zero, counts that survive the controller and the
//! activator dying, a profile pod billed Fargate's one-minute minimum, and `fargo usage`
//! agreeing with the controller's metrics.
//!
//! The tests run one after the other (each starts its own controller, which must lead).
//! Needs the images of `make images` on the node.

mod common;

use std::time::Duration;

use common::activator::{ActivatorAddrs, spawn_activator};
use common::controller::{ControllerProcess, wait_until_leading};
use common::functions::{apply_function, wait_function_condition};
use common::http::http_exchange;
use common::namespaces::{unique_name, with_temp_namespaces, with_temp_ns};
use common::processes::{FargoProcess, free_port};
use common::wait::eventually;
use common::{client, install_crds};
use fargo::api::usage::{FunctionUsage, ProfileUsage};
use fargo::api::{FargateProfile, ServerlessFunction};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const REAL_NODE: (&str, &str) = ("fargo.dev/node", "real");

/// One test at a time: each kills or leads the controller.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SLEEPER: &str = r#"
import time

def handler(event, context):
    time.sleep(0.2)
    return {"statusCode": 200, "body": "slept"}
"#;

/// A controller for this test (webhook registered, pointed at `activator`), leading.
async fn controller(client: &Client, activator: &ActivatorAddrs) -> ControllerProcess {
    let identity = unique_name("fargo-test-usage");
    let mut extra = vec!["--identity".to_string(), identity.clone()];
    extra.extend(activator.controller_args());
    let controller = ControllerProcess::start_with(client, free_port(), free_port(), &extra).await;
    wait_until_leading(client, &identity, 120).await;
    controller
}

fn new_activator(addrs: ActivatorAddrs) -> FargoProcess {
    FargoProcess::new(spawn_activator(addrs))
}

async fn invoke(activator: &ActivatorAddrs, namespace: &str, name: &str, times: usize) {
    for _ in 0..times {
        let (status, _, body) =
            http_exchange("GET", &activator.function_url(namespace, name), &[], vec![])
                .await
                .unwrap_or_else(|e| panic!("no answer from the activator: {e}"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
}

async fn function_usage(client: &Client, namespace: &str, name: &str) -> Option<FunctionUsage> {
    Api::<ServerlessFunction>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .ok()?
        .status?
        .usage
}

/// Waits until the function's status counts `invocations`, and returns its usage.
async fn wait_invocations(
    client: &Client,
    namespace: &str,
    name: &str,
    invocations: u64,
) -> FunctionUsage {
    eventually(
        90,
        &format!("status.usage.invocations of {namespace}/{name} to be {invocations}"),
        || async move {
            function_usage(client, namespace, name)
                .await
                .filter(|u| u.history.total.invocations == invocations)
        },
    )
    .await
}

/// The value of the series `name` whose labels include all of `labels`, on the controller's
/// `/metrics`.
async fn metric(
    controller: &ControllerProcess,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let url = format!("http://127.0.0.1:{}/metrics", controller.health_port);
    let (status, text) = common::http::http_request("GET", &url, None).await.ok()?;
    (status == 200).then_some(())?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (series, value) = rest.split_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| series.split(',').any(|pair| pair == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

/// `fargo usage -n namespace -o json`, run as a user would, with the test's kubeconfig.
async fn usage_report(namespace: &str) -> Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fargo"))
        .args(["usage", "--namespace", namespace, "--output", "json"])
        .output()
        .await
        .expect("fargo usage runs");
    assert!(
        output.status.success(),
        "fargo usage failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("fargo usage prints JSON")
}

fn row<'a>(report: &'a Value, kind: &str, name: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|row| row["kind"] == kind && row["name"] == name)
        })
        .unwrap_or_else(|| panic!("no {kind} row {name} in {report}"))
}

#[tokio::test]
async fn function_use_is_metered_once_across_restarts_and_not_at_zero() {
    let _serial = SERIAL.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let addrs = ActivatorAddrs::free();
    let mut activator = new_activator(addrs);
    addrs.wait_until_ready().await;
    let mut controller = controller(&client, &addrs).await;

    with_temp_ns(&client, |client, namespace| async move {
        let activator = &mut activator;
        let name = "sleeper";
        apply_function(
            &client,
            &namespace,
            name,
            json!({
                "runtime": "python3.11",
                "handler": "app.handler",
                "code": {"inline": {"app.py": SLEEPER}},
                "memory": "128Mi",
                "timeout": "120s",
                "scale": {"idleTimeout": "5s"},
            }),
        )
        .await;
        wait_function_condition(&client, &namespace, name, ("Ready", "True", "ScaledToZero"), 60)
            .await;

        // 20 invocations of 200 ms at 128 MiB: 20 × 0.2 s × 0.125 GB = 0.5 GB-s, plus what the
        // runtime takes around the handler's sleep (measured by the sidecar).
        invoke(&addrs, &namespace, name, 20).await;
        let usage = wait_invocations(&client, &namespace, name, 20).await;
        let gb_seconds = usage.history.total.gb_seconds;
        println!("20 × 200 ms at 128 MiB metered {gb_seconds} GB-s");
        assert!(
            (0.5..=0.55).contains(&gb_seconds),
            "20 × 200 ms at 128 MiB is 0.5 GB-s, within 10% for the runtime's overhead: {gb_seconds}"
        );
        assert_eq!(usage.history.total.inits, 1, "one runtime started: {usage:?}");
        assert!(usage.history.total.init_gb_seconds > 0.0);
        assert_eq!(usage.history.hours.len(), 1);

        // `fargo usage` and the controller's metrics say the same, from the same status.
        let labels = [("namespace", namespace.as_str()), ("function", name)];
        let report = usage_report(&namespace).await;
        let reported = row(&report, "function", name);
        assert_eq!(reported["invocations"], 20);
        assert_eq!(reported["gbSeconds"].as_f64(), Some(gb_seconds));
        assert!(reported["cost"].as_f64().is_some_and(|cost| cost > 0.0));
        eventually(30, "the usage metrics to match fargo usage", || {
            let (controller, labels) = (&controller, &labels);
            async move {
                let invocations =
                    metric(controller, "fargo_usage_function_invocations_total", labels).await?;
                let gb = metric(controller, "fargo_usage_function_gb_seconds_total", labels).await?;
                (invocations == 20.0 && gb == gb_seconds).then_some(())
            }
        })
        .await;

        // At zero for a minute: nothing accrues, not even a new time.
        wait_function_condition(&client, &namespace, name, ("Ready", "True", "ScaledToZero"), 90)
            .await;
        let at_zero = function_usage(&client, &namespace, name).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(function_usage(&client, &namespace, name).await, at_zero);

        // The controller dies; the activator keeps counting; the next controller takes the
        // counts from the status's cursor, adding only what is new.
        controller.kill();
        invoke(&addrs, &namespace, name, 5).await;
        controller.restart(&client).await;
        wait_invocations(&client, &namespace, name, 25).await;

        // The activator dies (SIGKILL) after a scrape: its last scraped counts are written
        // once; a new activator counts from zero under a new id.
        invoke(&addrs, &namespace, name, 5).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        activator.kill();
        wait_invocations(&client, &namespace, name, 30).await;
        *activator = new_activator(addrs);
        addrs.wait_until_ready().await;
        invoke(&addrs, &namespace, name, 5).await;
        wait_invocations(&client, &namespace, name, 35).await;

        // A graceful stop right after requests waits for the autoscaler's last scrape.
        invoke(&addrs, &namespace, name, 5).await;
        activator.terminate();
        let usage = wait_invocations(&client, &namespace, name, 40).await;
        *activator = new_activator(addrs);
        addrs.wait_until_ready().await;
        // Two more write intervals: nothing is counted twice.
        tokio::time::sleep(Duration::from_secs(65)).await;
        let later = function_usage(&client, &namespace, name).await.unwrap();
        assert_eq!(later.history.total.invocations, 40);
        assert_eq!(later.history.total.gb_seconds, usage.history.total.gb_seconds);
    })
    .await;
}

#[tokio::test]
async fn a_profile_pod_living_30_seconds_is_billed_a_minute_of_its_provisioned_size() {
    let _serial = SERIAL.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let addrs = ActivatorAddrs::free();
    let controller = controller(&client, &addrs).await;
    let profile = unique_name("metered");
    let profiles: Api<FargateProfile> = Api::all(client.clone());

    with_temp_namespaces(&client, |client, namespaces| {
        let (profile, profiles, controller) = (profile.clone(), profiles.clone(), &controller);
        async move {
            let namespace = namespaces.create_unique("fargo-test-metered").await;
            let object = json!({
                "apiVersion": "fargo.dev/v1alpha1", "kind": "FargateProfile",
                "metadata": {"name": profile},
                "spec": {
                    "selectors": [{"namespace": namespace}],
                    "scheduling": {"nodeSelector": {REAL_NODE.0: REAL_NODE.1}},
                },
            });
            profiles
                .patch(
                    &profile,
                    &PatchParams::apply(common::TEST_MANAGER).force(),
                    &Patch::Apply(&object),
                )
                .await
                .expect("applying the profile");

            let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "short"},
                "spec": {
                    "containers": [{
                        "name": "echo", "image": "fargo.dev/echo:dev",
                        "imagePullPolicy": "Never",
                    }],
                    "terminationGracePeriodSeconds": 1,
                },
            }))
            .unwrap();
            // Created for real once the webhook admits the namespace's pods under the profile.
            let created = eventually(60, "the webhook to admit the pod under the profile", || {
                let (pods, pod, profile) = (&pods, &pod, &profile);
                async move {
                    let dry = PostParams {
                        dry_run: true,
                        ..Default::default()
                    };
                    let admitted = pods.create(&dry, pod).await.ok()?;
                    (admitted.labels().get("fargo.dev/profile") == Some(profile)).then_some(())?;
                    pods.create(&PostParams::default(), pod).await.ok()
                }
            })
            .await;
            let capacity = created.annotations()["fargo.dev/capacity-provisioned"].clone();
            let (vcpu, gb) = capacity
                .split_once("vCPU ")
                .and_then(|(vcpu, gb)| {
                    Some((
                        vcpu.parse::<f64>().ok()?,
                        gb.strip_suffix("GB")?.parse::<f64>().ok()?,
                    ))
                })
                .unwrap_or_else(|| panic!("capacity {capacity}"));

            // It lives 30 seconds from its start, then is deleted.
            let started = eventually(60, "the pod to start", || {
                let pods = &pods;
                async move { pods.get("short").await.ok()?.status?.start_time }
            })
            .await;
            let lived = jiff::Timestamp::now().duration_since(started.0);
            let rest =
                (jiff::SignedDuration::from_secs(30) - lived).max(jiff::SignedDuration::ZERO);
            tokio::time::sleep(rest.try_into().unwrap()).await;
            pods.delete("short", &DeleteParams::default())
                .await
                .expect("deleting the pod");

            let usage: ProfileUsage =
                eventually(90, "the profile's usage to count the pod", || {
                    let profiles = &profiles;
                    let profile = &profile;
                    async move {
                        let usage = profiles.get(profile).await.ok()?.status?.usage?;
                        (usage.total.pods == 1 && usage.total.vcpu_seconds >= 60.0 * vcpu)
                            .then_some(usage)
                    }
                })
                .await;
            println!("a 30 s pod of {capacity}: {usage:?}");
            assert_eq!(usage.total.vcpu_seconds, 60.0 * vcpu, "one minute at least");
            assert_eq!(usage.total.gb_seconds, 60.0 * gb);
            assert_eq!(usage.namespaces.len(), 1);
            assert_eq!(usage.namespaces[0].namespace, namespace);

            // Still a minute after two more writes: an ended pod is counted once.
            tokio::time::sleep(Duration::from_secs(65)).await;
            let later = profiles
                .get(&profile)
                .await
                .unwrap()
                .status
                .unwrap()
                .usage
                .unwrap();
            assert_eq!(later.total.vcpu_seconds, 60.0 * vcpu);

            let report = usage_report(&namespace).await;
            let reported = row(&report, "profile", &profile);
            assert_eq!(reported["vcpuSeconds"].as_f64(), Some(60.0 * vcpu));
            let labels = [
                ("profile", profile.as_str()),
                ("namespace", namespace.as_str()),
            ];
            eventually(
                30,
                "the profile's usage metrics to match fargo usage",
                || {
                    let labels = &labels;
                    async move {
                        let vcpu_seconds =
                            metric(controller, "fargo_usage_profile_vcpu_seconds_total", labels)
                                .await?;
                        (vcpu_seconds == 60.0 * vcpu).then_some(())
                    }
                },
            )
            .await;
        }
    })
    .await;
    let _ = profiles.delete(&profile, &DeleteParams::default()).await;
    eventually(30, "the profile to be gone", || {
        let (profiles, profile) = (&profiles, &profile);
        async move { matches!(profiles.get_opt(profile).await, Ok(None)).then_some(()) }
    })
    .await;
    drop(controller);
}
