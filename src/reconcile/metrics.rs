//! Reconcile counts, failures by reason, and durations, by resource kind.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
    reason: &'static str,
}

/// The metrics of every reconciler.
pub struct ReconcileMetrics {
    reconciles: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a ReconcileMetrics,
    kind: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&KindLabels { kind: self.kind })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl ReconcileMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0])
            }),
        };
        registry.register(
            "reconciles",
            "Reconciles started, by kind",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by kind and reason",
            metrics.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration, by kind",
            metrics.duration.clone(),
        );
        Arc::new(metrics)
    }

    pub fn reconcile_started(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        ReconcileTimer {
            metrics: self,
            kind,
            started: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, kind: &'static str, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { kind, reason })
            .inc();
    }
}
