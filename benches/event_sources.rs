//! Event sources against the local cluster, in one run:
//! - the photo-resize example: from an upload to its thumbnail written, warm (one pod kept) and
//!   from zero, with versitygw as a pod publishing its notifications to NATS;
//! - queue triggers: messages/s through a trivial function (the echo image) at batchSize 1 and
//!   100, and, at a steady rate, the latency from publishing a message to the function's
//!   `onSuccess` record against a plain NATS subscriber of the same subject in the same run.
//!
//! NATS is the real server, on this machine; the activator and controller run here too.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};

const LABEL_WIDTH: usize = 58;
/// Uploads of the warm series, and cold starts measured.
const WARM_UPLOADS: usize = 40;
const COLD_STARTS: usize = 5;
/// Messages of each throughput series.
const THROUGHPUT_MESSAGES: usize = 3_000;
/// The steady rate of the latency series, and how long it lasts.
const RATE: u64 = 100;
const RATE_SECONDS: u64 = 10;

struct Cluster {
    client: kube::Client,
    nats: common::nats::NatsServer,
    namespace: String,
    _activator: common::processes::FargoProcess,
    _code: common::s3::S3Server,
    _scratch: common::s3::Scratch,
}

async fn on_the_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("event_sources: skipped (no KUBECONFIG; `make bench` starts a cluster)");
        return;
    }
    let client = common::client().await;
    common::install_crds(&client).await;
    let node_ip = common::node_address(&client).await;
    let scratch = common::s3::Scratch::new("bench-event-sources");
    let nats = common::nats::NatsServer::start(&scratch, node_ip).await;
    let code = common::s3::S3Server::start(&scratch, node_ip).await;
    code.put(
        "photo-resize.zip",
        common::s3::example_zip("photo-resize.zip"),
    )
    .await;
    // Notifications published on fargo.storage.bench reach the benchmark's namespace.
    let namespace = common::namespaces::unique_name("bench-sources");
    let tokens = format!("fargo-storage-tokens-bench-{}", std::process::id());
    common::namespaces::ensure_namespace(&client, "fargo-system").await;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": tokens},
        "stringData": {"bench": json!({
            "token": fargo::api::lambda::request_id(), "namespaces": [namespace],
        }).to_string()},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "fargo-system")
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .expect("the storage tokens Secret");
    let (activator_process, activator) = common::activator::start_activator_with(&[
        "--nats-url".into(),
        nats.url(),
        "--invoke-auth".into(),
        "None".into(),
        "--storage-tokens-secret".into(),
        tokens.clone(),
    ])
    .await;
    let identity = format!("fargo-bench-sources-{}", std::process::id());
    common::functions::controller_for_the_process(
        &client,
        &activator,
        &identity,
        &["--s3-endpoint".into(), code.endpoint.clone()],
    )
    .await;
    common::namespaces::ensure_namespace(&client, &namespace).await;
    let cluster = Cluster {
        client: client.clone(),
        nats,
        namespace: namespace.clone(),
        _activator: activator_process,
        _code: code,
        _scratch: scratch,
    };

    photo_resize(&cluster).await;
    queues(&cluster).await;

    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .delete(&namespace, &DeleteParams::background())
        .await;
    let _ = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, "fargo-system")
        .delete(&tokens, &DeleteParams::background())
        .await;
}

/// Upload → thumbnail, warm and from zero.
async fn photo_resize(cluster: &Cluster) {
    let (client, namespace) = (&cluster.client, &cluster.namespace);
    let scratch = common::s3::Scratch::new("bench-photos");
    let pillow = common::photos::Pillow::new(&scratch);
    let s3 = common::s3::S3Pod::start(
        client,
        namespace,
        &cluster.nats.url(),
        "fargo.storage.bench",
    )
    .await;
    let photos = common::namespaces::unique_name("photos");
    let thumbnails = format!("{photos}-thumbnails");
    s3.client.create_bucket(&photos).await;
    s3.client.create_bucket(&thumbnails).await;
    let file = scratch.0.join("photo.jpg");
    pillow.image(&file, 1600, 1200);
    let image = std::fs::read(&file).unwrap();

    // One upload; how long until its thumbnail can be read.
    let upload = |key: String| {
        let (s3, photos, thumbnails, image) = (&s3, &photos, &thumbnails, image.clone());
        async move {
            let start = Instant::now();
            s3.client.put_object(photos, &key, image).await;
            loop {
                if s3.client.get(thumbnails, &key).await.is_some() {
                    return start.elapsed();
                }
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "no thumbnail of {key}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    common::photos::photo_resize(
        client,
        namespace,
        &s3,
        &photos,
        json!({"scale": {"min": 1, "max": 1}}),
    )
    .await;
    upload("warm-up.jpg".into()).await;
    let mut warm = vec![];
    for i in 0..WARM_UPLOADS {
        warm.push(upload(format!("warm/{i}.jpg")).await);
    }
    support::report(
        "upload to thumbnail, 1600x1200 JPEG, warm",
        LABEL_WIDTH,
        warm,
    );

    common::photos::photo_resize(
        client,
        namespace,
        &s3,
        &photos,
        json!({"scale": {"min": 0, "max": 1, "idleTimeout": "1s"}}),
    )
    .await;
    let mut cold = vec![];
    for i in 0..COLD_STARTS {
        // At zero, its last pod gone.
        common::wait::eventually(180, "photo-resize at zero", || async {
            let zero = common::functions::function_replicas(client, namespace, "photo-resize")
                .await
                == Some(0);
            let pods =
                Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), namespace)
                    .list(
                        &kube::api::ListParams::default().labels("fargo.dev/function=photo-resize"),
                    )
                    .await
                    .ok()?;
            (zero && pods.items.is_empty()).then_some(())
        })
        .await;
        // Settled: the activators have seen the last pod go.
        tokio::time::sleep(Duration::from_secs(5)).await;
        cold.push(upload(format!("cold/{i}.jpg")).await);
    }
    support::report(
        "upload to thumbnail, 1600x1200 JPEG, from zero",
        LABEL_WIDTH,
        cold,
    );
}

/// Throughput at batchSize 1 and 100, and the latency against a direct subscriber.
async fn queues(cluster: &Cluster) {
    let (client, namespace) = (&cluster.client, &cluster.namespace);
    let nats = async_nats::connect(cluster.nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(nats.clone());
    let stream = format!("BENCH_{}", std::process::id());
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("bench.{}.>", std::process::id())],
            metadata: HashMap::from([("fargo.dev/namespaces".into(), namespace.clone())]),
            ..Default::default()
        })
        .await
        .unwrap();

    for batch_size in [1, 100] {
        let name = format!("sink-{batch_size}");
        let subject = format!("bench.{}.{name}", std::process::id());
        trivial_function(
            client, namespace, &name, &stream, &subject, batch_size, None,
        )
        .await;
        let consumer = format!("fargo_{namespace}_{name}_messages");
        wait_for_consumer(&jetstream, &stream, &consumer).await;
        let start = Instant::now();
        let publishes = futures::stream::iter(0..THROUGHPUT_MESSAGES)
            .map(|i| {
                let (jetstream, subject) = (&jetstream, subject.clone());
                async move {
                    jetstream
                        .publish(subject, format!("{{\"i\":{i}}}").into())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(64);
        publishes.collect::<Vec<_>>().await;
        let published = start.elapsed();
        common::wait::eventually(300, "the stream drained by the function", || async {
            let mut stream = jetstream.get_stream(&stream).await.ok()?;
            let _ = stream.info().await.ok()?;
            let found = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer)
                .await
                .ok()?;
            let info = found.cached_info();
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        })
        .await;
        let took = start.elapsed();
        println!(
            "{:<LABEL_WIDTH$} {:.0} messages/s ({THROUGHPUT_MESSAGES} in {:.1?}; published in {:.1?})",
            format!("queue trigger, batchSize {batch_size}, echo function"),
            THROUGHPUT_MESSAGES as f64 / took.as_secs_f64(),
            took,
            published
        );
    }

    // Latency at a steady rate: publish → onSuccess record, against a direct subscriber.
    let subject = format!("bench.{}.latency", std::process::id());
    let records = format!("bench-records-{}", std::process::id());
    trivial_function(
        client,
        namespace,
        "steady",
        &stream,
        &subject,
        1,
        Some(&records),
    )
    .await;
    wait_for_consumer(
        &jetstream,
        &stream,
        &format!("fargo_{namespace}_steady_messages"),
    )
    .await;
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let direct: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let through: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut direct_sub = nats.subscribe(subject.clone()).await.unwrap();
    let mut records_sub = nats.subscribe(records.clone()).await.unwrap();
    let watch_direct = {
        let (sent, direct) = (sent.clone(), direct.clone());
        tokio::spawn(async move {
            while let Some(message) = direct_sub.next().await {
                let at = Instant::now();
                let index: Value = serde_json::from_slice(&message.payload).unwrap();
                if let Some(start) = sent.lock().unwrap().get(&index["i"].as_u64().unwrap()) {
                    direct.lock().unwrap().push(at - *start);
                }
            }
        })
    };
    let watch_records = {
        let (sent, through) = (sent.clone(), through.clone());
        tokio::spawn(async move {
            while let Some(message) = records_sub.next().await {
                let at = Instant::now();
                let record: Value = serde_json::from_slice(&message.payload).unwrap();
                for item in record["requestPayload"]["Records"].as_array().unwrap() {
                    let body: Value = serde_json::from_str(item["body"].as_str().unwrap()).unwrap();
                    if let Some(start) = sent.lock().unwrap().get(&body["i"].as_u64().unwrap()) {
                        through.lock().unwrap().push(at - *start);
                    }
                }
            }
        })
    };
    // Warm: the first messages wake nothing (the function keeps one pod), then the series.
    let total = RATE * RATE_SECONDS;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    for i in 0..total {
        ticker.tick().await;
        sent.lock().unwrap().insert(i, Instant::now());
        jetstream
            .publish(subject.clone(), format!("{{\"i\":{i}}}").into())
            .await
            .unwrap();
    }
    common::wait::eventually(120, "every record of the steady series", || async {
        (through.lock().unwrap().len() as u64 >= total).then_some(())
    })
    .await;
    watch_direct.abort();
    watch_records.abort();
    let direct: Vec<Duration> = direct.lock().unwrap().clone();
    let through: Vec<Duration> = through.lock().unwrap().clone();
    let (direct_p50, direct_p99) = support::report(
        &format!("publish to a direct NATS subscriber, {RATE}/s"),
        LABEL_WIDTH,
        direct,
    );
    let (p50, p99) = support::report(
        &format!("publish to onSuccess record, batchSize 1, {RATE}/s"),
        LABEL_WIDTH,
        through,
    );
    println!(
        "{:<LABEL_WIDTH$} p50 +{:.1?}, p99 +{:.1?}",
        "added by the queue trigger and the function",
        p50.saturating_sub(direct_p50),
        p99.saturating_sub(direct_p99)
    );
    let _ = jetstream.delete_stream(&stream).await;
}

/// Waits until an activator has opened the trigger's consumer: messages published before
/// would be missed by `startFrom: new`.
async fn wait_for_consumer(
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
    consumer: &str,
) {
    common::wait::eventually(60, "the trigger's consumer", || async {
        let stream = jetstream.get_stream(stream).await.ok()?;
        stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
            .await
            .ok()
            .map(drop)
    })
    .await;
}

/// The echo image (any answer is a success) with a queue trigger on `subject`, one pod kept.
async fn trivial_function(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    stream: &str,
    subject: &str,
    batch_size: i32,
    records: Option<&str>,
) {
    let mut spec = json!({
        "image": "fargo.dev/echo:dev",
        "scale": {"min": 1, "max": 1},
        "concurrency": {"perInstance": 100},
        "triggers": {"queues": [{
            "name": "messages", "stream": stream, "subject": subject,
            "batchSize": batch_size, "startFrom": "new",
        }]},
    });
    if let Some(records) = records {
        spec["async"] = json!({"onSuccess": {"subject": records}});
    }
    common::functions::apply_function(client, namespace, name, spec).await;
    common::functions::wait_function_condition(
        client,
        namespace,
        name,
        ("Ready", "True", "Serving"),
        120,
    )
    .await;
}

fn main() {
    support::run(on_the_cluster());
}
