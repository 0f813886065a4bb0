//! The functions the activator knows: routes from the ServerlessFunction watch, pods from the
//! EndpointSlice watch, joined by `(namespace, name)`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::StreamExt;
use kube::core::DeserializeGuard;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::oneshot;

use super::function_state::{FunctionConfig, FunctionState, ObservedEndpoint};
use super::hold::HoldLimit;
use super::lambda_api::FunctionFacts;
use super::metrics::ActivatorMetrics;
use super::router::{HttpRoute, RouteError, RouteTable};
use crate::api::ServerlessFunction;
use crate::api::function::HttpAuth;
use crate::api::routes::ActivatorNames;
use crate::api::stats::ActivatorStats;

/// A request's function, and how much of its path to cut before proxying.
pub struct Resolved {
    pub function: Arc<FunctionState>,
    pub strip: usize,
    pub auth: HttpAuth,
}

pub struct FunctionIndex {
    inner: RwLock<Inner>,
    /// Requests each function may hold.
    queue_depth: usize,
    /// Requests the activator may hold, all functions together.
    hold_limit: Arc<HoldLimit>,
    metrics: ActivatorMetrics,
}

struct Inner {
    /// Functions that exist (from the ServerlessFunction watch).
    routes: RouteTable<Arc<FunctionState>>,
    /// Every function state: routed ones, and ones with pods whose ServerlessFunction is not
    /// (or no longer) seen.
    states: HashMap<String, HashMap<String, Arc<FunctionState>>>,
}

impl FunctionIndex {
    pub fn new(
        names: ActivatorNames,
        queue_depth: usize,
        hold_limit: Arc<HoldLimit>,
        metrics: ActivatorMetrics,
    ) -> Self {
        Self {
            inner: RwLock::new(Inner {
                routes: RouteTable::new(names),
                states: HashMap::new(),
            }),
            queue_depth,
            hold_limit,
            metrics,
        }
    }

    fn new_state(&self, namespace: &str, name: &str, config: FunctionConfig) -> Arc<FunctionState> {
        let metrics = self.metrics.for_function(namespace, name);
        let hold_limit = self.hold_limit.clone();
        FunctionState::new(
            namespace,
            name,
            config,
            self.queue_depth,
            hold_limit,
            metrics,
        )
    }

    pub fn metrics(&self) -> &ActivatorMetrics {
        &self.metrics
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The function a request is for.
    pub fn resolve(&self, host: Option<&str>, path: &str) -> Result<Resolved, RouteError> {
        let inner = self.read();
        let route = inner.routes.resolve(host, path)?;
        Ok(Resolved {
            function: route.target.clone(),
            strip: route.strip,
            auth: route.auth,
        })
    }

    /// Functions that exist (routed or disabled).
    pub fn function_count(&self) -> usize {
        self.read().routes.len()
    }

    /// A function that exists (from the ServerlessFunction watch), whether it takes HTTP or not.
    pub fn function(&self, namespace: &str, name: &str) -> Option<Arc<FunctionState>> {
        self.read().routes.get(namespace, name).cloned()
    }

    /// Every function that exists, as `(namespace, name, state)`.
    pub fn functions(&self) -> Vec<(String, String, Arc<FunctionState>)> {
        let inner = self.read();
        inner
            .routes
            .keys()
            .filter_map(|(namespace, name)| {
                let state = inner.routes.get(namespace, name)?.clone();
                Some((namespace.to_string(), name.to_string(), state))
            })
            .collect()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<FunctionState>> {
        self.read()
            .states
            .get(namespace)
            .and_then(|functions| functions.get(name))
            .cloned()
    }

    /// Adds or updates a function from its ServerlessFunction; returns its key.
    pub fn apply(&self, function: &ServerlessFunction) -> Option<(String, String)> {
        let namespace = function.metadata.namespace.as_deref()?;
        let name = function.metadata.name.as_deref()?;
        let (config, http) = settings_of(function);
        self.upsert(namespace, name, config, http);
        Some((namespace.to_string(), name.to_string()))
    }

    pub fn upsert(&self, namespace: &str, name: &str, config: FunctionConfig, http: HttpRoute) {
        let mut inner = self.write();
        let state = match inner.states.get(namespace).and_then(|f| f.get(name)) {
            Some(state) => {
                state.set_config(config);
                state.clone()
            }
            None => {
                let state = self.new_state(namespace, name, config);
                inner
                    .states
                    .entry(namespace.to_string())
                    .or_default()
                    .insert(name.to_string(), state.clone());
                state
            }
        };
        let refused = inner.routes.upsert(namespace, name, http, state);
        drop(inner);
        for refusal in refused {
            tracing::warn!(
                %namespace, function = %name, %refusal,
                "ignoring a host in spec.triggers.http.hosts: no function may claim it"
            );
        }
    }

    /// The function was deleted: stop routing to it.
    pub fn remove(&self, namespace: &str, name: &str) {
        let mut inner = self.write();
        inner.routes.remove(namespace, name);
        inner.forget_if_unused(namespace, name);
    }

    /// Removes every routed function for which `keep` is false (after a relist).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut inner = self.write();
        let gone: Vec<(String, String)> = inner
            .routes
            .keys()
            .filter(|(namespace, name)| !keep(namespace, name))
            .map(|(namespace, name)| (namespace.to_string(), name.to_string()))
            .collect();
        for (namespace, name) in gone {
            inner.routes.remove(&namespace, &name);
            inner.forget_if_unused(&namespace, &name);
        }
    }

    /// Replaces the pods of a function; returns its state and the addresses to probe.
    pub fn set_endpoints(
        &self,
        namespace: &str,
        name: &str,
        endpoints: &[ObservedEndpoint],
    ) -> (Arc<FunctionState>, Vec<SocketAddr>) {
        let existing = self.get(namespace, name);
        let state = existing.unwrap_or_else(|| {
            let mut inner = self.write();
            inner
                .states
                .entry(namespace.to_string())
                .or_default()
                .entry(name.to_string())
                .or_insert_with(|| self.new_state(namespace, name, FunctionConfig::default()))
                .clone()
        });
        let to_probe = state.set_endpoints(endpoints);
        if endpoints.is_empty() {
            self.write().forget_if_unused(namespace, name);
        }
        (state, to_probe)
    }

    /// Every function that has had requests, for `/stats`.
    pub fn stats(&self) -> ActivatorStats {
        let states: Vec<Arc<FunctionState>> = self
            .read()
            .states
            .values()
            .flat_map(|functions| functions.values().cloned())
            .collect();
        let mut functions: Vec<_> = states.iter().filter_map(|state| state.stats()).collect();
        functions.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        ActivatorStats { functions }
    }
}

impl Inner {
    /// Drops a function's state once it is neither routed nor has pods.
    fn forget_if_unused(&mut self, namespace: &str, name: &str) {
        if self.routes.get(namespace, name).is_some() {
            return;
        }
        let Some(functions) = self.states.get_mut(namespace) else {
            return;
        };
        if functions
            .get(name)
            .is_some_and(|state| !state.has_endpoints())
            && let Some(state) = functions.remove(name)
        {
            state.metrics().remove();
        }
        if functions.is_empty() {
            self.states.remove(namespace);
        }
    }
}

/// How long past its timeout the activator waits for a handler function's own answer.
const RUNTIME_API_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// What the activator uses of a function.
pub fn settings_of(function: &ServerlessFunction) -> (FunctionConfig, HttpRoute) {
    let spec = &function.spec;
    let timeout = if spec.timeout.is_negative() {
        FunctionConfig::default().timeout
    } else {
        Duration::from(spec.timeout).clamp(Duration::from_secs(1), Duration::from_secs(900))
    };
    let config = FunctionConfig {
        timeout,
        per_instance: spec
            .effective_concurrency()
            .per_instance
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        port: u16::try_from(spec.port).unwrap_or(FunctionConfig::default().port),
        answer_grace: if spec.uses_runtime_api() {
            RUNTIME_API_ANSWER_GRACE
        } else {
            Duration::ZERO
        },
        facts: Arc::new(FunctionFacts::of(function, timeout)),
    };
    // A function being deleted gives its hosts up at once: the controller, which reports who
    // holds a host, already counts it gone.
    let deleting = function.metadata.deletion_timestamp.is_some();
    let http = HttpRoute {
        enabled: spec.triggers.http.enabled,
        hosts: if deleting {
            vec![]
        } else {
            spec.triggers.http.hosts.clone()
        },
        path: spec.triggers.http.path.clone(),
        created: function.metadata.creation_timestamp.as_ref().map(|t| t.0),
        auth: spec.triggers.http.auth,
    };
    (config, http)
}

/// Keeps `index` in step with every ServerlessFunction in the cluster. Sends on `synced` once
/// the first full list is in. Runs until the task is dropped.
pub async fn watch_functions(
    client: Client,
    index: Arc<FunctionIndex>,
    synced: oneshot::Sender<()>,
) {
    // Guarded, so that one object that does not parse stalls nothing.
    let mut events =
        crate::guarded::watcher::<ServerlessFunction>(client, watcher::Config::default())
            .default_backoff()
            .boxed();
    let mut synced = Some(synced);
    let mut relisted: Option<HashSet<(String, String)>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => relisted = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(object)) => {
                if let Some(key) = apply_guarded(&index, &object)
                    && let Some(seen) = relisted.as_mut()
                {
                    seen.insert(key);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(seen) = relisted.take() {
                    index.retain(|namespace, name| {
                        seen.contains(&(namespace.to_string(), name.to_string()))
                    });
                }
                if let Some(synced) = synced.take() {
                    let _ = synced.send(());
                }
            }
            Ok(watcher::Event::Apply(object)) => {
                apply_guarded(&index, &object);
            }
            Ok(watcher::Event::Delete(object)) => {
                if let (Some(namespace), Some(name)) =
                    (object.namespace(), object.meta().name.as_deref())
                {
                    index.remove(&namespace, name);
                }
            }
            Err(error) => tracing::warn!(%error, "watching ServerlessFunctions"),
        }
    }
}

/// Applies a function that parsed; keeps the last good version of one that does not.
fn apply_guarded(
    index: &FunctionIndex,
    object: &DeserializeGuard<ServerlessFunction>,
) -> Option<(String, String)> {
    match &object.0 {
        Ok(function) => index.apply(function),
        Err(invalid) => {
            let namespace = invalid.metadata.namespace.clone()?;
            let name = invalid.metadata.name.clone()?;
            tracing::warn!(
                %namespace, %name, error = %invalid.error,
                "ServerlessFunction does not parse; keeping its last valid version"
            );
            Some((namespace, name))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn function(yaml: &str) -> ServerlessFunction {
        serde_yaml::from_str(yaml).expect("test function parses")
    }

    fn index() -> FunctionIndex {
        FunctionIndex::new(
            ActivatorNames::new("fargo-activator", "fargo-system", "fargo.local"),
            10,
            HoldLimit::new(usize::MAX),
            ActivatorMetrics::default(),
        )
    }

    fn endpoint(last_octet: u8) -> ObservedEndpoint {
        ObservedEndpoint {
            ip: IpAddr::from([10, 0, 0, last_octet]),
            port: Some(9000),
            ready: true,
            terminating: false,
        }
    }

    const THUMBNAIL: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: ServerlessFunction
metadata: {name: thumbnail, namespace: media}
spec:
  image: registry.example/thumbnail:1.0
  port: 9000
  timeout: 30s
  concurrency: {perInstance: 10}
  triggers:
    http: {hosts: [thumbnail.example.com], path: /}
"#;

    #[test]
    fn settings_come_from_the_spec() {
        let thumbnail = function(THUMBNAIL);
        let (config, http) = settings_of(&thumbnail);
        assert_eq!(
            config,
            FunctionConfig {
                timeout: Duration::from_secs(30),
                per_instance: 10,
                port: 9000,
                answer_grace: Duration::ZERO,
                facts: Arc::new(FunctionFacts::of(&thumbnail, Duration::from_secs(30))),
            }
        );
        assert_eq!(config.facts.memory_mb, 128);
        assert!(!config.facts.uses_runtime_api);
        assert!(http.enabled);
        assert_eq!(http.hosts, vec!["thumbnail.example.com".to_string()]);
    }

    #[test]
    fn handler_functions_take_one_request_at_a_time_and_answer_their_own_timeouts() {
        let handler = function(
            "apiVersion: fargo.dev/v1alpha1\nkind: ServerlessFunction\n\
             metadata: {name: hello, namespace: media}\n\
             spec: {runtime: python3.11, handler: app.handler, code: {inline: {app.py: ''}}}",
        );
        let (config, _) = settings_of(&handler);
        assert_eq!(config.per_instance, 1);
        assert_eq!(config.answer_grace, RUNTIME_API_ANSWER_GRACE);
    }

    #[test]
    fn a_function_being_deleted_gives_up_its_hosts() {
        let index = index();
        index.apply(&function(THUMBNAIL));
        let mut deleting = function(THUMBNAIL);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(1).expect("a valid time"),
            ));
        index.apply(&deleting);
        assert!(
            index.resolve(Some("thumbnail.example.com"), "/x").is_err(),
            "its host is free for the next claim"
        );
        assert!(index.resolve(None, "/media/thumbnail/x").is_ok());
    }

    #[test]
    fn applied_function_is_routed_by_path_and_host() {
        let index = index();
        index.apply(&function(THUMBNAIL));
        let by_path = index.resolve(None, "/media/thumbnail/x").expect("routed");
        assert_eq!(by_path.function.name(), "thumbnail");
        assert_eq!(by_path.strip, "/media/thumbnail".len());
        let by_host = index
            .resolve(Some("thumbnail.example.com"), "/x")
            .expect("routed");
        assert!(Arc::ptr_eq(&by_path.function, &by_host.function));
    }

    #[test]
    fn endpoints_seen_before_the_function_join_it() {
        let index = index();
        let (early, _) = index.set_endpoints("media", "thumbnail", &[endpoint(1)]);
        index.apply(&function(THUMBNAIL));
        let routed = index.resolve(None, "/media/thumbnail/").expect("routed");
        assert!(Arc::ptr_eq(&early, &routed.function));
        assert_eq!(routed.function.config().per_instance, 10);
    }

    #[test]
    fn deleted_function_is_not_routed() {
        let index = index();
        index.apply(&function(THUMBNAIL));
        index.remove("media", "thumbnail");
        assert!(matches!(
            index.resolve(None, "/media/thumbnail/"),
            Err(RouteError::UnknownFunction { .. })
        ));
        assert!(index.get("media", "thumbnail").is_none());
    }

    #[test]
    fn relist_drops_functions_that_are_gone() {
        let index = index();
        index.apply(&function(THUMBNAIL));
        index.upsert(
            "media",
            "other",
            FunctionConfig::default(),
            HttpRoute::default(),
        );
        index.retain(|_, name| name == "other");
        assert!(index.resolve(None, "/media/thumbnail/").is_err());
        assert!(index.resolve(None, "/media/other/").is_ok());
    }

    #[test]
    fn state_of_a_function_without_pods_or_spec_is_dropped() {
        let index = index();
        index.set_endpoints("media", "orphan", &[endpoint(1)]);
        assert!(index.get("media", "orphan").is_some());
        index.set_endpoints("media", "orphan", &[]);
        assert!(index.get("media", "orphan").is_none());
    }

    #[test]
    fn stats_list_functions_that_had_requests() {
        let index = index();
        index.apply(&function(THUMBNAIL));
        index.upsert(
            "media",
            "idle",
            FunctionConfig::default(),
            HttpRoute::default(),
        );
        let resolved = index.resolve(None, "/media/thumbnail/").expect("routed");
        drop(resolved.function.admit());
        let stats = index.stats();
        assert_eq!(stats.functions.len(), 1);
        assert_eq!(stats.functions[0].name, "thumbnail");
        assert_eq!(stats.functions[0].requests, 1);
    }
}
