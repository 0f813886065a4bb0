//! The activator's routing: functions with host and path claims from the input, and requests
//! with any method, URI, `Host` and headers, through the code the proxy runs for each request.
//!
//! Checked:
//! - the host-claim rule decides alike in the controller (`refusals_among`, condition
//!   HostsAccepted) and in the activator: a host reported accepted routes to its function, a host
//!   reported held by another routes to that holder;
//! - routing does not depend on the order in which the functions were seen;
//! - a request addressed to the activator by its own name, an IP address or `localhost` is routed
//!   by its path alone, and no name a resolver reads as an IPv4 address can be claimed;
//! - host names compare without regard to case;
//! - a path route cuts exactly `/{namespace}/{function}`, and the upstream request keeps the
//!   method, a valid path and the query;
//! - the forwarded headers name the connection's peer only, and no hop-by-hop header survives.

#![no_main]

use std::collections::HashSet;

use fargo::activator::hold::HoldLimit;
use fargo::activator::index::{FunctionIndex, Resolved};
use fargo::activator::metrics::ActivatorMetrics;
use fargo::activator::proxy::{
    prepare_request_headers, request_host, upstream_path_and_query, upstream_request,
};
use fargo::activator::router::{RouteError, upstream_path};
use fargo::api::ServerlessFunction;
use fargo::api::routes::{
    ActivatorNames, Claim, HostClaims, Refusal, Reserved, host_name, path_prefix, refusals_among,
};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request};
use http_body_util::{Either, Empty};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const SERVICE: &str = "fargo-activator";
const SERVICE_NAMESPACE: &str = "fargo-system";
const DOMAIN: &str = "fargo.local";

const NAMESPACES: [&str; 4] = ["media", "shop", SERVICE_NAMESPACE, "svc"];
const NAMES: [&str; 4] = ["thumbnail", "resize", "site", SERVICE];
const HOSTS: [&str; 10] = [
    "img.example.com",
    "Img.Example.COM:8080",
    "img.example.com.",
    "shop.example.com",
    "fargo-activator.fargo-system.svc",
    "fargo-activator.fargo-system.svc.cluster.local:80",
    "thumbnail.media.fargo.local",
    "127.0.0.1",
    "[::1]:80",
    "localhost",
];
const PATHS: [&str; 8] = [
    "/",
    "/api",
    "/api/",
    "/api/v1",
    "",
    "/media/thumbnail/a",
    "/shop/site?q=1",
    "*",
];
const HEADER_NAMES: [&str; 10] = [
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "host",
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
    "x-request-id",
    "proxy-authorization",
];

/// Headers the proxy replaces with what it saw itself.
const SET_BY_PROXY: [&str; 6] = [
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "forwarded",
    "host",
];
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A string from a short list of meaningful ones, or any.
#[derive(Arbitrary, Debug)]
enum Text<'a> {
    Known(u8),
    Any(&'a str),
}

impl<'a> Text<'a> {
    fn pick(&self, known: &[&'static str]) -> &'a str {
        match self {
            Text::Known(index) => known[usize::from(*index) % known.len()],
            Text::Any(text) => text,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Function<'a> {
    namespace: Text<'a>,
    name: Text<'a>,
    enabled: bool,
    hosts: Vec<Text<'a>>,
    path: Text<'a>,
    /// Seconds after the first function; `None`: no creation time known.
    created: Option<u16>,
}

#[derive(Arbitrary, Debug)]
struct HttpRequest<'a> {
    method: &'a [u8],
    uri: Text<'a>,
    host: Option<Text<'a>>,
    headers: Vec<(Text<'a>, &'a [u8])>,
    ipv6_peer: bool,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    functions: Vec<Function<'a>>,
    requests: Vec<HttpRequest<'a>>,
}

fuzz_target!(|input: Input<'_>| {
    let names = ActivatorNames::new(SERVICE, SERVICE_NAMESPACE, DOMAIN);
    let functions = functions(&input.functions);
    let index = index_of(&names, functions.iter());
    let reversed = index_of(&names, functions.iter().rev());

    for function in &functions {
        check_claims_agree(&names, function, &functions, &index);
        for host in &function.spec.triggers.http.hosts {
            check_host_claim(&names, host);
        }
    }
    for request in input.requests.iter().take(8) {
        check_request(&names, request, &index, &reversed);
    }
});

/// The input's functions as the API server would hand them out, one per namespace and name.
fn functions(input: &[Function<'_>]) -> Vec<ServerlessFunction> {
    let mut seen = HashSet::new();
    let first = jiff::Timestamp::from_second(1_700_000_000).expect("a valid time");
    input
        .iter()
        .take(8)
        .filter(|f| seen.insert((f.namespace.pick(&NAMESPACES), f.name.pick(&NAMES))))
        .filter_map(|f| {
            let hosts: Vec<&str> = f.hosts.iter().take(4).map(|h| h.pick(&HOSTS)).collect();
            let created = f
                .created
                .map(|s| (first + jiff::SignedDuration::from_secs(i64::from(s))).to_string());
            serde_json::from_value(json!({
                "apiVersion": "fargo.dev/v1alpha1",
                "kind": "ServerlessFunction",
                "metadata": {
                    "namespace": f.namespace.pick(&NAMESPACES),
                    "name": f.name.pick(&NAMES),
                    "creationTimestamp": created,
                },
                "spec": {
                    "image": "registry.example.com/fn:1",
                    "triggers": {"http": {
                        "enabled": f.enabled,
                        "hosts": hosts,
                        "path": f.path.pick(&PATHS),
                    }},
                },
            }))
            .ok()
        })
        .collect()
}

/// The activator's index after seeing `functions` in this order.
fn index_of<'a>(
    names: &ActivatorNames,
    functions: impl Iterator<Item = &'a ServerlessFunction>,
) -> FunctionIndex {
    let index = FunctionIndex::new(
        names.clone(),
        16,
        HoldLimit::new(usize::MAX),
        ActivatorMetrics::default(),
    );
    for function in functions {
        index.apply(function);
    }
    index
}

/// `(namespace, function, strip)` of a routed request, or the kind of error.
fn outcome(resolved: &Result<Resolved, RouteError>) -> Result<(String, String, usize), String> {
    match resolved {
        Ok(resolved) => Ok((
            resolved.function.namespace().to_string(),
            resolved.function.name().to_string(),
            resolved.strip,
        )),
        Err(RouteError::NoRoute { .. }) => Err("no route".into()),
        Err(error) => Err(error.to_string()),
    }
}

/// What the controller reports of a function's hosts is what the activator does with them.
fn check_claims_agree(
    names: &ActivatorNames,
    function: &ServerlessFunction,
    functions: &[ServerlessFunction],
    index: &FunctionIndex,
) {
    let http = &function.spec.triggers.http;
    if !http.enabled {
        return;
    }
    let Some(claim) = Claim::of(function) else {
        return;
    };
    let refusals = refusals_among(function, functions, names);
    let prefix = path_prefix(&http.path);
    let path = if prefix.is_empty() { "/" } else { prefix };
    for host in &http.hosts {
        let normalized = host_name(host);
        let refusal = refusals.iter().find(|refusal| match refusal {
            Refusal::Reserved { host, .. } | Refusal::Claimed { host, .. } => *host == normalized,
        });
        let expected = match refusal {
            Some(Refusal::Reserved { why, .. }) => {
                assert_eq!(names.reserved(&normalized).as_ref(), Some(why));
                continue;
            }
            Some(Refusal::Claimed {
                holder_namespace,
                holder_name,
                ..
            }) => (holder_namespace.as_str(), holder_name.as_str()),
            None => (claim.namespace, claim.name),
        };
        let routed = outcome(&index.resolve(Some(host), path));
        assert_eq!(
            routed,
            Ok((expected.0.to_string(), expected.1.to_string(), 0)),
            "host {host:?} path {path:?}: the controller reports {refusal:?}"
        );
    }
}

/// A host no function may claim is never routed by a claim; every other host is.
fn check_host_claim(names: &ActivatorNames, host: &str) {
    let normalized = host_name(host);
    let reserved = names.reserved(&normalized);
    if reads_as_ipv4(&normalized) {
        assert!(
            reserved.is_some(),
            "{host:?} reads as an IPv4 address but can be claimed"
        );
    }
    let mut claims = HostClaims::new(names.clone());
    let hosts = [host.to_string()];
    let refused = claims.claim(&Claim {
        namespace: "media",
        name: "site",
        created: None,
        enabled: true,
        hosts: &hosts,
        path: "/",
    });
    assert_eq!(refused.len(), usize::from(reserved.is_some()), "{host:?}");
    assert_eq!(
        claims.route(&normalized, "/"),
        reserved.is_none().then_some(("media", "site")),
        "{host:?}"
    );
}

/// Whether a resolver (`inet_aton`) reads `host` as an IPv4 address: one to four dot-separated
/// numbers, each decimal, octal (`0` first) or hexadecimal (`0x` first).
fn reads_as_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() <= 4
        && parts.iter().all(|part| {
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                hex.bytes().all(|b| b.is_ascii_hexdigit())
            } else {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())
            }
        })
}

fn check_request(
    names: &ActivatorNames,
    input: &HttpRequest<'_>,
    index: &FunctionIndex,
    reversed: &FunctionIndex,
) {
    let Some(request) = http_request(input) else {
        return;
    };
    let host = request_host(&request);
    let path = request.uri().path();
    let resolved = index.resolve(host, path);
    let routed = outcome(&resolved);
    assert_eq!(
        routed,
        outcome(&reversed.resolve(host, path)),
        "routing depends on the order functions were seen"
    );
    if let Some(host) = host {
        let upper = host.to_ascii_uppercase();
        assert_eq!(
            routed,
            outcome(&index.resolve(Some(&upper), path)),
            "{host:?}"
        );
        if matches!(
            names.reserved(&host_name(host)),
            Some(Reserved::ActivatorService { .. } | Reserved::IpAddress | Reserved::Localhost)
        ) {
            assert_eq!(
                routed,
                outcome(&index.resolve(None, path)),
                "a request for {host:?} is not routed by its path"
            );
        }
    }
    let Ok(resolved) = resolved else {
        return;
    };
    if resolved.strip > 0 {
        let function = &resolved.function;
        assert_eq!(
            &path[..resolved.strip],
            format!("/{}/{}", function.namespace(), function.name())
        );
        assert!(upstream_path(path, resolved.strip).starts_with('/'));
    }
    check_upstream(request, resolved.strip, input.ipv6_peer);
}

/// The request as hyper hands it to the proxy; `None` when it would not parse.
fn http_request(input: &HttpRequest<'_>) -> Option<Request<()>> {
    let mut builder = Request::builder()
        .method(Method::from_bytes(input.method).ok()?)
        .uri(input.uri.pick(&PATHS));
    if let Some(host) = &input.host {
        builder = builder.header(header::HOST, HeaderValue::from_str(host.pick(&HOSTS)).ok()?);
    }
    for (name, value) in input.headers.iter().take(8) {
        builder = builder.header(
            HeaderName::from_bytes(name.pick(&HEADER_NAMES).as_bytes()).ok()?,
            HeaderValue::from_bytes(value).ok()?,
        );
    }
    builder.body(()).ok()
}

/// What the proxy sends to the pod for a routed request.
fn check_upstream(request: Request<()>, strip: usize, ipv6_peer: bool) {
    let (parts, ()) = request.into_parts();
    let path_and_query = upstream_path_and_query(&parts.uri, strip)
        .expect("the upstream path of a parsed request is valid");
    assert_eq!(path_and_query.query(), parts.uri.query());
    if strip == 0 {
        // As sent, `*` (OPTIONS) included; `/` for an authority-form target (CONNECT).
        let path = parts.uri.path();
        assert_eq!(
            path_and_query.path(),
            if path.is_empty() { "/" } else { path }
        );
    } else {
        assert_eq!(
            path_and_query.path(),
            upstream_path(parts.uri.path(), strip)
        );
    }

    let client_ip = HeaderValue::from_static(if ipv6_peer { "fd00::7" } else { "10.0.0.7" });
    let mut headers = parts.headers.clone();
    prepare_request_headers(&mut headers, &parts.uri, &client_ip);
    for name in ["x-forwarded-for", "x-real-ip"] {
        let values: Vec<_> = headers.get_all(name).iter().collect();
        assert_eq!(values, [&client_ip], "{name}");
    }
    assert_eq!(
        headers
            .get_all("x-forwarded-host")
            .iter()
            .collect::<Vec<_>>(),
        headers.get(header::HOST).into_iter().collect::<Vec<_>>()
    );
    for name in HOP_BY_HOP {
        assert!(
            !headers.contains_key(name),
            "hop-by-hop {name} is forwarded"
        );
    }
    for name in connection_options(&parts.headers) {
        if !SET_BY_PROXY.contains(&name.as_str()) {
            assert!(
                !headers.contains_key(&name),
                "{name}, named in Connection, is forwarded"
            );
        }
    }
    let forwarded: Vec<_> = headers.get_all(header::FORWARDED).iter().collect();
    assert_eq!(forwarded.len(), 1);
    let forwarded = forwarded[0].to_str().expect("Forwarded is text");
    assert!(forwarded.starts_with("for=") && forwarded.ends_with(";proto=http"));

    let authority = Authority::from_static("10.1.2.3:8080");
    let upstream = upstream_request(
        parts.method.clone(),
        &authority,
        &path_and_query,
        headers,
        Either::Right(Empty::new()),
    );
    assert_eq!(upstream.method(), parts.method);
    assert_eq!(upstream.uri().authority(), Some(&authority));
    assert_eq!(upstream.uri().path_and_query(), Some(&path_and_query));
}

/// Every header name listed in the request's `Connection` headers (RFC 9110 §7.6.1).
fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect()
}
