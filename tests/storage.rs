//! Event sources: object-storage notifications from a real versitygw (a process of this test
//! posting to the activator's endpoint, and a pod of the local cluster publishing to NATS), and
//! queue triggers on a real NATS JetStream stream, invoking handler functions on the real node;
//! the photo-resize example end to end, with uploads by the real AWS CLI.
//!
//! Needs the images of `make images` (fargo, runtime-python3.11, versitygw) on the node, and the
//! example's zip (`tests/cluster/lambda-zips.sh photo-resize`, built on first use).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::activator::{ActivatorAddrs, activator_for_the_process, start_activator_with};
use common::aws::{AwsCli, Credentials};
use common::functions::{
    apply_function, controller_for_the_process, function_replicas, wait_function_condition,
};
use common::http::http_exchange;
use common::namespaces::with_temp_ns;
use common::nats::NatsServer;
use common::photos::{Pillow, photo_resize};
use common::records::Records;
use common::s3::{ACCESS_KEY, Notify, S3Client, S3Pod, S3Server, SECRET_KEY, Scratch};
use common::wait::eventually;
use common::{client, install_crds};
use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const ENDPOINT: &str = "/_fargo/storage/events";

/// Taken for writing by a test that runs activators of its own on the shared NATS, for reading
/// by a test that reads counts from the function's status. The controller scrapes only the
/// shared activator: messages another activator takes are never counted there.
static OWN_ACTIVATORS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

struct Stack {
    node_ip: std::net::IpAddr,
    activator: ActivatorAddrs,
    /// The activator flags, for more replicas of it.
    activator_flags: Vec<String>,
    nats: NatsServer,
    /// The S3 server the functions' code comes from (bucket [`BUCKET`]).
    _code: S3Server,
    records: Records,
    /// May invoke functions of the tests' namespaces.
    token: String,
    /// May invoke functions of other namespaces only.
    other_token: String,
    _scratch: Scratch,
}

/// NATS, the tokens Secret, an activator reading both, a controller pointed at it, the S3
/// server of the functions' code and the destination server; once per test binary.
async fn setup() -> (Client, &'static Stack) {
    static STACK: OnceCell<Stack> = OnceCell::const_new();
    let client = client().await;
    install_crds(&client).await;
    let stack = STACK
        .get_or_init(|| async {
            let node_ip = common::node_address(&client).await;
            let scratch = Scratch::new("storage");
            let nats = NatsServer::start_for_the_process(&scratch, node_ip).await;
            let code = S3Server::start_for_the_process(&scratch, node_ip).await;
            code.put(
                "photo-resize.zip",
                common::s3::example_zip("photo-resize.zip"),
            )
            .await;
            let token = format!("test-token-{}", fargo::api::lambda::request_id());
            let other_token = format!("other-token-{}", fargo::api::lambda::request_id());
            let secret = format!("fargo-storage-tokens-test-{}", std::process::id());
            common::namespaces::ensure_namespace(&client, "fargo-system").await;
            put_tokens(
                &client,
                &secret,
                &[
                    ("tests", &token, json!(["fargo-test-*"])),
                    ("others", &other_token, json!(["someone-else"])),
                    ("broken", "short", json!(["*"])),
                ],
            )
            .await;
            let activator_flags = vec![
                "--nats-url".into(),
                nats.url(),
                "--invoke-auth".into(),
                "None".into(),
                "--storage-tokens-secret".into(),
                secret,
            ];
            let activator = activator_for_the_process(&activator_flags).await;
            let identity = format!("fargo-test-storage-{}", std::process::id());
            controller_for_the_process(
                &client,
                &activator,
                &identity,
                &["--s3-endpoint".into(), code.endpoint.clone()],
            )
            .await;
            let records = Records::start(node_ip).await;
            Stack {
                node_ip,
                activator,
                activator_flags,
                nats,
                _code: code,
                records,
                token,
                other_token,
                _scratch: scratch,
            }
        })
        .await;
    (client, stack)
}

async fn put_tokens(client: &Client, name: &str, tokens: &[(&str, &str, Value)]) {
    let entries: Vec<(String, Value)> = tokens
        .iter()
        .map(|(key, token, namespaces)| {
            (
                key.to_string(),
                json!({"token": token, "namespaces": namespaces}),
            )
        })
        .collect();
    common::apply_fargo_secret(client, name, &entries).await;
}

/// A bucket name no other test uses: every function of the cluster may listen to any bucket.
fn bucket(prefix: &str) -> String {
    common::namespaces::unique_name(prefix)
}

/// A Python handler that returns the event it got, or raises when its key says so.
const RETURNING_HANDLER: &str = r#"
def handler(event, context):
    for record in event.get("Records", []):
        if "fail" in record["s3"]["object"]["key"]:
            raise RuntimeError("refusing " + record["s3"]["object"]["key"])
    return event
"#;

async fn returning_function(client: &Client, namespace: &str, name: &str, extra: Value) {
    let mut spec = json!({
        "runtime": "python3.11",
        "handler": "app.handler",
        "code": {"inline": {"app.py": RETURNING_HANDLER}},
        "timeout": "30s",
        "scale": {"max": 2, "idleTimeout": "10s"},
    });
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    apply_function(client, namespace, name, spec).await;
    wait_function_condition(
        client,
        namespace,
        name,
        ("Ready", "True", "ScaledToZero"),
        120,
    )
    .await;
}

/// A notification in versitygw's shape (keys as written), for `bucket`.
fn notification(bucket: &str, key: &str) -> Vec<u8> {
    json!({"Records": [{
        "eventVersion": "2.2", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-29T10:00:00Z", "eventName": "s3:ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "webhook-global",
               "bucket": {"name": bucket}, "object": {"key": key, "size": 3, "sequencer": "1"}},
    }]})
    .to_string()
    .into_bytes()
}

async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    let (status, _, body) = http_exchange("POST", url, headers, body)
        .await
        .expect("the activator answers");
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, body)
}

/// The activator's counter of storage events with `outcome`.
async fn storage_events(activator: &ActivatorAddrs, outcome: &str) -> u64 {
    let url = format!("http://127.0.0.1:{}/metrics", activator.health_port);
    let (_, text) = common::http::http_request("GET", &url, None).await.unwrap();
    let series = format!("fargo_activator_storage_events_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_storage_endpoint_refuses_what_it_cannot_take() {
    let (_client, stack) = setup().await;
    let url = format!("{}{ENDPOINT}", stack.activator.url());
    let with_token = format!("{url}?token={}", stack.token);
    let bearer = format!("Bearer {}", stack.token);
    let nobody = bucket("nobody-listens");

    // No token, an unknown one, a token too short to be loaded.
    for (url, headers) in [
        (url.clone(), vec![]),
        (format!("{url}?token=guess"), vec![]),
        (format!("{url}?token=short"), vec![]),
        (url.clone(), vec![("authorization", "Bearer guess")]),
    ] {
        let (status, body) = post(&url, &headers, notification(&nobody, "a.jpg")).await;
        assert_eq!(status, 401, "{url} {headers:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("token"),
            "{body}"
        );
    }
    let (status, _, _) = http_exchange("GET", &with_token, &[], vec![])
        .await
        .unwrap();
    assert_eq!(status, 405);
    let (status, body) = post(&with_token, &[], vec![b' '; (1 << 20) + 1]).await;
    assert_eq!(status, 413, "{body}");
    let (status, body) = post(&with_token, &[], b"{not json".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not JSON"),
        "{body}"
    );
    let (status, body) = post(&with_token, &[], br#"{"hello": "world"}"#.to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("Records"),
        "{body}"
    );

    // A server's probe, and a bucket no function listens to: acknowledged, counted, not stored.
    let probe = br#"{"Service":"S3","Event":"s3:TestEvent","Time":"2026-11-29T10:00:00Z","Bucket":"Test-Bucket"}"#;
    let (status, body) = post(&with_token, &[], probe.to_vec()).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"accepted": 0, "ignored": 0}))
    );
    let ignored = storage_events(&stack.activator, "ignored").await;
    let (status, body) = post(
        &url,
        &[("authorization", bearer.as_str())],
        notification(&nobody, "a.jpg"),
    )
    .await;
    assert_eq!(
        (status, &body),
        (200, &json!({"accepted": 0, "ignored": 1}))
    );
    assert_eq!(
        storage_events(&stack.activator, "ignored").await,
        ignored + 1
    );
    assert!(storage_events(&stack.activator, "refused").await >= 8);
}

#[tokio::test]
async fn notifications_get_503_while_nats_is_away() {
    let (client, stack) = setup().await;
    let scratch = Scratch::new("storage-nats-away");
    let nats = NatsServer::start(&scratch, stack.node_ip).await;
    let mut flags = stack.activator_flags.clone();
    flags[1] = nats.url();
    let (_activator, addrs) = start_activator_with(&flags).await;
    with_temp_ns(&client, |client, ns| async move {
        let uploads = bucket("away");
        let records = format!("away-{ns}");
        returning_function(
            &client,
            &ns,
            "steady",
            json!({
                "triggers": {"storage": [{"bucket": uploads}]},
                "async": {"onSuccess": {"url": stack.records.url(&records)}},
            }),
        )
        .await;
        let url = format!("{}{ENDPOINT}?token={}", addrs.url(), stack.token);
        // Once the activator knows the function, a notification for it is stored.
        eventually(30, "the activator to take a notification", || async {
            let (status, body) = post(&url, &[], notification(&uploads, "first.jpg")).await;
            (status == 200 && body["accepted"] == 1).then_some(())
        })
        .await;

        nats.kill();
        let (status, headers, body) =
            http_exchange("POST", &url, &[], notification(&uploads, "away.jpg"))
                .await
                .unwrap();
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
        assert_eq!(headers["retry-after"], "5");

        nats.restart().await;
        // The server sends it again: stored once, delivered.
        eventually(
            30,
            "the notification taken after NATS came back",
            || async {
                let (status, _) = post(&url, &[], notification(&uploads, "away.jpg")).await;
                (status == 200).then_some(())
            },
        )
        .await;
        let delivered = stack.records.wait(&records, 2, 120).await;
        let keys: Vec<&str> = delivered
            .iter()
            .filter_map(|r| r["requestPayload"]["Records"][0]["s3"]["object"]["key"].as_str())
            .collect();
        assert!(keys.contains(&"away.jpg"), "{keys:?}");
    })
    .await;
}

#[tokio::test]
async fn uploads_to_a_real_s3_server_invoke_functions_with_lambdas_s3_event() {
    let (client, stack) = setup().await;
    let scratch = Scratch::new("storage-webhook");
    // versitygw posts each event to the activator (it sends its probe on start).
    let webhook = format!("{}{ENDPOINT}?token={}", stack.activator.url(), stack.token);
    let s3 = S3Server::start_notifying(
        &scratch,
        "127.0.0.1".parse().unwrap(),
        Notify::Webhook(webhook),
    )
    .await;
    with_temp_ns(&client, |client, ns| async move {
        let uploads = bucket("uploads");
        let records = format!("webhook-{ns}");
        let failures = format!("webhook-failed-{ns}");
        s3.client.create_bucket(&uploads).await;
        returning_function(
            &client,
            &ns,
            "listener",
            json!({
                "triggers": {"storage": [
                    {"bucket": uploads, "events": ["ObjectCreated:*"], "prefix": "in/", "suffix": ".jpg"},
                ]},
                "async": {
                    "maxRetries": 1, "retryDelay": "1s",
                    "onSuccess": {"url": stack.records.url(&records)},
                    "onFailure": {"url": stack.records.url(&failures)},
                },
            }),
        )
        .await;
        // Let the activator's index take the function in.
        tokio::time::sleep(Duration::from_secs(2)).await;

        let key = "in/été 2026/a b+c 日本.jpg";
        s3.client.put_object(&uploads, key, b"abc".to_vec()).await;
        s3.client.put_object(&uploads, "in/notes.txt", b"skip".to_vec()).await;
        s3.client.put_object(&uploads, "out/x.jpg", b"skip".to_vec()).await;
        let delivered = stack.records.wait(&records, 1, 120).await;
        let record = &delivered[0]["requestPayload"]["Records"][0];
        assert_eq!(record["eventSource"], "aws:s3", "{record}");
        assert_eq!(record["eventVersion"], "2.1", "{record}");
        assert_eq!(record["eventName"], "ObjectCreated:Put", "{record}");
        assert_eq!(record["s3"]["bucket"]["name"], uploads.as_str());
        assert_eq!(
            record["s3"]["object"]["key"],
            "in/%C3%A9t%C3%A9+2026/a+b%2Bc+%E6%97%A5%E6%9C%AC.jpg",
            "the key URL-encoded as AWS writes it: {record}"
        );
        assert_eq!(record["s3"]["object"]["size"], 3);
        assert!(record["s3"]["object"]["eTag"].as_str().is_some_and(|e| !e.contains('"')));

        // A token for other namespaces reaches none of this namespace's functions.
        let other = format!("{}{ENDPOINT}?token={}", stack.activator.url(), stack.other_token);
        let (status, body) = post(&other, &[], notification(&uploads, "in/other.jpg")).await;
        assert_eq!((status, &body), (200, &json!({"accepted": 0, "ignored": 1})));

        // A function that fails on an object: retried, then its onFailure record.
        s3.client.put_object(&uploads, "in/fail.jpg", b"abc".to_vec()).await;
        let failed = stack.records.wait(&failures, 1, 120).await;
        let context = &failed[0]["requestContext"];
        assert_eq!(context["condition"], "RetriesExhausted", "{}", failed[0]);
        assert_eq!(context["approximateInvokeCount"], 2, "{}", failed[0]);
        assert_eq!(failed[0]["responsePayload"]["errorType"], "RuntimeError");

        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(stack.records.count(&records), 1, "only the .jpg under in/ invokes it");

        // The trigger's state, as the status shows it.
        let functions = Api::<fargo::api::ServerlessFunction>::namespaced(client.clone(), &ns);
        let trigger = eventually(60, "status.triggers to show the bucket's events", || async {
            let function = functions.get("listener").await.ok()?;
            let trigger = function.status?.triggers.into_iter().next()?;
            (trigger.events >= 2).then_some(trigger)
        })
        .await;
        assert_eq!(
            (trigger.type_.as_str(), trigger.name.as_str(), trigger.state.as_str()),
            ("Storage", uploads.as_str(), "Receiving")
        );
        assert!(trigger.last_event_time.is_some());
    })
    .await;
}

#[tokio::test]
async fn photo_resize_makes_thumbnails_of_uploads_from_zero_and_back() {
    let (client, stack) = setup().await;
    let scratch = Scratch::new("photo-resize");
    let pillow = Pillow::new(&scratch);
    with_temp_ns(&client, |client, ns| async move {
        // versitygw as a pod, its notifications published to NATS (stream FARGO_STORAGE).
        let s3 = S3Pod::start(&client, &ns, &stack.nats.url(), "fargo.storage.tests").await;
        let photos = bucket("photos");
        s3.client.create_bucket(&photos).await;
        s3.client
            .create_bucket(&format!("{photos}-thumbnails"))
            .await;
        photo_resize(
            &client,
            &ns,
            &s3,
            &photos,
            // Four uploads need no more than two pods; more would take the node's CPU from
            // the other tests' pods, which run beside this one.
            json!({"scale": {"min": 0, "max": 2, "idleTimeout": "10s"}}),
        )
        .await;
        assert_eq!(
            function_replicas(&client, &ns, "photo-resize").await,
            Some(0)
        );

        let uploads = [
            (
                "trips/été 2026/plage à Nice.jpg",
                1000,
                600,
                "JPEG",
                (256, 154),
            ),
            ("scans/plan notes.png", 600, 1000, "PNG", (154, 256)),
            ("日本/桜 + 富士.jpeg", 300, 300, "JPEG", (256, 256)),
            ("small/icon.png", 64, 32, "PNG", (64, 32)),
        ];
        let credentials = Credentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            region: "us-east-1".into(),
        };
        let cli = AwsCli::new();
        for (i, (key, width, height, _, _)) in uploads.iter().enumerate() {
            let file = scratch
                .0
                .join(format!("upload-{i}{}", &key[key.rfind('.').unwrap()..]));
            pillow.image(&file, *width, *height);
            let target = format!("s3://{photos}/{key}");
            let output = cli.aws(
                &[
                    "s3",
                    "cp",
                    file.to_str().unwrap(),
                    &target,
                    "--endpoint-url",
                    &s3.host_endpoint,
                ],
                &credentials,
            );
            assert!(
                output.status.success(),
                "aws s3 cp: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // Not an image key: no invocation.
        s3.client
            .put_object(&photos, "notes.txt", b"hello".to_vec())
            .await;

        let thumbnails = format!("{photos}-thumbnails");
        for (key, _, _, format, (width, height)) in uploads {
            let bytes = eventually(180, &format!("the thumbnail of {key}"), || async {
                s3.client.get(&thumbnails, key).await
            })
            .await;
            assert_eq!(
                pillow.size_of(&bytes, &scratch.0),
                (format.to_string(), width, height),
                "thumbnail of {key}"
            );
        }
        assert_eq!(s3.client.keys(&thumbnails).await.len(), 4);

        // Back to zero once idle.
        eventually(120, "photo-resize back at zero", || async {
            (function_replicas(&client, &ns, "photo-resize").await == Some(0)).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_burst_of_500_uploads_gets_500_thumbnails_while_an_activator_restarts() {
    let (client, stack) = setup().await;
    let _alone = OWN_ACTIVATORS.write().await;
    let scratch = Scratch::new("photo-burst");
    let pillow = Pillow::new(&scratch);
    let (mut doomed, _) = start_activator_with(&stack.activator_flags).await;
    with_temp_ns(&client, |client, ns| async move {
        let s3 = S3Pod::start(&client, &ns, &stack.nats.url(), "fargo.storage.tests").await;
        let photos = bucket("burst");
        let thumbnails = format!("{photos}-thumbnails");
        s3.client.create_bucket(&photos).await;
        s3.client.create_bucket(&thumbnails).await;
        photo_resize(
            &client,
            &ns,
            &s3,
            &photos,
            json!({"timeout": "10s", "scale": {"min": 0, "max": 6, "idleTimeout": "30s"}}),
        )
        .await;
        let file = scratch.0.join("burst.png");
        pillow.image(&file, 400, 200);
        let image = std::fs::read(&file).unwrap();

        let total = 500;
        let client_s3 = S3Client::new(&s3.host_endpoint, ACCESS_KEY, SECRET_KEY);
        let uploads = futures::stream::iter(0..total)
            .map(|i| {
                let client_s3 = &client_s3;
                let photos = &photos;
                let image = image.clone();
                async move {
                    client_s3
                        .put_object(photos, &format!("burst/{i:03} é.png"), image)
                        .await;
                }
            })
            .buffer_unordered(8);
        futures::pin_mut!(uploads);
        let mut done = 0;
        let mut restarted = None;
        while uploads.next().await.is_some() {
            done += 1;
            if done == 150 {
                doomed.kill();
            }
            if done == 300 {
                restarted = Some(start_activator_with(&stack.activator_flags).await);
            }
        }
        let keys = eventually(420, "a thumbnail for every upload", || async {
            let keys = s3.client.keys(&thumbnails).await;
            (keys.len() >= total).then_some(keys)
        })
        .await;
        assert_eq!(keys.len(), total, "{keys:?}");
        let sample = s3.client.get(&thumbnails, "burst/499 é.png").await.unwrap();
        assert_eq!(
            pillow.size_of(&sample, &scratch.0),
            ("PNG".into(), 256, 128)
        );
        drop(restarted);
    })
    .await;
}

/// The handler of `examples/iot-stream`.
fn iot_handler() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/iot-stream/app.py"
    ))
    .unwrap()
}

#[tokio::test]
async fn queue_triggers_deliver_batches_and_retry_failed_items() {
    let (client, stack) = setup().await;
    let _counted = OWN_ACTIVATORS.read().await;
    let nats = async_nats::connect(stack.nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(nats.clone());
    with_temp_ns(&client, |client, ns| async move {
        let id = common::namespaces::unique_name("iot").replace('-', "_");
        let stream = format!("IOT_{id}");
        let subjects = format!("iot.{id}.readings.>");
        jetstream
            .create_stream(async_nats::jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![subjects.clone()],
                metadata: HashMap::from([("fargo.dev/namespaces".to_string(), ns.clone())]),
                ..Default::default()
            })
            .await
            .unwrap();
        let private = format!("PRIVATE_{id}");
        jetstream
            .create_stream(async_nats::jetstream::stream::Config {
                name: private.clone(),
                subjects: vec![format!("private.{id}.>")],
                ..Default::default()
            })
            .await
            .unwrap();
        // Readings stored before the function exists (startFrom: all), one of them malformed.
        let devices = 5;
        let per_device = 50;
        for n in 0..per_device {
            for device in 0..devices {
                let reading = json!({"device": format!("d-{device}"), "temperature": n as f64});
                jetstream
                    .publish(
                        format!("iot.{id}.readings.d-{device}"),
                        reading.to_string().into(),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
        jetstream
            .publish(format!("iot.{id}.readings.broken"), "not json".into())
            .await
            .unwrap()
            .await
            .unwrap();
        let aggregates = format!("iot-aggregates-{id}").replace('_', "-");
        let mut subscriber = nats.subscribe(aggregates.clone()).await.unwrap();
        let failures = format!("iot-failed-{ns}");
        apply_function(
            &client,
            &ns,
            "aggregator",
            json!({
                "runtime": "python3.11",
                "handler": "app.handler",
                "code": {"inline": {"app.py": iot_handler()}},
                "scale": {"max": 2, "idleTimeout": "10s"},
                "triggers": {"queues": [
                    {"name": "readings", "stream": stream, "subject": subjects,
                     "batchSize": 100, "maxBatchingWindow": "1s", "startFrom": "all"},
                    {"name": "private", "stream": private},
                ]},
                "async": {
                    "maxRetries": 1, "retryDelay": "1s",
                    "onSuccess": {"subject": aggregates},
                    "onFailure": {"url": stack.records.url(&failures)},
                },
            }),
        )
        .await;

        // Every reading counted once, per device, over the batches' aggregates.
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut batches = 0;
        let wanted = devices * per_device;
        tokio::time::timeout(Duration::from_secs(180), async {
            while counts.values().sum::<u64>() < wanted {
                let message = subscriber
                    .next()
                    .await
                    .expect("the aggregates subscription");
                let record: Value = serde_json::from_slice(&message.payload).unwrap();
                batches += 1;
                let answer = &record["responsePayload"];
                for (device, aggregate) in answer["devices"].as_object().unwrap() {
                    *counts.entry(device.clone()).or_default() +=
                        aggregate["count"].as_u64().unwrap();
                }
                let size = record["requestPayload"]["Records"]
                    .as_array()
                    .unwrap()
                    .len();
                assert!(size <= 100, "a batch of {size}, over batchSize");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("aggregates of {wanted} readings within 3 minutes: {counts:?}"));
        assert_eq!(counts.len(), devices as usize, "{counts:?}");
        assert!(counts.values().all(|&c| c == per_device), "{counts:?}");
        assert!(
            batches >= 3,
            "{batches} batches for {wanted} readings of batchSize 100"
        );

        // The malformed reading: named in batchItemFailures, retried once, then onFailure.
        let failed = stack.records.wait(&failures, 1, 120).await;
        let item = &failed[0]["requestPayload"]["Records"][0];
        assert_eq!(item["body"], "not json", "{}", failed[0]);
        assert_eq!(item["eventSourceArn"], format!("nats:jetstream:{stream}"));
        assert_eq!(failed[0]["requestContext"]["condition"], "RetriesExhausted");

        // The status: one trigger receiving, the other refused by its stream's owner.
        let functions = Api::<fargo::api::ServerlessFunction>::namespaced(client.clone(), &ns);
        let triggers = eventually(60, "status.triggers of both queues", || async {
            let triggers = functions.get("aggregator").await.ok()?.status?.triggers;
            // Recorded at most every ten seconds: the count catches up.
            let receiving = triggers.iter().any(|t| {
                t.name == "readings" && t.state == "Receiving" && t.events >= wanted as i64
            });
            let refused = triggers
                .iter()
                .any(|t| t.name == "private" && t.state == "StreamNotShared");
            (receiving && refused).then_some(triggers)
        })
        .await;
        let refused = triggers.iter().find(|t| t.name == "private").unwrap();
        assert!(
            refused
                .message
                .as_deref()
                .is_some_and(|m| m.contains("fargo.dev/namespaces")),
            "{refused:?}"
        );

        // Drained: the backlog is recorded as zero, and the function goes back to zero.
        eventually(120, "the drained function back at zero", || async {
            let status = functions.get("aggregator").await.ok()?.status?;
            let drained = status
                .triggers
                .iter()
                .any(|t| t.name == "readings" && t.pending == Some(0));
            let zero = function_replicas(&client, &ns, "aggregator").await == Some(0);
            (drained && zero).then_some(())
        })
        .await;
        // A function's record may not pose as a message of a stream not shared with its
        // namespace: refused, not stored.
        returning_function(
            &client,
            &ns,
            "forger",
            json!({"async": {"onSuccess": {"subject": format!("private.{id}.forged")}}}),
        )
        .await;
        let invoke = format!(
            "{}/2015-03-31/functions/{ns}%2Fforger/invocations",
            stack.activator.url()
        );
        let (status, _, _) = http_exchange(
            "POST",
            &invoke,
            &[("x-amz-invocation-type", "Event")],
            br#"{"forged": true}"#.to_vec(),
        )
        .await
        .unwrap();
        assert_eq!(status, 202);
        let metrics = format!("http://127.0.0.1:{}/metrics", stack.activator.health_port);
        let failed = format!(
            "fargo_activator_events_total{{namespace=\"{ns}\",function=\"forger\",outcome=\"destination_failed\"}} 1"
        );
        eventually(120, "the forged record refused", || async {
            let (_, text) = common::http::http_request("GET", &metrics, None).await.ok()?;
            text.contains(&failed).then_some(())
        })
        .await;
        let mut stored = jetstream.get_stream(&private).await.unwrap();
        assert_eq!(stored.info().await.unwrap().state.messages, 0);

        let _ = jetstream.delete_stream(&stream).await;
        let _ = jetstream.delete_stream(&private).await;
    })
    .await;
}
