//! What the activator asks of the cluster: scale a function from zero (the "poke"), and say
//! why a function's pods are not ready when a held request times out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};

use super::function_state::FunctionState;
use crate::api::{AUTOSCALER_MANAGER, FUNCTION_LABEL};

/// Access to the cluster for the request path's two rare needs.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
}

/// What a poke did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PokeOutcome {
    /// Replicas were 0 and are now 1.
    Scaled,
    /// Replicas were already above 0 (pods are on their way).
    AlreadyScaled(i32),
    /// The function has no Deployment (yet).
    NoDeployment,
}

/// Attempts at the read-then-apply of the scale when another writer gets in between.
const POKE_ATTEMPTS: usize = 3;
/// Between two pokes that failed, while requests are still held.
const POKE_RETRY: Duration = Duration::from_millis(200);
/// How long the explanation of a function's unready pods is reused.
const DIAGNOSIS_TTL: Duration = Duration::from_secs(1);
/// Listing pods for an explanation must not hold a 504 long.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(2);

impl Cluster {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Sets the function's Deployment to 1 replica if it has 0, through the `scale`
    /// subresource with server-side apply as the autoscaler's field manager. The apply carries
    /// the resourceVersion read with the 0, so it never lowers replicas someone else raised.
    pub async fn scale_from_zero(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PokeOutcome, kube::Error> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let params = PatchParams::apply(AUTOSCALER_MANAGER).force();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let scale = match deployments.get_scale(name).await {
                Ok(scale) => scale,
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    return Ok(PokeOutcome::NoDeployment);
                }
                Err(error) => return Err(error),
            };
            let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
            if replicas > 0 {
                return Ok(PokeOutcome::AlreadyScaled(replicas));
            }
            let patch = serde_json::json!({
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "resourceVersion": scale.metadata.resource_version,
                },
                "spec": {"replicas": 1},
            });
            match deployments
                .patch_scale(name, &params, &Patch::Apply(&patch))
                .await
            {
                Ok(_) => return Ok(PokeOutcome::Scaled),
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < POKE_ATTEMPTS => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Why a function's pods are not ready, from the pods as they are now; cached briefly so
    /// that requests waiting together list the pods once.
    pub async fn why_not_ready(&self, function: &FunctionState) -> Option<Diagnosis> {
        let mut cached = function.diagnosis.lock().await;
        if let Some((at, diagnosis)) = cached.as_ref()
            && at.elapsed() < DIAGNOSIS_TTL
        {
            return Some(diagnosis.clone());
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), function.namespace());
        let params = ListParams::default().labels(&format!("{FUNCTION_LABEL}={}", function.name()));
        let listed = tokio::time::timeout(DIAGNOSIS_TIMEOUT, pods.list(&params)).await;
        let diagnosis = match listed {
            Ok(Ok(list)) => match crate::diagnosis::all_broken(&list.items) {
                Some(problems) => Diagnosis {
                    text: problems.join("; ").into(),
                    broken: true,
                },
                None => Diagnosis {
                    text: crate::diagnosis::pod_problems(&list.items)
                        .join("; ")
                        .into(),
                    broken: false,
                },
            },
            Ok(Err(error)) => {
                tracing::debug!(%error, "listing a function's pods to explain a wait");
                return None;
            }
            Err(_) => return None,
        };
        *cached = Some((Instant::now(), diagnosis.clone()));
        Some(diagnosis)
    }
}

/// What the pods of a function say about why none is ready.
#[derive(Clone, Debug)]
pub struct Diagnosis {
    /// The problems, one per container, `; `-separated; empty when the pods are just starting.
    pub text: Arc<str>,
    /// Every pod is broken (crash loop, image or configuration error): waiting is pointless.
    pub broken: bool,
}

/// Asks for the function to scale from zero, in the background; retries while requests are
/// held and the API server fails.
pub fn spawn_poke(cluster: Cluster, function: Arc<FunctionState>) {
    tokio::spawn(async move {
        loop {
            let started = Instant::now();
            match cluster
                .scale_from_zero(function.namespace(), function.name())
                .await
            {
                Ok(outcome) => {
                    tracing::info!(
                        namespace = function.namespace(), function = function.name(),
                        ?outcome, elapsed = ?started.elapsed(), "scale from zero"
                    );
                    function.poke_finished(true);
                    return;
                }
                Err(error) => {
                    tracing::warn!(
                        namespace = function.namespace(), function = function.name(), %error,
                        "could not scale the function from zero"
                    );
                    if !function.is_holding() {
                        function.poke_finished(false);
                        return;
                    }
                    tokio::time::sleep(POKE_RETRY).await;
                }
            }
        }
    });
}
