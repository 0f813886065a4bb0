//! FargateProfile: the pure rules that turn a matched pod into a "Fargate pod".
//!
//! Everything here takes objects and returns objects — no client, no I/O — so the admission
//! webhook and the profile reconciler stay thin and these rules are tested on their own:
//! - [`matching`]: which profile (if any) takes a pod, and which namespaces a profile selects;
//! - [`sizing`]: the Fargate CPU/memory menu and the size a pod is rounded up to;
//! - [`pod_rules`]: what a profile refuses in a pod, and the pod it admits instead;
//! - [`network`]: the NetworkPolicy that fences a profile's pods in a namespace.

pub mod matching;
pub mod network;
pub mod pod_rules;
pub mod reconciler;
pub mod sizing;

pub use matching::{Match, MatchError, match_pod, namespace_is_selected, wildcard_matches};
pub use network::network_policy;
pub use pod_rules::{Forbidden, Violation, fargate_pod, rejection_message, violations};
pub use sizing::{
    Capacity, Need, QuantityError, SizingError, fargate_capacity, fargate_menu, parse_bytes,
    parse_millicpu, pod_need, size_for,
};
