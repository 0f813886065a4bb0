//! Functions on the local cluster's real node, through the real `fargo activator` and `fargo
//! controller` (the binaries this `cargo bench` built, run out of cluster on 127.0.0.1):
//!
//! - **cold start**: a request to a function at zero replicas until its response, against the
//!   pod's own start in the same runs — from the scale write (seen by a watch) to the first
//!   answer of the pod's IP to a prober polling it every few milliseconds. fargo's share is
//!   (cold start − pod start) / pod start. The echo image's cold start is also printed phase by
//!   phase (benches/cold_start), beside a Knative revision's of the same image when Knative is on
//!   the cluster, the two taking turns run by run.
//! - **proxy overhead**: one warm pod, requests straight to its IP against requests through the
//!   activator, interleaved, at 1, 16 and 64 connections (keep-alive clients); beside them a
//!   second activator serving on its main runtime (`--proxy-threads 0`), nginx
//!   in front of the same pod and, when `make bench-peers` has put Knative Serving on the cluster,
//!   a Knative revision of the same image through Knative's activator and queue-proxy, and through
//!   its queue-proxy alone; with `FARGO_BENCH_BASELINE` (the path of another build's `fargo`),
//!   that build's activator too. CPU per request is each path's processes' own CPU time, with
//!   its user and kernel parts (the kernel's from `/proc`'s 10 ms ticks, read around each
//!   round: good to about 1 µs per request over a level's 20,000 requests).
//! - **handler cold start**: the same measure for a Python handler (inline code) and a Go
//!   handler (`provided`, its zip fetched from an S3 server), beside the HTTP echo image.
//! - **the in-pod part of handler functions** (no cluster: processes of this machine):
//!   `fargo-runtime-api` with the Go example's `bootstrap` as its runtime client, against
//!   `fargo-echo` served as a plain HTTP server — latency at 1 and 16 connections, the sidecar's
//!   CPU per invocation, and its resident memory idle and after the load.
//!
//! `make bench` runs it; it needs KUBECONFIG (the cluster parts are skipped, saying so, without
//! one) and the images of `make images` on the node.

mod cold_start;
#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::HeaderMap;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::json;

const COLD_RUNS: usize = 20;
/// Cold starts of each handler function (each run starts a pod, fetches code, starts a runtime).
const HANDLER_COLD_RUNS: usize = 10;
/// Requests per level to the in-pod part and to the plain server, in [`ROUNDS`] rounds.
const IN_POD_REQUESTS: usize = 10_000;
const LEVELS: [usize; 3] = [1, 16, 64];
/// Requests per path and level, in rounds that alternate the two paths.
const REQUESTS_PER_LEVEL: usize = 20_000;
const ROUNDS: usize = 10;
/// The width labels are padded to, so that the numbers of the printed lines line up.
const LABEL_WIDTH: usize = 52;

type Keepalive = HttpClient<HttpConnector, Empty<Bytes>>;

fn keepalive_client() -> Keepalive {
    HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(60))
        .build_http()
}

/// One GET, body read to the end; its latency.
async fn get(client: &Keepalive, url: &hyper::Uri) -> Duration {
    get_with(client, url, &HeaderMap::new()).await
}

/// One GET with `headers`, body read to the end; its latency.
async fn get_with(client: &Keepalive, url: &hyper::Uri, headers: &HeaderMap) -> Duration {
    let mut request = hyper::Request::get(url.clone())
        .body(Empty::new())
        .expect("a request");
    request.headers_mut().extend(headers.clone());
    let started = Instant::now();
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    started.elapsed()
}

/// The function's pods, with those being deleted.
async fn pods_of(client: &Client, namespace: &str, function: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("fargo.dev/function={function}")))
        .await
        .map(|list| list.items)
        .unwrap_or_default()
}

/// Scales the function to zero as the autoscaler would, and waits until no pod and no endpoint
/// of it is left.
async fn scale_to_zero(client: &Client, namespace: &str, function: &str) {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch_scale(
            function,
            &PatchParams::apply("fargo.dev/autoscaler").force(),
            &Patch::Apply(json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": function, "namespace": namespace},
                "spec": {"replicas": 0},
            })),
        )
        .await
        .expect("scaling to zero");
    common::wait::eventually(120, "no pod and no endpoint left", || async {
        if !pods_of(client, namespace, function).await.is_empty() {
            return None;
        }
        let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={function}")))
            .await
            .ok()?;
        let endpoints = slices
            .items
            .iter()
            .map(|s| s.endpoints.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        (endpoints == 0).then_some(())
    })
    .await;
    // The activator learns of the empty slice through its own watch.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Cold starts of `function` (applied with `spec`), `runs` times, with `between` awaited after
/// each (a peer's run, so that both see the same machine); `probe` is where its pod answers
/// once up (a handler's sidecar answers on its probe port). The runs' timelines.
async fn cold_start(
    client: &Client,
    activator: &common::activator::ActivatorAddrs,
    namespace: &str,
    (function, spec): (&str, serde_json::Value),
    probe: (u16, &'static str),
    runs: usize,
    mut between: impl AsyncFnMut(usize),
) -> Vec<cold_start::Run> {
    println!("cold start of {function}:");
    common::functions::apply_function(client, namespace, function, spec).await;
    common::functions::wait_function_condition(
        client,
        namespace,
        function,
        ("Ready", "True", "ScaledToZero"),
        60,
    )
    .await;
    let url: hyper::Uri = activator
        .function_url(namespace, function)
        .parse()
        .expect("a URL");
    let selector = format!("fargo.dev/function={function}");
    let workload = cold_start::Workload {
        namespace,
        selector: &selector,
        probe,
    };
    let mut timelines = vec![];
    for run in 0..runs {
        scale_to_zero(client, namespace, function).await;
        // A fresh client: no connection kept from the previous run.
        let http = keepalive_client();
        let timeline = cold_start::capture(client, &workload, get(&http, &url)).await;
        print_run(run, &timeline);
        timelines.push(timeline);
        // A peer's run in turn; then idle for longer than idleTimeout before the next scale to
        // zero, so the autoscaler agrees with it.
        between(run).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let phase = |timeline: &cold_start::Run, phase: usize| {
        timeline[phase]
            .unwrap_or_else(|| panic!("{function}: {} not seen", cold_start::PHASES[phase]))
    };
    let cold: Vec<Duration> = timelines
        .iter()
        .map(|t| phase(t, cold_start::RESPONSE))
        .collect();
    let poke: Vec<Duration> = timelines
        .iter()
        .map(|t| phase(t, cold_start::SCALE_WRITE))
        .collect();
    let pod_start: Vec<Duration> = timelines
        .iter()
        .map(|t| phase(t, cold_start::PORT_OPEN).saturating_sub(phase(t, cold_start::SCALE_WRITE)))
        .collect();
    let added: Vec<Duration> = cold
        .iter()
        .zip(&pod_start)
        .map(|(cold, pod)| cold.saturating_sub(*pod))
        .collect();
    let (c50, c99) = support::report("cold start: request → response", LABEL_WIDTH, cold);
    let (s50, s99) = support::report(
        "pod start: scale write → pod answers on its IP",
        LABEL_WIDTH,
        pod_start,
    );
    support::report(
        "  request → scale write seen (poke, by a watch)",
        LABEL_WIDTH,
        poke,
    );
    let (a50, _) = support::report(
        "  fargo's time per run (cold start − pod start)",
        LABEL_WIDTH,
        added,
    );
    let percent =
        |part: Duration, whole: Duration| part.as_secs_f64() / whole.as_secs_f64() * 100.0;
    println!(
        "{:<LABEL_WIDTH$} p50={:>9.1}%  (of p50s: {:.1}%, of p99s: {:.1}%)",
        "  fargo's share of the pod start",
        percent(a50, s50),
        percent(c50.saturating_sub(s50), s50),
        percent(c99.saturating_sub(s99), s99),
    );
    timelines
}

/// One cold run's line: the response, the scale write and the pod's start (scale write → app
/// answering on the pod's IP).
fn print_run(run: usize, timeline: &cold_start::Run) {
    let at = |phase: usize| timeline[phase].unwrap_or_default();
    println!(
        "  cold run {run:>2}: request→response {:>8.1?}  scale write seen {:>8.1?} after the \
         request  pod start {:>8.1?}",
        at(cold_start::RESPONSE),
        at(cold_start::SCALE_WRITE),
        at(cold_start::PORT_OPEN).saturating_sub(at(cold_start::SCALE_WRITE)),
    );
}

/// `count` GETs of `url` over `concurrency` keep-alive connections; the latencies and the
/// wall time.
async fn load(
    client: &Keepalive,
    url: &hyper::Uri,
    count: usize,
    concurrency: usize,
) -> (Vec<Duration>, Duration) {
    load_with(client, url, &HeaderMap::new(), count, concurrency).await
}

/// [`load`] with `headers` on every request.
async fn load_with(
    client: &Keepalive,
    url: &hyper::Uri,
    headers: &HeaderMap,
    count: usize,
    concurrency: usize,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let latencies = futures::stream::iter(0..count)
        .map(|_| get_with(client, url, headers))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    (latencies, started.elapsed())
}

/// nginx (Debian's, `apt-get install nginx-light`) as a plain reverse proxy on 127.0.0.1 in front
/// of one pod: one process (no master, one worker), keep-alive connections to the pod, no access
/// log — the cost floor of "just a proxy" beside the activator. `None` when nginx is missing.
struct Nginx {
    child: std::process::Child,
    url: hyper::Uri,
    _work: std::path::PathBuf,
}

impl Nginx {
    const BINARY: &'static str = "/usr/sbin/nginx";

    fn start(pod: &str) -> Option<Self> {
        if !std::path::Path::new(Self::BINARY).exists() {
            return None;
        }
        let work = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(&work).expect("nginx's work directory");
        let port = common::processes::free_port();
        let dir = work.display();
        let config = format!(
            "daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream pod {{ server {pod}:8080; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://pod;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
"
        );
        let config_path = work.join("nginx.conf");
        std::fs::write(&config_path, config).expect("nginx.conf");
        let child = std::process::Command::new(Self::BINARY)
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(work.join("error.log"))
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("starting nginx");
        Some(Self {
            child,
            url: format!("http://127.0.0.1:{port}/").parse().expect("a URL"),
            _work: work,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One path requests take in [`proxy_overhead`]: its name (and a short one for the
/// comparisons), URL, client, and the process whose CPU it costs (none for the direct path).
struct ProxyPath {
    name: &'static str,
    short: &'static str,
    url: hyper::Uri,
    headers: HeaderMap,
    client: Keepalive,
    /// The processes whose CPU time a request through this path costs.
    pids: Vec<u32>,
}

impl ProxyPath {
    fn new(name: &'static str, short: &'static str, url: hyper::Uri, pids: Vec<u32>) -> Self {
        Self {
            name,
            short,
            url,
            headers: HeaderMap::new(),
            client: keepalive_client(),
            pids,
        }
    }

    fn cpu_time(&self) -> Duration {
        self.pids.iter().copied().map(support::cpu_time).sum()
    }

    fn kernel_time(&self) -> Duration {
        self.pids.iter().copied().map(support::kernel_time).sum()
    }
}

/// Knative Serving's request path, when `make bench-peers` (benches/peers/knative.sh up) has put
/// it on the cluster: a Revision of the same echo image, kept at one pod, reached through
/// Knative's activator Service with the two headers its ingress would set (the activator then
/// forwards to the pod's queue-proxy), and through the queue-proxy alone.
struct Knative {
    activator: hyper::Uri,
    queue_proxy: hyper::Uri,
    headers: HeaderMap,
    activator_pid: u32,
    queue_proxy_pid: u32,
}

impl Knative {
    const NAMESPACE: &'static str = "knative-serving";

    /// Whether `make bench-peers` has put Knative Serving on the cluster (saying so when not).
    async fn installed(client: &Client) -> bool {
        let installed = Api::<Namespace>::all(client.clone())
            .get_opt(Self::NAMESPACE)
            .await
            .ok()
            .flatten()
            .is_some();
        if !installed {
            println!("Knative: skipped (not on the cluster; `make bench-peers` brings it up)");
        }
        installed
    }

    fn services(client: &Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            client.clone(),
            namespace,
            &ApiResource::from_gvk(&GroupVersionKind::gvk(
                "serving.knative.dev",
                "v1",
                "Service",
            )),
        )
    }

    /// Knative's activator Service, where requests go with [`Knative::headers`].
    async fn activator_url(client: &Client) -> hyper::Uri {
        let ip =
            Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), Self::NAMESPACE)
                .get("activator-service")
                .await
                .expect("Knative's activator Service")
                .spec
                .and_then(|spec| spec.cluster_ip)
                .expect("a ClusterIP");
        format!("http://{ip}/").parse().expect("a URL")
    }

    /// The headers Knative's ingress would set for `revision`, which its activator routes by.
    fn headers(namespace: &str, revision: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("knative-serving-namespace", namespace),
            ("knative-serving-revision", revision),
        ] {
            headers.insert(name, value.parse().expect("a header value"));
        }
        headers
    }

    /// Applies a Knative Service `name` of the echo image with the revision `annotations` and
    /// the container `resources`; the namespace's Knative Services.
    async fn apply_echo(
        client: &Client,
        namespace: &str,
        name: &str,
        annotations: serde_json::Value,
        resources: serde_json::Value,
    ) -> Api<DynamicObject> {
        let services = Self::services(client, namespace);
        let service = json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": [{
                    "image": "fargo.dev/echo:dev",
                    "ports": [{"containerPort": 8080}],
                    "resources": resources,
                }]},
            }},
        });
        services
            .patch(
                name,
                &PatchParams::apply("fargo-bench"),
                &Patch::Apply(&service),
            )
            .await
            .expect("the Knative Service applied");
        services
    }

    async fn start(client: &Client, namespace: &str) -> Option<Self> {
        if !Self::installed(client).await {
            return None;
        }
        Self::apply_echo(
            client,
            namespace,
            "warm",
            json!({"autoscaling.knative.dev/min-scale": "1",
                   "autoscaling.knative.dev/max-scale": "1"}),
            json!({"requests": {"cpu": "100m", "memory": "128Mi"},
                   "limits": {"cpu": "2", "memory": "256Mi"}}),
        )
        .await;
        let revision = "warm-00001";
        let selector = format!("serving.knative.dev/revision={revision}");
        let pod = common::wait::eventually(180, "the Knative revision's pod, ready", || async {
            let pods = Api::<Pod>::namespaced(client.clone(), namespace)
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            let pod = pods.items.into_iter().next()?;
            is_ready(&pod).then_some(pod)
        })
        .await;
        let pod_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("a pod IP");
        let uid = pod.metadata.uid.clone().expect("a pod uid");
        Some(Self {
            activator: Self::activator_url(client).await,
            queue_proxy: format!("http://{pod_ip}:8012/").parse().expect("a URL"),
            headers: Self::headers(namespace, revision),
            activator_pid: support::process_named("activator", None)
                .expect("Knative's activator process"),
            queue_proxy_pid: support::process_named("queue", Some(&uid))
                .expect("the pod's queue-proxy"),
        })
    }
}

/// Whether the pod's Ready condition is true.
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|status| status.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// What one path measured at one level.
#[derive(Default)]
struct PathRun {
    latencies: Vec<Duration>,
    took: Duration,
    cpu: Duration,
    /// Of `cpu`, in the kernel.
    kernel: Duration,
}

async fn proxy_overhead(
    client: &Client,
    activator: &common::activator::ActivatorAddrs,
    activator_pid: u32,
    namespace: &str,
) {
    let function = "warm";
    common::functions::apply_function(
        client,
        namespace,
        function,
        // No CPU limit to speak of: the pod must not be what limits either path.
        json!({"image": "fargo.dev/echo:dev", "scale": {"min": 1, "max": 1},
               "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                             "limits": {"cpu": "2", "memory": "256Mi"}}}),
    )
    .await;
    let ip = common::wait::eventually(120, "the warm pod's IP, ready", || async {
        let pods = pods_of(client, namespace, function).await;
        let pod = pods.first().filter(|pod| is_ready(pod))?;
        pod.status.as_ref()?.pod_ip.clone()
    })
    .await;
    let direct: hyper::Uri = format!("http://{ip}:8080/").parse().expect("a URL");
    let proxied: hyper::Uri = activator
        .function_url(namespace, function)
        .parse()
        .expect("a URL");
    let nginx = Nginx::start(&ip);
    let mut paths = vec![
        ProxyPath::new("straight to the pod", "direct", direct, vec![]),
        ProxyPath::new(
            "through the activator",
            "activator",
            proxied,
            vec![activator_pid],
        ),
    ];
    // The same activator serving its connections on its main runtime (the serving threads off):
    // what they save.
    let (main_runtime, main_runtime_addrs) =
        common::activator::start_activator_with(&["--proxy-threads".into(), "0".into()]).await;
    paths.push(ProxyPath::new(
        "through the activator, on its main runtime",
        "activator (main runtime)",
        main_runtime_addrs
            .function_url(namespace, function)
            .parse()
            .expect("a URL"),
        vec![main_runtime.id()],
    ));
    // Another build's activator, to compare two versions side by side on a noisy machine.
    let _baseline = match std::env::var_os("FARGO_BENCH_BASELINE") {
        Some(binary) => {
            let binary = std::path::PathBuf::from(binary);
            let (process, addrs) = common::activator::start_activator_from(&binary).await;
            println!("baseline activator: {}", binary.display());
            paths.push(ProxyPath::new(
                "through the baseline activator",
                "baseline activator",
                addrs
                    .function_url(namespace, function)
                    .parse()
                    .expect("a URL"),
                vec![process.id()],
            ));
            Some(process)
        }
        None => None,
    };
    match &nginx {
        Some(nginx) => paths.push(ProxyPath::new(
            "through nginx",
            "nginx",
            nginx.url.clone(),
            vec![nginx.child.id()],
        )),
        None => println!(
            "nginx: skipped ({} missing: apt-get install nginx-light)",
            Nginx::BINARY
        ),
    }
    if let Some(knative) = Knative::start(client, namespace).await {
        let mut through = ProxyPath::new(
            "through Knative (activator + queue-proxy)",
            "knative",
            knative.activator.clone(),
            vec![knative.activator_pid, knative.queue_proxy_pid],
        );
        through.headers = knative.headers.clone();
        paths.push(through);
        paths.push(ProxyPath::new(
            "through Knative's queue-proxy alone",
            "queue-proxy",
            knative.queue_proxy.clone(),
            vec![knative.queue_proxy_pid],
        ));
    }
    // Connections opened and caches warm on every path before measuring (nginx's port may take
    // a moment to open).
    for path in &paths {
        common::wait::eventually(30, &format!("{} to answer", path.name), || async {
            answers_uri(&path.url, &path.headers).await.then_some(())
        })
        .await;
        load_with(&path.client, &path.url, &path.headers, 1_000, 64).await;
    }

    for concurrency in LEVELS {
        let per_round = REQUESTS_PER_LEVEL / ROUNDS;
        let mut runs: Vec<PathRun> = paths.iter().map(|_| PathRun::default()).collect();
        for round in 0..ROUNDS {
            // Rotate which path goes first, so all see the same machine noise.
            for offset in 0..paths.len() {
                let index = (round + offset) % paths.len();
                let path = &paths[index];
                let cpu_before = path.cpu_time();
                let kernel_before = path.kernel_time();
                let (latencies, took) = load_with(
                    &path.client,
                    &path.url,
                    &path.headers,
                    per_round,
                    concurrency,
                )
                .await;
                let run = &mut runs[index];
                run.cpu += path.cpu_time().saturating_sub(cpu_before);
                run.kernel += path.kernel_time().saturating_sub(kernel_before);
                run.latencies.extend(latencies);
                run.took += took;
            }
        }
        let mut figures = vec![];
        for (path, run) in paths.iter().zip(runs) {
            let rps = run.latencies.len() as f64 / run.took.as_secs_f64();
            let count = run.latencies.len() as u32;
            let (p50, p99) = support::report(
                &format!("{}, {concurrency} connections ({rps:.0} rps)", path.name),
                LABEL_WIDTH,
                run.latencies,
            );
            figures.push((
                rps,
                p50,
                p99,
                run.cpu / count.max(1),
                run.kernel / count.max(1),
            ));
        }
        let (base_rps, b50, b99, _, _) = figures[0];
        for (path, (rps, p50, p99, per_request, kernel)) in paths.iter().zip(&figures).skip(1) {
            println!(
                "{:<LABEL_WIDTH$} throughput {:.2}x  p50=+{:?} p99=+{:?}  CPU {per_request:.1?} per request ({:.1?} user, {kernel:.1?} kernel)",
                format!("  {} vs direct", path.short),
                rps / base_rps,
                p50.saturating_sub(b50),
                p99.saturating_sub(b99),
                per_request.saturating_sub(*kernel),
            );
        }
        let cpu_of = |short: &str| {
            paths
                .iter()
                .zip(&figures)
                .find(|(path, _)| path.short == short)
                .map(|(_, figures)| figures.3.as_secs_f64().max(f64::MIN_POSITIVE))
        };
        let activator_cpu = cpu_of("activator").expect("the activator's path");
        for peer in [
            "baseline activator",
            "activator (main runtime)",
            "nginx",
            "knative",
            "queue-proxy",
        ] {
            if let Some(peer_cpu) = cpu_of(peer) {
                println!(
                    "{:<LABEL_WIDTH$} {:.2}x its CPU per request",
                    format!("  activator vs {peer}"),
                    activator_cpu / peer_cpu,
                );
            }
        }
    }
}

/// Whether `url` answers a GET at all.
async fn answers_uri(url: &hyper::Uri, headers: &HeaderMap) -> bool {
    let mut request = hyper::Request::get(url.clone())
        .body(Empty::new())
        .expect("a request");
    request.headers_mut().extend(headers.clone());
    let answered =
        tokio::time::timeout(Duration::from_secs(2), keepalive_client().request(request)).await;
    matches!(answered, Ok(Ok(response)) if response.status().is_success())
}

async fn on_the_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("functions: skipped (no KUBECONFIG; `make bench` starts a cluster)");
        return;
    }
    let client = common::client().await;
    common::install_crds(&client).await;
    // The Go handler's zip is served from a real S3 server where the pods reach this machine.
    let scratch = common::s3::Scratch::new("bench-functions");
    let s3 = common::s3::S3Server::start(&scratch, common::node_address(&client).await).await;
    s3.put("go-hello.zip", common::s3::example_zip("go-hello.zip"))
        .await;
    let identity = format!("fargo-bench-functions-{}", std::process::id());
    let (activator_process, _controller, activator) = common::functions::start_function_stack(
        &client,
        &identity,
        &["--s3-endpoint".into(), s3.endpoint.clone()],
    )
    .await;

    let namespace = common::namespaces::unique_name("bench-functions");
    common::namespaces::ensure_namespace(&client, &namespace).await;
    common::s3::s3_secret(&client, &namespace).await;
    println!("load average before: {}", load_average());
    if part("cold") {
        echo_cold_starts(&client, &activator, &namespace).await;
    }
    if part("handlers") {
        handler_cold_starts(&client, &activator, &namespace).await;
    }
    if part("proxy") {
        proxy_overhead(&client, &activator, activator_process.id(), &namespace).await;
    }
    println!("load average after: {}", load_average());
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&namespace, &DeleteParams::background())
        .await;
}

/// Whether `FARGO_BENCH_PARTS` (comma-separated; every part when unset) names `part`: `cold`
/// (the echo image's cold starts, beside Knative's when it is on the cluster), `handlers` (the
/// Python and Go handlers' cold starts) or `proxy` (the proxy paths).
fn part(part: &str) -> bool {
    std::env::var("FARGO_BENCH_PARTS")
        .map_or(true, |parts| parts.split(',').any(|p| p.trim() == part))
}

/// The echo image's cold starts through fargo, through fargo with a standby pod
/// (`scale.standby`) and, when `make bench-peers` has put it on the cluster, through Knative,
/// taking turns; their timelines side by side.
async fn echo_cold_starts(
    client: &Client,
    activator: &common::activator::ActivatorAddrs,
    namespace: &str,
) {
    let knative = KnativeCold::prepare(client, namespace).await;
    let standby = StandbyCold::prepare(client, activator, namespace).await;
    let (mut knative_runs, mut standby_runs) = (vec![], vec![]);
    let fargo = cold_start(
        client,
        activator,
        namespace,
        (
            "cold",
            json!({"image": "fargo.dev/echo:dev", "timeout": "30s",
                   "scale": {"idleTimeout": "1s"}}),
        ),
        (8080, "/healthz"),
        COLD_RUNS,
        async |run| {
            standby_runs.push(standby.run(client, run).await);
            if let Some(knative) = &knative {
                knative_runs.push(knative.run(client, run).await);
            }
        },
    )
    .await;
    let p50 = |runs: &[cold_start::Run]| cold_start::median(runs, cold_start::RESPONSE);
    let ratio = |what: &str, runs: &[cold_start::Run], baseline: &[cold_start::Run]| {
        println!(
            "{:<LABEL_WIDTH$} {:.2}×",
            what,
            p50(runs).as_secs_f64() / p50(baseline).as_secs_f64()
        );
    };
    support::report(
        "cold start with a standby pod: request → response",
        LABEL_WIDTH,
        standby_runs
            .iter()
            .map(|run| run[cold_start::RESPONSE].unwrap_or_default())
            .collect(),
    );
    let Some(knative) = knative else {
        cold_start::print_side_by_side(&[("fargo", &fargo), ("fargo standby", &standby_runs)]);
        ratio(
            "cold start p50, fargo standby ÷ fargo",
            &standby_runs,
            &fargo,
        );
        return;
    };
    knative.remove().await;
    cold_start::print_side_by_side(&[
        ("fargo", &fargo),
        ("fargo standby", &standby_runs),
        ("Knative", &knative_runs),
    ]);
    ratio("cold start p50, fargo ÷ Knative", &fargo, &knative_runs);
    ratio(
        "cold start p50, fargo standby ÷ Knative",
        &standby_runs,
        &knative_runs,
    );
    ratio(
        "cold start p50, fargo standby ÷ fargo",
        &standby_runs,
        &fargo,
    );
}

/// A function of the echo image with a standby pod (`scale.standby`), cold-started in turn
/// with the others: each run scales it to zero and waits for its standby pod to run.
struct StandbyCold {
    url: hyper::Uri,
    namespace: String,
}

impl StandbyCold {
    const FUNCTION: &'static str = "cold-standby";

    async fn prepare(
        client: &Client,
        activator: &common::activator::ActivatorAddrs,
        namespace: &str,
    ) -> Self {
        common::functions::apply_function(
            client,
            namespace,
            Self::FUNCTION,
            json!({"image": "fargo.dev/echo:dev", "timeout": "30s",
                   "scale": {"idleTimeout": "1s", "standby": true}}),
        )
        .await;
        common::functions::wait_function_condition(
            client,
            namespace,
            Self::FUNCTION,
            ("Ready", "True", "ScaledToZero"),
            60,
        )
        .await;
        let standby = Self {
            url: activator
                .function_url(namespace, Self::FUNCTION)
                .parse()
                .expect("a URL"),
            namespace: namespace.to_string(),
        };
        standby.back_at_zero(client).await;
        standby
    }

    /// One cold start; then, so that the next run of any system does not share the machine
    /// with the making of a new standby pod, back to zero with a new standby pod running.
    async fn run(&self, client: &Client, run: usize) -> cold_start::Run {
        // The run before (fargo's own) ends with its response, while the node still settles
        // its new pod: start once it has, as the other systems' runs do.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let selector = format!("fargo.dev/function={}", Self::FUNCTION);
        let workload = cold_start::Workload {
            namespace: &self.namespace,
            selector: &selector,
            probe: (8080, "/healthz"),
        };
        let http = keepalive_client();
        let timeline = cold_start::capture(client, &workload, get(&http, &self.url)).await;
        print!("  standby ");
        print_run(run, &timeline);
        // Idle for longer than idleTimeout first, so that the autoscaler agrees with the scale
        // to zero rather than scale the function up again (which wakes the next standby pod).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        self.back_at_zero(client).await;
        timeline
    }

    /// Scales the function to zero and waits for its standby pod to run.
    async fn back_at_zero(&self, client: &Client) {
        let namespace = &self.namespace;
        scale_to_zero(client, namespace, Self::FUNCTION).await;
        common::wait::eventually(120, "a running standby pod", || async {
            let running =
                common::functions::running_standby_pods(client, namespace, Self::FUNCTION);
            (!running.await.is_empty()).then_some(())
        })
        .await;
    }
}

/// A Knative Service of the echo image whose revision is cold-started through Knative's
/// activator (named apart from fargo's function: each makes a Kubernetes Service of its own
/// name): between runs, Knative scales the revision to zero itself (a 6 s stable window,
/// and the 1 s grace that benches/peers/knative.sh sets).
struct KnativeCold {
    services: Api<DynamicObject>,
    deployments: Api<Deployment>,
    pods: Api<Pod>,
    namespace: String,
    url: hyper::Uri,
    headers: HeaderMap,
    selector: String,
}

impl KnativeCold {
    const SERVICE: &'static str = "knative-cold";
    const REVISION: &'static str = "knative-cold-00001";

    /// The Service, applied, once its revision's first pod was up; `None` when Knative is not
    /// on the cluster.
    async fn prepare(client: &Client, namespace: &str) -> Option<Self> {
        if !Knative::installed(client).await {
            return None;
        }
        let services = Knative::apply_echo(
            client,
            namespace,
            Self::SERVICE,
            json!({"autoscaling.knative.dev/window": "6s"}),
            json!({}),
        )
        .await;
        let cold = Self {
            services,
            deployments: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_string(),
            url: Knative::activator_url(client).await,
            headers: Knative::headers(namespace, Self::REVISION),
            selector: format!("serving.knative.dev/revision={}", Self::REVISION),
        };
        // The revision starts with one pod (Knative's initial scale), which it then scales away.
        common::wait::eventually(180, "the Knative revision's first pod, ready", || async {
            let deployment = cold.deployment().await?;
            (deployment.status?.ready_replicas? > 0).then_some(())
        })
        .await;
        Some(cold)
    }

    async fn deployment(&self) -> Option<Deployment> {
        let name = format!("{}-deployment", Self::REVISION);
        self.deployments.get_opt(&name).await.ok()?
    }

    /// Waits for the revision to be at zero, then starts it with a request.
    async fn run(&self, client: &Client, run: usize) -> cold_start::Run {
        common::wait::eventually(180, "the Knative revision at zero", || async {
            let replicas = self.deployment().await?.spec?.replicas?;
            let pods = self
                .pods
                .list(&ListParams::default().labels(&self.selector))
                .await
                .ok()?;
            // Pods being deleted drain for a while; they take no requests.
            let live = pods
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count();
            (replicas == 0 && live == 0).then_some(())
        })
        .await;
        // Knative's activator learns of the emptied endpoints through its own watch.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let workload = cold_start::Workload {
            namespace: &self.namespace,
            selector: &self.selector,
            probe: (8080, "/healthz"),
        };
        let http = keepalive_client();
        let timeline =
            cold_start::capture(client, &workload, get_with(&http, &self.url, &self.headers)).await;
        print!("  Knative:");
        print_run(run, &timeline);
        timeline
    }

    async fn remove(&self) {
        let _ = self
            .services
            .delete(Self::SERVICE, &DeleteParams::background())
            .await;
    }
}

/// The Python handler's and the Go handler's cold starts.
async fn handler_cold_starts(
    client: &Client,
    activator: &common::activator::ActivatorAddrs,
    namespace: &str,
) {
    let handler = (9002, "/ready");
    let python = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python-hello/app.py"
    ))
    .expect("the Python example");
    cold_start(
        client,
        activator,
        namespace,
        (
            "cold-python",
            json!({"runtime": "python3.11", "handler": "app.handler",
                   "code": {"inline": {"app.py": python}}, "timeout": "30s",
                   "scale": {"idleTimeout": "1s"}}),
        ),
        handler,
        HANDLER_COLD_RUNS,
        async |_| {},
    )
    .await;
    cold_start(
        client,
        activator,
        namespace,
        (
            "cold-go",
            json!({"runtime": "provided",
                   "code": {"s3": {"bucket": common::s3::BUCKET, "key": "go-hello.zip"}},
                   "timeout": "30s", "scale": {"idleTimeout": "1s"}}),
        ),
        handler,
        HANDLER_COLD_RUNS,
        async |_| {},
    )
    .await;
}

/// `fargo-runtime-api` with the Go example as its runtime client, against fargo-echo as a plain
/// HTTP server, both processes of this machine.
async fn in_pod_part() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-in-pod");
    std::fs::create_dir_all(&work).expect("a work directory");
    let bootstrap = work.join("bootstrap");
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&bootstrap)
        .arg(".")
        .current_dir(root.join("examples/go-hello"))
        .env("CGO_ENABLED", "0")
        .status()
        .expect("running go build");
    assert!(built.success(), "go build of examples/go-hello failed");

    let ports: Vec<u16> = (0..4).map(|_| common::processes::free_port()).collect();
    let sidecar = common::processes::FargoProcess::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_fargo-runtime-api"))
            .env("FARGO_RUNTIME_LISTEN", format!("127.0.0.1:{}", ports[0]))
            .env("FARGO_RUNTIME_API", format!("127.0.0.1:{}", ports[1]))
            .env(
                "FARGO_RUNTIME_PROBE_LISTEN",
                format!("127.0.0.1:{}", ports[2]),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "hello")
            .env("FARGO_FUNCTION_NAMESPACE", "bench")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("FARGO_FUNCTION_TIMEOUT_MS", "30000")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting fargo-runtime-api"),
    );
    let probe: SocketAddr = format!("127.0.0.1:{}", ports[2]).parse().unwrap();
    let idle_rss = common::wait::eventually(10, "the sidecar listening", || async {
        cold_start::answers(probe, "/live")
            .await
            .then(|| support::rss_kib(sidecar.id()))
    })
    .await;
    let runtime = common::processes::FargoProcess::new(
        std::process::Command::new(&bootstrap)
            .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{}", ports[1]))
            .spawn()
            .expect("starting the Go handler"),
    );
    common::wait::eventually(10, "the runtime asking for work", || async {
        cold_start::answers(probe, "/ready").await.then_some(())
    })
    .await;
    let echo = common::processes::FargoProcess::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_fargo-echo"))
            .env("PORT", ports[3].to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting fargo-echo"),
    );
    let echo_addr: SocketAddr = format!("127.0.0.1:{}", ports[3]).parse().unwrap();
    common::wait::eventually(10, "fargo-echo listening", || async {
        cold_start::answers(echo_addr, "/healthz")
            .await
            .then_some(())
    })
    .await;

    let handler: hyper::Uri = format!("http://127.0.0.1:{}/hello?who=bench", ports[0])
        .parse()
        .unwrap();
    let plain: hyper::Uri = format!("http://127.0.0.1:{}/hello?who=bench", ports[3])
        .parse()
        .unwrap();
    let (handler_client, plain_client) = (keepalive_client(), keepalive_client());
    load(&handler_client, &handler, 500, 16).await;
    load(&plain_client, &plain, 500, 16).await;
    println!(
        "the in-pod part (fargo-runtime-api + the Go example) vs fargo-echo as a plain HTTP server:"
    );
    for concurrency in [1, 16] {
        let (mut through, mut plain_latencies) = (vec![], vec![]);
        let (mut through_time, mut plain_time) = (Duration::ZERO, Duration::ZERO);
        let mut sidecar_cpu = Duration::ZERO;
        for round in 0..ROUNDS {
            for path in [round % 2, 1 - round % 2] {
                if path == 0 {
                    let (latencies, took) =
                        load(&plain_client, &plain, IN_POD_REQUESTS / ROUNDS, concurrency).await;
                    plain_latencies.extend(latencies);
                    plain_time += took;
                } else {
                    let before = support::cpu_time(sidecar.id());
                    let (latencies, took) = load(
                        &handler_client,
                        &handler,
                        IN_POD_REQUESTS / ROUNDS,
                        concurrency,
                    )
                    .await;
                    sidecar_cpu += support::cpu_time(sidecar.id()).saturating_sub(before);
                    through.extend(latencies);
                    through_time += took;
                }
            }
        }
        let per_invocation = sidecar_cpu / through.len() as u32;
        let through_rps = through.len() as f64 / through_time.as_secs_f64();
        let plain_rps = plain_latencies.len() as f64 / plain_time.as_secs_f64();
        let (p50, p99) = support::report(
            &format!("plain HTTP server, {concurrency} connections ({plain_rps:.0} rps)"),
            LABEL_WIDTH,
            plain_latencies,
        );
        let (h50, h99) = support::report(
            &format!("handler via the sidecar, {concurrency} conn. ({through_rps:.0} rps)"),
            LABEL_WIDTH,
            through,
        );
        println!(
            "{:<LABEL_WIDTH$} p50=+{:?} p99=+{:?}  throughput {:.2}x",
            "  in-pod part vs plain",
            h50.saturating_sub(p50),
            h99.saturating_sub(p99),
            through_rps / plain_rps,
        );
        println!(
            "{:<LABEL_WIDTH$} {per_invocation:.1?} per invocation",
            "  sidecar CPU"
        );
    }
    println!(
        "{:<LABEL_WIDTH$} idle {} KiB, after the load {} KiB",
        "sidecar resident memory (VmRSS)",
        idle_rss,
        support::rss_kib(sidecar.id())
    );
    drop((runtime, echo, sidecar));
}

/// The machine is shared: what else ran shows in the load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn main() {
    support::run(async {
        in_pod_part().await;
        on_the_cluster().await;
    });
}
