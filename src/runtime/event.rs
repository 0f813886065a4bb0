//! HTTP request → event: the API Gateway HTTP API payload format 2.0, exactly as Lambda function
//! URLs send it; and the raw events of invocations that are not HTTP requests. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::http::{HeaderMap, Method, Version, header};
use base64::Engine;
use serde::Serialize;

/// What the event is built from: a request whose body has been read.
#[derive(Clone, Debug)]
pub struct HttpRequest<'a> {
    pub method: &'a Method,
    /// The request target's path, as sent (not decoded).
    pub path: &'a str,
    /// The query, without `?`; empty when there is none.
    pub query: &'a str,
    pub version: Version,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The peer of the TCP connection (the activator, in a cluster).
    pub peer: IpAddr,
}

/// Who and when: the parts of the event that do not come from the request.
#[derive(Clone, Debug)]
pub struct EventContext<'a> {
    pub request_id: &'a str,
    /// The function's namespace, in the account slot.
    pub namespace: &'a str,
    pub function: &'a str,
    pub arrival: jiff::Timestamp,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpEvent {
    pub version: &'static str,
    pub route_key: &'static str,
    pub raw_path: String,
    pub raw_query_string: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookies: Option<Vec<String>>,
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_string_parameters: Option<BTreeMap<String, String>>,
    pub request_context: RequestContext,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub is_base64_encoded: bool,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    pub account_id: String,
    pub api_id: String,
    pub domain_name: String,
    pub domain_prefix: String,
    pub http: HttpDescription,
    pub request_id: String,
    pub route_key: &'static str,
    pub stage: &'static str,
    pub time: String,
    pub time_epoch: i64,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpDescription {
    pub method: String,
    pub path: String,
    pub protocol: &'static str,
    pub source_ip: String,
    pub user_agent: String,
}

const DEFAULT: &str = "$default";

/// The function-URL event of `request`. The `cookie` header becomes `cookies` (as function URLs
/// do, it is not also among `headers`); repeated headers and query parameters are joined with
/// `,`; the body is base64 unless its content type is text ([`is_text`]) and it is UTF-8.
pub fn http_event(request: &HttpRequest<'_>, context: &EventContext<'_>) -> HttpEvent {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in request.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        if name == header::COOKIE {
            cookies.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|cookie| !cookie.is_empty())
                    .map(String::from),
            );
            continue;
        }
        headers
            .entry(name.as_str().to_string())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }

    let (body, is_base64_encoded) = event_body(request.headers, request.body);
    let domain_name = domain_name(request.headers);
    let domain_prefix = domain_name
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let query_string_parameters = query_parameters(request.query);
    HttpEvent {
        version: "2.0",
        route_key: DEFAULT,
        raw_path: request.path.to_string(),
        raw_query_string: request.query.to_string(),
        cookies: (!cookies.is_empty()).then_some(cookies),
        query_string_parameters: (!query_string_parameters.is_empty())
            .then_some(query_string_parameters),
        request_context: RequestContext {
            account_id: context.namespace.to_string(),
            api_id: context.function.to_string(),
            domain_name,
            domain_prefix,
            http: HttpDescription {
                method: request.method.as_str().to_string(),
                path: request.path.to_string(),
                protocol: protocol(request.version),
                source_ip: source_ip(request.headers, request.peer),
                user_agent: header_text(request.headers, header::USER_AGENT.as_str())
                    .unwrap_or_default(),
            },
            request_id: context.request_id.to_string(),
            route_key: DEFAULT,
            stage: DEFAULT,
            time: context
                .arrival
                .strftime("%d/%b/%Y:%H:%M:%S +0000")
                .to_string(),
            time_epoch: context.arrival.as_millisecond(),
        },
        headers,
        body,
        is_base64_encoded,
    }
}

/// The event of a request that is not an HTTP event (a schedule tick, an Invoke API event): its
/// body when it is JSON, `{}` when it is empty, else the body's text as a JSON string.
pub fn raw_event(body: &[u8]) -> Vec<u8> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return b"{}".to_vec();
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return body.to_vec();
    }
    serde_json::to_vec(&String::from_utf8_lossy(body)).unwrap_or_default()
}

/// Whether a body of `content_type` travels as text in events and responses: `text/*` and the
/// JSON, XML and JavaScript types. Everything else, form posts and a missing type included, is
/// base64, as function URLs do.
pub fn is_text(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind == "text"
        || matches!(subtype, "json" | "xml" | "javascript" | "ecmascript")
        || subtype.ends_with("+json")
        || subtype.ends_with("+xml")
}

fn event_body(headers: &HeaderMap, body: &[u8]) -> (Option<String>, bool) {
    if body.is_empty() {
        return (None, false);
    }
    let text = header_text(headers, header::CONTENT_TYPE.as_str())
        .is_some_and(|content_type| is_text(&content_type));
    match std::str::from_utf8(body) {
        Ok(body) if text => (Some(body.to_string()), false),
        _ => (
            Some(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// The host the client asked for, without its port: `X-Forwarded-Host` (the activator keeps the
/// client's there), else `Host`.
fn domain_name(headers: &HeaderMap) -> String {
    let host = header_text(headers, "x-forwarded-host")
        .or_else(|| header_text(headers, header::HOST.as_str()))
        .unwrap_or_default();
    let host = host.split(',').next().unwrap_or_default().trim();
    strip_port(host).to_string()
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The first address of `X-Forwarded-For` (the client, as the activator saw it), else the peer.
fn source_ip(headers: &HeaderMap, peer: IpAddr) -> String {
    header_text(headers, "x-forwarded-for")
        .and_then(|list| {
            list.split(',')
                .next()
                .map(str::trim)
                .filter(|first| !first.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| peer.to_string())
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Decoded query parameters; a name given more than once has its values joined with `,`.
fn query_parameters(query: &str) -> BTreeMap<String, String> {
    let mut parameters: BTreeMap<String, String> = BTreeMap::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (percent_decode(name), percent_decode(value));
        parameters
            .entry(name)
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    parameters
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; a malformed
/// escape stays as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                decoded.push(byte);
                i += 3;
                continue;
            }
            (b'+', None) => decoded.push(b' '),
            (byte, None) => decoded.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn event_of(
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> serde_json::Value {
        let request = HttpRequest {
            method,
            path,
            query,
            version: Version::HTTP_11,
            headers,
            body,
            peer: "10.0.0.7".parse().expect("an address"),
        };
        let context = EventContext {
            request_id: "c0ffee",
            namespace: "media",
            function: "thumbnail",
            arrival: "2021-09-07T22:50:22.677Z".parse().expect("a time"),
        };
        serde_json::to_value(http_event(&request, &context)).expect("the event serializes")
    }

    #[test]
    fn a_get_becomes_a_function_url_event() {
        let headers = headers(&[
            ("host", "thumbnail.media.fargo.local:8080"),
            ("user-agent", "curl/8"),
            ("accept", "text/html"),
            ("accept", "application/json"),
            ("cookie", "a=1; b=2"),
            ("cookie", "c=3"),
        ]);
        let event = event_of(
            &Method::GET,
            "/photos/a%20b",
            "size=small&tag=x&tag=y&q=a+b%21",
            &headers,
            b"",
        );
        assert_eq!(
            event,
            serde_json::json!({
                "version": "2.0",
                "routeKey": "$default",
                "rawPath": "/photos/a%20b",
                "rawQueryString": "size=small&tag=x&tag=y&q=a+b%21",
                "cookies": ["a=1", "b=2", "c=3"],
                "headers": {
                    "host": "thumbnail.media.fargo.local:8080",
                    "user-agent": "curl/8",
                    "accept": "text/html,application/json"
                },
                "queryStringParameters": {"size": "small", "tag": "x,y", "q": "a b!"},
                "requestContext": {
                    "accountId": "media",
                    "apiId": "thumbnail",
                    "domainName": "thumbnail.media.fargo.local",
                    "domainPrefix": "thumbnail",
                    "http": {
                        "method": "GET",
                        "path": "/photos/a%20b",
                        "protocol": "HTTP/1.1",
                        "sourceIp": "10.0.0.7",
                        "userAgent": "curl/8"
                    },
                    "requestId": "c0ffee",
                    "routeKey": "$default",
                    "stage": "$default",
                    "time": "07/Sep/2021:22:50:22 +0000",
                    "timeEpoch": 1631055022677i64
                },
                "isBase64Encoded": false
            })
        );
    }

    #[test]
    fn the_client_address_is_the_first_forwarded_for_and_the_host_the_forwarded_host() {
        let headers = headers(&[
            ("host", "10.1.2.3:8080"),
            ("x-forwarded-host", "shop.example.com"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
        ]);
        let event = event_of(&Method::GET, "/", "", &headers, b"");
        assert_eq!(event["requestContext"]["http"]["sourceIp"], "203.0.113.9");
        assert_eq!(event["requestContext"]["domainName"], "shop.example.com");
        assert_eq!(event["requestContext"]["domainPrefix"], "shop");
        assert!(event.get("cookies").is_none());
        assert!(event.get("queryStringParameters").is_none());
        assert!(event.get("body").is_none());
    }

    #[test]
    fn text_bodies_stay_text_and_others_are_base64() {
        let json = headers(&[("content-type", "application/json; charset=utf-8")]);
        let event = event_of(&Method::POST, "/", "", &json, br#"{"a":1}"#);
        assert_eq!(event["body"], r#"{"a":1}"#);
        assert_eq!(event["isBase64Encoded"], false);

        let binary = headers(&[("content-type", "application/octet-stream")]);
        let event = event_of(&Method::POST, "/", "", &binary, &[0, 159, 146, 150]);
        assert_eq!(event["body"], "AJ+Slg==");
        assert_eq!(event["isBase64Encoded"], true);

        let untyped = HeaderMap::new();
        assert_eq!(
            event_of(&Method::POST, "/", "", &untyped, b"hi")["isBase64Encoded"],
            true
        );

        let not_utf8 = headers(&[("content-type", "text/plain")]);
        assert_eq!(
            event_of(&Method::POST, "/", "", &not_utf8, &[0xff])["isBase64Encoded"],
            true
        );
    }

    #[test]
    fn text_types_are_text_json_xml_and_javascript() {
        for text in [
            "text/plain",
            "text/html; charset=utf-8",
            "application/json",
            "application/ld+json",
            "application/xml",
            "image/svg+xml",
            "application/javascript",
        ] {
            assert!(is_text(text), "{text}");
        }
        for binary in [
            "application/octet-stream",
            "image/png",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
            "json",
        ] {
            assert!(!is_text(binary), "{binary}");
        }
    }

    #[test]
    fn raw_events_are_the_body_when_it_is_json() {
        assert_eq!(raw_event(br#"{"tick":1}"#), br#"{"tick":1}"#);
        assert_eq!(raw_event(b""), b"{}");
        assert_eq!(raw_event(b"  \n"), b"{}");
        assert_eq!(raw_event(b"nightly run"), br#""nightly run""#);
    }

    #[test]
    fn malformed_escapes_stay_as_they_are() {
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }
}
