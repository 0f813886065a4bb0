//! The probe port: `/ready` and `/live` for kubelet, with `/healthz`, `/readyz` and `/metrics`
//! from [`crate::telemetry`].

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::registry::Registry;

use super::invocations::Invocations;
use crate::telemetry::{self, Readiness};

pub fn router(
    invocations: Arc<Invocations>,
    registry: Arc<Registry>,
    readiness: Readiness,
) -> Router {
    let live = invocations.clone();
    telemetry::health_router(registry, readiness)
        .route(
            "/ready",
            get(move || {
                let invocations = invocations.clone();
                async move { probe(invocations.readiness()) }
            }),
        )
        .route(
            "/live",
            get(move || {
                let invocations = live.clone();
                async move { probe(invocations.liveness()) }
            }),
        )
}

fn probe(state: Result<(), String>) -> (StatusCode, String) {
    match state {
        Ok(()) => (StatusCode::OK, "ok".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}
