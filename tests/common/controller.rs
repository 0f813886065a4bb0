//! `fargo controller` run out of cluster: its webhook registered by URL, and its Lease.

use std::time::Duration;

use kube::Client;
use kube::api::Api;

use super::namespaces::ensure_namespace;
use super::processes::{print_fargo_logs, spawn_fargo};
use super::wait::eventually;

/// A `fargo controller` process run out of cluster against the local cluster, its webhook
/// registered by URL on 127.0.0.1. It dies with the test process.
pub struct ControllerProcess {
    child: std::process::Child,
    pub webhook_port: u16,
    pub health_port: u16,
    /// Flags after the usual ones, kept for a restart.
    extra: Vec<String>,
}

impl ControllerProcess {
    /// Starts the controller built by this `cargo test` and waits until the API server calls its
    /// webhook.
    pub async fn start(client: &Client, webhook_port: u16, health_port: u16) -> Self {
        Self::start_with(client, webhook_port, health_port, &[]).await
    }

    /// [`ControllerProcess::start`] with `extra` flags (kept for restarts).
    pub async fn start_with(
        client: &Client,
        webhook_port: u16,
        health_port: u16,
        extra: &[String],
    ) -> Self {
        ensure_namespace(client, "fargo-system").await;
        let child = spawn_controller_with(webhook_port, health_port, extra);
        let process = Self {
            child,
            webhook_port,
            health_port,
            extra: extra.to_vec(),
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
        self.child = spawn_controller_with(self.webhook_port, self.health_port, &self.extra);
        self.wait_until_serving(client).await;
    }

    async fn wait_until_serving(&self, client: &Client) {
        wait_until_serving(client, self.webhook_port).await;
    }
}

/// Where the API server reaches the tests' out-of-cluster webhook: 127.0.0.1 for the local
/// cluster, or `FARGO_TEST_WEBHOOK_HOST` for an API server elsewhere (in a container, say).
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

/// One controller for all the tests of a test binary, started by the first that asks. It is
/// spawned from a thread that lives as long as the test process, so it outlives each test and
/// still dies with the process.
pub async fn shared_controller(client: &Client, webhook_port: u16, health_port: u16) {
    shared_controller_with(client, webhook_port, health_port, &[]).await;
}

/// [`shared_controller`] with `extra` flags (those of the first caller count).
pub async fn shared_controller_with(
    client: &Client,
    webhook_port: u16,
    health_port: u16,
    extra: &[String],
) {
    static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ensure_namespace(client, "fargo-system").await;
    STARTED.get_or_init(|| {
        let (started, wait) = std::sync::mpsc::channel();
        let extra = extra.to_vec();
        std::thread::spawn(move || {
            let mut child = spawn_controller_with(webhook_port, health_port, &extra);
            let _ = started.send(());
            // The thread must outlive the tests: the child gets SIGTERM when it ends.
            let _ = child.wait();
        });
        wait.recv().expect("the controller thread started");
    });
    wait_until_serving(client, webhook_port).await;
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
