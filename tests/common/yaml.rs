//! Objects given as YAML streams, applied or created through discovery.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use super::TEST_MANAGER;

/// Server-side applies every document of a YAML stream, resolving each kind through discovery.
/// With `dry_run`, the API server validates and defaults without storing anything.
pub async fn apply_yaml(client: &Client, yaml: &str, dry_run: bool) -> Result<(), kube::Error> {
    for object in parse_objects(yaml) {
        apply_object(client, &object, dry_run).await?;
    }
    Ok(())
}

/// Deletes every document of a YAML stream, last first; one already gone is no error.
pub async fn delete_yaml(client: &Client, yaml: &str) -> Result<(), kube::Error> {
    for object in parse_objects(yaml).iter().rev() {
        let api = dynamic_api(client, object).await?;
        match api
            .delete(&object.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The API of `object`'s kind (and namespace), found through discovery.
async fn dynamic_api(
    client: &Client,
    object: &DynamicObject,
) -> Result<Api<DynamicObject>, kube::Error> {
    let types = object.types.as_ref().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(types).expect("a valid apiVersion");
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk).await?;
    Ok(match capabilities.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            object.namespace().as_deref().unwrap_or("default"),
            &resource,
        ),
    })
}

/// Creates (POST, dry run) every document of a YAML stream.
pub async fn create_yaml_dry_run(client: &Client, yaml: &str) -> Result<(), kube::Error> {
    for object in parse_objects(yaml) {
        let api = dynamic_api(client, &object).await?;
        api.create(
            &PostParams {
                dry_run: true,
                field_manager: None,
            },
            &object,
        )
        .await?;
    }
    Ok(())
}

/// The objects of a multi-document YAML stream.
pub fn parse_objects(yaml: &str) -> Vec<DynamicObject> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| serde_yaml::Value::deserialize(document).expect("valid YAML"))
        .filter(|value| !value.is_null())
        .map(|value| serde_yaml::from_value(value).expect("a Kubernetes object"))
        .collect()
}

pub async fn apply_object(
    client: &Client,
    object: &DynamicObject,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let api = dynamic_api(client, object).await?;
    let mut params = PatchParams::apply(TEST_MANAGER).force();
    params.dry_run = dry_run;
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
}
