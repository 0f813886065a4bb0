//! Metering: what functions and Fargate pods used, in the units AWS bills, kept in
//! `status.usage` ([`crate::api::usage`]) so that it outlives every process.
//!
//! - [`functions`]: the autoscaler's scrapes carry each activator's usage counters; every 30
//!   seconds the changed ones are folded into the functions' totals, each activator's count
//!   from the cursor the status keeps for it, so no count is taken twice.
//! - [`profiles`]: a watch of the pods admitted under a profile; every 30 seconds each pod's
//!   time since the last write is added, with Fargate's one-minute minimum.
//! - [`metrics`]: the totals as Prometheus counters, read from the status.
//! - [`report`]: `fargo usage`, with the rate card.

pub mod functions;
pub mod metrics;
pub mod profiles;
pub mod report;

use std::time::Duration;

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::USAGE_MANAGER;

/// Between two writes of one object's usage.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(30);

/// Applies `status.usage` of object `name` as the usage field manager, on condition that the
/// object is still at `resource_version` (the one whose usage `usage` was computed from): a
/// concurrent writer makes it fail with 409 instead of both adding the same counts.
pub async fn apply_usage<K>(
    api: &Api<K>,
    name: &str,
    resource_version: &str,
    usage: &impl Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name, "resourceVersion": resource_version},
        "status": {"usage": usage},
    });
    api.patch_status(
        name,
        &PatchParams::apply(USAGE_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
}
