//! Downloading a zip from S3 (or any S3-compatible server): a presigned GET, path-style.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusty_s3::actions::GetObject;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use url::Url;

use super::Problem;

/// How long a presigned request stays valid: one download, with room for clock skew.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Most of an error response body read for its code.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Where the code is, and as whom it is read.
#[derive(Clone)]
pub struct S3Config {
    pub endpoint: Url,
    pub region: String,
    /// None: unsigned requests (a public bucket).
    pub credentials: Option<Credentials>,
    pub timeout: Duration,
    pub max_zip_bytes: u64,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.region)
            .field("signed", &self.credentials.is_some())
            .field("timeout", &self.timeout)
            .field("max_zip_bytes", &self.max_zip_bytes)
            .finish()
    }
}

pub struct S3Client {
    config: S3Config,
    http: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl S3Client {
    pub fn new(config: S3Config) -> Result<Self, Problem> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        // Plain http needs no roots: an image without CA certificates still reaches an
        // in-cluster server.
        let builder = if config.endpoint.scheme() == "https" {
            builder
                .with_provider_and_native_roots(provider)
                .map_err(|error| Problem::Tls(error.to_string()))?
        } else {
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|error| Problem::Tls(error.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(tls)
        };
        let connector = builder.https_or_http().enable_http1().build();
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(S3Client { config, http })
    }

    /// The object's bytes, at most `max_zip_bytes` of them.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Bytes, Problem> {
        let endpoint = self.config.endpoint.as_str().to_string();
        tokio::time::timeout(self.config.timeout, self.fetch(bucket, key))
            .await
            .unwrap_or(Err(Problem::Timeout {
                endpoint,
                seconds: self.config.timeout.as_secs(),
            }))
    }

    async fn fetch(&self, bucket: &str, key: &str) -> Result<Bytes, Problem> {
        let bucket = Bucket::new(
            self.config.endpoint.clone(),
            UrlStyle::Path,
            bucket.to_string(),
            self.config.region.clone(),
        )
        .map_err(|error| Problem::BadEndpoint(format!("{}: {error}", self.config.endpoint)))?;
        let url =
            GetObject::new(&bucket, self.config.credentials.as_ref(), key).sign(SIGNATURE_LIFETIME);
        let request = hyper::Request::get(url.as_str())
            .body(Empty::new())
            .map_err(|error| Problem::BadEndpoint(error.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|error| Problem::Unreachable {
                endpoint: self.config.endpoint.to_string(),
                reason: crate::telemetry::error_chain(&error),
            })?;
        let status = response.status();
        if !status.is_success() {
            let body = read_capped(response.into_body(), MAX_ERROR_BODY as u64)
                .await
                .unwrap_or_default();
            return Err(s3_error(status.as_u16(), &body));
        }
        let limit = self.config.max_zip_bytes;
        let declared = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(Problem::ZipTooLarge { limit });
        }
        read_capped(response.into_body(), limit)
            .await
            .map_err(|error| match error {
                ReadError::TooLarge => Problem::ZipTooLarge { limit },
                ReadError::Body(reason) => Problem::Unreachable {
                    endpoint: self.config.endpoint.to_string(),
                    reason,
                },
            })
    }
}

enum ReadError {
    TooLarge,
    Body(String),
}

async fn read_capped(mut body: hyper::body::Incoming, limit: u64) -> Result<Bytes, ReadError> {
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|error| ReadError::Body(crate::telemetry::error_chain(&error)))?;
        if let Ok(data) = frame.into_data() {
            if (collected.len() + data.len()) as u64 > limit {
                return Err(ReadError::TooLarge);
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}

/// The problem an error response names: its status, S3's code, and what to do about it.
pub fn s3_error(status: u16, body: &[u8]) -> Problem {
    let body = String::from_utf8_lossy(body);
    let code = xml_element(&body, "Code").unwrap_or_default().to_string();
    let hint = match code.as_str() {
        "NoSuchKey" => "no object has this key",
        "NoSuchBucket" => "no bucket has this name",
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
            "the server refused the credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        }
        "AccessDenied" => "the credentials may not read this object",
        "RequestTimeTooSkewed" => "the node's clock is off",
        "PermanentRedirect" | "AuthorizationHeaderMalformed" => {
            "the bucket is in another region than --s3-region"
        }
        _ => "",
    }
    .to_string();
    let message = if hint.is_empty() {
        xml_element(&body, "Message")
            .map(|message| message.chars().take(200).collect())
            .unwrap_or_default()
    } else {
        hint
    };
    Problem::S3 {
        status,
        code,
        message,
    }
}

/// The text of the first `<name>…</name>` in an S3 error document; these few fields need no
/// XML parser.
fn xml_element<'a>(document: &'a str, name: &str) -> Option<&'a str> {
    let start = document.find(&format!("<{name}>"))? + name.len() + 2;
    let length = document[start..].find(&format!("</{name}>"))?;
    Some(document[start..start + length].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_status_and_code_of_a_missing_key() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>code.zip</Key></Error>"#;
        assert_eq!(
            s3_error(404, body).to_string(),
            "404 NoSuchKey (no object has this key)"
        );
    }

    #[test]
    fn says_which_credentials_were_refused() {
        let body = b"<Error><Code>InvalidAccessKeyId</Code><Message>x</Message></Error>";
        assert_eq!(
            s3_error(403, body).to_string(),
            "403 InvalidAccessKeyId (the server refused the credentials in AWS_ACCESS_KEY_ID / \
             AWS_SECRET_ACCESS_KEY)"
        );
    }

    #[test]
    fn keeps_the_server_message_of_an_unknown_code_and_copes_without_a_body() {
        let body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        assert_eq!(
            s3_error(503, body).to_string(),
            "503 SlowDown (Please reduce your request rate.)"
        );
        assert_eq!(s3_error(502, b"").to_string(), "502 (no S3 error code)");
    }
}
