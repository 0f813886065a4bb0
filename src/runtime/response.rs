//! Handler result → HTTP response, by the function-URL rules, and the answers fargo makes itself
//! (function errors, timeouts, payloads too large). Pure.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use base64::Engine;
use bytes::Bytes;

use crate::api::lambda::{ErrorBody, FUNCTION_ERROR_HEADER};

/// An HTTP answer to the function port's caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Answer {
    fn json(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: vec![(header::CONTENT_TYPE, APPLICATION_JSON)],
            body: body.into(),
        }
    }

    /// The value of a header of the answer (the first, when repeated).
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|(header, _)| header.as_str() == name)
            .map(|(_, value)| value)
    }
}

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const UNHANDLED: HeaderValue = HeaderValue::from_static("Unhandled");

/// Why a handler's result cannot be an HTTP response; the caller gets 502.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidResult {
    #[error("the function returned a result that is not JSON: {0}")]
    NotJson(String),
    #[error("the function returned statusCode {0}, not an HTTP status between 100 and 599")]
    Status(String),
    #[error("the function returned a header {0:?} that HTTP does not allow")]
    Header(String),
    #[error("the function returned `cookies` that are not a list of strings")]
    Cookies,
    #[error("the function returned isBase64Encoded true with a body that is not base64: {0}")]
    Base64(String),
}

/// The HTTP response for a handler's result, as function URLs make it: a JSON object with
/// `statusCode` gives the status, `headers`, `cookies` (one `Set-Cookie` each), `body` (base64
/// decoded when `isBase64Encoded`); any other JSON — a string included, quotes and all — is the
/// body of a 200 with content type `application/json`.
pub fn http_response(result: &[u8]) -> Result<Answer, InvalidResult> {
    let value: serde_json::Value = serde_json::from_slice(result)
        .map_err(|error| InvalidResult::NotJson(error.to_string()))?;
    let serde_json::Value::Object(mut object) = value else {
        return Ok(Answer::json(StatusCode::OK, Bytes::copy_from_slice(result)));
    };
    let Some(status) = object.remove("statusCode") else {
        return Ok(Answer::json(StatusCode::OK, Bytes::copy_from_slice(result)));
    };
    let status = status
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
        .filter(|code| (100..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| InvalidResult::Status(status.to_string()))?;

    let mut headers = Vec::new();
    if let Some(serde_json::Value::Object(map)) = object.remove("headers") {
        for (name, value) in map {
            let text = match value {
                serde_json::Value::Null => continue,
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            let parsed = HeaderName::try_from(name.as_str())
                .ok()
                .zip(HeaderValue::try_from(text).ok())
                .ok_or_else(|| InvalidResult::Header(name.clone()))?;
            headers.push(parsed);
        }
    }
    match object.remove("cookies") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(cookies)) => {
            for cookie in cookies {
                let value = cookie
                    .as_str()
                    .and_then(|text| HeaderValue::try_from(text).ok())
                    .ok_or(InvalidResult::Cookies)?;
                headers.push((header::SET_COOKIE, value));
            }
        }
        Some(_) => return Err(InvalidResult::Cookies),
    }

    let base64 = object
        .get("isBase64Encoded")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let body = match object.remove("body") {
        None | Some(serde_json::Value::Null) => Bytes::new(),
        Some(serde_json::Value::String(text)) if base64 => {
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map(Bytes::from)
                .map_err(|error| InvalidResult::Base64(error.to_string()))?
        }
        Some(serde_json::Value::String(text)) => Bytes::from(text),
        Some(other) => Bytes::from(other.to_string()),
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The answer to a request that is not an HTTP event: the result as it is.
pub fn raw_response(result: Bytes) -> Answer {
    Answer::json(StatusCode::OK, result)
}

/// A result that cannot be an HTTP response: 502, as function URLs answer it.
pub fn invalid_result(error: &InvalidResult) -> Answer {
    Answer::json(
        StatusCode::BAD_GATEWAY,
        ErrorBody::new("Runtime.InvalidResponse", error.to_string()).to_json(),
    )
}

/// An unhandled error of the handler (or of its initialization): 502, the error JSON as the
/// runtime posted it, and `X-Amz-Function-Error: Unhandled`.
pub fn function_error(body: Bytes) -> Answer {
    let mut answer = Answer::json(StatusCode::BAD_GATEWAY, body);
    answer
        .headers
        .push((HeaderName::from_static(FUNCTION_ERROR_HEADER), UNHANDLED));
    answer
}

/// No answer by the deadline: 504 and Lambda's `Sandbox.Timedout`.
pub fn timed_out(namespace: &str, function: &str, timeout: Duration) -> Answer {
    Answer::json(
        StatusCode::GATEWAY_TIMEOUT,
        ErrorBody::new(
            "Sandbox.Timedout",
            timeout_message(namespace, function, timeout),
        )
        .to_json(),
    )
}

/// `media/thumbnail timed out after 3.00 seconds`, after Lambda's "Task timed out after 3.00
/// seconds".
pub fn timeout_message(namespace: &str, function: &str, timeout: Duration) -> String {
    format!(
        "{namespace}/{function} timed out after {:.2} seconds",
        timeout.as_secs_f64()
    )
}

/// A request whose event would exceed the payload limit: 413, before the handler runs.
pub fn request_too_large(max_bytes: usize) -> Answer {
    Answer::json(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorBody::new(
            "RequestTooLargeException",
            format!("Request must be smaller than {max_bytes} bytes for the invocation"),
        )
        .to_json(),
    )
}

/// The error body of a handler whose response exceeded the payload limit.
pub fn response_too_large_error(max_bytes: usize) -> Bytes {
    ErrorBody::new(
        "Function.ResponseSizeTooLarge",
        format!("Response payload size exceeded maximum allowed payload size ({max_bytes} bytes)."),
    )
    .to_json()
    .into()
}

/// The sidecar is stopping and takes no new invocation.
pub fn shutting_down() -> Answer {
    Answer::json(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorBody::new("ServiceException", "the function's pod is shutting down").to_json(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(answer: &'a Answer, name: &str) -> Vec<&'a str> {
        answer
            .headers
            .iter()
            .filter(|(header, _)| header.as_str() == name)
            .map(|(_, value)| value.to_str().expect("ASCII"))
            .collect()
    }

    #[test]
    fn a_result_with_a_status_code_sets_status_headers_cookies_and_body() {
        let answer = http_response(
            br#"{"statusCode": 201, "headers": {"Content-Type": "text/plain", "X-Count": 3},
                 "cookies": ["a=1; Max-Age=60", "b=2"], "body": "created"}"#,
        )
        .expect("a valid response");
        assert_eq!(answer.status, StatusCode::CREATED);
        assert_eq!(header(&answer, "content-type"), ["text/plain"]);
        assert_eq!(header(&answer, "x-count"), ["3"]);
        assert_eq!(header(&answer, "set-cookie"), ["a=1; Max-Age=60", "b=2"]);
        assert_eq!(answer.body, "created");
    }

    #[test]
    fn a_base64_body_is_decoded() {
        let answer =
            http_response(br#"{"statusCode": 200, "body": "AJ+Slg==", "isBase64Encoded": true}"#)
                .expect("a valid response");
        assert_eq!(answer.body.as_ref(), [0, 159, 146, 150]);
        assert!(answer.headers.is_empty());
        assert_eq!(
            http_response(br#"{"statusCode": 200, "body": "%%%", "isBase64Encoded": true}"#),
            Err(InvalidResult::Base64("Invalid symbol 37, offset 0.".into()))
        );
    }

    #[test]
    fn other_json_is_the_body_of_a_200_as_it_was_returned() {
        for result in [
            &br#"{"message": "hi"}"#[..],
            br#""Hello, world!""#,
            b"42",
            b"[1,2]",
            b"null",
        ] {
            let answer = http_response(result).expect("valid JSON");
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(header(&answer, "content-type"), ["application/json"]);
            assert_eq!(answer.body.as_ref(), result);
        }
    }

    #[test]
    fn results_that_cannot_be_responses_are_refused() {
        assert!(matches!(
            http_response(b"not json"),
            Err(InvalidResult::NotJson(_))
        ));
        assert!(matches!(
            http_response(br#"{"statusCode": 99}"#),
            Err(InvalidResult::Status(_))
        ));
        assert!(matches!(
            http_response(br#"{"statusCode": "200"}"#),
            Err(InvalidResult::Status(_))
        ));
        assert!(matches!(
            http_response(br#"{"statusCode": 200, "headers": {"bad name": "x"}}"#),
            Err(InvalidResult::Header(_))
        ));
        assert_eq!(
            http_response(br#"{"statusCode": 200, "cookies": "a=1"}"#),
            Err(InvalidResult::Cookies)
        );
        let answer = invalid_result(&InvalidResult::Cookies);
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn a_missing_body_is_empty_and_an_object_body_is_its_json() {
        assert_eq!(
            http_response(br#"{"statusCode": 204}"#)
                .expect("valid")
                .body,
            ""
        );
        assert_eq!(
            http_response(br#"{"statusCode": 200, "body": {"a": 1}}"#)
                .expect("valid")
                .body,
            r#"{"a":1}"#
        );
    }

    #[test]
    fn function_errors_are_502_unhandled_with_the_error_json() {
        let body = Bytes::from_static(br#"{"errorMessage":"boom","errorType":"ValueError"}"#);
        let answer = function_error(body.clone());
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        assert_eq!(header(&answer, "x-amz-function-error"), ["Unhandled"]);
        assert_eq!(answer.body, body);
    }

    #[test]
    fn timeouts_are_504_with_lambdas_error_type() {
        let answer = timed_out("media", "thumbnail", Duration::from_millis(3000));
        assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&answer.body).expect("JSON"),
            serde_json::json!({
                "errorMessage": "media/thumbnail timed out after 3.00 seconds",
                "errorType": "Sandbox.Timedout"
            })
        );
        assert_eq!(
            timeout_message("a", "b", Duration::from_millis(1234)),
            "a/b timed out after 1.23 seconds"
        );
    }

    #[test]
    fn payloads_over_the_limit_say_the_limit() {
        assert_eq!(
            request_too_large(6291456).status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let error: serde_json::Value =
            serde_json::from_slice(&response_too_large_error(6291456)).expect("JSON");
        assert_eq!(error["errorType"], "Function.ResponseSizeTooLarge");
    }
}
