//! The webhook's TLS server on loopback, with small bounds, against clients that are slow on
//! purpose: the API server's reviews are still answered, and the slow connections are closed by
//! the server. Outcomes only: no test asserts how fast anything happened.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::*;

const CAP: usize = 8;

/// Bounds as small as a test needs them; `None` stands for a time no test waits for, so that
/// the test shows some other bound at work.
fn limits(
    handshake_timeout: Option<u64>,
    header_read_timeout: Option<u64>,
    cut_requests_after: Option<u64>,
    request_timeout: Option<u64>,
) -> ServerLimits {
    let millis = |ms: Option<u64>| Duration::from_millis(ms.unwrap_or(3_600_000));
    ServerLimits {
        connections: ConnectionLimits {
            max_connections: CAP,
            header_read_timeout: millis(header_read_timeout),
            evict_idle_after: Duration::from_millis(50),
            cut_requests_after: Some(millis(cut_requests_after)),
        },
        handshake_timeout: millis(handshake_timeout),
        request_timeout: millis(request_timeout),
    }
}

struct Server {
    addr: SocketAddr,
    client_tls: tokio_rustls::TlsConnector,
    registry: Registry,
    _shutdown: tokio_util::sync::DropGuard,
}

impl Server {
    async fn start(limits: ServerLimits) -> Self {
        let certificate = certs::generate(&["127.0.0.1".into()]).expect("a certificate");
        let tls = tls_config(&certificate).expect("a server configuration");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("bound address");
        let mut registry = Registry::default();
        let metrics = WebhookMetrics::register(&mut registry);
        // No profile: every review is allowed, which is all these tests need of a decision.
        let (profiles, _) = kube::runtime::reflector::store::<FargateProfile>();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_tls(
            listener,
            tls,
            router(AppState {
                profiles,
                metrics: metrics.clone(),
                fargo_user: "fargo".into(),
            }),
            limits,
            metrics,
            shutdown.clone(),
        ));
        Self {
            addr,
            client_tls: client_tls(&certificate.ca_pem),
            registry,
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// A TLS connection: ALPN `h2`, or none (HTTP/1.1).
    fn tls(
        &self,
        http2: bool,
    ) -> impl Future<Output = std::io::Result<tokio_rustls::client::TlsStream<TcpStream>>> + use<>
    {
        let addr = self.addr;
        let connector = if http2 {
            self.client_tls.clone()
        } else {
            let mut config = rustls::ClientConfig::clone(self.client_tls.config());
            config.alpn_protocols.clear();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        };
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("127.0.0.1").expect("an IP address");
            connector.connect(name, tcp).await
        }
    }

    /// A review sent as the API server sends it: over TLS, as HTTP/2 or HTTP/1.1, one POST.
    async fn review(&self, http2: bool, body: Bytes) -> (StatusCode, String) {
        tokio::time::timeout(Duration::from_secs(20), self.send_review(http2, body))
            .await
            .expect("the review is answered")
    }

    async fn send_review(&self, http2: bool, body: Bytes) -> (StatusCode, String) {
        let stream = TokioIo::new(self.tls(http2).await.expect("TLS"));
        let request = hyper::Request::post(format!("https://127.0.0.1{VALIDATE_PATH}"))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("a request");
        let response = if http2 {
            let (mut sender, connection) = http2::handshake(TokioExecutor::new(), stream)
                .await
                .expect("HTTP/2");
            tokio::spawn(connection);
            sender.send_request(request).await
        } else {
            let (mut sender, connection) = http1::handshake(stream).await.expect("HTTP/1.1");
            tokio::spawn(connection);
            sender.send_request(request).await
        }
        .expect("an answer");
        let status = response.status();
        let body = response.into_body().collect().await.expect("a body");
        (
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        )
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text
    }
}

fn client_tls(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(certificate.expect("a CA certificate"))
            .expect("a usable CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The review the API server sends when a pod is created in an unprofiled namespace.
fn pod_review() -> Bytes {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web",
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            },
            "dryRun": false,
        },
    });
    Bytes::from(review.to_string())
}

/// Writes `bytes` one at a time, 50 ms apart, then keeps quiet; returns once the server has
/// closed the connection.
async fn dribble<S>(mut stream: S, bytes: &'static [u8])
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    let mut next = bytes.iter().cycle();
    let mut read = [0; 512];
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            outcome = stream.read(&mut read) => match outcome {
                Ok(0) | Err(_) => return,
                // A refusal (408, 431): the close follows.
                Ok(_) => {}
            },
            _ = tick.tick() => {
                let byte = next.next().copied().unwrap_or(b'x');
                if stream.write_all(&[byte]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A client that connects and sends nothing.
fn silent(addr: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            return;
        };
        let mut read = [0; 64];
        while let Ok(n) = tcp.read(&mut read).await {
            if n == 0 {
                return;
            }
        }
    })
}

/// A client that starts a TLS handshake and never finishes its ClientHello.
fn half_hello(addr: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Ok(tcp) = TcpStream::connect(addr).await {
            dribble(tcp, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await;
        }
    })
}

/// A client that completes TLS, then sends its request's headers a byte at a time.
fn slow_headers(server: &Server) -> JoinHandle<()> {
    let tls = server.tls(false);
    tokio::spawn(async move {
        if let Ok(stream) = tls.await {
            dribble(stream, b"POST /validate-pods HTTP/1.1\r\nx-slow: yes\r\n").await;
        }
    })
}

/// A client that completes TLS and its request's headers, then sends the body a byte at a time.
fn slow_body(server: &Server) -> JoinHandle<()> {
    let tls = server.tls(false);
    tokio::spawn(async move {
        let Ok(mut stream) = tls.await else {
            return;
        };
        let head = "POST /validate-pods HTTP/1.1\r\nhost: webhook\r\n\
                    content-type: application/json\r\ncontent-length: 100000\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_ok() {
            dribble(stream, b"{\"apiVersion\":").await;
        }
    })
}

/// Waits (boundedly) until the server has closed the connections of at least `expected` clients.
async fn closed_by_the_server(clients: &[JoinHandle<()>], expected: usize) {
    let waiting = async {
        loop {
            let closed = clients.iter().filter(|client| client.is_finished()).count();
            if closed >= expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the server closes the slow connections")
}

fn count(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn slow_and_silent_clients_do_not_keep_the_api_server_out() {
    // No timeout would free a place within the test: only closing the connection idle longest
    // lets the API server in.
    let server = Server::start(limits(None, None, None, None)).await;
    let mut slow = Vec::new();
    for _ in 0..CAP {
        slow.push(silent(server.addr));
        slow.push(half_hello(server.addr));
        slow.push(slow_headers(&server));
    }
    // Let them take every place (the outcome below does not depend on it).
    tokio::time::sleep(Duration::from_millis(100)).await;

    for http2 in [true, false] {
        let (status, body) = server.review(http2, pod_review()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(r#""allowed":true"#), "{body}");
    }
    // 3 × CAP slow connections and two reviews went through CAP places.
    closed_by_the_server(&slow, 2 * CAP).await;
    let metrics = server.metrics();
    assert!(
        count(&metrics, "connections_closed_total{reason=\"evicted\"}") >= 2 * CAP as u64,
        "{metrics}"
    );
}

#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed_by_the_timeouts() {
    let server = Server::start(limits(Some(300), Some(600), None, Some(1_000))).await;
    let mut slow = vec![
        silent(server.addr),
        half_hello(server.addr),
        slow_headers(&server),
        slow_body(&server),
    ];
    // A connection kept alive after its review, and then left unused.
    let stream = TokioIo::new(server.tls(false).await.expect("TLS"));
    let (mut sender, kept_alive) = http1::handshake(stream).await.expect("HTTP/1.1");
    let kept_alive = tokio::spawn(kept_alive);
    let request = hyper::Request::post(VALIDATE_PATH)
        .header("host", "webhook")
        .header("content-type", "application/json")
        .body(Full::new(pod_review()))
        .expect("a request");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    slow.push(tokio::spawn(async move {
        let _ = kept_alive.await;
    }));

    let all = slow.len();
    closed_by_the_server(&slow, all).await;
    let metrics = server.metrics();
    for (reason, closed) in [
        ("handshake_timeout", 2),
        ("header_timeout", 2),
        ("evicted", 0),
    ] {
        let series = format!("connections_closed_total{{reason=\"{reason}\"}}");
        assert_eq!(count(&metrics, &series), closed, "{reason}: {metrics}");
    }
    assert_eq!(
        count(&metrics, "requests_refused_total{reason=\"timeout\"}"),
        1,
        "{metrics}"
    );
}

#[tokio::test]
async fn reviews_whose_bodies_never_arrive_are_cut_for_the_api_server() {
    // No timeout would end the slow requests within the test: only cutting the one that has run
    // longest lets the API server in.
    let server = Server::start(limits(None, None, Some(300), None)).await;
    let slow: Vec<_> = (0..CAP).map(|_| slow_body(&server)).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (status, body) = server.review(true, pod_review()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    closed_by_the_server(&slow, 1).await;
}

#[tokio::test]
async fn a_review_over_the_size_bound_is_refused_with_413() {
    let server = Server::start(ServerLimits::default()).await;
    let padding = "x".repeat(MAX_REVIEW_BYTES);
    let oversized = Bytes::from(format!(r#"{{"padding":"{padding}"}}"#));
    let (status, _) = server.review(true, oversized).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let metrics = server.metrics();
    assert_eq!(
        count(
            &metrics,
            "requests_refused_total{reason=\"body_too_large\"}"
        ),
        1,
        "{metrics}"
    );
    let (status, _) = server.review(true, pod_review()).await;
    assert_eq!(status, StatusCode::OK);
}
