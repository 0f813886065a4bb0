//! What a profile refuses in a pod, and the pod it admits instead.
//!
//! A Fargate pod is promised isolation from the node and from other tenants, so a matched pod that
//! asks for the node (privileged mode, host namespaces, host paths, host ports, extra
//! capabilities) is refused outright rather than quietly weakened: the user learns which field of
//! which container to change. Everything else about a matched pod is adjusted by
//! [`fargate_pod`]: sandbox runtime, placement, hardening and size.

use std::fmt;

use k8s_openapi::api::core::v1::{
    ContainerPort, Pod, PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile,
    SecurityContext,
};
use kube::ResourceExt;

use super::sizing::Capacity;
use crate::api::profile::FargateProfile;
use crate::api::{CAPACITY_ANNOTATION, PROFILE_LABEL};

/// The one capability a Fargate pod may add, as EKS allows: binding ports below 1024.
const NET_BIND_SERVICE: &str = "NET_BIND_SERVICE";

/// One thing in a pod that its profile does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The profile that refuses the pod.
    pub profile: String,
    /// Path of the offending field, e.g. `spec.containers[0].securityContext.privileged`.
    pub field: String,
    /// The container the field belongs to, where it belongs to one.
    pub container: Option<String>,
    /// What is forbidden.
    pub forbidden: Forbidden,
}

/// The kinds of host access a Fargate pod may not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forbidden {
    Privileged,
    PrivilegeEscalation,
    HostNetwork,
    HostPid,
    HostIpc,
    HostPath { volume: String },
    HostPort { port: i32 },
    Capability { capability: String },
}

impl Forbidden {
    /// Why the field is refused, and what to do instead where that is not obvious.
    fn reason(&self) -> String {
        match self {
            Forbidden::Privileged => "Fargate pods cannot be privileged".into(),
            Forbidden::PrivilegeEscalation => {
                "Fargate pods cannot allow privilege escalation; remove the field or set it to \
                 false"
                    .into()
            }
            Forbidden::HostNetwork => "Fargate pods cannot use the node's network namespace".into(),
            Forbidden::HostPid => "Fargate pods cannot use the node's process namespace".into(),
            Forbidden::HostIpc => "Fargate pods cannot use the node's IPC namespace".into(),
            Forbidden::HostPath { .. } => {
                "Fargate pods cannot mount paths of the node; use an emptyDir, ConfigMap, Secret \
                 or PersistentVolumeClaim volume instead"
                    .into()
            }
            Forbidden::HostPort { port } => format!(
                "Fargate pods cannot bind ports of the node (hostPort {port}); remove hostPort \
                 and reach the pod through a Service"
            ),
            Forbidden::Capability { capability } => format!(
                "Fargate pods may add only the {NET_BIND_SERVICE} capability, not {capability}"
            ),
        }
    }
}

/// `profile "payments" forbids spec.containers[0].securityContext.privileged (container "app"):
/// Fargate pods cannot be privileged`
impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "profile {:?} forbids {}", self.profile, self.field)?;
        match (&self.container, &self.forbidden) {
            (Some(container), _) => write!(f, " (container {container:?})")?,
            (None, Forbidden::HostPath { volume }) => write!(f, " (volume {volume:?})")?,
            (None, _) => {}
        }
        write!(f, ": {}", self.forbidden.reason())
    }
}

impl std::error::Error for Violation {}

/// Every field of `pod` that profile `profile` forbids, in the order they appear in the pod.
/// Empty means the pod may run under the profile.
pub fn violations(profile: &str, pod: &Pod) -> Vec<Violation> {
    let Some(spec) = &pod.spec else {
        return vec![];
    };
    let mut rules = Rules::new(profile);
    rules.pod_level(spec);
    for container in containers(spec) {
        rules.container(&container);
    }
    rules.found
}

/// What profile `profile` forbids in the ephemeral containers `pod` gains over `old`, as
/// `kubectl debug` adds them to a running pod. Everything else in the pod is immutable by then
/// and was judged when the pod was created, and ephemeral containers that already ran are
/// neither changed nor removed, so only the new ones are judged: a container added before
/// these rules does not lock the pod against every later debugging session. Without `old`,
/// every ephemeral container is judged.
pub fn new_ephemeral_container_violations(
    profile: &str,
    old: Option<&Pod>,
    pod: &Pod,
) -> Vec<Violation> {
    let Some(spec) = &pod.spec else {
        return vec![];
    };
    let existing: Vec<&str> = old
        .and_then(|old| old.spec.as_ref())
        .and_then(|spec| spec.ephemeral_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    let mut rules = Rules::new(profile);
    for container in ephemeral_containers(spec).filter(|c| !existing.contains(&c.name)) {
        rules.container(&container);
    }
    rules.found
}

/// The violations found so far, in the order the rules are applied.
struct Rules<'a> {
    profile: &'a str,
    found: Vec<Violation>,
}

impl<'a> Rules<'a> {
    fn new(profile: &'a str) -> Self {
        Self {
            profile,
            found: vec![],
        }
    }

    fn forbid(&mut self, field: String, container: Option<&str>, forbidden: Forbidden) {
        self.found.push(Violation {
            profile: self.profile.to_string(),
            field,
            container: container.map(str::to_string),
            forbidden,
        });
    }

    /// Host namespaces and host paths, which belong to the pod rather than a container.
    fn pod_level(&mut self, spec: &PodSpec) {
        for (set, field, forbidden) in [
            (
                spec.host_network,
                "spec.hostNetwork",
                Forbidden::HostNetwork,
            ),
            (spec.host_pid, "spec.hostPID", Forbidden::HostPid),
            (spec.host_ipc, "spec.hostIPC", Forbidden::HostIpc),
        ] {
            if set == Some(true) {
                self.forbid(field.into(), None, forbidden);
            }
        }

        for (index, volume) in spec.volumes.iter().flatten().enumerate() {
            if volume.host_path.is_some() {
                self.forbid(
                    format!("spec.volumes[{index}].hostPath"),
                    None,
                    Forbidden::HostPath {
                        volume: volume.name.clone(),
                    },
                );
            }
        }
    }

    fn container(&mut self, container: &ContainerView<'_>) {
        let name = Some(container.name);
        if let Some(security) = container.security_context {
            let field = |leaf: &str| format!("{}.securityContext.{leaf}", container.path);
            if security.privileged == Some(true) {
                self.forbid(field("privileged"), name, Forbidden::Privileged);
            }
            if security.allow_privilege_escalation == Some(true) {
                self.forbid(
                    field("allowPrivilegeEscalation"),
                    name,
                    Forbidden::PrivilegeEscalation,
                );
            }
            let added = security.capabilities.as_ref().and_then(|c| c.add.as_ref());
            for (index, capability) in added.into_iter().flatten().enumerate() {
                if !is_net_bind_service(capability) {
                    self.forbid(
                        field(&format!("capabilities.add[{index}]")),
                        name,
                        Forbidden::Capability {
                            capability: capability.clone(),
                        },
                    );
                }
            }
        }
        for (index, port) in container.ports.iter().enumerate() {
            // The API server treats hostPort 0 as unset.
            if let Some(host_port) = port.host_port.filter(|&p| p != 0) {
                self.forbid(
                    format!("{}.ports[{index}].hostPort", container.path),
                    name,
                    Forbidden::HostPort { port: host_port },
                );
            }
        }
    }
}

/// All violations as one admission-denial message, most important (first found) first.
pub fn rejection_message(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(Violation::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Capability names reach the runtime with or without the `CAP_` prefix and in any case.
fn is_net_bind_service(capability: &str) -> bool {
    let upper = capability.to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper) == NET_BIND_SERVICE
}

/// The parts of a container, init container or ephemeral container the rules look at.
struct ContainerView<'a> {
    /// `spec.containers[0]`, `spec.initContainers[1]`, `spec.ephemeralContainers[0]`.
    path: String,
    name: &'a str,
    security_context: Option<&'a SecurityContext>,
    ports: &'a [ContainerPort],
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = ContainerView<'_>> {
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| ContainerView {
            path: format!("spec.initContainers[{i}]"),
            name: &c.name,
            security_context: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
        });
    let app = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| ContainerView {
            path: format!("spec.containers[{i}]"),
            name: &c.name,
            security_context: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
        });
    init.chain(app).chain(ephemeral_containers(spec))
}

fn ephemeral_containers(spec: &PodSpec) -> impl Iterator<Item = ContainerView<'_>> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| ContainerView {
            path: format!("spec.ephemeralContainers[{i}]"),
            name: &c.name,
            security_context: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
        })
}

/// The pod as `profile` admits it; `capacity` is its Fargate size (see
/// [`size_for`](super::sizing::size_for)), or `None` when the profile does not size pods.
///
/// - label `fargo.dev/profile: <profile>`, which the profile's NetworkPolicy selects by;
/// - the profile's `runtimeClassName`, replacing the pod's (the sandbox is the point);
/// - the profile's nodeSelector merged over the pod's, and its tolerations added;
/// - hardening: `seccompProfile: RuntimeDefault` unless the pod chose a pod-level profile,
///   `allowPrivilegeEscalation: false` in every container, and no service-account token unless
///   the pod sets `automountServiceAccountToken` itself;
/// - with a capacity: pod-level requests = limits = the capacity (Guaranteed QoS), and the
///   `fargo.dev/capacity-provisioned` annotation. Container resources are left as they are; the
///   capacity already covers their requests and limits, as the API server requires.
///
/// Call it only for pods without [`violations`]: e.g. `allowPrivilegeEscalation: false` is
/// invalid next to `privileged: true`.
pub fn fargate_pod(profile: &FargateProfile, pod: &Pod, capacity: Option<Capacity>) -> Pod {
    let mut pod = pod.clone();
    pod.labels_mut()
        .insert(PROFILE_LABEL.to_string(), profile.name_any());
    if let Some(capacity) = capacity {
        pod.annotations_mut()
            .insert(CAPACITY_ANNOTATION.to_string(), capacity.annotation());
    }
    let Some(spec) = pod.spec.as_mut() else {
        return pod;
    };

    if let Some(runtime_class) = &profile.spec.runtime_class_name {
        spec.runtime_class_name = Some(runtime_class.clone());
    }

    let scheduling = &profile.spec.scheduling;
    if !scheduling.node_selector.is_empty() {
        spec.node_selector
            .get_or_insert_with(Default::default)
            .extend(scheduling.node_selector.clone());
    }
    if !scheduling.tolerations.is_empty() {
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        for toleration in &scheduling.tolerations {
            if !tolerations.contains(toleration) {
                tolerations.push(toleration.clone());
            }
        }
    }

    let pod_security = spec
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    pod_security
        .seccomp_profile
        .get_or_insert_with(|| SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        });
    let container_securities = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
        .map(|c| &mut c.security_context)
        .chain(
            spec.ephemeral_containers
                .iter_mut()
                .flatten()
                .map(|c| &mut c.security_context),
        );
    for security in container_securities {
        security
            .get_or_insert_with(SecurityContext::default)
            .allow_privilege_escalation = Some(false);
    }
    spec.automount_service_account_token.get_or_insert(false);

    if let Some(capacity) = capacity {
        let resources = spec
            .resources
            .get_or_insert_with(ResourceRequirements::default);
        for list in [&mut resources.requests, &mut resources.limits] {
            let list = list.get_or_insert_with(Default::default);
            list.insert("cpu".into(), capacity.cpu_quantity());
            list.insert("memory".into(), capacity.memory_quantity());
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Toleration;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("valid pod fixture")
    }

    fn profile(yaml: &str) -> FargateProfile {
        serde_yaml::from_str(yaml).expect("valid profile fixture")
    }

    fn messages(pod: &Pod) -> Vec<String> {
        violations("payments", pod)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const PAYMENTS: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: payments}
spec:
  selectors: [{namespace: payments-*}]
  runtimeClassName: gvisor
  scheduling:
    nodeSelector: {fargo.dev/capacity: fargate, zone: a}
    tolerations:
      - {key: fargo.dev/dedicated, operator: Exists, effect: NoSchedule}
"#;

    #[test]
    fn an_ordinary_pod_has_no_violations() {
        let pod = pod(r#"
spec:
  containers:
    - name: app
      image: app
      ports: [{containerPort: 8080}]
      securityContext: {privileged: false, allowPrivilegeEscalation: false, runAsNonRoot: true}
  volumes: [{name: tmp, emptyDir: {}}]
"#);
        assert_eq!(violations("payments", &pod), vec![]);
    }

    #[test]
    fn rejects_privileged_containers_naming_profile_container_and_field() {
        let pod = pod(r#"
spec:
  containers:
    - {name: app, securityContext: {privileged: true}}
"#);
        assert_eq!(
            messages(&pod),
            vec![
                "profile \"payments\" forbids spec.containers[0].securityContext.privileged \
                 (container \"app\"): Fargate pods cannot be privileged"
            ]
        );
    }

    #[test]
    fn rejects_privileged_init_and_ephemeral_containers() {
        let pod = pod(r#"
spec:
  initContainers:
    - {name: setup, securityContext: {privileged: true}}
  containers:
    - {name: app}
  ephemeralContainers:
    - {name: debug, securityContext: {privileged: true}}
"#);
        let found = violations("payments", &pod);
        assert_eq!(
            found
                .iter()
                .map(|v| (v.field.as_str(), v.container.as_deref()))
                .collect::<Vec<_>>(),
            vec![
                (
                    "spec.initContainers[0].securityContext.privileged",
                    Some("setup")
                ),
                (
                    "spec.ephemeralContainers[0].securityContext.privileged",
                    Some("debug")
                ),
            ]
        );
        assert!(found.iter().all(|v| v.forbidden == Forbidden::Privileged));
    }

    #[test]
    fn judges_only_the_ephemeral_containers_a_pod_gains() {
        // A pod created before the rules with a privileged ephemeral container and host
        // networking: neither is the new debugging session's doing.
        let old = pod(r#"
spec:
  hostNetwork: true
  containers:
    - {name: app, securityContext: {privileged: true}}
  ephemeralContainers:
    - {name: debugger-old, securityContext: {privileged: true}}
"#);
        let mut gained = old.clone();
        let spec = gained.spec.as_mut().unwrap();
        spec.ephemeral_containers.as_mut().unwrap().extend([
            serde_json::from_value(json!({"name": "debugger-ok", "image": "busybox"})).unwrap(),
            serde_json::from_value(json!({
                "name": "debugger-root",
                "image": "busybox",
                "securityContext": {
                    "privileged": true,
                    "capabilities": {"add": ["SYS_PTRACE", "NET_BIND_SERVICE"]},
                },
            }))
            .unwrap(),
        ]);
        let found = new_ephemeral_container_violations("payments", Some(&old), &gained);
        assert_eq!(
            found.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "profile \"payments\" forbids spec.ephemeralContainers[2].securityContext.privileged \
                 (container \"debugger-root\"): Fargate pods cannot be privileged",
                "profile \"payments\" forbids \
                 spec.ephemeralContainers[2].securityContext.capabilities.add[0] (container \
                 \"debugger-root\"): Fargate pods may add only the NET_BIND_SERVICE capability, \
                 not SYS_PTRACE",
            ]
        );
        // Without the pod as it was, every ephemeral container is judged.
        assert_eq!(
            new_ephemeral_container_violations("payments", None, &gained)
                .iter()
                .filter_map(|v| v.container.as_deref())
                .collect::<Vec<_>>(),
            vec!["debugger-old", "debugger-root", "debugger-root"]
        );
    }

    #[test]
    fn rejects_host_namespaces() {
        let pod = pod(r#"
spec:
  hostNetwork: true
  hostPID: true
  hostIPC: true
  containers: [{name: app}]
"#);
        assert_eq!(
            messages(&pod),
            vec![
                "profile \"payments\" forbids spec.hostNetwork: Fargate pods cannot use the \
                 node's network namespace",
                "profile \"payments\" forbids spec.hostPID: Fargate pods cannot use the node's \
                 process namespace",
                "profile \"payments\" forbids spec.hostIPC: Fargate pods cannot use the node's \
                 IPC namespace",
            ]
        );
    }

    #[test]
    fn host_namespaces_set_to_false_are_fine() {
        let pod = pod(r#"
spec: {hostNetwork: false, hostPID: false, hostIPC: false, containers: [{name: app}]}
"#);
        assert_eq!(violations("payments", &pod), vec![]);
    }

    #[test]
    fn rejects_host_path_volumes_naming_the_volume() {
        let pod = pod(r#"
spec:
  containers: [{name: app}]
  volumes:
    - {name: tmp, emptyDir: {}}
    - {name: docker-sock, hostPath: {path: /var/run/docker.sock}}
"#);
        assert_eq!(
            messages(&pod),
            vec![
                "profile \"payments\" forbids spec.volumes[1].hostPath (volume \"docker-sock\"): \
                 Fargate pods cannot mount paths of the node; use an emptyDir, ConfigMap, Secret \
                 or PersistentVolumeClaim volume instead"
            ]
        );
    }

    #[test]
    fn rejects_host_ports_on_any_container() {
        let pod = pod(r#"
spec:
  initContainers:
    - {name: setup, ports: [{containerPort: 9000, hostPort: 9000}]}
  containers:
    - name: app
      ports:
        - {containerPort: 8080}
        - {containerPort: 8443, hostPort: 0}
        - {containerPort: 9090, hostPort: 9090}
"#);
        let found = violations("payments", &pod);
        assert_eq!(
            found.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
            vec![
                "spec.initContainers[0].ports[0].hostPort",
                "spec.containers[0].ports[2].hostPort"
            ]
        );
        assert_eq!(
            found[1].to_string(),
            "profile \"payments\" forbids spec.containers[0].ports[2].hostPort (container \
             \"app\"): Fargate pods cannot bind ports of the node (hostPort 9090); remove \
             hostPort and reach the pod through a Service"
        );
    }

    #[test]
    fn allows_adding_only_net_bind_service() {
        let pod = pod(r#"
spec:
  containers:
    - name: app
      securityContext:
        capabilities:
          add: [NET_BIND_SERVICE, CAP_NET_BIND_SERVICE, SYS_ADMIN, CAP_NET_RAW]
          drop: [ALL]
"#);
        let found = violations("payments", &pod);
        assert_eq!(
            found
                .iter()
                .map(|v| (v.field.as_str(), &v.forbidden))
                .collect::<Vec<_>>(),
            vec![
                (
                    "spec.containers[0].securityContext.capabilities.add[2]",
                    &Forbidden::Capability {
                        capability: "SYS_ADMIN".into()
                    }
                ),
                (
                    "spec.containers[0].securityContext.capabilities.add[3]",
                    &Forbidden::Capability {
                        capability: "CAP_NET_RAW".into()
                    }
                ),
            ]
        );
        assert_eq!(
            found[0].to_string(),
            "profile \"payments\" forbids spec.containers[0].securityContext.capabilities.add[2] \
             (container \"app\"): Fargate pods may add only the NET_BIND_SERVICE capability, not \
             SYS_ADMIN"
        );
    }

    #[test]
    fn rejects_explicit_privilege_escalation() {
        let pod = pod(r#"
spec:
  containers:
    - {name: app, securityContext: {allowPrivilegeEscalation: true}}
"#);
        assert_eq!(
            messages(&pod),
            vec![
                "profile \"payments\" forbids \
                 spec.containers[0].securityContext.allowPrivilegeEscalation (container \"app\"): \
                 Fargate pods cannot allow privilege escalation; remove the field or set it to \
                 false"
            ]
        );
    }

    #[test]
    fn reports_every_violation_in_one_message() {
        let pod = pod(r#"
spec:
  hostNetwork: true
  containers:
    - {name: app, securityContext: {privileged: true}}
"#);
        let message = rejection_message(&violations("payments", &pod));
        assert_eq!(
            message,
            "profile \"payments\" forbids spec.hostNetwork: Fargate pods cannot use the node's \
             network namespace; profile \"payments\" forbids \
             spec.containers[0].securityContext.privileged (container \"app\"): Fargate pods \
             cannot be privileged"
        );
    }

    #[test]
    fn fargate_pod_is_labelled_sandboxed_placed_hardened_and_sized() {
        let original = pod(r#"
metadata:
  name: api
  labels: {tier: backend}
spec:
  runtimeClassName: runc
  nodeSelector: {zone: b, disk: ssd}
  tolerations:
    - {key: fargo.dev/dedicated, operator: Exists, effect: NoSchedule}
    - {key: other, operator: Exists}
  initContainers:
    - {name: setup}
  containers:
    - name: app
      resources: {requests: {cpu: "1", memory: 8Gi}}
    - name: sidecar
      securityContext: {runAsNonRoot: true}
"#);
        let capacity = Capacity {
            millicpu: 2000,
            memory_bytes: 9 << 30,
        };
        let admitted = fargate_pod(&profile(PAYMENTS), &original, Some(capacity));
        let admitted = serde_json::to_value(&admitted).unwrap();
        assert_eq!(
            admitted,
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "api",
                    "labels": {"tier": "backend", "fargo.dev/profile": "payments"},
                    "annotations": {"fargo.dev/capacity-provisioned": "2vCPU 9GB"},
                },
                "spec": {
                    "runtimeClassName": "gvisor",
                    "nodeSelector": {"zone": "a", "disk": "ssd", "fargo.dev/capacity": "fargate"},
                    "tolerations": [
                        {"key": "fargo.dev/dedicated", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "other", "operator": "Exists"},
                    ],
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "automountServiceAccountToken": false,
                    "resources": {
                        "requests": {"cpu": "2", "memory": "9Gi"},
                        "limits": {"cpu": "2", "memory": "9Gi"},
                    },
                    "initContainers": [
                        {"name": "setup", "securityContext": {"allowPrivilegeEscalation": false}},
                    ],
                    "containers": [
                        {
                            "name": "app",
                            "resources": {"requests": {"cpu": "1", "memory": "8Gi"}},
                            "securityContext": {"allowPrivilegeEscalation": false},
                        },
                        {
                            "name": "sidecar",
                            "securityContext": {
                                "runAsNonRoot": true,
                                "allowPrivilegeEscalation": false,
                            },
                        },
                    ],
                },
            })
        );
    }

    #[test]
    fn fargate_pod_adds_profile_tolerations_the_pod_lacks() {
        let original = pod("spec: {containers: [{name: app}]}");
        let admitted = fargate_pod(&profile(PAYMENTS), &original, None);
        let spec = admitted.spec.unwrap();
        assert_eq!(
            spec.tolerations,
            Some(vec![Toleration {
                key: Some("fargo.dev/dedicated".into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }])
        );
    }

    #[test]
    fn fargate_pod_keeps_choices_the_pod_made_explicitly() {
        let original = pod(r#"
spec:
  automountServiceAccountToken: true
  securityContext:
    runAsUser: 1000
    seccompProfile: {type: Localhost, localhostProfile: app.json}
  containers: [{name: app}]
"#);
        let admitted = fargate_pod(&profile(PAYMENTS), &original, None);
        let spec = admitted.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(true));
        let security = spec.security_context.unwrap();
        assert_eq!(security.run_as_user, Some(1000));
        assert_eq!(
            security.seccomp_profile,
            Some(SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some("app.json".into()),
            })
        );
    }

    #[test]
    fn fargate_pod_without_capacity_leaves_resources_alone() {
        let original = pod(r#"
spec:
  containers: [{name: app, resources: {requests: {cpu: 100m}}}]
"#);
        let admitted = fargate_pod(&profile(PAYMENTS), &original, None);
        assert!(!admitted.annotations().contains_key(CAPACITY_ANNOTATION));
        let spec = admitted.spec.unwrap();
        assert_eq!(spec.resources, None);
        assert_eq!(
            spec.containers[0]
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("cpu")),
            Some(&Quantity("100m".into()))
        );
    }

    #[test]
    fn fargate_pod_without_runtime_class_keeps_the_pods() {
        let plain = profile(
            r#"
metadata: {name: plain}
spec:
  selectors: [{namespace: "*"}]
"#,
        );
        let original = pod("spec: {runtimeClassName: kata, containers: [{name: app}]}");
        let admitted = fargate_pod(&plain, &original, None);
        let spec = admitted.spec.unwrap();
        assert_eq!(spec.runtime_class_name.as_deref(), Some("kata"));
        assert_eq!(spec.node_selector, None);
        assert_eq!(spec.tolerations, None);
        assert_eq!(admitted.metadata.labels.unwrap()[PROFILE_LABEL], "plain");
    }

    #[test]
    fn fargate_pod_overrides_allow_privilege_escalation_left_unset_or_false() {
        let original = pod(r#"
spec:
  containers:
    - {name: a, securityContext: {allowPrivilegeEscalation: false}}
    - {name: b}
"#);
        let admitted = fargate_pod(&profile(PAYMENTS), &original, None);
        for container in admitted.spec.unwrap().containers {
            assert_eq!(
                container
                    .security_context
                    .and_then(|s| s.allow_privilege_escalation),
                Some(false),
                "{}",
                container.name
            );
        }
    }

    #[test]
    fn sized_fargate_pod_passes_api_server_pod_level_resource_rules() {
        use crate::profile::sizing::size_for;
        use crate::quantity::{parse_bytes, parse_millicpu};

        let original = pod(r#"
spec:
  initContainers:
    - {name: setup, resources: {requests: {cpu: "3", memory: 1Gi}}}
  containers:
    - {name: a, resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: "2", memory: 6Gi}}}
    - {name: b, resources: {limits: {cpu: "1", memory: 1Gi}}}
"#);
        let payments = profile(PAYMENTS);
        let capacity = size_for(&payments, &original).unwrap();
        let admitted = fargate_pod(&payments, &original, capacity);
        let spec = admitted.spec.unwrap();
        let pod_level = spec.resources.unwrap();
        assert_eq!(pod_level.requests, pod_level.limits, "Guaranteed");
        let limits = pod_level.limits.unwrap();
        let pod_cpu = parse_millicpu(&limits["cpu"]).unwrap();
        let pod_memory = parse_bytes(&limits["memory"]).unwrap();
        // Pod-level requests cover the containers' requests; no container limit exceeds the pod's.
        let mut request_cpu = 0;
        let mut request_memory = 0;
        for container in &spec.containers {
            let resources = container.resources.clone().unwrap_or_default();
            let requests = resources
                .requests
                .or(resources.limits.clone())
                .unwrap_or_default();
            request_cpu += requests
                .get("cpu")
                .map_or(0, |q| parse_millicpu(q).unwrap());
            request_memory += requests
                .get("memory")
                .map_or(0, |q| parse_bytes(q).unwrap());
            for (resource, limit) in resources.limits.unwrap_or_default() {
                let (limit, pod) = match resource.as_str() {
                    "cpu" => (parse_millicpu(&limit).unwrap(), pod_cpu),
                    _ => (parse_bytes(&limit).unwrap(), pod_memory),
                };
                assert!(limit <= pod, "{} limit {resource}", container.name);
            }
        }
        assert!(request_cpu <= pod_cpu && request_memory <= pod_memory);
        assert_eq!(
            admitted.metadata.annotations.unwrap()[CAPACITY_ANNOTATION],
            "4vCPU 8GB"
        );
    }
}
