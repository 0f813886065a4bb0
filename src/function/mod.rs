//! ServerlessFunction: the reconciler that keeps each function's Deployment and Service and
//! reports its status.
//!
//! - [`build`]: the Deployment and Service of a function (pure);
//! - [`runtime_pod`]: the pod pieces of handler functions and Lambda images — the code fetcher,
//!   the Runtime API sidecar, the runtime container's probes and environment (pure);
//! - [`status`]: the status and its conditions from what was observed (pure);
//! - [`standby`]: the standby pods of functions with `scale.standby`, and their waking;
//! - [`reconciler`]: reads, applies the children and writes the status.
//!
//! The autoscaler ([`crate::autoscaler`]) and the schedule trigger ([`crate::schedule`]) read
//! the same caches ([`crate::caches`]); `fargo controller` ([`crate::controller`]) starts all
//! three.

pub mod build;
pub mod reconciler;
pub mod runtime_pod;
pub mod standby;
pub mod status;

pub use build::{deployment, service};
