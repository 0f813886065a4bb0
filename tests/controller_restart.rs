//! The controller killed mid-reconcile, again and again, converges when it comes back: every
//! namespace labelled, every policy present and up to date, and a deletion interrupted half-way
//! still completes with nothing left behind.

mod common;

use std::time::Duration;

use common::controller::ControllerProcess;
use common::namespaces::{unique_name, with_temp_namespaces};
use common::wait::eventually;
use common::{client, install_crds};
use fargo::api::profile::FargateProfile;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// How many times the controller is killed while the profiles change.
const KILLS: u64 = 20;

/// Whether every namespace of `profile` carries the profiled label and its policy allows egress
/// to `cidr` (`None`: no label and no policy left).
async fn converged(
    client: &Client,
    namespaces: &[String],
    profile: &str,
    cidr: Option<&str>,
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
        let policy = Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
            .get_opt(&format!("fargo-{profile}"))
            .await
            .ok()?;
        let allowed_cidrs: Vec<String> = policy
            .iter()
            .filter_map(|p| p.spec.as_ref()?.egress.clone())
            .flatten()
            .flat_map(|rule| rule.to.unwrap_or_default())
            .filter_map(|peer| Some(peer.ip_block?.cidr))
            .collect();
        let as_expected = match cidr {
            Some(cidr) => labelled && allowed_cidrs.iter().any(|c| c == cidr),
            None => !labelled && policy.is_none(),
        };
        if !as_expected {
            return None;
        }
    }
    Some(())
}

/// Profile `name` selecting `{name}-*`, allowing egress to `cidr`.
fn profile(name: &str, cidr: &str) -> serde_json::Value {
    json!({
        "apiVersion": "fargo.dev/v1alpha1", "kind": "FargateProfile",
        "metadata": {"name": name},
        "spec": {
            "selectors": [{"namespace": format!("{name}-*")}],
            "network": {"egress": [{"cidr": cidr}]},
        },
    })
}

#[tokio::test]
async fn controller_killed_mid_reconcile_converges_after_restart() {
    let client = client().await;
    install_crds(&client).await;
    let mut controller = ControllerProcess::start(&client, 18444, 19091).await;

    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        // Two profiles: their reconciles run side by side when the controller comes back.
        let base = unique_name("restart");
        let names = [format!("{base}-a"), format!("{base}-b")];
        let namespaces_of =
            |profile: &str| -> Vec<String> { (0..3).map(|i| format!("{profile}-{i}")).collect() };
        for name in &names {
            for namespace in namespaces_of(name) {
                temp_namespaces.create(&namespace).await;
            }
        }
        let profiles: Api<FargateProfile> = Api::all(client.clone());
        let apply = |name: &str, cidr: &str| {
            let profiles = profiles.clone();
            let object = profile(name, cidr);
            let name = name.to_string();
            async move {
                profiles
                    .patch(
                        &name,
                        &PatchParams::apply("fargo-test").force(),
                        &Patch::Apply(&object),
                    )
                    .await
                    .expect("profile applied");
            }
        };

        // Each round changes both profiles, then kills the controller a little later each time,
        // so the kills land at different points of the reconciles (and of start-up).
        let mut cidr = String::new();
        for round in 0..KILLS {
            cidr = format!("10.{round}.0.0/16");
            for name in &names {
                apply(name, &cidr).await;
            }
            tokio::time::sleep(Duration::from_millis((round * 37) % 400)).await;
            controller.kill();
            controller.restart(&client).await;
        }
        for name in &names {
            let namespaces = namespaces_of(name);
            eventually(
                60,
                &format!("every namespace of {name} labelled, its policy allowing {cidr}"),
                || converged(&client, &namespaces, name, Some(&cidr)),
            )
            .await;
        }

        // Delete both, and kill it twice while the finalizers run.
        for name in &names {
            profiles
                .delete(name, &DeleteParams::default())
                .await
                .expect("delete accepted");
        }
        for delay in [20, 120] {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            controller.kill();
            controller.restart(&client).await;
        }
        for name in &names {
            let namespaces = namespaces_of(name);
            eventually(60, &format!("profile {name} gone"), || {
                let profiles = profiles.clone();
                let name = name.clone();
                async move { profiles.get_opt(&name).await.ok()?.is_none().then_some(()) }
            })
            .await;
            eventually(
                60,
                &format!("labels and policies of {name} removed"),
                || converged(&client, &namespaces, name, None),
            )
            .await;
            let orphans = Api::<NetworkPolicy>::all(client.clone())
                .list(&ListParams::default().labels(&format!("fargo.dev/profile={name}")))
                .await
                .expect("policies listed");
            assert!(
                orphans.items.is_empty(),
                "policies of {name} left behind: {:?}",
                orphans.iter().map(|p| p.namespace()).collect::<Vec<_>>()
            );
        }
    })
    .await;
}
