//! Asynchronous invocations against the local cluster, in one run: accepting an `Event` (stored
//! in NATS JetStream before its 202) against a synchronous invocation of the same warm function
//! through the same Invoke API, one connection and sixteen; delivery latency from the 202 to the
//! `onSuccess` record at a steady 200 events/s; and the activator's resident memory with its
//! consumers running. NATS is the real server (from the Go module), on this machine.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::api::{Api, DeleteParams};
use serde_json::json;

const LABEL_WIDTH: usize = 52;
/// Invocations per measured series.
const INVOCATIONS: usize = 2_000;
/// The steady rate of the delivery series, and how long it lasts.
const RATE: u64 = 200;
const RATE_SECONDS: u64 = 10;

type Client = HttpClient<HttpConnector, Full<Bytes>>;

fn http_client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HttpClient::builder(TokioExecutor::new()).build(connector)
}

/// One invocation; its status and how long the answer took.
async fn invoke(client: &Client, url: &hyper::Uri, kind: &str, payload: Bytes) -> (u16, Duration) {
    let request = hyper::Request::post(url.clone())
        .header("x-amz-invocation-type", kind)
        .body(Full::new(payload))
        .expect("a request");
    let start = Instant::now();
    let response = client
        .request(request)
        .await
        .expect("the activator answers");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    (status, start.elapsed())
}

/// `count` invocations over `connections` connections; the latencies and the rate.
async fn series(
    url: &hyper::Uri,
    kind: &'static str,
    connections: usize,
    count: usize,
) -> (Vec<Duration>, f64) {
    let payload = Bytes::from(format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000)));
    let start = Instant::now();
    let per_connection = count / connections;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (url, payload) = (url.clone(), payload.clone());
            tokio::spawn(async move {
                let client = http_client();
                let mut samples = Vec::with_capacity(per_connection);
                for _ in 0..per_connection {
                    let (status, took) = invoke(&client, &url, kind, payload.clone()).await;
                    let expected = if kind == "Event" { 202 } else { 200 };
                    assert_eq!(status, expected, "{kind} invocation");
                    samples.push(took);
                }
                samples
            })
        })
        .collect();
    let mut samples = vec![];
    for task in tasks {
        samples.extend(task.await.expect("a series task"));
    }
    let rate = samples.len() as f64 / start.elapsed().as_secs_f64();
    (samples, rate)
}

async fn on_the_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("events: skipped (no KUBECONFIG; `make bench` starts a cluster)");
        return;
    }
    let client = common::client().await;
    common::install_crds(&client).await;
    let node_ip = common::node_address(&client).await;
    let scratch = common::s3::Scratch::new("bench-events");
    let nats = common::nats::NatsServer::start(&scratch, node_ip).await;
    let (activator_process, activator) = common::activator::start_activator_with(&[
        "--nats-url".into(),
        nats.url(),
        "--invoke-auth".into(),
        "None".into(),
    ])
    .await;
    let identity = format!("fargo-bench-events-{}", std::process::id());
    common::functions::controller_for_the_process(&client, &activator, &identity, &[]).await;
    let records = common::records::Records::start(node_ip).await;

    let namespace = common::namespaces::unique_name("bench-events");
    common::namespaces::ensure_namespace(&client, &namespace).await;
    common::functions::apply_function(
        &client,
        &namespace,
        "echo",
        json!({"image": "fargo.dev/echo:dev", "scale": {"min": 1, "max": 1},
               "async": {"onSuccess": {"url": records.url("delivered")}}}),
    )
    .await;
    common::functions::wait_function_condition(
        &client,
        &namespace,
        "echo",
        ("Ready", "True", "Serving"),
        120,
    )
    .await;
    let url: hyper::Uri = format!(
        "{}/2015-03-31/functions/{namespace}%2Fecho/invocations",
        activator.url()
    )
    .parse()
    .expect("a URL");
    let idle_rss = support::rss_kib(activator_process.id());

    // Warm the connection pool and the stream.
    series(&url, "RequestResponse", 1, 200).await;
    series(&url, "Event", 1, 200).await;
    for connections in [1, 16] {
        let (sync, sync_rate) = series(&url, "RequestResponse", connections, INVOCATIONS).await;
        let (event, event_rate) = series(&url, "Event", connections, INVOCATIONS).await;
        let (sync_p50, sync_p99) = support::report(
            &format!("sync invoke, 1 KB, {connections} conn"),
            LABEL_WIDTH,
            sync,
        );
        let (event_p50, event_p99) = support::report(
            &format!("Event accepted (stored), 1 KB, {connections} conn"),
            LABEL_WIDTH,
            event,
        );
        println!(
            "{:<LABEL_WIDTH$} p50 {:.2}x, p99 {:.2}x of sync; {:.0}/s against {:.0}/s ({:.2}x)",
            format!("Event against sync, {connections} conn"),
            event_p50.as_secs_f64() / sync_p50.as_secs_f64(),
            event_p99.as_secs_f64() / sync_p99.as_secs_f64(),
            event_rate,
            sync_rate,
            event_rate / sync_rate
        );
    }

    // Delivery: events at a steady rate, each stamped with its index; latency from the 202 to
    // the record's arrival.
    let sent: Arc<std::sync::Mutex<Vec<Option<Instant>>>> = Arc::default();
    let total = (RATE * RATE_SECONDS) as usize;
    sent.lock().unwrap().resize(total, None);
    let before = records.received.lock().unwrap().len();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut tasks = vec![];
    for index in 0..total {
        ticker.tick().await;
        let (url, sent) = (url.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let payload = Bytes::from(json!({"index": index}).to_string());
            let (status, _) = invoke(&http_client(), &url, "Event", payload).await;
            assert_eq!(status, 202);
            sent.lock().unwrap()[index] = Some(Instant::now());
        }));
    }
    for task in tasks {
        task.await.expect("a sender");
    }
    let received = common::wait::eventually(120, "every record of the steady series", || {
        let received = records.received.clone();
        async move {
            let all = received.lock().unwrap();
            let ours: Vec<(usize, Instant)> = all[before..]
                .iter()
                .filter_map(|(_, record, at)| {
                    let index = record["requestPayload"]["index"].as_u64()?;
                    Some((usize::try_from(index).ok()?, *at))
                })
                .collect();
            (ours.len() >= total).then_some(ours)
        }
    })
    .await;
    let sent: Vec<Option<Instant>> = sent.lock().unwrap().clone();
    let delays: Vec<Duration> = received
        .iter()
        .filter_map(|(index, at)| Some(at.saturating_duration_since(sent.get(*index).copied()??)))
        .collect();
    support::report(
        &format!("Event 202 to onSuccess record, {RATE}/s"),
        LABEL_WIDTH,
        delays,
    );
    println!(
        "{:<LABEL_WIDTH$} idle {} KiB, after the series {} KiB",
        "activator resident memory (VmRSS), consumers on",
        idle_rss,
        support::rss_kib(activator_process.id())
    );
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .delete(&namespace, &DeleteParams::background())
        .await;
}

fn main() {
    support::run(on_the_cluster());
}
