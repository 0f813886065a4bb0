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
    // What the API server must apply: the size of the mutation's JSON patch.
    let patch = admission::mutate(&request, &profiles)
        .patch
        .expect("the pod is mutated");
    let operations = serde_json::from_slice::<Vec<serde_json::Value>>(&patch)
        .expect("a JSON patch")
        .len();
    println!(
        "{:<LABEL_WIDTH$} {operations} operations, {} bytes",
        "in process: the mutation's patch",
        patch.len()
    );
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

/// Creates `count` pods labelled `tier` (server dry run) in `namespace`, `concurrency` at a
/// time, and returns each creation's latency.
async fn create_pods(
    client: &kube::Client,
    namespace: &str,
    tier: &str,
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
                    "metadata": {"name": format!("bench-{i}"), "labels": {"tier": tier}},
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

/// A histogram's sum (seconds) and count, added up over the series of `name` whose labels
/// contain every one of `labels` (`key="value"`), in a Prometheus text exposition.
fn histogram(text: &str, name: &str, labels: &[&str]) -> (f64, f64) {
    let (mut sum, mut count) = (0.0, 0.0);
    for line in text.lines() {
        let (total, rest) = if let Some(rest) = line.strip_prefix(&format!("{name}_sum")) {
            (&mut sum, rest)
        } else if let Some(rest) = line.strip_prefix(&format!("{name}_count")) {
            (&mut count, rest)
        } else {
            continue;
        };
        // Not `{name}_summary…`, a series of another metric.
        if !rest.starts_with(['{', ' ']) {
            continue;
        }
        let Some((series, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        if labels.iter().all(|label| series.contains(label)) {
            *total += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    (sum, count)
}

/// The sum of a counter's or gauge's series named `name`, in a Prometheus text exposition.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(name))
        .filter(|rest| rest.starts_with(['{', ' ']))
        .filter_map(|rest| rest.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Where a pod creation's admission time goes, as the API server and fargo's webhook server
/// count it: histogram sums and counts, to be read as differences between two readings.
#[derive(Clone, Copy, Default)]
struct Stages {
    /// The API server's mutating admission step (built-in plugins and webhooks).
    admit: (f64, f64),
    /// Within it, the call of fargo's pod webhook.
    webhook: (f64, f64),
    /// The API server's validating admission step.
    validate: (f64, f64),
    /// fargo's webhook server: from a request's headers to its answer being ready.
    served: (f64, f64),
    /// Within it, the decision.
    decided: (f64, f64),
    /// fargo's webhook server: connections that waited for a place, and that it closed.
    waits: f64,
    closed: f64,
}

impl Stages {
    async fn read(client: &kube::Client, controller_metrics: &str) -> Self {
        let api = support::api_server_metrics(client).await;
        let (_, fargo) = common::http::http_request("GET", controller_metrics, None)
            .await
            .expect("the controller's metrics");
        let step = "apiserver_admission_step_admission_duration_seconds";
        let create = r#"operation="CREATE""#;
        Self {
            admit: histogram(&api, step, &[create, r#"type="admit""#]),
            webhook: histogram(
                &api,
                "apiserver_admission_webhook_admission_duration_seconds",
                &[create, r#"name="pods.mutate.fargo.dev""#],
            ),
            validate: histogram(&api, step, &[create, r#"type="validate""#]),
            served: histogram(&fargo, "fargo_webhook_request_duration_seconds", &[]),
            decided: histogram(
                &fargo,
                "fargo_webhook_admission_duration_seconds",
                &[r#"webhook="mutate""#],
            ),
            waits: total(&fargo, "fargo_webhook_connection_waits_total"),
            closed: total(&fargo, "fargo_webhook_connections_closed_total"),
        }
    }

    /// `self` plus what happened between `before` and `after`.
    fn add(&mut self, before: &Self, after: &Self) {
        let add = |total: &mut (f64, f64), before: (f64, f64), after: (f64, f64)| {
            total.0 += after.0 - before.0;
            total.1 += after.1 - before.1;
        };
        add(&mut self.admit, before.admit, after.admit);
        add(&mut self.webhook, before.webhook, after.webhook);
        add(&mut self.validate, before.validate, after.validate);
        add(&mut self.served, before.served, after.served);
        add(&mut self.decided, before.decided, after.decided);
        self.waits += after.waits - before.waits;
        self.closed += after.closed - before.closed;
    }

    /// Prints each stage's mean, in microseconds, the webhook calls per pod of `creations`, and
    /// the server's connections that waited or were closed.
    fn print(&self, what: &str, creations: usize) {
        let mean = |(sum, count): (f64, f64)| {
            if count == 0.0 {
                "-".to_string()
            } else {
                format!("{:.0}µs", sum / count * 1e6)
            }
        };
        let calls = self.webhook.1 / creations as f64;
        if calls == 0.0 {
            // fargo's server may have answered something else meanwhile (a health check).
            println!(
                "{what:<LABEL_WIDTH$} mean admit={} (no webhook call) validate={}",
                mean(self.admit),
                mean(self.validate)
            );
            return;
        }
        println!(
            "{what:<LABEL_WIDTH$} mean admit={} (webhook call={}, {calls:.2}/pod; \
             fargo's server={}, decision={}) validate={}; connections waiting {}, closed {}",
            mean(self.admit),
            mean(self.webhook),
            mean(self.served),
            mean(self.decided),
            mean(self.validate),
            self.waits,
            self.closed,
        );
    }
}

/// The three paths a creation takes: a namespace no profile names (the webhook is not called),
/// a profiled namespace with a pod no selector matches (called, answers with no patch), and a
/// pod its profile selects (called, answers with the profile's patch).
#[derive(Clone, Copy)]
enum Path {
    Plain,
    Unselected,
    Selected,
}

async fn through_api_server() {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("through the API server: skipped (no KUBECONFIG; `make bench` starts a cluster)");
        return;
    }
    let client = common::client().await;
    common::install_crds(&client).await;
    const HEALTH_PORT: u16 = 19092;
    common::controller::shared_controller(&client, 18445, HEALTH_PORT).await;
    let controller_metrics = format!("http://127.0.0.1:{HEALTH_PORT}/metrics");
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
    let create = |path: Path, count: usize, concurrency: usize| {
        let (namespace, tier) = match path {
            Path::Plain => (&plain, "backend"),
            Path::Unselected => (&profiled, "frontend"),
            Path::Selected => (&profiled, "backend"),
        };
        create_pods(&client, namespace, tier, count, concurrency)
    };
    // Warm every path (connections, caches) before measuring.
    for path in [Path::Plain, Path::Unselected, Path::Selected] {
        create(path, 50, 8).await;
    }
    for concurrency in [1, 16] {
        // A p99 of 400 samples moves with the machine's noise: the figure to quote is the
        // median of the runs' differences.
        let (mut p50s, mut p99s) = (vec![], vec![]);
        let mut stages = [Stages::default(); 3];
        for run in 1..=RUNS {
            // Interleaved rounds so all paths see the same machine noise.
            let mut samples: [Vec<Duration>; 3] = Default::default();
            for _ in 0..4 {
                for path in [Path::Plain, Path::Unselected, Path::Selected] {
                    let before = Stages::read(&client, &controller_metrics).await;
                    samples[path as usize].extend(create(path, 100, concurrency).await);
                    let after = Stages::read(&client, &controller_metrics).await;
                    stages[path as usize].add(&before, &after);
                }
            }
            let [base, unselected, hooked] = samples;
            let (b50, b99) = support::report(
                &format!("run {run}: API server, no webhook, concurrency {concurrency}"),
                LABEL_WIDTH,
                base,
            );
            support::report(
                &format!("run {run}: webhook called, pod unselected, concurrency {concurrency}"),
                LABEL_WIDTH,
                unselected,
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
        let creations = RUNS * 400;
        for (path, what) in [
            (Path::Plain, "no webhook"),
            (Path::Unselected, "webhook called, pod unselected"),
            (Path::Selected, "pod selected and mutated"),
        ] {
            stages[path as usize].print(&format!("  stages, {what}, c{concurrency}"), creations);
        }
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
