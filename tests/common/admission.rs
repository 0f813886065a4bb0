//! What the API server sends to fargo's webhooks, read from the webhook configurations.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Client;
use kube::api::Api;

/// Whether `selector` selects an object with `labels`, as the API server and NetworkPolicy
/// enforcers read it.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let by_expressions = selector.match_expressions.iter().flatten().all(|r| {
        let values = r.values.as_deref().unwrap_or_default();
        let value = labels.get(&r.key);
        match r.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("unknown label selector operator {other}"),
        }
    });
    by_labels && by_expressions
}

/// `Ok` once every fargo webhook sees `namespace`, else which does not: its namespace selector
/// selects the namespace by the name label the API server gives it, and the patterns of the
/// profiles the configurations were last applied for (their annotation, written with the match
/// condition the API server evaluates) match its name.
pub async fn webhooks_see(client: &Client, namespace: &str) -> Result<(), String> {
    let labels = BTreeMap::from([(
        "kubernetes.io/metadata.name".to_string(),
        namespace.to_string(),
    )]);
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get("fargo")
        .await
        .map_err(|e| e.to_string())?;
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get("fargo")
        .await
        .map_err(|e| e.to_string())?;
    for metadata in [&mutating.metadata, &validating.metadata] {
        let patterns = metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(fargo::webhook::PATTERNS_ANNOTATION))
            .cloned()
            .unwrap_or_default();
        if !patterns
            .split(',')
            .any(|pattern| fargo::profile::wildcard_matches(pattern, namespace))
        {
            return Err(format!(
                "the webhooks see namespaces {patterns:?}, not {namespace} yet"
            ));
        }
    }
    let webhooks = mutating
        .webhooks
        .into_iter()
        .flatten()
        .map(|w| (w.name, w.namespace_selector, w.match_conditions))
        .chain(
            validating
                .webhooks
                .into_iter()
                .flatten()
                .map(|w| (w.name, w.namespace_selector, w.match_conditions)),
        );
    for (name, selector, conditions) in webhooks {
        if !selects(&selector.unwrap_or_default(), &labels) {
            return Err(format!(
                "webhook {name} does not select namespace {namespace}"
            ));
        }
        if !conditions
            .iter()
            .flatten()
            .any(|c| c.name == "profiled-namespace" && c.expression != "false")
        {
            return Err(format!(
                "webhook {name} has no profiled-namespace condition yet"
            ));
        }
    }
    Ok(())
}
