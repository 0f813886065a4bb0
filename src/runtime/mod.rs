//! `fargo runtime-api`: the in-pod part of handler functions, a native sidecar beside the
//! runtime container, which runs AWS's own runtime interface client.
//!
//! The activator forwards each HTTP request to the function port ([`function_port`]), where it
//! becomes an event ([`event`]) and an invocation ([`invocations`]); the runtime client takes it
//! from AWS's Runtime API on 127.0.0.1 ([`runtime_api`]) and posts the handler's answer, which
//! becomes the HTTP response ([`response`]). Each invocation has Lambda's deadline, `START` /
//! `END` / `REPORT` lines ([`report`]) and metrics ([`metrics`]); kubelet probes `/ready` and
//! `/live` ([`probes`]), so that a runtime that timed out is restarted, as Lambda does.
//!
//! Imports only [`crate::api`] and [`crate::telemetry`].

pub mod cli;
pub mod event;
pub mod function_port;
pub mod invocations;
pub mod metrics;
pub mod probes;
pub mod report;
pub mod response;
pub mod runtime_api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry;
pub use invocations::Function;
use invocations::Invocations;
use metrics::RuntimeMetrics;
use runtime_api::RuntimeConnection;

/// How the sidecar runs (the `fargo runtime-api` flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// The function's port, which the activator forwards requests to.
    pub listen: SocketAddr,
    /// AWS's Runtime API, for the runtime client (`AWS_LAMBDA_RUNTIME_API`).
    pub runtime_api: SocketAddr,
    /// `/ready`, `/live` and `/metrics`.
    pub probe_listen: SocketAddr,
    pub function: Function,
    /// Largest event and largest response (Lambda's synchronous limit is 6 MiB).
    pub max_payload_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} for {what}: {source}; choose another {flag}")]
    Bind {
        what: &'static str,
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving {what}: {source}")]
    Serve {
        what: &'static str,
        source: std::io::Error,
    },
}

async fn bind(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        what,
        flag,
        addr,
        source,
    })
}

/// Serves until `shutdown` is cancelled, then drains: `/ready` turns 503, the function port
/// takes no new connection and finishes the requests it has (each bounded by its deadline),
/// the Runtime API serves until every invocation has ended, and then everything stops.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let mut registry = Registry::with_prefix("fargo");
    let metrics = RuntimeMetrics::register(registry.sub_registry_with_prefix("runtime"));
    let invocations = Invocations::new(config.function.clone(), metrics);

    let runtime_listener = bind(config.runtime_api, "the Runtime API", "--runtime-api").await?;
    let probe_listener = bind(config.probe_listen, "the probes", "--probe-listen").await?;
    let function_listener = bind(config.listen, "the function port", "--listen").await?;

    let readiness = telemetry::Readiness::default();
    readiness.set(true);
    let stop_probes = CancellationToken::new();
    let probes = tokio::spawn(telemetry::serve(
        probe_listener,
        probes::router(invocations.clone(), Arc::new(registry), readiness.clone()),
        stop_probes.clone(),
    ));

    let stop_runtime = CancellationToken::new();
    let runtime_router = runtime_api::router(
        invocations.clone(),
        stop_runtime.clone(),
        config.max_payload_bytes,
    );
    let runtime = tokio::spawn(
        axum::serve(
            runtime_listener,
            runtime_router.into_make_service_with_connect_info::<RuntimeConnection>(),
        )
        .with_graceful_shutdown(stop_runtime.clone().cancelled_owned())
        .into_future(),
    );

    let function_router = function_port::router(invocations.clone(), config.max_payload_bytes);
    let mut function = tokio::spawn(
        axum::serve(
            function_listener,
            function_router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future(),
    );
    tracing::info!(
        function = %format!("{}/{}", config.function.namespace, config.function.name),
        listen = %config.listen,
        runtime_api = %config.runtime_api,
        probes = %config.probe_listen,
        timeout = ?config.function.timeout,
        "runtime API sidecar serving"
    );

    let served = tokio::select! {
        () = shutdown.cancelled() => None,
        result = &mut function => Some(result),
    };
    invocations.drain();
    readiness.set(false);
    tracing::info!("draining: no new invocations; finishing those in flight");
    let function_result = match served {
        Some(result) => result,
        None => function.await,
    };
    // Invocations whose caller left keep running until their deadline.
    let give_up = tokio::time::Instant::now() + config.function.timeout;
    while !invocations.idle() && tokio::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_runtime.cancel();
    let runtime_result = runtime.await;
    stop_probes.cancel();
    let probes_result = probes.await;
    for (what, result) in [
        ("the function port", function_result),
        ("the Runtime API", runtime_result),
        ("the probes", probes_result),
    ] {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(Error::Serve { what, source }),
            Err(join) => {
                return Err(Error::Serve {
                    what,
                    source: std::io::Error::other(join),
                });
            }
        }
    }
    tracing::info!("runtime API sidecar stopped");
    Ok(())
}
