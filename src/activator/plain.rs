//! The proxy's own path for plain HTTP/1.1 requests: a request without a body, or with a small
//! one that came whole with its head, to a function route without authentication, is parsed
//! once (`httparse`), its head rewritten into the pod's request, and the pod's answer copied
//! back within its framing, on plain connections to pods kept per thread ([`PodStream`]). No request or response object is built, and no task beyond
//! the connection's runs. Every rule the hyper path applies to what a client and a pod send
//! ([`super::proxy`]: hop-by-hop headers, the forwarding headers, the route's prefix, the
//! function's timeout, retries, metering) applies here the same way, from the same lists.
//!
//! Anything else — a body sent chunked, larger than 64 KiB or not yet read, `Expect`, an
//! upgrade, HTTP/1.0 or HTTP/2, the Lambda and storage APIs, an IAM-signed function URL, an
//! unknown route, a head that does not fit `max_header_bytes`, or one `httparse` refuses — is
//! handed, with every byte read so far, to hyper ([`Ended::HandOver`]), which serves the rest of
//! the connection. So a request this path does not take is answered exactly as before.
//!
//! A pod is untrusted: its answer reaches the client only as this path frames it. A length is
//! copied exactly, a chunked body is decoded and encoded again, a body that runs until the close
//! is sent chunked; bytes a pod sends past its answer are dropped with its connection. So no pod
//! can write into the answer to a client's next request, which may be another function's.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::SystemTime;

use hyper::header::{self, HeaderValue};
use hyper::{Response, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::function_state::Lease;
use super::proxy::{
    HOP_BY_HOP, Proxy, ProxyBody, REPLACED_REQUEST_HEADERS, forwarded, pod_failed, ran_from,
    timed_out,
};
use super::router::upstream_path;
use super::upstream::{PodStream, UpstreamError};
use crate::api::function::HttpAuth;
use crate::connections::{BoxError, RequestCounter};
use crate::telemetry::error_chain;

/// Headers a request may have, as hyper allows.
const MAX_HEADERS: usize = 100;
/// The most a pod's answer head may take, as hyper's client allows.
const MAX_ANSWER_HEAD: usize = 8192 + 4096 * 100;
/// The largest request body this path takes; it must have come whole with the head.
const MAX_BODY: usize = 64 * 1024;
/// How much is read from a pod at once while its body streams.
const BODY_CHUNK: usize = 64 * 1024;
/// How much of a chunked body's framing (extensions, trailers) is read past before giving up.
const MAX_CHUNK_FRAMING: usize = 16 * 1024;

/// How a connection left this path.
pub(super) enum Ended {
    /// Closed: by the client, after a response that closes it, or when the server winds down.
    Closed,
    /// A request this path does not take: hyper serves the connection from the bytes read so
    /// far (that request's first byte first).
    HandOver(Vec<u8>),
}

/// What a connection on this path needs from its server.
pub(super) struct Client<'a> {
    pub proxy: &'a Proxy,
    /// The peer's address, as the forwarding headers give it.
    pub ip: &'a HeaderValue,
    pub requests: &'a RequestCounter,
    /// Every response says `Connection: close` once this is cancelled.
    pub draining: &'a CancellationToken,
    /// The connection closes once idle (after the request in progress) once this is cancelled,
    /// which only the task that polls [`serve`] may do: it is looked at when `serve` is polled.
    pub graceful: &'a CancellationToken,
    /// A head larger than this goes to hyper, which answers 431.
    pub max_header_bytes: usize,
}

/// Serves `stream` while its requests are plain; see the module's documentation.
pub(super) async fn serve<S>(stream: &mut S, client: Client<'_>) -> Result<Ended, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut input: Vec<u8> = Vec::with_capacity(4096);
    let mut head = Vec::with_capacity(1024);
    let mut buffers = Buffers::default();
    let mut forwarded_for = ForwardedCache::default();
    loop {
        // A request head.
        let request = loop {
            match classify(&input, &client, &mut head, &mut forwarded_for) {
                Parsed::Partial if input.len() < client.max_header_bytes => {}
                Parsed::Partial | Parsed::Other => return Ok(Ended::HandOver(input)),
                Parsed::Plain(request) => break request,
            }
            input.reserve(4096);
            // `graceful` is cancelled only by the connection's own task (`connections::drive`),
            // which polls this again right after: a look at each poll is enough, and costs less
            // than a wait on the token, which takes its lock twice.
            let mut reading = pin!(stream.read_buf(&mut input));
            let read = std::future::poll_fn(|cx| {
                if client.graceful.is_cancelled() {
                    return Poll::Ready(None);
                }
                reading.as_mut().poll(cx).map(Some)
            })
            .await;
            match read {
                None | Some(Ok(0)) => return Ok(Ended::Closed),
                Some(read) => read?,
            };
        };
        input.drain(..request.head_len + request.body_len);
        let in_progress = client.requests.start();
        let close = request.close || client.draining.is_cancelled();
        let keep = exchange(
            stream,
            &mut input,
            &mut buffers,
            &client,
            request,
            &head,
            close,
        )
        .await?;
        drop(in_progress);
        buffers.trim();
        if head.capacity() > Buffers::KEPT {
            head = Vec::new();
        }
        if !keep || close || client.graceful.is_cancelled() {
            // The answer first, then the end of the stream (as hyper closes).
            let _ = stream.shutdown().await;
            return Ok(Ended::Closed);
        }
    }
}

/// What a connection reuses from one exchange to the next: the bytes read from the pod, those
/// for the client, and the timer of the pod's answer.
#[derive(Default)]
struct Buffers {
    reply: Vec<u8>,
    out: Vec<u8>,
    /// One timer for every request: a timer of a request's own, the earliest of the thread's
    /// when it is made, would wake the runtime's driver (a system call) each time.
    answer_by: Option<Pin<Box<Sleep>>>,
}

impl Buffers {
    /// What a connection keeps between requests, whatever its largest answer took.
    const KEPT: usize = 16 * 1024;

    fn trim(&mut self) {
        for buffer in [&mut self.reply, &mut self.out] {
            buffer.clear();
            if buffer.capacity() > Self::KEPT {
                *buffer = Vec::new();
            }
        }
    }
}

/// A request this path takes, its head for the pod already written.
struct PlainRequest {
    function: std::sync::Arc<super::function_state::FunctionState>,
    head_len: usize,
    /// The body's length: it came whole with the head, and was written after the pod's head.
    body_len: usize,
    idempotent: bool,
    head_method: bool,
    /// The client asked to close after the answer.
    close: bool,
    arrived: Instant,
}

enum Parsed {
    Partial,
    Other,
    Plain(PlainRequest),
}

/// Parses the head at the front of `input` and decides whether this path takes it; if so,
/// writes the pod's request head into `head`.
fn classify(
    input: &[u8],
    client: &Client<'_>,
    head: &mut Vec<u8>,
    forwarded_for: &mut ForwardedCache,
) -> Parsed {
    // Left uninitialized: `httparse` writes those it parses, and an initialized array would
    // cost as much as the parse.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(input, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Other;
    };
    if method == "CONNECT" || !target.starts_with('/') {
        return Parsed::Other;
    }
    let mut host = None;
    let mut length = None;
    let mut close = false;
    // Headers the client named in `Connection`: hop-by-hop too.
    let mut named: Vec<&[u8]> = Vec::new();
    let mut read = [Field::default(); MAX_HEADERS];
    for (header, read) in request.headers.iter().zip(&mut read) {
        *read = field(header.name);
        match read.kind {
            FieldKind::Host => {
                if host.is_some() || !header.value.iter().all(|&b| is_visible(b)) {
                    return Parsed::Other;
                }
                // Visible ASCII only, so this cannot fail.
                host = std::str::from_utf8(header.value).ok();
            }
            FieldKind::ContentLength => {
                // One length, in digits, whose body has come whole with the head.
                let value = std::str::from_utf8(header.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&n| n <= MAX_BODY && input.len() - head_len >= n);
                match value {
                    Some(value) if length.is_none() => length = Some(value),
                    _ => return Parsed::Other,
                }
            }
            FieldKind::TransferEncoding | FieldKind::Expect | FieldKind::Upgrade => {
                return Parsed::Other;
            }
            FieldKind::Connection => {
                for token in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"content-length")
                        || token.eq_ignore_ascii_case(b"host")
                    {
                        // Dropped, the body sent after the head would be the pod's next
                        // request. hyper's path frames the body and names the host itself.
                        return Parsed::Other;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        named.push(token);
                    }
                }
            }
            _ => {}
        }
    }
    let Some(host) = host else {
        return Parsed::Other;
    };
    let Ok(uri) = Uri::try_from(target) else {
        return Parsed::Other;
    };
    let Ok(resolved) = client.proxy.index().resolve(Some(host), uri.path()) else {
        return Parsed::Other;
    };
    if resolved.auth != HttpAuth::None {
        return Parsed::Other;
    }

    head.clear();
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    // As `upstream_path_and_query` makes it.
    head.extend_from_slice(upstream_path(uri.path(), resolved.strip).as_bytes());
    if let Some(query) = uri.query() {
        head.push(b'?');
        head.extend_from_slice(query.as_bytes());
    }
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (header, read) in request.headers.iter().zip(read) {
        let name = header.name;
        if read.hop_by_hop
            || read.replaced
            || named
                .iter()
                .any(|token| token.eq_ignore_ascii_case(name.as_bytes()))
        {
            continue;
        }
        put_field(head, name.as_bytes(), header.value);
    }
    let ip = client.ip.as_bytes();
    put_field(head, b"x-forwarded-host", host.as_bytes());
    put_field(head, b"x-forwarded-proto", b"http");
    put_field(head, b"x-forwarded-for", ip);
    put_field(head, b"x-real-ip", ip);
    if let Some(value) = forwarded_for.get(client.ip, host) {
        put_field(head, b"forwarded", value.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let body_len = length.unwrap_or(0);
    head.extend_from_slice(&input[head_len..head_len + body_len]);
    Parsed::Plain(PlainRequest {
        function: resolved.function,
        head_len,
        body_len,
        idempotent: method == "GET" || method == "HEAD",
        head_method: method == "HEAD",
        close,
        arrived: Instant::now(),
    })
}

/// `HeaderValue::to_str`'s rule: visible ASCII and tabs.
fn is_visible(byte: u8) -> bool {
    (32..127).contains(&byte) || byte == b'\t'
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What this path reads a field as, found from its name once (see [`field`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Field {
    kind: FieldKind,
    /// Named in [`HOP_BY_HOP`]: never passed on, either way.
    hop_by_hop: bool,
    /// Named in [`REPLACED_REQUEST_HEADERS`]: a client's is never passed on.
    replaced: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum FieldKind {
    #[default]
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Expect,
    Upgrade,
    Date,
    Billed,
    Init,
}

/// The fields this path reads or drops, by the length of their names: a name is compared
/// with the few of its length (at most three), not with every list in turn.
static FIELDS: LazyLock<Vec<Vec<(&'static str, Field)>>> = LazyLock::new(|| {
    let read = [
        ("host", FieldKind::Host),
        ("content-length", FieldKind::ContentLength),
        ("transfer-encoding", FieldKind::TransferEncoding),
        ("connection", FieldKind::Connection),
        ("expect", FieldKind::Expect),
        ("upgrade", FieldKind::Upgrade),
        ("date", FieldKind::Date),
        (crate::api::lambda::BILLED_MS_HEADER, FieldKind::Billed),
        (crate::api::lambda::INIT_MS_HEADER, FieldKind::Init),
    ];
    let mut names: Vec<&'static str> = read.iter().map(|(name, _)| *name).collect();
    for name in HOP_BY_HOP.iter().chain(&REPLACED_REQUEST_HEADERS) {
        if !names.contains(&name.as_str()) {
            names.push(name.as_str());
        }
    }
    let longest = names.iter().map(|name| name.len()).max().unwrap_or(0);
    let mut by_length = vec![Vec::new(); longest + 1];
    for name in names {
        // What [`is_named`] compares with.
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "{name} is lowercase letters and dashes"
        );
        let field = Field {
            kind: read
                .iter()
                .find(|(read, _)| *read == name)
                .map_or(FieldKind::Other, |(_, kind)| *kind),
            hop_by_hop: HOP_BY_HOP.iter().any(|listed| listed.as_str() == name),
            replaced: REPLACED_REQUEST_HEADERS
                .iter()
                .any(|listed| listed.as_str() == name),
        };
        by_length[name.len()].push((name, field));
    }
    by_length
});

/// How this path reads the field `name` (any case).
fn field(name: &str) -> Field {
    FIELDS
        .get(name.len())
        .and_then(|same_length| {
            same_length
                .iter()
                .find(|(known, _)| is_named(name.as_bytes(), known.as_bytes()))
        })
        .map_or_else(Field::default, |(_, field)| *field)
}

/// Whether the field name `name` is `lower` in any case, for a `lower` of lowercase letters and
/// `-`. `httparse` lets only token characters into a name, and for those, setting the bit that
/// lowercases a letter gives `lower`'s byte only from that letter in either case, or from `-`.
fn is_named(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.iter().zip(lower).all(|(&a, &b)| a | 0x20 == b)
}

/// The `Forwarded` value of the connection's last host (a connection's requests name one host,
/// as a rule).
#[derive(Default)]
struct ForwardedCache {
    host: String,
    value: Option<HeaderValue>,
}

impl ForwardedCache {
    fn get(&mut self, ip: &HeaderValue, host: &str) -> Option<&HeaderValue> {
        if self.host != host || self.value.is_none() {
            self.host.clear();
            self.host.push_str(host);
            let host = HeaderValue::from_str(host).ok();
            self.value = forwarded(ip, host.as_ref());
        }
        self.value.as_ref()
    }
}

/// Admits `request`, sends it to a pod and its answer to the client; returns whether the client
/// connection can serve another request.
async fn exchange<S>(
    stream: &mut S,
    input: &mut Vec<u8>,
    buffers: &mut Buffers,
    client: &Client<'_>,
    request: PlainRequest,
    head: &[u8],
    close: bool,
) -> Result<bool, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let proxy = client.proxy;
    let function = request.function.clone();
    let arrived = request.arrived;
    let limit = client.max_header_bytes;
    let admitted = match proxy.admit(&function, arrived) {
        // A place was free: nothing to wait for, nor to watch the client during.
        futures::future::Either::Left(ready) => Some(ready.into_inner()),
        futures::future::Either::Right(waiting) => {
            unless_client_leaves(stream, input, limit, waiting).await
        }
    };
    let (mut lease, timing) = match admitted {
        None => return Ok(false),
        Some(Ok(admitted)) => admitted,
        Some(Err(refused)) => {
            write_activators(stream, refused, close).await?;
            return Ok(true);
        }
    };
    let config = function.config();
    let answer_by = timing.deadline + config.answer_grace;
    if proxy.metering() {
        lease.meter_from_now(config.facts.memory_mb);
    }
    let Buffers {
        reply,
        out,
        answer_by: timer,
    } = buffers;
    let mut retried = false;
    let outcome = loop {
        let attempt = {
            // Pinned where they are made: moving a future costs a copy of all of it.
            let sending = pin!(send(
                lease.addr(),
                head,
                request.head_method,
                reply,
                out,
                close
            ));
            let attempt = pin!(before(timer, answer_by, sending));
            unless_client_leaves(stream, input, limit, attempt).await
        };
        let Some(outcome) = attempt else {
            lease.not_run();
            return Ok(false);
        };
        match &outcome {
            Some(Err(error)) if !retried && (error.is_connect() || request.idempotent) => {
                tracing::debug!(%error, pod = %lease.addr(), "retrying on another pod");
                retried = true;
                lease.switch_pod();
                if proxy.metering() {
                    lease.meter_from_now(config.facts.memory_mb);
                }
                reply.clear();
            }
            _ => break outcome,
        }
    };
    let (pod, answer) = match outcome {
        Some(Ok(answered)) => answered,
        Some(Err(error)) => {
            let refused = pod_failed(&mut lease, arrived, &error);
            write_activators(stream, refused, close).await?;
            return Ok(true);
        }
        None => {
            let refused = timed_out(&function, arrived, timing.timeout);
            write_activators(stream, refused, close).await?;
            return Ok(true);
        }
    };
    if config.facts.uses_runtime_api {
        // The sidecar's figures; an answer without them never reached the runtime.
        match answer.ran {
            Some((billed, init)) => lease.ran(billed, init),
            None => lease.not_run(),
        }
    }
    function.metrics().record(answer.status, arrived.elapsed());
    if timing.cold {
        function.metrics().cold_start(arrived.elapsed());
    }
    copy_body(stream, pod, answer, reply, out, lease, timing.deadline).await
}

/// `work`, or `None` once `deadline` has passed, on the connection's `timer`.
async fn before<F: Future>(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    work: F,
) -> Option<F::Output> {
    let timer = match timer {
        Some(timer) => {
            timer.as_mut().reset(deadline);
            timer
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    tokio::select! {
        biased;
        output = work => Some(output),
        () = timer.as_mut() => None,
    }
}

/// Runs `work` while watching the client: `None` if the client closes its connection (or it
/// fails) first. Bytes the client sends meanwhile (its next request) are kept in `input`, up to
/// `limit`.
async fn unless_client_leaves<S, F>(
    stream: &mut S,
    input: &mut Vec<u8>,
    limit: usize,
    work: F,
) -> Option<F::Output>
where
    S: AsyncRead + Unpin,
    F: Future,
{
    let mut work = pin!(work);
    loop {
        let room = input.len() < limit;
        if room {
            input.reserve(1024);
        }
        tokio::select! {
            biased;
            output = &mut work => return Some(output),
            read = stream.read_buf(input), if room => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}

/// The head of a pod's answer, as this path sends it on.
struct Answer {
    status: u16,
    /// Where the body starts in the bytes read from the pod.
    head_len: usize,
    framing: Framing,
    /// The pod's connection can serve another request after this answer.
    reusable: bool,
    /// The sidecar's billed and init durations.
    ran: Option<(u64, Option<u64>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Sends `head` to `pod` (on an idle connection or a new one), reads the answer's head into
/// `reply` and writes the client's into `out`.
async fn send(
    pod: std::net::SocketAddr,
    head: &[u8],
    head_method: bool,
    reply: &mut Vec<u8>,
    out: &mut Vec<u8>,
    close: bool,
) -> Result<(PodStream, Answer), UpstreamError> {
    let mut connection = PodStream::take_or_open(pod).await?;
    connection
        .stream
        .write_all(head)
        .await
        .map_err(UpstreamError::Io)?;
    loop {
        if let Some(answer) = parse_answer(reply, out, head_method, close)? {
            return Ok((connection, answer));
        }
        if reply.len() >= MAX_ANSWER_HEAD {
            return Err(UpstreamError::Malformed("its head is too large"));
        }
        reply.reserve(8192);
        let read = connection
            .stream
            .read_buf(reply)
            .await
            .map_err(UpstreamError::Io)?;
        if read == 0 {
            return Err(UpstreamError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the pod closed the connection before answering",
            )));
        }
    }
}

/// The answer's head at the front of `reply`, once complete, with the client's head written into
/// `head`; informational answers (1xx) before it are dropped from `reply`.
fn parse_answer(
    reply: &mut Vec<u8>,
    head: &mut Vec<u8>,
    head_method: bool,
    close: bool,
) -> Result<Option<Answer>, UpstreamError> {
    loop {
        let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            reply,
            &mut headers,
        );
        let head_len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(UpstreamError::Malformed("its head does not parse")),
        };
        let (Some(version), Some(status)) = (response.version, response.code) else {
            return Err(UpstreamError::Malformed("its status line does not parse"));
        };
        if status == 101 {
            return Err(UpstreamError::Malformed("it switched protocols unasked"));
        }
        if (100..200).contains(&status) {
            reply.drain(..head_len);
            continue;
        }
        let mut reusable = version == 1;
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut named: Vec<&[u8]> = Vec::new();
        let mut billed = None;
        let mut init = None;
        let mut dated = false;
        let mut read = [Field::default(); MAX_HEADERS];
        for (header, read) in response.headers.iter().zip(&mut read) {
            *read = field(header.name);
            match read.kind {
                FieldKind::ContentLength => {
                    let value = std::str::from_utf8(header.value)
                        .ok()
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or(UpstreamError::Malformed(
                            "its Content-Length is not a length",
                        ))?;
                    if length.is_some_and(|earlier| earlier != value) {
                        return Err(UpstreamError::Malformed("it has two Content-Lengths"));
                    }
                    length = Some(value);
                }
                FieldKind::TransferEncoding => {
                    if chunked || !header.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                        return Err(UpstreamError::Malformed(
                            "its Transfer-Encoding is not chunked alone",
                        ));
                    }
                    chunked = true;
                }
                FieldKind::Connection => {
                    for token in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                        if token.eq_ignore_ascii_case(b"close") {
                            reusable = false;
                        }
                        named.push(token);
                    }
                }
                FieldKind::Billed => billed = Some(header.value),
                FieldKind::Init => init = Some(header.value),
                FieldKind::Date => dated = true,
                _ => {}
            }
        }
        let framing = if head_method || status == 204 || status == 304 {
            Framing::Empty
        } else if chunked {
            // Both a length and chunked: the length is not to be trusted, nor the connection.
            if length.is_some() {
                reusable = false;
            }
            Framing::Chunked
        } else if let Some(length) = length {
            Framing::Length(length)
        } else {
            reusable = false;
            Framing::UntilClose
        };

        head.clear();
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
        head.push(b' ');
        head.extend_from_slice(response.reason.unwrap_or("").as_bytes());
        head.extend_from_slice(b"\r\n");
        for (header, read) in response.headers.iter().zip(read) {
            let name = header.name;
            if (read.kind == FieldKind::ContentLength && framing != Framing::Empty)
                || read.hop_by_hop
                || matches!(read.kind, FieldKind::Billed | FieldKind::Init)
                || named
                    .iter()
                    .any(|token| token.eq_ignore_ascii_case(name.as_bytes()))
            {
                continue;
            }
            put_field(head, name.as_bytes(), header.value);
        }
        match framing {
            Framing::Length(length) => {
                put_field(
                    head,
                    b"content-length",
                    itoa::Buffer::new().format(length).as_bytes(),
                );
            }
            Framing::Chunked | Framing::UntilClose => {
                head.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
            Framing::Empty => {}
        }
        if !dated {
            put_date(head);
        }
        if close {
            head.extend_from_slice(b"connection: close\r\n");
        }
        head.extend_from_slice(b"\r\n");
        return Ok(Some(Answer {
            status,
            head_len,
            framing,
            reusable,
            ran: ran_from(billed, init),
        }));
    }
}

/// Sends the answer's head and body to the client, reading the body from the pod within its
/// framing until `deadline`. The pod's connection goes back, and its place is freed, as soon as
/// the body has been read whole. Returns whether the client connection can go on.
async fn copy_body<S>(
    stream: &mut S,
    mut pod: PodStream,
    answer: Answer,
    reply: &mut Vec<u8>,
    out: &mut Vec<u8>,
    lease: Lease,
    deadline: Instant,
) -> Result<bool, BoxError>
where
    S: AsyncWrite + Unpin,
{
    let mut lease = Some(lease);
    let mut reusable = answer.reusable;
    let mut remaining = match answer.framing {
        Framing::Length(length) => length,
        _ => 0,
    };
    let mut chunks = Chunked::default();
    let mut start = answer.head_len;
    loop {
        let body = &reply[start..];
        let done = match answer.framing {
            Framing::Empty => {
                reusable &= body.is_empty();
                true
            }
            Framing::Length(_) => {
                let take = body
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&body[..take]);
                remaining -= take as u64;
                if remaining == 0 {
                    reusable &= take == body.len();
                }
                remaining == 0
            }
            Framing::Chunked => {
                let used = chunks
                    .feed(body, out)
                    .map_err(|problem| answer_cut(UpstreamError::Malformed(problem)))?;
                if chunks.is_done() {
                    reusable &= used == body.len();
                }
                chunks.is_done()
            }
            Framing::UntilClose => {
                put_chunk(out, body);
                false
            }
        };
        if done {
            if reusable {
                pod.release();
            }
            // The place on the pod is free as soon as its answer is in.
            lease.take();
            stream.write_all(out).await?;
            return Ok(true);
        }
        stream.write_all(out).await?;
        out.clear();
        reply.clear();
        reply.reserve(BODY_CHUNK);
        start = 0;
        let read = match tokio::time::timeout_at(deadline, pod.stream.read_buf(reply)).await {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => return Err(answer_cut(UpstreamError::Io(error))),
            Err(_) => return Err(super::proxy::ResponseTimedOut.into()),
        };
        if read == 0 {
            if answer.framing == Framing::UntilClose {
                lease.take();
                stream.write_all(b"0\r\n\r\n").await?;
                return Ok(true);
            }
            return Err(answer_cut(UpstreamError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the pod closed the connection before its answer's end",
            ))));
        }
    }
}

/// A pod failed mid-answer: the client's connection closes, which tells it the answer is cut.
fn answer_cut(error: UpstreamError) -> BoxError {
    tracing::debug!(error = %error_chain(&error), "a pod's answer was cut");
    error.into()
}

fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// A chunked body being read: decoded as it comes and written out chunked again, trailers left
/// out; anything not exactly chunked framing is refused.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    /// Bytes of framing read past (extensions, trailers).
    framing: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    /// The size's hex digits (how many so far, and the value).
    #[default]
    SizeStart,
    Size(u8, u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunked {
    fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Reads `input`, writing the data it holds to `out` as chunks; returns how much of `input`
    /// belonged to the body (all of it unless the body ended within it).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, &'static str> {
        use ChunkState::*;
        let mut at = 0;
        while at < input.len() {
            if let Data(left) = self.state {
                let take = (input.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                put_chunk(out, &input[at..at + take]);
                at += take;
                self.state = if left == take as u64 {
                    DataCr
                } else {
                    Data(left - take as u64)
                };
                continue;
            }
            let byte = input[at];
            at += 1;
            self.state = match (self.state, byte) {
                (Done, _) => return Ok(at - 1),
                (SizeStart, _) => match hex(byte) {
                    Some(digit) => Size(1, u64::from(digit)),
                    None => return Err("a chunk size is not hexadecimal"),
                },
                (Size(digits, value), _) if hex(byte).is_some() => {
                    if digits >= 15 {
                        return Err("a chunk size is too large");
                    }
                    Size(digits + 1, value << 4 | u64::from(hex(byte).unwrap_or(0)))
                }
                (Size(_, value), b';' | b' ' | b'\t') => Extension(value),
                (Size(_, value), b'\r') => SizeLf(value),
                (Extension(value), b'\r') => SizeLf(value),
                (Extension(_), b'\n') => return Err("a chunk extension has a bare LF"),
                (Extension(value), _) => {
                    self.read_framing()?;
                    Extension(value)
                }
                (SizeLf(0), b'\n') => TrailerStart,
                (SizeLf(value), b'\n') => Data(value),
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => SizeStart,
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | Trailer, b'\n') => return Err("a trailer has a bare LF"),
                (Trailer, b'\r') => TrailerLf,
                (TrailerStart | Trailer, _) => {
                    self.read_framing()?;
                    Trailer
                }
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => {
                    out.extend_from_slice(b"0\r\n\r\n");
                    self.state = Done;
                    return Ok(at);
                }
                _ => return Err("the chunked framing is broken"),
            };
        }
        Ok(at)
    }

    fn read_framing(&mut self) -> Result<(), &'static str> {
        self.framing += 1;
        if self.framing > MAX_CHUNK_FRAMING {
            return Err("its chunk extensions or trailers are too large");
        }
        Ok(())
    }
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Writes a response the activator made itself (a refusal, a timeout) to the client.
async fn write_activators<S>(
    stream: &mut S,
    response: Response<ProxyBody>,
    close: bool,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let (parts, body) = response.into_parts();
    let body = body.into_message().unwrap_or_default();
    let mut out = Vec::with_capacity(256 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && name != header::CONNECTION {
            put_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let _ = write!(out, "content-length: {}\r\n", body.len());
    put_date(&mut out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    stream.write_all(&out).await
}

/// A `Date` field for now, formatted once a second per thread.
fn put_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        put_field(out, b"date", text.as_bytes());
    });
}

/// A stream whose first reads return `read` (what this path read before handing the connection
/// over), then the stream's own.
pub(super) struct Prefixed<S> {
    read: Vec<u8>,
    at: usize,
    stream: S,
}

impl<S> Prefixed<S> {
    pub(super) fn new(read: Vec<u8>, stream: S) -> Self {
        Self {
            read,
            at: 0,
            stream,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.read.len() {
            let take = (this.read.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.read[this.at..this.at + take]);
            this.at += take;
            if this.at == this.read.len() {
                this.read = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
