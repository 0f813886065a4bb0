//! Plain HTTP from the tests to the processes they run.

/// Sends one HTTP/1.1 request (a fresh connection each time) and returns the status and body.
pub async fn http_request(
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as HttpClient;
    use hyper_util::rt::TokioExecutor;
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(bytes::Bytes::from(
            body.unwrap_or_default().to_string(),
        )))
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{method} {url}: {e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
