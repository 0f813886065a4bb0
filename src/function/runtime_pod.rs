//! The pod of a function invoked through AWS's Runtime API — handler code in a Lambda runtime,
//! or a Lambda container image — built from its spec and the controller's settings.
//!
//! ```text
//! initContainers: fetch-code     fargo fetch-code: code and layers into /var/task and /opt
//!                 runtime-api    fargo runtime-api, a native sidecar (restartPolicy: Always):
//!                                the Runtime API on 127.0.0.1:9001, the function's port to the
//!                                activator, probes on 9002
//! containers:     function       the runtime image (or the Lambda image) untouched: its runtime
//!                                interface client asks 127.0.0.1:9001 for work
//! ```
//!
//! The runtime container's liveness probe asks the sidecar, which fails it once an invocation
//! ran past the timeout: the kubelet restarts the runtime, as Lambda does. Its readiness is the
//! sidecar's word that a runtime client has asked for work. A runtime that fails to start leaves
//! the tail of its log as its termination message, which the Ready condition shows.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, Probe, ResourceRequirements, SecretKeySelector, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::ServerlessFunctionSpec;
use crate::api::function::{Code, Runtime};

/// Name of the sidecar serving the Runtime API.
pub const RUNTIME_API_CONTAINER: &str = "runtime-api";
/// The sidecar's binary in the fargo image.
pub const SIDECAR_BINARY: &str = "/usr/local/bin/fargo-runtime-api";
/// Name of the init container that fetches code.
pub const FETCH_CONTAINER: &str = "fetch-code";
/// Where the runtime interface client finds the Runtime API.
pub const RUNTIME_API_ADDR: &str = "127.0.0.1:9001";
/// Port of the sidecar's `/ready` and `/live`.
pub const PROBE_PORT: i32 = 9002;
/// Name of that port.
const PROBE_PORT_NAME: &str = "runtime-probe";
/// Where handler code is unpacked, as in Lambda.
pub const TASK_DIR: &str = "/var/task";
/// Where layers are unpacked, as in Lambda.
pub const OPT_DIR: &str = "/opt";
/// Where the code sources held in ConfigMaps are mounted for the fetcher: `<this>/<n>`.
const SOURCES_DIR: &str = "/fargo/sources";
/// Users of the parts fargo runs in the pod: the sidecar apart from the runtime, so that code
/// running in the function cannot signal or trace the part that measures it.
const SIDECAR_USER: i64 = 65533;
/// The user of fargo's runtime images and of the fetched code.
const RUNTIME_USER: i64 = 65532;
/// Lambda's default `/tmp`.
const DEFAULT_TMP: &str = "512Mi";

/// Where the controller takes the pieces of handler functions from (its flags).
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    /// fargo's own image: the Runtime API sidecar and the code fetcher run from it.
    pub fargo_image: String,
    /// The image of each runtime.
    pub runtime_images: BTreeMap<Runtime, String>,
    /// S3 endpoint that `code.s3` zips are fetched from, path-style.
    pub s3_endpoint: Option<String>,
    /// Secret in a function's namespace with the S3 credentials, unless `code.s3` names one.
    pub s3_secret: String,
    /// Region in function ARNs and `AWS_REGION`.
    pub region: String,
    /// What a standby pod runs until it is woken (`spec.scale.standby`): an image whose
    /// entrypoint ignores its arguments, listens on no port and exits on SIGTERM.
    pub standby_image: String,
}

impl RuntimeSettings {
    /// `fargo.dev/runtime-<runtime>:dev` for every runtime, as `tests/cluster/images.sh` builds
    /// them, unless `overrides` names another.
    pub fn images(overrides: &[(Runtime, String)]) -> BTreeMap<Runtime, String> {
        let mut images: BTreeMap<Runtime, String> = Runtime::ALL
            .into_iter()
            .map(|runtime| (runtime, format!("fargo.dev/runtime-{runtime}:dev")))
            .collect();
        images.extend(overrides.iter().cloned());
        images
    }
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            fargo_image: "fargo.dev/fargo:dev".into(),
            runtime_images: Self::images(&[]),
            s3_endpoint: None,
            s3_secret: "fargo-s3".into(),
            region: "us-east-1".into(),
            standby_image: "fargo.dev/standby:dev".into(),
        }
    }
}

/// Why a function's Runtime API pod cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RuntimePodError {
    #[error(
        "code comes from S3 but fargo has no S3 endpoint: set the controller's --s3-endpoint \
         (chart value s3.endpoint), or give the code inline or in a ConfigMap"
    )]
    NoS3Endpoint,
    #[error(
        "no image is configured for runtime {0}; set the controller's --runtime-image {0}=IMAGE"
    )]
    NoRuntimeImage(Runtime),
}

/// Name of the ConfigMap the controller keeps a function's inline code in.
pub fn code_config_map_name(function: &str) -> String {
    format!("{function}-code")
}

/// Every code source of the function in order: its code (if any), then its layers.
fn sources(spec: &ServerlessFunctionSpec) -> impl Iterator<Item = (SourceRole, usize, &Code)> {
    let code = spec
        .code
        .as_deref()
        .into_iter()
        .map(|code| (SourceRole::Code, 0, code));
    let layers = spec
        .layers
        .iter()
        .enumerate()
        .map(|(index, code)| (SourceRole::Layer, index, code));
    code.chain(layers)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SourceRole {
    Code,
    Layer,
}

impl SourceRole {
    /// Prefix of this source's keys in the inline ConfigMap, and of its volume's name.
    fn key_prefix(self, index: usize) -> String {
        match self {
            SourceRole::Code => "code".into(),
            SourceRole::Layer => format!("layer-{index}"),
        }
    }
}

/// The ConfigMap holding the function's inline code and inline layers, keyed
/// `<source>.<file>` (`code.app.py`, `layer-0.util.py`); `None` when nothing is inline.
pub fn inline_code(spec: &ServerlessFunctionSpec) -> Option<BTreeMap<String, String>> {
    let mut data = BTreeMap::new();
    for (role, index, code) in sources(spec) {
        for (file, text) in code.inline.iter().flatten() {
            data.insert(format!("{}.{file}", role.key_prefix(index)), text.clone());
        }
    }
    (!data.is_empty()).then_some(data)
}

/// The inline-code ConfigMap's body (metadata is the caller's).
pub fn inline_code_config_map(spec: &ServerlessFunctionSpec) -> Option<ConfigMap> {
    inline_code(spec).map(|data| ConfigMap {
        data: Some(data),
        ..Default::default()
    })
}

/// The parts of the pod a Runtime API function adds, around its `function` container.
pub struct RuntimePod {
    pub init_containers: Vec<Container>,
    pub volumes: Vec<Volume>,
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

fn env_from_secret(name: &str, secret: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: name.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn empty_dir(name: &str, size_limit: Option<Quantity>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit,
        }),
        ..Default::default()
    }
}

/// Hardened settings of the parts fargo runs in the pod.
fn fargo_security(user: i64) -> SecurityContext {
    SecurityContext {
        run_as_user: Some(user),
        run_as_group: Some(user),
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    }
}

fn small_resources(cpu: &str, memory: &str) -> ResourceRequirements {
    let amounts = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu.into())),
        ("memory".to_string(), Quantity(memory.into())),
    ]);
    ResourceRequirements {
        limits: Some(amounts.clone()),
        requests: Some(amounts),
        ..Default::default()
    }
}

/// The identity the sidecar and the runtime share: AWS's variables naming the function.
fn function_env(name: &str, memory_mib: u64, settings: &RuntimeSettings) -> Vec<EnvVar> {
    vec![
        env("AWS_LAMBDA_FUNCTION_NAME", name),
        env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mib.to_string()),
        env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        env("AWS_REGION", settings.region.clone()),
        env("AWS_DEFAULT_REGION", settings.region.clone()),
    ]
}

/// Sets up `container` (the function's, with its image, user environment and resources) as the
/// runtime container, and returns what the pod needs around it.
pub fn runtime_pod(
    name: &str,
    spec: &ServerlessFunctionSpec,
    memory_mib: u64,
    settings: &RuntimeSettings,
    container: &mut Container,
) -> Result<RuntimePod, RuntimePodError> {
    let mut volumes = vec![];
    let mut init_containers = vec![];

    // The code, fetched before anything else starts.
    if let Some(runtime) = spec.runtime {
        let image = settings
            .runtime_images
            .get(&runtime)
            .ok_or(RuntimePodError::NoRuntimeImage(runtime))?;
        container.image = Some(image.clone());
        // The runtime images take the handler as their argument, as Lambda's bootstraps do.
        if container.args.is_none() {
            container.args = spec.handler.clone().map(|handler| vec![handler]);
        }
        let (fetch, mut fetch_volumes) = fetch_container(name, spec, settings)?;
        init_containers.push(fetch);
        volumes.append(&mut fetch_volumes);
        volumes.push(empty_dir("task", None));
        let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
        mounts.push(mount("task", TASK_DIR, true));
        if !spec.layers.is_empty() {
            volumes.push(empty_dir("opt", None));
            mounts.push(mount("opt", OPT_DIR, true));
        }
        // fargo's runtime images need nothing written outside /tmp.
        container.security_context = Some(fargo_security(RUNTIME_USER));
    }
    volumes.push(empty_dir(
        "tmp",
        Some(
            spec.ephemeral_storage
                .clone()
                .unwrap_or_else(|| Quantity(DEFAULT_TMP.into())),
        ),
    ));
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(mount("tmp", "/tmp", false));

    // The sidecar, started (and listening) before the runtime.
    init_containers.push(sidecar(name, spec, memory_mib, settings));

    // The runtime container: AWS's variables after the user's, so the user cannot point the
    // runtime client elsewhere; probes through the sidecar; no port of its own.
    let mut runtime_env = container.env.take().unwrap_or_default();
    let mut reserved = function_env(name, memory_mib, settings);
    reserved.extend([
        env("AWS_LAMBDA_RUNTIME_API", RUNTIME_API_ADDR),
        env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        env_from_field("AWS_LAMBDA_LOG_STREAM_NAME", "metadata.name"),
        env("LAMBDA_TASK_ROOT", TASK_DIR),
        env("LAMBDA_RUNTIME_DIR", "/var/runtime"),
        env("TZ", ":UTC"),
    ]);
    if let Some(runtime) = spec.runtime {
        reserved.push(env("AWS_EXECUTION_ENV", format!("AWS_Lambda_{runtime}")));
    }
    if let Some(handler) = &spec.handler {
        reserved.push(env("_HANDLER", handler.clone()));
    }
    runtime_env.retain(|var| {
        !reserved.iter().any(|r| r.name == var.name) && var.name != super::build::PORT_ENV
    });
    runtime_env.extend(reserved);
    container.env = Some(runtime_env);
    container.ports = None;
    container.readiness_probe = Some(probe("/ready", None));
    container.liveness_probe = Some(probe("/live", Some(1)));
    container.termination_message_policy = Some("FallbackToLogsOnError".into());

    Ok(RuntimePod {
        init_containers,
        volumes,
    })
}

/// An HTTP probe of the sidecar every second, failing at the first miss.
fn probe(path: &str, grace: Option<i64>) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(PROBE_PORT),
            ..Default::default()
        }),
        initial_delay_seconds: Some(0),
        period_seconds: Some(1),
        timeout_seconds: Some(1),
        success_threshold: Some(1),
        failure_threshold: Some(1),
        // A timed-out runtime is replaced at once, not after the pod's grace period.
        termination_grace_period_seconds: grace,
        ..Default::default()
    }
}

fn sidecar(
    name: &str,
    spec: &ServerlessFunctionSpec,
    memory_mib: u64,
    settings: &RuntimeSettings,
) -> Container {
    let mut sidecar_env = function_env(name, memory_mib, settings);
    sidecar_env.extend([
        env(
            "FARGO_FUNCTION_TIMEOUT_MS",
            std::time::Duration::from(spec.timeout)
                .as_millis()
                .to_string(),
        ),
        env_from_field("FARGO_FUNCTION_NAMESPACE", "metadata.namespace"),
        env("FARGO_RUNTIME_LISTEN", format!("0.0.0.0:{}", spec.port)),
        env("FARGO_RUNTIME_API", RUNTIME_API_ADDR),
        env(
            "FARGO_RUNTIME_PROBE_LISTEN",
            format!("0.0.0.0:{PROBE_PORT}"),
        ),
    ]);
    Container {
        name: RUNTIME_API_CONTAINER.into(),
        image: Some(settings.fargo_image.clone()),
        // The sidecar alone, not the whole `fargo`: it runs in every function pod.
        command: Some(vec![SIDECAR_BINARY.into()]),
        env: Some(sidecar_env),
        ports: Some(vec![
            ContainerPort {
                name: Some(super::build::HTTP_PORT_NAME.into()),
                container_port: spec.port,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some(PROBE_PORT_NAME.into()),
                container_port: PROBE_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        // The kubelet starts the runtime only after this hook returns: by then the Runtime API
        // accepts connections, so the runtime client's first call finds it.
        lifecycle: Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        SIDECAR_BINARY.into(),
                        "--wait-for".into(),
                        RUNTIME_API_ADDR.into(),
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        restart_policy: Some("Always".into()),
        resources: Some(small_resources("100m", "32Mi")),
        security_context: Some(fargo_security(SIDECAR_USER)),
        ..Default::default()
    }
}

/// The init container that unpacks the code and layers, and the volumes its sources need.
fn fetch_container(
    name: &str,
    spec: &ServerlessFunctionSpec,
    settings: &RuntimeSettings,
) -> Result<(Container, Vec<Volume>), RuntimePodError> {
    let mut args = vec![
        "fetch-code".to_string(),
        "--into".into(),
        TASK_DIR.into(),
        "--opt".into(),
        OPT_DIR.into(),
    ];
    let mut volumes = vec![];
    let mut mounts = vec![mount("task", TASK_DIR, false)];
    if !spec.layers.is_empty() {
        mounts.push(mount("opt", OPT_DIR, false));
    }
    let mut s3_env = vec![];
    for (role, index, code) in sources(spec) {
        let flag = match role {
            SourceRole::Code => "--source",
            SourceRole::Layer => "--layer",
        };
        let prefix = role.key_prefix(index);
        let location = if let Some(files) = &code.inline {
            let volume = format!("source-{prefix}");
            volumes.push(Volume {
                name: volume.clone(),
                config_map: Some(ConfigMapVolumeSource {
                    name: code_config_map_name(name),
                    items: Some(
                        files
                            .keys()
                            .map(|file| KeyToPath {
                                key: format!("{prefix}.{file}"),
                                path: file.clone(),
                                mode: None,
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let path = format!("{SOURCES_DIR}/{prefix}");
            mounts.push(mount(&volume, &path, true));
            format!("dir:{path}")
        } else if let Some(config_map) = &code.config_map {
            let volume = format!("source-{prefix}");
            volumes.push(Volume {
                name: volume.clone(),
                config_map: Some(ConfigMapVolumeSource {
                    name: config_map.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let path = format!("{SOURCES_DIR}/{prefix}");
            mounts.push(mount(&volume, &path, true));
            format!("dir:{path}")
        } else if let Some(s3) = &code.s3 {
            let endpoint = settings
                .s3_endpoint
                .as_ref()
                .ok_or(RuntimePodError::NoS3Endpoint)?;
            if s3_env.is_empty() {
                let secret = s3.secret_name.as_deref().unwrap_or(&settings.s3_secret);
                s3_env = vec![
                    env("FARGO_S3_ENDPOINT", endpoint.clone()),
                    env("FARGO_S3_REGION", settings.region.clone()),
                    env_from_secret("AWS_ACCESS_KEY_ID", secret),
                    env_from_secret("AWS_SECRET_ACCESS_KEY", secret),
                ];
            }
            format!("s3:{}/{}", s3.bucket, s3.key)
        } else {
            continue;
        };
        args.push(flag.into());
        args.push(location);
    }
    let container = Container {
        name: FETCH_CONTAINER.into(),
        image: Some(settings.fargo_image.clone()),
        args: Some(args),
        env: (!s3_env.is_empty()).then_some(s3_env),
        volume_mounts: Some(mounts),
        resources: Some(small_resources("250m", "64Mi")),
        security_context: Some(fargo_security(RUNTIME_USER)),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    Ok((container, volumes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServerlessFunction;
    use k8s_openapi::api::core::v1::PodSpec;

    fn pod(
        yaml: &str,
        settings: &RuntimeSettings,
    ) -> Result<PodSpec, super::super::build::BuildError> {
        let function: ServerlessFunction = serde_yaml::from_str(&format!(
            "apiVersion: fargo.dev/v1alpha1\nkind: ServerlessFunction\n\
             metadata: {{name: hello, namespace: team-a, uid: 7c1f0d7e-0000-4000-8000-000000000002}}\n\
             spec:\n{}",
            yaml.lines().map(|l| format!("  {l}\n")).collect::<String>()
        ))
        .expect("a test function");
        let deployment = super::super::build::deployment(&function, settings)?;
        Ok(deployment.spec.unwrap().template.spec.unwrap())
    }

    const PYTHON: &str = "runtime: python3.11\nhandler: app.handler\n\
        code: {inline: {app.py: 'def handler(e, c): return e'}}\n\
        env: [{name: AWS_LAMBDA_RUNTIME_API, value: evil.example:80}, {name: MODE, value: a}]\n\
        memory: 256Mi\ntimeout: 3s";

    fn env_of<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
        container
            .env
            .iter()
            .flatten()
            .find(|var| var.name == name)
            .and_then(|var| var.value.as_deref())
    }

    #[test]
    fn a_handler_runs_in_its_runtime_image_beside_the_sidecar() {
        let pod = pod(PYTHON, &RuntimeSettings::default()).unwrap();
        let init = pod.init_containers.as_ref().unwrap();
        assert_eq!(
            init.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            [FETCH_CONTAINER, RUNTIME_API_CONTAINER],
            "the code is in place before the sidecar and the runtime start"
        );
        let sidecar = &init[1];
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        assert_eq!(sidecar.image.as_deref(), Some("fargo.dev/fargo:dev"));
        assert_eq!(env_of(sidecar, "FARGO_FUNCTION_TIMEOUT_MS"), Some("3000"));
        assert_eq!(
            env_of(sidecar, "FARGO_RUNTIME_LISTEN"),
            Some("0.0.0.0:8080")
        );
        let hook = sidecar
            .lifecycle
            .as_ref()
            .unwrap()
            .post_start
            .as_ref()
            .unwrap();
        assert_eq!(
            hook.exec.as_ref().unwrap().command.as_ref().unwrap(),
            &[SIDECAR_BINARY, "--wait-for", RUNTIME_API_ADDR].map(String::from)
        );
        assert_eq!(
            sidecar.command,
            Some(vec![SIDECAR_BINARY.to_string()]),
            "the sidecar alone, not the whole fargo"
        );
        let security = sidecar.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_user, Some(SIDECAR_USER));
        assert_ne!(
            SIDECAR_USER, RUNTIME_USER,
            "the function cannot signal its meter"
        );

        let function = &pod.containers[0];
        assert_eq!(
            function.image.as_deref(),
            Some("fargo.dev/runtime-python3.11:dev")
        );
        assert_eq!(function.args, Some(vec!["app.handler".to_string()]));
        assert_eq!(
            function.ports, None,
            "the sidecar serves the function's port"
        );
        assert_eq!(
            env_of(function, "AWS_LAMBDA_RUNTIME_API"),
            Some(RUNTIME_API_ADDR),
            "the user cannot point the runtime client elsewhere"
        );
        assert_eq!(env_of(function, "MODE"), Some("a"));
        assert_eq!(
            env_of(function, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
            Some("256")
        );
        assert_eq!(env_of(function, "_HANDLER"), Some("app.handler"));
        assert_eq!(env_of(function, "PORT"), None);
        let live = function.liveness_probe.as_ref().unwrap();
        assert_eq!(
            live.http_get.as_ref().unwrap().path.as_deref(),
            Some("/live")
        );
        assert_eq!(live.failure_threshold, Some(1));
        let ready = function.readiness_probe.as_ref().unwrap();
        assert_eq!(
            ready.http_get.as_ref().unwrap().port,
            IntOrString::Int(PROBE_PORT)
        );
        assert_eq!(
            function.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError"),
            "a runtime that fails to start leaves its last words for the Ready condition"
        );
        let mounts: Vec<_> = function
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.mount_path.as_str(), m.read_only == Some(true)))
            .collect();
        assert_eq!(mounts, [(TASK_DIR, true), ("/tmp", false)]);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.share_process_namespace,
            Some(true),
            "the runtime is not process 1, so SIGTERM stops it"
        );
    }

    #[test]
    fn inline_code_reaches_the_fetcher_through_the_functions_config_map() {
        let spec = pod(
            "runtime: python3.11\nhandler: app.handler\n\
             code: {inline: {app.py: a, util.py: b}}\n\
             layers: [{inline: {lib.py: c}}, {configMap: {name: shared}}]",
            &RuntimeSettings::default(),
        )
        .unwrap();
        let fetch = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            fetch.args.as_ref().unwrap(),
            &[
                "fetch-code",
                "--into",
                "/var/task",
                "--opt",
                "/opt",
                "--source",
                "dir:/fargo/sources/code",
                "--layer",
                "dir:/fargo/sources/layer-0",
                "--layer",
                "dir:/fargo/sources/layer-1",
            ]
            .map(String::from)
        );
        let code = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "source-code")
            .unwrap()
            .config_map
            .as_ref()
            .unwrap();
        assert_eq!(code.name, "hello-code");
        let items: Vec<_> = code
            .items
            .iter()
            .flatten()
            .map(|i| (i.key.as_str(), i.path.as_str()))
            .collect();
        assert_eq!(
            items,
            [("code.app.py", "app.py"), ("code.util.py", "util.py")]
        );

        let function: ServerlessFunction = serde_yaml::from_str(
            "apiVersion: fargo.dev/v1alpha1\nkind: ServerlessFunction\nmetadata: {name: hello}\n\
             spec: {runtime: python3.11, handler: app.handler, code: {inline: {app.py: a}},\n\
             layers: [{inline: {lib.py: c}}]}",
        )
        .unwrap();
        assert_eq!(
            inline_code(&function.spec).unwrap(),
            BTreeMap::from([
                ("code.app.py".to_string(), "a".to_string()),
                ("layer-0.lib.py".to_string(), "c".to_string()),
            ])
        );
    }

    #[test]
    fn s3_code_needs_an_endpoint_and_takes_its_credentials_from_a_secret() {
        let yaml = "runtime: provided\ncode: {s3: {bucket: code, key: go/hello.zip}}";
        assert!(matches!(
            pod(yaml, &RuntimeSettings::default()),
            Err(super::super::build::BuildError::Runtime(
                RuntimePodError::NoS3Endpoint
            ))
        ));
        let settings = RuntimeSettings {
            s3_endpoint: Some("http://s3.local:7070".into()),
            ..Default::default()
        };
        let spec = pod(yaml, &settings).unwrap();
        let fetch = &spec.init_containers.as_ref().unwrap()[0];
        assert!(
            fetch
                .args
                .as_ref()
                .unwrap()
                .ends_with(&["--source".to_string(), "s3:code/go/hello.zip".to_string()])
        );
        assert_eq!(
            env_of(fetch, "FARGO_S3_ENDPOINT"),
            Some("http://s3.local:7070")
        );
        let key = fetch
            .env
            .iter()
            .flatten()
            .find(|v| v.name == "AWS_SECRET_ACCESS_KEY")
            .and_then(|v| v.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .unwrap();
        assert_eq!(key.name, "fargo-s3");
        let function = &spec.containers[0];
        assert_eq!(
            function.image.as_deref(),
            Some("fargo.dev/runtime-provided:dev")
        );
        assert_eq!(function.args, None, "provided has no handler argument");
        assert_eq!(
            env_of(function, "AWS_ACCESS_KEY_ID"),
            None,
            "the code's key stays with the fetcher"
        );
    }

    #[test]
    fn a_lambda_image_runs_unmodified_beside_the_sidecar() {
        let spec = pod(
            "image: registry.example/resize:1\npackage: Image\nserviceAccountName: resizer\n\
             imagePullPolicy: Never\nephemeralStorage: 2Gi",
            &RuntimeSettings::default(),
        )
        .unwrap();
        let init = spec.init_containers.as_ref().unwrap();
        assert_eq!(init.len(), 1, "no code to fetch");
        assert_eq!(init[0].name, RUNTIME_API_CONTAINER);
        let function = &spec.containers[0];
        assert_eq!(function.image.as_deref(), Some("registry.example/resize:1"));
        assert_eq!(function.command, None);
        assert_eq!(function.args, None);
        assert_eq!(function.image_pull_policy.as_deref(), Some("Never"));
        assert_eq!(
            function.security_context.as_ref().unwrap().run_as_user,
            None
        );
        assert_eq!(
            env_of(function, "AWS_LAMBDA_RUNTIME_API"),
            Some(RUNTIME_API_ADDR)
        );
        assert_eq!(spec.service_account_name.as_deref(), Some("resizer"));
        assert_eq!(spec.automount_service_account_token, Some(true));
        let tmp = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "tmp")
            .unwrap();
        assert_eq!(
            tmp.empty_dir.as_ref().unwrap().size_limit,
            Some(Quantity("2Gi".into()))
        );
    }

    #[test]
    fn a_restricted_profile_admits_a_handlers_pod_as_fargo_builds_it() {
        use crate::api::FargateProfile;
        use crate::profile::pod_rules::{fargate_pod, missing_hardening, violations};
        use k8s_openapi::api::core::v1::Pod;
        let profile: FargateProfile = serde_yaml::from_str(
            "apiVersion: fargo.dev/v1alpha1\nkind: FargateProfile\nmetadata: {name: strict}\n\
             spec: {selectors: [{namespace: team-a}], podSecurity: Restricted}",
        )
        .unwrap();
        for yaml in [
            PYTHON,
            "runtime: provided\ncode: {configMap: {name: go-code}}",
        ] {
            let pod = Pod {
                spec: Some(pod(yaml, &RuntimeSettings::default()).unwrap()),
                ..Default::default()
            };
            assert_eq!(violations(&profile, &pod), vec![], "{yaml}");
            let hardened = fargate_pod(&profile, &pod, None);
            assert_eq!(missing_hardening(&profile, &hardened), vec![], "{yaml}");
        }
    }

    #[test]
    fn a_runtime_without_an_image_is_reported() {
        let settings = RuntimeSettings {
            runtime_images: BTreeMap::new(),
            ..Default::default()
        };
        assert!(matches!(
            pod(PYTHON, &settings),
            Err(super::super::build::BuildError::Runtime(
                RuntimePodError::NoRuntimeImage(Runtime::Python311)
            ))
        ));
    }
}
