//! fargo: Fargate profiles and serverless functions for any Kubernetes cluster.
//!
//! The binary (`src/main.rs`) is thin; everything it runs lives here so tests and benchmarks can
//! reach it.

pub mod activator;
pub mod api;
pub mod autoscaler;
pub mod controller;
pub mod function;
pub mod profile;
pub mod schedule;
pub mod telemetry;
pub mod webhook;
