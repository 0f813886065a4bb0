//! Who is calling the activator's Lambda Invoke API: AWS Signature Version 4 verification.
//!
//! The callers are AWS clients (the AWS CLI, boto3 and the other SDKs) pointed at the activator,
//! so a request is authenticated the way Lambda does it: the `Authorization` header carries an
//! access key id, the credential scope, the names of the signed headers and an HMAC-SHA256 over
//! the request's canonical form. The canonical form here is the one botocore's `SigV4Auth`
//! builds (the path normalized and percent-encoded once more, the query sorted, header values
//! trimmed), since that is what the clients sign; checked against the AWS SigV4 test suite.
//!
//! Pure: the activator reads the body, hashes it with [`sha256_hex`] and passes the time, so
//! every rule here is tested without a server or a clock.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{KeyInit, Mac};
use hyper::http::header::AUTHORIZATION;
use hyper::http::uri::Authority;
use hyper::http::{HeaderMap, Method, Uri};
use jiff::{SignedDuration, Timestamp};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};
use serde_json::Value;
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// The one signing algorithm of Signature Version 4 with header signing.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service that requests to the Invoke API are signed for.
const LAMBDA: &str = "lambda";
/// `X-Amz-Date`'s form: the signing time in UTC, to the second.
const AMZ_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// How far the signing time may be from the activator's clock, either way (AWS's limit).
const CLOCK_SKEW: SignedDuration = SignedDuration::from_mins(15);
/// The `x-amz-content-sha256` value of a client that chose not to sign the body.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// What a key's value in the Secret looks like, for the problems reported about it.
const KEY_ENTRY_SHAPE: &str = r#"{"secretAccessKey": "…", "namespaces": ["team-a", "team-*"]}"#;

/// Everything but RFC 3986's unreserved characters is percent-encoded, in query parameters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// In the path, `/` separates segments and stays as it is.
const PATH_UNRESERVED: &AsciiSet = &UNRESERVED.remove(b'/');

/// Access keys from the Secret named by `fargo activator --invoke-keys-secret` (in the
/// activator's namespace). Each data key is an access key id; its value is JSON:
/// `{"secretAccessKey": "…", "namespaces": ["team-a", "team-*"]}`.
/// `namespaces` are patterns with `*` (any run of characters) — the namespaces this key may
/// invoke; the first entry without a wildcard is the key's default namespace (used for a plain
/// function name); `"*"` alone allows every namespace and gives no default.
pub struct AccessKeys {
    by_id: BTreeMap<String, AccessKey>,
}

struct AccessKey {
    secret_access_key: String,
    namespaces: Vec<String>,
}

/// Names the key ids only: the secrets never reach a log.
impl fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.by_id.keys()).finish()
    }
}

impl AccessKeys {
    pub fn empty() -> Self {
        Self {
            by_id: BTreeMap::new(),
        }
    }

    /// Parses the Secret's data; keys whose value is not valid are skipped and described in
    /// the returned problems (one line each, naming the key id but never the secret), so one
    /// bad entry does not lock everyone out.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> (Self, Vec<String>) {
        let mut keys = Self::empty();
        let mut problems = vec![];
        for (access_key_id, value) in data {
            match AccessKey::parse(value) {
                Ok(key) => {
                    keys.by_id.insert(access_key_id.clone(), key);
                }
                Err(reason) => problems.push(format!(
                    "invoke key \"{access_key_id}\" is skipped: its value {reason}; \
                     it should be {KEY_ENTRY_SHAPE}"
                )),
            }
        }
        (keys, problems)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl AccessKey {
    /// Reads one entry by hand rather than through a serde struct: serde's messages quote the
    /// offending value, and a mistyped `secretAccessKey` would put the secret in a log.
    fn parse(value: &[u8]) -> Result<Self, String> {
        let json: Value = serde_json::from_slice(value).map_err(|error| {
            format!(
                "is not JSON (line {}, column {})",
                error.line(),
                error.column()
            )
        })?;
        let Value::Object(fields) = json else {
            return Err("is not a JSON object".into());
        };
        if let Some(unknown) = fields
            .keys()
            .find(|field| !matches!(field.as_str(), "secretAccessKey" | "namespaces"))
        {
            return Err(format!("has an unknown field \"{unknown}\""));
        }
        let secret_access_key = match fields.get("secretAccessKey") {
            Some(Value::String(secret)) if !secret.is_empty() => secret.clone(),
            _ => return Err("has no \"secretAccessKey\" string".into()),
        };
        let namespaces = match fields.get("namespaces") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("has a \"namespaces\" entry that is not a string")?,
            _ => return Err("has no \"namespaces\" list".into()),
        };
        if namespaces.is_empty() {
            return Err("grants no namespace (\"namespaces\" is empty)".into());
        }
        if let Some(bad) = namespaces
            .iter()
            .find(|pattern| !is_namespace_pattern(pattern))
        {
            return Err(format!(
                "has the namespace pattern \"{bad}\", which can match no namespace: \
                 use lowercase letters, digits, '-' and '*'"
            ));
        }
        Ok(Self {
            secret_access_key,
            namespaces,
        })
    }
}

/// A namespace name with `*`s in it: anything else could never match a namespace.
fn is_namespace_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*')
}

/// Whether `namespace` matches `pattern`, where `*` stands for any run of characters.
///
/// Only `*`: namespace names cannot hold other wildcard characters, so `?` has no meaning to
/// give. With `*` alone, taking each middle piece at its first occurrence never loses a match.
fn namespace_matches(pattern: &str, namespace: &str) -> bool {
    let Some((head, tail)) = pattern.split_once('*') else {
        return pattern == namespace;
    };
    let Some(mut rest) = namespace.strip_prefix(head) else {
        return false;
    };
    let (middle, last) = tail.rsplit_once('*').unwrap_or(("", tail));
    for piece in middle.split('*') {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Who signed a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub access_key_id: String,
    /// The patterns of the namespaces the caller may invoke, as its key's entry lists them.
    pub namespaces: Vec<String>,
}

impl Caller {
    pub fn may_invoke(&self, namespace: &str) -> bool {
        self.namespaces
            .iter()
            .any(|pattern| namespace_matches(pattern, namespace))
    }

    /// The namespace of a function named without one: the first pattern that names a single
    /// namespace.
    pub fn default_namespace(&self) -> Option<&str> {
        self.namespaces
            .iter()
            .find(|pattern| !pattern.contains('*'))
            .map(String::as_str)
    }
}

/// The parts of a request that a signature covers, as the activator received them.
pub struct RequestParts<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

/// Why a request is not authenticated; the text goes back to the client.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "Missing Authentication Token: the request has no Authorization header; sign it with \
         AWS Signature Version 4 (the AWS CLI and SDKs do) using one of the activator's invoke keys"
    )]
    Unsigned,
    #[error(
        "the Authorization header is not `{ALGORITHM} Credential=ACCESS_KEY_ID/YYYYMMDD/REGION/\
         SERVICE/aws4_request, SignedHeaders=…, Signature=…`: {0}"
    )]
    MalformedAuthorization(String),
    #[error(
        "the credential scope names the service \"{service}\", but these requests are signed for \
         \"{expected}\""
    )]
    WrongService { service: String, expected: String },
    #[error(
        "the credential scope names the region \"{region}\", but this activator takes requests \
         signed for \"{expected}\": set the client's region to \"{expected}\""
    )]
    WrongRegion { region: String, expected: String },
    #[error("X-Amz-Date: {0}; it must be the signing time in UTC as YYYYMMDD'T'HHMMSS'Z'")]
    InvalidDate(String),
    #[error(
        "the credential scope's date {credential} is not the date of X-Amz-Date {signed}: \
         sign with one time for both"
    )]
    DateMismatch { credential: String, signed: String },
    #[error(
        "Signature expired: the request was signed at {signed}, more than 15 minutes before \
         the activator's time {now}; sign it again, and check the client's clock"
    )]
    Expired { signed: Timestamp, now: Timestamp },
    #[error(
        "Signature not yet current: the request was signed at {signed}, more than 15 minutes \
         after the activator's time {now}; check the client's clock"
    )]
    NotYetCurrent { signed: Timestamp, now: Timestamp },
    #[error(
        "the access key \"{access_key_id}\" is not one of the activator's invoke keys \
         (the Secret named by --invoke-keys-secret)"
    )]
    UnknownAccessKey { access_key_id: String },
    #[error("the signature does not cover the Host header: include host in SignedHeaders")]
    HostNotSigned,
    #[error("the signed header \"{0}\" is not in the request")]
    SignedHeaderMissing(String),
    #[error(
        "the x-amz-content-sha256 header is not the SHA-256 of the body the activator received"
    )]
    PayloadHashMismatch,
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method."
    )]
    SignatureMismatch,
}

impl AuthError {
    /// AWS's error type for the `x-amzn-ErrorType` header. "AccessDeniedException" is not
    /// here: whether a caller may invoke a namespace is [`Caller::may_invoke`]'s answer.
    pub fn aws_type(&self) -> &'static str {
        match self {
            AuthError::Unsigned => "MissingAuthenticationTokenException",
            AuthError::UnknownAccessKey { .. } => "UnrecognizedClientException",
            _ => "InvalidSignatureException",
        }
    }

    /// HTTP status: 403 for all of these, as Lambda answers them.
    pub fn status(&self) -> u16 {
        403
    }
}

/// Lowercase hex SHA-256 of bytes (the activator uses it for payload hashes).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Verifies a request's SigV4 header signature for service "lambda" (any region; the caller
/// passes `region: Option<&str>` to enforce one when Some). `payload_sha256` is the lowercase
/// hex SHA-256 of the body the activator read (it always buffers bodies it authenticates).
pub fn verify(
    keys: &AccessKeys,
    request: &RequestParts<'_>,
    payload_sha256: &str,
    now: Timestamp,
    region: Option<&str>,
) -> Result<Caller, AuthError> {
    let parts = SignedParts::of(request);
    verify_for_service(keys, &parts, payload_sha256, now, region, LAMBDA)
}

/// [`verify`] for any service: the AWS test suite signs for "service".
fn verify_for_service(
    keys: &AccessKeys,
    request: &SignedParts<'_>,
    payload_sha256: &str,
    now: Timestamp,
    region: Option<&str>,
    service: &str,
) -> Result<Caller, AuthError> {
    let authorization = Authorization::from_headers(request.headers)?;
    let scope = &authorization.scope;
    scope.check(service, region)?;
    if !authorization.covers("host") {
        return Err(AuthError::HostNotSigned);
    }
    let (amz_date, signed_at) = signing_time(request.headers)?;
    if amz_date.get(..8) != Some(scope.date) {
        return Err(AuthError::DateMismatch {
            credential: scope.date.into(),
            signed: amz_date.into(),
        });
    }
    check_clock(signed_at, now)?;
    let key = keys
        .by_id
        .get(scope.access_key_id)
        .ok_or_else(|| AuthError::UnknownAccessKey {
            access_key_id: scope.access_key_id.into(),
        })?;
    let payload_hash = payload_hash(request.headers, payload_sha256)?;
    let canonical = canonical_request(request, authorization.signed_headers, payload_hash)?;
    let mut mac = keyed_hmac(&signing_key(&key.secret_access_key, scope));
    mac.update(string_to_sign(amz_date, scope, &canonical).as_bytes());
    // Constant time: how much of a guess matched must not show in the response time.
    mac.verify_slice(&authorization.signature)
        .map_err(|_| AuthError::SignatureMismatch)?;
    Ok(Caller {
        access_key_id: scope.access_key_id.into(),
        namespaces: key.namespaces.clone(),
    })
}

/// A request's signed parts with the path and query as text, as the signer saw them (the AWS
/// test suite has paths that no [`Uri`] holds, such as one with a space).
struct SignedParts<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    /// HTTP/2 carries the host as `:authority`, which hyper keeps in the URI, not the headers.
    authority: Option<&'a str>,
    headers: &'a HeaderMap,
}

impl<'a> SignedParts<'a> {
    fn of(request: &RequestParts<'a>) -> Self {
        Self {
            method: request.method.as_str(),
            path: request.uri.path(),
            query: request.uri.query().unwrap_or(""),
            authority: request.uri.authority().map(Authority::as_str),
            headers: request.headers,
        }
    }
}

/// The `Authorization` header's parts.
struct Authorization<'a> {
    scope: Scope<'a>,
    /// As the client sent it: it is part of what was signed.
    signed_headers: &'a str,
    signature: [u8; 32],
}

/// `Credential=ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request`.
struct Scope<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

impl<'a> Authorization<'a> {
    fn from_headers(headers: &'a HeaderMap) -> Result<Self, AuthError> {
        let header = headers.get(AUTHORIZATION).ok_or(AuthError::Unsigned)?;
        let text = header
            .to_str()
            .map_err(|_| malformed("it is not ASCII text"))?;
        Self::parse(text)
    }

    /// `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`, the three in any order.
    fn parse(text: &'a str) -> Result<Self, AuthError> {
        let (algorithm, components) = text.split_once(' ').unwrap_or((text, ""));
        if algorithm != ALGORITHM {
            return Err(malformed(format!(
                "the algorithm \"{algorithm}\" is not {ALGORITHM}"
            )));
        }
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for component in components.split(',').map(str::trim) {
            let (name, value) = component
                .split_once('=')
                .ok_or_else(|| malformed("its parts must be NAME=VALUE, separated by commas"))?;
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => return Err(malformed(format!("\"{name}\" is not one of its parts"))),
            };
            if slot.replace(value).is_some() {
                return Err(malformed(format!("{name} is given twice")));
            }
        }
        let credential = credential.ok_or_else(|| malformed("Credential is missing"))?;
        let signed_headers = signed_headers
            .filter(|names| !names.is_empty())
            .ok_or_else(|| malformed("SignedHeaders is missing"))?;
        let signature = signature
            .and_then(decode_signature)
            .ok_or_else(|| malformed("Signature must be 64 hexadecimal digits"))?;
        Ok(Self {
            scope: Scope::parse(credential)?,
            signed_headers,
            signature,
        })
    }
}

impl Authorization<'_> {
    fn covers(&self, header: &str) -> bool {
        self.signed_headers.split(';').any(|name| name == header)
    }
}

impl<'a> Scope<'a> {
    fn parse(credential: &'a str) -> Result<Self, AuthError> {
        match credential.split('/').collect::<Vec<_>>()[..] {
            [access_key_id, date, region, service, "aws4_request"] => Ok(Self {
                access_key_id,
                date,
                region,
                service,
            }),
            _ => Err(malformed(format!(
                "Credential \"{credential}\" does not have the form shown"
            ))),
        }
    }

    fn check(&self, service: &str, region: Option<&str>) -> Result<(), AuthError> {
        if self.service != service {
            return Err(AuthError::WrongService {
                service: self.service.into(),
                expected: service.into(),
            });
        }
        match region {
            Some(expected) if self.region != expected => Err(AuthError::WrongRegion {
                region: self.region.into(),
                expected: expected.into(),
            }),
            _ => Ok(()),
        }
    }

    /// The scope without the access key id, as the string to sign holds it.
    fn without_key(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

fn malformed(reason: impl Into<String>) -> AuthError {
    AuthError::MalformedAuthorization(reason.into())
}

fn decode_signature(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut signature = [0; 32];
    for (byte, pair) in signature.iter_mut().zip(text.as_bytes().chunks(2)) {
        let digit = |b: u8| char::from(b).to_digit(16);
        *byte = u8::try_from((digit(pair[0])? << 4) | digit(pair[1])?).ok()?;
    }
    Some(signature)
}

/// `X-Amz-Date` as sent (it is part of the string to sign) and as a time.
fn signing_time(headers: &HeaderMap) -> Result<(&str, Timestamp), AuthError> {
    let value = headers
        .get("x-amz-date")
        .ok_or_else(|| AuthError::InvalidDate("the request has no X-Amz-Date header".into()))?;
    let invalid = || AuthError::InvalidDate(format!("{value:?} is not a time"));
    let text = value.to_str().map_err(|_| invalid())?;
    // The parser takes signs and short numbers; the signed form has neither.
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid());
    }
    let signed_at = jiff::civil::DateTime::strptime(AMZ_DATE_FORMAT, text)
        .and_then(|time| time.to_zoned(jiff::tz::TimeZone::UTC))
        .map_err(|_| invalid())?
        .timestamp();
    Ok((text, signed_at))
}

/// A signature is good for 15 minutes either side of its time, so a captured request cannot
/// be replayed later and clocks a little apart still agree.
fn check_clock(signed: Timestamp, now: Timestamp) -> Result<(), AuthError> {
    let age = now.duration_since(signed);
    if age > CLOCK_SKEW {
        Err(AuthError::Expired { signed, now })
    } else if age < -CLOCK_SKEW {
        Err(AuthError::NotYetCurrent { signed, now })
    } else {
        Ok(())
    }
}

/// The payload line of the canonical request. A client may say it signed no body
/// (`UNSIGNED-PAYLOAD`); any other `x-amz-content-sha256` must be the body's hash, which
/// botocore then signs as it stands in the header.
fn payload_hash<'a>(headers: &HeaderMap, payload_sha256: &'a str) -> Result<&'a str, AuthError> {
    match headers.get("x-amz-content-sha256") {
        None => Ok(payload_sha256),
        Some(value) if value == UNSIGNED_PAYLOAD => Ok(UNSIGNED_PAYLOAD),
        Some(value) if value == payload_sha256 => Ok(payload_sha256),
        Some(_) => Err(AuthError::PayloadHashMismatch),
    }
}

/// The canonical request: method, path, query, the signed headers and their names, and the
/// payload's hash, one to a line.
fn canonical_request(
    request: &SignedParts<'_>,
    signed_headers: &str,
    payload_hash: &str,
) -> Result<String, AuthError> {
    Ok(format!(
        "{}\n{}\n{}\n{}\n{signed_headers}\n{payload_hash}",
        request.method,
        canonical_uri(request.path),
        canonical_query(request.query),
        canonical_headers(request, signed_headers)?,
    ))
}

/// The path as sent, normalized and then percent-encoded once more: for every service but S3,
/// the signed path is encoded twice (`%2F` in a function name is signed as `%252F`).
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    percent_encode(remove_dot_segments(path).as_bytes(), PATH_UNRESERVED).to_string()
}

/// RFC 3986's dot-segment removal with empty segments dropped as well (AWS signs `//a//` as
/// `/a/`); a trailing slash stays, unless nothing else does.
fn remove_dot_segments(path: &str) -> String {
    let mut segments = vec![];
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let lead = if path.starts_with('/') { "/" } else { "" };
    let trail = if path.ends_with('/') && !segments.is_empty() {
        "/"
    } else {
        ""
    };
    format!("{lead}{}{trail}", segments.join("/"))
}

/// Parameters sorted by name, then value, each encoded the AWS way (what the client sent is
/// decoded first, so either spelling of a character signs the same); `flag` is `flag=`.
fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (aws_encode(name), aws_encode(value))
        })
        .collect();
    pairs.sort();
    let pairs: Vec<String> = pairs
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    pairs.join("&")
}

fn aws_encode(component: &str) -> String {
    let bytes: Vec<u8> = percent_decode_str(component).collect();
    percent_encode(&bytes, UNRESERVED).to_string()
}

/// One `name:value` line per signed header, in the order SignedHeaders names them; repeated
/// headers joined with `,`.
fn canonical_headers(request: &SignedParts<'_>, signed_headers: &str) -> Result<String, AuthError> {
    let mut lines = String::new();
    for name in signed_headers.split(';') {
        lines.push_str(name);
        lines.push(':');
        lines.push_str(&header_values(request, name)?.join(","));
        lines.push('\n');
    }
    Ok(lines)
}

fn header_values(request: &SignedParts<'_>, name: &str) -> Result<Vec<String>, AuthError> {
    let values: Vec<String> = request
        .headers
        .get_all(name)
        .iter()
        .map(|value| trim_all(&String::from_utf8_lossy(value.as_bytes())))
        .collect();
    if !values.is_empty() {
        return Ok(values);
    }
    match request.authority {
        Some(authority) if name == "host" => Ok(vec![authority.into()]),
        _ => Err(AuthError::SignedHeaderMissing(name.into())),
    }
}

/// SigV4's Trimall: no space at either end, and each run of spaces inside made one.
fn trim_all(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn string_to_sign(amz_date: &str, scope: &Scope<'_>, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        scope.without_key(),
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The key that signs requests of one day, region and service: the secret itself never
/// signs a request.
fn signing_key(secret_access_key: &str, scope: &Scope<'_>) -> [u8; 32] {
    let date_key = hmac(format!("AWS4{secret_access_key}").as_bytes(), scope.date);
    let region_key = hmac(&date_key, scope.region);
    let service_key = hmac(&region_key, scope.service);
    hmac(&service_key, "aws4_request")
}

fn hmac(key: &[u8], text: &str) -> [u8; 32] {
    let mut mac = keyed_hmac(key);
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().into()
}

fn keyed_hmac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]])
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use hyper::http::HeaderValue;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const INVOKE_PATH: &str = "/2015-03-31/functions/team-a%2Fecho/invocations";

    fn access_keys(entries: &[(&str, &str)]) -> (AccessKeys, Vec<String>) {
        let data = entries
            .iter()
            .map(|(id, value)| (id.to_string(), value.as_bytes().to_vec()))
            .collect();
        AccessKeys::from_secret_data(&data)
    }

    fn team_keys() -> AccessKeys {
        let entry = format!(r#"{{"secretAccessKey": "{SECRET}", "namespaces": ["team-a"]}}"#);
        access_keys(&[("AKIDTEAMA", &entry)]).0
    }

    fn time(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// Every header's name, sorted: what botocore signs (it signs all but a few hop-by-hop
    /// ones, which these requests do not have).
    fn all_header_names(headers: &HeaderMap) -> String {
        let mut names: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
        names.sort();
        names.dedup();
        names.join(";")
    }

    /// A client's signature, made from this module's own canonical request.
    fn sign(
        parts: &SignedParts<'_>,
        scope: &Scope<'_>,
        amz_date: &str,
        body: &[u8],
    ) -> HeaderValue {
        let signed_headers = all_header_names(parts.headers);
        let canonical = canonical_request(parts, &signed_headers, &sha256_hex(body)).unwrap();
        let string_to_sign = string_to_sign(amz_date, scope, &canonical);
        let signature = hex(&hmac(&signing_key(SECRET, scope), &string_to_sign));
        format!(
            "{ALGORITHM} Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
            scope.access_key_id,
            scope.without_key()
        )
        .parse()
        .unwrap()
    }

    /// A Lambda Invoke request as boto3 sends it, signed at `signed_at`.
    struct Invoke {
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: &'static [u8],
    }

    impl Invoke {
        fn signed(access_key_id: &str, service: &str, signed_at: Timestamp) -> Self {
            let amz_date = signed_at.strftime(AMZ_DATE_FORMAT).to_string();
            let body = br#"{"hello": "world"}"#;
            let mut headers = HeaderMap::new();
            headers.insert("host", "activator.fargo.svc:8080".parse().unwrap());
            headers.insert("x-amz-date", amz_date.parse().unwrap());
            headers.insert("content-type", "application/json".parse().unwrap());
            headers.insert("x-amz-invocation-type", "RequestResponse".parse().unwrap());
            let mut invoke = Self {
                method: Method::POST,
                uri: INVOKE_PATH.parse().unwrap(),
                headers,
                body,
            };
            let scope = Scope {
                access_key_id,
                date: &amz_date[..8],
                region: "us-east-1",
                service,
            };
            let authorization = sign(&invoke.signed_parts(), &scope, &amz_date, body);
            invoke.headers.insert(AUTHORIZATION, authorization);
            invoke
        }

        fn signed_parts(&self) -> SignedParts<'_> {
            SignedParts::of(&self.parts())
        }

        fn parts(&self) -> RequestParts<'_> {
            RequestParts {
                method: &self.method,
                uri: &self.uri,
                headers: &self.headers,
            }
        }

        fn verify_at(&self, now: Timestamp) -> Result<Caller, AuthError> {
            verify(
                &team_keys(),
                &self.parts(),
                &sha256_hex(self.body),
                now,
                None,
            )
        }
    }

    const SIGNED_AT: &str = "2026-11-28T12:00:00Z";

    fn signed_invoke() -> Invoke {
        Invoke::signed("AKIDTEAMA", "lambda", time(SIGNED_AT))
    }

    fn aws_type(result: Result<Caller, AuthError>) -> &'static str {
        result.unwrap_err().aws_type()
    }

    /// From the AWS SigV4 test suite (as awslabs/aws-c-auth keeps it,
    /// tests/aws-signing-test-suite/v4): the request, then its header signature. All its
    /// requests are signed for service "service" in us-east-1 by AKIDEXAMPLE at
    /// 20150830T123600Z, with every header signed. Left out: get-header-value-multiline (an
    /// obsolete line fold, which `http` refuses), post-sts-header-after (a header added after
    /// signing), and the `-unnormalized` variants (S3's rules, where the path is not normalized).
    const SUITE: &[(&str, &str, &str)] = &[
        (
            "get-vanilla",
            "GET /\nHost:example.amazonaws.com",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-vanilla-empty-query-key",
            "GET /?Param1=value1\nHost:example.amazonaws.com",
            "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET /?Param2=value2&Param1=value1\nHost:example.amazonaws.com",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "get-vanilla-query-order-encoded",
            "GET /?Param-3=Value3&Param=Value2&%E1%88%B4=Value1\nHost:example.amazonaws.com",
            "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
        ),
        (
            "get-vanilla-query-unreserved",
            "GET /?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\
             =-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n\
             Host:example.amazonaws.com",
            "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        ),
        (
            "get-vanilla-utf8-query",
            "GET /?\u{1234}=bar\nHost:example.amazonaws.com",
            "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        ),
        (
            "get-vanilla-with-session-token",
            "GET /\nHost:example.amazonaws.com\nX-Amz-Security-Token:\
             6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
            "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
        ),
        (
            "get-utf8",
            "GET /\u{1234}\nHost:example.amazonaws.com",
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        ),
        (
            "get-unreserved",
            "GET /-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n\
             Host:example.amazonaws.com",
            "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
        ),
        (
            "get-space-normalized",
            "GET /example space/\nHost:example.amazonaws.com",
            "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        ),
        (
            "get-header-key-duplicate",
            "GET /\nHost:example.amazonaws.com\nMy-Header1:value2\nMy-Header1:value2\n\
             My-Header1:value1",
            "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        ),
        (
            "get-header-value-order",
            "GET /\nHost:example.amazonaws.com\nMy-Header1:value4\nMy-Header1:value1\n\
             My-Header1:value3\nMy-Header1:value2",
            "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
        ),
        (
            "get-header-value-trim",
            "GET /\nHost:example.amazonaws.com\nMy-Header1: value1\nMy-Header2: \"a   b   c\"",
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        ),
        (
            "get-relative-normalized",
            "GET /example/..\nHost:example.amazonaws.com",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-relative-relative-normalized",
            "GET /example1/example2/../..\nHost:example.amazonaws.com",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-slash-normalized",
            "GET //\nHost:example.amazonaws.com",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-slash-dot-slash-normalized",
            "GET /./\nHost:example.amazonaws.com",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-slash-pointless-dot-normalized",
            "GET /./example\nHost:example.amazonaws.com",
            "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
        ),
        (
            "get-slashes-normalized",
            "GET //example//\nHost:example.amazonaws.com",
            "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
        ),
        (
            "post-vanilla",
            "POST /\nHost:example.amazonaws.com",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "post-vanilla-query",
            "POST /?Param1=value1\nHost:example.amazonaws.com",
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        ),
        (
            "post-header-key-sort",
            "POST /\nHost:example.amazonaws.com\nMy-Header1:value1",
            "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
        ),
        (
            "post-header-value-case",
            "POST /\nHost:example.amazonaws.com\nMy-Header1:VALUE1",
            "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
        ),
        (
            "post-sts-header-before",
            "POST /\nHost:example.amazonaws.com\nX-Amz-Security-Token:AQoDYXdzEPT//////////\
             wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTf\
             lfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT\
             7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqB\
             Az+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==",
            "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
        ),
        (
            "post-x-www-form-urlencoded",
            "POST /\nContent-Type:application/x-www-form-urlencoded\n\
             Host:example.amazonaws.com\nContent-Length:13\nX-Amz-Content-Sha256:\
             9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e\n\nParam1=value1",
            "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        ),
        (
            "post-x-www-form-urlencoded-parameters",
            "POST /\nContent-Type:application/x-www-form-urlencoded; charset=utf-8\n\
             Host:example.amazonaws.com\nContent-Length:13\nX-Amz-Content-Sha256:\
             9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e\n\nParam1=value1",
            "328d1b9eaadca9f5818ef05e8392801e091653bafec24fcab71e7344e7f51422",
        ),
    ];

    /// Verifies one request of the suite: `METHOD TARGET`, header lines, a blank line, body.
    fn verify_suite_request(request: &str, signature: &str) -> Result<Caller, AuthError> {
        let (head, body) = request.split_once("\n\n").unwrap_or((request, ""));
        let mut lines = head.lines();
        let (method, target) = lines.next().unwrap().split_once(' ').unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').unwrap();
            let name: hyper::http::HeaderName = name.parse().unwrap();
            headers.append(name, value.parse().unwrap());
        }
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let authorization = format!(
            "{ALGORITHM} Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={}, Signature={signature}",
            all_header_names(&headers)
        );
        headers.insert(AUTHORIZATION, authorization.parse().unwrap());
        let entry = format!(r#"{{"secretAccessKey": "{SECRET}", "namespaces": ["*"]}}"#);
        let (keys, _) = access_keys(&[("AKIDEXAMPLE", &entry)]);
        let parts = SignedParts {
            method,
            path,
            query,
            authority: None,
            headers: &headers,
        };
        let payload = sha256_hex(body.as_bytes());
        let now = time("2015-08-30T12:36:00Z");
        verify_for_service(&keys, &parts, &payload, now, Some("us-east-1"), "service")
    }

    #[test]
    fn accepts_the_aws_sigv4_test_suite() {
        for (name, request, signature) in SUITE {
            let caller = verify_suite_request(request, signature)
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(caller.access_key_id, "AKIDEXAMPLE", "{name}");
        }
    }

    #[test]
    fn rejects_a_suite_request_with_one_byte_of_its_signature_changed() {
        let signature = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf30";
        let result = verify_suite_request("GET /\nHost:example.amazonaws.com", signature);
        assert_eq!(result, Err(AuthError::SignatureMismatch));
    }

    #[test]
    fn accepts_a_lambda_invoke_signed_like_botocore() {
        let caller = signed_invoke().verify_at(time(SIGNED_AT)).unwrap();
        assert_eq!(caller.access_key_id, "AKIDTEAMA");
        assert_eq!(caller.default_namespace(), Some("team-a"));
    }

    #[test]
    fn signs_an_encoded_slash_in_the_path_encoded_twice() {
        assert_eq!(
            canonical_uri(INVOKE_PATH),
            "/2015-03-31/functions/team-a%252Fecho/invocations"
        );
    }

    #[test]
    fn accepts_an_invoke_signed_up_to_15_minutes_either_side() {
        let invoke = signed_invoke();
        assert!(invoke.verify_at(time("2026-11-28T12:15:00Z")).is_ok());
        assert!(invoke.verify_at(time("2026-11-28T11:45:00Z")).is_ok());
    }

    #[test]
    fn rejects_a_tampered_body() {
        let mut invoke = signed_invoke();
        invoke.body = br#"{"hello": "mallory"}"#;
        let result = invoke.verify_at(time(SIGNED_AT));
        assert_eq!(result, Err(AuthError::SignatureMismatch));
        assert_eq!(aws_type(result), "InvalidSignatureException");
    }

    #[test]
    fn rejects_a_tampered_signed_header() {
        let mut invoke = signed_invoke();
        let event = HeaderValue::from_static("Event");
        invoke.headers.insert("x-amz-invocation-type", event);
        let result = invoke.verify_at(time(SIGNED_AT));
        assert_eq!(result, Err(AuthError::SignatureMismatch));
    }

    #[test]
    fn rejects_an_unknown_access_key() {
        let result =
            Invoke::signed("AKIDNOBODY", "lambda", time(SIGNED_AT)).verify_at(time(SIGNED_AT));
        assert_eq!(aws_type(result), "UnrecognizedClientException");
    }

    #[test]
    fn rejects_a_request_without_authorization() {
        let mut invoke = signed_invoke();
        invoke.headers.remove(AUTHORIZATION);
        let result = invoke.verify_at(time(SIGNED_AT));
        assert_eq!(result, Err(AuthError::Unsigned));
        assert_eq!(aws_type(result), "MissingAuthenticationTokenException");
    }

    #[test]
    fn rejects_a_signature_16_minutes_old_naming_both_times() {
        let result = signed_invoke().verify_at(time("2026-11-28T12:16:00Z"));
        let error = result.unwrap_err();
        assert_eq!(error.aws_type(), "InvalidSignatureException");
        let message = error.to_string();
        assert!(message.starts_with("Signature expired"), "{message}");
        assert!(message.contains("2026-11-28T12:00:00Z"), "{message}");
        assert!(message.contains("2026-11-28T12:16:00Z"), "{message}");
    }

    #[test]
    fn rejects_a_signature_from_16_minutes_ahead() {
        let result = signed_invoke().verify_at(time("2026-11-28T11:44:00Z"));
        assert!(matches!(result, Err(AuthError::NotYetCurrent { .. })));
        assert_eq!(aws_type(result), "InvalidSignatureException");
    }

    #[test]
    fn rejects_a_signature_for_another_service() {
        let invoke = Invoke::signed("AKIDTEAMA", "s3", time(SIGNED_AT));
        let result = invoke.verify_at(time(SIGNED_AT));
        assert!(matches!(result, Err(AuthError::WrongService { .. })));
        assert_eq!(aws_type(result), "InvalidSignatureException");
    }

    #[test]
    fn enforces_a_region_only_when_given_one() {
        let invoke = signed_invoke();
        let (keys, parts) = (team_keys(), invoke.parts());
        let payload = sha256_hex(invoke.body);
        let now = time(SIGNED_AT);
        assert!(verify(&keys, &parts, &payload, now, Some("us-east-1")).is_ok());
        let result = verify(&keys, &parts, &payload, now, Some("eu-west-1"));
        assert!(matches!(result, Err(AuthError::WrongRegion { .. })));
    }

    #[test]
    fn rejects_a_signature_that_does_not_cover_host() {
        let mut invoke = signed_invoke();
        let authorization = invoke.headers[AUTHORIZATION].to_str().unwrap();
        let without_host = authorization.replace(";host;", ";");
        invoke
            .headers
            .insert(AUTHORIZATION, without_host.parse().unwrap());
        assert_eq!(
            invoke.verify_at(time(SIGNED_AT)),
            Err(AuthError::HostNotSigned)
        );
    }

    #[test]
    fn rejects_a_request_missing_a_signed_header() {
        let mut invoke = signed_invoke();
        invoke.headers.remove("x-amz-invocation-type");
        let result = invoke.verify_at(time(SIGNED_AT));
        let missing = AuthError::SignedHeaderMissing("x-amz-invocation-type".into());
        assert_eq!(result, Err(missing));
        assert_eq!(aws_type(result), "InvalidSignatureException");
    }

    #[test]
    fn takes_the_host_from_the_uri_over_http2() {
        let mut invoke = signed_invoke();
        invoke.headers.remove("host");
        invoke.uri = format!("http://activator.fargo.svc:8080{INVOKE_PATH}")
            .parse()
            .unwrap();
        assert!(invoke.verify_at(time(SIGNED_AT)).is_ok());
    }

    #[test]
    fn rejects_a_content_sha256_header_that_is_not_the_body_hash() {
        let mut invoke = signed_invoke();
        let other = HeaderValue::from_str(&sha256_hex(b"another body")).unwrap();
        invoke.headers.insert("x-amz-content-sha256", other);
        let result = invoke.verify_at(time(SIGNED_AT));
        assert_eq!(result, Err(AuthError::PayloadHashMismatch));
        assert_eq!(aws_type(result), "InvalidSignatureException");
    }

    #[test]
    fn signs_an_unsigned_payload_as_the_literal() {
        let mut headers = HeaderMap::new();
        assert_eq!(payload_hash(&headers, "abc"), Ok("abc"));
        headers.insert("x-amz-content-sha256", HeaderValue::from_static("abc"));
        assert_eq!(payload_hash(&headers, "abc"), Ok("abc"));
        let unsigned = HeaderValue::from_static(UNSIGNED_PAYLOAD);
        headers.insert("x-amz-content-sha256", unsigned);
        assert_eq!(payload_hash(&headers, "abc"), Ok(UNSIGNED_PAYLOAD));
    }

    #[test]
    fn a_mismatch_message_holds_neither_the_secret_nor_the_expected_signature() {
        let mut invoke = signed_invoke();
        invoke.body = b"{}";
        let message = invoke.verify_at(time(SIGNED_AT)).unwrap_err().to_string();
        assert_eq!(
            message,
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method."
        );
    }

    #[test]
    fn rejects_malformed_authorization_headers() {
        let credential = "Credential=AKIDTEAMA/20261128/us-east-1/lambda/aws4_request";
        let signature = format!("Signature={}", "0".repeat(64));
        let cases = [
            format!("AWS4-HMAC-SHA1 {credential}, SignedHeaders=host, {signature}"),
            format!("AWS4-HMAC-SHA256 SignedHeaders=host, {signature}"),
            format!("AWS4-HMAC-SHA256 {credential}, {signature}"),
            format!("AWS4-HMAC-SHA256 {credential}, SignedHeaders=host, Signature=00"),
            // A sign is not a hexadecimal digit, though Rust's integer parser takes one.
            format!(
                "AWS4-HMAC-SHA256 {credential}, SignedHeaders=host, Signature={}",
                "+f".repeat(32)
            ),
            format!("AWS4-HMAC-SHA256 {credential}, SignedHeaders=host, {signature}, {signature}"),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDTEAMA/20261128/us-east-1/lambda, \
                 SignedHeaders=host, {signature}"
            ),
        ];
        for case in cases {
            let mut invoke = signed_invoke();
            invoke.headers.insert(AUTHORIZATION, case.parse().unwrap());
            let result = invoke.verify_at(time(SIGNED_AT));
            assert!(
                matches!(result, Err(AuthError::MalformedAuthorization(_))),
                "{case}: {result:?}"
            );
        }
    }

    #[test]
    fn rejects_a_credential_dated_another_day() {
        let mut invoke = signed_invoke();
        let authorization = invoke.headers[AUTHORIZATION].to_str().unwrap();
        let other_day = authorization.replace("/20261128/", "/20261127/");
        invoke
            .headers
            .insert(AUTHORIZATION, other_day.parse().unwrap());
        let result = invoke.verify_at(time(SIGNED_AT));
        assert!(matches!(result, Err(AuthError::DateMismatch { .. })));
    }

    #[test]
    fn rejects_an_x_amz_date_in_another_form() {
        let mut invoke = signed_invoke();
        let iso = HeaderValue::from_static("2026-11-28T12:00:00Z");
        invoke.headers.insert("x-amz-date", iso);
        let result = invoke.verify_at(time(SIGNED_AT));
        assert!(matches!(result, Err(AuthError::InvalidDate(_))));
    }

    #[test]
    fn removes_dot_segments_and_keeps_a_trailing_slash() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a/./b/../c/"), "/a/c/");
        assert_eq!(canonical_uri("/a/.."), "/");
        assert_eq!(canonical_uri("/a//b"), "/a/b");
    }

    #[test]
    fn canonical_query_decodes_then_encodes_and_sorts_by_name_then_value() {
        assert_eq!(
            canonical_query("MaxItems=10&Marker=a%2fb&flag&Marker=a+b&x=%7E"),
            "Marker=a%2Bb&Marker=a%2Fb&MaxItems=10&flag=&x=~"
        );
    }

    #[test]
    fn every_error_answers_403() {
        for error in [
            AuthError::Unsigned,
            AuthError::SignatureMismatch,
            AuthError::HostNotSigned,
        ] {
            assert_eq!(error.status(), 403);
        }
    }

    #[test]
    fn parses_a_key_with_its_namespaces() {
        let (keys, problems) = access_keys(&[(
            "AKIDTEAMS",
            r#"{"secretAccessKey": "s3cr3t", "namespaces": ["team-*", "team-a"]}"#,
        )]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.by_id["AKIDTEAMS"].namespaces, ["team-*", "team-a"]);
    }

    #[test]
    fn skips_a_bad_entry_and_names_it_without_its_secret() {
        let (keys, problems) = access_keys(&[
            (
                "AKIDGOOD",
                r#"{"secretAccessKey": "fine", "namespaces": ["a"]}"#,
            ),
            (
                "AKIDBROKEN",
                r#"{"secretAccessKey": "hunter2", "namespaces": ["a"]"#,
            ),
            (
                "AKIDTYPED",
                r#"{"secretAccessKey": 8675309, "namespaces": ["a"]}"#,
            ),
            (
                "AKIDTYPO",
                r#"{"secretAccessKey": "hunter2", "namespace": ["a"]}"#,
            ),
            (
                "AKIDNONE",
                r#"{"secretAccessKey": "hunter2", "namespaces": []}"#,
            ),
            (
                "AKIDUPPER",
                r#"{"secretAccessKey": "hunter2", "namespaces": ["Team-A"]}"#,
            ),
        ]);
        assert_eq!(keys.len(), 1);
        assert!(!keys.is_empty());
        assert_eq!(problems.len(), 5, "{problems:#?}");
        for (problem, id) in problems.iter().zip([
            "AKIDBROKEN",
            "AKIDNONE",
            "AKIDTYPED",
            "AKIDTYPO",
            "AKIDUPPER",
        ]) {
            assert!(problem.contains(id), "{problem}");
            assert!(
                !problem.contains("hunter2") && !problem.contains("8675309"),
                "{problem}"
            );
        }
    }

    #[test]
    fn access_keys_debug_shows_no_secret() {
        let debug = format!("{:?}", team_keys());
        assert_eq!(debug, r#"{"AKIDTEAMA"}"#);
    }

    fn caller(namespaces: &[&str]) -> Caller {
        Caller {
            access_key_id: "AKID".into(),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn a_star_stands_for_any_run_of_characters() {
        let teams = caller(&["team-*"]);
        assert!(teams.may_invoke("team-a"));
        assert!(teams.may_invoke("team-"));
        assert!(!teams.may_invoke("teams"));
        assert!(!teams.may_invoke("other"));
        let middle = caller(&["team-*-dev"]);
        assert!(middle.may_invoke("team-a-dev"));
        assert!(middle.may_invoke("team-a-b-dev"));
        assert!(!middle.may_invoke("team-dev"));
        assert!(caller(&["*"]).may_invoke("anything"));
        assert!(!caller(&["team-a"]).may_invoke("team-ab"));
    }

    #[test]
    fn the_default_namespace_is_the_first_without_a_wildcard() {
        assert_eq!(
            caller(&["team-*", "team-b", "team-c"]).default_namespace(),
            Some("team-b")
        );
        assert_eq!(caller(&["*"]).default_namespace(), None);
    }
}
