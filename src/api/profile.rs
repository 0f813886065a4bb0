//! FargateProfile: which pods become "Fargate pods", and what that makes of them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A FargateProfile selects pods by namespace and labels and turns them into isolated,
/// right-sized, network-fenced "Fargate pods": they get a sandboxing RuntimeClass, a size from the
/// Fargate CPU/memory menu, hardened security settings, and a NetworkPolicy that stands in for a
/// VPC. Privileged or host-level pods that match are refused with a reason.
// Printer columns repeat `type_`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fargo.dev",
    version = "v1alpha1",
    kind = "FargateProfile",
    shortname = "fp",
    category = "fargo",
    status = "FargateProfileStatus",
    derive = "PartialEq",
    doc = "A FargateProfile selects pods by namespace and labels and makes them Fargate pods: sandboxed, sized from the Fargate menu, hardened and fenced by NetworkPolicy.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Creating, Active, Deleting or Failed"
    ),
    printcolumn(
        name = "Runtime Class",
        type_ = "string",
        json_path = ".spec.runtimeClassName",
        description = "RuntimeClass given to matched pods"
    ),
    printcolumn(
        name = "Pods",
        type_ = "integer",
        json_path = ".status.usage.pods",
        description = "Pods metered since metering began"
    ),
    printcolumn(
        name = "vCPU-s",
        type_ = "number",
        json_path = ".status.usage.vcpuSeconds",
        description = "vCPU-seconds metered since metering began"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FargateProfileSpec {
    /// Which pods the profile takes: a pod matches when its namespace and labels match any one
    /// selector. Between 1 and 5 selectors, as in EKS.
    #[schemars(length(min = 1, max = 5))]
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 5").message("a profile needs between 1 and 5 selectors"))]
    pub selectors: Vec<ProfileSelector>,

    /// RuntimeClass (gVisor, Kata, crun, ...) that matched pods run under. The API server refuses
    /// a pod whose RuntimeClass does not exist; the profile's RuntimeClassFound condition says
    /// whether it does. Unset: the node's default runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$') && size(self) <= 253").message("runtimeClassName must be a DNS subdomain name such as 'gvisor'"))]
    pub runtime_class_name: Option<String>,

    /// How matched pods are sized.
    #[serde(default)]
    pub sizing: Sizing,

    /// The VPC stand-in: a NetworkPolicy in every matched namespace that denies all traffic to and
    /// from the profile's pods except what is listed here.
    #[serde(default)]
    pub network: Network,

    /// Where matched pods may run: node selector and tolerations for dedicated capacity.
    #[serde(default)]
    pub scheduling: Scheduling,

    /// The Kubernetes Pod Security Standard matched pods must meet. `Baseline` (the default)
    /// refuses host-level access: privileged mode, host namespaces, host paths and ports, Windows
    /// HostProcess, unconfined seccomp or AppArmor, custom SELinux types, unmasked /proc, unsafe
    /// sysctls, probes aimed at other hosts, volume types Fargate does not offer, and capabilities
    /// beyond NET_BIND_SERVICE. `Restricted` also drops every capability, and refuses pods that
    /// may run as root (set securityContext.runAsNonRoot: true).
    #[serde(default)]
    pub pod_security: PodSecurityLevel,

    /// What happens to running pods when the profile is deleted: `Orphan` leaves them as they
    /// are, `DeletePods` deletes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// One selector: a namespace pattern and labels that a pod must all carry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSelector {
    /// Namespace of the pods, as a pattern: `*` matches any run of characters and `?` exactly one
    /// (`payments-*`).
    #[x_kube(validation = Rule::new("size(self) > 0").message("selector namespace must not be empty; use '*' for every namespace"))]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9*?]([-a-z0-9*?]*[a-z0-9*?])?$')").message("selector namespace must be a namespace name of at most 63 characters (lower-case letters, digits, '-') where '*' and '?' are wildcards"))]
    pub namespace: String,

    /// Labels the pod must carry, all of them. Values may use the `*` and `?` wildcards.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "label_map_schema")]
    #[x_kube(validation = Rule::new(r"self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$') && size(k) <= 317)").message("selector label keys must be valid label keys: an optional DNS-subdomain prefix and '/', then up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    #[x_kube(validation = Rule::new(r"self.all(k, self[k].matches('^([A-Za-z0-9*?]([-A-Za-z0-9_.*?]*[A-Za-z0-9*?])?)?$'))").message("selector label values must be label values (up to 63 letters, digits, '-', '_', '.') where '*' and '?' are wildcards"))]
    pub labels: BTreeMap<String, String>,
}

/// How a matched pod's resources are set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sizing {
    /// `Fargate` rounds the pod up to the smallest fitting entry of the Fargate CPU/memory menu and
    /// makes it Guaranteed (requests = limits); `None` leaves the pod's resources alone.
    #[serde(default)]
    pub policy: SizingPolicy,

    /// Memory added to the pod's need before rounding, for the pod's own agents (EKS adds 256Mi).
    #[serde(default = "default_overhead")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('0')) >= 0").message("sizing.overhead must be a non-negative quantity such as 256Mi"))]
    pub overhead: Quantity,
}

impl Default for Sizing {
    fn default() -> Self {
        Self {
            policy: SizingPolicy::default(),
            overhead: default_overhead(),
        }
    }
}

/// Labels with bounded sizes, so the API server can budget the CEL rules that check them.
fn label_map_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": {"type": "string", "maxLength": 63},
    })
}

fn default_overhead() -> Quantity {
    Quantity("256Mi".into())
}

/// Whether fargo sizes matched pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SizingPolicy {
    /// Round up to the Fargate menu and make the pod Guaranteed.
    #[default]
    Fargate,
    /// Leave resources as the pod asks.
    None,
}

/// The VPC stand-in for a profile's pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Allow DNS (UDP and TCP port 53) to the cluster's DNS servers only: the cluster DNS pods
    /// and, when the controller is told of one, a node-local DNS cache.
    #[serde(default = "yes", rename = "allowDNS")]
    pub allow_dns: bool,

    /// Allow traffic both ways between pods of this profile (the "security group").
    #[serde(default = "yes")]
    pub allow_same_profile: bool,

    /// Where the profile's pods may connect to (the "subnets"), beyond DNS and the profile itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub egress: Vec<EgressRule>,

    /// Who may connect to the profile's pods, beyond the profile itself and the fargo activator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ingress: Vec<IngressRule>,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            allow_dns: true,
            allow_same_profile: true,
            egress: vec![],
            ingress: vec![],
        }
    }
}

fn yes() -> bool {
    true
}

/// One allowed destination: either a CIDR block (with exceptions) or pods chosen by namespace
/// and/or pod labels; optionally limited to some ports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cidr) != (has(self.namespaceSelector) || has(self.podSelector))").message("an egress rule needs either cidr or namespaceSelector/podSelector, not both"))]
#[x_kube(validation = Rule::new("!has(self.except) || size(self.except) == 0 || has(self.cidr)").message("egress except needs a cidr to carve the exceptions from"))]
#[x_kube(validation = Rule::new("!has(self.cidr) || !has(self.except) || !isCIDR(self.cidr) || self.except.all(e, !isCIDR(e) || cidr(self.cidr).containsCIDR(e))").message("every except entry must lie inside the rule's cidr"))]
pub struct EgressRule {
    /// Destination address block, such as `10.20.0.0/16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 43))]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("cidr must be a CIDR block such as 10.20.0.0/16"))]
    pub cidr: Option<String>,

    /// Blocks inside `cidr` that stay denied, such as `10.20.99.0/24`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 43)))]
    #[x_kube(validation = Rule::new("self.all(e, isCIDR(e))").message("every except entry must be a CIDR block such as 10.20.99.0/24"))]
    pub except: Vec<String>,

    /// Destination namespaces, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Destination pods, by label (in the rule's namespaces, or the pod's own namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,

    /// Destination ports; empty means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ports: Vec<PortRule>,
}

/// One allowed source: pods chosen by namespace and/or pod labels; optionally limited to some
/// ports of the profile's pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.namespaceSelector) || has(self.podSelector)").message("an ingress rule needs a namespaceSelector, a podSelector, or both"))]
pub struct IngressRule {
    /// Source namespaces, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Source pods, by label (in the rule's namespaces, or the profile pod's own namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,

    /// Ports of the profile's pods that the sources may reach; empty means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ports: Vec<PortRule>,
}

/// A port and protocol.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    /// Port number, 1–65535.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"))]
    pub port: i32,

    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A transport protocol.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// Where matched pods may be scheduled.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// Node labels a matched pod's node must have; merged into the pod's own nodeSelector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations added to matched pods, for tainted dedicated nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// A level of the Kubernetes Pod Security Standards.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PodSecurityLevel {
    /// No host-level access; everything else as the pod asks.
    #[default]
    Baseline,
    /// Baseline, and hardened: non-root, no capabilities but NET_BIND_SERVICE, seccomp.
    Restricted,
}

/// What deleting a profile does to its running pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Leave the pods running (their NetworkPolicy goes with the profile).
    #[default]
    Orphan,
    /// Delete the profile's pods.
    DeletePods,
}

/// What the controller observed of a profile.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FargateProfileStatus {
    /// `Creating`, `Active`, `Deleting` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ProfilePhase>,

    /// Ready and RuntimeClassFound, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Namespaces the profile selects now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched_namespaces: Vec<String>,

    /// Metered use of the profile's pods: pods, vCPU-seconds and GB-seconds of their
    /// provisioned size, from each pod's start to its end with Fargate's one-minute minimum, by
    /// namespace; brought up to date at most every 30 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<super::usage::ProfileUsage>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Lifecycle phase of a profile, as EKS reports it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfilePhase {
    Creating,
    Active,
    Deleting,
    Failed,
}

impl ProfilePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfilePhase::Creating => "Creating",
            ProfilePhase::Active => "Active",
            ProfilePhase::Deleting => "Deleting",
            ProfilePhase::Failed => "Failed",
        }
    }
}

impl FargateProfile {
    /// The NetworkPolicy this profile keeps in each matched namespace.
    pub fn network_policy_name(&self) -> String {
        format!("fargo-{}", kube::ResourceExt::name_any(self))
    }
}
