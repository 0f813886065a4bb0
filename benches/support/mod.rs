//! What the benchmarks share beside tests/common: percentiles and the runtime they run on.

// Each benchmark compiles this module and uses part of it.
#![allow(dead_code)]

use std::time::Duration;

/// The `p` quantile (0.0–1.0) of samples sorted in ascending order.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Runs a benchmark's body on a Tokio runtime.
pub fn run(benchmark: impl std::future::Future<Output = ()>) {
    tokio::runtime::Runtime::new()
        .expect("a Tokio runtime")
        .block_on(benchmark);
}
