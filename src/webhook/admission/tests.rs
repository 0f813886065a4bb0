//! Admission decisions driven the way the API server drives them: an AdmissionReview JSON in, the
//! AdmissionReview JSON the webhook answers with out, and the JSON Patch applied to the object the
//! API server holds.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{mutate, validate};
use crate::api::profile::FargateProfile;

const UID: &str = "7c0f1d2e-5b4a-4c39-9e8f-2a6b1c3d4e5f";

const PROFILES: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: payments, uid: 0b7e4f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b}
spec:
  selectors:
    - namespace: payments-*
      labels: {tier: backend}
  runtimeClassName: gvisor
  scheduling:
    nodeSelector: {fargo.dev/capacity: fargate}
    tolerations:
      - {key: fargo.dev/dedicated, operator: Exists, effect: NoSchedule}
---
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: batch, uid: 5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e9f}
spec:
  selectors:
    - namespace: jobs
  sizing: {policy: None}
---
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: vault, uid: 9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b}
spec:
  selectors:
    - namespace: vault
  podSecurity: Restricted
"#;

/// The profiles as the webhook's reflector store hands them out.
fn profiles() -> Vec<Arc<FargateProfile>> {
    serde_yaml::Deserializer::from_str(PROFILES)
        .map(|doc| Arc::new(FargateProfile::deserialize(doc).expect("valid profile fixture")))
        .collect()
}

/// A Deployment's pod as a mutating webhook receives it: the API server has already defaulted it
/// and run its built-in admission plugins (service-account token volume, default tolerations).
fn deployment_pod(namespace: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "api-5d8f7c9b4-",
            "namespace": namespace,
            "creationTimestamp": null,
            "labels": {"app": "api", "tier": "backend", "pod-template-hash": "5d8f7c9b4"},
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "api-5d8f7c9b4",
                "uid": "3e1f0a9b-8c7d-4e6f-9a0b-1c2d3e4f5a6b",
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "volumes": [{
                "name": "kube-api-access-7xk2p",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }},
                        {"downwardAPI": {"items": [{
                            "path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                        }]}},
                    ],
                    "defaultMode": 420,
                },
            }],
            "containers": [{
                "name": "app",
                "image": "registry.example.com/api:1.4.2",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                "volumeMounts": [{
                    "name": "kube-api-access-7xk2p",
                    "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                }],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    })
}

/// `pod` after a JSON Patch, such as another webhook's or fargo's own.
fn patched(mut pod: Value, patch: &json_patch::Patch) -> Value {
    json_patch::patch(&mut pod, patch).expect("the patch applies to the pod");
    pod
}

/// `pod` changed by the JSON Patch operations `operations`.
fn changed(pod: Value, operations: Value) -> Value {
    patched(
        pod,
        &serde_json::from_value(operations).expect("valid patch fixture"),
    )
}

/// The AdmissionReview the API server sends for `operation` on a pod, as JSON text.
fn review_json(operation: &str, namespace: &str, object: &Value, old_object: &Value) -> String {
    let options_kind = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        _ => "DeleteOptions",
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "",
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                           "system:authenticated"],
            },
            "object": object,
            "oldObject": old_object,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind},
        },
    })
    .to_string()
}

/// The request as the webhook handlers read it off the wire.
fn decode(review: &str) -> AdmissionRequest<Pod> {
    let review: AdmissionReview<Pod> =
        serde_json::from_str(review).expect("the API server's AdmissionReview deserializes");
    review.try_into().expect("the review carries a request")
}

fn create(namespace: &str, pod: &Value) -> AdmissionRequest<Pod> {
    decode(&review_json("CREATE", namespace, pod, &Value::Null))
}

/// The webhook's answer as the API server reads it.
struct Answer {
    review: Value,
    uid: String,
    allowed: bool,
    message: String,
    patch: Option<json_patch::Patch>,
}

fn answer(response: AdmissionResponse) -> Answer {
    let review: Value = serde_json::from_str(
        &serde_json::to_string(&response.into_review()).expect("the answer serializes"),
    )
    .expect("the answer is JSON");
    let response = &review["response"];
    let patch = response.get("patch").map(|bytes| {
        assert_eq!(response["patchType"], "JSONPatch");
        // kube writes the patch bytes as a JSON array of numbers; the API server's Go decoder
        // reads that into its []byte patch field as readily as base64.
        let bytes: Vec<u8> = serde_json::from_value(bytes.clone()).expect("patch bytes");
        serde_json::from_slice(&bytes).expect("the patch is a JSON Patch")
    });
    Answer {
        uid: response["uid"].as_str().unwrap_or_default().to_string(),
        allowed: response["allowed"].as_bool().expect("allowed is a boolean"),
        message: response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        patch,
        review,
    }
}

/// Both webhooks' answers to the same request.
fn both(request: &AdmissionRequest<Pod>) -> [Answer; 2] {
    let profiles = profiles();
    [
        answer(mutate(request, &profiles)),
        answer(validate(request, &profiles)),
    ]
}

#[test]
fn matched_pod_is_patched_into_a_sized_sandboxed_hardened_fargate_pod() {
    let pod = deployment_pod("payments-eu");
    let answer = answer(mutate(&create("payments-eu", &pod), &profiles()));
    assert!(answer.allowed, "{}", answer.message);
    let admitted = patched(pod.clone(), &answer.patch.expect("a patch"));

    assert_eq!(
        admitted["metadata"]["labels"],
        json!({
            "app": "api", "tier": "backend", "pod-template-hash": "5d8f7c9b4",
            "fargo.dev/profile": "payments",
        })
    );
    // 500m and 1Gi plus the 256Mi overhead round up to 0.5 vCPU and 2 GiB.
    assert_eq!(
        admitted["metadata"]["annotations"],
        json!({"fargo.dev/capacity-provisioned": "0.5vCPU 2GB"})
    );
    let spec = &admitted["spec"];
    assert_eq!(spec["runtimeClassName"], "gvisor");
    assert_eq!(
        spec["resources"],
        json!({
            "requests": {"cpu": "500m", "memory": "2Gi"},
            "limits": {"cpu": "500m", "memory": "2Gi"},
        })
    );
    assert_eq!(
        spec["securityContext"],
        json!({"seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        spec["containers"][0]["securityContext"],
        json!({"allowPrivilegeEscalation": false})
    );
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(
        spec["nodeSelector"],
        json!({"fargo.dev/capacity": "fargate"})
    );
    assert_eq!(
        spec["tolerations"][2],
        json!({"key": "fargo.dev/dedicated", "operator": "Exists", "effect": "NoSchedule"})
    );
    // The container keeps its own requests: the pod-level size already covers them.
    assert_eq!(
        spec["containers"][0]["resources"],
        pod["spec"]["containers"][0]["resources"]
    );
    serde_json::from_value::<Pod>(admitted).expect("the admitted pod is still a Pod");
}

#[test]
fn patch_touches_only_the_fields_fargo_owns() {
    let pod = deployment_pod("payments-eu");
    let answer = answer(mutate(&create("payments-eu", &pod), &profiles()));
    let patch = serde_json::to_value(answer.patch.expect("a patch")).expect("patch as JSON");
    let owned = [
        "/metadata/labels",
        "/metadata/annotations",
        "/spec/runtimeClassName",
        "/spec/nodeSelector",
        "/spec/tolerations/",
        "/spec/securityContext/seccompProfile",
        "/spec/containers/0/securityContext",
        "/spec/automountServiceAccountToken",
        "/spec/resources",
    ];
    // What fargo takes out: the API token the API server mounted before the webhooks ran (the
    // pod's only volume and mount here).
    let removed = ["/spec/volumes/0", "/spec/containers/0/volumeMounts/0"];
    let mut removals = vec![];
    for operation in patch.as_array().expect("a list of operations") {
        let path = operation["path"].as_str().expect("a path");
        match operation["op"].as_str() {
            Some("add") if owned.iter().any(|owned| path.starts_with(owned)) => {}
            Some("remove") if removed.contains(&path) => removals.push(path),
            _ => panic!("unexpected operation {operation}"),
        }
    }
    assert_eq!(removals.len(), removed.len(), "{patch}");
}

#[test]
fn refuses_privileged_pod_in_profiled_namespace() {
    let pod = changed(
        deployment_pod("payments-eu"),
        json!([{"op": "add", "path": "/spec/containers/0/securityContext",
                "value": {"privileged": true}}]),
    );
    for answer in both(&create("payments-eu", &pod)) {
        assert!(!answer.allowed);
        assert_eq!(
            answer.message,
            "profile \"payments\" forbids spec.containers[0].securityContext.privileged \
             (container \"app\"): Fargate pods cannot be privileged"
        );
        assert!(answer.patch.is_none());
    }
}

#[test]
fn refuses_host_path_volume_in_profiled_namespace() {
    let pod = changed(
        deployment_pod("payments-eu"),
        json!([{"op": "add", "path": "/spec/volumes/-",
                "value": {"name": "docker-sock",
                          "hostPath": {"path": "/var/run/docker.sock", "type": ""}}}]),
    );
    for answer in both(&create("payments-eu", &pod)) {
        assert!(!answer.allowed);
        assert_eq!(
            answer.message,
            "profile \"payments\" forbids spec.volumes[1].hostPath (volume \"docker-sock\"): \
             Fargate pods cannot mount paths of the node; use an emptyDir, ConfigMap, Secret or \
             PersistentVolumeClaim volume instead"
        );
        assert!(answer.patch.is_none());
    }
}

#[test]
fn refuses_host_network_pod_in_profiled_namespace_naming_every_violation() {
    let pod = changed(
        deployment_pod("payments-eu"),
        json!([
            {"op": "add", "path": "/spec/hostNetwork", "value": true},
            {"op": "add", "path": "/spec/containers/0/ports/0/hostPort", "value": 8080},
        ]),
    );
    for answer in both(&create("payments-eu", &pod)) {
        assert!(!answer.allowed);
        assert_eq!(
            answer.message,
            "profile \"payments\" forbids spec.hostNetwork: Fargate pods cannot use the node's \
             network namespace; profile \"payments\" forbids spec.containers[0].ports[0].hostPort \
             (container \"app\"): Fargate pods cannot bind ports of the node (hostPort 8080); \
             remove hostPort and reach the pod through a Service"
        );
    }
}

#[test]
fn refuses_windows_pod_rather_than_hardening_it_into_one_the_api_server_rejects() {
    let pod = changed(
        deployment_pod("payments-eu"),
        json!([{"op": "add", "path": "/spec/os", "value": {"name": "windows"}}]),
    );
    for answer in both(&create("payments-eu", &pod)) {
        assert!(!answer.allowed);
        assert_eq!(
            answer.message,
            "profile \"payments\" forbids spec.os.name: Fargate pods run on Linux only; remove \
             spec.os or set its name to linux"
        );
        assert!(answer.patch.is_none());
    }
}

#[test]
fn refuses_every_baseline_violation_of_a_pod_in_one_message() {
    let pod = changed(
        deployment_pod("payments-eu"),
        json!([
            {"op": "add", "path": "/spec/securityContext/seccompProfile",
             "value": {"type": "Unconfined"}},
            {"op": "add", "path": "/spec/securityContext/sysctls",
             "value": [{"name": "kernel.msgmax", "value": "65536"}]},
            {"op": "add", "path": "/spec/containers/0/livenessProbe",
             "value": {"httpGet": {"port": 10250, "host": "10.0.0.1"}}},
        ]),
    );
    for answer in both(&create("payments-eu", &pod)) {
        assert!(!answer.allowed);
        let refusals: Vec<_> = answer.message.split("; profile").collect();
        assert_eq!(refusals.len(), 3, "{}", answer.message);
        for field in [
            "spec.securityContext.seccompProfile.type",
            "spec.securityContext.sysctls[0].name",
            "spec.containers[0].livenessProbe.httpGet.host (container \"app\")",
        ] {
            assert!(
                answer.message.contains(field),
                "{field}: {}",
                answer.message
            );
        }
    }
}

#[test]
fn restricted_profile_refuses_a_pod_that_may_run_as_root() {
    // Refused by the mutating webhook, before fargo hardens it.
    let answer = answer(mutate(
        &create("vault", &deployment_pod("vault")),
        &profiles(),
    ));
    assert!(!answer.allowed);
    assert_eq!(
        answer.message,
        "profile \"vault\" requires spec.securityContext.runAsNonRoot: pods of a Restricted \
         profile must not run as root; set securityContext.runAsNonRoot: true in the pod or in \
         every container"
    );
    assert!(answer.patch.is_none());
}

#[test]
fn restricted_profile_drops_every_capability_and_validates_what_later_mutations_left() {
    let pod = changed(
        deployment_pod("vault"),
        json!([{"op": "add", "path": "/spec/securityContext/runAsNonRoot", "value": true}]),
    );
    let mutation = answer(mutate(&create("vault", &pod), &profiles()));
    assert!(mutation.allowed, "{}", mutation.message);
    let admitted = patched(pod, &mutation.patch.expect("a patch"));
    assert_eq!(
        admitted["spec"]["containers"][0]["securityContext"],
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
    );
    let validation = answer(validate(&create("vault", &admitted), &profiles()));
    assert!(validation.allowed, "{}", validation.message);

    // A webhook after fargo's last call adds a sidecar with capabilities of its own.
    let injected = changed(
        admitted,
        json!([{"op": "add", "path": "/spec/containers/-",
                "value": {"name": "mesh-proxy", "image": "mesh/proxy:1",
                          "securityContext": {"allowPrivilegeEscalation": false}}}]),
    );
    let validation = answer(validate(&create("vault", &injected), &profiles()));
    assert!(!validation.allowed);
    assert_eq!(
        validation.message,
        "profile \"vault\" requires spec.containers[1].securityContext.capabilities.drop \
         (container \"mesh-proxy\"): pods of a Restricted profile drop every capability; set \
         securityContext.capabilities.drop: [ALL] (NET_BIND_SERVICE may still be added)"
    );
}

#[test]
fn admits_pod_in_namespace_no_profile_selects_unchanged() {
    // Even a privileged pod: fargo fences only the pods a profile takes.
    let pod = changed(
        deployment_pod("web"),
        json!([{"op": "add", "path": "/spec/containers/0/securityContext",
                "value": {"privileged": true}}]),
    );
    for answer in both(&create("web", &pod)) {
        assert!(answer.allowed, "{}", answer.message);
        assert!(answer.patch.is_none());
        assert_eq!(answer.review["response"].get("patchType"), None);
    }
}

#[test]
fn admits_pod_without_the_selector_labels_unchanged() {
    let pod = changed(
        deployment_pod("payments-eu"),
        json!([{"op": "replace", "path": "/metadata/labels/tier", "value": "frontend"}]),
    );
    for answer in both(&create("payments-eu", &pod)) {
        assert!(answer.allowed, "{}", answer.message);
        assert!(answer.patch.is_none());
    }
}

#[test]
fn refuses_a_privileged_pod_that_names_a_daemon_set_as_its_owner() {
    // Owner references are the pod's own say: a decoy DaemonSet owner (or a DaemonSet a tenant
    // made) exempts nothing in a profiled namespace.
    let pod = changed(
        deployment_pod("payments-eu"),
        json!([
            {"op": "replace", "path": "/metadata/ownerReferences/0/kind", "value": "DaemonSet"},
            {"op": "add", "path": "/spec/hostNetwork", "value": true},
        ]),
    );
    for answer in both(&create("payments-eu", &pod)) {
        assert!(!answer.allowed, "a DaemonSet owner exempted the pod");
        assert!(
            answer.message.contains("spec.hostNetwork"),
            "{}",
            answer.message
        );
    }
}

#[test]
fn refuses_pod_forcing_a_profile_that_does_not_exist() {
    let pod = changed(
        deployment_pod("payments-eu"),
        json!([{"op": "add", "path": "/metadata/labels/fargo.dev~1profile", "value": "ledger"}]),
    );
    for answer in both(&create("payments-eu", &pod)) {
        assert!(!answer.allowed);
        assert_eq!(
            answer.message,
            "the pod's label fargo.dev/profile=\"ledger\" names a FargateProfile that does not \
             exist; create the profile (kubectl get fargateprofiles lists them) or remove the \
             label"
        );
        assert!(answer.patch.is_none());
    }
}

#[test]
fn refuses_pod_forcing_a_profile_that_does_not_select_its_namespace() {
    let pod = changed(
        deployment_pod("web"),
        json!([{"op": "add", "path": "/metadata/labels/fargo.dev~1profile", "value": "payments"}]),
    );
    for answer in both(&create("web", &pod)) {
        assert!(!answer.allowed);
        assert_eq!(
            answer.message,
            "the pod's label fargo.dev/profile=\"payments\" names a FargateProfile that does not \
             select namespace \"web\" (its selectors' namespaces: \"payments-*\"); add a selector \
             for this namespace to the profile, or remove the label"
        );
    }
}

#[test]
fn refuses_pod_larger_than_every_fargate_size() {
    let pod = changed(
        deployment_pod("payments-eu"),
        json!([{"op": "replace", "path": "/spec/containers/0/resources",
                "value": {"requests": {"cpu": "32", "memory": "8Gi"}}}]),
    );
    let answer = answer(mutate(&create("payments-eu", &pod), &profiles()));
    assert!(!answer.allowed);
    assert_eq!(
        answer.message,
        "profile \"payments\" cannot size this pod: the pod needs 32 vCPU and 8.25 GiB (with the \
         256Mi memory overhead of FargateProfile \"payments\"), more than the largest Fargate \
         size, 16vCPU 120GB; lower the containers' requests and limits, or set \
         spec.sizing.policy to None on the profile"
    );
    assert!(answer.patch.is_none());
}

#[test]
fn profile_without_sizing_leaves_resources_alone() {
    let pod = deployment_pod("jobs");
    let answer = answer(mutate(&create("jobs", &pod), &profiles()));
    assert!(answer.allowed, "{}", answer.message);
    let admitted = patched(pod, &answer.patch.expect("a patch"));
    assert_eq!(admitted["metadata"]["labels"]["fargo.dev/profile"], "batch");
    assert_eq!(admitted["metadata"].get("annotations"), None);
    assert_eq!(admitted["spec"].get("resources"), None);
    assert_eq!(admitted["spec"].get("runtimeClassName"), None);
}

#[test]
fn validate_refuses_pod_made_privileged_after_mutation() {
    let pod = deployment_pod("payments-eu");
    let mutation = answer(mutate(&create("payments-eu", &pod), &profiles()));
    let admitted = patched(pod, &mutation.patch.expect("a patch"));
    // A later webhook (a sidecar injector, say) hands back a privileged container.
    let tampered = changed(
        admitted,
        json!([{"op": "add", "path": "/spec/containers/-",
                "value": {"name": "mesh-init", "image": "mesh/init:1",
                          "securityContext": {"privileged": true,
                                              "capabilities": {"add": ["NET_ADMIN"]}}}}]),
    );
    let answer = answer(validate(&create("payments-eu", &tampered), &profiles()));
    assert!(!answer.allowed);
    assert_eq!(
        answer.message,
        "profile \"payments\" forbids spec.containers[1].securityContext.privileged (container \
         \"mesh-init\"): Fargate pods cannot be privileged; profile \"payments\" forbids \
         spec.containers[1].securityContext.capabilities.add[0] (container \"mesh-init\"): \
         Fargate pods may add only the NET_BIND_SERVICE capability, not NET_ADMIN"
    );
}

#[test]
fn validate_admits_mutated_pod_without_patching_it() {
    let pod = deployment_pod("payments-eu");
    let mutation = answer(mutate(&create("payments-eu", &pod), &profiles()));
    let admitted = patched(pod, &mutation.patch.expect("a patch"));
    let answer = answer(validate(&create("payments-eu", &admitted), &profiles()));
    assert!(answer.allowed, "{}", answer.message);
    assert!(answer.patch.is_none());
}

#[test]
fn mutating_its_own_output_again_changes_nothing() {
    // The API server calls the webhook again (reinvocationPolicy: IfNeeded) on the pod it already
    // patched whenever a later webhook changes the pod too.
    let pod = deployment_pod("payments-eu");
    let first = answer(mutate(&create("payments-eu", &pod), &profiles()));
    let admitted = patched(pod, &first.patch.expect("a patch"));
    let again = answer(mutate(&create("payments-eu", &admitted), &profiles()));
    assert!(again.allowed, "{}", again.message);
    assert_eq!(
        patched(admitted.clone(), &again.patch.unwrap_or_default()),
        admitted
    );
}

#[test]
fn mutating_again_after_a_sidecar_was_injected_sizes_for_the_sidecar_once() {
    let pod = deployment_pod("payments-eu");
    let first = answer(mutate(&create("payments-eu", &pod), &profiles()));
    let injected = changed(
        patched(pod, &first.patch.expect("a patch")),
        json!([{"op": "add", "path": "/spec/containers/-",
                "value": {"name": "proxy", "image": "mesh/proxy:1",
                          "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}}]),
    );
    let again = answer(mutate(&create("payments-eu", &injected), &profiles()));
    assert!(again.allowed, "{}", again.message);
    let admitted = patched(injected, &again.patch.expect("a patch"));
    // 600m and 1.125Gi plus the overhead, counted once: 1 vCPU and 2 GiB.
    assert_eq!(
        admitted["metadata"]["annotations"]["fargo.dev/capacity-provisioned"],
        "1vCPU 2GB"
    );
    assert_eq!(
        admitted["spec"]["resources"],
        json!({
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"cpu": "1", "memory": "2Gi"},
        })
    );
    assert_eq!(
        admitted["spec"]["containers"][1]["securityContext"],
        json!({"allowPrivilegeEscalation": false})
    );
}

#[test]
fn mutating_again_keeps_the_size_pod_level_resources_asked_for() {
    // Pod-level resources the pod came with are overwritten by the first size, which covered them.
    let pod = changed(
        deployment_pod("payments-eu"),
        json!([{"op": "add", "path": "/spec/resources",
                "value": {"limits": {"cpu": "2", "memory": "6Gi"}}}]),
    );
    let first = answer(mutate(&create("payments-eu", &pod), &profiles()));
    let admitted = patched(pod, &first.patch.expect("a patch"));
    assert_eq!(
        admitted["metadata"]["annotations"]["fargo.dev/capacity-provisioned"],
        "2vCPU 7GB"
    );
    let again = answer(mutate(&create("payments-eu", &admitted), &profiles()));
    assert_eq!(
        patched(admitted.clone(), &again.patch.unwrap_or_default()),
        admitted
    );
}

#[test]
fn answers_echo_the_request_uid_in_an_admission_review_v1() {
    let allowed = create("payments-eu", &deployment_pod("payments-eu"));
    let untouched = create("web", &deployment_pod("web"));
    let refused = create(
        "payments-eu",
        &changed(
            deployment_pod("payments-eu"),
            json!([{"op": "add", "path": "/spec/hostPID", "value": true}]),
        ),
    );
    for request in [allowed, untouched, refused] {
        for answer in both(&request) {
            assert_eq!(answer.uid, UID);
            assert_eq!(answer.review["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(answer.review["kind"], "AdmissionReview");
        }
    }
}

#[test]
fn leaves_requests_other_than_creation_alone() {
    // A pod's spec is immutable but for a few fields, so what it was created with is judged once;
    // updates are judged only for what they can change (the profile label, ephemeral containers).
    let privileged = changed(
        deployment_pod("payments-eu"),
        json!([{"op": "add", "path": "/spec/containers/0/securityContext",
                "value": {"privileged": true}}]),
    );
    let update = decode(&review_json(
        "UPDATE",
        "payments-eu",
        &privileged,
        &deployment_pod("payments-eu"),
    ));
    let delete = decode(&review_json(
        "DELETE",
        "payments-eu",
        &Value::Null,
        &privileged,
    ));
    for request in [update, delete] {
        for answer in both(&request) {
            assert!(answer.allowed, "{}", answer.message);
            assert!(answer.patch.is_none());
            assert_eq!(answer.uid, UID);
        }
    }
}

#[test]
fn review_of_another_kind_never_becomes_a_pod_request() {
    // The handlers decode every review as a pod's: a ConfigMap fails there, before either
    // decision, and the API server's failurePolicy: Fail refuses it.
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "payments-eu"},
        "data": {"mode": "strict"},
    });
    let review = review_json("CREATE", "payments-eu", &config_map, &Value::Null)
        .replace("\"Pod\"", "\"ConfigMap\"")
        .replace("\"pods\"", "\"configmaps\"");
    let error = serde_json::from_str::<AdmissionReview<Pod>>(&review)
        .expect_err("a ConfigMap is not a Pod")
        .to_string();
    assert!(error.contains("\"ConfigMap\", expected Pod"), "{error}");
}

/// The pod the API server stores once both webhooks admitted `deployment_pod` in `payments-eu`.
fn admitted_pod() -> Value {
    let pod = deployment_pod("payments-eu");
    let mutation = answer(mutate(&create("payments-eu", &pod), &profiles()));
    changed(
        patched(pod, &mutation.patch.expect("a patch")),
        json!([
            {"op": "add", "path": "/metadata/name", "value": "api-5d8f7c9b4-x7k2p"},
            {"op": "add", "path": "/metadata/uid", "value": "e1d2c3b4-a596-4877-8695-a4b3c2d1e0f9"},
            {"op": "add", "path": "/metadata/resourceVersion", "value": "48213"},
            {"op": "add", "path": "/spec/nodeName", "value": "fargate-node-1"},
        ]),
    )
}

/// The AdmissionReview for an update of pod `old` into `pod` by a user, through `sub_resource`
/// (`status`, `ephemeralcontainers`) or the pod itself.
fn update(sub_resource: Option<&str>, pod: &Value, old: &Value) -> AdmissionRequest<Pod> {
    update_in("payments-eu", sub_resource, pod, old)
}

/// [`update`] of a pod in `namespace`.
fn update_in(
    namespace: &str,
    sub_resource: Option<&str>,
    pod: &Value,
    old: &Value,
) -> AdmissionRequest<Pod> {
    let mut review: Value = serde_json::from_str(&review_json("UPDATE", namespace, pod, old))
        .expect("the review is JSON");
    let request = &mut review["request"];
    request["name"] = old["metadata"]["name"].clone();
    request["userInfo"] = json!({
        "username": "dev@example.com",
        "groups": ["developers", "system:authenticated"],
    });
    if let Some(sub_resource) = sub_resource {
        request["subResource"] = json!(sub_resource);
        request["requestSubResource"] = json!(sub_resource);
    }
    decode(&review.to_string())
}

fn validated(request: &AdmissionRequest<Pod>) -> Answer {
    answer(validate(request, &profiles()))
}

#[test]
fn refuses_removing_the_profile_label_from_an_admitted_pod() {
    // `kubectl label pod api-5d8f7c9b4-x7k2p fargo.dev/profile-`, and the same through the status
    // subresource, which keeps labels writable.
    let admitted = admitted_pod();
    let unlabelled = changed(
        admitted.clone(),
        json!([{"op": "remove", "path": "/metadata/labels/fargo.dev~1profile"}]),
    );
    for sub_resource in [None, Some("status")] {
        let answer = validated(&update(sub_resource, &unlabelled, &admitted));
        assert!(!answer.allowed, "{sub_resource:?}");
        assert_eq!(
            answer.message,
            "the label fargo.dev/profile=\"payments\" cannot be removed from pod \
             \"api-5d8f7c9b4-x7k2p\": the pod was admitted under FargateProfile \"payments\", \
             whose NetworkPolicy fences the pod by this label; create the pod anew to run it \
             outside the profile"
        );
        assert_eq!(answer.uid, UID);
        assert!(answer.patch.is_none());
    }
}

#[test]
fn refuses_adding_or_changing_the_profile_label_after_admission() {
    let admitted = admitted_pod();
    let moved = changed(
        admitted.clone(),
        json!([{"op": "replace", "path": "/metadata/labels/fargo.dev~1profile", "value": "batch"}]),
    );
    let answer = validated(&update(None, &moved, &admitted));
    assert!(!answer.allowed);
    assert_eq!(
        answer.message,
        "the label fargo.dev/profile of pod \"api-5d8f7c9b4-x7k2p\" cannot change from \
         \"payments\" to \"batch\": the pod was admitted under FargateProfile \"payments\", whose \
         NetworkPolicy fences the pod by this label, and was not checked against profile \
         \"batch\"; create the pod anew with the new label instead"
    );

    // A pod of the profiled namespace that no profile took (its tier is not the selector's)
    // claims the profile, to become a peer of the profile's pods.
    let untouched = changed(
        deployment_pod("payments-eu"),
        json!([
            {"op": "add", "path": "/metadata/name", "value": "web-7f9c"},
            {"op": "replace", "path": "/metadata/labels/tier", "value": "frontend"},
        ]),
    );
    let claiming = changed(
        untouched.clone(),
        json!([{"op": "add", "path": "/metadata/labels/fargo.dev~1profile", "value": "payments"}]),
    );
    let answer = validated(&update(None, &claiming, &untouched));
    assert!(!answer.allowed);
    assert_eq!(
        answer.message,
        "the label fargo.dev/profile=\"payments\" cannot be added to pod \"web-7f9c\": a pod's \
         FargateProfile is decided when the pod is created, and this pod was not checked against \
         profile \"payments\"; create the pod anew with the label instead"
    );
}

#[test]
fn admits_updates_that_leave_the_profile_label_alone() {
    let admitted = admitted_pod();
    let updates = [
        (
            "annotation",
            json!([{"op": "add", "path": "/metadata/annotations/team", "value": "a"}]),
        ),
        (
            "provisioned size written again as it is",
            json!([{"op": "replace", "path": "/metadata/annotations/fargo.dev~1capacity-provisioned",
                    "value": "0.5vCPU 2GB"}]),
        ),
        (
            "other label",
            json!([{"op": "replace", "path": "/metadata/labels/app", "value": "api-v2"}]),
        ),
        (
            "finalizer",
            json!([{"op": "add", "path": "/metadata/finalizers", "value": ["example.com/hold"]}]),
        ),
        // The ReplicaSet controller releasing the pod, and the garbage collector orphaning it.
        (
            "owner released",
            json!([{"op": "remove", "path": "/metadata/ownerReferences"}]),
        ),
        (
            "graceful deletion",
            json!([
                {"op": "add", "path": "/metadata/deletionTimestamp", "value": "2026-03-01T10:00:00Z"},
                {"op": "add", "path": "/metadata/deletionGracePeriodSeconds", "value": 30},
            ]),
        ),
        (
            "image",
            json!([{"op": "replace", "path": "/spec/containers/0/image",
                          "value": "registry.example.com/api:1.4.3"}]),
        ),
    ];
    for (update_of, operations) in updates {
        let updated = changed(admitted.clone(), operations);
        let answer = validated(&update(None, &updated, &admitted));
        assert!(answer.allowed, "{update_of}: {}", answer.message);
        assert!(answer.patch.is_none(), "{update_of}");
    }
    // The kubelet's status report.
    let running = changed(
        admitted.clone(),
        json!([{"op": "replace", "path": "/status", "value": {"phase": "Running"}}]),
    );
    assert!(validated(&update(Some("status"), &running, &admitted)).allowed);
}

#[test]
fn refuses_changing_the_provisioned_size_of_a_fargate_pod() {
    // `kubectl annotate --overwrite pod api-5d8f7c9b4-x7k2p fargo.dev/capacity-provisioned=...`,
    // to be metered smaller, and the same through the status subresource.
    let admitted = admitted_pod();
    let size = admitted["metadata"]["annotations"]["fargo.dev/capacity-provisioned"].clone();
    assert_eq!(
        size, "0.5vCPU 2GB",
        "the size the mutating webhook gave the pod"
    );
    let shrunk = changed(
        admitted.clone(),
        json!([{"op": "replace", "path": "/metadata/annotations/fargo.dev~1capacity-provisioned",
                "value": "0.25vCPU 0.5GB"}]),
    );
    for sub_resource in [None, Some("status")] {
        let answer = validated(&update(sub_resource, &shrunk, &admitted));
        assert!(!answer.allowed, "{sub_resource:?}");
        assert_eq!(
            answer.message,
            "the annotation fargo.dev/capacity-provisioned of pod \"api-5d8f7c9b4-x7k2p\" cannot \
             change from \"0.5vCPU 2GB\" to \"0.25vCPU 0.5GB\": a Fargate pod's provisioned size \
             is set when the pod is admitted, and its use is metered at that size; create the pod \
             anew to give it another size"
        );
        assert!(answer.patch.is_none());
    }
}

#[test]
fn refuses_removing_the_provisioned_size_of_a_fargate_pod() {
    let admitted = admitted_pod();
    let unsized_pod = changed(
        admitted.clone(),
        json!([{"op": "remove", "path": "/metadata/annotations/fargo.dev~1capacity-provisioned"}]),
    );
    let answer = validated(&update(None, &unsized_pod, &admitted));
    assert!(!answer.allowed);
    assert_eq!(
        answer.message,
        "the annotation fargo.dev/capacity-provisioned=\"0.5vCPU 2GB\" cannot be removed from pod \
         \"api-5d8f7c9b4-x7k2p\": a Fargate pod's provisioned size is set when the pod is \
         admitted, and its use is metered at that size; create the pod anew to give it another \
         size"
    );
}

#[test]
fn refuses_adding_a_provisioned_size_to_a_pod_its_profile_did_not_size() {
    // Profile `batch` has `sizing.policy: None`: its pods are labelled, not sized.
    let pod = deployment_pod("jobs");
    let mutation = answer(mutate(&create("jobs", &pod), &profiles()));
    let admitted = changed(
        patched(pod, &mutation.patch.expect("a patch")),
        json!([{"op": "add", "path": "/metadata/name", "value": "etl-6c7d8-q2w3e"}]),
    );
    assert_eq!(admitted["metadata"]["labels"]["fargo.dev/profile"], "batch");
    assert!(admitted["metadata"].get("annotations").is_none());
    let claimed = changed(
        admitted.clone(),
        json!([{"op": "add", "path": "/metadata/annotations",
                "value": {"fargo.dev/capacity-provisioned": "0.25vCPU 0.5GB"}}]),
    );
    let answer = validated(&update_in("jobs", None, &claimed, &admitted));
    assert!(!answer.allowed);
    assert_eq!(
        answer.message,
        "the annotation fargo.dev/capacity-provisioned=\"0.25vCPU 0.5GB\" cannot be added to pod \
         \"etl-6c7d8-q2w3e\": a Fargate pod's provisioned size is set when the pod is admitted, \
         and its use is metered at that size; create the pod anew to give it another size"
    );
}

#[test]
fn admits_any_capacity_annotation_on_a_pod_no_profile_took() {
    let untouched = changed(
        deployment_pod("payments-eu"),
        json!([
            {"op": "add", "path": "/metadata/name", "value": "web-7f9c"},
            {"op": "replace", "path": "/metadata/labels/tier", "value": "frontend"},
        ]),
    );
    let annotated = changed(
        untouched.clone(),
        json!([{"op": "add", "path": "/metadata/annotations",
                "value": {"fargo.dev/capacity-provisioned": "16vCPU 120GB"}}]),
    );
    let answer = validated(&update(None, &annotated, &untouched));
    assert!(answer.allowed, "{}", answer.message);
    let answer = validated(&update(None, &untouched, &annotated));
    assert!(answer.allowed, "{}", answer.message);
}

/// The ephemeral container `kubectl debug -it POD --image=busybox --target=app
/// --profile=PROFILE` asks for, with the securityContext that profile gives it.
fn debug_container(name: &str, security_context: Value) -> Value {
    let mut container = json!({
        "name": name,
        "image": "busybox",
        "imagePullPolicy": "Always",
        "stdin": true,
        "tty": true,
        "targetContainerName": "app",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    });
    if !security_context.is_null() {
        container["securityContext"] = security_context;
    }
    container
}

/// `pod` with `container` appended to its ephemeral containers.
fn debugged(pod: &Value, container: Value) -> Value {
    let mut pod = pod.clone();
    match pod["spec"]["ephemeralContainers"].as_array_mut() {
        Some(containers) => containers.push(container),
        None => pod["spec"]["ephemeralContainers"] = json!([container]),
    }
    pod
}

#[test]
fn refuses_a_privileged_ephemeral_container_on_a_fargate_pod() {
    let admitted = admitted_pod();
    let sysadmin = debugged(
        &admitted,
        debug_container("debugger-w7x9q", json!({"privileged": true})),
    );
    let answer = validated(&update(Some("ephemeralcontainers"), &sysadmin, &admitted));
    assert!(!answer.allowed);
    assert_eq!(
        answer.message,
        "profile \"payments\" forbids spec.ephemeralContainers[0].securityContext.privileged \
         (container \"debugger-w7x9q\"): Fargate pods cannot be privileged"
    );

    let netadmin = debugged(
        &admitted,
        debug_container(
            "debugger-k2m4n",
            json!({"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}),
        ),
    );
    let answer = validated(&update(Some("ephemeralcontainers"), &netadmin, &admitted));
    assert!(!answer.allowed);
    assert_eq!(
        answer.message,
        "profile \"payments\" forbids \
         spec.ephemeralContainers[0].securityContext.capabilities.add[0] (container \
         \"debugger-k2m4n\"): Fargate pods may add only the NET_BIND_SERVICE capability, not \
         NET_ADMIN; profile \"payments\" forbids \
         spec.ephemeralContainers[0].securityContext.capabilities.add[1] (container \
         \"debugger-k2m4n\"): Fargate pods may add only the NET_BIND_SERVICE capability, not \
         NET_RAW"
    );
}

#[test]
fn admits_a_harmless_ephemeral_container_on_a_fargate_pod() {
    let admitted = admitted_pod();
    let general = debugged(&admitted, debug_container("debugger-p5r8s", Value::Null));
    let answer = validated(&update(Some("ephemeralcontainers"), &general, &admitted));
    assert!(answer.allowed, "{}", answer.message);
    assert!(answer.patch.is_none());

    // A second session is judged on its own container, not on the first one again.
    let restricted = debugged(
        &general,
        debug_container(
            "debugger-t3v6w",
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                   "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}),
        ),
    );
    let answer = validated(&update(Some("ephemeralcontainers"), &restricted, &general));
    assert!(answer.allowed, "{}", answer.message);
}

#[test]
fn admits_any_ephemeral_container_on_a_pod_no_profile_took() {
    // fargo fences only the pods a profile takes, in profiled namespaces too.
    let untouched = changed(
        deployment_pod("payments-eu"),
        json!([
            {"op": "add", "path": "/metadata/name", "value": "web-7f9c"},
            {"op": "replace", "path": "/metadata/labels/tier", "value": "frontend"},
        ]),
    );
    let sysadmin = debugged(
        &untouched,
        debug_container("debugger-w7x9q", json!({"privileged": true})),
    );
    let answer = validated(&update(Some("ephemeralcontainers"), &sysadmin, &untouched));
    assert!(answer.allowed, "{}", answer.message);
}
