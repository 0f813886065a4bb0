//! The Helm chart on the local cluster's real node: `helm install` brings the controller and the
//! activator to Ready on fargo-node, the controllers give both webhook configurations the
//! caBundle of their certificate and serve the webhook through Service `fargo-webhook`, a
//! function answers through the activator Service as `make dev` promises, an `Event` sent with
//! the AWS CLI and a key of Secret `fargo-invoke-keys` is stored in the chart's NATS and wakes
//! its function, and `helm uninstall` removes what the chart made.
//!
//! It runs alone, after the other test binaries: the chart's webhook configurations and Lease
//! have the names the out-of-cluster controllers of the other tests use. Cargo.toml marks it
//! `test = false`, so a plain `cargo test` skips it; `make integration` runs it last, and
//! `cargo test --test install` runs it by hand. It refuses to start while a fargo release is
//! installed or another fargo controller runs against the cluster, and disturbs nothing else.
//! Needs helm (`HELM`, or `helm` on PATH — the Makefile puts the local cluster's on PATH) and the
//! images of tests/cluster/images.sh.

mod common;
mod real_node;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::admission::webhooks_see;
use common::client;
use common::namespaces::{unique_name, with_temp_namespaces};
use common::report::namespace_report;
use common::wait::{eventually, wait_for};
use fargo::api::function::ServerlessFunction;
use fargo::api::profile::FargateProfile;
use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const RELEASE: &str = "fargo";
const NAMESPACE: &str = "fargo-system";
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/fargo");
const NODE_NAME: &str = "fargo-node";
/// Names fixed by the chart and the binary (charts/fargo/templates/_helpers.tpl).
const DEPLOYMENTS: [&str; 2] = ["fargo-controller", "fargo-activator"];
const WEBHOOK_CONFIGURATION: &str = "fargo";
const LEASE: &str = fargo::api::LEASE_NAME;
/// Made by the controller, not by the chart: `helm uninstall` leaves it.
const WEBHOOK_SECRET: &str = "fargo-webhook-tls";
/// Read by the chart's activators, made by whoever installs (here, the test).
const INVOKE_KEYS: &str = "fargo-invoke-keys";

fn helm() -> String {
    std::env::var("HELM").unwrap_or_else(|_| "helm".into())
}

/// Runs helm with `args`; its exit status and output.
async fn run_helm(args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(helm())
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "running {} (set HELM, or run through `make integration`, which puts helm on PATH): {e}",
                helm()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Where an out-of-cluster controller registered the webhook (`https://127.0.0.1:PORT/...`).
fn loopback_port(config: &WebhookClientConfig) -> Option<u16> {
    let rest = config.url.as_deref()?.strip_prefix("https://127.0.0.1:")?;
    rest.split('/').next()?.parse().ok()
}

/// Fails unless this test can own the cluster's fargo for a while: no fargo release installed
/// (`make dev` installs one), and no controller running — neither serving a webhook registered
/// by URL on this machine nor holding the Lease. A controller of the test binary that ran just
/// before gets a moment to finish its shutdown.
async fn assert_nothing_else_runs_fargo(client: &Client) {
    let (installed, _) = run_helm(&["status", RELEASE, "-n", NAMESPACE]).await;
    assert!(
        !installed,
        "Helm release {RELEASE} is already installed in {NAMESPACE} (by `make dev`?); this test \
         installs its own. Remove it first: helm uninstall {RELEASE} -n {NAMESPACE}"
    );

    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for(
        client,
        &[NAMESPACE.into()],
        30,
        "other fargo controllers to stop: run this test alone, after the others (make integration)",
        || {
            let (configs, leases) = (configs.clone(), leases.clone());
            async move {
                let webhooks = configs
                    .get_opt(WEBHOOK_CONFIGURATION)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|config| config.webhooks)
                    .unwrap_or_default();
                for port in webhooks
                    .iter()
                    .filter_map(|w| loopback_port(&w.client_config))
                {
                    if tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                    {
                        return Err(format!(
                            "a controller serves the webhook on 127.0.0.1:{port}"
                        ));
                    }
                }
                // A controller that stopped without releasing the Lease lets it lapse.
                let Some(spec) = leases
                    .get_opt(LEASE)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|lease| lease.spec)
                else {
                    return Ok(());
                };
                let (Some(holder), Some(renewed)) = (spec.holder_identity, spec.renew_time) else {
                    return Ok(());
                };
                let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
                let age = jiff::Timestamp::now().as_second() - renewed.0.as_second();
                if age > duration {
                    Ok(())
                } else {
                    Err(format!(
                        "Lease {LEASE} held by {holder}, renewed {age}s ago"
                    ))
                }
            }
        },
    )
    .await;
}

/// Deletes what out-of-cluster controllers leave behind and the chart would collide with: the
/// webhook configurations (registered by URL, not owned by Helm) and the Lease.
async fn remove_out_of_cluster_leftovers(client: &Client) {
    let delete = DeleteParams::default();
    let ignore_missing = |result: Result<(), kube::Error>, what: &str| match result {
        Ok(()) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => panic!("deleting {what}: {error}"),
    };
    ignore_missing(
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete(WEBHOOK_CONFIGURATION, &delete)
            .await
            .map(|_| ()),
        "the MutatingWebhookConfiguration",
    );
    ignore_missing(
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .delete(WEBHOOK_CONFIGURATION, &delete)
            .await
            .map(|_| ()),
        "the ValidatingWebhookConfiguration",
    );
    ignore_missing(
        Api::<Lease>::namespaced(client.clone(), NAMESPACE)
            .delete(LEASE, &delete)
            .await
            .map(|_| ()),
        "the Lease",
    );
}

/// Every webhook of both configurations: the caBundle it carries and the Service it calls.
async fn webhook_client_configs(client: &Client) -> Result<Vec<WebhookClientConfig>, String> {
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(WEBHOOK_CONFIGURATION)
        .await
        .map_err(|e| format!("MutatingWebhookConfiguration: {e}"))?;
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(WEBHOOK_CONFIGURATION)
        .await
        .map_err(|e| format!("ValidatingWebhookConfiguration: {e}"))?;
    Ok(mutating
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.client_config)
        .chain(
            validating
                .webhooks
                .unwrap_or_default()
                .into_iter()
                .map(|w| w.client_config),
        )
        .collect())
}

/// What the installed operator must show.
async fn check_installed_operator(client: Client) {
    let namespaces = [NAMESPACE.to_string()];
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    for name in DEPLOYMENTS {
        wait_for(
            &client,
            &namespaces,
            60,
            &format!("Deployment {name} to have all replicas ready"),
            || {
                let deployments = deployments.clone();
                async move {
                    let deployment = deployments.get(name).await.map_err(|e| e.to_string())?;
                    let wanted = deployment.spec.and_then(|s| s.replicas).unwrap_or(1);
                    let status = deployment.status.unwrap_or_default();
                    let ready = status.ready_replicas.unwrap_or(0);
                    let updated = status.updated_replicas.unwrap_or(0);
                    if wanted > 0 && ready == wanted && updated == wanted {
                        Ok(())
                    } else {
                        Err(format!("{ready}/{wanted} ready, {updated} updated"))
                    }
                }
            },
        )
        .await;
    }

    // The kwok nodes are tainted and the chart tolerates nothing: every pod is on the real node.
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/name=fargo"))
        .await
        .expect("listing the release's pods");
    let placement: Vec<(String, Option<String>)> = pods
        .iter()
        .map(|pod| {
            (
                pod.name_any(),
                pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            )
        })
        .collect();
    assert!(
        placement.len() >= 4,
        "2 controllers and 2 activators: {placement:?}"
    );
    assert!(
        placement
            .iter()
            .all(|(_, node)| node.as_deref() == Some(NODE_NAME)),
        "every pod runs on {NODE_NAME}: {placement:?}"
    );

    // The chart leaves caBundle out; the controllers fill it in from their certificate, in
    // every webhook the controller registers itself.
    let expected_webhooks = {
        let config = fargo::webhook::Config {
            addr: "0.0.0.0:8443".parse().expect("an address"),
            url: None,
            service_namespace: NAMESPACE.into(),
            service_name: "fargo-webhook".into(),
            cert_dir: None,
            secret_name: "fargo-webhook-tls".into(),
            register: true,
        };
        let scope = fargo::webhook::admission_scope(&[], &[]);
        let (mutating, validating) = fargo::webhook::configurations(&config, None, &scope);
        mutating.webhooks.map_or(0, |w| w.len()) + validating.webhooks.map_or(0, |w| w.len())
    };
    wait_for(
        &client,
        &namespaces,
        60,
        "every webhook to call Service fargo-webhook with a caBundle",
        || {
            let client = client.clone();
            async move {
                let configs = webhook_client_configs(&client).await?;
                let complete = configs.len() == expected_webhooks
                    && configs.iter().all(|c| {
                        c.ca_bundle.as_ref().is_some_and(|ca| !ca.0.is_empty())
                            && c.url.is_none()
                            && c.service.as_ref().is_some_and(|s| {
                                s.name == "fargo-webhook" && s.namespace == NAMESPACE
                            })
                    });
                if complete {
                    Ok(())
                } else {
                    Err(format!("{configs:?}"))
                }
            }
        },
    )
    .await;

    check_webhook_and_reconciler(&client).await;
    check_a_function_answers_through_the_activator_service(&client).await;
    check_an_event_goes_through_the_charts_nats(&client).await;
    check_tenant_pods_cannot_reach_the_activators_health_port(&client).await;
}

/// `/stats` and `/metrics` are the activators' own: the chart's NetworkPolicy opens their health
/// port to the controller pods only, while their proxy port stays open to every pod.
async fn check_tenant_pods_cannot_reach_the_activators_health_port(client: &Client) {
    with_temp_namespaces(client, |client, temp_namespaces| async move {
        let namespace = temp_namespaces.create_unique("install-tenant").await;
        let tenant: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "tenant"},
            "spec": {
                "containers": [{
                    "name": "echo", "image": "fargo.dev/echo:dev", "imagePullPolicy": "Never",
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                }],
                "nodeSelector": {"fargo.dev/node": "real"},
                "terminationGracePeriodSeconds": 1,
            },
        }))
        .expect("a pod");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        pods.create(&PostParams::default(), &tenant)
            .await
            .expect("creating the tenant pod");
        let report = [NAMESPACE.to_string(), namespace.clone()];
        let tenant_ip = wait_for(&client, &report, 120, "the tenant pod to be Ready", || {
            let pods = pods.clone();
            async move {
                let pod = pods.get("tenant").await.map_err(|e| e.to_string())?;
                let status = pod.status.unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                match (ready, status.pod_ip) {
                    (true, Some(ip)) => Ok(ip),
                    _ => Err(format!("phase {:?}", status.phase)),
                }
            }
        })
        .await;
        let activators = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
            .list(&ListParams::default().labels("app.kubernetes.io/component=activator"))
            .await
            .expect("listing the activator pods");
        let activator_ip = activators
            .iter()
            .find_map(|pod| pod.status.as_ref()?.pod_ip.clone())
            .expect("an activator pod with an IP");
        // The tenant pod's `/call` reports a failed connection as 502 with the error.
        let call = |port: u16, path: &'static str| {
            let (tenant_ip, activator_ip) = (tenant_ip.clone(), activator_ip.clone());
            async move {
                real_node::http_get(
                    &tenant_ip,
                    8080,
                    &format!("/call?url=http://{activator_ip}:{port}{path}"),
                    Duration::from_secs(10),
                )
                .await
            }
        };
        wait_for(&client, &report, 30, "the tenant to reach the activator's proxy port", || async {
            match call(8080, "/healthz").await? {
                (status, body) if status != 502 => Ok(body),
                (_, body) => Err(body),
            }
        })
        .await;
        for path in ["/stats", "/metrics"] {
            let (status, body) = call(9091, path).await.expect("the tenant pod answers");
            assert!(
                status == 502 && body.starts_with("calling http://"),
                "a tenant pod reached the activator's {path}: status {status}, body {body:.200}"
            );
        }
    })
    .await;
}

/// Function `echo` (fargo-echo, at zero) in `namespace`.
async fn apply_echo(client: &Client, namespace: &str) {
    let function = json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "ServerlessFunction",
        "metadata": {"name": "echo", "namespace": namespace},
        "spec": {"image": "fargo.dev/echo:dev", "scale": {"min": 0}},
    });
    Api::<ServerlessFunction>::namespaced(client.clone(), namespace)
        .patch(
            "echo",
            &PatchParams::apply(common::TEST_MANAGER).force(),
            &Patch::Apply(&function),
        )
        .await
        .expect("applying a function");
}

/// The ClusterIP of Service `fargo-activator`, which this machine reaches.
async fn activator_cluster_ip(client: &Client) -> String {
    Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .get("fargo-activator")
        .await
        .expect("Service fargo-activator")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP")
}

/// What `make dev` promises: from this machine, the activator Service's ClusterIP (kube-proxy on
/// the node routes it; there is no cluster DNS) wakes a function at zero and proxies to its pod.
async fn check_a_function_answers_through_the_activator_service(client: &Client) {
    with_temp_namespaces(client, |client, temp_namespaces| async move {
        let namespace = temp_namespaces.create_unique("install-fn").await;
        apply_echo(&client, &namespace).await;
        let cluster_ip = activator_cluster_ip(&client).await;
        // The activators learn the function from their own watch, which may lag behind the
        // apply by a moment: until then they answer 404. Once they know it, they hold the
        // request while the pod starts (the function's 60 s timeout).
        let path = format!("/{namespace}/echo/?from=install");
        let (status, body) = eventually(30, "the activators to know the function", || async {
            let (status, body) =
                real_node::http_get(&cluster_ip, 80, &path, Duration::from_secs(90))
                    .await
                    .unwrap_or_else(|e| panic!("GET http://{cluster_ip}{path}: {e}"));
            let unknown = status == 404 && body.starts_with("no function");
            (!unknown).then_some((status, body))
        })
        .await;
        if status != 200 {
            let report = namespace_report(&client, &[NAMESPACE.into(), namespace.clone()]).await;
            panic!("GET http://{cluster_ip}{path}: status {status}, body {body}\n{report}");
        }
        let echo: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("the echo is JSON ({e}): {body}"));
        assert_eq!(
            echo["path"], "/",
            "the activator strips /<namespace>/<function>"
        );
        assert_eq!(echo["query"], json!({"from": "install"}));
    })
    .await;
}

/// The access key the install test gives the Lambda API.
fn invoke_key() -> common::aws::Credentials {
    common::aws::Credentials {
        access_key_id: "AKFARGOINSTALLTEST".into(),
        secret_access_key: "install-test-secret".into(),
        region: "us-east-1".into(),
    }
}

/// Secret `fargo-invoke-keys` with [`invoke_key`], for every namespace; the chart reads it and
/// does not make it.
async fn put_invoke_keys(client: &Client) {
    let key = invoke_key();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": INVOKE_KEYS, "namespace": NAMESPACE},
        "stringData": {key.access_key_id: json!({
            "secretAccessKey": key.secret_access_key, "namespaces": ["*"],
        }).to_string()},
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .patch(
            INVOKE_KEYS,
            &PatchParams::apply(common::TEST_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("writing the access keys Secret");
}

/// `aws lambda invoke --invocation-type Event` through the activator Service: 202 only once the
/// chart's NATS stored it; the delivery then wakes the function from zero.
async fn check_an_event_goes_through_the_charts_nats(client: &Client) {
    with_temp_namespaces(client, |client, temp_namespaces| async move {
        let namespace = temp_namespaces.create_unique("install-event").await;
        apply_echo(&client, &namespace).await;
        let cluster_ip = activator_cluster_ip(&client).await;
        let endpoint = format!("http://{cluster_ip}");
        let name = format!("{namespace}/echo");
        let answer = eventually(60, "the Event to be accepted", || {
            let (endpoint, name) = (endpoint.clone(), name.clone());
            async move {
                let output = common::aws::AwsCli::new().aws(
                    &[
                        "lambda",
                        "invoke",
                        "--endpoint-url",
                        &endpoint,
                        "--function-name",
                        &name,
                        "--invocation-type",
                        "Event",
                        "--payload",
                        r#"{"from": "install"}"#,
                        "/dev/null",
                    ],
                    &invoke_key(),
                );
                // Until the activators know the function (404) or the key (403).
                output
                    .status
                    .success()
                    .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
            }
        })
        .await;
        assert!(answer.contains("202"), "{answer}");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        eventually(90, "the event to wake the function", || {
            let deployments = deployments.clone();
            async move {
                let deployment = deployments.get("echo").await.ok()?;
                let ready = deployment.status?.ready_replicas.unwrap_or(0);
                (ready > 0).then_some(())
            }
        })
        .await;
    })
    .await;
}

/// The whole chain once: the elected controller labels a profiled namespace, and the API server
/// calls the webhook through the Service, trusting the caBundle, for a pod there.
async fn check_webhook_and_reconciler(client: &Client) {
    let profile = unique_name("install");
    let namespace = format!("{profile}-ns");
    let profiles: Api<FargateProfile> = Api::all(client.clone());
    let object = json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "FargateProfile",
        "metadata": {"name": profile},
        "spec": {"selectors": [{"namespace": namespace}]},
    });
    profiles
        .patch(
            &profile,
            &PatchParams::apply(common::TEST_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .expect("applying a profile");

    let test = with_temp_namespaces(client, |client, temp_namespaces| {
        let (namespace, profile) = (namespace.clone(), profile.clone());
        async move {
            temp_namespaces.create(&namespace).await;
            let report = [NAMESPACE.to_string(), namespace.clone()];
            let namespaces: Api<Namespace> = Api::all(client.clone());
            wait_for(
                &client,
                &report,
                60,
                &format!("the in-cluster controller to label {namespace} profiled"),
                || {
                    let (namespaces, namespace, client) =
                        (namespaces.clone(), namespace.clone(), client.clone());
                    async move {
                        let ns = namespaces
                            .get(&namespace)
                            .await
                            .map_err(|e| e.to_string())?;
                        match ns.labels().get("fargo.dev/profiled") {
                            Some(value) if value == "true" => {
                                webhooks_see(&client, &namespace).await
                            }
                            other => Err(format!("fargo.dev/profiled={other:?}")),
                        }
                    }
                },
            )
            .await;
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "probe"},
                "spec": {"containers": [{"name": "app", "image": "fargo.dev/echo:dev"}]},
            }))
            .expect("a pod");
            // A dry run goes through admission, webhooks included, and stores nothing.
            let admitted = Api::<Pod>::namespaced(client.clone(), &namespace)
                .create(
                    &PostParams {
                        dry_run: true,
                        field_manager: None,
                    },
                    &pod,
                )
                .await
                .expect("the pod is admitted through the in-cluster webhook");
            assert_eq!(admitted.labels().get("fargo.dev/profile"), Some(&profile));
        }
    });
    // The profile goes after the namespace, so that a failing check's report shows its policy.
    let outcome = AssertUnwindSafe(test).catch_unwind().await;
    let _ = profiles.delete(&profile, &DeleteParams::default()).await;
    eventually(
        60,
        &format!("profile {profile} to be gone (its finalizer run by the in-cluster controller)"),
        || {
            let profiles = profiles.clone();
            let profile = profile.clone();
            async move { matches!(profiles.get_opt(&profile).await, Ok(None)).then_some(()) }
        },
    )
    .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// After `helm uninstall`: the chart's objects are gone.
async fn assert_uninstalled(client: &Client) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    for name in DEPLOYMENTS {
        let left = deployments
            .get_opt(name)
            .await
            .expect("reading Deployments");
        assert!(left.is_none(), "Deployment {name} is left after uninstall");
    }
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    for name in ["fargo-activator", "fargo-webhook"] {
        let left = services.get_opt(name).await.expect("reading Services");
        assert!(left.is_none(), "Service {name} is left after uninstall");
    }
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(WEBHOOK_CONFIGURATION)
        .await
        .expect("reading webhook configurations");
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get_opt(WEBHOOK_CONFIGURATION)
        .await
        .expect("reading webhook configurations");
    assert!(
        mutating.is_none() && validating.is_none(),
        "the webhook configurations are left after uninstall"
    );
    // `uninstall --wait` waits for the objects; their pods still drain (the activator's drain
    // delay and the requests it holds).
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for(
        client,
        &[NAMESPACE.into()],
        90,
        "the release's pods to be gone after uninstall",
        || {
            let pods = pods.clone();
            async move {
                let left = pods
                    .list(&ListParams::default().labels("app.kubernetes.io/name=fargo"))
                    .await
                    .map_err(|e| e.to_string())?;
                if left.items.is_empty() {
                    Ok(())
                } else {
                    let names: Vec<_> = left.items.iter().map(|p| p.name_any()).collect();
                    Err(format!("{names:?}"))
                }
            }
        },
    )
    .await;
}

#[tokio::test]
async fn helm_install_brings_the_operator_to_ready_on_the_real_node() {
    let client = client().await;
    assert_nothing_else_runs_fargo(&client).await;
    remove_out_of_cluster_leftovers(&client).await;
    put_invoke_keys(&client).await;

    let (installed, output) = run_helm(&[
        "install",
        RELEASE,
        CHART,
        "-n",
        NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "180s",
    ])
    .await;
    // The checks run in their own task so that the release is uninstalled whatever happens.
    let checked = if installed {
        tokio::spawn(check_installed_operator(client.clone()))
            .await
            .err()
    } else {
        None
    };
    let install_failure = if installed {
        None
    } else {
        let report = namespace_report(&client, &[NAMESPACE.into()]).await;
        Some(format!("helm install failed:\n{output}\n{report}"))
    };

    let (uninstalled, output) = run_helm(&[
        "uninstall",
        RELEASE,
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout",
        "120s",
    ])
    .await;
    // What the controllers made for themselves; the namespace stays (the other tests use it).
    let _ = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .delete(WEBHOOK_SECRET, &DeleteParams::default())
        .await;
    let _ = Api::<Lease>::namespaced(client.clone(), NAMESPACE)
        .delete(LEASE, &DeleteParams::default())
        .await;
    let _ = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .delete(INVOKE_KEYS, &DeleteParams::default())
        .await;
    if let Some(failure) = install_failure {
        panic!("{failure}");
    }
    if let Some(panic) = checked {
        std::panic::resume_unwind(panic.into_panic());
    }
    assert!(uninstalled, "helm uninstall failed:\n{output}");
    assert_uninstalled(&client).await;
}
