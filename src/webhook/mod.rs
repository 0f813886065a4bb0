//! The admission webhook, served over TLS by every `fargo controller` replica.
//!
//! The webhook configurations select the namespaces the profiles name (see [`admission_scope`])
//! and fail closed there (`failurePolicy: Fail`): where isolation is promised, a pod is never
//! admitted without it, and no other namespace ever depends on fargo being up. The scope comes
//! from the profiles themselves, through the name the API server gives every namespace, never
//! from a label fargo writes later: a namespace created, or a pod created in it, before fargo
//! saw it, or while fargo is down, is judged (or refused) like any other. After creation, only
//! the updates fargo judges reach it (see [`configurations`]).

pub mod admission;
pub mod certs;
pub mod fence;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingAdmissionPolicy, MutatingWebhook, MutatingWebhookConfiguration,
    RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::profile::FargateProfile;
use crate::api::{CAPACITY_ANNOTATION, CONTROLLER_MANAGER, NAMESPACE_NAME_LABEL, PROFILE_LABEL};
use crate::caches;
use crate::connections::{
    self, CloseReason, ConnectionLimits, ConnectionMetrics, Connections, RequestCounter,
    TrackedBody,
};
pub use certs::WebhookCertificate;

/// Name of both webhook configurations.
pub const CONFIGURATION_NAME: &str = "fargo";
pub const MUTATE_PATH: &str = "/mutate-pods";
pub const VALIDATE_PATH: &str = "/validate-pods";
pub const NETWORK_POLICY_PATH: &str = "/validate-networkpolicies";

// The bounds on the webhook server's clients. Its one legitimate client is the API server, which
// opens a connection, completes TLS and sends its review at once, and gives up after the
// configurations' `timeoutSeconds` (5): a client slower than that is not the API server, and its
// connection is what gets closed when the API server needs a place.

/// Connections served at once. Each carries one review at a time (an HTTP/2 client opens another
/// connection for the next one), so this also bounds the reviews read at once, and their bodies in
/// memory to this × [`MAX_REVIEW_BYTES`]. The API server opens one per review in flight, and a
/// pod created takes up to two (mutating, then validating): 32 serve 16 pods created at once
/// without a wait. At the cap, the connection idle longest (for at least
/// [`EVICT_IDLE_AFTER`](crate::connections::EVICT_IDLE_AFTER)), else the one whose request has
/// run longest past [`SLOW_REQUEST`], makes room for the new one; until one of them can, the new
/// connection waits in the listen backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// To complete the TLS handshake after the connection is accepted.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// For a connection without a request in progress — new, or kept alive after a response — to
/// complete the next request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// At the cap, a request running this long may be cut for a new connection: a review takes
/// milliseconds once its body has arrived, and the API server sends the body at once.
pub const SLOW_REQUEST: Duration = Duration::from_secs(2);
/// For a whole request, body included: twice the API server's 5 s, by which time it has given up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// An AdmissionReview's size: a pod UPDATE carries the object and the old object, each at most
/// the 1.5 MiB etcd stores, and the API server itself takes no request over 3 MiB.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;
/// A request's headers: the API server sends a few hundred bytes. Over HTTP/1 this is hyper's
/// buffer for the connection, and a request whose headers do not fit is answered
/// 431 and its connection closed; over HTTP/2 the stream is answered 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The bounds [`serve_tls`] puts on its clients; `default()` is the figures above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    pub connections: ConnectionLimits,
    pub handshake_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            connections: ConnectionLimits {
                max_connections: MAX_CONNECTIONS,
                header_read_timeout: HEADER_READ_TIMEOUT,
                evict_idle_after: crate::connections::EVICT_IDLE_AFTER,
                cut_requests_after: Some(SLOW_REQUEST),
            },
            handshake_timeout: HANDSHAKE_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Certificate(#[from] certs::Error),
    #[error("the webhook certificate is unusable: {0}")]
    Tls(String),
    #[error("registering the webhook configurations: {0}")]
    Register(#[source] kube::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook server stopped unexpectedly")]
    Server(#[source] tokio::task::JoinError),
    #[error("asking the API server who the controller is (a SelfSubjectReview): {0}")]
    Identity(#[source] kube::Error),
}

/// How the webhook is reached and where its certificate comes from.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address the TLS server listens on.
    pub addr: SocketAddr,
    /// Out of cluster: the base URL the API server calls (`https://127.0.0.1:8443`); the
    /// certificate is then made in memory for that host.
    pub url: Option<String>,
    /// In cluster: the Service in front of the controller pods.
    pub service_namespace: String,
    pub service_name: String,
    /// Certificate files supplied by the user (`tls.crt`, `tls.key`, `ca.crt`); the controller
    /// then leaves the configurations' `caBundle` to whoever issued them (cert-manager's CA
    /// injector).
    pub cert_dir: Option<PathBuf>,
    /// Secret holding the generated certificate, in `service_namespace`.
    pub secret_name: String,
    /// Whether the controller applies the webhook configurations itself.
    pub register: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    webhook: &'static str,
    allowed: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    /// `body_too_large` or `timeout`.
    reason: &'static str,
}

/// Buckets of the webhook's latency histograms, in seconds: from 100 µs to the 50 ms a review
/// should never take.
const LATENCY_BUCKETS: [f64; 8] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05];

/// Admission metrics: decisions and their latency, by webhook and outcome; the server's
/// connections, and the requests its bounds refused.
pub struct WebhookMetrics {
    decisions: Family<AdmissionLabels, Histogram>,
    requests: Histogram,
    refused: Family<RefusalLabels, Counter>,
    connections: ConnectionMetrics,
}

impl WebhookMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let decisions = Family::<AdmissionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        registry.register(
            "admission_duration_seconds",
            "Time to decide an admission request, by webhook and outcome",
            decisions.clone(),
        );
        let requests = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "request_duration_seconds",
            "Time from a request's headers to its answer being ready: the body read, the review \
             decoded and decided, the answer encoded",
            requests.clone(),
        );
        let refused = Family::default();
        registry.register(
            "requests_refused",
            "Requests the webhook server refused, by bound: body_too_large (413), timeout (408)",
            refused.clone(),
        );
        let connections = ConnectionMetrics::register(registry);
        Arc::new(Self {
            decisions,
            requests,
            refused,
            connections,
        })
    }

    fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }
}

#[derive(Clone)]
struct AppState {
    profiles: Store<FargateProfile>,
    metrics: Arc<WebhookMetrics>,
    /// The user the controller writes as, whose NetworkPolicy writes are never refused.
    fargo_user: Arc<str>,
}

/// What the webhook needs besides its [`Config`]: the profiles it judges by, the namespaces no
/// profile may take, and what else mutates pods.
struct Profiles {
    store: Store<FargateProfile>,
    /// Notified on every change to the profile cache and to the caches of `mutators`.
    changed: Arc<Notify>,
    reserved: Vec<String>,
    mutators: Mutators,
}

impl Profiles {
    /// The scope the configurations are applied with now.
    fn scope(&self) -> AdmissionScope {
        let mut scope = admission_scope(&self.store.state(), &self.reserved);
        scope.revalidate_pods = self.mutators.others_may_mutate_pods();
        scope
    }
}

/// The cluster's other mutating webhook configurations and its MutatingAdmissionPolicies, as
/// watched, each with whether its first list has arrived: until it has (or where the API server
/// does not serve the kind, or the controller may not list it), others may mutate pods.
struct Mutators {
    webhooks: Watched<MutatingWebhookConfiguration>,
    policies: Watched<MutatingAdmissionPolicy>,
}

impl Mutators {
    fn others_may_mutate_pods(&self) -> bool {
        if !self.webhooks.listed() {
            return true;
        }
        let policies = self
            .policies
            .listed()
            .then(|| self.policies.store.state().len());
        others_may_mutate_pods(&self.webhooks.store.state(), policies)
    }
}

/// A cache filled by a watch, and whether the watch's first list is in.
struct Watched<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    listed: Arc<std::sync::atomic::AtomicBool>,
}

impl<K: Resource<DynamicType = ()> + 'static> Watched<K> {
    fn listed(&self) -> bool {
        self.listed.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Watches every `K` (managed fields dropped) until `shutdown`, notifying `changed` on each
/// change; the watch is the returned future.
fn watched<K>(
    client: &Client,
    changed: Arc<Notify>,
    shutdown: &CancellationToken,
) -> (
    Watched<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: caches::Cached,
{
    let listed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = listed.clone();
    let (store, watch) = caches::cache(
        Api::<K>::all(client.clone()),
        watcher::Config::default(),
        |object: &mut K| object.meta_mut().managed_fields = None,
        move |event| match event {
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
            event => {
                if matches!(event, watcher::Event::InitDone) {
                    seen.store(true, std::sync::atomic::Ordering::Release);
                }
                changed.notify_one();
            }
        },
        shutdown.clone(),
    );
    (Watched { store, listed }, watch)
}

/// Serves the webhook until `shutdown`; registers the configurations once the profile cache is
/// filled, so no pod is judged against an empty list, and again whenever the profiles change the
/// namespaces the webhooks must see. `reserved` are the namespaces no profile may take.
pub async fn run(
    client: Client,
    config: Config,
    reserved: Vec<String>,
    metrics: Arc<WebhookMetrics>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let changed = Arc::new(Notify::new());
    let notify = changed.clone();
    let (store, reflector) = caches::cache(
        Api::<FargateProfile>::all(client.clone()),
        watcher::Config::default(),
        |p: &mut FargateProfile| p.managed_fields_mut().clear(),
        move |_| notify.notify_one(),
        shutdown.clone(),
    );
    let (webhooks, webhook_watch) = watched(&client, changed.clone(), &shutdown);
    let (policies, policy_watch) = watched(&client, changed.clone(), &shutdown);
    let caches = [
        tokio::spawn(reflector),
        tokio::spawn(webhook_watch),
        tokio::spawn(policy_watch),
    ];
    let profiles = Profiles {
        store,
        changed,
        reserved,
        mutators: Mutators { webhooks, policies },
    };
    let served = serve_until_shutdown(client, config, metrics, profiles, shutdown).await;
    // The watches stop with `shutdown`; on an early error they are stopped here.
    for cache in caches {
        cache.abort();
        let _ = cache.await;
    }
    served
}

/// The webhook once its profile cache is being filled: certificate, listener, server, and the
/// configurations' registration.
async fn serve_until_shutdown(
    client: Client,
    config: Config,
    metrics: Arc<WebhookMetrics>,
    profiles: Profiles,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let fargo_user = own_username(&client).await?;
    let certificate = match (&config.cert_dir, &config.url) {
        (Some(dir), _) => certs::read_dir(dir)?,
        (None, Some(url)) => certs::generate(&url_hosts(url))?,
        (None, None) => {
            certs::from_secret(
                &client,
                &config.service_namespace,
                &config.secret_name,
                &service_hosts(&config),
            )
            .await?
        }
    };
    let tls = tls_config(&certificate)?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| Error::Listen {
            addr: config.addr,
            source,
        })?;

    // Admission answers from the profile cache, so nothing is answered before the cache holds
    // every profile: until then the API server's calls wait in the listen backlog (and fail
    // closed at their timeout) instead of letting a pod through unfenced.
    tokio::select! {
        _ = profiles.store.wait_until_ready() => {}
        () = shutdown.cancelled() => return Ok(()),
    }
    let state = AppState {
        profiles: profiles.store.clone(),
        metrics: metrics.clone(),
        fargo_user: fargo_user.into(),
    };
    let server = tokio::spawn(serve_tls(
        listener,
        tls,
        router(state),
        ServerLimits::default(),
        metrics,
        shutdown.clone(),
    ));

    if config.register {
        let ca_bundle = config
            .cert_dir
            .is_none()
            .then_some(certificate.ca_pem.clone());
        let scope = profiles.scope();
        register(&client, &config, ca_bundle.as_deref(), &scope)
            .await
            .map_err(Error::Register)?;
        info!("webhook configurations registered");
        let reregister = tokio::spawn(keep_registered(
            client,
            config,
            ca_bundle,
            profiles,
            scope,
            shutdown.clone(),
        ));
        let served = server.await.map_err(Error::Server);
        let _ = reregister.await;
        return served;
    }
    server.await.map_err(Error::Server)
}

/// Applies the configurations again whenever the profiles change the namespaces the webhooks
/// must see or another mutating webhook or policy comes or goes ([`others_may_mutate_pods`]),
/// and every minute regardless: a configuration replaced or stripped of its caBundle (a
/// `kubectl replace`, a forced Helm upgrade) would otherwise refuse every pod in the profiled
/// namespaces until a controller restarts.
async fn keep_registered(
    client: Client,
    config: Config,
    ca_bundle: Option<String>,
    profiles: Profiles,
    applied: AdmissionScope,
    shutdown: CancellationToken,
) {
    // `None` after a failed apply: the next profile change or minute applies again.
    let mut applied = Some(applied);
    let mut every_minute = tokio::time::interval(std::time::Duration::from_secs(60));
    every_minute.tick().await;
    loop {
        let due = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every_minute.tick() => true,
            () = profiles.changed.notified() => false,
        };
        let scope = profiles.scope();
        if !due && applied.as_ref() == Some(&scope) {
            continue;
        }
        match register(&client, &config, ca_bundle.as_deref(), &scope).await {
            Ok(()) => {
                if applied.as_ref() != Some(&scope) {
                    info!(
                        patterns = scope.patterns.join(","),
                        revalidate_pods = scope.revalidate_pods,
                        "the webhooks now see the profiles' namespaces"
                    );
                }
                applied = Some(scope);
            }
            Err(error) => {
                warn!(%error, "applying the webhook configurations failed");
                applied = None;
            }
        }
    }
}

/// The user this controller acts as, from the API server itself: its service account in
/// cluster, whoever the kubeconfig names out of it.
async fn own_username(client: &Client) -> Result<String, Error> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(Error::Identity)?;
    Ok(review
        .status
        .and_then(|status| status.user_info)
        .and_then(|user| user.username)
        .unwrap_or_default())
}

/// The routes of the webhook server.
fn router(state: AppState) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate_handler))
        .route(VALIDATE_PATH, post(validate_handler))
        .route(NETWORK_POLICY_PATH, post(network_policy_handler))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(state)
}

async fn mutate_handler(
    State(state): State<AppState>,
    review: Result<Json<AdmissionReview<Pod>>, JsonRejection>,
) -> Response {
    match review {
        Ok(Json(review)) => decide(&state, "mutate", review, admission::mutate).into_response(),
        Err(rejection) => refuse_review(&state, rejection),
    }
}

async fn validate_handler(
    State(state): State<AppState>,
    review: Result<Json<AdmissionReview<Pod>>, JsonRejection>,
) -> Response {
    match review {
        Ok(Json(review)) => decide(&state, "validate", review, admission::validate).into_response(),
        Err(rejection) => refuse_review(&state, rejection),
    }
}

/// A body that is no AdmissionReview, or larger than [`MAX_REVIEW_BYTES`] (counted).
fn refuse_review(state: &AppState, rejection: JsonRejection) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        state.metrics.refused("body_too_large");
    }
    // Not a warning: anyone who reaches the port could fill the logs with them.
    tracing::debug!(error = %rejection.body_text(), "unreadable admission review");
    rejection.into_response()
}

async fn network_policy_handler(
    State(state): State<AppState>,
    Json(review): Json<AdmissionReview<NetworkPolicy>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let fargo_user = state.fargo_user.clone();
    decide(&state, "networkpolicy", review, |request, profiles| {
        fence::judge(request, profiles, &fargo_user)
    })
}

fn decide<K: Resource>(
    state: &AppState,
    webhook: &'static str,
    review: AdmissionReview<K>,
    decision: impl FnOnce(&AdmissionRequest<K>, &[Arc<FargateProfile>]) -> AdmissionResponse,
) -> Json<AdmissionReview<DynamicObject>> {
    let started = Instant::now();
    let request: AdmissionRequest<K> = match review.try_into() {
        Ok(request) => request,
        Err(error) => {
            warn!(%error, "malformed admission review");
            return Json(AdmissionResponse::invalid(error.to_string()).into_review());
        }
    };
    let response = decision(&request, &state.profiles.state());
    if !response.allowed {
        info!(
            webhook,
            namespace = request.namespace.as_deref().unwrap_or_default(),
            name = %request.name,
            reason = %response.result.message,
            "request refused"
        );
    }
    state
        .metrics
        .decisions
        .get_or_create(&AdmissionLabels {
            webhook,
            allowed: response.allowed,
        })
        .observe(started.elapsed().as_secs_f64());
    Json(response.into_review())
}

/// A rustls server configuration for `certificate` (HTTP/2 and HTTP/1.1).
pub fn tls_config(certificate: &WebhookCertificate) -> Result<rustls::ServerConfig, Error> {
    let chain = CertificateDer::pem_slice_iter(certificate.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes())
        .map_err(|e| Error::Tls(format!("private key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts TLS connections until `shutdown`, each served on its own task within `limits` (see
/// [`crate::connections`]): a new connection waits for a place, taking that of the connection
/// idle longest or of a request slower than the API server ever is; TLS must complete within
/// the handshake timeout, each request within the request timeout.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    limits: ServerLimits,
    metrics: Arc<WebhookMetrics>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving the admission webhook");
    }
    let connections = Connections::new(limits.connections, metrics.connections.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection's place keeps the time instead (it also covers HTTP/2).
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "accepting a webhook connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // A review's answer goes out in more than one write (TLS records, headers and body):
        // with Nagle's algorithm on, the second waits for the API server's delayed ACK.
        let _ = stream.set_nodelay(true);
        let place = tokio::select! {
            _ = shutdown.cancelled() => break,
            place = connections.admit() => place,
        };
        let acceptor = acceptor.clone();
        let service = review_service(
            router.clone(),
            place.requests(),
            limits.request_timeout,
            metrics.clone(),
        );
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let handshake = tokio::select! {
                reason = place.closing() => {
                    place.closed_for(reason);
                    return;
                }
                handshake = tokio::time::timeout(
                    limits.handshake_timeout,
                    acceptor.accept(place.stall_timeout(stream)),
                ) => handshake,
            };
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    place.closed_for(CloseReason::HandshakeTimeout);
                    return;
                }
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            connections::drive(place, connection, shutdown, |connection| {
                connection.graceful_shutdown();
            })
            .await;
        });
    }
}

/// The router as one connection's service: each request counts as in progress on the
/// connection until its response is sent, and is answered 408 when it takes longer than
/// `request_timeout` (a body that does not arrive).
fn review_service(
    router: Router,
    requests: RequestCounter,
    request_timeout: Duration,
    metrics: Arc<WebhookMetrics>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<TrackedBody<axum::body::Body>>,
    Error = Infallible,
    Future: Send,
> + Clone {
    let router = TowerToHyperService::new(router);
    service_fn(move |request: hyper::Request<Incoming>| {
        let in_progress = requests.start();
        let started = Instant::now();
        let response = router.call(request);
        let metrics = metrics.clone();
        async move {
            let response = match tokio::time::timeout(request_timeout, response).await {
                Ok(Ok(response)) => {
                    metrics.requests.observe(started.elapsed().as_secs_f64());
                    response
                }
                Ok(Err(never)) => match never {},
                Err(_) => {
                    metrics.refused("timeout");
                    let message = format!(
                        "the request did not complete within {}s\n",
                        request_timeout.as_secs_f64()
                    );
                    (StatusCode::REQUEST_TIMEOUT, message).into_response()
                }
            };
            Ok(response.map(|body| TrackedBody::new(body, in_progress)))
        }
    })
}

/// The names a certificate for an out-of-cluster webhook at `url` must carry: the URL's host,
/// and this machine's loopback names.
fn url_hosts(url: &str) -> Vec<String> {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    let mut hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    if !host.is_empty() && !hosts.iter().any(|h| h == host) {
        hosts.push(host.to_string());
    }
    hosts
}

fn service_hosts(config: &Config) -> Vec<String> {
    let (name, namespace) = (&config.service_name, &config.service_namespace);
    vec![
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
        format!("{name}.{namespace}"),
    ]
}

fn client_config(config: &Config, path: &str, ca_bundle: Option<&str>) -> WebhookClientConfig {
    WebhookClientConfig {
        ca_bundle: ca_bundle.map(|ca| ByteString(ca.as_bytes().to_vec())),
        url: config
            .url
            .as_ref()
            .map(|base| format!("{}{path}", base.trim_end_matches('/'))),
        service: config.url.is_none().then(|| ServiceReference {
            namespace: config.service_namespace.clone(),
            name: config.service_name.clone(),
            path: Some(path.into()),
            port: Some(443),
        }),
    }
}

/// A rule for `operations` on `resources` (pods and their subresources) of the core group.
fn pod_rule(operations: &[&str], resources: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        operations: Some(operations.iter().map(|o| o.to_string()).collect()),
        api_groups: Some(vec!["".into()]),
        api_versions: Some(vec!["v1".into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        scope: Some("Namespaced".into()),
    }
}

/// Annotation on both configurations listing the namespace patterns their webhooks see.
pub const PATTERNS_ANNOTATION: &str = "fargo.dev/namespace-patterns";

/// Which requests reach the webhooks: those in the namespaces the profiles' selectors name.
///
/// The API server itself tells, from the request's namespace name — which it sets and no one
/// can change — never from a label fargo writes after the fact. A label selector cannot express
/// a wildcard (`team-*`), so a CEL match condition does: the patterns become one anchored regular
/// expression over `request.namespace`. The namespace selector only keeps the reserved
/// namespaces (fargo's and Kubernetes' own) out of the webhooks' reach, whatever a pattern says.
/// Requests in other namespaces never reach fargo, so they never wait on it or fail with it.
#[derive(Clone, Debug, PartialEq)]
pub struct AdmissionScope {
    /// The profiles' namespace patterns, sorted, without the reserved names.
    pub patterns: Vec<String>,
    pub namespaces: LabelSelector,
    pub condition: MatchCondition,
    /// Whether a pod's creation is judged again after every mutation (see
    /// [`others_may_mutate_pods`]); `true` unless the controller has seen otherwise.
    pub revalidate_pods: bool,
}

/// The scope of the webhooks for `profiles`; `reserved` are the namespaces no profile may take.
/// With no profiles, no namespace is seen.
pub fn admission_scope(profiles: &[Arc<FargateProfile>], reserved: &[String]) -> AdmissionScope {
    let patterns: Vec<String> = profiles
        .iter()
        .flat_map(|profile| &profile.spec.selectors)
        .map(|selector| selector.namespace.clone())
        .filter(|pattern| !reserved.contains(pattern))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let requirement = |operator: &str, values: Option<Vec<String>>| LabelSelectorRequirement {
        key: NAMESPACE_NAME_LABEL.into(),
        operator: operator.into(),
        values,
    };
    let requirement = if patterns.is_empty() {
        // Every namespace carries its name label, so this selects none.
        requirement("DoesNotExist", None)
    } else if reserved.is_empty() {
        requirement("Exists", None)
    } else {
        requirement("NotIn", Some(reserved.to_vec()))
    };
    let expression = namespace_regex(&patterns).map_or_else(
        || "false".to_string(),
        |regex| format!("request.namespace.matches('{regex}')"),
    );
    AdmissionScope {
        patterns,
        namespaces: LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![requirement]),
        },
        condition: MatchCondition {
            name: "profiled-namespace".into(),
            expression,
        },
        revalidate_pods: true,
    }
}

/// Whether anything but fargo may change a pod being created after fargo's mutating webhook:
/// another mutating webhook whose rules can match pod creation, or any MutatingAdmissionPolicy
/// (`policies`: `None` while the controller cannot tell). Only then is the validating webhook
/// called for pod creation: fargo's mutation refuses what a profile forbids and leaves the pod
/// hardened, and the mutating admission plugins built into the API server run before the
/// webhooks and add nothing a profile forbids, so with nothing else mutating, judging the pod
/// again would judge the pod fargo's mutation made.
pub fn others_may_mutate_pods(
    webhooks: &[Arc<MutatingWebhookConfiguration>],
    policies: Option<usize>,
) -> bool {
    let any = |values: &Option<Vec<String>>, wanted: &[&str]| {
        values
            .iter()
            .flatten()
            .any(|value| wanted.contains(&value.as_str()))
    };
    let matches_pod_creation = |rule: &RuleWithOperations| {
        any(&rule.operations, &["CREATE", "*"])
            && any(&rule.api_groups, &["", "*"])
            && any(&rule.resources, &["pods", "*", "*/*"])
    };
    policies != Some(0)
        || webhooks
            .iter()
            .filter(|configuration| {
                configuration.metadata.name.as_deref() != Some(CONFIGURATION_NAME)
            })
            .flat_map(|configuration| configuration.webhooks.iter().flatten())
            .flat_map(|webhook| webhook.rules.iter().flatten())
            .any(matches_pod_creation)
}

/// The condition that calls the validating webhook for pod creation only while
/// [`others_may_mutate_pods`].
fn mutated_after_fargo(scope: &AdmissionScope) -> MatchCondition {
    MatchCondition {
        name: "mutated-after-fargo".into(),
        expression: scope.revalidate_pods.to_string(),
    }
}

/// An RE2 expression matching exactly the namespace names `patterns` match (`*`: any run of
/// characters, `?`: one); `None` when no pattern can match a namespace name. Namespace names are
/// lower-case letters, digits and `-`, so a pattern with any other character matches none, and
/// no character ever needs escaping.
fn namespace_regex(patterns: &[String]) -> Option<String> {
    let alternatives: Vec<String> = patterns
        .iter()
        .filter(|pattern| {
            pattern.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '*' | '?')
            })
        })
        .map(|pattern| pattern.replace('*', ".*").replace('?', "."))
        .collect();
    (!alternatives.is_empty()).then(|| format!("^(?:{})$", alternatives.join("|")))
}

/// CEL: whether `object` (`object` or `oldObject`) carries the profile label.
fn carries_profile_label(object: &str) -> String {
    format!("(has({object}.metadata.labels) && '{PROFILE_LABEL}' in {object}.metadata.labels)")
}

/// CEL: whether `object` (`object` or `oldObject`) carries the capacity annotation.
fn carries_capacity_annotation(object: &str) -> String {
    format!(
        "(has({object}.metadata.annotations) && '{CAPACITY_ANNOTATION}' in \
         {object}.metadata.annotations)"
    )
}

/// Only updates that add, remove or change the profile label, or the capacity annotation of a
/// pod that carries the label (what the pod is metered at), reach the webhook: every other pod
/// update in a profiled namespace (the kubelet's status, controllers' owner references and
/// finalizers, `kubectl annotate` of other annotations) neither waits on fargo nor fails while
/// fargo is down. The annotation's value is read only where both objects carry it.
fn profile_label_changes() -> MatchCondition {
    let (now, before) = (
        carries_profile_label("object"),
        carries_profile_label("oldObject"),
    );
    let (sized, was_sized) = (
        carries_capacity_annotation("object"),
        carries_capacity_annotation("oldObject"),
    );
    MatchCondition {
        name: "profile-label-changes".into(),
        expression: format!(
            "({now} ? (!{before} || object.metadata.labels['{PROFILE_LABEL}'] != \
             oldObject.metadata.labels['{PROFILE_LABEL}']) : {before}) || ({now} && ({sized} != \
             {was_sized} || ({sized} && object.metadata.annotations['{CAPACITY_ANNOTATION}'] != \
             oldObject.metadata.annotations['{CAPACITY_ANNOTATION}'])))"
        ),
    }
}

/// Only pods admitted under a profile have their new ephemeral containers judged.
fn runs_under_a_profile() -> MatchCondition {
    MatchCondition {
        name: "runs-under-a-profile".into(),
        expression: carries_profile_label("object"),
    }
}

/// A validating webhook on the profiled namespaces (`scope`), failing closed there; `conditions`
/// narrow it further.
fn validating_webhook(
    name: &str,
    client_config: WebhookClientConfig,
    rules: Vec<RuleWithOperations>,
    conditions: Vec<MatchCondition>,
    scope: &AdmissionScope,
) -> ValidatingWebhook {
    ValidatingWebhook {
        name: name.into(),
        client_config,
        rules: Some(rules),
        match_conditions: Some(scoped(scope, conditions)),
        namespace_selector: Some(scope.namespaces.clone()),
        failure_policy: Some("Fail".into()),
        side_effects: "None".into(),
        admission_review_versions: vec!["v1".into()],
        timeout_seconds: Some(5),
        ..ValidatingWebhook::default()
    }
}

/// The scope's condition first, then `conditions`: a webhook is called only when all hold.
fn scoped(scope: &AdmissionScope, conditions: Vec<MatchCondition>) -> Vec<MatchCondition> {
    std::iter::once(scope.condition.clone())
        .chain(conditions)
        .collect()
}

/// Both webhook configurations, as the controller applies them, seeing the namespaces of `scope`
/// (see [`admission_scope`]).
///
/// The validating configuration has four webhooks. Three are served at [`VALIDATE_PATH`]: pod
/// creation, while something besides fargo may mutate pods ([`others_may_mutate_pods`]); updates of a pod (`pods`, and `pods/status`, through which a status writer could
/// otherwise relabel the pod) that change its profile label, or the capacity annotation of a pod
/// that carries the label; and `kubectl debug`'s
/// `pods/ephemeralcontainers` updates of a pod that runs under a profile. The fourth, at
/// [`NETWORK_POLICY_PATH`], judges every write of a NetworkPolicy (see [`fence`]).
pub fn configurations(
    config: &Config,
    ca_bundle: Option<&str>,
    scope: &AdmissionScope,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    let mut mutating = MutatingWebhookConfiguration {
        webhooks: Some(vec![MutatingWebhook {
            name: "pods.mutate.fargo.dev".into(),
            client_config: client_config(config, MUTATE_PATH, ca_bundle),
            rules: Some(vec![pod_rule(&["CREATE"], &["pods"])]),
            match_conditions: Some(scoped(scope, vec![])),
            namespace_selector: Some(scope.namespaces.clone()),
            failure_policy: Some("Fail".into()),
            side_effects: "None".into(),
            admission_review_versions: vec!["v1".into()],
            timeout_seconds: Some(5),
            reinvocation_policy: Some("IfNeeded".into()),
            ..MutatingWebhook::default()
        }]),
        ..MutatingWebhookConfiguration::default()
    };
    mutating.metadata.name = Some(CONFIGURATION_NAME.into());
    let patterns = [(PATTERNS_ANNOTATION.to_string(), scope.patterns.join(","))];
    mutating.metadata.annotations = Some(patterns.clone().into());
    let validate = || client_config(config, VALIDATE_PATH, ca_bundle);
    let mut validating = ValidatingWebhookConfiguration {
        webhooks: Some(vec![
            validating_webhook(
                "pods.validate.fargo.dev",
                validate(),
                vec![pod_rule(&["CREATE"], &["pods"])],
                vec![mutated_after_fargo(scope)],
                scope,
            ),
            validating_webhook(
                "profile-label.validate.fargo.dev",
                validate(),
                vec![pod_rule(&["UPDATE"], &["pods", "pods/status"])],
                vec![profile_label_changes()],
                scope,
            ),
            validating_webhook(
                "ephemeral-containers.validate.fargo.dev",
                validate(),
                vec![pod_rule(&["UPDATE"], &["pods/ephemeralcontainers"])],
                vec![runs_under_a_profile()],
                scope,
            ),
            validating_webhook(
                "network-policies.validate.fargo.dev",
                client_config(config, NETWORK_POLICY_PATH, ca_bundle),
                vec![RuleWithOperations {
                    operations: Some(["CREATE", "UPDATE", "DELETE"].map(String::from).into()),
                    api_groups: Some(vec!["networking.k8s.io".into()]),
                    api_versions: Some(vec!["v1".into()]),
                    resources: Some(vec!["networkpolicies".into()]),
                    scope: Some("Namespaced".into()),
                }],
                vec![],
                scope,
            ),
        ]),
        ..ValidatingWebhookConfiguration::default()
    };
    validating.metadata.name = Some(CONFIGURATION_NAME.into());
    validating.metadata.annotations = Some(patterns.into());
    (mutating, validating)
}

async fn register(
    client: &Client,
    config: &Config,
    ca_bundle: Option<&str>,
    scope: &AdmissionScope,
) -> Result<(), kube::Error> {
    let (mutating, validating) = configurations(config, ca_bundle, scope);
    let params = PatchParams::apply(CONTROLLER_MANAGER).force();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(CONFIGURATION_NAME, &params, &Patch::Apply(&mutating))
        .await?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(CONFIGURATION_NAME, &params, &Patch::Apply(&validating))
        .await?;
    Ok(())
}

#[cfg(test)]
mod slow_clients;

#[cfg(test)]
mod tests {
    use super::*;

    fn in_cluster() -> Config {
        Config {
            addr: "0.0.0.0:8443".parse().expect("an address"),
            url: None,
            service_namespace: "fargo-system".into(),
            service_name: "fargo-webhook".into(),
            cert_dir: None,
            secret_name: "fargo-webhook-tls".into(),
            register: true,
        }
    }

    fn profile(name: &str, namespaces: &[&str]) -> Arc<FargateProfile> {
        let selectors: Vec<_> = namespaces
            .iter()
            .map(|ns| serde_json::json!({"namespace": ns}))
            .collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "fargo.dev/v1alpha1",
                "kind": "FargateProfile",
                "metadata": {"name": name},
                "spec": {"selectors": selectors},
            }))
            .expect("a profile"),
        )
    }

    fn requirement(scope: &AdmissionScope) -> (String, Vec<String>) {
        let [requirement] = scope
            .namespaces
            .match_expressions
            .as_deref()
            .expect("one requirement")
        else {
            panic!("one requirement: {scope:?}");
        };
        assert_eq!(requirement.key, "kubernetes.io/metadata.name");
        (
            requirement.operator.clone(),
            requirement.values.clone().unwrap_or_default(),
        )
    }

    #[test]
    fn the_webhooks_see_the_namespaces_the_profiles_name_by_the_name_the_api_server_sets() {
        let reserved = ["fargo-system".to_string(), "kube-system".to_string()];
        let profiles = [
            profile("a", &["payments", "team-*"]),
            profile("b", &["payments", "kube-system", "x?"]),
        ];
        let scope = admission_scope(&profiles, &reserved);
        assert_eq!(scope.patterns, ["payments", "team-*", "x?"]);
        assert_eq!(
            requirement(&scope),
            ("NotIn".into(), reserved.to_vec()),
            "never the reserved namespaces, whatever a pattern says"
        );
        assert_eq!(scope.condition.name, "profiled-namespace");
        assert_eq!(
            scope.condition.expression,
            "request.namespace.matches('^(?:payments|team-.*|x.)$')"
        );
        for none in [vec![], vec![profile("a", &["kube-system"])]] {
            let scope = admission_scope(&none, &reserved);
            assert_eq!(requirement(&scope), ("DoesNotExist".into(), vec![]));
            assert_eq!(scope.condition.expression, "false");
        }
    }

    #[test]
    fn pod_creation_is_judged_again_only_while_something_else_may_mutate_pods() {
        let configuration =
            |name: &str, groups: &[&str], resources: &[&str], operations: &[&str]| {
                let strings =
                    |values: &[&str]| Some(values.iter().map(|v| v.to_string()).collect());
                let mut configuration = MutatingWebhookConfiguration {
                    webhooks: Some(vec![MutatingWebhook {
                        rules: Some(vec![RuleWithOperations {
                            api_groups: strings(groups),
                            resources: strings(resources),
                            operations: strings(operations),
                            ..RuleWithOperations::default()
                        }]),
                        ..MutatingWebhook::default()
                    }]),
                    ..MutatingWebhookConfiguration::default()
                };
                configuration.metadata.name = Some(name.into());
                Arc::new(configuration)
            };
        let ours = configuration(CONFIGURATION_NAME, &[""], &["pods"], &["CREATE"]);
        assert!(
            !others_may_mutate_pods(std::slice::from_ref(&ours), Some(0)),
            "fargo's own"
        );
        assert!(
            others_may_mutate_pods(std::slice::from_ref(&ours), None),
            "the policies not (yet) known"
        );
        assert!(
            others_may_mutate_pods(std::slice::from_ref(&ours), Some(1)),
            "a MutatingAdmissionPolicy"
        );
        for (groups, resources, operations) in [
            (&[""][..], &["pods"][..], &["CREATE"][..]),
            (&["*"], &["*"], &["*"]),
            (
                &["apps", ""],
                &["deployments", "*/*"],
                &["UPDATE", "CREATE"],
            ),
        ] {
            let injector = configuration("injector", groups, resources, operations);
            assert!(
                others_may_mutate_pods(&[ours.clone(), injector], Some(0)),
                "{groups:?} {resources:?} {operations:?}"
            );
        }
        for (groups, resources, operations) in [
            (
                &[""][..],
                &["pods/ephemeralcontainers"][..],
                &["CREATE"][..],
            ),
            (&[""], &["pods"], &["UPDATE"]),
            (&["apps"], &["deployments"], &["CREATE"]),
            (&["example.com"], &["pods"], &["CREATE"]),
        ] {
            let other = configuration("other", groups, resources, operations);
            assert!(
                !others_may_mutate_pods(&[ours.clone(), other], Some(0)),
                "{groups:?} {resources:?} {operations:?}"
            );
        }

        let mut scope = admission_scope(&[profile("a", &["payments"])], &[]);
        for revalidate in [true, false] {
            scope.revalidate_pods = revalidate;
            let (_, validating) = configurations(&in_cluster(), None, &scope);
            let creation = &validating.webhooks.expect("webhooks")[0];
            assert_eq!(creation.name, "pods.validate.fargo.dev");
            let conditions = creation.match_conditions.clone().unwrap_or_default();
            assert_eq!(
                conditions
                    .iter()
                    .find(|c| c.name == "mutated-after-fargo")
                    .map(|c| c.expression.as_str()),
                Some(if revalidate { "true" } else { "false" })
            );
        }
    }

    #[test]
    fn the_namespace_expression_matches_what_the_profile_patterns_match() {
        // The expression, read back with the profiles' own wildcard rule: every alternative is
        // the pattern with `.*` for `*` and `.` for `?`, and nothing else to escape.
        let patterns = ["a-*-b".to_string(), "q?".to_string(), "plain".to_string()];
        assert_eq!(
            namespace_regex(&patterns).as_deref(),
            Some("^(?:a-.*-b|q.|plain)$")
        );
        assert_eq!(
            namespace_regex(&["Upper".to_string(), "dot.ted".to_string()]),
            None,
            "patterns no namespace name can match"
        );
    }

    #[test]
    fn validating_webhooks_judge_creation_relabelling_ephemeral_containers_and_policies() {
        let scope = admission_scope(&[profile("a", &["payments"])], &[]);
        let (mutating, validating) = configurations(&in_cluster(), None, &scope);
        for annotations in [
            &mutating.metadata.annotations,
            &validating.metadata.annotations,
        ] {
            let patterns = annotations
                .as_ref()
                .and_then(|a| a.get(PATTERNS_ANNOTATION));
            assert_eq!(patterns.map(String::as_str), Some("payments"));
        }
        let mutating = mutating.webhooks.expect("a webhook");
        assert_eq!(
            mutating[0].namespace_selector.as_ref(),
            Some(&scope.namespaces)
        );
        assert_eq!(
            mutating[0].match_conditions.as_deref(),
            Some(std::slice::from_ref(&scope.condition))
        );
        let webhooks = validating.webhooks.expect("webhooks");
        let summary: Vec<_> = webhooks
            .iter()
            .map(|webhook| {
                let rules = webhook.rules.as_deref().unwrap_or_default();
                (
                    webhook.name.as_str(),
                    rules
                        .iter()
                        .flat_map(|r| r.operations.iter().flatten())
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                    rules
                        .iter()
                        .flat_map(|r| r.resources.iter().flatten())
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                    webhook
                        .match_conditions
                        .iter()
                        .flatten()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "pods.validate.fargo.dev",
                    vec!["CREATE"],
                    vec!["pods"],
                    vec!["profiled-namespace", "mutated-after-fargo"]
                ),
                (
                    "profile-label.validate.fargo.dev",
                    vec!["UPDATE"],
                    vec!["pods", "pods/status"],
                    vec!["profiled-namespace", "profile-label-changes"]
                ),
                (
                    "ephemeral-containers.validate.fargo.dev",
                    vec!["UPDATE"],
                    vec!["pods/ephemeralcontainers"],
                    vec!["profiled-namespace", "runs-under-a-profile"]
                ),
                (
                    "network-policies.validate.fargo.dev",
                    vec!["CREATE", "UPDATE", "DELETE"],
                    vec!["networkpolicies"],
                    vec!["profiled-namespace"]
                ),
            ]
        );
        for (webhook, path) in webhooks.iter().zip([
            VALIDATE_PATH,
            VALIDATE_PATH,
            VALIDATE_PATH,
            NETWORK_POLICY_PATH,
        ]) {
            assert_eq!(webhook.namespace_selector.as_ref(), Some(&scope.namespaces));
            assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
            assert_eq!(
                webhook
                    .client_config
                    .service
                    .as_ref()
                    .and_then(|s| s.path.as_deref()),
                Some(path)
            );
        }
        assert_eq!(
            webhooks[1].match_conditions.as_ref().expect("a condition")[1],
            profile_label_changes()
        );
    }

    #[test]
    fn relabelling_and_resizing_a_profiled_pod_reach_the_webhook() {
        assert_eq!(
            profile_label_changes().expression,
            "((has(object.metadata.labels) && 'fargo.dev/profile' in object.metadata.labels) ? \
             (!(has(oldObject.metadata.labels) && 'fargo.dev/profile' in \
             oldObject.metadata.labels) || object.metadata.labels['fargo.dev/profile'] != \
             oldObject.metadata.labels['fargo.dev/profile']) : (has(oldObject.metadata.labels) \
             && 'fargo.dev/profile' in oldObject.metadata.labels)) || \
             ((has(object.metadata.labels) && 'fargo.dev/profile' in object.metadata.labels) && \
             ((has(object.metadata.annotations) && 'fargo.dev/capacity-provisioned' in \
             object.metadata.annotations) != (has(oldObject.metadata.annotations) && \
             'fargo.dev/capacity-provisioned' in oldObject.metadata.annotations) || \
             ((has(object.metadata.annotations) && 'fargo.dev/capacity-provisioned' in \
             object.metadata.annotations) && \
             object.metadata.annotations['fargo.dev/capacity-provisioned'] != \
             oldObject.metadata.annotations['fargo.dev/capacity-provisioned'])))"
        );
    }

    #[test]
    fn out_of_cluster_certificate_names_the_url_host() {
        assert_eq!(
            url_hosts("https://127.0.0.1:8443"),
            ["127.0.0.1", "localhost"]
        );
        assert_eq!(
            url_hosts("https://172.18.0.1:18443/"),
            ["127.0.0.1", "localhost", "172.18.0.1"]
        );
        assert_eq!(
            url_hosts("https://[::1]:8443"),
            ["127.0.0.1", "localhost", "::1"]
        );
    }
}
