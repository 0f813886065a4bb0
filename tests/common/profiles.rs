//! FargateProfiles made by a test: applied, and deleted again whatever the test did.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use fargo::api::profile::FargateProfile;
use futures::FutureExt;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::wait::eventually;

/// Server-side applies FargateProfile `name` with `spec`.
pub async fn apply_profile(client: &Client, name: &str, spec: Value) {
    let object = json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "FargateProfile",
        "metadata": {"name": name},
        "spec": spec,
    });
    Api::<FargateProfile>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(super::TEST_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying profile {name}: {e}"));
}

/// Runs `test`, then deletes `profile` and waits until a controller has run its finalizer, also
/// when the test panics.
pub async fn deleting_profile_after<Fut>(client: &Client, profile: &str, test: Fut)
where
    Fut: Future<Output = ()>,
{
    let outcome = AssertUnwindSafe(test).catch_unwind().await;
    let profiles: Api<FargateProfile> = Api::all(client.clone());
    let _ = profiles.delete(profile, &DeleteParams::default()).await;
    eventually(
        60,
        &format!("profile {profile} to be gone (its finalizer run by the controller)"),
        || {
            let profiles = profiles.clone();
            async move { matches!(profiles.get_opt(profile).await, Ok(None)).then_some(()) }
        },
    )
    .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
