//! Admission does not wait for anything fargo writes after the fact: the webhooks see the
//! namespaces a profile names from the moment the profile is known, by the name the API server
//! gives each namespace. A pod created in a new namespace before fargo labels it, in a namespace
//! whose label someone removed, or while the controller is down, is judged — or refused — like
//! any other, and namespaces no profile names never depend on fargo.
//!
//! Its own test binary: the controller is killed here, which would break other tests' webhooks.

mod common;

use common::admission::webhooks_see;
use common::controller::ControllerProcess;
use common::namespaces::{unique_name, with_temp_namespaces};
use common::wait::eventually;
use common::{client, install_crds};
use fargo::api::profile::FargateProfile;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

fn pod(name: &str, privileged: bool) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "app",
            "image": "fargo.dev/echo:dev",
            "securityContext": {"privileged": privileged},
        }]},
    }))
    .expect("a valid pod")
}

async fn create_pod(client: &Client, namespace: &str, pod: &Pod) -> Result<Pod, String> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), pod)
        .await
        .map_err(|error| match error {
            kube::Error::Api(status) => status.message,
            other => other.to_string(),
        })
}

fn is_profiled_label_set(namespace: &Namespace) -> bool {
    namespace.labels().contains_key("fargo.dev/profiled")
}

#[tokio::test]
async fn pods_are_judged_without_waiting_for_fargo_to_label_their_namespace() {
    let client = client().await;
    install_crds(&client).await;
    let mut controller = ControllerProcess::start(&client, 18447, 19094).await;

    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        let name = unique_name("scope");
        let (early, late, wild, elsewhere) = (
            format!("{name}-early"),
            format!("{name}-late"),
            format!("{name}-w-late"),
            format!("{name}-elsewhere"),
        );
        // The profile names two namespaces that do not exist yet, and a pattern.
        let profiles: Api<FargateProfile> = Api::all(client.clone());
        let profile = json!({
            "apiVersion": "fargo.dev/v1alpha1", "kind": "FargateProfile",
            "metadata": {"name": name},
            "spec": {"selectors": [
                {"namespace": early},
                {"namespace": late},
                {"namespace": format!("{name}-w-*")},
            ]},
        });
        profiles
            .patch(
                &name,
                &PatchParams::apply("fargo-test").force(),
                &Patch::Apply(&profile),
            )
            .await
            .expect("profile applied");
        eventually(30, "the webhooks to see the profile's namespaces", || {
            let client = client.clone();
            let (early, late) = (early.clone(), late.clone());
            async move {
                webhooks_see(&client, &early).await.ok()?;
                webhooks_see(&client, &late).await.ok()
            }
        })
        .await;

        // A namespace and a pod in it at once: the pod is judged whether or not the controller
        // has labelled the namespace yet.
        temp_namespaces.create(&early).await;
        let refused = create_pod(&client, &early, &pod("at-once", true))
            .await
            .expect_err("a privileged pod in a new profiled namespace is refused");
        assert!(refused.contains("privileged"), "{refused}");

        // Someone removes fargo's label from the namespace: pods are still judged.
        let namespaces: Api<Namespace> = Api::all(client.clone());
        eventually(30, &format!("{early} labelled profiled"), || {
            let namespaces = namespaces.clone();
            let early = early.clone();
            async move { is_profiled_label_set(&namespaces.get(&early).await.ok()?).then_some(()) }
        })
        .await;
        let unlabel = json!({"metadata": {"labels": {"fargo.dev/profiled": null}}});
        namespaces
            .patch(&early, &PatchParams::default(), &Patch::Merge(&unlabel))
            .await
            .expect("label removed");
        let refused = create_pod(&client, &early, &pod("unlabelled", true))
            .await
            .expect_err("a privileged pod is refused after the namespace lost its label");
        assert!(refused.contains("privileged"), "{refused}");

        // The controller is down, and a namespace the profile names is created meanwhile: no
        // one labels it, yet its pods are not admitted unfenced — the API server cannot reach
        // the webhook and fails closed. A namespace no profile names does not depend on fargo.
        controller.kill();
        temp_namespaces.create(&late).await;
        temp_namespaces.create(&wild).await;
        temp_namespaces.create(&elsewhere).await;
        for namespace in [&late, &wild] {
            let refused = create_pod(&client, namespace, &pod("while-down", false))
                .await
                .expect_err("no pod is admitted in a profiled namespace while fargo is down");
            assert!(refused.contains("fargo.dev"), "{namespace}: {refused}");
        }
        let late_namespace = namespaces.get(&late).await.expect("reading the namespace");
        assert!(
            !is_profiled_label_set(&late_namespace),
            "nobody labelled {late} meanwhile"
        );
        create_pod(&client, &elsewhere, &pod("elsewhere", true))
            .await
            .expect("a namespace no profile names never waits on fargo");

        // Back up: the same pod is admitted, as a Fargate pod of the profile.
        controller.restart(&client).await;
        let admitted = eventually(30, "the pod admitted once the controller is back", || {
            let client = client.clone();
            let late = late.clone();
            async move { create_pod(&client, &late, &pod("after", false)).await.ok() }
        })
        .await;
        assert_eq!(admitted.labels().get("fargo.dev/profile"), Some(&name));

        profiles
            .delete(&name, &DeleteParams::default())
            .await
            .expect("profile deleted");
        eventually(30, "the profile to be gone", || {
            let profiles = profiles.clone();
            let name = name.clone();
            async move { profiles.get_opt(&name).await.ok()?.is_none().then_some(()) }
        })
        .await;
    })
    .await;
}
