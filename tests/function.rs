//! ServerlessFunction end to end against the local cluster: the reconciler's children and
//! status, the autoscaler fed by a stand-in activator, and a schedule fired through it.
//!
//! The stand-in activator runs in this process on 127.0.0.1: it serves `/stats` with whatever
//! load a test sets and records the requests the schedules send. The controller is started
//! with `--activator-url` and `--activator-stats-url` pointing at it.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use common::{client, ensure_namespace, eventually, install_crds, with_temp_ns};
use fargo::api::ServerlessFunction;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const WEBHOOK_PORT: u16 = 18445;
const HEALTH_PORT: u16 = 19092;
const MANAGER: &str = "fargo-test";

/// What the stand-in activator serves and has received.
#[derive(Default)]
struct ActivatorState {
    /// `functions` entries of `/stats`, by `(namespace, name)`.
    loads: Mutex<BTreeMap<(String, String), serde_json::Value>>,
    /// Requests received: path, `x-fargo-schedule` header, body.
    received: Mutex<Vec<(String, Option<String>, String)>>,
}

struct FakeActivator {
    addr: SocketAddr,
    state: Arc<ActivatorState>,
}

/// The stand-in activator, on a thread of its own so it outlives each test's runtime.
fn fake_activator() -> &'static FakeActivator {
    static FAKE: OnceLock<FakeActivator> = OnceLock::new();
    FAKE.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("a nonblocking socket");
        let addr = listener.local_addr().expect("a local address");
        let state = Arc::new(ActivatorState::default());
        let served = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the stand-in activator");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                let app = Router::new()
                    .route("/stats", get(stats))
                    .fallback(receive)
                    .with_state(served);
                axum::serve(listener, app).await.expect("serving");
            });
        });
        FakeActivator { addr, state }
    })
}

async fn stats(State(state): State<Arc<ActivatorState>>) -> axum::Json<serde_json::Value> {
    let loads = state
        .loads
        .lock()
        .unwrap()
        .values()
        .cloned()
        .collect::<Vec<_>>();
    axum::Json(json!({ "functions": loads }))
}

async fn receive(
    State(state): State<Arc<ActivatorState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let schedule = headers
        .get("x-fargo-schedule")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    state.received.lock().unwrap().push((
        uri.path().to_string(),
        schedule,
        String::from_utf8_lossy(&body).into_owned(),
    ));
    "ok"
}

/// Starts one controller for this test binary (it dies with the process) and waits until it
/// leads.
async fn setup() -> Client {
    let client = client().await;
    install_crds(&client).await;
    ensure_namespace(&client, "fargo-system").await;
    let activator = fake_activator();
    let identity = format!("fargo-test-functions-{}", std::process::id());
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let url = format!("http://{}", activator.addr);
        let identity = identity.clone();
        let (started, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut child = spawn_controller(&url, &identity);
            let _ = started.send(());
            // The thread lives as long as the controller: its death would signal it.
            let _ = child.wait();
        });
        wait.recv().expect("the controller thread started");
    });
    let leases: Api<Lease> = Api::namespaced(client.clone(), "fargo-system");
    eventually(90, "the test controller to lead", || {
        let leases = leases.clone();
        let identity = identity.clone();
        async move {
            let lease = leases.get_opt("fargo-controller").await.ok()??;
            (lease.spec?.holder_identity? == identity).then_some(())
        }
    })
    .await;
    client
}

fn spawn_controller(activator_url: &str, identity: &str) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fargo"));
    command
        .args(["controller", "--namespace", "fargo-system"])
        .arg("--identity")
        .arg(identity)
        .arg("--webhook-addr")
        .arg(format!("127.0.0.1:{WEBHOOK_PORT}"))
        .arg("--webhook-url")
        .arg(format!("https://127.0.0.1:{WEBHOOK_PORT}"))
        // Functions without a profile need no webhook; leave the registered one alone.
        .args(["--webhook-register", "false"])
        .arg("--health-addr")
        .arg(format!("127.0.0.1:{HEALTH_PORT}"))
        .arg("--activator-url")
        .arg(activator_url)
        .arg("--activator-stats-url")
        .arg(format!("{activator_url}/stats"))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
        );
    // SAFETY: prctl(2) only, between fork and exec: the controller gets SIGTERM when the thread
    // that started it ends, so no test run leaves one behind.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command.spawn().expect("starting the fargo controller")
}

async fn apply_function(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> ServerlessFunction {
    let object = json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "ServerlessFunction",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    Api::<ServerlessFunction>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying function {namespace}/{name}: {e}"))
}

/// `(status, reason, message)` of a condition of the function, once it has one.
async fn condition(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let function = Api::<ServerlessFunction>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()??;
    let condition = function
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)?;
    Some((condition.status, condition.reason, condition.message))
}

async fn wait_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> String {
    eventually(
        30,
        &format!("{namespace}/{name} {type_}={status} ({reason})"),
        || async move {
            let (s, r, message) = condition(client, namespace, name, type_).await?;
            (s == status && r == reason).then_some(message)
        },
    )
    .await
}

async fn replicas(client: &Client, namespace: &str, name: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()??
        .spec?
        .replicas
}

#[tokio::test]
async fn a_function_gets_a_deployment_and_service_whose_replicas_the_autoscaler_owns() {
    let client = setup().await;
    with_temp_ns(&client, &[], |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "thumbnail",
            json!({"image": "fargo.dev/echo:dev", "memory": "512Mi", "scale": {"initial": 2}}),
        )
        .await;
        let deployment = eventually(30, "the Deployment", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                Api::<Deployment>::namespaced(client, &ns)
                    .get_opt("thumbnail")
                    .await
                    .ok()?
            }
        })
        .await;
        assert_eq!(deployment.labels()["fargo.dev/function"], "thumbnail");
        let owner = &deployment.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ServerlessFunction", Some(true))
        );
        let spec = deployment.spec.clone().unwrap();
        assert_eq!(spec.replicas, Some(2), "scale.initial");
        let container = &spec.template.spec.unwrap().containers[0];
        let limits = container.resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits["cpu"].0, "290m");

        // The controller's first apply carries the initial replicas; the autoscaler's manager
        // then takes the field and the controller lets go of it.
        eventually(30, "spec.replicas owned by the autoscaler alone", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let deployment = Api::<Deployment>::namespaced(client, &ns)
                    .get("thumbnail")
                    .await
                    .ok()?;
                let owners: Vec<(String, String)> = deployment
                    .managed_fields()
                    .iter()
                    .filter(|entry| {
                        entry
                            .fields_v1
                            .as_ref()
                            .and_then(|f| f.0.get("f:spec"))
                            .and_then(|spec| spec.get("f:replicas"))
                            .is_some()
                    })
                    .map(|entry| {
                        (
                            entry.manager.clone().unwrap_or_default(),
                            entry.operation.clone().unwrap_or_default(),
                        )
                    })
                    .collect();
                (owners == [("fargo.dev/autoscaler".to_string(), "Apply".to_string())])
                    .then_some(())
            }
        })
        .await;

        let service = Api::<Service>::namespaced(client.clone(), &ns)
            .get("thumbnail")
            .await
            .expect("the Service");
        let port = &service.spec.unwrap().ports.unwrap()[0];
        assert_eq!((port.port, port.name.as_deref()), (80, Some("http")));

        // A change of spec is applied without touching the replicas.
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch_scale(
                "thumbnail",
                &PatchParams::apply("fargo.dev/autoscaler").force(),
                &Patch::Apply(json!({
                    "apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": "thumbnail", "namespace": ns},
                    "spec": {"replicas": 3},
                })),
            )
            .await
            .expect("scaling as the autoscaler");
        apply_function(
            &client,
            &ns,
            "thumbnail",
            json!({"image": "fargo.dev/echo:dev", "memory": "512Mi", "scale": {"initial": 2},
                   "env": [{"name": "QUALITY", "value": "90"}]}),
        )
        .await;
        eventually(30, "the new environment in the Deployment", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let deployment = Api::<Deployment>::namespaced(client, &ns)
                    .get("thumbnail")
                    .await
                    .ok()?;
                let env = deployment.spec?.template.spec?.containers[0].env.clone()?;
                env.iter().any(|v| v.name == "QUALITY").then_some(())
            }
        })
        .await;
        assert_eq!(replicas(&client, &ns, "thumbnail").await, Some(3));
    })
    .await;
}

#[tokio::test]
async fn a_function_scaled_to_zero_is_ready_and_says_where_it_is_served() {
    let client = setup().await;
    with_temp_ns(&client, &[], |client, ns| async move {
        apply_function(&client, &ns, "idle", json!({"image": "fargo.dev/echo:dev"})).await;
        wait_condition(&client, &ns, "idle", "Ready", "True", "ScaledToZero").await;
        wait_condition(&client, &ns, "idle", "ScaledToZero", "True", "Idle").await;
        let function = Api::<ServerlessFunction>::namespaced(client.clone(), &ns)
            .get("idle")
            .await
            .unwrap();
        let status = function.status.unwrap();
        assert_eq!(
            status.url,
            Some(format!("http://{}/{ns}/idle/", fake_activator().addr))
        );
        assert_eq!(status.observed_generation, function.metadata.generation);
        assert_eq!(replicas(&client, &ns, "idle").await, Some(0));
    })
    .await;
}

#[tokio::test]
async fn a_missing_profile_and_a_bad_schedule_are_conditions_not_crashes() {
    let client = setup().await;
    with_temp_ns(&client, &[], |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "broken",
            json!({
                "image": "fargo.dev/echo:dev",
                "profile": "no-such-profile",
                "triggers": {"schedules": [
                    {"name": "nightly", "cron": "0 25 * * *"},
                    {"name": "zoned", "cron": "0 3 * * *", "timeZone": "Mars/Olympus"},
                ]},
            }),
        )
        .await;
        let message =
            wait_condition(&client, &ns, "broken", "Ready", "False", "ProfileNotFound").await;
        assert!(message.contains("no-such-profile"), "{message}");
        let schedules = wait_condition(
            &client,
            &ns,
            "broken",
            "SchedulesValid",
            "False",
            "InvalidSchedule",
        )
        .await;
        assert!(
            schedules.contains("\"nightly\"") && schedules.contains("hour"),
            "{schedules}"
        );
        assert!(
            schedules.contains("\"zoned\"") && schedules.contains("Mars/Olympus"),
            "{schedules}"
        );
        assert_eq!(
            replicas(&client, &ns, "broken").await,
            None,
            "no pods under a missing profile"
        );

        // Fixing the spec clears both.
        apply_function(
            &client,
            &ns,
            "broken",
            json!({"image": "fargo.dev/echo:dev"}),
        )
        .await;
        wait_condition(&client, &ns, "broken", "Ready", "True", "ScaledToZero").await;
        wait_condition(
            &client,
            &ns,
            "broken",
            "SchedulesValid",
            "True",
            "NoSchedules",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn the_autoscaler_follows_the_activators_load_and_records_the_last_request() {
    let client = setup().await;
    with_temp_ns(&client, &[], |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "busy",
            json!({"image": "fargo.dev/echo:dev", "concurrency": {"target": 2},
                   "scale": {"max": 5}}),
        )
        .await;
        wait_condition(&client, &ns, "busy", "Ready", "True", "ScaledToZero").await;

        let last_request = "2026-01-02T03:04:05Z";
        fake_activator().state.loads.lock().unwrap().insert(
            (ns.clone(), "busy".into()),
            json!({"namespace": ns, "name": "busy", "concurrency": 7.0, "inFlight": 7,
                   "held": 0, "requests": 70, "lastRequest": last_request}),
        );
        // 7 requests at a target of 2 per instance: 4 instances.
        eventually(30, "busy scaled to 4", || {
            let client = client.clone();
            let ns = ns.clone();
            async move { (replicas(&client, &ns, "busy").await? == 4).then_some(()) }
        })
        .await;
        eventually(30, "lastRequestTime recorded", || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let function = Api::<ServerlessFunction>::namespaced(client, &ns)
                    .get("busy")
                    .await
                    .ok()?;
                let recorded = function.status?.last_request_time?;
                (recorded.0.to_string() == last_request).then_some(())
            }
        })
        .await;
        fake_activator()
            .state
            .loads
            .lock()
            .unwrap()
            .remove(&(ns.clone(), "busy".into()));
    })
    .await;
}

#[tokio::test]
async fn a_schedule_fires_once_per_tick_through_the_activator() {
    let client = setup().await;
    with_temp_ns(&client, &[], |client, ns| async move {
        apply_function(
            &client,
            &ns,
            "ticker",
            json!({"image": "fargo.dev/echo:dev", "triggers": {"schedules": [
                {"name": "every-minute", "cron": "* * * * *", "body": "{\"tick\":true}"}
            ]}}),
        )
        .await;
        let path = format!("/{ns}/ticker/");
        let received = || {
            fake_activator()
                .state
                .received
                .lock()
                .unwrap()
                .iter()
                .filter(|(p, _, _)| *p == path)
                .cloned()
                .collect::<Vec<_>>()
        };
        eventually(80, "the first tick", || async {
            (!received().is_empty()).then_some(())
        })
        .await;
        let first = received();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1.as_deref(), Some("every-minute"));
        assert_eq!(first[0].2, "{\"tick\":true}");

        // The tick is recorded on the function, and nothing more is sent for it.
        let state = Api::<ServerlessFunction>::namespaced(client.clone(), &ns)
            .get("ticker")
            .await
            .unwrap()
            .annotations()
            .get("fargo.dev/schedule-state")
            .cloned()
            .expect("the schedule state annotation");
        assert!(state.contains("\"every-minute\""), "{state}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(received().len(), 1);
    })
    .await;
}
