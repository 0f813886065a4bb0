//! The proxy end to end on loopback: a real activator in front of real HTTP pods (tiny hyper
//! servers), with the function index filled directly instead of from a cluster.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::*;
use crate::activator::function_state::{FunctionConfig, ObservedEndpoint};
use crate::activator::hold::HoldLimit;
use crate::activator::metrics::ActivatorMetrics;
use crate::activator::router::HttpRoute;
use crate::api::routes::ActivatorNames;

struct Activator {
    addr: SocketAddr,
    index: Arc<FunctionIndex>,
    registry: Registry,
    shutdown: Shutdown,
    served: tokio::task::JoinHandle<()>,
}

async fn activator(queue_depth: usize) -> Activator {
    activator_within(queue_depth, usize::MAX, limits()).await
}

/// The production figures, as `fargo activator` starts with them.
fn limits() -> ClientLimits {
    ClientLimits {
        connections: ConnectionLimits {
            max_connections: 2048,
            header_read_timeout: Duration::from_secs(30),
            evict_idle_after: crate::connections::EVICT_IDLE_AFTER,
            cut_requests_after: None,
        },
        max_header_bytes: 32 * 1024,
    }
}

async fn activator_within(
    queue_depth: usize,
    max_held_requests: usize,
    limits: ClientLimits,
) -> Activator {
    let mut registry = Registry::default();
    let index = Arc::new(FunctionIndex::new(
        ActivatorNames::new("fargo-activator", "fargo-system", "fargo.local"),
        queue_depth,
        HoldLimit::new(max_held_requests),
        ActivatorMetrics::register(&mut registry),
    ));
    let proxy = Arc::new(Proxy::new(index.clone(), None));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    let shutdown = Shutdown::default();
    // Two serving threads, as on a machine with two CPUs: every test goes through them.
    let served = tokio::spawn(serve(listener, proxy, limits, 2, shutdown.clone()));
    Activator {
        addr,
        index,
        registry,
        shutdown,
        served,
    }
}

impl Activator {
    fn metric(&self, series: &str) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn config(timeout_ms: u64, per_instance: u32) -> FunctionConfig {
    FunctionConfig {
        timeout: Duration::from_millis(timeout_ms),
        per_instance,
        port: 8080,
        answer_grace: Duration::ZERO,
        facts: Default::default(),
    }
}

fn ready(addr: SocketAddr) -> ObservedEndpoint {
    ObservedEndpoint {
        ip: addr.ip(),
        port: Some(addr.port()),
        ready: true,
        terminating: false,
    }
}

/// A pod that answers with what it received: method, target, some headers, and the body.
async fn echo_pod() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|request: Request<Incoming>| async move {
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string()
                };
                let mut text = format!(
                    "{} {}\nhost: {}\nx-forwarded-for: {}\nx-forwarded-host: {}\nx-forwarded-proto: {}\nx-real-ip: {}\nforwarded: {}\nx-private: {}\nx-fargo-invoke: {}\n",
                    request.method(),
                    request.uri(),
                    header("host"),
                    header("x-forwarded-for"),
                    header("x-forwarded-host"),
                    header("x-forwarded-proto"),
                    header("x-real-ip"),
                    header("forwarded"),
                    header("x-private"),
                    header("x-fargo-invoke"),
                );
                let body = request.into_body().collect().await?.to_bytes();
                text.push_str(&String::from_utf8_lossy(&body));
                Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(text))))
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    addr
}

/// A loopback address where nothing listens.
fn dead_pod() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("bound address")
}

async fn send(
    activator: SocketAddr,
    method: Method,
    host: &str,
    target: &str,
    body: &'static str,
) -> (StatusCode, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{activator}{target}"))
        .header(header::HOST, host)
        .header(header::CONNECTION, "x-private")
        .header("x-private", "secret")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("valid request");
    let response = client.request(request).await.expect("activator answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body arrives")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A GET with `headers` besides `Host`.
async fn get_with_headers(
    activator: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut request = Request::builder()
        .uri(format!("http://{activator}{target}"))
        .header(header::HOST, "activator.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::new()).expect("valid request");
    let response = client.request(request).await.expect("activator answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body arrives")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(activator: SocketAddr, target: &str) -> (StatusCode, String) {
    send(activator, Method::GET, "activator.test", target, "").await
}

#[tokio::test]
async fn proxies_to_the_pod_without_the_route_prefix() {
    let activator = activator(10).await;
    let pod = echo_pod().await;
    route_to(&activator, pod);

    let (status, body) = get(activator.addr, "/media/echo/a/b?size=2").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("GET /a/b?size=2\n"), "{body}");
    assert!(body.contains("host: activator.test\n"), "{body}");
    assert_forwarded_by_the_activator(&body);
    assert!(
        body.contains("x-private: -\n"),
        "headers named in Connection are hop-by-hop: {body}"
    );

    let (status, body) = get(activator.addr, "/media/echo").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("GET /\n"), "{body}");
}

#[tokio::test]
async fn forwarding_headers_the_client_sent_are_replaced_not_passed_on() {
    let activator = activator(10).await;
    let pod = echo_pod().await;
    route_to(&activator, pod);
    let (status, body) = get_with_headers(
        activator.addr,
        "/media/echo/",
        &[
            ("x-forwarded-for", "10.0.0.1"),
            ("X-Forwarded-For", "192.168.1.1"),
            ("x-forwarded-host", "admin.internal"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1;proto=https"),
            // Only fargo marks an invocation as a raw event, never a client.
            ("x-fargo-invoke", "event"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_forwarded_by_the_activator(&body);
    assert!(body.contains("x-fargo-invoke: -\n"), "{body}");
    for forged in ["10.0.0.1", "192.168.1.1", "admin.internal", "https"] {
        assert!(!body.contains(forged), "{forged} reached the pod: {body}");
    }
}

#[tokio::test]
async fn function_host_passes_the_whole_path() {
    let activator = activator(10).await;
    let pod = echo_pod().await;
    route_to(&activator, pod);
    let (status, body) = send(
        activator.addr,
        Method::GET,
        "echo.media.fargo.local",
        "/media/x",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("GET /media/x\n"), "{body}");
}

#[tokio::test]
async fn request_body_streams_to_the_pod() {
    let activator = activator(10).await;
    let pod = echo_pod().await;
    route_to(&activator, pod);
    let (status, body) = send(
        activator.addr,
        Method::POST,
        "activator.test",
        "/media/echo/upload",
        "hello pod",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("POST /upload\n"), "{body}");
    assert!(body.ends_with("hello pod"), "{body}");
}

#[tokio::test]
async fn unknown_function_gets_404_naming_it() {
    let activator = activator(10).await;
    let (status, body) = get(activator.addr, "/media/missing/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "no function \"missing\" in namespace \"media\"\n");
}

#[tokio::test]
async fn held_request_is_proxied_once_a_pod_is_ready() {
    let activator = activator(10).await;
    let pod = echo_pod().await;
    activator
        .index
        .upsert("media", "echo", config(5_000, 0), HttpRoute::default());
    let request = tokio::spawn(get(activator.addr, "/media/echo/wake"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let function = activator
        .index
        .get("media", "echo")
        .expect("function is known");
    assert!(function.is_holding(), "the request waits for a pod");
    activator
        .index
        .set_endpoints("media", "echo", &[ready(pod)]);
    let (status, body) = request.await.expect("request finishes");
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("GET /wake\n"), "{body}");
}

#[tokio::test]
async fn held_request_times_out_with_504_naming_the_function() {
    let activator = activator(10).await;
    activator
        .index
        .upsert("media", "echo", config(200, 0), HttpRoute::default());
    let (status, body) = get(activator.addr, "/media/echo/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body,
        "function media/echo: no pod became ready within 0.200s (no pod is listed for it)\n"
    );
}

#[tokio::test]
async fn full_hold_queue_answers_429() {
    let activator = activator(1).await;
    activator
        .index
        .upsert("media", "echo", config(2_000, 0), HttpRoute::default());
    let held = tokio::spawn(get(activator.addr, "/media/echo/"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = get(activator.addr, "/media/echo/").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        body.contains("media/echo already holds 1 requests"),
        "{body}"
    );
    held.abort();
}

/// A pod that answers `ok`, or nothing (204) under `/empty`, and counts the connections it
/// accepted.
async fn counting_pod() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let service = service_fn(|request: Request<Incoming>| async move {
                let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                if request.uri().path() == "/empty" {
                    *response.body_mut() = Full::new(Bytes::new());
                    *response.status_mut() = StatusCode::NO_CONTENT;
                }
                Ok::<_, hyper::Error>(response)
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_kept_alive_client_reaches_the_pod_on_one_connection() {
    let activator = activator(10).await;
    let (pod, accepted) = counting_pod().await;
    route_to(&activator, pod);
    // One client connection, so one serving thread.
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    for (method, path, expected) in [
        (Method::GET, "/media/echo/", "ok"),
        (Method::GET, "/media/echo/empty", ""),
        (Method::HEAD, "/media/echo/", ""),
        (Method::GET, "/media/echo/", "ok"),
        (Method::GET, "/media/echo/", "ok"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", activator.addr))
            .header(header::HOST, "activator.test")
            .body(Empty::new())
            .expect("valid request");
        let response = client.request(request).await.expect("activator answers");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let body = response.into_body().collect().await.expect("a body");
        assert_eq!(body.to_bytes(), expected, "{path}");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "every request, an empty answer's too, went out on the first connection"
    );
}

#[tokio::test]
async fn refused_connection_is_retried_on_another_pod() {
    let activator = activator(10).await;
    let pod = echo_pod().await;
    activator
        .index
        .upsert("media", "echo", config(5_000, 0), HttpRoute::default());
    activator
        .index
        .set_endpoints("media", "echo", &[ready(dead_pod()), ready(pod)]);
    for _ in 0..4 {
        let (status, body) = get(activator.addr, "/media/echo/").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

#[tokio::test]
async fn refused_connection_with_a_body_is_a_502() {
    let activator = activator(10).await;
    let dead = dead_pod();
    route_to(&activator, dead);
    let (status, body) = send(
        activator.addr,
        Method::POST,
        "activator.test",
        "/media/echo/",
        "payload",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body.starts_with(&format!("function media/echo: pod {dead} failed")),
        "{body}"
    );
}

#[tokio::test]
async fn stopping_finishes_held_requests() {
    let activator = activator(10).await;
    let pod = echo_pod().await;
    activator
        .index
        .upsert("media", "echo", config(5_000, 0), HttpRoute::default());
    let request = tokio::spawn(get(activator.addr, "/media/echo/late"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    activator.shutdown.stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !activator.served.is_finished(),
        "a held request keeps the server up"
    );
    activator
        .index
        .set_endpoints("media", "echo", &[ready(pod)]);
    let (status, _) = request.await.expect("request finishes");
    assert_eq!(status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(5), activator.served)
        .await
        .expect("server stops once nothing is in flight")
        .expect("server task ends cleanly");
}

#[tokio::test]
async fn draining_closes_each_keepalive_connection_after_its_response() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let activator = activator(10).await;
    let pod = echo_pod().await;
    route_to(&activator, pod);
    let request = b"GET /media/echo/ HTTP/1.1\r\nhost: activator.test\r\n\r\n";

    // Before the drain the connection stays open for the next request.
    let mut kept = tokio::net::TcpStream::connect(activator.addr)
        .await
        .expect("connect");
    kept.write_all(request).await.expect("request sent");
    let mut buffer = vec![0; 4096];
    let read = kept.read(&mut buffer).await.expect("response");
    let first = String::from_utf8_lossy(&buffer[..read]).to_lowercase();
    assert!(first.starts_with("http/1.1 200"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");

    // Draining: the next response on the same connection says close, and the server closes it.
    activator.shutdown.draining.cancel();
    kept.write_all(request).await.expect("second request sent");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection after the response")
        .expect("read to the end");
    let second = String::from_utf8_lossy(&rest).to_lowercase();
    assert!(second.starts_with("http/1.1 200"), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    assert!(
        !activator.served.is_finished(),
        "draining still serves new connections"
    );
    let (status, _) = get(activator.addr, "/media/echo/").await;
    assert_eq!(status, StatusCode::OK);
}

/// The forwarding headers the echo pod saw are the activator's own view of the request.
fn assert_forwarded_by_the_activator(body: &str) {
    for header in [
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-host: activator.test",
        "x-forwarded-proto: http",
        "x-real-ip: 127.0.0.1",
        "forwarded: for=127.0.0.1;host=\"activator.test\";proto=http",
    ] {
        assert!(body.contains(&format!("{header}\n")), "{header}: {body}");
    }
}

/// Sends `request` as is on a new connection and reads until the activator closes it.
async fn exchange(activator: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(activator).await.expect("connect");
    stream.write_all(request).await.expect("request sent");
    let mut response = Vec::new();
    let read = stream.read_to_end(&mut response);
    let _ = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the activator closes the connection");
    String::from_utf8_lossy(&response).to_lowercase()
}

/// Small figures, so that the bounds bite within a test; `None` is a time no test waits for.
fn small_limits(header_read_timeout_ms: Option<u64>) -> ClientLimits {
    ClientLimits {
        connections: ConnectionLimits {
            max_connections: CAP,
            header_read_timeout: Duration::from_millis(header_read_timeout_ms.unwrap_or(3_600_000)),
            evict_idle_after: Duration::from_millis(50),
            cut_requests_after: None,
        },
        max_header_bytes: 8 * 1024,
    }
}

const CAP: usize = 8;

/// A client that connects, writes `bytes` one at a time 50 ms apart, and returns once the
/// activator has closed the connection.
fn dribbler(activator: SocketAddr, bytes: &'static [u8]) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut stream) = TcpStream::connect(activator).await else {
            return;
        };
        let mut next = bytes.iter();
        let mut read = [0; 512];
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                outcome = stream.read(&mut read) => match outcome {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = tick.tick() => {
                    // Once the bytes run out it keeps quiet, as an idle client does.
                    if let Some(byte) = next.next()
                        && stream.write_all(&[*byte]).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
}

/// Waits (boundedly) until the activator has closed the connections of at least `expected`
/// clients.
async fn closed_by_the_activator(clients: &[JoinHandle<()>], expected: usize) {
    let waiting = async {
        while clients.iter().filter(|client| client.is_finished()).count() < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the activator closes the slow connections");
}

async fn echo_function(activator: &Activator) {
    route_to(activator, echo_pod().await);
}

/// The function `media/echo` (timeout 5 s, no concurrency bound) on the one ready `pod`.
fn route_to(activator: &Activator, pod: SocketAddr) {
    activator
        .index
        .upsert("media", "echo", config(5_000, 0), HttpRoute::default());
    activator
        .index
        .set_endpoints("media", "echo", &[ready(pod)]);
}

#[tokio::test]
async fn slow_and_silent_clients_do_not_keep_other_tenants_out() {
    // No timeout would free a place within the test: only closing the connection idle longest
    // lets the other tenant in.
    let activator = activator_within(10, usize::MAX, small_limits(None)).await;
    echo_function(&activator).await;
    let mut slow = Vec::new();
    for _ in 0..CAP {
        slow.push(dribbler(activator.addr, b""));
        slow.push(dribbler(
            activator.addr,
            b"GET /media/echo/ HTTP/1.1\r\nhost: a",
        ));
        slow.push(dribbler(activator.addr, b"PRI * HTTP/2.0\r\n"));
    }
    // Let them take every place (the outcome below does not depend on it).
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (status, body) =
        tokio::time::timeout(Duration::from_secs(20), get(activator.addr, "/media/echo/"))
            .await
            .expect("the other tenant is answered");
    assert_eq!(status, StatusCode::OK, "{body}");
    // 3 × CAP slow connections and the tenant's went through CAP places.
    closed_by_the_activator(&slow, 2 * CAP).await;
    assert!(activator.metric("connections_closed_total{reason=\"evicted\"}") >= 2 * CAP as u64);
}

#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed_after_the_header_read_timeout() {
    let activator = activator_within(10, usize::MAX, small_limits(Some(500))).await;
    echo_function(&activator).await;
    let mut clients = vec![
        dribbler(activator.addr, b""),
        dribbler(activator.addr, b"GET /media/echo/ HTTP/1.1\r\nhost: a"),
    ];
    // An HTTP/1.1 connection kept alive after its request, then left unused.
    let mut kept_alive = TcpStream::connect(activator.addr).await.expect("connect");
    kept_alive
        .write_all(b"GET /media/echo/ HTTP/1.1\r\nhost: activator.test\r\n\r\n")
        .await
        .expect("request sent");
    let mut answer = [0; 12];
    kept_alive.read_exact(&mut answer).await.expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    clients.push(tokio::spawn(async move {
        let mut rest = Vec::new();
        let _ = kept_alive.read_to_end(&mut rest).await;
    }));
    // The same over HTTP/2 (prior knowledge), which has no header timer of its own.
    let stream = TokioIo::new(TcpStream::connect(activator.addr).await.expect("connect"));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), stream)
            .await
            .expect("HTTP/2");
    let connection = tokio::spawn(connection);
    let request = Request::get(format!("http://{}/media/echo/", activator.addr))
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    clients.push(tokio::spawn(async move {
        let _keep = sender;
        let _ = connection.await;
    }));

    let all = clients.len();
    closed_by_the_activator(&clients, all).await;
    assert_eq!(
        activator.metric("connections_closed_total{reason=\"header_timeout\"}"),
        4
    );
    assert_eq!(
        activator.metric("connections_closed_total{reason=\"evicted\"}"),
        0
    );
}

#[tokio::test]
async fn requests_held_beyond_the_activator_limit_get_503_while_the_held_ones_stay() {
    let activator = activator_within(10, 2, limits()).await;
    for name in ["thumbnail", "resize"] {
        activator
            .index
            .upsert("media", name, config(5_000, 0), HttpRoute::default());
    }
    let thumbnail = tokio::spawn(get(activator.addr, "/media/thumbnail/"));
    let resize = tokio::spawn(get(activator.addr, "/media/resize/"));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let refused = exchange(
        activator.addr,
        b"GET /media/thumbnail/ HTTP/1.1\r\nhost: activator.test\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("http/1.1 503"), "{refused}");
    assert!(refused.contains("\r\nretry-after: 1\r\n"), "{refused}");
    assert!(
        refused.ends_with(
            "the activator already holds 2 requests waiting for pods, all functions together; \
             retry later\n"
        ),
        "{refused}"
    );
    assert_eq!(activator.metric("held_refused_total"), 1);

    for name in ["thumbnail", "resize"] {
        let function = activator.index.get("media", name).expect("known");
        assert!(function.is_holding(), "{name} still holds its request");
    }
    let pod = echo_pod().await;
    for name in ["thumbnail", "resize"] {
        activator.index.set_endpoints("media", name, &[ready(pod)]);
    }
    for request in [thumbnail, resize] {
        let (status, body) = request.await.expect("request finishes");
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

#[tokio::test]
async fn headers_over_the_bound_are_refused_with_431() {
    let activator = activator_within(10, usize::MAX, small_limits(None)).await;
    let big = format!(
        "GET /media/missing/ HTTP/1.1\r\nhost: activator.test\r\nx-big: {}\r\n\r\n",
        "b".repeat(9 * 1024)
    );
    let refused = exchange(activator.addr, big.as_bytes()).await;
    assert!(refused.starts_with("http/1.1 431"), "{refused}");

    let many: String = (0..101).map(|n| format!("x-{n}: {n}\r\n")).collect();
    let many = format!("GET /media/missing/ HTTP/1.1\r\nhost: activator.test\r\n{many}\r\n");
    let refused = exchange(activator.addr, many.as_bytes()).await;
    assert!(refused.starts_with("http/1.1 431"), "{refused}");
    // The connection's thread counts its close once the answer is out.
    let closed = r#"connections_closed_total{reason="headers_too_large"}"#;
    for _ in 0..100 {
        if activator.metric(closed) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(activator.metric(closed), 2);

    let fits = format!(
        "GET /media/missing/ HTTP/1.1\r\nhost: activator.test\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "b".repeat(6 * 1024)
    );
    let answered = exchange(activator.addr, fits.as_bytes()).await;
    assert!(answered.starts_with("http/1.1 404"), "{answered}");
}

/// A pod that answers every request with `megabytes` MiB, streamed.
async fn big_pod(megabytes: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(move |_request: Request<Incoming>| async move {
                let mebibyte = Bytes::from(vec![b'x'; 1024 * 1024]);
                let frames = std::iter::repeat_n(mebibyte, megabytes)
                    .map(|chunk| Ok::<_, hyper::Error>(Frame::data(chunk)));
                let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
                Ok::<_, hyper::Error>(Response::new(body))
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    addr
}

/// Sends a GET on a new connection and reads no more than the status line.
async fn status_line_only(activator: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(activator).await.expect("connect");
    let request = format!("GET {target} HTTP/1.1\r\nhost: activator.test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut status = [0; 12];
    stream.read_exact(&mut status).await.expect("a status line");
    (stream, String::from_utf8_lossy(&status).into_owned())
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection_and_its_place_on_the_pod() {
    // The function's own timeout is far away: only the stalled writes end the first request.
    let activator = activator_within(10, usize::MAX, small_limits(Some(500))).await;
    activator
        .index
        .upsert("media", "video", config(3_600_000, 1), HttpRoute::default());
    let pod = big_pod(64).await;
    activator
        .index
        .set_endpoints("media", "video", &[ready(pod)]);

    let (stalled, status) = status_line_only(activator.addr, "/media/video/").await;
    assert_eq!(status, "HTTP/1.1 200");
    // perInstance is 1: the next request waits for the stalled one's place.
    let (_next, status) = tokio::time::timeout(
        Duration::from_secs(20),
        status_line_only(activator.addr, "/media/video/"),
    )
    .await
    .expect("the next request gets the place");
    assert_eq!(status, "HTTP/1.1 200");
    let counted = async {
        while activator.metric("connections_closed_total{reason=\"write_stalled\"}") != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), counted)
        .await
        .expect("the stalled connection is counted");
    drop(stalled);
}

#[tokio::test]
async fn http2_headers_over_the_bound_get_431_and_the_connection_stays() {
    let activator = activator_within(10, usize::MAX, small_limits(None)).await;
    let stream = TokioIo::new(TcpStream::connect(activator.addr).await.expect("connect"));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), stream)
            .await
            .expect("HTTP/2");
    tokio::spawn(connection);
    let request = |big: Option<String>| {
        let mut request = Request::get(format!("http://{}/media/missing/", activator.addr));
        if let Some(big) = big {
            request = request.header("x-big", big);
        }
        request.body(Empty::<Bytes>::new()).expect("a request")
    };
    let refused = sender
        .send_request(request(Some("b".repeat(9 * 1024))))
        .await
        .expect("an answer");
    assert_eq!(
        refused.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let answered = sender.send_request(request(None)).await.expect("an answer");
    assert_eq!(answered.status(), StatusCode::NOT_FOUND);
}

#[test]
fn every_header_any_connection_header_names_is_dropped() {
    let mut headers = HeaderMap::new();
    headers.append(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, x-first"),
    );
    headers.append(header::CONNECTION, HeaderValue::from_static("x-second"));
    headers.append(
        header::CONNECTION,
        HeaderValue::from_bytes(b"x-third, caf\xe9").expect("obs-text is a valid value"),
    );
    for name in ["x-first", "x-second", "x-third", "x-kept"] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static("v"));
    }
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    remove_hop_by_hop(&mut headers);
    let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    assert_eq!(left, ["x-kept"]);
}

/// A pod that answers each request it reads (up to the end of its head) with the next of
/// `answers` as is, on every connection, and closes a connection after an answer marked `true`.
async fn scripted_pod(answers: &'static [(&'static [u8], bool)]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let next = next.clone();
            tokio::spawn(async move {
                let mut read = Vec::new();
                loop {
                    let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut buffer = [0u8; 4096];
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read.extend_from_slice(&buffer[..n]),
                        }
                        continue;
                    };
                    read.drain(..end + 4);
                    let at = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (answer, close) = answers[at % answers.len()];
                    if stream.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads from `stream` until what was read ends with `end`, within 10 s.
async fn read_until(stream: &mut TcpStream, end: &str) -> String {
    let mut read = Vec::new();
    let reading = async {
        while !read.ends_with(end.as_bytes()) {
            let mut buffer = [0u8; 4096];
            let n = stream
                .read(&mut buffer)
                .await
                .expect("the activator answers");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&read));
            read.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the answer arrives");
    String::from_utf8_lossy(&read).into_owned()
}

const PLAIN_GET: &[u8] = b"GET /media/echo/ HTTP/1.1\r\nHost: activator.test\r\n\r\n";

#[tokio::test]
async fn answers_a_pod_frames_in_chunks_or_by_closing_reach_the_client_whole() {
    let activator = activator(10).await;
    let pod = scripted_pod(&[
        (
            b"HTTP/1.1 200 OK\r\nX-Case: Kept\r\nTransfer-Encoding: chunked\r\n\r\n\
              4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true),
    ])
    .await;
    route_to(&activator, pod);
    let mut client = TcpStream::connect(activator.addr).await.expect("connect");
    client.write_all(PLAIN_GET).await.expect("sent");
    let first = read_until(&mut client, "\r\n0\r\n\r\n").await;
    // Taken by the activator's own path, which keeps the pod's field names as they are.
    assert!(first.contains("\r\nX-Case: Kept\r\n"), "{first}");
    assert!(
        first.contains("\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"),
        "{first}"
    );
    assert!(!first.contains("Expires"), "trailers are left out: {first}");
    client.write_all(PLAIN_GET).await.expect("sent");
    let second = read_until(&mut client, "\r\n0\r\n\r\n").await;
    assert!(
        second.to_lowercase().contains("transfer-encoding: chunked"),
        "{second}"
    );
    assert!(
        second.contains("\r\n\r\nd\r\nuntil the end\r\n0\r\n\r\n"),
        "{second}"
    );
}

#[tokio::test]
async fn bytes_a_pod_sends_past_its_answer_never_reach_the_next_request() {
    let activator = activator(10).await;
    // An answer with a forged one behind it, on the same connection.
    let pod = scripted_pod(&[(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok\
          HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged",
        false,
    )])
    .await;
    route_to(&activator, pod);
    let mut client = TcpStream::connect(activator.addr).await.expect("connect");
    for _ in 0..3 {
        client.write_all(PLAIN_GET).await.expect("sent");
        let answer = read_until(&mut client, "\r\n\r\nok").await;
        assert!(!answer.contains("forged"), "{answer}");
    }
    // Nothing else arrives: the forged answer was dropped with the pod's connection.
    let mut more = [0u8; 64];
    let extra = tokio::time::timeout(Duration::from_millis(200), client.read(&mut more)).await;
    assert!(
        extra.is_err(),
        "{:?}",
        extra.map(|r| r.map(|n| more[..n].to_vec()))
    );
}

#[tokio::test]
async fn a_connection_serves_plain_requests_then_the_others_in_order() {
    let activator = activator(10).await;
    route_to(&activator, echo_pod().await);
    let mut client = TcpStream::connect(activator.addr).await.expect("connect");
    // Two plain requests sent at once, then one with a body (which hyper serves), then plain.
    let mut requests = PLAIN_GET.to_vec();
    requests
        .extend_from_slice(b"GET /media/echo/second?q=1 HTTP/1.1\r\nHost: activator.test\r\n\r\n");
    client.write_all(&requests).await.expect("sent");
    let answers = read_until(&mut client, "x-fargo-invoke: -\n").await;
    let answers = if answers.matches("x-fargo-invoke").count() < 2 {
        answers + &read_until(&mut client, "x-fargo-invoke: -\n").await
    } else {
        answers
    };
    let first = answers.find("GET /\n").expect("the first answer");
    let second = answers
        .find("GET /second?q=1\n")
        .expect("the second answer");
    assert!(first < second, "{answers}");
    client
        .write_all(
            b"POST /media/echo/posted HTTP/1.1\r\nHost: activator.test\r\n\
              transfer-encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
        )
        .await
        .expect("sent");
    let posted = read_until(&mut client, "x-fargo-invoke: -\nbody").await;
    assert!(posted.contains("POST /posted\n"), "{posted}");
    client.write_all(PLAIN_GET).await.expect("sent");
    let last = read_until(&mut client, "x-fargo-invoke: -\n").await;
    assert!(last.contains("GET /\n"), "{last}");
    assert_forwarded_by_the_activator(&last);
}

#[tokio::test]
async fn a_small_body_that_came_with_its_head_stays_on_the_activators_own_path() {
    let activator = activator(10).await;
    route_to(&activator, echo_pod().await);
    let case = scripted_pod(&[(
        b"HTTP/1.1 200 OK\r\nX-Case: Kept\r\ncontent-length: 2\r\n\r\nok",
        false,
    )])
    .await;
    activator
        .index
        .upsert("media", "case", config(5_000, 0), HttpRoute::default());
    activator
        .index
        .set_endpoints("media", "case", &[ready(case)]);
    const CASE: &[u8] = b"GET /media/case/ HTTP/1.1\r\nHost: activator.test\r\n\r\n";
    let post =
        b"POST /media/echo/posted HTTP/1.1\r\nHost: activator.test\r\ncontent-length: 4\r\n\r\n";

    let mut client = TcpStream::connect(activator.addr).await.expect("connect");
    client
        .write_all(&[&post[..], b"body"].concat())
        .await
        .expect("sent");
    let posted = read_until(&mut client, "x-fargo-invoke: -\nbody").await;
    assert!(posted.contains("POST /posted\n"), "{posted}");
    // Still the activator's own path, which keeps a pod's field names as they are.
    client.write_all(CASE).await.expect("sent");
    let answer = read_until(&mut client, "\r\n\r\nok").await;
    assert!(answer.contains("\r\nX-Case: Kept\r\n"), "{answer}");

    // A body that comes after its head goes to hyper, with the rest of the connection.
    client.write_all(post).await.expect("sent");
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.write_all(b"late").await.expect("sent");
    let posted = read_until(&mut client, "x-fargo-invoke: -\nlate").await;
    assert!(posted.contains("POST /posted\n"), "{posted}");
    client.write_all(CASE).await.expect("sent");
    let answer = read_until(&mut client, "\r\n\r\nok").await;
    assert!(
        answer.contains("\r\nx-case: Kept\r\n"),
        "hyper's, lower-cased: {answer}"
    );
}

#[tokio::test]
async fn a_body_whose_length_the_client_calls_hop_by_hop_stays_the_body() {
    let activator = activator(10).await;
    route_to(&activator, echo_pod().await);
    let smuggled = "GET /media/echo/ HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 6.6.6.6\r\n\r\n";
    let request = format!(
        "POST /media/echo/posted HTTP/1.1\r\nHost: activator.test\r\n\
         Connection: content-length\r\ncontent-length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut client = TcpStream::connect(activator.addr).await.expect("connect");
    client.write_all(request.as_bytes()).await.expect("sent");
    let answer = read_until(&mut client, "6.6.6.6\r\n\r\n").await;
    assert!(answer.contains("POST /posted\n"), "{answer}");
    assert!(answer.contains("x-forwarded-for: 127.0.0.1\n"), "{answer}");
    assert!(
        answer.ends_with(&format!("x-fargo-invoke: -\n{smuggled}")),
        "the pod's body: {answer}"
    );
}
