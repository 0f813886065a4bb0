//! The controller at scale: N functions (`FARGO_BENCH_FUNCTIONS`, default 1,000) applied at once,
//! against the same children applied raw in the same run, in three parts:
//!
//! - **raw**: this process server-side-applies every function's Deployment and Service, built by
//!   the controller's own code (less the function label on the objects themselves, which would
//!   put them in fargo's caches), 16 requests in flight — the floor for getting those objects in.
//!   The ratios' baseline is the time those applies take.
//! - **floor**: this process makes the writes a function needs with no controller at all: the
//!   function's create, its Deployment and Service (owned by it, as the controller makes them),
//!   and its status (as the controller computes it), one after the other for each function, 64
//!   functions in flight (as many requests as fargo's part can have in flight: the bench's 16
//!   applies and the controller's 48 reconciles). The functions are of a copy of the
//!   ServerlessFunction CRD under another group (its schema, rules and defaults), which no
//!   controller watches. Its time over raw's is what this API's own writes cost with no
//!   controller's work beside them; fargo's time over it is what fargo's controller adds.
//! - **fargo**: this process applies the N ServerlessFunctions as raw applies its objects, and
//!   the clock stops when every one reports `Ready=True` for its generation (its children
//!   applied, its status written) to a real `fargo controller` (and activator), run out of
//!   cluster. This process watches the functions rather than listing them, so that counting them
//!   costs the API server next to nothing.
//!
//! Each part then waits until Kubernetes' own controllers have done with its objects (every
//! Deployment observed, then 2 s of near-silence), so that the requests and CPU it prints are all
//! its own, and deletes them (its namespace gone, the API server quiet again), so that every part
//! starts on a quiet cluster holding none of the earlier parts' objects.
//!
//! When `benches/peers/knative.sh up` has put Knative Serving on the cluster, the same number of
//! Knative Services of the echo image (at zero instances from the start) follow the rounds, and
//! the memory of Knative's controller is printed beside fargo's.
//!
//! The round is run `FARGO_BENCH_ROUNDS` times (default 3), and the medians of the ratios are
//! printed last.
//!
//! Printed: the times and their ratios, and the resident memory of the controller and of the
//! activator (which routes every function) before, every 10 s while the functions converge, at
//! the end and at their peak; and the API requests each part made per function, by verb and
//! resource, from the API server's own `apiserver_request_total` (watches and lists, which do not
//! grow with the functions, left out), and the CPU time each part cost the control plane, fargo
//! and this process. The functions sit at zero replicas (`scale.initial: 0`),
//! so no pod is started; the namespaces are deleted afterwards. `make bench` runs it; it needs
//! KUBECONFIG.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fargo::api::function::ServerlessFunction;
use fargo::api::{CONTROLLER_MANAGER, FUNCTION_LABEL};
use fargo::function::status::{self, Observed, ProfileCheck};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::{reflector, watcher};
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
                // Nor the function label on the objects themselves (their selectors keep it):
                // the controller's caches hold the Deployments and Services that carry it, and
                // the raw ones would count in its memory.
                let mut deployment =
                    fargo::function::build::deployment(&function, &Default::default())?;
                deployment.metadata.owner_references = None;
                deployment.labels_mut().remove(FUNCTION_LABEL);
                if let Some(spec) = deployment.spec.as_mut() {
                    spec.replicas = Some(0);
                }
                let mut service = fargo::function::build::service(&function)?;
                service.metadata.owner_references = None;
                service.labels_mut().remove(FUNCTION_LABEL);
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

/// Functions the floor has in flight: as many requests as fargo's part can have in flight, the
/// bench's [`IN_FLIGHT`] applies and the controller's 48 reconciles. At 16, four writes in a
/// row each, the floor took longer than fargo's part itself.
const FLOOR_IN_FLIGHT: usize = 64;

/// The group of the floor's copy of the ServerlessFunction CRD.
const FLOOR_GROUP: &str = "floor.bench.fargo.dev";

/// Installs the floor's copy of the ServerlessFunction CRD: the same schema, rules and defaults
/// under [`FLOOR_GROUP`], which no controller watches; returns its kind's API resource.
async fn install_floor_crd(client: &Client) -> ApiResource {
    let mut crd = fargo::api::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == "ServerlessFunction")
        .expect("the ServerlessFunction CRD");
    crd.spec.group = FLOOR_GROUP.into();
    crd.metadata.name = Some(format!("{}.{FLOOR_GROUP}", crd.spec.names.plural));
    let name = crd.name_any();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply("fargo-bench").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("the floor's CRD applied");
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(
            crds,
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        ),
    )
    .await
    .expect("the floor's CRD Established within 30s")
    .expect("watching the floor's CRD");
    let version = &crd.spec.versions[0].name;
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(FLOOR_GROUP, version, "ServerlessFunction"),
        &crd.spec.names.plural,
    )
}

/// Makes each function's writes with no controller (see the module's doc): its create, its
/// Deployment and Service, its status; how long that took.
async fn apply_floor(
    client: &Client,
    namespace: &str,
    count: usize,
    kind: &ApiResource,
) -> Duration {
    let template = defaulted_function(client, namespace).await;
    let functions: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, kind);
    let params = PatchParams::apply("fargo-bench").force();
    let status_params = PatchParams::apply(CONTROLLER_MANAGER).force();
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let (client, functions, template) = (client.clone(), functions.clone(), &template);
            let (params, status_params) = (params.clone(), status_params.clone());
            async move {
                let name = name(i);
                let mut object = function_object(namespace, &name);
                object["apiVersion"] = kind.api_version.clone().into();
                let created = functions
                    .patch(&name, &params, &Patch::Apply(&object))
                    .await?;
                let mut function = template.clone();
                function.metadata.name = Some(name.clone());
                function.metadata.uid = created.metadata.uid;
                function.metadata.generation = created.metadata.generation;
                // Owned by the copy, as the controller's children are by the function; without
                // the function label, which would put them in the controller's caches.
                let owned_by_the_copy = |meta: &mut kube::api::ObjectMeta| {
                    for owner in meta.owner_references.iter_mut().flatten() {
                        owner.api_version = kind.api_version.clone();
                    }
                    meta.labels
                        .as_mut()
                        .map(|labels| labels.remove(FUNCTION_LABEL));
                };
                let mut deployment =
                    fargo::function::build::deployment(&function, &Default::default())?;
                owned_by_the_copy(&mut deployment.metadata);
                if let Some(spec) = deployment.spec.as_mut() {
                    spec.replicas = Some(0);
                }
                let mut service = fargo::function::build::service(&function)?;
                owned_by_the_copy(&mut service.metadata);
                let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
                    .patch(&name, &params, &Patch::Apply(&deployment))
                    .await?;
                Api::<Service>::namespaced(client, namespace)
                    .patch(&name, &params, &Patch::Apply(&service))
                    .await?;
                let observed = Observed {
                    deployment: Some(&deployment),
                    profile: ProfileCheck::NotRequested,
                    schedule_problems: &[],
                    name_problem: None,
                    pod_problems: &[],
                    activator_url: "http://127.0.0.1:8080",
                    host_refusals: &[],
                };
                let now = Time(k8s_openapi::jiff::Timestamp::now());
                let status = status::compute(&function, &Default::default(), &observed, now);
                let patch = json!({
                    "apiVersion": kind.api_version,
                    "kind": kind.kind,
                    "status": status,
                });
                functions
                    .patch_status(&name, &status_params, &Patch::Apply(&patch))
                    .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }
        })
        .buffer_unordered(FLOOR_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .expect("the floor's objects applied");
    started.elapsed()
}

/// Waits until the Deployment controller has seen every Deployment of `namespace` (its status
/// observes the Deployment's generation) and the API server then went 2 s with fewer writes
/// than one per hundred functions (or a minute passed), so that the next part starts on a quiet
/// cluster and each part's requests and CPU are all its own; returns when the Deployments were
/// all observed, counted from `started`.
async fn settle(client: &Client, namespace: &str, count: usize, started: Instant) -> Duration {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    // Watched, as the functions are (see `apply_functions`).
    let (deployments, writer) = reflector::store::<Deployment>();
    let watch = tokio::spawn(
        reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .for_each(|_| async {}),
    );
    deployments
        .wait_until_ready()
        .await
        .expect("the Deployments' watch");
    let observed = loop {
        let observed = deployments
            .state()
            .iter()
            .filter(|d| {
                d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation
            })
            .count();
        if observed == count {
            watch.abort();
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(3_600),
            "{observed}/{count} Deployments observed after an hour"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if !quiet(client, count).await {
        println!("  (the API server was still busy a minute after the Deployments were observed)");
    }
    observed
}

/// Waits until the API server went 2 s with fewer writes than one per hundred functions; false
/// when it was still busy after a minute.
async fn quiet(client: &Client, count: usize) -> bool {
    let writes = |requests: &BTreeMap<(String, String), Served>| -> f64 {
        requests
            .iter()
            .filter(|((verb, resource), _)| verb != "GET" && !resource.starts_with("leases"))
            .map(|(_, served)| served.requests)
            .sum()
    };
    // The cluster's own background writes (node status, events) never stop: after a minute the
    // part goes on, saying so.
    let mut last = writes(&api_requests(client).await);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = writes(&api_requests(client).await);
        if now - last < (count as f64 / 100.0).max(1.0) {
            return true;
        }
        last = now;
    }
    false
}

/// Deletes `namespace` and waits until it is gone and the API server is quiet again, so that
/// the next part starts on a cluster without this part's objects.
async fn delete_namespace(client: &Client, namespace: &str, count: usize) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(namespace, &DeleteParams::background()).await;
    let deleting = Instant::now();
    while let Ok(Some(_)) = api.get_opt(namespace).await {
        assert!(
            deleting.elapsed() < Duration::from_secs(3_600),
            "namespace {namespace} still there an hour after its deletion"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !quiet(client, count).await {
        println!("  (the API server was still busy a minute after namespace {namespace} was gone)");
    }
}

/// CPU time of the cluster's control plane and of `processes` (name, pid), by name.
fn cpu_times(processes: &[(&str, u32)]) -> Vec<(String, Duration)> {
    let mut found: Vec<(String, u32)> = processes
        .iter()
        .map(|(name, pid)| (name.to_string(), *pid))
        .collect();
    for name in ["kube-apiserver", "etcd", "kube-controller-manager"] {
        let pid = std::fs::read_dir("/proc").ok().and_then(|entries| {
            entries.flatten().find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                // The kernel keeps the first 15 bytes of a command's name.
                let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
                (comm.trim() == &name[..name.len().min(15)]).then_some(pid)
            })
        });
        if let Some(pid) = pid {
            found.push((name.to_string(), pid));
        }
    }
    found.push(("this bench".into(), std::process::id()));
    found
        .into_iter()
        .map(|(name, pid)| (name, support::cpu_time(pid)))
        .collect()
}

/// Prints the CPU each process used between `before` and `after`.
fn print_cpu(who: &str, before: &[(String, Duration)], after: &[(String, Duration)]) {
    let parts: Vec<String> = after
        .iter()
        .map(|(name, spent)| {
            let earlier = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(Duration::ZERO, |(_, d)| *d);
            format!("{name} {:.1}s", spent.saturating_sub(earlier).as_secs_f64())
        })
        .collect();
    println!("  {who}: CPU {}", parts.join(", "));
}

/// Whether a function reports Ready=True for its current generation.
fn is_ready(function: &ServerlessFunction) -> bool {
    let Some(status) = &function.status else {
        return false;
    };
    status.observed_generation == function.metadata.generation
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// What the API server counted of one verb on one resource: requests, those answered 409
/// Conflict, and the seconds it spent serving them.
#[derive(Clone, Copy, Debug, Default)]
struct Served {
    requests: f64,
    conflicts: f64,
    seconds: f64,
}

/// The API server's `apiserver_request_total` and `apiserver_request_duration_seconds`, summed
/// by verb and resource (with its subresource), lists and watches left out.
async fn api_requests(client: &Client) -> BTreeMap<(String, String), Served> {
    let text = support::api_server_metrics(client).await;
    let mut totals = BTreeMap::<_, Served>::new();
    for line in text.lines() {
        let (metric, rest) = if let Some(rest) = line.strip_prefix("apiserver_request_total{") {
            ("total", rest)
        } else if let Some(rest) = line.strip_prefix("apiserver_request_duration_seconds_sum{") {
            ("seconds", rest)
        } else {
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
        let value = value.parse::<f64>().unwrap_or(0.0);
        let served = totals.entry((verb, resource)).or_default();
        match metric {
            "total" => {
                served.requests += value;
                if label("code") == "409" {
                    served.conflicts += value;
                }
            }
            _ => served.seconds += value,
        }
    }
    totals
}

/// Prints what was requested between `before` and `after`, per function, by verb and resource
/// (what came to less than one request per hundred functions left out), with the conflicts
/// among them and the API server's time serving them (per function, in ms), and the totals.
fn print_requests(
    who: &str,
    before: &BTreeMap<(String, String), Served>,
    after: &BTreeMap<(String, String), Served>,
    count: usize,
) {
    let (mut requests, mut milliseconds) = (0.0, 0.0);
    let mut parts = vec![];
    for (key, value) in after {
        let earlier = before.get(key).copied().unwrap_or_default();
        let per_function = |now: f64, then: f64| (now - then) / count as f64;
        let served = per_function(value.requests, earlier.requests);
        if served < 0.01 {
            continue;
        }
        let conflicts = per_function(value.conflicts, earlier.conflicts);
        let ms = per_function(value.seconds, earlier.seconds) * 1e3;
        requests += served;
        milliseconds += ms;
        let conflicts = if conflicts >= 0.01 {
            format!(", {conflicts:.2} conflicts")
        } else {
            String::new()
        };
        let (verb, resource) = key;
        parts.push(format!(
            "{verb} {resource} {served:.2} ({ms:.1} ms{conflicts})"
        ));
    }
    println!(
        "  {who}: {requests:.2} API requests per function, {milliseconds:.1} ms of the API \
         server's time ({})",
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
    // Watched, not listed: listing every function twice a second costs the API server more
    // and more as they grow (a tenth of its CPU at 2,000), and the raw part has no such load.
    let (functions, writer) = reflector::store::<ServerlessFunction>();
    let watch = tokio::spawn(
        reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .for_each(|_| async {}),
    );
    functions
        .wait_until_ready()
        .await
        .expect("the functions' watch");
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
        let ready = functions.state().iter().filter(|f| is_ready(f)).count();
        if ready == count {
            watch.abort();
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

    println!(
        "{count} functions, {IN_FLIGHT} requests in flight, {} rounds",
        rounds()
    );
    let floor_kind = install_floor_crd(&client).await;
    let mut rounds_measured = vec![];
    for round in 1..=rounds() {
        println!("round {round}");
        let ratios = round_of(&client, count, controller.id(), activator.id(), &floor_kind).await;
        rounds_measured.push(ratios);
    }
    print_median(
        "fargo's time to all Ready ÷ raw's applies",
        rounds_measured.iter().map(|r| r.fargo).collect(),
    );
    print_median(
        "the floor's time ÷ raw's applies",
        rounds_measured.iter().map(|r| r.floor).collect(),
    );
    print_median(
        "fargo's time to all Ready ÷ the floor's",
        rounds_measured.iter().map(|r| r.fargo / r.floor).collect(),
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let _ = crds
        .delete(
            &format!("{}.{FLOOR_GROUP}", floor_kind.plural),
            &DeleteParams::background(),
        )
        .await;
    let (rss, peak) = memory_mib(controller.id());
    let (activator_rss, activator_peak) = memory_mib(activator.id());
    println!(
        "controller memory: {idle_rss:.1} MiB idle, {rss:.1} MiB at the end, peak {peak:.1} MiB"
    );
    println!(
        "activator memory: {activator_idle_rss:.1} MiB idle, {activator_rss:.1} MiB at the end, peak {activator_peak:.1} MiB"
    );
    knative_services(&client, count).await;
}

/// The Knative Service API (`serving.knative.dev/v1`), or a kind of its group.
fn knative(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("serving.knative.dev", "v1", kind))
}

/// Whether a Knative object's `Ready` condition is `True`.
fn knative_ready(object: &DynamicObject) -> bool {
    object.data["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Knative Serving's controller beside fargo's, when `benches/peers/knative.sh up` has put it
/// on the cluster: `count` Knative Services of the echo image applied the same way, at zero
/// instances from the start (`initial-scale: 0`, which the peer's config allows), until each
/// one's Revision is Ready (its Route never is: the peer has no ingress), and the memory of
/// Knative's controller process before, every 10 s, at the end and at its peak.
async fn knative_services(client: &Client, count: usize) {
    // Knative's controller: the process named `controller` in its controller pod.
    let pod = Api::<Pod>::namespaced(client.clone(), "knative-serving")
        .list(&ListParams::default().labels("app=controller"))
        .await
        .ok()
        .and_then(|pods| pods.items.into_iter().next());
    let pid = pod
        .and_then(|pod| pod.metadata.uid)
        .and_then(|uid| support::process_named("controller", Some(&uid)));
    let Some(pid) = pid else {
        println!(
            "Knative: skipped (not on the cluster; `benches/peers/knative.sh up` brings it up)"
        );
        return;
    };
    let namespace = common::namespaces::unique_name("bench-knative");
    common::namespaces::ensure_namespace(client, &namespace).await;
    let services: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &knative("Service"));
    let revisions: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &knative("Revision"));
    let writer = reflector::store::Writer::<DynamicObject>::new(knative("Revision"));
    let store = writer.as_reader();
    let watch = tokio::spawn(
        reflector::reflector(
            writer,
            watcher::watcher(revisions, watcher::Config::default()),
        )
        .for_each(|_| async {}),
    );
    store
        .wait_until_ready()
        .await
        .expect("the Revisions' watch");
    let (idle, _) = memory_mib(pid);
    let params = PatchParams::apply("fargo-bench").force();
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let (services, params) = (services.clone(), params.clone());
            let service = json!({
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Service",
                "metadata": {"name": name(i)},
                "spec": {"template": {
                    "metadata": {"annotations": {"autoscaling.knative.dev/initial-scale": "0"}},
                    "spec": {"containers": [{"image": "fargo.dev/echo:dev"}]},
                }},
            });
            async move {
                services
                    .patch(&name(i), &params, &Patch::Apply(&service))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .expect("Knative Services applied");
    let applied = started.elapsed();
    let mut last_report = Instant::now();
    let converged = loop {
        let ready = store.state().iter().filter(|r| knative_ready(r)).count();
        if ready == count {
            break started.elapsed();
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  … {ready}/{count} Knative Revisions ready after {:.0?}; its controller {:.1} MiB",
                started.elapsed(),
                memory_mib(pid).0
            );
            last_report = Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(3_600),
            "{ready}/{count} Knative Revisions ready after an hour"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    watch.abort();
    let (rss, peak) = memory_mib(pid);
    println!(
        "Knative: {count} Services applied in {applied:.1?}, every Revision Ready in \
         {converged:.1?}; its controller {idle:.1} MiB idle, {rss:.1} MiB with {count} Services, \
         peak {peak:.1} MiB"
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .delete(&namespace, &DeleteParams::background())
        .await;
    let deleting = Instant::now();
    while let Ok(Some(_)) = namespaces.get_opt(&namespace).await {
        assert!(
            deleting.elapsed() < Duration::from_secs(3_600),
            "namespace {namespace} still there an hour after its deletion"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Prints the median of one ratio over the rounds, and each round's.
fn print_median(what: &str, mut ratios: Vec<f64>) {
    let rounds: Vec<String> = ratios.iter().map(|r| format!("{r:.2}×")).collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "{what}, median of {} rounds: {:.2}× (rounds: {})",
        ratios.len(),
        ratios[ratios.len() / 2],
        rounds.join(", ")
    );
}

/// How many rounds to run (`FARGO_BENCH_ROUNDS`, default 3): the machine's noise moves one
/// round's ratio by tens of percent.
fn rounds() -> usize {
    std::env::var("FARGO_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

/// What a round measured: fargo's time to all Ready and the floor's time to its last write,
/// each over raw's time to apply.
struct Ratios {
    fargo: f64,
    floor: f64,
}

/// One round: raw, the floor, then fargo, each in a namespace of its own, deleted (and gone)
/// before the next part starts.
async fn round_of(
    client: &Client,
    count: usize,
    controller: u32,
    activator: u32,
    floor_kind: &ApiResource,
) -> Ratios {
    let client = client.clone();
    let processes = [("controller", controller), ("activator", activator)];
    let processes = &processes[..];
    let raw_namespace = common::namespaces::unique_name("bench-raw");
    let floor_namespace = common::namespaces::unique_name("bench-floor");
    let fargo_namespace = common::namespaces::unique_name("bench-scale");
    for namespace in [&raw_namespace, &floor_namespace, &fargo_namespace] {
        common::namespaces::ensure_namespace(&client, namespace).await;
    }

    let before_raw = api_requests(&client).await;
    let cpu_before_raw = cpu_times(processes);
    let raw_started = Instant::now();
    let raw = apply_raw(&client, &raw_namespace, count).await;
    let observed = settle(&client, &raw_namespace, count, raw_started).await;
    let after_raw = api_requests(&client).await;
    let cpu_after_raw = cpu_times(processes);
    println!(
        "  raw: {count} Deployments + {count} Services applied in {raw:.1?}, all observed by \
         the Deployment controller in {observed:.1?}"
    );
    delete_namespace(&client, &raw_namespace, count).await;

    let before_floor = api_requests(&client).await;
    let cpu_before_floor = cpu_times(processes);
    let floor_started = Instant::now();
    let floor = apply_floor(&client, &floor_namespace, count, floor_kind).await;
    println!(
        "  floor: {count} functions' create, Deployment, Service and status applied in \
         {floor:.1?}, no controller — {:.2}× raw",
        floor.as_secs_f64() / raw.as_secs_f64()
    );
    let observed = settle(&client, &floor_namespace, count, floor_started).await;
    let after_floor = api_requests(&client).await;
    let cpu_after_floor = cpu_times(processes);
    println!("  floor: all Deployments observed by the Deployment controller in {observed:.1?}");
    delete_namespace(&client, &floor_namespace, count).await;

    let before_fargo = api_requests(&client).await;
    let cpu_before_fargo = cpu_times(processes);

    let fargo_started = Instant::now();
    let (applied, converged) = apply_functions(&client, &fargo_namespace, count, processes).await;
    let (rss, peak) = memory_mib(controller);
    let (activator_rss, activator_peak) = memory_mib(activator);
    println!(
        "  fargo: {count} functions applied in {applied:.1?}, all Ready in {converged:.1?} — \
         {:.2}× raw, {:.2}× the floor",
        converged.as_secs_f64() / raw.as_secs_f64(),
        converged.as_secs_f64() / floor.as_secs_f64()
    );
    let observed = settle(&client, &fargo_namespace, count, fargo_started).await;
    let after_fargo = api_requests(&client).await;
    let cpu_after_fargo = cpu_times(processes);
    println!("  fargo: all Deployments observed by the Deployment controller in {observed:.1?}");
    println!("  controller memory: {rss:.1} MiB with {count} functions, peak {peak:.1} MiB");
    println!(
        "  activator memory: {activator_rss:.1} MiB with {count} functions routed, peak {activator_peak:.1} MiB"
    );
    print_requests("raw", &before_raw, &after_raw, count);
    print_requests("floor", &before_floor, &after_floor, count);
    print_requests(
        "fargo (with the bench's own function applies)",
        &before_fargo,
        &after_fargo,
        count,
    );
    print_cpu("raw, until settled", &cpu_before_raw, &cpu_after_raw);
    print_cpu("floor, until settled", &cpu_before_floor, &cpu_after_floor);
    print_cpu("fargo, until settled", &cpu_before_fargo, &cpu_after_fargo);

    // The next round starts once the garbage collector is done with this one's objects.
    delete_namespace(&client, &fargo_namespace, count).await;
    Ratios {
        fargo: converged.as_secs_f64() / raw.as_secs_f64(),
        floor: floor.as_secs_f64() / raw.as_secs_f64(),
    }
}

fn main() {
    support::run(on_the_cluster());
}
