//! The status write of every reconciler and loop: server-side apply of `status` alone, as the
//! caller's field manager, with the API version and kind taken from the type.

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The apply patch that sets `status` of a `K`.
pub fn status_patch<K: Resource<DynamicType = ()>>(status: &impl Serialize) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })
}

/// Applies `status` to object `name` of `api` as `manager`, taking over any field it sets.
pub async fn patch_status<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    status: &impl Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(status_patch::<K>(status)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FargateProfile, ServerlessFunction};

    #[test]
    fn the_patch_names_the_type_it_was_made_for() {
        let patch = status_patch::<ServerlessFunction>(&serde_json::json!({"replicas": 1}));
        assert_eq!(
            patch,
            serde_json::json!({
                "apiVersion": "fargo.dev/v1alpha1",
                "kind": "ServerlessFunction",
                "status": {"replicas": 1},
            })
        );
        let patch = status_patch::<FargateProfile>(&serde_json::json!({}));
        assert_eq!(patch["kind"], "FargateProfile");
        assert_eq!(patch["apiVersion"], "fargo.dev/v1alpha1");
    }
}
