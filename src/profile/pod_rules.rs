//! What a profile refuses in a pod, and the pod it admits instead.
//!
//! A Fargate pod is promised isolation from the node and from other tenants, so a matched pod that
//! asks for the node is refused outright rather than quietly weakened: the user learns which field
//! of which container to change. Every profile refuses at least what the Kubernetes Pod Security
//! Standards' baseline level forbids (host namespaces, privileged mode, host paths and ports,
//! HostProcess, unconfined seccomp or AppArmor, custom SELinux labels, unmasked /proc, unsafe
//! sysctls, probes aimed at other hosts) and what Fargate does not offer (volume types, Windows,
//! capabilities beyond NET_BIND_SERVICE); a `Restricted` profile also refuses pods that may run
//! as root. Everything else about a matched pod is adjusted by [`fargate_pod`]: sandbox runtime,
//! placement, hardening and size.

use std::fmt;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, ContainerPort, Lifecycle, LifecycleHandler, Pod,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, SELinuxOptions, SeccompProfile,
    SecurityContext, Volume,
};
use kube::ResourceExt;

use super::sizing::Capacity;
use crate::api::profile::{FargateProfile, PodSecurityLevel};
use crate::api::{CAPACITY_ANNOTATION, PROFILE_LABEL};

/// The one capability a Fargate pod may add, as EKS allows: binding ports below 1024.
const NET_BIND_SERVICE: &str = "NET_BIND_SERVICE";

/// The sysctls the baseline standard calls safe: namespaced to the pod, and without effect on
/// other pods of the node (the Kubernetes 1.32+ list).
const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_wmem",
];

/// The SELinux types the baseline standard allows: those container runtimes give containers.
const SELINUX_TYPES: [&str; 4] = [
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The legacy AppArmor annotation of container `<name>`: the API server turns it into the
/// container's `appArmorProfile` only after the mutating webhooks, which see just the annotation.
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// The volume types a Fargate pod may use, as refusals name them.
const OFFERED_VOLUMES: &str = "a PersistentVolumeClaim, CSI, ephemeral, emptyDir, ConfigMap, \
                               Secret, projected, downwardAPI or image volume";

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

/// The kinds of host access a Fargate pod may not have, and what a `Restricted` profile requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forbidden {
    Windows,
    HostProcess,
    Privileged,
    PrivilegeEscalation,
    HostNetwork,
    HostPid,
    HostIpc,
    HostPath {
        volume: String,
    },
    VolumeType {
        volume: String,
        kind: &'static str,
    },
    UnknownVolumeType {
        volume: String,
    },
    HostPort {
        port: i32,
    },
    Capability {
        capability: String,
    },
    AppArmor {
        profile: String,
    },
    SeLinuxType {
        selinux_type: String,
    },
    SeLinuxUser,
    SeLinuxRole,
    ProcMount {
        proc_mount: String,
    },
    Seccomp {
        profile_type: String,
    },
    Sysctl {
        name: String,
    },
    ProbeHost {
        host: String,
    },
    /// `runAsNonRoot: false` under a `Restricted` profile.
    RunAsRoot,
    /// `runAsNonRoot` set neither in the pod nor in the container, under a `Restricted` profile.
    RunAsNonRootUnset,
    /// `runAsUser: 0` under a `Restricted` profile.
    RootUser,
    /// What `fargate_pod` sets under a `Restricted` profile, missing from the pod as admitted.
    CapabilitiesNotDropped,
    PrivilegeEscalationUnset,
    SeccompUnset,
}

impl Forbidden {
    /// Why the field is refused, and what to do instead where that is not obvious.
    fn reason(&self) -> String {
        match self {
            Forbidden::Windows => {
                "Fargate pods run on Linux only; remove spec.os or set its name to linux".into()
            }
            Forbidden::HostProcess => {
                "Fargate pods cannot be Windows HostProcess containers, which run on the node \
                 itself; remove windowsOptions.hostProcess"
                    .into()
            }
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
            Forbidden::VolumeType { kind, .. } => {
                format!("Fargate offers no {kind} volumes; use {OFFERED_VOLUMES} instead")
            }
            Forbidden::UnknownVolumeType { .. } => format!(
                "fargo does not know this volume's type, so it cannot tell whether Fargate offers \
                 it; use {OFFERED_VOLUMES} instead"
            ),
            Forbidden::HostPort { port } => format!(
                "Fargate pods cannot bind ports of the node (hostPort {port}); remove hostPort \
                 and reach the pod through a Service"
            ),
            Forbidden::Capability { capability } => format!(
                "Fargate pods may add only the {NET_BIND_SERVICE} capability, not {capability}"
            ),
            Forbidden::AppArmor { profile } => format!(
                "Fargate pods must stay confined by AppArmor, not run {profile:?}; remove the \
                 setting (the runtime's default profile applies) or name a localhost profile"
            ),
            Forbidden::SeLinuxType { selinux_type } => format!(
                "Fargate pods may use only the container SELinux types ({}), not {selinux_type:?}; \
                 remove seLinuxOptions.type or use one of those",
                SELINUX_TYPES.join(", ")
            ),
            Forbidden::SeLinuxUser => {
                "Fargate pods cannot choose their SELinux user; remove seLinuxOptions.user".into()
            }
            Forbidden::SeLinuxRole => {
                "Fargate pods cannot choose their SELinux role; remove seLinuxOptions.role".into()
            }
            Forbidden::ProcMount { proc_mount } => format!(
                "Fargate pods see the node's /proc masked, not {proc_mount:?}; remove procMount or \
                 set it to Default"
            ),
            Forbidden::Seccomp { profile_type } => format!(
                "Fargate pods must be confined by seccomp, not {profile_type:?}; remove \
                 seccompProfile (fargo sets RuntimeDefault) or use RuntimeDefault or Localhost"
            ),
            Forbidden::Sysctl { name } => format!(
                "Fargate pods may set only the sysctls that affect the pod alone ({}), not \
                 {name:?}; remove it",
                SAFE_SYSCTLS.join(", ")
            ),
            Forbidden::ProbeHost { host } => format!(
                "probes and lifecycle hooks of Fargate pods may reach only the pod itself, not \
                 host {host:?}; remove host (the pod's IP is the default)"
            ),
            Forbidden::RunAsRoot => "pods of a Restricted profile must not run as root; set \
                 securityContext.runAsNonRoot: true"
                .into(),
            Forbidden::RunAsNonRootUnset => {
                "pods of a Restricted profile must not run as root; set \
                 securityContext.runAsNonRoot: true in the pod or in every container"
                    .into()
            }
            Forbidden::RootUser => {
                "pods of a Restricted profile must not run as root (UID 0); set runAsUser to \
                 another UID, or remove it and set securityContext.runAsNonRoot: true"
                    .into()
            }
            Forbidden::CapabilitiesNotDropped => {
                "pods of a Restricted profile drop every capability; set \
                 securityContext.capabilities.drop: [ALL] (NET_BIND_SERVICE may still be added)"
                    .into()
            }
            Forbidden::PrivilegeEscalationUnset => {
                "pods of a Restricted profile cannot gain privileges; set \
                 securityContext.allowPrivilegeEscalation: false"
                    .into()
            }
            Forbidden::SeccompUnset => {
                "pods of a Restricted profile must be confined by seccomp; set \
                 securityContext.seccompProfile.type: RuntimeDefault in the pod or in this \
                 container"
                    .into()
            }
        }
    }

    /// Whether the violation is a field left unset rather than one set to a forbidden value.
    fn is_missing(&self) -> bool {
        matches!(
            self,
            Forbidden::RunAsNonRootUnset
                | Forbidden::CapabilitiesNotDropped
                | Forbidden::PrivilegeEscalationUnset
                | Forbidden::SeccompUnset
        )
    }
}

/// `profile "payments" forbids spec.containers[0].securityContext.privileged (container "app"):
/// Fargate pods cannot be privileged`, or `profile "payments" requires …` for a field left unset.
impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.forbidden.is_missing() {
            "requires"
        } else {
            "forbids"
        };
        write!(f, "profile {:?} {verb} {}", self.profile, self.field)?;
        match (&self.container, &self.forbidden) {
            (Some(container), _) => write!(f, " (container {container:?})")?,
            (
                None,
                Forbidden::HostPath { volume }
                | Forbidden::VolumeType { volume, .. }
                | Forbidden::UnknownVolumeType { volume },
            ) => write!(f, " (volume {volume:?})")?,
            (None, _) => {}
        }
        write!(f, ": {}", self.forbidden.reason())
    }
}

impl std::error::Error for Violation {}

/// The violations found so far, all of one profile.
struct Found {
    profile: String,
    violations: Vec<Violation>,
}

impl Found {
    fn forbid(&mut self, field: String, container: Option<&str>, forbidden: Forbidden) {
        self.violations.push(Violation {
            profile: self.profile.clone(),
            field,
            container: container.map(str::to_string),
            forbidden,
        });
    }
}

/// Every field of `pod` that `profile` forbids, in the order they appear in the pod. Empty means
/// the pod may run under the profile once [`fargate_pod`] has hardened it.
pub fn violations(profile: &FargateProfile, pod: &Pod) -> Vec<Violation> {
    violations_at(&profile.name_any(), profile.spec.pod_security, pod)
}

/// What profile `profile` forbids in the ephemeral containers `pod` gains over `old`, as
/// `kubectl debug` adds them to a running pod. Everything else in the pod is immutable by then
/// and was judged when the pod was created, and ephemeral containers that already ran are
/// neither changed nor removed, so only the new ones are judged: a container added before
/// these rules does not lock the pod against every later debugging session. Without `old`,
/// every ephemeral container is judged. `level` is the profile's, or `Baseline` when the
/// profile is gone (its pods keep running under `deletionPolicy: Orphan`).
pub fn new_ephemeral_container_violations(
    profile: &str,
    level: PodSecurityLevel,
    old: Option<&Pod>,
    pod: &Pod,
) -> Vec<Violation> {
    let existing: Vec<&str> = old
        .and_then(|old| old.spec.as_ref())
        .and_then(|spec| spec.ephemeral_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    violations_at(profile, level, pod)
        .into_iter()
        .filter(|v| {
            v.field.starts_with("spec.ephemeralContainers[")
                && v.container
                    .as_deref()
                    .is_some_and(|c| !existing.contains(&c))
        })
        .collect()
}

fn violations_at(profile: &str, level: PodSecurityLevel, pod: &Pod) -> Vec<Violation> {
    let mut found = Found {
        profile: profile.to_string(),
        violations: vec![],
    };
    let Some(spec) = &pod.spec else {
        return found.violations;
    };
    let restricted = level == PodSecurityLevel::Restricted;
    // Root inside a user namespace is no one outside it, which is why the standard (1.35+) lets
    // such pods run as root even at the restricted level.
    let root_is_forbidden = restricted && spec.host_users != Some(false);

    for (key, value) in pod.annotations() {
        if let Some(container) = key.strip_prefix(APPARMOR_ANNOTATION_PREFIX)
            && !(value.is_empty() || value == "runtime/default" || value.starts_with("localhost/"))
        {
            found.forbid(
                format!("metadata.annotations[{key}]"),
                Some(container),
                Forbidden::AppArmor {
                    profile: value.clone(),
                },
            );
        }
    }

    if spec
        .os
        .as_ref()
        .is_some_and(|os| os.name.eq_ignore_ascii_case("windows"))
    {
        found.forbid("spec.os.name".into(), None, Forbidden::Windows);
    }
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
            found.forbid(field.into(), None, forbidden);
        }
    }

    let pod_security = spec.security_context.as_ref();
    if let Some(security) = pod_security {
        check_shared(
            &mut found,
            "spec.securityContext",
            None,
            &SharedSecurity::of_pod(security),
            root_is_forbidden,
        );
        for (index, sysctl) in security.sysctls.iter().flatten().enumerate() {
            if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
                found.forbid(
                    format!("spec.securityContext.sysctls[{index}].name"),
                    None,
                    Forbidden::Sysctl {
                        name: sysctl.name.clone(),
                    },
                );
            }
        }
    }
    let pod_non_root = pod_security.and_then(|s| s.run_as_non_root);
    // A pod that says nothing about root anywhere hears it once, at the pod level.
    let silent_about_root = pod_non_root.is_none()
        && containers(spec).all(|c| c.security_context.and_then(|s| s.run_as_non_root).is_none());
    if root_is_forbidden && silent_about_root {
        found.forbid(
            "spec.securityContext.runAsNonRoot".into(),
            None,
            Forbidden::RunAsNonRootUnset,
        );
    }

    for (index, volume) in spec.volumes.iter().flatten().enumerate() {
        let name = volume.name.clone();
        match volume_type(volume) {
            VolumeType::Offered => {}
            VolumeType::HostPath => found.forbid(
                format!("spec.volumes[{index}].hostPath"),
                None,
                Forbidden::HostPath { volume: name },
            ),
            VolumeType::NotOffered(kind) => found.forbid(
                format!("spec.volumes[{index}].{kind}"),
                None,
                Forbidden::VolumeType { volume: name, kind },
            ),
            VolumeType::Unknown => found.forbid(
                format!("spec.volumes[{index}]"),
                None,
                Forbidden::UnknownVolumeType { volume: name },
            ),
        }
    }

    for container in containers(spec) {
        let name = Some(container.name);
        let security = container.security_context;
        if let Some(security) = security {
            let field = |leaf: &str| format!("{}.securityContext.{leaf}", container.path);
            if security.privileged == Some(true) {
                found.forbid(field("privileged"), name, Forbidden::Privileged);
            }
            if security.allow_privilege_escalation == Some(true) {
                found.forbid(
                    field("allowPrivilegeEscalation"),
                    name,
                    Forbidden::PrivilegeEscalation,
                );
            }
            let added = security.capabilities.as_ref().and_then(|c| c.add.as_ref());
            for (index, capability) in added.into_iter().flatten().enumerate() {
                if !is_net_bind_service(capability) {
                    found.forbid(
                        field(&format!("capabilities.add[{index}]")),
                        name,
                        Forbidden::Capability {
                            capability: capability.clone(),
                        },
                    );
                }
            }
            // The standard (1.35+) allows Unmasked in user-namespaced pods; a Fargate pod's /proc
            // stays masked whatever its namespaces, as under the restricted level.
            if let Some(proc_mount) = security.proc_mount.as_ref().filter(|m| *m != "Default") {
                found.forbid(
                    field("procMount"),
                    name,
                    Forbidden::ProcMount {
                        proc_mount: proc_mount.clone(),
                    },
                );
            }
            check_shared(
                &mut found,
                &format!("{}.securityContext", container.path),
                name,
                &SharedSecurity::of_container(security),
                root_is_forbidden,
            );
        }
        let non_root = security.and_then(|s| s.run_as_non_root);
        if root_is_forbidden && non_root.is_none() && pod_non_root.is_none() && !silent_about_root {
            found.forbid(
                format!("{}.securityContext.runAsNonRoot", container.path),
                name,
                Forbidden::RunAsNonRootUnset,
            );
        }
        for (index, port) in container.ports.iter().enumerate() {
            // The API server treats hostPort 0 as unset.
            if let Some(host_port) = port.host_port.filter(|&p| p != 0) {
                found.forbid(
                    format!("{}.ports[{index}].hostPort", container.path),
                    name,
                    Forbidden::HostPort { port: host_port },
                );
            }
        }
        for (leaf, host) in handler_hosts(&container) {
            found.forbid(
                format!("{}.{leaf}", container.path),
                name,
                Forbidden::ProbeHost { host },
            );
        }
    }
    found.violations
}

/// What [`fargate_pod`] sets that a `Restricted` profile requires and `pod` lacks: empty for a pod
/// fargo hardened, unless a later mutation undid some of it. Nothing for a `Baseline` profile,
/// which leaves these fields to the pod.
pub fn missing_hardening(profile: &FargateProfile, pod: &Pod) -> Vec<Violation> {
    let mut found = Found {
        profile: profile.name_any(),
        violations: vec![],
    };
    let Some(spec) = pod
        .spec
        .as_ref()
        .filter(|_| profile.spec.pod_security == PodSecurityLevel::Restricted)
    else {
        return found.violations;
    };
    let pod_seccomp = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .is_some();
    for container in containers(spec) {
        let name = Some(container.name);
        let security = container.security_context;
        let field = |leaf: &str| format!("{}.securityContext.{leaf}", container.path);
        let drops_all = security
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|drop| drop.iter().any(|c| c == "ALL"));
        if !drops_all {
            found.forbid(
                field("capabilities.drop"),
                name,
                Forbidden::CapabilitiesNotDropped,
            );
        }
        if security
            .and_then(|s| s.allow_privilege_escalation)
            .is_none()
        {
            found.forbid(
                field("allowPrivilegeEscalation"),
                name,
                Forbidden::PrivilegeEscalationUnset,
            );
        }
        if !pod_seccomp && security.and_then(|s| s.seccomp_profile.as_ref()).is_none() {
            found.forbid(field("seccompProfile"), name, Forbidden::SeccompUnset);
        }
    }
    found.violations
}

/// The fields a pod's and a container's security contexts share, which the rules treat alike.
struct SharedSecurity<'a> {
    host_process: Option<bool>,
    selinux: Option<&'a SELinuxOptions>,
    seccomp: Option<&'a SeccompProfile>,
    apparmor: Option<&'a AppArmorProfile>,
    run_as_non_root: Option<bool>,
    run_as_user: Option<i64>,
}

impl<'a> SharedSecurity<'a> {
    fn of_pod(security: &'a PodSecurityContext) -> Self {
        Self {
            host_process: security
                .windows_options
                .as_ref()
                .and_then(|w| w.host_process),
            selinux: security.se_linux_options.as_ref(),
            seccomp: security.seccomp_profile.as_ref(),
            apparmor: security.app_armor_profile.as_ref(),
            run_as_non_root: security.run_as_non_root,
            run_as_user: security.run_as_user,
        }
    }

    fn of_container(security: &'a SecurityContext) -> Self {
        Self {
            host_process: security
                .windows_options
                .as_ref()
                .and_then(|w| w.host_process),
            selinux: security.se_linux_options.as_ref(),
            seccomp: security.seccomp_profile.as_ref(),
            apparmor: security.app_armor_profile.as_ref(),
            run_as_non_root: security.run_as_non_root,
            run_as_user: security.run_as_user,
        }
    }
}

/// The rules on the fields of [`SharedSecurity`], found under `path` (`spec.securityContext`, or a
/// container's).
fn check_shared(
    found: &mut Found,
    path: &str,
    container: Option<&str>,
    security: &SharedSecurity<'_>,
    root_is_forbidden: bool,
) {
    let field = |leaf: &str| format!("{path}.{leaf}");
    if security.host_process == Some(true) {
        found.forbid(
            field("windowsOptions.hostProcess"),
            container,
            Forbidden::HostProcess,
        );
    }
    if let Some(selinux) = security.selinux {
        if let Some(selinux_type) = selinux
            .type_
            .as_ref()
            .filter(|t| !t.is_empty() && !SELINUX_TYPES.contains(&t.as_str()))
        {
            found.forbid(
                field("seLinuxOptions.type"),
                container,
                Forbidden::SeLinuxType {
                    selinux_type: selinux_type.clone(),
                },
            );
        }
        if selinux.user.as_ref().is_some_and(|u| !u.is_empty()) {
            found.forbid(
                field("seLinuxOptions.user"),
                container,
                Forbidden::SeLinuxUser,
            );
        }
        if selinux.role.as_ref().is_some_and(|r| !r.is_empty()) {
            found.forbid(
                field("seLinuxOptions.role"),
                container,
                Forbidden::SeLinuxRole,
            );
        }
    }
    if let Some(seccomp) = security.seccomp.filter(|p| !is_confining(&p.type_)) {
        found.forbid(
            field("seccompProfile.type"),
            container,
            Forbidden::Seccomp {
                profile_type: seccomp.type_.clone(),
            },
        );
    }
    if let Some(apparmor) = security.apparmor.filter(|p| !is_confining(&p.type_)) {
        found.forbid(
            field("appArmorProfile.type"),
            container,
            Forbidden::AppArmor {
                profile: apparmor.type_.clone(),
            },
        );
    }
    if root_is_forbidden {
        if security.run_as_non_root == Some(false) {
            found.forbid(field("runAsNonRoot"), container, Forbidden::RunAsRoot);
        }
        if security.run_as_user == Some(0) {
            found.forbid(field("runAsUser"), container, Forbidden::RootUser);
        }
    }
}

/// Seccomp and AppArmor profile types that confine the container; the API server knows one more,
/// `Unconfined`.
fn is_confining(profile_type: &str) -> bool {
    matches!(profile_type, "RuntimeDefault" | "Localhost")
}

/// Capability names reach the runtime with or without the `CAP_` prefix and in any case.
fn is_net_bind_service(capability: &str) -> bool {
    let upper = capability.to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper) == NET_BIND_SERVICE
}

/// What a volume is, as far as Fargate is concerned.
enum VolumeType {
    Offered,
    HostPath,
    /// In-tree network and cloud volumes, mounted by the node, and gitRepo, cloned by the node.
    NotOffered(&'static str),
    /// None of the types fargo knows: newer than fargo, which cannot vouch for it.
    Unknown,
}

fn volume_type(volume: &Volume) -> VolumeType {
    if volume.host_path.is_some() {
        return VolumeType::HostPath;
    }
    let not_offered = [
        (
            volume.aws_elastic_block_store.is_some(),
            "awsElasticBlockStore",
        ),
        (volume.azure_disk.is_some(), "azureDisk"),
        (volume.azure_file.is_some(), "azureFile"),
        (volume.cephfs.is_some(), "cephfs"),
        (volume.cinder.is_some(), "cinder"),
        (volume.fc.is_some(), "fc"),
        (volume.flex_volume.is_some(), "flexVolume"),
        (volume.flocker.is_some(), "flocker"),
        (volume.gce_persistent_disk.is_some(), "gcePersistentDisk"),
        (volume.git_repo.is_some(), "gitRepo"),
        (volume.glusterfs.is_some(), "glusterfs"),
        (volume.iscsi.is_some(), "iscsi"),
        (volume.nfs.is_some(), "nfs"),
        (
            volume.photon_persistent_disk.is_some(),
            "photonPersistentDisk",
        ),
        (volume.portworx_volume.is_some(), "portworxVolume"),
        (volume.quobyte.is_some(), "quobyte"),
        (volume.rbd.is_some(), "rbd"),
        (volume.scale_io.is_some(), "scaleIO"),
        (volume.storageos.is_some(), "storageos"),
        (volume.vsphere_volume.is_some(), "vsphereVolume"),
    ];
    if let Some((_, kind)) = not_offered.into_iter().find(|(set, _)| *set) {
        return VolumeType::NotOffered(kind);
    }
    let offered = volume.config_map.is_some()
        || volume.csi.is_some()
        || volume.downward_api.is_some()
        || volume.empty_dir.is_some()
        || volume.ephemeral.is_some()
        || volume.image.is_some()
        || volume.persistent_volume_claim.is_some()
        || volume.projected.is_some()
        || volume.secret.is_some();
    if offered {
        VolumeType::Offered
    } else {
        VolumeType::Unknown
    }
}

/// The `host` fields of a container's probes and lifecycle hooks that name another host, as
/// (path below the container, host). The kubelet makes these requests from the node, so a host of
/// the pod's choosing would reach whatever the node can.
fn handler_hosts(container: &ContainerView<'_>) -> Vec<(String, String)> {
    let lifecycle = container.lifecycle;
    let handlers = [
        (
            "livenessProbe",
            container.liveness_probe.map(Handler::of_probe),
        ),
        (
            "readinessProbe",
            container.readiness_probe.map(Handler::of_probe),
        ),
        (
            "startupProbe",
            container.startup_probe.map(Handler::of_probe),
        ),
        (
            "lifecycle.postStart",
            lifecycle
                .and_then(|l| l.post_start.as_ref())
                .map(Handler::of_hook),
        ),
        (
            "lifecycle.preStop",
            lifecycle
                .and_then(|l| l.pre_stop.as_ref())
                .map(Handler::of_hook),
        ),
    ];
    let mut hosts = vec![];
    for (path, handler) in handlers {
        let Some(handler) = handler else { continue };
        for (action, host) in [
            ("httpGet", handler.http_host),
            ("tcpSocket", handler.tcp_host),
        ] {
            if let Some(host) = host.filter(|h| !h.is_empty()) {
                hosts.push((format!("{path}.{action}.host"), host.to_string()));
            }
        }
    }
    hosts
}

/// The hosts a probe or lifecycle hook may name.
struct Handler<'a> {
    http_host: Option<&'a str>,
    tcp_host: Option<&'a str>,
}

impl<'a> Handler<'a> {
    fn of_probe(probe: &'a Probe) -> Self {
        Self {
            http_host: probe.http_get.as_ref().and_then(|a| a.host.as_deref()),
            tcp_host: probe.tcp_socket.as_ref().and_then(|a| a.host.as_deref()),
        }
    }

    fn of_hook(hook: &'a LifecycleHandler) -> Self {
        Self {
            http_host: hook.http_get.as_ref().and_then(|a| a.host.as_deref()),
            tcp_host: hook.tcp_socket.as_ref().and_then(|a| a.host.as_deref()),
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

/// The parts of a container, init container or ephemeral container the rules look at.
struct ContainerView<'a> {
    /// `spec.containers[0]`, `spec.initContainers[1]`, `spec.ephemeralContainers[0]`.
    path: String,
    name: &'a str,
    security_context: Option<&'a SecurityContext>,
    ports: &'a [ContainerPort],
    liveness_probe: Option<&'a Probe>,
    readiness_probe: Option<&'a Probe>,
    startup_probe: Option<&'a Probe>,
    lifecycle: Option<&'a Lifecycle>,
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
            liveness_probe: c.liveness_probe.as_ref(),
            readiness_probe: c.readiness_probe.as_ref(),
            startup_probe: c.startup_probe.as_ref(),
            lifecycle: c.lifecycle.as_ref(),
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
            liveness_probe: c.liveness_probe.as_ref(),
            readiness_probe: c.readiness_probe.as_ref(),
            startup_probe: c.startup_probe.as_ref(),
            lifecycle: c.lifecycle.as_ref(),
        });
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| ContainerView {
            path: format!("spec.ephemeralContainers[{i}]"),
            name: &c.name,
            security_context: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
            liveness_probe: c.liveness_probe.as_ref(),
            readiness_probe: c.readiness_probe.as_ref(),
            startup_probe: c.startup_probe.as_ref(),
            lifecycle: c.lifecycle.as_ref(),
        });
    init.chain(app).chain(ephemeral)
}

/// The pod as `profile` admits it; `capacity` is its Fargate size (see
/// [`size_for`](super::sizing::size_for)), or `None` when the profile does not size pods.
///
/// - label `fargo.dev/profile: <profile>`, which the profile's NetworkPolicy selects by;
/// - the profile's `runtimeClassName`, replacing the pod's (the sandbox is the point);
/// - the profile's nodeSelector merged over the pod's, and its tolerations added;
/// - hardening: `seccompProfile: RuntimeDefault` unless the pod chose a pod-level profile,
///   `allowPrivilegeEscalation: false` in every container, and no service-account token unless
///   the pod sets `automountServiceAccountToken` itself; with a `Restricted` profile also
///   `capabilities.drop: [ALL]` in every container (an added NET_BIND_SERVICE still applies);
/// - with a capacity: pod-level requests = limits = the capacity (Guaranteed QoS), and the
///   `fargo.dev/capacity-provisioned` annotation. Container resources are left as they are; the
///   capacity already covers their requests and limits, as the API server requires.
///
/// Call it only for pods without [`violations`]: e.g. `allowPrivilegeEscalation: false` is
/// invalid next to `privileged: true`, and every one of these fields is invalid in a Windows pod.
pub fn fargate_pod(profile: &FargateProfile, pod: &Pod, capacity: Option<Capacity>) -> Pod {
    let mut pod = pod.clone();
    pod.labels_mut()
        .insert(PROFILE_LABEL.to_string(), profile.name_any());
    // The annotation is what metering bills: only fargo writes it. A pod the profile does not
    // size has none (and is not metered), whatever its creator wrote.
    match capacity {
        Some(capacity) => {
            pod.annotations_mut()
                .insert(CAPACITY_ANNOTATION.to_string(), capacity.annotation());
        }
        None => {
            if let Some(annotations) = pod.metadata.annotations.as_mut() {
                annotations.remove(CAPACITY_ANNOTATION);
            }
        }
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
    let drop_all = profile.spec.pod_security == PodSecurityLevel::Restricted;
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
        let security = security.get_or_insert_with(SecurityContext::default);
        security.allow_privilege_escalation = Some(false);
        if drop_all {
            let dropped = security
                .capabilities
                .get_or_insert_with(Capabilities::default)
                .drop
                .get_or_insert_with(Vec::new);
            if !dropped.iter().any(|c| c == "ALL") {
                dropped.push("ALL".into());
            }
        }
    }
    if spec.automount_service_account_token.is_none() {
        spec.automount_service_account_token = Some(false);
        remove_service_account_token(spec);
    }

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

/// Removes the API token volume the API server's ServiceAccount admission mounted before fargo
/// saw the pod (`kube-api-access-<suffix>`, a projected volume with a service-account token), and
/// its mounts: `automountServiceAccountToken: false` set this late would otherwise leave the
/// token in every container.
fn remove_service_account_token(spec: &mut PodSpec) {
    let is_token_volume = |volume: &Volume| {
        volume.name.starts_with("kube-api-access-")
            && volume.projected.as_ref().is_some_and(|projected| {
                projected
                    .sources
                    .iter()
                    .flatten()
                    .any(|source| source.service_account_token.is_some())
            })
    };
    let token_volumes: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|volume| is_token_volume(volume))
        .map(|volume| volume.name.clone())
        .collect();
    if token_volumes.is_empty() {
        return;
    }
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|volume| !token_volumes.contains(&volume.name));
    }
    let mounts = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
        .map(|c| &mut c.volume_mounts)
        .chain(
            spec.ephemeral_containers
                .iter_mut()
                .flatten()
                .map(|c| &mut c.volume_mounts),
        );
    for mounts in mounts.flatten() {
        mounts.retain(|mount| !token_volumes.contains(&mount.name));
    }
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

    fn payments() -> FargateProfile {
        profile(PAYMENTS)
    }

    fn restricted() -> FargateProfile {
        let mut profile = payments();
        profile.spec.pod_security = PodSecurityLevel::Restricted;
        profile
    }

    /// Each violation's field and container.
    fn places(found: &[Violation]) -> Vec<(&str, Option<&str>)> {
        found
            .iter()
            .map(|v| (v.field.as_str(), v.container.as_deref()))
            .collect()
    }

    fn messages(pod: &Pod) -> Vec<String> {
        violations(&payments(), pod)
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
        assert_eq!(violations(&payments(), &pod), vec![]);
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
        let found = violations(&payments(), &pod);
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
        let baseline = PodSecurityLevel::Baseline;
        let found = new_ephemeral_container_violations("payments", baseline, Some(&old), &gained);
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
            new_ephemeral_container_violations("payments", baseline, None, &gained)
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
        assert_eq!(violations(&payments(), &pod), vec![]);
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
        let found = violations(&payments(), &pod);
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
        let found = violations(&payments(), &pod);
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
        let message = rejection_message(&violations(&payments(), &pod));
        assert_eq!(
            message,
            "profile \"payments\" forbids spec.hostNetwork: Fargate pods cannot use the node's \
             network namespace; profile \"payments\" forbids \
             spec.containers[0].securityContext.privileged (container \"app\"): Fargate pods \
             cannot be privileged"
        );
    }

    #[test]
    fn a_pod_within_the_baseline_has_no_violations() {
        let pod = pod(r#"
metadata:
  annotations:
    container.apparmor.security.beta.kubernetes.io/app: runtime/default
    container.apparmor.security.beta.kubernetes.io/setup: localhost/setup-profile
spec:
  os: {name: linux}
  securityContext:
    seccompProfile: {type: RuntimeDefault}
    appArmorProfile: {type: RuntimeDefault}
    seLinuxOptions: {type: container_t, level: "s0:c123,c456"}
    sysctls:
      - {name: net.ipv4.ip_unprivileged_port_start, value: "0"}
      - {name: net.ipv4.tcp_keepalive_time, value: "600"}
    windowsOptions: {hostProcess: false}
  initContainers:
    - name: setup
      securityContext:
        procMount: Default
        seccompProfile: {type: Localhost, localhostProfile: setup.json}
        appArmorProfile: {type: Localhost, localhostProfile: setup}
        seLinuxOptions: {type: container_init_t}
  containers:
    - name: app
      livenessProbe: {httpGet: {port: 8080, host: ""}}
      readinessProbe: {tcpSocket: {port: 8080}}
      lifecycle:
        preStop: {httpGet: {port: 8080, path: /drain}}
  volumes:
    - {name: config, configMap: {name: app}}
    - {name: data, persistentVolumeClaim: {claimName: data}}
    - {name: efs, csi: {driver: efs.csi.aws.com}}
"#);
        assert_eq!(violations(&payments(), &pod), vec![]);
    }

    #[test]
    fn refuses_a_windows_pod() {
        let pod = pod("spec: {os: {name: windows}, containers: [{name: app}]}");
        assert_eq!(
            messages(&pod),
            vec![
                "profile \"payments\" forbids spec.os.name: Fargate pods run on Linux only; \
                 remove spec.os or set its name to linux"
            ]
        );
    }

    #[test]
    fn refuses_host_process_in_the_pod() {
        let pod = pod(r#"
spec:
  securityContext: {windowsOptions: {hostProcess: true}}
  containers: [{name: app}]
"#);
        assert_eq!(
            messages(&pod),
            vec![
                "profile \"payments\" forbids spec.securityContext.windowsOptions.hostProcess: \
                 Fargate pods cannot be Windows HostProcess containers, which run on the node \
                 itself; remove windowsOptions.hostProcess"
            ]
        );
    }

    #[test]
    fn refuses_host_process_on_a_container() {
        let pod = pod(r#"
spec:
  containers:
    - {name: app, securityContext: {windowsOptions: {hostProcess: true}}}
"#);
        let found = violations(&payments(), &pod);
        assert_eq!(
            places(&found),
            vec![(
                "spec.containers[0].securityContext.windowsOptions.hostProcess",
                Some("app")
            )]
        );
        assert_eq!(found[0].forbidden, Forbidden::HostProcess);
    }

    #[test]
    fn refuses_apparmor_unconfined_in_the_pod_or_a_container() {
        let pod = pod(r#"
spec:
  securityContext: {appArmorProfile: {type: Unconfined}}
  containers:
    - {name: app, securityContext: {appArmorProfile: {type: Unconfined}}}
"#);
        let found = violations(&payments(), &pod);
        assert_eq!(
            places(&found),
            vec![
                ("spec.securityContext.appArmorProfile.type", None),
                (
                    "spec.containers[0].securityContext.appArmorProfile.type",
                    Some("app")
                ),
            ]
        );
        assert_eq!(
            found[1].to_string(),
            "profile \"payments\" forbids spec.containers[0].securityContext.appArmorProfile.type \
             (container \"app\"): Fargate pods must stay confined by AppArmor, not run \
             \"Unconfined\"; remove the setting (the runtime's default profile applies) or name a \
             localhost profile"
        );
    }

    #[test]
    fn refuses_apparmor_unconfined_in_the_legacy_annotation() {
        let pod = pod(r#"
metadata:
  annotations:
    container.apparmor.security.beta.kubernetes.io/app: unconfined
    container.apparmor.security.beta.kubernetes.io/sidecar: runtime/default
spec:
  containers: [{name: app}, {name: sidecar}]
"#);
        assert_eq!(
            messages(&pod),
            vec![
                "profile \"payments\" forbids \
                 metadata.annotations[container.apparmor.security.beta.kubernetes.io/app] \
                 (container \"app\"): Fargate pods must stay confined by AppArmor, not run \
                 \"unconfined\"; remove the setting (the runtime's default profile applies) or \
                 name a localhost profile"
            ]
        );
    }

    #[test]
    fn refuses_selinux_types_other_than_the_container_ones() {
        let pod = pod(r#"
spec:
  securityContext: {seLinuxOptions: {type: spc_t}}
  containers:
    - {name: app, securityContext: {seLinuxOptions: {type: container_engine_t}}}
    - {name: debug, securityContext: {seLinuxOptions: {type: unconfined_t}}}
"#);
        let found = violations(&payments(), &pod);
        assert_eq!(
            places(&found),
            vec![
                ("spec.securityContext.seLinuxOptions.type", None),
                (
                    "spec.containers[1].securityContext.seLinuxOptions.type",
                    Some("debug")
                ),
            ]
        );
        assert_eq!(
            found[0].to_string(),
            "profile \"payments\" forbids spec.securityContext.seLinuxOptions.type: Fargate pods \
             may use only the container SELinux types (container_t, container_init_t, \
             container_kvm_t, container_engine_t), not \"spc_t\"; remove seLinuxOptions.type or \
             use one of those"
        );
    }

    #[test]
    fn refuses_a_custom_selinux_user_or_role() {
        let pod = pod(r#"
spec:
  securityContext: {seLinuxOptions: {user: system_u}}
  containers:
    - {name: app, securityContext: {seLinuxOptions: {role: system_r, user: ""}}}
"#);
        let found = violations(&payments(), &pod);
        assert_eq!(
            places(&found),
            vec![
                ("spec.securityContext.seLinuxOptions.user", None),
                (
                    "spec.containers[0].securityContext.seLinuxOptions.role",
                    Some("app")
                ),
            ]
        );
        assert_eq!(
            found.iter().map(|v| &v.forbidden).collect::<Vec<_>>(),
            vec![&Forbidden::SeLinuxUser, &Forbidden::SeLinuxRole]
        );
    }

    #[test]
    fn refuses_an_unmasked_proc_mount_even_in_a_user_namespace() {
        let pod = pod(r#"
spec:
  hostUsers: false
  containers:
    - {name: app, securityContext: {procMount: Unmasked}}
"#);
        assert_eq!(
            messages(&pod),
            vec![
                "profile \"payments\" forbids spec.containers[0].securityContext.procMount \
                 (container \"app\"): Fargate pods see the node's /proc masked, not \"Unmasked\"; \
                 remove procMount or set it to Default"
            ]
        );
    }

    #[test]
    fn refuses_seccomp_unconfined_in_the_pod() {
        let pod = pod(r#"
spec:
  securityContext: {seccompProfile: {type: Unconfined}}
  containers: [{name: app}]
"#);
        assert_eq!(
            messages(&pod),
            vec![
                "profile \"payments\" forbids spec.securityContext.seccompProfile.type: Fargate \
                 pods must be confined by seccomp, not \"Unconfined\"; remove seccompProfile \
                 (fargo sets RuntimeDefault) or use RuntimeDefault or Localhost"
            ]
        );
    }

    #[test]
    fn refuses_seccomp_unconfined_on_a_container() {
        let pod = pod(r#"
spec:
  securityContext: {seccompProfile: {type: RuntimeDefault}}
  initContainers:
    - {name: setup, securityContext: {seccompProfile: {type: Unconfined}}}
  containers:
    - {name: app, securityContext: {seccompProfile: {type: Unconfined}}}
  ephemeralContainers:
    - {name: debug, securityContext: {seccompProfile: {type: Unconfined}}}
"#);
        let found = violations(&payments(), &pod);
        assert_eq!(
            places(&found),
            vec![
                (
                    "spec.initContainers[0].securityContext.seccompProfile.type",
                    Some("setup")
                ),
                (
                    "spec.containers[0].securityContext.seccompProfile.type",
                    Some("app")
                ),
                (
                    "spec.ephemeralContainers[0].securityContext.seccompProfile.type",
                    Some("debug")
                ),
            ]
        );
    }

    #[test]
    fn refuses_sysctls_outside_the_safe_set() {
        let pod = pod(r#"
spec:
  securityContext:
    sysctls:
      - {name: net.ipv4.ip_local_port_range, value: "1024 65000"}
      - {name: kernel.msgmax, value: "65536"}
      - {name: net.core.somaxconn, value: "1024"}
  containers: [{name: app}]
"#);
        let found = violations(&payments(), &pod);
        assert_eq!(
            places(&found),
            vec![
                ("spec.securityContext.sysctls[1].name", None),
                ("spec.securityContext.sysctls[2].name", None),
            ]
        );
        assert_eq!(
            found[0].to_string(),
            "profile \"payments\" forbids spec.securityContext.sysctls[1].name: Fargate pods may \
             set only the sysctls that affect the pod alone (kernel.shm_rmid_forced, \
             net.ipv4.ip_local_port_range, net.ipv4.ip_local_reserved_ports, \
             net.ipv4.ip_unprivileged_port_start, net.ipv4.ping_group_range, \
             net.ipv4.tcp_fin_timeout, net.ipv4.tcp_keepalive_intvl, \
             net.ipv4.tcp_keepalive_probes, net.ipv4.tcp_keepalive_time, net.ipv4.tcp_rmem, \
             net.ipv4.tcp_syncookies, net.ipv4.tcp_wmem), not \"kernel.msgmax\"; remove it"
        );
    }

    #[test]
    fn refuses_probes_and_lifecycle_hooks_aimed_at_another_host() {
        let pod = pod(r#"
spec:
  initContainers:
    - name: setup
      startupProbe: {tcpSocket: {port: 22, host: 169.254.169.254}}
  containers:
    - name: app
      livenessProbe: {httpGet: {port: 10250, host: 10.0.0.1}}
      readinessProbe: {tcpSocket: {port: 8080, host: ""}}
      lifecycle:
        postStart: {tcpSocket: {port: 2379, host: etcd.kube-system}}
        preStop: {httpGet: {port: 80, host: metadata.internal}}
"#);
        let found = violations(&payments(), &pod);
        assert_eq!(
            places(&found),
            vec![
                (
                    "spec.initContainers[0].startupProbe.tcpSocket.host",
                    Some("setup")
                ),
                ("spec.containers[0].livenessProbe.httpGet.host", Some("app")),
                (
                    "spec.containers[0].lifecycle.postStart.tcpSocket.host",
                    Some("app")
                ),
                (
                    "spec.containers[0].lifecycle.preStop.httpGet.host",
                    Some("app")
                ),
            ]
        );
        assert_eq!(
            found[1].to_string(),
            "profile \"payments\" forbids spec.containers[0].livenessProbe.httpGet.host \
             (container \"app\"): probes and lifecycle hooks of Fargate pods may reach only the \
             pod itself, not host \"10.0.0.1\"; remove host (the pod's IP is the default)"
        );
    }

    #[test]
    fn refuses_every_volume_type_fargate_does_not_offer() {
        type Source = fn(&mut Volume);
        let sources: [(&str, Source); 20] = [
            ("awsElasticBlockStore", |v| {
                v.aws_elastic_block_store = Some(Default::default())
            }),
            ("azureDisk", |v| v.azure_disk = Some(Default::default())),
            ("azureFile", |v| v.azure_file = Some(Default::default())),
            ("cephfs", |v| v.cephfs = Some(Default::default())),
            ("cinder", |v| v.cinder = Some(Default::default())),
            ("fc", |v| v.fc = Some(Default::default())),
            ("flexVolume", |v| v.flex_volume = Some(Default::default())),
            ("flocker", |v| v.flocker = Some(Default::default())),
            ("gcePersistentDisk", |v| {
                v.gce_persistent_disk = Some(Default::default())
            }),
            ("gitRepo", |v| v.git_repo = Some(Default::default())),
            ("glusterfs", |v| v.glusterfs = Some(Default::default())),
            ("iscsi", |v| v.iscsi = Some(Default::default())),
            ("nfs", |v| v.nfs = Some(Default::default())),
            ("photonPersistentDisk", |v| {
                v.photon_persistent_disk = Some(Default::default())
            }),
            ("portworxVolume", |v| {
                v.portworx_volume = Some(Default::default())
            }),
            ("quobyte", |v| v.quobyte = Some(Default::default())),
            ("rbd", |v| v.rbd = Some(Default::default())),
            ("scaleIO", |v| v.scale_io = Some(Default::default())),
            ("storageos", |v| v.storageos = Some(Default::default())),
            ("vsphereVolume", |v| {
                v.vsphere_volume = Some(Default::default())
            }),
        ];
        let volumes = sources.iter().map(|(kind, set)| {
            let mut volume = Volume {
                name: kind.to_ascii_lowercase(),
                ..Default::default()
            };
            set(&mut volume);
            volume
        });
        let mut pod = pod("spec: {containers: [{name: app}]}");
        pod.spec.as_mut().unwrap().volumes = Some(volumes.collect());
        let found = violations(&payments(), &pod);
        let kinds: Vec<_> = found
            .iter()
            .map(|v| match &v.forbidden {
                Forbidden::VolumeType { kind, .. } => *kind,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, sources.map(|(kind, _)| kind));
        assert_eq!(
            found[12].to_string(),
            "profile \"payments\" forbids spec.volumes[12].nfs (volume \"nfs\"): Fargate offers \
             no nfs volumes; use a PersistentVolumeClaim, CSI, ephemeral, emptyDir, ConfigMap, \
             Secret, projected, downwardAPI or image volume instead"
        );
    }

    #[test]
    fn allows_every_volume_type_fargate_offers() {
        let pod = pod(r#"
spec:
  containers: [{name: app}]
  volumes:
    - {name: a, configMap: {name: app}}
    - {name: b, csi: {driver: efs.csi.aws.com}}
    - {name: c, downwardAPI: {}}
    - {name: d, emptyDir: {}}
    - {name: e, ephemeral: {volumeClaimTemplate: {spec: {}}}}
    - {name: f, image: {reference: "models:1"}}
    - {name: g, persistentVolumeClaim: {claimName: data}}
    - {name: h, projected: {sources: []}}
    - {name: i, secret: {secretName: app}}
"#);
        assert_eq!(violations(&payments(), &pod), vec![]);
    }

    #[test]
    fn refuses_a_volume_of_a_type_fargo_does_not_know() {
        // What a volume type newer than fargo's API types looks like once deserialized.
        let pod = pod(r#"
spec:
  containers: [{name: app}]
  volumes: [{name: future, someNewVolumeType: {size: 1Gi}}]
"#);
        assert_eq!(
            messages(&pod),
            vec![
                "profile \"payments\" forbids spec.volumes[0] (volume \"future\"): fargo does not \
                 know this volume's type, so it cannot tell whether Fargate offers it; use a \
                 PersistentVolumeClaim, CSI, ephemeral, emptyDir, ConfigMap, Secret, projected, \
                 downwardAPI or image volume instead"
            ]
        );
    }

    #[test]
    fn baseline_leaves_running_as_root_to_the_pod() {
        let pod = pod(r#"
spec:
  securityContext: {runAsUser: 0, runAsNonRoot: false}
  containers: [{name: app}]
"#);
        assert_eq!(violations(&payments(), &pod), vec![]);
        assert_eq!(missing_hardening(&payments(), &pod), vec![]);
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

    /// A pod as the API server's ServiceAccount admission leaves it, before the webhooks.
    const WITH_TOKEN_VOLUME: &str = r#"
spec:
  volumes:
    - name: kube-api-access-x7k2p
      projected:
        sources:
          - serviceAccountToken: {path: token, expirationSeconds: 3607}
          - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
    - name: data
      emptyDir: {}
  initContainers:
    - name: setup
      volumeMounts:
        - {name: kube-api-access-x7k2p, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
  containers:
    - name: app
      volumeMounts:
        - {name: data, mountPath: /data}
        - {name: kube-api-access-x7k2p, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
"#;

    #[test]
    fn fargate_pod_removes_the_api_token_the_api_server_mounted_unless_the_pod_asked_for_it() {
        let admitted = fargate_pod(&payments(), &pod(WITH_TOKEN_VOLUME), None);
        let spec = serde_json::to_value(admitted.spec.unwrap()).unwrap();
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["volumes"], json!([{"name": "data", "emptyDir": {}}]));
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([]));
        assert_eq!(
            spec["containers"][0]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/data"}])
        );

        let asked =
            WITH_TOKEN_VOLUME.replace("spec:\n", "spec:\n  automountServiceAccountToken: true\n");
        let admitted = fargate_pod(&payments(), &pod(&asked), None);
        let spec = admitted.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(true));
        assert_eq!(
            spec.volumes.map(|v| v.len()),
            Some(2),
            "the token the pod asked for stays"
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

        // A size its creator wrote is not the profile's: metering would bill it.
        let claimed = pod(r#"
metadata:
  annotations: {fargo.dev/capacity-provisioned: "0.25vCPU 0.5GB", team: a}
spec:
  containers: [{name: app, resources: {requests: {cpu: "4"}}}]
"#);
        let not_sized = fargate_pod(&profile(PAYMENTS), &claimed, None);
        assert!(!not_sized.annotations().contains_key(CAPACITY_ANNOTATION));
        assert_eq!(not_sized.annotations()["team"], "a");
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

    #[test]
    fn restricted_refuses_a_pod_that_says_nothing_about_root_once() {
        let pod = pod("spec: {containers: [{name: app}, {name: sidecar}]}");
        assert_eq!(
            violations(&restricted(), &pod)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec![
                "profile \"payments\" requires spec.securityContext.runAsNonRoot: pods of a \
                 Restricted profile must not run as root; set securityContext.runAsNonRoot: true \
                 in the pod or in every container"
            ]
        );
    }

    #[test]
    fn restricted_names_each_container_left_without_run_as_non_root() {
        let pod = pod(r#"
spec:
  initContainers:
    - {name: setup}
  containers:
    - {name: app, securityContext: {runAsNonRoot: true}}
    - {name: sidecar}
"#);
        let found = violations(&restricted(), &pod);
        assert_eq!(
            places(&found),
            vec![
                (
                    "spec.initContainers[0].securityContext.runAsNonRoot",
                    Some("setup")
                ),
                (
                    "spec.containers[1].securityContext.runAsNonRoot",
                    Some("sidecar")
                ),
            ]
        );
        assert!(
            found
                .iter()
                .all(|v| v.forbidden == Forbidden::RunAsNonRootUnset)
        );
    }

    #[test]
    fn restricted_refuses_run_as_non_root_false_in_the_pod_or_a_container() {
        let pod = pod(r#"
spec:
  securityContext: {runAsNonRoot: false}
  containers:
    - {name: app, securityContext: {runAsNonRoot: true}}
    - {name: sidecar, securityContext: {runAsNonRoot: false}}
"#);
        let found = violations(&restricted(), &pod);
        assert_eq!(
            places(&found),
            vec![
                ("spec.securityContext.runAsNonRoot", None),
                (
                    "spec.containers[1].securityContext.runAsNonRoot",
                    Some("sidecar")
                ),
            ]
        );
        assert_eq!(
            found[1].to_string(),
            "profile \"payments\" forbids spec.containers[1].securityContext.runAsNonRoot \
             (container \"sidecar\"): pods of a Restricted profile must not run as root; set \
             securityContext.runAsNonRoot: true"
        );
    }

    #[test]
    fn restricted_refuses_run_as_user_zero() {
        let pod = pod(r#"
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 0}
  containers:
    - {name: app, securityContext: {runAsUser: 0}}
    - {name: sidecar, securityContext: {runAsUser: 1000}}
"#);
        let found = violations(&restricted(), &pod);
        assert_eq!(
            places(&found),
            vec![
                ("spec.securityContext.runAsUser", None),
                ("spec.containers[0].securityContext.runAsUser", Some("app")),
            ]
        );
        assert_eq!(
            found[1].to_string(),
            "profile \"payments\" forbids spec.containers[0].securityContext.runAsUser (container \
             \"app\"): pods of a Restricted profile must not run as root (UID 0); set runAsUser \
             to another UID, or remove it and set securityContext.runAsNonRoot: true"
        );
    }

    #[test]
    fn restricted_lets_pods_in_a_user_namespace_run_as_root() {
        let pod = pod(r#"
spec:
  hostUsers: false
  securityContext: {runAsUser: 0}
  containers: [{name: app}]
"#);
        assert_eq!(violations(&restricted(), &pod), vec![]);
    }

    #[test]
    fn restricted_keeps_every_baseline_refusal() {
        let pod = pod(r#"
spec:
  securityContext: {runAsNonRoot: true}
  containers:
    - {name: app, securityContext: {privileged: true, capabilities: {add: [NET_ADMIN]}}}
"#);
        assert_eq!(
            violations(&restricted(), &pod)
                .iter()
                .map(|v| &v.forbidden)
                .collect::<Vec<_>>(),
            vec![
                &Forbidden::Privileged,
                &Forbidden::Capability {
                    capability: "NET_ADMIN".into()
                }
            ]
        );
    }

    #[test]
    fn restricted_fargate_pod_drops_every_capability_but_keeps_net_bind_service() {
        let original = pod(r#"
spec:
  securityContext: {runAsNonRoot: true}
  initContainers:
    - {name: setup}
  containers:
    - name: app
      securityContext: {capabilities: {add: [NET_BIND_SERVICE], drop: [NET_RAW]}}
    - name: sidecar
      securityContext: {capabilities: {drop: [ALL]}}
"#);
        let admitted = fargate_pod(&restricted(), &original, None);
        let capabilities: Vec<_> = containers(admitted.spec.as_ref().unwrap())
            .map(|c| {
                let capabilities = c.security_context.unwrap().capabilities.clone().unwrap();
                (c.name.to_string(), capabilities.add, capabilities.drop)
            })
            .collect();
        let names = |list: &[&str]| Some(list.iter().map(|c| c.to_string()).collect::<Vec<_>>());
        assert_eq!(
            capabilities,
            vec![
                ("setup".into(), None, names(&["ALL"])),
                (
                    "app".into(),
                    names(&["NET_BIND_SERVICE"]),
                    names(&["NET_RAW", "ALL"])
                ),
                ("sidecar".into(), None, names(&["ALL"])),
            ]
        );
    }

    #[test]
    fn baseline_fargate_pod_leaves_capabilities_to_the_pod() {
        let original = pod("spec: {containers: [{name: app}]}");
        let admitted = fargate_pod(&payments(), &original, None);
        let security = admitted.spec.unwrap().containers[0]
            .security_context
            .clone()
            .unwrap();
        assert_eq!(security.capabilities, None);
    }

    #[test]
    fn restricted_fargate_pod_lacks_no_hardening() {
        let original = pod(r#"
spec:
  securityContext: {runAsNonRoot: true}
  initContainers: [{name: setup}]
  containers: [{name: app}, {name: sidecar, securityContext: {allowPrivilegeEscalation: false}}]
  ephemeralContainers: [{name: debug}]
"#);
        assert_eq!(missing_hardening(&restricted(), &original).len(), 11);
        let admitted = fargate_pod(&restricted(), &original, None);
        assert_eq!(violations(&restricted(), &admitted), vec![]);
        assert_eq!(missing_hardening(&restricted(), &admitted), vec![]);
    }

    #[test]
    fn missing_hardening_names_what_a_later_mutation_took_away() {
        let original = pod(r#"
spec:
  securityContext: {runAsNonRoot: true}
  containers: [{name: app}]
"#);
        let mut admitted = fargate_pod(&restricted(), &original, None);
        let spec = admitted.spec.as_mut().unwrap();
        spec.security_context.as_mut().unwrap().seccomp_profile = None;
        spec.containers
            .push(serde_yaml::from_str("{name: mesh-proxy}").unwrap());
        let found = missing_hardening(&restricted(), &admitted);
        assert_eq!(
            places(&found),
            vec![
                (
                    "spec.containers[0].securityContext.seccompProfile",
                    Some("app")
                ),
                (
                    "spec.containers[1].securityContext.capabilities.drop",
                    Some("mesh-proxy")
                ),
                (
                    "spec.containers[1].securityContext.allowPrivilegeEscalation",
                    Some("mesh-proxy")
                ),
                (
                    "spec.containers[1].securityContext.seccompProfile",
                    Some("mesh-proxy")
                ),
            ]
        );
        assert_eq!(
            found[1].to_string(),
            "profile \"payments\" requires spec.containers[1].securityContext.capabilities.drop \
             (container \"mesh-proxy\"): pods of a Restricted profile drop every capability; set \
             securityContext.capabilities.drop: [ALL] (NET_BIND_SERVICE may still be added)"
        );
    }
}
