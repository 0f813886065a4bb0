//! ServerlessFunction: an HTTP container that scales to zero and wakes on the first request.

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A ServerlessFunction is a container that serves HTTP on `port`, fronted by the fargo
/// activator: it scales to zero when idle, wakes on the first request (the activator holds that
/// request meanwhile), scales out with load, and can be fired on a cron schedule.
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
    doc = "A ServerlessFunction is an HTTP container behind the fargo activator that scales to zero when idle, wakes on the first request and can fire on a cron schedule.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the function can serve requests"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Pods running now"
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
pub struct ServerlessFunctionSpec {
    /// Container image that serves HTTP on `port`.
    #[x_kube(validation = Rule::new("size(self.trim()) > 0").message("image must not be empty, e.g. registry.example/thumbnail:1.0"))]
    pub image: String,

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

    /// TCP port the container serves HTTP on.
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
    pub resources: Option<ResourceRequirements>,

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

    /// FargateProfile the function's pods run under (they carry its label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
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
}

impl Default for Scale {
    fn default() -> Self {
        Self {
            min: 0,
            max: None,
            initial: None,
            idle_timeout: default_idle_timeout(),
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
}

/// HTTP requests through the activator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpTrigger {
    /// Whether the activator routes HTTP requests to the function.
    #[serde(default = "enabled")]
    pub enabled: bool,

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

impl Default for HttpTrigger {
    fn default() -> Self {
        Self {
            enabled: true,
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

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
