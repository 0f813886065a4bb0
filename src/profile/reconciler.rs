//! The FargateProfile reconciler: labels the namespaces a profile selects, keeps its
//! NetworkPolicy in each of them, reports status, and cleans up behind a finalizer.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument};

use super::matching::namespace_is_selected;
use super::network::{Surroundings, network_policy};
use super::status::{self, Observed, RuntimeClassCheck};
use crate::api::profile::{FargateProfile, FargateProfileStatus, ProfilePhase};
use crate::api::{CONTROLLER_MANAGER, PROFILE_FINALIZER, PROFILE_LABEL, PROFILED_NAMESPACE_LABEL};
use crate::reconcile::{self, Note, ReconcileError, Reporting, patch_status};

const KIND: &str = "FargateProfile";

/// Errors of one reconcile; each becomes a Warning Event and a short requeue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the profile lacks {0}; it was not read from the API server")]
    MissingMetadata(&'static str),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl ReconcileError for Error {
    /// A write that failed only because the cached profile was out of date: the finalizer was
    /// already removed (404), or added to a profile already being deleted (422).
    fn is_moot(&self) -> bool {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                F::RemoveFinalizer(kube::Error::Api(status)) => status.code == 404,
                F::AddFinalizer(kube::Error::Api(status)) => {
                    status.code == 404 || status.code == 422
                }
                _ => false,
            },
            _ => false,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::MissingMetadata(_) => "MissingMetadata",
            Error::Finalizer(_) => "FinalizerError",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the reconciler shares between calls.
pub struct Context {
    pub client: Client,
    pub reporting: Reporting,
    /// What every profile's fence lets through: the activator, the cluster's DNS.
    pub surroundings: Surroundings,
    /// Namespaces no profile may take: fargo's own, whose pods must never wait on fargo's
    /// fail-closed webhook or sit behind its default-deny policies.
    pub reserved_namespaces: Vec<String>,
    pub namespaces: Store<Namespace>,
    pub profiles: Store<FargateProfile>,
}

/// Runs the profile controller until `shutdown` is cancelled.
pub async fn run(
    client: Client,
    reporting: Reporting,
    surroundings: Surroundings,
    reserved_namespaces: Vec<String>,
    shutdown: CancellationToken,
) {
    let controller = Controller::new(
        Api::<FargateProfile>::all(client.clone()),
        watcher::Config::default(),
    );
    let profiles = controller.store();

    // Any namespace or RuntimeClass change can change what every profile selects or reports;
    // there are few profiles, so all of them are reconciled. The namespace cache is filled by a
    // task of its own, and the controller starts once it holds the first full list: reconciles
    // then read it without waiting (`Store::wait_until_ready` wakes only one of several
    // concurrent waiters, so reconciles must not wait on it).
    let (namespaces, namespaces_writer) = reflector::store();
    let (namespaces_changed, namespace_changes) = futures::channel::mpsc::channel::<()>(1);
    let namespace_cache = tokio::spawn({
        let api = Api::<Namespace>::all(client.clone());
        let shutdown = shutdown.clone();
        async move {
            let mut namespaces_changed = namespaces_changed;
            watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(|ns| ns.managed_fields_mut().clear())
                .reflect(namespaces_writer)
                .applied_objects()
                .take_until(shutdown.cancelled_owned())
                .for_each(|ns| {
                    // A full channel already holds a pending bulk reconcile, which reads the
                    // cache after this change.
                    if ns.is_ok() {
                        let _ = namespaces_changed.try_send(());
                    }
                    async {}
                })
                .await;
        }
    });
    tokio::select! {
        _ = namespaces.wait_until_ready() => {}
        () = shutdown.cancelled() => {
            let _ = namespace_cache.await;
            return;
        }
    }
    let runtime_class_changes = watcher(
        Api::<RuntimeClass>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(|rc| async move { rc.ok().map(|_| ()) });

    let ctx = Arc::new(Context {
        client: client.clone(),
        reporting: reporting.clone(),
        surroundings,
        reserved_namespaces,
        namespaces,
        profiles: profiles.clone(),
    });

    controller
        // Not `owns`: it would name the cluster-scoped owner with the policy's namespace, a
        // distinct key to the scheduler, and so reconcile one profile several times at once.
        .watches(
            Api::<NetworkPolicy>::all(client),
            watcher::Config::default().labels(PROFILE_LABEL),
            |policy| {
                policy
                    .labels()
                    .get(PROFILE_LABEL)
                    .map(|profile| ObjectRef::<FargateProfile>::new(profile))
            },
        )
        .reconcile_all_on(futures::stream::select(
            namespace_changes,
            runtime_class_changes,
        ))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        // Boxed, as the function reconciler's: the controller moves each reconcile whole.
        .run(
            |profile, ctx| Box::pin(reconcile(profile, ctx)),
            reconcile::error_policy,
            ctx,
        )
        .for_each_concurrent(None, |result| {
            reconcile::report_reconciled(&reporting, KIND, result)
        })
        .await;
    let _ = namespace_cache.await;
}

#[instrument(skip_all, fields(profile = %profile.name_any()))]
pub async fn reconcile(profile: Arc<FargateProfile>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.reporting.metrics.reconcile_started(KIND);
    let api: Api<FargateProfile> = Api::all(ctx.client.clone());
    finalizer(&api, PROFILE_FINALIZER, profile, |event| async {
        match event {
            Finalizer::Apply(profile) => profile.apply(&ctx).await,
            Finalizer::Cleanup(profile) => profile.cleanup(&ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

impl FargateProfile {
    /// Namespaces this profile selects now (terminating ones excluded).
    fn matched_namespaces(&self, ctx: &Context) -> BTreeSet<String> {
        ctx.namespaces
            .state()
            .iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
            .map(|ns| ns.name_any())
            .filter(|name| !ctx.reserved_namespaces.contains(name))
            .filter(|name| namespace_is_selected(self, name))
            .collect()
    }

    async fn apply(&self, ctx: &Context) -> Result<Action> {
        let name = self.name_any();
        let matched = self.matched_namespaces(ctx);

        sync_namespace_labels(ctx, None).await?;
        self.apply_network_policies(ctx, &matched).await?;

        let runtime_class = match &self.spec.runtime_class_name {
            None => RuntimeClassCheck::NotRequested,
            Some(rc) => match Api::<RuntimeClass>::all(ctx.client.clone())
                .get_opt(rc)
                .await?
            {
                Some(_) => RuntimeClassCheck::Found(rc.clone()),
                None => RuntimeClassCheck::Missing(rc.clone()),
            },
        };

        let observed = Observed {
            matched: &matched,
            runtime_class,
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = status::compute(self, &observed, now);
        self.patch_status(ctx, &status).await?;
        let previous = self.status.clone().unwrap_or_default();
        for note in status::events(&previous, &observed) {
            self.publish(ctx, note).await;
        }
        info!(profile = %name, namespaces = matched.len(), "profile reconciled");
        Ok(Action::requeue(Duration::from_secs(300)))
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Action> {
        let name = self.name_any();
        let mut status = self.status.clone().unwrap_or_default();
        status.phase = Some(ProfilePhase::Deleting);
        status.usage = None;
        // Best effort: the profile is going away whatever its status says.
        let _ = self.patch_status(ctx, &status).await;

        let policies: Api<NetworkPolicy> = Api::all(ctx.client.clone());
        for policy in policies
            .list(&ListParams::default().labels(&format!("{PROFILE_LABEL}={name}")))
            .await?
        {
            delete_ignoring_missing(
                &Api::<NetworkPolicy>::namespaced(
                    ctx.client.clone(),
                    &policy.namespace().unwrap_or_default(),
                ),
                &policy.name_any(),
            )
            .await?;
        }

        if self.spec.deletion_policy == crate::api::profile::DeletionPolicy::DeletePods {
            let pods: Api<Pod> = Api::all(ctx.client.clone());
            let mut deleted = 0;
            for pod in pods
                .list(&ListParams::default().labels(&format!("{PROFILE_LABEL}={name}")))
                .await?
            {
                delete_ignoring_missing(
                    &Api::<Pod>::namespaced(
                        ctx.client.clone(),
                        &pod.namespace().unwrap_or_default(),
                    ),
                    &pod.name_any(),
                )
                .await?;
                deleted += 1;
            }
            self.publish(
                ctx,
                Note::normal(
                    "Reconcile",
                    "PodsDeleted",
                    format!("deleted {deleted} pod(s) (deletionPolicy DeletePods)"),
                ),
            )
            .await;
        }

        sync_namespace_labels(ctx, Some(&name)).await?;
        info!(profile = %name, "profile cleaned up");
        Ok(Action::await_change())
    }

    async fn apply_network_policies(
        &self,
        ctx: &Context,
        matched: &BTreeSet<String>,
    ) -> Result<()> {
        let name = self.name_any();
        let owner = self
            .controller_owner_ref(&())
            .ok_or(Error::MissingMetadata("metadata.uid"))?;
        let params = PatchParams::apply(CONTROLLER_MANAGER).force();
        // Each policy names all of the profile's namespaces as peers, so a namespace joining or
        // leaving the profile changes every policy, and every one is applied again.
        for namespace in matched {
            let mut policy = network_policy(self, namespace, matched, &ctx.surroundings);
            policy.metadata.owner_references = Some(vec![owner.clone()]);
            let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), namespace);
            api.patch(&policy.name_any(), &params, &Patch::Apply(&policy))
                .await?;
        }
        // Policies of this profile left in namespaces it no longer selects.
        let all: Api<NetworkPolicy> = Api::all(ctx.client.clone());
        for policy in all
            .list(&ListParams::default().labels(&format!("{PROFILE_LABEL}={name}")))
            .await?
        {
            let namespace = policy.namespace().unwrap_or_default();
            if !matched.contains(&namespace) {
                delete_ignoring_missing(
                    &Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &namespace),
                    &policy.name_any(),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn patch_status(&self, ctx: &Context, status: &FargateProfileStatus) -> Result<()> {
        let api: Api<FargateProfile> = Api::all(ctx.client.clone());
        patch_status(&api, &self.name_any(), CONTROLLER_MANAGER, status).await?;
        Ok(())
    }

    async fn publish(&self, ctx: &Context, note: Note) {
        ctx.reporting
            .events
            .publish(&self.object_ref(&()), note)
            .await;
    }
}

/// Labels every namespace that a live profile selects with `fargo.dev/profiled=true`, and takes
/// the label off the others, so the webhooks see exactly the profiled namespaces. `leaving` is a
/// profile being deleted, whose selections no longer count.
async fn sync_namespace_labels(ctx: &Context, leaving: Option<&str>) -> Result<()> {
    let profiles: Vec<Arc<FargateProfile>> = ctx
        .profiles
        .state()
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none() && Some(p.name_any().as_str()) != leaving
        })
        .collect();
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    for namespace in ctx.namespaces.state() {
        if namespace.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = namespace.name_any();
        let selected = !ctx.reserved_namespaces.contains(&name)
            && profiles.iter().any(|p| namespace_is_selected(p, &name));
        let labelled = namespace
            .labels()
            .get(PROFILED_NAMESPACE_LABEL)
            .is_some_and(|v| v == "true");
        if selected == labelled {
            continue;
        }
        let value = if selected { json!("true") } else { json!(null) };
        let patch = json!({"metadata": {"labels": {PROFILED_NAMESPACE_LABEL: value}}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => info!(namespace = %name, profiled = selected, "namespace label updated"),
            // Deleted meanwhile: nothing to label.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
