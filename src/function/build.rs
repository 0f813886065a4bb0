//! The Deployment and Service a function is made of, built from its spec alone.
//!
//! The Deployment is built without `spec.replicas`: the autoscaler comes to own that field
//! (through the `scale` subresource, field manager [`AUTOSCALER_MANAGER`]), and a server-side
//! apply naming it would then reset the count. The reconciler adds the figure only while the
//! field is still its own (see [`crate::replicas`]).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SecurityContext, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::api::{
    APP_NAME, FUNCTION_LABEL, MANAGED_BY_LABEL, PROFILE_LABEL, ServerlessFunction,
    ServerlessFunctionSpec,
};
use crate::caches::CachedService;
use crate::quantity::{QuantityError, parse_bytes};

use super::runtime_pod::{self, RuntimePodError, RuntimeSettings};

/// Name of the function's container in its pods.
pub const CONTAINER_NAME: &str = "function";
/// Name of the container port and of the Service port.
pub const HTTP_PORT_NAME: &str = "http";
/// Port of the function's Service.
pub const SERVICE_PORT: i32 = 80;
/// The `clusterIP` of a headless Service.
pub const HEADLESS: &str = "None";
/// Memory that buys one vCPU, as in Lambda.
pub const MEMORY_PER_VCPU: u64 = 1769 * 1024 * 1024;
/// Environment variable telling the container which port to serve on (as Knative does).
pub const PORT_ENV: &str = "PORT";
/// Longest a pod is given to finish its requests when it is stopped.
const MAX_TERMINATION_GRACE: Duration = Duration::from_secs(30);
/// Old ReplicaSets kept per function, for rollbacks; more is clutter at thousands of functions.
const REVISION_HISTORY_LIMIT: i32 = 3;

/// Why the children of a function cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("spec.memory: {0}")]
    Memory(#[source] QuantityError),
    #[error("the function lacks {0}; it was not read from the API server")]
    MissingMetadata(&'static str),
    #[error(transparent)]
    Runtime(#[from] RuntimePodError),
}

/// Labels of the function's Deployment and Service.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (FUNCTION_LABEL.to_string(), name.to_string()),
        (MANAGED_BY_LABEL.to_string(), APP_NAME.to_string()),
    ])
}

/// Labels that select the function's pods (Deployment selector, Service selector).
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(FUNCTION_LABEL.to_string(), name.to_string())])
}

/// Labels of the function's pods: its own, and the profile's so the webhook takes them.
pub fn pod_labels(name: &str, spec: &ServerlessFunctionSpec) -> BTreeMap<String, String> {
    let mut labels = labels(name);
    if let Some(profile) = &spec.profile {
        labels.insert(PROFILE_LABEL.to_string(), profile.clone());
    }
    labels
}

/// Whether `name` can name a Service and be a label value; `None` when it can, else why not.
pub fn name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (!valid).then(|| {
        format!(
            "the function's name {name:?} must also name its Service: at most 63 lower-case \
             letters, digits and '-', starting with a letter and not ending with '-'; recreate \
             the function under such a name"
        )
    })
}

/// Millicores of CPU for an instance with `memory_bytes` of memory: 1769Mi buys one vCPU,
/// rounded up to a whole millicore, at least 1m.
pub fn cpu_millis_for_memory(memory_bytes: u64) -> u64 {
    let per_vcpu = u128::from(MEMORY_PER_VCPU);
    let millis = (u128::from(memory_bytes) * 1000).div_ceil(per_vcpu);
    u64::try_from(millis).unwrap_or(u64::MAX).max(1)
}

/// Container resources implied by `memory`: memory and proportional CPU, requests = limits.
pub fn resources_for_memory(memory: &Quantity) -> Result<ResourceRequirements, QuantityError> {
    let cpu = Quantity(format!("{}m", cpu_millis_for_memory(parse_bytes(memory)?)));
    let amounts = BTreeMap::from([
        ("cpu".to_string(), cpu),
        ("memory".to_string(), memory.clone()),
    ]);
    Ok(ResourceRequirements {
        limits: Some(amounts.clone()),
        requests: Some(amounts),
        ..Default::default()
    })
}

/// Seconds a stopping pod gets: the request timeout, but no more than 30 s.
pub fn termination_grace_seconds(timeout: Duration) -> i64 {
    timeout.min(MAX_TERMINATION_GRACE).as_secs().max(1) as i64
}

/// Replicas of a newly created function: `scale.initial`, else `scale.min`, within the bounds.
pub fn initial_replicas(spec: &ServerlessFunctionSpec) -> i32 {
    let min = spec.scale.min.max(0);
    let initial = spec.scale.initial.unwrap_or(min).max(min);
    match spec.scale.max {
        Some(max) => initial.min(max.max(min)),
        None => initial,
    }
}

fn owner_reference(function: &ServerlessFunction) -> Result<OwnerReference, BuildError> {
    function
        .controller_owner_ref(&())
        .ok_or(BuildError::MissingMetadata("metadata.uid"))
}

fn child_metadata(function: &ServerlessFunction) -> Result<ObjectMeta, BuildError> {
    let name = function.name_any();
    Ok(ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(
            function
                .namespace()
                .ok_or(BuildError::MissingMetadata("metadata.namespace"))?,
        ),
        labels: Some(labels(&name)),
        owner_references: Some(vec![owner_reference(function)?]),
        ..Default::default()
    })
}

/// The environment: the spec's variables, the last of each name winning as in a pod (a list
/// with one name twice cannot be server-side applied), and `PORT` unless the spec sets it.
fn environment(spec: &ServerlessFunctionSpec) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = vec![];
    for var in &spec.env {
        env.retain(|existing| existing.name != var.name);
        env.push(var.clone());
    }
    if !env.iter().any(|var| var.name == PORT_ENV) {
        env.insert(
            0,
            EnvVar {
                name: PORT_ENV.to_string(),
                value: Some(spec.port.to_string()),
                value_from: None,
            },
        );
    }
    env
}

/// The function's Deployment, without `spec.replicas`.
pub fn deployment(
    function: &ServerlessFunction,
    settings: &RuntimeSettings,
) -> Result<Deployment, BuildError> {
    let name = function.name_any();
    let spec = &function.spec;
    let resources = match &spec.resources {
        Some(resources) => (**resources).clone(),
        None => resources_for_memory(&spec.memory).map_err(BuildError::Memory)?,
    };
    let mut container = Container {
        name: CONTAINER_NAME.to_string(),
        image: spec.image.clone(),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        args: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(environment(spec)),
        env_from: (!spec.env_from.is_empty()).then(|| spec.env_from.clone()),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.to_string()),
            container_port: spec.port,
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        // TCP, not HTTP: a function need not answer `GET /` with a success.
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(HTTP_PORT_NAME.to_string()),
                host: None,
            }),
            initial_delay_seconds: Some(0),
            period_seconds: Some(1),
            timeout_seconds: Some(1),
            success_threshold: Some(1),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pod = PodSpec {
        automount_service_account_token: Some(spec.service_account_name.is_some()),
        service_account_name: spec.service_account_name.clone(),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.clone()),
        // Thousands of Services in a namespace would otherwise become environment variables.
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(termination_grace_seconds(spec.timeout.into())),
        ..Default::default()
    };
    if spec.uses_runtime_api() {
        let memory_mib = parse_bytes(&spec.memory).map_err(BuildError::Memory)? / (1024 * 1024);
        let parts = runtime_pod::runtime_pod(&name, spec, memory_mib, settings, &mut container)?;
        pod.init_containers = Some(parts.init_containers);
        pod.volumes = Some(parts.volumes);
        // `pause` is process 1, so the runtime (which seldom handles SIGTERM, and as process 1
        // would ignore it) stops at once when the pod does, and the sidecar sees the runtime's
        // processes to report their peak memory. It cannot signal or trace them: another user.
        pod.share_process_namespace = Some(true);
    } else if let Some(size) = &spec.ephemeral_storage {
        // The image's own /tmp, sized as asked.
        pod.volumes = Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(size.clone()),
            }),
            ..Default::default()
        }]);
        container.volume_mounts = Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        }]);
    }
    pod.containers = vec![container];
    Ok(Deployment {
        metadata: child_metadata(function)?,
        spec: Some(DeploymentSpec {
            replicas: None,
            revision_history_limit: Some(REVISION_HISTORY_LIMIT),
            selector: LabelSelector {
                match_labels: Some(selector(&name)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(&name, spec)),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// The ConfigMap holding the function's inline code, when it has any.
pub fn code_config_map(function: &ServerlessFunction) -> Result<Option<ConfigMap>, BuildError> {
    let Some(mut config_map) = runtime_pod::inline_code_config_map(&function.spec) else {
        return Ok(None);
    };
    let mut metadata = child_metadata(function)?;
    metadata.name = Some(runtime_pod::code_config_map_name(&function.name_any()));
    config_map.metadata = metadata;
    Ok(Some(config_map))
}

/// The function's headless Service: port 80 (`http`) to the container's port, selecting the
/// function's pods. It is there for its EndpointSlices, which tell the activator where the ready
/// pods are. Requests reach a function through the activator, so a cluster IP would only cost an
/// address of the Service range and an API request per function, and a rule per function in every
/// node's Service proxy, and offer a way around the activator's limits and metering.
pub fn service(function: &ServerlessFunction) -> Result<Service, BuildError> {
    let name = function.name_any();
    Ok(Service {
        metadata: child_metadata(function)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            cluster_ip: Some(HEADLESS.to_string()),
            selector: Some(selector(&name)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.to_string()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::Int(function.spec.port)),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// Whether `service`, controlled by the function whose uid is `function_uid`, must be deleted
/// for [`service`] to be applied: it has a cluster IP (an earlier fargo made it so), which no
/// change can take away. A Service the function does not control is never deleted.
pub fn replace_with_headless(service: &CachedService, function_uid: &str) -> bool {
    let has_cluster_ip = service
        .cluster_ip
        .as_deref()
        .is_some_and(|ip| !ip.is_empty() && ip != HEADLESS);
    let controlled = service.meta.controller_uid.as_deref() == Some(function_uid);
    has_cluster_ip && controlled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(yaml: &str) -> ServerlessFunction {
        serde_yaml::from_str(yaml).expect("a test function")
    }

    const THUMBNAIL: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: ServerlessFunction
metadata: {name: thumbnail, namespace: payments-media, uid: 7c1f0d7e-0000-4000-8000-000000000001}
spec:
  image: registry.example/thumbnail:1.0
  port: 8080
  command: [/thumbnail]
  args: [--quality, "80"]
  env: [{name: QUALITY, value: "80"}]
  envFrom: [{secretRef: {name: thumbnail-keys}}]
  memory: 512Mi
  timeout: 45s
  concurrency: {perInstance: 10, target: 7}
  scale: {min: 0, max: 20, initial: 2, idleTimeout: 60s}
  profile: payments
"#;

    fn container(deployment: &Deployment) -> &Container {
        &deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    #[test]
    fn deployment_never_names_replicas() {
        let deployment = deployment(&function(THUMBNAIL), &RuntimeSettings::default()).unwrap();
        assert_eq!(deployment.spec.as_ref().unwrap().replicas, None);
        let json = serde_json::to_value(&deployment).unwrap();
        assert!(json["spec"].get("replicas").is_none(), "{json}");
    }

    #[test]
    fn children_are_labelled_and_owned_by_the_function() {
        let f = function(THUMBNAIL);
        for metadata in [
            deployment(&f, &RuntimeSettings::default())
                .unwrap()
                .metadata,
            service(&f).unwrap().metadata,
        ] {
            assert_eq!(metadata.name.as_deref(), Some("thumbnail"));
            assert_eq!(metadata.namespace.as_deref(), Some("payments-media"));
            let labels = metadata.labels.unwrap();
            assert_eq!(labels[FUNCTION_LABEL], "thumbnail");
            assert_eq!(labels[MANAGED_BY_LABEL], "fargo");
            let owners = metadata.owner_references.unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "ServerlessFunction");
            assert_eq!(owners[0].api_version, "fargo.dev/v1alpha1");
            assert_eq!(owners[0].name, "thumbnail");
            assert_eq!(owners[0].uid, "7c1f0d7e-0000-4000-8000-000000000001");
            assert_eq!(owners[0].controller, Some(true));
        }
    }

    #[test]
    fn pods_carry_the_function_and_profile_labels() {
        let deployment = deployment(&function(THUMBNAIL), &RuntimeSettings::default()).unwrap();
        let spec = deployment.spec.unwrap();
        assert_eq!(
            spec.selector.match_labels.unwrap(),
            BTreeMap::from([(FUNCTION_LABEL.to_string(), "thumbnail".to_string())])
        );
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels[FUNCTION_LABEL], "thumbnail");
        assert_eq!(labels[PROFILE_LABEL], "payments");
        assert_eq!(labels[MANAGED_BY_LABEL], "fargo");
    }

    #[test]
    fn pods_without_a_profile_get_no_profile_label() {
        let f = function(&THUMBNAIL.replace("  profile: payments\n", ""));
        let labels = deployment(&f, &RuntimeSettings::default())
            .unwrap()
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        assert!(!labels.contains_key(PROFILE_LABEL));
    }

    #[test]
    fn the_container_runs_the_spec() {
        let deployment = deployment(&function(THUMBNAIL), &RuntimeSettings::default()).unwrap();
        let c = container(&deployment);
        assert_eq!(c.name, CONTAINER_NAME);
        assert_eq!(c.image.as_deref(), Some("registry.example/thumbnail:1.0"));
        assert_eq!(c.command, Some(vec!["/thumbnail".to_string()]));
        assert_eq!(
            c.args,
            Some(vec!["--quality".to_string(), "80".to_string()])
        );
        assert_eq!(
            c.env_from.as_ref().unwrap()[0]
                .secret_ref
                .as_ref()
                .unwrap()
                .name,
            "thumbnail-keys"
        );
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!(port.name.as_deref(), Some("http"));
        assert_eq!(port.container_port, 8080);
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .allow_privilege_escalation,
            Some(false)
        );
        assert_eq!(
            c.security_context.as_ref().unwrap().run_as_non_root,
            None,
            "images may run as root"
        );
    }

    #[test]
    fn the_environment_tells_the_port_and_keeps_the_last_of_each_name() {
        let f = function(&THUMBNAIL.replace(
            r#"env: [{name: QUALITY, value: "80"}]"#,
            r#"env: [{name: QUALITY, value: "80"}, {name: MODE, value: a}, {name: QUALITY, value: "90"}]"#,
        ));
        let deployment = deployment(&f, &RuntimeSettings::default()).unwrap();
        let env: Vec<(String, Option<String>)> = container(&deployment)
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        assert_eq!(
            env,
            vec![
                ("PORT".to_string(), Some("8080".to_string())),
                ("MODE".to_string(), Some("a".to_string())),
                ("QUALITY".to_string(), Some("90".to_string())),
            ]
        );
        let own_port = function(&THUMBNAIL.replace(
            r#"env: [{name: QUALITY, value: "80"}]"#,
            r#"env: [{name: PORT, value: "9000"}]"#,
        ));
        let deployment = super::deployment(&own_port, &RuntimeSettings::default()).unwrap();
        let env = container(&deployment).env.as_ref().unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].value.as_deref(), Some("9000"));
    }

    #[test]
    fn readiness_is_a_tcp_probe_on_the_port_every_second() {
        let deployment = deployment(&function(THUMBNAIL), &RuntimeSettings::default()).unwrap();
        let probe = container(&deployment).readiness_probe.clone().unwrap();
        assert_eq!(
            probe.tcp_socket.unwrap().port,
            IntOrString::String("http".into())
        );
        assert_eq!(probe.period_seconds, Some(1));
        assert_eq!(probe.initial_delay_seconds, Some(0));
        assert!(probe.http_get.is_none());
    }

    #[test]
    fn pods_get_no_token_and_a_grace_period_capped_at_thirty_seconds() {
        let deployment = deployment(&function(THUMBNAIL), &RuntimeSettings::default()).unwrap();
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.termination_grace_period_seconds, Some(30));
        let quick = function(&THUMBNAIL.replace("timeout: 45s", "timeout: 10s"));
        let pod = super::deployment(&quick, &RuntimeSettings::default())
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(10));
    }

    #[test]
    fn cpu_is_proportional_to_memory_as_in_lambda() {
        let mib = 1024 * 1024;
        assert_eq!(cpu_millis_for_memory(1769 * mib), 1000);
        assert_eq!(cpu_millis_for_memory(512 * mib), 290, "289.4 rounds up");
        assert_eq!(cpu_millis_for_memory(128 * mib), 73);
        assert_eq!(cpu_millis_for_memory(10 * 1024 * mib), 5789);
        assert_eq!(cpu_millis_for_memory(1), 1, "never below 1m");
    }

    #[test]
    fn memory_sets_requests_equal_to_limits() {
        let deployment = deployment(&function(THUMBNAIL), &RuntimeSettings::default()).unwrap();
        let resources = container(&deployment).resources.clone().unwrap();
        let expected = BTreeMap::from([
            ("cpu".to_string(), Quantity("290m".into())),
            ("memory".to_string(), Quantity("512Mi".into())),
        ]);
        assert_eq!(resources.requests.unwrap(), expected);
        assert_eq!(resources.limits.unwrap(), expected);
        let full = resources_for_memory(&Quantity("1769Mi".into())).unwrap();
        assert_eq!(full.limits.unwrap()["cpu"], Quantity("1000m".into()));
    }

    #[test]
    fn explicit_resources_replace_what_memory_implies() {
        let f = function(&format!(
            "{THUMBNAIL}  resources: {{requests: {{cpu: 2, memory: 1Gi}}}}\n"
        ));
        let deployment = deployment(&f, &RuntimeSettings::default()).unwrap();
        let resources = container(&deployment).resources.clone().unwrap();
        assert_eq!(resources.limits, None);
        assert_eq!(resources.requests.unwrap()["cpu"], Quantity("2".into()));
    }

    #[test]
    fn the_service_is_headless_and_maps_port_80_to_the_container_port() {
        let service = service(&function(THUMBNAIL)).unwrap();
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            spec.selector.unwrap(),
            BTreeMap::from([(FUNCTION_LABEL.to_string(), "thumbnail".to_string())])
        );
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.name.as_deref(), Some("http"));
        assert_eq!(port.port, 80);
        assert_eq!(port.target_port, Some(IntOrString::Int(8080)));
    }

    #[test]
    fn only_a_service_of_the_function_with_a_cluster_ip_is_replaced() {
        let f = function(THUMBNAIL);
        let uid = f.uid().unwrap();
        let with_ip = |ip: Option<&str>, owner_uid: &str| {
            let mut service = service(&f).unwrap();
            service.spec.as_mut().unwrap().cluster_ip = ip.map(String::from);
            service.metadata.owner_references.as_mut().unwrap()[0].uid = owner_uid.into();
            CachedService::from(&service)
        };
        assert!(replace_with_headless(
            &with_ip(Some("10.96.0.12"), &uid),
            &uid
        ));
        assert!(!replace_with_headless(&with_ip(Some("None"), &uid), &uid));
        assert!(!replace_with_headless(&with_ip(None, &uid), &uid));
        assert!(!replace_with_headless(
            &with_ip(Some("10.96.0.12"), "another"),
            &uid
        ));
        let mut not_controller = service(&f).unwrap();
        not_controller.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.12".into());
        not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = Some(false);
        assert!(!replace_with_headless(
            &CachedService::from(&not_controller),
            &uid
        ));
    }

    #[test]
    fn children_need_an_object_read_from_the_api_server() {
        let f = function(&THUMBNAIL.replace(", uid: 7c1f0d7e-0000-4000-8000-000000000001", ""));
        assert!(matches!(
            deployment(&f, &RuntimeSettings::default()),
            Err(BuildError::MissingMetadata("metadata.uid"))
        ));
    }

    #[test]
    fn initial_replicas_default_to_min_and_stay_in_bounds() {
        let spec = |scale: &str| {
            let mut spec = function(THUMBNAIL).spec;
            spec.scale = serde_yaml::from_str(scale).expect("a test scale");
            spec
        };
        assert_eq!(initial_replicas(&spec("{min: 0}")), 0);
        assert_eq!(initial_replicas(&spec("{min: 2}")), 2);
        assert_eq!(initial_replicas(&spec("{min: 0, initial: 3}")), 3);
        assert_eq!(initial_replicas(&spec("{min: 0, max: 2, initial: 3}")), 2);
    }

    #[test]
    fn names_that_cannot_name_a_service_are_reported() {
        assert_eq!(name_problem("thumbnail"), None);
        assert_eq!(name_problem("resize-v2"), None);
        assert!(name_problem("2fast").is_some());
        assert!(name_problem("with.dot").is_some());
        assert!(name_problem(&"a".repeat(64)).is_some());
        assert!(name_problem("trailing-").is_some());
    }
}
