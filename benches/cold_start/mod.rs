//! One cold start, phase by phase, as watches of the API server and a prober of the pod see it:
//! from the request sent to a workload at zero replicas, through the scale write, the ReplicaSet,
//! the pod's creation, scheduling, sandbox and containers, to the app answering on the pod's IP
//! and the response through the proxy. The same capture serves fargo and its peers, so their
//! timelines can be printed side by side.
//!
//! Each phase is the first moment this process saw it: a watch event's arrival (the API server
//! and the kubelet's status updates sit between the node and this process, and the kubelet may
//! report two steps in one update, which then share a moment), or the prober's first answer.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, Resource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// The phases of a cold start, in the order they happen; what each line of the timeline says.
pub const PHASES: [&str; 9] = [
    "scale write seen (Deployment replicas > 0, watch)",
    "ReplicaSet scaled up (watch)",
    "pod created (watch)",
    "pod scheduled (watch)",
    "sandbox up: pod IP reported (watch)",
    "containers running (watch)",
    "port open: the app answers on the pod IP (prober)",
    "pod Ready (watch)",
    "response through the proxy",
];
pub const SCALE_WRITE: usize = 0;
const REPLICA_SET: usize = 1;
const CREATED: usize = 2;
const SCHEDULED: usize = 3;
const SANDBOX: usize = 4;
const RUNNING: usize = 5;
pub const PORT_OPEN: usize = 6;
const READY: usize = 7;
pub const RESPONSE: usize = 8;

/// How often the prober tries the pod's IP once it is known.
const PROBE_EVERY: Duration = Duration::from_millis(2);

/// One cold start: when each phase was first seen, after the request was sent (`None`: not seen).
pub type Run = [Option<Duration>; PHASES.len()];

/// What a cold start is of: the namespace, the label selector of the workload's Deployment,
/// ReplicaSet and pods, and the port and path where its app answers once up.
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub selector: &'a str,
    pub probe: (u16, &'static str),
}

type Marks = Arc<Mutex<[Option<Instant>; PHASES.len()]>>;

fn mark(marks: &Marks, phase: usize) {
    let mut marks = marks.lock().expect("the marks");
    marks[phase].get_or_insert_with(Instant::now);
}

/// Watches `workload`, then sends `request` (whose future answers once the response is read) and
/// waits for every phase (at most 30 s after the response).
pub async fn capture(client: &Client, workload: &Workload<'_>, request: impl Future) -> Run {
    let marks: Marks = Arc::default();
    let (mut tasks, mut listed) = (vec![], vec![]);
    for watch in [Watch::Deployment, Watch::ReplicaSet, Watch::Pods] {
        let (done, list) = oneshot::channel();
        listed.push(list);
        tasks.push(tokio::spawn(watch.run(
            client.clone(),
            workload.namespace.to_string(),
            workload.selector.to_string(),
            workload.probe,
            marks.clone(),
            done,
        )));
    }
    for list in listed {
        list.await.expect("a watch listed");
    }
    let sent = Instant::now();
    request.await;
    mark(&marks, RESPONSE);
    let deadline = Instant::now() + Duration::from_secs(30);
    while marks.lock().expect("the marks").iter().any(Option::is_none) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for task in tasks {
        task.abort();
    }
    let marks = *marks.lock().expect("the marks");
    marks.map(|at| at.map(|at| at.saturating_duration_since(sent)))
}

#[derive(Clone, Copy)]
enum Watch {
    Deployment,
    ReplicaSet,
    Pods,
}

impl Watch {
    async fn run(
        self,
        client: Client,
        namespace: String,
        selector: String,
        probe: (u16, &'static str),
        marks: Marks,
        listed: oneshot::Sender<()>,
    ) {
        let config = watcher::Config::default().labels(&selector);
        match self {
            Watch::Deployment => {
                let api = Api::<Deployment>::namespaced(client, &namespace);
                watch_scale(api, config, listed, |d: &Deployment| {
                    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0
                })
                .await;
                mark(&marks, SCALE_WRITE);
            }
            Watch::ReplicaSet => {
                let api = Api::<ReplicaSet>::namespaced(client, &namespace);
                watch_scale(api, config, listed, |r: &ReplicaSet| {
                    r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0
                })
                .await;
                mark(&marks, REPLICA_SET);
            }
            Watch::Pods => {
                let api = Api::<Pod>::namespaced(client, &namespace);
                watch_pod(api, config, probe, marks, listed).await;
            }
        }
    }
}

/// Returns once an object the watch did not list at its start, or one it listed, is seen
/// `raised`; sends on `listed` once the first list is in.
async fn watch_scale<K>(
    api: Api<K>,
    config: watcher::Config,
    listed: oneshot::Sender<()>,
    raised: impl Fn(&K) -> bool,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let mut events = watcher(api, config).boxed();
    let mut listed = Some(listed);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
            }
            Ok(watcher::Event::Apply(object)) if raised(&object) => return,
            _ => {}
        }
    }
    std::future::pending::<()>().await;
}

/// Marks the phases of the first pod created after the watch's first list (pods it listed, and
/// pods being deleted, are a previous run's), and starts the prober once the pod has an IP.
async fn watch_pod(
    api: Api<Pod>,
    config: watcher::Config,
    probe: (u16, &'static str),
    marks: Marks,
    listed: oneshot::Sender<()>,
) {
    let mut events = watcher(api, config).boxed();
    let mut listed = Some(listed);
    let (mut old, mut new) = (HashSet::new(), None);
    let mut prober = None;
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::InitApply(pod)) => {
                old.insert(pod.metadata.uid.unwrap_or_default());
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
                continue;
            }
            Ok(watcher::Event::Apply(pod)) => pod,
            _ => continue,
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if old.contains(&uid) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if new.get_or_insert_with(|| uid.clone()) != &uid {
            continue;
        }
        mark(&marks, CREATED);
        if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
            mark(&marks, SCHEDULED);
        }
        let status = pod.status.unwrap_or_default();
        let condition = |kind: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == kind && c.status == "True")
        };
        if let Some(ip) = status.pod_ip.as_deref() {
            mark(&marks, SANDBOX);
            if prober.is_none() {
                let addr: SocketAddr = format!("{ip}:{}", probe.0).parse().expect("a pod address");
                prober = Some(tokio::spawn(probe_until_answered(
                    addr,
                    probe.1,
                    marks.clone(),
                )));
            }
        }
        let containers = status.container_statuses.as_deref().unwrap_or_default();
        if !containers.is_empty()
            && containers
                .iter()
                .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        {
            mark(&marks, RUNNING);
        }
        if condition("Ready") {
            mark(&marks, READY);
        }
    }
    if let Some(prober) = prober {
        prober.abort();
    }
}

async fn probe_until_answered(addr: SocketAddr, path: &'static str, marks: Marks) {
    while !answers(addr, path).await {
        tokio::time::sleep(PROBE_EVERY).await;
    }
    mark(&marks, PORT_OPEN);
}

/// Whether the pod at `addr` answers `GET <path>` with 200 over a fresh connection.
pub async fn answers(addr: SocketAddr, path: &str) -> bool {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(200), exchange).await,
        Ok(Ok(true))
    )
}

/// The median and the mean of what was seen of one phase in `runs`, and how many runs saw it.
fn phase_figures(runs: &[Run], phase: usize) -> Option<(Duration, Duration, usize)> {
    let mut seen: Vec<Duration> = runs.iter().filter_map(|run| run[phase]).collect();
    if seen.is_empty() {
        return None;
    }
    seen.sort();
    let mean = seen.iter().sum::<Duration>() / seen.len() as u32;
    Some((seen[(seen.len() - 1) / 2], mean, seen.len()))
}

/// The median of one phase in `runs` (zero when no run saw it).
pub fn median(runs: &[Run], phase: usize) -> Duration {
    phase_figures(runs, phase).map_or(Duration::ZERO, |(median, _, _)| median)
}

/// Prints the timelines of `systems` (a name and its runs) side by side: each phase's median and
/// mean time after the request, in milliseconds, with the count of runs that saw it when some
/// did not.
pub fn print_side_by_side(systems: &[(&str, &[Run])]) {
    const LABEL: usize = 52;
    const COLUMN: usize = 20;
    let runs = systems
        .iter()
        .map(|(_, runs)| runs.len())
        .max()
        .unwrap_or(0);
    let mut header = format!(
        "{:<LABEL$}",
        format!("cold start, ms after the request, p50 / mean ({runs} runs)")
    );
    for (name, _) in systems {
        header.push_str(&format!("{name:>COLUMN$}"));
    }
    println!("{header}");
    for (phase, what) in PHASES.iter().enumerate() {
        let mut line = format!("  {what:<width$}", width = LABEL - 2);
        for (_, runs) in systems {
            let cell = match phase_figures(runs, phase) {
                Some((median, mean, seen)) => {
                    let count = if seen < runs.len() {
                        format!(" [{seen}]")
                    } else {
                        String::new()
                    };
                    format!(
                        "{:.0} / {:.0}{count}",
                        median.as_secs_f64() * 1e3,
                        mean.as_secs_f64() * 1e3
                    )
                }
                None => "—".to_string(),
            };
            line.push_str(&format!("{cell:>COLUMN$}"));
        }
        println!("{line}");
    }
}
