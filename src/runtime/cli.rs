//! The sidecar's command line, shared by `fargo runtime-api` and the `fargo-runtime-api` binary
//! that function pods run (the same server without the controller, webhook and Kubernetes
//! client linked in: a fraction of the size and of the resident memory).

use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, Function};

#[derive(clap::Args, Debug)]
pub struct RuntimeApiArgs {
    /// The function's port: the activator forwards HTTP requests here.
    #[arg(long, env = "FARGO_RUNTIME_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// AWS Lambda's Runtime API, for the runtime interface client (`AWS_LAMBDA_RUNTIME_API`).
    #[arg(long, env = "FARGO_RUNTIME_API", default_value = "127.0.0.1:9001")]
    runtime_api: SocketAddr,

    /// Address of `/ready`, `/live` and `/metrics`.
    #[arg(
        long,
        env = "FARGO_RUNTIME_PROBE_LISTEN",
        default_value = "0.0.0.0:9002"
    )]
    probe_listen: SocketAddr,

    /// The function's name.
    #[arg(long, env = "AWS_LAMBDA_FUNCTION_NAME")]
    function_name: String,

    /// The function's namespace (the account in its ARN).
    #[arg(long, env = "FARGO_FUNCTION_NAMESPACE")]
    namespace: String,

    /// Memory of the function in MB, as its REPORT lines state it.
    #[arg(long, env = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
          value_parser = clap::value_parser!(u32).range(1..))]
    memory_mb: u32,

    /// How long an invocation may take, from its arrival, in milliseconds.
    #[arg(long, env = "FARGO_FUNCTION_TIMEOUT_MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,

    /// Region in the function's ARN.
    #[arg(long, env = "AWS_REGION", default_value = "local")]
    region: String,

    /// Largest event and largest response, in bytes (Lambda's synchronous limit); larger
    /// requests get 413.
    #[arg(long, env = "FARGO_RUNTIME_MAX_PAYLOAD_BYTES", default_value_t = 6 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..))]
    max_payload_bytes: u64,
}

impl RuntimeApiArgs {
    pub fn into_config(self) -> Config {
        Config {
            listen: self.listen,
            runtime_api: self.runtime_api,
            probe_listen: self.probe_listen,
            function: Function::new(
                &self.region,
                &self.namespace,
                &self.function_name,
                self.memory_mb,
                Duration::from_millis(self.timeout_ms),
            ),
            max_payload_bytes: usize::try_from(self.max_payload_bytes).unwrap_or(usize::MAX),
        }
    }
}

/// `addr` did not accept connections in time.
#[derive(Debug, thiserror::Error)]
#[error("{addr} did not accept connections within {within:?}: {source}")]
pub struct NotListening {
    addr: SocketAddr,
    within: Duration,
    #[source]
    source: std::io::Error,
}

/// Waits until `addr` accepts TCP connections: the pod's `postStart` hook holds the runtime back
/// until the Runtime API listens.
pub async fn wait_for(addr: SocketAddr, within: Duration) -> Result<(), NotListening> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(source) if tokio::time::Instant::now() >= deadline => {
                return Err(NotListening {
                    addr,
                    within,
                    source,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}
