//! Requests lost while the activators restart: a steady 500 requests per second from this
//! machine to the `fargo-activator` Service (kube-proxy spreads them over both replicas) for a
//! warm function, while the activator Deployment rolls five times — every replica gets SIGTERM,
//! drains and is replaced. Every request is counted: answered 200, answered otherwise, or failed (connection
//! reset, refused, timed out); a request the client retried on its own counts once.
//!
//! It needs fargo installed in the cluster by Helm, as `make dev` leaves it (it is skipped, saying
//! so, otherwise), and leaves the release as it found it, rolled.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

const NAMESPACE: &str = "fargo-system";
const ACTIVATOR: &str = "fargo-activator";
const RATE: u32 = 500;
/// Rolls of the activator Deployment in one run.
const ROLLS: usize = 5;
/// Load before the first roll, between rolls and after the last.
const CALM: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

type Keepalive = HttpClient<HttpConnector, Empty<Bytes>>;

/// What became of the requests, by outcome ("200", "503", "error: …").
#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

async fn one_request(client: Keepalive, uri: hyper::Uri, tally: Arc<Mutex<Tally>>) {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, async {
        let response = client.get(uri).await?;
        let status = response.status();
        // The body too: a response cut short is a lost request.
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
    })
    .await
    {
        Ok(Ok(status)) => status.as_u16().to_string(),
        Ok(Err(error)) => format!("error: {}", fargo::telemetry::error_chain(error.as_ref())),
        Err(_) => "error: timed out".into(),
    };
    let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
    *tally.outcomes.entry(outcome).or_default() += 1;
    tally.latencies.push(started.elapsed());
}

/// Whether the activator Deployment has rolled out `generation` completely and the old pods
/// have finished draining (the Deployment stops counting them as soon as they terminate).
async fn rolled_out(client: &kube::Client, generation: i64) -> bool {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let Ok(deployment) = deployments.get(ACTIVATOR).await else {
        return false;
    };
    let spec = deployment.spec.unwrap_or_default();
    let wanted = spec.replicas.unwrap_or(1);
    let status = deployment.status.unwrap_or_default();
    let selector = spec
        .selector
        .match_labels
        .unwrap_or_default()
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let Ok(pods) = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels(&selector))
        .await
    else {
        return false;
    };
    status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) == wanted
        && status.ready_replicas.unwrap_or(0) == wanted
        && pods.items.len() == wanted as usize
}

async fn on_the_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("activator_restart: skipped (no KUBECONFIG; run `make dev` first)");
        return;
    }
    let client = common::client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let Ok(Some(_)) = deployments.get_opt(ACTIVATOR).await else {
        println!("activator_restart: skipped (fargo is not installed; run `make dev` first)");
        return;
    };
    let cluster_ip = Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .get(ACTIVATOR)
        .await
        .expect("Service fargo-activator")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");

    // A warm function: one pod at all times, so every request is a proxied one.
    let namespace = common::namespaces::unique_name("bench-restart");
    common::namespaces::ensure_namespace(&client, &namespace).await;
    let function = json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "ServerlessFunction",
        "metadata": {"name": "echo", "namespace": namespace},
        "spec": {"image": "fargo.dev/echo:dev", "scale": {"min": 1, "initial": 1}},
    });
    Api::<fargo::api::function::ServerlessFunction>::namespaced(client.clone(), &namespace)
        .patch(
            "echo",
            &PatchParams::apply(common::TEST_MANAGER).force(),
            &Patch::Apply(&function),
        )
        .await
        .expect("applying the function");
    let uri: hyper::Uri = format!("http://{cluster_ip}/{namespace}/echo/")
        .parse()
        .expect("a URI");
    let http: Keepalive = HttpClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    common::wait::eventually(120, "the function to answer through the activators", || {
        let (http, uri) = (http.clone(), uri.clone());
        async move {
            let response = http.get(uri).await.ok()?;
            response.status().is_success().then_some(())
        }
    })
    .await;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let load = tokio::spawn({
        let (http, uri, tally, stop) = (http.clone(), uri.clone(), tally.clone(), stop.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut requests = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        requests.spawn(one_request(http.clone(), uri.clone(), tally.clone()));
                    }
                }
                // Reap as we go, so the set stays small.
                while requests.try_join_next().is_some() {}
            }
            // The requests in flight are counted too.
            while requests.join_next().await.is_some() {}
        }
    });

    tokio::time::sleep(CALM).await;
    let mut rolls = Vec::new();
    for _ in 0..ROLLS {
        let started = Instant::now();
        let restarted_at = jiff::Timestamp::now().to_string();
        let rolled = deployments
            .patch(
                ACTIVATOR,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {
                    "kubectl.kubernetes.io/restartedAt": restarted_at,
                }}}}})),
            )
            .await
            .expect("restarting the activator Deployment");
        let generation = rolled.metadata.generation.unwrap_or(0);
        common::wait::eventually(300, "the activator Deployment to roll out", || {
            let client = client.clone();
            async move { rolled_out(&client, generation).await.then_some(()) }
        })
        .await;
        rolls.push(started.elapsed());
        tokio::time::sleep(CALM).await;
    }
    stop.cancel();
    let _ = load.await;

    let mut tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    let sent: u64 = tally.outcomes.values().sum();
    let answered = tally.outcomes.get("200").copied().unwrap_or(0);
    tally.latencies.sort();
    let percentile = |p: f64| support::percentile(&tally.latencies, p);
    println!(
        "{ROLLS} rolls of the activator Deployment under {RATE} rps, each {rolls:.1?} until the \
         old pods were gone, {CALM:?} apart"
    );
    println!(
        "  sent {sent}, answered 200: {answered}, lost: {} — latency p50 {:.1?} p99 {:.1?} max {:.1?}",
        sent - answered,
        percentile(0.50),
        percentile(0.99),
        percentile(1.0)
    );
    for (outcome, count) in &tally.outcomes {
        if outcome != "200" {
            println!("  {count:>6} × {outcome}");
        }
    }
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&namespace, &DeleteParams::background())
        .await;
}

fn main() {
    support::run(on_the_cluster());
}
