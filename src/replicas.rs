//! A function's replicas: how many its Deployment asks for and has, who owns that number, and
//! the one write the autoscaler sets it with. The function reconciler seeds the number with the
//! Deployment and keeps it in its applies until the autoscaler's first write, forced, takes the
//! field (the reconciler's applies carry the resourceVersion they read, so they cannot undo a
//! write they have not seen); from then on the autoscaler alone owns it.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::api::AUTOSCALER_MANAGER;
use crate::caches::CachedDeployment;

/// Replicas the Deployment asks for, and how many are there and ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Instances {
    pub desired: i32,
    pub existing: i32,
    pub ready: i32,
}

impl Instances {
    pub fn of(deployment: &Deployment) -> Self {
        let replicas = deployment.spec.as_ref().and_then(|s| s.replicas);
        Self::of_parts(replicas, deployment.status.as_ref())
    }

    /// [`Instances::of`] a Deployment as the caches keep it.
    pub fn of_cached(deployment: &CachedDeployment) -> Self {
        Self::of_parts(deployment.replicas, deployment.status.as_ref())
    }

    fn of_parts(replicas: Option<i32>, status: Option<&DeploymentStatus>) -> Self {
        Self {
            desired: replicas.unwrap_or(1),
            existing: status.and_then(|s| s.replicas).unwrap_or(0),
            ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
        }
    }

    /// Instances are wanted and none is ready: the pods deserve a look.
    pub fn none_ready(&self) -> bool {
        self.desired > 0 && self.ready == 0
    }
}

/// Whether the autoscaler's field manager has written this Deployment (its `replicas`).
pub fn autoscaler_owns_replicas(deployment: &impl kube::Resource) -> bool {
    deployment
        .managed_fields()
        .iter()
        .any(|entry| entry.manager.as_deref() == Some(AUTOSCALER_MANAGER))
}

/// Sets a function's replicas through the Deployment's `scale` subresource with server-side
/// apply, as the autoscaler's field manager.
pub async fn apply_replicas(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> Result<(), kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let scale = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
    });
    api.patch_scale(
        name,
        &PatchParams::apply(AUTOSCALER_MANAGER).force(),
        &Patch::Apply(&scale),
    )
    .await?;
    Ok(())
}
