//! The connections of fargo's two servers that anything in the cluster can reach — the admission
//! webhook and the activator's proxy — and the bounds that keep slow, silent or idle clients from
//! holding them.
//!
//! A server keeps at most `max_connections` open. A connection is *idle* while no request is in
//! progress on it: from its opening until its first request's headers are complete, and from the
//! end of each response until the next request's headers are. An idle connection is closed after
//! `header_read_timeout`, and when a new connection needs its place: the one that has been idle
//! longest goes first, once it has been idle for `evict_idle_after` — a connection just opened,
//! or just answered, is the one its client is about to send a request on, and closing it then
//! fails that request (an HTTP/1 client does not send a POST again). A client that dribbles its
//! headers, sends nothing, or keeps a connection it does not use therefore never keeps another
//! client out for longer than that. Only while no connection can be closed does a new one wait,
//! in the listen backlog, for a place to free; a server that allows it also closes, then, a
//! connection whose request has run too long.
//!
//! hyper's own HTTP/1 header timer is not used: it starts only once the protocol is known, so it
//! misses a client that sends nothing at all, and HTTP/2 has none. This one clock covers both.
//!
//! A busy connection has a bound too: one whose writes make no progress for the header read
//! timeout — a client that stops reading its response — is closed ([`StallTimeout`]), since
//! hyper would otherwise wait on it, and keep its request in progress, for ever.

use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::future::Either;
use futures::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a connection closed for idling may take to say goodbye (HTTP/2's GOAWAY) before it
/// is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long a connection is idle before it may be closed for a new one, on both servers: the
/// API server and HTTP clients send on a connection within microseconds of opening it or of
/// reading a response on it, so a connection idle this long is not about to be used.
pub const EVICT_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The bounds on one server's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a connection may be idle: a new connection must complete its first request's
    /// headers within this time, and a kept-alive one its next request's. It is the header read
    /// timeout and the keep-alive idle timeout in one.
    pub header_read_timeout: Duration,
    /// How long a connection must have been idle before it is closed to make room for a new one.
    /// Until then the new connection waits: under a burst, the connections idle a moment are the
    /// ones the client (the API server, for the webhook) is about to reuse.
    pub evict_idle_after: Duration,
    /// When every connection is busy, one whose request has run this long is closed, request
    /// and all, to make room; `None`: requests are never cut for a new connection.
    pub cut_requests_after: Option<Duration>,
}

/// Why the server closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Idle for the whole header read timeout.
    HeaderTimeout,
    /// Closed to make room for a new connection at the cap.
    Evicted,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// A request's headers were larger than allowed (HTTP/1 answers 431 first).
    HeadersTooLarge,
    /// The client took none of the response's bytes for the header read timeout.
    WriteStalled,
}

impl CloseReason {
    fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::HeadersTooLarge => "headers_too_large",
            CloseReason::WriteStalled => "write_stalled",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    reason: &'static str,
}

/// How often the bounds bite: connections open, closed by each bound, and left waiting at the cap.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    closed: Family<CloseLabels, Counter>,
    waits: Counter,
}

impl ConnectionMetrics {
    /// Registers the series in a component's sub-registry (`webhook`, `activator`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "connections",
            "Client connections open",
            metrics.open.clone(),
        );
        registry.register(
            "connections_closed",
            "Client connections the server closed, by the bound that closed them",
            metrics.closed.clone(),
        );
        registry.register(
            "connection_waits",
            "New connections left in the listen backlog because every open one was busy",
            metrics.waits.clone(),
        );
        metrics
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closed
            .get_or_create(&CloseLabels {
                reason: reason.label(),
            })
            .inc();
    }
}

/// The open connections of one server.
pub struct Connections {
    limits: ConnectionLimits,
    places: Arc<Semaphore>,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    /// Wakes an admission waiting at the cap: a connection turned idle, so it can be closed.
    turned_idle: Notify,
    metrics: ConnectionMetrics,
}

/// What one connection is doing.
struct Activity {
    state: Mutex<ActivityState>,
    evicted: CancellationToken,
}

#[derive(Clone, Copy, Debug)]
struct ActivityState {
    /// Requests in progress (HTTP/2 carries several at once).
    requests: usize,
    /// When the connection last turned idle (or opened), or busy.
    since: Instant,
}

impl Activity {
    fn state(&self) -> MutexGuard<'_, ActivityState> {
        // Nothing panics while holding the lock; if something did, the state is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

enum Eviction {
    /// A connection was told to close; its place frees at once.
    Done,
    /// Nothing can be closed before this instant (a request becomes old enough to cut).
    NotBefore(Instant),
    /// Nothing can be closed until a connection turns idle or closes.
    NotPossible,
}

impl Connections {
    pub fn new(limits: ConnectionLimits, metrics: ConnectionMetrics) -> Arc<Self> {
        Arc::new(Self {
            places: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            turned_idle: Notify::new(),
            metrics,
        })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection just accepted: a free one, or the place of the connection idle
    /// longest (closed for it), or — every connection busy or idle only a moment — the first to
    /// free.
    pub async fn admit(self: &Arc<Self>) -> Place {
        let mut counted_wait = false;
        loop {
            if let Ok(permit) = self.places.clone().try_acquire_owned() {
                return self.place(permit);
            }
            let next_chance = match self.evict_one(Instant::now()) {
                // The evicted connection's task drops its place as soon as it is told.
                Eviction::Done => {
                    let permit = self.places.clone().acquire_owned().await;
                    return self.place(permit.expect("the semaphore is never closed"));
                }
                Eviction::NotBefore(instant) => Some(instant),
                Eviction::NotPossible => None,
            };
            if !counted_wait {
                counted_wait = true;
                self.metrics.waits.inc();
            }
            tokio::select! {
                permit = self.places.clone().acquire_owned() => {
                    return self.place(permit.expect("the semaphore is never closed"));
                }
                () = self.turned_idle.notified() => {}
                () = tokio::time::sleep_until(next_chance.unwrap_or_else(Instant::now)),
                    if next_chance.is_some() => {}
            }
        }
    }

    /// Waits until every connection has closed.
    pub async fn all_closed(&self) {
        let all = u32::try_from(self.limits.max_connections).unwrap_or(u32::MAX);
        let _ = self.places.acquire_many(all).await;
    }

    fn place(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Place {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            state: Mutex::new(ActivityState {
                requests: 0,
                since: Instant::now(),
            }),
            evicted: CancellationToken::new(),
        });
        self.open().insert(id, activity.clone());
        self.metrics.open.inc();
        Place {
            connections: self.clone(),
            id,
            activity,
            _permit: permit,
        }
    }

    /// Tells the connection idle longest to close, once it has been idle for `evict_idle_after`,
    /// or else, where the server allows it, the one whose request has run longest.
    fn evict_one(&self, now: Instant) -> Eviction {
        let mut open = self.open();
        let mut idle: Option<(Instant, u64)> = None;
        let mut busy: Option<(Instant, u64)> = None;
        for (id, activity) in open.iter() {
            let state = *activity.state();
            let oldest = if state.requests == 0 {
                &mut idle
            } else {
                &mut busy
            };
            if oldest.is_none_or(|(since, _)| state.since < since) {
                *oldest = Some((state.since, *id));
            }
        }
        let idle = idle.map(|(since, id)| (since + self.limits.evict_idle_after, id));
        let busy = busy
            .zip(self.limits.cut_requests_after)
            .map(|((since, id), after)| (since + after, id));
        let ready = |chance: Option<(Instant, u64)>| chance.filter(|(from, _)| *from <= now);
        let victim = match ready(idle).or(ready(busy)) {
            Some((_, id)) => id,
            None => {
                return match idle.into_iter().chain(busy).map(|(from, _)| from).min() {
                    Some(from) => Eviction::NotBefore(from),
                    None => Eviction::NotPossible,
                };
            }
        };
        if let Some(activity) = open.remove(&victim) {
            activity.evicted.cancel();
        }
        Eviction::Done
    }
}

/// One connection's place among the open ones; dropping it frees the place.
pub struct Place {
    connections: Arc<Connections>,
    id: u64,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl Place {
    /// What the connection's service uses to mark requests in progress.
    pub fn requests(&self) -> RequestCounter {
        RequestCounter {
            connections: self.connections.clone(),
            activity: self.activity.clone(),
        }
    }

    /// Resolves when the connection must close: it has been idle for the header read timeout,
    /// or its place is wanted.
    pub async fn closing(&self) -> CloseReason {
        let timeout = self.connections.limits.header_read_timeout;
        let mut evicted = pin!(self.activity.evicted.cancelled());
        let mut clock = pin!(tokio::time::sleep(timeout));
        loop {
            // The clock is not woken when a request starts or ends: it looks when it rings. A
            // connection idle since `since` closes at `since + timeout`; a busy one is looked at
            // again a timeout later.
            let state = *self.activity.state();
            let now = Instant::now();
            let next = if state.requests == 0 {
                state.since + timeout
            } else {
                now + timeout
            };
            if next <= now {
                return CloseReason::HeaderTimeout;
            }
            clock.as_mut().reset(next);
            tokio::select! {
                biased;
                () = evicted.as_mut() => return CloseReason::Evicted,
                () = clock.as_mut() => {}
            }
        }
    }

    /// Counts a connection the server closed.
    pub fn closed_for(&self, reason: CloseReason) {
        self.connections.metrics.closed(reason);
    }

    /// `stream`, closed when its writes stall for the header read timeout.
    pub fn stall_timeout<S>(&self, stream: S) -> StallTimeout<S> {
        StallTimeout::new(stream, self.connections.limits.header_read_timeout)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.connections.open().remove(&self.id);
        self.connections.metrics.open.dec();
    }
}

/// Marks the requests of one connection in progress.
#[derive(Clone)]
pub struct RequestCounter {
    connections: Arc<Connections>,
    activity: Arc<Activity>,
}

impl RequestCounter {
    /// A request's headers are complete: the connection is busy until the returned value (kept
    /// by the response body, see [`TrackedBody`]) is dropped.
    pub fn start(&self) -> RequestInProgress {
        let mut state = self.activity.state();
        if state.requests == 0 {
            state.since = Instant::now();
        }
        state.requests += 1;
        drop(state);
        RequestInProgress {
            counter: self.clone(),
        }
    }
}

/// A request in progress on its connection; dropped when its response has been sent.
pub struct RequestInProgress {
    counter: RequestCounter,
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        let turned_idle = {
            let mut state = self.counter.activity.state();
            state.requests = state.requests.saturating_sub(1);
            let idle = state.requests == 0;
            if idle {
                state.since = Instant::now();
            }
            idle
        };
        if turned_idle {
            // [`Place::closing`] is not woken: its clock finds the new deadline when it rings.
            self.counter.connections.turned_idle.notify_one();
        }
    }
}

pin_project! {
    /// A response body that keeps its request in progress until the body has been sent.
    pub struct TrackedBody<B> {
        #[pin]
        body: B,
        request: Option<RequestInProgress>,
    }
}

impl<B> TrackedBody<B> {
    pub fn new(body: B, request: RequestInProgress) -> Self {
        Self {
            body,
            request: Some(request),
        }
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.request.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves one connection until it ends. Closes it when it has been idle too long (gracefully:
/// an HTTP/2 client is told not to start another request) or its place is wanted (at once), and
/// once `stop` is cancelled winds it down, finishing the requests in progress.
pub async fn drive<C>(
    place: Place,
    connection: C,
    stop: CancellationToken,
    graceful_shutdown: impl Fn(Pin<&mut C>),
) where
    C: Future<Output = Result<(), BoxError>>,
{
    let mut connection = pin!(connection);
    let mut stopping = false;
    let mut dropped_at: Option<Instant> = None;
    let (place_ref, stop_ref) = (&place, &stop);
    loop {
        let bookkeeping = async move {
            tokio::select! {
                reason = place_ref.closing(), if dropped_at.is_none() => Turn::Closing(reason),
                // Closing for idling, then wanted: its place cannot wait for the goodbye.
                () = place_ref.activity.evicted.cancelled(), if dropped_at.is_some() => Turn::Drop,
                () = tokio::time::sleep_until(dropped_at.unwrap_or_else(Instant::now)),
                    if dropped_at.is_some() => Turn::Drop,
                () = stop_ref.cancelled(), if !stopping => Turn::Stop,
            }
        };
        match first_of(connection.as_mut(), pin!(bookkeeping)).await {
            Either::Left(result) => {
                if let Err(error) = result {
                    if headers_too_large(&*error) {
                        place.closed_for(CloseReason::HeadersTooLarge);
                    } else if write_stalled(&*error) {
                        place.closed_for(CloseReason::WriteStalled);
                    } else {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                return;
            }
            Either::Right(Turn::Closing(reason)) => {
                place.closed_for(reason);
                if reason == CloseReason::Evicted {
                    return;
                }
                graceful_shutdown(connection.as_mut());
                dropped_at = Some(Instant::now() + CLOSE_GRACE);
            }
            Either::Right(Turn::Drop) => return,
            Either::Right(Turn::Stop) => {
                stopping = true;
                graceful_shutdown(connection.as_mut());
            }
        }
    }
}

/// What a connection's bookkeeping asks of it.
enum Turn {
    /// Close it, gracefully unless evicted.
    Closing(CloseReason),
    /// Drop it now.
    Drop,
    /// Wind it down: the server stops.
    Stop,
}

/// Polls `main` whenever the task is woken, and `side` only once something `side` waits on
/// has woken it (and at first). A connection's bookkeeping (its timers, notifications and
/// tokens) thus costs nothing when the connection's own reads and writes wake its task, as
/// every request does several times.
async fn first_of<A: Future, B: Future>(
    mut main: Pin<&mut A>,
    mut side: Pin<&mut B>,
) -> Either<A::Output, B::Output> {
    struct SideWaker {
        woken: AtomicBool,
        task: AtomicWaker,
    }
    impl Wake for SideWaker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.woken.store(true, Ordering::Release);
            self.task.wake();
        }
    }
    let flag = Arc::new(SideWaker {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let side_waker = Waker::from(flag.clone());
    std::future::poll_fn(move |cx| {
        // Before anything can wake the side: no wake-up is lost in between.
        flag.task.register(cx.waker());
        if let Poll::Ready(output) = main.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(output));
        }
        if flag.woken.swap(false, Ordering::AcqRel)
            && let Poll::Ready(output) = side.as_mut().poll(&mut Context::from_waker(&side_waker))
        {
            return Poll::Ready(Either::Right(output));
        }
        Poll::Pending
    })
    .await
}

/// Whether hyper gave up on a request because its headers were too large (it answered 431).
fn headers_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large)
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// Whether the connection ended because its client stopped taking what it was sent.
fn write_stalled(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        // An io::Error's `source()` skips the error it wraps.
        let wrapped = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
        if error.is::<WriteStalled>() || wrapped.is_some_and(|inner| inner.is::<WriteStalled>()) {
            return true;
        }
        source = error.source();
    }
    false
}

/// The client took none of the bytes written to it for the stall timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client took nothing of the response for {0:?}")]
struct WriteStalled(Duration);

pin_project! {
    /// A stream whose writes fail once they have made no progress for `timeout`: a client that
    /// stops reading cannot keep its connection, and its request, for ever.
    pub struct StallTimeout<S> {
        #[pin]
        stream: S,
        timeout: Duration,
        // Set while a write waits for room.
        stalled: Option<Pin<Box<Sleep>>>,
    }
}

impl<S> StallTimeout<S> {
    fn new(stream: S, timeout: Duration) -> Self {
        Self {
            stream,
            timeout,
            stalled: None,
        }
    }
}

/// After an inner write or flush: clears the stall clock on progress, starts it on `Pending`,
/// and fails once it has run out.
fn watch_stall<T>(
    polled: Poll<std::io::Result<T>>,
    stalled: &mut Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<T>> {
    if polled.is_ready() {
        *stalled = None;
        return polled;
    }
    let clock = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
    match clock.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            WriteStalled(timeout),
        ))),
        Poll::Pending => Poll::Pending,
    }
}

impl<S: AsyncRead> AsyncRead for StallTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().stream.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for StallTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.stream.poll_write(cx, buf);
        watch_stall(polled, this.stalled, *this.timeout, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.stream.poll_write_vectored(cx, bufs);
        watch_stall(polled, this.stalled, *this.timeout, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let polled = this.stream.poll_flush(cx);
        watch_stall(polled, this.stalled, *this.timeout, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let polled = this.stream.poll_shutdown(cx);
        watch_stall(polled, this.stalled, *this.timeout, cx)
    }
}

#[cfg(test)]
mod tests;
