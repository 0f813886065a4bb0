//! Admission latency of the pod webhook: in process (the decision alone) and through the API
//! server of the local cluster under concurrent pod creation, against pods created the same way
//! in a namespace no profile selects (the baseline, measured side by side), in several runs
//! whose differences' median is the figure to quote.
//!
//! `make bench` runs it; the through-the-API-server half needs KUBECONFIG (it is skipped, saying
//! so, without one).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fargo::api::profile::FargateProfile;
use fargo::webhook::admission;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use serde_json::json;

/// The width labels are padded to, so that the numbers of the printed lines line up.
const LABEL_WIDTH: usize = 60;
/// Runs of 400 creations per path at each concurrency.
const RUNS: usize = 5;

fn profiles() -> Vec<Arc<FargateProfile>> {
    (0..10)
        .map(|i| {
            serde_json::from_value(json!({
                "apiVersion": "fargo.dev/v1alpha1", "kind": "FargateProfile",
                "metadata": {"name": format!("profile-{i}"), "uid": format!("uid-{i}")},
                "spec": {
                    "selectors": [{"namespace": format!("team-{i}-*"), "labels": {"tier": "backend"}}],
                    "runtimeClassName": "crun",
                    "network": {"egress": [{"cidr": "10.20.0.0/16"}]},
                },
            }))
            .map(Arc::new)
            .expect("a profile")
        })
        .collect()
}

fn review() -> AdmissionRequest<Pod> {
    let review: AdmissionReview<Pod> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web", "namespace": "team-7-payments", "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "team-7-payments", "labels": {"tier": "backend", "app": "web"}},
                "spec": {"containers": [
                    {"name": "app", "image": "fargo.dev/echo:dev", "resources": {"requests": {"cpu": "1", "memory": "8Gi"}}},
                    {"name": "sidecar", "image": "fargo.dev/echo:dev", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}
                ]},
            },
            "oldObject": null, "dryRun": false, "options": null,
        },
    }))
    .expect("an admission review");
    review.try_into().expect("a request")
}

fn in_process() {
    let profiles = profiles();
    let request = review();
    for _ in 0..1_000 {
        std::hint::black_box(admission::mutate(&request, &profiles));
    }
    for (what, decide) in [
        (
            "in process: mutate (10 profiles)",
            admission::mutate as fn(&_, &_) -> _,
        ),
        ("in process: validate (10 profiles)", admission::validate),
    ] {
        let samples = (0..20_000)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(decide(&request, &profiles));
                started.elapsed()
            })
            .collect();
        support::report(what, LABEL_WIDTH, samples);
    }
}

/// Creates `count` pods (server dry run) in `namespace`, `concurrency` at a time, and returns
/// each creation's latency.
async fn create_pods(
    client: &kube::Client,
    namespace: &str,
    count: usize,
    concurrency: usize,
) -> Vec<Duration> {
    use futures::StreamExt;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        dry_run: true,
        field_manager: None,
    };
    futures::stream::iter(0..count)
        .map(|i| {
            let pods = pods.clone();
            let params = params.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("bench-{i}"), "labels": {"tier": "backend"}},
                    "spec": {"containers": [{"name": "app", "image": "fargo.dev/echo:dev",
                        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]},
                }))
                .expect("a pod");
                let started = Instant::now();
                pods.create(&params, &pod).await.expect("pod admitted");
                started.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

async fn through_api_server() {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("through the API server: skipped (no KUBECONFIG; `make bench` starts a cluster)");
        return;
    }
    let client = common::client().await;
    common::install_crds(&client).await;
    common::controller::shared_controller(&client, 18445, 19092).await;
    let profiled = common::namespaces::unique_name("bench-profiled");
    let plain = common::namespaces::unique_name("bench-plain");
    common::namespaces::ensure_namespace(&client, &plain).await;
    common::namespaces::ensure_namespace(&client, &profiled).await;
    let profiles: Api<FargateProfile> = Api::all(client.clone());
    let name = profiled.clone();
    profiles
        .patch(
            &name,
            &PatchParams::apply("fargo-bench").force(),
            &Patch::Apply(json!({
                "apiVersion": "fargo.dev/v1alpha1", "kind": "FargateProfile",
                "metadata": {"name": name},
                "spec": {"selectors": [{"namespace": profiled, "labels": {"tier": "backend"}}]},
            })),
        )
        .await
        .expect("profile applied");
    common::wait::eventually(30, "the namespace to be profiled", || {
        let client = client.clone();
        let profiled = profiled.clone();
        async move {
            let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                .get(&profiled)
                .await
                .ok()?;
            let seen = common::admission::webhooks_see(&client, &profiled).await;
            (kube::ResourceExt::labels(&ns).contains_key("fargo.dev/profiled") && seen.is_ok())
                .then_some(())
        }
    })
    .await;
    // Warm both paths (connections, caches) before measuring.
    create_pods(&client, &plain, 50, 8).await;
    create_pods(&client, &profiled, 50, 8).await;
    for concurrency in [1, 16] {
        // A p99 of 400 samples moves with the machine's noise: the figure to quote is the
        // median of the runs' differences.
        let (mut p50s, mut p99s) = (vec![], vec![]);
        for run in 1..=RUNS {
            // Interleaved rounds so both see the same machine noise.
            let (mut base, mut hooked) = (vec![], vec![]);
            for _ in 0..4 {
                base.extend(create_pods(&client, &plain, 100, concurrency).await);
                hooked.extend(create_pods(&client, &profiled, 100, concurrency).await);
            }
            let (b50, b99) = support::report(
                &format!("run {run}: API server, no webhook, concurrency {concurrency}"),
                LABEL_WIDTH,
                base,
            );
            let (h50, h99) = support::report(
                &format!("run {run}: API server, fargo webhooks, concurrency {concurrency}"),
                LABEL_WIDTH,
                hooked,
            );
            let (d50, d99) = (h50.saturating_sub(b50), h99.saturating_sub(b99));
            println!(
                "{:<LABEL_WIDTH$} p50=+{d50:?} p99=+{d99:?}",
                "  webhook share (difference)"
            );
            p50s.push(d50);
            p99s.push(d99);
        }
        p50s.sort();
        p99s.sort();
        println!(
            "{:<LABEL_WIDTH$} p50=+{:?} p99=+{:?}",
            format!("webhook share, concurrency {concurrency}, median of {RUNS} runs"),
            support::percentile(&p50s, 0.5),
            support::percentile(&p99s, 0.5),
        );
    }
    let _ = profiles.delete(&name, &DeleteParams::default()).await;
    for ns in [&plain, &profiled] {
        let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .delete(ns, &DeleteParams::background())
            .await;
    }
}

fn main() {
    in_process();
    support::run(through_api_server());
}
