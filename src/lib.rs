//! fargo: Fargate profiles and serverless functions for any Kubernetes cluster.
//!
//! The binary (`src/main.rs`) is thin; everything it runs lives here so tests and benchmarks can
//! reach it. Data flows one way (README, "Layout"):
//! - shared by both sides: [`api`] (resources, names, the activator's `/stats` contract),
//!   [`telemetry`], [`quantity`], [`diagnosis`], [`connections`] (the bounds on the clients of
//!   the webhook and the activator's proxy);
//! - the request path: [`activator`], whose Lambda API callers [`sigv4`] authenticates; in each
//!   handler function's pod, [`runtime`];
//! - the init container of handler functions: [`fetch`] (`fargo fetch-code`);
//! - the controller side's shared plumbing: [`reconcile`] (Events, metrics, status patches),
//!   [`caches`], [`replicas`], [`http_client`];
//! - its rooms: [`profile`], [`webhook`], [`function`], [`autoscaler`], [`schedule`],
//!   [`usage`] (metering, and `fargo usage`);
//! - its wiring, which only `main` imports: [`controller`].

pub mod activator;
pub mod api;
pub mod autoscaler;
pub mod caches;
pub mod connections;
pub mod controller;
pub mod diagnosis;
pub mod fetch;
pub mod function;
pub mod guarded;
pub mod http_client;
pub mod profile;
pub mod quantity;
pub mod reconcile;
pub mod replicas;
pub mod runtime;
pub mod schedule;
pub mod sigv4;
pub mod telemetry;
pub mod usage;
pub mod webhook;
