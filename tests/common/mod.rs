//! Shared by the integration tests, and by the benchmarks through `#[path]`: a client for the
//! local cluster (`KUBECONFIG`), the CRDs and kubectl here; the rest in the submodules.
//!
//! Each test crate compiles all of it and uses a part, so what one crate leaves unused is dead
//! code there: hence the `dead_code` allowances on the submodules, and on the items here that not
//! every crate uses.

#[allow(dead_code)]
pub mod activator;
#[allow(dead_code)]
pub mod admission;
#[allow(dead_code)]
pub mod aws;
#[allow(dead_code)]
pub mod controller;
#[allow(dead_code)]
pub mod exchange;
#[allow(dead_code)]
pub mod functions;
#[allow(dead_code)]
pub mod http;
#[allow(dead_code)]
pub mod namespaces;
#[allow(dead_code)]
pub mod nats;
#[allow(dead_code)]
pub mod photos;
#[allow(dead_code)]
pub mod processes;
#[allow(dead_code)]
pub mod profiles;
#[allow(dead_code)]
pub mod records;
#[allow(dead_code)]
pub mod report;
#[allow(dead_code)]
pub mod s3;
#[allow(dead_code)]
pub mod scenarios;
#[allow(dead_code)]
pub mod tenant;
#[allow(dead_code)]
pub mod wait;
#[allow(dead_code)]
pub mod yaml;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};

pub const TEST_MANAGER: &str = "fargo-test";

/// A client for the cluster in `KUBECONFIG` (`make test` points it at `.cluster/kubeconfig`).
#[allow(dead_code)]
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run the integration tests through `make test` or `make integration`, which start the local cluster"
    );
    Client::try_default()
        .await
        .expect("a client for the cluster in KUBECONFIG")
}

/// Installs (server-side apply) both CRDs and waits until the API server serves them.
#[allow(dead_code)]
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in fargo::api::crds() {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
        .expect("watching the CRD");
    }
}

/// The kubectl of the local cluster: `KUBECTL` (as `make` sets it), else the one
/// `tests/cluster/` cached for the pinned version, else `kubectl` on PATH.
#[allow(dead_code)]
pub fn kubectl() -> std::process::Command {
    if let Some(kubectl) = std::env::var_os("KUBECTL") {
        return std::process::Command::new(kubectl);
    }
    let version = include_str!("../cluster/versions.env")
        .lines()
        .find_map(|line| line.strip_prefix("KUBERNETES_VERSION="));
    let cache = std::env::var_os("FARGO_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cache/fargo"))
        });
    if let (Some(version), Some(cache)) = (version, cache) {
        let cached = cache.join(format!("bin/kubernetes-{}/kubectl", version.trim()));
        if cached.exists() {
            return std::process::Command::new(cached);
        }
    }
    std::process::Command::new("kubectl")
}

#[allow(dead_code)]
/// Applies Secret `fargo-system/name` with `entries` as its string data (each key an entry's
/// name, its value the entry's JSON), as the activator's keys and tokens Secrets are written.
pub async fn apply_fargo_secret(
    client: &Client,
    name: &str,
    entries: &[(String, serde_json::Value)],
) {
    namespaces::ensure_namespace(client, "fargo-system").await;
    let data: std::collections::BTreeMap<&str, String> = entries
        .iter()
        .map(|(key, value)| (key.as_str(), value.to_string()))
        .collect();
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "fargo-system"},
        "stringData": data,
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "fargo-system")
        .patch(
            name,
            &kube::api::PatchParams::apply("fargo-test").force(),
            &kube::api::Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|e| panic!("writing Secret fargo-system/{name}: {e}"));
}

#[allow(dead_code)]
/// The real node's InternalIP: pods reach this machine there.
pub async fn node_address(client: &Client) -> std::net::IpAddr {
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .get("fargo-node")
        .await
        .expect("the local cluster's real node, fargo-node");
    let address = node
        .status
        .and_then(|status| status.addresses)
        .unwrap_or_default()
        .into_iter()
        .find(|address| address.type_ == "InternalIP")
        .expect("fargo-node has an InternalIP");
    address.address.parse().expect("an IP address")
}
