//! The custom resources of `fargo.dev/v1alpha1` and the names every component shares.

pub mod conditions;
pub mod function;
pub mod lambda;
pub mod profile;
pub mod routes;
pub mod stats;
pub mod usage;

pub use function::{ServerlessFunction, ServerlessFunctionSpec, ServerlessFunctionStatus};
pub use profile::{FargateProfile, FargateProfileSpec, FargateProfileStatus};

use kube::CustomResourceExt;

/// API group of every fargo resource.
pub const GROUP: &str = "fargo.dev";

/// Field manager for everything the controller applies with server-side apply.
pub const CONTROLLER_MANAGER: &str = "fargo.dev/controller";
/// Field manager for the one field the autoscaler owns: a Deployment's `replicas`.
pub const AUTOSCALER_MANAGER: &str = "fargo.dev/autoscaler";
/// Field manager of `status.queuedEvents` and `status.oldestQueuedEvent` (written by the
/// autoscaler apart from `lastRequestTime`, which an apply of the other would remove).
pub const EVENTS_MANAGER: &str = "fargo.dev/events";
/// Field manager of `status.usage`, written by the meters (functions and profiles).
pub const USAGE_MANAGER: &str = "fargo.dev/usage";

/// Finalizer that lets the profile reconciler remove its NetworkPolicies and namespace labels.
pub const PROFILE_FINALIZER: &str = "fargo.dev/profile-cleanup";

/// Label on a pod naming the FargateProfile it runs under; set by the webhook, or by the user to
/// force a profile.
pub const PROFILE_LABEL: &str = "fargo.dev/profile";
/// Label on a namespace that at least one profile selects; the webhooks only see these.
pub const PROFILED_NAMESPACE_LABEL: &str = "fargo.dev/profiled";
/// Label on a function's Deployment, Service and pods.
pub const FUNCTION_LABEL: &str = "fargo.dev/function";
/// Label of a function's standby pod (`spec.scale.standby`) while it waits, naming the function.
pub const STANDBY_LABEL: &str = "fargo.dev/standby-of";
/// Annotation with the Fargate size a pod was given, in EKS's format (`"2vCPU 9GB"`).
pub const CAPACITY_ANNOTATION: &str = "fargo.dev/capacity-provisioned";

/// Standard label naming the application; fargo's own pods carry `app.kubernetes.io/name: fargo`.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// Standard label naming a component of the application (`activator`, `controller`).
pub const APP_COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Standard label naming the tool that manages an object; fargo's children say `fargo`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`APP_NAME_LABEL`] and [`MANAGED_BY_LABEL`] for fargo.
pub const APP_NAME: &str = "fargo";
/// The value of [`APP_COMPONENT_LABEL`] on activator pods.
pub const ACTIVATOR_COMPONENT: &str = "activator";
/// Labels every activator pod carries (the Helm chart sets the same): profile NetworkPolicies
/// admit traffic from pods with these labels in the activator's namespace.
pub const ACTIVATOR_POD_LABELS: [(&str, &str); 2] = [
    (APP_NAME_LABEL, APP_NAME),
    (APP_COMPONENT_LABEL, ACTIVATOR_COMPONENT),
];
/// Label the API server puts on every namespace, with the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Label the EndpointSlice controller puts on a Service's slices, with the Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Name of the Lease that elects the controller's leader, in the controller's namespace.
pub const LEASE_NAME: &str = "fargo-controller";

/// Annotation on a function with the last tick of each of its schedules, as JSON:
/// `{"nightly": {"lastTick": "2026-01-02T02:00:00Z", "cron": "0 3 * * *", "timeZone": "Europe/Paris"}}`.
pub const SCHEDULE_STATE_ANNOTATION: &str = "fargo.dev/schedule-state";
/// Header naming the schedule on each request it sends.
pub const SCHEDULE_HEADER: &str = "x-fargo-schedule";
/// Header of the activator's own probe of a starting pod (`x-fargo-probe: 1`): a pod serving
/// AWS's Runtime API answers it without invoking the function. The activator removes it from
/// every client request.
pub const PROBE_HEADER: &str = "x-fargo-probe";
/// Field manager of the schedule-state annotation.
pub const SCHEDULE_MANAGER: &str = "fargo.dev/schedule";

/// Where a function is reached through the activator: `{activator}/{namespace}/{name}/`.
pub fn function_url(activator_url: &str, namespace: &str, name: &str) -> String {
    format!(
        "{}/{namespace}/{name}/",
        activator_url.trim_end_matches('/')
    )
}

/// Both CustomResourceDefinitions, in the order `fargo crds` prints them.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![FargateProfile::crd(), ServerlessFunction::crd()]
        .into_iter()
        .map(with_kubernetes_formats)
        .collect()
}

/// The CRD with each `format: uint64` (schemars' for a `u64`) as `int64`, a format the API
/// server knows: it warns of an unknown one at every apply. The field keeps its `minimum: 0`.
fn with_kubernetes_formats(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if map.get("format").and_then(|f| f.as_str()) == Some("uint64") {
                    map.insert("format".into(), "int64".into());
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("a CRD with other formats deserializes")
}

/// The CRDs as one multi-document YAML stream: the content of `crds/`.
pub fn crds_yaml() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            Ok((format!("{name}.yaml"), serde_yaml::to_string(&crd)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_goes_through_the_activator() {
        assert_eq!(
            function_url(
                "http://fargo-activator.fargo-system.svc/",
                "media",
                "thumbnail"
            ),
            "http://fargo-activator.fargo-system.svc/media/thumbnail/"
        );
    }
    #[test]
    fn every_format_in_the_crds_is_one_the_api_server_knows() {
        fn formats(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(format) = map.get("format").and_then(|f| f.as_str()) {
                        out.push(format.to_string());
                    }
                    map.values().for_each(|v| formats(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| formats(v, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        for crd in crds() {
            formats(&serde_json::to_value(&crd).unwrap(), &mut found);
        }
        assert!(found.iter().any(|f| f == "int64"), "{found:?}");
        // Those of k8s.io/apiextensions-apiserver's validation that the CRDs use.
        let known = ["int32", "int64", "double", "float", "date-time", "byte"];
        let unknown: Vec<_> = found
            .iter()
            .filter(|f| !known.contains(&f.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "formats the API server warns of: {unknown:?}"
        );
    }

    #[test]
    fn checked_in_crds_match_the_rust_types() {
        for (name, generated) in super::crds_yaml().expect("CRDs render") {
            let path = format!("{}/crds/{name}", env!("CARGO_MANIFEST_DIR"));
            let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                checked_in == generated,
                "{path} is out of date with src/api/: run `make crds` and commit the result"
            );
        }
    }
}
