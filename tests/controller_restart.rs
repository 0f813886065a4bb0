//! The controller killed mid-reconcile converges when it comes back: no namespace left
//! unlabelled, no policy missing, and a deletion interrupted half-way still completes.

mod common;

use common::{ControllerProcess, client, eventually, install_crds, unique_name};
use fargo::api::profile::FargateProfile;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

async fn converged(
    client: &Client,
    namespaces: &[String],
    policy: &str,
    present: bool,
) -> Option<()> {
    for namespace in namespaces {
        let ns = Api::<Namespace>::all(client.clone())
            .get(namespace)
            .await
            .ok()?;
        let labelled = ns
            .labels()
            .get("fargo.dev/profiled")
            .is_some_and(|v| v == "true");
        let has_policy = Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
            .get_opt(policy)
            .await
            .ok()?
            .is_some();
        if labelled != present || has_policy != present {
            return None;
        }
    }
    Some(())
}

#[tokio::test]
async fn controller_killed_mid_reconcile_converges_after_restart() {
    let client = client().await;
    install_crds(&client).await;
    let mut controller = ControllerProcess::start(&client, 18444, 19091).await;

    let name = unique_name("restart");
    let namespaces: Vec<String> = (0..4).map(|i| format!("{name}-{i}")).collect();
    for namespace in &namespaces {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(namespace.clone());
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
    }
    let profiles: Api<FargateProfile> = Api::all(client.clone());
    let profile = json!({
        "apiVersion": "fargo.dev/v1alpha1", "kind": "FargateProfile",
        "metadata": {"name": name},
        "spec": {"selectors": [{"namespace": format!("{name}-*")}]},
    });
    profiles
        .patch(
            &name,
            &PatchParams::apply("fargo-test"),
            &Patch::Apply(&profile),
        )
        .await
        .expect("profile applied");
    // Kill it while it works through the namespaces.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    controller.kill();
    controller.restart(&client).await;
    let policy = format!("fargo-{name}");
    eventually(60, "every namespace labelled with its policy", || {
        converged(&client, &namespaces, &policy, true)
    })
    .await;

    // Delete, and kill it again while the finalizer runs.
    profiles
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete accepted");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    controller.kill();
    controller.restart(&client).await;
    eventually(60, "the profile gone", || {
        let profiles = profiles.clone();
        let name = name.clone();
        async move { profiles.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    eventually(60, "labels and policies removed", || {
        converged(&client, &namespaces, &policy, false)
    })
    .await;

    for namespace in &namespaces {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(namespace, &DeleteParams::background())
            .await;
    }
}
