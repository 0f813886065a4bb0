use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fargo::activator::auth::InvokeAuth;
use fargo::telemetry;

/// fargo: Fargate profiles and serverless functions for any Kubernetes cluster.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, env = "FARGO_LOG_JSON", global = true)]
    log_json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the reconcilers, the autoscaler and the schedule trigger (leader-elected), and serve
    /// the admission webhook.
    Controller(Box<ControllerArgs>),
    /// Run the HTTP gateway in front of every function.
    Activator(ActivatorArgs),
    /// Run a handler function's sidecar: AWS's Runtime API for the runtime client, the
    /// function's HTTP port for the activator, and the probes.
    RuntimeApi(fargo::runtime::cli::RuntimeApiArgs),
    /// Fill a handler function's code (`/var/task`) and layers (`/opt`) from mounted ConfigMaps
    /// and zips in S3, then exit: the init container of handler functions. A failure exits 1
    /// with one line, `<source>: <reason>`, on stderr (and in --termination-log).
    FetchCode(FetchCodeArgs),
    /// Report metered use per namespace, function and profile, with an estimated cost.
    ///
    /// Reads the `status.usage` of ServerlessFunctions and FargateProfiles with the user's
    /// kubeconfig: one row per function and one per namespace under each profile.
    Usage(UsageArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into a directory.
    Crds {
        /// Directory to write `<crd name>.yaml` files into; stdout when absent.
        #[arg(long, env = "FARGO_CRDS_DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct ControllerArgs {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "FARGO_HEALTH_ADDR", default_value = "0.0.0.0:9090")]
    health_addr: SocketAddr,

    /// Namespace of the controller's Lease and webhook Secret (the pod's own namespace).
    #[arg(long, env = "FARGO_NAMESPACE", default_value = "fargo-system")]
    namespace: String,

    /// Namespace of the fargo activator, whose pods may always reach function pods.
    #[arg(
        long,
        env = "FARGO_ACTIVATOR_NAMESPACE",
        default_value = "fargo-system"
    )]
    activator_namespace: String,

    /// Namespace of the cluster DNS pods, the only DNS servers profiles' `allowDNS` opens
    /// port 53 to.
    #[arg(long, env = "FARGO_DNS_NAMESPACE", default_value = "kube-system")]
    dns_namespace: String,

    /// Labels of the cluster DNS pods in `--dns-namespace`, comma-separated `key=value` (CoreDNS
    /// carries k8s-app=kube-dns on most distributions).
    #[arg(
        long,
        env = "FARGO_DNS_POD_LABELS",
        default_value = "k8s-app=kube-dns",
        value_delimiter = ',',
        value_parser = label_pair
    )]
    dns_pod_labels: Vec<(String, String)>,

    /// Address of a node-local DNS cache (NodeLocal DNSCache, e.g. 169.254.20.10), also opened
    /// by `allowDNS`.
    #[arg(long, env = "FARGO_NODE_LOCAL_DNS")]
    node_local_dns: Option<std::net::IpAddr>,

    /// Identity in the leader election (the pod name); the host name when unset.
    #[arg(long, env = "FARGO_POD_NAME")]
    identity: Option<String>,

    /// Address the admission webhook listens on (TLS).
    #[arg(long, env = "FARGO_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    webhook_addr: SocketAddr,

    /// Out of cluster: the URL the API server calls the webhook at, e.g. https://127.0.0.1:8443.
    /// Unset: the webhook is reached through Service `--webhook-service`.
    #[arg(long, env = "FARGO_WEBHOOK_URL")]
    webhook_url: Option<String>,

    /// Service in front of the controller pods, in `--namespace`.
    #[arg(long, env = "FARGO_WEBHOOK_SERVICE", default_value = "fargo-webhook")]
    webhook_service: String,

    /// Directory with `tls.crt`, `tls.key` and `ca.crt` supplied by the user (cert-manager);
    /// unset: the controller generates a certificate and keeps it in `--webhook-secret`.
    #[arg(long, env = "FARGO_WEBHOOK_CERT_DIR")]
    webhook_cert_dir: Option<std::path::PathBuf>,

    /// Secret holding the generated webhook certificate, in `--namespace`.
    #[arg(
        long,
        env = "FARGO_WEBHOOK_SECRET",
        default_value = "fargo-webhook-tls"
    )]
    webhook_secret: String,

    /// Whether the controller applies the webhook configurations (with their caBundle) itself.
    #[arg(long, env = "FARGO_WEBHOOK_REGISTER", default_value_t = true, action = clap::ArgAction::Set)]
    webhook_register: bool,

    /// Base URL of the activator Service: function URLs are `<this>/{namespace}/{function}/`,
    /// and schedules send their requests there.
    #[arg(
        long,
        env = "FARGO_ACTIVATOR_URL",
        default_value = "http://fargo-activator.fargo-system.svc"
    )]
    activator_url: String,

    /// Activator Service (in `--activator-namespace`) whose pods the autoscaler scrapes, and
    /// whose names no function may claim in `triggers.http.hosts`.
    #[arg(
        long,
        env = "FARGO_ACTIVATOR_SERVICE",
        default_value = "fargo-activator"
    )]
    activator_service: String,

    /// The activator's `--domain`: no function may claim a name under it.
    #[arg(long, env = "FARGO_ACTIVATOR_DOMAIN", default_value = "fargo.local")]
    activator_domain: String,

    /// Port of the activators' `/stats`, when their Service has no port named `health`.
    #[arg(long, env = "FARGO_ACTIVATOR_STATS_PORT", default_value_t = 9091)]
    activator_stats_port: u16,

    /// Out of cluster: `/stats` URLs of the activators to scrape, comma-separated (e.g.
    /// http://127.0.0.1:9091/stats), instead of the pods behind `--activator-service`.
    #[arg(long, env = "FARGO_ACTIVATOR_STATS_URLS", value_delimiter = ',')]
    activator_stats_url: Vec<String>,

    /// fargo's own image, which handler functions' pods run their Runtime API sidecar and code
    /// fetcher from.
    #[arg(long, env = "FARGO_IMAGE", default_value = "fargo.dev/fargo:dev")]
    fargo_image: String,

    /// Image of a Lambda runtime, `RUNTIME=IMAGE` (e.g.
    /// `python3.11=registry.example/runtime-python3.11:1`), repeated or comma-separated; runtimes
    /// not named use `fargo.dev/runtime-<runtime>:dev`.
    #[arg(long, env = "FARGO_RUNTIME_IMAGES", value_delimiter = ',', value_parser = runtime_image)]
    runtime_image: Vec<(fargo::api::function::Runtime, String)>,

    /// What the standby pods of functions with `scale.standby` run until woken: fargo's
    /// `fargo-standby` image.
    #[arg(
        long,
        env = "FARGO_STANDBY_IMAGE",
        default_value = "fargo.dev/standby:dev"
    )]
    standby_image: String,

    /// S3 endpoint (path-style) that functions' `code.s3` zips are fetched from, e.g.
    /// http://versitygw.fargo-system.svc:7070.
    #[arg(long, env = "FARGO_S3_ENDPOINT")]
    s3_endpoint: Option<String>,

    /// Secret in each function's namespace with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
    /// for `code.s3`, unless the function names its own.
    #[arg(long, env = "FARGO_S3_SECRET", default_value = "fargo-s3")]
    s3_secret: String,

    /// Region in function ARNs and the functions' `AWS_REGION`.
    #[arg(long, env = "FARGO_REGION", default_value = "us-east-1")]
    region: String,
}

impl ControllerArgs {
    fn into_config(self) -> fargo::controller::Config {
        let identity = self.identity.unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| format!("fargo-{}", std::process::id()))
        });
        let activator_names = fargo::api::routes::ActivatorNames::new(
            &self.activator_service,
            &self.activator_namespace,
            &self.activator_domain,
        );
        let stats = if self.activator_stats_url.is_empty() {
            fargo::autoscaler::StatsSource::Service {
                namespace: self.activator_namespace.clone(),
                name: self.activator_service,
                fallback_port: self.activator_stats_port,
            }
        } else {
            fargo::autoscaler::StatsSource::Urls(self.activator_stats_url)
        };
        fargo::controller::Config {
            health_addr: self.health_addr,
            namespace: self.namespace.clone(),
            activator_namespace: self.activator_namespace,
            dns: fargo::profile::ClusterDns {
                namespace: self.dns_namespace,
                pod_labels: self.dns_pod_labels.into_iter().collect(),
                node_local: self.node_local_dns,
            },
            identity,
            webhook: fargo::webhook::Config {
                addr: self.webhook_addr,
                url: self.webhook_url,
                service_namespace: self.namespace,
                service_name: self.webhook_service,
                cert_dir: self.webhook_cert_dir,
                secret_name: self.webhook_secret,
                register: self.webhook_register,
            },
            activator_url: self.activator_url,
            activator_names,
            stats,
            runtimes: fargo::function::runtime_pod::RuntimeSettings {
                fargo_image: self.fargo_image,
                runtime_images: fargo::function::runtime_pod::RuntimeSettings::images(
                    &self.runtime_image,
                ),
                s3_endpoint: self.s3_endpoint,
                s3_secret: self.s3_secret,
                region: self.region,
                standby_image: self.standby_image,
            },
        }
    }
}

#[derive(clap::Args, Debug)]
struct ActivatorArgs {
    /// Address of `/healthz`, `/readyz`, `/metrics` and `/stats`.
    #[arg(long, env = "FARGO_HEALTH_ADDR", default_value = "0.0.0.0:9091")]
    health_addr: SocketAddr,

    /// Address the proxy listens on.
    #[arg(long, env = "FARGO_ACTIVATOR_ADDR", default_value = "0.0.0.0:8080")]
    addr: SocketAddr,

    /// Functions are also reached as `{function}.{namespace}.<domain>`; no function may claim a
    /// name under it in `triggers.http.hosts`.
    #[arg(long, env = "FARGO_DOMAIN", default_value = "fargo.local")]
    domain: String,

    /// The activator's own Service, in `--service-namespace`: no function may claim its names
    /// (`<service>`, `<service>.<namespace>`, `<service>.<namespace>.svc[.<cluster domain>]`).
    #[arg(long, env = "FARGO_SERVICE_NAME", default_value = "fargo-activator")]
    service_name: String,

    /// Namespace of the activator's Service (the pod's own namespace).
    #[arg(long, env = "FARGO_NAMESPACE", default_value = "fargo-system")]
    service_namespace: String,

    /// Requests each function may hold while it has no free pod; more get 429.
    #[arg(long, env = "FARGO_QUEUE_DEPTH", default_value_t = 100)]
    queue_depth: usize,

    /// Requests the activator may hold at once, all functions together; more get 503 with
    /// Retry-After. Keep it below --max-connections: a held HTTP/1 request keeps its connection.
    #[arg(long, env = "FARGO_MAX_HELD_REQUESTS", default_value_t = 1024)]
    max_held_requests: usize,

    /// Client connections open at once. At the cap, the connection idle longest (for a second at
    /// least) is closed for a new one; until one is, new connections wait in the listen backlog.
    #[arg(long, env = "FARGO_MAX_CONNECTIONS", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// How long a client connection may go without a request in progress (a new one until its
    /// first request's headers are complete, a kept-alive one until its next request's), and
    /// how long it may take none of a response's bytes.
    #[arg(long, env = "FARGO_HEADER_READ_TIMEOUT", default_value = "30s",
          value_parser = positive_duration)]
    header_read_timeout: kube::core::Duration,

    /// Largest request line and headers, in bytes (at least 8192); larger requests get 431.
    #[arg(long, env = "FARGO_MAX_HEADER_BYTES", default_value_t = 32768,
          value_parser = clap::value_parser!(u32).range(8192..))]
    max_header_bytes: u32,

    /// Threads that serve client connections, each running its connections and their
    /// connections to pods on a runtime of its own; 0 serves them on the main runtime, with the
    /// activator's other work. Default: one per CPU the process may use.
    #[arg(long, env = "FARGO_PROXY_THREADS")]
    proxy_threads: Option<usize>,

    /// After SIGTERM, how long to keep serving while not ready (so Service endpoints drop the
    /// pod) before no longer accepting connections.
    #[arg(long, env = "FARGO_DRAIN_DELAY", default_value = "5s")]
    drain_delay: kube::core::Duration,

    /// Whether invocations are metered (`status.usage`, `fargo usage`). Off, the activator
    /// reports no usage; for a cluster that bills nothing, and for measuring what metering
    /// costs.
    #[arg(long, env = "FARGO_METERING", default_value_t = true, action = clap::ArgAction::Set)]
    metering: bool,

    /// NATS server(s) whose JetStream stores asynchronous invocations, e.g.
    /// nats://fargo-nats.fargo-system.svc:4222 (comma-separated for several). Without it,
    /// `Event` invocations are refused with 503.
    #[arg(long, env = "FARGO_NATS_URL")]
    nats_url: Option<String>,

    /// Copies JetStream keeps of the event stream: 1, or 3 on a 3-node NATS cluster.
    #[arg(long, env = "FARGO_NATS_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    nats_replicas: u8,

    /// Whether the Lambda API (`/2015-03-31/functions/…`) asks for AWS Signature Version 4
    /// signatures by keys of `--invoke-keys-secret`. Functions with
    /// `triggers.http.auth: AWS_IAM` are checked either way.
    #[arg(long, env = "FARGO_INVOKE_AUTH", value_enum, default_value_t = InvokeAuth::AwsIam)]
    invoke_auth: InvokeAuth,

    /// Secret in the activator's namespace holding the access keys: each data key is an access
    /// key id, its value JSON `{"secretAccessKey": "…", "namespaces": ["team-a", "team-*"]}`.
    #[arg(
        long,
        env = "FARGO_INVOKE_KEYS_SECRET",
        default_value = "fargo-invoke-keys"
    )]
    invoke_keys_secret: String,

    /// Secret in the activator's namespace holding the tokens S3-compatible servers post
    /// notifications to `/_fargo/storage/events` with: each data key names a token, its value
    /// is JSON `{"token": "…", "namespaces": ["photos", "media-*"]}` — the namespaces whose
    /// functions that token's notifications may invoke.
    #[arg(
        long,
        env = "FARGO_STORAGE_TOKENS_SECRET",
        default_value = "fargo-storage-tokens"
    )]
    storage_tokens_secret: String,

    /// Region in function ARNs; signatures must name it too.
    #[arg(long, env = "FARGO_REGION", default_value = "us-east-1")]
    region: String,

    /// Namespace of a plain function name in the Lambda API when the caller's key names no
    /// default (or the API asks for no signatures).
    #[arg(long, env = "FARGO_DEFAULT_NAMESPACE", default_value = "default")]
    default_namespace: String,
}

impl ActivatorArgs {
    fn into_config(self) -> fargo::activator::Config {
        fargo::activator::Config {
            addr: self.addr,
            health_addr: self.health_addr,
            domain: self.domain,
            service_name: self.service_name,
            service_namespace: self.service_namespace,
            queue_depth: self.queue_depth,
            max_held_requests: self.max_held_requests,
            max_connections: self.max_connections as usize,
            header_read_timeout: self.header_read_timeout.into(),
            max_header_bytes: self.max_header_bytes as usize,
            proxy_threads: self.proxy_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            drain_delay: self.drain_delay.into(),
            metering: self.metering,
            nats_url: self.nats_url,
            nats_replicas: usize::from(self.nats_replicas),
            invoke_auth: self.invoke_auth,
            invoke_keys_secret: self.invoke_keys_secret,
            storage_tokens_secret: self.storage_tokens_secret,
            region: self.region,
            default_namespace: self.default_namespace,
        }
    }
}

#[derive(clap::Args, Debug)]
struct UsageArgs {
    /// Only this namespace: its functions, and the profile rows of its pods.
    #[arg(long, short = 'n', env = "FARGO_USAGE_NAMESPACE")]
    namespace: Option<String>,

    /// Use since then: a duration back from now (24h, 90m, 7d) or an RFC 3339 instant
    /// (2026-11-01T00:00:00Z). The status keeps 48 hours by hour and 32 days by day, and hours
    /// or days that overlap the window count whole. Without it: since metering began.
    #[arg(long, env = "FARGO_USAGE_SINCE", value_name = "WHEN")]
    since: Option<fargo::usage::report::Since>,

    /// How to print the report.
    #[arg(long, short = 'o', env = "FARGO_USAGE_OUTPUT", value_enum,
          default_value_t = fargo::usage::report::Output::Table)]
    output: fargo::usage::report::Output,

    /// Rate card, YAML or JSON, overriding any of the default prices (AWS us-east-1,
    /// 2025-08-01): date, region, currency, requestPrice, gbSecondPrice, initGbSecondPrice,
    /// provisionedGbSecondPrice, fargateVcpuSecondPrice, fargateGbSecondPrice (per request,
    /// GB-second or vCPU-second).
    #[arg(long, env = "FARGO_USAGE_RATES", value_name = "FILE")]
    rates: Option<std::path::PathBuf>,
}

impl UsageArgs {
    fn into_options(self) -> fargo::usage::report::Options {
        fargo::usage::report::Options {
            namespace: self.namespace,
            since: self.since,
            output: self.output,
            rates: self.rates,
        }
    }
}

/// Runs `usage`: the report on stdout.
async fn usage(args: UsageArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let text = fargo::usage::report::report(&args.into_options()).await?;
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("writing the report")
}

#[derive(clap::Args, Debug)]
struct FetchCodeArgs {
    /// Directory the code goes into.
    #[arg(long, env = "FARGO_CODE_DIR", default_value = "/var/task")]
    into: std::path::PathBuf,

    /// The code, in order, later over earlier: `dir:<path>[;executable=<file>,...]` (a mounted
    /// ConfigMap: its keys, with `bootstrap` and the listed files executable) or
    /// `s3:<bucket>/<key>` (a zip). Repeat the flag; in the env var, one per line.
    #[arg(long = "source", env = "FARGO_CODE_SOURCES", value_delimiter = '\n')]
    sources: Vec<fargo::fetch::Source>,

    /// Directory the layers go into.
    #[arg(long, env = "FARGO_LAYER_DIR", default_value = "/opt")]
    opt: std::path::PathBuf,

    /// The layers, in order, later over earlier, with the syntax of --source. Repeat the flag;
    /// in the env var, one per line.
    #[arg(long = "layer", env = "FARGO_LAYER_SOURCES", value_delimiter = '\n')]
    layers: Vec<fargo::fetch::Source>,

    /// S3 endpoint, e.g. http://versitygw.fargo-system.svc:7070; buckets are addressed
    /// path-style.
    #[arg(long, env = "FARGO_S3_ENDPOINT")]
    s3_endpoint: Option<url::Url>,

    /// Region requests are signed for.
    #[arg(long, env = "FARGO_S3_REGION", default_value = "us-east-1")]
    s3_region: String,

    /// Access key of S3 requests; without it they are sent unsigned.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    s3_access_key_id: Option<String>,

    /// Secret key of S3 requests.
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        requires = "s3_access_key_id"
    )]
    s3_secret_access_key: Option<String>,

    /// Session token of temporary credentials.
    #[arg(
        long,
        env = "AWS_SESSION_TOKEN",
        hide_env_values = true,
        requires = "s3_secret_access_key"
    )]
    s3_session_token: Option<String>,

    /// How long one download may take, connecting included.
    #[arg(long, env = "FARGO_S3_TIMEOUT", default_value = "120s", value_parser = positive_duration)]
    s3_timeout: kube::core::Duration,

    /// Largest zip downloaded, in bytes.
    #[arg(long, env = "FARGO_MAX_ZIP_BYTES",
          default_value_t = fargo::fetch::DEFAULT_MAX_ZIP_BYTES)]
    max_zip_bytes: u64,

    /// Most bytes unpacked, code and layers together.
    #[arg(long, env = "FARGO_MAX_UNPACKED_BYTES",
          default_value_t = fargo::fetch::DEFAULT_MAX_UNPACKED_BYTES)]
    max_unpacked_bytes: u64,

    /// Most entries in one zip.
    #[arg(long, env = "FARGO_MAX_ENTRIES", default_value_t = fargo::fetch::DEFAULT_MAX_ENTRIES)]
    max_entries: usize,

    /// File the failure line is also written to: the container's terminationMessagePath
    /// (/dev/termination-log in a pod).
    #[arg(long, env = "FARGO_TERMINATION_LOG")]
    termination_log: Option<std::path::PathBuf>,
}

impl FetchCodeArgs {
    fn into_config(self) -> anyhow::Result<fargo::fetch::Config> {
        if self.sources.is_empty() && self.layers.is_empty() {
            anyhow::bail!("nothing to fetch: give --source or --layer");
        }
        let credentials = match (self.s3_access_key_id, self.s3_secret_access_key) {
            (Some(key), Some(secret)) => Some(match self.s3_session_token {
                Some(token) => rusty_s3::Credentials::new_with_token(key, secret, token),
                None => rusty_s3::Credentials::new(key, secret),
            }),
            (Some(_), None) => {
                anyhow::bail!("AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY")
            }
            _ => None,
        };
        let s3 = self.s3_endpoint.map(|endpoint| fargo::fetch::S3Config {
            endpoint,
            region: self.s3_region,
            credentials,
            timeout: self.s3_timeout.into(),
            max_zip_bytes: self.max_zip_bytes,
        });
        Ok(fargo::fetch::Config {
            task_dir: self.into,
            sources: self.sources,
            opt_dir: self.opt,
            layers: self.layers,
            s3,
            max_unpacked_bytes: self.max_unpacked_bytes,
            max_entries: self.max_entries,
        })
    }
}

/// Runs `fetch-code`; a failure is one line on stderr and in the termination log, exit 1.
async fn fetch_code(args: FetchCodeArgs) -> ! {
    let termination_log = args.termination_log.clone();
    let outcome = match args.into_config() {
        Ok(config) => fargo::fetch::run(config)
            .await
            .map_err(|error| error.to_string()),
        Err(error) => Err(format!("fetch-code: {error}")),
    };
    match outcome {
        Ok(()) => std::process::exit(0),
        Err(line) => {
            eprintln!("{line}");
            if let Some(path) = termination_log {
                let _ = std::fs::write(path, &line);
            }
            std::process::exit(1)
        }
    }
}

/// A duration longer than zero.
fn positive_duration(text: &str) -> Result<kube::core::Duration, String> {
    let duration: kube::core::Duration = text.parse().map_err(|error| format!("{error}"))?;
    if duration.is_negative() || std::time::Duration::from(duration).is_zero() {
        return Err(format!(
            "{text} would close every connection at once; give a time above 0s"
        ));
    }
    Ok(duration)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The sidecar of a handler function serves one runtime at a time: one thread does, with
    // less memory and no wake-ups across threads.
    let mut runtime = match cli.command {
        Command::RuntimeApi(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds { out_dir } => print_crds(out_dir),
        Command::Usage(args) => usage(args).await,
        Command::Controller(args) => {
            telemetry::init_logging(cli.log_json);
            let shutdown = telemetry::shutdown_on_signal().context("installing signal handlers")?;
            let client = connect().await?;
            fargo::controller::run(client, args.into_config(), shutdown)
                .await
                .context("the controller failed")
        }
        Command::FetchCode(args) => {
            telemetry::init_logging(cli.log_json);
            fetch_code(args).await
        }
        Command::Activator(args) => {
            telemetry::init_logging(cli.log_json);
            let shutdown = telemetry::shutdown_on_signal().context("installing signal handlers")?;
            let client = connect().await?;
            fargo::activator::run(client, args.into_config(), shutdown)
                .await
                .context("the activator failed")
        }
        Command::RuntimeApi(args) => {
            telemetry::init_logging(cli.log_json);
            let shutdown = telemetry::shutdown_on_signal().context("installing signal handlers")?;
            fargo::runtime::run(args.into_config(), shutdown)
                .await
                .context("the runtime API sidecar failed")
        }
    }
}

/// `RUNTIME=IMAGE`, as `--runtime-image` takes them.
fn runtime_image(text: &str) -> Result<(fargo::api::function::Runtime, String), String> {
    match text.split_once('=') {
        Some((runtime, image)) if !image.is_empty() => Ok((runtime.parse()?, image.to_string())),
        _ => Err(format!("{text:?} is not RUNTIME=IMAGE")),
    }
}

/// A `key=value` label, as `--dns-pod-labels` takes them.
fn label_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

fn print_crds(out_dir: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let files = fargo::api::crds_yaml().context("rendering the CRDs")?;
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, yaml) in files {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        None => {
            for (_, yaml) in files {
                print!("---\n{yaml}");
            }
        }
    }
    Ok(())
}

/// A client for the cluster in KUBECONFIG or, in a pod, the cluster it runs in.
async fn connect() -> anyhow::Result<kube::Client> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or in-cluster config)")?;
    let version = client
        .apiserver_version()
        .await
        .context("asking the API server for its version")?;
    tracing::info!(apiserver = %version.git_version, "connected");
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_reads_its_flags_and_refuses_a_since_it_cannot_read() {
        use fargo::usage::report::{Output, Since};
        let parsed = Cli::try_parse_from([
            "fargo", "usage", "-n", "media", "--since", "7d", "-o", "csv",
        ])
        .expect("the flags parse");
        let Command::Usage(args) = parsed.command else {
            panic!("not the usage command");
        };
        let options = args.into_options();
        assert_eq!(options.namespace.as_deref(), Some("media"));
        assert_eq!(options.output, Output::Csv);
        assert!(matches!(options.since, Some(Since::Ago(_))));

        let parsed = Cli::try_parse_from(["fargo", "usage", "--since", "last week"]);
        let error = parsed.expect_err("a since that is neither duration nor instant");
        assert!(error.to_string().contains("RFC 3339"), "{error}");
    }

    #[test]
    fn activator_refuses_bounds_that_would_refuse_every_client() {
        for flags in [
            ["--header-read-timeout", "0s"],
            ["--max-connections", "0"],
            ["--max-header-bytes", "4096"],
        ] {
            let parsed = Cli::try_parse_from(["fargo", "activator", flags[0], flags[1]]);
            assert!(parsed.is_err(), "{flags:?} was accepted");
        }
        let parsed = Cli::try_parse_from(["fargo", "activator", "--header-read-timeout", "10s"]);
        assert!(parsed.is_ok());
    }

    #[test]
    fn runtime_api_names_the_function_in_its_arn() {
        let parsed = Cli::try_parse_from([
            "fargo",
            "runtime-api",
            "--function-name",
            "thumbnail",
            "--namespace",
            "media",
            "--memory-mb",
            "128",
            "--timeout-ms",
            "3000",
            "--region",
            "eu-west-1",
        ])
        .expect("the flags parse");
        let Command::RuntimeApi(args) = parsed.command else {
            panic!("not the runtime-api command");
        };
        let config = args.into_config();
        assert_eq!(
            config.function.arn,
            "arn:aws:lambda:eu-west-1:media:function:thumbnail"
        );
        assert_eq!(config.max_payload_bytes, 6 * 1024 * 1024);
        assert_eq!(config.runtime_api.to_string(), "127.0.0.1:9001");
    }
}
