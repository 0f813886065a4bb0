//! Plain HTTP from the tests to the processes they run.

/// Sends one HTTP/1.1 request (a fresh connection each time) and returns the status and body.
pub async fn http_request(
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    http_request_with_headers(method, url, &[], body).await
}

/// [`http_request`] with `headers` (a `Host` among them replaces the one of `url`).
pub async fn http_request_with_headers(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let body = body.unwrap_or_default().as_bytes().to_vec();
    let (status, _, body) = http_exchange(method, url, headers, body).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One request with any body; the status, the response's headers and its body.
pub async fn http_exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, hyper::HeaderMap, bytes::Bytes), String> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as HttpClient;
    use hyper_util::rt::TokioExecutor;
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{method} {url}: {e:?}"))?;
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?
        .to_bytes();
    Ok((status, parts.headers, body))
}
