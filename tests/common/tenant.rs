//! A tenant: a user with the `edit` role in its namespaces, as a cluster operator grants it, and
//! a client that acts as that user (impersonated by the test's own admin credentials).

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use serde_json::json;

use super::wait::eventually;

/// A client acting as `user`, an authenticated user with no other group.
pub async fn tenant_client(user: &str) -> Client {
    let mut config = Config::infer().await.expect("a kubeconfig");
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(vec!["system:authenticated".to_string()]);
    Client::try_from(config).expect("a client acting as the tenant")
}

/// Grants `user` the built-in `edit` ClusterRole in `namespace`: it may create and change pods,
/// workloads and NetworkPolicies there, but not RBAC or the namespace itself.
pub async fn grant_edit(client: &Client, namespace: &str, user: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": format!("edit-{user}"), "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("a RoleBinding");
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("granting {user} edit in {namespace}: {e}"));
    // The API server's authorizer learns the binding from its own cache, a moment later: ask
    // it until it says yes, so the tenant's first request is not refused by RBAC.
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:authenticated"],
            "resourceAttributes": {
                "namespace": namespace, "verb": "create",
                "group": "networking.k8s.io", "resource": "networkpolicies",
            },
        },
    }))
    .expect("a SubjectAccessReview");
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    eventually(
        30,
        &format!("{user}'s edit role in {namespace} to take effect"),
        || {
            let (reviews, review) = (reviews.clone(), review.clone());
            async move {
                let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
                answer.status?.allowed.then_some(())
            }
        },
    )
    .await;
}
