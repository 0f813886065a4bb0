//! `fargo activator` run out of cluster, and where it listens.

use super::http::http_request;
use super::processes::{FargoProcess, free_port, spawn_fargo_from, spawn_for_the_process};
use super::wait::eventually;

/// Where an out-of-cluster `fargo activator` listens.
#[derive(Clone, Copy, Debug)]
pub struct ActivatorAddrs {
    /// The proxy.
    pub port: u16,
    /// `/healthz`, `/readyz`, `/metrics`, `/stats`.
    pub health_port: u16,
}

impl ActivatorAddrs {
    /// Ports of 127.0.0.1 that were free a moment ago.
    pub fn free() -> Self {
        Self {
            port: free_port(),
            health_port: free_port(),
        }
    }

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
    spawn_activator_with(addrs, &[])
}

/// [`spawn_activator`] with more flags.
pub fn spawn_activator_with(addrs: ActivatorAddrs, extra: &[String]) -> std::process::Child {
    spawn_activator_from(env!("CARGO_BIN_EXE_fargo").as_ref(), addrs, extra)
}

/// [`spawn_activator_with`], from another build of `fargo`.
fn spawn_activator_from(
    binary: &std::path::Path,
    addrs: ActivatorAddrs,
    extra: &[String],
) -> std::process::Child {
    let mut args = vec![
        "activator".to_string(),
        "--addr".into(),
        format!("127.0.0.1:{}", addrs.port),
        "--health-addr".into(),
        format!("127.0.0.1:{}", addrs.health_port),
        "--drain-delay".into(),
        "0s".into(),
    ];
    args.extend(extra.iter().cloned());
    spawn_fargo_from(binary, &args, &format!("activator-{}.log", addrs.port))
}

/// Starts an activator on free ports and waits until it is ready; it stops when dropped.
pub async fn start_activator() -> (FargoProcess, ActivatorAddrs) {
    let addrs = ActivatorAddrs::free();
    let process = FargoProcess::new(spawn_activator(addrs));
    addrs.wait_until_ready().await;
    (process, addrs)
}

/// [`start_activator`] with more flags.
pub async fn start_activator_with(extra: &[String]) -> (FargoProcess, ActivatorAddrs) {
    let addrs = ActivatorAddrs::free();
    let process = FargoProcess::new(spawn_activator_with(addrs, extra));
    addrs.wait_until_ready().await;
    (process, addrs)
}

/// [`start_activator`] from another build of `fargo` (a benchmark's baseline).
pub async fn start_activator_from(binary: &std::path::Path) -> (FargoProcess, ActivatorAddrs) {
    let addrs = ActivatorAddrs::free();
    let process = FargoProcess::new(spawn_activator_from(binary, addrs, &[]));
    addrs.wait_until_ready().await;
    (process, addrs)
}

/// An activator with `extra` flags that lives as long as the test process, on free ports;
/// returns once it is ready.
pub async fn activator_for_the_process(extra: &[String]) -> ActivatorAddrs {
    let addrs = ActivatorAddrs::free();
    let extra = extra.to_vec();
    spawn_for_the_process(move || spawn_activator_with(addrs, &extra));
    addrs.wait_until_ready().await;
    addrs
}

/// One activator for all the tests of a test binary, started by the first that asks.
pub async fn shared_activator() -> ActivatorAddrs {
    static ADDRS: std::sync::OnceLock<ActivatorAddrs> = std::sync::OnceLock::new();
    let addrs = *ADDRS.get_or_init(|| {
        let addrs = ActivatorAddrs::free();
        spawn_for_the_process(move || spawn_activator(addrs));
        addrs
    });
    addrs.wait_until_ready().await;
    addrs
}
