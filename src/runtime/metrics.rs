//! The sidecar's metrics (sub-registry `runtime`): one function per pod, so the only label is
//! the outcome.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::api::lambda::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug)]
pub struct RuntimeMetrics {
    invocations: Family<OutcomeLabels, Counter>,
    duration: Histogram,
    init_errors: Counter,
}

impl Default for RuntimeMetrics {
    fn default() -> Self {
        Self {
            invocations: Family::default(),
            duration: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                300.0, 900.0,
            ]),
            init_errors: Counter::default(),
        }
    }
}

impl RuntimeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "invocations",
            "Invocations, by how they ended",
            metrics.invocations.clone(),
        );
        registry.register_with_unit(
            "invocation_duration",
            "From a runtime taking an invocation to its answer or deadline",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "init_errors",
            "Initialization errors the runtime posted",
            metrics.init_errors.clone(),
        );
        metrics
    }

    /// One invocation ended; `ran` when a runtime took it (so it has a duration).
    pub fn invocation(&self, outcome: Outcome, ran: Option<std::time::Duration>) {
        self.invocations
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
        if let Some(duration) = ran {
            self.duration.observe(duration.as_secs_f64());
        }
    }

    pub fn init_error(&self) {
        self.init_errors.inc();
    }
}
