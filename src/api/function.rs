//! ServerlessFunction: an HTTP container that scales to zero and wakes on the first request.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A ServerlessFunction is handler code in a Lambda runtime (`runtime` + `handler` + `code`), a
/// Lambda container image (`image` + `package: Image`) or a container that serves HTTP on `port`
/// (`image`), fronted by the fargo activator: it scales to zero when idle, wakes on the first
/// request (the activator holds that request meanwhile), scales out with load, and can be fired
/// on a cron schedule.
// Printer columns repeat `type_`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fargo.dev",
    version = "v1alpha1",
    kind = "ServerlessFunction",
    namespaced,
    shortname = "fn",
    category = "fargo",
    status = "ServerlessFunctionStatus",
    derive = "PartialEq",
    doc = "A ServerlessFunction is handler code in a Lambda runtime, a Lambda container image or an HTTP container, behind the fargo activator: it scales to zero when idle, wakes on the first request and can fire on a cron schedule.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the function can serve requests"
    ),
    printcolumn(
        name = "Runtime",
        type_ = "string",
        json_path = ".spec.runtime",
        description = "Lambda runtime of handler code; empty for image functions"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Pods running now"
    ),
    printcolumn(
        name = "Invocations",
        type_ = "integer",
        json_path = ".status.usage.invocations",
        description = "Invocations metered since metering began"
    ),
    printcolumn(
        name = "GB-s",
        type_ = "number",
        json_path = ".status.usage.gbSeconds",
        description = "GB-seconds of invocations metered since metering began"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        description = "Where to send requests"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.image) != has(self.runtime)").message("set either image (a container image) or runtime with handler and code (handler code), not both"))]
#[x_kube(validation = Rule::new("has(self.runtime) == has(self.code)").message("runtime and code go together: code is the handler code the runtime runs (inline, configMap or s3)"))]
#[x_kube(validation = Rule::new("!has(self.runtime) || self.runtime == 'provided' || (has(self.handler) && size(self.handler) > 0)").message("handler is required with this runtime, e.g. app.handler (python3.11), index.handler (nodejs20.x), example.Hello::handleRequest (java17)"))]
#[x_kube(validation = Rule::new("!has(self.package) || has(self.image)").message("package applies to image functions: Http (the image serves HTTP on port) or Image (a Lambda container image)"))]
#[x_kube(validation = Rule::new("!has(self.layers) || size(self.layers) == 0 || has(self.runtime)").message("layers apply to handler code (runtime); a container image carries its own /opt"))]
#[x_kube(validation = Rule::new("!has(self.scale) || !has(self.scale.standby) || !self.scale.standby || (has(self.image) && (!has(self.package) || self.package == 'Http') && (!has(self.command) || size(self.command) == 0))").message("scale.standby applies to image functions that serve HTTP (package Http) with the image's own entrypoint: a pod's command cannot change once it runs, so set args rather than command"))]
pub struct ServerlessFunctionSpec {
    /// Container image: one that serves HTTP on `port` (`package: Http`, the default) or a
    /// Lambda container image whose entrypoint is an AWS runtime interface client
    /// (`package: Image`). Exclusive with `runtime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self.trim()) > 0").message("image must not be empty, e.g. registry.example/thumbnail:1.0"))]
    pub image: Option<String>,

    /// What kind of image `image` is: `Http` (default) serves HTTP on `port`; `Image` is a Lambda
    /// container image (built on an AWS Lambda base image or with a runtime interface client as
    /// its entrypoint), which fargo runs unmodified beside its Runtime API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Package>,

    /// Lambda runtime that runs `handler` from `code`: python3.11, nodejs20.x, java17, or
    /// provided (an executable `bootstrap` in the code, as Go and Rust functions use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,

    /// Handler as the runtime names it: `app.handler` (file app.py, function handler),
    /// `index.handler` (index.mjs or index.js), `example.Hello::handleRequest` (Java); passed to
    /// `provided` bootstraps as `_HANDLER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub handler: Option<String>,

    // The parts of the spec that are large and seldom set are boxed: the controller keeps
    // every function in memory, and a `None` box takes 8 bytes where the struct took its size.
    /// Handler code, unpacked into `/var/task` before the runtime starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Box<Code>>,

    /// Extra code bundles unpacked under `/opt` in order, later over earlier (Lambda layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub layers: Vec<Code>,

    /// Service account the function runs as: its execution identity. Its API token is mounted
    /// only when this is set (so cloud workload identity works as Lambda's execution role does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Secrets for pulling the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// When the node pulls the image: Always, IfNotPresent or Never; Kubernetes' default when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Size of the function's writable `/tmp`, 512Mi to 10Gi as Lambda's ephemeral storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('512Mi')) >= 0 && quantity(string(self)).compareTo(quantity('10Gi')) <= 0").message("ephemeralStorage must be a quantity between 512Mi and 10Gi, such as 1Gi"))]
    pub ephemeral_storage: Option<Quantity>,

    /// Entrypoint; the image's ENTRYPOINT when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// Arguments to the entrypoint; the image's CMD when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Environment variables of the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Sources of environment variables (ConfigMaps, Secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,

    /// TCP port the container serves HTTP on; for handler code and Lambda images, the port of
    /// fargo's in-pod Runtime API part that the activator talks to.
    #[serde(default = "default_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"))]
    pub port: i32,

    /// Memory of each instance, 128Mi to 10Gi. CPU is proportional to it (1769Mi = 1 vCPU, as
    /// Lambda) unless `resources` is given.
    #[serde(default = "default_memory")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('128Mi')) >= 0 && quantity(string(self)).compareTo(quantity('10Gi')) <= 0").message("memory must be a quantity between 128Mi and 10Gi, such as 512Mi"))]
    pub memory: Quantity,

    /// Explicit container resources; replaces what `memory` implies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Box<ResourceRequirements>>,

    /// Longest a request may take, including time held while the function wakes: 1s to 900s.
    #[serde(default = "default_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('900s')").message("timeout must be a duration between 1s and 900s, such as 30s"))]
    pub timeout: Duration,

    /// How many requests each instance takes at once.
    #[serde(default)]
    pub concurrency: Concurrency,

    /// Bounds of the autoscaler.
    #[serde(default)]
    pub scale: Scale,

    /// What invokes the function: HTTP through the activator, and cron schedules.
    #[serde(default)]
    pub triggers: Triggers,

    /// Asynchronous invocations (the Invoke API's `InvocationType: Event`): how often a failed
    /// event is retried, how long an event may wait, and where results go. Events are stored in
    /// NATS JetStream before they are accepted.
    #[serde(default, rename = "async")]
    pub asynchronous: Async,

    /// FargateProfile the function's pods run under (they carry its label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl ServerlessFunctionSpec {
    /// Whether the function is invoked through an AWS runtime interface client (handler code or
    /// a Lambda container image) rather than serving HTTP itself.
    pub fn uses_runtime_api(&self) -> bool {
        self.runtime.is_some() || self.package == Some(Package::Image)
    }

    /// Concurrency as it applies: Lambda runtimes take one invocation at a time per instance, so
    /// their `perInstance` and `target` default to 1.
    pub fn effective_concurrency(&self) -> Concurrency {
        let mut concurrency = self.concurrency.clone();
        if self.uses_runtime_api() && concurrency.per_instance.is_none() {
            concurrency.per_instance = Some(1);
            concurrency.target = concurrency.target.or(Some(1));
        }
        concurrency
    }
}

/// What kind of container image a function's `image` is.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Package {
    /// The image serves HTTP on `port`.
    Http,
    /// A Lambda container image: its entrypoint is an AWS runtime interface client.
    Image,
}

/// Lambda runtimes fargo has images for.
#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
pub enum Runtime {
    #[serde(rename = "python3.11")]
    Python311,
    #[serde(rename = "nodejs20.x")]
    Nodejs20,
    #[serde(rename = "java17")]
    Java17,
    #[serde(rename = "provided")]
    Provided,
}

impl Runtime {
    pub const ALL: [Runtime; 4] = [
        Runtime::Python311,
        Runtime::Nodejs20,
        Runtime::Java17,
        Runtime::Provided,
    ];

    /// The name as Lambda and `spec.runtime` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python311 => "python3.11",
            Runtime::Nodejs20 => "nodejs20.x",
            Runtime::Java17 => "java17",
            Runtime::Provided => "provided",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Runtime::ALL
            .into_iter()
            .find(|runtime| runtime.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Runtime::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown runtime {s:?}; known: {}", known.join(", "))
            })
    }
}

/// When the node pulls a function's image.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Where handler code (or a layer) comes from: exactly one of `inline`, `configMap`, `s3`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.inline) ? 1 : 0) + (has(self.configMap) ? 1 : 0) + (has(self.s3) ? 1 : 0) == 1").message("code takes exactly one of inline, configMap or s3"))]
pub struct Code {
    /// Files by name with their text, for small functions: at most 64 files of 256 KiB, and the
    /// whole function must fit in a ConfigMap (1 MiB), which fargo creates for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new(r"self.all(f, f.matches('^[-._a-zA-Z0-9]{1,253}$') && f != '.' && f != '..')").message("inline file names are plain names of letters, digits, '-', '_' and '.', such as app.py"))]
    #[x_kube(validation = Rule::new("self.all(f, size(self[f]) <= 262144)").message("inline files are at most 256 KiB; put larger code in a ConfigMap or an S3 zip"))]
    pub inline: Option<BTreeMap<String, String>>,

    /// A ConfigMap in the function's namespace whose keys are the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapCode>,

    /// A zip in an S3 bucket, as Lambda takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Code>,
}

/// A ConfigMap holding code files.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapCode {
    /// Name of the ConfigMap, in the function's namespace.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("configMap.name must name a ConfigMap"))]
    pub name: String,
}

/// A zip of code in an S3 bucket, fetched by the pod before the runtime starts from fargo's S3
/// endpoint (the controller's `--s3-endpoint`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct S3Code {
    /// Bucket name.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][-a-z0-9.]{1,61}[a-z0-9]$')").message("s3.bucket must be an S3 bucket name: 3 to 63 lower-case letters, digits, '-' and '.'"))]
    pub bucket: String,

    /// Object key of the zip.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,

    /// Secret in the function's namespace with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
    /// for the bucket; default the controller's `--s3-secret` (`fargo-s3`).
    #[schemars(length(max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

fn default_port() -> i32 {
    8080
}

fn default_memory() -> Quantity {
    Quantity("128Mi".into())
}

fn default_timeout() -> Duration {
    "60s".parse().expect("a valid duration literal")
}

fn default_idle_timeout() -> Duration {
    "60s".parse().expect("a valid duration literal")
}

/// Requests in flight per instance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.target) || !has(self.perInstance) || self.perInstance == 0 || self.target <= self.perInstance").message("concurrency.target must not exceed concurrency.perInstance"))]
pub struct Concurrency {
    /// Hard limit of requests in flight per instance; the activator queues the rest. 0 means
    /// unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("concurrency.perInstance must be 0 (unlimited) or more"))]
    pub per_instance: Option<i32>,

    /// Requests in flight per instance the autoscaler aims for; default 70% of perInstance, or
    /// 100 when perInstance is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("concurrency.target must be 0 (default) or more"))]
    pub target: Option<i32>,
}

/// Bounds of the autoscaler.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.max) || self.min <= self.max").message("scale.min must not exceed scale.max"))]
#[x_kube(validation = Rule::new("!has(self.initial) || (self.initial >= self.min && (!has(self.max) || self.initial <= self.max))").message("scale.initial must lie between scale.min and scale.max"))]
pub struct Scale {
    /// Fewest instances; 0 lets the function scale to zero.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("scale.min must be 0 or more"))]
    pub min: i32,

    /// Most instances; unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("scale.max must be at least 1"))]
    pub max: Option<i32>,

    /// Instances right after the function is created; default scale.min.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<i32>,

    /// Time without requests after which the function scales to zero (when min is 0).
    #[serde(default = "default_idle_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("scale.idleTimeout must be a duration of at least 1s, such as 60s"))]
    pub idle_timeout: Duration,

    /// Keep a standby pod while the function is at zero: a pod of the function, scheduled and
    /// started with its network, running a small placeholder in place of the function's
    /// container. The first request swaps the function's image into it, which skips
    /// scheduling, the pod's sandbox and its network set-up; the pod then becomes an instance
    /// like any other, and a new standby pod starts once the function is back at zero. The
    /// standby pod requests the function's CPU and memory while it waits. Image functions
    /// serving HTTP only, without command (set args instead).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
}

impl Default for Scale {
    fn default() -> Self {
        Self {
            min: 0,
            max: None,
            initial: None,
            idle_timeout: default_idle_timeout(),
            standby: false,
        }
    }
}

/// What invokes the function.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Triggers {
    /// HTTP requests through the activator.
    #[serde(default)]
    pub http: HttpTrigger,

    /// Cron schedules; each tick sends `body` to the function through the activator. Names are
    /// unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub schedules: Vec<Schedule>,

    /// Object-storage notifications: each matching object event (from an S3-compatible server
    /// that notifies the activator) invokes the function asynchronously with Lambda's S3 event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub storage: Vec<StorageTrigger>,

    /// NATS JetStream streams the function consumes in batches, as Lambda's event source
    /// mappings for SQS and Kinesis. Names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub queues: Vec<QueueTrigger>,
}

impl ServerlessFunctionSpec {
    /// Its storage and queue triggers as `status.triggers` names them, `(type, name)`: a
    /// bucket once however many triggers name it.
    pub fn trigger_names(&self) -> Vec<(&'static str, String)> {
        let mut names: Vec<(&'static str, String)> = vec![];
        for trigger in &self.triggers.storage {
            if !names.iter().any(|(_, bucket)| *bucket == trigger.bucket) {
                names.push(("Storage", trigger.bucket.clone()));
            }
        }
        names.extend(
            self.triggers
                .queues
                .iter()
                .map(|queue| ("Queue", queue.name.clone())),
        );
        names
    }
}

/// Object events of one bucket that invoke the function (an S3 bucket notification
/// configuration's `LambdaFunctionConfigurations` entry).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StorageTrigger {
    /// The bucket's name, as the S3 server names it in its notifications.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(r"self.matches('^[A-Za-z0-9._-]+$')").message("storage bucket must be a bucket name: letters, digits, '.', '-' and '_'"))]
    pub bucket: String,

    /// Event types, with AWS's wildcards: `ObjectCreated:*` (the default), `ObjectCreated:Put`,
    /// `ObjectRemoved:*`, `ObjectRemoved:Delete`, … An `s3:` prefix is accepted and ignored.
    #[serde(default = "default_storage_events")]
    #[schemars(length(min = 1, max = 16), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new(r"self.all(e, e.matches('^(s3:)?[A-Za-z]+:([*]|[A-Za-z]+)$'))").message("storage events must be S3 event types such as ObjectCreated:* or ObjectRemoved:Delete"))]
    pub events: Vec<String>,

    /// Only keys that start with this (the object key as written, not URL-encoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub prefix: Option<String>,

    /// Only keys that end with this, such as `.jpg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub suffix: Option<String>,
}

fn default_storage_events() -> Vec<String> {
    vec!["ObjectCreated:*".into()]
}

/// A JetStream stream the function consumes: messages are delivered in batches, one
/// invocation per batch, with Lambda's `Records[]` shape.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.maxBatchingWindow) >= duration('0s') && duration(self.maxBatchingWindow) <= duration('300s')").message("queues maxBatchingWindow must be a duration from 0s to 300s"))]
pub struct QueueTrigger {
    /// Name of the trigger, unique within the function: its durable consumer is
    /// `fargo_<namespace>_<function>_<name>`.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("queue trigger name must be a DNS label such as readings"))]
    pub name: String,

    /// The JetStream stream. fargo reads a stream only when the stream's metadata
    /// `fargo.dev/namespaces` lists the function's namespace (comma-separated, `*` and `?`
    /// wildcards): whoever runs the stream decides which tenants may read it. Streams named
    /// `FARGO_…` are fargo's own and never read.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(r"self.matches('^[A-Za-z0-9_-]+$') && !self.startsWith('FARGO_')").message("queue stream must be a JetStream stream name (letters, digits, - and _), not one of fargo's FARGO_ streams"))]
    pub stream: String,

    /// Only messages of this subject (NATS wildcards allowed); all of the stream's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("!self.contains(' ')").message("queue subject must be a NATS subject without spaces"))]
    pub subject: Option<String>,

    /// Most messages in one invocation: 1 to 10000.
    #[serde(default = "default_batch_size")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("queues batchSize must be from 1 to 10000"))]
    pub batch_size: i32,

    /// Longest a batch waits to fill before the function is invoked with what it has: 0s (the
    /// default: as soon as messages are there) to 300s.
    #[serde(default = "zero_duration")]
    pub max_batching_window: Duration,

    /// Where a new trigger starts: `new` (messages stored from now on, the default) or `all`
    /// (everything the stream holds).
    #[serde(default)]
    pub start_from: StartFrom,
}

fn default_batch_size() -> i32 {
    10
}

fn zero_duration() -> Duration {
    "0s".parse().expect("a valid duration literal")
}

/// Where a queue trigger's consumer starts.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// Messages stored after the consumer was made.
    #[default]
    New,
    /// Every message the stream holds.
    All,
}

/// HTTP requests through the activator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpTrigger {
    /// Whether the activator routes HTTP requests to the function.
    #[serde(default = "enabled")]
    pub enabled: bool,

    /// Who may call the function over HTTP: `None` (anyone who reaches the activator, the
    /// default) or `AWS_IAM` (requests signed with AWS Signature Version 4 by an access key
    /// allowed to invoke functions of this namespace, as Lambda function URLs).
    #[serde(default)]
    pub auth: HttpAuth,

    /// Host names routed to the function, besides `{function}.{namespace}.<domain>`: lower-case
    /// DNS names, not IP addresses. The activator's own names (its Service's), names under its
    /// domain and `localhost` are never routed to a function; a host and path that another
    /// function claimed first stay with it. Condition HostsAccepted reports either.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 253)))]
    #[x_kube(validation = Rule::new(r"self.all(h, h.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))").message("triggers.http.hosts must be lower-case DNS names such as shop.example.com, without port or wildcard"))]
    #[x_kube(validation = Rule::new(r"self.all(h, !h.matches('(^|\\.)([0-9]+|0x[0-9a-f]+)$'))").message("triggers.http.hosts must be DNS names, not IP addresses"))]
    pub hosts: Vec<String>,

    /// Path prefix the function is served under on its hosts.
    #[serde(default = "default_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("triggers.http.path must start with '/'"))]
    pub path: String,
}

/// How HTTP requests to a function are authenticated.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum HttpAuth {
    /// No authentication.
    #[default]
    None,
    /// AWS Signature Version 4 (service `lambda`), checked by the activator against its access
    /// keys.
    #[serde(rename = "AWS_IAM")]
    AwsIam,
}

impl Default for HttpTrigger {
    fn default() -> Self {
        Self {
            enabled: true,
            auth: HttpAuth::None,
            hosts: vec![],
            path: default_path(),
        }
    }
}

fn enabled() -> bool {
    true
}

fn default_path() -> String {
    "/".into()
}

/// A cron schedule that invokes the function.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Name of the schedule, unique within the function.
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 63").message("schedule name must be 1 to 63 characters"))]
    pub name: String,

    /// Five-field cron expression (`minute hour day-of-month month day-of-week`), such as
    /// `0 3 * * *`. Checked by the controller (condition SchedulesValid).
    pub cron: String,

    /// IANA time zone the cron expression is read in, such as `Europe/Paris`; default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,

    /// Body of the POST request sent at each tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Asynchronous invocations: retries, age limit and destinations (Lambda's
/// `EventInvokeConfig`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Async {
    /// Times an event is retried after the function returned an error: 0 to 2. Throttles and
    /// failures to reach the function are retried, with backoff, until `maxEventAge`.
    #[serde(default = "default_max_retries")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 2").message("async.maxRetries must be 0, 1 or 2"))]
    pub max_retries: i32,

    /// Longest an event may wait, from its acceptance to its last attempt: 60s to 6h. Older
    /// events go to `onFailure` with condition `EventAgeExceeded`.
    #[serde(default = "default_max_event_age")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('60s') && duration(self) <= duration('6h')").message("async.maxEventAge must be a duration between 60s and 6h, such as 1h"))]
    pub max_event_age: Duration,

    /// Wait before the first retry after a function error; each further retry waits twice as
    /// long (Lambda's ≈1 min, then ≈2 min). 1s to 1h.
    #[serde(default = "default_retry_delay")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('1h')").message("async.retryDelay must be a duration between 1s and 1h, such as 60s"))]
    pub retry_delay: Duration,

    /// Where the record of an event the function handled goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<Box<Destination>>,

    /// Where the record of an event that failed every attempt, or grew too old, goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Box<Destination>>,
}

impl Default for Async {
    fn default() -> Self {
        Self {
            max_retries: default_max_retries(),
            max_event_age: default_max_event_age(),
            retry_delay: default_retry_delay(),
            on_success: None,
            on_failure: None,
        }
    }
}

fn default_max_retries() -> i32 {
    2
}

fn default_max_event_age() -> Duration {
    "6h".parse().expect("a valid duration literal")
}

fn default_retry_delay() -> Duration {
    "60s".parse().expect("a valid duration literal")
}

/// Where an asynchronous invocation's record goes: exactly one of `function`, `url`, `subject`.
/// The record is Lambda's destination record (`version`, `timestamp`, `requestContext`,
/// `requestPayload`, `responseContext`, `responsePayload`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.function), has(self.url), has(self.subject)].filter(x, x).size() == 1").message("a destination is exactly one of function, url or subject"))]
pub struct Destination {
    /// Another ServerlessFunction of the same namespace, invoked asynchronously with the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$') && size(self) <= 253").message("destination function must be the name of a ServerlessFunction in the same namespace"))]
    pub function: Option<String>,

    /// An HTTP(S) URL the record is POSTed to (as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("destination url must be an http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,

    /// A NATS subject the record is published to. Subjects under `fargo.` and `$` (NATS's own)
    /// are refused: they carry fargo's and the server's own traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_-]+(\\\\.[A-Za-z0-9_-]+)*$') && !self.startsWith('fargo.') && self != 'fargo'").message("destination subject must be a NATS subject of plain tokens (letters, digits, - and _ separated by dots), not under fargo."))]
    #[schemars(length(max = 255))]
    pub subject: Option<String>,
}

/// What the controller and the activators observed of a function.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServerlessFunctionStatus {
    /// Where to send requests: through the fargo activator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// Instances that exist now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Instances ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Ready (the function can serve requests, also while scaled to zero), ScaledToZero,
    /// SchedulesValid, ProfileFound, HostsAccepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// When the activator last forwarded a request to the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_time: Option<Time>,

    /// Asynchronous events stored and not yet handled (waiting, being delivered, or waiting
    /// for a retry), as the activators last reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_events: Option<i64>,

    /// When the oldest of `queuedEvents` was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_queued_event: Option<Time>,

    /// Each storage and queue trigger as the activators last reported it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerStatus>,

    /// Metered use: invocations and GB-seconds since metering began, by hour and by day,
    /// brought up to date at most every 30 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<super::usage::FunctionUsage>,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One storage or queue trigger, as the activators see it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TriggerStatus {
    /// `Storage` or `Queue`.
    #[serde(rename = "type")]
    pub type_: String,

    /// The bucket of a storage trigger; the name of a queue trigger.
    pub name: String,

    /// `Receiving` (events arrived), `Waiting` (none yet), or why the trigger cannot work:
    /// `NoToken` (no storage token reaches the namespace), `StreamNotFound`, `StreamNotShared`,
    /// `ConsumerFailed`, `NatsUnavailable`.
    pub state: String,

    /// Details of `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Events (storage) or messages (queues) received by the activators since they started.
    #[serde(default)]
    pub events: i64,

    /// When the last one arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<Time>,

    /// Messages of the stream not yet handled (queue triggers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
}
