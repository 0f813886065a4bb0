//! What every reconciler and loop of the controller shares: one way to report (Events and
//! reconcile metrics), one way to decide what a failed reconcile waits for, and one typed status
//! patch. Lower than every room that uses it: it imports only [`crate::api`] and
//! [`crate::telemetry`].
//!
//! - [`events`]: the one Event publisher, for failures and for what a loop did;
//! - [`metrics`]: reconcile counts, failures by reason and durations, by kind;
//! - [`status`]: the status patch, its API version and kind taken from the type.

pub mod events;
pub mod metrics;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;

pub use events::{EventPublisher, Note};
pub use metrics::ReconcileMetrics;
pub use status::patch_status;

/// How soon a reconcile that failed for a passing reason (the API server, a conflict) is tried
/// again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// An error of one reconcile, as the reporting path needs to see it.
pub trait ReconcileError: std::error::Error + Send + Sync + 'static {
    /// A bounded name: the Event's reason and the failure metric's label (never error text).
    fn reason(&self) -> &'static str;

    /// The object itself is wrong: trying again before it changes cannot succeed.
    fn is_terminal(&self) -> bool {
        false
    }

    /// The failure says only that the cache was behind or the object is on its way out; the
    /// next watch event tells the truth, and nobody needs to hear about it.
    fn is_moot(&self) -> bool {
        false
    }
}

/// The error policy of every controller: a terminal or moot failure waits for a change of the
/// object, any other is retried after [`RETRY_AFTER`]. Reporting is not done here but on the
/// controller's output stream ([`report_reconciled`]), where it can be awaited.
pub fn error_policy<K, E: ReconcileError, C>(_object: Arc<K>, error: &E, _ctx: Arc<C>) -> Action {
    if error.is_terminal() || error.is_moot() {
        Action::await_change()
    } else {
        Action::requeue(RETRY_AFTER)
    }
}

/// What a controller reports through: its Events and its metrics.
#[derive(Clone)]
pub struct Reporting {
    pub events: EventPublisher,
    pub metrics: Arc<ReconcileMetrics>,
}

/// The one reporting path for a reconcile's outcome, fed by `Controller::run`'s stream (through
/// `for_each_concurrent`, so that publishing never holds the controller back): a
/// failed reconcile is logged with its error chain, counted by reason and published as a
/// Warning Event on its object (moot failures only logged at debug); what is not a reconcile
/// failure (a watch error, an object gone from the cache) is logged.
pub async fn report_reconciled<K, E, QE>(
    reporting: &Reporting,
    kind: &'static str,
    result: Result<(ObjectRef<K>, Action), controller::Error<E, QE>>,
) where
    K: Resource<DynamicType = ()>,
    E: ReconcileError,
    QE: std::error::Error + 'static,
{
    match result {
        Ok((object, _)) => tracing::debug!(kind, object = %object, "reconciled"),
        Err(controller::Error::ReconcilerFailed(error, object)) => {
            let chain = crate::telemetry::error_chain(&error);
            if error.is_moot() {
                tracing::debug!(kind, object = %object, error = %chain, "reconcile failed, moot");
                return;
            }
            tracing::warn!(kind, object = %object, error = %chain, "reconcile failed");
            reporting.metrics.reconcile_failed(kind, error.reason());
            reporting
                .events
                .publish(&(*object).into(), Note::failure("Reconcile", &error))
                .await;
        }
        Err(error) => {
            tracing::warn!(kind, error = %crate::telemetry::error_chain(&error), "controller error")
        }
    }
}
