//! Where the activators' `/stats` are, what they say summed over activators, and the scrape.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use jiff::Timestamp;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::api::stats::{ActivatorStats, TriggerStats, UsageReport};
use crate::http_client::HttpClient;

/// Name of the port, on the activator Service, that serves `/stats`.
pub const HEALTH_PORT_NAME: &str = "health";
/// Longest a scrape of one activator may take; the tick is one second.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);
/// Largest `/stats` body read (about 50,000 functions).
const MAX_STATS_BYTES: usize = 16 << 20;

/// One function's load, summed over the activators that answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionLoad {
    /// Time-averaged requests since the previous scrape.
    pub concurrency: f64,
    /// Requests in flight and held now.
    pub in_flight: u32,
    /// The latest request any activator saw.
    pub last_request: Option<Timestamp>,
    /// Asynchronous events waiting, as the activators report JetStream's count (the largest
    /// report: they all read the same consumer); `None` when none reports one.
    pub queued_events: Option<u64>,
    pub oldest_queued_event: Option<Timestamp>,
    /// Storage and queue triggers by `(type, name)`: events summed over the activators, the
    /// latest event, any activator's problem, the largest backlog.
    pub triggers: BTreeMap<(String, String), TriggerStats>,
    /// Each activator's usage counts of the function (one per activator that has any).
    pub usage: Vec<UsageReport>,
}

/// The outcome of scraping every activator once.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Load by `(namespace, function)`.
    pub loads: HashMap<(String, String), FunctionLoad>,
    pub answered: usize,
    pub failed: usize,
}

impl Scrape {
    /// Every activator answered (vacuously true when there is none).
    pub fn complete(&self) -> bool {
        self.failed == 0
    }
}

/// Sums the activators' reports by function.
pub fn aggregate<'a>(
    reports: impl IntoIterator<Item = &'a ActivatorStats>,
) -> HashMap<(String, String), FunctionLoad> {
    let mut loads: HashMap<(String, String), FunctionLoad> = HashMap::new();
    for report in reports {
        for function in &report.functions {
            let load = loads
                .entry((function.namespace.clone(), function.name.clone()))
                .or_default();
            if function.concurrency.is_finite() && function.concurrency > 0.0 {
                load.concurrency += function.concurrency;
            }
            load.in_flight = load
                .in_flight
                .saturating_add(function.in_flight)
                .saturating_add(function.held);
            let last = function.last_request.as_ref().map(|time| time.0);
            load.last_request = load.last_request.max(last);
            if let Some(queued) = function.queued_events {
                load.queued_events = Some(load.queued_events.unwrap_or(0).max(queued));
                let oldest = function.oldest_queued_event.as_ref().map(|time| time.0);
                load.oldest_queued_event = match (load.oldest_queued_event, oldest) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if let Some(usage) = &function.usage {
                load.usage.push(usage.clone());
            }
            for trigger in &function.triggers {
                let sum = load
                    .triggers
                    .entry((trigger.type_.clone(), trigger.name.clone()))
                    .or_insert_with(|| TriggerStats {
                        type_: trigger.type_.clone(),
                        name: trigger.name.clone(),
                        ..Default::default()
                    });
                sum.events = sum.events.saturating_add(trigger.events);
                sum.last_event = sum.last_event.clone().max(trigger.last_event.clone());
                if trigger.problem.is_some() {
                    sum.problem.clone_from(&trigger.problem);
                    sum.message.clone_from(&trigger.message);
                }
                sum.pending = sum.pending.max(trigger.pending);
            }
        }
    }
    loads
}

/// `/stats` URLs of the activator pods listed in the activator Service's EndpointSlices: the
/// port named [`HEALTH_PORT_NAME`] when the Service has one, else `fallback_port`. Pods that
/// are terminating are included, serving or not: they may still hold requests, and an
/// activator on its way out waits for a last scrape of its usage counts.
pub fn stats_urls<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    fallback_port: u16,
) -> Vec<String> {
    let mut urls = vec![];
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(HEALTH_PORT_NAME))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(fallback_port);
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            if !serving && !terminating {
                continue;
            }
            for address in &endpoint.addresses {
                match address.parse::<IpAddr>() {
                    Ok(IpAddr::V4(ip)) => urls.push(format!("http://{ip}:{port}/stats")),
                    Ok(IpAddr::V6(ip)) => urls.push(format!("http://[{ip}]:{port}/stats")),
                    Err(_) => {}
                }
            }
        }
    }
    urls.sort();
    urls.dedup();
    urls
}

/// Scrapes every URL at once.
pub async fn scrape(http: &HttpClient, urls: &[String]) -> Scrape {
    let results = futures::future::join_all(urls.iter().map(|url| fetch(http, url))).await;
    let mut reports = vec![];
    let mut failed = 0;
    for (url, result) in urls.iter().zip(results) {
        match result {
            Ok(report) => reports.push(report),
            Err(error) => {
                failed += 1;
                tracing::debug!(%url, %error, "scraping activator stats failed");
            }
        }
    }
    Scrape {
        loads: aggregate(&reports),
        answered: reports.len(),
        failed,
    }
}

async fn fetch(http: &HttpClient, url: &str) -> Result<ActivatorStats, String> {
    let request = hyper::Request::get(url)
        .header(hyper::header::USER_AGENT, "fargo-autoscaler")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(SCRAPE_TIMEOUT, async {
        let response = http.request(request).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        Limited::new(response.into_body(), MAX_STATS_BYTES)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| format!("no answer within {SCRAPE_TIMEOUT:?}"))??;
    serde_json::from_slice(&response).map_err(|e| format!("unreadable stats: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: serde_json::Value) -> ActivatorStats {
        serde_json::from_value(json).expect("a stats report")
    }

    #[test]
    fn loads_are_summed_over_activators() {
        let a = report(serde_json::json!({"functions": [
            {"namespace": "media", "name": "thumbnail", "concurrency": 1.5, "inFlight": 1,
             "held": 1, "requests": 10, "lastRequest": "2026-01-02T03:04:05Z"},
            {"namespace": "media", "name": "idle", "concurrency": 0.0, "inFlight": 0,
             "held": 0, "requests": 1, "lastRequest": null},
        ]}));
        let b = report(serde_json::json!({"functions": [
            {"namespace": "media", "name": "thumbnail", "concurrency": 2.0, "inFlight": 2,
             "held": 0, "requests": 7, "lastRequest": "2026-01-02T03:04:09Z"},
        ]}));
        let loads = aggregate([&a, &b]);
        let thumbnail = &loads[&("media".to_string(), "thumbnail".to_string())];
        assert!((thumbnail.concurrency - 3.5).abs() < 1e-9);
        assert_eq!(thumbnail.in_flight, 4);
        assert_eq!(
            thumbnail.last_request,
            Some("2026-01-02T03:04:09Z".parse().unwrap())
        );
        let idle = &loads[&("media".to_string(), "idle".to_string())];
        assert_eq!(idle.last_request, None);
        assert_eq!(idle.concurrency, 0.0);
    }

    #[test]
    fn nonsense_concurrency_counts_as_none() {
        let a = report(serde_json::json!({"functions": [
            {"namespace": "n", "name": "f", "concurrency": -1.0, "inFlight": 0, "held": 0,
             "requests": 0, "lastRequest": null},
        ]}));
        assert_eq!(
            aggregate([&a])[&("n".to_string(), "f".to_string())].concurrency,
            0.0
        );
    }

    fn slice(yaml: &str) -> EndpointSlice {
        serde_yaml::from_str(yaml).expect("a test EndpointSlice")
    }

    #[test]
    fn stats_urls_use_the_health_port_of_serving_activators() {
        let slices = [slice(
            r#"
metadata: {name: fargo-activator-abc, namespace: fargo-system}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: health, port: 9091}]
endpoints:
  - addresses: [10.0.0.5]
    conditions: {ready: true}
  - addresses: [10.0.0.6]
    conditions: {ready: false, serving: true, terminating: true}
  - addresses: [10.0.0.7]
    conditions: {ready: false, serving: false}
  - addresses: [10.0.0.8]
    conditions: {ready: false, serving: false, terminating: true}
"#,
        )];
        assert_eq!(
            stats_urls(&slices, 1),
            vec![
                "http://10.0.0.5:9091/stats".to_string(),
                "http://10.0.0.6:9091/stats".to_string(),
                "http://10.0.0.8:9091/stats".to_string()
            ]
        );
    }

    #[test]
    fn stats_urls_fall_back_to_the_configured_port_and_bracket_ipv6() {
        let slices = [slice(
            r#"
metadata: {name: fargo-activator-v6, namespace: fargo-system}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: ["fd00::5"]
"#,
        )];
        assert_eq!(
            stats_urls(&slices, 9091),
            vec!["http://[fd00::5]:9091/stats".to_string()]
        );
    }
}
