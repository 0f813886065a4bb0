//! End to end against any cluster where fargo runs as its Helm chart installs it: the test
//! brings no controller or activator of its own, and proves what a user of the release sees.
//!
//! - A pod in a namespace a FargateProfile selects comes back from the API server as a Fargate
//!   pod (the profile's label and RuntimeClass, a Fargate size as pod-level resources with its
//!   `fargo.dev/capacity-provisioned` annotation, a hardened security context, no API token),
//!   and runs to Ready.
//! - The profile's NetworkPolicies fence real traffic: its pods reach each other across its
//!   namespaces, while a pod of an unprofiled namespace cannot reach them and they cannot reach
//!   it (a profile's egress is denied by default).
//! - A privileged pod in a profiled namespace is refused, with the profile and the field named.
//! - A ServerlessFunction at zero wakes on a request sent through Service `fargo-activator`,
//!   answers from its own pod, and returns to zero after its idle timeout.
//!
//! It assumes: `KUBECONFIG` names the cluster, with the release `fargo` of charts/fargo installed
//! in `fargo-system` with its default values (its CRDs applied), the images `fargo.dev/fargo:dev`
//! and `fargo.dev/echo:dev` on the nodes (pods use `imagePullPolicy: IfNotPresent`), a CNI that
//! enforces NetworkPolicy (and, as Kubernetes documents, lets a pod's own node probe it), a
//! RuntimeClass `runc` (handler `runc`), pod-level resources (Kubernetes 1.34+), and kubectl
//! (`KUBECTL`, else `kubectl` on PATH). It assumes nothing of nodes, their names or labels.
//!
//! Everything goes through the API server: the kube client, and `kubectl port-forward` for HTTP
//! to a pod or to the activator Service. No pod or Service IP is dialled from this machine; the
//! pod IPs read from the API are only handed to pods, which call each other through fargo-echo's
//! `/call?url=`.
//!
//! Every test makes its own namespaces (and profile) and removes them, also when it fails; a wait
//! that times out reports what it last saw, what those namespaces and `fargo-system` hold, and the
//! end of the release's logs. Cargo.toml marks it `test = false`: it needs the installed release,
//! so a plain `cargo test` skips it; `cargo test --test e2e` runs it.

mod common;

use std::collections::VecDeque;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::admission::webhooks_see;
use common::client;
use common::functions::{apply_function, function_condition, function_replicas};
use common::http::http_request;
use common::namespaces::{unique_name, with_temp_namespaces};
use common::processes::free_port;
use common::profiles::{apply_profile, deleting_profile_after};
use common::wait::wait_reporting;
use fargo::api::profile::FargateProfile;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// Where the chart is installed, and the Service in front of every function (both fixed by the
/// chart, charts/fargo/templates/services.yaml); its port named `http` forwards to the
/// activators' proxy port.
const RELEASE_NAMESPACE: &str = "fargo-system";
const ACTIVATOR_SERVICE: &str = "fargo-activator";
/// The release's pods, for their logs when a wait times out.
const RELEASE_PODS: &str = "app.kubernetes.io/name=fargo";

const ECHO_IMAGE: &str = "fargo.dev/echo:dev";
const ECHO_PORT: u16 = 8080;
/// Made by the set-up script, with handler `runc`, which every containerd node has.
const RUNTIME_CLASS: &str = "runc";
const PROFILE_LABEL: &str = "fargo.dev/profile";
const CAPACITY_ANNOTATION: &str = "fargo.dev/capacity-provisioned";

/// Pods start in seconds; the margin is for a busy two-core machine.
const POD_READY_SECONDS: u64 = 120;
/// A NetworkPolicy is enforced a moment after the enforcer sees it and the pods.
const POLICY_SECONDS: u64 = 60;
/// For the in-cluster controller to see a new profile and namespace, and the API server to
/// call its webhooks for them.
const PROFILED_SECONDS: u64 = 60;
/// The function's request timeout, which bounds how long the activator holds the first request
/// while the pod starts; the client waits a little longer.
const FUNCTION_TIMEOUT: &str = "120s";
const FUNCTION_REQUEST_TIMEOUT: Duration = Duration::from_secs(150);
const IDLE_TIMEOUT: &str = "10s";
/// Back at zero after the idle timeout: the autoscaler's decision, the Deployment's scale-down
/// and the pod's termination.
const BACK_TO_ZERO_SECONDS: u64 = 180;
/// One `/call` through a forward: fargo-echo gives up on its outgoing call after 2 s.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The kubectl this test runs: `KUBECTL`, else `kubectl` on PATH.
fn kubectl_program() -> std::ffi::OsString {
    std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into())
}

/// [`common::wait::wait_for`], whose report on timeout also holds the release's namespace and
/// the end of its logs.
async fn wait_for<T, F, Fut>(
    client: &Client,
    namespaces: &[String],
    seconds: u64,
    what: &str,
    check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut reported = namespaces.to_vec();
    reported.push(RELEASE_NAMESPACE.into());
    wait_reporting(client, &reported, seconds, what, check, release_logs).await
}

/// The last lines of every container of the release (`kubectl logs`), or why there are none.
async fn release_logs() -> String {
    let logs = tokio::process::Command::new(kubectl_program())
        .args([
            "logs",
            "--namespace",
            RELEASE_NAMESPACE,
            "--selector",
            RELEASE_PODS,
            "--all-containers",
            "--prefix",
            "--tail=20",
            "--max-log-requests=20",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(20), logs).await {
        Ok(Ok(output)) => format!(
            "---- the release's logs (last 20 lines of each container) ----\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Ok(Err(error)) => format!("(no release logs: running kubectl: {error})\n"),
        Err(_) => "(no release logs: kubectl logs took over 20s)\n".into(),
    }
}

/// `kubectl port-forward` from a free port of 127.0.0.1 to `target` (`pod/NAME` or
/// `service/NAME`) in a namespace: HTTP to a pod or to the activators through the API server.
/// kubectl is killed when this is dropped.
///
/// kubectl exits when a forwarded connection fails (the pod went away, or did not listen yet);
/// each request then starts it again, on a new port, before it is sent.
struct PortForward {
    namespace: String,
    target: String,
    remote_port: u16,
    kubectl: tokio::sync::Mutex<Forwarder>,
}

/// One running `kubectl port-forward`.
struct Forwarder {
    child: Child,
    local_port: u16,
    /// The last lines it printed, but for one line per connection.
    output: Arc<Mutex<VecDeque<String>>>,
    /// Whether it was seen accepting connections.
    accepting: bool,
}

impl Forwarder {
    fn spawn(namespace: &str, target: &str, remote_port: u16) -> Self {
        use std::os::unix::process::CommandExt;
        let local_port = free_port();
        let mut command = std::process::Command::new(kubectl_program());
        command
            .args([
                "port-forward",
                "--address",
                "127.0.0.1",
                "--namespace",
                namespace,
                target,
                &format!("{local_port}:{remote_port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl(2) only, between fork and exec: kubectl gets SIGTERM when the thread that
        // started it ends, so a test run that is killed leaves no forward behind.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "running {:?} port-forward (set KUBECTL, or put kubectl on PATH): {e}",
                kubectl_program()
            )
        });
        let output: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.starts_with("Handling connection for") {
                        continue;
                    }
                    let mut output = output.lock().unwrap_or_else(|e| e.into_inner());
                    if output.len() == 20 {
                        output.pop_front();
                    }
                    output.push_back(line);
                }
            });
        }
        Self {
            child,
            local_port,
            output,
            accepting: false,
        }
    }

    fn said(&self) -> String {
        let output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        if output.is_empty() {
            "nothing".into()
        } else {
            output.iter().cloned().collect::<Vec<_>>().join(" | ")
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PortForward {
    /// Starts forwarding to `target`'s `remote_port` and waits (up to a minute, through
    /// kubectl's restarts) until the forward accepts connections.
    async fn open(namespace: &str, target: &str, remote_port: u16) -> Self {
        let forward = Self {
            namespace: namespace.into(),
            target: target.into(),
            remote_port,
            kubectl: tokio::sync::Mutex::new(Forwarder::spawn(namespace, target, remote_port)),
        };
        if let Err(error) = forward.base_url(Duration::from_secs(60)).await {
            panic!("{error}");
        }
        forward
    }

    fn describe(&self) -> String {
        format!(
            "kubectl port-forward --namespace {} {} :{}",
            self.namespace, self.target, self.remote_port
        )
    }

    /// `http://127.0.0.1:PORT` of the forward once it accepts connections, starting kubectl
    /// again (on a new port) whenever it has exited, for at most `patience`.
    async fn base_url(&self, patience: Duration) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut kubectl = self.kubectl.lock().await;
        loop {
            if let Ok(Some(exit)) = kubectl.child.try_wait() {
                if tokio::time::Instant::now() > deadline {
                    return Err(format!(
                        "{} keeps exiting; the last one {exit}, saying: {}",
                        self.describe(),
                        kubectl.said()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                *kubectl = Forwarder::spawn(&self.namespace, &self.target, self.remote_port);
                continue;
            }
            let port = kubectl.local_port;
            if kubectl.accepting
                || tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                kubectl.accepting = true;
                return Ok(format!("http://127.0.0.1:{port}"));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "{} does not accept on 127.0.0.1:{port} after {patience:?}; it said: {}",
                    self.describe(),
                    kubectl.said()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One GET of `path_and_query` through the forward, bounded by `timeout`: the status and
    /// the body. A request that fails because kubectl exited under it is sent once more through
    /// a new kubectl.
    async fn get(&self, path_and_query: &str, timeout: Duration) -> Result<(u16, String), String> {
        let mut resent = false;
        loop {
            let url = format!(
                "{}{path_and_query}",
                self.base_url(Duration::from_secs(30)).await?
            );
            match tokio::time::timeout(timeout, http_request("GET", &url, None)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(_)) if !resent && self.exits_within(Duration::from_secs(2)).await => {
                    resent = true;
                }
                Ok(Err(error)) => {
                    return Err(format!(
                        "{error} (through {}, which said: {})",
                        self.describe(),
                        self.kubectl.lock().await.said()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "GET {url}: no answer within {timeout:?} (through {})",
                        self.describe()
                    ));
                }
            }
        }
    }

    /// Whether kubectl has exited, or does within `patience`.
    async fn exits_within(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if matches!(self.kubectl.lock().await.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An echo pod that the kubelet reports Ready once it answers HTTP; `container` adds to (or
/// replaces) fields of its one container, `echo`.
fn echo_pod(name: &str, container: Value) -> Pod {
    let mut echo = json!({
        "name": "echo",
        "image": ECHO_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": ECHO_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": ECHO_PORT},
            "periodSeconds": 1,
        },
    });
    if let (Some(echo), Some(container)) = (echo.as_object_mut(), container.as_object()) {
        echo.extend(container.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [echo], "terminationGracePeriodSeconds": 1},
    }))
    .expect("a valid pod")
}

async fn create_pod(client: &Client, namespace: &str, pod: &Pod) -> Pod {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), pod)
        .await
        .unwrap_or_else(|e| panic!("creating pod {namespace}/{}: {e}", pod.name_any()))
}

/// Waits until pod `namespace/name` is Ready, and returns it.
async fn wait_ready(client: &Client, report: &[String], namespace: &str, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for(
        client,
        report,
        POD_READY_SECONDS,
        &format!("pod {namespace}/{name} to be Ready"),
        || {
            let pods = pods.clone();
            async move {
                let pod = pods.get(name).await.map_err(|e| e.to_string())?;
                let status = pod.status.clone().unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if ready && status.pod_ip.is_some() {
                    Ok(pod)
                } else {
                    Err(format!("phase {:?}", status.phase))
                }
            }
        },
    )
    .await
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_else(|| panic!("pod {} has no IP", pod.name_any()))
}

/// Waits until `namespace` is under `profile` everywhere it matters: the controller labelled it
/// and wrote the profile's NetworkPolicy there, the webhook configurations name it, and the API
/// server does call the webhooks for it — a dry-run pod comes back labelled with the profile.
async fn wait_profiled(client: &Client, report: &[String], namespace: &str, profile: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let policy = format!("fargo-{profile}");
    let probe = echo_pod("admission-probe", json!({}));
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    wait_for(
        client,
        report,
        PROFILED_SECONDS,
        &format!("namespace {namespace} to be under profile {profile}"),
        || {
            let (namespaces, policies, pods) = (namespaces.clone(), policies.clone(), pods.clone());
            let (policy, probe, dry_run) = (policy.clone(), probe.clone(), dry_run.clone());
            async move {
                let ns = namespaces.get(namespace).await.map_err(|e| e.to_string())?;
                if ns.labels().get("fargo.dev/profiled").map(String::as_str) != Some("true") {
                    return Err("namespace not labelled fargo.dev/profiled=true".into());
                }
                if policies
                    .get_opt(&policy)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none()
                {
                    return Err(format!("no NetworkPolicy {policy} yet"));
                }
                webhooks_see(client, namespace).await?;
                let admitted = pods
                    .create(&dry_run, &probe)
                    .await
                    .map_err(|e| format!("a dry-run pod: {e}"))?;
                match admitted.labels().get(PROFILE_LABEL) {
                    Some(label) if label == profile => Ok(()),
                    other => Err(format!(
                        "a dry-run pod came back with {PROFILE_LABEL}={other:?}"
                    )),
                }
            }
        },
    )
    .await;
}

/// The profile's condition `type_` as `(status, reason)`, once it has one.
async fn profile_condition(
    client: &Client,
    profile: &str,
    type_: &str,
) -> Option<(String, String)> {
    let profile = Api::<FargateProfile>::all(client.clone())
        .get_opt(profile)
        .await
        .ok()??;
    profile
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason))
}

/// `http://IP:8080/` of an echo pod, as another pod calls it.
fn echo_url(ip: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{ECHO_PORT}/")
    } else {
        format!("http://{ip}:{ECHO_PORT}/")
    }
}

/// Asks the echo pod behind `from` to GET `url` (its `/call` endpoint): the status and body it
/// got, or 502 with the error when the connection failed.
async fn call(from: &PortForward, url: &str) -> Result<(u16, String), String> {
    let url: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
    from.get(&format!("/call?url={url}"), CALL_TIMEOUT).await
}

/// A pod seen through its port-forward: its name, and the forward.
type Caller<'a> = (&'a str, &'a PortForward);
/// A pod as others call it: its name and IP.
type Callee<'a> = (&'a str, &'a str);

/// Waits until pod `from` reaches pod `to`: the answer to its call comes from `to`.
async fn wait_reachable(
    client: &Client,
    report: &[String],
    (from, forward): Caller<'_>,
    (to, to_ip): Callee<'_>,
) {
    let url = echo_url(to_ip);
    wait_for(
        client,
        report,
        POLICY_SECONDS,
        &format!("pod {from} to reach pod {to} at {url}"),
        || {
            let url = url.clone();
            async move {
                let (status, body) = call(forward, &url).await?;
                let echo: Value = serde_json::from_str(&body)
                    .map_err(|_| format!("status {status}, body {body:?}"))?;
                if status == 200 && echo["hostname"] == to {
                    Ok(())
                } else {
                    Err(format!("status {status}, body {body:?}"))
                }
            }
        },
    )
    .await;
}

/// Whether a call answered as a refused one: fargo-echo's 502 naming the URL it could not get
/// (a NetworkPolicy enforcer rejects the connection, or drops it and the call times out).
fn refused(url: &str, (status, body): &(u16, String)) -> bool {
    *status == 502 && body.starts_with(&format!("calling {url}"))
}

/// Waits until pod `from`'s calls to pod `to` are refused.
async fn wait_fenced(
    client: &Client,
    report: &[String],
    (from, forward): Caller<'_>,
    (to, to_ip): Callee<'_>,
) {
    let url = echo_url(to_ip);
    wait_for(
        client,
        report,
        POLICY_SECONDS,
        &format!("pod {from} to be fenced off from pod {to} at {url}"),
        || {
            let url = url.clone();
            async move {
                let answer = call(forward, &url).await?;
                if refused(&url, &answer) {
                    Ok(())
                } else {
                    Err(format!("status {}, body {:?}", answer.0, answer.1))
                }
            }
        },
    )
    .await;
}

/// Fails at once, saying why, when the set-up script's RuntimeClass is missing.
async fn require_runtime_class(client: &Client) {
    let found = Api::<RuntimeClass>::all(client.clone())
        .get_opt(RUNTIME_CLASS)
        .await
        .unwrap_or_else(|e| panic!("reading RuntimeClass {RUNTIME_CLASS}: {e}"));
    assert!(
        found.is_some(),
        "RuntimeClass {RUNTIME_CLASS} (handler runc) does not exist: the cluster's set-up makes it"
    );
}

#[tokio::test]
async fn a_pod_in_a_profiled_namespace_becomes_a_fargate_pod_and_runs() {
    let client = client().await;
    require_runtime_class(&client).await;
    let profile = unique_name("e2e-mutate");
    // The profile goes after the namespace, so that a failing test's report shows its policy.
    let test = with_temp_namespaces(&client, |client, temp_namespaces| {
        let profile = profile.clone();
        async move {
            let namespace = format!("{profile}-ns");
            let report = [namespace.clone()];
            temp_namespaces.create(&namespace).await;
            apply_profile(
                &client,
                &profile,
                json!({
                    "selectors": [{"namespace": namespace}],
                    "runtimeClassName": RUNTIME_CLASS,
                }),
            )
            .await;
            wait_profiled(&client, &report, &namespace, &profile).await;
            wait_for(
                &client,
                &report,
                PROFILED_SECONDS,
                &format!("profile {profile} to find RuntimeClass {RUNTIME_CLASS}"),
                || async {
                    match profile_condition(&client, &profile, "RuntimeClassFound").await {
                        Some((status, _)) if status == "True" => Ok(()),
                        other => Err(format!("RuntimeClassFound {other:?}")),
                    }
                },
            )
            .await;

            // 100m and 300Mi, plus the default 256Mi overhead: 0.25 vCPU and 556Mi, which the
            // Fargate menu rounds up to 0.25 vCPU / 1 GiB.
            let created = create_pod(
                &client,
                &namespace,
                &echo_pod(
                    "sized",
                    json!({"resources": {"requests": {"cpu": "100m", "memory": "300Mi"}}}),
                ),
            )
            .await;

            assert_eq!(created.labels().get(PROFILE_LABEL), Some(&profile));
            assert_eq!(
                created
                    .annotations()
                    .get(CAPACITY_ANNOTATION)
                    .map(String::as_str),
                Some("0.25vCPU 1GB"),
                "annotations: {:?}",
                created.annotations()
            );
            let spec = created.spec.clone().expect("a spec");
            assert_eq!(spec.runtime_class_name.as_deref(), Some(RUNTIME_CLASS));
            // The size as pod-level resources, requests equal to limits.
            let resources = spec.resources.as_ref().unwrap_or_else(|| {
                panic!(
                    "no pod-level resources (spec.resources): does the cluster (1.34+) serve \
                     PodLevelResources? {spec:?}"
                )
            });
            for (what, quantities) in [
                ("requests", &resources.requests),
                ("limits", &resources.limits),
            ] {
                let quantities = quantities
                    .as_ref()
                    .unwrap_or_else(|| panic!("no pod-level {what}: {resources:?}"));
                let cpu = quantities.get("cpu").map(|q| q.0.as_str());
                let memory = quantities.get("memory").map(|q| q.0.as_str());
                assert_eq!(
                    (cpu, memory),
                    (Some("250m"), Some("1Gi")),
                    "pod-level {what}"
                );
            }
            // The container keeps what it asked for.
            let container = &spec.containers[0];
            let asked = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("cpu"))
                .map(|q| q.0.as_str());
            assert_eq!(asked, Some("100m"), "the container's own requests");
            // Hardened: the runtime's seccomp profile, no privilege escalation, no API token.
            let seccomp = spec
                .security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref())
                .map(|p| p.type_.as_str());
            assert_eq!(seccomp, Some("RuntimeDefault"), "pod seccompProfile");
            for container in &spec.containers {
                assert_eq!(
                    container
                        .security_context
                        .as_ref()
                        .and_then(|s| s.allow_privilege_escalation),
                    Some(false),
                    "container {}: allowPrivilegeEscalation",
                    container.name
                );
            }
            assert_eq!(spec.automount_service_account_token, Some(false));
            let volumes: Vec<&str> = spec
                .volumes
                .iter()
                .flatten()
                .map(|v| v.name.as_str())
                .collect();
            assert!(
                !volumes.iter().any(|v| v.starts_with("kube-api-access-")),
                "the API token volume is still there: {volumes:?}"
            );

            // And the Fargate pod runs, under the RuntimeClass, within its size.
            wait_ready(&client, &report, &namespace, "sized").await;
        }
    });
    deleting_profile_after(&client, &profile, test).await;
}

#[tokio::test]
async fn a_profile_fences_its_pods_from_other_namespaces_but_not_from_each_other() {
    let client = client().await;
    let profile = unique_name("e2e-fence");
    // The profile goes after the namespaces, so that a failing test's report shows its policies.
    let test = with_temp_namespaces(&client, |client, temp_namespaces| {
        let profile = profile.clone();
        async move {
            let (a_ns, b_ns, x_ns) = (
                format!("{profile}-a"),
                format!("{profile}-b"),
                format!("{profile}-x"),
            );
            let report = vec![a_ns.clone(), b_ns.clone(), x_ns.clone()];
            for namespace in &report {
                temp_namespaces.create(namespace).await;
            }
            // The defaults: allowSameProfile and allowDNS, no egress or ingress rules — so a and
            // b are one "security group", and nothing else is allowed either way.
            apply_profile(
                &client,
                &profile,
                json!({"selectors": [{"namespace": a_ns}, {"namespace": b_ns}]}),
            )
            .await;
            wait_profiled(&client, &report, &a_ns, &profile).await;
            wait_profiled(&client, &report, &b_ns, &profile).await;

            let a = create_pod(&client, &a_ns, &echo_pod("a", json!({}))).await;
            let b = create_pod(&client, &b_ns, &echo_pod("b", json!({}))).await;
            let x = create_pod(&client, &x_ns, &echo_pod("x", json!({}))).await;
            assert_eq!(a.labels().get(PROFILE_LABEL), Some(&profile));
            assert_eq!(b.labels().get(PROFILE_LABEL), Some(&profile));
            assert_eq!(x.labels().get(PROFILE_LABEL), None, "x is no profile's");
            let a_ip = pod_ip(&wait_ready(&client, &report, &a_ns, "a").await);
            let b_ip = pod_ip(&wait_ready(&client, &report, &b_ns, "b").await);
            let x_ip = pod_ip(&wait_ready(&client, &report, &x_ns, "x").await);

            let a_forward = PortForward::open(&a_ns, "pod/a", ECHO_PORT).await;
            let b_forward = PortForward::open(&b_ns, "pod/b", ECHO_PORT).await;
            let x_forward = PortForward::open(&x_ns, "pod/x", ECHO_PORT).await;
            let (a_from, b_from, x_from) =
                (("a", &a_forward), ("b", &b_forward), ("x", &x_forward));
            let (a_to, b_to, x_to) = (
                ("a", a_ip.as_str()),
                ("b", b_ip.as_str()),
                ("x", x_ip.as_str()),
            );

            // An unprofiled pod is not let in, and the profile's pod may not connect out: its
            // egress is denied but for DNS and its profile's pods.
            wait_fenced(&client, &report, x_from, a_to).await;
            wait_fenced(&client, &report, a_from, x_to).await;
            // Inside the fence, the profile's pods reach each other across its namespaces.
            wait_reachable(&client, &report, a_from, b_to).await;
            wait_reachable(&client, &report, b_from, a_to).await;
            // The fence still holds: one more call each way, refused at once.
            for ((from, forward), (to, to_ip)) in [(x_from, a_to), (a_from, x_to)] {
                let url = echo_url(to_ip);
                let answer = call(forward, &url)
                    .await
                    .unwrap_or_else(|e| panic!("pod {from} calling pod {to}: {e}"));
                assert!(
                    refused(&url, &answer),
                    "pod {from} reached pod {to} at {url} after the fence held: status {}, body {:?}",
                    answer.0,
                    answer.1
                );
            }
        }
    });
    deleting_profile_after(&client, &profile, test).await;
}

#[tokio::test]
async fn a_privileged_pod_in_a_profiled_namespace_is_refused_naming_the_profile_and_field() {
    let client = client().await;
    let profile = unique_name("e2e-forbid");
    let test = with_temp_namespaces(&client, |client, temp_namespaces| {
        let profile = profile.clone();
        async move {
            let namespace = format!("{profile}-ns");
            let report = [namespace.clone()];
            temp_namespaces.create(&namespace).await;
            apply_profile(
                &client,
                &profile,
                json!({"selectors": [{"namespace": namespace}]}),
            )
            .await;
            // From here on the API server calls the webhooks for this namespace.
            wait_profiled(&client, &report, &namespace, &profile).await;

            let mut privileged: Pod = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "privileged"},
                "spec": {"containers": [{
                    "name": "app",
                    "image": ECHO_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "securityContext": {"privileged": true},
                }]},
            }))
            .expect("a valid pod");
            let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let message = match pods.create(&PostParams::default(), &privileged).await {
                Ok(_) => panic!("the privileged pod was admitted into {namespace}"),
                Err(kube::Error::Api(status)) => status.message,
                Err(other) => panic!("creating the privileged pod: {other}"),
            };
            let expected = format!(
                "profile {profile:?} forbids spec.containers[0].securityContext.privileged \
                 (container \"app\"): Fargate pods cannot be privileged"
            );
            assert!(
                message.contains("denied the request") && message.contains(&expected),
                "the refusal does not say {expected:?}: {message}"
            );
            let stored = pods
                .get_opt("privileged")
                .await
                .expect("reading pods after the refusal");
            assert!(stored.is_none(), "a refused pod was stored: {stored:?}");

            // The same pod without the privilege is admitted (a dry run): the field was the
            // reason.
            if let Some(security) = privileged
                .spec
                .as_mut()
                .and_then(|spec| spec.containers[0].security_context.as_mut())
            {
                security.privileged = None;
            }
            let dry_run = PostParams {
                dry_run: true,
                field_manager: None,
            };
            let admitted = pods
                .create(&dry_run, &privileged)
                .await
                .unwrap_or_else(|e| panic!("the same pod, unprivileged, is refused: {e}"));
            assert_eq!(admitted.labels().get(PROFILE_LABEL), Some(&profile));
        }
    });
    deleting_profile_after(&client, &profile, test).await;
}

/// The function's pods that are not being deleted.
async fn live_pods(client: &Client, namespace: &str, function: &str) -> Result<Vec<Pod>, String> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("fargo.dev/function={function}")))
        .await
        .map(|list| {
            list.items
                .into_iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                .collect()
        })
        .map_err(|e| format!("listing the function's pods: {e}"))
}

/// `Ok` when the function is at zero: Ready because ScaledToZero, its Deployment at 0 replicas,
/// none of its pods live.
async fn at_zero(client: &Client, namespace: &str, function: &str) -> Result<(), String> {
    let ready = function_condition(client, namespace, function, "Ready").await;
    match &ready {
        Some((status, reason, _)) if status == "True" && reason == "ScaledToZero" => {}
        other => return Err(format!("Ready {other:?}")),
    }
    let scaled = function_condition(client, namespace, function, "ScaledToZero").await;
    if !matches!(&scaled, Some((status, _, _)) if status == "True") {
        return Err(format!("ScaledToZero {scaled:?}"));
    }
    let replicas = function_replicas(client, namespace, function).await;
    if replicas != Some(0) {
        return Err(format!("Deployment replicas {replicas:?}"));
    }
    let pods = live_pods(client, namespace, function).await?;
    if pods.is_empty() {
        Ok(())
    } else {
        let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        Err(format!("live pods {names:?}"))
    }
}

/// Port `http` of Service fargo-activator: where function URLs point.
async fn activator_port(client: &Client) -> u16 {
    let service = Api::<Service>::namespaced(client.clone(), RELEASE_NAMESPACE)
        .get(ACTIVATOR_SERVICE)
        .await
        .unwrap_or_else(|e| {
            panic!("Service {RELEASE_NAMESPACE}/{ACTIVATOR_SERVICE} (is the chart installed?): {e}")
        });
    let port = service
        .spec
        .and_then(|spec| spec.ports)
        .unwrap_or_default()
        .into_iter()
        .find(|port| port.name.as_deref() == Some("http"))
        .unwrap_or_else(|| panic!("Service {ACTIVATOR_SERVICE} has no port named http"))
        .port;
    u16::try_from(port).expect("a port number")
}

#[tokio::test]
async fn a_function_wakes_from_zero_through_the_activator_service_and_returns_to_zero() {
    let client = client().await;
    with_temp_namespaces(&client, |client, temp_namespaces| async move {
        const FUNCTION: &str = "echo";
        let namespace = temp_namespaces.create_unique("e2e-fn").await;
        let report = [namespace.clone()];
        apply_function(
            &client,
            &namespace,
            FUNCTION,
            json!({
                "image": ECHO_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "port": ECHO_PORT,
                "timeout": FUNCTION_TIMEOUT,
                "scale": {"min": 0, "idleTimeout": IDLE_TIMEOUT},
            }),
        )
        .await;
        wait_for(
            &client,
            &report,
            POD_READY_SECONDS,
            &format!("function {namespace}/{FUNCTION} to be Ready at zero"),
            || at_zero(&client, &namespace, FUNCTION),
        )
        .await;

        // The URL the controller gives the function: the activator Service, then the path that
        // names the function.
        let function =
            Api::<fargo::api::ServerlessFunction>::namespaced(client.clone(), &namespace)
                .get(FUNCTION)
                .await
                .expect("reading the function");
        let status_url = function
            .status
            .and_then(|status| status.url)
            .unwrap_or_default();
        let prefix = format!("/{namespace}/{FUNCTION}/");
        assert!(
            status_url.starts_with(&format!(
                "http://{ACTIVATOR_SERVICE}.{RELEASE_NAMESPACE}.svc"
            )) && status_url.ends_with(&prefix),
            "status.url {status_url:?} is not the activator Service's {prefix}"
        );

        let activator = PortForward::open(
            RELEASE_NAMESPACE,
            &format!("service/{ACTIVATOR_SERVICE}"),
            activator_port(&client).await,
        )
        .await;
        // Until the activator behind the forward has seen the function, it answers 404; then it
        // holds the request while the pod starts.
        let path = format!("{prefix}hello?from=e2e");
        let (status, body) = wait_for(
            &client,
            &report,
            60,
            &format!("an answer to GET {path} through the activator"),
            || async {
                match activator.get(&path, FUNCTION_REQUEST_TIMEOUT).await {
                    Ok((404, body)) if body.starts_with("no function") => {
                        Err(format!("404 {body}"))
                    }
                    other => other,
                }
            },
        )
        .await;
        assert_eq!(status, 200, "GET {path} through the activator: {body}");
        let echo: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("the answer is fargo-echo's JSON ({e}): {body}"));
        assert_eq!(echo["method"], "GET", "{body}");
        assert_eq!(
            echo["path"], "/hello",
            "the activator strips /<namespace>/<function>: {body}"
        );
        assert_eq!(echo["query"], json!({"from": "e2e"}), "{body}");

        // It came from a pod of this function, which the request woke.
        let hostname = echo["hostname"].as_str().unwrap_or_default().to_string();
        let pods = live_pods(&client, &namespace, FUNCTION)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        assert!(
            names.contains(&hostname),
            "the answer came from {hostname:?}, not one of the function's pods {names:?}"
        );
        let replicas = function_replicas(&client, &namespace, FUNCTION).await;
        assert!(
            replicas.is_some_and(|r| r >= 1),
            "the Deployment asks for {replicas:?} replicas after the wake"
        );

        // No more requests: back to zero after the idle timeout.
        drop(activator);
        wait_for(
            &client,
            &report,
            BACK_TO_ZERO_SECONDS,
            &format!("function {namespace}/{FUNCTION} to return to zero after {IDLE_TIMEOUT} idle"),
            || at_zero(&client, &namespace, FUNCTION),
        )
        .await;
    })
    .await;
}
