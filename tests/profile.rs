//! FargateProfile end to end against the local cluster: the API server calls the controller's
//! webhook over TLS, and the profile reconciler labels namespaces and keeps NetworkPolicies.

mod common;

use std::collections::BTreeMap;

use common::admission::{selects, webhooks_see};
use common::controller::shared_controller;
use common::namespaces::{TempNamespaces, unique_name, with_temp_namespaces};
use common::tenant::{grant_edit, tenant_client};
use common::wait::eventually;
use common::{client, install_crds};
use fargo::api::profile::FargateProfile;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const WEBHOOK_PORT: u16 = 18443;
const HEALTH_PORT: u16 = 19090;

async fn setup() -> Client {
    let client = client().await;
    install_crds(&client).await;
    shared_controller(&client, WEBHOOK_PORT, HEALTH_PORT).await;
    client
}

/// A profile named `name` from YAML `spec`, applied; deleted (with its finalizer run) by
/// [`delete_profile`].
async fn apply_profile(client: &Client, name: &str, spec: serde_json::Value) -> FargateProfile {
    let profiles: Api<FargateProfile> = Api::all(client.clone());
    let object = json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "FargateProfile",
        "metadata": {"name": name},
        "spec": spec,
    });
    profiles
        .patch(
            name,
            &PatchParams::apply("fargo-test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying profile {name}: {e}"))
}

async fn delete_profile(client: &Client, name: &str) {
    let profiles: Api<FargateProfile> = Api::all(client.clone());
    let _ = profiles.delete(name, &DeleteParams::default()).await;
    eventually(30, &format!("profile {name} to be gone"), || {
        let profiles = profiles.clone();
        async move {
            profiles
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        }
    })
    .await;
}

/// Waits until the controller has labelled `namespace` as profiled (or not); when profiled, also
/// until the webhooks see the namespace.
async fn wait_profiled(client: &Client, namespace: &str, profiled: bool) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually(
        30,
        &format!("namespace {namespace} profiled={profiled}"),
        || {
            let namespaces = namespaces.clone();
            async move {
                let ns = namespaces.get(namespace).await.ok()?;
                let labelled = ns
                    .labels()
                    .get("fargo.dev/profiled")
                    .is_some_and(|v| v == "true");
                let seen = !profiled || webhooks_see(client, namespace).await.is_ok();
                (labelled == profiled && seen).then_some(())
            }
        },
    )
    .await;
}

/// Applies profile `name` with `spec`, whose selectors must take namespace `<name>-ns`; creates
/// that namespace and waits until the controller has labelled it profiled. Returns its name.
async fn profile_with_namespace(
    client: &Client,
    temp_namespaces: &TempNamespaces,
    name: &str,
    spec: serde_json::Value,
) -> String {
    apply_profile(client, name, spec).await;
    let namespace = format!("{name}-ns");
    temp_namespaces.create(&namespace).await;
    wait_profiled(client, &namespace, true).await;
    namespace
}

async fn network_policy(client: &Client, namespace: &str, name: &str) -> Option<NetworkPolicy> {
    Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
        .get_opt(&format!("fargo-{name}"))
        .await
        .expect("reading the NetworkPolicy")
}

fn pod(name: &str, labels: &[(&str, &str)], spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        },
        "spec": spec,
    }))
    .expect("a valid pod")
}

/// The message of the API server's refusal of `result`; panics if it was not refused.
fn refusal<T>(what: &str, result: Result<T, kube::Error>) -> String {
    match result {
        Ok(_) => panic!("{what}: admitted, expected a refusal"),
        Err(kube::Error::Api(status)) => status.message,
        Err(other) => panic!("{what}: {other}"),
    }
}

/// Whether `peer` admits a pod with `pod_labels` in a namespace with `namespace_labels`.
fn peer_admits(
    peer: &NetworkPolicyPeer,
    namespace_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
) -> bool {
    // A peer with a pod selector only means the policy's own namespace, which no test here asks.
    let namespaces = peer
        .namespace_selector
        .as_ref()
        .expect("same-profile peers name their namespaces");
    let pods = peer.pod_selector.clone().unwrap_or_default();
    selects(namespaces, namespace_labels) && selects(&pods, pod_labels)
}

fn app_container(extra: serde_json::Value) -> serde_json::Value {
    let mut container = json!({"name": "app", "image": "fargo.dev/echo:dev"});
    if let (Some(container), Some(extra)) = (container.as_object_mut(), extra.as_object()) {
        container.extend(extra.clone());
    }
    container
}

#[tokio::test]
async fn matched_pod_is_mutated_into_a_fargate_pod() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("mutate");
        let runtime_class = format!("{name}-sandbox");
        let rc: RuntimeClass = serde_json::from_value(json!({
            "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": runtime_class}, "handler": "crun",
        }))
        .expect("a RuntimeClass");
        Api::<RuntimeClass>::all(client.clone())
            .create(&PostParams::default(), &rc)
            .await
            .expect("creating the RuntimeClass");
        let namespace = profile_with_namespace(
            &client,
            &temp_namespaces,
            &name,
            json!({
                "selectors": [{"namespace": format!("{name}-*"), "labels": {"tier": "backend"}}],
                "runtimeClassName": runtime_class,
                "scheduling": {"nodeSelector": {"fargo.dev/capacity": "fargate"}},
            }),
        )
        .await;

        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let created = pods
            .create(
                &PostParams::default(),
                &pod(
                    "sized",
                    &[("tier", "backend")],
                    json!({"containers": [app_container(json!({
                        "resources": {"requests": {"cpu": "1", "memory": "8Gi"}},
                    }))]}),
                ),
            )
            .await
            .expect("the matched pod is admitted");

        assert_eq!(created.labels().get("fargo.dev/profile"), Some(&name));
        assert_eq!(
            created
                .annotations()
                .get("fargo.dev/capacity-provisioned")
                .map(String::as_str),
            Some("2vCPU 9GB")
        );
        let spec = created.spec.as_ref().expect("a spec");
        assert_eq!(
            spec.runtime_class_name.as_deref(),
            Some(runtime_class.as_str())
        );
        let resources = spec.resources.as_ref().expect("pod-level resources");
        for quantities in [&resources.requests, &resources.limits] {
            let quantities = quantities.as_ref().expect("requests and limits");
            assert_eq!(quantities.get("cpu").map(|q| q.0.as_str()), Some("2"));
            assert_eq!(quantities.get("memory").map(|q| q.0.as_str()), Some("9Gi"));
        }
        assert_eq!(
            spec.node_selector
                .as_ref()
                .and_then(|s| s.get("fargo.dev/capacity"))
                .map(String::as_str),
            Some("fargate")
        );
        assert_eq!(spec.automount_service_account_token, Some(false));
        // The API server mounted a token before the webhooks ran; fargo took it out again.
        let volumes: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert!(
            !volumes.iter().any(|v| v.starts_with("kube-api-access-")),
            "{volumes:?}"
        );
        let mounts: Vec<&str> = spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounts.is_empty(), "no API token mounted: {mounts:?}");
        let seccomp = spec
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str());
        assert_eq!(seccomp, Some("RuntimeDefault"));
        let container = &spec.containers[0];
        assert_eq!(
            container
                .security_context
                .as_ref()
                .and_then(|s| s.allow_privilege_escalation),
            Some(false)
        );
        delete_profile(&client, &name).await;
        let _ = Api::<RuntimeClass>::all(client.clone())
            .delete(&runtime_class, &DeleteParams::default())
            .await;
    })
    .await;
}

#[tokio::test]
async fn each_forbidden_field_is_refused_with_its_reason() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("forbid");
        let namespace = profile_with_namespace(
            &client,
            &temp_namespaces,
            &name,
            json!({"selectors": [{"namespace": format!("{name}-*")}]}),
        )
        .await;

        // One pod per control of the Pod Security Standards' baseline level, and per thing
        // Fargate does not offer. Each pod is one the API server's own validation accepts, so
        // the refusal is the webhook's whichever runs first.
        let named = |name: &str, spec: serde_json::Value| pod(name, &[], spec);
        // `fields` in the pod's spec, beside the one app container.
        let beside_app = |mut fields: serde_json::Value| {
            fields["containers"] = json!([app_container(json!({}))]);
            fields
        };
        let in_app = |extra: serde_json::Value| json!({"containers": [app_container(extra)]});
        let app_security =
            |security: serde_json::Value| in_app(json!({"securityContext": security}));
        let mut apparmor_annotation = named("apparmor-annotation", beside_app(json!({})));
        apparmor_annotation.annotations_mut().insert(
            "container.apparmor.security.beta.kubernetes.io/app".into(),
            "unconfined".into(),
        );
        let cases = [
            (
                named("privileged", app_security(json!({"privileged": true}))),
                "spec.containers[0].securityContext.privileged",
                Some("app"),
            ),
            (
                named("host-network", beside_app(json!({"hostNetwork": true}))),
                "spec.hostNetwork",
                None,
            ),
            (
                named("host-pid", beside_app(json!({"hostPID": true}))),
                "spec.hostPID",
                None,
            ),
            (
                named("host-ipc", beside_app(json!({"hostIPC": true}))),
                "spec.hostIPC",
                None,
            ),
            (
                named(
                    "host-path",
                    beside_app(json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]})),
                ),
                "spec.volumes[0].hostPath",
                None,
            ),
            (
                named(
                    "host-port",
                    in_app(json!({"ports": [{"containerPort": 8080, "hostPort": 8080}]})),
                ),
                "spec.containers[0].ports[0].hostPort",
                Some("app"),
            ),
            (
                named(
                    "capability",
                    app_security(json!({"capabilities": {"add": ["SYS_ADMIN"]}})),
                ),
                "spec.containers[0].securityContext.capabilities.add[0]",
                Some("app"),
            ),
            (
                // The API server wants hostNetwork beside hostProcess (also refused, also named).
                named(
                    "host-process",
                    beside_app(json!({
                        "hostNetwork": true,
                        "securityContext": {"windowsOptions": {"hostProcess": true}},
                    })),
                ),
                "spec.securityContext.windowsOptions.hostProcess",
                None,
            ),
            (
                named("windows", beside_app(json!({"os": {"name": "windows"}}))),
                "spec.os.name",
                None,
            ),
            (
                named(
                    "apparmor",
                    app_security(json!({"appArmorProfile": {"type": "Unconfined"}})),
                ),
                "spec.containers[0].securityContext.appArmorProfile.type",
                Some("app"),
            ),
            (
                apparmor_annotation,
                "metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]",
                Some("app"),
            ),
            (
                named(
                    "selinux-type",
                    app_security(json!({"seLinuxOptions": {"type": "spc_t"}})),
                ),
                "spec.containers[0].securityContext.seLinuxOptions.type",
                Some("app"),
            ),
            (
                named(
                    "selinux-user",
                    beside_app(json!({
                        "securityContext": {"seLinuxOptions": {"user": "system_u"}},
                    })),
                ),
                "spec.securityContext.seLinuxOptions.user",
                None,
            ),
            (
                // The API server allows an unmasked /proc only in a user namespace.
                named(
                    "proc-mount",
                    json!({
                        "hostUsers": false,
                        "containers": [app_container(json!({
                            "securityContext": {"procMount": "Unmasked"},
                        }))],
                    }),
                ),
                "spec.containers[0].securityContext.procMount",
                Some("app"),
            ),
            (
                named(
                    "seccomp-pod",
                    beside_app(json!({
                        "securityContext": {"seccompProfile": {"type": "Unconfined"}},
                    })),
                ),
                "spec.securityContext.seccompProfile.type",
                None,
            ),
            (
                named(
                    "seccomp-init",
                    beside_app(json!({"initContainers": [{
                        "name": "setup",
                        "image": "fargo.dev/echo:dev",
                        "securityContext": {"seccompProfile": {"type": "Unconfined"}},
                    }]})),
                ),
                "spec.initContainers[0].securityContext.seccompProfile.type",
                Some("setup"),
            ),
            (
                named(
                    "sysctl",
                    beside_app(json!({"securityContext": {
                        "sysctls": [{"name": "kernel.msgmax", "value": "65536"}],
                    }})),
                ),
                "spec.securityContext.sysctls[0].name",
                None,
            ),
            (
                named(
                    "probe-host",
                    in_app(json!({
                        "readinessProbe": {"tcpSocket": {"port": 8080, "host": "10.0.0.1"}},
                    })),
                ),
                "spec.containers[0].readinessProbe.tcpSocket.host",
                Some("app"),
            ),
            (
                named(
                    "lifecycle-host",
                    in_app(json!({
                        "lifecycle": {"postStart": {"httpGet": {"port": 8080, "host": "10.0.0.1"}}},
                    })),
                ),
                "spec.containers[0].lifecycle.postStart.httpGet.host",
                Some("app"),
            ),
            (
                named(
                    "nfs",
                    beside_app(json!({"volumes": [{
                        "name": "shared",
                        "nfs": {"server": "10.0.0.2", "path": "/exports"},
                    }]})),
                ),
                "spec.volumes[0].nfs",
                None,
            ),
        ];
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let mut failures = vec![];
        for (pod, field, container) in cases {
            let case = pod.name_any();
            match pods.create(&PostParams::default(), &pod).await {
                Ok(_) => failures.push(format!("{case}: admitted")),
                Err(kube::Error::Api(status)) => {
                    let message = &status.message;
                    // The webhook's refusal, not the API server's validation.
                    let refusal = format!("profile {name:?} forbids {field}");
                    let names_container =
                        container.is_none_or(|c| message.contains(&format!("(container {c:?})")));
                    if !(message.contains("denied the request")
                        && message.contains(&refusal)
                        && names_container)
                    {
                        failures.push(format!(
                            "{case}: message lacks {refusal:?} or container {container:?}: \
                             {message}"
                        ));
                    }
                }
                Err(other) => failures.push(format!("{case}: {other}")),
            }
        }

        // What the baseline allows stays allowed: NET_BIND_SERVICE, confining profiles, the
        // container SELinux types, safe sysctls, probes of the pod itself.
        let within = pod(
            "within-baseline",
            &[],
            json!({
                "securityContext": {
                    "seccompProfile": {"type": "RuntimeDefault"},
                    "appArmorProfile": {"type": "RuntimeDefault"},
                    "seLinuxOptions": {"type": "container_t"},
                    "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                },
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                "containers": [app_container(json!({
                    "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}},
                    "readinessProbe": {"httpGet": {"port": 8080, "path": "/"}},
                }))],
            }),
        );
        if let Err(error) = pods.create(&PostParams::default(), &within).await {
            failures.push(format!("within-baseline: {error}"));
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        delete_profile(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn a_restricted_profile_refuses_pods_that_may_run_as_root_and_drops_every_capability() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("restricted");
        let namespace = profile_with_namespace(
            &client,
            &temp_namespaces,
            &name,
            json!({"selectors": [{"namespace": format!("{name}-*")}], "podSecurity": "Restricted"}),
        )
        .await;
        // Kubernetes' own PodSecurity admission checks the pod fargo hands back.
        Api::<Namespace>::all(client.clone())
            .patch(
                &namespace,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                }}})),
            )
            .await
            .expect("labelling the namespace for PodSecurity");

        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let refused = pods
            .create(
                &PostParams::default(),
                &pod(
                    "as-root",
                    &[],
                    json!({"containers": [app_container(json!({}))]}),
                ),
            )
            .await;
        let message = match refused {
            Err(kube::Error::Api(status)) => status.message,
            other => panic!("a pod that may run as root is refused by the webhook: {other:?}"),
        };
        assert!(
            message.contains(&format!(
                "profile {name:?} requires spec.securityContext.runAsNonRoot"
            )) && message.contains("set securityContext.runAsNonRoot: true"),
            "{message}"
        );

        let created = pods
            .create(
                &PostParams::default(),
                &pod(
                    "non-root",
                    &[],
                    json!({
                        "securityContext": {"runAsNonRoot": true},
                        "containers": [app_container(json!({}))],
                    }),
                ),
            )
            .await
            .expect("a non-root pod is admitted, and passes PodSecurity restricted");
        let spec = created.spec.as_ref().expect("a spec");
        let security = spec.containers[0]
            .security_context
            .as_ref()
            .expect("a security context");
        assert_eq!(
            security.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            spec.security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref())
                .map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        delete_profile(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn pods_outside_the_profile_are_untouched() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("untouched");
        apply_profile(
            &client,
            &name,
            json!({"selectors": [{"namespace": format!("{name}-in"), "labels": {"tier": "backend"}}]}),
        )
        .await;
        let matched = format!("{name}-in");
        let other = format!("{name}-out");
        temp_namespaces.create(&matched).await;
        temp_namespaces.create(&other).await;
        wait_profiled(&client, &matched, true).await;

        // A namespace no profile selects: not labelled, and a privileged pod there is none of
        // fargo's business.
        let outside = Api::<Pod>::namespaced(client.clone(), &other)
            .create(
                &PostParams::default(),
                &pod("outside", &[("tier", "backend")], json!({"containers": [app_container(json!({"securityContext": {"privileged": true}}))]})),
            )
            .await
            .expect("pods in other namespaces are admitted");
        assert!(!outside.labels().contains_key("fargo.dev/profile"));
        assert!(
            outside
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .is_none()
        );
        let ns = Api::<Namespace>::all(client.clone())
            .get(&other)
            .await
            .expect("namespace");
        assert!(!ns.labels().contains_key("fargo.dev/profiled"));

        // The matched namespace, but the pod misses the selector's labels.
        let unlabelled = Api::<Pod>::namespaced(client.clone(), &matched)
            .create(
                &PostParams::default(),
                &pod(
                    "unlabelled",
                    &[("tier", "frontend")],
                    json!({"containers": [app_container(json!({}))]}),
                ),
            )
            .await
            .expect("pods that miss the labels are admitted");
        assert!(!unlabelled.labels().contains_key("fargo.dev/profile"));
        assert!(
            !unlabelled
                .annotations()
                .contains_key("fargo.dev/capacity-provisioned")
        );
        assert_eq!(
            unlabelled
                .spec
                .as_ref()
                .and_then(|s| s.automount_service_account_token),
            None
        );
        delete_profile(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn editing_egress_updates_the_network_policy() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("egress");
        let namespace = format!("{name}-ns");
        temp_namespaces.create(&namespace).await;
        let selectors = json!([{"namespace": format!("{name}-*")}]);
        apply_profile(
            &client,
            &name,
            json!({"selectors": selectors, "network": {"egress": [{"cidr": "10.20.0.0/16"}]}}),
        )
        .await;
        let has_cidr = |cidr: &'static str| {
            let client = client.clone();
            let namespace = namespace.clone();
            let name = name.clone();
            move || {
                let client = client.clone();
                let namespace = namespace.clone();
                let name = name.clone();
                async move {
                    let policy = network_policy(&client, &namespace, &name).await?;
                    let spec = policy.spec?;
                    let types = spec.policy_types.clone().unwrap_or_default();
                    assert!(
                        types.contains(&"Ingress".to_string())
                            && types.contains(&"Egress".to_string())
                    );
                    spec.egress
                        .unwrap_or_default()
                        .iter()
                        .flat_map(|rule| rule.to.clone().unwrap_or_default())
                        .any(|peer| peer.ip_block.is_some_and(|b| b.cidr == cidr))
                        .then_some(())
                }
            }
        };
        eventually(30, "the policy with 10.20.0.0/16", has_cidr("10.20.0.0/16")).await;

        apply_profile(
            &client,
            &name,
            json!({"selectors": selectors, "network": {"egress": [{"cidr": "10.30.0.0/16"}]}}),
        )
        .await;
        eventually(30, "the policy with 10.30.0.0/16", has_cidr("10.30.0.0/16")).await;
        delete_profile(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn a_namespace_created_later_that_matches_a_wildcard_gets_its_policy() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("later");
        apply_profile(
            &client,
            &name,
            json!({"selectors": [{"namespace": format!("{name}-team-?")}]}),
        )
        .await;
        let profiles: Api<FargateProfile> = Api::all(client.clone());
        eventually(30, "the profile to be Active", || {
            let profiles = profiles.clone();
            let name = name.clone();
            async move {
                let profile = profiles.get(&name).await.ok()?;
                (profile.status?.phase? == fargo::api::profile::ProfilePhase::Active).then_some(())
            }
        })
        .await;

        let namespace = format!("{name}-team-a");
        let not_matching = format!("{name}-team-ab");
        temp_namespaces.create(&namespace).await;
        temp_namespaces.create(&not_matching).await;
        wait_profiled(&client, &namespace, true).await;
        eventually(30, "the policy in the new namespace", || {
            let client = client.clone();
            let namespace = namespace.clone();
            let name = name.clone();
            async move { network_policy(&client, &namespace, &name).await.map(|_| ()) }
        })
        .await;
        assert!(
            network_policy(&client, &not_matching, &name)
                .await
                .is_none()
        );
        eventually(
            30,
            "status.matchedNamespaces to list only the new namespace",
            || {
                let profiles = profiles.clone();
                let name = name.clone();
                let expected = vec![namespace.clone()];
                async move {
                    let status = profiles.get(&name).await.ok()?.status?;
                    (status.matched_namespaces == expected).then_some(())
                }
            },
        )
        .await;
        delete_profile(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn deleting_a_profile_removes_its_policies_and_labels_and_orphans_pods() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("delete");
        let namespace = format!("{name}-ns");
        temp_namespaces.create(&namespace).await;
        apply_profile(
            &client,
            &name,
            json!({"selectors": [{"namespace": namespace}]}),
        )
        .await;
        wait_profiled(&client, &namespace, true).await;
        eventually(30, "the policy", || {
            let client = client.clone();
            let namespace = namespace.clone();
            let name = name.clone();
            async move { network_policy(&client, &namespace, &name).await.map(|_| ()) }
        })
        .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        pods.create(
            &PostParams::default(),
            &pod(
                "kept",
                &[],
                json!({"containers": [app_container(json!({}))]}),
            ),
        )
        .await
        .expect("admitted");

        delete_profile(&client, &name).await;
        assert!(network_policy(&client, &namespace, &name).await.is_none());
        wait_profiled(&client, &namespace, false).await;
        let kept = pods.get_opt("kept").await.expect("reading the pod");
        assert!(
            kept.is_some_and(|p| p.metadata.deletion_timestamp.is_none()),
            "deletionPolicy Orphan leaves the pods running"
        );
    })
    .await;
}

#[tokio::test]
async fn deletion_policy_delete_pods_deletes_the_profiles_pods() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("deletepods");
        let namespace = format!("{name}-ns");
        temp_namespaces.create(&namespace).await;
        apply_profile(
            &client,
            &name,
            json!({"selectors": [{"namespace": namespace}], "deletionPolicy": "DeletePods"}),
        )
        .await;
        wait_profiled(&client, &namespace, true).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        pods.create(
            &PostParams::default(),
            &pod(
                "doomed",
                &[],
                json!({"containers": [app_container(json!({}))]}),
            ),
        )
        .await
        .expect("admitted");
        delete_profile(&client, &name).await;
        let doomed = pods.get_opt("doomed").await.expect("reading the pod");
        assert!(
            doomed.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
            "deletionPolicy DeletePods deletes the profile's pods"
        );
    })
    .await;
}

#[tokio::test]
async fn a_missing_runtime_class_is_reported_and_resolves_when_it_appears() {
    let client = setup().await;
    let name = unique_name("norc");
    let runtime_class = format!("{name}-missing");
    apply_profile(
        &client,
        &name,
        json!({"selectors": [{"namespace": format!("{name}-*")}], "runtimeClassName": runtime_class}),
    )
    .await;
    let profiles: Api<FargateProfile> = Api::all(client.clone());
    let condition = |status: &'static str| {
        let profiles = profiles.clone();
        let name = name.clone();
        move || {
            let profiles = profiles.clone();
            let name = name.clone();
            async move {
                let profile = profiles.get(&name).await.ok()?;
                let conditions = profile.status?.conditions;
                let found = conditions.iter().find(|c| c.type_ == "RuntimeClassFound")?;
                (found.status == status).then(|| found.clone())
            }
        }
    };
    let missing = eventually(30, "RuntimeClassFound=False", condition("False")).await;
    assert_eq!(missing.reason, "RuntimeClassNotFound");
    assert!(missing.message.contains(&runtime_class));
    let phase = profiles
        .get(&name)
        .await
        .expect("profile")
        .status
        .and_then(|s| s.phase);
    assert_eq!(phase, Some(fargo::api::profile::ProfilePhase::Failed));

    let rc: RuntimeClass = serde_json::from_value(json!({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": runtime_class}, "handler": "crun",
    }))
    .expect("a RuntimeClass");
    Api::<RuntimeClass>::all(client.clone())
        .create(&PostParams::default(), &rc)
        .await
        .expect("creating the RuntimeClass");
    eventually(30, "RuntimeClassFound=True", condition("True")).await;

    // `kubectl wait --for=condition=Ready` works on profiles.
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let status = std::process::Command::new(kubectl)
        .args([
            "wait",
            "--for=condition=Ready",
            &format!("fp/{name}"),
            "--timeout=30s",
        ])
        .status()
        .expect("running kubectl");
    assert!(status.success());

    delete_profile(&client, &name).await;
    let _ = Api::<RuntimeClass>::all(client.clone())
        .delete(&runtime_class, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn an_admitted_pod_cannot_shed_or_change_its_profile_label() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("relabel");
        let namespace = profile_with_namespace(
            &client,
            &temp_namespaces,
            &name,
            json!({"selectors": [{"namespace": format!("{name}-ns"), "labels": {"tier": "backend"}}]}),
        )
        .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let admitted = pods
            .create(
                &PostParams::default(),
                &pod("fenced", &[("tier", "backend")], json!({"containers": [app_container(json!({}))]})),
            )
            .await
            .expect("the matched pod is admitted");
        assert_eq!(admitted.labels().get("fargo.dev/profile"), Some(&name));

        // `kubectl label pod fenced fargo.dev/profile-`
        let shed = json!({"metadata": {"labels": {"fargo.dev/profile": null}}});
        let message = refusal(
            "removing the profile label",
            pods.patch("fenced", &PatchParams::default(), &Patch::Merge(&shed)).await,
        );
        assert!(
            message.contains("profile-label.validate.fargo.dev")
                && message.contains(&format!("fargo.dev/profile=\"{name}\" cannot be removed")),
            "{message}"
        );
        // `kubectl label --overwrite pod fenced fargo.dev/profile=other`
        let other = json!({"metadata": {"labels": {"fargo.dev/profile": "other"}}});
        let message = refusal(
            "changing the profile label",
            pods.patch("fenced", &PatchParams::default(), &Patch::Merge(&other)).await,
        );
        assert!(message.contains("cannot change from"), "{message}");
        // The API server resets only the spec of an update through the status subresource, so a
        // status writer could shed the label there too.
        let message = refusal(
            "removing the profile label through the status",
            pods.patch_status("fenced", &PatchParams::default(), &Patch::Merge(&shed))
                .await,
        );
        assert!(message.contains("cannot be removed"), "{message}");

        // Everything else about the pod's metadata stays the owner's to change.
        let unrelated = json!({"metadata": {
            "labels": {"version": "v2"},
            "annotations": {"example.com/note": "relabelled"},
        }});
        let updated = pods
            .patch("fenced", &PatchParams::default(), &Patch::Merge(&unrelated))
            .await
            .expect("updates that leave the profile label alone are admitted");
        assert_eq!(updated.labels().get("version").map(String::as_str), Some("v2"));
        assert_eq!(updated.labels().get("fargo.dev/profile"), Some(&name));
        let kept = pods.get("fenced").await.expect("reading the pod");
        assert_eq!(kept.labels().get("fargo.dev/profile"), Some(&name));
        delete_profile(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn a_pod_cannot_claim_a_profile_after_admission() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("claim");
        let namespace = profile_with_namespace(
            &client,
            &temp_namespaces,
            &name,
            json!({"selectors": [{"namespace": format!("{name}-ns"), "labels": {"tier": "backend"}}]}),
        )
        .await;
        // In the profiled namespace, but no profile takes it, privileged as it is.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let plain = pods
            .create(
                &PostParams::default(),
                &pod(
                    "plain",
                    &[("tier", "frontend")],
                    json!({"containers": [app_container(json!({"securityContext": {"privileged": true}}))]}),
                ),
            )
            .await
            .expect("a pod no profile takes is admitted");
        assert!(!plain.labels().contains_key("fargo.dev/profile"));

        // `kubectl label pod plain fargo.dev/profile=NAME`: a peer of the profile's pods.
        let claim = json!({"metadata": {"labels": {"fargo.dev/profile": name}}});
        let message = refusal(
            "adding the profile label",
            pods.patch("plain", &PatchParams::default(), &Patch::Merge(&claim)).await,
        );
        assert!(
            message.contains(&format!("fargo.dev/profile=\"{name}\" cannot be added to pod \"plain\"")),
            "{message}"
        );
        let kept = pods.get("plain").await.expect("reading the pod");
        assert!(!kept.labels().contains_key("fargo.dev/profile"));
        delete_profile(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn a_privileged_ephemeral_container_is_refused_on_a_fargate_pod() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("debug");
        let namespace = profile_with_namespace(
            &client,
            &temp_namespaces,
            &name,
            json!({"selectors": [{"namespace": format!("{name}-ns")}]}),
        )
        .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        pods.create(
            &PostParams::default(),
            &pod(
                "target",
                &[],
                json!({"containers": [app_container(json!({}))]}),
            ),
        )
        .await
        .expect("admitted");

        // What `kubectl debug -it target --image=... --target=app --profile=sysadmin` sends.
        let debug = |container: &str, security_context: serde_json::Value| {
            json!({"spec": {"ephemeralContainers": [{
                "name": container,
                "image": "fargo.dev/echo:dev",
                "targetContainerName": "app",
                "stdin": true,
                "tty": true,
                "securityContext": security_context,
            }]}})
        };
        let sysadmin = debug("debugger-root", json!({"privileged": true}));
        let message = refusal(
            "a privileged ephemeral container",
            pods.patch_subresource(
                "ephemeralcontainers",
                "target",
                &PatchParams::default(),
                &Patch::Strategic(&sysadmin),
            )
            .await,
        );
        assert!(
            message.contains("ephemeral-containers.validate.fargo.dev")
                && message.contains(&format!("profile \"{name}\" forbids"))
                && message.contains("spec.ephemeralContainers[0].securityContext.privileged")
                && message.contains("container \"debugger-root\""),
            "{message}"
        );

        // Debugging as such stays possible.
        let general = debug("debugger", json!({}));
        let debugged = pods
            .patch_subresource(
                "ephemeralcontainers",
                "target",
                &PatchParams::default(),
                &Patch::Strategic(&general),
            )
            .await
            .expect("an ephemeral container the profile allows is admitted");
        let names: Vec<String> = debugged
            .spec
            .and_then(|spec| spec.ephemeral_containers)
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["debugger"]);
        delete_profile(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn a_pod_labelled_into_a_profile_outside_its_namespaces_is_no_peer() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("peers");
        let (a, b, outside) = (
            format!("{name}-a"),
            format!("{name}-b"),
            format!("{name}-x"),
        );
        for namespace in [&a, &b, &outside] {
            temp_namespaces.create(namespace).await;
        }
        let both = json!([{"namespace": a}, {"namespace": b}]);
        apply_profile(&client, &name, json!({"selectors": both})).await;
        wait_profiled(&client, &b, true).await;

        // A genuine peer in b, and a pod that labels itself into the profile in a namespace no
        // profile selects: no webhook judges it there.
        let genuine = Api::<Pod>::namespaced(client.clone(), &b)
            .create(
                &PostParams::default(),
                &pod(
                    "genuine",
                    &[],
                    json!({"containers": [app_container(json!({}))]}),
                ),
            )
            .await
            .expect("admitted");
        assert_eq!(genuine.labels().get("fargo.dev/profile"), Some(&name));
        let spoofing = Api::<Pod>::namespaced(client.clone(), &outside)
            .create(
                &PostParams::default(),
                &pod(
                    "spoofing",
                    &[("fargo.dev/profile", name.as_str())],
                    json!({"containers": [app_container(json!({}))]}),
                ),
            )
            .await
            .expect("pods of namespaces no profile selects are none of fargo's business");
        assert_eq!(spoofing.labels().get("fargo.dev/profile"), Some(&name));

        let namespace_labels = |namespace: String| {
            let client = client.clone();
            async move {
                Api::<Namespace>::all(client)
                    .get(&namespace)
                    .await
                    .expect("reading the namespace")
                    .labels()
                    .clone()
            }
        };
        let (b_labels, outside_labels) = (
            namespace_labels(b.clone()).await,
            namespace_labels(outside.clone()).await,
        );
        // The same-profile peers of the policy in a, once it names both namespaces.
        let same_profile_peers = |expected: usize| {
            let (client, a, name) = (client.clone(), a.clone(), name.clone());
            let b_labels = b_labels.clone();
            let genuine = genuine.labels().clone();
            move || {
                let (client, a, name) = (client.clone(), a.clone(), name.clone());
                let (b_labels, genuine) = (b_labels.clone(), genuine.clone());
                async move {
                    let spec = network_policy(&client, &a, &name).await?.spec?;
                    let egress = spec
                        .egress
                        .unwrap_or_default()
                        .into_iter()
                        .flat_map(|r| r.to.unwrap_or_default());
                    let ingress = spec
                        .ingress
                        .unwrap_or_default()
                        .into_iter()
                        .flat_map(|r| r.from.unwrap_or_default());
                    let peers: Vec<NetworkPolicyPeer> = egress
                        .chain(ingress)
                        .filter(|peer| {
                            peer.pod_selector.as_ref().is_some_and(|pods| {
                                pods.match_labels
                                    .as_ref()
                                    .and_then(|l| l.get("fargo.dev/profile"))
                                    == Some(&name)
                            })
                        })
                        .collect();
                    let admitting = peers
                        .iter()
                        .filter(|peer| peer_admits(peer, &b_labels, &genuine))
                        .count();
                    (peers.len() == 2 && admitting == expected).then_some(peers)
                }
            }
        };
        let peers = eventually(
            30,
            "same-profile peers in a that admit b's pods",
            same_profile_peers(2),
        )
        .await;
        for peer in &peers {
            assert!(
                !peer_admits(peer, &outside_labels, spoofing.labels()),
                "a pod outside the profile's namespaces is a peer: {peer:?}"
            );
        }

        // A namespace the profile stops selecting stops being a peer.
        apply_profile(&client, &name, json!({"selectors": [{"namespace": a}]})).await;
        eventually(
            30,
            "same-profile peers in a that no longer admit b's pods",
            same_profile_peers(0),
        )
        .await;
        delete_profile(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn a_daemon_set_owner_exempts_no_pod_in_a_profiled_namespace() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("daemonset");
        let namespace = profile_with_namespace(
            &client,
            &temp_namespaces,
            &name,
            json!({"selectors": [{"namespace": format!("{name}-ns")}]}),
        )
        .await;
        let privileged = json!({
            "hostPID": true,
            "containers": [app_container(json!({"securityContext": {"privileged": true}}))],
        });

        // A bare pod naming a decoy DaemonSet as its owner.
        let mut decoy = pod("decoy", &[], privileged.clone());
        decoy.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "DaemonSet".into(),
            name: "node-agent".into(),
            uid: "6c1b2a4e-0000-4000-8000-000000000000".into(),
            ..Default::default()
        }]);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let message = refusal(
            "a privileged pod naming a DaemonSet owner",
            pods.create(&PostParams::default(), &decoy).await,
        );
        assert!(
            message.contains(&format!("profile \"{name}\" forbids spec.hostPID")),
            "{message}"
        );

        // A DaemonSet the tenant made: the pods its controller creates are judged like any.
        let mut template_spec = privileged.clone();
        // Every node, the tainted simulated ones too: one attempt is enough.
        template_spec["tolerations"] = json!([{"operator": "Exists"}]);
        let daemon_set: DaemonSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "node-agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "node-agent"}},
                "template": {
                    "metadata": {"labels": {"app": "node-agent"}},
                    "spec": template_spec,
                },
            },
        }))
        .expect("a DaemonSet");
        Api::<DaemonSet>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &daemon_set)
            .await
            .expect("creating the DaemonSet");
        let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
        let refused = eventually(60, "the DaemonSet controller's pods to be refused", || {
            let events = events.clone();
            async move {
                events
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter(|e| e.involved_object.name.as_deref() == Some("node-agent"))
                    .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
                    .find_map(|e| e.message)
            }
        })
        .await;
        assert!(
            refused.contains(&format!("profile \"{name}\" forbids spec.hostPID")),
            "{refused}"
        );
        let agents = pods
            .list(&ListParams::default().labels("app=node-agent"))
            .await
            .expect("listing pods");
        assert!(agents.items.is_empty(), "a DaemonSet pod was admitted");
        delete_profile(&client, &name).await;
    })
    .await;
}

#[tokio::test]
async fn a_tenants_network_policies_cannot_widen_the_fence() {
    let client = setup().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("widen");
        let namespace = profile_with_namespace(
            &client,
            &temp_namespaces,
            &name,
            json!({"selectors": [{"namespace": format!("{name}-ns"), "labels": {"tier": "backend"}}]}),
        )
        .await;
        eventually(30, "the profile's NetworkPolicy", || {
            network_policy(&client, &namespace, &name)
        })
        .await;
        let tenant = format!("{name}-tenant");
        grant_edit(&client, &namespace, &tenant).await;
        let as_tenant = tenant_client(&tenant).await;
        let policies: Api<NetworkPolicy> = Api::namespaced(as_tenant.clone(), &namespace);
        let tenant_policy = |policy: &str, selector: serde_json::Value| -> NetworkPolicy {
            serde_json::from_value(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": policy},
                "spec": {
                    "podSelector": selector,
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{}], "egress": [{}],
                },
            }))
            .expect("a NetworkPolicy")
        };

        // An allow-all policy over every pod, and one over the profile's pods by name, would
        // each cancel fargo's: refused.
        for (policy, selector) in [
            ("allow-all", json!({})),
            ("allow-backend", json!({"matchLabels": {"tier": "backend"}})),
        ] {
            let message = refusal(
                policy,
                policies.create(&PostParams::default(), &tenant_policy(policy, selector)).await,
            );
            assert!(
                message.contains("network-policies.validate.fargo.dev")
                    && message.contains("would widen the profile's fence")
                    && message.contains("DoesNotExist"),
                "{message}"
            );
        }
        // A policy that leaves the profile's pods out is the tenant's to write.
        policies
            .create(
                &PostParams::default(),
                &tenant_policy(
                    "allow-others",
                    json!({"matchExpressions": [{"key": "fargo.dev/profile", "operator": "DoesNotExist"}]}),
                ),
            )
            .await
            .expect("a policy that leaves profiled pods out is admitted");

        // fargo's own policy: not the tenant's to unlabel (hiding it from fargo's watch), edit
        // or delete.
        let fargos = format!("fargo-{name}");
        let unlabel = json!({"metadata": {"labels": {"fargo.dev/profile": null}}});
        let message = refusal(
            "unlabelling fargo's policy",
            policies.patch(&fargos, &PatchParams::default(), &Patch::Merge(&unlabel)).await,
        );
        assert!(message.contains("only fargo changes it"), "{message}");
        let widen = json!({"spec": {"egress": [{}]}});
        let message = refusal(
            "editing fargo's policy",
            policies.patch(&fargos, &PatchParams::default(), &Patch::Merge(&widen)).await,
        );
        assert!(message.contains("only fargo changes it"), "{message}");
        let message = refusal(
            "deleting fargo's policy",
            policies.delete(&fargos, &DeleteParams::default()).await,
        );
        assert!(message.contains("only fargo deletes it"), "{message}");

        // The fence stands as fargo made it, and only the tenant's harmless policy joined it.
        let fence = network_policy(&client, &namespace, &name)
            .await
            .expect("fargo's policy is still there");
        assert_eq!(fence.labels().get("fargo.dev/profile"), Some(&name));
        let egress = fence.spec.and_then(|spec| spec.egress).unwrap_or_default();
        assert!(
            egress.iter().all(|rule| rule.to.is_some() || rule.ports.is_some()),
            "no rule of fargo's policy allows everything: {egress:?}"
        );
        let names: Vec<String> = Api::<NetworkPolicy>::namespaced(client.clone(), &namespace)
            .list(&ListParams::default())
            .await
            .expect("listing policies")
            .into_iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&fargos) && names.contains(&"allow-others".to_string()));
        delete_profile(&client, &name).await;
    })
    .await;
}

/// What the `mutated-after-fargo` condition of the webhook judging pod creation says now.
async fn pod_creation_judged_again(client: &Client) -> Option<String> {
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get("fargo")
        .await
        .ok()?;
    let creation = validating
        .webhooks?
        .into_iter()
        .find(|webhook| webhook.name == "pods.validate.fargo.dev")?;
    creation
        .match_conditions?
        .into_iter()
        .find(|condition| condition.name == "mutated-after-fargo")
        .map(|condition| condition.expression)
}

/// A pod's creation is judged a second time, after every mutation, only while something besides
/// fargo may mutate pods: a mutating webhook whose rules match pod creation turns that call on,
/// and its removal turns it off. (The webhook added here is never called: its namespace selector
/// selects no namespace.)
#[tokio::test]
async fn pod_creation_is_judged_again_only_while_another_webhook_may_mutate_pods() {
    let client = setup().await;
    let configurations = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let label = "fargo.dev/test-injector";
    // One left by an earlier run that stopped half-way.
    let _ = configurations
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(label),
        )
        .await;
    let judged_again = |expected: &'static str| {
        let client = client.clone();
        async move {
            (pod_creation_judged_again(&client).await.as_deref() == Some(expected)).then_some(())
        }
    };
    eventually(
        60,
        "pod creation judged once (no other mutating webhook)",
        || judged_again("false"),
    )
    .await;

    let name = unique_name("injector");
    let injector: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {label: "true"}},
        "webhooks": [{
            "name": "pods.injector.example.com",
            "clientConfig": {"url": "https://127.0.0.1:9/never"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {label: "no-namespace-has-this"}},
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }],
    }))
    .expect("a webhook configuration");
    configurations
        .create(&PostParams::default(), &injector)
        .await
        .expect("the other webhook registered");
    eventually(60, "pod creation judged again after every mutation", || {
        judged_again("true")
    })
    .await;

    configurations
        .delete(&name, &DeleteParams::default())
        .await
        .expect("the other webhook removed");
    eventually(60, "pod creation judged once again", || {
        judged_again("false")
    })
    .await;
}
