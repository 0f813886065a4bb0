//! The bounds on their own, with tokio's clock paused: every instant below is virtual, so the
//! tests say exactly when a connection closes without depending on the machine's speed.

use super::*;

fn limits(max_connections: usize, cut_requests_after: Option<u64>) -> ConnectionLimits {
    ConnectionLimits {
        max_connections,
        header_read_timeout: Duration::from_secs(10),
        evict_idle_after: Duration::from_millis(500),
        cut_requests_after: cut_requests_after.map(Duration::from_secs),
    }
}

/// A connection's task as the servers run it: it holds its place until told to close.
fn serve(place: Place) -> tokio::task::JoinHandle<(CloseReason, Instant)> {
    tokio::spawn(async move {
        let reason = place.closing().await;
        place.closed_for(reason);
        (reason, Instant::now())
    })
}

fn encode(metrics: ConnectionMetrics) -> String {
    let mut registry = Registry::default();
    registry.register("connections", "", metrics.open);
    registry.register("connections_closed", "", metrics.closed);
    registry.register("connection_waits", "", metrics.waits);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics encode");
    text
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_closes_after_the_header_read_timeout() {
    let connections = Connections::new(limits(4, None), ConnectionMetrics::default());
    let opened = Instant::now();
    let (reason, closed) = serve(connections.admit().await).await.expect("task");
    assert_eq!(reason, CloseReason::HeaderTimeout);
    assert_eq!(closed - opened, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_busy_connection_stays_and_its_idle_clock_restarts_after_the_response() {
    let connections = Connections::new(limits(4, None), ConnectionMetrics::default());
    let place = connections.admit().await;
    let request = place.requests().start();
    let task = serve(place);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        !task.is_finished(),
        "a request in progress keeps its connection"
    );
    let answered = Instant::now();
    drop(request);
    let (reason, closed) = task.await.expect("task");
    assert_eq!(reason, CloseReason::HeaderTimeout);
    assert_eq!(closed - answered, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn short_requests_on_a_kept_alive_connection_each_restart_its_idle_clock() {
    let connections = Connections::new(limits(4, None), ConnectionMetrics::default());
    let place = connections.admit().await;
    let requests = place.requests();
    let task = serve(place);
    // Keep-alive requests, the last ending at 8 s: past the first deadline (10 s after the
    // opening), the connection has been idle only since 8 s.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let request = requests.start();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(request);
    }
    let answered = Instant::now();
    let (reason, closed) = task.await.expect("task");
    assert_eq!(reason, CloseReason::HeaderTimeout);
    assert_eq!(closed - answered, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_the_connection_idle_longest_makes_room() {
    let metrics = ConnectionMetrics::default();
    let connections = Connections::new(limits(2, None), metrics.clone());
    let oldest = serve(connections.admit().await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let newer = serve(connections.admit().await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let arrived = Instant::now();

    let _third = connections.admit().await;
    let (reason, closed) = oldest.await.expect("task");
    assert_eq!(reason, CloseReason::Evicted);
    assert_eq!(closed, arrived, "the new connection did not wait");
    assert!(!newer.is_finished());
    let text = encode(metrics);
    assert!(
        text.contains("connections_closed_total{reason=\"evicted\"} 1"),
        "{text}"
    );
    assert!(text.contains("connections 2"), "{text}");
    assert!(text.contains("connection_waits_total 0"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn busy_connections_are_kept_and_a_new_one_waits_for_one_to_turn_idle() {
    let metrics = ConnectionMetrics::default();
    let connections = Connections::new(limits(1, None), metrics.clone());
    let busy = connections.admit().await;
    let request = busy.requests().start();
    let busy = serve(busy);

    let admission = tokio::spawn({
        let connections = connections.clone();
        async move { connections.admit().await }
    });
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        !admission.is_finished(),
        "no place while every connection is busy"
    );
    assert!(
        !busy.is_finished(),
        "a request in progress is never cut here"
    );
    assert!(encode(metrics).contains("connection_waits_total 1"));

    drop(request);
    let _place = admission
        .await
        .expect("admitted once the busy one turned idle");
    let (reason, _) = busy.await.expect("task");
    assert_eq!(reason, CloseReason::Evicted);
}

#[tokio::test(start_paused = true)]
async fn where_allowed_the_request_running_longest_is_cut_for_a_new_connection() {
    let connections = Connections::new(limits(2, Some(2)), ConnectionMetrics::default());
    let started = Instant::now();
    let first = connections.admit().await;
    let _first_request = first.requests().start();
    let first = serve(first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = connections.admit().await;
    let _second_request = second.requests().start();
    let second = serve(second);

    let _third = connections.admit().await;
    assert_eq!(
        Instant::now() - started,
        Duration::from_secs(2),
        "the new connection waits until a request has run the allowed time"
    );
    let (reason, _) = first.await.expect("task");
    assert_eq!(reason, CloseReason::Evicted);
    assert!(!second.is_finished());
}

#[tokio::test(start_paused = true)]
async fn all_closed_waits_for_every_place() {
    let connections = Connections::new(limits(2, None), ConnectionMetrics::default());
    let place = connections.admit().await;
    let request = place.requests().start();
    let waiting = tokio::spawn({
        let connections = connections.clone();
        async move { connections.all_closed().await }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!waiting.is_finished());
    drop(request);
    drop(place);
    waiting.await.expect("every connection closed");
}

#[tokio::test(start_paused = true)]
async fn writes_to_a_client_that_stops_reading_fail_after_the_timeout() {
    use tokio::io::AsyncWriteExt;
    let (_client, server) = tokio::io::duplex(64);
    let mut stream = StallTimeout::new(server, Duration::from_secs(10));
    stream
        .write_all(&[0; 64])
        .await
        .expect("room for the first bytes");
    let stalled = Instant::now();
    let error = stream.write_all(&[0; 64]).await.expect_err("nobody reads");
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(Instant::now() - stalled, Duration::from_secs(10));
    assert!(write_stalled(&error));
}

#[tokio::test(start_paused = true)]
async fn a_slow_but_steady_reader_keeps_its_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(64);
    let mut stream = StallTimeout::new(server, Duration::from_secs(10));
    let reader = tokio::spawn(async move {
        let mut byte = [0; 1];
        let mut read = 0;
        while read < 256 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            read += client.read(&mut byte).await.expect("a byte");
        }
    });
    stream
        .write_all(&[0; 256])
        .await
        .expect("every write progresses in time");
    reader.await.expect("reader");
}

#[tokio::test(start_paused = true)]
async fn a_connection_idle_only_a_moment_is_not_closed_and_the_new_one_waits() {
    let metrics = ConnectionMetrics::default();
    let connections = Connections::new(limits(1, None), metrics.clone());
    let answered = connections.admit().await;
    // A response just went out on it: its client is about to send the next request.
    drop(answered.requests().start());
    let answered = serve(answered);
    let arrived = Instant::now();

    let _place = connections.admit().await;
    let (reason, closed) = answered.await.expect("task");
    assert_eq!(reason, CloseReason::Evicted);
    assert_eq!(closed - arrived, Duration::from_millis(500));
    assert!(encode(metrics).contains("connection_waits_total 1"));
}
