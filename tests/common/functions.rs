//! ServerlessFunctions: the processes that serve them, and applying and observing them.

use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use super::TEST_MANAGER;
use super::activator::{ActivatorAddrs, shared_activator, start_activator};
use super::controller::{spawn_controller_with, wait_until_leading};
use super::namespaces::ensure_namespace;
use super::processes::{FargoProcess, free_port, spawn_for_the_process};
use super::wait::eventually;

/// An activator and a controller pointed at it (webhook unregistered, `flags` added), run out of
/// cluster for one benchmark, `identity` leading; both stop when dropped.
pub async fn start_function_stack(
    client: &Client,
    identity: &str,
    flags: &[String],
) -> (FargoProcess, FargoProcess, ActivatorAddrs) {
    ensure_namespace(client, "fargo-system").await;
    let (activator_process, activator) = start_activator().await;
    let extra = controller_flags(&activator, identity, flags);
    let controller = FargoProcess::new(spawn_controller_with(free_port(), free_port(), &extra));
    wait_until_leading(client, identity, 120).await;
    (activator_process, controller, activator)
}

/// The parts that serve functions, for all the tests of a test binary: one activator and one
/// controller pointed at it (its webhook left unregistered: functions without a profile need
/// none), which leads once any earlier controller has let go of the Lease.
pub async fn shared_function_stack(client: &Client) -> ActivatorAddrs {
    shared_function_stack_with(client, &[]).await
}

/// [`shared_function_stack`] with more flags for the controller (the first call's count).
pub async fn shared_function_stack_with(client: &Client, flags: &[String]) -> ActivatorAddrs {
    static IDENTITY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ensure_namespace(client, "fargo-system").await;
    let activator = shared_activator().await;
    let identity = IDENTITY.get_or_init(|| {
        let identity = format!("fargo-test-functions-{}", std::process::id());
        spawn_controller_for_the_process(&activator, &identity, flags);
        identity
    });
    wait_until_leading(client, identity, 120).await;
    activator
}

/// A controller for the whole test process, pointed at `activator`, with more `flags`; returns
/// once it leads.
pub async fn controller_for_the_process(
    client: &Client,
    activator: &ActivatorAddrs,
    identity: &str,
    flags: &[String],
) {
    ensure_namespace(client, "fargo-system").await;
    spawn_controller_for_the_process(activator, identity, flags);
    wait_until_leading(client, identity, 120).await;
}

/// Starts a controller for the whole process (webhook unregistered), pointed at `activator`.
fn spawn_controller_for_the_process(activator: &ActivatorAddrs, identity: &str, flags: &[String]) {
    let extra = controller_flags(activator, identity, flags);
    let (webhook_port, health_port) = (free_port(), free_port());
    spawn_for_the_process(move || spawn_controller_with(webhook_port, health_port, &extra));
}

/// The flags of a test's controller: `identity` in the election, its webhook unregistered,
/// pointed at `activator`, then `flags`.
fn controller_flags(activator: &ActivatorAddrs, identity: &str, flags: &[String]) -> Vec<String> {
    let mut extra = vec![
        "--identity".to_string(),
        identity.to_string(),
        "--webhook-register".into(),
        "false".into(),
    ];
    extra.extend(activator.controller_args());
    extra.extend(flags.iter().cloned());
    extra
}

/// Server-side applies a ServerlessFunction with `spec`.
pub async fn apply_function(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> fargo::api::ServerlessFunction {
    let object = serde_json::json!({
        "apiVersion": "fargo.dev/v1alpha1",
        "kind": "ServerlessFunction",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    Api::<fargo::api::ServerlessFunction>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying function {namespace}/{name}: {e}"))
}

/// `(status, reason, message)` of a condition of the function, once it has one.
pub async fn function_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let function = Api::<fargo::api::ServerlessFunction>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()??;
    let condition = function
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)?;
    Some((condition.status, condition.reason, condition.message))
}

/// Waits (up to `seconds`) for a condition of the function with this status and reason;
/// returns its message.
pub async fn wait_function_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    (type_, status, reason): (&str, &str, &str),
    seconds: u64,
) -> String {
    eventually(
        seconds,
        &format!("{namespace}/{name} {type_}={status} ({reason})"),
        || async move {
            let (s, r, message) = function_condition(client, namespace, name, type_).await?;
            (s == status && r == reason).then_some(message)
        },
    )
    .await
}

/// The function's standby pods (`scale.standby`) that are not being deleted and run their
/// placeholder.
pub async fn running_standby_pods(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Vec<k8s_openapi::api::core::v1::Pod> {
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), namespace)
        .list(&kube::api::ListParams::default().labels(&format!("fargo.dev/standby-of={name}")))
        .await
        .map(|list| list.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|status| status.container_statuses.as_ref())
                .is_some_and(|containers| {
                    containers.iter().any(|c| {
                        c.state
                            .as_ref()
                            .is_some_and(|state| state.running.is_some())
                    })
                })
        })
        .collect()
}

/// `spec.replicas` of the function's Deployment; `None` while there is none.
pub async fn function_replicas(client: &Client, namespace: &str, name: &str) -> Option<i32> {
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()??
        .spec?
        .replicas
}
