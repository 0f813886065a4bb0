//! Waiting for the cluster to get somewhere.

use std::time::Duration;

use super::processes::print_fargo_logs;

/// Polls `check` every 200 ms until it returns `Some`, for at most `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            print_fargo_logs();
            panic!("timed out after {seconds}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
