//! Connections to pods, HTTP/1 with keep-alive. Each thread keeps its own idle connections,
//! by pod address: a request takes one that is ready (or opens one) and sends on it, and its
//! response body puts the connection back the moment it ends. A serving thread's requests
//! thus go out on connections whose tasks run on that thread too. A request costs the pool no
//! task of its own and, once a pod's connections are open, no allocation; it locks only its own
//! thread's idle connections, a lock nobody else takes but the sweeper, every few seconds. A
//! connection's task is spawned once, when it is opened.
//!
//! The proxy's own HTTP/1.1 path ([`super::plain`]) keeps plain streams to pods the same way
//! ([`PodStream`]), beside hyper's connections.
//!
//! Idle connections are closed after [`IDLE_TIMEOUT`] by [`sweep_forever`], which the proxy's
//! server runs; connections a pod closed are forgotten then too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use foldhash::fast::RandomState;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::proxy::UpstreamBody;

/// Idle connections to pods are closed after this long unused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// A pod that is listed accepts at once or not at all.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often idle connections that timed out are closed.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Why a request did not get its answer from the pod.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connecting: no answer within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    #[error("HTTP/1 handshake")]
    Handshake(#[source] hyper::Error),
    #[error("HTTP exchange")]
    Exchange(#[source] hyper::Error),
    #[error("HTTP exchange: {0}")]
    Io(#[source] std::io::Error),
    #[error("the answer is not valid HTTP/1.1: {0}")]
    Malformed(&'static str),
}

impl UpstreamError {
    /// Whether the request never reached the pod (no connection could be opened), so that it
    /// may be sent elsewhere whatever its method.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout | UpstreamError::Handshake(_)
        )
    }
}

/// A connection to a pod while one request uses it: [`PodConnection::release`] gives it back
/// to this thread's idle connections, dropping it closes it.
pub struct PodConnection {
    pod: SocketAddr,
    sender: http1::SendRequest<UpstreamBody>,
}

impl PodConnection {
    /// Keeps the connection for the next request to the same pod (on this thread), unless it is
    /// closed.
    pub fn release(self) {
        if !self.sender.is_closed() {
            // A thread that is ending has no idle connections to keep: the connection closes.
            let _ = IDLE.try_with(|idle| lock(idle).put(self.pod, self.sender));
        }
    }
}

/// A plain connection to a pod, for one exchange of the proxy's own HTTP/1.1 path:
/// [`PodStream::release`] gives it back to this thread's idle connections once the answer has
/// been read whole, dropping it closes it.
pub struct PodStream {
    pod: SocketAddr,
    pub stream: TcpStream,
}

impl PodStream {
    /// An idle stream of this thread's to `pod` that the pod has not closed (nor written to
    /// unasked), the one used last first; else a new one.
    pub async fn take_or_open(pod: SocketAddr) -> Result<Self, UpstreamError> {
        while let Some(stream) = IDLE.with(|idle| lock(idle).take_stream(pod)) {
            // Readable while idle is a close or bytes nobody asked for; either way not reused.
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(Self { pod, stream });
                }
                _ => continue,
            }
        }
        Ok(Self {
            pod,
            stream: connect(pod).await?,
        })
    }

    /// Keeps the stream for the next request to the same pod, on this thread.
    pub fn release(self) {
        // A thread that is ending has no idle connections to keep: the stream closes.
        let _ = IDLE.try_with(|idle| lock(idle).put_stream(self.pod, self.stream));
    }
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

struct IdleStream {
    stream: TcpStream,
    since: Instant,
}

/// One thread's idle connections.
#[derive(Default)]
struct IdleConnections {
    // Looked up twice a request: hashed faster than by the standard hasher, with a seed of
    // the process's own all the same.
    by_pod: HashMap<SocketAddr, Vec<Idle>, RandomState>,
    streams: HashMap<SocketAddr, Vec<IdleStream>, RandomState>,
}

impl IdleConnections {
    /// A connection to `pod` that is ready for a request, the one used last first.
    fn take(&mut self, pod: SocketAddr) -> Option<http1::SendRequest<UpstreamBody>> {
        let now = Instant::now();
        let connections = self.by_pod.get_mut(&pod)?;
        connections.retain(|idle| idle.usable(now));
        // One still finishing its last exchange (a request body that streams on) stays.
        // An emptied list stays for the connection's return (the sweeper drops it).
        connections
            .iter()
            .rposition(|idle| idle.sender.is_ready())
            .map(|ready| connections.remove(ready).sender)
    }

    fn put(&mut self, pod: SocketAddr, sender: http1::SendRequest<UpstreamBody>) {
        let since = Instant::now();
        self.by_pod
            .entry(pod)
            .or_default()
            .push(Idle { sender, since });
    }

    /// A stream to `pod` idle for less than [`IDLE_TIMEOUT`], the one used last first.
    fn take_stream(&mut self, pod: SocketAddr) -> Option<TcpStream> {
        let now = Instant::now();
        let streams = self.streams.get_mut(&pod)?;
        while let Some(idle) = streams.pop() {
            if now.saturating_duration_since(idle.since) < IDLE_TIMEOUT {
                return Some(idle.stream);
            }
        }
        None
    }

    fn put_stream(&mut self, pod: SocketAddr, stream: TcpStream) {
        let since = Instant::now();
        self.streams
            .entry(pod)
            .or_default()
            .push(IdleStream { stream, since });
    }

    /// Closes the connections idle for [`IDLE_TIMEOUT`] at `now`, and forgets those the pod
    /// closed.
    fn sweep(&mut self, now: Instant) {
        self.by_pod.retain(|_, connections| {
            connections.retain(|idle| idle.usable(now));
            !connections.is_empty()
        });
        self.streams.retain(|_, streams| {
            streams.retain(|idle| now.saturating_duration_since(idle.since) < IDLE_TIMEOUT);
            !streams.is_empty()
        });
    }
}

impl Idle {
    fn usable(&self, now: Instant) -> bool {
        !self.sender.is_closed() && now.saturating_duration_since(self.since) < IDLE_TIMEOUT
    }
}

type Shared = Arc<Mutex<IdleConnections>>;

thread_local! {
    static IDLE: Shared = register();
}

/// Every thread's idle connections, for the sweeper; a thread's go when it ends.
static THREADS: Mutex<Vec<Weak<Mutex<IdleConnections>>>> = Mutex::new(Vec::new());

fn register() -> Shared {
    let idle = Shared::default();
    lock(&THREADS).push(Arc::downgrade(&idle));
    idle
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends `request` (origin-form, with a `Host` header) to `pod`: on an idle connection of this
/// thread's when one is ready, else on a new one. A request an idle connection could not take
/// (the pod had closed it) goes out again on a new connection. Returns the answer and the
/// connection, to [`PodConnection::release`] once the answer's body has ended.
pub async fn send(
    pod: SocketAddr,
    request: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, PodConnection), UpstreamError> {
    let idle = IDLE.with(|idle| lock(idle).take(pod));
    let request = match idle {
        Some(mut sender) => match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, PodConnection { pod, sender })),
            Err(mut error) => match error.take_message() {
                Some(request) => request,
                None => return Err(UpstreamError::Exchange(error.into_error())),
            },
        },
        None => request,
    };
    let mut sender = open(pod).await?;
    match sender.send_request(request).await {
        Ok(response) => Ok((response, PodConnection { pod, sender })),
        Err(error) => Err(UpstreamError::Exchange(error)),
    }
}

/// A new TCP connection to `pod`, without Nagle's delay.
async fn connect(pod: SocketAddr) -> Result<TcpStream, UpstreamError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(pod))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens a connection to `pod`; its task runs on the calling thread's runtime.
async fn open(pod: SocketAddr) -> Result<http1::SendRequest<UpstreamBody>, UpstreamError> {
    let stream = connect(pod).await?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, %pod, "connection to a pod ended");
        }
    });
    Ok(sender)
}

/// Every [`SWEEP_EVERY`], closes every thread's idle connections that timed out.
pub async fn sweep_forever() {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        sweep_all(Instant::now());
    }
}

fn sweep_all(now: Instant) {
    lock(&THREADS).retain(|idle| match idle.upgrade() {
        Some(idle) => {
            lock(&idle).sweep(now);
            true
        }
        None => false,
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Either, Full};
    use hyper::service::service_fn;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A pod answering `ok` that counts the connections it accepted and those that ended.
    async fn pod() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound address");
        let (opened, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (counted_opened, counted_closed) = (opened.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted_opened.fetch_add(1, Ordering::SeqCst);
                let closed = counted_closed.clone();
                tokio::spawn(async move {
                    let service = service_fn(|_request: Request<Incoming>| async {
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (addr, opened, closed)
    }

    fn get() -> Request<UpstreamBody> {
        Request::builder()
            .uri("/")
            .header(hyper::header::HOST, "pod")
            .body(Either::Right(Full::new(Bytes::new())))
            .expect("a request")
    }

    /// One exchange, its body read to the end, as the proxy's response body does.
    async fn exchange(pod: SocketAddr) {
        let (response, connection) = send(pod, get()).await.expect("the pod answers");
        let body = response.into_body().collect().await.expect("a body");
        assert_eq!(body.to_bytes(), "ok");
        connection.release();
    }

    #[tokio::test]
    async fn requests_in_turn_share_one_connection() {
        let (pod, opened, _) = pod().await;
        for _ in 0..5 {
            exchange(pod).await;
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_not_given_back_is_not_reused() {
        let (pod, opened, _) = pod().await;
        let (_response, _kept) = send(pod, get()).await.expect("the pod answers");
        exchange(pod).await;
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_pod_closed_is_replaced() {
        // A pod that closes every connection after one answer, without saying so.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let pod = listener.local_addr().expect("bound address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut stream,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                )
                .await;
            }
        });
        for _ in 0..3 {
            exchange(pod).await;
        }
    }

    /// One exchange on a plain stream, read up to the end of the pod's `ok`.
    async fn plain_exchange(pod: SocketAddr) {
        let mut connection = PodStream::take_or_open(pod).await.expect("a stream");
        tokio::io::AsyncWriteExt::write_all(
            &mut connection.stream,
            b"GET / HTTP/1.1\r\nhost: pod\r\n\r\n",
        )
        .await
        .expect("sent");
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\nok") {
            let mut buffer = [0u8; 1024];
            let n = connection.stream.read(&mut buffer).await.expect("read");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buffer[..n]);
        }
        connection.release();
    }

    #[tokio::test]
    async fn plain_streams_in_turn_share_one_connection() {
        let (pod, opened, _) = pod().await;
        for _ in 0..3 {
            plain_exchange(pod).await;
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_plain_stream_the_pod_closed_or_wrote_to_unasked_is_not_taken() {
        // A pod that answers once on each connection, then closes it or writes more.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let pod = listener.local_addr().expect("bound address");
        let opened = Arc::new(AtomicUsize::new(0));
        let counted = opened.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let nth = counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = [0u8; 1024];
                    let _ = stream.read(&mut request).await;
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, answer).await;
                    if nth % 2 == 1 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, b"unasked").await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                });
            }
        });
        for _ in 0..4 {
            plain_exchange(pod).await;
            // The close, or the bytes, arrive while the stream is idle.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(opened.load(Ordering::SeqCst), 4, "a new stream each time");
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (pod, opened, closed) = pod().await;
        exchange(pod).await;
        // This thread's only: other tests' connections are not to be swept.
        let swept_at = |after: Duration| IDLE.with(|idle| lock(idle).sweep(Instant::now() + after));
        swept_at(IDLE_TIMEOUT - Duration::from_secs(1));
        exchange(pod).await;
        assert_eq!(opened.load(Ordering::SeqCst), 1, "kept while not timed out");
        swept_at(IDLE_TIMEOUT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while closed.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(closed.load(Ordering::SeqCst), 1, "the pod saw it closed");
        exchange(pod).await;
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }
}
