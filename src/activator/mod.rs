//! `fargo activator`: the HTTP gateway in front of every function.
//!
//! It routes each request to its function ([`router`]), holds it while the function has no
//! free pod ([`hold`], [`function_state`]) and asks for a scale from zero at once ([`scale`]),
//! balances over the function's pods ([`balancer`]) learned from EndpointSlices
//! ([`endpoints`]), streams the request through ([`proxy`]) and reports per-function
//! concurrency ([`concurrency`]) to the autoscaler on `GET /stats` ([`crate::api::stats`]).

pub mod auth;
pub mod balancer;
pub mod concurrency;
pub mod endpoints;
pub mod events;
pub mod function_state;
pub mod hold;
pub mod index;
pub mod lambda_api;
pub mod metrics;
mod plain;
pub mod proxy;
pub mod queues;
pub mod router;
pub mod scale;
pub mod storage;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::api::routes::ActivatorNames;
use crate::connections::ConnectionLimits;
use crate::telemetry;
use auth::{Authenticator, InvokeAuth};
use events::EventQueue;
use hold::HoldLimit;
use index::FunctionIndex;
use lambda_api::LambdaSettings;
use metrics::ActivatorMetrics;
use proxy::Proxy;
use scale::Cluster;

/// How the activator runs (the `fargo activator` flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the proxy listens.
    pub addr: SocketAddr,
    /// Where `/healthz`, `/readyz`, `/metrics` and `/stats` are served.
    pub health_addr: SocketAddr,
    /// Functions are also reached as `{function}.{namespace}.<domain>`.
    pub domain: String,
    /// The activator's own Service and its namespace: no function may claim their names as
    /// hosts, nor names under `domain`.
    pub service_name: String,
    pub service_namespace: String,
    /// Requests each function may hold at once; more get 429.
    pub queue_depth: usize,
    /// Requests the activator may hold at once, all functions together; more get 503.
    pub max_held_requests: usize,
    /// Client connections open at once (see [`crate::connections`]).
    pub max_connections: usize,
    /// How long a client connection may go without a request in progress.
    pub header_read_timeout: Duration,
    /// A request's line and headers, in bytes.
    pub max_header_bytes: usize,
    /// Threads that serve client connections (0: the main runtime does).
    pub proxy_threads: usize,
    /// After SIGTERM, how long to keep serving while not ready, so that Service endpoints drop
    /// this pod before it stops accepting.
    pub drain_delay: Duration,
    /// Whether invocations are metered.
    pub metering: bool,
    /// NATS for asynchronous invocations; `None` refuses them.
    pub nats_url: Option<String>,
    pub nats_replicas: usize,
    /// Whether the Lambda API asks for signatures.
    pub invoke_auth: InvokeAuth,
    /// Secret (in `service_namespace`) with the access keys.
    pub invoke_keys_secret: String,
    /// Secret (in `service_namespace`) with the tokens of object-storage notifications.
    pub storage_tokens_secret: String,
    pub region: String,
    /// Namespace of plain function names when the caller has no default.
    pub default_namespace: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} for the proxy: {source}; choose another --addr")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving health, metrics and stats on {addr}: {source}; choose another --health-addr")]
    Health {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Longest an activator on its way out waits for the autoscaler's last scrape of `/stats`.
const FINAL_SCRAPE_WAIT: Duration = Duration::from_secs(3);

/// Runs the activator until `shutdown` is cancelled, then drains: `/readyz` turns not ready,
/// the proxy keeps serving for `drain_delay` (closing each HTTP/1 connection after its next
/// response, so clients move to the other replicas), stops accepting, and returns once every
/// request in flight or held has finished.
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut registry = Registry::with_prefix("fargo");
    let metrics = ActivatorMetrics::register(registry.sub_registry_with_prefix("activator"));
    let names = ActivatorNames::new(
        &config.service_name,
        &config.service_namespace,
        &config.domain,
    );
    let index = Arc::new(FunctionIndex::new(
        names,
        config.queue_depth,
        HoldLimit::new(config.max_held_requests),
        metrics,
    ));

    let (functions_synced, functions_ready) = oneshot::channel();
    let (endpoints_synced, endpoints_ready) = oneshot::channel();
    let watches = [
        tokio::spawn(index::watch_functions(
            client.clone(),
            index.clone(),
            functions_synced,
        )),
        tokio::spawn(endpoints::watch_endpoint_slices(
            client.clone(),
            index.clone(),
            endpoints_synced,
        )),
    ];

    let readiness = telemetry::Readiness::default();
    let stats_index = index.clone();
    // Scrapes of `/stats` so far, so that shutting down can wait for one more.
    let scrapes = Arc::new(tokio::sync::watch::Sender::new(0_u64));
    let scraped = scrapes.clone();
    let health_router = telemetry::health_router(Arc::new(registry), readiness.clone()).route(
        "/stats",
        get(move || {
            let index = stats_index.clone();
            let scraped = scraped.clone();
            async move {
                let stats = index.stats();
                scraped.send_modify(|n| *n += 1);
                Json(stats)
            }
        }),
    );
    let stop_health = CancellationToken::new();
    let health_listener = tokio::net::TcpListener::bind(config.health_addr)
        .await
        .map_err(|source| Error::Health {
            addr: config.health_addr,
            source,
        })?;
    let mut health = tokio::spawn(telemetry::serve(
        health_listener,
        health_router,
        stop_health.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.addr,
            source,
        })?;
    tracing::info!(addr = %config.addr, domain = %config.domain, "activator proxy listening");
    let auth = Arc::new(Authenticator::new(
        config.invoke_auth,
        Some(config.region.clone()),
    ));
    let (keys_loaded, keys_ready) = oneshot::channel();
    let keys = tokio::spawn(auth::watch_keys(
        client.clone(),
        config.service_namespace.clone(),
        config.invoke_keys_secret.clone(),
        auth.clone(),
        keys_loaded,
    ));
    let storage_tokens = Arc::new(storage::StorageTokens::default());
    let (tokens_loaded, tokens_ready) = oneshot::channel();
    let tokens = tokio::spawn(auth::watch_storage_tokens(
        client.clone(),
        config.service_namespace.clone(),
        config.storage_tokens_secret.clone(),
        storage_tokens.clone(),
        tokens_loaded,
    ));
    let events = match &config.nats_url {
        Some(url) => match EventQueue::connect(url, config.nats_replicas).await {
            Ok(queue) => Some(Arc::new(queue)),
            Err(error) => {
                tracing::error!(%url, %error, "NATS: asynchronous invocations are refused");
                None
            }
        },
        None => {
            tracing::info!("no --nats-url: asynchronous invocations are refused");
            None
        }
    };
    let lambda = LambdaSettings {
        region: config.region.clone(),
        default_namespace: config.default_namespace.clone(),
        events: events.clone(),
    };
    let proxy = Arc::new(
        Proxy::new(index.clone(), Some(Cluster::new(client)))
            .with_lambda(auth, lambda)
            .with_storage_tokens(storage_tokens)
            .with_metering(config.metering),
    );
    let stop_delivery = CancellationToken::new();
    let delivering = proxy.clone();
    let proxy_shutdown = proxy::Shutdown::default();
    let limits = proxy::ClientLimits {
        connections: ConnectionLimits {
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
            evict_idle_after: crate::connections::EVICT_IDLE_AFTER,
            // Held requests and slow functions are what the activator is for.
            cut_requests_after: None,
        },
        max_header_bytes: config.max_header_bytes,
    };
    let mut proxy_served = tokio::spawn(proxy::serve(
        listener,
        proxy,
        limits,
        config.proxy_threads,
        proxy_shutdown.clone(),
    ));

    // Ready once both watches have listed everything and both Secrets are loaded, so that no
    // request meets an empty index or is refused for a key not yet read.
    let synced = async {
        let _ = functions_ready.await;
        let _ = endpoints_ready.await;
        let _ = keys_ready.await;
        let _ = tokens_ready.await;
    };
    let mut delivery = vec![];
    tokio::select! {
        () = synced => {
            readiness.set(true);
            tracing::info!(functions = index.function_count(), "activator ready");
            // Events, storage notifications published to NATS, and queue triggers' streams,
            // from now on only: a notification read before the tokens were would be refused
            // for good.
            if let Some(queue) = events {
                delivery = vec![
                    tokio::spawn(events::deliver(
                        queue.clone(),
                        delivering.clone(),
                        stop_delivery.clone(),
                    )),
                    tokio::spawn(storage::consume(
                        queue.clone(),
                        delivering.clone(),
                        stop_delivery.clone(),
                    )),
                    tokio::spawn(queues::consume(queue, delivering, stop_delivery.clone())),
                ];
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                result = &mut health => return health_failed(result, config.health_addr),
            }
        }
        () = shutdown.cancelled() => {}
        result = &mut health => return health_failed(result, config.health_addr),
    }

    readiness.set(false);
    proxy_shutdown.draining.cancel();
    // No new deliveries from a replica on its way out; events being delivered finish, and any
    // left unacknowledged go to another replica after their ack wait.
    stop_delivery.cancel();
    tracing::info!(delay = ?config.drain_delay, "draining: not ready, still serving, closing connections after each response");
    tokio::time::sleep(config.drain_delay).await;
    tracing::info!("draining: no new connections; finishing requests in flight and held");
    proxy_shutdown.stop.cancel();
    if let Err(error) = (&mut proxy_served).await {
        tracing::error!(%error, "proxy task failed");
    }
    for task in delivery {
        task.abort();
    }
    // Every request has ended and been metered: wait for the autoscaler to read the last
    // counts (it scrapes every second), so that none is lost with this process.
    let mut next_scrape = scrapes.subscribe();
    next_scrape.mark_unchanged();
    if tokio::time::timeout(FINAL_SCRAPE_WAIT, next_scrape.changed())
        .await
        .is_err()
    {
        tracing::info!(wait = ?FINAL_SCRAPE_WAIT, "no last scrape of the usage counts came");
    }
    keys.abort();
    tokens.abort();
    for watch in watches {
        watch.abort();
    }
    stop_health.cancel();
    match health.await {
        Ok(Ok(())) => {}
        result => return health_failed(result, config.health_addr),
    }
    tracing::info!("activator stopped");
    Ok(())
}

fn health_failed(
    result: Result<std::io::Result<()>, tokio::task::JoinError>,
    addr: SocketAddr,
) -> Result<(), Error> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(Error::Health { addr, source }),
        Err(join) => Err(Error::Health {
            addr,
            source: std::io::Error::other(join),
        }),
    }
}
