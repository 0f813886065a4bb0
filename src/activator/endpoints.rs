//! A function's pods, learned from its EndpointSlices by watch, and the probe that makes a
//! starting pod usable as soon as it answers HTTP — before the kubelet's readiness reaches the
//! EndpointSlice.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::function_state::{FunctionState, ObservedEndpoint};
use super::index::FunctionIndex;
use crate::api::{FUNCTION_LABEL, PROBE_HEADER, SERVICE_NAME_LABEL};

/// The label the EndpointSlice controller puts on the slices it manages, and its value there.
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const ENDPOINTSLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";

/// `(namespace, function)` of a slice of a function's own Service: the slice carries the
/// function label (copied from the Service), belongs to the Service of the same name, is
/// managed by the EndpointSlice controller and has that Service as its controller.
///
/// Labels alone are what anyone allowed to write EndpointSlices in the namespace can set: a
/// slice that only claims a function would send the function's traffic, from the activator,
/// to any address (another tenant's pod, the API server). The EndpointSlice controller
/// replaces or deletes slices that say it manages them for a Service, so a forged slice that
/// passes these checks does not stay.
pub fn function_of(slice: &EndpointSlice) -> Option<(String, String)> {
    let labels = slice.metadata.labels.as_ref()?;
    let service = labels.get(SERVICE_NAME_LABEL)?;
    let function = labels.get(FUNCTION_LABEL)?;
    if service != function
        || labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(ENDPOINTSLICE_CONTROLLER)
    {
        return None;
    }
    let owned_by_service = slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| {
            owner.controller == Some(true)
                && owner.api_version == "v1"
                && owner.kind == "Service"
                && owner.name == *service
        });
    if !owned_by_service {
        return None;
    }
    Some((slice.metadata.namespace.clone()?, function.clone()))
}

/// The addresses a slice lists, with its (TCP) port.
pub fn endpoints_of(slice: &EndpointSlice) -> Vec<ObservedEndpoint> {
    if slice.address_type == "FQDN" {
        return vec![];
    }
    let port = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0);
    let mut endpoints = vec![];
    for endpoint in slice.endpoints.iter().flatten() {
        let conditions = endpoint.conditions.as_ref();
        // An unknown readiness counts as ready, as the EndpointSlice API says.
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        for address in &endpoint.addresses {
            if let Ok(ip) = address.parse::<IpAddr>() {
                endpoints.push(ObservedEndpoint {
                    ip,
                    port,
                    ready,
                    terminating,
                });
            }
        }
    }
    endpoints
}

type SlicesByFunction = HashMap<(String, String), HashMap<String, Vec<ObservedEndpoint>>>;

/// Keeps the pods of every function in `index` in step with the functions' EndpointSlices and
/// probes pods that are listed but not ready yet. Sends on `synced` once the first full list is
/// in. Runs until the task is dropped.
pub async fn watch_endpoint_slices(
    client: Client,
    index: Arc<FunctionIndex>,
    synced: oneshot::Sender<()>,
) {
    let api: Api<EndpointSlice> = Api::all(client);
    let config = watcher::Config::default().labels(FUNCTION_LABEL);
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut synced = Some(synced);
    let mut slices = SlicesByFunction::new();
    let mut relisted: Option<SlicesByFunction> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => relisted = Some(SlicesByFunction::new()),
            Ok(watcher::Event::InitApply(slice)) => {
                if let (Some(buffer), Some(key), Some(name)) = (
                    relisted.as_mut(),
                    function_of(&slice),
                    slice.metadata.name.clone(),
                ) {
                    buffer
                        .entry(key)
                        .or_default()
                        .insert(name, endpoints_of(&slice));
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(fresh) = relisted.take() {
                    let keys: HashSet<(String, String)> =
                        slices.keys().chain(fresh.keys()).cloned().collect();
                    slices = fresh;
                    for key in keys {
                        publish(&index, &slices, &key);
                    }
                }
                if let Some(synced) = synced.take() {
                    let _ = synced.send(());
                }
            }
            Ok(watcher::Event::Apply(slice)) => {
                if let (Some(key), Some(name)) = (function_of(&slice), slice.metadata.name.clone())
                {
                    slices
                        .entry(key.clone())
                        .or_default()
                        .insert(name, endpoints_of(&slice));
                    publish(&index, &slices, &key);
                }
            }
            Ok(watcher::Event::Delete(slice)) => {
                if let (Some(key), Some(name)) = (function_of(&slice), slice.metadata.name.as_ref())
                {
                    if let Some(of_function) = slices.get_mut(&key) {
                        of_function.remove(name);
                        if of_function.is_empty() {
                            slices.remove(&key);
                        }
                    }
                    publish(&index, &slices, &key);
                }
            }
            Err(error) => tracing::warn!(%error, "watching EndpointSlices"),
        }
    }
}

/// Gives a function all the addresses of all its slices, and probes the new ones.
fn publish(index: &FunctionIndex, slices: &SlicesByFunction, key: &(String, String)) {
    let endpoints: Vec<ObservedEndpoint> = slices
        .get(key)
        .map(|of_function| of_function.values().flatten().copied().collect())
        .unwrap_or_default();
    let (function, to_probe) = index.set_endpoints(&key.0, &key.1, &endpoints);
    for addr in to_probe {
        tokio::spawn(probe_until_alive(function.clone(), addr));
    }
}

/// Between two probes of a starting pod, for its first [`FAST_PROBES_FOR`]: a slice lists a pod
/// once it has an IP, which the kubelet reports with its containers started, and most apps
/// open their port within that time; each probe of a port not open yet is one refused
/// connection. Every [`PROBE_INTERVAL`] after that.
const FAST_PROBE_INTERVAL: Duration = Duration::from_millis(5);
const FAST_PROBES_FOR: Duration = Duration::from_secs(1);
/// Between two probes of a pod that has not answered within [`FAST_PROBES_FOR`].
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// A pod that is up accepts at once; one that is not refuses at once.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
const PROBE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes a starting pod (every [`FAST_PROBE_INTERVAL`], then every [`PROBE_INTERVAL`]) until it
/// answers HTTP (then marks it usable), it stops needing it (ready, gone), or the function's
/// timeout has passed.
pub async fn probe_until_alive(function: Arc<FunctionState>, addr: SocketAddr) {
    let give_up = tokio::time::Instant::now() + function.config().timeout;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: fargo-activator-probe\r\n{PROBE_HEADER}: 1\r\nConnection: close\r\n\r\n"
    );
    let fast_until = tokio::time::Instant::now() + FAST_PROBES_FOR;
    while function.needs_probe(addr) {
        if answers_http(addr, request.as_bytes()).await {
            if function.mark_alive(addr) {
                tracing::debug!(
                    namespace = function.namespace(), function = function.name(), %addr,
                    "pod answered before it was ready; using it"
                );
            }
            break;
        }
        let now = tokio::time::Instant::now();
        let interval = if now < fast_until {
            FAST_PROBE_INTERVAL
        } else {
            PROBE_INTERVAL
        };
        if now + interval >= give_up {
            break;
        }
        tokio::time::sleep(interval).await;
    }
    function.probe_finished(addr);
}

/// Whether `addr` accepts a TCP connection and answers `request` with any HTTP response.
pub async fn answers_http(addr: SocketAddr, request: &[u8]) -> bool {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(PROBE_CONNECT_TIMEOUT, TcpStream::connect(addr)).await
    else {
        return false;
    };
    let exchange = async {
        stream.write_all(request).await?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(&head == b"HTTP/")
    };
    matches!(
        tokio::time::timeout(PROBE_RESPONSE_TIMEOUT, exchange).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(yaml: &str) -> EndpointSlice {
        serde_yaml::from_str(yaml).expect("test slice parses")
    }

    const SLICE: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: thumbnail-abcde
  namespace: media
  labels:
    kubernetes.io/service-name: thumbnail
    fargo.dev/function: thumbnail
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
  ownerReferences:
    - {apiVersion: v1, kind: Service, name: thumbnail, uid: 6d1e6b1c, controller: true, blockOwnerDeletion: true}
addressType: IPv4
ports: [{name: http, port: 9000, protocol: TCP}]
endpoints:
  - addresses: [10.0.0.1]
    conditions: {ready: true}
  - addresses: [10.0.0.2]
    conditions: {ready: false}
  - addresses: [10.0.0.3]
    conditions: {ready: false, terminating: true}
  - addresses: [10.0.0.4]
"#;

    #[test]
    fn slice_lists_ready_starting_and_terminating_pods() {
        let endpoints = endpoints_of(&slice(SLICE));
        let summary: Vec<(String, Option<u16>, bool, bool)> = endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.port, e.ready, e.terminating))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("10.0.0.1".into(), Some(9000), true, false),
                ("10.0.0.2".into(), Some(9000), false, false),
                ("10.0.0.3".into(), Some(9000), false, true),
                ("10.0.0.4".into(), Some(9000), true, false),
            ]
        );
    }

    #[test]
    fn slice_belongs_to_the_function_its_service_is_named_after() {
        assert_eq!(
            function_of(&slice(SLICE)),
            Some(("media".into(), "thumbnail".into()))
        );
        let foreign = SLICE.replace(
            "kubernetes.io/service-name: thumbnail",
            "kubernetes.io/service-name: other",
        );
        assert_eq!(function_of(&slice(&foreign)), None);
    }

    #[test]
    fn a_slice_not_owned_by_the_functions_service_is_ignored() {
        let forged = [
            // Labels only: what a tenant writes to send the function's traffic elsewhere.
            SLICE.replace(
                "  ownerReferences:\n    - {apiVersion: v1, kind: Service, name: thumbnail, uid: 6d1e6b1c, controller: true, blockOwnerDeletion: true}\n",
                "",
            ),
            SLICE.replace("controller: true", "controller: false"),
            SLICE.replace("kind: Service, name: thumbnail", "kind: Service, name: other"),
            SLICE.replace("kind: Service", "kind: ConfigMap"),
            SLICE.replace("apiVersion: v1, kind", "apiVersion: example.com/v1, kind"),
            SLICE.replace(
                "endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io",
                "endpointslice.kubernetes.io/managed-by: tenant.example.com",
            ),
            SLICE.replace(
                "    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io\n",
                "",
            ),
        ];
        for yaml in &forged {
            assert_ne!(yaml, SLICE, "the test edits the slice");
            assert_eq!(function_of(&slice(yaml)), None, "{yaml}");
        }
    }

    #[tokio::test]
    async fn probe_accepts_any_http_answer_and_rejects_closed_ports() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 256];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        assert!(answers_http(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await);

        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("bound address")
        };
        assert!(!answers_http(closed, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await);
    }
}
