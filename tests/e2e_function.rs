//! ServerlessFunction end to end with a real node: requests go through the real `fargo
//! activator` (run out of cluster on 127.0.0.1, reaching pod IPs directly) to fargo-echo pods on
//! the local cluster's node, and the real `fargo controller` scales them from what the activator
//! reports on `/stats`.
//!
//! Function pods carry no toleration, so they land on the real node, never on a kwok node.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use common::activator::ActivatorAddrs;
use common::functions::{
    apply_function, function_replicas, running_standby_pods, shared_function_stack,
    wait_function_condition,
};
use common::http::http_request;
use common::namespaces::with_temp_ns;
use common::wait::eventually;
use common::{client, install_crds, kubectl};
use fargo::api::ServerlessFunction;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// A client, the CRDs, and the activator and controller shared by this file's tests (the
/// controller leading).
async fn setup() -> (Client, ActivatorAddrs) {
    let client = client().await;
    install_crds(&client).await;
    let activator = shared_function_stack(&client).await;
    (client, activator)
}

/// The function's pods that are not being deleted.
async fn live_pods(client: &Client, namespace: &str, name: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("fargo.dev/function={name}")))
        .await
        .map(|list| list.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Waits until the function is Ready while scaled to zero, with no pod.
async fn wait_at_zero(client: &Client, namespace: &str, name: &str) {
    wait_function_condition(
        client,
        namespace,
        name,
        ("Ready", "True", "ScaledToZero"),
        60,
    )
    .await;
    assert_eq!(function_replicas(client, namespace, name).await, Some(0));
    assert!(live_pods(client, namespace, name).await.is_empty());
}

#[tokio::test]
async fn a_function_at_zero_answers_its_first_request_through_the_activator() {
    let (client, activator) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "hello",
            json!({"image": "fargo.dev/echo:dev"}),
        )
        .await;
        wait_at_zero(&client, &ns, "hello").await;

        let url = format!("{}greet?name=fargo", activator.function_url(&ns, "hello"));
        let (status, body) = http_request("POST", &url, Some("{\"hi\":1}"))
            .await
            .expect("an answer from the activator");
        assert_eq!(status, 200, "{body}");
        let echo: Value = serde_json::from_str(&body).expect("the echo's JSON");
        // The pod saw the request as sent, the activator's route prefix cut off.
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], "/greet");
        assert_eq!(echo["query"]["name"], "fargo");
        assert_eq!(echo["body"], "{\"hi\":1}");
        assert_eq!(echo["headers"]["x-forwarded-for"][0], "127.0.0.1");

        // It came from a pod of this function, on the real node, which the poke started.
        assert_eq!(function_replicas(&client, &ns, "hello").await, Some(1));
        let pods = live_pods(&client, &ns, "hello").await;
        let hostname = echo["hostname"].as_str().unwrap_or_default();
        let pod = pods
            .iter()
            .find(|pod| pod.name_any() == hostname)
            .unwrap_or_else(|| panic!("no pod {hostname:?} among the function's pods"));
        let spec = pod.spec.clone().unwrap_or_default();
        assert_eq!(spec.node_name.as_deref(), Some("fargo-node"));
        let ip = pod
            .status
            .clone()
            .unwrap_or_default()
            .pod_ip
            .unwrap_or_default();
        assert!(ip.starts_with("10.244.0."), "pod IP {ip}");
    })
    .await;
}

/// Waits for the function's one running standby pod, which is not `but`.
async fn wait_standby(client: &Client, namespace: &str, name: &str, but: Option<&str>) -> Pod {
    eventually(180, "a running standby pod", || async move {
        let mut pods = running_standby_pods(client, namespace, name).await;
        pods.retain(|pod| pod.metadata.uid.as_deref() != but);
        (pods.len() == 1).then(|| pods.remove(0))
    })
    .await
}

#[tokio::test]
async fn a_standby_pod_serves_the_first_request_and_another_waits_once_back_at_zero() {
    let (client, activator) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "ready",
            json!({"image": "fargo.dev/echo:dev", "args": ["--ignored-by-the-placeholder"],
                   "scale": {"standby": true, "idleTimeout": "2s"}}),
        )
        .await;
        wait_at_zero(&client, &ns, "ready").await;
        // A pod of the function waits, started, running the placeholder (never ready: it
        // listens on no port); the function's Service does not select it, so the function is
        // still at zero.
        let standby = wait_standby(&client, &ns, "ready", None).await;
        let spec = standby.spec.clone().unwrap_or_default();
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("fargo.dev/standby:dev")
        );
        assert_eq!(spec.node_name.as_deref(), Some("fargo-node"));
        assert!(live_pods(&client, &ns, "ready").await.is_empty());

        let (status, body) = http_request("GET", &activator.function_url(&ns, "ready"), None)
            .await
            .expect("an answer from the activator");
        assert_eq!(status, 200, "{body}");
        // The standby pod answered: woken, it runs the function's image.
        let echo: Value = serde_json::from_str(&body).expect("the echo's JSON");
        assert_eq!(echo["hostname"], Value::from(standby.name_any()));

        // It became the function's one pod: its ReplicaSet adopted it, and any pod of the
        // ReplicaSet's own is gone.
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        eventually(
            60,
            "the woken pod, the function's only one, adopted",
            || {
                let (client, ns, pods, standby) = (&client, &ns, &pods, &standby);
                async move {
                    let live = live_pods(client, ns, "ready").await;
                    let woken = pods.get(&standby.name_any()).await.ok()?;
                    let adopted = woken
                        .owner_references()
                        .iter()
                        .any(|owner| owner.kind == "ReplicaSet" && owner.controller == Some(true));
                    (live.len() == 1 && live[0].metadata.uid == standby.metadata.uid && adopted)
                        .then_some(woken)
                }
            },
        )
        .await;
        let woken = pods.get(&standby.name_any()).await.expect("the woken pod");
        let spec = woken.spec.clone().unwrap_or_default();
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("fargo.dev/echo:dev")
        );
        assert!(!woken.labels().contains_key("fargo.dev/standby-of"));

        // Back at zero, the woken pod goes with its ReplicaSet's scale, and a new standby pod
        // waits in its place.
        eventually(180, "ready back at zero replicas", || {
            let (client, ns) = (&client, &ns);
            async move { (function_replicas(client, ns, "ready").await? == 0).then_some(()) }
        })
        .await;
        let next = wait_standby(&client, &ns, "ready", standby.metadata.uid.as_deref()).await;
        assert_ne!(next.metadata.uid, standby.metadata.uid);
        let (status, body) = http_request("GET", &activator.function_url(&ns, "ready"), None)
            .await
            .expect("an answer from the activator");
        assert_eq!(status, 200, "{body}");
        // Woken or not yet, the standby pod races the pod the ReplicaSet starts of its own
        // before it adopts the standby one; either may answer.
        let echo: Value = serde_json::from_str(&body).expect("the echo's JSON");
        let hostname = echo["hostname"].as_str().unwrap_or_default();
        assert!(hostname.starts_with("ready-"), "answered by {hostname}");
    })
    .await;
}

#[tokio::test]
async fn a_function_scales_out_under_concurrent_load_and_never_beyond_scale_max() {
    let (client, activator) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "busy",
            json!({"image": "fargo.dev/echo:dev", "concurrency": {"target": 2},
                   "scale": {"max": 3}}),
        )
        .await;
        wait_at_zero(&client, &ns, "busy").await;

        // Every replica count the Deployment asks for while the load runs.
        let most = Arc::new(AtomicI32::new(0));
        let watch = {
            let most = most.clone();
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            tokio::spawn(async move {
                let config = watcher::Config::default().fields("metadata.name=busy");
                let mut events = watcher(deployments, config).applied_objects().boxed();
                while let Some(event) = events.next().await {
                    if let Ok(deployment) = event {
                        let replicas = deployment.spec.and_then(|s| s.replicas).unwrap_or(0);
                        most.fetch_max(replicas, Ordering::SeqCst);
                    }
                }
            })
        };

        // 30 clients, each sending requests that take 2 s, one after another, for 20 s.
        let url = format!("{}?sleep=2000", activator.function_url(&ns, "busy"));
        let started = Instant::now();
        let answers: Vec<(u16, String)> = futures::stream::iter(0..30)
            .map(|_| {
                let url = url.clone();
                async move {
                    let mut answers = vec![];
                    while started.elapsed() < Duration::from_secs(20) {
                        let (status, body) = http_request("GET", &url, None)
                            .await
                            .unwrap_or_else(|e| panic!("no answer under load: {e}"));
                        let echo: Value = serde_json::from_str(&body).unwrap_or_default();
                        let host = echo["hostname"].as_str().unwrap_or(&body).to_string();
                        answers.push((status, host));
                    }
                    answers
                }
            })
            .buffer_unordered(30)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        watch.abort();

        let failed: Vec<&(u16, String)> = answers.iter().filter(|(s, _)| *s != 200).collect();
        assert!(failed.is_empty(), "requests failed under load: {failed:?}");
        let most = most.load(Ordering::SeqCst);
        assert!(
            most >= 2,
            "30 requests at a target of 2 did not scale out: {most}"
        );
        assert!(most <= 3, "scaled beyond scale.max 3: {most}");
        let pods: BTreeSet<&str> = answers.iter().map(|(_, host)| host.as_str()).collect();
        assert!(pods.len() >= 2, "every answer came from one pod: {pods:?}");

        // The autoscaler records when the function was last asked for.
        eventually(60, "lastRequestTime recorded", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let function = Api::<ServerlessFunction>::namespaced(client, &ns)
                    .get("busy")
                    .await
                    .ok()?;
                function.status?.last_request_time.map(|_| ())
            }
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn an_idle_function_returns_to_zero_after_its_idle_timeout() {
    let (client, activator) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "sleepy",
            json!({"image": "fargo.dev/echo:dev", "scale": {"idleTimeout": "5s"}}),
        )
        .await;
        wait_at_zero(&client, &ns, "sleepy").await;
        let (status, body) = http_request("GET", &activator.function_url(&ns, "sleepy"), None)
            .await
            .expect("an answer from the activator");
        assert_eq!(status, 200, "{body}");
        assert_eq!(function_replicas(&client, &ns, "sleepy").await, Some(1));

        eventually(180, "sleepy back at zero replicas", || {
            let client = client.clone();
            let ns = ns.clone();
            async move { (function_replicas(&client, &ns, "sleepy").await? == 0).then_some(()) }
        })
        .await;
        wait_function_condition(&client, &ns, "sleepy", ("ScaledToZero", "True", "Idle"), 60).await;
        wait_function_condition(
            &client,
            &ns,
            "sleepy",
            ("Ready", "True", "ScaledToZero"),
            60,
        )
        .await;
        eventually(60, "sleepy's pod gone", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                live_pods(&client, &ns, "sleepy")
                    .await
                    .is_empty()
                    .then_some(())
            }
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_function_whose_image_cannot_start_answers_at_once_naming_the_function_and_why() {
    let (client, activator) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "broken",
            // The node must not try a registry on the internet for the image.
            json!({"image": "fargo.dev/does-not-exist:1", "imagePullPolicy": "Never",
                   "timeout": "60s"}),
        )
        .await;
        wait_at_zero(&client, &ns, "broken").await;

        // The first request starts the pod; once the kubelet gives up on its image, the request
        // is answered at once with the reason, not held for its minute.
        let url = activator.function_url(&ns, "broken");
        let sent = Instant::now();
        let (status, body) = http_request("GET", &url, None)
            .await
            .expect("an answer from the activator");
        assert_eq!(status, 502, "{body}");
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "held {:?}, near its timeout",
            sent.elapsed()
        );
        assert!(
            body.contains(&format!("function {ns}/broken cannot start")),
            "{body}"
        );
        assert!(body.contains("ErrImageNeverPull"), "{body}");
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_slice_not_made_for_the_functions_service_gets_none_of_its_requests() {
    let (client, activator) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        // Where the forged slices point: a server on this machine, on the node's bridge
        // address (the API server refuses loopback addresses in a slice), that counts
        // connections. It could as well be another tenant's pod or the API server.
        let forged_target = tokio::net::TcpListener::bind("10.244.0.1:0")
            .await
            .expect("a port on the node's bridge, 10.244.0.1");
        let port = forged_target.local_addr().expect("bound address").port();
        let connections = Arc::new(AtomicI32::new(0));
        let counted = connections.clone();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = forged_target.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged")
                    .await;
            }
        });

        apply_function(
            &client,
            &ns,
            "victim",
            json!({"image": "fargo.dev/echo:dev", "timeout": "3s"}),
        )
        .await;
        wait_at_zero(&client, &ns, "victim").await;
        let service_uid =
            Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), &ns)
                .get("victim")
                .await
                .expect("the function's Service")
                .metadata
                .uid
                .expect("a uid");
        let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
            Api::namespaced(client.clone(), &ns);
        let forged = |name: &str, metadata: Value| {
            let mut slice = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": metadata,
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.244.0.1"], "conditions": {"ready": true}}],
            });
            slice["metadata"]["name"] = json!(name);
            serde_json::from_value::<k8s_openapi::api::discovery::v1::EndpointSlice>(slice)
                .expect("a forged slice")
        };
        let labels =
            json!({"kubernetes.io/service-name": "victim", "fargo.dev/function": "victim"});
        // The labels alone, as a tenant allowed to write EndpointSlices sets them; and the
        // Service as controlling owner too, but not the EndpointSlice controller's label (with
        // it, that controller would delete or rewrite the slice itself).
        for slice in [
            forged("victim-forged-labels", json!({"labels": labels})),
            forged(
                "victim-forged-owner",
                json!({
                    "labels": labels,
                    "ownerReferences": [{
                        "apiVersion": "v1", "kind": "Service", "name": "victim",
                        "uid": service_uid, "controller": true,
                    }],
                }),
            ),
        ] {
            slices
                .create(&Default::default(), &slice)
                .await
                .expect("creating a forged EndpointSlice");
        }
        // The activator's EndpointSlice watch is not ordered with the test; give it a moment.
        tokio::time::sleep(Duration::from_secs(1)).await;

        for _ in 0..3 {
            let (status, body) = http_request("GET", &activator.function_url(&ns, "victim"), None)
                .await
                .expect("an answer from the activator");
            assert_ne!(
                body, "forged",
                "status {status}: the forged slice got the request"
            );
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            0,
            "the activator connected to an address from a forged EndpointSlice"
        );
        server.abort();
    })
    .await;
}

/// `lastTick` of schedule `name` in the function's schedule-state annotation.
async fn last_tick(client: &Client, namespace: &str, function: &str, name: &str) -> Option<String> {
    let function = Api::<ServerlessFunction>::namespaced(client.clone(), namespace)
        .get(function)
        .await
        .ok()?;
    let state: Value =
        serde_json::from_str(function.annotations().get("fargo.dev/schedule-state")?).ok()?;
    state[name]["lastTick"].as_str().map(str::to_string)
}

/// Requests the function's pods logged (fargo-echo with `ECHO_LOG_REQUESTS=1`) for schedule
/// `name`: when the kubelet received each line, and the line.
fn logged_ticks(namespace: &str, function: &str, name: &str) -> Vec<(jiff::Timestamp, String)> {
    let output = kubectl()
        .args(["logs", "-n", namespace, "--timestamps", "--tail=-1"])
        .arg(format!("--selector=fargo.dev/function={function}"))
        .output()
        .expect("running kubectl logs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&format!("schedule={name} ")))
        .filter_map(|line| {
            let (at, text) = line.split_once(' ')?;
            Some((at.parse().ok()?, text.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn a_schedule_fires_on_time_exactly_once_per_tick_and_reaches_the_pod() {
    let (client, activator) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        let body = "{\"tick\":true}";
        apply_function(
            &client,
            &ns,
            "ticker",
            json!({
                "image": "fargo.dev/echo:dev",
                "env": [{"name": "ECHO_LOG_REQUESTS", "value": "1"}],
                // One pod for both ticks, so its log holds both.
                "scale": {"idleTimeout": "10m"},
                "triggers": {"schedules": [
                    {"name": "every-minute", "cron": "* * * * *", "body": body}
                ]},
            }),
        )
        .await;
        wait_at_zero(&client, &ns, "ticker").await;

        // Armed at some instant; then each tick is recorded before it is sent.
        let mut ticks: Vec<jiff::Timestamp> = vec![];
        for round in 1..=2 {
            let previous = ticks.last().copied();
            let tick = eventually(150, &format!("tick {round} recorded"), || {
                let client = client.clone();
                let ns = ns.clone();
                async move {
                    let text = last_tick(&client, &ns, "ticker", "every-minute").await?;
                    let tick: jiff::Timestamp = text.parse().ok()?;
                    let on_the_minute = tick.as_nanosecond() % 60_000_000_000 == 0;
                    (on_the_minute && Some(tick) != previous).then_some(tick)
                }
            })
            .await;
            if let Some(previous) = previous {
                assert_eq!(
                    tick.as_second() - previous.as_second(),
                    60,
                    "ticks {previous} then {tick}: one skipped"
                );
            }
            ticks.push(tick);
            eventually(90, &format!("the pod to log tick {round}"), || {
                let ns = ns.clone();
                async move {
                    (logged_ticks(&ns, "ticker", "every-minute").len() >= round).then_some(())
                }
            })
            .await;
        }

        // Nothing more is sent for the second tick.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let logged = logged_ticks(&ns, "ticker", "every-minute");
        assert_eq!(logged.len(), 2, "{logged:?}");
        for ((at, line), tick) in logged.iter().zip(&ticks) {
            assert!(line.starts_with("POST / "), "{line}");
            assert!(line.ends_with(&format!("body={}B", body.len())), "{line}");
            // On time: within the minute of its tick, not before it.
            let after = at.as_nanosecond() - tick.as_nanosecond();
            assert!(
                (0..60_000_000_000).contains(&after),
                "tick {tick} reached the pod at {at}"
            );
        }
        let recorded = last_tick(&client, &ns, "ticker", "every-minute").await;
        assert_eq!(recorded.and_then(|t| t.parse().ok()), Some(ticks[1]));
        let stats = activator
            .function_stats(&ns, "ticker")
            .await
            .expect("the activator's stats for ticker");
        assert_eq!(stats.requests, 2, "{stats:?}");
    })
    .await;
}
