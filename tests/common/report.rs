//! What a test's namespaces hold, printed when it fails or a wait times out: a failure on the
//! cluster is understood from the state it left far more than from the assertion that tripped.

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt};

/// Each of `namespaces` (its phase and labels, pods, events, ServerlessFunctions and fargo's
/// NetworkPolicies), then every FargateProfile. Whatever cannot be read is left out.
pub async fn namespace_report(client: &Client, namespaces: &[String]) -> String {
    let mut report = String::new();
    for namespace in namespaces {
        report.push_str(&namespace_line(client, namespace).await);
        report.push_str(&pods(client, namespace).await);
        report.push_str(&events(client, namespace).await);
        report.push_str(&functions(client, namespace).await);
        report.push_str(&network_policies(client, namespace).await);
    }
    report.push_str(&profiles(client).await);
    report
}

async fn namespace_line(client: &Client, namespace: &str) -> String {
    match Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await
    {
        Ok(Some(ns)) => format!(
            "namespace {namespace}: phase {:?}, labels {:?}\n",
            ns.status.and_then(|s| s.phase),
            ns.metadata.labels.unwrap_or_default(),
        ),
        Ok(None) => format!("namespace {namespace}: not found\n"),
        Err(error) => format!("namespace {namespace}: {error}\n"),
    }
}

async fn pods(client: &Client, namespace: &str) -> String {
    let mut report = String::new();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .unwrap_or_default();
    for pod in pods {
        let status = pod.status.clone().unwrap_or_default();
        report.push_str(&format!(
            "pod {namespace}/{}: phase {:?}, node {:?}, IP {:?}\n",
            pod.name_any(),
            status.phase,
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            status.pod_ip,
        ));
        for condition in status.conditions.unwrap_or_default() {
            report.push_str(&format!(
                "  condition {}={} {}\n",
                condition.type_,
                condition.status,
                condition.message.unwrap_or_default()
            ));
        }
        for container in status.container_statuses.unwrap_or_default() {
            report.push_str(&format!(
                "  container {}: ready {}, restarts {}, state {}\n",
                container.name,
                container.ready,
                container.restart_count,
                serde_json::to_string(&container.state).unwrap_or_default()
            ));
        }
    }
    report
}

async fn events(client: &Client, namespace: &str) -> String {
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .unwrap_or_default();
    events
        .into_iter()
        .map(|event| {
            format!(
                "event {namespace} {}/{}: {} {}\n",
                event.involved_object.kind.unwrap_or_default(),
                event.involved_object.name.unwrap_or_default(),
                event.reason.unwrap_or_default(),
                event.message.unwrap_or_default()
            )
        })
        .collect()
}

/// The fargo.dev/v1alpha1 API of `kind`, read as plain objects: the report shows whatever the
/// API server holds, even what the library's types would not parse.
fn fargo_api(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("fargo.dev", "v1alpha1", kind))
}

async fn functions(client: &Client, namespace: &str) -> String {
    let functions = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        namespace,
        &fargo_api("ServerlessFunction"),
    )
    .list(&ListParams::default())
    .await
    .map(|list| list.items)
    .unwrap_or_default();
    functions
        .into_iter()
        .map(|function| {
            format!(
                "function {namespace}/{}: status {}\n",
                function.name_any(),
                function
                    .data
                    .get("status")
                    .unwrap_or(&serde_json::Value::Null)
            )
        })
        .collect()
}

async fn network_policies(client: &Client, namespace: &str) -> String {
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels("fargo.dev/profile"))
        .await
        .map(|list| list.items)
        .unwrap_or_default();
    policies
        .into_iter()
        .map(|policy| {
            format!(
                "networkpolicy {namespace}/{}: spec {}\n",
                policy.name_any(),
                serde_json::to_string(&policy.spec).unwrap_or_default()
            )
        })
        .collect()
}

/// All of them: when a namespace was not selected, which profile should have is the question.
async fn profiles(client: &Client) -> String {
    let profiles = Api::<DynamicObject>::all_with(client.clone(), &fargo_api("FargateProfile"))
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .unwrap_or_default();
    profiles
        .into_iter()
        .map(|profile| {
            let null = serde_json::Value::Null;
            format!(
                "profile {}: spec {}, status {}\n",
                profile.name_any(),
                profile.data.get("spec").unwrap_or(&null),
                profile.data.get("status").unwrap_or(&null)
            )
        })
        .collect()
}
