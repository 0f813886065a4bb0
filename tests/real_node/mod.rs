//! Shared by the tests that run pods on the local cluster's real node (tests/node.rs,
//! tests/install.rs): waits that, when they time out, say what they last saw and what the pods
//! and events of the namespaces involved look like, and plain HTTP to pod and Service IPs.
#![allow(dead_code)] // each test crate uses a different part of this module

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The pods and events of `namespaces`, to show why a wait timed out.
pub async fn cluster_report(client: &Client, namespaces: &[String]) -> String {
    let mut report = String::new();
    for namespace in namespaces {
        let pods = Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map(|list| list.items)
            .unwrap_or_default();
        for pod in pods {
            let status = pod.status.clone().unwrap_or_default();
            report.push_str(&format!(
                "pod {namespace}/{}: phase {:?}, node {:?}, IP {:?}\n",
                pod.name_any(),
                status.phase,
                pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                status.pod_ip,
            ));
            for condition in status.conditions.unwrap_or_default() {
                report.push_str(&format!(
                    "  condition {}={} {}\n",
                    condition.type_,
                    condition.status,
                    condition.message.unwrap_or_default()
                ));
            }
            for container in status.container_statuses.unwrap_or_default() {
                report.push_str(&format!(
                    "  container {}: ready {}, restarts {}, state {}\n",
                    container.name,
                    container.ready,
                    container.restart_count,
                    serde_json::to_string(&container.state).unwrap_or_default()
                ));
            }
        }
        let events = Api::<Event>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map(|list| list.items)
            .unwrap_or_default();
        for event in events {
            report.push_str(&format!(
                "event {namespace} {}/{}: {} {}\n",
                event.involved_object.kind.unwrap_or_default(),
                event.involved_object.name.unwrap_or_default(),
                event.reason.unwrap_or_default(),
                event.message.unwrap_or_default()
            ));
        }
    }
    report
}

/// Polls `check` every 200 ms until it returns `Ok`, for at most `seconds`. On timeout it
/// panics with the last `Err` it saw and the pods and events of `namespaces`.
pub async fn wait_for<T, F, Fut>(
    client: &Client,
    namespaces: &[String],
    seconds: u64,
    what: &str,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out after {seconds}s waiting for {what}; last seen: {last}\n{}",
                cluster_report(client, namespaces).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One HTTP/1.0 GET to `ip:port` (a pod or Service of the local cluster), bounded by `timeout`:
/// the status and the body.
pub async fn http_get(
    ip: &str,
    port: u16,
    path_and_query: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| format!("connecting to {ip}:{port}: {e}"))?;
        let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending to {ip}:{port}: {e}"))?;
        let mut response = Vec::new();
        // HTTP/1.0 without keep-alive: the server closes the connection after the response.
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("reading from {ip}:{port}: {e}"))?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{ip}:{port} sent no complete HTTP response: {response:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("{ip}:{port} sent no status line: {head:?}"))?;
        Ok((status, body.to_string()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer from {ip}:{port} within {timeout:?}"))?
}
