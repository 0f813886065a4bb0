//! The activator's metrics (sub-registry `activator`): labels are namespace, function and
//! status class only, so series are bounded by the functions that exist; the proxy's
//! connections and the activator-wide hold limit have none.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::connections::ConnectionMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    pub namespace: String,
    pub function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub namespace: String,
    pub function: String,
    /// `2xx`, `4xx`, …
    pub code: &'static str,
}

/// What became of an asynchronous event, or of one step of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub namespace: String,
    pub function: String,
    /// `accepted`, `refused` (not stored: NATS away), `success`, `retries_exhausted`,
    /// `event_age_exceeded`, `retried` (after a function error), `not_delivered` (throttled or
    /// no pod: back to the stream), `destination_failed`.
    pub outcome: &'static str,
}

/// The outcomes [`EventLabels`] take.
pub const EVENT_OUTCOMES: [&str; 8] = [
    "accepted",
    "refused",
    "success",
    "retries_exhausted",
    "event_age_exceeded",
    "retried",
    "not_delivered",
    "destination_failed",
];

/// What became of one object-storage notification's event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabels {
    /// `delivered` (stored for the functions that take it), `ignored` (no function takes it),
    /// `test` (a server's probe), `refused` (a request or message that is not a notification
    /// fargo takes: no or unknown token, too large, malformed).
    pub outcome: &'static str,
}

type HistogramFamily = Family<FunctionLabels, Histogram, fn() -> Histogram>;

/// Families shared by every function.
#[derive(Clone, Debug)]
pub struct ActivatorMetrics {
    requests: Family<RequestLabels, Counter>,
    in_flight: Family<FunctionLabels, Gauge>,
    held: Family<FunctionLabels, Gauge>,
    duration: HistogramFamily,
    hold: HistogramFamily,
    cold_start: HistogramFamily,
    /// Requests refused because the activator held all it may (`--max-held-requests`).
    held_refused: Counter,
    events: Family<EventLabels, Counter>,
    storage: Family<StorageLabels, Counter>,
    connections: ConnectionMetrics,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0, 300.0, 900.0,
    ])
}

/// Cold starts take seconds: a pod is made, scheduled, started and becomes ready.
fn cold_start_histogram() -> Histogram {
    Histogram::new([
        0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0,
    ])
}

impl Default for ActivatorMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            in_flight: Family::default(),
            held: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            hold: Family::new_with_constructor(duration_histogram),
            cold_start: Family::new_with_constructor(cold_start_histogram),
            held_refused: Counter::default(),
            events: Family::default(),
            storage: Family::default(),
            connections: ConnectionMetrics::default(),
        }
    }
}

impl ActivatorMetrics {
    /// Registers the families in `registry` (the `activator` sub-registry).
    pub fn register(registry: &mut Registry) -> Self {
        let mut metrics = Self::default();
        registry.register(
            "requests",
            "Requests received, by function and status class",
            metrics.requests.clone(),
        );
        registry.register(
            "in_flight",
            "Requests being proxied to a function's pods",
            metrics.in_flight.clone(),
        );
        registry.register(
            "held",
            "Requests held while a function has no free pod",
            metrics.held.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response headers, including time held",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register_with_unit(
            "hold_duration",
            "Time a request was held before a pod took it (requests that were held only)",
            Unit::Seconds,
            metrics.hold.clone(),
        );
        registry.register_with_unit(
            "cold_start_duration",
            "Time from a request held while the function had no usable pod to its response's \
             first byte",
            Unit::Seconds,
            metrics.cold_start.clone(),
        );
        registry.register(
            "held_refused",
            "Requests answered 503 because the activator already held --max-held-requests",
            metrics.held_refused.clone(),
        );
        registry.register(
            "events",
            "Asynchronous events and their steps, by function and outcome",
            metrics.events.clone(),
        );
        registry.register(
            "storage_events",
            "Object-storage notification events, by outcome",
            metrics.storage.clone(),
        );
        metrics.connections = ConnectionMetrics::register(registry);
        metrics
    }

    /// Counts one event of a storage notification.
    pub fn storage_event(&self, outcome: &'static str) {
        self.storage.get_or_create(&StorageLabels { outcome }).inc();
    }

    /// The proxy's connections.
    pub fn connections(&self) -> &ConnectionMetrics {
        &self.connections
    }

    /// Handles for one function, so that requests touch no label map.
    pub fn for_function(&self, namespace: &str, name: &str) -> RequestMetrics {
        let labels = FunctionLabels {
            namespace: namespace.to_string(),
            function: name.to_string(),
        };
        RequestMetrics {
            in_flight: self.in_flight.get_or_create_owned(&labels),
            held: self.held.get_or_create_owned(&labels),
            duration: self.duration.get_or_create_owned(&labels),
            hold: OnceLock::new(),
            cold_start: OnceLock::new(),
            requests: Default::default(),
            families: self.clone(),
            labels,
        }
    }
}

/// One function's series.
#[derive(Debug)]
pub struct RequestMetrics {
    pub in_flight: Gauge,
    pub held: Gauge,
    duration: Histogram,
    /// Made on first use, so that functions never held have no series.
    hold: OnceLock<Histogram>,
    cold_start: OnceLock<Histogram>,
    /// By status class 1xx..5xx, made on first use.
    requests: [OnceLock<Counter>; 5],
    families: ActivatorMetrics,
    labels: FunctionLabels,
}

impl RequestMetrics {
    /// Counts a response and how long it took to start.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.requests[class]
            .get_or_init(|| {
                self.families.requests.get_or_create_owned(&RequestLabels {
                    namespace: self.labels.namespace.clone(),
                    function: self.labels.function.clone(),
                    code: CODE_CLASSES[class],
                })
            })
            .inc();
    }

    /// A held request got its place on a pod after `waited`.
    pub fn held_for(&self, waited: Duration) {
        self.hold
            .get_or_init(|| self.families.hold.get_or_create_owned(&self.labels))
            .observe(waited.as_secs_f64());
    }

    /// A cold start's request got the first byte of its response after `took`.
    pub fn cold_start(&self, took: Duration) {
        self.cold_start
            .get_or_init(|| self.families.cold_start.get_or_create_owned(&self.labels))
            .observe(took.as_secs_f64());
    }

    /// Counts a request refused because the activator held all it may.
    pub fn held_refused(&self) {
        self.families.held_refused.inc();
    }

    /// Counts an asynchronous event's step; `outcome` is one of [`EVENT_OUTCOMES`].
    pub fn event(&self, outcome: &'static str) {
        self.families
            .events
            .get_or_create(&self.event_labels(outcome))
            .inc();
    }

    fn event_labels(&self, outcome: &'static str) -> EventLabels {
        EventLabels {
            namespace: self.labels.namespace.clone(),
            function: self.labels.function.clone(),
            outcome,
        }
    }

    /// Drops the function's series (it was deleted).
    pub fn remove(&self) {
        for outcome in EVENT_OUTCOMES {
            self.families.events.remove(&self.event_labels(outcome));
        }
        self.families.in_flight.remove(&self.labels);
        self.families.held.remove(&self.labels);
        self.families.duration.remove(&self.labels);
        self.families.hold.remove(&self.labels);
        self.families.cold_start.remove(&self.labels);
        for code in CODE_CLASSES {
            self.families.requests.remove(&RequestLabels {
                namespace: self.labels.namespace.clone(),
                function: self.labels.function.clone(),
                code,
            });
        }
    }
}

const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("metrics encode");
        text
    }

    #[test]
    fn requests_are_counted_by_status_class() {
        let mut registry = Registry::with_prefix("fargo");
        let metrics = ActivatorMetrics::register(registry.sub_registry_with_prefix("activator"));
        let function = metrics.for_function("media", "thumbnail");
        function.record(200, Duration::from_millis(3));
        function.record(204, Duration::from_millis(3));
        function.record(504, Duration::from_secs(30));
        let text = encode(&registry);
        assert!(
            text.contains(
                r#"fargo_activator_requests_total{namespace="media",function="thumbnail",code="2xx"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"code="5xx"} 1"#), "{text}");
        assert!(text.contains("fargo_activator_request_duration_seconds_count"));
        assert!(
            !text.contains("cold_start_duration_seconds_count{"),
            "no series before a cold start: {text}"
        );
        function.held_for(Duration::from_millis(800));
        function.cold_start(Duration::from_millis(900));
        let text = encode(&registry);
        assert!(
            text.contains(
                r#"fargo_activator_cold_start_duration_seconds_count{namespace="media",function="thumbnail"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"fargo_activator_hold_duration_seconds_bucket{le="1.0",namespace="media",function="thumbnail"} 1"#)
                || text.contains(r#"fargo_activator_hold_duration_seconds_bucket{namespace="media",function="thumbnail",le="1.0"} 1"#),
            "{text}"
        );

        function.event("accepted");
        function.event("retried");
        function.event("retried");
        let text = encode(&registry);
        assert!(
            text.contains(
                r#"fargo_activator_events_total{namespace="media",function="thumbnail",outcome="retried"} 2"#
            ),
            "{text}"
        );

        function.remove();
        assert!(!encode(&registry).contains("thumbnail"));
    }
}
