//! Shared by the integration tests: a client for the local cluster (`KUBECONFIG`), the CRDs, and
//! temporary namespaces.
#![allow(dead_code)] // each test crate uses a different part of this module

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde::Deserialize;

pub const TEST_MANAGER: &str = "fargo-test";

/// A client for the cluster in `KUBECONFIG` (`make test` points it at `.cluster/kubeconfig`).
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run the integration tests through `make test` or `make integration`, which start the local cluster"
    );
    Client::try_default()
        .await
        .expect("a client for the cluster in KUBECONFIG")
}

/// Installs (server-side apply) both CRDs and waits until the API server serves them.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in fargo::api::crds() {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
        .expect("watching the CRD");
    }
}

/// A fresh namespace name, unique within this test run.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{:x}{:x}-{}",
        std::process::id() % 0xfff,
        nanos % 0xffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `test` with a new namespace (labelled with `labels`) and deletes it afterwards, also when
/// the test panics.
pub async fn with_temp_ns<F, Fut>(client: &Client, labels: &[(&str, &str)], test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let name = unique_name("fargo-test");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    ns.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    let outcome = tokio::spawn(test(client.clone(), name.clone())).await;
    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

/// Server-side applies every document of a YAML stream, resolving each kind through discovery.
/// With `dry_run`, the API server validates and defaults without storing anything.
pub async fn apply_yaml(client: &Client, yaml: &str, dry_run: bool) -> Result<(), kube::Error> {
    for object in parse_objects(yaml) {
        apply_object(client, &object, dry_run).await?;
    }
    Ok(())
}

/// The API of `object`'s kind (and namespace), found through discovery.
async fn dynamic_api(
    client: &Client,
    object: &DynamicObject,
) -> Result<Api<DynamicObject>, kube::Error> {
    let types = object.types.as_ref().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(types).expect("a valid apiVersion");
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk).await?;
    Ok(match capabilities.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            object.namespace().as_deref().unwrap_or("default"),
            &resource,
        ),
    })
}

/// Creates (POST, dry run) every document of a YAML stream.
pub async fn create_yaml_dry_run(client: &Client, yaml: &str) -> Result<(), kube::Error> {
    for object in parse_objects(yaml) {
        let api = dynamic_api(client, &object).await?;
        api.create(
            &PostParams {
                dry_run: true,
                field_manager: None,
            },
            &object,
        )
        .await?;
    }
    Ok(())
}

/// The objects of a multi-document YAML stream.
pub fn parse_objects(yaml: &str) -> Vec<DynamicObject> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| serde_yaml::Value::deserialize(document).expect("valid YAML"))
        .filter(|value| !value.is_null())
        .map(|value| serde_yaml::from_value(value).expect("a Kubernetes object"))
        .collect()
}

pub async fn apply_object(
    client: &Client,
    object: &DynamicObject,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let api = dynamic_api(client, object).await?;
    let mut params = PatchParams::apply(TEST_MANAGER).force();
    params.dry_run = dry_run;
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
}

/// A `fargo controller` process run out of cluster against the local cluster, its webhook
/// registered by URL on 127.0.0.1. It dies with the test process.
pub struct ControllerProcess {
    child: std::process::Child,
    pub webhook_port: u16,
    pub health_port: u16,
}

impl ControllerProcess {
    /// Starts the controller built by this `cargo test` and waits until the API server calls its
    /// webhook.
    pub async fn start(client: &Client, webhook_port: u16, health_port: u16) -> Self {
        ensure_namespace(client, "fargo-system").await;
        let child = spawn_controller(webhook_port, health_port);
        let process = Self {
            child,
            webhook_port,
            health_port,
        };
        process.wait_until_serving(client).await;
        process
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) {
        // SAFETY: kill(2) on the pid of our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }

    /// Starts the process again after `kill` or `terminate`.
    pub async fn restart(&mut self, client: &Client) {
        self.child = spawn_controller(self.webhook_port, self.health_port);
        self.wait_until_serving(client).await;
    }

    async fn wait_until_serving(&self, client: &Client) {
        wait_until_serving(client, self.webhook_port).await;
    }
}

/// Waits until the webhook configuration points at 127.0.0.1:`webhook_port` and that port
/// accepts connections.
async fn wait_until_serving(client: &Client, webhook_port: u16) {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let url = format!("https://127.0.0.1:{webhook_port}/");
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for _ in 0..120 {
        if let Ok(Some(config)) = configs.get_opt("fargo").await {
            let registered = config.webhooks.unwrap_or_default().iter().any(|w| {
                w.client_config
                    .url
                    .as_deref()
                    .is_some_and(|u| u.starts_with(&url))
            });
            if registered
                && tokio::net::TcpStream::connect(("127.0.0.1", webhook_port))
                    .await
                    .is_ok()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the controller did not register its webhook at {url} within 30s");
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn spawn_controller(webhook_port: u16, health_port: u16) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fargo"));
    command
        .args(["controller", "--namespace", "fargo-system"])
        .arg("--webhook-addr")
        .arg(format!("127.0.0.1:{webhook_port}"))
        .arg("--webhook-url")
        .arg(format!("https://127.0.0.1:{webhook_port}"))
        .arg("--health-addr")
        .arg(format!("127.0.0.1:{health_port}"))
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
    // The controller's log goes to a file beside the test binaries, not into the test output.
    let log_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("controller-{webhook_port}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("opening the controller log");
    command
        .stderr(log.try_clone().expect("a second handle to the log"))
        .stdout(log);
    command.spawn().expect("starting the fargo controller")
}

/// Creates namespace `name` unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.into());
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("creating namespace {name}: {error}"),
    }
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {seconds}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One controller for all the tests of a test binary, started by the first that asks. It is
/// spawned from a thread that lives as long as the test process, so it outlives each test and
/// still dies with the process.
pub async fn shared_controller(client: &Client, webhook_port: u16, health_port: u16) {
    static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ensure_namespace(client, "fargo-system").await;
    STARTED.get_or_init(|| {
        let (started, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut child = spawn_controller(webhook_port, health_port);
            let _ = started.send(());
            // The thread must outlive the tests: the child gets SIGTERM when it ends.
            let _ = child.wait();
        });
        wait.recv().expect("the controller thread started");
    });
    wait_until_serving(client, webhook_port).await;
}
