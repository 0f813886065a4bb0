//! What each activator reports to the autoscaler on `GET /stats`: the one contract between the
//! request path and the controller side.
//!
//! The autoscaler scrapes every activator pod about once a second and deserializes
//! [`ActivatorStats`]; the field names are part of that contract.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// Body of `GET /stats` on the activator's health port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ActivatorStats {
    /// Every function this activator has received a request for since it started.
    #[serde(default)]
    pub functions: Vec<FunctionStats>,
}

/// One function, as one activator sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStats {
    pub namespace: String,
    pub name: String,
    /// Requests the activator had for the function (proxied and held), averaged over time since
    /// the previous scrape of `/stats`.
    pub concurrency: f64,
    /// Requests being proxied to a pod now.
    pub in_flight: u32,
    /// Requests held now, waiting for a pod (none ready, or all at `concurrency.perInstance`).
    pub held: u32,
    /// Requests received since the activator started, including rejected ones.
    pub requests: u64,
    /// When the last request arrived (RFC 3339), or null.
    #[serde(default)]
    pub last_request: Option<Time>,
    /// Asynchronous events stored for the function and not yet handled (JetStream's count for
    /// its consumer, the same from every activator); absent when the activator has no NATS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_events: Option<u64>,
    /// When the oldest of them was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_queued_event: Option<Time>,
    /// The function's storage and queue triggers, as this activator saw them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerStats>,
    /// Metered use this activator counted for the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageReport>,
}

/// One activator's count of a function's use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// This count: a random id drawn when the activator began it (the counters start at zero
    /// then), so that a restarted activator's count is never taken for the one before.
    pub counter: String,
    #[serde(flatten)]
    pub counted: super::usage::ActivatorCounters,
}

/// One storage or queue trigger, as one activator sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TriggerStats {
    /// `Storage` or `Queue`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The bucket (storage) or the trigger's name (queues).
    pub name: String,
    /// Events or messages this activator received since it started.
    pub events: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event: Option<Time>,
    /// Why the trigger does not work (`StreamNotFound`, …); absent while it works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Messages of the stream not yet handled (queues; the same from every activator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_use_the_field_names_the_autoscaler_reads() {
        let stats = ActivatorStats {
            functions: vec![FunctionStats {
                namespace: "media".into(),
                name: "thumbnail".into(),
                concurrency: 1.5,
                in_flight: 1,
                held: 2,
                requests: 10,
                last_request: None,
                queued_events: None,
                oldest_queued_event: None,
                triggers: vec![],
                usage: None,
            }],
        };
        let json = serde_json::to_value(&stats).expect("stats serialize");
        assert_eq!(
            json,
            serde_json::json!({"functions": [{
                "namespace": "media", "name": "thumbnail", "concurrency": 1.5,
                "inFlight": 1, "held": 2, "requests": 10, "lastRequest": null
            }]})
        );
        let back: ActivatorStats = serde_json::from_value(json).expect("stats deserialize");
        assert_eq!(back, stats);

        let with_time: FunctionStats = serde_json::from_value(serde_json::json!({
            "namespace": "media", "name": "thumbnail", "concurrency": 0.0,
            "inFlight": 0, "held": 0, "requests": 1, "lastRequest": "2026-01-02T03:04:05Z"
        }))
        .expect("an RFC 3339 lastRequest deserializes");
        assert!(with_time.last_request.is_some());
    }
}
