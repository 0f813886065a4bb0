//! The ServerlessFunction reconciler: validate → build → apply → status.
//!
//! Children (Deployment, Service) are owned through controller references, so deleting a
//! function lets the garbage collector remove them; the reconciler needs no finalizer. What it
//! keeps in memory (what it last applied, to skip applies that would change nothing) is a cache
//! that a new process starts without.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument};

use super::build::{self, BuildError};
use super::runtime_pod::{RuntimePodError, RuntimeSettings};
use super::standby;
use super::status::{self, Observed, ProfileCheck, reason};
use crate::api::conditions::{HOSTS_ACCEPTED, PROFILE_FOUND, READY, SCHEDULES_VALID};
use crate::api::profile::FargateProfile;
use crate::api::routes::{ActivatorNames, claimed_hosts, refusals_among};
use crate::api::{
    CONTROLLER_MANAGER, FUNCTION_LABEL, ServerlessFunction, ServerlessFunctionStatus,
};
use crate::caches::{
    CachedDeployment, CachedService, ChildCache, FunctionStore, WatchedDeployment, digest,
    labels_digest, live,
};
use crate::profile::matching::namespace_is_selected;
use crate::reconcile::{self, Note, ReconcileError, Reporting, patch_status};
use crate::replicas::{Instances, autoscaler_owns_replicas};

const KIND: &str = "ServerlessFunction";
/// While instances are wanted and none is ready, the pods are looked at this often: a crash
/// loop changes no Deployment field that would trigger a reconcile.
const POD_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// A function at rest is reconciled this often, to catch what no watch reports (see
/// [`resync`]).
const RESYNC_INTERVAL: Duration = Duration::from_secs(600);

/// Errors of one reconcile; each becomes a Warning Event.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the function's children cannot be built: {0}")]
    Build(#[from] BuildError),
    #[error("the ServerlessFunction cannot be read: {0}; fix the object so it matches the CRD")]
    InvalidObject(String),
    #[error(
        "the Deployment changed since it was read (the autoscaler may have taken its replicas): {0}"
    )]
    StaleDeployment(#[source] kube::Error),
}

impl ReconcileError for Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::Build(BuildError::Memory(_)) => "InvalidMemory",
            Error::Build(BuildError::MissingMetadata(_)) => "MissingMetadata",
            Error::Build(BuildError::Runtime(RuntimePodError::NoS3Endpoint)) => "NoS3Endpoint",
            Error::Build(BuildError::Runtime(RuntimePodError::NoRuntimeImage(_))) => {
                "NoRuntimeImage"
            }
            Error::InvalidObject(_) => "InvalidObject",
            Error::StaleDeployment(_) => "StaleDeployment",
        }
    }

    /// The function's namespace is being deleted: it and its children are going away, and the
    /// API server refuses to create anything there meanwhile. Or the cached Deployment was
    /// behind: the watch event that brings it up to date reconciles the function again.
    fn is_moot(&self) -> bool {
        let status = match self {
            Error::StaleDeployment(_) => return true,
            Error::Kube(kube::Error::Api(status)) => status,
            _ => return false,
        };
        status.code == 403
            && status.details.as_ref().is_some_and(|details| {
                details
                    .causes
                    .iter()
                    .any(|cause| cause.reason == "NamespaceTerminating")
            })
    }

    /// The spec itself is wrong.
    fn is_terminal(&self) -> bool {
        matches!(
            self,
            Error::Build(BuildError::Memory(_) | BuildError::Runtime(_)) | Error::InvalidObject(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the reconciler shares between calls.
pub struct Context {
    pub client: Client,
    pub reporting: Reporting,
    /// The functions' Deployments, trimmed (see [`crate::caches::trim_deployment`]).
    pub deployments: ChildCache<CachedDeployment>,
    /// Every function (the controller's own store): who else claims a function's hosts.
    pub functions: FunctionStore,
    /// The functions' Services, trimmed (see [`crate::caches::CachedService`]).
    pub services: ChildCache<CachedService>,
    /// What this process last applied to each function's Deployment.
    pub applied: Arc<AppliedObjects>,
    /// What this process last applied to each function's Service.
    pub applied_services: Arc<AppliedObjects>,
    /// The statuses this process wrote that the function cache may not show yet.
    pub written_statuses: Arc<WrittenStatuses>,
    /// Base URL of the activator, for `status.url`.
    pub activator_url: String,
    /// The names the activator is reached by, which no function may claim as hosts.
    pub activator_names: ActivatorNames,
    /// Images and endpoints the pods of handler functions are made with.
    pub runtimes: Arc<RuntimeSettings>,
    /// The functions' standby pods (see [`super::standby`]).
    pub standby_pods: Store<Pod>,
    /// The profiles, which must take a standby pod as they take the function's pods.
    pub profiles: Store<FargateProfile>,
}

/// How long a function's reconcile waits for more changes to the function or its children.
/// A new function's Deployment and Service appearing, the scale write, the Deployment's first
/// status and the function's own status each trigger a reconcile; waiting this long folds the
/// burst into one or two.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What the controller last applied to each function's Deployment: a hash of the object, and
/// the Deployment's uid, generation and labels right after. While the cached Deployment is
/// still that one at that generation (nobody changed its spec since: a change by anyone, the
/// autoscaler included, bumps the generation), with the same labels and still the owner
/// reference it was given (metadata changes leave the generation alone), and the function still
/// builds the same object, applying again would change nothing and is skipped. Kept in memory
/// only: a new process applies once.
///
/// The same for each function's Service, by its resourceVersion instead: a Service has no
/// generation, and every write to it, by anyone, changes its resourceVersion, so any change at
/// all is applied over.
///
/// Each record is held as hashes (of the function's namespace and name, of the object's uid and
/// version): 32 bytes a function, where the strings took a few hundred.
#[derive(Default)]
pub struct AppliedObjects(std::sync::Mutex<HashMap<u64, Applied>>);

#[derive(Clone, PartialEq, Eq)]
struct Applied {
    hash: u64,
    uid: u64,
    /// The Deployment's generation, or the Service's resourceVersion, right after the apply.
    version: Option<u64>,
    /// A digest of the Deployment's labels right after the apply (of all of them, whoever set
    /// them: the cache keeps no more than that); 0 for a Service.
    labels: u64,
}

impl Applied {
    fn of(hash: u64, uid: Option<&str>, version: Option<&str>, labels: u64) -> Self {
        Self {
            hash,
            uid: hash_str(uid),
            version: version.map(|v| hash_str(Some(v))),
            labels,
        }
    }
}

/// A function's key in [`AppliedObjects`].
fn function_key(namespace: &str, name: &str) -> u64 {
    digest(&(namespace, name))
}

fn hash_str(value: Option<&str>) -> u64 {
    digest(&value)
}

impl AppliedObjects {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Applied>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `current`, whose labels have digest `labels`, is the Deployment applied last,
    /// unchanged since, and the function still builds the same one.
    fn unchanged(
        &self,
        key: u64,
        hash: u64,
        desired: &Deployment,
        current: &Deployment,
        labels: u64,
    ) -> bool {
        let uid = current.metadata.uid.as_deref();
        let recorded = self.recorded(
            key,
            Applied::of(hash, uid, generation(current).as_deref(), labels),
        );
        let owners_kept = desired.owner_references().iter().all(|wanted| {
            current
                .owner_references()
                .iter()
                .any(|owner| owner.uid == wanted.uid && owner.controller == wanted.controller)
        });
        recorded && owners_kept
    }

    fn record(&self, key: u64, hash: u64, applied: &Deployment) {
        let uid = applied.metadata.uid.as_deref();
        let labels = labels_digest(applied.labels());
        let applied = Applied::of(hash, uid, generation(applied).as_deref(), labels);
        self.lock().insert(key, applied);
    }

    /// Whether this process has applied the object since it started (or since the function
    /// was last pruned).
    fn knows(&self, key: u64) -> bool {
        self.lock().contains_key(&key)
    }

    /// Whether the cached Service is the one applied last, unchanged since, and the function
    /// still builds the same one.
    fn service_unchanged(&self, key: u64, hash: u64, current: &CachedService) -> bool {
        let (uid, version) = (&current.meta.uid, &current.meta.resource_version);
        self.recorded(
            key,
            Applied::of(hash, uid.as_deref(), version.as_deref(), 0),
        )
    }

    fn record_service(&self, key: u64, hash: u64, applied: &ObjectMeta) {
        let (uid, version) = (&applied.uid, &applied.resource_version);
        let applied = Applied::of(hash, uid.as_deref(), version.as_deref(), 0);
        self.lock().insert(key, applied);
    }

    /// Whether the record for `key` is `expected`, with a version.
    fn recorded(&self, key: u64, expected: Applied) -> bool {
        self.lock()
            .get(&key)
            .is_some_and(|applied| applied.version.is_some() && *applied == expected)
    }

    /// Forgets all but the functions `live` (their namespaces and names).
    fn retain<'a>(&self, live: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let live: std::collections::HashSet<u64> = live
            .into_iter()
            .map(|(namespace, name)| function_key(namespace, name))
            .collect();
        self.lock().retain(|key, _| live.contains(key));
    }
}

/// The statuses this process wrote that the function cache may not show yet. Under load the
/// cache lags behind a status write by seconds, and a reconcile in between (a child's change
/// triggers one) would compare with the status before it: it wrote the same status again and
/// published the same Events again. Each entry holds the status last written and the
/// resourceVersions a cache that has not caught up with it may still show: the one read before
/// this process's first write of the run, and those of its writes since but the last. A cache
/// showing one of those is behind the status written; one showing the last write's, or any
/// other (somebody else wrote since), is compared as it is, and the entry is forgotten.
#[derive(Default)]
pub struct WrittenStatuses(std::sync::Mutex<HashMap<(String, String), WrittenStatus>>);

struct WrittenStatus {
    behind: Vec<String>,
    last: String,
    status: ServerlessFunctionStatus,
}

impl WrittenStatuses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), WrittenStatus>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The status this process last wrote, while the cache (which shows `read`) is behind it.
    fn previous(
        &self,
        key: &(String, String),
        read: Option<&str>,
    ) -> Option<ServerlessFunctionStatus> {
        let mut written = self.lock();
        let entry = written.get(key)?;
        if read.is_some_and(|read| entry.behind.iter().any(|v| v == read)) {
            return Some(entry.status.clone());
        }
        written.remove(key);
        None
    }

    /// Records a status written over the function read at `read`, which the write turned into
    /// `written`.
    fn record(
        &self,
        key: (String, String),
        read: Option<String>,
        written: Option<String>,
        status: &ServerlessFunctionStatus,
    ) {
        let mut statuses = self.lock();
        let (Some(read), Some(last)) = (read, written) else {
            statuses.remove(&key);
            return;
        };
        let mut behind = match statuses.remove(&key) {
            // Written again over a cache still behind: everything it may show is behind.
            Some(entry) if entry.behind.contains(&read) => {
                let mut behind = entry.behind;
                behind.push(entry.last);
                behind
            }
            _ => vec![],
        };
        if !behind.contains(&read) {
            behind.push(read);
        }
        let status = status.clone();
        statuses.insert(
            key,
            WrittenStatus {
                behind,
                last,
                status,
            },
        );
    }

    /// Forgets the functions `live` does not know any more.
    fn retain(&self, live: impl Fn(&str, &str) -> bool) {
        self.lock()
            .retain(|(namespace, name), _| live(namespace, name));
    }
}

fn generation(deployment: &Deployment) -> Option<String> {
    deployment.metadata.generation.map(|g| g.to_string())
}

fn hash_of(object: &impl serde::Serialize) -> u64 {
    digest(&serde_json::to_vec(object).unwrap_or_default())
}

/// Reconciles running at once. Each holds a connection to the API server while it waits on it;
/// unbounded, a thousand new functions opened a thousand TLS connections (and kept them pooled,
/// tens of MiB), without converging any faster. At 16, a burst of new functions became Ready at
/// the pace 16 reconciles in flight allow, behind the API server's capacity: 2,000 functions
/// applied in 13 s were all Ready 20 s later (`controller_scale`). At 48 they were all Ready
/// 0.5–3 s after the last apply, and the API server is the bottleneck again.
const CONCURRENCY: u16 = 48;

/// A function to reconcile.
pub type FunctionRef = ObjectRef<DeserializeGuard<ServerlessFunction>>;

/// The controller of functions, not yet running: its store is shared with the autoscaler and
/// the schedules, and the caches of the functions' children tell it of their changes through
/// [`FunctionController::child_changed`].
///
/// The controller watches nothing but the functions and the profiles. A function is also
/// reconciled when one of its children changes or goes away, and when another function claims
/// or gives up one of its hosts; both are told by watches the controller already has (the
/// Deployment and Service caches, and its own watch of functions), once their stores hold the
/// change. Watching the children again, in full, for the triggers alone cost the API server a
/// second stream of every Deployment and Service event and the controller the decoding of every
/// Deployment's pod template, and could trigger a reconcile before the cache it reads had the
/// change.
pub struct FunctionController {
    controller: Controller<DeserializeGuard<ServerlessFunction>>,
    hosts: Arc<ClaimedHosts>,
    triggers: futures::channel::mpsc::UnboundedSender<FunctionRef>,
    triggered: futures::channel::mpsc::UnboundedReceiver<FunctionRef>,
}

impl FunctionController {
    pub fn store(&self) -> FunctionStore {
        self.controller.store()
    }

    /// What a cache of the functions' children calls with each of its watch's events: the
    /// function controlling the object added, changed or deleted is reconciled.
    pub fn child_changed<K: kube::Resource>(&self) -> impl Fn(&watcher::Event<K>) + Send + 'static {
        let triggers = self.triggers.clone();
        move |event| {
            if let Some(function) =
                crate::caches::touched(event).and_then(crate::caches::controlling_function)
            {
                let _ = triggers.unbounded_send(function);
            }
        }
    }
}

/// What the function store keeps of a function: all but its managed fields, which nothing
/// reads and which took more memory than the rest of the object, and its annotations other than
/// fargo's own (`kubectl apply` keeps a copy of the whole object in one).
fn trim_function(function: &mut ServerlessFunction) {
    function.managed_fields_mut().clear();
    let annotations = &mut function.metadata.annotations;
    if let Some(kept) = annotations.as_mut() {
        kept.retain(|key, _| key.starts_with("fargo.dev/"));
    }
    if annotations.as_ref().is_some_and(|kept| kept.is_empty()) {
        *annotations = None;
    }
}

/// The controller of functions; its store keeps them trimmed ([`trim_function`]).
pub fn controller(client: Client) -> FunctionController {
    let (store, writer) = reflector::store();
    let (triggers, triggered) = futures::channel::mpsc::unbounded();
    let hosts = Arc::new(ClaimedHosts::default());
    let functions =
        crate::guarded::watcher::<ServerlessFunction>(client, watcher::Config::default())
            .default_backoff()
            .modify(|guard| {
                if let Ok(function) = &mut guard.0 {
                    trim_function(function);
                }
            })
            .reflect(writer)
            .inspect({
                // A function claiming, changing or giving up a host decides the HostsAccepted of
                // the others claiming it.
                let (hosts, claimants, triggers) = (hosts.clone(), store.clone(), triggers.clone());
                move |event| {
                    if let Ok(event) = event
                        && let Some(changed) = crate::caches::touched(event)
                    {
                        for other in hosts.sharing(&claimants, changed) {
                            let _ = triggers.unbounded_send(other);
                        }
                    }
                }
            })
            .applied_objects();
    FunctionController {
        controller: Controller::for_stream(functions, store).with_config(
            kube::runtime::controller::Config::default()
                .debounce(DEBOUNCE)
                .concurrency(CONCURRENCY),
        ),
        hosts,
        triggers,
        triggered,
    }
}

/// Runs the function reconciler until `shutdown` is cancelled.
pub async fn run(controller: FunctionController, ctx: Context, shutdown: CancellationToken) {
    let FunctionController {
        controller,
        hosts,
        // Kept until the controller stops, so that its trigger stream never ends before.
        triggers,
        triggered,
    } = controller;
    let client = ctx.client.clone();
    let reporting = ctx.reporting.clone();
    let functions = controller.store();
    let resyncing = tokio::spawn(resync(
        functions.clone(),
        triggers.clone(),
        shutdown.clone(),
    ));
    let pruning = tokio::spawn({
        let (applied, applied_services, written_statuses, hosts, functions, shutdown) = (
            ctx.applied.clone(),
            ctx.applied_services.clone(),
            ctx.written_statuses.clone(),
            hosts.clone(),
            functions.clone(),
            shutdown.clone(),
        );
        async move {
            let mut every = tokio::time::interval(RESYNC_INTERVAL);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = every.tick() => {
                        let known = |namespace: &str, name: &str| {
                            functions.get(&ObjectRef::new(name).within(namespace)).is_some()
                        };
                        let state = functions.state();
                        let live = || {
                            state.iter().filter_map(|guard| {
                                Some((guard.meta().namespace.as_deref()?, guard.meta().name.as_deref()?))
                            })
                        };
                        applied.retain(live());
                        applied_services.retain(live());
                        written_statuses.retain(known);
                        hosts.retain(known);
                    }
                }
            }
        }
    });
    controller
        .reconcile_on(triggered)
        .watches(
            Api::<FargateProfile>::all(client),
            watcher::Config::default(),
            move |profile| functions_using(&functions, &profile.name_any()),
        )
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        // Boxed: the controller spawns each reconcile and moves it, and its result, whole; the
        // reconcile holds 10 KB across its awaits, a pointer does not.
        .run(
            |function, ctx| Box::pin(reconcile(function, ctx)),
            reconcile::error_policy,
            Arc::new(ctx),
        )
        .for_each_concurrent(None, |result| {
            reconcile::report_reconciled(&reporting, KIND, result)
        })
        .await;
    let _ = pruning.await;
    let _ = resyncing.await;
    drop(triggers);
}

/// Reconciles every function once each [`RESYNC_INTERVAL`], one after the other, evenly
/// spread over it, until `shutdown`. One round holds the functions' names; a timer for each
/// function in the controller's scheduler (a requeue after each reconcile) held half a
/// kilobyte, 5 MB at 10,000 functions.
async fn resync(
    functions: FunctionStore,
    triggers: futures::channel::mpsc::UnboundedSender<FunctionRef>,
    shutdown: CancellationToken,
) {
    loop {
        let round: Vec<FunctionRef> = functions
            .state()
            .iter()
            .filter_map(|guard| {
                let meta = guard.meta();
                Some(ObjectRef::new(meta.name.as_deref()?).within(meta.namespace.as_deref()?))
            })
            .collect();
        let pause = RESYNC_INTERVAL / u32::try_from(round.len().max(1)).unwrap_or(u32::MAX);
        let mut round = round.into_iter();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            match round.next() {
                Some(function) => {
                    let _ = triggers.unbounded_send(function);
                }
                None => break,
            }
        }
    }
}

/// Functions that name `profile`: a profile appearing, changing or going away changes them.
fn functions_using(
    functions: &FunctionStore,
    profile: &str,
) -> Vec<ObjectRef<DeserializeGuard<ServerlessFunction>>> {
    functions
        .state()
        .iter()
        .filter(|guard| {
            guard
                .0
                .as_ref()
                .is_ok_and(|f| f.spec.profile.as_deref() == Some(profile))
        })
        .map(|guard| ObjectRef::from_obj(guard.as_ref()))
        .collect()
}

/// The hosts each function claimed when last seen, so that a function that gives a host up
/// still wakes the functions waiting for it. Pruned with the functions that are gone.
#[derive(Default)]
struct ClaimedHosts(std::sync::Mutex<HashMap<(String, String), BTreeSet<String>>>);

impl ClaimedHosts {
    /// The other functions claiming a host `changed` claims or claimed.
    fn sharing(
        &self,
        functions: &FunctionStore,
        changed: &DeserializeGuard<ServerlessFunction>,
    ) -> Vec<ObjectRef<DeserializeGuard<ServerlessFunction>>> {
        let (Some(namespace), Some(name)) = (changed.namespace(), changed.meta().name.clone())
        else {
            return vec![];
        };
        let now: BTreeSet<String> = live(changed)
            .map(claimed_hosts)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let key = (namespace, name);
        let before = {
            let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if now.is_empty() {
                seen.remove(&key)
            } else {
                seen.insert(key.clone(), now.clone())
            }
        };
        let touched: BTreeSet<&String> = now.iter().chain(before.iter().flatten()).collect();
        if touched.is_empty() {
            return vec![];
        }
        functions
            .state()
            .iter()
            .filter(|guard| {
                live(guard).is_some_and(|other| {
                    (other.namespace().as_deref(), other.meta().name.as_deref())
                        != (Some(key.0.as_str()), Some(key.1.as_str()))
                        && claimed_hosts(other).iter().any(|h| touched.contains(h))
                })
            })
            .map(|guard| ObjectRef::from_obj(guard.as_ref()))
            .collect()
    }

    fn retain(&self, known: impl Fn(&str, &str) -> bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(namespace, name), _| known(namespace, name));
    }
}

#[instrument(skip_all, fields(function = %guard.name_any(), namespace = %guard.namespace().unwrap_or_default()))]
pub async fn reconcile(
    guard: Arc<DeserializeGuard<ServerlessFunction>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let _timer = ctx.reporting.metrics.reconcile_started(KIND);
    match &guard.0 {
        Err(invalid) => Err(Error::InvalidObject(invalid.error.clone())),
        // The garbage collector removes the children.
        Ok(function) if function.metadata.deletion_timestamp.is_some() => {
            Ok(Action::await_change())
        }
        Ok(function) => function.reconcile(&ctx).await,
    }
}

impl ServerlessFunction {
    async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let namespace = self
            .namespace()
            .ok_or(BuildError::MissingMetadata("metadata.namespace"))?;
        let name = self.name_any();

        let name_problem = build::name_problem(&name);
        let schedule_problems = crate::schedule::validate(&self.spec.triggers.schedules);
        let profile = self.check_profile(ctx, &namespace).await?;
        let host_refusals = if claimed_hosts(self).is_empty() {
            vec![]
        } else {
            let functions = ctx.functions.state();
            refusals_among(
                self,
                functions.iter().filter_map(|guard| live(guard)),
                &ctx.activator_names,
            )
        };

        let deployment = if name_problem.is_some() {
            None
        } else {
            self.apply_service(ctx, &namespace).await?;
            if profile.admits_pods() {
                Some(self.apply_deployment(ctx, &namespace).await?)
            } else {
                // Pods under a missing profile would run unfenced or be refused: keep what
                // runs, start nothing new.
                self.existing_deployment(ctx, &namespace)
                    .await?
                    .map(|(deployment, _)| deployment)
            }
        };

        // A standby pod only speeds up a cold start: failing to keep one (a quota, a webhook
        // refusing the pod) must not hold back the function's status.
        if name_problem.is_none()
            && profile.admits_pods()
            && let Err(error) = self
                .keep_standby(ctx, &namespace, deployment.as_ref())
                .await
        {
            tracing::warn!(error = %crate::telemetry::error_chain(&error), "keeping a standby pod");
        }

        let instances = deployment.as_ref().map(Instances::of);
        let pod_problems = match (&deployment, instances) {
            (Some(deployment), Some(instances)) if instances.none_ready() => {
                self.pod_problems(ctx, &namespace, deployment).await?
            }
            _ => vec![],
        };

        let observed = Observed {
            deployment: deployment.as_ref(),
            profile,
            schedule_problems: &schedule_problems,
            name_problem: name_problem.as_deref(),
            pod_problems: &pod_problems,
            activator_url: &ctx.activator_url,
            host_refusals: &host_refusals,
        };
        // The status this process last wrote, while the cache is still behind it.
        let key = (namespace.clone(), name.clone());
        let read = self.resource_version();
        let previous = ctx
            .written_statuses
            .previous(&key, read.as_deref())
            .unwrap_or_else(|| self.status.clone().unwrap_or_default());
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = status::compute(self, &previous, &observed, now);
        if !same_status(&previous, &status) {
            let written = self.patch_status(ctx, &status).await?;
            ctx.written_statuses
                .record(key, read, written.resource_version(), &status);
        }
        self.publish_transitions(ctx, &previous, &status).await;

        info!(
            replicas = status.replicas,
            ready = status.ready_replicas,
            "function reconciled"
        );
        Ok(match instances {
            Some(instances) if instances.none_ready() => Action::requeue(POD_CHECK_INTERVAL),
            // The next look comes from a change, or from the round of [`resync`].
            _ => Action::await_change(),
        })
    }

    async fn check_profile(&self, ctx: &Context, namespace: &str) -> Result<ProfileCheck> {
        let Some(profile) = &self.spec.profile else {
            return Ok(ProfileCheck::NotRequested);
        };
        let found = Api::<FargateProfile>::all(ctx.client.clone())
            .get_opt(profile)
            .await?;
        Ok(match found {
            Some(p) if p.metadata.deletion_timestamp.is_none() => {
                if namespace_is_selected(&p, namespace) {
                    ProfileCheck::Found(profile.clone())
                } else {
                    ProfileCheck::NotSelecting {
                        profile: profile.clone(),
                        namespace: namespace.to_string(),
                    }
                }
            }
            _ => ProfileCheck::Missing(profile.clone()),
        })
    }

    /// Applies the Service, unless the cached one is what this process applied last and the
    /// function still builds the same (see [`AppliedObjects`]).
    async fn apply_service(&self, ctx: &Context, namespace: &str) -> Result<()> {
        let service = build::service(self)?;
        let name = self.name_any();
        let key = function_key(namespace, &name);
        let hash = hash_of(&service);
        let api = Api::<Service>::namespaced(ctx.client.clone(), namespace);
        if let Some(current) = ctx.services.get(namespace, &name) {
            if ctx.applied_services.service_unchanged(key, hash, &current) {
                return Ok(());
            }
            // A Service's cluster IP cannot change: one an earlier fargo made with an address is
            // deleted, and the apply below makes the headless one.
            if build::replace_with_headless(&current, &self.uid().unwrap_or_default()) {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: current.meta.uid.clone(),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => info!("replacing the Service with a headless one"),
                    Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        // Of the answer, only the metadata is read.
        let applied = Api::<PartialObjectMeta<Service>>::namespaced(ctx.client.clone(), namespace)
            .patch(
                &name,
                &PatchParams::apply(CONTROLLER_MANAGER).force(),
                &Patch::Apply(&service),
            )
            .await?;
        ctx.applied_services
            .record_service(key, hash, &applied.metadata);
        Ok(())
    }

    /// The Deployment from the cache, or from the API server when the cache does not show one
    /// (it may lag behind a Deployment just created) — except for a function that neither a
    /// reconcile of this process nor any status says was reconciled before: missing from the
    /// cache too, its Deployment is one no reconcile got to make, or one made by a reconcile of
    /// an earlier process that stopped before the status. That one is seeded again with the
    /// initial replicas; should the autoscaler have changed them in between, its next decision
    /// sets them back. Under load, the function's own cache can lag behind the status just
    /// written as the Deployment's does behind the Deployment: what this process applied says
    /// the Deployment is there.
    ///
    /// The Deployment comes with a digest of its labels, which the cache keeps in their stead.
    async fn existing_deployment(
        &self,
        ctx: &Context,
        namespace: &str,
    ) -> Result<Option<(Deployment, u64)>> {
        let name = self.name_any();
        if let Some(cached) = ctx.deployments.get(namespace, &name) {
            return Ok(Some((cached.to_deployment(), cached.labels_digest)));
        }
        if self.status.is_none() && !ctx.applied.knows(function_key(namespace, &name)) {
            return Ok(None);
        }
        let read = Api::<Deployment>::namespaced(ctx.client.clone(), namespace)
            .get_opt(&name)
            .await?;
        Ok(read.map(|deployment| {
            let labels = labels_digest(deployment.labels());
            (deployment, labels)
        }))
    }

    /// Applies the Deployment. Until the autoscaler has written the replicas, the controller
    /// owns them: its applies carry the replicas to start with (so a function with `initial: 0`
    /// never starts a pod), or the figure already there, and the resourceVersion it read them
    /// at, so that an apply from a cache that has not seen the autoscaler's first write fails
    /// (a conflict, retried when the cache catches up) rather than sets the replicas back. The
    /// autoscaler's first change of the replicas is forced and takes the field whole; from then
    /// on the controller applies without it, which can never reset it.
    async fn apply_deployment(&self, ctx: &Context, namespace: &str) -> Result<Deployment> {
        let name = self.name_any();
        let existing = self.existing_deployment(ctx, namespace).await?;
        let seed = match &existing {
            Some((deployment, _)) if autoscaler_owns_replicas(deployment) => None,
            Some((deployment, _)) => Some((
                deployment
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or_else(|| build::initial_replicas(&self.spec)),
                deployment.metadata.resource_version.clone(),
            )),
            None => Some((build::initial_replicas(&self.spec), None)),
        };
        if let Some(code) = build::code_config_map(self)? {
            Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
                .patch(
                    code.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::apply(CONTROLLER_MANAGER).force(),
                    &Patch::Apply(&code),
                )
                .await?;
        }
        let mut desired = build::deployment(self, &ctx.runtimes)?;
        let key = function_key(namespace, &name);
        let hash = hash_of(&desired);
        if let Some((current, labels)) = existing
            && ctx.applied.unchanged(key, hash, &desired, &current, labels)
        {
            return Ok(current);
        }
        if let Some((replicas, version)) = seed.clone() {
            if let Some(spec) = desired.spec.as_mut() {
                spec.replicas = Some(replicas);
            }
            desired.metadata.resource_version = version;
        }
        // The answer is read as the cache reads a Deployment: it comes whole, pod template and
        // all, and what follows reads its metadata, replicas and status.
        let api: Api<WatchedDeployment> = Api::namespaced(ctx.client.clone(), namespace);
        let params = PatchParams::apply(CONTROLLER_MANAGER).force();
        let applied = match api.patch(&name, &params, &Patch::Apply(&desired)).await {
            Err(kube::Error::Api(status)) if status.code == 409 && seed.is_some() => {
                return Err(Error::StaleDeployment(kube::Error::Api(status)));
            }
            applied => applied?.into_deployment(),
        };
        if let Some((replicas, None)) = seed {
            info!(replicas, "deployment created with its initial replicas");
        }
        ctx.applied.record(key, hash, &applied);
        Ok(applied)
    }

    /// Keeps one standby pod, made from the current ReplicaSet, while the function asks for
    /// one and its Deployment is at zero, and removes any other (all of them once the function
    /// no longer asks for one). Above zero, the standby pod is woken or on its way to be: left
    /// alone.
    async fn keep_standby(
        &self,
        ctx: &Context,
        namespace: &str,
        deployment: Option<&Deployment>,
    ) -> Result<()> {
        let name = self.name_any();
        let existing = standby::of_function(&ctx.standby_pods, self);
        let wanted = self.spec.scale.standby;
        if !wanted && existing.is_empty() {
            return Ok(());
        }
        let current = match deployment {
            Some(deployment) if wanted => {
                if deployment.spec.as_ref().and_then(|s| s.replicas) != Some(0) {
                    return Ok(());
                }
                // Until the Deployment controller has seen the latest template, its newest
                // ReplicaSet may be of an older one: a later reconcile makes the pod.
                let observed = deployment
                    .status
                    .as_ref()
                    .and_then(|s| s.observed_generation);
                if observed.is_none() || observed != deployment.metadata.generation {
                    return Ok(());
                }
                let sets = Api::<ReplicaSet>::namespaced(ctx.client.clone(), namespace)
                    .list(&ListParams::default().labels(&format!("{FUNCTION_LABEL}={name}")))
                    .await?;
                let uid = deployment.metadata.uid.as_deref().unwrap_or_default();
                standby::current_replica_set(&sets.items, uid).cloned()
            }
            _ => None,
        };
        let hash = current.as_ref().and_then(standby::template_hash);
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
        let mut kept = false;
        for pod in existing {
            if !kept && hash.is_some_and(|hash| standby::made_from(&pod, hash)) {
                kept = true;
                continue;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pods.delete(&pod.name_any(), &params).await {
                Ok(_) => info!(pod = pod.name_any(), "standby pod removed"),
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(error) => return Err(error.into()),
            }
        }
        if kept {
            return Ok(());
        }
        let Some(pod) = current
            .as_ref()
            .and_then(|set| standby::pod(self, set, &ctx.runtimes.standby_image))
        else {
            return Ok(());
        };
        let woken = standby::woken_labels(&pod, &name).unwrap_or_default();
        if !standby::profiles_agree(namespace, pod.labels(), &woken, &ctx.profiles.state()) {
            info!(
                "no standby pod: a profile selects the function's pods by their \
                 fargo.dev/function or pod-template-hash label, which a standby pod lacks"
            );
            return Ok(());
        }
        let created = pods.create(&PostParams::default(), &pod).await?;
        info!(pod = created.name_any(), "standby pod created");
        Ok(())
    }

    /// What keeps the function's pods from serving, when none is ready.
    async fn pod_problems(
        &self,
        ctx: &Context,
        namespace: &str,
        deployment: &Deployment,
    ) -> Result<Vec<String>> {
        let mut problems: Vec<String> = status::replica_failure(deployment).into_iter().collect();
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
        let listed = pods
            .list(&ListParams::default().labels(&format!("{FUNCTION_LABEL}={}", self.name_any())))
            .await?;
        problems.extend(crate::diagnosis::pod_problems(&listed.items));
        Ok(problems)
    }

    /// Writes the status; returns the function as written.
    async fn patch_status(
        &self,
        ctx: &Context,
        status: &ServerlessFunctionStatus,
    ) -> Result<PartialObjectMeta<ServerlessFunction>> {
        // Of the answer, only the metadata is read.
        let api: Api<PartialObjectMeta<ServerlessFunction>> =
            Api::namespaced(ctx.client.clone(), &self.namespace().unwrap_or_default());
        Ok(patch_status(&api, &self.name_any(), CONTROLLER_MANAGER, status).await?)
    }

    /// Events for conditions that turned bad (or changed their complaint).
    async fn publish_transitions(
        &self,
        ctx: &Context,
        previous: &ServerlessFunctionStatus,
        current: &ServerlessFunctionStatus,
    ) {
        for (type_, watched) in [
            (SCHEDULES_VALID, &[reason::INVALID_SCHEDULE][..]),
            (
                PROFILE_FOUND,
                &[
                    reason::PROFILE_NOT_FOUND,
                    reason::PROFILE_DOES_NOT_SELECT_NAMESPACE,
                ][..],
            ),
            (
                HOSTS_ACCEPTED,
                &[reason::HOST_RESERVED, reason::HOST_CLAIMED][..],
            ),
            (READY, &[reason::PODS_FAILING, reason::INVALID_NAME][..]),
        ] {
            let Some(now) = current.conditions.iter().find(|c| c.type_ == type_) else {
                continue;
            };
            if now.status != "False" || !watched.contains(&now.reason.as_str()) {
                continue;
            }
            let before = previous.conditions.iter().find(|c| c.type_ == type_);
            let unchanged = before.is_some_and(|b| {
                b.status == now.status && b.reason == now.reason && b.message == now.message
            });
            if !unchanged {
                ctx.reporting
                    .events
                    .publish(
                        &self.object_ref(&()),
                        Note::warning("Reconcile", &now.reason, now.message.clone()),
                    )
                    .await;
            }
        }
    }
}

/// Whether writing `new` would change what the reconciler owns of `old`.
fn same_status(old: &ServerlessFunctionStatus, new: &ServerlessFunctionStatus) -> bool {
    // The fields other managers write (the autoscaler, the events recorder, the meter) are
    // not the reconciler's to compare.
    let mut old = old.clone();
    old.last_request_time = None;
    old.queued_events = None;
    old.oldest_queued_event = None;
    old.triggers.clear();
    old.usage = None;
    old == *new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(uid: &str, generation: i64) -> Deployment {
        let mut deployment = desired();
        deployment.metadata.uid = Some(uid.into());
        deployment.metadata.generation = Some(generation);
        deployment
    }

    /// What the reconciler builds: labels and an owner reference, no uid or generation.
    fn desired() -> Deployment {
        let mut deployment = Deployment::default();
        deployment.metadata.labels = Some(build::labels("thumbnail"));
        deployment.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                uid: "function-uid".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        deployment
    }

    /// Whether the apply of [`desired`] would be skipped over `current` read with its labels.
    fn unchanged_as_read(
        applied: &AppliedObjects,
        key: u64,
        hash: u64,
        current: &Deployment,
    ) -> bool {
        applied.unchanged(
            key,
            hash,
            &desired(),
            current,
            labels_digest(current.labels()),
        )
    }

    #[test]
    fn an_apply_is_skipped_only_while_nobody_changed_the_deployment_since() {
        let applied = AppliedObjects::default();
        let key = function_key("media", "thumbnail");
        let ours = deployment("uid-1", 3);
        assert!(
            !unchanged_as_read(&applied, key, 7, &ours),
            "nothing recorded: apply"
        );
        applied.record(key, 7, &ours);
        assert!(unchanged_as_read(&applied, key, 7, &ours));
        assert!(
            !unchanged_as_read(&applied, key, 8, &ours),
            "the function builds another object"
        );
        assert!(
            !unchanged_as_read(&applied, key, 7, &deployment("uid-1", 4)),
            "someone changed the spec (or the cache is behind)"
        );
        assert!(
            !unchanged_as_read(&applied, key, 7, &deployment("uid-2", 3)),
            "deleted and made again by someone else"
        );
        let mut unlabelled = ours.clone();
        unlabelled.metadata.labels = None;
        assert!(
            !unchanged_as_read(&applied, key, 7, &unlabelled),
            "its labels were taken off (metadata changes keep the generation)"
        );
        let mut orphaned = ours.clone();
        orphaned.metadata.owner_references = None;
        assert!(
            !unchanged_as_read(&applied, key, 7, &orphaned),
            "its owner reference was taken off"
        );
        applied.retain([("media", "thumbnail"), ("media", "other")]);
        assert!(
            unchanged_as_read(&applied, key, 7, &ours),
            "kept while its function lives"
        );
        applied.retain([("media", "other")]);
        assert!(
            !unchanged_as_read(&applied, key, 7, &ours),
            "forgotten with its function"
        );
    }

    #[test]
    fn a_service_apply_is_skipped_only_while_the_service_is_the_one_applied() {
        let applied = AppliedObjects::default();
        let key = function_key("media", "thumbnail");
        let service = |uid: &str, resource_version: &str| {
            let mut service = Service::default();
            service.metadata.uid = Some(uid.into());
            service.metadata.resource_version = Some(resource_version.into());
            service
        };
        let unchanged = |hash: u64, service: &Service| {
            applied.service_unchanged(key, hash, &CachedService::from(service))
        };
        let ours = service("uid-1", "100");
        assert!(!unchanged(7, &ours), "never applied");
        applied.record_service(key, 7, &ours.metadata);
        assert!(unchanged(7, &ours));
        assert!(!unchanged(8, &ours), "the function builds another Service");
        assert!(
            !unchanged(7, &service("uid-1", "101")),
            "written by someone since"
        );
        assert!(
            !unchanged(7, &service("uid-2", "100")),
            "deleted and made again"
        );
    }

    fn function(name: &str, hosts: &[&str]) -> DeserializeGuard<ServerlessFunction> {
        let mut function: ServerlessFunction = serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: shop}}\nspec: {{image: x}}"
        ))
        .expect("a test function");
        function.spec.triggers.http.hosts = hosts.iter().map(|h| h.to_string()).collect();
        DeserializeGuard(Ok(function))
    }

    fn names(refs: Vec<ObjectRef<DeserializeGuard<ServerlessFunction>>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn the_store_keeps_fargos_annotations_and_no_managed_fields() {
        let mut function: ServerlessFunction = serde_json::from_value(serde_json::json!({
            "apiVersion": "fargo.dev/v1alpha1", "kind": "ServerlessFunction",
            "metadata": {"name": "hello", "namespace": "shop", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{}}",
                crate::api::SCHEDULE_STATE_ANNOTATION: "{}",
            }, "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"image": "echo"},
        }))
        .unwrap();
        trim_function(&mut function);
        let kept: Vec<_> = function.annotations().keys().collect();
        assert_eq!(kept, [crate::api::SCHEDULE_STATE_ANNOTATION]);
        assert!(function.managed_fields().is_empty());

        function.annotations_mut().clear();
        function.annotations_mut().insert("note".into(), "x".into());
        trim_function(&mut function);
        assert_eq!(function.metadata.annotations, None);
    }

    #[test]
    fn a_status_written_is_what_a_cache_still_behind_it_compares_with() {
        let written = WrittenStatuses::default();
        let key = ("shop".to_string(), "hello".to_string());
        let status = |replicas| ServerlessFunctionStatus {
            replicas: Some(replicas),
            ..Default::default()
        };
        let v = |s: &str| Some(s.to_string());
        assert_eq!(written.previous(&key, Some("1")), None);

        // Written over resourceVersion 1, which became 2; written again over a cache still at
        // 1, which became 3.
        written.record(key.clone(), v("1"), v("2"), &status(1));
        assert_eq!(written.previous(&key, Some("1")), Some(status(1)));
        written.record(key.clone(), v("1"), v("3"), &status(2));
        // A cache at 1 or at the first write is behind the second.
        assert_eq!(written.previous(&key, Some("1")), Some(status(2)));
        assert_eq!(written.previous(&key, Some("2")), Some(status(2)));
        // Caught up: the cache is compared as it is, and the entry forgotten.
        assert_eq!(written.previous(&key, Some("3")), None);
        assert_eq!(written.previous(&key, Some("1")), None);

        // Somebody else wrote after this process did: the cache is what counts.
        written.record(key.clone(), v("3"), v("4"), &status(3));
        assert_eq!(written.previous(&key, Some("5")), None);
        assert_eq!(written.previous(&key, Some("3")), None);

        // Other functions are apart, and the functions gone are pruned.
        written.record(key.clone(), v("5"), v("6"), &status(4));
        let other = ("shop".to_string(), "other".to_string());
        assert_eq!(written.previous(&other, Some("5")), None);
        written.retain(|_, name| name != "hello");
        assert_eq!(written.previous(&key, Some("5")), None);
    }

    #[test]
    fn a_change_to_a_functions_hosts_wakes_the_others_claiming_them_before_and_after() {
        let (store, mut writer) = kube::runtime::reflector::store();
        for f in [
            function("cart", &["shop.example.com"]),
            function("cart-v2", &["shop.example.com"]),
            function("api", &["api.example.com"]),
            function("plain", &[]),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(f));
        }
        let hosts = ClaimedHosts::default();
        assert_eq!(
            names(hosts.sharing(&store, &function("cart", &["shop.example.com"]))),
            ["cart-v2"]
        );
        // It moves to another host: those waiting for the one it left, and those on the new one.
        assert_eq!(
            names(hosts.sharing(&store, &function("cart", &["api.example.com"]))),
            ["api", "cart-v2"]
        );
        assert_eq!(
            names(hosts.sharing(&store, &function("cart", &[]))),
            ["api"]
        );
        assert!(hosts.sharing(&store, &function("plain", &[])).is_empty());
    }
}
