//! End to end on the local cluster's real node (`fargo-node`, tests/cluster/node.sh: containerd,
//! runc and crun, a CNI bridge, kube-router enforcing NetworkPolicies): pods run from the images
//! built here (tests/cluster/images.sh), profiles fence real traffic, and a profile's RuntimeClass
//! decides which OCI runtime runs a pod. Pod IPs (10.244.0.0/24) are reached from this machine
//! directly; nothing here sends traffic anywhere else.
//!
//! Every test makes its own namespaces (and profile) and removes them, also when it fails; a wait
//! that times out reports the pods and events of those namespaces.

mod common;
mod real_node;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::admission::webhooks_see;
use common::controller::shared_controller_with;
use common::namespaces::{ensure_namespace, unique_name, with_temp_namespaces, with_temp_ns};
use common::profiles::{apply_profile, deleting_profile_after};
use common::wait::wait_for;
use common::{client, install_crds};
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use real_node::http_get;
use serde_json::{Value, json};

/// Ports of this binary's controller, apart from those of the other test binaries.
const WEBHOOK_PORT: u16 = 18446;
const HEALTH_PORT: u16 = 19093;

const ECHO_IMAGE: &str = "fargo.dev/echo:dev";
const ECHO_PORT: u16 = 8080;
const NODE_NAME: &str = "fargo-node";
/// The label node.sh gives the real node; kwok's simulated nodes are tainted and lack it.
const REAL_NODE: (&str, &str) = ("fargo.dev/node", "real");
/// A pod on the real node starts in seconds; the margin is for a busy two-core machine.
const POD_READY_SECONDS: u64 = 120;
/// kube-router applies a policy change within a second or two of seeing it.
const POLICY_SECONDS: u64 = 30;
/// Where the containerd shim keeps the state of both runtimes: node.sh sets no `Root` for
/// them, so io.containerd.runc.v2 uses its default, /run/containerd/runc/<containerd namespace>,
/// and the CRI plugin's namespace is k8s.io.
const RUNTIME_ROOT: &str = "/run/containerd/runc/k8s.io";

/// Where this binary's controller finds the cluster DNS pods: the local cluster has no DNS, so
/// the test that needs one starts a stand-in here.
const DNS_NAMESPACE: &str = "fargo-test-dns";
const DNS_POD_LABEL: (&str, &str) = ("k8s-app", "fargo-test-dns");

async fn setup() -> Client {
    let client = client().await;
    install_crds(&client).await;
    let dns = [
        "--dns-namespace".to_string(),
        DNS_NAMESPACE.to_string(),
        "--dns-pod-labels".to_string(),
        format!("{}={}", DNS_POD_LABEL.0, DNS_POD_LABEL.1),
    ];
    shared_controller_with(&client, WEBHOOK_PORT, HEALTH_PORT, &dns).await;
    client
}

/// An echo pod that the kubelet reports Ready once it answers HTTP. `on_real_node` pins it with
/// a nodeSelector; profiled pods get theirs from the profile instead.
fn echo_pod(name: &str, on_real_node: bool) -> Pod {
    let mut spec = json!({
        "containers": [{
            "name": "echo",
            "image": ECHO_IMAGE,
            // Imported into the node's containerd; there is no registry to pull from.
            "imagePullPolicy": "Never",
            "ports": [{"containerPort": ECHO_PORT}],
            // The kubelet probes from the node itself, which kube-router lets through to fenced
            // pods as well.
            "readinessProbe": {
                "httpGet": {"path": "/healthz", "port": ECHO_PORT},
                "periodSeconds": 1,
            },
        }],
        "terminationGracePeriodSeconds": 1,
    });
    if on_real_node {
        spec["nodeSelector"] = json!({REAL_NODE.0: REAL_NODE.1});
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }))
    .expect("a valid pod")
}

async fn create_pod(client: &Client, namespace: &str, pod: &Pod) -> Pod {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), pod)
        .await
        .unwrap_or_else(|e| panic!("creating pod {namespace}/{}: {e}", pod.name_any()))
}

/// Waits until pod `namespace/name` is Ready, and returns it.
async fn wait_ready(client: &Client, namespace: &str, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for(
        client,
        &[namespace.to_string()],
        POD_READY_SECONDS,
        &format!("pod {namespace}/{name} to be Ready"),
        || {
            let pods = pods.clone();
            async move {
                let pod = pods.get(name).await.map_err(|e| e.to_string())?;
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|conditions| {
                        conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                if ready {
                    Ok(pod)
                } else {
                    Err(format!("phase {:?}", pod.status.and_then(|s| s.phase)))
                }
            }
        },
    )
    .await
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_else(|| panic!("pod {} has no IP", pod.name_any()))
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// Asks the echo pod at `from_ip` to GET `http://to_ip:port/` (its `/call` endpoint): the status
/// and body it got, or 502 with the error when the connection failed.
async fn call_between(from_ip: &str, to_ip: &str, port: u16) -> Result<(u16, String), String> {
    http_get(
        from_ip,
        ECHO_PORT,
        &format!("/call?url=http://{to_ip}:{port}/"),
        Duration::from_secs(10),
    )
    .await
}

/// Waits until `from_ip` reaches `to_ip` and the answer comes from pod `to`.
async fn wait_reachable(
    client: &Client,
    namespaces: &[String],
    from: (&str, &str),
    to: (&str, &str),
) {
    wait_reachable_on(client, namespaces, from, to, ECHO_PORT).await;
}

/// Waits until `from_ip` reaches `to_ip` on `port` and the answer comes from pod `to`.
async fn wait_reachable_on(
    client: &Client,
    namespaces: &[String],
    (from, from_ip): (&str, &str),
    (to, to_ip): (&str, &str),
    port: u16,
) {
    wait_for(
        client,
        namespaces,
        POLICY_SECONDS,
        &format!("{from} ({from_ip}) to reach {to} ({to_ip}:{port})"),
        || async move {
            let (status, body) = call_between(from_ip, to_ip, port).await?;
            let echo: Value = serde_json::from_str(&body)
                .map_err(|_| format!("status {status}, body {body:?}"))?;
            if status == 200 && echo["hostname"] == to {
                Ok(())
            } else {
                Err(format!("status {status}, body {body:?}"))
            }
        },
    )
    .await
}

/// Waits until `from_ip`'s call to `to_ip` fails: its `/call` answers 502 with the connection
/// error (kube-router rejects fenced packets, so the error is "Connection refused"). The fence
/// holds once kube-router has seen the pod and the policy, a moment after the pod starts.
async fn wait_fenced(client: &Client, namespaces: &[String], from: (&str, &str), to: (&str, &str)) {
    wait_fenced_on(client, namespaces, from, to, ECHO_PORT).await;
}

/// Waits until `from_ip`'s call to `to_ip` on `port` fails (see [`wait_fenced`]).
async fn wait_fenced_on(
    client: &Client,
    namespaces: &[String],
    (from, from_ip): (&str, &str),
    (to, to_ip): (&str, &str),
    port: u16,
) {
    wait_for(
        client,
        namespaces,
        POLICY_SECONDS,
        &format!("{from} ({from_ip}) to be fenced off from {to} ({to_ip}:{port})"),
        || async move {
            let (status, body) = call_between(from_ip, to_ip, port).await?;
            if status == 502 && body.starts_with(&format!("calling http://{to_ip}:")) {
                Ok(())
            } else {
                Err(format!("status {status}, body {body:?}"))
            }
        },
    )
    .await
}

/// Waits until the controller has labelled `namespace` profiled and written the profile's
/// NetworkPolicy there: from then on the webhook mutates its pods and the fence exists.
async fn wait_fenced_namespace(client: &Client, namespace: &str, profile: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    let policy = format!("fargo-{profile}");
    wait_for(
        client,
        &[namespace.to_string()],
        30,
        &format!("namespace {namespace} to be profiled with NetworkPolicy {policy}"),
        || {
            let (namespaces, policies, policy) =
                (namespaces.clone(), policies.clone(), policy.clone());
            async move {
                let ns = namespaces.get(namespace).await.map_err(|e| e.to_string())?;
                if ns.labels().get("fargo.dev/profiled").map(String::as_str) != Some("true") {
                    return Err("namespace not labelled fargo.dev/profiled=true".into());
                }
                webhooks_see(client, namespace).await?;
                match policies.get_opt(&policy).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("no NetworkPolicy yet".into()),
                    Err(error) => Err(error.to_string()),
                }
            }
        },
    )
    .await;
}

/// The container ids `<runtime> --root RUNTIME_ROOT list` prints (run on this machine, which is
/// the node).
fn runtime_list(runtime: &str) -> Vec<String> {
    let list = || {
        std::process::Command::new(runtime)
            .args(["--root", RUNTIME_ROOT, "list"])
            .output()
            .unwrap_or_else(|e| panic!("running `{runtime} list` (is {runtime} installed?): {e}"))
    };
    // A container removed while the runtime walks its state directory fails the whole listing
    // ("container does not exist"); the node runs other tests' pods, so ask again a few times.
    let mut output = list();
    for _ in 0..5 {
        if output.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        output = list();
    }
    assert!(
        output.status.success(),
        "`{runtime} --root {RUNTIME_ROOT} list` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1) // the header
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_pod_with_a_locally_built_image_runs_and_answers_http() {
    let client = client().await;
    with_temp_ns(&client, |client, namespace| async move {
        create_pod(&client, &namespace, &echo_pod("echo", true)).await;
        let pod = wait_ready(&client, &namespace, "echo").await;
        assert_eq!(node_name(&pod), Some(NODE_NAME));

        let ip = pod_ip(&pod);
        let (status, body) = http_get(&ip, ECHO_PORT, "/hello?from=host", Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("GET http://{ip}:{ECHO_PORT}/hello: {e}"));
        assert_eq!(status, 200, "body: {body}");
        let echo: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("the echo is JSON ({e}): {body}"));
        assert_eq!(echo["method"], "GET");
        assert_eq!(echo["path"], "/hello");
        assert_eq!(echo["query"], json!({"from": "host"}));
        // The pod's hostname is its name: the answer came from inside this pod.
        assert_eq!(echo["hostname"], "echo");
    })
    .await;
}

#[tokio::test]
async fn profile_egress_fences_pods_until_the_profile_allows_it() {
    let client = setup().await;
    let profile = unique_name("fence");
    // The profile goes after the namespaces, so that a failing test's report shows its policies.
    let test = with_temp_namespaces(&client, |client, temp_namespaces| {
        let profile = profile.clone();
        async move {
            let fenced_ns = format!("{profile}-a");
            let open_ns = format!("{profile}-b");
            let namespaces = vec![fenced_ns.clone(), open_ns.clone()];
            // Nothing allowed but DNS: not even the profile's own pods.
            let network = |allowed: Value| {
                let mut network = json!({"allowDNS": true, "allowSameProfile": false});
                if let (Some(network), Some(allowed)) =
                    (network.as_object_mut(), allowed.as_object())
                {
                    network.extend(allowed.clone());
                }
                network
            };
            let spec = |allowed: Value| {
                json!({
                    "selectors": [{"namespace": fenced_ns}],
                    "network": network(allowed),
                    "scheduling": {"nodeSelector": {REAL_NODE.0: REAL_NODE.1}},
                })
            };
            temp_namespaces.create(&open_ns).await;
            temp_namespaces.create(&fenced_ns).await;
            apply_profile(&client, &profile, spec(json!({}))).await;
            wait_fenced_namespace(&client, &fenced_ns, &profile).await;

            // Pod A in the profile (placed on the real node by the profile alone), pod B outside.
            let a = create_pod(&client, &fenced_ns, &echo_pod("a", false)).await;
            assert_eq!(a.labels().get("fargo.dev/profile"), Some(&profile));
            create_pod(&client, &open_ns, &echo_pod("b", true)).await;
            let a = wait_ready(&client, &fenced_ns, "a").await;
            let b = wait_ready(&client, &open_ns, "b").await;
            assert_eq!(node_name(&a), Some(NODE_NAME));
            let (a_ip, b_ip) = (pod_ip(&a), pod_ip(&b));
            let a = ("a", a_ip.as_str());
            let b = ("b", b_ip.as_str());

            // A may not connect out, and B may not connect in: A's ingress is denied too.
            wait_fenced(&client, &namespaces, a, b).await;
            wait_fenced(&client, &namespaces, b, a).await;

            // The profile opens both directions to B's namespace; running pods follow.
            let b_namespace = json!([{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": open_ns,
            }}}]);
            apply_profile(
                &client,
                &profile,
                spec(json!({"egress": b_namespace, "ingress": b_namespace})),
            )
            .await;
            wait_reachable(&client, &namespaces, a, b).await;
            wait_reachable(&client, &namespaces, b, a).await;
        }
    });
    deleting_profile_after(&client, &profile, test).await;
}

#[tokio::test]
async fn a_pod_labelled_into_a_profile_outside_its_namespaces_gets_no_same_profile_traffic() {
    let client = setup().await;
    let profile = unique_name("peers");
    // The profile goes after the namespaces, so that a failing test's report shows its policies.
    let test = with_temp_namespaces(&client, |client, temp_namespaces| {
        let profile = profile.clone();
        async move {
            let (a_ns, b_ns, outside_ns) = (
                format!("{profile}-a"),
                format!("{profile}-b"),
                format!("{profile}-x"),
            );
            let namespaces = vec![a_ns.clone(), b_ns.clone(), outside_ns.clone()];
            for namespace in &namespaces {
                temp_namespaces.create(namespace).await;
            }
            // allowSameProfile is on by default: a and b are one "security group".
            apply_profile(
                &client,
                &profile,
                json!({
                    "selectors": [{"namespace": a_ns}, {"namespace": b_ns}],
                    "scheduling": {"nodeSelector": {REAL_NODE.0: REAL_NODE.1}},
                }),
            )
            .await;
            wait_fenced_namespace(&client, &a_ns, &profile).await;
            wait_fenced_namespace(&client, &b_ns, &profile).await;

            create_pod(&client, &a_ns, &echo_pod("a", false)).await;
            create_pod(&client, &b_ns, &echo_pod("b", false)).await;
            // Where no profile selects the namespace, a pod may label itself as it likes.
            let mut spoofing = echo_pod("s", true);
            spoofing
                .labels_mut()
                .insert("fargo.dev/profile".into(), profile.clone());
            create_pod(&client, &outside_ns, &spoofing).await;
            let a = wait_ready(&client, &a_ns, "a").await;
            let b = wait_ready(&client, &b_ns, "b").await;
            let s = wait_ready(&client, &outside_ns, "s").await;
            let (a_ip, b_ip, s_ip) = (pod_ip(&a), pod_ip(&b), pod_ip(&s));
            let a = ("a", a_ip.as_str());
            let b = ("b", b_ip.as_str());
            let s = ("s", s_ip.as_str());

            // The profile's pods reach each other across its namespaces ...
            wait_reachable(&client, &namespaces, a, b).await;
            wait_reachable(&client, &namespaces, b, a).await;
            // ... and the pod that only carries the label is neither let in nor reached.
            wait_fenced(&client, &namespaces, s, a).await;
            wait_fenced(&client, &namespaces, a, s).await;
        }
    });
    deleting_profile_after(&client, &profile, test).await;
}

#[tokio::test]
async fn a_profiles_runtime_class_runs_the_pod_under_crun() {
    let client = setup().await;
    let profile = unique_name("crun");
    // The profile goes after the namespace, so that a failing test's report shows its policy.
    let test = with_temp_namespaces(&client, |client, temp_namespaces| {
        let profile = profile.clone();
        async move {
            let namespace = format!("{profile}-ns");
            // RuntimeClass `crun` (handler crun) is one of the two node.sh creates.
            apply_profile(
                &client,
                &profile,
                json!({
                    "selectors": [{"namespace": namespace}],
                    "runtimeClassName": "crun",
                    "scheduling": {"nodeSelector": {REAL_NODE.0: REAL_NODE.1}},
                }),
            )
            .await;
            temp_namespaces.create(&namespace).await;
            wait_fenced_namespace(&client, &namespace, &profile).await;

            let created = create_pod(&client, &namespace, &echo_pod("sandboxed", false)).await;
            assert_eq!(
                created
                    .spec
                    .as_ref()
                    .and_then(|s| s.runtime_class_name.as_deref()),
                Some("crun")
            );
            let pod = wait_ready(&client, &namespace, "sandboxed").await;
            assert_eq!(node_name(&pod), Some(NODE_NAME));
            let container_id = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|statuses| statuses.first())
                .and_then(|status| status.container_id.as_deref())
                .and_then(|id| id.strip_prefix("containerd://"))
                .expect("a containerd:// container id")
                .to_string();

            let crun = runtime_list("crun");
            assert!(
                crun.contains(&container_id),
                "crun does not run container {container_id}; it runs {crun:?}"
            );
            let runc = runtime_list("runc");
            assert!(
                !runc.contains(&container_id),
                "runc lists container {container_id}, which crun should run"
            );
        }
    });
    deleting_profile_after(&client, &profile, test).await;
}

/// An echo pod listening on `port` rather than 8080, with `labels`, on the real node; ports
/// below 1024 are opened to its non-root user by the (namespaced, safe) sysctl.
fn echo_pod_on(name: &str, port: u16, labels: Value) -> Pod {
    let mut pod = serde_json::to_value(echo_pod(name, true)).expect("a pod as JSON");
    pod["metadata"]["labels"] = labels;
    let container = &mut pod["spec"]["containers"][0];
    container["env"] = json!([{"name": "PORT", "value": port.to_string()}]);
    container["ports"] = json!([{"containerPort": port}]);
    container["readinessProbe"]["httpGet"]["port"] = json!(port);
    pod["spec"]["securityContext"] = json!({
        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
    });
    serde_json::from_value(pod).expect("a valid pod")
}

#[tokio::test]
async fn allow_dns_opens_port_53_to_the_cluster_dns_pods_and_nowhere_else() {
    let client = setup().await;
    ensure_namespace(&client, DNS_NAMESPACE).await;
    let profile = unique_name("dns");
    let dns_pod = format!("{profile}-resolver");
    let test = with_temp_namespaces(&client, |client, temp_namespaces| {
        let (profile, dns_pod) = (profile.clone(), dns_pod.clone());
        async move {
            let fenced_ns = format!("{profile}-a");
            let other_ns = format!("{profile}-b");
            let namespaces = vec![
                fenced_ns.clone(),
                other_ns.clone(),
                DNS_NAMESPACE.to_string(),
            ];
            temp_namespaces.create(&fenced_ns).await;
            temp_namespaces.create(&other_ns).await;
            // Only DNS allowed.
            apply_profile(
                &client,
                &profile,
                json!({
                    "selectors": [{"namespace": fenced_ns}],
                    "network": {"allowDNS": true, "allowSameProfile": false},
                    "scheduling": {"nodeSelector": {REAL_NODE.0: REAL_NODE.1}},
                }),
            )
            .await;
            wait_fenced_namespace(&client, &fenced_ns, &profile).await;

            // The cluster's DNS server, and a listener on port 53 elsewhere that even carries the
            // DNS pods' labels: a tunnel out of the fence if port 53 were open to every address.
            let dns_labels = json!({DNS_POD_LABEL.0: DNS_POD_LABEL.1, "app": dns_pod});
            create_pod(
                &client,
                DNS_NAMESPACE,
                &echo_pod_on(&dns_pod, 53, dns_labels),
            )
            .await;
            let tunnel_labels = json!({DNS_POD_LABEL.0: DNS_POD_LABEL.1, "app": "tunnel"});
            create_pod(
                &client,
                &other_ns,
                &echo_pod_on("tunnel", 53, tunnel_labels),
            )
            .await;
            create_pod(&client, &fenced_ns, &echo_pod("a", false)).await;
            let a = wait_ready(&client, &fenced_ns, "a").await;
            let dns = wait_ready(&client, DNS_NAMESPACE, &dns_pod).await;
            let tunnel = wait_ready(&client, &other_ns, "tunnel").await;
            let (a_ip, dns_ip, tunnel_ip) = (pod_ip(&a), pod_ip(&dns), pod_ip(&tunnel));

            wait_reachable_on(&client, &namespaces, ("a", &a_ip), (&dns_pod, &dns_ip), 53).await;
            wait_fenced_on(
                &client,
                &namespaces,
                ("a", &a_ip),
                ("tunnel", &tunnel_ip),
                53,
            )
            .await;
        }
    });
    let outcome = AssertUnwindSafe(deleting_profile_after(&client, &profile, test))
        .catch_unwind()
        .await;
    let _ = Api::<Pod>::namespaced(client.clone(), DNS_NAMESPACE)
        .delete(&dns_pod, &DeleteParams::default())
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
