//! Who may write the NetworkPolicies of a profiled namespace.
//!
//! NetworkPolicies add up: a pod selected by several policies may send and receive whatever any
//! of them allows. fargo's `fargo-<profile>` policy already isolates a profile's pods both ways,
//! so any other policy that selects them can only widen the fence — an allow-all policy cancels
//! it. In a namespace a profile selects, therefore, only fargo writes policies that may select
//! the profile's pods. Every other policy must leave them out, which a selector says by requiring
//! that the `fargo.dev/profile` label does not exist (the webhooks keep that label on every pod
//! admitted under a profile, and on no other). fargo's own policies are fargo's alone to change or
//! delete; Kubernetes' own controllers may still delete them when their namespace or profile goes.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use crate::api::profile::FargateProfile;
use crate::api::{APP_NAME, MANAGED_BY_LABEL, PROFILE_LABEL};
use crate::profile::namespace_is_selected;

/// Users who may delete fargo's policies besides fargo: the namespace and garbage-collector
/// controllers of kube-controller-manager, which delete them with their namespace or profile.
fn is_kubernetes_controller(username: &str) -> bool {
    username == "system:kube-controller-manager"
        || username.starts_with("system:serviceaccount:kube-system:")
}

/// Whether `selector` cannot select a pod that carries the profile label.
pub fn leaves_out_profiled_pods(selector: Option<&LabelSelector>) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    selector.match_expressions.iter().flatten().any(|e| {
        e.key == PROFILE_LABEL
            && e.operator == "DoesNotExist"
            && e.values.as_deref().unwrap_or_default().is_empty()
    })
}

fn pod_selector(policy: &NetworkPolicy) -> Option<&LabelSelector> {
    policy
        .spec
        .as_ref()
        .and_then(|spec| spec.pod_selector.as_ref())
}

/// Whether `policy` is one fargo keeps for a profile.
fn is_fargos(policy: &NetworkPolicy) -> bool {
    let labels = policy.metadata.labels.as_ref();
    labels
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(APP_NAME)
        && labels.is_some_and(|l| l.contains_key(PROFILE_LABEL))
}

/// The decision on a NetworkPolicy write by `request.user_info` in a namespace; `fargo` is the
/// user fargo's controller writes as.
pub fn judge(
    request: &AdmissionRequest<NetworkPolicy>,
    profiles: &[Arc<FargateProfile>],
    fargo: &str,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    match refusal(request, profiles, fargo) {
        Some(reason) => response.deny(reason),
        None => response,
    }
}

fn refusal(
    request: &AdmissionRequest<NetworkPolicy>,
    profiles: &[Arc<FargateProfile>],
    fargo: &str,
) -> Option<String> {
    let username = request.user_info.username.as_deref().unwrap_or_default();
    if username == fargo {
        return None;
    }
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let profile = profiles
        .iter()
        .filter(|p| namespace_is_selected(p, namespace))
        .map(|p| kube::ResourceExt::name_any(p.as_ref()))
        .min()?;
    let name = &request.name;
    let old_is_fargos = request.old_object.as_ref().is_some_and(is_fargos);
    match request.operation {
        Operation::Delete if old_is_fargos && !is_kubernetes_controller(username) => Some(format!(
            "NetworkPolicy {name:?} fences the pods of FargateProfile {profile:?} in namespace \
             {namespace:?}; only fargo deletes it (it goes with the profile, or when the profile \
             stops selecting the namespace)"
        )),
        Operation::Delete => None,
        _ if old_is_fargos => Some(format!(
            "NetworkPolicy {name:?} fences the pods of FargateProfile {profile:?} in namespace \
             {namespace:?}; only fargo changes it: change the profile's spec.network instead"
        )),
        _ => {
            let policy = request.object.as_ref()?;
            (!leaves_out_profiled_pods(pod_selector(policy))).then(|| {
                format!(
                    "NetworkPolicy {name:?} may select pods of FargateProfile {profile:?} in \
                     namespace {namespace:?}, and policies add up, so it would widen the \
                     profile's fence: to govern the namespace's other pods, add \
                     {{key: {PROFILE_LABEL}, operator: DoesNotExist}} to \
                     spec.podSelector.matchExpressions; to change what the profile's pods may \
                     reach, change the profile's spec.network"
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const FARGO: &str = "system:serviceaccount:fargo-system:fargo-controller";

    fn profiles() -> Vec<Arc<FargateProfile>> {
        let profile: FargateProfile = serde_json::from_value(json!({
            "apiVersion": "fargo.dev/v1alpha1",
            "kind": "FargateProfile",
            "metadata": {"name": "payments"},
            "spec": {"selectors": [{"namespace": "payments-*"}]},
        }))
        .expect("a profile");
        vec![Arc::new(profile)]
    }

    fn policy(selector: Value, labels: Value) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "payments-eu", "labels": labels},
            "spec": {"podSelector": selector, "policyTypes": ["Ingress", "Egress"]},
        })
    }

    fn review(
        operation: &str,
        namespace: &str,
        user: &str,
        object: Value,
        old: Value,
    ) -> AdmissionRequest<NetworkPolicy> {
        let review: kube::core::admission::AdmissionReview<NetworkPolicy> =
            serde_json::from_value(json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "1",
                    "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
                    "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
                    "name": "p",
                    "namespace": namespace,
                    "operation": operation,
                    "userInfo": {"username": user},
                    "object": object,
                    "oldObject": old,
                    "dryRun": false,
                },
            }))
            .expect("a review");
        review.try_into().expect("a request")
    }

    fn refused(request: &AdmissionRequest<NetworkPolicy>) -> Option<String> {
        let response = judge(request, &profiles(), FARGO);
        (!response.allowed).then_some(response.result.message)
    }

    fn fargos() -> Value {
        json!({"app.kubernetes.io/managed-by": "fargo", "fargo.dev/profile": "payments"})
    }

    fn leaving_out() -> Value {
        json!({"matchExpressions": [{"key": "fargo.dev/profile", "operator": "DoesNotExist"}]})
    }

    #[test]
    fn a_tenant_policy_that_may_select_profiled_pods_is_refused() {
        for selector in [
            json!({}),
            json!({"matchLabels": {"app": "web"}}),
            json!({"matchExpressions": [{"key": "fargo.dev/profile", "operator": "NotIn", "values": ["other"]}]}),
            json!({"matchExpressions": [{"key": "fargo.dev/profile", "operator": "Exists"}]}),
        ] {
            let request = review(
                "CREATE",
                "payments-eu",
                "alice",
                policy(selector.clone(), json!({})),
                Value::Null,
            );
            let reason = refused(&request).unwrap_or_else(|| panic!("{selector} admitted"));
            assert!(reason.contains("DoesNotExist"), "{reason}");
            assert!(reason.contains("\"payments\""), "{reason}");
        }
    }

    #[test]
    fn a_tenant_policy_that_leaves_profiled_pods_out_is_admitted() {
        let request = review(
            "CREATE",
            "payments-eu",
            "alice",
            policy(leaving_out(), json!({})),
            Value::Null,
        );
        assert_eq!(refused(&request), None);
        let update = review(
            "UPDATE",
            "payments-eu",
            "alice",
            policy(leaving_out(), json!({})),
            policy(json!({}), json!({})),
        );
        assert_eq!(
            refused(&update),
            None,
            "narrowing an older policy is allowed"
        );
    }

    #[test]
    fn unprofiled_namespaces_and_fargo_itself_are_not_judged() {
        let elsewhere = review(
            "CREATE",
            "shop",
            "alice",
            policy(json!({}), json!({})),
            Value::Null,
        );
        assert_eq!(refused(&elsewhere), None);
        for operation in ["CREATE", "UPDATE", "DELETE"] {
            let (object, old) = match operation {
                "CREATE" => (policy(json!({}), fargos()), Value::Null),
                "UPDATE" => (policy(json!({}), fargos()), policy(json!({}), fargos())),
                _ => (Value::Null, policy(json!({}), fargos())),
            };
            let request = review(operation, "payments-eu", FARGO, object, old);
            assert_eq!(refused(&request), None, "{operation} by fargo");
        }
    }

    #[test]
    fn fargos_policies_are_not_the_tenants_to_change_or_delete() {
        let relabelled = review(
            "UPDATE",
            "payments-eu",
            "alice",
            policy(json!({}), json!({})),
            policy(json!({}), fargos()),
        );
        assert!(refused(&relabelled).is_some_and(|r| r.contains("only fargo changes it")));
        let narrowed = review(
            "UPDATE",
            "payments-eu",
            "alice",
            policy(leaving_out(), fargos()),
            policy(json!({}), fargos()),
        );
        assert!(
            refused(&narrowed).is_some(),
            "taking fargo's policy off the profile's pods"
        );
        let deleted = review(
            "DELETE",
            "payments-eu",
            "alice",
            Value::Null,
            policy(json!({}), fargos()),
        );
        assert!(refused(&deleted).is_some_and(|r| r.contains("only fargo deletes it")));
        let own = review(
            "DELETE",
            "payments-eu",
            "alice",
            Value::Null,
            policy(json!({}), json!({})),
        );
        assert_eq!(
            refused(&own),
            None,
            "deleting a policy can only narrow what pods may reach"
        );
        for controller in [
            "system:serviceaccount:kube-system:namespace-controller",
            "system:serviceaccount:kube-system:generic-garbage-collector",
            "system:kube-controller-manager",
        ] {
            let request = review(
                "DELETE",
                "payments-eu",
                controller,
                Value::Null,
                policy(json!({}), fargos()),
            );
            assert_eq!(refused(&request), None, "{controller}");
        }
    }
}
