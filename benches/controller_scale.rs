//! The controller at scale: N functions (`FARGO_BENCH_FUNCTIONS`, default 1,000) applied at once,
//! against the same children applied raw in the same run.
//!
//! - **raw**: this process server-side-applies every function's Deployment and Service, built by
//!   the controller's own code, 16 requests in flight — the floor for getting those objects in.
//! - **fargo**: this process applies the N ServerlessFunctions the same way, and the clock stops
//!   when every one reports `Ready=True` for its generation (its children applied, its status
//!   written) to a real `fargo controller` (and activator), run out of cluster.
//!
//! Printed: both times and their ratio, and the resident memory of the controller and of the
//! activator (which routes every function) before, every 10 s while the functions converge, at
//! the end and at their peak; and the API requests each half made per function, by verb and
//! resource, from the API server's own `apiserver_request_total` (watches and lists, which do not
//! grow with the functions, left out). The functions sit at zero replicas (`scale.initial: 0`),
//! so no pod is started; the namespaces are deleted afterwards. `make bench` runs it; it needs
//! KUBECONFIG.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fargo::api::function::ServerlessFunction;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const IN_FLIGHT: usize = 16;

fn function_count() -> usize {
    std::env::var("FARGO_BENCH_FUNCTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

fn function_object(namespace: &str, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "ServerlessFunction",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"image": "fargo.dev/echo:dev", "scale": {"min": 0, "initial": 0}},
    })
}

fn name(i: usize) -> String {
    format!("fn-{i:05}")
}

/// The function as the API server stores it (defaults filled in), from a dry run.
async fn defaulted_function(client: &Client, namespace: &str) -> ServerlessFunction {
    let object: ServerlessFunction =
        serde_json::from_value(function_object(namespace, "template")).expect("a function");
    Api::<ServerlessFunction>::namespaced(client.clone(), namespace)
        .create(
            &PostParams {
                dry_run: true,
                field_manager: None,
            },
            &object,
        )
        .await
        .expect("dry-run create of a function")
}

/// Applies every function's Deployment and Service directly; how long that took.
async fn apply_raw(client: &Client, namespace: &str, count: usize) -> Duration {
    let template = defaulted_function(client, namespace).await;
    let params = PatchParams::apply("fargo-bench").force();
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let mut function = template.clone();
            function.metadata.name = Some(name(i));
            function.metadata.uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
            let (client, params) = (client.clone(), params.clone());
            async move {
                // No owner: the uid above names no object, and the garbage collector would act.
                let mut deployment =
                    fargo::function::build::deployment(&function, &Default::default())?;
                deployment.metadata.owner_references = None;
                if let Some(spec) = deployment.spec.as_mut() {
                    spec.replicas = Some(0);
                }
                let mut service = fargo::function::build::service(&function)?;
                service.metadata.owner_references = None;
                let name = function.name_any();
                Api::<Deployment>::namespaced(client.clone(), namespace)
                    .patch(&name, &params, &Patch::Apply(&deployment))
                    .await
                    .map_err(|e| e.to_string())?;
                Api::<Service>::namespaced(client, namespace)
                    .patch(&name, &params, &Patch::Apply(&service))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .expect("raw objects applied");
    started.elapsed()
}

/// How many functions of `namespace` report Ready=True for their current generation.
async fn ready_functions(client: &Client, namespace: &str) -> usize {
    let Ok(functions) = Api::<ServerlessFunction>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    else {
        return 0;
    };
    functions
        .iter()
        .filter(|function| {
            let Some(status) = &function.status else {
                return false;
            };
            status.observed_generation == function.metadata.generation
                && status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .count()
}

/// The API server's `apiserver_request_total`, summed by verb and resource (with its
/// subresource), lists and watches left out.
async fn api_requests(client: &Client) -> BTreeMap<(String, String), f64> {
    let request = hyper::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    let text = client
        .request_text(request)
        .await
        .expect("the API server's metrics");
    let mut totals = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |key: &str| {
            labels
                .split("\",")
                .find_map(|pair| pair.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let verb = label("verb");
        if matches!(verb.as_str(), "LIST" | "WATCH") {
            continue;
        }
        let mut resource = label("resource");
        let subresource = label("subresource");
        if !subresource.is_empty() {
            resource = format!("{resource}/{subresource}");
        }
        *totals.entry((verb, resource)).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    totals
}

/// Prints what was requested between `before` and `after`, per function, by verb and resource
/// (what came to less than one request per hundred functions left out), and the total.
fn print_requests(
    who: &str,
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
    count: usize,
) {
    let mut total = 0.0;
    let mut parts = vec![];
    for ((verb, resource), value) in after {
        let per_function = (value
            - before
                .get(&(verb.clone(), resource.clone()))
                .unwrap_or(&0.0))
            / count as f64;
        if per_function >= 0.01 {
            total += per_function;
            parts.push(format!("{verb} {resource} {per_function:.2}"));
        }
    }
    println!(
        "  {who}: {total:.2} API requests per function ({})",
        parts.join(", ")
    );
}

/// Applies the functions and waits until the controller has made every one Ready, printing
/// progress and the memory of `processes` every 10 s.
async fn apply_functions(
    client: &Client,
    namespace: &str,
    count: usize,
    processes: &[(&str, u32)],
) -> (Duration, Duration) {
    let api: Api<ServerlessFunction> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply("fargo-bench").force();
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let (api, params) = (api.clone(), params.clone());
            async move {
                api.patch(
                    &name(i),
                    &params,
                    &Patch::Apply(&function_object(namespace, &name(i))),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .expect("functions applied");
    let applied = started.elapsed();
    let mut last_report = Instant::now();
    loop {
        let ready = ready_functions(client, namespace).await;
        if ready == count {
            return (applied, started.elapsed());
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            let memory: Vec<String> = processes
                .iter()
                .map(|(name, pid)| format!("{name} {:.1} MiB", memory_mib(*pid).0))
                .collect();
            println!(
                "  … {ready}/{count} ready after {:.0?}; {}",
                started.elapsed(),
                memory.join(", ")
            );
            last_report = Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(3_600),
            "{ready}/{count} functions ready after an hour"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn on_the_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("controller_scale: skipped (no KUBECONFIG; `make bench` starts a cluster)");
        return;
    }
    let count = function_count();
    let client = common::client().await;
    if let Ok(Some(_)) = Api::<Deployment>::namespaced(client.clone(), "fargo-system")
        .get_opt("fargo-controller")
        .await
    {
        println!(
            "controller_scale: skipped (fargo is installed by Helm and its controllers hold the \
             Lease; `helm uninstall fargo -n fargo-system` first)"
        );
        return;
    }
    common::install_crds(&client).await;
    let identity = format!("fargo-bench-scale-{}", std::process::id());
    let (activator, controller, _) =
        common::functions::start_function_stack(&client, &identity, &[]).await;
    let (idle_rss, _) = memory_mib(controller.id());
    let (activator_idle_rss, _) = memory_mib(activator.id());

    let raw_namespace = common::namespaces::unique_name("bench-raw");
    let fargo_namespace = common::namespaces::unique_name("bench-scale");
    common::namespaces::ensure_namespace(&client, &raw_namespace).await;
    common::namespaces::ensure_namespace(&client, &fargo_namespace).await;

    println!("{count} functions, {IN_FLIGHT} requests in flight");
    let before_raw = api_requests(&client).await;
    let raw = apply_raw(&client, &raw_namespace, count).await;
    let after_raw = api_requests(&client).await;
    println!("  raw: {count} Deployments + {count} Services applied in {raw:.1?}");
    let processes = [
        ("controller", controller.id()),
        ("activator", activator.id()),
    ];
    let (applied, converged) = apply_functions(&client, &fargo_namespace, count, &processes).await;
    let after_fargo = api_requests(&client).await;
    let (rss, peak) = memory_mib(controller.id());
    let (activator_rss, activator_peak) = memory_mib(activator.id());
    println!(
        "  fargo: {count} functions applied in {applied:.1?}, all Ready in {converged:.1?} — {:.2}× raw",
        converged.as_secs_f64() / raw.as_secs_f64()
    );
    println!(
        "  controller memory: {idle_rss:.1} MiB idle, {rss:.1} MiB with {count} functions, peak {peak:.1} MiB"
    );
    println!(
        "  activator memory: {activator_idle_rss:.1} MiB idle, {activator_rss:.1} MiB with {count} functions routed, peak {activator_peak:.1} MiB"
    );
    print_requests("raw", &before_raw, &after_raw, count);
    print_requests(
        "fargo (with the bench's own function applies)",
        &after_raw,
        &after_fargo,
        count,
    );

    for namespace in [raw_namespace, fargo_namespace] {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&namespace, &DeleteParams::background())
            .await;
    }
}

fn main() {
    support::run(on_the_cluster());
}
