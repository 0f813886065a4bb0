//! FargateProfile: the rules that turn a matched pod into a "Fargate pod", and the reconciler
//! that fences the namespaces a profile selects.
//!
//! The rules take objects and return objects — no client, no I/O — so the admission webhook and
//! the reconciler stay thin and the rules are tested on their own:
//! - [`matching`]: which profile (if any) takes a pod, and which namespaces a profile selects;
//! - [`sizing`]: the Fargate CPU/memory menu and the size a pod is rounded up to;
//! - [`pod_rules`]: what a profile refuses in a pod, and the pod it admits instead;
//! - [`network`]: the NetworkPolicy that fences a profile's pods in a namespace;
//! - [`status`]: the profile's status and Events from what a reconcile observed.
//!
//! [`reconciler`] is the I/O: it labels the selected namespaces, applies the NetworkPolicies,
//! writes the status and cleans up behind a finalizer.

pub mod matching;
pub mod network;
pub mod pod_rules;
pub mod reconciler;
pub mod sizing;
pub mod status;

pub use matching::{
    Match, MatchError, Relabelling, match_pod, namespace_is_selected, relabelling, wildcard_matches,
};
pub use network::{ClusterDns, Surroundings, network_policy};
pub use pod_rules::{
    Forbidden, Violation, fargate_pod, missing_hardening, new_ephemeral_container_violations,
    rejection_message, violations,
};
pub use sizing::{Capacity, Need, SizingError, fargate_capacity, fargate_menu, pod_need, size_for};
