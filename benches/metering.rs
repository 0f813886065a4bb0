//! What metering costs on the invocation path: two real `fargo activator` processes side by
//! side in front of the same warm pod, one metering (the default) and one run with
//! `--metering false`, the same requests through each in alternating rounds; each process's CPU
//! time per request (from `/proc/<pid>/task/*/schedstat`) and the ratio.
//!
//! Two functions: the echo image (an HTTP function: the activator times the forward) and a
//! Python handler (the sidecar's billed duration comes back in a header the activator reads).
//! The sidecar's own part — two response headers — is not split out.
//!
//! `make bench` runs it; it needs KUBECONFIG and the images of `make images` on the node.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use serde_json::json;

const ROUNDS: usize = 10;
const LABEL_WIDTH: usize = 44;

type Keepalive = HttpClient<HttpConnector, Empty<Bytes>>;

async fn load(client: &Keepalive, url: &hyper::Uri, count: usize, concurrency: usize) {
    futures::stream::iter(0..count)
        .map(|_| async {
            let response = client.get(url.clone()).await.expect("an answer");
            assert!(response.status().is_success(), "{}", response.status());
            let _ = response.into_body().collect().await;
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
}

/// `requests` per activator in [`ROUNDS`] alternating rounds; prints CPU per request of each.
async fn compare(
    what: &str,
    (metered, metered_pid): (&hyper::Uri, u32),
    (unmetered, unmetered_pid): (&hyper::Uri, u32),
    requests: usize,
    concurrency: usize,
) {
    let client: Keepalive = HttpClient::builder(TokioExecutor::new()).build_http();
    // Connections open and caches warm on both paths first.
    load(&client, metered, requests / 10, concurrency).await;
    load(&client, unmetered, requests / 10, concurrency).await;
    let per_round = requests / ROUNDS;
    let (mut on, mut off) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        for path in [round % 2, 1 - round % 2] {
            let (url, pid, total) = if path == 0 {
                (metered, metered_pid, &mut on)
            } else {
                (unmetered, unmetered_pid, &mut off)
            };
            let before = support::cpu_time(pid);
            load(&client, url, per_round, concurrency).await;
            *total += support::cpu_time(pid).saturating_sub(before);
        }
    }
    let count = (per_round * ROUNDS) as u32;
    let (on, off) = (on / count, off / count);
    println!("{what}: {count} requests per activator, {concurrency} connections");
    println!("{:<LABEL_WIDTH$} {on:.1?} CPU per request", "  metering on");
    println!(
        "{:<LABEL_WIDTH$} {off:.1?} CPU per request",
        "  metering off"
    );
    println!(
        "{:<LABEL_WIDTH$} {:.3}x ({:+.1} µs per request)",
        "  on / off",
        on.as_secs_f64() / off.as_secs_f64().max(f64::MIN_POSITIVE),
        (on.as_secs_f64() - off.as_secs_f64()) * 1e6
    );
}

async fn on_the_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("metering: skipped (no KUBECONFIG; `make bench` starts a cluster)");
        return;
    }
    let client = common::client().await;
    common::install_crds(&client).await;
    let identity = format!("fargo-bench-metering-{}", std::process::id());
    let (metered_process, _controller, metered) =
        common::functions::start_function_stack(&client, &identity, &[]).await;
    let (unmetered_process, unmetered) =
        common::activator::start_activator_with(&["--metering".into(), "false".into()]).await;

    let namespace = common::namespaces::unique_name("bench-metering");
    common::namespaces::ensure_namespace(&client, &namespace).await;
    let python = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python-hello/app.py"
    ))
    .expect("the Python example");
    let functions = [
        (
            "echo",
            json!({"image": "fargo.dev/echo:dev", "scale": {"min": 1, "max": 1},
                   "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                 "limits": {"cpu": "2", "memory": "256Mi"}}}),
        ),
        (
            "python",
            json!({"runtime": "python3.11", "handler": "app.handler",
                   "code": {"inline": {"app.py": python}}, "scale": {"min": 1, "max": 1}}),
        ),
    ];
    for (name, spec) in &functions {
        common::functions::apply_function(&client, &namespace, name, spec.clone()).await;
    }
    for (name, _) in &functions {
        common::functions::wait_function_condition(
            &client,
            &namespace,
            name,
            ("Ready", "True", "Serving"),
            180,
        )
        .await;
    }
    // Both activators serve the function once their own watches list its pod.
    for (name, _) in &functions {
        for activator in [&metered, &unmetered] {
            let url = activator.function_url(&namespace, name);
            common::wait::eventually(60, &format!("{url} to answer"), || {
                let url = url.clone();
                async move {
                    let (status, _) = common::http::http_request("GET", &url, None).await.ok()?;
                    (status == 200).then_some(())
                }
            })
            .await;
        }
    }
    let uri = |activator: &common::activator::ActivatorAddrs, name: &str| -> hyper::Uri {
        activator
            .function_url(&namespace, name)
            .parse()
            .expect("a URL")
    };
    let pids = (metered_process.id(), unmetered_process.id());
    compare(
        "HTTP image (echo)",
        (&uri(&metered, "echo"), pids.0),
        (&uri(&unmetered, "echo"), pids.1),
        40_000,
        16,
    )
    .await;
    compare(
        "Python handler",
        (&uri(&metered, "python"), pids.0),
        (&uri(&unmetered, "python"), pids.1),
        4_000,
        1,
    )
    .await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&namespace, &DeleteParams::background())
        .await;
}

fn main() {
    support::run(on_the_cluster());
}
