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
    create_namespace(client, &name, labels).await;
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

/// Where the API server reaches the tests' out-of-cluster webhook: 127.0.0.1 for the local
/// cluster; the Docker gateway for kind (`FARGO_TEST_WEBHOOK_HOST`, set by tests/e2e/kind.sh).
fn webhook_host() -> String {
    std::env::var("FARGO_TEST_WEBHOOK_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

/// Waits until the webhook configuration points at this test run's webhook and its port accepts
/// connections.
async fn wait_until_serving(client: &Client, webhook_port: u16) {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let url = format!("https://{}:{webhook_port}/", webhook_host());
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
    print_fargo_logs();
    panic!("the controller did not register its webhook at {url} within 30s");
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn spawn_controller(webhook_port: u16, health_port: u16) -> std::process::Child {
    spawn_controller_with(webhook_port, health_port, &[])
}

/// Starts `fargo controller` on 127.0.0.1 (webhook registered by URL) with `extra` flags after
/// the usual ones, e.g. `--activator-url`. It gets SIGTERM when the calling thread ends.
pub fn spawn_controller_with(
    webhook_port: u16,
    health_port: u16,
    extra: &[String],
) -> std::process::Child {
    let mut args: Vec<String> = ["controller", "--namespace", "fargo-system"]
        .map(String::from)
        .into();
    let host = webhook_host();
    let listen = if host == "127.0.0.1" {
        "127.0.0.1"
    } else {
        "0.0.0.0"
    };
    args.extend([
        "--webhook-addr".into(),
        format!("{listen}:{webhook_port}"),
        "--webhook-url".into(),
        format!("https://{host}:{webhook_port}"),
        "--health-addr".into(),
        format!("127.0.0.1:{health_port}"),
    ]);
    args.extend_from_slice(extra);
    spawn_fargo(&args, &format!("controller-{webhook_port}.log"))
}

/// Logs of the fargo processes this test binary started.
static FARGO_LOGS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Prints the end of every fargo log of this test binary, so that a failure shows what the
/// controller and activators were doing.
pub fn print_fargo_logs() {
    const LINES: usize = 40;
    let logs = FARGO_LOGS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for path in logs {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LINES)..];
        eprintln!("---- last {} lines of {} ----", tail.len(), path.display());
        for line in tail {
            eprintln!("{line}");
        }
    }
}

/// Runs the `fargo` binary built by this `cargo test` (or `cargo bench`) with `args`, its log in
/// `log_name` beside the test binaries rather than in the test output.
fn spawn_fargo(args: &[String], log_name: &str) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fargo"));
    command.args(args).env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
    );
    // SAFETY: prctl(2) only, between fork and exec: the process gets SIGTERM when the thread
    // that started it ends, so no test run leaves one behind.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let log_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(log_name);
    let mut logs = FARGO_LOGS.lock().unwrap_or_else(|e| e.into_inner());
    if !logs.contains(&log_path) {
        logs.push(log_path.clone());
    }
    drop(logs);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
    command
        .stderr(log.try_clone().expect("a second handle to the log"))
        .stdout(log);
    command
        .spawn()
        .unwrap_or_else(|e| panic!("starting fargo {}: {e}", args[0]))
}

/// Creates namespace `name` with `labels`; panics when it cannot.
pub async fn create_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.into());
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
            print_fargo_logs();
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

/// A TCP port of 127.0.0.1 that was free a moment ago (bound, then released), for a process
/// that cannot report the port it bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// Where an out-of-cluster `fargo activator` listens.
#[derive(Clone, Copy, Debug)]
pub struct ActivatorAddrs {
    /// The proxy.
    pub port: u16,
    /// `/healthz`, `/readyz`, `/metrics`, `/stats`.
    pub health_port: u16,
}

impl ActivatorAddrs {
    /// Base URL of the proxy, as the controller's `--activator-url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>/{namespace}/{function}/`.
    pub fn function_url(&self, namespace: &str, function: &str) -> String {
        format!("{}/{namespace}/{function}/", self.url())
    }

    pub fn stats_url(&self) -> String {
        format!("http://127.0.0.1:{}/stats", self.health_port)
    }

    /// What the activator reports for one function on `/stats`, once it has had a request.
    pub async fn function_stats(
        &self,
        namespace: &str,
        function: &str,
    ) -> Option<fargo::api::stats::FunctionStats> {
        let (status, body) = http_request("GET", &self.stats_url(), None).await.ok()?;
        if status != 200 {
            return None;
        }
        let stats: fargo::api::stats::ActivatorStats = serde_json::from_str(&body).ok()?;
        stats
            .functions
            .into_iter()
            .find(|f| f.namespace == namespace && f.name == function)
    }

    /// The controller flags that point it at this activator.
    pub fn controller_args(&self) -> Vec<String> {
        vec![
            "--activator-url".into(),
            self.url(),
            "--activator-stats-url".into(),
            self.stats_url(),
        ]
    }

    /// Waits until `/readyz` answers 200 (both watches have listed everything).
    pub async fn wait_until_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.health_port);
        eventually(60, "the activator to be ready", || {
            let url = url.clone();
            async move {
                let (status, _) = http_request("GET", &url, None).await.ok()?;
                (status == 200).then_some(())
            }
        })
        .await;
    }
}

/// Starts `fargo activator` on 127.0.0.1; run out of cluster, it reaches pod IPs directly. It
/// gets SIGTERM when the calling thread ends.
pub fn spawn_activator(addrs: ActivatorAddrs) -> std::process::Child {
    let args = [
        "activator".to_string(),
        "--addr".into(),
        format!("127.0.0.1:{}", addrs.port),
        "--health-addr".into(),
        format!("127.0.0.1:{}", addrs.health_port),
        "--drain-delay".into(),
        "0s".into(),
    ];
    spawn_fargo(&args, &format!("activator-{}.log", addrs.port))
}

/// A `fargo` process that is stopped (SIGTERM, then waited for) when dropped.
pub struct FargoProcess {
    child: std::process::Child,
}

impl FargoProcess {
    pub fn new(child: std::process::Child) -> Self {
        Self { child }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for FargoProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// Starts an activator on free ports and waits until it is ready; it stops when dropped.
pub async fn start_activator() -> (FargoProcess, ActivatorAddrs) {
    let addrs = ActivatorAddrs {
        port: free_port(),
        health_port: free_port(),
    };
    let process = FargoProcess::new(spawn_activator(addrs));
    addrs.wait_until_ready().await;
    (process, addrs)
}

/// Starts `spawn` on a thread that lives as long as the test process, so that the child (which
/// gets SIGTERM when the thread that started it ends) outlives each test's runtime.
fn spawn_for_the_process(spawn: impl FnOnce() -> std::process::Child + Send + 'static) {
    let (started, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut child = spawn();
        let _ = started.send(());
        let _ = child.wait();
    });
    wait.recv().expect("the process thread started");
}

/// One activator for all the tests of a test binary, started by the first that asks.
pub async fn shared_activator() -> ActivatorAddrs {
    static ADDRS: std::sync::OnceLock<ActivatorAddrs> = std::sync::OnceLock::new();
    let addrs = *ADDRS.get_or_init(|| {
        let addrs = ActivatorAddrs {
            port: free_port(),
            health_port: free_port(),
        };
        spawn_for_the_process(move || spawn_activator(addrs));
        addrs
    });
    addrs.wait_until_ready().await;
    addrs
}

/// Waits until the controller Lease in fargo-system names `identity` as its holder.
pub async fn wait_until_leading(client: &Client, identity: &str, seconds: u64) {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "fargo-system");
    eventually(seconds, &format!("controller {identity} to lead"), || {
        let leases = leases.clone();
        async move {
            let lease = leases.get_opt("fargo-controller").await.ok()??;
            (lease.spec?.holder_identity? == identity).then_some(())
        }
    })
    .await;
}

/// An activator and a controller pointed at it (webhook unregistered), run out of cluster for
/// one benchmark, `identity` leading; both stop when dropped.
pub async fn start_function_stack(
    client: &Client,
    identity: &str,
) -> (FargoProcess, FargoProcess, ActivatorAddrs) {
    ensure_namespace(client, "fargo-system").await;
    let (activator_process, activator) = start_activator().await;
    let mut extra = vec![
        "--identity".to_string(),
        identity.to_string(),
        "--webhook-register".into(),
        "false".into(),
    ];
    extra.extend(activator.controller_args());
    let controller = FargoProcess::new(spawn_controller_with(free_port(), free_port(), &extra));
    wait_until_leading(client, identity, 120).await;
    (activator_process, controller, activator)
}

/// The parts that serve functions, for all the tests of a test binary: one activator and one
/// controller pointed at it (its webhook left unregistered: functions without a profile need
/// none), which leads once any earlier controller has let go of the Lease.
pub async fn shared_function_stack(client: &Client) -> ActivatorAddrs {
    static IDENTITY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ensure_namespace(client, "fargo-system").await;
    let activator = shared_activator().await;
    let identity = IDENTITY.get_or_init(|| {
        let identity = format!("fargo-test-functions-{}", std::process::id());
        let mut extra = vec![
            "--identity".to_string(),
            identity.clone(),
            "--webhook-register".into(),
            "false".into(),
        ];
        extra.extend(activator.controller_args());
        let (webhook_port, health_port) = (free_port(), free_port());
        spawn_for_the_process(move || spawn_controller_with(webhook_port, health_port, &extra));
        identity
    });
    wait_until_leading(client, identity, 120).await;
    activator
}

/// Sends one HTTP/1.1 request (a fresh connection each time) and returns the status and body.
pub async fn http_request(
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as HttpClient;
    use hyper_util::rt::TokioExecutor;
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(bytes::Bytes::from(
            body.unwrap_or_default().to_string(),
        )))
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{method} {url}: {e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The kubectl of the local cluster: `KUBECTL` (as `make` sets it), else the one
/// `tests/cluster/` cached for the pinned version, else `kubectl` on PATH.
pub fn kubectl() -> std::process::Command {
    if let Some(kubectl) = std::env::var_os("KUBECTL") {
        return std::process::Command::new(kubectl);
    }
    let version = include_str!("../cluster/versions.env")
        .lines()
        .find_map(|line| line.strip_prefix("KUBERNETES_VERSION="));
    let cache = std::env::var_os("FARGO_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cache/fargo"))
        });
    if let (Some(version), Some(cache)) = (version, cache) {
        let cached = cache.join(format!("bin/kubernetes-{}/kubectl", version.trim()));
        if cached.exists() {
            return std::process::Command::new(cached);
        }
    }
    std::process::Command::new("kubectl")
}

/// Server-side applies a ServerlessFunction with `spec`.
pub async fn apply_function(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> fargo::api::ServerlessFunction {
    let object = serde_json::json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "ServerlessFunction",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    Api::<fargo::api::ServerlessFunction>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying function {namespace}/{name}: {e}"))
}

/// `(status, reason, message)` of a condition of the function, once it has one.
pub async fn function_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let function = Api::<fargo::api::ServerlessFunction>::namespaced(client.clone(), namespace)
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

/// Waits (up to `seconds`) for a condition of the function with this status and reason;
/// returns its message.
pub async fn wait_function_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    (type_, status, reason): (&str, &str, &str),
    seconds: u64,
) -> String {
    eventually(
        seconds,
        &format!("{namespace}/{name} {type_}={status} ({reason})"),
        || async move {
            let (s, r, message) = function_condition(client, namespace, name, type_).await?;
            (s == status && r == reason).then_some(message)
        },
    )
    .await
}

/// `spec.replicas` of the function's Deployment; `None` while there is none.
pub async fn function_replicas(client: &Client, namespace: &str, name: &str) -> Option<i32> {
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()??
        .spec?
        .replicas
}
