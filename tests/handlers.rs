//! Handler functions end to end on the real node: code in Python, Node.js, Java and Go run by
//! the official AWS runtime interface clients in fargo's runtime images, beside fargo's Runtime
//! API sidecar, reached through the real activator from zero; and a Lambda-style image run
//! unmodified. Code comes inline, from a ConfigMap and as zips from a real S3 server (versitygw,
//! started for these tests on the node's address, where pods reach it).
//!
//! Needs the images of `make images` (fargo, the runtimes, lambda-image-example) on the node.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::activator::ActivatorAddrs;
use common::functions::{apply_function, shared_function_stack_with, wait_function_condition};
use common::http::http_exchange;
use common::namespaces::with_temp_ns;
use common::s3::{BUCKET, S3Server, Scratch};
use common::wait::eventually;
use common::{client, install_crds};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// Longest a first request may take: a pod started from zero, the code fetched, a JVM started
/// on a fraction of a core.
const COLD: &str = "120s";

struct Stack {
    activator: ActivatorAddrs,
    /// Kept for the test binary's life: the S3 server stops when it is dropped.
    _s3: S3Server,
    _scratch: Scratch,
}

/// The S3 server with the examples' zips, and the activator and a controller that fetches code
/// from that server; once per test binary.
async fn setup() -> (Client, &'static Stack) {
    static STACK: OnceCell<Stack> = OnceCell::const_new();
    let client = client().await;
    install_crds(&client).await;
    let stack = STACK
        .get_or_init(|| async {
            let node_ip = common::node_address(&client).await;
            let scratch = Scratch::new("handlers");
            let s3 = S3Server::start_for_the_process(&scratch, node_ip).await;
            for zip in ["go-hello.zip", "java-hello.zip"] {
                s3.put(zip, common::s3::example_zip(zip)).await;
            }
            s3.put("layers/greeting.zip", greeting_layer()).await;
            let activator =
                shared_function_stack_with(&client, &["--s3-endpoint".into(), s3.endpoint.clone()])
                    .await;
            Stack {
                activator,
                _s3: s3,
                _scratch: scratch,
            }
        })
        .await;
    (client, stack)
}

/// A layer as Lambda's Python layers are made: modules under `python/`.
fn greeting_layer() -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(
        "python/greeting.py",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(b"def greet(who):\n    return 'hello ' + who + ' from a layer'\n")
        .unwrap();
    zip.finish().unwrap().into_inner()
}

/// Waits until the function is Ready and at zero.
async fn wait_at_zero(client: &Client, namespace: &str, name: &str) {
    wait_function_condition(
        client,
        namespace,
        name,
        ("Ready", "True", "ScaledToZero"),
        60,
    )
    .await;
}

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
    took: Duration,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: not JSON: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(
    stack: &Stack,
    namespace: &str,
    function: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let url = format!(
        "{}{path_and_query}",
        stack.activator.function_url(namespace, function)
    );
    let started = Instant::now();
    let (status, headers, body) = http_exchange(method, &url, headers, body)
        .await
        .unwrap_or_else(|e| panic!("no answer from the activator: {e}"));
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        took: started.elapsed(),
    }
}

async fn get(stack: &Stack, namespace: &str, function: &str, path_and_query: &str) -> Answer {
    call(
        stack,
        namespace,
        function,
        "GET",
        path_and_query,
        &[],
        vec![],
    )
    .await
}

/// What the runtime container of the function's pod printed.
async fn runtime_logs(client: &Client, namespace: &str, function: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut logs = String::new();
    for pod in pods
        .list(&ListParams::default().labels(&format!("fargo.dev/function={function}")))
        .await
        .expect("listing the function's pods")
    {
        for container in ["function", "runtime-api"] {
            let params = LogParams {
                container: Some(container.into()),
                ..Default::default()
            };
            if let Ok(text) = pods.logs(&pod.name_any(), &params).await {
                logs.push_str(&text);
            }
        }
    }
    logs
}

const ECHO_EVENT: &str = r#"
import json

def handler(event, context):
    print("EVENT " + json.dumps(event))
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json", "x-handler": "echo"},
        "body": json.dumps({
            "event": event,
            "requestId": context.aws_request_id,
            "functionName": context.function_name,
            "memory": context.memory_limit_in_mb,
            "remainingMs": context.get_remaining_time_in_millis(),
        }),
    }
"#;

fn python(handler: &str, file: &str, extra: Value) -> Value {
    let mut spec = json!({
        "runtime": "python3.11",
        "handler": handler,
        "code": {"inline": {"app.py": file}},
        "timeout": COLD,
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

#[tokio::test]
async fn a_python_handler_at_zero_gets_the_http_request_as_a_v2_event() {
    let (client, stack) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "echo",
            python("app.handler", ECHO_EVENT, json!({})),
        )
        .await;
        wait_at_zero(&client, &ns, "echo").await;

        let binary: Vec<u8> = (0..=255u8).collect();
        let answer = call(
            stack,
            &ns,
            "echo",
            "POST",
            "photos/cat.png?size=small&size=large&tag=a%20b",
            &[
                ("content-type", "application/octet-stream"),
                ("x-custom", "one"),
                ("cookie", "session=abc; theme=dark"),
            ],
            binary.clone(),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-handler"), Some("echo"));
        let answer = answer.json();
        let event = &answer["event"];
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["routeKey"], "$default");
        assert_eq!(event["rawPath"], "/photos/cat.png");
        assert_eq!(event["rawQueryString"], "size=small&size=large&tag=a%20b");
        assert_eq!(event["queryStringParameters"]["size"], "small,large");
        assert_eq!(event["queryStringParameters"]["tag"], "a b");
        assert_eq!(event["requestContext"]["http"]["method"], "POST");
        assert_eq!(event["requestContext"]["http"]["path"], "/photos/cat.png");
        assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");
        assert_eq!(event["requestContext"]["accountId"], ns.as_str());
        assert_eq!(event["headers"]["x-custom"], "one");
        assert_eq!(event["cookies"], json!(["session=abc", "theme=dark"]));
        assert_eq!(event["isBase64Encoded"], true);
        let body = base64::engine::general_purpose::STANDARD
            .decode(event["body"].as_str().expect("a base64 body"))
            .expect("valid base64");
        assert_eq!(body, binary);
        assert_eq!(answer["functionName"], "echo");
        assert_eq!(answer["memory"], "128");
        let remaining = answer["remainingMs"].as_u64().expect("remaining time");
        assert!(
            remaining > 0 && remaining <= 120_000,
            "remaining time from the deadline: {remaining} ms"
        );
        assert!(!answer["requestId"].as_str().unwrap_or_default().is_empty());

        // Lambda's lines, from the sidecar.
        let logs = runtime_logs(&client, &ns, "echo").await;
        for line in ["START RequestId: ", "END RequestId: ", "REPORT RequestId: "] {
            assert!(
                logs.contains(line),
                "no {line:?} in the pod's logs:\n{logs}"
            );
        }
        assert!(logs.contains("Billed Duration: "), "{logs}");
    })
    .await;
}

#[tokio::test]
async fn each_language_answers_through_the_activator_with_code_from_each_source() {
    let (client, stack) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        common::s3::s3_secret(&client, &ns).await;
        // Node.js: its code from a ConfigMap the user keeps.
        let node_code = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/node-hello/index.mjs"
        ))
        .unwrap();
        let config_map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "node-code"},
            "data": {"index.mjs": node_code},
        }))
        .unwrap();
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &config_map)
            .await
            .unwrap();
        let python_code = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/python-hello/app.py"
        ))
        .unwrap();
        let functions = [
            ("python", python("app.handler", &python_code, json!({}))),
            (
                "node",
                json!({"runtime": "nodejs20.x", "handler": "index.handler",
                       "code": {"configMap": {"name": "node-code"}}, "timeout": COLD}),
            ),
            (
                "java",
                json!({"runtime": "java17", "handler": "example.Hello::handleRequest",
                       "code": {"s3": {"bucket": BUCKET, "key": "java-hello.zip"}},
                       "memory": "512Mi", "timeout": COLD}),
            ),
            (
                "go",
                json!({"runtime": "provided",
                       "code": {"s3": {"bucket": BUCKET, "key": "go-hello.zip"}}, "timeout": COLD}),
            ),
        ];
        for (name, spec) in &functions {
            apply_function(&client, &ns, name, spec.clone()).await;
        }
        for (name, _) in &functions {
            wait_at_zero(&client, &ns, name).await;
        }
        let answers = futures::future::join_all(
            functions
                .iter()
                .map(|(name, _)| get(stack, &ns, name, "hello/there?who=fargo")),
        )
        .await;
        for ((name, _), answer) in functions.iter().zip(answers) {
            assert_eq!(answer.status, 200, "{name}: {}", answer.body);
            let body = answer.json();
            assert_eq!(body["message"], format!("hello from {name}"), "{body}");
            assert_eq!(body["method"], "GET", "{name}: {body}");
            assert_eq!(body["path"], "/hello/there", "{name}: {body}");
            assert_eq!(body["query"]["who"], "fargo", "{name}: {body}");
            println!("{name}: first answer from zero in {:?}", answer.took);
        }
    })
    .await;
}

#[tokio::test]
async fn a_layer_from_s3_is_importable_from_opt() {
    let (client, stack) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        common::s3::s3_secret(&client, &ns).await;
        let code = "import greeting\n\ndef handler(event, context):\n    \
                    return greeting.greet(event['queryStringParameters']['who'])\n";
        apply_function(
            &client,
            &ns,
            "layered",
            python(
                "app.handler",
                code,
                json!({"layers": [{"s3": {"bucket": BUCKET, "key": "layers/greeting.zip"}}]}),
            ),
        )
        .await;
        wait_at_zero(&client, &ns, "layered").await;
        let answer = get(stack, &ns, "layered", "?who=fargo").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        // A bare return value: a JSON body, as function URLs send it.
        assert_eq!(answer.json(), json!("hello fargo from a layer"));
    })
    .await;
}

#[tokio::test]
async fn a_raising_handler_gives_502_with_lambdas_error_json() {
    let (client, stack) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        let code = "def handler(event, context):\n    raise ValueError('no cats today')\n";
        apply_function(
            &client,
            &ns,
            "raises",
            python("app.handler", code, json!({})),
        )
        .await;
        wait_at_zero(&client, &ns, "raises").await;
        let answer = get(stack, &ns, "raises", "").await;
        assert_eq!(answer.status, 502, "{}", answer.body);
        assert_eq!(answer.header("x-amz-function-error"), Some("Unhandled"));
        let error = answer.json();
        assert_eq!(error["errorType"], "ValueError");
        assert_eq!(error["errorMessage"], "no cats today");
        assert!(error["stackTrace"].is_array(), "{error}");
        // The runtime lives on: the next request is answered the same way.
        let again = get(stack, &ns, "raises", "").await;
        assert_eq!(again.status, 502);
        assert_eq!(again.json()["errorType"], "ValueError");
    })
    .await;
}

#[tokio::test]
async fn a_bad_handler_name_says_so_in_the_condition_and_at_once_to_requests() {
    let (client, stack) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        let code = "def handler(event, context):\n    return 1\n";
        apply_function(
            &client,
            &ns,
            "misnamed",
            python("app.no_such_handler", code, json!({"timeout": "60s"})),
        )
        .await;
        wait_at_zero(&client, &ns, "misnamed").await;
        let answer = get(stack, &ns, "misnamed", "").await;
        assert!(
            answer.status == 502,
            "{} after {:?}: {}",
            answer.status,
            answer.took,
            answer.body
        );
        assert!(
            answer.took < Duration::from_secs(45),
            "answered only after {:?}, near the 60s timeout",
            answer.took
        );
        assert!(
            answer.body.contains("no_such_handler"),
            "the answer names the handler: {}",
            answer.body
        );

        let message = eventually(90, "Ready=False naming the handler", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let function = Api::<fargo::api::ServerlessFunction>::namespaced(client, &ns)
                    .get("misnamed")
                    .await
                    .ok()?;
                let ready = function
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?;
                (ready.status == "False" && ready.message.contains("no_such_handler"))
                    .then_some(ready.message)
            }
        })
        .await;
        println!("Ready=False: {message}");
    })
    .await;
}

#[tokio::test]
async fn a_handler_past_its_timeout_gives_504_and_the_next_request_works() {
    let (client, stack) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        let code = "import time\n\ndef handler(event, context):\n    \
                    if event.get('rawPath') == '/slow':\n        time.sleep(30)\n    \
                    return {'statusCode': 200, 'body': 'quick'}\n";
        apply_function(
            &client,
            &ns,
            "sleepy",
            python(
                "app.handler",
                code,
                json!({"timeout": "5s", "scale": {"min": 1}}),
            ),
        )
        .await;
        wait_function_condition(&client, &ns, "sleepy", ("Ready", "True", "Serving"), 120).await;
        // Warm: the 5 s timeout is the handler's alone.
        let warm = get(stack, &ns, "sleepy", "fast").await;
        assert_eq!(warm.status, 200, "{}", warm.body);

        let slow = get(stack, &ns, "sleepy", "slow").await;
        assert_eq!(slow.status, 504, "{}", slow.body);
        assert!(slow.body.contains("timed out after 5"), "{}", slow.body);
        assert!(slow.took < Duration::from_secs(10), "{:?}", slow.took);

        // The runtime is restarted, as Lambda does; the next request is answered by the new one.
        let next = eventually(60, "an answer after the timeout", || async {
            let answer = get(stack, &ns, "sleepy", "fast").await;
            (answer.status == 200).then_some(answer)
        })
        .await;
        assert_eq!(next.body, "quick");
    })
    .await;
}

#[tokio::test]
async fn a_lambda_style_image_runs_unmodified() {
    let (client, stack) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "image",
            json!({"image": "fargo.dev/lambda-image-example:dev", "package": "Image",
                   "imagePullPolicy": "Never", "timeout": COLD}),
        )
        .await;
        wait_at_zero(&client, &ns, "image").await;
        let answer = get(stack, &ns, "image", "from/an/image?x=1").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body = answer.json();
        assert_eq!(body["message"], "hello from python");
        assert_eq!(body["path"], "/from/an/image");
    })
    .await;
}

#[tokio::test]
async fn a_schedule_delivers_its_raw_body_as_the_event() {
    let (client, _stack) = setup().await;
    with_temp_ns(&client, move |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "nightly",
            python(
                "app.handler",
                ECHO_EVENT,
                json!({"triggers": {"schedules": [
                    {"name": "sweep", "cron": "* * * * *", "body": "{\"sweep\": true, \"n\": 7}"}
                ]}}),
            ),
        )
        .await;
        let logs = eventually(150, "the schedule's event in the runtime's log", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let logs = runtime_logs(&client, &ns, "nightly").await;
                logs.contains("EVENT {").then_some(logs)
            }
        })
        .await;
        let event = logs
            .lines()
            .find_map(|line| line.strip_prefix("EVENT "))
            .expect("an EVENT line");
        let event: Value = serde_json::from_str(event).expect("the event as JSON");
        assert_eq!(event, json!({"sweep": true, "n": 7}));
    })
    .await;
}
