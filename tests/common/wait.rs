//! Waiting for the cluster to get somewhere.

use std::future::Future;
use std::time::Duration;

use kube::Client;

use super::processes::print_fargo_logs;
use super::report::namespace_report;

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

/// Polls `check` every 200 ms until it returns `Ok`, for at most `seconds`. On timeout it
/// panics with the last `Err` it saw and what `namespaces` hold.
pub async fn wait_for<T, F, Fut>(
    client: &Client,
    namespaces: &[String],
    seconds: u64,
    what: &str,
    check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    wait_reporting(client, namespaces, seconds, what, check, || async {
        String::new()
    })
    .await
}

/// [`wait_for`], whose report on timeout ends with what `more` returns (logs, say).
pub async fn wait_reporting<T, F, Fut, M, MFut>(
    client: &Client,
    namespaces: &[String],
    seconds: u64,
    what: &str,
    mut check: F,
    more: M,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
    M: FnOnce() -> MFut,
    MFut: Future<Output = String>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out after {seconds}s waiting for {what}; last seen: {last}\n{}{}",
                namespace_report(client, namespaces).await,
                more().await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
